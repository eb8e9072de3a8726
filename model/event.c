#include "fledger/event.h"

#include <assert.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/jsonw.h"
#include "fledger/sha256.h"
#include "fledger/text.h"
#include "fledger/util.h"

#define PATH_LEN FL_ERROR_FIELD_LEN
#define NUMBER_TEXT_LEN 40

/*
 * The magnitude from which a double rounds to an infinite float32: FLT_MAX
 * plus half its ulp (2^103). Values below it round to at most FLT_MAX, so
 * the shortest text of FLT_MAX ("3.4028235e+38", a little above it) is
 * accepted back.
 */
#define FLOAT32_LIMIT ((double)FLT_MAX + 0x1p103)

/* ---- Error paths --------------------------------------------------------- */

/* prefix + "." + member (or just member at the root), for known member names. */
static void path_member(char out[PATH_LEN], const char *prefix, const char *member)
{
	fl_error_path_key(out, PATH_LEN, prefix, member);
}

/* ---- Text ------------------------------------------------------------ */

/* Appends bytes as a JSON string: quoted, '"', '\\' and C0 controls escaped. */
static void text_json_string(struct fl_text *text, const char *bytes, size_t len)
{
	/* At most 6 bytes per input byte, the quotes and the NUL. */
	if (!fl_text_reserve(text, len * 6 + 2))
		return;
	text->len += fl_json_escape(text->data + text->len, bytes, len, false);
	text->data[text->len] = '\0';
}

static void text_json_cstring(struct fl_text *text, const char *s)
{
	text_json_string(text, s, strlen(s));
}

static void text_timestamp(struct fl_text *text, int64_t us)
{
	char stamp[FL_TIME_TEXT_LEN];
	fl_time_format(us, stamp);
	fl_text_puts(text, "\"");
	fl_text_puts(text, stamp);
	fl_text_puts(text, "\"");
}

/* ---- Numbers ----------------------------------------------------------- */

/* Adds ".0" to number text that would otherwise read back as an integer. */
static void mark_real(char *out)
{
	if (strpbrk(out, ".eE") == NULL)
		strcat(out, ".0");
}

/*
 * Writes the shortest of %.15g, %.16g and %.17g that reads back to value
 * exactly (%.17g always does), marked as a real.
 */
static void format_double(double value, char out[NUMBER_TEXT_LEN])
{
	for (int precision = 15; precision <= 17; precision++) {
		snprintf(out, NUMBER_TEXT_LEN, "%.*g", precision, value);
		if (strtod(out, NULL) == value)
			break;
	}
	mark_real(out);
}

/* As format_double for a float32, with %.6g .. %.9g. */
static void format_float(float value, char out[NUMBER_TEXT_LEN])
{
	for (int precision = 6; precision <= 9; precision++) {
		snprintf(out, NUMBER_TEXT_LEN, "%.*g", precision, (double)value);
		if (strtof(out, NULL) == value)
			break;
	}
	mark_real(out);
}

/* The value of a JSON number (integer or real) as a double. */
static double number_value(const json_t *value)
{
	return json_is_integer(value) ? (double)json_integer_value(value) : json_real_value(value);
}

/*
 * Appends the canonical text of a validated feature value: the form it has
 * in the stored body, and the form the digest covers.
 */
static void text_feature_value(struct fl_text *text, const struct fl_feature *feature,
			       const json_t *value)
{
	char number[NUMBER_TEXT_LEN];
	switch (feature->type) {
	case FL_FEATURE_INT64:
		snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
		fl_text_puts(text, number);
		break;
	case FL_FEATURE_DOUBLE:
		format_double(number_value(value), number);
		fl_text_puts(text, number);
		break;
	case FL_FEATURE_STRING:
		text_json_string(text, json_string_value(value), json_string_length(value));
		break;
	case FL_FEATURE_BOOL:
		fl_text_puts(text, json_is_true(value) ? "true" : "false");
		break;
	case FL_FEATURE_VECTOR:
		fl_text_puts(text, "[");
		for (size_t i = 0; i < json_array_size(value); i++) {
			if (i > 0)
				fl_text_puts(text, ",");
			format_float((float)number_value(json_array_get(value, i)), number);
			fl_text_puts(text, number);
		}
		fl_text_puts(text, "]");
		break;
	}
}

/* ---- Text checks ------------------------------------------------------- */

/* True when bytes[0..len) is well-formed UTF-8 (no overlongs, surrogates). */
static bool utf8_valid(const unsigned char *bytes, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = bytes[i];
		size_t extra;
		uint32_t code;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			extra = 1;
			code = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			extra = 2;
			code = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			extra = 3;
			code = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= extra)
			return false;
		for (size_t j = 1; j <= extra; j++) {
			if ((bytes[i + j] & 0xc0) != 0x80)
				return false;
			code = code << 6 | (bytes[i + j] & 0x3f);
		}
		if ((extra == 2 && code < 0x800) || (extra == 3 && code < 0x10000) ||
		    code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
			return false;
		i += extra + 1;
	}
	return true;
}

