/*
 * command-svc: takes feature events over HTTP, validates them against the
 * registered views, signs and appends them to the LMDB log, and publishes
 * them on NATS. main parses the configuration and wires the modules; see
 * routes.c (HTTP), committer.c (group commit) and publisher.c (NATS outbox).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>
#include <nats/nats.h>

#include "committer.h"
#include "eventlog/eventlog.h"
#include "fledger/config.h"
#include "fledger/natsconn.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "fledger/version.h"
#include "routes.h"

static const struct fl_config_option options[] = {
    {"listen", "FLEDGER_LISTEN", "127.0.0.1:8080", "HOST:PORT to serve HTTP on", false},
    {"data-dir", "FLEDGER_DATA_DIR", "./data/command", "directory of the LMDB log", false},
    {"nats", "FLEDGER_NATS", "nats://127.0.0.1:4222",
     "NATS servers to publish to (comma-separated list)", false},
    FL_NATS_OPTIONS,
    {"nats-replicas", "FLEDGER_NATS_REPLICAS", "1",
     "replicas of the FLEDGER_EVENTS stream (3 on a cluster)", false},
    {"nats-max-age", "FLEDGER_NATS_MAX_AGE", NULL,
     "how long the stream keeps events (default: the longest view retention)", false},
    {"nats-duplicate-window", "FLEDGER_NATS_DUPLICATE_WINDOW", "2m",
     "the stream's window for dropping republished events", false},
    {"signing-key", "FLEDGER_SIGNING_KEY", NULL, "Ed25519 private key (PEM); SIGHUP re-reads it",
     false},
    {"tokens", "FLEDGER_TOKENS", NULL, "tokens file: principals, roles, token hashes", false},
    {"insecure-no-auth", "FLEDGER_INSECURE_NO_AUTH", NULL,
     "development only: no tokens, every request is admin", true},
    {"tls-cert", "FLEDGER_TLS_CERT", NULL, "PEM certificate: serve HTTPS", false},
    {"tls-key", "FLEDGER_TLS_KEY", NULL, "PEM private key of --tls-cert", false},
    {"tls-client-ca", "FLEDGER_TLS_CLIENT_CA", NULL, "PEM CA: require client certificates", false},
    {"max-body", "FLEDGER_MAX_BODY", "1048576", "largest request body in bytes", false},
    FL_SVC_HTTP_LIMIT_OPTIONS,
    {"max-map-bytes", "FLEDGER_MAX_MAP_BYTES", "0",
     "cap on the LMDB map (0: bounded by the disk only)", false},
    {"max-future-skew", "FLEDGER_MAX_FUTURE_SKEW", "5m",
     "how far ahead of the ingest time an event_ts may be (s, m, h or d)", false},
    {"log-level", "FLEDGER_LOG_LEVEL", "info", "debug, info, warn or error", false},
    {"version", NULL, NULL, "print the version and the libraries' versions, then exit", true},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static _Noreturn void fatal(const char *msg, const char *detail)
{
	/* _exit, not exit: the service's threads (publisher, committer, sync,
	 * NATS) may be running, and exit()'s handlers would tear libraries
	 * down under them. Nothing is lost: commits are durable when made and
	 * log lines are written unbuffered. */
	fl_slog(FL_SLOG_ERROR, msg, "detail", detail ? detail : "", NULL);
	_exit(1);
}

static void on_commit(void *ctx)
{
	fl_publisher_notify(ctx);
}

/* SIGHUP: re-read the signing key; a new key is recorded in the log. */
static void reload_key(struct fl_log *log, const char *path, struct fl_signer **signer)
{
	struct fl_signer *next;
	struct fl_log_result result;
	enum fl_status st = fl_signer_load(path, &next);
	if (st != FL_OK) {
		fl_slog(FL_SLOG_ERROR, "cannot reload the signing key", "status", fl_status_str(st),
			NULL);
		return;
	}
	if (strcmp(fl_signer_key_id(next), fl_signer_key_id(*signer)) == 0) {
		fl_slog(FL_SLOG_INFO, "signing key unchanged", "key_id", fl_signer_key_id(next),
			NULL);
		fl_signer_destroy(next);
		return;
	}
	st = fl_log_rotate_key(log, next, fl_time_now_us(), &result);
	if (st != FL_OK) {
		fl_slog(FL_SLOG_ERROR, "key rotation failed", "status", fl_status_str(st), NULL);
		fl_signer_destroy(next);
		return;
	}
	char seq[24];
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)result.seq);
	fl_slog(FL_SLOG_INFO, "signing key rotated", "old_key_id", fl_signer_key_id(*signer),
		"key_id", fl_signer_key_id(next), "seq", seq, NULL);
	/* The old key signed the key event; nothing uses it any more. */
	fl_signer_destroy(*signer);
	*signer = next;
}

