/*
 * Group commit (see committer.h).
 */
#include "committer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/format.h"
#include "fledger/event.h"
#include "fledger/jsonw.h"
#include "fledger/util.h"

#define MAX_GROUP_EVENTS 20000 /* events gathered into one transaction */

enum job_kind { JOB_EVENTS, JOB_VIEW };

struct job {
	enum job_kind kind;
	struct fl_http_request *req;
	struct job *next;
	/* JOB_EVENTS */
	struct fl_log_input *inputs;
	char **tails;
	size_t count;
	void *keep;
	bool receipt; /* ?receipt=1: an inclusion proof per result */
	struct fl_log_result *results;
	/* JOB_VIEW */
	struct fl_view *view;
	char *producer;
};

struct fl_committer {
	struct fl_committer_config config;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct job *head, *tail;
	bool stop;
};

static void job_free(struct job *job)
{
	if (!job)
		return;
	for (size_t i = 0; job->tails && i < job->count; i++)
		free(job->tails[i]);
	free(job->tails);
	free(job->inputs);
	free(job->results);
	free(job->keep);
	fl_view_unref(job->view);
	free(job->producer);
	free(job);
}

static void respond_status_error(struct fl_committer *c, struct fl_http_request *req,
				 enum fl_status st)
{
	if (st == FL_ERR_FULL)
		c->config.respond_error(
		    req, 507, "log_full",
		    "the log cannot grow (disk or map full); nothing was written", NULL);
	else
		c->config.respond_error(req, 500, "internal_error", fl_status_str(st), NULL);
}

/*
 * The receipt of a commit (CONTRACT §3): the signed checkpoint of exactly
 * tree_size (the size after the commit, or the current size when every event
 * was a duplicate), which covers every seq the answers name, as compact JSON
 * text, and a reader for inclusion proofs against it (ended by the caller).
 * NULL when it cannot be read.
 */
static char *receipt_checkpoint(struct fl_log *log, uint64_t tree_size,
				struct fl_log_reader **ret_reader)
{
	struct fl_checkpoint cp;
	char *text = NULL;
	if (fl_log_reader_begin(log, ret_reader) != FL_OK) {
		*ret_reader = NULL;
		return NULL;
	}
	if (fl_log_reader_checkpoint(*ret_reader, tree_size, &cp) != FL_OK ||
	    fl_checkpoint_json(&cp, &text) != FL_OK)
		return NULL;
	return text;
}

/* Writes member "proof" of seq against tree_size; nothing when it cannot be read. */
static void write_proof(struct fl_jw *w, struct fl_log_reader *reader, uint64_t seq,
			uint64_t tree_size)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	char *text = NULL;
	if (fl_log_reader_inclusion_proof(reader, seq, tree_size, hashes, &count) == FL_OK &&
	    fl_inclusion_proof_json(seq - 1, tree_size, (const uint8_t(*)[FL_HASH_LEN])hashes,
				    count, &text) == FL_OK) {
		fl_jw_key(w, "proof");
		fl_jw_raw(w, text, strlen(text));
	}
	free(text);
}

static void answer_events(struct fl_committer *c, struct job *job, const struct fl_log_batch *batch,
			  uint64_t tree_size, struct fl_log_reader *reader, const char *checkpoint)
{
	if (batch->status == FL_ERR_CONFLICT) {
		char field[64];
		if (job->count == 1)
			snprintf(field, sizeof(field), "idempotency_key");
		else
			snprintf(field, sizeof(field), "events[%zu].idempotency_key",
				 batch->conflict_index);
		c->config.respond_error(job->req, 409, "idempotency_conflict",
					"this idempotency key was used before with another event",
					field);
		return;
	}
	if (batch->status != FL_OK) {
		respond_status_error(c, job->req, batch->status);
		return;
	}
	if (!checkpoint) {
		/* Durable, but without the receipt the answer must carry. */
		c->config.respond_error(
		    job->req, 500, "internal_error",
		    "the events were committed, but their checkpoint could not be "
		    "read; retry with the same idempotency keys",
		    NULL);
		return;
	}
	/* {"results":[{"seq":N,"leaf_hash":"<hex>","duplicate":B[,"proof":{...}]},...],
	 *  "tree_size":M,"checkpoint":{...}}, written straight, no tree. */
	struct fl_jw w;
	bool all_duplicates = true;
	fl_jw_init(&w);
	fl_text_reserve(&w.text, 160 + strlen(checkpoint) + job->count * 120);
	fl_jw_open(&w, '{');
	fl_jw_key(&w, "results");
	fl_jw_open(&w, '[');
	for (size_t i = 0; i < job->count; i++) {
		const struct fl_log_result *r = &job->results[i];
		char hex[2 * FL_HASH_LEN + 1];
		fl_hex_encode(r->leaf_hash, FL_HASH_LEN, hex);
		all_duplicates = all_duplicates && r->duplicate;
		fl_jw_sep(&w);
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "seq");
		fl_jw_u64(&w, r->seq);
		fl_jw_key(&w, "leaf_hash");
		fl_jw_raw(&w, "\"", 1);
		fl_jw_raw(&w, hex, 2 * FL_HASH_LEN);
		fl_jw_raw(&w, "\"", 1);
		fl_jw_key(&w, "duplicate");
		fl_jw_raw(&w, r->duplicate ? "true" : "false", r->duplicate ? 4 : 5);
		if (job->receipt)
			write_proof(&w, reader, r->seq, tree_size);
		fl_jw_close(&w, '}');
	}
	fl_jw_close(&w, ']');
	fl_jw_key(&w, "tree_size");
	fl_jw_u64(&w, tree_size);
	fl_jw_key(&w, "checkpoint");
	fl_jw_raw(&w, checkpoint, strlen(checkpoint));
	fl_jw_close(&w, '}');
	if (w.text.failed) {
		fl_jw_free(&w);
		respond_status_error(c, job->req, FL_ERR_NOMEM);
		return;
	}
	c->config.respond(job->req, all_duplicates ? 200 : 201, "application/json", w.text.data,
			  w.text.len);
	fl_jw_free(&w);
}

