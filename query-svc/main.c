/*
 * query-svc: keeps a verified replica of command-svc's log, builds read
 * models from it and serves reads. main parses the configuration and wires
 * the modules; see routes.c (HTTP), read_plan.c and read_answer.c (a read
 * parsed, then answered), waiter.c (reads waiting for a min_seq),
 * projection.c (read models) and sync.c (consuming and verifying the log).
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>
#include <nats/nats.h>

#include "audit.h"
#include "eventlog/eventlog.h"
#include "fledger/config.h"
#include "fledger/httpc.h"
#include "fledger/slog.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "fledger/version.h"
#include "historical.h"
#include "projection.h"
#include "routes.h"
#include "sync.h"

static const struct fl_config_option options[] = {
    {"listen", "FLEDGER_LISTEN", "127.0.0.1:8081", "HOST:PORT to serve HTTP on", false},
    {"data-dir", "FLEDGER_DATA_DIR", "./data/query",
     "directory of the replica log and the read models", false},
    {"nats", "FLEDGER_NATS", "nats://127.0.0.1:4222",
     "NATS servers to consume from, comma-separated (empty: poll command-svc only)", false},
    FL_NATS_OPTIONS,
    {"signing-key", "FLEDGER_SIGNING_KEY", NULL,
     "query-svc's own Ed25519 private key (PEM), for the read audit", false},
    {"tokens", "FLEDGER_TOKENS", NULL, "tokens file: principals, roles, token hashes", false},
    {"insecure-no-auth", "FLEDGER_INSECURE_NO_AUTH", NULL,
     "development only: no tokens, every request is admin", true},
    {"command-ca", "FLEDGER_COMMAND_CA", NULL,
     "PEM CA of command-svc's certificate, for an https:// --command-url", false},
    {"command-cert", "FLEDGER_COMMAND_CERT", NULL,
     "PEM client certificate presented to command-svc (mutual TLS; with --command-key)", false},
    {"command-key", "FLEDGER_COMMAND_KEY", NULL, "PEM private key of --command-cert", false},
    {"command-url", "FLEDGER_COMMAND_URL", "http://127.0.0.1:8080",
     "command-svc, for checkpoints, keys and filling gaps", false},
    {"trust-key", "FLEDGER_TRUST_KEY", NULL,
     "PEM public key of command-svc to trust (repeatable; the variable is a list split at , "
     "or :); without it, the first key seen is pinned in <data-dir>/trusted-keys",
     false},
    {"command-token-file", "FLEDGER_COMMAND_TOKEN_FILE", NULL,
     "file holding the token (role replicator) presented to command-svc", false},
    {"consumer", "FLEDGER_CONSUMER", "query-1", "durable NATS consumer name (one per instance)",
     false},
    {"tls-cert", "FLEDGER_TLS_CERT", NULL, "PEM certificate: serve HTTPS", false},
    {"tls-key", "FLEDGER_TLS_KEY", NULL, "PEM private key of --tls-cert", false},
    {"tls-client-ca", "FLEDGER_TLS_CLIENT_CA", NULL, "PEM CA: require client certificates", false},
    {"max-body", "FLEDGER_MAX_BODY", "1048576", "largest request body in bytes", false},
    {"max-historical-body", "FLEDGER_MAX_HISTORICAL_BODY", "268435456",
     "largest body of POST /v1/features:historical in bytes (spooled to disk, not memory)", false},
    {"spool-dir", "FLEDGER_SPOOL_DIR", NULL,
     "directory for the unlinked temporary files of training-data exports (default $TMPDIR "
     "or /tmp)",
     false},
    FL_SVC_HTTP_LIMIT_OPTIONS,
    {"max-parked-reads", "FLEDGER_MAX_PARKED_READS", "1024",
     "reads waiting for their min_seq at most; more get 503", false},
    {"http-threads", "FLEDGER_HTTP_THREADS", "1",
     "HTTP server threads (reads run on them in parallel)", false},
    {"read-workers", "FLEDGER_READ_WORKERS", "2",
     "threads for expensive reads (batches of many ids, long windows), off the HTTP threads",
     false},
    {"max-read-cost", "FLEDGER_MAX_READ_COST", "1000000",
     "cost units one read may spend (one per entity id, one per stored event visited); "
     "more is 422 read_too_expensive",
     false},
    {"lag-bound-ms", "FLEDGER_LAG_BOUND_MS", "5000",
     "/readyz fails when applying lags the log by longer than this", false},
    {"rebuild", "FLEDGER_REBUILD", NULL,
     "delete the read models and the replica, and rebuild them from command-svc's log", true},
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

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf dir (an absent dir is fine). */
static int remove_tree(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) != 0)
		return errno == ENOENT ? 0 : errno;
	return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 ? errno : 0;
}

