/*
 * Training data: point-in-time joins (CONTRACT §6, POST /v1/features:historical).
 *
 * The request is NDJSON: a head line naming the view, features, windows and
 * point_in_time, then one row {"entity_id", "ts"} a line, any number of
 * them. Each answer line is an online read of its row at as_of = ts,
 * computed by the code of every online read (fl_projection_query_borrowed
 * is fl_projection_query with the answer in buffers the read keeps from
 * row to row); "as_known" also sets known_at_us = ts, so a row sees only
 * events already ingested at ts.
 *
 * Memory stays flat whatever the number of rows:
 *
 *   1. The HTTP layer spools the body to an unlinked temporary file as it
 *      arrives (the route opts in: fl_query_historical_spools), up to
 *      --max-historical-body. The HTTP thread reads only the head line:
 *      authentication, role, view and feature ACLs, then hands the request
 *      to a thread of its own (at most MAX_RUNNING at once; more get 503).
 *   2. That thread checks every row (a bad one is a 400 naming its line,
 *      before any answer: the whole body is at hand, so every request is
 *      "small enough to be checked first"), hashing the body as it goes,
 *   3. and in the same pass computes the answer into a second unlinked
 *      temporary file, a chunk of rows at a time (computed in the read
 *      models' key order, written in input order: see struct chunk), from
 *      a snapshot of the read models renewed every second (a long export
 *      must not hold up their growth), each row bounded like one online
 *      read (--max-read-cost), hashing it; a bad row throws that file away.
 *      Nothing of it is sent before the last row is checked.
 *   4. It records the read (CONTRACT §7: rows, request_sha256,
 *      answer_sha256, applied_seq) and waits until the record is durable,
 *      so the record names exactly the bytes about to be sent.
 *   5. It answers with a stream read from the answer file as the client
 *      takes it (Content-Length known, the read id in X-Read-Id). A slow
 *      client holds a file descriptor, no memory and no snapshot; a client
 *      that goes away frees it.
 *
 * The error line form of §6 ({"error": …, "line": N} ending a stream) is
 * therefore never needed: no row is answered before every row is checked.
 */
#include "historical.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "audit.h"
#include "fledger/event.h"
#include "fledger/jsonw.h"
#include "fledger/slog.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "fledger/view.h"

#define ROUTE "/v1/features:historical"
#define LINE_MAX_BYTES (64u * 1024u) /* a head or row line at most */
#define READ_BUF_BYTES (256u * 1024u)
#define WRITE_BUF_BYTES (256u * 1024u)
#define MAX_RUNNING 2	    /* exports computed at once; more get 503 */
#define SNAPSHOT_US 1000000 /* an export renews its snapshot this often */

static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t running_changed = PTHREAD_COND_INITIALIZER;
static unsigned running;
static bool stopping;

struct export_job {
	struct fl_query *query;
	struct fl_http_request *req;
	const struct fl_principal *principal;
	char read_id[20];
	struct fl_view *view; /* a reference */
	const struct fl_feature **features;
	size_t n_features;
	const struct fl_window **windows;
	size_t n_windows;
	bool as_known;
	bool csv;
	int body_fd; /* the request's (borrowed) */
	uint64_t body_len;
	uint64_t rows_from; /* offset of the first row line */
};

/* Lines of a file read through a buffer; a line is NUL-terminated in place. */
struct line_reader {
	int fd;
	uint64_t offset, end; /* file offset of buf[0], and the file's length */
	char *buf;
	size_t start, len; /* the unread bytes: buf[start, len) */
	uint64_t line_no;
	EVP_MD_CTX *md; /* hashes every byte read, when set */
};

/*
 * The next line (without its '\n') in *ret_line, its length in *ret_len: 1,
 * 0 at the end, -1 for a line longer than LINE_MAX_BYTES or a read error.
 */
static int next_line(struct line_reader *r, char **ret_line, size_t *ret_len)
{
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->len - r->start);
		uint64_t file_pos = r->offset + r->len;
		if (nl || (file_pos >= r->end && r->start < r->len)) {
			char *line = r->buf + r->start;
			size_t n = nl ? (size_t)(nl - line) : r->len - r->start;
			if (n > LINE_MAX_BYTES)
				return -1;
			line[n] = '\0'; /* the buffer has a spare byte for the last line */
			r->start += n + (nl ? 1 : 0);
			r->line_no++;
			if (n && line[n - 1] == '\r')
				line[--n] = '\0';
			*ret_line = line;
			*ret_len = n;
			return 1;
		}
		if (file_pos >= r->end)
			return 0;
		if (r->len - r->start > LINE_MAX_BYTES)
			return -1;
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		r->offset += r->start;
		r->len -= r->start;
		r->start = 0;
		ssize_t got = pread(r->fd, r->buf + r->len, READ_BUF_BYTES - r->len,
				    (off_t)(r->offset + r->len));
		if (got <= 0)
			return -1;
		if (r->md && EVP_DigestUpdate(r->md, r->buf + r->len, (size_t)got) != 1)
			return -1;
		r->len += (size_t)got;
	}
}

static bool reader_init(struct line_reader *r, int fd, uint64_t from, uint64_t end, bool hash)
{
	*r = (struct line_reader){.fd = fd, .offset = from, .end = end};
	r->buf = malloc(READ_BUF_BYTES + 1);
	if (hash && r->buf) {
		r->md = EVP_MD_CTX_new();
		if (!r->md || EVP_DigestInit_ex(r->md, EVP_sha256(), NULL) != 1) {
			EVP_MD_CTX_free(r->md);
			r->md = NULL;
			free(r->buf);
			r->buf = NULL;
		}
	}
	return r->buf != NULL;
}

static void reader_finish(struct line_reader *r)
{
	free(r->buf);
	EVP_MD_CTX_free(r->md);
}

bool fl_query_historical_spools(void *ctx, const char *method, const char *path)
{
	(void)ctx;
	return strcmp(method, "POST") == 0 && strcmp(path, ROUTE) == 0;
}