/* True when no byte is a C0 control (NUL included) or DEL. */
static bool no_controls(const char *bytes, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)bytes[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/*
 * True when text holds no C1 control (U+0080..U+009F, UTF-8 C2 80..C2 9F).
 * Checked on writes only: stored bodies written before C1 controls were
 * refused must still parse.
 */
static bool no_c1_controls(const char *text, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if ((unsigned char)text[i] == 0xc2 && (unsigned char)text[i + 1] >= 0x80 &&
		    (unsigned char)text[i + 1] <= 0x9f)
			return false;
	return true;
}

/* The member key of object, or NULL when absent or null. */
static const json_t *optional_member(const json_t *object, const char *key)
{
	const json_t *value = json_object_get(object, key);
	return json_is_null(value) ? NULL : value;
}

/* ---- Validation -------------------------------------------------------- */

/* Validates entity_id and writes its text form into out. */
static enum fl_status check_entity_id(const json_t *value, const char *field,
				      char out[FL_ENTITY_ID_MAX_LEN + 1], struct fl_error *err)
{
	if (value == NULL)
		return fl_error_invalid(err, "missing_field", field,
					"an event needs an \"entity_id\"");
	if (json_is_integer(value)) {
		snprintf(out, FL_ENTITY_ID_MAX_LEN + 1, "%lld",
			 (long long)json_integer_value(value));
		return FL_OK;
	}
	if (!json_is_string(value))
		return fl_error_invalid(err, "invalid_type", field,
					"\"entity_id\" must be a string or an integer");
	const char *text = json_string_value(value);
	size_t len = json_string_length(value);
	switch (fl_entity_id_check(text, len)) {
	case FL_ENTITY_ID_EMPTY:
		return fl_error_invalid(err, "invalid_entity_id", field,
					"\"entity_id\" must not be empty");
	case FL_ENTITY_ID_TOO_LONG:
		return fl_error_invalid(err, "invalid_entity_id", field,
					"\"entity_id\" is %zu bytes; at most %d are allowed", len,
					FL_ENTITY_ID_MAX_LEN);
	case FL_ENTITY_ID_CONTROL:
		return fl_error_invalid(err, "invalid_entity_id", field,
					"\"entity_id\" must not contain control characters");
	case FL_ENTITY_ID_NOT_UTF8:
		return fl_error_invalid(err, "invalid_entity_id", field,
					"\"entity_id\" is not valid UTF-8");
	case FL_ENTITY_ID_C1_CONTROL: /* refused on writes only, below */
	case FL_ENTITY_ID_OK:
		break;
	}
	memcpy(out, text, len + 1);
	return FL_OK;
}

enum fl_entity_id_fault fl_entity_id_check(const char *text, size_t len)
{
	if (len == 0)
		return FL_ENTITY_ID_EMPTY;
	if (len > FL_ENTITY_ID_MAX_LEN)
		return FL_ENTITY_ID_TOO_LONG;
	if (!no_controls(text, len))
		return FL_ENTITY_ID_CONTROL;
	if (!utf8_valid((const unsigned char *)text, len))
		return FL_ENTITY_ID_NOT_UTF8;
	if (!no_c1_controls(text, len))
		return FL_ENTITY_ID_C1_CONTROL;
	return FL_ENTITY_ID_OK;
}

enum fl_entity_id_fault fl_entity_id_check_read(const char *text, size_t len)
{
	enum fl_entity_id_fault fault = fl_entity_id_check(text, len);
	return fault == FL_ENTITY_ID_C1_CONTROL ? FL_ENTITY_ID_OK : fault;
}

const char *fl_entity_id_fault_text(enum fl_entity_id_fault fault)
{
	switch (fault) {
	case FL_ENTITY_ID_OK:
		break;
	case FL_ENTITY_ID_EMPTY:
		return "the entity id is empty";
	case FL_ENTITY_ID_TOO_LONG:
		return "the entity id is longer than 256 bytes";
	case FL_ENTITY_ID_CONTROL:
	case FL_ENTITY_ID_C1_CONTROL:
		return "the entity id contains a control character";
	case FL_ENTITY_ID_NOT_UTF8:
		return "the entity id is not valid UTF-8";
	}
	return "the entity id is valid";
}

/*
 * Parses an RFC 3339 timestamp with a zone into UTC µs that the stored form
 * ("YYYY-MM-DDTHH:MM:SS.ffffffZ", years 0000-9999) can hold.
 */
static bool parse_timestamp(const char *text, int64_t *ret_us)
{
	int64_t us;
	if (fl_time_parse(text, &us) != FL_OK)
		return false;
	char stamp[FL_TIME_TEXT_LEN];
	int64_t again;
	fl_time_format(us, stamp);
	if (fl_time_parse(stamp, &again) != FL_OK || again != us)
		return false;
	*ret_us = us;
	return true;
}

static enum fl_status check_event_ts(const json_t *value, const char *field, int64_t *ret_us,
				     struct fl_error *err)
{
	if (!json_is_string(value))
		return fl_error_invalid(
		    err, "invalid_type", field,
		    "\"event_ts\" must be an RFC 3339 timestamp string (leave it out "
		    "for the ingest time)");
	if (strlen(json_string_value(value)) != json_string_length(value) ||
	    !parse_timestamp(json_string_value(value), ret_us))
		return fl_error_invalid(err, "invalid_timestamp", field,
					"\"%.40s\" is not an RFC 3339 timestamp with a zone, like "
					"\"2026-11-26T21:00:00.123Z\"",
					json_string_value(value));
	return FL_OK;
}

static enum fl_status check_idempotency_key(const json_t *value, const char *field,
					    char out[FL_IDEMPOTENCY_KEY_MAX_LEN + 1],
					    struct fl_error *err)
{
	if (!json_is_string(value))
		return fl_error_invalid(err, "invalid_type", field,
					"\"idempotency_key\" must be a string");
	size_t len = json_string_length(value);
	if (len == 0 || len > FL_IDEMPOTENCY_KEY_MAX_LEN)
		return fl_error_invalid(err, "invalid_idempotency_key", field,
					"\"idempotency_key\" must be 1 to %d bytes; it is %zu",
					FL_IDEMPOTENCY_KEY_MAX_LEN, len);
	if (!no_controls(json_string_value(value), len))
		return fl_error_invalid(err, "invalid_idempotency_key", field,
					"\"idempotency_key\" must not contain control characters");
	memcpy(out, json_string_value(value), len + 1);
	return FL_OK;
}

/* Checks one feature value against its type; field is its path. */
static enum fl_status check_feature_value(const struct fl_feature *feature, const json_t *value,
					  const char *field, struct fl_error *err)
{
	switch (feature->type) {
	case FL_FEATURE_INT64:
		if (!json_is_integer(value))
			return fl_error_invalid(
			    err, "type_mismatch", field,
			    "feature \"%s\" is int64: the value must be a JSON integer "
			    "(no fraction, no exponent)",
			    feature->name);
		return FL_OK;
	case FL_FEATURE_DOUBLE:
		if (!json_is_number(value))
			return fl_error_invalid(
			    err, "type_mismatch", field,
			    "feature \"%s\" is double: the value must be a number", feature->name);
		if (!isfinite(number_value(value)))
			return fl_error_invalid(err, "invalid_value", field,
						"feature \"%s\" must be a finite number",
						feature->name);
		return FL_OK;
	case FL_FEATURE_STRING:
		if (!json_is_string(value))
			return fl_error_invalid(
			    err, "type_mismatch", field,
			    "feature \"%s\" is string: the value must be a JSON string",
			    feature->name);
		if (json_string_length(value) > FL_STRING_MAX_BYTES)
			return fl_error_invalid(
			    err, "invalid_value", field,
			    "feature \"%s\" is %zu bytes; strings hold at most %d", feature->name,
			    json_string_length(value), FL_STRING_MAX_BYTES);
		if (!utf8_valid((const unsigned char *)json_string_value(value),
				json_string_length(value)))
			return fl_error_invalid(err, "invalid_value", field,
						"feature \"%s\" is not valid UTF-8", feature->name);
		return FL_OK;
	case FL_FEATURE_BOOL:
		if (!json_is_boolean(value))
			return fl_error_invalid(
			    err, "type_mismatch", field,
			    "feature \"%s\" is bool: the value must be true or false",
			    feature->name);
		return FL_OK;
	case FL_FEATURE_VECTOR:
		if (!json_is_array(value))
			return fl_error_invalid(err, "type_mismatch", field,
						"feature \"%s\" is vector[%" PRIu32
						"]: the value must be a list of numbers",
						feature->name, feature->dims);
		if (json_array_size(value) != feature->dims)
			return fl_error_invalid(
			    err, "invalid_value", field,
			    "feature \"%s\" is vector[%" PRIu32 "]: got %zu numbers", feature->name,
			    feature->dims, json_array_size(value));
		for (size_t i = 0; i < feature->dims; i++) {
			const json_t *item = json_array_get(value, i);
			char item_field[PATH_LEN];
			fl_error_path_index(item_field, sizeof(item_field), field, i);
			if (!json_is_number(item))
				return fl_error_invalid(err, "type_mismatch", item_field,
							"vector elements must be numbers");
			double x = number_value(item);
			if (!isfinite(x) || fabs(x) >= FLOAT32_LIMIT)
				return fl_error_invalid(
				    err, "invalid_value", item_field,
				    "vector elements are float32: %g is out of range", x);
		}
		return FL_OK;
	}
	return FL_ERR_INVALID;
}

/* Checks "features": a non-empty object of known features with valid values. */
static enum fl_status check_features(const json_t *features, const struct fl_view *view,
				     const char *prefix, struct fl_error *err)
{
	char field[PATH_LEN];
	path_member(field, prefix, "features");
	if (features == NULL)
		return fl_error_invalid(err, "missing_field", field, "an event needs \"features\"");
	if (!json_is_object(features))
		return fl_error_invalid(err, "invalid_type", field,
					"\"features\" must be an object of feature → value");
	if (json_object_size(features) == 0)
		return fl_error_invalid(err, "invalid_value", field,
					"\"features\" must hold at least one feature");
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)features, key, value)
	{
		char feature_field[PATH_LEN];
		fl_error_path_key(feature_field, sizeof(feature_field), field, key);
		const struct fl_feature *feature = fl_view_feature(view, key);
		if (feature == NULL)
			return fl_error_invalid(err, "unknown_feature", feature_field,
						"view \"%s\" has no feature \"%.64s\"",
						fl_view_name(view), key);
		enum fl_status status = check_feature_value(feature, value, feature_field, err);
		if (status != FL_OK)
			return status;
	}
	return FL_OK;
}

