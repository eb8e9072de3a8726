/*
 * Parsing the read routes into a plan (read_plan.h): which views, entity
 * ids, features and windows a read asks for, each checked against the
 * principal's roles and ACLs (CONTRACT §6) as it is taken, so that a plan
 * holds only what the principal may read.
 */
#include "read_plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/svc.h"
#include "fledger/util.h"

/* Fills err with the 500 of an internal failure; returns false. */
static bool fail_internal(struct fl_error *err, enum fl_status st)
{
	fl_error_set(err, 500, "internal_error", NULL, "%s", fl_status_str(st));
	return false;
}

void fl_read_plan_init(struct fl_read_plan *plan, enum fl_read_kind kind,
		       const struct fl_principal *principal, struct fl_view_registry *views)
{
	*plan = (struct fl_read_plan){
	    .kind = kind,
	    .principal = principal,
	    .views = views,
	    .from_us = INT64_MIN,
	    .to_us = INT64_MAX,
	};
}

void fl_read_plan_finish(struct fl_read_plan *plan)
{
	for (size_t i = 0; i < plan->n_parts; i++) {
		fl_view_unref(plan->parts[i].view);
		free(plan->parts[i].features);
		free(plan->parts[i].windows);
	}
	fl_text_free(&plan->parts_buf);
	for (size_t i = 0; i < plan->n_entities; i++)
		free(plan->entity_ids[i]);
	fl_text_free(&plan->ids_buf);
	json_decref(plan->entity_values);
	free(plan->columns);
	fl_read_plan_init(plan, plan->kind, plan->principal, plan->views);
}

bool fl_read_plan_role(enum fl_read_kind kind, const struct fl_principal *principal,
		       struct fl_error *err)
{
	const char *role = kind == FL_READ_HISTORY ? "auditor" : "reader";
	if (fl_principal_has_role(principal, "admin") || fl_principal_has_role(principal, role))
		return true;
	fl_error_set(err, 403, "forbidden", NULL, "this route needs the role %s", role);
	return false;
}

const char *fl_read_path_rest(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(path, prefix, n) != 0)
		return NULL;
	const char *slash = strchr(path + n, '/');
	return slash && slash > path + n ? path + n : NULL;
}

/* ---- checks ---------------------------------------------------------------- */

static bool acl_allows(const struct fl_principal *principal, const struct fl_acl *acl)
{
	return fl_acl_allows(principal, (const char *const *)acl->entries, acl->count);
}

bool fl_read_feature_readable(const struct fl_principal *principal, const struct fl_feature *f)
{
	return !f->read_restricted || acl_allows(principal, &f->read_acl);
}

/* Per-feature restrictions extend to the windows over that feature (§6). */
bool fl_read_window_readable(const struct fl_principal *principal, const struct fl_view *view,
			     const struct fl_window *w)
{
	return fl_read_feature_readable(principal, fl_view_feature_at(view, w->of_index));
}

/*
 * Checks that text could be an entity id that was written (CONTRACT §3),
 * by the rules writes are checked with (C1 controls aside: events from
 * before they were refused hold them).
 */
static bool entity_id_ok(const char *text, size_t len, const char *field, struct fl_error *err)
{
	enum fl_entity_id_fault fault = fl_entity_id_check_read(text, len);
	if (fault == FL_ENTITY_ID_OK)
		return true;
	fl_error_set(err, 400, "invalid_entity_id", field, "%s: no event could have it",
		     fl_entity_id_fault_text(fault));
	return false;
}

/* Takes id (malloc'd) into the plan; frees it on failure. */
static bool add_entity(struct fl_read_plan *plan, char *id, struct fl_error *err)
{
	fl_text_append(&plan->ids_buf, &id, sizeof(id));
	if (plan->ids_buf.failed) {
		free(id);
		return fail_internal(err, FL_ERR_NOMEM);
	}
	plan->entity_ids = (char **)(void *)plan->ids_buf.data;
	plan->n_entities++;
	return true;
}

/* An entity id given as text (a URL path's rest). */
static bool entity_from_text(struct fl_read_plan *plan, const char *text, struct fl_error *err)
{
	if (!entity_id_ok(text, strlen(text), NULL, err))
		return false;
	char *id = strdup(text);
	if (!id)
		return fail_internal(err, FL_ERR_NOMEM);
	return add_entity(plan, id, err);
}