/* Appends a run of event jobs in one transaction and answers them. */
static void commit_events(struct fl_committer *c, struct job **jobs, size_t n_jobs)
{
	struct fl_log_batch *batches = calloc(n_jobs, sizeof(*batches));
	uint64_t tree_size = 0;
	size_t events = 0;
	enum fl_status st = batches ? FL_OK : FL_ERR_NOMEM;

	for (size_t j = 0; st == FL_OK && j < n_jobs; j++) {
		jobs[j]->results = calloc(jobs[j]->count, sizeof(struct fl_log_result));
		if (!jobs[j]->results)
			st = FL_ERR_NOMEM;
		batches[j] = (struct fl_log_batch){jobs[j]->inputs, jobs[j]->count,
						   jobs[j]->results, FL_OK, 0};
	}
	int64_t start = fl_time_mono_us();
	if (st == FL_OK)
		st = fl_log_append(c->config.log, batches, n_jobs, &tree_size);
	if (st == FL_OK && c->config.append_latency)
		fl_histogram_observe(c->config.append_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	for (size_t j = 0; st == FL_OK && j < n_jobs; j++)
		if (batches[j].status == FL_OK)
			for (size_t i = 0; i < jobs[j]->count; i++)
				events += !jobs[j]->results[i].duplicate;
	/* The publisher goes first: the events are durable, and it works on
	 * another core while the answers are written. */
	if (events && c->config.notify)
		c->config.notify(c->config.notify_ctx);
	if (events && c->config.ingest_events)
		fl_counter_add(c->config.ingest_events, events);
	struct fl_log_reader *reader = NULL;
	char *checkpoint =
	    st == FL_OK ? receipt_checkpoint(c->config.log, tree_size, &reader) : NULL;
	/* One wakeup of the HTTP thread for the group, not one per answer. */
	fl_http_resume_hold();
	for (size_t j = 0; j < n_jobs; j++) {
		if (st != FL_OK) {
			respond_status_error(c, jobs[j]->req, st);
			continue;
		}
		answer_events(c, jobs[j], &batches[j], tree_size, reader, checkpoint);
	}
	fl_http_resume_release();
	fl_log_reader_end(reader);
	free(checkpoint);
	free(batches);
}

static void commit_view(struct fl_committer *c, struct job *job)
{
	struct fl_view *current = NULL;
	struct fl_error err;
	uint64_t version = 1;

	fl_error_clear(&err);
	if (fl_view_registry_get(c->config.registry, fl_view_name(job->view), &current) == FL_OK) {
		switch (fl_view_compare(current, job->view, &err)) {
		case FL_VIEW_IDENTICAL:
			c->config.respond_json(job->req, 200, fl_view_to_json(current, true));
			fl_view_unref(current);
			return;
		case FL_VIEW_INCOMPATIBLE:
			c->config.respond_error(job->req, 409, err.code, err.message,
						err.field[0] ? err.field : NULL);
			fl_view_unref(current);
			return;
		case FL_VIEW_COMPATIBLE:
			version = fl_view_version(current) + 1;
			break;
		}
		fl_view_unref(current);
	}
	char *tail = NULL;
	size_t tail_len = 0;
	int64_t now = fl_time_now_us();
	enum fl_status st =
	    fl_event_view_body_tail(job->view, version, job->producer, now, &tail, &tail_len);
	if (st != FL_OK) {
		respond_status_error(c, job->req, st);
		return;
	}
	struct fl_log_input input = {.body_tail = tail, .body_tail_len = tail_len, .time_us = now};
	struct fl_log_result result;
	struct fl_log_batch batch = {&input, 1, &result, FL_OK, 0};
	uint64_t tree_size;
	int64_t start = fl_time_mono_us();
	st = fl_log_append(c->config.log, &batch, 1, &tree_size);
	free(tail);
	if (st == FL_OK && c->config.append_latency)
		fl_histogram_observe(c->config.append_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	if (st == FL_OK && c->config.ingest_events)
		fl_counter_inc(c->config.ingest_events);
	if (st == FL_OK)
		st = fl_view_registry_put(c->config.registry, job->view, version);
	if (st != FL_OK) {
		respond_status_error(c, job->req, st);
		return;
	}
	json_t *body = fl_view_to_json(job->view, true);
	json_object_set_new(body, "seq", json_integer((json_int_t)result.seq));
	c->config.respond_json(job->req, 201, body);
	if (c->config.notify)
		c->config.notify(c->config.notify_ctx);
}

static void *run(void *opaque)
{
	struct fl_committer *c = opaque;

	for (;;) {
		pthread_mutex_lock(&c->lock);
		while (!c->head && !c->stop)
			pthread_cond_wait(&c->wake, &c->lock);
		if (!c->head && c->stop) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		/* Take a group of jobs: events up to MAX_GROUP_EVENTS, or one view. */
		struct job *group = c->head, *last = c->head;
		size_t events = last->kind == JOB_EVENTS ? last->count : 0;
		while (group->kind == JOB_EVENTS && last->next && last->next->kind == JOB_EVENTS &&
		       events + last->next->count <= MAX_GROUP_EVENTS) {
			last = last->next;
			events += last->count;
		}
		c->head = last->next;
		if (!c->head)
			c->tail = NULL;
		last->next = NULL;
		pthread_mutex_unlock(&c->lock);

		if (group->kind == JOB_VIEW) {
			commit_view(c, group);
			job_free(group);
			continue;
		}
		size_t n = 0;
		for (struct job *j = group; j; j = j->next)
			n++;
		struct job **jobs = malloc(n * sizeof(*jobs));
		if (!jobs) {
			for (struct job *j = group; j; j = j->next)
				respond_status_error(c, j->req, FL_ERR_NOMEM);
		} else {
			n = 0;
			for (struct job *j = group; j; j = j->next)
				jobs[n++] = j;
			commit_events(c, jobs, n);
			free(jobs);
		}
		while (group) {
			struct job *next = group->next;
			job_free(group);
			group = next;
		}
	}
	return NULL;
}

static void enqueue(struct fl_committer *c, struct job *job)
{
	pthread_mutex_lock(&c->lock);
	if (c->tail)
		c->tail->next = job;
	else
		c->head = job;
	c->tail = job;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
}

enum fl_status fl_committer_submit_events(struct fl_committer *c, struct fl_http_request *req,
					  struct fl_log_input *inputs, char **tails, size_t count,
					  void *keep, bool receipt)
{
	struct job *job = calloc(1, sizeof(*job));
	if (!job)
		return FL_ERR_NOMEM;
	*job = (struct job){.kind = JOB_EVENTS,
			    .req = req,
			    .inputs = inputs,
			    .tails = tails,
			    .count = count,
			    .keep = keep,
			    .receipt = receipt};
	enqueue(c, job);
	return FL_OK;
}

enum fl_status fl_committer_submit_view(struct fl_committer *c, struct fl_http_request *req,
					struct fl_view *view, const char *producer)
{
	struct job *job = calloc(1, sizeof(*job));
	if (!job)
		return FL_ERR_NOMEM;
	*job =
	    (struct job){.kind = JOB_VIEW, .req = req, .view = view, .producer = strdup(producer)};
	if (!job->producer) {
		free(job);
		return FL_ERR_NOMEM;
	}
	enqueue(c, job);
	return FL_OK;
}

enum fl_status fl_committer_create(const struct fl_committer_config *config,
				   struct fl_committer **ret_committer)
{
	struct fl_committer *c = calloc(1, sizeof(*c));
	if (!c)
		return FL_ERR_NOMEM;
	c->config = *config;
	if (!c->config.respond)
		c->config.respond = fl_http_respond;
	if (!c->config.respond_json)
		c->config.respond_json = fl_http_respond_json;
	if (!c->config.respond_error)
		c->config.respond_error = fl_http_respond_error;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->wake, NULL);
	if (pthread_create(&c->thread, NULL, run, c) != 0) {
		pthread_cond_destroy(&c->wake);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return FL_ERR_NOMEM;
	}
	*ret_committer = c;
	return FL_OK;
}

void fl_committer_destroy(struct fl_committer *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

enum fl_status fl_committer_load_views(struct fl_log *log, struct fl_view_registry *registry)
{
	static const char view_kind[] = "\"kind\":\"view\"";
	struct fl_log_reader *reader;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return st;
	uint64_t size = fl_log_reader_size(reader);
	for (uint64_t seq = 1; st == FL_OK && seq <= size; seq++) {
		struct fl_log_entry entry;
		struct fl_stored_event stored;
		st = fl_log_reader_get(reader, seq, &entry);
		if (st != FL_OK)
			break;
		size_t scan = entry.body_len < 64 ? entry.body_len : 64;
		if (!memmem(entry.body, scan, view_kind, sizeof(view_kind) - 1))
			continue;
		st = fl_stored_event_parse(entry.body, entry.body_len, &stored);
		if (st != FL_OK)
			break;
		if (stored.kind == FL_BODY_VIEW)
			st = fl_view_registry_put(registry, stored.view, stored.version);
		fl_stored_event_finish(&stored);
	}
	fl_log_reader_end(reader);
	return st;
}
