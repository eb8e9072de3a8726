/*
 * The read audit (see audit.h).
 */
#include "audit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/sha256.h"
#include "fledger/util.h"

#define MAX_GROUP 512

struct pending_read {
	struct fl_http_request *req;
	char *tail; /* the record's body tail */
	size_t tail_len;
	int64_t ts_us;
	unsigned status;
	char *content_type;
	char *body;
	size_t len;
	struct pending_read *next;
};

struct fl_audit {
	struct fl_audit_config config;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct pending_read *head, *tail;
	bool stop;
};

static void pending_free(struct pending_read *p)
{
	free(p->tail);
	free(p->content_type);
	free(p->body);
	free(p);
}

/* Appends a group of records in one transaction, then answers each read. */
static void commit_group(struct fl_audit *audit, struct pending_read *group, size_t n)
{
	struct fl_log_input *inputs = calloc(n, sizeof(*inputs));
	struct fl_log_result *results = calloc(n, sizeof(*results));
	struct fl_log_batch *batches = calloc(n, sizeof(*batches));
	enum fl_status st = inputs && results && batches ? FL_OK : FL_ERR_NOMEM;
	size_t i = 0;

	for (struct pending_read *p = group; st == FL_OK && p; p = p->next, i++) {
		inputs[i] = (struct fl_log_input){
		    .body_tail = p->tail, .body_tail_len = p->tail_len, .time_us = p->ts_us};
		batches[i] = (struct fl_log_batch){&inputs[i], 1, &results[i], FL_OK, 0};
	}
	int64_t start = fl_time_mono_us();
	if (st == FL_OK)
		st = fl_log_append(audit->config.log, batches, n, NULL);
	if (st == FL_OK && audit->config.commit_latency)
		fl_histogram_observe(audit->config.commit_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	for (struct pending_read *p = group; p; p = p->next) {
		if (st == FL_OK) {
			audit->config.respond(p->req, p->status, p->content_type, p->body, p->len);
		} else {
			audit->config.add_header(p->req, "Retry-After", "1");
			audit->config.respond_error(
			    p->req, 503, "audit_unavailable",
			    "the read could not be recorded in the audit log, so "
			    "it is not answered",
			    NULL);
		}
	}
	free(inputs);
	free(results);
	free(batches);
}

static void *run(void *opaque)
{
	struct fl_audit *audit = opaque;
	for (;;) {
		pthread_mutex_lock(&audit->lock);
		while (!audit->head && !audit->stop)
			pthread_cond_wait(&audit->wake, &audit->lock);
		if (!audit->head) {
			pthread_mutex_unlock(&audit->lock);
			break;
		}
		struct pending_read *group = audit->head, *last = group;
		size_t n = 1;
		while (last->next && n < MAX_GROUP) {
			last = last->next;
			n++;
		}
		audit->head = last->next;
		if (!audit->head)
			audit->tail = NULL;
		last->next = NULL;
		pthread_mutex_unlock(&audit->lock);

		commit_group(audit, group, n);
		while (group) {
			struct pending_read *next = group->next;
			pending_free(group);
			group = next;
		}
	}
	return NULL;
}

enum fl_status fl_audit_create(const struct fl_audit_config *config, struct fl_audit **ret_audit)
{
	struct fl_audit *audit = calloc(1, sizeof(*audit));
	if (!audit)
		return FL_ERR_NOMEM;
	audit->config = *config;
	if (!audit->config.respond)
		audit->config.respond = fl_http_respond;
	if (!audit->config.add_header)
		audit->config.add_header = fl_http_add_header;
	if (!audit->config.respond_error)
		audit->config.respond_error = fl_http_respond_error;
	pthread_mutex_init(&audit->lock, NULL);
	pthread_cond_init(&audit->wake, NULL);
	if (pthread_create(&audit->thread, NULL, run, audit) != 0) {
		pthread_cond_destroy(&audit->wake);
		pthread_mutex_destroy(&audit->lock);
		free(audit);
		return FL_ERR_NOMEM;
	}
	*ret_audit = audit;
	return FL_OK;
}

void fl_audit_destroy(struct fl_audit *audit)
{
	if (!audit)
		return;
	pthread_mutex_lock(&audit->lock);
	audit->stop = true;
	pthread_cond_signal(&audit->wake);
	pthread_mutex_unlock(&audit->lock);
	pthread_join(audit->thread, NULL);
	pthread_cond_destroy(&audit->wake);
	pthread_mutex_destroy(&audit->lock);
	free(audit);
}

static json_t *copy_or_empty(const json_t *array)
{
	return array ? json_deep_copy(array) : json_array();
}

/* The record's body tail: the members after "seq" (CONTRACT §7). */
static char *record_tail(const struct fl_audit_record *rec, int64_t ts_us, unsigned status,
			 const uint8_t digest[32], size_t *ret_len)
{
	char digest_hex[65], ts[FL_TIME_TEXT_LEN];

	fl_hex_encode(digest, 32, digest_hex);
	fl_time_format(ts_us, ts);
	json_t *seqs = json_array();
	for (size_t i = 0; i < rec->n_served; i++)
		json_array_append_new(seqs, json_integer((json_int_t)rec->served_seqs[i]));
	json_t *obj = json_object();
	json_object_set_new(obj, "kind", json_string("read"));
	json_object_set_new(obj, "read_id", json_string(rec->read_id));
	json_object_set_new(obj, "ts", json_string(ts));
	json_object_set_new(obj, "principal",
			    rec->principal ? json_string(rec->principal) : json_null());
	json_object_set_new(obj, "route", json_string(rec->route));
	json_object_set_new(obj, "view", rec->view ? json_string(rec->view) : json_null());
	if (rec->request_sha256) {
		json_object_set_new(obj, "rows", json_integer((json_int_t)rec->rows));
		json_object_set_new(obj, "request_sha256", json_string(rec->request_sha256));
	} else {
		json_object_set_new(obj, "entity_ids", copy_or_empty(rec->entity_ids));
	}
	json_object_set_new(obj, "features", copy_or_empty(rec->features));
	json_object_set_new(obj, "windows", copy_or_empty(rec->windows));
	json_object_set_new(obj, "served_seqs", seqs);
	/* The log prefix that determines every value, windows included (0: the
	 * read computed nothing, e.g. a denial). */
	json_object_set_new(obj, "applied_seq", json_integer((json_int_t)rec->applied_seq));
	json_object_set_new(obj, "answer_sha256", json_string(digest_hex));
	json_object_set_new(obj, "status", json_integer(status));
	char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	if (!text)
		return NULL;
	/* strip the braces: the log writes {"seq":N, + tail + } */
	size_t n = strlen(text);
	memmove(text, text + 1, n - 2);
	text[n - 2] = '\0';
	*ret_len = n - 2;
	return text;
}

enum fl_status fl_audit_submit(struct fl_audit *audit, struct fl_http_request *req,
			       const struct fl_audit_record *rec, unsigned status,
			       const char *content_type, char *body, size_t len)
{
	struct pending_read *p = calloc(1, sizeof(*p));
	if (!p)
		return FL_ERR_NOMEM;
	p->req = req;
	p->ts_us = fl_time_now_us();
	p->status = status;
	p->content_type = strdup(content_type);
	uint8_t digest[32];
	p->tail = fl_sha256(body, len, digest)
		      ? record_tail(rec, p->ts_us, status, digest, &p->tail_len)
		      : NULL;
	if (!p->content_type || !p->tail) {
		free(p->content_type);
		free(p->tail);
		free(p);
		return FL_ERR_NOMEM;
	}
	p->body = body;
	p->len = len;
	pthread_mutex_lock(&audit->lock);
	if (audit->tail)
		audit->tail->next = p;
	else
		audit->head = p;
	audit->tail = p;
	pthread_cond_signal(&audit->wake);
	pthread_mutex_unlock(&audit->lock);
	return FL_OK;
}

enum fl_status fl_audit_submit_error(struct fl_audit *audit, struct fl_http_request *req,
				     const struct fl_audit_record *rec, unsigned status,
				     const char *code, const char *message, const char *field)
{
	json_t *error = json_pack("{s:s,s:s}", "code", code, "message", message);
	if (field)
		json_object_set_new(error, "field", json_string(field));
	json_t *obj = json_pack("{s:o}", "error", error);
	char *body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	if (!body)
		return FL_ERR_NOMEM;
	enum fl_status st =
	    fl_audit_submit(audit, req, rec, status, "application/json", body, strlen(body));
	if (st != FL_OK)
		free(body);
	return st;
}

enum fl_status fl_audit_record_now(struct fl_audit *audit, const struct fl_audit_record *rec,
				   unsigned status, const uint8_t answer_sha256[32])
{
	int64_t ts_us = fl_time_now_us();
	size_t tail_len;
	char *tail = record_tail(rec, ts_us, status, answer_sha256, &tail_len);
	if (!tail)
		return FL_ERR_NOMEM;
	struct fl_log_input input = {
	    .body_tail = tail, .body_tail_len = tail_len, .time_us = ts_us};
	struct fl_log_result result;
	struct fl_log_batch batch = {&input, 1, &result, FL_OK, 0};
	int64_t start = fl_time_mono_us();
	enum fl_status st = fl_log_append(audit->config.log, &batch, 1, NULL);
	if (st == FL_OK && batch.status != FL_OK)
		st = batch.status;
	if (st == FL_OK && audit->config.commit_latency)
		fl_histogram_observe(audit->config.commit_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	free(tail);
	return st;
}
