#ifndef FLEDGER_SVC_H
#define FLEDGER_SVC_H

/*
 * Request plumbing both HTTP services repeat: authentication of the bearer
 * token, role checks, JSON bodies (content type, nesting, UTF-8) and the
 * numeric query parameters of the log and proof routes, each answered with
 * the error body of CONTRACT §9 when it fails.
 */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <signal.h>

#include "fledger/auth.h"
#include "fledger/config.h"
#include "fledger/error.h"
#include "fledger/http.h"

#define FL_JSON_MAX_DEPTH 32

/*
 * The principal of req, or NULL after answering 401. With auth NULL (the
 * insecure development mode) every request is the built-in admin.
 */
const struct fl_principal *fl_svc_authenticate(const struct fl_auth *auth,
					       struct fl_http_request *req);

/* The principal with role (or admin), or false after answering 403. */
bool fl_svc_require_role(struct fl_http_request *req, const struct fl_principal *principal,
			 const char *role, const char *other_role);

/*
 * Parses the JSON body of a POST: 415 unless Content-Type is
 * application/json, 400 for an empty body, invalid UTF-8, malformed JSON,
 * nesting over FL_JSON_MAX_DEPTH, or a top level that is not an object.
 * Returns a new reference or NULL after answering.
 */
json_t *fl_svc_json_body(struct fl_http_request *req);

/*
 * Reads an optional unsigned query parameter in [min, max] (default when
 * absent). false after answering 400 naming the parameter.
 */
bool fl_svc_query_u64(struct fl_http_request *req, const char *name, uint64_t default_value,
		      uint64_t min, uint64_t max, uint64_t *ret_value);

/*
 * As fl_svc_query_u64, from the parameter's text (NULL when absent), filling
 * err with the same 400 invalid_parameter instead of answering: for routes
 * whose errors go through an answer of their own.
 */
bool fl_svc_param_u64(const char *name, const char *text, uint64_t default_value, uint64_t min,
		      uint64_t max, uint64_t *ret_value, struct fl_error *err);

/*
 * The value of a query parameter's text: decimal digits only (no sign, no
 * spaces), in [min, max]. false for anything else; *ret_value untouched.
 */
bool fl_svc_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret_value);

/* The principal of the insecure development mode: name "dev", role admin. */
const struct fl_principal *fl_svc_dev_principal(void);

/*
 * Start-up of a service's main(), the same for both services. These end the
 * process on failure, after saying why: they are for main() only.
 */

/*
 * Parses argv: a bad flag prints "program: why" and exits 2, --help prints
 * the usage and exits 0. Applies --log-level. The caller destroys the result.
 */
struct fl_config *fl_svc_config(const char *program, const struct fl_config_option *options,
				size_t n_options, int argc, char **argv);

/*
 * The HTTP limits every service takes, for its option table, and their
 * reading into the server's options (exits 1 on a bad value).
 */
/* clang-format off */
#define FL_SVC_HTTP_LIMIT_OPTIONS \
	{"max-connections", "FLEDGER_MAX_CONNECTIONS", "4096", \
	 "open HTTP connections at most; more wait in the listen backlog", false}, \
	{"max-connections-per-ip", "FLEDGER_MAX_CONNECTIONS_PER_IP", "256", \
	 "open HTTP connections from one client address at most; more are closed", false}, \
	{"request-timeout", "FLEDGER_REQUEST_TIMEOUT", "10", \
	 "seconds from a request's first byte to its last; slower ones are closed", false}
/* clang-format on */
void fl_svc_http_limits(const struct fl_config *config, struct fl_http_options *http);

/*
 * The principals of --tokens; NULL with --insecure-no-auth (every request is
 * the development admin, logged loudly). Exits 1 when neither is given or
 * the file is bad.
 */
struct fl_auth *fl_svc_auth(const struct fl_config *config);

/*
 * Creates dir and its missing parents, and takes an exclusive lock on
 * dir/service.lock, held until the process exits: two services on one data
 * directory would both write it. FL_ERR_CONFLICT when another process holds
 * the lock; otherwise the status of what failed, with the system's reason
 * in error.
 */
enum fl_status fl_svc_lock_data_dir(const char *dir, char *error, size_t error_size);

/*
 * Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and the threads it
 * starts afterwards, so that main can take them with sigwait(ret_set);
 * ignores SIGPIPE.
 */
void fl_svc_block_signals(sigset_t *ret_set);

/*
 * What both services do when a request is over: count it in requests
 * (labels route, code; the route is the request's user slot, "other" when
 * unset), write the access-log line (--log-level debug), and warn about a
 * 5xx, except 503 and 504 when quiet_unavailable (query-svc answers those
 * by design: audit unavailable, min_seq waits).
 */
struct fl_counter;
void fl_svc_request_done(struct fl_http_request *req, struct fl_counter *requests, unsigned status,
			 int64_t duration_us, bool quiet_unavailable);

#endif
