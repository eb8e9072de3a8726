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
#include "fledger/logroutes.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "publisher.h"

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
			      st == FL_ERR_FULL ? "log_full" : "internal_error", fl_status_str(st),
			      NULL);
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
	fl_gauge_set(cmd->nats_connected, fl_publisher_connected(cmd->publisher) ? 1 : 0);
	if (fl_metrics_render(cmd->metrics, &text, &len) != FL_OK)
		return internal(req, FL_ERR_NOMEM);
	fl_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
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
					      const char *path_prefix, bool feast_push,
					      bool receipt)
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
			if (path_prefix)
				snprintf(field, sizeof(field), "%s[%zu].view", path_prefix, i);
			else
				snprintf(field, sizeof(field), "%s",
					 feast_push ? "push_source_name" : "view");
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
		inputs[i] = (struct fl_log_input){
		    .body_tail = tails[i], .body_tail_len = len, .time_us = events[i].ingest_ts_us};
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
		st = fl_committer_submit_events(cmd->committer, req, inputs, tails, count, keep,
						receipt);
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
	/* ?receipt=1: an inclusion proof per result (CONTRACT §3). */
	uint64_t receipt;
	if (!fl_svc_query_u64(req, "receipt", 0, 0, 1, &receipt))
		return FL_HTTP_DONE;
	json_t *body = fl_svc_json_body(req);
	if (!body)
		return FL_HTTP_DONE;
	fl_error_clear(&err);
	int64_t now = fl_time_now_us();
	if (feast_push)
		st = fl_event_feast_push_validate(body, cmd->registry, fl_principal_name(principal),
						  now, cmd->max_future_skew_us, &events, &count,
						  &err);
	else
		st = fl_event_validate_request(body, cmd->registry, fl_principal_name(principal),
					       now, cmd->max_future_skew_us, &events, &count, &err);
	/* The JSON path of event i, for errors: events[i] in a batch. */
	bool batch = !feast_push && json_object_get(body, "events") != NULL;
	json_decref(body);
	if (st != FL_OK) {
		if (st == FL_ERR_NOMEM)
			return internal(req, st);
		fl_http_respond_error(req, (unsigned)err.http_status, err.code, err.message,
				      err.field[0] ? err.field : NULL);
		return FL_HTTP_DONE;
	}
	return submit_events(cmd, req, principal, events, count, batch ? "events" : NULL,
			     feast_push, receipt == 1);
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
		return method_is(req, "GET") ? fl_logroutes_keys(cmd->log, req)
					     : method_not_allowed(req);
	}

	static const char *const known[] = {"/v1/views",
					    "/v1/events",
					    "/push",
					    "/v1/log",
					    "/v1/log/checkpoint",
					    "/v1/log/proof/inclusion",
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
		return method_is(req, "GET") ? get_view(cmd, req, path + 10)
					     : method_not_allowed(req);
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
		return fl_logroutes_lines(cmd->log, req);
	if (strcmp(route, "/v1/log/checkpoint") == 0)
		return fl_logroutes_checkpoint(cmd->log, req);
	return fl_logroutes_proof(cmd->log, req, strcmp(route, "/v1/log/proof/inclusion") == 0);
}

void fl_command_on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			    int64_t duration_us)
{
	struct fl_command *cmd = ctx;
	fl_svc_request_done(req, cmd->http_requests, status, duration_us, false);
}
