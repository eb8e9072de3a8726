/*
 * HTTP routes of command-svc (CONTRACT §2-4, §10): translate requests into
 * calls on the log, the view registry and the committer, and answers back.
 */
#include "routes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/event.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "publisher.h"

#define LOG_LIMIT_DEFAULT 1000
#define LOG_LIMIT_MAX 10000

static bool method_is(struct fl_http_request *req, const char *method)
{
	return strcmp(fl_http_method(req), method) == 0;
}

static enum fl_http_disposition method_not_allowed(struct fl_http_request *req)
{
	fl_http_respond_error(req, 405, "method_not_allowed",
			      "this route does not take that method", NULL);
	return FL_HTTP_DONE;
}

static enum fl_http_disposition internal(struct fl_http_request *req, enum fl_status st)
{
	fl_http_respond_error(req, st == FL_ERR_FULL ? 507 : 500,
			      st == FL_ERR_FULL ? "log_full" : "internal_error",
			      fl_status_str(st), NULL);
	return FL_HTTP_DONE;
}

/* ---- health, readiness, metrics, keys --------------------------------- */

static enum fl_http_disposition get_readyz(struct fl_command *cmd, struct fl_http_request *req)
{
	json_t *body = json_pack("{s:s,s:I,s:I,s:b}", "status", "ready", "tree_size",
				 (json_int_t)fl_log_size(cmd->log), "publish_backlog",
				 (json_int_t)fl_publisher_backlog(cmd->publisher), "nats_connected",
				 fl_publisher_connected(cmd->publisher));
	fl_http_respond_json(req, 200, body);
	return FL_HTTP_DONE;
}

