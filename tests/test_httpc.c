#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
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
 * The client against the project's own server on a loopback port (plain and
 * mutual TLS), and against raw socket servers that send canned answers byte
 * for byte (to exercise bodies delimited by the end of the connection,
 * chunked bodies, cut answers, silence, keep-alive, and TLS ending with or
 * without close_notify).
 */

#define BIG_LEN (3 * 1024 * 1024 + 17)

static struct fl_http_server *server;
static struct fl_httpc *client;
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
	cr_assert_eq(fl_httpc_create(NULL, error, sizeof(error), &client), FL_OK, "%s", error);
}

static void teardown(void)
{
	fl_httpc_destroy(client);
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
	enum fl_status st = fl_httpc_get(client, url, "/x", NULL, timeout_ms, status, body, len);
	raw_stop(raw);
	return st;
}

/* ---- against the project's server ----------------------------------- */

Test(httpc, gets_a_body_with_its_status)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(client, base, "/hello", NULL, 2000, &status, &body, &len), FL_OK);
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

	cr_assert_eq(fl_httpc_get(client, base, "/echo?from_seq=42&limit=7", "s3cret-token", 2000,
				  &status, &body, &len),
		     FL_OK);
	snprintf(expect, sizeof(expect), "Bearer s3cret-token|42|%s", base + 7);
	cr_assert_str_eq(body, expect);
	free(body);
	cr_assert_eq(fl_httpc_get(client, base, "/echo", NULL, 2000, &status, &body, &len), FL_OK);
	cr_assert_eq(strncmp(body, "-|-|", 4), 0, "%s", body);
	free(body);
}

