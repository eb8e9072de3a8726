/*
 * Request plumbing shared by the services (see svc.h).
 */
#include "fledger/svc.h"

#include "fledger/metrics.h"
#include "fledger/slog.h"
#include "fledger/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_once_t dev_once = PTHREAD_ONCE_INIT;
static struct fl_auth *dev_auth;
static const struct fl_principal *dev_principal;

static void make_dev_principal(void)
{
	char hash[FL_AUTH_HASH_HEX_LEN], text[256];
	fl_auth_token_hash("dev", hash);
	snprintf(text, sizeof(text),
		 "{\"principals\":[{\"name\":\"dev\",\"roles\":[\"admin\"],"
		 "\"token_sha256\":\"%s\"}]}",
		 hash);
	if (fl_auth_parse(text, strlen(text), NULL, 0, &dev_auth) == FL_OK)
		fl_auth_lookup(dev_auth, "Bearer dev", &dev_principal);
}

const struct fl_principal *fl_svc_dev_principal(void)
{
	pthread_once(&dev_once, make_dev_principal);
	return dev_principal;
}

const struct fl_principal *fl_svc_authenticate(const struct fl_auth *auth,
					       struct fl_http_request *req)
{
	const struct fl_principal *principal = NULL;

	if (!auth)
		return fl_svc_dev_principal();
	const char *header = fl_http_header(req, "Authorization");
	enum fl_status st = fl_auth_lookup(auth, header, &principal);
	if (st == FL_OK)
		return principal;
	fl_http_add_header(req, "WWW-Authenticate", "Bearer");
	fl_http_respond_error(req, 401, header ? "unknown_token" : "missing_token",
			      header ? "the bearer token is not known"
				     : "an Authorization: Bearer <token> header is required",
			      NULL);
	return NULL;
}

bool fl_svc_require_role(struct fl_http_request *req, const struct fl_principal *principal,
			 const char *role, const char *other_role)
{
	if (fl_principal_has_role(principal, "admin") || fl_principal_has_role(principal, role) ||
	    (other_role && fl_principal_has_role(principal, other_role)))
		return true;
	char message[160];
	snprintf(message, sizeof(message), "this route needs the role %s%s%s", role,
		 other_role ? " or " : "", other_role ? other_role : "");
	fl_http_respond_error(req, 403, "forbidden", message, NULL);
	return false;
}

/* Nesting depth of JSON text, counting brackets outside strings. */
static bool depth_ok(const char *text, size_t len)
{
	int depth = 0;
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > FL_JSON_MAX_DEPTH)
				return false;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return true;
}

json_t *fl_svc_json_body(struct fl_http_request *req)
{
	const char *type = fl_http_header(req, "Content-Type");
	size_t len = 0;
	const char *body = fl_http_body(req, &len);
	json_error_t jerr;

	if (!type || strncasecmp(type, "application/json", 16) != 0 ||
	    (type[16] != '\0' && type[16] != ';' && type[16] != ' ')) {
		fl_http_respond_error(req, 415, "unsupported_media_type",
				      "the body must be JSON with Content-Type: application/json",
				      NULL);
		return NULL;
	}
	if (!body || len == 0) {
		fl_http_respond_error(req, 400, "empty_body", "the request body is empty", NULL);
		return NULL;
	}
	if (!depth_ok(body, len)) {
		char message[96];
		snprintf(message, sizeof(message), "JSON nesting deeper than %d levels",
			 FL_JSON_MAX_DEPTH);
		fl_http_respond_error(req, 400, "too_deep", message, NULL);
		return NULL;
	}
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char message[256];
		bool utf8 = json_error_code(&jerr) == json_error_invalid_utf8;
		snprintf(message, sizeof(message), "%s at line %d, column %d", jerr.text, jerr.line,
			 jerr.column);
		fl_http_respond_error(req, 400, utf8 ? "invalid_utf8" : "invalid_json", message,
				      NULL);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		fl_http_respond_error(req, 400, "invalid_request", "the body must be a JSON object",
				      NULL);
		return NULL;
	}
	return root;
}

bool fl_svc_query_u64(struct fl_http_request *req, const char *name, uint64_t default_value,
		      uint64_t min, uint64_t max, uint64_t *ret_value)
{
	struct fl_error err;
	if (fl_svc_param_u64(name, fl_http_query(req, name), default_value, min, max, ret_value,
			     &err))
		return true;
	fl_http_respond_error(req, err.http_status, err.code, err.message, err.field);
	return false;
}

bool fl_svc_param_u64(const char *name, const char *text, uint64_t default_value, uint64_t min,
		      uint64_t max, uint64_t *ret_value, struct fl_error *err)
{
	if (!text) {
		*ret_value = default_value;
		return true;
	}
	if (!fl_svc_parse_u64(text, min, max, ret_value)) {
		fl_error_set(err, 400, "invalid_parameter", name,
			     "%s must be an integer from %" PRIu64 " to %" PRIu64, name, min, max);
		return false;
	}
	return true;
}

