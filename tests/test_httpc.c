#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fledger/http.h"
#include "fledger/httpc.h"
#include "fledger/util.h"

/*
 * The client against the project's own server on a loopback port, and
 * against a raw socket server that sends canned answers byte for byte (to
 * exercise bodies delimited by the end of the connection, chunked bodies,
 * cut answers and silence).
 */

#define BIG_LEN (3 * 1024 * 1024 + 17)

static struct fl_http_server *server;
static char base[64];
static char *big;

static enum fl_http_disposition handle(void *ctx, struct fl_http_request *req)
{
	const char *path = fl_http_path(req);
	(void)ctx;
	if (strcmp(path, "/hello") == 0) {
		fl_http_respond(req, 200, "text/plain", "hello world", 11);
	} else if (strcmp(path, "/echo") == 0) {
		const char *auth = fl_http_header(req, "Authorization");
		const char *from = fl_http_query(req, "from_seq");
		char text[512];
		int n = snprintf(text, sizeof(text), "%s|%s|%s", auth ? auth : "-",
				 from ? from : "-", fl_http_header(req, "Host"));
		fl_http_respond(req, 200, "text/plain", text, (size_t)n);
	} else if (strcmp(path, "/api/v1/keys") == 0) {
		fl_http_respond(req, 200, "text/plain", "prefixed", 8);
	} else if (strcmp(path, "/big") == 0) {
		fl_http_respond(req, 200, "application/octet-stream", big, BIG_LEN);
	} else {
		fl_http_respond_error(req, 404, "not_found", "no such route", NULL);
	}
	return FL_HTTP_DONE;
}

static void setup(void)
{
	struct fl_http_options options = {.listen = "127.0.0.1:0"};
	char error[200];

	big = malloc(BIG_LEN);
	cr_assert_not_null(big);
	for (size_t i = 0; i < BIG_LEN; i++)
		big[i] = (char)('a' + (i * 7919) % 26);
	cr_assert_eq(fl_http_server_create(&options, handle, NULL, error, sizeof(error), &server),
		     FL_OK, "%s", error);
	snprintf(base, sizeof(base), "http://127.0.0.1:%u", fl_http_server_port(server));
}

static void teardown(void)
{
	fl_http_server_destroy(server);
	free(big);
}

TestSuite(httpc, .init = setup, .fini = teardown, .timeout = 60);

/* ---- a raw server: accepts one connection, reads the request, sends canned bytes */

struct raw {
	int listen_fd;
	uint16_t port;
	const char *answer; /* NULL: say nothing and keep the connection open */
	size_t answer_len;
	char request[2048];
	pthread_t thread;
};