/* Appends a length-prefixed field to the digest input. */
static void digest_field(struct fl_text *text, char tag, const char *bytes, size_t len)
{
	uint8_t header[9];
	header[0] = (uint8_t)tag;
	fl_put_be64(header + 1, len);
	fl_text_append(text, header, sizeof(header));
	fl_text_append(text, bytes, len);
}

/*
 * SHA-256 over "fledger-event-digest-v1" and the tagged, length-prefixed
 * view name, entity id, event_ts (decimal µs, only when the client gave it)
 * and each given feature (name, canonical value text) in view order.
 */
static enum fl_status compute_digest(const struct fl_event *event, uint8_t out[FL_EVENT_DIGEST_LEN])
{
	static const char domain[] = "fledger-event-digest-v1";
	struct fl_text input = FL_TEXT_INIT;
	struct fl_text value = FL_TEXT_INIT;
	fl_text_append(&input, domain, sizeof(domain) - 1);
	const char *view_name = fl_view_name(event->view);
	digest_field(&input, 'V', view_name, strlen(view_name));
	digest_field(&input, 'E', event->entity_id, strlen(event->entity_id));
	if (event->event_ts_given) {
		char stamp[24];
		snprintf(stamp, sizeof(stamp), "%" PRId64, event->event_ts_us);
		digest_field(&input, 'T', stamp, strlen(stamp));
	}
	for (size_t i = 0; i < fl_view_feature_count(event->view); i++) {
		const struct fl_feature *feature = fl_view_feature_at(event->view, i);
		const json_t *given = json_object_get(event->features, feature->name);
		if (given == NULL)
			continue;
		value.len = 0;
		text_feature_value(&value, feature, given);
		digest_field(&input, 'F', feature->name, strlen(feature->name));
		digest_field(&input, 'X', value.data != NULL ? value.data : "", value.len);
		if (value.failed)
			input.failed = true;
	}
	enum fl_status status = FL_OK;
	if (input.failed)
		status = FL_ERR_NOMEM;
	else if (!fl_sha256(input.data, input.len, out))
		status = FL_ERR_CRYPTO;
	fl_text_free(&value);
	fl_text_free(&input);
	return status;
}

/*
 * An event_ts more than max_skew_us ahead of the ingest time would stay the
 * latest value of its features until the clock catches up: refused.
 */
