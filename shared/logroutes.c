/*
 * HTTP answers over a signed log (see logroutes.h).
 */
#include "fledger/logroutes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/format.h"
#include "fledger/svc.h"
#include "fledger/util.h"

#define LOG_LIMIT_DEFAULT 1000
#define LOG_LIMIT_MAX 10000
#define TIME_LIMIT_MAX 100000

static enum fl_http_disposition internal(struct fl_http_request *req, enum fl_status st)
{
	fl_http_respond_error(req, st == FL_ERR_FULL ? 507 : 500,
			      st == FL_ERR_FULL ? "log_full" : "internal_error", fl_status_str(st),
			      NULL);
	return FL_HTTP_DONE;
}

static enum fl_status add_key(void *ctx, const char *key_id, const uint8_t pub[FL_PUBKEY_LEN])
{
	char *pem;
	if (fl_pubkey_to_pem(pub, &pem) != FL_OK)
		return FL_ERR_NOMEM;
	json_array_append_new(ctx, json_pack("{s:s,s:s,s:s}", "key_id", key_id, "alg", "ed25519",
					     "public_key_pem", pem));
	free(pem);
	return FL_OK;
}

enum fl_http_disposition fl_logroutes_lines(struct fl_log *log, struct fl_http_request *req)
{
	uint64_t from_seq, limit;
	struct fl_log_reader *reader;