void fl_query_historical_stop(void)
{
	pthread_mutex_lock(&running_lock);
	stopping = true;
	while (running > 0)
		pthread_cond_wait(&running_changed, &running_lock);
	pthread_mutex_unlock(&running_lock);
}

static void job_free(struct export_job *job)
{
	if (!job)
		return;
	fl_view_unref(job->view);
	free(job->features);
	free(job->windows);
	free(job);
}

/* A JSON array of the names asked for, for the audit record. */
static json_t *names_of(const struct export_job *job, bool windows)
{
	json_t *list = json_array();
	size_t n = windows ? job->n_windows : job->n_features;
	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    list, json_string(windows ? job->windows[i]->name : job->features[i]->name));
	return list;
}

static bool audited(const struct export_job *job, unsigned status)
{
	return job->query->audit &&
	       (status == 401 || status == 403 || !job->view || fl_view_audit_reads(job->view));
}

/*
 * Answers an error (CONTRACT §9), recorded in the read audit first when the
 * read is audited; line > 0 adds "line" to the body. Frees the job.
 */
static enum fl_http_disposition answer_error(struct export_job *job, unsigned status,
					     const char *code, const char *message,
					     const char *field, uint64_t line)
{
	json_t *error = json_pack("{s:s,s:s}", "code", code, "message", message);
	if (field)
		json_object_set_new(error, "field", json_string(field));
	json_t *obj = json_pack("{s:o}", "error", error);
	if (line)
		json_object_set_new(obj, "line", json_integer((json_int_t)line));
	char *body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	enum fl_http_disposition disposition = FL_HTTP_DONE;
	if (status == 401)
		fl_http_add_header(job->req, "WWW-Authenticate", "Bearer");
	if (status == 503)
		fl_http_add_header(job->req, "Retry-After", "1");
	if (body && audited(job, status)) {
		json_t *features = names_of(job, false), *windows = names_of(job, true);
		struct fl_audit_record rec = {
		    .read_id = job->read_id,
		    .principal = job->principal ? fl_principal_name(job->principal) : NULL,
		    .route = ROUTE,
		    .view = job->view ? fl_view_name(job->view) : NULL,
		    .features = features,
		    .windows = windows,
		};
		if (fl_audit_submit(job->query->audit, job->req, &rec, status, "application/json",
				    body, strlen(body)) == FL_OK) {
			body = NULL; /* the audit thread owns and sends it */
			disposition = FL_HTTP_DEFERRED;
		} else {
			fl_http_respond_error(job->req, 503, "audit_unavailable",
					      "the read could not be recorded in the audit log, so "
					      "it is not answered",
					      NULL);
		}
		json_decref(features);
		json_decref(windows);
	} else if (body) {
		fl_http_respond(job->req, status, "application/json", body, strlen(body));
	} else {
		fl_http_respond_error(job->req, 500, "internal_error", "out of memory", NULL);
	}
	free(body);
	job_free(job);
	return disposition;
}

/* ---- the head line ------------------------------------------------------ */

/* Adds the features (or windows) named in list, or every readable one when absent. */
static bool take_names(struct export_job *job, const json_t *list, bool windows, char *message,
		       size_t message_size, unsigned *ret_status, const char **ret_code)
{
	const struct fl_principal *p = job->principal;
	size_t total = windows ? fl_view_window_count(job->view) : fl_view_feature_count(job->view);
	const void **out = calloc(total ? total : 1, sizeof(void *));
	size_t n = 0;
	if (!out) {
		*ret_status = 500;
		*ret_code = "internal_error";
		snprintf(message, message_size, "out of memory");
		return false;
	}
	if (windows)
		job->windows = (const struct fl_window **)out;
	else
		job->features = (const struct fl_feature **)out;
	if (list && !json_is_array(list)) {
		*ret_status = 400;
		*ret_code = "invalid_type";
		snprintf(message, message_size, "line 1: %s is a list of names",
			 windows ? "windows" : "features");
		return false;
	}
	for (size_t i = 0; i < (list ? json_array_size(list) : total); i++) {
		const struct fl_feature *f = NULL;
		const struct fl_window *w = NULL;
		if (list) {
			const char *name = json_string_value(json_array_get(list, i));
			if (!name) {
				*ret_status = 400;
				*ret_code = "invalid_type";
				snprintf(message, message_size, "line 1: %s[%zu] is not a string",
					 windows ? "windows" : "features", i);
				return false;
			}
			if (windows)
				w = fl_view_window(job->view, name);
			else
				f = fl_view_feature(job->view, name);
			if (!w && !f) {
				*ret_status = 400;
				*ret_code = windows ? "unknown_window" : "unknown_feature";
				snprintf(
				    message, message_size, "view %s has no %s called \"%.64s\"",
				    fl_view_name(job->view), windows ? "window" : "feature", name);
				return false;
			}
		} else if (windows) {
			w = fl_view_window_at(job->view, i);
		} else {
			f = fl_view_feature_at(job->view, i);
		}
		const struct fl_feature *guarded =
		    w ? fl_view_feature_at(job->view, w->of_index) : f;
		bool readable = !guarded->read_restricted ||
				fl_acl_allows(p, (const char *const *)guarded->read_acl.entries,
					      guarded->read_acl.count);
		if (!readable && !list)
			continue; /* by default, what the caller may read */
		if (!readable) {
			*ret_status = 403;
			*ret_code = "forbidden";
			snprintf(message, message_size, "%s may not read %s %s",
				 fl_principal_name(p), w ? "window" : "feature",
				 w ? w->name : f->name);
			return false;
		}
		const void *item = w ? (const void *)w : (const void *)f;
		size_t k = 0;
		while (k < n && out[k] != item)
			k++;
		if (k == n)
			out[n++] = item;
	}
	if (windows)
		job->n_windows = n;
	else
		job->n_features = n;
	return true;
}