static enum fl_status check_future(int64_t event_ts_us, int64_t ingest_us, int64_t max_skew_us,
				   const char *field, struct fl_error *err)
{
	if (event_ts_us <= ingest_us || event_ts_us - ingest_us <= max_skew_us)
		return FL_OK;
	char stamp[FL_TIME_TEXT_LEN], now[FL_TIME_TEXT_LEN];
	int64_t seconds = max_skew_us / 1000000, count = seconds;
	char unit = 's';
	if (seconds > 0 && seconds % 86400 == 0)
		count = seconds / 86400, unit = 'd';
	else if (seconds > 0 && seconds % 3600 == 0)
		count = seconds / 3600, unit = 'h';
	else if (seconds > 0 && seconds % 60 == 0)
		count = seconds / 60, unit = 'm';
	fl_time_format(event_ts_us, stamp);
	fl_time_format(ingest_us, now);
	return fl_error_invalid(err, "event_ts_in_future", field,
				"event_ts %s is more than %" PRId64
				"%c ahead of the ingest time %s "
				"(--max-future-skew): is the producer's clock wrong?",
				stamp, count, unit, now);
}

enum fl_status fl_event_validate(const json_t *event, const char *path,
				 struct fl_view_registry *registry, const char *producer,
				 int64_t ingest_us, int64_t max_future_skew_us,
				 struct fl_event *ret_event, struct fl_error *err)
{
	static const char *const members[] = {"view", "entity_id", "event_ts", "features",
					      "idempotency_key"};
	char field[PATH_LEN];
	if (path == NULL)
		path = "";
	if (registry == NULL || producer == NULL || ret_event == NULL)
		return fl_error_invalid(err, "invalid_value", path,
					"missing registry, producer or output");
	if (!json_is_object(event))
		return fl_error_invalid(err, "invalid_type", path,
					"an event must be a JSON object");

	path_member(field, path, "view");
	const json_t *view_name = json_object_get(event, "view");
	if (view_name == NULL)
		return fl_error_invalid(err, "missing_field", field, "an event needs a \"view\"");
	if (!json_is_string(view_name))
		return fl_error_invalid(err, "invalid_type", field, "\"view\" must be a string");
	struct fl_event result = {0};
	if (strlen(json_string_value(view_name)) != json_string_length(view_name) ||
	    fl_view_registry_get(registry, json_string_value(view_name), &result.view) != FL_OK) {
		fl_error_set(err, 404, "view_not_found", field, "there is no view \"%.64s\"",
			     json_string_value(view_name));
		return FL_ERR_NOT_FOUND;
	}

	enum fl_status status = FL_OK;
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)event, key, value)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(members) / sizeof(members[0]) && !known; i++)
			known = strcmp(key, members[i]) == 0;
		if (!known) {
			fl_error_path_key(field, sizeof(field), path, key);
			status = fl_error_invalid(err, "unknown_field", field,
						  "unknown event member \"%.64s\"", key);
			goto fail;
		}
	}

	path_member(field, path, "entity_id");
	status = check_entity_id(json_object_get(event, "entity_id"), field, result.entity_id, err);
	if (status != FL_OK)
		goto fail;
	if (fl_entity_id_check(result.entity_id, strlen(result.entity_id)) ==
	    FL_ENTITY_ID_C1_CONTROL) {
		status =
		    fl_error_invalid(err, "invalid_entity_id", field,
				     "\"entity_id\" must not contain control characters (U+0080 to "
				     "U+009F are C1 controls)");
		goto fail;
	}

	/* An event_ts of null is refused: leave it out for the ingest time. */
	const json_t *event_ts = json_object_get(event, "event_ts");
	result.ingest_ts_us = ingest_us;
	result.event_ts_us = ingest_us;
	if (event_ts != NULL) {
		path_member(field, path, "event_ts");
		if ((status = check_event_ts(event_ts, field, &result.event_ts_us, err)) != FL_OK ||
		    (status = check_future(result.event_ts_us, ingest_us,
					   max_future_skew_us < 0 ? 0 : max_future_skew_us, field,
					   err)) != FL_OK)
			goto fail;
		result.event_ts_given = true;
	}

	const json_t *key_value = optional_member(event, "idempotency_key");
	if (key_value != NULL) {
		path_member(field, path, "idempotency_key");
		status = check_idempotency_key(key_value, field, result.idempotency_key, err);
		if (status != FL_OK)
			goto fail;
		result.has_idempotency_key = true;
	}

	const json_t *features = json_object_get(event, "features");
	if ((status = check_features(features, result.view, path, err)) != FL_OK)
		goto fail;
	result.features = json_incref((json_t *)features);

	result.producer = strdup(producer);
	if (result.producer == NULL) {
		status = fl_error_nomem(err);
		goto fail;
	}
	status = compute_digest(&result, result.digest);
	if (status != FL_OK) {
		if (status == FL_ERR_NOMEM)
			fl_error_nomem(err);
		else
			fl_error_set(err, 500, "internal", NULL, "cannot compute a digest");
		goto fail;
	}
	*ret_event = result;
	return FL_OK;

fail:
	fl_event_finish(&result);
	return status;
}

void fl_event_finish(struct fl_event *event)
{
	if (event == NULL)
		return;
	fl_view_unref(event->view);
	json_decref(event->features);
	free(event->producer);
	memset(event, 0, sizeof(*event));
}