/* Reads the replicator token: the file's text without surrounding whitespace. */
static char *read_token(const char *path)
{
	char *text;
	size_t len;
	if (fl_file_read(path, &text, &len) != FL_OK)
		fatal("cannot read --command-token-file", path);
	size_t start = 0;
	while (start < len && strchr(" \t\r\n", text[start]))
		start++;
	while (len > start && strchr(" \t\r\n", text[len - 1]))
		len--;
	memmove(text, text + start, len - start);
	text[len - start] = '\0';
	if (!text[0])
		fatal("--command-token-file is empty", path);
	return text;
}

int main(int argc, char **argv)
{
	char error[256];
	struct fl_config *config;
	struct fl_query query = {0};
	struct fl_auth *auth = NULL;
	struct fl_signer *signer = NULL;
	char *command_token = NULL;
	int64_t max_body, max_historical_body, lag_bound_ms, http_threads, max_parked, read_workers,
	    max_read_cost;
	enum fl_status st;

	config = fl_svc_config("query-svc", options, N_OPTIONS, argc, argv);
	if (fl_config_get_bool(config, "version")) {
		fl_version_print(stdout, "query-svc", mdb_version(NULL, NULL, NULL),
				 nats_GetVersion());
		fl_config_destroy(config);
		return 0;
	}
	if (fl_config_get_int(config, "max-body", 1024, INT64_C(1) << 30, &max_body) != FL_OK ||
	    fl_config_get_int(config, "max-historical-body", 1024, INT64_C(1) << 40,
			      &max_historical_body) != FL_OK ||
	    fl_config_get_int(config, "lag-bound-ms", 0, INT64_C(86400000), &lag_bound_ms) !=
		FL_OK ||
	    fl_config_get_int(config, "http-threads", 1, 64, &http_threads) != FL_OK ||
	    fl_config_get_int(config, "max-parked-reads", 1, 1000000, &max_parked) != FL_OK ||
	    fl_config_get_int(config, "read-workers", 0, 64, &read_workers) != FL_OK ||
	    fl_config_get_int(config, "max-read-cost", 1, INT64_MAX, &max_read_cost) != FL_OK)
		fatal("bad --max-body, --max-historical-body, --lag-bound-ms, --http-threads, "
		      "--max-parked-reads, "
		      "--read-workers or --max-read-cost",
		      NULL);

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
	if (fl_config_get(config, "command-token-file"))
		command_token = read_token(fl_config_get(config, "command-token-file"));

	/* Checked before anything is opened: a bad pair changes nothing. */
	const char *command_cert = fl_config_get(config, "command-cert");
	const char *command_key = fl_config_get(config, "command-key");
	char why[300];
	if (!command_cert != !command_key)
		fatal("--command-cert and --command-key go together: give both", NULL);
	struct fl_httpc_options command_http = {.ca_file = fl_config_get(config, "command-ca"),
						.cert_file = command_cert,
						.key_file = command_key};
	struct fl_httpc *probe = NULL;
	if (fl_httpc_create(&command_http, why, sizeof(why), &probe) != FL_OK)
		fatal("cannot use --command-cert/--command-key", why);
	fl_httpc_destroy(probe);
	struct fl_nats_settings nats_settings;
	fl_nats_settings_from_config(config, &nats_settings);
	if (fl_nats_settings_check(&nats_settings, why, sizeof(why)) != FL_OK)
		fatal("bad NATS settings", why);

	/* The replica log and the read models, side by side in --data-dir. */
	const char *data_dir = fl_config_get(config, "data-dir");
	char log_dir[4096], projection_dir[4096], audit_dir[4096];
	st = fl_svc_lock_data_dir(data_dir, error, sizeof(error));
	if (st == FL_ERR_CONFLICT)
		fatal("another process uses this --data-dir (a second query-svc?)", data_dir);
	if (st != FL_OK)
		fatal("cannot create or lock --data-dir", error);
	if (snprintf(log_dir, sizeof(log_dir), "%s/log", data_dir) >= (int)sizeof(log_dir) ||
	    snprintf(projection_dir, sizeof(projection_dir), "%s/projection", data_dir) >=
		(int)sizeof(projection_dir) ||
	    snprintf(audit_dir, sizeof(audit_dir), "%s/audit", data_dir) >= (int)sizeof(audit_dir))
		fatal("--data-dir is too long", NULL);
	/* The keys of command-svc to trust: --trust-key, and the ones pinned
	 * before (trust on first use, or learnt from key events). */
	char pin_path[4096], **trust_files = NULL;
	size_t n_trust_files = 0;
	struct fl_trust *trust = NULL;
	if (snprintf(pin_path, sizeof(pin_path), "%s/trusted-keys", data_dir) >=
	    (int)sizeof(pin_path))
		fatal("--data-dir is too long", NULL);
	if (fl_trust_create(&trust) != FL_OK ||
	    fl_config_get_list(config, "trust-key", ",:", &trust_files, &n_trust_files) != FL_OK)
		fatal("out of memory", NULL);
	for (size_t i = 0; i < n_trust_files; i++) {
		st = fl_trust_load_file(trust, trust_files[i]);
		if (st != FL_OK) {
			snprintf(why, sizeof(why), "%s: %s", trust_files[i],
				 st == FL_ERR_INVALID ? "not a file of PEM Ed25519 public keys"
						      : fl_status_str(st));
			fatal("cannot use --trust-key", why);
		}
	}
	fl_config_list_free(trust_files);
	st = fl_trust_load_file(trust, pin_path);
	if (st != FL_OK && st != FL_ERR_NOT_FOUND)
		fatal("cannot read the pinned keys (delete the file to trust on first use again)",
		      pin_path);
	for (size_t i = 0; i < fl_trust_count(trust); i++)
		fl_slog(FL_SLOG_INFO, "trusting command-svc key", "key_id",
			fl_trust_key_id(trust, i), NULL);

	bool rebuild = fl_config_get_bool(config, "rebuild");
	int err;
	if (rebuild && (err = remove_tree(log_dir)) != 0)
		fatal("--rebuild: cannot delete the replica log", strerror(err));

	struct fl_log_options log_options = {.replica = true};
	if ((st = fl_log_open(log_dir, &log_options, NULL, &query.replica)) != FL_OK)
		fatal("cannot open the replica log", fl_status_str(st));
	if ((st = fl_projection_open(projection_dir, &query.projection)) != FL_OK)
		fatal("cannot open the read models", fl_status_str(st));
	/* The read audit log (never rebuilt: it is the record of what was read). */
	struct fl_log_options audit_options = {.checkpoint_prefix = FL_READ_CHECKPOINT_PREFIX};
	st = fl_log_open(audit_dir, &audit_options, signer, &query.audit_log);
	if (st == FL_ERR_CONFLICT)
		fatal("the read audit log was signed with another key: start with that key", NULL);
	if (st != FL_OK)
		fatal("cannot open the read audit log", fl_status_str(st));
	if (rebuild) {
		if ((st = fl_projection_reset(query.projection)) != FL_OK)
			fatal("--rebuild: cannot delete the read models", fl_status_str(st));
		fl_slog(FL_SLOG_INFO, "rebuilding the replica and the read models from command-svc",
			NULL);
	}
	if (fl_projection_applied_seq(query.projection) > fl_log_size(query.replica)) {
		char detail[96];
		snprintf(detail, sizeof(detail), "applied_seq %llu, replica size %llu",
			 (unsigned long long)fl_projection_applied_seq(query.projection),
			 (unsigned long long)fl_log_size(query.replica));
		fatal("the read models are ahead of the replica log; start with --rebuild", detail);
	}

	/* Metrics (CONTRACT §10). */
	static const double lag_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
					    0.5,   1,	   2.5,	  5,	10,    30,   60};
	static const char *const http_labels[] = {"route", "code", NULL};
	struct fl_histogram *projection_lag = NULL;
	if (fl_metrics_create(&query.metrics) != FL_OK ||
	    fl_metrics_histogram(query.metrics, "fledger_online_read_latency_seconds",
				 "Time to answer one online read (a min_seq wait excluded)", NULL,
				 NULL, 0, &query.read_latency) != FL_OK ||
	    fl_metrics_histogram(
		query.metrics, "fledger_projection_lag_seconds",
		"From an event's ingest_ts to its being applied to the read models", NULL,
		lag_bounds, sizeof(lag_bounds) / sizeof(lag_bounds[0]), &projection_lag) != FL_OK ||
	    fl_metrics_gauge(query.metrics, "fledger_applied_seq",
			     "Seq of the last event applied to the read models", NULL,
			     &query.applied_seq) != FL_OK ||
	    fl_metrics_gauge(query.metrics, "fledger_waiting_reads",
			     "Reads waiting for their min_seq to be applied", NULL,
			     &query.waiting_reads) != FL_OK ||
	    fl_metrics_gauge(query.metrics, "fledger_nats_connected",
			     "1 while consuming NATS (connected, subscribed, consumer answering)",
			     NULL, &query.nats_connected) != FL_OK ||
	    fl_metrics_counter(query.metrics, "fledger_http_requests_total",
			       "HTTP requests by route and status code", http_labels,
			       &query.http_requests) != FL_OK)
		fatal("cannot set up metrics", NULL);
	fl_gauge_set(query.applied_seq, (double)fl_projection_applied_seq(query.projection));

	struct fl_histogram *audit_latency = NULL;
	if (fl_metrics_histogram(query.metrics, "fledger_audit_commit_latency_seconds",
				 "Time to append and sync one group of read audit records", NULL,
				 NULL, 0, &audit_latency) != FL_OK ||
	    fl_audit_create(
		&(struct fl_audit_config){.log = query.audit_log, .commit_latency = audit_latency},
		&query.audit) != FL_OK)
		fatal("cannot start the read audit", NULL);
	query.auth = auth;
	query.signer = signer;
	query.lag_bound_ms = lag_bound_ms;
	query.max_waiting_reads = (size_t)max_parked;
	query.read_workers = (unsigned)read_workers;
	query.max_read_cost = (uint64_t)max_read_cost;
	query.spool_dir = fl_config_get(config, "spool-dir");
	if (query.spool_dir && !query.spool_dir[0])
		query.spool_dir = NULL;
	if ((st = fl_query_init(&query)) != FL_OK)
		fatal("cannot start the read waiter", fl_status_str(st));

	struct fl_sync_config sync_config = {
	    .consumer = fl_config_get(config, "consumer"),
	    .command_url = fl_config_get(config, "command-url"),
	    .command_token = command_token,
	    .command_http = command_http,
	    .replica = query.replica,
	    .projection = query.projection,
	    .poll_ms = 1000,
	    .on_applied = fl_query_on_applied,
	    .on_applied_ctx = &query,
	    .lag = projection_lag,
	    .trust = trust,
	    .trust_pin_path = pin_path,
	};
	sync_config.nats = nats_settings;
	struct fl_sync *sync;
	if ((st = fl_sync_create(&sync_config, &sync)) != FL_OK)
		fatal("cannot start the sync", fl_status_str(st));
	query.sync = sync;

	struct fl_http_options http = {
	    .listen = fl_config_get(config, "listen"),
	    .max_body_bytes = (size_t)max_body,
	    .tls_cert_file = fl_config_get(config, "tls-cert"),
	    .tls_key_file = fl_config_get(config, "tls-key"),
	    .tls_client_ca_file = fl_config_get(config, "tls-client-ca"),
	    .threads = (unsigned)http_threads,
	    .on_complete = fl_query_on_complete,
	    .spool_body = fl_query_historical_spools,
	    .max_spool_body_bytes = (size_t)max_historical_body,
	    .spool_dir = query.spool_dir,
	};
	fl_svc_http_limits(config, &http);
	struct fl_http_server *server;
	if (fl_http_server_create(&http, fl_query_handle, &query, error, sizeof(error), &server) !=
	    FL_OK)
		fatal("cannot start the HTTP server", error);
	char port[8], applied[24], replica_size[24];
	snprintf(port, sizeof(port), "%u", fl_http_server_port(server));
	snprintf(applied, sizeof(applied), "%llu",
		 (unsigned long long)fl_projection_applied_seq(query.projection));
	snprintf(replica_size, sizeof(replica_size), "%llu",
		 (unsigned long long)fl_log_size(query.replica));
	fl_slog(FL_SLOG_INFO, "query-svc listening", "listen", http.listen, "port", port,
		"applied_seq", applied, "replica_size", replica_size, "command_url",
		sync_config.command_url, "nats", sync_config.nats.urls, "consumer",
		sync_config.consumer, "key_id", fl_signer_key_id(signer), "tls",
		http.tls_cert_file ? "on" : "off", NULL);

	for (;;) {
		int sig = 0;
		sigwait(&signals, &sig);
		if (sig == SIGHUP) {
			fl_slog(FL_SLOG_INFO, "SIGHUP: nothing to reload yet", NULL);
			continue;
		}
		break;
	}
	fl_slog(FL_SLOG_INFO, "shutting down", NULL);
	/* Reads waiting for min_seq are answered now (503 when not reached). */
	fl_query_stop_waiting(&query);
	/* Stop taking requests; those in flight are answered. */
	fl_http_server_destroy(server);
	fl_audit_destroy(query.audit);
	fl_sync_destroy(sync);
	query.sync = NULL;
	fl_query_finish(&query);
	/* The replica first: closing makes its last commit durable, and the
	 * read models, once marked closed, must never be ahead of it. */
	fl_log_close(query.replica);
	fl_projection_close(query.projection);
	fl_trust_destroy(trust);
	fl_log_close(query.audit_log);
	fl_metrics_destroy(query.metrics);
	fl_auth_destroy(auth);
	fl_signer_destroy(signer);
	free(command_token);
	fl_config_destroy(config);
	fl_slog(FL_SLOG_INFO, "stopped", NULL);
	return 0;
}