static enum fl_http_disposition get_metrics(struct fl_command *cmd, struct fl_http_request *req)
{
	char *text;
	size_t len;
	fl_gauge_set(cmd->publish_lag, (double)fl_publisher_backlog(cmd->publisher));
	fl_gauge_set(cmd->tree_size, (double)fl_log_size(cmd->log));
	if (fl_metrics_render(cmd->metrics, &text, &len) != FL_OK)
		return internal(req, FL_ERR_NOMEM);
	fl_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
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

static enum fl_http_disposition get_keys(struct fl_command *cmd, struct fl_http_request *req)
{
	struct fl_log_reader *reader;
	enum fl_status st = fl_log_reader_begin(cmd->log, &reader);
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

/* ---- views ------------------------------------------------------------ */

static enum fl_http_disposition post_view(struct fl_command *cmd, struct fl_http_request *req,
					  const struct fl_principal *principal)
{
	struct fl_view *view;
	struct fl_error err;

	if (!fl_svc_require_role(req, principal, "admin", NULL))
		return FL_HTTP_DONE;
	json_t *body = fl_svc_json_body(req);
	if (!body)
		return FL_HTTP_DONE;
	fl_error_clear(&err);
	enum fl_status st = fl_view_parse(body, &view, &err);
	json_decref(body);
	if (st != FL_OK) {
		if (st == FL_ERR_NOMEM)
			return internal(req, st);
		fl_http_respond_error(req, (unsigned)err.http_status, err.code, err.message,
				      err.field[0] ? err.field : NULL);
		return FL_HTTP_DONE;
	}
	st = fl_committer_submit_view(cmd->committer, req, view, fl_principal_name(principal));
	if (st != FL_OK) {
		fl_view_unref(view);
		return internal(req, st);
	}
	return FL_HTTP_DEFERRED;
}

static enum fl_http_disposition get_views(struct fl_command *cmd, struct fl_http_request *req)
{
	struct fl_view **views;
	size_t count;
	if (fl_view_registry_list(cmd->registry, &views, &count) != FL_OK)
		return internal(req, FL_ERR_NOMEM);
	json_t *list = json_array();
	for (size_t i = 0; i < count; i++)
		json_array_append_new(list, fl_view_to_json(views[i], true));
	fl_view_list_free(views, count);
	fl_http_respond_json(req, 200, json_pack("{s:o}", "views", list));
	return FL_HTTP_DONE;
}

static enum fl_http_disposition get_view(struct fl_command *cmd, struct fl_http_request *req,
					 const char *name)
{
	struct fl_view *view;
	if (fl_view_registry_get(cmd->registry, name, &view) != FL_OK) {
		fl_http_respond_error(req, 404, "view_not_found", "no view has this name", "name");
		return FL_HTTP_DONE;
	}
	fl_http_respond_json(req, 200, fl_view_to_json(view, true));
	fl_view_unref(view);
	return FL_HTTP_DONE;
}

/* ---- writes ----------------------------------------------------------- */

/*
 * Turns validated events into log inputs and hands them to the committer,
 * after checking the producer's write permission on every view.
 */
static enum fl_http_disposition submit_events(struct fl_command *cmd, struct fl_http_request *req,
					      const struct fl_principal *principal,
					      struct fl_event *events, size_t count,
					      const char *path_prefix)
{
	struct fl_log_input *inputs = calloc(count, sizeof(*inputs));
	char **tails = calloc(count, sizeof(char *));
	/* digests and keys must outlive the events: one block kept by the job */
	struct kept {
		uint8_t digest[FL_EVENT_DIGEST_LEN];
		char producer[FL_NAME_MAX_LEN * 4 + 1];
		char key[FL_IDEMPOTENCY_KEY_MAX_LEN + 1];
	} *keep = calloc(count, sizeof(*keep));
	enum fl_status st = inputs && tails && keep ? FL_OK : FL_ERR_NOMEM;

	for (size_t i = 0; st == FL_OK && i < count; i++) {
		const struct fl_acl *acl = fl_view_write_acl(events[i].view);
		if (!fl_acl_allows(principal, (const char *const *)acl->entries, acl->count)) {
			char field[48], message[200];
			if (count == 1 && !path_prefix)
				snprintf(field, sizeof(field), "view");
			else
				snprintf(field, sizeof(field), "%s[%zu].view",
					 path_prefix ? path_prefix : "events", i);
			snprintf(message, sizeof(message), "%s may not write to view %s",
				 fl_principal_name(principal), fl_view_name(events[i].view));
			fl_http_respond_error(req, 403, "forbidden", message, field);
			goto fail_answered;
		}
		size_t len;
		st = fl_event_body_tail(&events[i], &tails[i], &len);
		if (st != FL_OK)
			break;
		memcpy(keep[i].digest, events[i].digest, FL_EVENT_DIGEST_LEN);
		inputs[i] = (struct fl_log_input){.body_tail = tails[i],
						  .body_tail_len = len,
						  .time_us = events[i].ingest_ts_us};
		if (events[i].has_idempotency_key) {
			snprintf(keep[i].producer, sizeof(keep[i].producer), "%s",
				 fl_principal_name(principal));
			snprintf(keep[i].key, sizeof(keep[i].key), "%s", events[i].idempotency_key);
			inputs[i].producer = keep[i].producer;
			inputs[i].idempotency_key = keep[i].key;
			inputs[i].digest = keep[i].digest;
		}
	}
	fl_event_array_free(events, count);
	if (st == FL_OK)
		st = fl_committer_submit_events(cmd->committer, req, inputs, tails, count, keep);
	if (st == FL_OK)
		return FL_HTTP_DEFERRED;
	for (size_t i = 0; tails && i < count; i++)
		free(tails[i]);
	free(tails);
	free(inputs);
	free(keep);
	return internal(req, st);

fail_answered:
	fl_event_array_free(events, count);
	for (size_t i = 0; i < count; i++)
		free(tails[i]);
	free(tails);
	free(inputs);
	free(keep);
	return FL_HTTP_DONE;
}

static enum fl_http_disposition post_events(struct fl_command *cmd, struct fl_http_request *req,
					    const struct fl_principal *principal, bool feast_push)
{
	struct fl_event *events = NULL;
	size_t count = 0;
	struct fl_error err;
	enum fl_status st;

	if (!fl_svc_require_role(req, principal, "producer", NULL))
		return FL_HTTP_DONE;
	json_t *body = fl_svc_json_body(req);
	if (!body)
		return FL_HTTP_DONE;
	fl_error_clear(&err);
	int64_t now = fl_time_now_us();
	if (feast_push)
		st = fl_event_feast_push_validate(body, cmd->registry, fl_principal_name(principal),
						  now, &events, &count, &err);
	else
		st = fl_event_validate_request(body, cmd->registry, fl_principal_name(principal),
					       now, &events, &count, &err);
	json_decref(body);
	if (st != FL_OK) {
		if (st == FL_ERR_NOMEM)
			return internal(req, st);
		fl_http_respond_error(req, (unsigned)err.http_status, err.code, err.message,
				      err.field[0] ? err.field : NULL);
		return FL_HTTP_DONE;
	}
	return submit_events(cmd, req, principal, events, count, feast_push ? "df" : NULL);
}

/* ---- the log ---------------------------------------------------------- */

static enum fl_http_disposition get_log(struct fl_command *cmd, struct fl_http_request *req)
{
	uint64_t from_seq, limit;
	struct fl_log_reader *reader;

