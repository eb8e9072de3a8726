#include "fledger/view.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/util.h"

#define US_PER_SEC INT64_C(1000000)
#define PATH_LEN FL_ERROR_FIELD_LEN

struct fl_view {
	atomic_size_t refs;
	uint64_t version;
	char name[FL_NAME_MAX_LEN + 1];
	char entity[FL_NAME_MAX_LEN + 1];
	struct fl_feature *features; /* name order */
	size_t n_features;
	struct fl_window *windows; /* name order */
	size_t n_windows;
	int64_t max_age_us; /* 0: none */
	char max_age_text[FL_DURATION_TEXT_LEN];
	int64_t retention_us;
	char retention_text[FL_DURATION_TEXT_LEN];
	bool audit_reads;
	struct fl_acl write_acl;
	struct fl_acl read_acl;
	char *canonical; /* compact, sorted keys, no version */
	size_t canonical_len;
	char *identity; /* the canonical form with durations in their largest unit */
	size_t identity_len;
};

static const char *const feature_type_names[] = {
    [FL_FEATURE_INT64] = "int64", [FL_FEATURE_DOUBLE] = "double", [FL_FEATURE_STRING] = "string",
    [FL_FEATURE_BOOL] = "bool",	  [FL_FEATURE_VECTOR] = "vector",
};

static const char *const window_fn_names[] = {
    [FL_WINDOW_COUNT] = "count",   [FL_WINDOW_SUM] = "sum",	  [FL_WINDOW_AVG] = "avg",
    [FL_WINDOW_MIN] = "min",	   [FL_WINDOW_MAX] = "max",	  [FL_WINDOW_LAST] = "last",
    [FL_WINDOW_LAST_N] = "last_n", [FL_WINDOW_STDDEV] = "stddev",
};

#define N_WINDOW_FNS (sizeof(window_fn_names) / sizeof(window_fn_names[0]))

const char *fl_feature_type_name(enum fl_feature_type type)
{
	if ((size_t)type >= sizeof(feature_type_names) / sizeof(feature_type_names[0]))
		return "?";
	return feature_type_names[type];
}

const char *fl_window_fn_name(enum fl_window_fn fn)
{
	if ((size_t)fn >= N_WINDOW_FNS)
		return "?";
	return window_fn_names[fn];
}

/* ---- Small helpers ----------------------------------------------------- */

/* True for [a-z][a-z0-9_]{0,62} of exactly len bytes (no NUL inside). */
static bool valid_name(const char *text, size_t len)
{
	if (len == 0 || len > FL_NAME_MAX_LEN || strlen(text) != len)
		return false;
	if (text[0] < 'a' || text[0] > 'z')
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = text[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/*
 * Checks that value is a string holding a valid name and copies it to out;
 * field names the member in errors.
 */
static enum fl_status parse_name(const json_t *value, const char *field, const char *what,
				 char out[FL_NAME_MAX_LEN + 1], struct fl_error *err)
{
	if (!json_is_string(value))
		return fl_error_invalid(err, "invalid_type", field, "%s must be a string", what);
	const char *text = json_string_value(value);
	if (!valid_name(text, json_string_length(value)))
		return fl_error_invalid(
		    err, "invalid_name", field,
		    "%s \"%.64s\" is not a valid name: lowercase letter first, then up to "
		    "62 lowercase letters, digits or '_'",
		    what, text);
	memcpy(out, text, json_string_length(value) + 1);
	return FL_OK;
}

/*
 * Parses a duration string "<int>s|m|h|d" (no sign, no spaces, greater than
 * zero, at most FL_DURATION_MAX_US). ret_text gets it as written, without
 * leading zeros ("05m" → "5m").
 */
static enum fl_status parse_duration(const json_t *value, const char *field, int64_t *ret_us,
				     char ret_text[FL_DURATION_TEXT_LEN], struct fl_error *err)
{
	if (!json_is_string(value))
		return fl_error_invalid(
		    err, "invalid_type", field,
		    "a duration must be a string like \"30s\", \"5m\", \"24h\" or \"7d\"");
	const char *text = json_string_value(value);
	size_t len = json_string_length(value);
	int64_t us;
	if (len < 2 || len > 20 || strlen(text) != len || text[0] < '0' || text[0] > '9' ||
	    fl_duration_parse(text, &us) != FL_OK || us <= 0 || us > FL_DURATION_MAX_US)
		return fl_error_invalid(
		    err, "invalid_duration", field,
		    "\"%.32s\" is not a duration: a positive integer followed by s, m, h "
		    "or d, at most 36500d",
		    text);
	const char *digits = text;
	while (digits[0] == '0')
		digits++;
	snprintf(ret_text, FL_DURATION_TEXT_LEN, "%s", digits);
	*ret_us = us;
	return FL_OK;
}

/* Writes us with the largest unit that divides it exactly ("60m" → "1h"). */
static void format_duration(int64_t us, char out[32])
{
	static const struct {
		int64_t unit_us;
		char suffix;
	} units[] = {
	    {86400 * US_PER_SEC, 'd'},
	    {3600 * US_PER_SEC, 'h'},
	    {60 * US_PER_SEC, 'm'},
	    {US_PER_SEC, 's'},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (us % units[i].unit_us == 0) {
			snprintf(out, 32, "%" PRId64 "%c", us / units[i].unit_us, units[i].suffix);
			return;
		}
	}
	/* Not reachable for parsed durations (whole seconds). */
	snprintf(out, 32, "%" PRId64 "s", us / US_PER_SEC);
}

/* The text of a duration: as written, or normalised. */
static void duration_text(int64_t us, const char *written, bool normalise, char out[32])
{
	if (normalise)
		format_duration(us, out);
	else
		snprintf(out, 32, "%s", written);
}

/*
 * Parses a feature type: "int64", "double", "string", "bool" or "vector[N]"
 * with N in 1..FL_VECTOR_MAX_DIMS written without leading zeros.
 */
static bool parse_feature_type(const char *text, size_t len, enum fl_feature_type *ret_type,
			       uint32_t *ret_dims)
{
	static const struct {
		const char *name;
		enum fl_feature_type type;
	} simple[] = {
	    {"int64", FL_FEATURE_INT64},
	    {"double", FL_FEATURE_DOUBLE},
	    {"string", FL_FEATURE_STRING},
	    {"bool", FL_FEATURE_BOOL},
	};
	if (strlen(text) != len)
		return false;
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		if (strcmp(text, simple[i].name) == 0) {
			*ret_type = simple[i].type;
			*ret_dims = 0;
			return true;
		}
	}
	if (strncmp(text, "vector[", 7) != 0 || len < 9 || text[len - 1] != ']')
		return false;
	const char *digits = text + 7;
	size_t n_digits = len - 8;
	if (n_digits > 4 || digits[0] < '1' || digits[0] > '9')
		return false;
	uint32_t dims = 0;
	for (size_t i = 0; i < n_digits; i++) {
		if (digits[i] < '0' || digits[i] > '9')
			return false;
		dims = dims * 10 + (uint32_t)(digits[i] - '0');
	}
	if (dims < 1 || dims > FL_VECTOR_MAX_DIMS)
		return false;
	*ret_type = FL_FEATURE_VECTOR;
	*ret_dims = dims;
	return true;
}

/* Checks that every key of object is one of allowed (NULL-terminated). */
static enum fl_status check_keys(const json_t *object, const char *prefix,
				 const char *const *allowed, struct fl_error *err)
{
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)object, key, value)
	{
		bool known = false;
		for (size_t i = 0; allowed[i] != NULL && !known; i++)
			known = strcmp(key, allowed[i]) == 0;
		if (!known) {
			char field[PATH_LEN];
			fl_error_path_key(field, sizeof(field), prefix, key);
			return fl_error_invalid(err, "unknown_field", field,
						"unknown member \"%.64s\"", key);
		}
	}
	return FL_OK;
}

