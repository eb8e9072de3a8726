/*
 * HTTP routes of query-svc (CONTRACT §6, §8-§10): parse a read, check it
 * against the principal's roles and the views' ACLs, answer it from one
 * snapshot of the read models, and serve health, readiness and metrics.
 *
 * Every read route goes through one struct read_job, from the request to
 * its answer: who asked (principal), by which route, which views, entity
 * ids, features and windows, which seqs the values came from, and the exact
 * bytes and status of the answer, all of which meet in send_answer(). That
 * is where the read audit (CONTRACT §7) records each read before answering.
 *
 * A read with a min_seq the projection has not reached is parked in a list
 * (FL_HTTP_DEFERRED) that a waiter thread answers when the sync applies far
 * enough (fl_query_on_applied wakes it) or with 504 when its wait_ms runs
 * out. The job holds everything parsed, so answering it later needs nothing
 * from the request but the answer itself.
 *
 * Reads that turn out expensive leave the HTTP thread the same way: a read
 * of more than INLINE_ROWS_MAX entity ids, or one that spends INLINE_COST
 * cost units (see fl_projection_read_limit_cost) on the thread that received
 * it, is handed (FL_HTTP_DEFERRED) to a small pool of read workers, which
 * run it again with the whole --max-read-cost bound. So health checks and
 * cheap reads never queue behind an expensive one; the inline attempt
 * wastes at most INLINE_COST units. A read over the bound is a 422
 * read_too_expensive.
 */
#include "routes.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "fledger/event.h"
#include "fledger/jsonw.h"
#include "fledger/logroutes.h"
#include "fledger/slog.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "fledger/view.h"
#include "historical.h"

#define READ_BATCH_MAX FL_EVENT_BATCH_MAX /* entity ids per batch or Feast read */
#define NAME_LIST_MAX 10000		  /* names in one features/windows list */
#define WAIT_MS_DEFAULT 1000
#define WAIT_MS_MAX 60000
#define HISTORY_LIMIT_DEFAULT 1000
#define HISTORY_LIMIT_MAX 10000
#define WAITER_TICK_US 100000 /* the waiter thread looks around at least this often */
#define READ_ID_LEN 19	      /* "r-" + 16 hex digits + NUL */
#define FEAST_NO_TIME "1970-01-01T00:00:00Z"
#define FEAST_NAME_LEN (2 * FL_NAME_MAX_LEN + 3) /* "<view>__<name>" + NUL */
#define INLINE_ROWS_MAX 32 /* reads of more entity ids go to a read worker at once */
#define INLINE_COST 2048   /* cost units a read may spend on an HTTP or the waiter thread */

struct fl_query_state {
	pthread_mutex_t lock; /* guards the waiting list and the flags below */
	pthread_cond_t wake;  /* on CLOCK_MONOTONIC */
	pthread_t thread;
	bool thread_started;
	struct read_job *waiting;
	size_t n_waiting;
	bool kicked;   /* something changed since the thread last looked */
	bool stopping; /* shutting down: no new waits */
	bool quit;     /* the thread exits */

	pthread_mutex_t ready_lock; /* guards the readiness tracker */
	bool caught_up_once;	    /* applied everything known at least once */
	uint64_t behind_size;	    /* a checkpoint size not applied yet (0: none) */
	int64_t behind_since_us;    /* when behind_size was first seen (monotonic) */
	_Atomic int64_t last_sample_us;

	_Atomic uint64_t next_read; /* read ids */
	uint64_t read_id_key;

	/* read workers: expensive reads, off the HTTP threads */
	pthread_mutex_t work_lock; /* guards the queue and work_quit */
	pthread_cond_t work_ready;
	pthread_t *workers;
	size_t n_workers; /* started; fixed once the server runs */
	struct read_job *work_head, *work_tail;
	bool work_quit; /* no new hand-offs; the workers drain the queue and exit */
};

/* ---- one read, from request to answer ---------------------------------- */

enum read_kind {
	READ_ONE,     /* GET /v1/features/<view>/<entity_id> */
	READ_BATCH,   /* POST /v1/features:batch */
	READ_FEAST,   /* POST /get-online-features */
	READ_HISTORY, /* GET /v1/history/<view>/<entity_id> */
};

/* What one view contributes to a read: its features and windows, in answer order. */
struct read_part {
	struct fl_view *view; /* a reference */
	const struct fl_feature **features;
	size_t n_features;
	const struct fl_window **windows;
	size_t n_windows;
};

/* One Feast result column after the entity column. */
struct feast_column {
	size_t part;
	bool is_window;
	size_t index; /* into the part's features or windows */
	char name[FEAST_NAME_LEN];
};

struct read_job {
	struct fl_query *query;
	struct fl_http_request *req;
	const char *route; /* the metrics label, static */
	enum read_kind kind;
	const struct fl_principal *principal; /* NULL until authenticated */
	char read_id[READ_ID_LEN];

	struct read_part *parts; /* one view, several for a Feast read */
	size_t n_parts;
	char **entity_ids;
	size_t n_entities;
	json_t *entity_values; /* Feast: the entity column as the client sent it */
	char entity_column[FL_NAME_MAX_LEN + 1];
	struct feast_column *columns;
	size_t n_columns;
	bool full_feature_names;

	bool as_of_given;
	int64_t as_of_us;
	bool proof;
	uint64_t min_seq;
	int64_t deadline_us; /* monotonic: when a wait for min_seq gives up */
	int64_t started_us;  /* monotonic: the read's latency runs from here */
	int64_t from_us, to_us;
	uint64_t limit;

	/*
	 * A read of a view not applied yet, waiting for a min_seq that may
	 * register it (read your own view registration): parsed again, from
	 * this path rest, once min_seq is applied.
	 */
	char *retry_rest;

	/* What was served: every seq a value came from. */
	uint64_t *served;
	size_t n_served, cap_served;
	uint64_t applied_seq; /* the log prefix the answer was computed from (0: none) */

	bool full_budget; /* runs with the whole --max-read-cost (on a read worker) */

	struct read_job *next; /* in the waiting list or the work queue */
};