/* An entity id given in JSON: a string, or an integer (its decimal text, §3). */
static bool entity_from_json(struct fl_read_plan *plan, const json_t *value, const char *field,
			     struct fl_error *err)
{
	char number[24];
	const char *text;
	size_t len;
	if (json_is_integer(value)) {
		snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
		text = number;
		len = strlen(number);
	} else if (json_is_string(value)) {
		text = json_string_value(value);
		len = json_string_length(value);
	} else {
		fl_error_set(err, 400, "invalid_type", field,
			     "an entity id is a string or an integer");
		return false;
	}
	if (!entity_id_ok(text, len, field, err))
		return false;
	char *id = strdup(text);
	if (!id)
		return fail_internal(err, FL_ERR_NOMEM);
	return add_entity(plan, id, err);
}

static bool param_u64(const struct fl_read_params *params, const char *name, uint64_t default_value,
		      uint64_t min, uint64_t max, uint64_t *ret_value, struct fl_error *err)
{
	return fl_svc_param_u64(name, params ? params->get(params->ctx, name) : NULL, default_value,
				min, max, ret_value, err);
}

static const char *param(const struct fl_read_params *params, const char *name)
{
	return params ? params->get(params->ctx, name) : NULL;
}

bool fl_read_parse_time(const char *text, const char *field, bool from_url, int64_t *ret_us,
			struct fl_error *err)
{
	if (fl_time_parse(text, ret_us) == FL_OK)
		return true;
	char fixed[64];
	if (from_url && strlen(text) < sizeof(fixed) && strlen(text) > 19) {
		strcpy(fixed, text);
		char *space = strchr(fixed + 19, ' ');
		if (space) {
			*space = '+';
			if (fl_time_parse(fixed, ret_us) == FL_OK)
				return true;
		}
	}
	fl_error_set(err, 400, "invalid_timestamp", field,
		     "%s must be an RFC 3339 timestamp with a zone (2026-11-26T21:00:00Z)", field);
	return false;
}

/* ---- choosing views, features and windows ---------------------------------- */

/* Appends a part for view (the reference is the plan's, or dropped on failure). */
static bool push_part(struct fl_read_plan *plan, struct fl_view *view, size_t *ret_index,
		      struct fl_error *err)
{
	size_t n_features = fl_view_feature_count(view), n_windows = fl_view_window_count(view);
	struct fl_read_part part = {
	    .view = view,
	    .features = calloc(n_features ? n_features : 1, sizeof(*part.features)),
	    .windows = calloc(n_windows ? n_windows : 1, sizeof(*part.windows)),
	};
	if (part.features && part.windows)
		fl_text_append(&plan->parts_buf, &part, sizeof(part));
	if (!part.features || !part.windows || plan->parts_buf.failed) {
		free(part.features);
		free(part.windows);
		fl_view_unref(view);
		return fail_internal(err, FL_ERR_NOMEM);
	}
	plan->parts = (struct fl_read_part *)(void *)plan->parts_buf.data;
	*ret_index = plan->n_parts++;
	return true;
}

bool fl_read_plan_add_view(struct fl_read_plan *plan, const char *name, const char *field,
			   size_t *ret_index, struct fl_error *err)
{
	struct fl_view *view;
	for (size_t i = 0; i < plan->n_parts; i++)
		if (strcmp(fl_view_name(plan->parts[i].view), name) == 0) {
			*ret_index = i;
			return true;
		}
	if (strlen(name) > FL_NAME_MAX_LEN ||
	    fl_view_registry_get(plan->views, name, &view) != FL_OK) {
		fl_error_set(err, 404, "view_not_found", field, "no view is called \"%.64s\"",
			     name);
		return false;
	}
	if (!acl_allows(plan->principal, fl_view_read_acl(view))) {
		fl_error_set(err, 403, "forbidden", field, "%s may not read view %s",
			     fl_principal_name(plan->principal), name);
		fl_view_unref(view);
		return false;
	}
	return push_part(plan, view, ret_index, err);
}

/*
 * Adds the feature called name to part (once; a repeat is ignored), or fails
 * with 400 unknown_feature or 403 for a feature the principal may not read.
 * ret_index (may be NULL) is its index in part->features.
 */