/* The member key of object, or NULL when it is absent or null. */
static const json_t *optional_member(const json_t *object, const char *key)
{
	const json_t *value = json_object_get(object, key);
	return json_is_null(value) ? NULL : value;
}

/* ---- ACLs -------------------------------------------------------------- */

static void acl_finish(struct fl_acl *acl)
{
	for (size_t i = 0; i < acl->count; i++)
		free(acl->entries[i]);
	free(acl->entries);
	acl->entries = NULL;
	acl->count = 0;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Parses a list of principal names and "role:<role>" entries into a sorted
 * set. An entry is 1..FL_ACL_ENTRY_MAX_LEN bytes without control characters
 * (C0 and DEL); "role:" must be followed by a role name.
 */
static enum fl_status parse_acl_list(const json_t *value, const char *field, struct fl_acl *ret_acl,
				     struct fl_error *err)
{
	if (!json_is_array(value))
		return fl_error_invalid(err, "invalid_type", field,
					"an ACL must be a list of strings");
	size_t count = json_array_size(value);
	if (count > FL_ACL_MAX_ENTRIES)
		return fl_error_invalid(err, "limit_exceeded", field,
					"an ACL has at most %d entries", FL_ACL_MAX_ENTRIES);
	struct fl_acl acl = {NULL, 0};
	if (count > 0) {
		acl.entries = calloc(count, sizeof(*acl.entries));
		if (acl.entries == NULL)
			return fl_error_nomem(err);
	}
	enum fl_status status = FL_OK;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(value, i);
		char item_field[PATH_LEN];
		fl_error_path_index(item_field, sizeof(item_field), field, i);
		if (!json_is_string(item)) {
			status = fl_error_invalid(err, "invalid_type", item_field,
						  "an ACL entry must be a string");
			goto fail;
		}
		const char *text = json_string_value(item);
		size_t len = json_string_length(item);
		bool ok = len >= 1 && len <= FL_ACL_ENTRY_MAX_LEN && strlen(text) == len &&
			  strcmp(text, "role:") != 0;
		for (size_t j = 0; ok && j < len; j++)
			ok = (unsigned char)text[j] >= 0x20 && text[j] != 0x7f;
		if (!ok) {
			status = fl_error_invalid(
			    err, "invalid_acl", item_field,
			    "an ACL entry is a principal name or \"role:<role>\" of 1 to "
			    "%d bytes without control characters",
			    FL_ACL_ENTRY_MAX_LEN);
			goto fail;
		}
		acl.entries[acl.count] = strdup(text);
		if (acl.entries[acl.count] == NULL) {
			status = fl_error_nomem(err);
			goto fail;
		}
		acl.count++;
	}
	if (acl.count > 1) {
		qsort(acl.entries, acl.count, sizeof(*acl.entries), compare_strings);
		size_t kept = 1;
		for (size_t i = 1; i < acl.count; i++) {
			if (strcmp(acl.entries[i], acl.entries[kept - 1]) == 0)
				free(acl.entries[i]);
			else
				acl.entries[kept++] = acl.entries[i];
		}
		acl.count = kept;
	}
	*ret_acl = acl;
	return FL_OK;

fail:
	acl_finish(&acl);
	return status;
}

