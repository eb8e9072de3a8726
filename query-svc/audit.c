/*
 * The read audit (see audit.h).
 */
#include "audit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/jsonw.h"
#include "fledger/sha256.h"
#include "fledger/util.h"

#define MAX_GROUP 512

struct pending_read {
	struct fl_http_request *req;
	struct fl_jw record; /* the record's body tail, finished on the audit thread */
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
	fl_jw_free(&p->record);
	free(p->content_type);
	free(p->body);
	free(p);
}

/* Whether text is valid UTF-8 as jansson checks it (json_string accepts it). */
static bool valid_utf8(const unsigned char *text)
{
	while (*text) {
		unsigned char c = *text;
		size_t size;
		uint32_t value;
		if (c < 0x80) {
			text++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			size = 2;
			value = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			size = 3;
			value = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			size = 4;
			value = c & 0x07;
		} else {
			return false;
		}
		for (size_t i = 1; i < size; i++) {
			if ((text[i] & 0xc0) != 0x80)
				return false;
			value = (value << 6) | (text[i] & 0x3f);
		}
		if (value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff) ||
		    (size == 3 && value < 0x800) || (size == 4 && value < 0x10000))
			return false;
		text += size;
	}
	return true;
}

/* One string of a record: as it is when valid UTF-8, else bytes >= 0x80 as '?'. */
static void write_lenient(struct fl_jw *w, const char *text)
{
	if (valid_utf8((const unsigned char *)text)) {
		fl_jw_str(w, text);
		return;
	}
	size_t len = strlen(text);
	char *copy = malloc(len + 1);
	if (!copy) {
		w->text.failed = true;
		return;
	}
	for (size_t i = 0; i <= len; i++)
		copy[i] = (unsigned char)text[i] >= 0x80 ? '?' : text[i];
	fl_jw_strn(w, copy, len);
	free(copy);
}

/* A list member of a record: the JSON array when given, else the C strings. */
static void write_list(struct fl_jw *w, const char *key, const json_t *array,
		       const struct fl_audit_names *names)
{
	fl_jw_key(w, key);
	fl_jw_open(w, '[');
	if (array) {
		for (size_t i = 0; i < json_array_size(array); i++) {
			const json_t *item = json_array_get(array, i);
			fl_jw_sep(w);
			if (json_is_string(item)) {
				fl_jw_strn(w, json_string_value(item), json_string_length(item));
				continue;
			}
			char *text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);
			if (text)
				fl_jw_raw(w, text, strlen(text));
			else
				w->text.failed = true;
			free(text);
		}
	} else {
		for (size_t i = 0; i < names->count; i++) {
			fl_jw_sep(w);
			write_lenient(w, names->names[i]);
		}
	}
	fl_jw_close(w, ']');
}

/*
 * The record's body tail up to "applied_seq": the members after "seq"
 * (CONTRACT §7) but for the answer's digest and status, which
 * finish_record writes (on the audit thread for a submitted read, which
 * so hashes the answer off the thread that computed it). Written as
 * json_dumps writes the same object, without braces.
 */
static void start_record(struct fl_jw *w, const struct fl_audit_record *rec, int64_t ts_us)
{
	fl_jw_key(w, "kind");
	fl_jw_str(w, "read");
	fl_jw_key(w, "read_id");
	fl_jw_str(w, rec->read_id);
	fl_jw_key(w, "ts");
	fl_jw_time(w, ts_us);
	fl_jw_key(w, "principal");
	if (rec->principal)
		fl_jw_str(w, rec->principal);
	else
		fl_jw_raw(w, "null", 4);
	fl_jw_key(w, "route");
	fl_jw_str(w, rec->route);
	fl_jw_key(w, "view");
	if (rec->view)
		write_lenient(w, rec->view);
	else
		fl_jw_raw(w, "null", 4);
	if (rec->request_sha256) {
		fl_jw_key(w, "rows");
		fl_jw_i64(w, (int64_t)rec->rows);
		fl_jw_key(w, "request_sha256");
		fl_jw_str(w, rec->request_sha256);
	} else {
		write_list(w, "entity_ids", rec->entity_ids, &rec->entity_id_names);
	}
	write_list(w, "features", rec->features, &rec->feature_names);
	write_list(w, "windows", rec->windows, &rec->window_names);
	fl_jw_key(w, "served_seqs");
	fl_jw_open(w, '[');
	for (size_t i = 0; i < rec->n_served; i++) {
		fl_jw_sep(w);
		fl_jw_i64(w, (int64_t)rec->served_seqs[i]);
	}
	fl_jw_close(w, ']');
	/* The log prefix that determines every value, windows included (0: the
	 * read computed nothing, e.g. a denial). */
	fl_jw_key(w, "applied_seq");
	fl_jw_i64(w, (int64_t)rec->applied_seq);
}