/* Reads and checks the head line. On failure, fills the error to answer. */
static bool parse_head(struct export_job *job, char *message, size_t message_size,
		       unsigned *ret_status, const char **ret_code, const char **ret_field)
{
	struct line_reader r;
	char *line;
	size_t len;
	*ret_status = 400;
	*ret_field = "line 1";
	if (!reader_init(&r, job->body_fd, 0, job->body_len, false)) {
		*ret_status = 500;
		*ret_code = "internal_error";
		snprintf(message, message_size, "out of memory");
		return false;
	}
	int got = next_line(&r, &line, &len);
	job->rows_from = r.offset + r.start;
	json_error_t jerr;
	json_t *head = got == 1 ? json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
	reader_finish(&r);
	if (!head || !json_is_object(head)) {
		*ret_code = "invalid_json";
		snprintf(message, message_size,
			 got == 1 ? "line 1 is not a JSON object: the head "
				    "{\"view\", \"features\", \"windows\", \"point_in_time\"}"
				  : "the body has no head line");
		json_decref(head);
		return false;
	}
	const char *view_name = json_string_value(json_object_get(head, "view"));
	const char *pit = json_string_value(json_object_get(head, "point_in_time"));
	const json_t *pit_value = json_object_get(head, "point_in_time");
	const char *key, *unknown = NULL;
	json_t *member;
	json_object_foreach(head, key, member)
	{
		if (!unknown && strcmp(key, "view") && strcmp(key, "features") &&
		    strcmp(key, "windows") && strcmp(key, "point_in_time"))
			unknown = key;
	}
	bool ok = false;
	*ret_code = "invalid_field";
	if (unknown) {
		/* a head asking for what the route does not do (proof, as_of)
		 * is refused, not quietly answered without it */
		*ret_code = "unknown_field";
		*ret_field = "line 1";
		snprintf(message, message_size,
			 "line 1: unknown member \"%.64s\" (the head holds view, features, "
			 "windows and point_in_time)",
			 unknown);
	} else if (!view_name) {
		*ret_field = "view";
		snprintf(message, message_size, "line 1: view (a string) is required");
	} else if (pit_value && (!pit || (strcmp(pit, "event_time") && strcmp(pit, "as_known")))) {
		*ret_field = "point_in_time";
		snprintf(message, message_size,
			 "line 1: point_in_time is \"event_time\" (the default) or \"as_known\"");
	} else if (strlen(view_name) > FL_NAME_MAX_LEN ||
		   fl_view_registry_get(fl_projection_views(job->query->projection), view_name,
					&job->view) != FL_OK) {
		*ret_status = 404;
		*ret_code = "view_not_found";
		*ret_field = "view";
		snprintf(message, message_size, "no view is called \"%.64s\"", view_name);
	} else if (!fl_acl_allows(job->principal,
				  (const char *const *)fl_view_read_acl(job->view)->entries,
				  fl_view_read_acl(job->view)->count)) {
		*ret_status = 403;
		*ret_code = "forbidden";
		*ret_field = "view";
		snprintf(message, message_size, "%s may not read view %s",
			 fl_principal_name(job->principal), view_name);
	} else {
		job->as_known = pit && strcmp(pit, "as_known") == 0;
		*ret_field = NULL;
		ok = take_names(job, json_object_get(head, "features"), false, message,
				message_size, ret_status, ret_code) &&
		     take_names(job, json_object_get(head, "windows"), true, message, message_size,
				ret_status, ret_code);
		if (!ok && *ret_status == 400)
			*ret_field = "line 1";
	}
	json_decref(head);
	return ok;
}

/* ---- rows ---------------------------------------------------------------- */

struct row {
	char entity_id[FL_ENTITY_ID_MAX_LEN + 1];
	int64_t ts_us;
	char ts_text[64];
};

static const char *skip_blank(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/*
 * A string of printable ASCII without escapes at *p (its opening quote):
 * its text in *ret, *ret_len; *p past the closing quote. False for anything
 * else, which the full parser then reads.
 */
static bool plain_string(const char **p, const char *end, const char **ret, size_t *ret_len)
{
	const char *s = *p;
	if (s == end || *s != '"')
		return false;
	const char *start = ++s;
	while (s < end && *s != '"') {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c > 0x7e || c == '\\')
			return false;
		s++;
	}
	if (s == end)
		return false;
	*ret = start;
	*ret_len = (size_t)(s - start);
	*p = s + 1;
	return true;
}

/*
 * The common row, {"entity_id": "<printable ASCII>" or a plain integer,
 * "ts": "<RFC 3339>"} in either order with any JSON whitespace, read
 * without building a tree. True only when the row is valid and reads as
 * parse_row reads it; false for anything else (escapes, other bytes, other
 * members, duplicates, a bad value...), which parse_row then reads, so every
 * error keeps its one wording.
 */
static bool fast_row(const char *line, size_t len, struct row *row)
{
	const char *p = line, *end = line + len, *id = NULL, *ts = NULL;
	size_t id_len = 0, ts_len = 0;
	p = skip_blank(p, end);
	if (p == end || *p++ != '{')
		return false;
	for (int member = 0; member < 2; member++) {
		const char *key;
		size_t key_len;
		p = skip_blank(p, end);
		if (member == 1) {
			if (p == end || *p++ != ',')
				return false;
			p = skip_blank(p, end);
		}
		if (!plain_string(&p, end, &key, &key_len))
			return false;
		p = skip_blank(p, end);
		if (p == end || *p++ != ':')
			return false;
		p = skip_blank(p, end);
		if (key_len == 9 && memcmp(key, "entity_id", 9) == 0 && !id) {
			if (p < end && *p == '"') {
				if (!plain_string(&p, end, &id, &id_len) ||
				    fl_entity_id_check_read(id, id_len) != FL_ENTITY_ID_OK)
					return false;
			} else { /* an integer: -?[1-9][0-9]* of at most 18 digits, or 0 */
				id = p;
				if (p < end && *p == '-')
					p++;
				const char *digits = p;
				while (p < end && *p >= '0' && *p <= '9')
					p++;
				size_t n = (size_t)(p - digits);
				if (n == 0 || n > 18 || (*digits == '0' && (n > 1 || digits != id)))
					return false;
				id_len = (size_t)(p - id);
			}
		} else if (key_len == 2 && memcmp(key, "ts", 2) == 0 && !ts) {
			if (!plain_string(&p, end, &ts, &ts_len) || ts_len >= sizeof(row->ts_text))
				return false;
		} else {
			return false;
		}
	}
	p = skip_blank(p, end);
	if (p == end || *p++ != '}' || skip_blank(p, end) != end)
		return false;
	char ts_copy[sizeof(row->ts_text)];
	memcpy(ts_copy, ts, ts_len);
	ts_copy[ts_len] = '\0';
	if (fl_time_parse(ts_copy, &row->ts_us) != FL_OK || row->ts_us == 0)
		return false;
	memcpy(row->entity_id, id, id_len);
	row->entity_id[id_len] = '\0';
	fl_time_format(row->ts_us, row->ts_text);
	return true;
}