static bool add_feature(const struct fl_read_plan *plan, struct fl_read_part *part,
			const char *name, const char *field, size_t *ret_index,
			struct fl_error *err)
{
	const struct fl_feature *f = fl_view_feature(part->view, name);
	if (!f) {
		fl_error_set(err, 400, "unknown_feature", field,
			     "view %s has no feature called \"%.64s\"", fl_view_name(part->view),
			     name);
		return false;
	}
	if (!fl_read_feature_readable(plan->principal, f)) {
		fl_error_set(err, 403, "forbidden", field, "%s may not read feature %s",
			     fl_principal_name(plan->principal), f->name);
		return false;
	}
	size_t i = 0;
	while (i < part->n_features && part->features[i] != f)
		i++;
	if (i == part->n_features)
		part->features[part->n_features++] = f;
	if (ret_index)
		*ret_index = i;
	return true;
}

static bool add_window(const struct fl_read_plan *plan, struct fl_read_part *part, const char *name,
		       const char *field, size_t *ret_index, struct fl_error *err)
{
	const struct fl_window *w = fl_view_window(part->view, name);
	if (!w) {
		fl_error_set(err, 400, "unknown_window", field,
			     "view %s has no window called \"%.64s\"", fl_view_name(part->view),
			     name);
		return false;
	}
	if (!fl_read_window_readable(plan->principal, part->view, w)) {
		fl_error_set(err, 403, "forbidden", field,
			     "%s may not read window %s (its feature %s is restricted)",
			     fl_principal_name(plan->principal), w->name, w->of);
		return false;
	}
	size_t i = 0;
	while (i < part->n_windows && part->windows[i] != w)
		i++;
	if (i == part->n_windows)
		part->windows[part->n_windows++] = w;
	if (ret_index)
		*ret_index = i;
	return true;
}

/* Every feature (or window) of the part's view that the principal may read. */
static void add_all_readable(const struct fl_read_plan *plan, struct fl_read_part *part,
			     bool windows)
{
	if (windows) {
		for (size_t i = 0; i < fl_view_window_count(part->view); i++) {
			const struct fl_window *w = fl_view_window_at(part->view, i);
			if (fl_read_window_readable(plan->principal, part->view, w))
				part->windows[part->n_windows++] = w;
		}
	} else {
		for (size_t i = 0; i < fl_view_feature_count(part->view); i++) {
			const struct fl_feature *f = fl_view_feature_at(part->view, i);
			if (fl_read_feature_readable(plan->principal, f))
				part->features[part->n_features++] = f;
		}
	}
}

static bool add_name(const struct fl_read_plan *plan, struct fl_read_part *part, const char *name,
		     bool windows, const char *field, struct fl_error *err)
{
	return windows ? add_window(plan, part, name, field, NULL, err)
		       : add_feature(plan, part, name, field, NULL, err);
}

/*
 * A comma-separated list from a query parameter ("a,b"). NULL takes every
 * name the principal may read; an empty text takes none.
 */
bool fl_read_plan_names(struct fl_read_plan *plan, size_t index, const char *text, bool windows,
			struct fl_error *err)
{
	struct fl_read_part *part = &plan->parts[index];
	const char *field = windows ? "windows" : "features";
	if (!text) {
		add_all_readable(plan, part, windows);
		return true;
	}
	for (const char *p = text; *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char name[FL_NAME_MAX_LEN + 2]; /* a longer name is unknown either way */
		snprintf(name, sizeof(name), "%.*s", (int)len, p);
		if (!add_name(plan, part, name, windows, field, err))
			return false;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p) /* a trailing comma names an empty feature */
			return add_name(plan, part, "", windows, field, err);
	}
	return true;
}

/* A JSON array of names from a body member; absent or null takes every readable name. */
static bool names_from_json(struct fl_read_plan *plan, struct fl_read_part *part,
			    const json_t *list, bool windows, struct fl_error *err)
{
	const char *member = windows ? "windows" : "features";
	char field[48];
	if (!list || json_is_null(list)) {
		add_all_readable(plan, part, windows);
		return true;
	}
	if (!json_is_array(list)) {
		fl_error_set(err, 400, "invalid_type", member, "%s must be an array of names",
			     member);
		return false;
	}
	if (json_array_size(list) > FL_READ_NAME_LIST_MAX) {
		fl_error_set(err, 400, "limit_exceeded", member, "%s lists more than %d names",
			     member, FL_READ_NAME_LIST_MAX);
		return false;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *name = json_array_get(list, i);
		snprintf(field, sizeof(field), "%s[%zu]", member, i);
		if (!json_is_string(name)) {
			fl_error_set(err, 400, "invalid_type", field, "a name must be a string");
			return false;
		}
		if (!add_name(plan, part, json_string_value(name), windows, field, err))
			return false;
	}
	return true;
}