int main(int argc, char **argv)
{
	char error[256];
	struct fl_config *config;
	struct fl_command cmd = {0};
	struct fl_auth *auth = NULL;
	struct fl_signer *signer = NULL;
	int64_t max_body, max_map;
	enum fl_status st;

	config = fl_svc_config("command-svc", options, N_OPTIONS, argc, argv);
	if (fl_config_get_bool(config, "version")) {
		fl_version_print(stdout, "command-svc", mdb_version(NULL, NULL, NULL),
				 nats_GetVersion());
		fl_config_destroy(config);
		return 0;
	}
	if (fl_config_get_int(config, "max-body", 1024, INT64_C(1) << 30, &max_body) != FL_OK ||
	    fl_config_get_int(config, "max-map-bytes", 0, INT64_MAX, &max_map) != FL_OK)
		fatal("bad --max-body or --max-map-bytes", NULL);
	if (fl_config_get_duration(config, "max-future-skew", 1000000, INT64_C(365) * 86400000000,
				   &cmd.max_future_skew_us) != FL_OK)
		fatal("bad --max-future-skew: a duration like 30s, 5m, 1h or 1d, at most 365d",
		      fl_config_get(config, "max-future-skew"));

	/* NATS: every mistake in the servers, credentials or stream settings
	 * stops the start, before anything is opened. */
	struct fl_publisher_config publisher_config = {0};
	fl_nats_settings_from_config(config, &publisher_config.nats);
	if (!publisher_config.nats.urls)
		fatal("--nats is required: the NATS servers to publish to", NULL);
	if (fl_nats_settings_check(&publisher_config.nats, error, sizeof(error)) != FL_OK)
		fatal("bad NATS settings", error);
	const char *max_age = fl_config_get(config, "nats-max-age");
	if (fl_config_get_int(config, "nats-replicas", 1, 5, &publisher_config.replicas) != FL_OK)
		fatal("bad --nats-replicas", "a number of replicas from 1 to 5");
	if (max_age && fl_duration_parse(max_age, &publisher_config.max_age_us) != FL_OK)
		fatal("bad --nats-max-age", "a duration such as 30d, 12h or 90m");
	if (fl_duration_parse(fl_config_get(config, "nats-duplicate-window"),
			      &publisher_config.duplicate_window_us) != FL_OK)
		fatal("bad --nats-duplicate-window", "a duration such as 2m or 1h");

	/* Signals are taken by sigwait below, in this thread only. */
	sigset_t signals;
	fl_svc_block_signals(&signals);

	const char *key_path = fl_config_get(config, "signing-key");
	if (!key_path)
		fatal("--signing-key is required (make one with `fledger keygen --out FILE`)",
		      NULL);
	if ((st = fl_signer_load(key_path, &signer)) != FL_OK)
		fatal("cannot load the signing key", fl_status_str(st));

	auth = fl_svc_auth(config);

	struct fl_log_options log_options = {.max_map_bytes = (size_t)max_map};
	st = fl_svc_lock_data_dir(fl_config_get(config, "data-dir"), error, sizeof(error));
	if (st == FL_ERR_CONFLICT)
		fatal("another process uses this --data-dir (a second command-svc?)",
		      fl_config_get(config, "data-dir"));
	if (st != FL_OK)
		fatal("cannot create or lock --data-dir", error);
	st = fl_log_open(fl_config_get(config, "data-dir"), &log_options, signer, &cmd.log);
	if (st == FL_ERR_CONFLICT)
		fatal("the log was last signed with another key: start with that key, then replace "
		      "the key file and send SIGHUP to rotate",
		      NULL);
	if (st != FL_OK)
		fatal("cannot open the log", fl_status_str(st));
	if (fl_view_registry_create(&cmd.registry) != FL_OK ||
	    (st = fl_committer_load_views(cmd.log, cmd.registry)) != FL_OK)
		fatal("cannot load the views from the log", fl_status_str(st));
	publisher_config.log = cmd.log;
	publisher_config.registry = cmd.registry;

	/* Metrics (CONTRACT §10). */
	static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
						0.025,	0.05,	 0.1,	 0.25,	1,	5};
	static const char *const http_labels[] = {"route", "code", NULL};
	struct fl_counter *ingest = NULL;
	struct fl_histogram *append_latency = NULL;
	if (fl_metrics_create(&cmd.metrics) != FL_OK ||
	    fl_metrics_counter(cmd.metrics, "fledger_ingest_events_total",
			       "Feature and view events appended to the log", NULL,
			       &ingest) != FL_OK ||
	    fl_metrics_histogram(cmd.metrics, "fledger_append_latency_seconds",
				 "Time to append and sync one group commit", NULL, latency_bounds,
				 sizeof(latency_bounds) / sizeof(latency_bounds[0]),
				 &append_latency) != FL_OK ||
	    fl_metrics_gauge(cmd.metrics, "fledger_publish_lag_events",
			     "Committed events not yet acknowledged by NATS", NULL,
			     &cmd.publish_lag) != FL_OK ||
	    fl_metrics_gauge(cmd.metrics, "fledger_log_tree_size", "Events in the log", NULL,
			     &cmd.tree_size) != FL_OK ||
	    fl_metrics_gauge(cmd.metrics, "fledger_nats_connected",
			     "1 while the publisher is connected to NATS with the stream in place",
			     NULL, &cmd.nats_connected) != FL_OK ||
	    fl_metrics_counter(cmd.metrics, "fledger_http_requests_total",
			       "HTTP requests by route and status code", http_labels,
			       &cmd.http_requests) != FL_OK)
		fatal("cannot set up metrics", NULL);

	if ((st = fl_publisher_create(&publisher_config, &cmd.publisher)) != FL_OK)
		fatal("cannot start the NATS publisher", fl_status_str(st));
	struct fl_committer_config cc = {.log = cmd.log,
					 .registry = cmd.registry,
					 .ingest_events = ingest,
					 .append_latency = append_latency,
					 .notify = on_commit,
					 .notify_ctx = cmd.publisher};
	if ((st = fl_committer_create(&cc, &cmd.committer)) != FL_OK)
		fatal("cannot start the committer", fl_status_str(st));
	cmd.auth = auth;

	struct fl_http_options http = {
	    .listen = fl_config_get(config, "listen"),
	    .max_body_bytes = (size_t)max_body,
	    .tls_cert_file = fl_config_get(config, "tls-cert"),
	    .tls_key_file = fl_config_get(config, "tls-key"),
	    .tls_client_ca_file = fl_config_get(config, "tls-client-ca"),
	    .on_complete = fl_command_on_complete,
	};
	fl_svc_http_limits(config, &http);
	struct fl_http_server *server;
	if (fl_http_server_create(&http, fl_command_handle, &cmd, error, sizeof(error), &server) !=
	    FL_OK)
		fatal("cannot start the HTTP server", error);
	char port[8], size[24];
	snprintf(port, sizeof(port), "%u", fl_http_server_port(server));
	snprintf(size, sizeof(size), "%llu", (unsigned long long)fl_log_size(cmd.log));
	fl_slog(FL_SLOG_INFO, "command-svc listening", "listen", http.listen, "port", port,
		"tree_size", size, "key_id", fl_signer_key_id(signer), "tls",
		http.tls_cert_file ? "on" : "off", NULL);

	for (;;) {
		int sig = 0;
		sigwait(&signals, &sig);
		if (sig == SIGHUP) {
			reload_key(cmd.log, key_path, &signer);
			continue;
		}
		break;
	}
	fl_slog(FL_SLOG_INFO, "shutting down", NULL);
	/* Stop taking requests; those in flight are committed and answered. */
	fl_http_server_destroy(server);
	fl_committer_destroy(cmd.committer);
	fl_publisher_destroy(cmd.publisher, 2000);
	fl_log_close(cmd.log);
	fl_view_registry_destroy(cmd.registry);
	fl_metrics_destroy(cmd.metrics);
	fl_auth_destroy(auth);
	fl_signer_destroy(signer);
	fl_config_destroy(config);
	fl_slog(FL_SLOG_INFO, "stopped", NULL);
	return 0;
}