Test(httpc, an_error_status_is_an_answer)
{
	unsigned status = 0;
	char *body = NULL;
	size_t len = 0;

	cr_assert_eq(fl_httpc_get(client, base, "/nowhere", NULL, 2000, &status, &body, &len),
		     FL_OK);
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

	cr_assert_eq(fl_httpc_get(client, base, "/big", NULL, 5000, &status, &body, &len), FL_OK);
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
	cr_assert_eq(fl_httpc_get(client, url, "/v1/keys", NULL, 2000, &status, &body, &len),
		     FL_OK);
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
	cr_assert_eq(fl_httpc_get(client, url, "/hello", NULL, 2000, &status, &body, &len), FL_OK);
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
				   "http://h:99999", "http://h:8x", "http://[::1", "http://u@h:80",
				   "http://h?x",     "127.0.0.1:80"};

	for (size_t i = 0; i < sizeof(bad_bases) / sizeof(bad_bases[0]); i++)
		cr_assert_eq(
		    fl_httpc_get(client, bad_bases[i], "/", NULL, 100, &status, &body, &len),
		    FL_ERR_INVALID, "%s", bad_bases[i]);
	cr_assert_eq(fl_httpc_get(client, base, "no-slash", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(client, base, "/a b", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(client, base, "/a\r\nX-Evil: 1", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(
	    fl_httpc_get(client, base, "/hello", "tok\r\nX-Evil: 1", 100, &status, &body, &len),
	    FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(client, base, "/hello", "", 100, &status, &body, &len),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_httpc_get(client, NULL, "/", NULL, 100, &status, &body, &len),
		     FL_ERR_INVALID);
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
	cr_assert_eq(fl_httpc_get(client, url, "/", NULL, 2000, &status, &body, &len),
		     FL_ERR_UNAVAILABLE);
	cr_assert_eq(fl_httpc_get(client, "http://no-such-host.invalid:80", "/", NULL, 2000,
				  &status, &body, &len),
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
	/* It did send one well-formed request, which keeps the connection open. */
	cr_assert_eq(strncmp(raw.request, "GET /x HTTP/1.1\r\n", 17), 0, "%s", raw.request);
	cr_assert_null(strstr(raw.request, "\r\nConnection: close\r\n"));
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

/* A redirect is the answer: neither another host nor file:// is followed. */
Test(httpc, redirects_are_answers_not_followed)
{
	const char *answers[] = {
	    "HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n",
	    "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n",
	    "HTTP/1.1 307 Temporary\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
	};
	const unsigned statuses[] = {302, 301, 307};
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
		struct raw raw;
		unsigned status = 0;
		char *body = NULL;
		size_t len = 0;
		cr_assert_eq(raw_get(answers[i], 2000, &status, &body, &len, &raw), FL_OK,
			     "answer %zu", i);
		cr_assert_eq(status, statuses[i]);
		cr_assert_eq(len, 0);
		free(body);
	}
}

/*
 * The client goes to the URL it is given, never through a proxy that the
 * environment names: a proxy would see the bearer token of every http://
 * request, and the services never meant to use one.
 */
Test(httpc, proxies_named_by_the_environment_are_not_used)
{
	struct raw proxy;
	unsigned status = 0;
	char *body = NULL, proxy_url[64];
	size_t len = 0;

	raw_start(&proxy,
		  "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied");
	snprintf(proxy_url, sizeof(proxy_url), "http://127.0.0.1:%u", proxy.port);
	const char *names[] = {"http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
			       "all_proxy"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		cr_assert_eq(setenv(names[i], proxy_url, 1), 0);
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");
	enum fl_status st =
	    fl_httpc_get(client, base, "/hello", "s3cret-token", 2000, &status, &body, &len);

	/* Whatever reached the proxy, one more connection ends its thread. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_port = htons(proxy.port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		cr_assert_eq(write(fd, "NOBODY\r\n\r\n", 10), 10);
	raw_stop(&proxy);
	close(fd);
	cr_assert_eq(st, FL_OK);
	cr_assert_str_eq(body, "hello world");
	cr_assert_eq(strncmp(proxy.request, "NOBODY", 6), 0, "the proxy got: %s", proxy.request);
	free(body);
}

/* ---- keep-alive ---------------------------------------------------------- */

/* Reads one request head from fd into buf (NUL-terminated); false at the end. */
static bool read_head(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	buf[0] = '\0';
	while (got < cap - 1 && !strstr(buf, "\r\n\r\n")) {
		ssize_t n = read(fd, buf + got, 1); /* byte by byte: the next request stays */
		if (n <= 0)
			return false;
		got += (size_t)n;
		buf[got] = '\0';
	}
	return true;
}

struct keeper {
	int listen_fd;
	uint16_t port;
	int answered;	/* requests answered on the one connection */
	int more_conns; /* connections waiting after the last answer */
	pthread_t thread;
};

/* Accepts one connection, answers two requests on it, then counts any other. */
static void *keeper_run(void *arg)
{
	struct keeper *k = arg;
	char head[2048];
	int fd = accept(k->listen_fd, NULL, NULL);
	while (fd >= 0 && k->answered < 2 && read_head(fd, head, sizeof(head))) {
		const char *answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		cr_assert_eq(write(fd, answer, strlen(answer)), (ssize_t)strlen(answer));
		k->answered++;
	}
	struct pollfd pfd = {.fd = k->listen_fd, .events = POLLIN};
	while (poll(&pfd, 1, 0) == 1) {
		int other = accept(k->listen_fd, NULL, NULL);
		if (other < 0)
			break;
		k->more_conns++;
		close(other);
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

Test(httpc, consecutive_requests_share_one_connection)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t addr_len = sizeof(addr);
	struct keeper k = {0};
	unsigned status = 0;
	char *body = NULL, url[64];
	size_t len = 0;

	k.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(bind(k.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(listen(k.listen_fd, 4), 0);
	getsockname(k.listen_fd, (struct sockaddr *)&addr, &addr_len);
	cr_assert_eq(pthread_create(&k.thread, NULL, keeper_run, &k), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(addr.sin_port));
	for (int i = 0; i < 2; i++) {
		/* A second connection would never be accepted: the request times out. */
		cr_assert_eq(fl_httpc_get(client, url, "/again", NULL, 2000, &status, &body, &len),
			     FL_OK, "request %d", i);
		cr_assert_str_eq(body, "ok");
		free(body);
	}
	pthread_join(k.thread, NULL);
	close(k.listen_fd);
	cr_assert_eq(k.answered, 2);
	cr_assert_eq(k.more_conns, 0);
}

/* ---- limits -------------------------------------------------------------- */

Test(httpc, a_body_over_the_clients_limit_is_refused_as_it_arrives)
{
	struct fl_httpc_options options = {.max_body = 1000};
	struct fl_httpc *small;
	unsigned status = 0;
	char *body = NULL, url[64], answer[4200];
	size_t len = 0;

	cr_assert_eq(fl_httpc_create(&options, NULL, 0, &small), FL_OK);
	/* Without a length, chunked, and announced: each is cut at 1000 bytes. */
	int n = snprintf(answer, sizeof(answer), "HTTP/1.1 200 OK\r\n\r\n");
	memset(answer + n, 'x', 4000);
	answer[n + 4000] = '\0';
	struct raw raw;
	raw_start(&raw, answer);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", raw.port);
	cr_assert_eq(fl_httpc_get(small, url, "/x", NULL, 2000, &status, &body, &len), FL_ERR_FULL);
	raw_stop(&raw);
	n = snprintf(answer, sizeof(answer),
		     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		     "258\r\n%0600d\r\n258\r\n%0600d\r\n0\r\n\r\n",
		     0, 0);
	raw_start(&raw, answer);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", raw.port);
	cr_assert_eq(fl_httpc_get(small, url, "/x", NULL, 2000, &status, &body, &len), FL_ERR_FULL);
	raw_stop(&raw);
	cr_assert_eq(fl_httpc_get(small, base, "/big", NULL, 2000, &status, &body, &len),
		     FL_ERR_FULL);
	cr_assert_null(body);
	/* At the limit is fine. */
	cr_assert_eq(fl_httpc_get(small, base, "/hello", NULL, 2000, &status, &body, &len), FL_OK);
	free(body);
	fl_httpc_destroy(small);
}

/* ---- streaming ----------------------------------------------------------- */

struct sink {
	unsigned status;
	char rows[32];
	char body[256];
	size_t len;
	int heads;
};

static int sink_head(void *ctx, unsigned status, const char *head)
{
	struct sink *s = ctx;
	s->status = status;
	s->heads++;
	cr_assert_eq(strncmp(head, "HTTP/1.1 200 OK\r\n", 17), 0, "%s", head);
	cr_assert(fl_httpc_head_value(head, "x-rows", s->rows, sizeof(s->rows)));
	return 0;
}

static int sink_body(void *ctx, const char *data, size_t len)
{
	struct sink *s = ctx;
	cr_assert_leq(s->len + len, sizeof(s->body) - 1);
	memcpy(s->body + s->len, data, len);
	s->len += len;
	return 0;
}

Test(httpc, a_streamed_answer_goes_to_the_callbacks)
{
	struct raw raw;
	struct sink sink = {0};
	struct fl_httpc_stream stream = {.accept = "application/x-ndjson",
					 .on_head = sink_head,
					 .on_body = sink_body,
					 .ctx = &sink};
	unsigned status = 0;
	char url[64];

	raw_start(&raw, "HTTP/1.1 100 Continue\r\n\r\n"
			"HTTP/1.1 200 OK\r\nX-Rows:  2 \r\nTransfer-Encoding: chunked\r\n\r\n"
			"4\r\n{}\n{\r\n3\r\n}\n\n\r\n0\r\n\r\n");
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", raw.port);
	cr_assert_eq(fl_httpc_request_stream(client, "GET", url, "/rows", "tok", NULL, &stream,
					     2000, &status),
		     FL_OK);
	raw_stop(&raw);
	cr_assert_eq(status, 200);
	cr_assert_eq(sink.heads, 1);
	cr_assert_str_eq(sink.rows, "2");
	cr_assert_eq(sink.len, 7);
	cr_assert_eq(memcmp(sink.body, "{}\n{}\n\n", 7), 0);
	cr_assert_not_null(strstr(raw.request, "\r\nAccept: application/x-ndjson\r\n"));
	cr_assert_not_null(strstr(raw.request, "\r\nAuthorization: Bearer tok\r\n"));
}

/* ---- TLS ----------------------------------------------------------------- */

static char tls_dir[64];

/* A CA, a server certificate for 127.0.0.1 and a client certificate, in tls_dir. */
static void make_certificates(void)
{
	char command[2048];
	snprintf(tls_dir, sizeof(tls_dir), "%s/fledger-httpc-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tls_dir));
	snprintf(command, sizeof(command),
		 "cd %s && EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes' && "
		 "openssl req -x509 $EC -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca && "
		 "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && "
		 "openssl req $EC -keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
		 "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		 "-out server.pem -days 2 -extfile server.ext && "
		 "printf 'extendedKeyUsage=clientAuth\\n' > client.ext && "
		 "openssl req $EC -keyout client.key -out client.csr -subj /CN=ranker && "
		 "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		 "-out client.pem -days 2 -extfile client.ext >/dev/null 2>&1",
		 tls_dir);
	cr_assert_eq(system(command), 0);
}

static void remove_certificates(void)
{
	char command[128];
	snprintf(command, sizeof(command), "rm -rf '%s'", tls_dir);
	cr_assert_eq(system(command), 0);
}

static void tls_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", tls_dir, name);
}

struct tls_raw {
	int listen_fd;
	uint16_t port;
	const char *answer;
	bool close_notify; /* end with close_notify, or just close the socket */
	pthread_t thread;
};

/* One TLS connection: reads the request head, answers, ends as told. */
static void *tls_raw_run(void *arg)
{
	struct tls_raw *t = arg;
	char cert[128], key[128], head[2048];
	size_t got = 0;

	tls_path(cert, sizeof(cert), "server.pem");
	tls_path(key, sizeof(key), "server.key");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
	int fd = accept(t->listen_fd, NULL, NULL);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		head[0] = '\0';
		while (got < sizeof(head) - 1 && !strstr(head, "\r\n\r\n")) {
			int n = SSL_read(ssl, head + got, (int)(sizeof(head) - 1 - got));
			if (n <= 0)
				break;
			got += (size_t)n;
			head[got] = '\0';
		}
		SSL_write(ssl, t->answer, (int)strlen(t->answer));
		if (t->close_notify)
			SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return NULL;
}

static enum fl_status tls_raw_get(const char *answer, bool close_notify, char **body)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t addr_len = sizeof(addr);
	struct tls_raw t = {.answer = answer, .close_notify = close_notify};
	struct fl_httpc_options options = {0};
	struct fl_httpc *tls_client;
	char ca[128], url[64];
	unsigned status = 0;
	size_t len = 0;

	tls_path(ca, sizeof(ca), "ca.pem");
	options.ca_file = ca;
	cr_assert_eq(fl_httpc_create(&options, NULL, 0, &tls_client), FL_OK);
	t.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(bind(t.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(listen(t.listen_fd, 4), 0);
	getsockname(t.listen_fd, (struct sockaddr *)&addr, &addr_len);
	cr_assert_eq(pthread_create(&t.thread, NULL, tls_raw_run, &t), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u", ntohs(addr.sin_port));
	enum fl_status st = fl_httpc_get(tls_client, url, "/x", NULL, 3000, &status, body, &len);
	pthread_join(t.thread, NULL);
	close(t.listen_fd);
	fl_httpc_destroy(tls_client);
	return st;
}

Test(httpc, a_tls_body_cut_without_close_notify_is_not_an_answer)
{
	const char *until_close = "HTTP/1.1 200 OK\r\n\r\nuntil the end";
	char *body = NULL;

	make_certificates();
	/* Ended properly, the same answer is whole. */
	cr_assert_eq(tls_raw_get(until_close, true, &body), FL_OK);
	cr_assert_str_eq(body, "until the end");
	free(body);
	body = NULL;
	cr_assert_eq(tls_raw_get(until_close, false, &body), FL_ERR_UNAVAILABLE);
	cr_assert_null(body);
	/* A short Content-Length body fails however the connection ends. */
	cr_assert_eq(tls_raw_get("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", true, &body),
		     FL_ERR_UNAVAILABLE);
	remove_certificates();
}

Test(httpc, mutual_tls_presents_the_client_certificate)
{
	struct fl_http_server *tls_server;
	struct fl_http_options server_options = {.listen = "127.0.0.1:0"};
	struct fl_httpc_options options = {0};
	struct fl_httpc *with_cert, *without_cert;
	char cert[128], key[128], ca[128], url[64], why[300], *body = NULL;
	unsigned status = 0;
	size_t len = 0;

	make_certificates();
	tls_path(ca, sizeof(ca), "ca.pem");
	tls_path(cert, sizeof(cert), "server.pem");
	tls_path(key, sizeof(key), "server.key");
	server_options.tls_cert_file = cert;
	server_options.tls_key_file = key;
	server_options.tls_client_ca_file = ca;
	cr_assert_eq(
	    fl_http_server_create(&server_options, handle, NULL, why, sizeof(why), &tls_server),
	    FL_OK, "%s", why);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u", fl_http_server_port(tls_server));

	options.ca_file = ca;
	cr_assert_eq(fl_httpc_create(&options, NULL, 0, &without_cert), FL_OK);
	/* The server answers 403 to a connection without a client certificate. */
	cr_assert_eq(fl_httpc_get(without_cert, url, "/hello", NULL, 3000, &status, &body, &len),
		     FL_OK);
	cr_assert_eq(status, 403);
	free(body);
	fl_httpc_destroy(without_cert);

	/* A certificate without its key, or with another key, is refused up front. */
	tls_path(cert, sizeof(cert), "client.pem");
	options.cert_file = cert;
	cr_assert_eq(fl_httpc_create(&options, why, sizeof(why), &with_cert), FL_ERR_INVALID);
	options.key_file = key; /* the server's */
	cr_assert_eq(fl_httpc_create(&options, why, sizeof(why), &with_cert), FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "not the private key of the certificate"), "%s", why);

	tls_path(key, sizeof(key), "client.key");
	cr_assert_eq(fl_httpc_create(&options, why, sizeof(why), &with_cert), FL_OK, "%s", why);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(
		    fl_httpc_get(with_cert, url, "/hello", NULL, 3000, &status, &body, &len),
		    FL_OK);
		cr_assert_eq(status, 200);
		cr_assert_str_eq(body, "hello world");
		free(body);
	}
	fl_httpc_destroy(with_cert);
	fl_http_server_destroy(tls_server);
	remove_certificates();
}
