/*
 * HTTP routes of query-svc (CONTRACT §6, §8-§10): parse a read, check it
 * against the principal's roles and the views' ACLs, answer it from one
 * snapshot of the read models, and serve health, readiness and metrics.
 *
 * This file glues HTTP to the read modules: read_plan.c parses a read and
 * checks it against the ACLs, read_answer.c computes its bytes, waiter.c
 * parks it until its min_seq is applied. Every read route goes through one
 * struct read_job, from the request to its answer: who asked (principal), by which route, which
 * views, entity ids, features and windows, which seqs the values came from, and the exact bytes and
 * status of the answer, all of which meet in send_answer(). That is where the read audit (CONTRACT
 * §7) records each read before answering.
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

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "audit.h"
#include "fledger/logroutes.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "fledger/view.h"
#include "historical.h"
#include "read_answer.h"
#include "read_plan.h"
#include "waiter.h"

#define WAITER_TICK_US 100000 /* the waiter thread looks around at least this often */
#define READ_ID_LEN 19	      /* "r-" + 16 hex digits + NUL */
#define INLINE_ROWS_MAX 32    /* reads of more entity ids go to a read worker at once */
#define INLINE_COST 2048      /* cost units a read may spend on an HTTP or the waiter thread */

struct fl_query_state {
	struct fl_waiter *waiter; /* reads parked for their min_seq */

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

struct read_job {
	struct fl_query *query;
	struct fl_http_request *req;
	const char *route; /* the metrics label, static */
	char read_id[READ_ID_LEN];
	struct fl_read_plan plan;     /* who asks (principal: NULL until authenticated) and what */
	struct fl_read_result result; /* what was served, once answered */
	struct fl_waiter_item wait;   /* min_seq, and when the wait gives up */
	int64_t started_us;	      /* monotonic: the read's latency runs from here */

	/*
	 * A read of a view not applied yet, waiting for a min_seq that may
	 * register it (read your own view registration): parsed again, from
	 * this path rest, once min_seq is applied.
	 */
	char *retry_rest;

	bool full_budget; /* runs with the whole --max-read-cost (on a read worker) */