void fl_event_array_free(struct fl_event *events, size_t count)
{
	if (events == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		fl_event_finish(&events[i]);
	free(events);
}

/*
 * Validates each element of an array of events, with paths "<prefix>[i]".
 * On failure, the events validated so far are freed.
 */
static enum fl_status validate_array(const json_t *array, const char *prefix,
				     struct fl_view_registry *registry, const char *producer,
				     int64_t ingest_us, int64_t max_future_skew_us,
				     struct fl_event **ret_events, size_t *ret_count,
				     struct fl_error *err)
{
	size_t count = json_array_size(array);
	struct fl_event *events = calloc(count, sizeof(*events));
	if (events == NULL)
		return fl_error_nomem(err);
	for (size_t i = 0; i < count; i++) {
		char path[PATH_LEN];
		fl_error_path_index(path, sizeof(path), prefix, i);
		enum fl_status status =
		    fl_event_validate(json_array_get(array, i), path, registry, producer, ingest_us,
				      max_future_skew_us, &events[i], err);
		if (status != FL_OK) {
			fl_event_array_free(events, i);
			return status;
		}
	}
	*ret_events = events;
	*ret_count = count;
	return FL_OK;
}

enum fl_status fl_event_validate_request(const json_t *body, struct fl_view_registry *registry,
					 const char *producer, int64_t ingest_us,
					 int64_t max_future_skew_us, struct fl_event **ret_events,
					 size_t *ret_count, struct fl_error *err)
{
	if (ret_events == NULL || ret_count == NULL)
		return fl_error_invalid(err, "invalid_value", NULL, "no place for the events");
	if (!json_is_object(body))
		return fl_error_invalid(err, "invalid_json", NULL,
					"the body must be an event object or {\"events\": [...]}");
	const json_t *batch = json_object_get(body, "events");
	if (batch == NULL) {
		struct fl_event *events = calloc(1, sizeof(*events));
		if (events == NULL)
			return fl_error_nomem(err);
		enum fl_status status = fl_event_validate(body, "", registry, producer, ingest_us,
							  max_future_skew_us, events, err);
		if (status != FL_OK) {
			free(events);
			return status;
		}
		*ret_events = events;
		*ret_count = 1;
		return FL_OK;
	}
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)body, key, value)
	{
		if (strcmp(key, "events") != 0) {
			char field[PATH_LEN];
			fl_error_path_key(field, sizeof(field), "", key);
			return fl_error_invalid(
			    err, "unknown_field", field,
			    "a batch is {\"events\": [...]} and nothing else; found "
			    "\"%.64s\"",
			    key);
		}
	}
	if (!json_is_array(batch))
		return fl_error_invalid(err, "invalid_type", "events", "\"events\" must be a list");
	if (json_array_size(batch) == 0)
		return fl_error_invalid(err, "empty_batch", "events",
					"\"events\" must not be empty");
	if (json_array_size(batch) > FL_EVENT_BATCH_MAX)
		return fl_error_invalid(err, "batch_too_large", "events",
					"a batch holds at most %d events; got %zu",
					FL_EVENT_BATCH_MAX, json_array_size(batch));
	return validate_array(batch, "events", registry, producer, ingest_us, max_future_skew_us,
			      ret_events, ret_count, err);
}

/* ---- Stored bodies ----------------------------------------------------- */

/* Hands a finished text to the caller, or reports the allocation failure. */
static enum fl_status text_finish(struct fl_text *text, char **ret_text, size_t *ret_len)
{
	char *bytes = fl_text_take(text, ret_len);
	if (bytes == NULL)
		return FL_ERR_NOMEM;
	*ret_text = bytes;
	return FL_OK;
}

enum fl_status fl_event_body_tail(const struct fl_event *event, char **ret_tail, size_t *ret_len)
{
	if (event == NULL || event->view == NULL || event->features == NULL || ret_tail == NULL)
		return FL_ERR_INVALID;
	struct fl_text text = FL_TEXT_INIT;
	fl_text_puts(&text, "\"kind\":\"feature\",\"view\":");
	text_json_cstring(&text, fl_view_name(event->view));
	fl_text_puts(&text, ",\"entity_id\":");
	text_json_cstring(&text, event->entity_id);
	fl_text_puts(&text, ",\"event_ts\":");
	text_timestamp(&text, event->event_ts_us);
	fl_text_puts(&text, ",\"ingest_ts\":");
	text_timestamp(&text, event->ingest_ts_us);
	fl_text_puts(&text, ",\"producer\":");
	text_json_cstring(&text, event->producer);
	if (event->has_idempotency_key) {
		fl_text_puts(&text, ",\"idempotency_key\":");
		text_json_cstring(&text, event->idempotency_key);
	}
	fl_text_puts(&text, ",\"features\":{");
	bool first = true;
	for (size_t i = 0; i < fl_view_feature_count(event->view); i++) {
		const struct fl_feature *feature = fl_view_feature_at(event->view, i);
		const json_t *value = json_object_get(event->features, feature->name);
		if (value == NULL)
			continue;
		if (!first)
			fl_text_puts(&text, ",");
		first = false;
		text_json_cstring(&text, feature->name);
		fl_text_puts(&text, ":");
		text_feature_value(&text, feature, value);
	}
	fl_text_puts(&text, "}");
	return text_finish(&text, ret_tail, ret_len);
}

enum fl_status fl_event_view_body_tail(const struct fl_view *view, uint64_t version,
				       const char *producer, int64_t ingest_us, char **ret_tail,
				       size_t *ret_len)
{
	if (view == NULL || version == 0 || producer == NULL || ret_tail == NULL)
		return FL_ERR_INVALID;
	const char *definition;
	size_t definition_len;
	char number[24];
	fl_view_canonical(view, &definition, &definition_len);
	struct fl_text text = FL_TEXT_INIT;
	/* "view" names it, as in feature events, for NATS subjects and readers. */
	fl_text_puts(&text, "\"kind\":\"view\",\"view\":");
	text_json_cstring(&text, fl_view_name(view));
	fl_text_puts(&text, ",\"ingest_ts\":");
	text_timestamp(&text, ingest_us);
	fl_text_puts(&text, ",\"producer\":");
	text_json_cstring(&text, producer);
	snprintf(number, sizeof(number), "%" PRIu64, version);
	fl_text_puts(&text, ",\"version\":");
	fl_text_puts(&text, number);
	fl_text_puts(&text, ",\"definition\":");
	fl_text_append(&text, definition, definition_len);
	return text_finish(&text, ret_tail, ret_len);
}

/* True when object has no member outside allowed (NULL-terminated). */
static bool only_members(const json_t *object, const char *const *allowed)
{
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)object, key, value)
	{
		bool known = false;
		for (size_t i = 0; allowed[i] != NULL && !known; i++)
			known = strcmp(key, allowed[i]) == 0;
		if (!known)
			return false;
	}
	return true;
}

/* A member that must be a string without NUL; NULL otherwise. */
static const char *stored_string(const json_t *object, const char *key)
{
	const json_t *value = json_object_get(object, key);
	if (!json_is_string(value) || strlen(json_string_value(value)) != json_string_length(value))
		return NULL;
	return json_string_value(value);
}