bool fl_acl_contains(const struct fl_acl *acl, const char *entry)
{
	if (acl == NULL || entry == NULL || acl->count == 0)
		return false;
	return bsearch(&entry, acl->entries, acl->count, sizeof(*acl->entries), compare_strings) !=
	       NULL;
}

/* ---- Parsing ----------------------------------------------------------- */

static int compare_features(const void *a, const void *b)
{
	return strcmp(((const struct fl_feature *)a)->name, ((const struct fl_feature *)b)->name);
}

static int compare_windows(const void *a, const void *b)
{
	return strcmp(((const struct fl_window *)a)->name, ((const struct fl_window *)b)->name);
}

static void view_free(struct fl_view *view)
{
	if (view == NULL)
		return;
	for (size_t i = 0; i < view->n_features; i++)
		acl_finish(&view->features[i].read_acl);
	free(view->features);
	free(view->windows);
	acl_finish(&view->write_acl);
	acl_finish(&view->read_acl);
	free(view->canonical);
	free(view->identity);
	free(view);
}

/* Binary search in the name-sorted features. */
static struct fl_feature *find_feature(const struct fl_view *view, const char *name)
{
	struct fl_feature key;
	if (name == NULL || strlen(name) > FL_NAME_MAX_LEN || view->n_features == 0)
		return NULL; /* bsearch needs an array, even of no elements */
	strcpy(key.name, name);
	return bsearch(&key, view->features, view->n_features, sizeof(*view->features),
		       compare_features);
}

static struct fl_window *find_window(const struct fl_view *view, const char *name)
{
	struct fl_window key;
	if (name == NULL || strlen(name) > FL_NAME_MAX_LEN || view->n_windows == 0)
		return NULL; /* a view without windows may have no array */
	strcpy(key.name, name);
	return bsearch(&key, view->windows, view->n_windows, sizeof(*view->windows),
		       compare_windows);
}

/* Parses "features": a non-empty object of name → type, sorted into view. */
static enum fl_status parse_features(const json_t *features, struct fl_view *view,
				     struct fl_error *err)
{
	if (features == NULL)
		return fl_error_invalid(err, "missing_field", "features",
					"a view needs \"features\"");
	if (!json_is_object(features))
		return fl_error_invalid(err, "invalid_type", "features",
					"\"features\" must be an object of name → type");
	size_t count = json_object_size(features);
	if (count == 0)
		return fl_error_invalid(err, "invalid_value", "features",
					"a view needs at least one feature");
	if (count > FL_VIEW_MAX_FEATURES)
		return fl_error_invalid(err, "limit_exceeded", "features",
					"a view has at most %d features", FL_VIEW_MAX_FEATURES);
	view->features = calloc(count, sizeof(*view->features));
	if (view->features == NULL)
		return fl_error_nomem(err);

	const char *key;
	json_t *value;
	json_object_foreach((json_t *)features, key, value)
	{
		char field[PATH_LEN];
		fl_error_path_key(field, sizeof(field), "features", key);
		if (!valid_name(key, strlen(key)))
			return fl_error_invalid(
			    err, "invalid_name", field,
			    "feature name \"%.64s\" is not a valid name: lowercase letter "
			    "first, then up to 62 lowercase letters, digits or '_'",
			    key);
		if (strcmp(key, view->entity) == 0)
			return fl_error_invalid(err, "duplicate_name", field,
						"feature \"%s\" has the name of the view's entity",
						key);
		struct fl_feature *feature = &view->features[view->n_features];
		if (!json_is_string(value))
			return fl_error_invalid(err, "invalid_type", field,
						"a feature type must be a string");
		if (!parse_feature_type(json_string_value(value), json_string_length(value),
					&feature->type, &feature->dims))
			return fl_error_invalid(
			    err, "invalid_feature_type", field,
			    "\"%.32s\" is not a feature type: int64, double, string, bool "
			    "or vector[N] with 1 <= N <= %d",
			    json_string_value(value), FL_VECTOR_MAX_DIMS);
		strcpy(feature->name, key);
		view->n_features++;
	}
	/* JSON object keys are unique, so there are no duplicates to find. */
	if (view->n_features > 1)
		qsort(view->features, view->n_features, sizeof(*view->features), compare_features);
	for (size_t i = 0; i < view->n_features; i++)
		view->features[i].index = i;
	return FL_OK;
}

/* Parses one window object at windows[index] into window. */
static enum fl_status parse_window(const json_t *object, size_t index, const struct fl_view *view,
				   struct fl_window *window, struct fl_error *err)
{
	static const char *const keys[] = {"name", "fn", "of", "size", "n", NULL};
	char prefix[PATH_LEN], field[PATH_LEN];
	snprintf(prefix, sizeof(prefix), "windows[%zu]", index);
	if (!json_is_object(object))
		return fl_error_invalid(err, "invalid_type", prefix, "a window must be an object");
	enum fl_status status = check_keys(object, prefix, keys, err);
	if (status != FL_OK)
		return status;

