#ifndef FLEDGER_VIEW_H
#define FLEDGER_VIEW_H

/*
 * Feature views (CONTRACT §2): parsing and validating a definition, its
 * canonical JSON, comparing two versions, and the registry of the current
 * version of every view that both services keep (rebuilt from the log's
 * "view" events at start-up).
 *
 * A struct fl_view is immutable once parsed and reference counted, so that a
 * reader may keep using a view while the writer replaces it in the registry.
 *
 * Normalisation (what the canonical form makes equal):
 *  - Features and windows are kept in name order (strcmp). That order is the
 *    "definition order" used everywhere (stored bodies, default reads);
 *    indices are only valid within one version of a view, so persist names,
 *    never indices.
 *  - Durations keep the unit they were written with ("24h" stays "24h",
 *    leading zeros dropped), but two definitions that differ only in how a
 *    duration is spelt ("60m" and "1h") compare as FL_VIEW_IDENTICAL.
 *  - ACL lists are sets: sorted and without duplicates. An absent acl, or an
 *    absent write/read list, is the empty list (default deny: only admin).
 *  - audit_reads defaults to true, retention to "30d"; max_age is absent when
 *    not given (no age limit). A member given as null is the same as absent.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fledger/error.h"
#include "fledger/status.h"

/* Limits on a definition (each enforced with a 400). */
#define FL_NAME_MAX_LEN 63 /* names: [a-z][a-z0-9_]{0,62} */
#define FL_VIEW_MAX_FEATURES 1000
#define FL_VIEW_MAX_WINDOWS 100
#define FL_VECTOR_MAX_DIMS 4096
#define FL_LAST_N_MAX 1000
#define FL_ACL_MAX_ENTRIES 1000				      /* per list */
#define FL_ACL_ENTRY_MAX_LEN 256			      /* bytes, no control characters */
#define FL_DURATION_MAX_US (INT64_C(36500) * 86400 * 1000000) /* 100 years */
#define FL_VIEW_DEFAULT_RETENTION_US (INT64_C(30) * 86400 * 1000000)
#define FL_DURATION_TEXT_LEN 24 /* "36500d" as written, with its NUL */

/* Limits on feature values (event.h enforces them). */
#define FL_STRING_MAX_BYTES 65536

enum fl_feature_type {
	FL_FEATURE_INT64,
	FL_FEATURE_DOUBLE,
	FL_FEATURE_STRING,
	FL_FEATURE_BOOL,
	FL_FEATURE_VECTOR, /* float32 x dims */
};

enum fl_window_fn {
	FL_WINDOW_COUNT,
	FL_WINDOW_SUM,
	FL_WINDOW_AVG,
	FL_WINDOW_MIN,
	FL_WINDOW_MAX,
	FL_WINDOW_LAST,
	FL_WINDOW_LAST_N,
	FL_WINDOW_STDDEV, /* population */
};

/* A list of principal names and "role:<role>" entries, sorted, no duplicates. */
struct fl_acl {
	char **entries;
	size_t count;
};

/* One feature of a view. Owned by the view; read-only. */
struct fl_feature {
	char name[FL_NAME_MAX_LEN + 1];
	enum fl_feature_type type;
	uint32_t dims;		/* vector[N]: N; 0 for the other types */
	size_t index;		/* position in name order, within this version */
	bool read_restricted;	/* acl.features.<name>.read was given */
	struct fl_acl read_acl; /* who may read it when read_restricted */
};

/* One window of a view. Owned by the view; read-only. */
struct fl_window {
	char name[FL_NAME_MAX_LEN + 1];
	enum fl_window_fn fn;
	char of[FL_NAME_MAX_LEN + 1];	      /* the feature it aggregates */
	size_t of_index;		      /* that feature's index */
	int64_t size_us;		      /* the window is (as_of - size_us, as_of] */
	char size_text[FL_DURATION_TEXT_LEN]; /* as written ("24h") */
	uint32_t n;			      /* last_n: 1..FL_LAST_N_MAX; 0 otherwise */
	size_t index;			      /* position in name order */
};

struct fl_view;

/*
 * Parses and validates a definition (the body of POST /v1/views, or the
 * "definition" of a stored view event) into a new view with one reference
 * and version 0. On failure returns FL_ERR_INVALID with a 400 in err naming
 * the field ("windows[0].of"), or FL_ERR_NOMEM; *ret_view is then untouched.
 */
enum fl_status fl_view_parse(const json_t *definition, struct fl_view **ret_view,
			     struct fl_error *err);

/* Takes another reference; returns view. */
struct fl_view *fl_view_ref(struct fl_view *view);

/* Drops a reference and frees the view with the last one. Accepts NULL. */
void fl_view_unref(struct fl_view *view);

/* ---- Accessors (never fail; the view is valid) ------------------------- */

const char *fl_view_name(const struct fl_view *view);
const char *fl_view_entity(const struct fl_view *view);

/* 1, 2, ... once registered (or parsed from a stored view event); 0 before. */
uint64_t fl_view_version(const struct fl_view *view);