static bool stored_timestamp(const json_t *object, const char *key, int64_t *ret_us)
{
	const char *text = stored_string(object, key);
	return text != NULL && parse_timestamp(text, ret_us);
}

static enum fl_status parse_feature_body(struct fl_stored_event *event)
{
	static const char *const members[] = {
	    "seq",	"kind",	     "view",	 "entity_id",
	    "event_ts", "ingest_ts", "producer", "idempotency_key",
	    "features", NULL};
	const json_t *root = event->root;
	if (!only_members(root, members))
		return FL_ERR_CORRUPT;
	event->view_name = stored_string(root, "view");
	event->producer = stored_string(root, "producer");
	const json_t *entity_id = json_object_get(root, "entity_id");
	char entity_text[FL_ENTITY_ID_MAX_LEN + 1];
	if (event->view_name == NULL || event->producer == NULL || !json_is_string(entity_id) ||
	    check_entity_id(entity_id, "", entity_text, NULL) != FL_OK)
		return FL_ERR_CORRUPT;
	event->entity_id = json_string_value(entity_id);
	if (!stored_timestamp(root, "event_ts", &event->event_ts_us) ||
	    !stored_timestamp(root, "ingest_ts", &event->ingest_ts_us))
		return FL_ERR_CORRUPT;
	const json_t *key = json_object_get(root, "idempotency_key");
	if (key != NULL) {
		char key_text[FL_IDEMPOTENCY_KEY_MAX_LEN + 1];
		if (check_idempotency_key(key, "", key_text, NULL) != FL_OK)
			return FL_ERR_CORRUPT;
		event->idempotency_key = json_string_value(key);
	}
	const json_t *features = json_object_get(root, "features");
	if (!json_is_object(features) || json_object_size(features) == 0)
		return FL_ERR_CORRUPT;
	event->features = features;
	return FL_OK;
}

static enum fl_status parse_view_body(struct fl_stored_event *event)
{
	static const char *const members[] = {"seq",	  "kind",    "view",	   "ingest_ts",
					      "producer", "version", "definition", NULL};
	const json_t *root = event->root;
	if (!only_members(root, members))
		return FL_ERR_CORRUPT;
	event->producer = stored_string(root, "producer");
	const json_t *version = json_object_get(root, "version");
	if (event->producer == NULL || !json_is_integer(version) ||
	    json_integer_value(version) < 1 ||
	    !stored_timestamp(root, "ingest_ts", &event->ingest_ts_us))
		return FL_ERR_CORRUPT;
	event->version = (uint64_t)json_integer_value(version);
	enum fl_status status =
	    fl_view_parse(json_object_get(root, "definition"), &event->view, NULL);
	if (status == FL_ERR_INVALID)
		return FL_ERR_CORRUPT;
	event->view_name = stored_string(root, "view");
	if (status == FL_OK &&
	    (event->view_name == NULL || strcmp(event->view_name, fl_view_name(event->view)) != 0))
		return FL_ERR_CORRUPT;
	return status;
}

enum fl_status fl_stored_event_parse(const void *body, size_t body_len,
				     struct fl_stored_event *ret_event)
{
	if (body == NULL || ret_event == NULL)
		return FL_ERR_INVALID;
	struct fl_stored_event event = {0};
	json_error_t error;
	event.root = json_loadb(body, body_len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &error);
	if (event.root == NULL) {
		/*
		 * jansson reports an allocation failure as out_of_memory, as an
		 * unknown error without text, or (2.14, mid-parse) as a syntax
		 * error; only the first two can be told apart.
		 */
		enum json_error_code code = json_error_code(&error);
		if (code == json_error_out_of_memory ||
		    (code == json_error_unknown && error.text[0] == '\0'))
			return FL_ERR_NOMEM;
		return FL_ERR_CORRUPT;
	}
	enum fl_status status = FL_ERR_CORRUPT;
	if (!json_is_object(event.root))
		goto fail;
	const json_t *seq = json_object_get(event.root, "seq");
	const char *kind = stored_string(event.root, "kind");
	if (!json_is_integer(seq) || json_integer_value(seq) < 1 || kind == NULL)
		goto fail;
	event.seq = (uint64_t)json_integer_value(seq);
	if (strcmp(kind, "feature") == 0) {
		event.kind = FL_BODY_FEATURE;
		status = parse_feature_body(&event);
	} else if (strcmp(kind, "view") == 0) {
		event.kind = FL_BODY_VIEW;
		status = parse_view_body(&event);
	} else {
		event.kind = strcmp(kind, "key") == 0 ? FL_BODY_KEY : FL_BODY_OTHER;
		status = FL_OK;
	}
	if (status != FL_OK)
		goto fail;
	*ret_event = event;
	return FL_OK;

fail:
	fl_stored_event_finish(&event);
	return status;
}

void fl_stored_event_finish(struct fl_stored_event *event)
{
	if (event == NULL)
		return;
	fl_view_unref(event->view);
	json_decref(event->root);
	memset(event, 0, sizeof(*event));
}

/* ---- Feast push -------------------------------------------------------- */

#define FEAST_TIMESTAMP_COLUMN "event_timestamp"

/*
 * Parses a Feast/pandas timestamp: RFC 3339, or with a space instead of 'T',
 * with or without a zone (none means UTC, as in Feast).
 */
static bool parse_feast_timestamp(const json_t *value, int64_t *ret_us)
{
	if (!json_is_string(value))
		return false;
	const char *text = json_string_value(value);
	size_t len = json_string_length(value);
	char normalised[64];
	if (len < 19 || len + 2 > sizeof(normalised) || strlen(text) != len)
		return false;
	memcpy(normalised, text, len + 1);
	if (normalised[10] == ' ')
		normalised[10] = 'T';
	/* After seconds and an optional fraction, nothing left means no zone. */
	size_t end = 19;
	if (normalised[end] == '.') {
		end++;
		while (normalised[end] >= '0' && normalised[end] <= '9')
			end++;
	}
	if (normalised[end] == '\0') {
		normalised[end] = 'Z';
		normalised[end + 1] = '\0';
	}
	return parse_timestamp(normalised, ret_us);
}