	fl_error_path_join(field, sizeof(field), prefix, ".name");
	const json_t *name = json_object_get(object, "name");
	if (name == NULL)
		return fl_error_invalid(err, "missing_field", field, "a window needs a \"name\"");
	status = parse_name(name, field, "window name", window->name, err);
	if (status != FL_OK)
		return status;
	if (find_feature(view, window->name) != NULL || strcmp(window->name, view->entity) == 0)
		return fl_error_invalid(err, "duplicate_name", field,
					"window \"%s\" has the name of a feature or of the entity",
					window->name);

	fl_error_path_join(field, sizeof(field), prefix, ".fn");
	const json_t *fn = json_object_get(object, "fn");
	if (fn == NULL)
		return fl_error_invalid(err, "missing_field", field,
					"a window needs a function \"fn\"");
	if (!json_is_string(fn))
		return fl_error_invalid(err, "invalid_type", field, "\"fn\" must be a string");
	size_t fn_index = 0;
	while (fn_index < N_WINDOW_FNS &&
	       strcmp(json_string_value(fn), window_fn_names[fn_index]) != 0)
		fn_index++;
	if (fn_index == N_WINDOW_FNS)
		return fl_error_invalid(
		    err, "invalid_value", field,
		    "\"%.32s\" is not a window function: count, sum, avg, min, max, "
		    "last, last_n or stddev",
		    json_string_value(fn));
	window->fn = (enum fl_window_fn)fn_index;

	fl_error_path_join(field, sizeof(field), prefix, ".of");
	const json_t *of = json_object_get(object, "of");
	if (of == NULL)
		return fl_error_invalid(err, "missing_field", field,
					"a window needs the feature it is \"of\"");
	if (!json_is_string(of))
		return fl_error_invalid(err, "invalid_type", field,
					"\"of\" must be a feature name");
	const struct fl_feature *feature = NULL;
	if (strlen(json_string_value(of)) == json_string_length(of))
		feature = find_feature(view, json_string_value(of));
	if (feature == NULL)
		return fl_error_invalid(
		    err, "unknown_feature", field,
		    "window \"%s\" is over \"%.64s\", which is not a feature of the view",
		    window->name, json_string_value(of));
	strcpy(window->of, feature->name);

	switch (window->fn) {
	case FL_WINDOW_SUM:
	case FL_WINDOW_AVG:
	case FL_WINDOW_MIN:
	case FL_WINDOW_MAX:
	case FL_WINDOW_STDDEV:
		if (feature->type != FL_FEATURE_INT64 && feature->type != FL_FEATURE_DOUBLE) {
			fl_error_path_join(field, sizeof(field), prefix, ".fn");
			return fl_error_invalid(err, "invalid_window", field,
						"%s needs an int64 or double feature; \"%s\" is %s",
						window_fn_names[window->fn], feature->name,
						fl_feature_type_name(feature->type));
		}
		break;
	default:
		break;
	}

	fl_error_path_join(field, sizeof(field), prefix, ".size");
	const json_t *size = json_object_get(object, "size");
	if (size == NULL)
		return fl_error_invalid(err, "missing_field", field, "a window needs a \"size\"");
	status = parse_duration(size, field, &window->size_us, window->size_text, err);
	if (status != FL_OK)
		return status;

	fl_error_path_join(field, sizeof(field), prefix, ".n");
	const json_t *n = json_object_get(object, "n");
	if (window->fn == FL_WINDOW_LAST_N) {
		if (n == NULL)
			return fl_error_invalid(err, "missing_field", field, "last_n needs \"n\"");
		if (!json_is_integer(n))
			return fl_error_invalid(err, "invalid_type", field,
						"\"n\" must be an integer");
		json_int_t value = json_integer_value(n);
		if (value < 1 || value > FL_LAST_N_MAX)
			return fl_error_invalid(err, "invalid_value", field,
						"\"n\" must be 1 to %d", FL_LAST_N_MAX);
		window->n = (uint32_t)value;
	} else if (n != NULL) {
		return fl_error_invalid(err, "invalid_window", field,
					"\"n\" is only for last_n windows");
	}
	return FL_OK;
}

/* Parses "windows" (optional): at most FL_VIEW_MAX_WINDOWS, unique names. */
static enum fl_status parse_windows(const json_t *windows, struct fl_view *view,
				    struct fl_error *err)
{
	if (windows == NULL)
		return FL_OK;
	if (!json_is_array(windows))
		return fl_error_invalid(err, "invalid_type", "windows",
					"\"windows\" must be a list");
	size_t count = json_array_size(windows);
	if (count > FL_VIEW_MAX_WINDOWS)
		return fl_error_invalid(err, "limit_exceeded", "windows",
					"a view has at most %d windows", FL_VIEW_MAX_WINDOWS);
	if (count == 0)
		return FL_OK;
	view->windows = calloc(count, sizeof(*view->windows));
	if (view->windows == NULL)
		return fl_error_nomem(err);
	for (size_t i = 0; i < count; i++) {
		struct fl_window *window = &view->windows[i];
		enum fl_status status =
		    parse_window(json_array_get(windows, i), i, view, window, err);
		if (status != FL_OK)
			return status;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(view->windows[j].name, window->name) == 0) {
				char field[PATH_LEN];
				snprintf(field, sizeof(field), "windows[%zu].name", i);
				return fl_error_invalid(err, "duplicate_name", field,
							"window name \"%s\" is used twice",
							window->name);
			}
		}
		view->n_windows++;
	}
	if (view->n_windows > 1)
		qsort(view->windows, view->n_windows, sizeof(*view->windows), compare_windows);
	for (size_t i = 0; i < view->n_windows; i++) {
		view->windows[i].index = i;
		view->windows[i].of_index = find_feature(view, view->windows[i].of)->index;
	}
	return FL_OK;
}