/* ---- parsing each read route ------------------------------------------------ */

bool fl_read_params_wait(const struct fl_read_params *params, uint64_t *ret_min_seq,
			 uint64_t *ret_wait_ms, struct fl_error *err)
{
	return param_u64(params, "min_seq", 0, 0, INT64_MAX, ret_min_seq, err) &&
	       param_u64(params, "wait_ms", FL_READ_WAIT_MS_DEFAULT, 0, FL_READ_WAIT_MS_MAX,
			 ret_wait_ms, err);
}

bool fl_read_plan_one(struct fl_read_plan *plan, const char *rest,
		      const struct fl_read_params *params, struct fl_error *err)
{
	const char *slash = strchr(rest, '/');
	char view_name[FL_NAME_MAX_LEN + 2];
	size_t index;
	uint64_t min_seq, wait_ms, proof;

	snprintf(view_name, sizeof(view_name), "%.*s", (int)(slash - rest), rest);
	if (!fl_read_plan_add_view(plan, view_name, NULL, &index, err) ||
	    !entity_from_text(plan, slash + 1, err))
		return false;
	if (!fl_read_plan_names(plan, 0, param(params, "features"), false, err) ||
	    !fl_read_plan_names(plan, 0, param(params, "windows"), true, err))
		return false;
	const char *as_of = param(params, "as_of");
	if (as_of) {
		if (!fl_read_parse_time(as_of, "as_of", true, &plan->as_of_us, err))
			return false;
		plan->as_of_given = true;
	}
	if (!fl_read_params_wait(params, &min_seq, &wait_ms, err) ||
	    !param_u64(params, "proof", 0, 0, 1, &proof, err))
		return false;
	plan->proof = proof == 1;
	plan->min_seq = min_seq;
	plan->wait_ms = wait_ms;
	return true;
}

/* An optional integer member in [0, max]. */
static bool member_u64(const json_t *body, const char *name, uint64_t default_value, uint64_t max,
		       uint64_t *ret_value, struct fl_error *err)
{
	const json_t *value = json_object_get(body, name);
	if (!value || json_is_null(value)) {
		*ret_value = default_value;
		return true;
	}
	if (!json_is_integer(value) || json_integer_value(value) < 0 ||
	    (uint64_t)json_integer_value(value) > max) {
		fl_error_set(err, 400, json_is_integer(value) ? "invalid_value" : "invalid_type",
			     name, "%s must be an integer from 0 to %" PRIu64, name, max);
		return false;
	}
	*ret_value = (uint64_t)json_integer_value(value);
	return true;
}

/*
 * POST /v1/features:batch: {"view", "entity_ids", "features", "windows",
 * "as_of"}, and as extensions "proof" (bool), "min_seq" and "wait_ms".
 */
bool fl_read_plan_batch(struct fl_read_plan *plan, const json_t *body, struct fl_error *err)
{
	static const char *const members[] = {"view",  "entity_ids", "features", "windows",
					      "as_of", "proof",	     "min_seq",	 "wait_ms"};
	const char *key;
	const json_t *value;
	size_t index;

	json_object_foreach((json_t *)body, key, value)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
			known = known || strcmp(key, members[i]) == 0;
		if (!known) {
			char field[FL_ERROR_FIELD_LEN];
			fl_error_path_key(field, sizeof(field), "", key);
			fl_error_set(err, 400, "unknown_field", field,
				     "a batch read has no member \"%.64s\"", key);
			return false;
		}
	}
	value = json_object_get(body, "view");
	if (!json_is_string(value)) {
		fl_error_set(err, 400, value ? "invalid_type" : "missing_field", "view",
			     "\"view\" must name the view to read");
		return false;
	}
	if (!fl_read_plan_add_view(plan, json_string_value(value), "view", &index, err))
		return false;

	const json_t *ids = json_object_get(body, "entity_ids");
	if (!json_is_array(ids)) {
		fl_error_set(err, 400, ids ? "invalid_type" : "missing_field", "entity_ids",
			     "\"entity_ids\" must be an array of entity ids");
		return false;
	}
	if (json_array_size(ids) == 0) {
		fl_error_set(err, 400, "empty_batch", "entity_ids", "\"entity_ids\" is empty");
		return false;
	}
	if (json_array_size(ids) > FL_READ_BATCH_MAX) {
		fl_error_set(err, 400, "batch_too_large", "entity_ids",
			     "%zu entity ids; at most %d are read at once", json_array_size(ids),
			     FL_READ_BATCH_MAX);
		return false;
	}
	for (size_t i = 0; i < json_array_size(ids); i++) {
		char field[48];
		snprintf(field, sizeof(field), "entity_ids[%zu]", i);
		if (!entity_from_json(plan, json_array_get(ids, i), field, err))
			return false;
	}
	if (!names_from_json(plan, &plan->parts[0], json_object_get(body, "features"), false,
			     err) ||
	    !names_from_json(plan, &plan->parts[0], json_object_get(body, "windows"), true, err))
		return false;

	value = json_object_get(body, "as_of");
	if (value && !json_is_null(value)) {
		if (!json_is_string(value)) {
			fl_error_set(err, 400, "invalid_type", "as_of",
				     "\"as_of\" must be an RFC 3339 timestamp");
			return false;
		}
		if (!fl_read_parse_time(json_string_value(value), "as_of", false, &plan->as_of_us,
					err))
			return false;
		plan->as_of_given = true;
	}
	value = json_object_get(body, "proof");
	if (value && !json_is_null(value) && !json_is_boolean(value)) {
		fl_error_set(err, 400, "invalid_type", "proof", "\"proof\" must be true or false");
		return false;
	}
	plan->proof = json_is_true(value);
	return member_u64(body, "min_seq", 0, INT64_MAX, &plan->min_seq, err) &&
	       member_u64(body, "wait_ms", FL_READ_WAIT_MS_DEFAULT, FL_READ_WAIT_MS_MAX,
			  &plan->wait_ms, err);
}