bool fl_svc_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret_value)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno == ERANGE || v < min || v > max)
		return false;
	*ret_value = v;
	return true;
}

struct fl_config *fl_svc_config(const char *program, const struct fl_config_option *options,
				size_t n_options, int argc, char **argv)
{
	char error[256];
	struct fl_config *config;
	enum fl_slog_level level;

	if (fl_config_parse(options, n_options, argc, argv, error, sizeof(error), &config) !=
	    FL_OK) {
		fprintf(stderr, "%s: %s\n", program, error);
		exit(2);
	}
	if (fl_config_wants_help(config)) {
		char *usage = fl_config_usage(program, options, n_options);
		fputs(usage ? usage : "", stdout);
		free(usage);
		fl_config_destroy(config);
		exit(0);
	}
	if (fl_config_get(config, "log-level") &&
	    fl_slog_level_parse(fl_config_get(config, "log-level"), &level) == FL_OK)
		fl_slog_set_level(level);
	return config;
}

void fl_svc_http_limits(const struct fl_config *config, struct fl_http_options *http)
{
	int64_t connections, per_ip, timeout_s;

	if (fl_config_get_int(config, "max-connections", 1, 1000000, &connections) != FL_OK ||
	    fl_config_get_int(config, "max-connections-per-ip", 1, 1000000, &per_ip) != FL_OK ||
	    fl_config_get_int(config, "request-timeout", 1, 3600, &timeout_s) != FL_OK) {
		fl_slog(FL_SLOG_ERROR,
			"bad --max-connections, --max-connections-per-ip or "
			"--request-timeout (whole numbers from 1)",
			NULL);
		exit(1);
	}
	http->max_connections = (unsigned)connections;
	http->max_connections_per_ip = (unsigned)per_ip;
	http->request_timeout_s = (unsigned)timeout_s;
}

struct fl_auth *fl_svc_auth(const struct fl_config *config)
{
	char error[256];
	struct fl_auth *auth = NULL;
	const char *path = fl_config_get(config, "tokens");

	if (path) {
		if (fl_auth_load(path, error, sizeof(error), &auth) != FL_OK) {
			fl_slog(FL_SLOG_ERROR, "cannot load the tokens file", "detail", error,
				NULL);
			exit(1);
		}
		return auth;
	}
	if (!fl_config_get_bool(config, "insecure-no-auth")) {
		fl_slog(FL_SLOG_ERROR,
			"--tokens is required (or --insecure-no-auth for local development)", NULL);
		exit(1);
	}
	fl_slog(FL_SLOG_WARN,
		"INSECURE: no tokens file; every request is treated as admin. "
		"Never run like this outside local development.",
		NULL);
	return NULL;
}

enum fl_status fl_svc_lock_data_dir(const char *dir, char *error, size_t error_size)
{
	char path[4096];
	enum fl_status status = fl_make_dirs(dir, 0700, error, error_size);
	if (status != FL_OK)
		return status;
	if (snprintf(path, sizeof(path), "%s/service.lock", dir) >= (int)sizeof(path)) {
		fl_set_error(error, error_size, "%s", strerror(ENAMETOOLONG));
		return FL_ERR_INVALID;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = errno;
		fl_set_error(error, error_size, "%s", strerror(err));
		return fl_status_of_errno(err);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		close(fd);
		fl_set_error(error, error_size, "%s", strerror(err));
		return err == EWOULDBLOCK ? FL_ERR_CONFLICT : fl_status_of_errno(err);
	}
	return FL_OK; /* fd stays open, and the lock held, until the process exits */
}

void fl_svc_block_signals(sigset_t *ret_set)
{
	sigemptyset(ret_set);
	sigaddset(ret_set, SIGTERM);
	sigaddset(ret_set, SIGINT);
	sigaddset(ret_set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, ret_set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void fl_svc_request_done(struct fl_http_request *req, struct fl_counter *requests, unsigned status,
			 int64_t duration_us, bool quiet_unavailable)
{
	const char *route = fl_http_user(req);
	char code[8];
	snprintf(code, sizeof(code), "%u", status);
	const char *labels[] = {route ? route : "other", code};
	fl_counter_inc(fl_counter_with(requests, labels));
	/* The access log, one JSON line per request (--log-level debug). */
	char duration[24];
	snprintf(duration, sizeof(duration), "%lld", (long long)duration_us);
	fl_slog(FL_SLOG_DEBUG, "request", "request_id", fl_http_request_id(req), "method",
		fl_http_method(req), "route", labels[0], "status", code, "duration_us", duration,
		NULL);
	if (status >= 500 && !(quiet_unavailable && (status == 503 || status == 504)))
		fl_slog(FL_SLOG_WARN, "request failed", "request_id", fl_http_request_id(req),
			"route", labels[0], "status", code, NULL);
}