/* Parses "acl" (optional): {"write": [...], "read": [...], "features": {...}}. */
static enum fl_status parse_acl(const json_t *acl, struct fl_view *view, struct fl_error *err)
{
	static const char *const keys[] = {"write", "read", "features", NULL};
	static const char *const feature_keys[] = {"read", NULL};
	if (acl == NULL)
		return FL_OK;
	if (!json_is_object(acl))
		return fl_error_invalid(err, "invalid_type", "acl", "\"acl\" must be an object");
	enum fl_status status = check_keys(acl, "acl", keys, err);
	if (status != FL_OK)
		return status;
	const json_t *write = optional_member(acl, "write");
	if (write != NULL &&
	    (status = parse_acl_list(write, "acl.write", &view->write_acl, err)) != FL_OK)
		return status;
	const json_t *read = optional_member(acl, "read");
	if (read != NULL &&
	    (status = parse_acl_list(read, "acl.read", &view->read_acl, err)) != FL_OK)
		return status;

	const json_t *features = optional_member(acl, "features");
	if (features == NULL)
		return FL_OK;
	if (!json_is_object(features))
		return fl_error_invalid(
		    err, "invalid_type", "acl.features",
		    "\"acl.features\" must be an object of feature → {\"read\": [...]}");
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)features, key, value)
	{
		char field[PATH_LEN], list_field[PATH_LEN];
		fl_error_path_key(field, sizeof(field), "acl.features", key);
		struct fl_feature *feature = find_feature(view, key);
		if (feature == NULL)
			return fl_error_invalid(
			    err, "unknown_feature", field,
			    "the ACL names \"%.64s\", which is not a feature of the view", key);
		if (!json_is_object(value))
			return fl_error_invalid(
			    err, "invalid_type", field,
			    "a feature ACL must be an object {\"read\": [...]}");
		if ((status = check_keys(value, field, feature_keys, err)) != FL_OK)
			return status;
		fl_error_path_join(list_field, sizeof(list_field), field, ".read");
		const json_t *list = json_object_get(value, "read");
		if (list == NULL)
			return fl_error_invalid(err, "missing_field", list_field,
						"a feature ACL needs a \"read\" list");
		status = parse_acl_list(list, list_field, &feature->read_acl, err);
		if (status != FL_OK)
			return status;
		feature->read_restricted = true;
	}
	return FL_OK;
}

static json_t *acl_to_json(const struct fl_acl *acl)
{
	json_t *array = json_array();
	for (size_t i = 0; array != NULL && i < acl->count; i++) {
		if (json_array_append_new(array, json_string(acl->entries[i])) != 0) {
			json_decref(array);
			return NULL;
		}
	}
	return array;
}

/* Sets key of object to a new value; false (and object unchanged) on failure. */
static bool set_new(json_t *object, const char *key, json_t *value)
{
	return value != NULL && json_object_set_new(object, key, value) == 0;
}

/*
 * Builds the canonical definition as a json object (see view.h), with the
 * durations as written, or in their largest exact unit when normalise is set
 * (the identity form that fl_view_compare compares).
 */