/* True for a Feast bookkeeping column we accept and ignore. */
static bool ignored_column(const char *name)
{
	return strcmp(name, "created") == 0 || strcmp(name, "created_timestamp") == 0;
}

/*
 * Checks the envelope and the columns of a push request; returns the view
 * (a new reference) and the row count.
 */
static enum fl_status check_push(const json_t *push, struct fl_view_registry *registry,
				 struct fl_view **ret_view, size_t *ret_rows, struct fl_error *err)
{
	static const char *const members[] = {
	    "push_source_name", "df", "to", "allow_registry_cache", "transform_on_write", NULL};
	static const char *const ignored_flags[] = {"allow_registry_cache", "transform_on_write"};
	if (!json_is_object(push))
		return fl_error_invalid(err, "invalid_json", NULL,
					"a push request must be a JSON object");
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)push, key, value)
	{
		bool known = false;
		for (size_t i = 0; members[i] != NULL && !known; i++)
			known = strcmp(key, members[i]) == 0;
		if (!known) {
			char field[PATH_LEN];
			fl_error_path_key(field, sizeof(field), "", key);
			return fl_error_invalid(err, "unknown_field", field,
						"unknown push request member \"%.64s\"", key);
		}
	}
	for (size_t i = 0; i < sizeof(ignored_flags) / sizeof(ignored_flags[0]); i++) {
		const json_t *flag = optional_member(push, ignored_flags[i]);
		if (flag != NULL && !json_is_boolean(flag))
			return fl_error_invalid(err, "invalid_type", ignored_flags[i],
						"\"%s\" must be true or false", ignored_flags[i]);
	}
	const json_t *to = optional_member(push, "to");
	if (to != NULL &&
	    (!json_is_string(to) || (strcmp(json_string_value(to), "online") != 0 &&
				     strcmp(json_string_value(to), "online_and_offline") != 0)))
		return fl_error_invalid(err, "invalid_value", "to",
					"\"to\" must be \"online\" or \"online_and_offline\"");

	const json_t *name = json_object_get(push, "push_source_name");
	if (name == NULL)
		return fl_error_invalid(err, "missing_field", "push_source_name",
					"a push needs \"push_source_name\" (the view)");
	if (!json_is_string(name))
		return fl_error_invalid(err, "invalid_type", "push_source_name",
					"\"push_source_name\" must be a string");
	struct fl_view *view = NULL;
	if (strlen(json_string_value(name)) != json_string_length(name) ||
	    fl_view_registry_get(registry, json_string_value(name), &view) != FL_OK) {
		fl_error_set(err, 404, "view_not_found", "push_source_name",
			     "there is no view \"%.64s\"", json_string_value(name));
		return FL_ERR_NOT_FOUND;
	}

	enum fl_status status = FL_OK;
	const json_t *df = json_object_get(push, "df");
	if (df == NULL) {
		status = fl_error_invalid(err, "missing_field", "df", "a push needs \"df\"");
		goto fail;
	}
	if (!json_is_object(df)) {
		status = fl_error_invalid(err, "invalid_type", "df",
					  "\"df\" must be an object of column → list of values");
		goto fail;
	}
	size_t rows = 0, feature_columns = 0;
	bool first = true;
	json_object_foreach((json_t *)df, key, value)
	{
		char field[PATH_LEN];
		fl_error_path_key(field, sizeof(field), "df", key);
		bool is_feature = fl_view_feature(view, key) != NULL;
		if (!is_feature && strcmp(key, fl_view_entity(view)) != 0 &&
		    strcmp(key, FEAST_TIMESTAMP_COLUMN) != 0 && !ignored_column(key)) {
			status = fl_error_invalid(err, "unknown_feature", field,
						  "view \"%s\" has no feature \"%.64s\"",
						  fl_view_name(view), key);
			goto fail;
		}
		if (!json_is_array(value)) {
			status =
			    fl_error_invalid(err, "invalid_type", field, "a column must be a list");
			goto fail;
		}
		if (first) {
			rows = json_array_size(value);
			first = false;
		} else if (json_array_size(value) != rows) {
			status =
			    fl_error_invalid(err, "invalid_value", field,
					     "every column must have the same length: %zu, not %zu",
					     rows, json_array_size(value));
			goto fail;
		}
		if (is_feature && strcmp(key, FEAST_TIMESTAMP_COLUMN) != 0)
			feature_columns++;
	}
	char field[PATH_LEN];
	fl_error_path_key(field, sizeof(field), "df", fl_view_entity(view));
	if (json_object_get(df, fl_view_entity(view)) == NULL) {
		status =
		    fl_error_invalid(err, "missing_field", field,
				     "df needs the entity column \"%s\"", fl_view_entity(view));
		goto fail;
	}
	if (json_object_get(df, FEAST_TIMESTAMP_COLUMN) == NULL) {
		status = fl_error_invalid(err, "missing_field", "df." FEAST_TIMESTAMP_COLUMN,
					  "df needs an \"" FEAST_TIMESTAMP_COLUMN "\" column");
		goto fail;
	}
	if (feature_columns == 0) {
		status = fl_error_invalid(err, "invalid_value", "df", "df has no feature column");
		goto fail;
	}
	if (rows == 0) {
		status = fl_error_invalid(err, "empty_batch", "df", "df has no rows");
		goto fail;
	}
	if (rows > FL_EVENT_BATCH_MAX) {
		status = fl_error_invalid(err, "batch_too_large", "df",
					  "a push holds at most %d rows; got %zu",
					  FL_EVENT_BATCH_MAX, rows);
		goto fail;
	}
	*ret_view = view;
	*ret_rows = rows;
	return FL_OK;

fail:
	fl_view_unref(view);
	return status;
}