/* Parses one row line; false with message naming what is wrong. */
static bool parse_row(const char *line, size_t len, struct row *row, char *message,
		      size_t message_size)
{
	if (fast_row(line, len, row))
		return true;
	json_error_t jerr;
	json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	bool ok = false;
	const json_t *id = json_object_get(obj, "entity_id"), *ts = json_object_get(obj, "ts");
	if (!json_is_object(obj)) {
		snprintf(message, message_size,
			 "not a JSON object {\"entity_id\": \"…\", \"ts\": \"<RFC 3339>\"}");
	} else if (json_is_integer(id)) {
		snprintf(row->entity_id, sizeof(row->entity_id), "%lld",
			 (long long)json_integer_value(id));
		ok = true;
	} else if (!json_is_string(id)) {
		snprintf(message, message_size, "entity_id is a string or an integer");
	} else {
		/* The id check of reads and writes (model/event.h): a row no event
		 * could match is an error, not an empty row. */
		const char *text = json_string_value(id);
		enum fl_entity_id_fault fault =
		    fl_entity_id_check_read(text, json_string_length(id));
		ok = fault == FL_ENTITY_ID_OK;
		if (ok)
			memcpy(row->entity_id, text, json_string_length(id) + 1);
		else
			snprintf(message, message_size, "entity_id: %s",
				 fl_entity_id_fault_text(fault));
	}
	if (ok) {
		const char *text = json_string_value(ts);
		ok = text && strlen(text) < sizeof(row->ts_text) &&
		     fl_time_parse(text, &row->ts_us) == FL_OK && row->ts_us != 0;
		if (!ok)
			snprintf(message, message_size,
				 "ts must be an RFC 3339 timestamp with a zone "
				 "(2026-11-26T21:00:00Z)");
		else
			fl_time_format(row->ts_us, row->ts_text);
	}
	json_decref(obj);
	return ok;
}

/* ---- the answer file ---------------------------------------------------- */

struct answer_file {
	int fd;
	uint64_t len;
	char *buf;
	size_t used;
	EVP_MD_CTX *md;
	bool failed;
};

/* Writes out (and hashes) the buffered bytes. */
static void answer_flush(struct answer_file *a)
{
	if (a->failed)
		return;
	if (a->used && EVP_DigestUpdate(a->md, a->buf, a->used) != 1) {
		a->failed = true;
		return;
	}
	for (size_t done = 0; done < a->used;) {
		ssize_t w = write(a->fd, a->buf + done, a->used - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			a->failed = true;
			return;
		}
		done += (size_t)w;
	}
	a->used = 0;
}

static void answer_put(struct answer_file *a, const char *bytes, size_t n)
{
	a->len += n;
	while (n > 0 && !a->failed) {
		size_t room = WRITE_BUF_BYTES - a->used, take = n < room ? n : room;
		memcpy(a->buf + a->used, bytes, take);
		a->used += take;
		bytes += take;
		n -= take;
		if (a->used == WRITE_BUF_BYTES)
			answer_flush(a);
	}
}

#define TEXT_LITERAL(t, text) fl_text_append((t), (text), sizeof(text) - 1)

/* text as a JSON string, as fl_jw_str writes it. */
static void put_json_string(struct fl_text *t, const char *text, size_t n)
{
	char out[6 * (FL_ENTITY_ID_MAX_LEN + 1) + 2];
	if (n > FL_ENTITY_ID_MAX_LEN + 1) {
		t->failed = true;
		return;
	}
	fl_text_append(t, out, fl_json_escape(out, text, n, true));
}

/* A CSV cell: quoted when it holds a comma, quote, CR or LF. */
static void csv_cell(struct fl_text *t, const char *text, size_t n)
{
	bool quote = false;
	for (size_t i = 0; i < n && !quote; i++)
		quote = text[i] == ',' || text[i] == '"' || text[i] == '\n' || text[i] == '\r';
	if (!quote) {
		fl_text_append(t, text, n);
		return;
	}
	fl_text_append(t, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (text[i] == '"')
			fl_text_append(t, "\"", 1);
		fl_text_append(t, text + i, 1);
	}
	fl_text_append(t, "\"", 1);
}

/*
 * The CSV cells of one part of a read ({"name": {"value": …}, …}), in the
 * order asked for: a string value as its text, null as an empty cell,
 * anything else as its JSON text.
 */
static void csv_values(struct fl_text *t, const char *json, size_t len, size_t n)
{
	json_t *obj = json_loadb(json, len, JSON_DECODE_ANY, NULL);
	const char *key;
	json_t *cell;
	size_t written = 0;
	json_object_foreach(obj, key, cell)
	{
		json_t *value = json_object_get(cell, "value");
		fl_text_append(t, ",", 1);
		written++;
		const char *cell_text, *raw;
		size_t cell_len, raw_len;
		if (json_is_string(value)) {
			csv_cell(t, json_string_value(value), json_string_length(value));
		} else if (value && !json_is_null(value)) {
			/* Numbers, booleans and vectors as the stored text: through
			 * a double, 0.1 would come out as 0.10000000000000001, and
			 * training and serving would disagree. */
			if (fl_json_member(json, len, key, &cell_text, &cell_len) &&
			    fl_json_member(cell_text, cell_len, "value", &raw, &raw_len))
				csv_cell(t, raw, raw_len);
			else
				t->failed = true;
		}
	}
	if (!obj)
		t->failed = true;
	for (; written < n; written++)
		fl_text_append(t, ",", 1);
	json_decref(obj);
}