static json_t *build_json(const struct fl_view *view, bool normalise)
{
	char text[32];
	json_t *root = json_object();
	json_t *features = json_object();
	json_t *windows = json_array();
	json_t *acl = json_object();
	json_t *acl_features = json_object();
	if (root == NULL || features == NULL || windows == NULL || acl == NULL ||
	    acl_features == NULL)
		goto fail;

	for (size_t i = 0; i < view->n_features; i++) {
		const struct fl_feature *feature = &view->features[i];
		if (feature->type == FL_FEATURE_VECTOR)
			snprintf(text, sizeof(text), "vector[%" PRIu32 "]", feature->dims);
		else
			snprintf(text, sizeof(text), "%s", fl_feature_type_name(feature->type));
		if (!set_new(features, feature->name, json_string(text)))
			goto fail;
		if (feature->read_restricted) {
			json_t *entry = json_object();
			if (entry == NULL || !set_new(acl_features, feature->name, entry) ||
			    !set_new(entry, "read", acl_to_json(&feature->read_acl)))
				goto fail;
		}
	}
	for (size_t i = 0; i < view->n_windows; i++) {
		const struct fl_window *window = &view->windows[i];
		json_t *entry = json_object();
		if (entry == NULL || json_array_append_new(windows, entry) != 0)
			goto fail;
		duration_text(window->size_us, window->size_text, normalise, text);
		if (!set_new(entry, "name", json_string(window->name)) ||
		    !set_new(entry, "fn", json_string(window_fn_names[window->fn])) ||
		    !set_new(entry, "of", json_string(window->of)) ||
		    !set_new(entry, "size", json_string(text)))
			goto fail;
		if (window->fn == FL_WINDOW_LAST_N && !set_new(entry, "n", json_integer(window->n)))
			goto fail;
	}
	if (!set_new(acl, "write", acl_to_json(&view->write_acl)) ||
	    !set_new(acl, "read", acl_to_json(&view->read_acl)))
		goto fail;
	if (json_object_set_new(acl, "features", acl_features) != 0) {
		acl_features = NULL;
		goto fail;
	}
	acl_features = NULL;

	if (!set_new(root, "name", json_string(view->name)) ||
	    !set_new(root, "entity", json_string(view->entity)))
		goto fail;
	if (json_object_set_new(root, "features", features) != 0) {
		features = NULL;
		goto fail;
	}
	features = NULL;
	if (json_object_set_new(root, "windows", windows) != 0) {
		windows = NULL;
		goto fail;
	}
	windows = NULL;
	if (json_object_set_new(root, "acl", acl) != 0) {
		acl = NULL;
		goto fail;
	}
	acl = NULL;
	if (view->max_age_us > 0) {
		duration_text(view->max_age_us, view->max_age_text, normalise, text);
		if (!set_new(root, "max_age", json_string(text)))
			goto fail;
	}
	duration_text(view->retention_us, view->retention_text, normalise, text);
	if (!set_new(root, "retention", json_string(text)) ||
	    !set_new(root, "audit_reads", json_boolean(view->audit_reads)))
		goto fail;
	return root;

fail:
	json_decref(acl_features);
	json_decref(acl);
	json_decref(windows);
	json_decref(features);
	json_decref(root);
	return NULL;
}

/* The canonical (or identity) text of view: compact, keys sorted. */
static enum fl_status dump_json(const struct fl_view *view, bool normalise, char **ret_text,
				size_t *ret_len)
{
	json_t *root = build_json(view, normalise);
	if (root == NULL)
		return FL_ERR_NOMEM;
	char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (text == NULL)
		return FL_ERR_NOMEM;
	*ret_text = text;
	*ret_len = strlen(text);
	return FL_OK;
}

enum fl_status fl_view_parse(const json_t *definition, struct fl_view **ret_view,
			     struct fl_error *err)
{
	static const char *const keys[] = {"name", "entity",	  "features",  "max_age", "windows",
					   "acl",  "audit_reads", "retention", NULL};
	if (ret_view == NULL)
		return fl_error_invalid(err, "invalid_value", NULL, "no place for the view");
	if (!json_is_object(definition))
		return fl_error_invalid(err, "invalid_json", NULL,
					"a view definition must be a JSON object");
	if (json_object_get(definition, "version") != NULL)
		return fl_error_invalid(err, "unknown_field", "version",
					"\"version\" is assigned by the server; leave it out");
	enum fl_status status = check_keys(definition, "", keys, err);
	if (status != FL_OK)
		return status;

	struct fl_view *view = calloc(1, sizeof(*view));
	if (view == NULL)
		return fl_error_nomem(err);
	atomic_init(&view->refs, 1);
	view->audit_reads = true;
	view->retention_us = FL_VIEW_DEFAULT_RETENTION_US;
	strcpy(view->retention_text, "30d");

	const json_t *name = json_object_get(definition, "name");
	if (name == NULL) {
		status = fl_error_invalid(err, "missing_field", "name", "a view needs a \"name\"");
		goto fail;
	}
	if ((status = parse_name(name, "name", "view name", view->name, err)) != FL_OK)
		goto fail;
	const json_t *entity = json_object_get(definition, "entity");
	if (entity == NULL) {
		status =
		    fl_error_invalid(err, "missing_field", "entity", "a view needs an \"entity\"");
		goto fail;
	}
	if ((status = parse_name(entity, "entity", "entity name", view->entity, err)) != FL_OK)
		goto fail;
	if ((status = parse_features(json_object_get(definition, "features"), view, err)) != FL_OK)
		goto fail;

	const json_t *max_age = optional_member(definition, "max_age");
	if (max_age != NULL && (status = parse_duration(max_age, "max_age", &view->max_age_us,
							view->max_age_text, err)) != FL_OK)
		goto fail;
	const json_t *retention = optional_member(definition, "retention");
	if (retention != NULL &&
	    (status = parse_duration(retention, "retention", &view->retention_us,
				     view->retention_text, err)) != FL_OK)
		goto fail;
	const json_t *audit_reads = optional_member(definition, "audit_reads");
	if (audit_reads != NULL) {
		if (!json_is_boolean(audit_reads)) {
			status = fl_error_invalid(err, "invalid_type", "audit_reads",
						  "\"audit_reads\" must be true or false");
			goto fail;
		}
		view->audit_reads = json_is_true(audit_reads);
	}
	if ((status = parse_windows(optional_member(definition, "windows"), view, err)) != FL_OK)
		goto fail;
	if ((status = parse_acl(optional_member(definition, "acl"), view, err)) != FL_OK)
		goto fail;

	if ((status = dump_json(view, false, &view->canonical, &view->canonical_len)) != FL_OK ||
	    (status = dump_json(view, true, &view->identity, &view->identity_len)) != FL_OK) {
		fl_error_nomem(err);
		goto fail;
	}
	*ret_view = view;
	return FL_OK;

fail:
	view_free(view);
	return status;
}

