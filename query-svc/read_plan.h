#ifndef QUERY_SVC_READ_PLAN_H
#define QUERY_SVC_READ_PLAN_H

/*
 * What a read asks for, checked against the principal's roles and the
 * views' ACLs (CONTRACT §6): the views, entity ids, features and windows,
 * times and waits of one GET /v1/features/..., POST /v1/features:batch,
 * POST /get-online-features (Feast) or GET /v1/history/... read. Parsing
 * needs the view registry and the request's text only, never a socket;
 * read_answer.h turns a plan into the answer's bytes.
 *
 * Every parser returns false with err filled (the status, code and field of
 * CONTRACT §9's error body); the plan then holds what was taken before the
 * fault (the read audit records it) and is still freed with
 * fl_read_plan_finish.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fledger/auth.h"
#include "fledger/error.h"
#include "fledger/event.h"
#include "fledger/text.h"
#include "fledger/view.h"

#define FL_READ_BATCH_MAX FL_EVENT_BATCH_MAX /* entity ids per batch or Feast read */
#define FL_READ_NAME_LIST_MAX 10000	     /* names in one features/windows list */
#define FL_READ_WAIT_MS_DEFAULT 1000
#define FL_READ_WAIT_MS_MAX 60000
#define FL_READ_HISTORY_LIMIT_DEFAULT 1000
#define FL_READ_HISTORY_LIMIT_MAX 10000
#define FL_READ_FEAST_NAME_LEN (2 * FL_NAME_MAX_LEN + 3) /* "<view>__<name>" + NUL */

enum fl_read_kind {
	FL_READ_ONE,	 /* GET /v1/features/<view>/<entity_id> */
	FL_READ_BATCH,	 /* POST /v1/features:batch */
	FL_READ_FEAST,	 /* POST /get-online-features */
	FL_READ_HISTORY, /* GET /v1/history/<view>/<entity_id> */
};

/* What one view contributes to a read: its features and windows, in answer order. */
struct fl_read_part {
	struct fl_view *view; /* a reference */
	const struct fl_feature **features;
	size_t n_features;
	const struct fl_window **windows;
	size_t n_windows;
};

/* One Feast result column after the entity column. */
struct fl_feast_column {
	size_t part;
	bool is_window;
	size_t index; /* into the part's features or windows */
	char name[FL_READ_FEAST_NAME_LEN];
};

/* The query parameters of a GET read: get(ctx, name) is the text, or NULL when absent. */
struct fl_read_params {
	const char *(*get)(const void *ctx, const char *name);
	const void *ctx;
};

struct fl_read_plan {
	enum fl_read_kind kind;
	const struct fl_principal *principal;
	struct fl_view_registry *views; /* where view names are looked up */

	struct fl_read_part *parts; /* one view, several for a Feast read */
	size_t n_parts;
	char **entity_ids;
	size_t n_entities;
	json_t *entity_values; /* Feast: the entity column as the client sent it */
	char entity_column[FL_NAME_MAX_LEN + 1];
	struct fl_feast_column *columns;
	size_t n_columns;
	bool full_feature_names;

	bool as_of_given;
	int64_t as_of_us;
	bool proof;
	uint64_t min_seq;
	uint64_t wait_ms;
	int64_t from_us, to_us; /* history: [from, to] */
	uint64_t limit;		/* history: at most this many events */

	struct fl_text parts_buf, ids_buf; /* hold parts and entity_ids */
};

/* An empty plan of kind for principal, its views looked up in views. */
void fl_read_plan_init(struct fl_read_plan *plan, enum fl_read_kind kind,
		       const struct fl_principal *principal, struct fl_view_registry *views);
void fl_read_plan_finish(struct fl_read_plan *plan); /* leaves it empty */

/* The route's role: reader for reads, auditor for history (admin has both); else 403. */
bool fl_read_plan_role(enum fl_read_kind kind, const struct fl_principal *principal,
		       struct fl_error *err);

/*
 * "<view>/<entity_id>" after prefix in path, or NULL when path does not
 * start with prefix or the view part is empty.
 */
const char *fl_read_path_rest(const char *path, const char *prefix);

/* GET /v1/features/<rest>: rest is "<view>/<entity_id>", params the query string. */
bool fl_read_plan_one(struct fl_read_plan *plan, const char *rest,
		      const struct fl_read_params *params, struct fl_error *err);
/* GET /v1/history/<rest>?from=&to=&limit= */
bool fl_read_plan_history(struct fl_read_plan *plan, const char *rest,
			  const struct fl_read_params *params, struct fl_error *err);
/* POST /v1/features:batch; body is an object */
bool fl_read_plan_batch(struct fl_read_plan *plan, const json_t *body, struct fl_error *err);
/* POST /get-online-features; body is an object */
bool fl_read_plan_feast(struct fl_read_plan *plan, const json_t *body, struct fl_error *err);

/* The min_seq and wait_ms query parameters alone (a GET that waits for its view). */
bool fl_read_params_wait(const struct fl_read_params *params, uint64_t *ret_min_seq,
			 uint64_t *ret_wait_ms, struct fl_error *err);

/*
 * The parts the parsers are made of, for the fuzz harnesses: adds the view
 * called name (404, or 403 by its read ACL) and the names of a
 * comma-separated list (NULL: every readable one) to the part at index.
 */
bool fl_read_plan_add_view(struct fl_read_plan *plan, const char *name, const char *field,
			   size_t *ret_index, struct fl_error *err);
bool fl_read_plan_names(struct fl_read_plan *plan, size_t index, const char *text, bool windows,
			struct fl_error *err);

/*
 * An RFC 3339 timestamp (400 invalid_timestamp naming field). In a URL
 * (from_url), an unencoded '+' of a zone offset arrives as a space, which is
 * read as '+'.
 */
bool fl_read_parse_time(const char *text, const char *field, bool from_url, int64_t *ret_us,
			struct fl_error *err);

/* Read ACLs: a restricted feature, and the windows over it, need its read ACL. */
bool fl_read_feature_readable(const struct fl_principal *principal, const struct fl_feature *f);
bool fl_read_window_readable(const struct fl_principal *principal, const struct fl_view *view,
			     const struct fl_window *w);

#endif