static void finish_record(struct fl_jw *w, unsigned status, const uint8_t digest[32])
{
	char digest_hex[67];
	digest_hex[0] = '"';
	fl_hex_encode(digest, 32, digest_hex + 1);
	digest_hex[65] = '"';
	fl_jw_key(w, "answer_sha256");
	fl_jw_raw(w, digest_hex, 66); /* hex needs no escapes */
	fl_jw_key(w, "status");
	fl_jw_i64(w, status);
}

static void answer_unavailable(struct fl_audit *audit, struct fl_http_request *req)
{
	audit->config.add_header(req, "Retry-After", "1");
	audit->config.respond_error(req, 503, "audit_unavailable",
				    "the read could not be recorded in the audit log, so "
				    "it is not answered",
				    NULL);
}

/*
 * Finishes the records of a group (the answers' digests), appends them in
 * one transaction, then answers each read: with its answer once the
 * transaction is durable, else with a 503.
 */
static void commit_group(struct fl_audit *audit, struct pending_read *group, size_t n)
{
	struct fl_log_input *inputs = calloc(n, sizeof(*inputs));
	struct fl_log_result *results = calloc(n, sizeof(*results));
	enum fl_status st = inputs && results ? FL_OK : FL_ERR_NOMEM;
	size_t count = 0;

	for (struct pending_read *p = group; st == FL_OK && p; p = p->next) {
		uint8_t digest[32];
		if (!fl_sha256(p->body, p->len, digest))
			p->record.text.failed = true;
		finish_record(&p->record, p->status, digest);
		if (p->record.text.failed)
			continue; /* answered 503 below */
		inputs[count++] = (struct fl_log_input){.body_tail = p->record.text.data,
							.body_tail_len = p->record.text.len,
							.time_us = p->ts_us};
	}
	struct fl_log_batch batch = {inputs, count, results, FL_OK, 0};
	int64_t start = fl_time_mono_us();
	if (st == FL_OK && count > 0)
		st = fl_log_append(audit->config.log, &batch, 1, NULL);
	if (st == FL_OK)
		st = batch.status;
	if (st == FL_OK && count > 0 && audit->config.commit_latency)
		fl_histogram_observe(audit->config.commit_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	/* One wakeup of the HTTP thread for the group, not one per answer. */
	fl_http_resume_hold();
	for (struct pending_read *p = group; p; p = p->next) {
		if (st == FL_OK && !p->record.text.failed)
			audit->config.respond(p->req, p->status, p->content_type, p->body, p->len);
		else
			answer_unavailable(audit, p->req);
	}
	fl_http_resume_release();
	free(inputs);
	free(results);
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
	fl_jw_init(&p->record);
	/* Room for the whole record, digest and status included, at once. */
	fl_text_reserve(&p->record.text, 512);
	start_record(&p->record, rec, p->ts_us);
	if (!p->content_type || p->record.text.failed) {
		free(p->content_type);
		fl_jw_free(&p->record);
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
	struct fl_jw record;
	fl_jw_init(&record);
	start_record(&record, rec, ts_us);
	finish_record(&record, status, answer_sha256);
	if (record.text.failed) {
		fl_jw_free(&record);
		return FL_ERR_NOMEM;
	}
	struct fl_log_input input = {
	    .body_tail = record.text.data, .body_tail_len = record.text.len, .time_us = ts_us};
	struct fl_log_result result;
	struct fl_log_batch batch = {&input, 1, &result, FL_OK, 0};
	int64_t start = fl_time_mono_us();
	enum fl_status st = fl_log_append(audit->config.log, &batch, 1, NULL);
	if (st == FL_OK && batch.status != FL_OK)
		st = batch.status;
	if (st == FL_OK && audit->config.commit_latency)
		fl_histogram_observe(audit->config.commit_latency,
				     (double)(fl_time_mono_us() - start) / 1e6);
	fl_jw_free(&record);
	return st;
}