static uint64_t mix64(uint64_t x)
{
	/* splitmix64's finaliser: a bijection, so distinct inputs stay distinct */
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

static struct read_job *job_create(struct fl_query *q, struct fl_http_request *req,
				   const char *route, enum read_kind kind)
{
	struct read_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->query = q;
	job->req = req;
	job->route = route;
	job->kind = kind;
	job->started_us = fl_time_mono_us();
	job->to_us = INT64_MAX;
	job->from_us = INT64_MIN;
	uint64_t n = atomic_fetch_add_explicit(&q->state->next_read, 1, memory_order_relaxed);
	snprintf(job->read_id, sizeof(job->read_id), "r-%016" PRIx64,
		 mix64(q->state->read_id_key + n));
	return job;
}

static void job_destroy(struct read_job *job)
{
	if (!job)
		return;
	for (size_t i = 0; i < job->n_parts; i++) {
		fl_view_unref(job->parts[i].view);
		free(job->parts[i].features);
		free(job->parts[i].windows);
	}
	free(job->parts);
	for (size_t i = 0; i < job->n_entities; i++)
		free(job->entity_ids[i]);
	free(job->entity_ids);
	json_decref(job->entity_values);
	free(job->columns);
	free(job->served);
	free(job->retry_rest);
	free(job);
}

/* A read snapshot of the read models; the record names its log prefix. */
static enum fl_status read_begin(struct read_job *job, struct fl_projection_read **ret_read)
{
	enum fl_status st = fl_projection_read_begin(job->query->projection, ret_read);
	if (st == FL_OK)
		job->applied_seq = fl_projection_read_applied_seq(*ret_read);
	return st;
}

static enum fl_status served_add(struct read_job *job, uint64_t seq)
{
	if (job->n_served == job->cap_served) {
		size_t cap = job->cap_served ? 2 * job->cap_served : 16;
		uint64_t *grown = realloc(job->served, cap * sizeof(*grown));
		if (!grown)
			return FL_ERR_NOMEM;
		job->served = grown;
		job->cap_served = cap;
	}
	job->served[job->n_served++] = seq;
	return FL_OK;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Sorts the served seqs and drops repeats. */
static void served_finish(struct read_job *job)
{
	if (job->n_served < 2)
		return;
	qsort(job->served, job->n_served, sizeof(*job->served), compare_u64);
	size_t kept = 1;
	for (size_t i = 1; i < job->n_served; i++)
		if (job->served[i] != job->served[kept - 1])
			job->served[kept++] = job->served[i];
	job->n_served = kept;
}

/* ---- answers: the one exit of every read route --------------------------- */

/*
 * Sends the answer of a read and frees the job. Everything the read audit
 * (CONTRACT §7) records is at hand here and nowhere earlier: job->read_id,
 * job->principal (NULL without a valid token), job->route, the views of
 * job->parts, job->entity_ids, the feature and window names of the parts,
 * job->served (ascending, no repeats), the answer bytes (body, len) and
 * status, denials included. The audit record goes here, before the answer.
 */
static json_t *lenient_string(const char *text);
static void retry_read(struct read_job *job);
static const char *view_entity_rest(const char *path, const char *prefix);

/* Whether a read is recorded: unless every view it names has audit_reads off. */
static bool audited(const struct read_job *job, unsigned status)
{
	if (!job->query->audit)
		return false;
	if (status == 401 || status == 403 || job->n_parts == 0)
		return true;
	for (size_t i = 0; i < job->n_parts; i++)
		if (fl_view_audit_reads(job->parts[i].view))
			return true;
	return false;
}

/* Records the read (CONTRACT §7) and hands the answer to the audit thread. */
static enum fl_status submit_audited(struct read_job *job, unsigned status,
				     const char *content_type, const char *body, size_t len)
{
	json_t *entities = json_array(), *features = json_array(), *windows = json_array();
	for (size_t i = 0; i < job->n_entities; i++)
		json_array_append_new(entities, lenient_string(job->entity_ids[i]));
	for (size_t p = 0; p < job->n_parts; p++) {
		for (size_t i = 0; i < job->parts[p].n_features; i++)
			json_array_append_new(features,
					      json_string(job->parts[p].features[i]->name));
		for (size_t i = 0; i < job->parts[p].n_windows; i++)
			json_array_append_new(windows, json_string(job->parts[p].windows[i]->name));
	}
	/*
	 * A read refused before it was parsed (401, 403 for a missing role)
	 * still names what it asked for: the view and entity of its path.
	 */
	char path_view[FL_NAME_MAX_LEN + 2] = "";
	const char *rest = NULL;
	if (job->n_parts == 0 && (job->kind == READ_ONE || job->kind == READ_HISTORY))
		rest = view_entity_rest(fl_http_path(job->req),
					job->kind == READ_ONE ? "/v1/features/" : "/v1/history/");
	if (rest) {
		const char *slash = strchr(rest, '/');
		snprintf(path_view, sizeof(path_view), "%.*s", (int)(slash - rest), rest);
		if (job->n_entities == 0)
			json_array_append_new(entities, lenient_string(slash + 1));
	}
	/* ...and the names it asked for, when it was refused before they were taken. */
	const char *lists[2] = {"features", "windows"};
	json_t *arrays[2] = {features, windows};
	for (int l = 0; l < 2 && job->kind == READ_ONE; l++) {
		const char *text = fl_http_query(job->req, lists[l]);
		if (json_array_size(arrays[l]) || !text || !*text)
			continue;
		for (const char *p = text; p;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			char name[FL_NAME_MAX_LEN + 2];
			if (n && n < sizeof(name) && json_array_size(arrays[l]) < 1000) {
				memcpy(name, p, n);
				name[n] = '\0';
				json_array_append_new(arrays[l], lenient_string(name));
			}
			p = comma ? comma + 1 : NULL;
		}
	}
	json_t *view_name = json_null();
	if (job->n_parts)
		view_name = json_string(fl_view_name(job->parts[0].view));
	else if (path_view[0])
		view_name = lenient_string(path_view);
	struct fl_audit_record rec = {
	    .read_id = job->read_id,
	    .principal = job->principal ? fl_principal_name(job->principal) : NULL,
	    .route = job->route,
	    .view = json_is_string(view_name) ? json_string_value(view_name) : NULL,
	    .entity_ids = entities,
	    .features = features,
	    .windows = windows,
	    .served_seqs = job->served,
	    .n_served = job->n_served,
	    .applied_seq = job->applied_seq,
	};
	char *copy = malloc(len ? len : 1);
	enum fl_status st = copy ? FL_OK : FL_ERR_NOMEM;
	if (st == FL_OK) {
		if (len > 0) /* body may be NULL when empty */
			memcpy(copy, body, len);
		st = fl_audit_submit(job->query->audit, job->req, &rec, status, content_type, copy,
				     len);
		if (st != FL_OK)
			free(copy);
	}
	json_decref(entities);
	json_decref(features);
	json_decref(windows);
	json_decref(view_name);
	return st;
}

/*
 * Sends the answer of a read and frees the job. Everything the read audit
 * (CONTRACT §7) records is at hand here: job->read_id, job->principal (NULL
 * without a valid token), job->route, the views of job->parts,
 * job->entity_ids, the feature and window names of the parts, job->served
 * (ascending, no repeats), the answer bytes and status, denials included.
 * An audited read is answered by the audit thread once its record is
 * committed (FL_HTTP_DEFERRED); if it cannot be recorded it is refused with
 * a 503, never answered unaudited.
 */
static enum fl_http_disposition send_answer(struct read_job *job, unsigned status,
					    const char *content_type, const char *body, size_t len)
{
	struct fl_query *q = job->query;
	enum fl_http_disposition disposition = FL_HTTP_DONE;

	served_finish(job);
	if (status == 401)
		fl_http_add_header(job->req, "WWW-Authenticate", "Bearer");
	if (status == 503)
		fl_http_add_header(job->req, "Retry-After", "1");
	if (audited(job, status)) {
		if (submit_audited(job, status, content_type, body, len) == FL_OK) {
			disposition = FL_HTTP_DEFERRED;
		} else {
			if (status != 503) /* added above for a 503 answer */
				fl_http_add_header(job->req, "Retry-After", "1");
			fl_http_respond_error(job->req, 503, "audit_unavailable",
					      "the read could not be recorded in the audit log, so "
					      "it is not answered",
					      NULL);
			status = 503;
		}
	} else {
		fl_http_respond(job->req, status, content_type, body, len);
	}
	if (status == 200 && job->kind != READ_HISTORY)
		fl_histogram_observe(q->read_latency,
				     (double)(fl_time_mono_us() - job->started_us) / 1e6);
	job_destroy(job);
	return disposition;
}

static enum fl_http_disposition send_json(struct read_job *job, unsigned status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		static const char fallback[] =
		    "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
		return send_answer(job, 500, "application/json", fallback, sizeof(fallback) - 1);
	}
	enum fl_http_disposition disposition =
	    send_answer(job, status, "application/json", text, strlen(text));
	free(text);
	return disposition;
}

/*
 * A JSON string of text that may not be UTF-8 (a name from a URL, or one cut
 * short by a message's limit): bytes that do not decode become '?'.
 */
static json_t *lenient_string(const char *text)
{
	json_t *string = json_string(text);
	if (string || !text)
		return string;
	char *copy = strdup(text);
	if (!copy)
		return NULL;
	for (unsigned char *p = (unsigned char *)copy; *p; p++)
		if (*p >= 0x80)
			*p = '?';
	string = json_string(copy);
	free(copy);
	return string;
}

/* The error body of CONTRACT §9. */
static enum fl_http_disposition send_error(struct read_job *job, unsigned status, const char *code,
					   const char *message, const char *field)
{
	json_t *error = json_pack("{s:s,s:o}", "code", code, "message", lenient_string(message));
	if (error && field && field[0])
		json_object_set_new(error, "field", lenient_string(field));
	return send_json(job, status, error ? json_pack("{s:o}", "error", error) : NULL);
}

static enum fl_http_disposition send_fl_error(struct read_job *job, const struct fl_error *err)
{
	return send_error(job, err->http_status ? (unsigned)err->http_status : 500,
			  err->code[0] ? err->code : "internal_error", err->message, err->field);
}

static enum fl_http_disposition send_internal(struct read_job *job, enum fl_status st)
{
	return send_error(job, 500, "internal_error", fl_status_str(st), NULL);
}

/* Fills err with the 500 of an internal failure; returns false. */
static bool fail_internal(struct fl_error *err, enum fl_status st)
{
	fl_error_set(err, 500, "internal_error", NULL, "%s", fl_status_str(st));
	return false;
}

/* ---- checks ---------------------------------------------------------------- */

/* As fl_svc_authenticate, but the 401 goes through the job's answer. */
static bool authenticate(struct read_job *job, struct fl_error *err)
{
	const struct fl_auth *auth = job->query->auth;
	if (!auth) {
		job->principal = fl_svc_dev_principal();
		return true;
	}
	const char *header = fl_http_header(job->req, "Authorization");
	const struct fl_principal *principal;
	if (fl_auth_lookup(auth, header, &principal) == FL_OK) {
		job->principal = principal;
		return true;
	}
	if (header)
		fl_error_set(err, 401, "unknown_token", NULL, "the bearer token is not known");
	else
		fl_error_set(err, 401, "missing_token", NULL,
			     "an Authorization: Bearer <token> header is required");
	return false;
}

static bool require_role(struct read_job *job, const char *role, const char *other_role,
			 struct fl_error *err)
{
	const struct fl_principal *p = job->principal;
	if (fl_principal_has_role(p, "admin") || fl_principal_has_role(p, role) ||
	    (other_role && fl_principal_has_role(p, other_role)))
		return true;
	fl_error_set(err, 403, "forbidden", NULL, "this route needs the role %s%s%s", role,
		     other_role ? " or " : "", other_role ? other_role : "");
	return false;
}

static bool acl_allows(const struct fl_principal *principal, const struct fl_acl *acl)
{
	return fl_acl_allows(principal, (const char *const *)acl->entries, acl->count);
}

static bool feature_readable(const struct fl_principal *principal, const struct fl_feature *f)
{
	return !f->read_restricted || acl_allows(principal, &f->read_acl);
}

/* Per-feature restrictions extend to the windows over that feature (§6). */
static bool window_readable(const struct fl_principal *principal, const struct fl_view *view,
			    const struct fl_window *w)
{
	return feature_readable(principal, fl_view_feature_at(view, w->of_index));
}

/* True when bytes are well-formed UTF-8 (no overlongs, no surrogates). */
static bool utf8_valid(const unsigned char *bytes, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = bytes[i];
		size_t extra;
		uint32_t code;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			extra = 1;
			code = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			extra = 2;
			code = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			extra = 3;
			code = c & 0x07;
		} else {
			return false;
		}
		if (i + extra >= len)
			return false;
		for (size_t k = 1; k <= extra; k++) {
			if ((bytes[i + k] & 0xc0) != 0x80)
				return false;
			code = (code << 6) | (bytes[i + k] & 0x3f);
		}
		if ((extra == 1 && code < 0x80) || (extra == 2 && code < 0x800) ||
		    (extra == 3 && code < 0x10000) || code > 0x10ffff ||
		    (code >= 0xd800 && code <= 0xdfff))
			return false;
		i += extra + 1;
	}
	return true;
}

/*
 * Checks that text could be an entity id that was written (CONTRACT §3):
 * non-empty, at most 256 bytes, UTF-8, no control characters.
 */