/* Builds the event object of row (features without nulls). */
static enum fl_status push_row(const json_t *df, const struct fl_view *view, size_t row,
			       json_t **ret_event, struct fl_error *err)
{
	char field[PATH_LEN];
	int64_t event_ts_us;
	const json_t *stamp = json_array_get(json_object_get(df, FEAST_TIMESTAMP_COLUMN), row);
	if (!parse_feast_timestamp(stamp, &event_ts_us)) {
		snprintf(field, sizeof(field), "df." FEAST_TIMESTAMP_COLUMN "[%zu]", row);
		return fl_error_invalid(
		    err, "invalid_timestamp", field,
		    "not a timestamp: RFC 3339, or \"YYYY-MM-DD HH:MM:SS[.ffffff]"
		    "[+HH:MM]\" (no zone means UTC)");
	}
	char stamp_text[FL_TIME_TEXT_LEN];
	fl_time_format(event_ts_us, stamp_text);

	json_t *event = json_object();
	json_t *features = json_object();
	if (event == NULL || features == NULL)
		goto nomem;
	if (json_object_set_new(event, "view", json_string(fl_view_name(view))) != 0 ||
	    json_object_set(event, "entity_id",
			    json_array_get(json_object_get(df, fl_view_entity(view)), row)) != 0 ||
	    json_object_set_new(event, "event_ts", json_string(stamp_text)) != 0)
		goto nomem;
	const char *key;
	json_t *column;
	json_object_foreach((json_t *)df, key, column)
	{
		if (fl_view_feature(view, key) == NULL || strcmp(key, FEAST_TIMESTAMP_COLUMN) == 0)
			continue;
		json_t *value = json_array_get(column, row);
		if (json_is_null(value))
			continue;
		if (json_object_set(features, key, value) != 0)
			goto nomem;
	}
	if (json_object_size(features) == 0) {
		json_decref(features);
		json_decref(event);
		return fl_error_invalid(
		    err, "invalid_value", "df",
		    "row %zu has no feature value (every feature column is null)", row);
	}
	if (json_object_set_new(event, "features", features) != 0) {
		features = NULL;
		goto nomem;
	}
	*ret_event = event;
	return FL_OK;

nomem:
	json_decref(features);
	json_decref(event);
	return fl_error_nomem(err);
}

/* Converts a checked push into events; view and rows come from check_push. */
static enum fl_status push_events(const json_t *push, const struct fl_view *view, size_t rows,
				  json_t **ret_events, struct fl_error *err)
{
	const json_t *df = json_object_get(push, "df");
	json_t *events = json_array();
	if (events == NULL)
		return fl_error_nomem(err);
	for (size_t row = 0; row < rows; row++) {
		json_t *event = NULL;
		enum fl_status status = push_row(df, view, row, &event, err);
		if (status != FL_OK) {
			json_decref(events);
			return status;
		}
		if (json_array_append_new(events, event) != 0) {
			json_decref(events);
			return fl_error_nomem(err);
		}
	}
	*ret_events = events;
	return FL_OK;
}

enum fl_status fl_event_feast_push_convert(const json_t *push, struct fl_view_registry *registry,
					   json_t **ret_events, struct fl_error *err)
{
	if (registry == NULL || ret_events == NULL)
		return fl_error_invalid(err, "invalid_value", NULL, "missing registry or output");
	struct fl_view *view;
	size_t rows;
	enum fl_status status = check_push(push, registry, &view, &rows, err);
	if (status != FL_OK)
		return status;
	status = push_events(push, view, rows, ret_events, err);
	fl_view_unref(view);
	return status;
}

/*
 * Rewrites the field of an error met validating row as a single event into
 * the Feast path: "features.x[5]" → "df.x[row][5]", "entity_id" →
 * "df.<entity>[row]", "event_ts" → "df.event_timestamp[row]", "view" →
 * "push_source_name".
 */
static void feast_error_path(struct fl_error *err, const struct fl_view *view, size_t row)
{
	if (err == NULL)
		return;
	char field[PATH_LEN];
	const char *features = "features.";
	if (strncmp(err->field, features, strlen(features)) == 0) {
		const char *name = err->field + strlen(features);
		size_t name_len = strcspn(name, "[.");
		snprintf(field, sizeof(field), "df.%.*s[%zu]%s", (int)name_len, name, row,
			 name + name_len);
	} else if (strcmp(err->field, "entity_id") == 0) {
		snprintf(field, sizeof(field), "df.%s[%zu]", fl_view_entity(view), row);
	} else if (strcmp(err->field, "event_ts") == 0) {
		snprintf(field, sizeof(field), "df." FEAST_TIMESTAMP_COLUMN "[%zu]", row);
	} else if (strcmp(err->field, "view") == 0) {
		snprintf(field, sizeof(field), "push_source_name");
	} else {
		snprintf(field, sizeof(field), "df");
	}
	memcpy(err->field, field, sizeof(err->field));
}

enum fl_status fl_event_feast_push_validate(const json_t *push, struct fl_view_registry *registry,
					    const char *producer, int64_t ingest_us,
					    int64_t max_future_skew_us,
					    struct fl_event **ret_events, size_t *ret_count,
					    struct fl_error *err)
{
	if (registry == NULL || producer == NULL || ret_events == NULL || ret_count == NULL)
		return fl_error_invalid(err, "invalid_value", NULL,
					"missing registry, producer or output");
	struct fl_view *view;
	size_t rows;
	enum fl_status status = check_push(push, registry, &view, &rows, err);
	if (status != FL_OK)
		return status;
	json_t *array = NULL;
	struct fl_event *events = NULL;
	status = push_events(push, view, rows, &array, err);
	if (status != FL_OK)
		goto done;
	events = calloc(rows, sizeof(*events));
	if (events == NULL) {
		status = fl_error_nomem(err);
		goto done;
	}
	for (size_t row = 0; row < rows; row++) {
		status = fl_event_validate(json_array_get(array, row), "", registry, producer,
					   ingest_us, max_future_skew_us, &events[row], err);
		if (status != FL_OK) {
			if (status != FL_ERR_NOMEM)
				feast_error_path(err, view, row);
			fl_event_array_free(events, row);
			events = NULL;
			goto done;
		}
	}
	*ret_events = events;
	*ret_count = rows;

done:
	json_decref(array);
	fl_view_unref(view);
	return status;
}