static ssize_t stream_answer(void *ctx, uint64_t pos, char *buf, size_t max)
{
	int fd = *(int *)ctx;
	ssize_t n;
	do
		n = pread(fd, buf, max, (off_t)pos);
	while (n < 0 && errno == EINTR);
	return n;
}

static void close_answer(void *ctx)
{
	close(*(int *)ctx);
	free(ctx);
}

/* An unlinked temporary file next to where the spooled bodies go. */
static int answer_tmpfile(const char *dir)
{
	if (!dir)
		dir = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	char path[4096];
	snprintf(path, sizeof(path), "%s/fledger-answer-XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

static bool is_stopping(void)
{
	pthread_mutex_lock(&running_lock);
	bool s = stopping;
	pthread_mutex_unlock(&running_lock);
	return s;
}

/*
 * Rows are answered a chunk at a time: read and checked in input order,
 * computed in (entity, ts) order, which is the read models' key order (each
 * row's lookups land beside the previous row's, often on the very pages the
 * read's cursors are on), and written out in input order again. A chunk
 * holds at most CHUNK_ROWS_MAX rows and about CHUNK_BYTES of answer lines
 * (its row count follows the length of the lines so far), so memory stays
 * flat whatever the number of rows.
 */
#define CHUNK_ROWS_MAX 65536
#define CHUNK_ROWS_FIRST 1024
#define CHUNK_BYTES (12u << 20)

/* A row of a chunk: its entity id in the chunk's ids, its time. */
struct chunk_row {
	uint32_t id_at;
	int64_t ts_us;
};

/* A row's place in key order: its entity id's first 8 bytes, big-endian. */
struct row_key {
	uint64_t head;
	int64_t ts_us;
	uint32_t index;
};

/* The answer lines of a chunk's rows: computed in key order, kept in input order. */
struct chunk_lines {
	struct fl_text text; /* the lines, in the order computed */
	size_t *at, *len;    /* row i's line: text.data + at[i], len[i] bytes */
	size_t n;
};

struct chunk {
	struct chunk_row *rows; /* input order */
	struct fl_text ids;	/* their entity ids, each NUL-terminated */
	struct row_key *keys;	/* the rows in key order, once sorted */
	size_t n, cap;
	/* one set of lines is filled while the writer writes the other */
	struct chunk_lines lines[2];
	unsigned filling;
	uint64_t computed; /* rows computed over the export */
	uint64_t line_bytes;
};

static bool chunk_init(struct chunk *c)
{
	*c = (struct chunk){.cap = CHUNK_ROWS_FIRST};
	c->rows = malloc(CHUNK_ROWS_MAX * sizeof(*c->rows));
	c->keys = malloc(CHUNK_ROWS_MAX * sizeof(*c->keys));
	bool ok = c->rows && c->keys;
	for (int i = 0; i < 2; i++) {
		c->lines[i].at = malloc(CHUNK_ROWS_MAX * sizeof(*c->lines[i].at));
		c->lines[i].len = malloc(CHUNK_ROWS_MAX * sizeof(*c->lines[i].len));
		/* room for a chunk somewhat longer than foreseen, taken once:
		 * doubling would copy it, and only the bytes used are touched */
		ok = ok && c->lines[i].at && c->lines[i].len &&
		     fl_text_reserve(&c->lines[i].text, CHUNK_BYTES + CHUNK_BYTES / 4);
	}
	return ok;
}

static void chunk_finish(struct chunk *c)
{
	free(c->rows);
	fl_text_free(&c->ids);
	free(c->keys);
	for (int i = 0; i < 2; i++) {
		free(c->lines[i].at);
		free(c->lines[i].len);
		fl_text_free(&c->lines[i].text);
	}
}

/*
 * The answer's writer: a thread of its own copies a chunk's lines to the
 * answer file in input order, hashing them, while the export's thread
 * computes the next chunk. One chunk's lines wait at most: the export's
 * thread hands over the next only once the writer is done with those.
 */
struct writer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct answer_file *answer;  /* the writer's alone while it runs */
	struct chunk_lines *pending; /* handed over, not yet written */
	bool stop, failed;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->pending && !w->stop)
			pthread_cond_wait(&w->changed, &w->lock);
		if (!w->pending)
			break;
		struct chunk_lines *lines = w->pending;
		pthread_mutex_unlock(&w->lock);
		for (size_t i = 0; i < lines->n; i++)
			answer_put(w->answer, lines->text.data + lines->at[i], lines->len[i]);
		pthread_mutex_lock(&w->lock);
		w->failed = w->failed || w->answer->failed;
		w->pending = NULL;
		pthread_cond_broadcast(&w->changed);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static bool writer_start(struct writer *w, struct answer_file *answer)
{
	*w = (struct writer){.answer = answer};
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->changed, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, w) == 0)
		return true;
	pthread_cond_destroy(&w->changed);
	pthread_mutex_destroy(&w->lock);
	return false;
}

/* Waits until the writer has written what it was handed; false if it failed. */
static bool writer_wait(struct writer *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->pending)
		pthread_cond_wait(&w->changed, &w->lock);
	bool ok = !w->failed;
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* Hands lines over, once the lines handed before are written; false if writing failed. */
static bool writer_submit(struct writer *w, struct chunk_lines *lines)
{
	pthread_mutex_lock(&w->lock);
	while (w->pending)
		pthread_cond_wait(&w->changed, &w->lock);
	bool ok = !w->failed;
	if (ok) {
		w->pending = lines;
		pthread_cond_broadcast(&w->changed);
	}
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* Writes what is pending and ends the thread; false if writing failed. */
static bool writer_stop(struct writer *w)
{
	bool ok = writer_wait(w);
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->changed);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->changed);
	pthread_mutex_destroy(&w->lock);
	return ok;
}