/*
 * POST /get-online-features (Feast): {"features": ["view:name", ...],
 * "entities": {"<entity column>": [ids]}, "full_feature_names": bool}.
 * Every view named must be keyed by that entity column. Other members are
 * ignored, as Feast's server ignores them, except "feature_service", which
 * fledger does not have.
 */
bool fl_read_plan_feast(struct fl_read_plan *plan, const json_t *body, struct fl_error *err)
{
	const json_t *value = json_object_get(body, "feature_service");
	if (value && !json_is_null(value)) {
		fl_error_set(err, 400, "unsupported", "feature_service",
			     "fledger has no feature services: list \"features\" as \"view:name\"");
		return false;
	}
	value = json_object_get(body, "full_feature_names");
	if (value && !json_is_null(value) && !json_is_boolean(value)) {
		fl_error_set(err, 400, "invalid_type", "full_feature_names",
			     "\"full_feature_names\" must be true or false");
		return false;
	}
	plan->full_feature_names = json_is_true(value);

	const json_t *entities = json_object_get(body, "entities");
	if (!json_is_object(entities) || json_object_size(entities) != 1) {
		fl_error_set(err, 400,
			     !entities			? "missing_field"
			     : json_is_object(entities) ? "invalid_value"
							: "invalid_type",
			     "entities",
			     "\"entities\" must be an object with one entity column: "
			     "{\"<entity>\": [ids]}");
		return false;
	}
	void *only = json_object_iter((json_t *)entities);
	const char *column = json_object_iter_key(only);
	const json_t *ids = json_object_iter_value(only);
	char prefix[FL_ERROR_FIELD_LEN];
	fl_error_path_key(prefix, sizeof(prefix), "entities", column);
	if (!json_is_array(ids)) {
		fl_error_set(err, 400, "invalid_type", prefix,
			     "an entity column is an array of ids");
		return false;
	}
	if (json_array_size(ids) == 0) {
		fl_error_set(err, 400, "empty_batch", prefix, "the entity column is empty");
		return false;
	}
	if (json_array_size(ids) > FL_READ_BATCH_MAX) {
		fl_error_set(err, 400, "batch_too_large", prefix,
			     "%zu entity ids; at most %d are read at once", json_array_size(ids),
			     FL_READ_BATCH_MAX);
		return false;
	}
	snprintf(plan->entity_column, sizeof(plan->entity_column), "%s", column);
	for (size_t i = 0; i < json_array_size(ids); i++) {
		char field[FL_ERROR_FIELD_LEN];
		fl_error_path_index(field, sizeof(field), prefix, i);
		if (!entity_from_json(plan, json_array_get(ids, i), field, err))
			return false;
	}
	plan->entity_values = json_incref((json_t *)ids);

	const json_t *features = json_object_get(body, "features");
	if (!json_is_array(features) || json_array_size(features) == 0) {
		fl_error_set(err, 400,
			     !features		       ? "missing_field"
			     : json_is_array(features) ? "invalid_value"
						       : "invalid_type",
			     "features", "\"features\" must list \"view:name\" references");
		return false;
	}
	if (json_array_size(features) > FL_READ_NAME_LIST_MAX) {
		fl_error_set(err, 400, "limit_exceeded", "features",
			     "\"features\" lists more than %d names", FL_READ_NAME_LIST_MAX);
		return false;
	}
	plan->columns = calloc(json_array_size(features), sizeof(*plan->columns));
	if (!plan->columns)
		return fail_internal(err, FL_ERR_NOMEM);
	for (size_t i = 0; i < json_array_size(features); i++) {
		const json_t *ref = json_array_get(features, i);
		char field[48], view_name[FL_NAME_MAX_LEN + 2];
		struct fl_feast_column *col = &plan->columns[plan->n_columns];
		snprintf(field, sizeof(field), "features[%zu]", i);
		const char *text = json_string_value(ref), *colon = text ? strchr(text, ':') : NULL;
		if (!colon) {
			fl_error_set(err, 400, ref && !text ? "invalid_type" : "invalid_value",
				     field, "a feature reference is \"<view>:<name>\"");
			return false;
		}
		snprintf(view_name, sizeof(view_name), "%.*s", (int)(colon - text), text);
		if (!fl_read_plan_add_view(plan, view_name, field, &col->part, err))
			return false;
		struct fl_read_part *part = &plan->parts[col->part];
		if (strcmp(fl_view_entity(part->view), column) != 0) {
			fl_error_set(err, 400, "entity_mismatch", prefix,
				     "view %s is keyed by %s, but \"entities\" gives %.64s",
				     fl_view_name(part->view), fl_view_entity(part->view), column);
			return false;
		}
		const char *name = colon + 1;
		col->is_window =
		    !fl_view_feature(part->view, name) && fl_view_window(part->view, name);
		if (col->is_window ? !add_window(plan, part, name, field, &col->index, err)
				   : !add_feature(plan, part, name, field, &col->index, err))
			return false;
		if (plan->full_feature_names)
			snprintf(col->name, sizeof(col->name), "%s__%s", fl_view_name(part->view),
				 name);
		else
			snprintf(col->name, sizeof(col->name), "%s", name);
		const char *why =
		    strcmp(col->name, column) == 0 ? "the entity column has it" : NULL;
		for (size_t k = 0; !why && k < plan->n_columns; k++)
			if (strcmp(plan->columns[k].name, col->name) == 0)
				why = plan->columns[k].part == col->part
					  ? "it is listed twice"
					  : "two views have it; set \"full_feature_names\": true";
		if (why) {
			fl_error_set(err, 400, "feature_name_collision", field,
				     "%s would name two result columns (%s)", col->name, why);
			return false;
		}
		plan->n_columns++;
	}
	return true;
}