	struct read_job *next; /* in the work queue */
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
				   const char *route, enum fl_read_kind kind)
{
	struct read_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->query = q;
	job->req = req;
	job->route = route;
	fl_read_plan_init(&job->plan, kind, NULL, fl_projection_views(q->projection));
	job->started_us = fl_time_mono_us();
	uint64_t n = atomic_fetch_add_explicit(&q->state->next_read, 1, memory_order_relaxed);
	snprintf(job->read_id, sizeof(job->read_id), "r-%016" PRIx64,
		 mix64(q->state->read_id_key + n));
	return job;
}

static void job_destroy(struct read_job *job)
{
	if (!job)
		return;
	fl_read_plan_finish(&job->plan);
	fl_read_result_finish(&job->result);
	free(job->retry_rest);
	free(job);
}

static struct read_job *job_of_wait(struct fl_waiter_item *item)
{
	return (struct read_job *)(void *)((char *)item - offsetof(struct read_job, wait));
}

/* ---- answers: the one exit of every read route --------------------------- */

/* Whether a read is recorded: unless every view it names has audit_reads off. */
static bool audited(const struct read_job *job, unsigned status)
{
	if (!job->query->audit)
		return false;
	if (status == 401 || status == 403 || job->plan.n_parts == 0)
		return true;
	for (size_t i = 0; i < job->plan.n_parts; i++)
		if (fl_view_audit_reads(job->plan.parts[i].view))
			return true;
	return false;
}

/*
 * The names of a read refused before they were taken (the features or
 * windows of its query string), split in place in text: at most 1000,
 * each shorter than a name may be.
 */
static size_t split_names(char *text, const char **names, size_t cap)
{
	size_t count = 0;
	for (char *p = text; p && count < cap;) {
		char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (comma)
			*comma = '\0';
		if (n && n < FL_NAME_MAX_LEN + 2)
			names[count++] = p;
		p = comma ? comma + 1 : NULL;
	}
	return count;
}

/*
 * Records the read (CONTRACT §7) and hands the answer to the audit thread,
 * which then owns body. The record's lists are the plan's own strings: no
 * copies, no JSON tree.
 */
static enum fl_status submit_audited(struct read_job *job, unsigned status,
				     const char *content_type, char *body, size_t len)
{
	const struct fl_read_plan *plan = &job->plan;
	size_t n_features = 0, n_windows = 0;
	for (size_t p = 0; p < plan->n_parts; p++) {
		n_features += plan->parts[p].n_features;
		n_windows += plan->parts[p].n_windows;
	}
	/*
	 * A read refused before it was parsed (401, 403 for a missing role)
	 * still names what it asked for: the view and entity of its path, and
	 * the names of its query string.
	 */
	char path_view[FL_NAME_MAX_LEN + 2] = "";
	const char *path_entity = NULL;
	const char *rest = NULL;
	if (plan->n_parts == 0 && (plan->kind == FL_READ_ONE || plan->kind == FL_READ_HISTORY))
		rest =
		    fl_read_path_rest(fl_http_path(job->req),
				      plan->kind == FL_READ_ONE ? "/v1/features/" : "/v1/history/");
	if (rest) {
		const char *slash = strchr(rest, '/');
		snprintf(path_view, sizeof(path_view), "%.*s", (int)(slash - rest), rest);
		if (plan->n_entities == 0)
			path_entity = slash + 1;
	}
	const char *lists[2] = {"features", "windows"};
	char *asked[2] = {NULL, NULL};
	size_t cap[2] = {n_features, n_windows};
	enum fl_status st = FL_OK;
	for (int l = 0; l < 2; l++) {
		const char *text = fl_http_query(job->req, lists[l]);
		if (plan->kind == FL_READ_ONE && cap[l] == 0 && text && *text) {
			asked[l] = strdup(text);
			cap[l] = 1000;
			if (!asked[l])
				st = FL_ERR_NOMEM;
		}
	}
	const char *inline_names[32];
	size_t n_names = (plan->n_entities ? 0 : 1) + cap[0] + cap[1];
	const char **names = n_names <= 32 ? inline_names : malloc(n_names * sizeof(*names));
	if (!names)
		st = FL_ERR_NOMEM;
	if (st == FL_OK) {
		const char **features = names, **windows = names + cap[0];
		n_features = n_windows = 0;
		for (size_t p = 0; p < plan->n_parts; p++) {
			for (size_t i = 0; i < plan->parts[p].n_features; i++)
				features[n_features++] = plan->parts[p].features[i]->name;
			for (size_t i = 0; i < plan->parts[p].n_windows; i++)
				windows[n_windows++] = plan->parts[p].windows[i]->name;
		}
		if (asked[0])
			n_features = split_names(asked[0], features, cap[0]);
		if (asked[1])
			n_windows = split_names(asked[1], windows, cap[1]);
		const char **entity = windows + cap[1];
		struct fl_audit_names entity_ids = {(const char *const *)plan->entity_ids,
						    plan->n_entities};
		if (plan->n_entities == 0 && path_entity) {
			*entity = path_entity;
			entity_ids = (struct fl_audit_names){entity, 1};
		}
		const char *view = NULL;
		if (plan->n_parts)
			view = fl_view_name(plan->parts[0].view);
		else if (path_view[0])
			view = path_view;
		struct fl_audit_record rec = {
		    .read_id = job->read_id,
		    .principal = plan->principal ? fl_principal_name(plan->principal) : NULL,
		    .route = job->route,
		    .view = view,
		    .entity_id_names = entity_ids,
		    .feature_names = {features, n_features},
		    .window_names = {windows, n_windows},
		    .served_seqs = job->result.served,
		    .n_served = job->result.n_served,
		    .applied_seq = job->result.applied_seq,
		};
		st = fl_audit_submit(job->query->audit, job->req, &rec, status, content_type, body,
				     len);
	}
	if (names != inline_names)
		free(names);
	free(asked[0]);
	free(asked[1]);
	return st;
}

/*
 * Sends the answer of a read and frees the job. Everything the read audit
 * (CONTRACT §7) records is at hand here: job->read_id, the plan's principal
 * (NULL without a valid token), job->route, the views of the plan's parts,
 * its entity ids, the feature and window names of the parts, the result's
 * served seqs (ascending, no repeats), the answer bytes and status, denials
 * included. An audited read is answered by the audit thread once its record
 * is committed (FL_HTTP_DEFERRED); if it cannot be recorded it is refused
 * with a 503, never answered unaudited.
 */
static enum fl_http_disposition send_answer(struct read_job *job, unsigned status,
					    const char *content_type, const char *body, size_t len)
{
	struct fl_query *q = job->query;
	enum fl_http_disposition disposition = FL_HTTP_DONE;

	if (status == 401)
		fl_http_add_header(job->req, "WWW-Authenticate", "Bearer");
	if (status == 503)
		fl_http_add_header(job->req, "Retry-After", "1");
	if (audited(job, status)) {
		/* The audit thread sends the answer: it takes the read's own
		 * body, or a copy of one that is not the job's to give. */
		char *owned =
		    body && body == job->result.body ? job->result.body : malloc(len ? len : 1);
		if (owned && owned != body && len > 0) /* body may be NULL when empty */
			memcpy(owned, body, len);
		if (owned && submit_audited(job, status, content_type, owned, len) == FL_OK) {
			if (owned == job->result.body)
				job->result.body = NULL;
			disposition = FL_HTTP_DEFERRED;
		} else {
			if (owned != job->result.body)
				free(owned);
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
	if (status == 200 && job->plan.kind != FL_READ_HISTORY)
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

/* As fl_svc_authenticate, but the 401 goes through the job's answer. */
static bool authenticate(struct read_job *job, struct fl_error *err)
{
	const struct fl_auth *auth = job->query->auth;
	if (!auth) {
		job->plan.principal = fl_svc_dev_principal();
		return true;
	}
	const char *header = fl_http_header(job->req, "Authorization");
	const struct fl_principal *principal;
	if (fl_auth_lookup(auth, header, &principal) == FL_OK) {
		job->plan.principal = principal;
		return true;
	}
	if (header)
		fl_error_set(err, 401, "unknown_token", NULL, "the bearer token is not known");
	else
		fl_error_set(err, 401, "missing_token", NULL,
			     "an Authorization: Bearer <token> header is required");
	return false;
}

static const char *request_param(const void *ctx, const char *name)
{
	return fl_http_query(ctx, name);
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
 * Answers a read whose min_seq (if any) is applied; frees the job. A read
 * of many entity ids goes to a read worker first; one that spends its
 * inline budget runs again there (or, when there is none, here with the
 * whole bound), what the first run served forgotten.
 */
static enum fl_http_disposition execute(struct read_job *job)
{
	struct fl_query *q = job->query;
	const struct fl_read_sources sources = {q->projection, q->replica};
	if (job->plan.kind != FL_READ_HISTORY && !job->full_budget &&
	    job->plan.n_entities > INLINE_ROWS_MAX && hand_off(job))
		return FL_HTTP_DEFERRED;
	for (;;) {
		uint64_t limit = run_cost_limit(job);
		fl_read_result_finish(&job->result);
		enum fl_status st =
		    fl_read_answer_plan(&job->plan, &sources, job->read_id, limit, &job->result);
		if (st == FL_OK)
			return send_answer(job, 200, job->result.content_type, job->result.body,
					   job->result.len);
		if (st != FL_ERR_INVALID || !over_inline_budget(job, limit, &job->result.err))
			return send_fl_error(job, &job->result.err);
		if (hand_off(job))
			return FL_HTTP_DEFERRED;
		job->full_budget = true;
	}
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
		 job->wait.min_seq, applied_seq);
	return send_error(job, 504, "min_seq_timeout", message, "min_seq");
}

static enum fl_http_disposition send_shutting_down(struct read_job *job)
{
	return send_error(job, 503, "shutting_down",
			  "the service is stopping before min_seq was applied; retry", NULL);
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

/* ---- reads waiting for min_seq -------------------------------------------- */

static void retry_read(struct read_job *job);
static void sample_readiness(struct fl_query *q, struct fl_sync_status *ret_status);

void fl_query_on_applied(void *ctx, uint64_t applied_seq)
{
	struct fl_query *q = ctx;
	fl_gauge_set(q->applied_seq, (double)applied_seq);
	fl_waiter_kick(q->state->waiter);
}

/* Sets what a read waits for: min_seq applied, at most wait_ms. */
static void set_wait(struct read_job *job, uint64_t min_seq, uint64_t wait_ms)
{
	job->wait.min_seq = min_seq;
	job->wait.deadline_us = job->started_us + (int64_t)wait_ms * 1000;
}

/* Parks job until its min_seq is applied or its deadline passes. */
static enum fl_waiter_add wait_add(struct fl_query *q, struct read_job *job)
{
	enum fl_waiter_add added = fl_waiter_add(q->state->waiter, &job->wait);
	if (added == FL_WAITER_PARKED && q->sync)
		fl_sync_poke(q->sync, job->wait.min_seq);
	return added;
}

static uint64_t waiter_applied(void *ctx)
{
	struct fl_query *q = ctx;
	return fl_projection_applied_seq(q->projection);
}

static void waiter_due(void *ctx, struct fl_waiter_item *item)
{
	(void)ctx;
	struct read_job *job = job_of_wait(item);
	job->started_us = fl_time_mono_us(); /* the wait is not read latency */
	if (job->retry_rest)
		retry_read(job);
	else
		execute(job);
}

static void waiter_expired(void *ctx, struct fl_waiter_item *item, uint64_t applied)
{
	(void)ctx;
	send_min_seq_timeout(job_of_wait(item), applied);
}

static void waiter_counted(void *ctx, size_t n_waiting)
{
	struct fl_query *q = ctx;
	fl_gauge_set(q->waiting_reads, (double)n_waiting);
}

static void waiter_tick(void *ctx, int64_t now_us)
{
	struct fl_query *q = ctx;
	if (now_us - q->state->last_sample_us >= WAITER_TICK_US) {
		struct fl_sync_status status;
		sample_readiness(q, &status);
	}
}

enum fl_status fl_query_init(struct fl_query *q)
{
	static const struct fl_waiter_ops ops = {
	    .applied = waiter_applied,
	    .due = waiter_due,
	    .expired = waiter_expired,
	    .counted = waiter_counted,
	    .tick = waiter_tick,
	};
	struct fl_query_state *s = calloc(1, sizeof(*s));
	uint64_t key = 0;

	if (!s)
		return FL_ERR_NOMEM;
	if (getrandom(&key, sizeof(key), 0) != (ssize_t)sizeof(key))
		key = (uint64_t)fl_time_now_us() ^ ((uint64_t)getpid() << 40);
	s->read_id_key = key ^ (uint64_t)fl_time_now_us();
	pthread_mutex_init(&s->ready_lock, NULL);
	pthread_mutex_init(&s->work_lock, NULL);
	pthread_cond_init(&s->work_ready, NULL);
	q->state = s;
	enum fl_status st =
	    fl_waiter_start(&ops, q, q->max_waiting_reads, WAITER_TICK_US, &s->waiter);
	if (st != FL_OK) {
		fl_query_finish(q);
		return st;
	}
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
	/* Nothing joins the list any more: answer what is left. */
	struct fl_waiter_item *list = s->waiter ? fl_waiter_stop(s->waiter) : NULL;
	while (list) {
		struct read_job *job = job_of_wait(list);
		list = list->next;
		if (fl_projection_applied_seq(q->projection) >= job->wait.min_seq)
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
	fl_waiter_destroy(s->waiter);
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
 * A GET of a view not known yet with a min_seq not applied yet: the view may
 * be registered by an event up to min_seq, so wait for it and parse again.
 * FL_WAITER_STOPPING (nothing done) when there is nothing to wait for.
 */
static enum fl_waiter_add park_until_view(struct fl_query *q, struct read_job *job,
					  const char *rest)
{
	const struct fl_read_params params = {request_param, job->req};
	struct fl_error err;
	uint64_t min_seq, wait_ms;
	fl_error_clear(&err);
	if (!fl_read_params_wait(&params, &min_seq, &wait_ms, &err) ||
	    min_seq <= fl_projection_applied_seq(q->projection) || wait_ms == 0)
		return FL_WAITER_STOPPING;
	job->retry_rest = strdup(rest);
	if (!job->retry_rest)
		return FL_WAITER_STOPPING;
	set_wait(job, min_seq, wait_ms);
	return wait_add(q, job);
}

/* Parses a parked read again now that its min_seq is applied, then answers it. */
static void retry_read(struct read_job *job)
{
	struct fl_error err;
	struct read_job *fresh = job_create(job->query, job->req, job->route, job->plan.kind);
	if (!fresh) {
		fl_http_respond_error(job->req, 500, "internal_error", "out of memory", NULL);
		job_destroy(job);
		return;
	}
	const struct fl_read_params params = {request_param, job->req};
	fresh->plan.principal = job->plan.principal;
	fresh->started_us = job->started_us;
	fl_error_clear(&err);
	bool ok = fl_read_plan_one(&fresh->plan, job->retry_rest, &params, &err);
	job_destroy(job);
	if (ok)
		execute(fresh);
	else
		send_fl_error(fresh, &err);
}

/*
 * Runs a read route: authenticates, checks the role, parses, then answers
 * at once or parks the read until its min_seq is applied.
 */
static enum fl_http_disposition handle_read(struct fl_query *q, struct fl_http_request *req,
					    const char *route, enum fl_read_kind kind,
					    const char *rest)
{
	struct fl_error err;
	struct read_job *job = job_create(q, req, route, kind);
	if (!job) {
		fl_http_respond_error(req, 500, "internal_error", "out of memory", NULL);
		return FL_HTTP_DONE;
	}
	const struct fl_read_params params = {request_param, req};
	fl_error_clear(&err);
	bool ok = authenticate(job, &err) && fl_read_plan_role(kind, job->plan.principal, &err);
	if (ok && (kind == FL_READ_BATCH || kind == FL_READ_FEAST)) {
		/* Malformed bodies are answered by fl_svc_json_body itself (a 400/415
		 * with nothing read; not passed through send_answer). */
		json_t *body = fl_svc_json_body(req);
		if (!body) {
			job_destroy(job);
			return FL_HTTP_DONE;
		}
		ok = kind == FL_READ_BATCH ? fl_read_plan_batch(&job->plan, body, &err)
					   : fl_read_plan_feast(&job->plan, body, &err);
		json_decref(body);
	} else if (ok) {
		ok = kind == FL_READ_ONE ? fl_read_plan_one(&job->plan, rest, &params, &err)
					 : fl_read_plan_history(&job->plan, rest, &params, &err);
	}
	if (!ok && kind == FL_READ_ONE && strcmp(err.code, "view_not_found") == 0) {
		enum fl_waiter_add parked = park_until_view(q, job, rest);
		if (parked == FL_WAITER_PARKED)
			return FL_HTTP_DEFERRED;
		if (parked == FL_WAITER_FULL)
			return send_too_many_waiting(job);
	}
	if (!ok)
		return send_fl_error(job, &err);

	uint64_t applied = fl_projection_applied_seq(q->projection);
	set_wait(job, job->plan.min_seq, job->plan.wait_ms);
	if (applied >= job->wait.min_seq)
		return execute(job);
	if (job->wait.deadline_us <= fl_time_mono_us()) /* wait_ms=0 */
		return send_min_seq_timeout(job, applied);
	switch (wait_add(q, job)) {
	case FL_WAITER_PARKED:
		return FL_HTTP_DEFERRED;
	case FL_WAITER_STOPPING:
		break;
	case FL_WAITER_FULL:
		return send_too_many_waiting(job);
	}
	return send_shutting_down(job);
}

static bool method_is(struct fl_http_request *req, const char *method)
{
	return strcmp(fl_http_method(req), method) == 0;
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
	enum fl_read_kind kind = FL_READ_ONE;
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
		struct read_job *job =
		    job_create(q, req, NULL, FL_READ_BATCH); /* for its read id */
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
		kind = FL_READ_BATCH;
		method = "POST";
	} else if (strcmp(path, "/get-online-features") == 0) {
		route = "/get-online-features";
		kind = FL_READ_FEAST;
		method = "POST";
	} else if (strcmp(path, "/v1/projection/digest") == 0) {
		route = "/v1/projection/digest";
		is_read = false;
	} else if ((rest = fl_read_path_rest(path, "/v1/features/"))) {
		route = "/v1/features/{view}/{entity_id}";
	} else if ((rest = fl_read_path_rest(path, "/v1/history/"))) {
		route = "/v1/history/{view}/{entity_id}";
		kind = FL_READ_HISTORY;
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