/*
 * Entity ids in strcmp order (the byte order of the read models' keys),
 * then times. Equal heads decide alone when the ids end within them.
 */
static int key_order(const void *x, const void *y, void *ctx)
{
	const struct row_key *a = x, *b = y;
	if (a->head != b->head)
		return a->head < b->head ? -1 : 1;
	if ((uint8_t)a->head != 0) { /* no NUL in the first 8 bytes: compare the rest */
		const struct chunk *chunk = ctx;
		int c = strcmp(chunk->ids.data + chunk->rows[a->index].id_at + 8,
			       chunk->ids.data + chunk->rows[b->index].id_at + 8);
		if (c)
			return c;
	}
	return (a->ts_us > b->ts_us) - (a->ts_us < b->ts_us);
}

/*
 * The answer line of one row into out: the online read at as_of = ts (as
 * known then, with as_known), bounded like one online read
 * (--max-read-cost): a row over it, like any row the read refuses, carries
 * the online read's error. Anything else fails the export.
 */
static enum fl_status answer_row(const struct export_job *job, struct fl_projection_read *read,
				 struct fl_read_request *request, const struct row *row,
				 struct fl_text *out)
{
	uint64_t max_cost = job->query->max_read_cost;
	fl_projection_read_limit_cost(read,
				      max_cost ? fl_projection_read_cost(read) + max_cost : 0);
	struct fl_read_answer answer;
	struct fl_error err;
	fl_error_clear(&err);
	request->entity_id = row->entity_id;
	request->as_of_us = row->ts_us;
	request->known_at_us = job->as_known ? row->ts_us : 0;
	enum fl_status st = fl_projection_query_borrowed(read, request, &answer, &err);
	if (st != FL_OK && !(st == FL_ERR_INVALID && err.http_status))
		return st;
	if (job->csv) {
		csv_cell(out, row->entity_id, strlen(row->entity_id));
		fl_text_append(out, ",", 1);
		fl_text_append(out, row->ts_text, strlen(row->ts_text));
		if (st == FL_OK) {
			csv_values(out, answer.features, answer.features_len, job->n_features);
			csv_values(out, answer.windows, answer.windows_len, job->n_windows);
		} else {
			for (size_t i = 0; i < job->n_features + job->n_windows; i++)
				fl_text_append(out, ",", 1);
		}
		fl_text_append(out, "\n", 1);
	} else if (st == FL_OK) {
		/* what the fl_jw lines below would write, without a buffer of
		 * its own per row */
		TEXT_LITERAL(out, "{\"entity_id\":");
		put_json_string(out, row->entity_id, strlen(row->entity_id));
		TEXT_LITERAL(out, ",\"ts\":");
		put_json_string(out, row->ts_text, strlen(row->ts_text));
		TEXT_LITERAL(out, ",\"features\":");
		fl_text_append(out, answer.features, answer.features_len);
		TEXT_LITERAL(out, ",\"windows\":");
		fl_text_append(out, answer.windows, answer.windows_len);
		TEXT_LITERAL(out, "}\n");
	} else {
		struct fl_jw w;
		fl_jw_init(&w);
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "entity_id");
		fl_jw_str(&w, row->entity_id);
		fl_jw_key(&w, "ts");
		fl_jw_str(&w, row->ts_text);
		/* the error the online read would give */
		fl_jw_key(&w, "error");
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "code");
		fl_jw_str(&w, err.code);
		fl_jw_key(&w, "message");
		fl_jw_str(&w, err.message);
		if (err.field[0]) {
			fl_jw_key(&w, "field");
			fl_jw_str(&w, err.field);
		}
		fl_jw_close(&w, '}');
		fl_jw_close(&w, '}');
		size_t n;
		char *text = fl_jw_take(&w, &n);
		if (!text)
			return FL_ERR_NOMEM;
		fl_text_append(out, text, n);
		fl_text_append(out, "\n", 1);
		free(text);
	}
	return FL_OK;
}

/* Where an export reads from: a snapshot of the read models, renewed. */
struct export_snapshot {
	struct fl_projection_read *read;
	uint64_t applied_seq;
	int64_t renew_at_us;
};

/*
 * Computes the chunk's rows in key order, hands their lines to the writer
 * (which writes them in input order), and empties the chunk.
 */
static enum fl_status answer_chunk(const struct export_job *job, struct chunk *c,
				   struct export_snapshot *snap, struct fl_read_request *request,
				   struct writer *writer)
{
	struct chunk_lines *lines = &c->lines[c->filling];
	enum fl_status st = FL_OK;
	for (size_t i = 0; i < c->n; i++) {
		const char *id = c->ids.data + c->rows[i].id_at;
		uint8_t head[8] = {0};
		for (size_t k = 0; k < 8 && id[k]; k++)
			head[k] = (uint8_t)id[k];
		c->keys[i] = (struct row_key){fl_get_be64(head), c->rows[i].ts_us, (uint32_t)i};
	}
	qsort_r(c->keys, c->n, sizeof(*c->keys), key_order, c);
	for (size_t k = 0; k < c->n && st == FL_OK; k++) {
		if ((++c->computed & 63) == 0 && fl_time_mono_us() >= snap->renew_at_us) {
			/* A fresh snapshot at least every second, and a look at
			 * the shutdown: a long export must hold up neither the
			 * read models' growth (a map resize waits for readers,
			 * and a long-lived snapshot keeps old pages from reuse)
			 * nor a SIGTERM. */
			if (is_stopping())
				return FL_ERR_UNAVAILABLE;
			fl_projection_read_end(snap->read);
			snap->read = NULL;
			st = fl_projection_read_begin(job->query->projection, &snap->read);
			if (st != FL_OK)
				return st;
			snap->applied_seq = fl_projection_read_applied_seq(snap->read);
			snap->renew_at_us = fl_time_mono_us() + SNAPSHOT_US;
		}
		uint32_t i = c->keys[k].index;
		const char *id = c->ids.data + c->rows[i].id_at;
		struct row row = {.ts_us = c->rows[i].ts_us};
		memcpy(row.entity_id, id, strlen(id) + 1);
		fl_time_format(row.ts_us, row.ts_text); /* as parse_row wrote it */
		lines->at[i] = lines->text.len;
		st = answer_row(job, snap->read, request, &row, &lines->text);
		lines->len[i] = lines->text.len - lines->at[i];
	}
	if (st == FL_OK && lines->text.failed)
		st = FL_ERR_NOMEM;
	lines->n = c->n;
	if (st == FL_OK && !writer_submit(writer, lines))
		st = FL_ERR_IO;
	if (st != FL_OK)
		return st; /* the export ends: nothing more is computed */
	/* the next chunk holds about CHUNK_BYTES of lines, as long as these */
	c->line_bytes += lines->text.len;
	size_t average = c->computed ? (size_t)(c->line_bytes / c->computed) + 1 : 1;
	c->cap = CHUNK_BYTES / average;
	c->cap = c->cap < 64 ? 64 : c->cap > CHUNK_ROWS_MAX ? CHUNK_ROWS_MAX : c->cap;
	c->n = 0;
	c->ids.len = 0;
	/* the other lines are filled next, once written (writer_submit waited
	 * for that); their room is kept from chunk to chunk */
	c->filling ^= 1;
	c->lines[c->filling].text.len = 0;
	return st;
}