struct fl_view *fl_view_ref(struct fl_view *view)
{
	assert(view != NULL);
	atomic_fetch_add_explicit(&view->refs, 1, memory_order_relaxed);
	return view;
}

void fl_view_unref(struct fl_view *view)
{
	if (view == NULL)
		return;
	if (atomic_fetch_sub_explicit(&view->refs, 1, memory_order_acq_rel) == 1)
		view_free(view);
}

/* ---- Accessors --------------------------------------------------------- */

const char *fl_view_name(const struct fl_view *view)
{
	return view->name;
}

const char *fl_view_entity(const struct fl_view *view)
{
	return view->entity;
}

uint64_t fl_view_version(const struct fl_view *view)
{
	return view->version;
}

size_t fl_view_feature_count(const struct fl_view *view)
{
	return view->n_features;
}

const struct fl_feature *fl_view_feature_at(const struct fl_view *view, size_t index)
{
	return index < view->n_features ? &view->features[index] : NULL;
}

const struct fl_feature *fl_view_feature(const struct fl_view *view, const char *name)
{
	return find_feature(view, name);
}

size_t fl_view_window_count(const struct fl_view *view)
{
	return view->n_windows;
}

const struct fl_window *fl_view_window_at(const struct fl_view *view, size_t index)
{
	return index < view->n_windows ? &view->windows[index] : NULL;
}

const struct fl_window *fl_view_window(const struct fl_view *view, const char *name)
{
	return find_window(view, name);
}

int64_t fl_view_max_age_us(const struct fl_view *view)
{
	return view->max_age_us;
}

int64_t fl_view_retention_us(const struct fl_view *view)
{
	return view->retention_us;
}

bool fl_view_audit_reads(const struct fl_view *view)
{
	return view->audit_reads;
}

const struct fl_acl *fl_view_write_acl(const struct fl_view *view)
{
	return &view->write_acl;
}

const struct fl_acl *fl_view_read_acl(const struct fl_view *view)
{
	return &view->read_acl;
}

/* ---- Canonical form and changes ---------------------------------------- */

void fl_view_canonical(const struct fl_view *view, const char **ret_text, size_t *ret_len)
{
	assert(view != NULL && ret_text != NULL);
	*ret_text = view->canonical;
	if (ret_len != NULL)
		*ret_len = view->canonical_len;
}

json_t *fl_view_to_json(const struct fl_view *view, bool with_version)
{
	json_t *root = build_json(view, false);
	if (root != NULL && with_version &&
	    json_object_set_new(root, "version", json_integer((json_int_t)view->version)) != 0) {
		json_decref(root);
		return NULL;
	}
	return root;
}

enum fl_view_change fl_view_compare(const struct fl_view *current, const struct fl_view *proposed,
				    struct fl_error *err)
{
	assert(current != NULL && proposed != NULL);
	if (strcmp(current->name, proposed->name) != 0) {
		fl_error_set(err, 409, "incompatible_view_change", "name",
			     "view \"%s\" cannot become \"%s\"", current->name, proposed->name);
		return FL_VIEW_INCOMPATIBLE;
	}
	if (strcmp(current->entity, proposed->entity) != 0) {
		fl_error_set(err, 409, "incompatible_view_change", "entity",
			     "the entity of view \"%s\" is \"%s\" and cannot change to \"%s\"",
			     current->name, current->entity, proposed->entity);
		return FL_VIEW_INCOMPATIBLE;
	}
	for (size_t i = 0; i < current->n_features; i++) {
		const struct fl_feature *old = &current->features[i];
		const struct fl_feature *new = find_feature(proposed, old->name);
		char field[PATH_LEN];
		fl_error_path_key(field, sizeof(field), "features", old->name);
		if (new == NULL) {
			fl_error_set(err, 409, "incompatible_view_change", field,
				     "feature \"%s\" of view \"%s\" cannot be removed", old->name,
				     current->name);
			return FL_VIEW_INCOMPATIBLE;
		}
		if (new->type != old->type || new->dims != old->dims) {
			char old_type[24], new_type[24];
			snprintf(old_type, sizeof(old_type), "%s", fl_feature_type_name(old->type));
			snprintf(new_type, sizeof(new_type), "%s", fl_feature_type_name(new->type));
			if (old->type == FL_FEATURE_VECTOR)
				snprintf(old_type, sizeof(old_type), "vector[%" PRIu32 "]",
					 old->dims);
			if (new->type == FL_FEATURE_VECTOR)
				snprintf(new_type, sizeof(new_type), "vector[%" PRIu32 "]",
					 new->dims);
			fl_error_set(err, 409, "incompatible_view_change", field,
				     "feature \"%s\" of view \"%s\" is %s and cannot become %s",
				     old->name, current->name, old_type, new_type);
			return FL_VIEW_INCOMPATIBLE;
		}
	}
	if (current->identity_len == proposed->identity_len &&
	    memcmp(current->identity, proposed->identity, current->identity_len) == 0)
		return FL_VIEW_IDENTICAL;
	return FL_VIEW_COMPATIBLE;
}

/* ---- Registry ---------------------------------------------------------- */

struct fl_view_registry {
	pthread_rwlock_t lock;
	struct fl_view **views; /* name order */
	size_t count;
	size_t capacity;
};