static bool entity_id_ok(const char *text, size_t len, const char *field, struct fl_error *err)
{
	const char *why = NULL;
	if (len == 0)
		why = "the entity id is empty";
	else if (len > FL_ENTITY_ID_MAX_LEN)
		why = "the entity id is longer than 256 bytes";
	for (size_t i = 0; !why && i < len; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			why = "the entity id contains a control character";
	if (!why && !utf8_valid((const unsigned char *)text, len))
		why = "the entity id is not valid UTF-8";
	if (!why)
		return true;
	fl_error_set(err, 400, "invalid_entity_id", field, "%s: no event could have it", why);
	return false;
}

/* An entity id given in JSON: a string, or an integer (its decimal text, §3). */
static bool entity_from_json(const json_t *value, const char *field, char **ret_text,
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
	if (!(*ret_text = strdup(text)))
		return fail_internal(err, FL_ERR_NOMEM);
	return true;
}

static bool add_entity(struct read_job *job, char *id, struct fl_error *err)
{
	char **grown = realloc(job->entity_ids, (job->n_entities + 1) * sizeof(*grown));
	if (!grown) {
		free(id);
		return fail_internal(err, FL_ERR_NOMEM);
	}
	job->entity_ids = grown;
	job->entity_ids[job->n_entities++] = id;
	return true;
}

/* An optional unsigned query parameter in [min, max]; 400 invalid_parameter. */
static bool query_u64(struct fl_http_request *req, const char *name, uint64_t default_value,
		      uint64_t min, uint64_t max, uint64_t *ret_value, struct fl_error *err)
{
	const char *text = fl_http_query(req, name);
	if (!text) {
		*ret_value = default_value;
		return true;
	}
	if (!fl_svc_parse_u64(text, min, max, ret_value)) {
		fl_error_set(err, 400, "invalid_parameter", name,
			     "%s must be an integer from %" PRIu64 " to %" PRIu64, name, min, max);
		return false;
	}
	return true;
}

/*
 * Parses an RFC 3339 timestamp. In a URL, an unencoded '+' of a zone offset
 * ("...T21:00:00+02:00") arrives as a space, which no timestamp can hold
 * there, so from_url reads a space after the seconds as '+'.
 */
static bool parse_time(const char *text, const char *field, bool from_url, int64_t *ret_us,
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

/* Adds a part for view name (404 view_not_found) that the principal may read (403). */
static bool add_part(struct read_job *job, const char *name, const char *field, size_t *ret_index,
		     struct fl_error *err)
{
	struct fl_view *view;
	for (size_t i = 0; i < job->n_parts; i++)
		if (strcmp(fl_view_name(job->parts[i].view), name) == 0) {
			*ret_index = i;
			return true;
		}
	if (strlen(name) > FL_NAME_MAX_LEN ||
	    fl_view_registry_get(fl_projection_views(job->query->projection), name, &view) !=
		FL_OK) {
		fl_error_set(err, 404, "view_not_found", field, "no view is called \"%.64s\"",
			     name);
		return false;
	}
	if (!acl_allows(job->principal, fl_view_read_acl(view))) {
		fl_error_set(err, 403, "forbidden", field, "%s may not read view %s",
			     fl_principal_name(job->principal), name);
		fl_view_unref(view);
		return false;
	}
	struct read_part *grown = realloc(job->parts, (job->n_parts + 1) * sizeof(*grown));
	size_t n_features = fl_view_feature_count(view), n_windows = fl_view_window_count(view);
	struct read_part part = {
	    .view = view,
	    .features = calloc(n_features ? n_features : 1, sizeof(*part.features)),
	    .windows = calloc(n_windows ? n_windows : 1, sizeof(*part.windows)),
	};
	if (!grown || !part.features || !part.windows) {
		if (grown)
			job->parts = grown;
		free(part.features);
		free(part.windows);
		fl_view_unref(view);
		return fail_internal(err, FL_ERR_NOMEM);
	}
	job->parts = grown;
	job->parts[job->n_parts] = part;
	*ret_index = job->n_parts++;
	return true;
}

/*
 * Adds the feature called name to part (once; a repeat is ignored), or fails
 * with 400 unknown_feature or 403 for a feature the principal may not read.
 * ret_index (may be NULL) is its index in part->features.
 */
static bool add_feature(struct read_job *job, struct read_part *part, const char *name,
			const char *field, size_t *ret_index, struct fl_error *err)
{
	const struct fl_feature *f = fl_view_feature(part->view, name);
	if (!f) {
		fl_error_set(err, 400, "unknown_feature", field,
			     "view %s has no feature called \"%.64s\"", fl_view_name(part->view),
			     name);
		return false;
	}
	if (!feature_readable(job->principal, f)) {
		fl_error_set(err, 403, "forbidden", field, "%s may not read feature %s",
			     fl_principal_name(job->principal), f->name);
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

static bool add_window(struct read_job *job, struct read_part *part, const char *name,
		       const char *field, size_t *ret_index, struct fl_error *err)
{
	const struct fl_window *w = fl_view_window(part->view, name);
	if (!w) {
		fl_error_set(err, 400, "unknown_window", field,
			     "view %s has no window called \"%.64s\"", fl_view_name(part->view),
			     name);
		return false;
	}
	if (!window_readable(job->principal, part->view, w)) {
		fl_error_set(err, 403, "forbidden", field,
			     "%s may not read window %s (its feature %s is restricted)",
			     fl_principal_name(job->principal), w->name, w->of);
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
static void add_all_readable(struct read_job *job, struct read_part *part, bool windows)
{
	if (windows) {
		for (size_t i = 0; i < fl_view_window_count(part->view); i++) {
			const struct fl_window *w = fl_view_window_at(part->view, i);
			if (window_readable(job->principal, part->view, w))
				part->windows[part->n_windows++] = w;
		}
	} else {
		for (size_t i = 0; i < fl_view_feature_count(part->view); i++) {
			const struct fl_feature *f = fl_view_feature_at(part->view, i);
			if (feature_readable(job->principal, f))
				part->features[part->n_features++] = f;
		}
	}
}

/*
 * A comma-separated list from a query parameter ("a,b"). NULL takes every
 * name the principal may read; an empty text takes none.
 */
static bool names_from_text(struct read_job *job, struct read_part *part, const char *text,
			    bool windows, struct fl_error *err)
{
	const char *field = windows ? "windows" : "features";
	if (!text) {
		add_all_readable(job, part, windows);
		return true;
	}
	for (const char *p = text; *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char name[FL_NAME_MAX_LEN + 2]; /* a longer name is unknown either way */
		snprintf(name, sizeof(name), "%.*s", (int)len, p);
		if (windows ? !add_window(job, part, name, field, NULL, err)
			    : !add_feature(job, part, name, field, NULL, err))
			return false;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p) /* a trailing comma names an empty feature */
			return windows ? add_window(job, part, "", field, NULL, err)
				       : add_feature(job, part, "", field, NULL, err);
	}
	return true;
}

/* A JSON array of names from a body member; absent or null takes every readable name. */
static bool names_from_json(struct read_job *job, struct read_part *part, const json_t *list,
			    bool windows, struct fl_error *err)
{
	const char *member = windows ? "windows" : "features";
	char field[48];
	if (!list || json_is_null(list)) {
		add_all_readable(job, part, windows);
		return true;
	}
	if (!json_is_array(list)) {
		fl_error_set(err, 400, "invalid_type", member, "%s must be an array of names",
			     member);
		return false;
	}
	if (json_array_size(list) > NAME_LIST_MAX) {
		fl_error_set(err, 400, "limit_exceeded", member, "%s lists more than %d names",
			     member, NAME_LIST_MAX);
		return false;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *name = json_array_get(list, i);
		snprintf(field, sizeof(field), "%s[%zu]", member, i);
		if (!json_is_string(name)) {
			fl_error_set(err, 400, "invalid_type", field, "a name must be a string");
			return false;
		}
		if (windows ? !add_window(job, part, json_string_value(name), field, NULL, err)
			    : !add_feature(job, part, json_string_value(name), field, NULL, err))
			return false;
	}
	return true;
}

/* Sets what a read waits for: min_seq applied, at most wait_ms. */
static void set_wait(struct read_job *job, uint64_t min_seq, uint64_t wait_ms)
{
	job->min_seq = min_seq;
	job->deadline_us = job->started_us + (int64_t)wait_ms * 1000;
}

/* ---- parsing each read route ------------------------------------------------ */

/* GET /v1/features/<view>/<entity_id>; rest is "<view>/<entity_id>". */
static bool parse_one(struct read_job *job, const char *rest, struct fl_error *err)
{
	struct fl_http_request *req = job->req;
	const char *slash = strchr(rest, '/');
	char view_name[FL_NAME_MAX_LEN + 2];
	size_t index;
	uint64_t min_seq, wait_ms, proof;

	snprintf(view_name, sizeof(view_name), "%.*s", (int)(slash - rest), rest);
	if (!add_part(job, view_name, NULL, &index, err))
		return false;
	const char *entity = slash + 1;
	if (!entity_id_ok(entity, strlen(entity), NULL, err))
		return false;
	char *id = strdup(entity);
	if (!id)
		return fail_internal(err, FL_ERR_NOMEM);
	if (!add_entity(job, id, err))
		return false;
	if (!names_from_text(job, &job->parts[0], fl_http_query(req, "features"), false, err) ||
	    !names_from_text(job, &job->parts[0], fl_http_query(req, "windows"), true, err))
		return false;
	const char *as_of = fl_http_query(req, "as_of");
	if (as_of) {
		if (!parse_time(as_of, "as_of", true, &job->as_of_us, err))
			return false;
		job->as_of_given = true;
	}
	if (!query_u64(req, "min_seq", 0, 0, INT64_MAX, &min_seq, err) ||
	    !query_u64(req, "wait_ms", WAIT_MS_DEFAULT, 0, WAIT_MS_MAX, &wait_ms, err) ||
	    !query_u64(req, "proof", 0, 0, 1, &proof, err))
		return false;
	job->proof = proof == 1;
	set_wait(job, min_seq, wait_ms);
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
static bool parse_batch(struct read_job *job, const json_t *body, struct fl_error *err)
{
	static const char *const members[] = {"view",  "entity_ids", "features", "windows",
					      "as_of", "proof",	     "min_seq",	 "wait_ms"};
	const char *key;
	const json_t *value;
	size_t index;
	uint64_t min_seq, wait_ms;

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
	if (!add_part(job, json_string_value(value), "view", &index, err))
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
	if (json_array_size(ids) > READ_BATCH_MAX) {
		fl_error_set(err, 400, "batch_too_large", "entity_ids",
			     "%zu entity ids; at most %d are read at once", json_array_size(ids),
			     READ_BATCH_MAX);
		return false;
	}
	for (size_t i = 0; i < json_array_size(ids); i++) {
		char field[48], *id;
		snprintf(field, sizeof(field), "entity_ids[%zu]", i);
		if (!entity_from_json(json_array_get(ids, i), field, &id, err) ||
		    !add_entity(job, id, err))
			return false;
	}
	if (!names_from_json(job, &job->parts[0], json_object_get(body, "features"), false, err) ||
	    !names_from_json(job, &job->parts[0], json_object_get(body, "windows"), true, err))
		return false;

	value = json_object_get(body, "as_of");
	if (value && !json_is_null(value)) {
		if (!json_is_string(value)) {
			fl_error_set(err, 400, "invalid_type", "as_of",
				     "\"as_of\" must be an RFC 3339 timestamp");
			return false;
		}
		if (!parse_time(json_string_value(value), "as_of", false, &job->as_of_us, err))
			return false;
		job->as_of_given = true;
	}
	value = json_object_get(body, "proof");
	if (value && !json_is_null(value) && !json_is_boolean(value)) {
		fl_error_set(err, 400, "invalid_type", "proof", "\"proof\" must be true or false");
		return false;
	}
	job->proof = json_is_true(value);
	if (!member_u64(body, "min_seq", 0, INT64_MAX, &min_seq, err) ||
	    !member_u64(body, "wait_ms", WAIT_MS_DEFAULT, WAIT_MS_MAX, &wait_ms, err))
		return false;
	set_wait(job, min_seq, wait_ms);
	return true;
}

/*
 * POST /get-online-features (Feast): {"features": ["view:name", ...],
 * "entities": {"<entity column>": [ids]}, "full_feature_names": bool}.
 * Every view named must be keyed by that entity column. Other members are
 * ignored, as Feast's server ignores them, except "feature_service", which
 * fledger does not have.
 */
static bool parse_feast(struct read_job *job, const json_t *body, struct fl_error *err)
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
	job->full_feature_names = json_is_true(value);

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
	if (json_array_size(ids) > READ_BATCH_MAX) {
		fl_error_set(err, 400, "batch_too_large", prefix,
			     "%zu entity ids; at most %d are read at once", json_array_size(ids),
			     READ_BATCH_MAX);
		return false;
	}
	snprintf(job->entity_column, sizeof(job->entity_column), "%s", column);
	for (size_t i = 0; i < json_array_size(ids); i++) {
		char field[FL_ERROR_FIELD_LEN], *id;
		fl_error_path_index(field, sizeof(field), prefix, i);
		if (!entity_from_json(json_array_get(ids, i), field, &id, err) ||
		    !add_entity(job, id, err))
			return false;
	}
	job->entity_values = json_incref((json_t *)ids);

	const json_t *features = json_object_get(body, "features");
	if (!json_is_array(features) || json_array_size(features) == 0) {
		fl_error_set(err, 400,
			     !features		       ? "missing_field"
			     : json_is_array(features) ? "invalid_value"
						       : "invalid_type",
			     "features", "\"features\" must list \"view:name\" references");
		return false;
	}
	if (json_array_size(features) > NAME_LIST_MAX) {
		fl_error_set(err, 400, "limit_exceeded", "features",
			     "\"features\" lists more than %d names", NAME_LIST_MAX);
		return false;
	}
	job->columns = calloc(json_array_size(features), sizeof(*job->columns));
	if (!job->columns)
		return fail_internal(err, FL_ERR_NOMEM);
	for (size_t i = 0; i < json_array_size(features); i++) {
		const json_t *ref = json_array_get(features, i);
		char field[48], view_name[FL_NAME_MAX_LEN + 2];
		struct feast_column *col = &job->columns[job->n_columns];
		snprintf(field, sizeof(field), "features[%zu]", i);
		const char *text = json_string_value(ref), *colon = text ? strchr(text, ':') : NULL;
		if (!colon) {
			fl_error_set(err, 400, ref && !text ? "invalid_type" : "invalid_value",
				     field, "a feature reference is \"<view>:<name>\"");
			return false;
		}
		snprintf(view_name, sizeof(view_name), "%.*s", (int)(colon - text), text);
		if (!add_part(job, view_name, field, &col->part, err))
			return false;
		struct read_part *part = &job->parts[col->part];
		if (strcmp(fl_view_entity(part->view), column) != 0) {
			fl_error_set(err, 400, "entity_mismatch", prefix,
				     "view %s is keyed by %s, but \"entities\" gives %.64s",
				     fl_view_name(part->view), fl_view_entity(part->view), column);
			return false;
		}
		const char *name = colon + 1;
		col->is_window =
		    !fl_view_feature(part->view, name) && fl_view_window(part->view, name);
		if (col->is_window ? !add_window(job, part, name, field, &col->index, err)
				   : !add_feature(job, part, name, field, &col->index, err))
			return false;
		if (job->full_feature_names)
			snprintf(col->name, sizeof(col->name), "%s__%s", fl_view_name(part->view),
				 name);
		else
			snprintf(col->name, sizeof(col->name), "%s", name);
		const char *why =
		    strcmp(col->name, column) == 0 ? "the entity column has it" : NULL;
		for (size_t k = 0; !why && k < job->n_columns; k++)
			if (strcmp(job->columns[k].name, col->name) == 0)
				why = job->columns[k].part == col->part
					  ? "it is listed twice"
					  : "two views have it; set \"full_feature_names\": true";
		if (why) {
			fl_error_set(err, 400, "feature_name_collision", field,
				     "%s would name two result columns (%s)", col->name, why);
			return false;
		}
		job->n_columns++;
	}
	return true;
}

/* GET /v1/history/<view>/<entity_id>?from=&to=&limit= */
static bool parse_history(struct read_job *job, const char *rest, struct fl_error *err)
{
	struct fl_http_request *req = job->req;
	const char *slash = strchr(rest, '/');
	char view_name[FL_NAME_MAX_LEN + 2];
	const char *text;

	snprintf(view_name, sizeof(view_name), "%.*s", (int)(slash - rest), rest);
	/* The history is the write-side trail: auditors see every view's. */
	struct fl_view *view;
	if (strlen(view_name) > FL_NAME_MAX_LEN ||
	    fl_view_registry_get(fl_projection_views(job->query->projection), view_name, &view) !=
		FL_OK) {
		fl_error_set(err, 404, "view_not_found", NULL, "no view is called \"%s\"",
			     view_name);
		return false;
	}
	job->parts = calloc(1, sizeof(*job->parts));
	if (!job->parts) {
		fl_view_unref(view);
		return fail_internal(err, FL_ERR_NOMEM);
	}
	job->parts[0].view = view;
	job->n_parts = 1;
	const char *entity = slash + 1;
	if (!entity_id_ok(entity, strlen(entity), NULL, err))
		return false;
	char *id = strdup(entity);
	if (!id)
		return fail_internal(err, FL_ERR_NOMEM);
	if (!add_entity(job, id, err))
		return false;
	if ((text = fl_http_query(req, "from")) &&
	    !parse_time(text, "from", true, &job->from_us, err))
		return false;
	if ((text = fl_http_query(req, "to")) && !parse_time(text, "to", true, &job->to_us, err))
		return false;
	if (job->from_us > job->to_us) {
		fl_error_set(err, 400, "invalid_value", "to", "\"to\" is before \"from\"");
		return false;
	}
	return query_u64(req, "limit", HISTORY_LIMIT_DEFAULT, 1, HISTORY_LIMIT_MAX, &job->limit,
			 err);
}

/* ---- answering reads ------------------------------------------------------ */

static json_t *hash_list(uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	json_t *list = json_array();
	for (size_t i = 0; list && i < count; i++) {
		char hex[2 * FL_HASH_LEN + 1];
		fl_hex_encode(hashes[i], FL_HASH_LEN, hex);
		json_array_append_new(list, json_string(hex));
	}
	return list;
}

/*
 * Whether the principal may read every feature of the stored event entry:
 * its line carries them all (CONTRACT §6). Otherwise err is the 403
 * proof_forbidden naming the first feature it may not read, served_name
 * being the feature whose proof it is. A feature the view does not know
 * (never expected: features are never removed) counts as unreadable, and a
 * body that does not parse as a feature event is FL_ERR_CORRUPT.
 */
static enum fl_status line_readable(const struct read_job *job, const struct fl_view *view,
				    const struct fl_log_entry *entry, const char *served_name,
				    struct fl_error *err)
{
	struct fl_stored_event event;
	enum fl_status st = fl_stored_event_parse(entry->body, entry->body_len, &event);
	if (st != FL_OK)
		return st;
	if (event.kind != FL_BODY_FEATURE) {
		fl_stored_event_finish(&event);
		return FL_ERR_CORRUPT;
	}
	const char *name;
	const json_t *value;
	json_object_foreach((json_t *)event.features, name, value)
	{
		const struct fl_feature *f = fl_view_feature(view, name);
		if (f && feature_readable(job->principal, f))
			continue;
		fl_error_set(err, 403, "proof_forbidden", "proof",
			     "%s may not read feature %s, which the signed line of seq %" PRIu64
			     " (the proof of %s) carries: a proof is served only when every "
			     "feature of its event may be read",
			     fl_principal_name(job->principal), name, entry->seq, served_name);
		fl_stored_event_finish(&event);
		return FL_ERR_DENIED;
	}
	fl_stored_event_finish(&event);
	return FL_OK;
}

/*
 * The "proof" of the value of seq (CONTRACT §6): the event's log line and its
 * inclusion proof in the tree of checkpoint tree_size (strings and integers
 * only). FL_ERR_NOT_FOUND when the checkpoint does not cover seq;
 * FL_ERR_DENIED (err filled) when the principal may not read every feature
 * of the event (see line_readable).
 */
static enum fl_status proof_object(const struct read_job *job, const struct fl_view *view,
				   struct fl_log_reader *reader, uint64_t seq, uint64_t tree_size,
				   const char *served_name, json_t **ret_proof,
				   struct fl_error *err)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	struct fl_log_entry entry;
	char *text;
	size_t len;

	if (seq == 0 || seq > tree_size)
		return FL_ERR_NOT_FOUND;
	enum fl_status st = fl_log_reader_get(reader, seq, &entry);
	if (st == FL_OK)
		st = line_readable(job, view, &entry, served_name, err);
	if (st != FL_OK || (st = fl_log_entry_line(&entry, &text, &len)) != FL_OK)
		return st;
	json_t *line = json_loadb(text, len, 0, NULL);
	free(text);
	if (!line)
		return FL_ERR_NOMEM;
	st = fl_log_reader_inclusion_proof(reader, seq, tree_size, hashes, &count);
	if (st != FL_OK) {
		json_decref(line);
		return st;
	}
	*ret_proof =
	    json_pack("{s:o,s:I,s:I,s:o}", "line", line, "leaf_index", (json_int_t)(seq - 1),
		      "tree_size", (json_int_t)tree_size, "hashes", hash_list(hashes, count));
	return *ret_proof ? FL_OK : FL_ERR_NOMEM;
}

/*
 * Begins the proof of a read: the latest checkpoint the replica verified.
 * *ret_checkpoint is its JSON (json null when the replica is empty).
 */
static enum fl_status proof_begin(struct fl_query *q, struct fl_log_reader **ret_reader,
				  uint64_t *ret_tree_size, json_t **ret_checkpoint)
{
	struct fl_checkpoint cp;
	char *text;
	enum fl_status st = fl_log_reader_begin(q->replica, ret_reader);
	if (st != FL_OK)
		return st;
	st = fl_log_reader_checkpoint(*ret_reader, 0, &cp);
	if (st == FL_ERR_NOT_FOUND) {
		*ret_tree_size = 0;
		*ret_checkpoint = json_null();
		return FL_OK;
	}
	if (st == FL_OK)
		st = fl_checkpoint_json(&cp, &text);
	if (st != FL_OK) {
		fl_log_reader_end(*ret_reader);
		return st;
	}
	*ret_checkpoint = json_loads(text, 0, NULL);
	free(text);
	if (!*ret_checkpoint) {
		fl_log_reader_end(*ret_reader);
		return FL_ERR_NOMEM;
	}
	*ret_tree_size = cp.tree_size;
	return FL_OK;
}

/*
 * The features of one row with a "proof" added to every served value
 * (proof=1). The text is copied member by member, so that values stay the
 * bytes of their signed events; a proof goes before its object's closing
 * brace.
 */
static enum fl_status write_features_with_proofs(const struct read_job *job,
						 struct fl_log_reader *reader, uint64_t tree_size,
						 const struct fl_read_answer *answer,
						 struct fl_jw *w, struct fl_error *err)
{
	struct fl_json_member m;
	size_t pos = 0;
	int more;

	fl_jw_open(w, '{');
	while ((more = fl_json_next_member(answer->features, answer->features_len, &pos, &m)) ==
	       1) {
		const char *seq_text;
		size_t seq_len;
		fl_jw_sep(w);
		fl_jw_strn(w, m.key, m.key_len);
		fl_jw_char(w, ':');
		if (!fl_json_member(m.value, m.value_len, "seq", &seq_text, &seq_len)) {
			fl_jw_raw(w, m.value, m.value_len);
			continue;
		}
		char digits[24], *end;
		if (seq_len > 20) /* more digits than any uint64 */
			return FL_ERR_CORRUPT;
		snprintf(digits, sizeof(digits), "%.*s", (int)seq_len, seq_text);
		unsigned long long seq = strtoull(digits, &end, 10);
		char served_name[FL_NAME_MAX_LEN + 1];
		snprintf(served_name, sizeof(served_name), "%.*s", (int)m.key_len, m.key);
		json_t *proof = NULL;
		enum fl_status st =
		    end != digits && *end == '\0'
			? proof_object(job, job->parts[0].view, reader, (uint64_t)seq, tree_size,
				       served_name, &proof, err)
			: FL_ERR_CORRUPT;
		char *text = st == FL_OK ? json_dumps(proof, JSON_COMPACT) : NULL;
		json_decref(proof);
		if (st == FL_OK && !text)
			st = FL_ERR_NOMEM;
		if (st != FL_OK)
			return st;
		fl_jw_raw(w, m.value, m.value_len - 1); /* without its '}' */
		fl_jw_raw(w, ",\"proof\":", 9);
		fl_jw_raw(w, text, strlen(text));
		fl_jw_char(w, '}');
		free(text);
	}
	fl_jw_close(w, '}');
	return more == 0 ? FL_OK : FL_ERR_CORRUPT;
}

/* One row: {"view","entity_id","as_of","features","windows"} (open at the end). */
static enum fl_status write_row(struct read_job *job, struct fl_log_reader *reader,
				uint64_t tree_size, const char *entity_id, int64_t as_of_us,
				const struct fl_read_answer *answer, struct fl_jw *w,
				struct fl_error *err)
{
	fl_jw_open(w, '{');
	fl_jw_key(w, "view");
	fl_jw_str(w, fl_view_name(job->parts[0].view));
	fl_jw_key(w, "entity_id");
	fl_jw_str(w, entity_id);
	fl_jw_key(w, "as_of");
	fl_jw_time(w, as_of_us);
	fl_jw_key(w, "features");
	if (reader) {
		enum fl_status st =
		    write_features_with_proofs(job, reader, tree_size, answer, w, err);
		if (st != FL_OK)
			return st;
	} else {
		fl_jw_raw(w, answer->features, answer->features_len);
	}
	fl_jw_key(w, "windows");
	fl_jw_raw(w, answer->windows, answer->windows_len);
	return FL_OK;
}

/* Sends what w holds as a 200 JSON answer; w is left empty. */
static enum fl_http_disposition send_written(struct read_job *job, struct fl_jw *w)
{
	size_t len;
	char *text = fl_jw_take(w, &len);
	if (!text)
		return send_internal(job, FL_ERR_NOMEM);
	enum fl_http_disposition disposition = send_answer(job, 200, "application/json", text, len);
	free(text);
	return disposition;
}

/* ---- the cost of a read, and read workers ------------------------------- */

static enum fl_http_disposition execute(struct read_job *job);

/*
 * Queues job for a read worker: true when it is queued (it may be answered
 * and gone at any moment after), false when there are no workers or they
 * are stopping (the job is still the caller's).
 */
static bool hand_off(struct read_job *job)
{
	struct fl_query_state *s = job->query->state;
	pthread_mutex_lock(&s->work_lock);
	bool queued = s->n_workers > 0 && !s->work_quit;
	if (queued) {
		job->next = NULL;
		if (s->work_tail)
			s->work_tail->next = job;
		else
			s->work_head = job;
		s->work_tail = job;
		pthread_cond_signal(&s->work_ready);
	}
	pthread_mutex_unlock(&s->work_lock);
	return queued;
}

/*
 * The cost limit of one run of job: the whole bound on a read worker (or
 * where there are none), else the inline budget (never above the bound).
 */
static uint64_t run_cost_limit(const struct read_job *job)
{
	uint64_t bound = job->query->max_read_cost;
	if (job->full_budget || job->query->state->n_workers == 0)
		return bound;
	return bound && bound < INLINE_COST ? bound : INLINE_COST;
}

/* Whether a run that failed with err only spent its inline budget. */
static bool over_inline_budget(const struct read_job *job, uint64_t limit,
			       const struct fl_error *err)
{
	uint64_t bound = job->query->max_read_cost;
	return !job->full_budget && strcmp(err->code, "read_too_expensive") == 0 &&
	       (bound == 0 || limit < bound);
}

/*
 * Runs job again on a read worker, or, when there is none, here with the
 * whole bound. What the first run served is forgotten.
 */
static enum fl_http_disposition run_with_full_budget(struct read_job *job)
{
	job->n_served = 0;
	if (hand_off(job))
		return FL_HTTP_DEFERRED;
	job->full_budget = true;
	return execute(job);
}

struct id_index {
	const char *id;
	size_t index;
};

static int compare_id_index(const void *a, const void *b)
{
	const struct id_index *x = a, *y = b;
	int order = strcmp(x->id, y->id);
	return order ? order : (x->index > y->index) - (x->index < y->index);
}

/*
 * For each of the job's entity ids, the index of its first occurrence
 * (ret_first) and, at that first index, the index of its last occurrence
 * (ret_last): a batch that names an id several times computes it once.
 * FL_ERR_NOMEM.
 */
static enum fl_status find_repeats(const struct read_job *job, size_t **ret_first,
				   size_t **ret_last)
{
	size_t n = job->n_entities;
	struct id_index *sorted = malloc(n * sizeof(*sorted));
	size_t *first = malloc(n * sizeof(*first)), *last = malloc(n * sizeof(*last));
	if (!sorted || !first || !last) {
		free(sorted);
		free(first);
		free(last);
		return FL_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++)
		sorted[i] = (struct id_index){job->entity_ids[i], i};
	qsort(sorted, n, sizeof(*sorted), compare_id_index);
	for (size_t i = 0; i < n; i++) {
		bool repeat = i > 0 && strcmp(sorted[i].id, sorted[i - 1].id) == 0;
		first[sorted[i].index] = repeat ? first[sorted[i - 1].index] : sorted[i].index;
		last[first[sorted[i].index]] = sorted[i].index; /* ascending within a run */
	}
	free(sorted);
	*ret_first = first;
	*ret_last = last;
	return FL_OK;
}

/*
 * GET /v1/features/... and POST /v1/features:batch. The answer is written
 * as text straight from the read models (this is the hot path). Rows keep
 * the order of the ids asked for; an id named again repeats its row.
 */
static enum fl_http_disposition execute_rows(struct read_job *job)
{
	struct fl_query *q = job->query;
	struct fl_projection_read *read;
	struct read_part *part = &job->parts[0];
	struct fl_log_reader *reader = NULL;
	uint64_t tree_size = 0;
	json_t *checkpoint = NULL;
	struct fl_error err;
	struct fl_jw w;

	size_t *first = NULL, *last = NULL;
	struct fl_read_answer one, *answers = NULL;
	uint64_t cost_limit = run_cost_limit(job);

	enum fl_status st = FL_OK;
	if (job->n_entities > 1) {
		st = find_repeats(job, &first, &last);
		answers = st == FL_OK ? calloc(job->n_entities, sizeof(*answers)) : NULL;
		if (st == FL_OK && !answers)
			st = FL_ERR_NOMEM;
	}
	if (st == FL_OK)
		st = read_begin(job, &read);
	if (st != FL_OK) {
		free(first);
		free(last);
		free(answers);
		return send_internal(job, st);
	}
	fl_projection_read_limit_cost(read, cost_limit);
	if (job->proof && (st = proof_begin(q, &reader, &tree_size, &checkpoint)) != FL_OK) {
		fl_projection_read_end(read);
		free(first);
		free(last);
		free(answers);
		return send_internal(job, st);
	}
	uint64_t applied_seq = fl_projection_read_applied_seq(read);
	int64_t as_of_us = job->as_of_given ? job->as_of_us : fl_time_now_us();
	struct fl_read_request request = {
	    .view = part->view,
	    .as_of_us = as_of_us,
	    .features = part->features,
	    .n_features = part->n_features,
	    .windows = part->windows,
	    .n_windows = part->n_windows,
	    .with_window_seqs = job->proof,
	};
	fl_error_clear(&err);
	fl_jw_init(&w);
	if (job->kind != READ_ONE) {
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "rows");
		fl_jw_open(&w, '[');
	}
	for (size_t i = 0; st == FL_OK && i < job->n_entities; i++) {
		size_t f = first ? first[i] : i;
		struct fl_read_answer *answer = answers ? &answers[f] : &one;
		if (f == i) {
			request.entity_id = job->entity_ids[i];
			st = fl_projection_query(read, &request, answer, &err);
			if (st != FL_OK)
				break;
			for (size_t k = 0; st == FL_OK && k < answer->n_served; k++)
				st = served_add(job, answer->served_seqs[k]);
		}
		if (job->kind != READ_ONE)
			fl_jw_sep(&w);
		if (st == FL_OK)
			st = write_row(job, reader, tree_size, job->entity_ids[i], as_of_us, answer,
				       &w, &err);
		if (!last || last[f] == i)
			fl_read_answer_finish(answer);
		if (job->kind != READ_ONE)
			fl_jw_close(&w, '}');
	}
	fl_projection_read_end(read);
	if (reader)
		fl_log_reader_end(reader);
	for (size_t i = 0; answers && i < job->n_entities; i++)
		fl_read_answer_finish(&answers[i]); /* those kept for a repeat not reached */
	free(first);
	free(last);
	free(answers);
	if (st != FL_OK) {
		fl_jw_free(&w);
		json_decref(checkpoint);
		if (st == FL_ERR_INVALID && over_inline_budget(job, cost_limit, &err))
			return run_with_full_budget(job);
		if (st == FL_ERR_INVALID && err.http_status)
			return send_fl_error(job, &err);
		if (st == FL_ERR_DENIED && err.http_status) {
			job->n_served = 0; /* refused: nothing was served */
			return send_fl_error(job, &err);
		}
		if (st == FL_ERR_NOT_FOUND && job->proof)
			return send_error(job, 503, "proof_unavailable",
					  "the replica holds no checkpoint covering a served value "
					  "yet; retry",
					  NULL);
		return send_internal(job, st);
	}
	if (job->kind != READ_ONE)
		fl_jw_close(&w, ']');
	fl_jw_key(&w, "applied_seq");
	fl_jw_u64(&w, applied_seq);
	fl_jw_key(&w, "read_id");
	fl_jw_str(&w, job->read_id);
	if (checkpoint) {
		char *text = json_dumps(checkpoint, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(checkpoint);
		if (!text) {
			fl_jw_free(&w);
			return send_internal(job, FL_ERR_NOMEM);
		}
		fl_jw_key(&w, "checkpoint");
		fl_jw_raw(&w, text, strlen(text));
		free(text);
	}
	fl_jw_close(&w, '}');
	return send_written(job, &w);
}

/* A timestamp as protobuf's JSON writes it: 0, 3 or 6 fractional digits. */
static void feast_time(int64_t us, char out[FL_TIME_TEXT_LEN])
{
	fl_time_format(us, out); /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
	if (strcmp(out + 20, "000000Z") == 0)
		strcpy(out + 19, "Z");
	else if (strcmp(out + 23, "000Z") == 0)
		strcpy(out + 23, "Z");
}

/* Which list of a Feast result column is being written. */
enum feast_list { FEAST_VALUES, FEAST_STATUSES, FEAST_TIMES };

/*
 * One cell of a feature or window column, from the answer's text: the value
 * as its stored bytes (null when absent), the status, or the timestamp
 * (a feature's event_ts; a window's as_of).
 */
static void write_feast_cell(struct fl_jw *w, const struct fl_read_answer *answer, bool is_window,
			     const char *name, const char *as_of, enum feast_list list)
{
	const char *cell = NULL, *text = NULL;
	size_t cell_len = 0, text_len = 0;
	if (is_window)
		fl_json_member(answer->windows, answer->windows_len, name, &cell, &cell_len);
	else
		fl_json_member(answer->features, answer->features_len, name, &cell, &cell_len);
	switch (list) {
	case FEAST_VALUES:
		if (cell && fl_json_member(cell, cell_len, "value", &text, &text_len))
			fl_jw_raw(w, text, text_len);
		else
			fl_jw_raw(w, "null", 4);
		return;
	case FEAST_STATUSES:
		if (is_window)
			fl_jw_str(w, "PRESENT");
		else if (cell && fl_json_member(cell, cell_len, "status", &text, &text_len))
			fl_jw_raw(w, text, text_len); /* a JSON string already */
		else
			fl_jw_str(w, "NOT_FOUND");
		return;
	case FEAST_TIMES: {
		char stamp[FL_TIME_TEXT_LEN] = FEAST_NO_TIME, event_ts[FL_TIME_TEXT_LEN + 2];
		int64_t event_us;
		if (is_window) {
			fl_jw_str(w, as_of);
			return;
		}
		if (cell && fl_json_member(cell, cell_len, "event_ts", &text, &text_len) &&
		    text_len >= 2 && text_len - 2 < sizeof(event_ts)) {
			memcpy(event_ts, text + 1, text_len - 2); /* without the quotes */
			event_ts[text_len - 2] = '\0';
			if (fl_time_parse(event_ts, &event_us) == FL_OK)
				feast_time(event_us, stamp);
		}
		fl_jw_str(w, stamp);
		return;
	}
	}
}

/*
 * POST /get-online-features: Feast's columnar answer, the entity column
 * first. Written as text, so that values are the bytes of their signed
 * events, as in every other read.
 */
static enum fl_http_disposition execute_feast(struct read_job *job)
{
	struct fl_projection_read *read;
	struct fl_error err;
	char as_of[FL_TIME_TEXT_LEN];
	size_t n_answers = job->n_entities * job->n_parts;
	struct fl_read_answer *answers = calloc(n_answers, sizeof(*answers));
	size_t *first = NULL, *last = NULL;
	uint64_t cost_limit = run_cost_limit(job);

	enum fl_status st = answers ? find_repeats(job, &first, &last) : FL_ERR_NOMEM;
	if (st == FL_OK)
		st = read_begin(job, &read);
	if (st != FL_OK) {
		free(answers);
		free(first);
		free(last);
		return send_internal(job, st);
	}
	fl_projection_read_limit_cost(read, cost_limit);
	int64_t as_of_us = job->as_of_given ? job->as_of_us : fl_time_now_us();
	feast_time(as_of_us, as_of);
	fl_error_clear(&err);
	/* An id named again is computed once; its cells repeat the first one's. */
	for (size_t e = 0; st == FL_OK && e < job->n_entities; e++)
		for (size_t p = 0; st == FL_OK && first[e] == e && p < job->n_parts; p++) {
			struct read_part *part = &job->parts[p];
			struct fl_read_request request = {
			    .view = part->view,
			    .entity_id = job->entity_ids[e],
			    .as_of_us = as_of_us,
			    .features = part->features,
			    .n_features = part->n_features,
			    .windows = part->windows,
			    .n_windows = part->n_windows,
			};
			st = fl_projection_query(read, &request, &answers[e * job->n_parts + p],
						 &err);
		}
	fl_projection_read_end(read);

	char *entity_values = st == FL_OK ? json_dumps(job->entity_values, JSON_COMPACT) : NULL;
	if (st == FL_OK && !entity_values)
		st = FL_ERR_NOMEM;
	struct fl_jw w;
	fl_jw_init(&w);
	if (st == FL_OK) {
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "metadata");
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "feature_names");
		fl_jw_open(&w, '[');
		fl_jw_sep(&w);
		fl_jw_str(&w, job->entity_column);
		for (size_t c = 0; c < job->n_columns; c++) {
			fl_jw_sep(&w);
			fl_jw_str(&w, job->columns[c].name);
		}
		fl_jw_close(&w, ']');
		fl_jw_close(&w, '}');
		fl_jw_key(&w, "results");
		fl_jw_open(&w, '[');
		/* The entity column: the ids as sent, PRESENT, no timestamp. */
		fl_jw_sep(&w);
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "values");
		fl_jw_raw(&w, entity_values, strlen(entity_values));
		for (int list = FEAST_STATUSES; list <= FEAST_TIMES; list++) {
			fl_jw_key(&w, list == FEAST_STATUSES ? "statuses" : "event_timestamps");
			fl_jw_open(&w, '[');
			for (size_t e = 0; e < job->n_entities; e++) {
				fl_jw_sep(&w);
				fl_jw_str(&w, list == FEAST_STATUSES ? "PRESENT" : FEAST_NO_TIME);
			}
			fl_jw_close(&w, ']');
		}
		fl_jw_close(&w, '}');
	}
	static const char *const list_names[] = {"values", "statuses", "event_timestamps"};
	for (size_t c = 0; st == FL_OK && c < job->n_columns; c++) {
		const struct feast_column *col = &job->columns[c];
		const struct read_part *part = &job->parts[col->part];
		const char *name = col->is_window ? part->windows[col->index]->name
						  : part->features[col->index]->name;
		fl_jw_sep(&w);
		fl_jw_open(&w, '{');
		for (int list = FEAST_VALUES; list <= FEAST_TIMES; list++) {
			fl_jw_key(&w, list_names[list]);
			fl_jw_open(&w, '[');
			for (size_t e = 0; e < job->n_entities; e++) {
				fl_jw_sep(&w);
				write_feast_cell(&w, &answers[first[e] * job->n_parts + col->part],
						 col->is_window, name, as_of,
						 (enum feast_list)list);
			}
			fl_jw_close(&w, ']');
		}
		fl_jw_close(&w, '}');
	}
	for (size_t i = 0; i < n_answers; i++) {
		for (size_t k = 0; st == FL_OK && k < answers[i].n_served; k++)
			st = served_add(job, answers[i].served_seqs[k]);
	}
	for (size_t i = 0; i < n_answers; i++)
		fl_read_answer_finish(&answers[i]);
	free(answers);
	free(first);
	free(last);
	free(entity_values);
	if (st != FL_OK) {
		fl_jw_free(&w);
		if (st == FL_ERR_INVALID && over_inline_budget(job, cost_limit, &err))
			return run_with_full_budget(job);
		if (st == FL_ERR_INVALID && err.http_status)
			return send_fl_error(job, &err);
		return send_internal(job, st);
	}
	fl_jw_close(&w, ']');
	fl_jw_close(&w, '}');
	return send_written(job, &w);
}

static enum fl_status collect_seq(void *ctx, uint64_t seq)
{
	return served_add(ctx, seq);
}

/* GET /v1/history/...: the entity's log lines, NDJSON, oldest event first. */
static enum fl_http_disposition execute_history(struct read_job *job)
{
	struct fl_query *q = job->query;
	struct fl_projection_read *read;
	struct fl_log_reader *reader;

	enum fl_status st = read_begin(job, &read);
	if (st != FL_OK)
		return send_internal(job, st);
	st = fl_projection_history(read, fl_view_name(job->parts[0].view), job->entity_ids[0],
				   job->from_us, job->to_us, job->limit, collect_seq, job);
	fl_projection_read_end(read);
	/* The replica holds at least what the projection applied. */
	if (st != FL_OK || (st = fl_log_reader_begin(q->replica, &reader)) != FL_OK)
		return send_internal(job, st);
	struct fl_ndjson nd = {0};
	for (size_t i = 0; st == FL_OK && i < job->n_served; i++)
		st = fl_ndjson_add_seq(&nd, reader, job->served[i]);
	fl_log_reader_end(reader);
	if (st != FL_OK) {
		fl_text_free(&nd.text);
		return send_internal(job, st);
	}
	char *out = nd.text.data;
	size_t len = nd.text.len;
	enum fl_http_disposition disposition =
	    send_answer(job, 200, "application/x-ndjson", out ? out : "", len);
	free(out);
	return disposition;
}

/*
 * Answers a read whose min_seq (if any) is applied; frees the job. A read
 * of many entity ids goes to a read worker first.
 */
static enum fl_http_disposition execute(struct read_job *job)
{
	if (job->kind != READ_HISTORY && !job->full_budget && job->n_entities > INLINE_ROWS_MAX &&
	    hand_off(job))
		return FL_HTTP_DEFERRED;
	switch (job->kind) {
	case READ_FEAST:
		return execute_feast(job);
	case READ_HISTORY:
		return execute_history(job);
	case READ_ONE:
	case READ_BATCH:
		break;
	}
	return execute_rows(job);
}

static void *worker_main(void *arg)
{
	struct fl_query_state *s = arg;
	pthread_mutex_lock(&s->work_lock);
	for (;;) {
		while (!s->work_head && !s->work_quit)
			pthread_cond_wait(&s->work_ready, &s->work_lock);
		struct read_job *job = s->work_head;
		if (!job)
			break; /* quitting, and the queue is drained */
		s->work_head = job->next;
		if (!s->work_head)
			s->work_tail = NULL;
		pthread_mutex_unlock(&s->work_lock);
		job->full_budget = true;
		execute(job);
		pthread_mutex_lock(&s->work_lock);
	}
	pthread_mutex_unlock(&s->work_lock);
	return NULL;
}

/* Answers what is queued, then stops the read workers (later reads run inline). */
static void stop_workers(struct fl_query_state *s)
{
	pthread_mutex_lock(&s->work_lock);
	bool joined = s->work_quit;
	s->work_quit = true;
	pthread_cond_broadcast(&s->work_ready);
	pthread_mutex_unlock(&s->work_lock);
	for (size_t i = 0; !joined && i < s->n_workers; i++)
		pthread_join(s->workers[i], NULL);
}

static enum fl_http_disposition send_min_seq_timeout(struct read_job *job, uint64_t applied_seq)
{
	char message[160];
	snprintf(message, sizeof(message),
		 "seq %" PRIu64 " was not applied within wait_ms (applied_seq is %" PRIu64 ")",
		 job->min_seq, applied_seq);
	return send_error(job, 504, "min_seq_timeout", message, "min_seq");
}

static enum fl_http_disposition send_shutting_down(struct read_job *job)
{
	return send_error(job, 503, "shutting_down",
			  "the service is stopping before min_seq was applied; retry", NULL);
}

/* ---- reads waiting for min_seq -------------------------------------------- */

static void kick(struct fl_query_state *s)
{
	pthread_mutex_lock(&s->lock);
	s->kicked = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

void fl_query_on_applied(void *ctx, uint64_t applied_seq)
{
	struct fl_query *q = ctx;
	fl_gauge_set(q->applied_seq, (double)applied_seq);
	kick(q->state);
}

enum wait_result {
	WAIT_PARKED,   /* the job may be answered and gone at any moment */
	WAIT_STOPPING, /* the service is stopping; the job is still the caller's */
	WAIT_FULL,     /* max_waiting_reads wait already; the job is still the caller's */
};

/* Parks job until its min_seq is applied or its deadline passes. */
static enum wait_result wait_add(struct fl_query *q, struct read_job *job)
{
	struct fl_query_state *s = q->state;
	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		pthread_mutex_unlock(&s->lock);
		return WAIT_STOPPING;
	}
	if (q->max_waiting_reads > 0 && s->n_waiting >= q->max_waiting_reads) {
		pthread_mutex_unlock(&s->lock);
		return WAIT_FULL;
	}
	job->next = s->waiting;
	s->waiting = job;
	s->n_waiting++;
	fl_gauge_set(q->waiting_reads, (double)s->n_waiting);
	s->kicked = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	if (q->sync)
		fl_sync_poke(q->sync);
	return WAIT_PARKED;
}

/* Each parked read holds a connection: their number is capped. */
static enum fl_http_disposition send_too_many_waiting(struct read_job *job)
{
	char message[128];
	snprintf(message, sizeof(message),
		 "%zu reads already wait for their min_seq; retry later or with wait_ms=0",
		 job->query->max_waiting_reads);
	/* send_answer adds Retry-After to every 503. */
	return send_error(job, 503, "too_many_waiting_reads", message, "min_seq");
}

static void sample_readiness(struct fl_query *q, struct fl_sync_status *ret_status);

static void *waiter_main(void *arg)
{
	struct fl_query *q = arg;
	struct fl_query_state *s = q->state;

	pthread_mutex_lock(&s->lock);
	while (!s->quit) {
		uint64_t applied = fl_projection_applied_seq(q->projection);
		int64_t now = fl_time_mono_us(), next = now + WAITER_TICK_US;
		struct read_job *due = NULL, *expired = NULL, **link = &s->waiting;
		s->kicked = false;
		while (*link) {
			struct read_job *job = *link;
			if (applied >= job->min_seq || job->deadline_us <= now) {
				*link = job->next;
				s->n_waiting--;
				struct read_job **list = applied >= job->min_seq ? &due : &expired;
				job->next = *list;
				*list = job;
				continue;
			}
			if (job->deadline_us < next)
				next = job->deadline_us;
			link = &job->next;
		}
		fl_gauge_set(q->waiting_reads, (double)s->n_waiting);
		pthread_mutex_unlock(&s->lock);

		while (due) {
			struct read_job *job = due;
			due = job->next;
			job->started_us = fl_time_mono_us(); /* the wait is not read latency */
			if (job->retry_rest)
				retry_read(job);
			else
				execute(job);
		}
		while (expired) {
			struct read_job *job = expired;
			expired = job->next;
			send_min_seq_timeout(job, applied);
		}
		if (now - s->last_sample_us >= WAITER_TICK_US) {
			struct fl_sync_status status;
			sample_readiness(q, &status);
		}

		pthread_mutex_lock(&s->lock);
		if (s->kicked || s->quit)
			continue;
		struct timespec until = {.tv_sec = next / 1000000,
					 .tv_nsec = (long)(next % 1000000) * 1000};
		pthread_cond_timedwait(&s->wake, &s->lock, &until);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

enum fl_status fl_query_init(struct fl_query *q)
{
	struct fl_query_state *s = calloc(1, sizeof(*s));
	uint64_t key = 0;

	if (!s)
		return FL_ERR_NOMEM;
	if (getrandom(&key, sizeof(key), 0) != (ssize_t)sizeof(key))
		key = (uint64_t)fl_time_now_us() ^ ((uint64_t)getpid() << 40);
	s->read_id_key = key ^ (uint64_t)fl_time_now_us();
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->ready_lock, NULL);
	pthread_mutex_init(&s->work_lock, NULL);
	pthread_cond_init(&s->work_ready, NULL);
	fl_cond_init_monotonic(&s->wake);
	q->state = s;
	if (pthread_create(&s->thread, NULL, waiter_main, q) != 0) {
		fl_query_finish(q);
		return FL_ERR_IO;
	}
	s->thread_started = true;
	if (q->read_workers) {
		s->workers = calloc(q->read_workers, sizeof(*s->workers));
		if (!s->workers) {
			fl_query_finish(q);
			return FL_ERR_NOMEM;
		}
	}
	for (; s->n_workers < q->read_workers; s->n_workers++)
		if (pthread_create(&s->workers[s->n_workers], NULL, worker_main, s) != 0) {
			fl_query_finish(q);
			return FL_ERR_IO;
		}
	return FL_OK;
}

void fl_query_stop_waiting(struct fl_query *q)
{
	fl_query_historical_stop();
	struct fl_query_state *s = q->state;
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	s->quit = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	if (s->thread_started) {
		pthread_join(s->thread, NULL);
		s->thread_started = false;
	}
	/* Nothing joins the list any more: answer what is left. */
	struct read_job *list = s->waiting;
	s->waiting = NULL;
	s->n_waiting = 0;
	fl_gauge_set(q->waiting_reads, 0);
	while (list) {
		struct read_job *job = list;
		list = job->next;
		if (fl_projection_applied_seq(q->projection) >= job->min_seq)
			execute(job);
		else
			send_shutting_down(job);
	}
	stop_workers(s);
}

void fl_query_finish(struct fl_query *q)
{
	struct fl_query_state *s = q->state;
	if (!s)
		return;
	fl_query_stop_waiting(q);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->ready_lock);
	pthread_cond_destroy(&s->work_ready);
	pthread_mutex_destroy(&s->work_lock);
	free(s->workers);
	free(s);
	q->state = NULL;
}

/* ---- health, readiness, metrics, digest ------------------------------------ */

/*
 * Updates the lag tracker from the sync's status. Lag is measured as the
 * time since a checkpoint size, first seen behind applied_seq, has been
 * waiting to be applied: when applying passes it, the next one is tracked.
 */
static void sample_readiness(struct fl_query *q, struct fl_sync_status *ret_status)
{
	struct fl_query_state *s = q->state;
	memset(ret_status, 0, sizeof(*ret_status));
	if (!q->sync)
		return;
	fl_sync_status(q->sync, ret_status);
	int64_t now = fl_time_mono_us();
	pthread_mutex_lock(&s->ready_lock);
	s->last_sample_us = now;
	bool known = ret_status->checkpoint_size > 0 || ret_status->command_reachable;
	if (known && ret_status->applied_seq >= ret_status->checkpoint_size) {
		s->caught_up_once = true;
		s->behind_size = 0;
	} else if (known && (s->behind_size == 0 || ret_status->applied_seq >= s->behind_size)) {
		s->behind_size = ret_status->checkpoint_size;
		s->behind_since_us = now;
	}
	pthread_mutex_unlock(&s->ready_lock);
}

static void get_readyz(struct fl_query *q, struct fl_http_request *req)
{
	struct fl_query_state *s = q->state;
	struct fl_sync_status st;
	char reason[320] = "";
	int64_t lag_ms = 0;

	sample_readiness(q, &st);
	pthread_mutex_lock(&s->ready_lock);
	bool caught_up_once = s->caught_up_once;
	if (s->behind_size)
		lag_ms = (fl_time_mono_us() - s->behind_since_us) / 1000;
	pthread_mutex_unlock(&s->ready_lock);

	if (!q->sync)
		snprintf(reason, sizeof(reason), "starting");
	else if (st.halted)
		snprintf(reason, sizeof(reason), "halted: %s", st.reason);
	else if (!caught_up_once && st.checkpoint_size == 0 && !st.command_reachable)
		snprintf(reason, sizeof(reason), "waiting for command-svc");
	else if (!caught_up_once)
		snprintf(reason, sizeof(reason),
			 "catching up: applied %" PRIu64 " of %" PRIu64 " events", st.applied_seq,
			 st.checkpoint_size);
	else if (lag_ms > q->lag_bound_ms)
		snprintf(reason, sizeof(reason),
			 "catching up: %" PRIu64 " events behind for %" PRId64 " ms",
			 st.checkpoint_size - st.applied_seq, lag_ms);
	bool ready = reason[0] == '\0';

	/* source: where news comes from — "nats" (consuming the stream) or
	 * "polling" (GET /v1/log on command-svc, with NATS away or off). */
	json_t *body = json_pack(
	    "{s:s,s:I,s:I,s:I,s:I,s:b,s:s,s:b}", "status", ready ? "ready" : "not_ready",
	    "applied_seq", (json_int_t)st.applied_seq, "replica_size", (json_int_t)st.replica_size,
	    "checkpoint_size", (json_int_t)st.checkpoint_size, "lag_ms", (json_int_t)lag_ms,
	    "nats_connected", st.nats_connected, "source", st.nats_connected ? "nats" : "polling",
	    "command_reachable", st.command_reachable);
	if (!ready) {
		if (body)
			json_object_set_new(
			    body, "error",
			    json_pack("{s:s,s:s}", "code", "not_ready", "message", reason));
		fl_http_add_header(req, "Retry-After", "1");
	}
	fl_http_respond_json(req, ready ? 200 : 503, body);
}

static void get_metrics(struct fl_query *q, struct fl_http_request *req)
{
	char *text;
	size_t len;
	struct fl_sync_status st = {0};
	if (q->sync)
		fl_sync_status(q->sync, &st);
	fl_gauge_set(q->applied_seq, (double)fl_projection_applied_seq(q->projection));
	fl_gauge_set(q->nats_connected, st.nats_connected ? 1 : 0);
	if (fl_metrics_render(q->metrics, &text, &len) != FL_OK) {
		fl_http_respond_error(req, 500, "internal_error", "out of memory", NULL);
		return;
	}
	fl_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

static void get_digest(struct fl_query *q, struct fl_http_request *req,
		       const struct fl_principal *principal)
{
	uint64_t applied_seq;
	char digest[2 * FL_HASH_LEN + 1];

	if (!fl_svc_require_role(req, principal, "auditor", NULL))
		return;
	enum fl_status st = fl_projection_digest(q->projection, &applied_seq, digest);
	if (st != FL_OK) {
		fl_http_respond_error(req, 500, "internal_error", fl_status_str(st), NULL);
		return;
	}
	fl_http_respond_json(
	    req, 200,
	    json_pack("{s:I,s:s}", "applied_seq", (json_int_t)applied_seq, "digest", digest));
}

/* ---- dispatch ------------------------------------------------------------- */

/*
 * Runs a read route: authenticates, checks the role, parses, then answers
 * at once or parks the read until its min_seq is applied.
 */
/*
 * A GET of a view not known yet with a min_seq not applied yet: the view may
 * be registered by an event up to min_seq, so wait for it and parse again.
 * WAIT_STOPPING (nothing done) when there is nothing to wait for.
 */
static enum wait_result park_until_view(struct fl_query *q, struct read_job *job, const char *rest)
{
	struct fl_error err;
	uint64_t min_seq, wait_ms;
	fl_error_clear(&err);
	if (!query_u64(job->req, "min_seq", 0, 0, INT64_MAX, &min_seq, &err) ||
	    !query_u64(job->req, "wait_ms", WAIT_MS_DEFAULT, 0, WAIT_MS_MAX, &wait_ms, &err) ||
	    min_seq <= fl_projection_applied_seq(q->projection) || wait_ms == 0)
		return WAIT_STOPPING;
	job->retry_rest = strdup(rest);
	if (!job->retry_rest)
		return WAIT_STOPPING;
	set_wait(job, min_seq, wait_ms);
	return wait_add(q, job);
}

/* Parses a parked read again now that its min_seq is applied, then answers it. */
static void retry_read(struct read_job *job)
{
	struct fl_error err;
	struct read_job *fresh = job_create(job->query, job->req, job->route, job->kind);
	if (!fresh) {
		fl_http_respond_error(job->req, 500, "internal_error", "out of memory", NULL);
		job_destroy(job);
		return;
	}
	fresh->principal = job->principal;
	fresh->started_us = job->started_us;
	fl_error_clear(&err);
	bool ok = parse_one(fresh, job->retry_rest, &err);
	job_destroy(job);
	if (ok)
		execute(fresh);
	else
		send_fl_error(fresh, &err);
}

static enum fl_http_disposition handle_read(struct fl_query *q, struct fl_http_request *req,
					    const char *route, enum read_kind kind,
					    const char *rest)
{
	struct fl_error err;
	struct read_job *job = job_create(q, req, route, kind);
	if (!job) {
		fl_http_respond_error(req, 500, "internal_error", "out of memory", NULL);
		return FL_HTTP_DONE;
	}
	fl_error_clear(&err);
	bool ok = authenticate(job, &err) &&
		  (kind == READ_HISTORY ? require_role(job, "auditor", NULL, &err)
					: require_role(job, "reader", NULL, &err));
	if (ok && (kind == READ_BATCH || kind == READ_FEAST)) {
		/* Malformed bodies are answered by fl_svc_json_body itself (a 400/415
		 * with nothing read; not passed through send_answer). */
		json_t *body = fl_svc_json_body(req);
		if (!body) {
			job_destroy(job);
			return FL_HTTP_DONE;
		}
		ok = kind == READ_BATCH ? parse_batch(job, body, &err)
					: parse_feast(job, body, &err);
		json_decref(body);
	} else if (ok) {
		ok = kind == READ_ONE ? parse_one(job, rest, &err) : parse_history(job, rest, &err);
	}
	if (!ok && kind == READ_ONE && strcmp(err.code, "view_not_found") == 0) {
		enum wait_result parked = park_until_view(q, job, rest);
		if (parked == WAIT_PARKED)
			return FL_HTTP_DEFERRED;
		if (parked == WAIT_FULL)
			return send_too_many_waiting(job);
	}
	if (!ok)
		return send_fl_error(job, &err);

	uint64_t applied = fl_projection_applied_seq(q->projection);
	if (applied >= job->min_seq)
		return execute(job);
	if (job->deadline_us <= fl_time_mono_us()) /* wait_ms=0 */
		return send_min_seq_timeout(job, applied);
	switch (wait_add(q, job)) {
	case WAIT_PARKED:
		return FL_HTTP_DEFERRED;
	case WAIT_STOPPING:
		break;
	case WAIT_FULL:
		return send_too_many_waiting(job);
	}
	return send_shutting_down(job);
}

static bool method_is(struct fl_http_request *req, const char *method)
{
	return strcmp(fl_http_method(req), method) == 0;
}

/* "<view>/<entity_id>" after prefix: the view part must be non-empty. */
static const char *view_entity_rest(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(path, prefix, n) != 0)
		return NULL;
	const char *slash = strchr(path + n, '/');
	return slash && slash > path + n ? path + n : NULL;
}

/*
 * The read audit log, served as command-svc serves the event log:
 * /v1/audit/reads?from&to, /v1/audit/log?from_seq&limit (lines by seq, as
 * /v1/log), /v1/audit/checkpoint, /v1/audit/proof/... (role auditor) and
 * /v1/audit/keys (no token: public keys are public).
 */
static enum fl_http_disposition handle_audit_log(struct fl_query *q, struct fl_http_request *req,
						 const char *path)
{
	static const char *const routes[] = {
	    "/v1/audit/reads",		 "/v1/audit/checkpoint",	"/v1/audit/keys",
	    "/v1/audit/proof/inclusion", "/v1/audit/proof/consistency", "/v1/audit/log"};
	const char *route = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strcmp(path, routes[i]) == 0)
			route = routes[i];
	if (!route || !q->audit_log) {
		fl_http_set_user(req, "other");
		fl_http_respond_error(req, 404, "not_found", "no such route", NULL);
		return FL_HTTP_DONE;
	}
	fl_http_set_user(req, (void *)route);
	if (!method_is(req, "GET")) {
		fl_http_respond_error(req, 405, "method_not_allowed",
				      "this route does not take that method", NULL);
		return FL_HTTP_DONE;
	}
	if (strcmp(route, "/v1/audit/keys") == 0)
		return fl_logroutes_keys(q->audit_log, req);
	const struct fl_principal *principal = fl_svc_authenticate(q->auth, req);
	if (!principal || !fl_svc_require_role(req, principal, "auditor", NULL))
		return FL_HTTP_DONE;
	if (strcmp(route, "/v1/audit/reads") == 0)
		return fl_logroutes_lines_by_time(q->audit_log, req);
	if (strcmp(route, "/v1/audit/log") == 0)
		return fl_logroutes_lines(q->audit_log, req);
	if (strcmp(route, "/v1/audit/checkpoint") == 0)
		return fl_logroutes_checkpoint(q->audit_log, req);
	return fl_logroutes_proof(q->audit_log, req,
				  strcmp(route, "/v1/audit/proof/inclusion") == 0);
}