/* Steps 2 to 5 of the top comment, on the job's own thread. */
static void run_export(struct export_job *job)
{
	struct fl_query *q = job->query;
	struct line_reader r;
	char *line, message[256], field[32];
	size_t len;
	uint64_t rows = 0;
	struct row row;
	int got;

	/* 2 and 3: every row checked and the body hashed while the answer is
	 * computed into a file of its own; a bad row discards that file */
	struct answer_file a = {.fd = answer_tmpfile(q->spool_dir)};
	a.buf = malloc(WRITE_BUF_BYTES);
	a.md = EVP_MD_CTX_new();
	struct export_snapshot snap = {0};
	struct chunk chunk;
	bool chunked = chunk_init(&chunk);
	enum fl_status st = a.fd >= 0 && a.buf && a.md && chunked &&
				    EVP_DigestInit_ex(a.md, EVP_sha256(), NULL) == 1
				? fl_projection_read_begin(q->projection, &snap.read)
				: FL_ERR_IO;
	snap.applied_seq = snap.read ? fl_projection_read_applied_seq(snap.read) : 0;
	snap.renew_at_us = fl_time_mono_us() + SNAPSHOT_US;
	if (st == FL_OK && job->csv) {
		struct fl_text *head = &chunk.lines[0].text;
		fl_text_append(head, "entity_id,ts", 12);
		for (size_t i = 0; i < job->n_features; i++) {
			fl_text_append(head, ",", 1);
			csv_cell(head, job->features[i]->name, strlen(job->features[i]->name));
		}
		for (size_t i = 0; i < job->n_windows; i++) {
			fl_text_append(head, ",", 1);
			csv_cell(head, job->windows[i]->name, strlen(job->windows[i]->name));
		}
		fl_text_append(head, "\n", 1);
		if (head->failed)
			st = FL_ERR_NOMEM;
		else
			answer_put(&a, head->data, head->len);
		head->len = 0;
	}
	struct writer writer;
	bool writing = st == FL_OK && writer_start(&writer, &a);
	if (st == FL_OK && !writing)
		st = FL_ERR_IO;
	struct fl_read_request request = {
	    .view = job->view,
	    .features = job->features,
	    .n_features = job->n_features,
	    .windows = job->windows,
	    .n_windows = job->n_windows,
	};
	uint64_t bad_row = 0;
	char why[160];
	bool reading = reader_init(&r, job->body_fd, 0, job->body_len, true);
	got = -1;
	while (reading && (got = next_line(&r, &line, &len)) == 1) {
		if (r.line_no == 1 || len == 0)
			continue; /* the head, checked already; blank lines are ignored */
		if (!parse_row(line, len, &row, why, sizeof(why))) {
			bad_row = r.line_no;
			break;
		}
		rows++;
		/* after a failure, the rest is only checked: a bad row is a 400
		 * whatever else went wrong */
		if (st != FL_OK)
			continue;
		chunk.rows[chunk.n] = (struct chunk_row){(uint32_t)chunk.ids.len, row.ts_us};
		fl_text_append(&chunk.ids, row.entity_id, strlen(row.entity_id) + 1);
		if (chunk.ids.failed || chunk.ids.len > UINT32_MAX) {
			st = FL_ERR_NOMEM;
			continue;
		}
		if (++chunk.n == chunk.cap)
			st = answer_chunk(job, &chunk, &snap, &request, &writer);
	}
	/* the last rows, once every row is known to be good */
	if (reading && got == 0 && !bad_row && st == FL_OK && chunk.n)
		st = answer_chunk(job, &chunk, &snap, &request, &writer);
	if (writing && !writer_stop(&writer) && st == FL_OK)
		st = FL_ERR_IO;
	uint64_t applied_seq = snap.applied_seq;
	struct fl_projection_read *read = snap.read;
	uint8_t request_digest[32];
	unsigned digest_len = 0;
	uint64_t bad_line = reading ? r.line_no + 1 : 0;
	if (reading && got == 0 && EVP_DigestFinal_ex(r.md, request_digest, &digest_len) != 1)
		got = -1;
	if (reading)
		reader_finish(&r);
	if (reading && (bad_row || got != 0)) {
		if (bad_row) {
			snprintf(message, sizeof(message), "line %" PRIu64 ": %s", bad_row, why);
		} else {
			bad_row = bad_line;
			snprintf(message, sizeof(message),
				 "line %" PRIu64 " is longer than %u bytes (or could not be read)",
				 bad_row, LINE_MAX_BYTES);
		}
		snprintf(field, sizeof(field), "line %" PRIu64, bad_row);
		fl_projection_read_end(read);
		chunk_finish(&chunk);
		if (a.fd >= 0)
			close(a.fd);
		free(a.buf);
		EVP_MD_CTX_free(a.md);
		answer_error(job, 400, "invalid_row", message, field, bad_row);
		return;
	}
	if (st == FL_OK && !reading)
		st = FL_ERR_NOMEM;
	fl_projection_read_end(read);
	chunk_finish(&chunk);
	answer_flush(&a);
	uint8_t answer_digest[32];
	if (st == FL_OK && (a.failed || EVP_DigestFinal_ex(a.md, answer_digest, &digest_len) != 1))
		st = FL_ERR_IO;
	free(a.buf);
	EVP_MD_CTX_free(a.md);
	if (st != FL_OK) {
		if (a.fd >= 0)
			close(a.fd);
		if (st == FL_ERR_UNAVAILABLE)
			answer_error(job, 503, "shutting_down", "the server is shutting down", NULL,
				     0);
		else
			answer_error(job, 500, "internal_error", fl_status_str(st), NULL, 0);
		return;
	}

	/* 4: the record, durable before the first byte is sent */
	if (audited(job, 200)) {
		char request_hex[65];
		fl_hex_encode(request_digest, 32, request_hex);
		json_t *features = names_of(job, false), *windows = names_of(job, true);
		struct fl_audit_record rec = {
		    .read_id = job->read_id,
		    .principal = fl_principal_name(job->principal),
		    .route = ROUTE,
		    .view = fl_view_name(job->view),
		    .features = features,
		    .windows = windows,
		    .request_sha256 = request_hex,
		    .rows = rows,
		    .applied_seq = applied_seq,
		};
		st = fl_audit_record_now(q->audit, &rec, 200, answer_digest);
		json_decref(features);
		json_decref(windows);
		if (st != FL_OK) {
			close(a.fd);
			fl_http_add_header(job->req, "Retry-After", "1");
			fl_http_respond_error(job->req, 503, "audit_unavailable",
					      "the read could not be recorded in the audit log, so "
					      "it is not answered",
					      NULL);
			job_free(job);
			return;
		}
	}

	/* 5: the answer, streamed from its file */
	char number[24];
	fl_http_add_header(job->req, "X-Read-Id", job->read_id);
	snprintf(number, sizeof(number), "%" PRIu64, applied_seq);
	fl_http_add_header(job->req, "X-Applied-Seq", number);
	snprintf(number, sizeof(number), "%" PRIu64, rows);
	fl_http_add_header(job->req, "X-Rows", number);
	int *fd = malloc(sizeof(*fd));
	if (!fd) {
		close(a.fd);
		fl_http_respond_error(job->req, 500, "internal_error", "out of memory", NULL);
	} else {
		*fd = a.fd;
		fl_http_respond_stream(job->req, 200,
				       job->csv ? "text/csv" : "application/x-ndjson", a.len,
				       stream_answer, fd, close_answer);
	}
	job_free(job);
}