enum fl_status fl_view_registry_create(struct fl_view_registry **ret_registry)
{
	if (ret_registry == NULL)
		return FL_ERR_INVALID;
	struct fl_view_registry *registry = calloc(1, sizeof(*registry));
	if (registry == NULL)
		return FL_ERR_NOMEM;
	if (pthread_rwlock_init(&registry->lock, NULL) != 0) {
		free(registry);
		return FL_ERR_NOMEM;
	}
	*ret_registry = registry;
	return FL_OK;
}

void fl_view_registry_destroy(struct fl_view_registry *registry)
{
	if (registry == NULL)
		return;
	for (size_t i = 0; i < registry->count; i++)
		fl_view_unref(registry->views[i]);
	free(registry->views);
	pthread_rwlock_destroy(&registry->lock);
	free(registry);
}

/*
 * The position of name in the registry (locked by the caller), or where it
 * would be inserted; *ret_found tells which.
 */
static size_t registry_position(const struct fl_view_registry *registry, const char *name,
				bool *ret_found)
{
	size_t low = 0, high = registry->count;
	while (low < high) {
		size_t mid = low + (high - low) / 2;
		int order = strcmp(registry->views[mid]->name, name);
		if (order == 0) {
			*ret_found = true;
			return mid;
		}
		if (order < 0)
			low = mid + 1;
		else
			high = mid;
	}
	*ret_found = false;
	return low;
}

enum fl_status fl_view_registry_get(struct fl_view_registry *registry, const char *name,
				    struct fl_view **ret_view)
{
	if (registry == NULL || name == NULL || ret_view == NULL)
		return FL_ERR_INVALID;
	pthread_rwlock_rdlock(&registry->lock);
	bool found;
	size_t position = registry_position(registry, name, &found);
	if (found)
		*ret_view = fl_view_ref(registry->views[position]);
	pthread_rwlock_unlock(&registry->lock);
	return found ? FL_OK : FL_ERR_NOT_FOUND;
}

/*
 * put and restore: a name already present goes to version current + 1; a new
 * name starts at 1, or, restoring, at any version.
 */
static enum fl_status registry_insert(struct fl_view_registry *registry, struct fl_view *view,
				      uint64_t version, bool restoring)
{
	if (registry == NULL || view == NULL || version == 0)
		return FL_ERR_INVALID;
	if (view->version != 0 && view->version != version)
		return FL_ERR_INVALID;
	enum fl_status status = FL_OK;
	pthread_rwlock_wrlock(&registry->lock);
	bool found;
	size_t position = registry_position(registry, view->name, &found);
	if (found) {
		struct fl_view *current = registry->views[position];
		if (restoring || current == view || version != current->version + 1) {
			status = FL_ERR_CONFLICT;
			goto unlock;
		}
		view->version = version;
		registry->views[position] = fl_view_ref(view);
		fl_view_unref(current);
		goto unlock;
	}
	if (version != 1 && !restoring) {
		status = FL_ERR_CONFLICT;
		goto unlock;
	}
	if (registry->count == registry->capacity) {
		size_t capacity = registry->capacity == 0 ? 16 : registry->capacity * 2;
		struct fl_view **views = realloc(registry->views, capacity * sizeof(*views));
		if (views == NULL) {
			status = FL_ERR_NOMEM;
			goto unlock;
		}
		registry->views = views;
		registry->capacity = capacity;
	}
	memmove(&registry->views[position + 1], &registry->views[position],
		(registry->count - position) * sizeof(*registry->views));
	view->version = version;
	registry->views[position] = fl_view_ref(view);
	registry->count++;

unlock:
	pthread_rwlock_unlock(&registry->lock);
	return status;
}

enum fl_status fl_view_registry_put(struct fl_view_registry *registry, struct fl_view *view,
				    uint64_t version)
{
	return registry_insert(registry, view, version, false);
}

enum fl_status fl_view_registry_restore(struct fl_view_registry *registry, struct fl_view *view,
					uint64_t version)
{
	return registry_insert(registry, view, version, true);
}

size_t fl_view_registry_count(struct fl_view_registry *registry)
{
	if (registry == NULL)
		return 0;
	pthread_rwlock_rdlock(&registry->lock);
	size_t count = registry->count;
	pthread_rwlock_unlock(&registry->lock);
	return count;
}

enum fl_status fl_view_registry_list(struct fl_view_registry *registry, struct fl_view ***ret_views,
				     size_t *ret_count)
{
	if (registry == NULL || ret_views == NULL || ret_count == NULL)
		return FL_ERR_INVALID;
	enum fl_status status = FL_OK;
	struct fl_view **views = NULL;
	pthread_rwlock_rdlock(&registry->lock);
	size_t count = registry->count;
	if (count > 0) {
		views = malloc(count * sizeof(*views));
		if (views == NULL) {
			status = FL_ERR_NOMEM;
			goto unlock;
		}
		for (size_t i = 0; i < count; i++)
			views[i] = fl_view_ref(registry->views[i]);
	}
unlock:
	pthread_rwlock_unlock(&registry->lock);
	if (status == FL_OK) {
		*ret_views = views;
		*ret_count = count;
	}
	return status;
}

void fl_view_list_free(struct fl_view **views, size_t count)
{
	if (views == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		fl_view_unref(views[i]);
	free(views);
}