	if (!fl_svc_query_u64(req, "from_seq", 1, 1, UINT64_MAX, &from_seq) ||
	    !fl_svc_query_u64(req, "limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX, &limit))
		return FL_HTTP_DONE;
	enum fl_status st = fl_log_reader_begin(cmd->log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	uint64_t size = fl_log_reader_size(reader);
	size_t cap = 64 * 1024, len = 0;
	char *out = malloc(cap);
	for (uint64_t seq = from_seq; out && st == FL_OK && seq <= size && seq < from_seq + limit;
	     seq++) {
		struct fl_log_entry entry;
		char *line;
		size_t line_len;
		st = fl_log_reader_get(reader, seq, &entry);
		if (st == FL_OK)
			st = fl_log_entry_line(&entry, &line, &line_len);
		if (st != FL_OK)
			break;
		if (len + line_len + 1 > cap) {
			while (len + line_len + 1 > cap)
				cap *= 2;
			char *grown = realloc(out, cap);
			if (!grown) {
				free(line);
				st = FL_ERR_NOMEM;
				break;
			}
			out = grown;
		}
		memcpy(out + len, line, line_len);
		out[len + line_len] = '\n';
		len += line_len + 1;
		free(line);
	}
	fl_log_reader_end(reader);
	if (!out || st != FL_OK) {
		free(out);
		return internal(req, out ? st : FL_ERR_NOMEM);
	}
	fl_http_respond(req, 200, "application/x-ndjson", out, len);
	free(out);
	return FL_HTTP_DONE;
}

static enum fl_http_disposition get_checkpoint(struct fl_command *cmd,
					       struct fl_http_request *req)
{
	struct fl_log_reader *reader;
	struct fl_checkpoint cp;
	uint64_t tree_size, covering;
	char *json;

	if (!fl_svc_query_u64(req, "tree_size", 0, 0, UINT64_MAX, &tree_size) ||
	    !fl_svc_query_u64(req, "covering_seq", 0, 0, UINT64_MAX, &covering))
		return FL_HTTP_DONE;
	enum fl_status st = fl_log_reader_begin(cmd->log, &reader);
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

static json_t *hash_list(uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	json_t *list = json_array();
	for (size_t i = 0; i < count; i++) {
		char hex[2 * FL_HASH_LEN + 1];
		fl_hex_encode(hashes[i], FL_HASH_LEN, hex);
		json_array_append_new(list, json_string(hex));
	}
	return list;
}

static enum fl_http_disposition get_proof(struct fl_command *cmd, struct fl_http_request *req,
					  bool inclusion)
{
	struct fl_log_reader *reader;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	uint64_t a, b, size = fl_log_size(cmd->log);
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
	enum fl_status st = fl_log_reader_begin(cmd->log, &reader);
	if (st != FL_OK)
		return internal(req, st);
	if (inclusion)
		st = fl_log_reader_inclusion_proof(reader, a, b, hashes, &count);
	else
		st = fl_log_reader_consistency_proof(reader, a, b, hashes, &count);
	fl_log_reader_end(reader);
	if (st != FL_OK)
		return internal(req, st);
	json_t *body = inclusion ? json_pack("{s:I,s:I,s:o}", "leaf_index", (json_int_t)(a - 1),
					     "tree_size", (json_int_t)b, "hashes",
					     hash_list(hashes, count))
				 : json_pack("{s:I,s:I,s:o}", "first", (json_int_t)a, "second",
					     (json_int_t)b, "hashes", hash_list(hashes, count));
	fl_http_respond_json(req, 200, body);
	return FL_HTTP_DONE;
}

/* ---- dispatch --------------------------------------------------------- */

enum fl_http_disposition fl_command_handle(void *ctx, struct fl_http_request *req)
{
	struct fl_command *cmd = ctx;
	const char *path = fl_http_path(req);
	const struct fl_principal *principal;

	/* Routes without a token. */
	if (strcmp(path, "/healthz") == 0) {
		fl_http_set_user(req, "/healthz");
		fl_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/readyz") == 0) {
		fl_http_set_user(req, "/readyz");
		return get_readyz(cmd, req);
	}
	if (strcmp(path, "/metrics") == 0) {
		fl_http_set_user(req, "/metrics");
		return get_metrics(cmd, req);
	}
	if (strcmp(path, "/v1/keys") == 0) {
		fl_http_set_user(req, "/v1/keys");
		return method_is(req, "GET") ? get_keys(cmd, req) : method_not_allowed(req);
	}

	static const char *const known[] = {"/v1/views", "/v1/events", "/push", "/v1/log",
					    "/v1/log/checkpoint", "/v1/log/proof/inclusion",
					    "/v1/log/proof/consistency"};
	const char *route = NULL;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(path, known[i]) == 0)
			route = known[i];
	if (!route && strncmp(path, "/v1/views/", 10) == 0 && path[10])
		route = "/v1/views/{name}";
	if (!route) {
		fl_http_set_user(req, "other");
		fl_http_respond_error(req, 404, "not_found", "no such route", NULL);
		return FL_HTTP_DONE;
	}
	fl_http_set_user(req, (void *)route);
	principal = fl_svc_authenticate(cmd->auth, req);
	if (!principal)
		return FL_HTTP_DONE;

	if (strcmp(route, "/v1/views") == 0) {
		if (method_is(req, "POST"))
			return post_view(cmd, req, principal);
		return method_is(req, "GET") ? get_views(cmd, req) : method_not_allowed(req);
	}
	if (strcmp(route, "/v1/views/{name}") == 0)
		return method_is(req, "GET") ? get_view(cmd, req, path + 10) : method_not_allowed(req);
	if (strcmp(route, "/v1/events") == 0 || strcmp(route, "/push") == 0) {
		if (!method_is(req, "POST"))
			return method_not_allowed(req);
		return post_events(cmd, req, principal, route[1] == 'p');
	}
	/* The log routes. */
	if (!method_is(req, "GET"))
		return method_not_allowed(req);
	if (!fl_svc_require_role(req, principal, "auditor", "replicator"))
		return FL_HTTP_DONE;
	if (strcmp(route, "/v1/log") == 0)
		return get_log(cmd, req);
	if (strcmp(route, "/v1/log/checkpoint") == 0)
		return get_checkpoint(cmd, req);
	return get_proof(cmd, req, strcmp(route, "/v1/log/proof/inclusion") == 0);
}

void fl_command_on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			    int64_t duration_us)
{
	struct fl_command *cmd = ctx;
	const char *route = fl_http_user(req);
	char code[8];
	snprintf(code, sizeof(code), "%u", status);
	const char *labels[] = {route ? route : "other", code};
	fl_counter_inc(fl_counter_with(cmd->http_requests, labels));
	if (status >= 500)
		fl_slog(FL_SLOG_WARN, "request failed", "request_id", fl_http_request_id(req),
			"route", labels[0], "status", code, NULL);
	(void)duration_us;
}