static void *export_main(void *arg)
{
	run_export(arg);
	pthread_mutex_lock(&running_lock);
	running--;
	pthread_cond_broadcast(&running_changed);
	pthread_mutex_unlock(&running_lock);
	return NULL;
}

enum fl_http_disposition fl_query_historical(struct fl_query *q, struct fl_http_request *req,
					     const char *read_id)
{
	struct export_job *job = calloc(1, sizeof(*job));
	char message[256];
	unsigned status;
	const char *code, *field;

	if (!job) {
		fl_http_respond_error(req, 500, "internal_error", "out of memory", NULL);
		return FL_HTTP_DONE;
	}
	job->query = q;
	job->req = req;
	snprintf(job->read_id, sizeof(job->read_id), "%s", read_id);
	if (!q->auth) {
		job->principal = fl_svc_dev_principal();
	} else {
		const char *header = fl_http_header(req, "Authorization");
		if (fl_auth_lookup(q->auth, header, &job->principal) != FL_OK)
			return answer_error(job, 401, header ? "unknown_token" : "missing_token",
					    header ? "the bearer token is not known"
						   : "an Authorization: Bearer <token> header is "
						     "required",
					    NULL, 0);
	}
	if (!fl_principal_has_role(job->principal, "admin") &&
	    !fl_principal_has_role(job->principal, "reader"))
		return answer_error(job, 403, "forbidden", "this route needs the role reader", NULL,
				    0);
	const char *type = fl_http_header(req, "Content-Type");
	if (!type || strncasecmp(type, "application/x-ndjson", 20) != 0 ||
	    (type[20] && type[20] != ';' && type[20] != ' '))
		return answer_error(job, 415, "unsupported_media_type",
				    "the body must be application/x-ndjson: a head line, then one "
				    "row a line",
				    NULL, 0);
	job->body_fd = fl_http_body_fd(req, &job->body_len);
	if (job->body_fd < 0)
		return answer_error(job, 500, "internal_error", "the body was not spooled", NULL,
				    0);
	if (!parse_head(job, message, sizeof(message), &status, &code, &field))
		return answer_error(job, status, code, message, field,
				    status == 400 && field && strcmp(field, "line 1") == 0 ? 1 : 0);
	const char *accept = fl_http_header(req, "Accept");
	job->csv = accept && strstr(accept, "text/csv") != NULL;

	pthread_mutex_lock(&running_lock);
	bool busy = stopping || running >= MAX_RUNNING;
	if (!busy)
		running++;
	pthread_mutex_unlock(&running_lock);
	if (busy)
		return answer_error(job, 503, stopping ? "shutting_down" : "busy",
				    stopping ? "the server is shutting down"
					     : "too many training-data exports are running; retry",
				    NULL, 0);
	pthread_t thread;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&thread, &attr, export_main, job);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_mutex_lock(&running_lock);
		running--;
		pthread_cond_broadcast(&running_changed);
		pthread_mutex_unlock(&running_lock);
		return answer_error(job, 503, "busy", "no thread for the export; retry", NULL, 0);
	}
	return FL_HTTP_DEFERRED;
}