enum fl_http_disposition fl_query_handle(void *ctx, struct fl_http_request *req)
{
	struct fl_query *q = ctx;
	const char *path = fl_http_path(req);
	const char *route = NULL, *rest = NULL, *method = "GET";
	enum read_kind kind = READ_ONE;
	bool is_read = true;

	/* Routes without a token. */
	if (strcmp(path, "/healthz") == 0) {
		fl_http_set_user(req, "/healthz");
		fl_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/readyz") == 0) {
		fl_http_set_user(req, "/readyz");
		get_readyz(q, req);
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/metrics") == 0) {
		fl_http_set_user(req, "/metrics");
		get_metrics(q, req);
		return FL_HTTP_DONE;
	}

	if (strncmp(path, "/v1/audit/", 10) == 0)
		return handle_audit_log(q, req, path);

	if (strcmp(path, "/v1/features:historical") == 0) {
		fl_http_set_user(req, "/v1/features:historical");
		if (!method_is(req, "POST")) {
			fl_http_respond_error(req, 405, "method_not_allowed",
					      "this route does not take that method", NULL);
			return FL_HTTP_DONE;
		}
		struct read_job *job = job_create(q, req, NULL, READ_BATCH); /* for its read id */
		if (!job) {
			fl_http_respond_error(req, 500, "internal_error", "out of memory", NULL);
			return FL_HTTP_DONE;
		}
		enum fl_http_disposition disposition = fl_query_historical(q, req, job->read_id);
		job_destroy(job);
		return disposition;
	}
	if (strcmp(path, "/v1/features:batch") == 0) {
		route = "/v1/features:batch";
		kind = READ_BATCH;
		method = "POST";
	} else if (strcmp(path, "/get-online-features") == 0) {
		route = "/get-online-features";
		kind = READ_FEAST;
		method = "POST";
	} else if (strcmp(path, "/v1/projection/digest") == 0) {
		route = "/v1/projection/digest";
		is_read = false;
	} else if ((rest = view_entity_rest(path, "/v1/features/"))) {
		route = "/v1/features/{view}/{entity_id}";
	} else if ((rest = view_entity_rest(path, "/v1/history/"))) {
		route = "/v1/history/{view}/{entity_id}";
		kind = READ_HISTORY;
	} else {
		fl_http_set_user(req, "other");
		fl_http_respond_error(req, 404, "not_found", "no such route", NULL);
		return FL_HTTP_DONE;
	}
	fl_http_set_user(req, (void *)route);
	if (!method_is(req, method)) {
		fl_http_respond_error(req, 405, "method_not_allowed",
				      "this route does not take that method", NULL);
		return FL_HTTP_DONE;
	}
	if (is_read)
		return handle_read(q, req, route, kind, rest);
	const struct fl_principal *principal = fl_svc_authenticate(q->auth, req);
	if (principal)
		get_digest(q, req, principal);
	return FL_HTTP_DONE;
}

void fl_query_on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			  int64_t duration_us)
{
	struct fl_query *q = ctx;
	fl_svc_request_done(req, q->http_requests, status, duration_us, true);
}