static void *raw_run(void *arg)
{
	struct raw *raw = arg;
	int fd = accept(raw->listen_fd, NULL, NULL);
	size_t got = 0;

	if (fd < 0)
		return NULL;
	while (got < sizeof(raw->request) - 1 && !strstr(raw->request, "\r\n\r\n")) {
		ssize_t n = read(fd, raw->request + got, sizeof(raw->request) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		raw->request[got] = '\0';
	}
	if (raw->answer) {
		cr_assert_eq(write(fd, raw->answer, raw->answer_len), (ssize_t)raw->answer_len);
	} else {
		char sink[64];
		while (read(fd, sink, sizeof(sink)) > 0) /* until the client gives up */
			;
	}
	close(fd);
	return NULL;
}

static void raw_start(struct raw *raw, const char *answer)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t addr_len = sizeof(addr);

	memset(raw->request, 0, sizeof(raw->request));
	raw->answer = answer;
	raw->answer_len = answer ? strlen(answer) : 0;
	raw->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(raw->listen_fd, 0);
	cr_assert_eq(bind(raw->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(listen(raw->listen_fd, 4), 0);
	getsockname(raw->listen_fd, (struct sockaddr *)&addr, &addr_len);
	raw->port = ntohs(addr.sin_port);
	cr_assert_eq(pthread_create(&raw->thread, NULL, raw_run, raw), 0);
}

static void raw_stop(struct raw *raw)
{
	pthread_join(raw->thread, NULL);
	close(raw->listen_fd);
}

/* Gets path from the raw server answering with answer. */
static enum fl_status raw_get(const char *answer, int timeout_ms, unsigned *status, char **body,
			      size_t *len, struct raw *raw)
{
	char url[64];
	raw_start(raw, answer);
	snprintf(url, sizeof(url), "http://localhost:%u", raw->port);
	enum fl_status st = fl_httpc_get(url, "/x", NULL, timeout_ms, status, body, len);
	raw_stop(raw);
	return st;
}

/* ---- against the project's server ----------------------------------- */

Test(httpc, gets_a_body_with_its_status)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(base, "/hello", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_eq(status, 200);
	cr_assert_eq(len, 11);
	cr_assert_str_eq(body, "hello world");
	free(body);
}

Test(httpc, sends_the_bearer_token_the_query_and_the_host)
{
	unsigned status = 0;
	char *body = NULL, expect[128];
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(base, "/echo?from_seq=42&limit=7", "s3cret-token", 2000, &status,
				  &body, &len),
		     FL_OK);
	snprintf(expect, sizeof(expect), "Bearer s3cret-token|42|%s", base + 7);
	cr_assert_str_eq(body, expect);
	free(body);
	cr_assert_eq(fl_httpc_get(base, "/echo", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_eq(strncmp(body, "-|-|", 4), 0, "%s", body);
	free(body);
}

Test(httpc, an_error_status_is_an_answer)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(base, "/nowhere", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_eq(status, 404);
	cr_assert_not_null(strstr(body, "\"not_found\""));
	cr_assert_eq(strlen(body), len);
	free(body);
}

Test(httpc, a_large_body_arrives_whole)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(base, "/big", NULL, 5000, &status, &body, &len), FL_OK);
	cr_assert_eq(status, 200);
	cr_assert_eq(len, BIG_LEN);
	cr_assert_eq(memcmp(body, big, BIG_LEN), 0);
	cr_assert_eq(body[len], '\0');
	free(body);
}

Test(httpc, a_base_url_may_carry_a_path_prefix_and_a_trailing_slash)
{
	unsigned status = 0;
	char *body = NULL, url[80];
	size_t len = 0;

	snprintf(url, sizeof(url), "%s/api/", base);
	cr_assert_eq(fl_httpc_get(url, "/v1/keys", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_eq(status, 200);
	cr_assert_str_eq(body, "prefixed");
	free(body);
}

Test(httpc, ipv6_literals_are_bracketed)
{
	struct fl_http_options options = {.listen = "[::1]:0"};
	struct fl_http_server *v6;
	char url[64], error[200], *body = NULL;
	unsigned status = 0;
	size_t len = 0;

	if (fl_http_server_create(&options, handle, NULL, error, sizeof(error), &v6) != FL_OK)
		cr_skip_test("no IPv6 loopback here");
	snprintf(url, sizeof(url), "http://[::1]:%u", fl_http_server_port(v6));
	cr_assert_eq(fl_httpc_get(url, "/hello", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_str_eq(body, "hello world");
	free(body);
	fl_http_server_destroy(v6);
}

Test(httpc, bad_arguments_are_refused_before_any_connection)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;
	const char *bad_bases[] = {"ftp://x",	     "http://",	    "http://:80",  "http://h:0",
				   "http://h:99999", "http://h:8x", "http://h:",   "http://[::1",
				   "http://u@h:80",  "http://h?x",  "127.0.0.1:80"};

	for (size_t i = 0; i < sizeof(bad_bases) / sizeof(bad_bases[0]); i++)
		cr_assert_eq(fl_httpc_get(bad_bases[i], "/", NULL, 100, &status, &body, &len),
			     FL_ERR_INVALID, "%s", bad_bases[i]);
	cr_assert_eq(fl_httpc_get(base, "no-slash", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(base, "/a b", NULL, 100, &status, &body, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(base, "/a\r\nX-Evil: 1", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(base, "/hello", "tok\r\nX-Evil: 1", 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(base, "/hello", "", 100, &status, &body, &len), FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(NULL, "/", NULL, 100, &status, &body, &len), FL_ERR_INVALID);
	cr_assert_null(body);
	cr_assert_eq(status, 0);
}

/* ---- failures ---------------------------------------------------------- */

Test(httpc, a_closed_port_is_unavailable)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t addr_len = sizeof(addr);
	unsigned status = 0;
	char *body = NULL, url[64];
	size_t len = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* A port that was free a moment ago and has no listener. */
	bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	getsockname(fd, (struct sockaddr *)&addr, &addr_len);
	close(fd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(addr.sin_port));
	cr_assert_eq(fl_httpc_get(url, "/", NULL, 2000, &status, &body, &len), FL_ERR_UNAVAILABLE);
	cr_assert_eq(
	    fl_httpc_get("http://no-such-host.invalid:80", "/", NULL, 2000, &status, &body, &len),
	    FL_ERR_UNAVAILABLE);
	cr_assert_null(body);
}

Test(httpc, a_silent_server_times_out_on_time)
{
	struct raw raw;
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	int64_t start = fl_time_mono_us();
	cr_assert_eq(raw_get(NULL, 300, &status, &body, &len, &raw), FL_ERR_TIMEOUT);
	int64_t took_ms = (fl_time_mono_us() - start) / 1000;
	cr_assert_geq(took_ms, 290);
	cr_assert_lt(took_ms, 1500);
	cr_assert_null(body);
	/* It did send one well-formed request that asks to close. */
	cr_assert_eq(strncmp(raw.request, "GET /x HTTP/1.1\r\n", 17), 0, "%s", raw.request);
	cr_assert_not_null(strstr(raw.request, "\r\nConnection: close\r\n"));
	cr_assert_not_null(strstr(raw.request, "\r\nHost: localhost:"));
	cr_assert_null(strstr(raw.request, "Authorization"));
}

/* ---- framing ------------------------------------------------------------- */

Test(httpc, a_body_without_length_ends_with_the_connection)
{
	struct raw raw;
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(raw_get("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end\n",
			     2000, &status, &body, &len, &raw),
		     FL_OK);
	cr_assert_eq(status, 200);
	cr_assert_str_eq(body, "until the end\n");
	cr_assert_eq(len, 14);
	free(body);
}

Test(httpc, content_length_wins_over_trailing_bytes)
{
	struct raw raw;
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(raw_get("HTTP/1.0 201 Created\r\ncontent-length:  3\r\n\r\nabcdef", 2000,
			     &status, &body, &len, &raw),
		     FL_OK);
	cr_assert_eq(status, 201);
	cr_assert_str_eq(body, "abc");
	free(body);
}

Test(httpc, chunked_bodies_are_decoded)
{
	struct raw raw;
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(raw_get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			     "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n",
			     2000, &status, &body, &len, &raw),
		     FL_OK);
	cr_assert_str_eq(body, "hello 0123456789");
	cr_assert_eq(len, 16);
	free(body);
}

Test(httpc, cut_or_malformed_answers_are_unavailable)
{
	const char *answers[] = {
	    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
	    "SSH-2.0-OpenSSH_9.2\r\n\r\n",
	    "HTTP/1.1 2x0 OK\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nno colon here\r\n\r\nbody",
	    "",
	};
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
		struct raw raw;
		unsigned status = 0;
		char *body = NULL;
		size_t len = 0;
		cr_assert_eq(raw_get(answers[i], 2000, &status, &body, &len, &raw),
			     FL_ERR_UNAVAILABLE, "answer %zu", i);
		cr_assert_null(body);
	}
}

Test(httpc, an_announced_body_over_the_limit_is_refused)
{
	struct raw raw;
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(raw_get("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\nxx", 2000,
			     &status, &body, &len, &raw),
		     FL_ERR_FULL);
	cr_assert_null(body);
}