	if (!fl_svc_query_u64(req, "from_seq", 1, 1, UINT64_MAX, &from_seq) ||
	    !fl_svc_query_u64(req, "limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX, &limit))
		return FL_HTTP_DONE;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	uint64_t size = fl_log_reader_size(reader);
	struct fl_ndjson nd = {0};
	for (uint64_t seq = from_seq; st == FL_OK && seq <= size && seq < from_seq + limit; seq++)
		st = fl_ndjson_add_seq(&nd, reader, seq);
	fl_log_reader_end(reader);
	if (st != FL_OK) {
		fl_text_free(&nd.text);
		return internal(req, st);
	}
	fl_http_respond(req, 200, "application/x-ndjson", nd.text.data ? nd.text.data : "",
			nd.text.len);
	fl_text_free(&nd.text);
	return FL_HTTP_DONE;
}

enum fl_http_disposition fl_logroutes_checkpoint(struct fl_log *log, struct fl_http_request *req)
{
	struct fl_log_reader *reader;
	struct fl_checkpoint cp;
	uint64_t tree_size, covering;
	char *json;

	if (!fl_svc_query_u64(req, "tree_size", 0, 0, UINT64_MAX, &tree_size) ||
	    !fl_svc_query_u64(req, "covering_seq", 0, 0, UINT64_MAX, &covering))
		return FL_HTTP_DONE;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	if (covering)
		st = fl_log_reader_checkpoint_covering(reader, covering, &cp);
	else
		st = fl_log_reader_checkpoint(reader, tree_size, &cp);
	fl_log_reader_end(reader);
	if (st == FL_ERR_NOT_FOUND) {
		fl_http_respond_error(req, 404, "checkpoint_not_found",
				      "no checkpoint of that tree size (the log may be empty)",
				      NULL);
		return FL_HTTP_DONE;
	}
	if (st != FL_OK || fl_checkpoint_json(&cp, &json) != FL_OK)
		return internal(req, st != FL_OK ? st : FL_ERR_NOMEM);
	fl_http_respond(req, 200, "application/json", json, strlen(json));
	free(json);
	return FL_HTTP_DONE;
}

enum fl_http_disposition fl_logroutes_proof(struct fl_log *log, struct fl_http_request *req,
					    bool inclusion)
{
	struct fl_log_reader *reader;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	uint64_t a, b, size = fl_log_size(log);
	const char *na = inclusion ? "seq" : "first", *nb = inclusion ? "tree_size" : "second";

	if (!fl_http_query(req, na) || !fl_http_query(req, nb)) {
		char message[96];
		snprintf(message, sizeof(message), "%s and %s are required", na, nb);
		fl_http_respond_error(req, 400, "missing_parameter", message,
				      fl_http_query(req, na) ? nb : na);
		return FL_HTTP_DONE;
	}
	if (!fl_svc_query_u64(req, nb, 0, 1, size, &b) || !fl_svc_query_u64(req, na, 0, 1, b, &a))
		return FL_HTTP_DONE;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	if (inclusion)
		st = fl_log_reader_inclusion_proof(reader, a, b, hashes, &count);
	else
		st = fl_log_reader_consistency_proof(reader, a, b, hashes, &count);
	fl_log_reader_end(reader);
	if (st != FL_OK)
		return internal(req, st);
	char *json;
	st = inclusion ? fl_inclusion_proof_json(a - 1, b, (const uint8_t(*)[FL_HASH_LEN])hashes,
						 count, &json)
		       : fl_consistency_proof_json(a, b, (const uint8_t(*)[FL_HASH_LEN])hashes,
						   count, &json);
	if (st != FL_OK)
		return internal(req, st);
	fl_http_respond(req, 200, "application/json", json, strlen(json));
	free(json);
	return FL_HTTP_DONE;
}

enum fl_http_disposition fl_logroutes_keys(struct fl_log *log, struct fl_http_request *req)
{
	struct fl_log_reader *reader;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	json_t *keys = json_array();
	st = fl_log_reader_keys(reader, add_key, keys);
	fl_log_reader_end(reader);
	if (st != FL_OK) {
		json_decref(keys);
		return internal(req, st);
	}
	fl_http_respond_json(req, 200, json_pack("{s:o}", "keys", keys));
	return FL_HTTP_DONE;
}

enum fl_status fl_ndjson_add(struct fl_ndjson *nd, const struct fl_log_entry *entry)
{
	char *line;
	size_t line_len;
	enum fl_status st = fl_log_entry_line(entry, &line, &line_len);
	if (st != FL_OK)
		return st;
	fl_text_append(&nd->text, line, line_len);
	fl_text_append(&nd->text, "\n", 1);
	free(line);
	if (nd->text.failed)
		return FL_ERR_NOMEM;
	nd->count++;
	return FL_OK;
}

enum fl_status fl_ndjson_add_seq(struct fl_ndjson *nd, struct fl_log_reader *reader, uint64_t seq)
{
	struct fl_log_entry entry;
	enum fl_status st = fl_log_reader_get(reader, seq, &entry);
	return st == FL_OK ? fl_ndjson_add(nd, &entry) : st;
}

struct limited {
	struct fl_ndjson nd;
	uint64_t limit;
};

static enum fl_status append_line(void *ctx, const struct fl_log_entry *entry)
{
	struct limited *l = ctx;
	if (l->nd.count >= l->limit)
		return FL_ERR_FULL; /* stops the walk; not an error */
	return fl_ndjson_add(&l->nd, entry);
}

static bool query_time(struct fl_http_request *req, const char *name, int64_t default_us,
		       int64_t *ret_us)
{
	const char *text = fl_http_query(req, name);
	if (!text) {
		*ret_us = default_us;
		return true;
	}
	if (fl_time_parse(text, ret_us) != FL_OK) {
		char message[96];
		snprintf(message, sizeof(message), "%s must be an RFC 3339 timestamp with a zone",
			 name);
		fl_http_respond_error(req, 400, "invalid_timestamp", message, name);
		return false;
	}
	return true;
}

enum fl_http_disposition fl_logroutes_lines_by_time(struct fl_log *log, struct fl_http_request *req)
{
	struct fl_log_reader *reader;
	struct limited l = {0};
	int64_t from, to;
	uint64_t limit;

	if (!query_time(req, "from", INT64_MIN, &from) ||
	    !query_time(req, "to", fl_time_now_us(), &to) ||
	    !fl_svc_query_u64(req, "limit", TIME_LIMIT_MAX, 1, TIME_LIMIT_MAX, &limit))
		return FL_HTTP_DONE;
	l.limit = limit;
	enum fl_status st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	st = fl_log_reader_time_range(reader, from, to, append_line, &l);
	fl_log_reader_end(reader);
	if (st != FL_OK && st != FL_ERR_FULL) {
		fl_text_free(&l.nd.text);
		return internal(req, st);
	}
	fl_http_respond(req, 200, "application/x-ndjson", l.nd.text.data ? l.nd.text.data : "",
			l.nd.text.len);
	fl_text_free(&l.nd.text);
	return FL_HTTP_DONE;
}