size_t fl_view_feature_count(const struct fl_view *view);
/* The feature at index (< count), in name order. */
const struct fl_feature *fl_view_feature_at(const struct fl_view *view, size_t index);
/* The feature called name, or NULL (binary search). */
const struct fl_feature *fl_view_feature(const struct fl_view *view, const char *name);

size_t fl_view_window_count(const struct fl_view *view);
const struct fl_window *fl_view_window_at(const struct fl_view *view, size_t index);
const struct fl_window *fl_view_window(const struct fl_view *view, const char *name);

/* max_age in µs; 0 when the view has none (values never become too old). */
int64_t fl_view_max_age_us(const struct fl_view *view);
/* How long history is kept, in µs (default 30 days). */
int64_t fl_view_retention_us(const struct fl_view *view);
bool fl_view_audit_reads(const struct fl_view *view);

/* acl.write and acl.read (empty when not given). */
const struct fl_acl *fl_view_write_acl(const struct fl_view *view);
const struct fl_acl *fl_view_read_acl(const struct fl_view *view);

/* True when entry ("clicks-pipeline", "role:fraud") is in acl. */
bool fl_acl_contains(const struct fl_acl *acl, const char *entry);

/* "int64", "double", "string", "bool", "vector". */
const char *fl_feature_type_name(enum fl_feature_type type);
/* "count", "sum", ... */
const char *fl_window_fn_name(enum fl_window_fn fn);

/* ---- Canonical form -------------------------------------------------- */

/*
 * The canonical JSON of the definition: compact, keys sorted, normalised as
 * described at the top, without "version". Definitions that differ only in
 * key order, whitespace, the order of windows or ACL entries, or by spelling
 * out a default, have the same bytes. This is the form stored in the log. *ret_text
 * (NUL-terminated) belongs to the view and lives as long as it; ret_len may be NULL.
 */
void fl_view_canonical(const struct fl_view *view, const char **ret_text, size_t *ret_len);

/*
 * The canonical definition as a new json_t object (the caller decrefs), with
 * "version" added when with_version is true: the answer of
 * GET /v1/views/<name>. NULL only when out of memory.
 */
json_t *fl_view_to_json(const struct fl_view *view, bool with_version);

/* ---- Changes --------------------------------------------------------- */

enum fl_view_change {
	FL_VIEW_IDENTICAL,    /* same canonical form (durations compared by
			       * value): a no-op, 200 */
	FL_VIEW_COMPATIBLE,   /* features or windows added, windows changed or
			       * removed, acl/max_age/retention/audit_reads
			       * changed: the next version, 201 */
	FL_VIEW_INCOMPATIBLE, /* entity changed, a feature removed or retyped: 409 */
};

/*
 * Compares the registered version current with proposed (views of the same
 * name). For FL_VIEW_INCOMPATIBLE fills err (may be NULL) with a 409
 * "incompatible_view_change" whose field names the first offending member in
 * name order ("entity", "features.dwell_ms").
 */
enum fl_view_change fl_view_compare(const struct fl_view *current, const struct fl_view *proposed,
				    struct fl_error *err);

/* ---- Registry -------------------------------------------------------- */

/*
 * The current version of every view, by name. Many readers and one writer:
 * lookups take a read lock and hand out references, so a view stays usable
 * after it is replaced. Putting views must be serialised by the caller
 * (command-svc: compare, append the view event, put).
 */
struct fl_view_registry;

enum fl_status fl_view_registry_create(struct fl_view_registry **ret_registry);

/* Frees the registry and drops its references. Accepts NULL. */
void fl_view_registry_destroy(struct fl_view_registry *registry);

/*
 * A new reference to the current version of the view called name (the caller
 * unrefs it), or FL_ERR_NOT_FOUND.
 */
enum fl_status fl_view_registry_get(struct fl_view_registry *registry, const char *name,
				    struct fl_view **ret_view);

/*
 * Makes view the current version of its name. version must be 1 for a new
 * name and the current version + 1 otherwise (else FL_ERR_CONFLICT). A view
 * is given its version once: view's own version must be 0 (it is then set,
 * before the view is shared) or already equal to version (a view parsed from
 * a stored view event); else FL_ERR_INVALID. The registry takes its own
 * reference; the caller keeps its own.
 */
enum fl_status fl_view_registry_put(struct fl_view_registry *registry, struct fl_view *view,
				    uint64_t version);

/*
 * Adds view, read back from storage that keeps only the current version of
 * each view (query-svc's read models), as the current version of a name the
 * registry does not hold yet; version may be any number from 1 (a name
 * already present is FL_ERR_CONFLICT). Later versions follow with
 * fl_view_registry_put. Versions and references as for fl_view_registry_put.
 */
enum fl_status fl_view_registry_restore(struct fl_view_registry *registry, struct fl_view *view,
					uint64_t version);

/* Number of views. */
size_t fl_view_registry_count(struct fl_view_registry *registry);

/*
 * A snapshot of every current view, in name order: a new array of new
 * references (free both with fl_view_list_free). An empty registry gives
 * NULL and 0.
 */
enum fl_status fl_view_registry_list(struct fl_view_registry *registry, struct fl_view ***ret_views,
				     size_t *ret_count);

/* Unrefs count views and frees the array. Accepts NULL. */
void fl_view_list_free(struct fl_view **views, size_t count);

#endif