/* GET /v1/history/<view>/<entity_id>?from=&to=&limit= */
bool fl_read_plan_history(struct fl_read_plan *plan, const char *rest,
			  const struct fl_read_params *params, struct fl_error *err)
{
	const char *slash = strchr(rest, '/');
	char view_name[FL_NAME_MAX_LEN + 2];
	const char *text;
	struct fl_view *view;
	size_t index;

	snprintf(view_name, sizeof(view_name), "%.*s", (int)(slash - rest), rest);
	/* The history is the write-side trail: auditors see every view's. */
	if (strlen(view_name) > FL_NAME_MAX_LEN ||
	    fl_view_registry_get(plan->views, view_name, &view) != FL_OK) {
		fl_error_set(err, 404, "view_not_found", NULL, "no view is called \"%s\"",
			     view_name);
		return false;
	}
	if (!push_part(plan, view, &index, err) || !entity_from_text(plan, slash + 1, err))
		return false;
	if ((text = param(params, "from")) &&
	    !fl_read_parse_time(text, "from", true, &plan->from_us, err))
		return false;
	if ((text = param(params, "to")) &&
	    !fl_read_parse_time(text, "to", true, &plan->to_us, err))
		return false;
	if (plan->from_us > plan->to_us) {
		fl_error_set(err, 400, "invalid_value", "to", "\"to\" is before \"from\"");
		return false;
	}
	return param_u64(params, "limit", FL_READ_HISTORY_LIMIT_DEFAULT, 1,
			 FL_READ_HISTORY_LIMIT_MAX, &plan->limit, err);
}
