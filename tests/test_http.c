#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fledger/http.h"

/*
 * The server on a loopback port, driven with curl. The handler routes by
 * path; a "holder" thread plays the committer that answers deferred
 * requests.
 */

#define MAX_HELD 256

struct fixture {
	struct fl_http_server *server;
	uint16_t port;

	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct fl_http_request *held[MAX_HELD];
	size_t n_held;
	size_t received;   /* deferred requests ever received */
	size_t group_size; /* the holder waits for this many before answering */
	unsigned delay_ms; /* and then this long */
	bool hold_forever; /* until release is set */
	bool release;
	bool stop;
	enum fl_status last_holder_status;
	size_t answered;
	pthread_t holder;

	_Atomic unsigned completed;
	_Atomic unsigned last_completed_status;
	_Atomic int64_t last_duration_us;
};

static struct fixture fx;
static char tmp_dir[64];

static void sleep_ms(unsigned ms)
{
	struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&delay, NULL);
}

static int64_t now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void *holder_run(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&fx.lock);
	for (;;) {
		struct fl_http_request *batch[MAX_HELD];
		size_t n;

		while (!fx.stop && (fx.n_held == 0 || fx.n_held < fx.group_size ||
				    (fx.hold_forever && !fx.release)))
			pthread_cond_wait(&fx.changed, &fx.lock);
		if (fx.stop && fx.n_held == 0)
			break;
		n = fx.n_held;
		memcpy(batch, fx.held, n * sizeof(batch[0]));
		fx.n_held = 0;
		pthread_mutex_unlock(&fx.lock);

		if (fx.delay_ms > 0)
			sleep_ms(fx.delay_ms);
		for (size_t i = 0; i < n; i++) {
			char body[256];
			const char *id = fl_http_query(batch[i], "i");
			enum fl_status status;

			snprintf(body, sizeof(body), "deferred %s i=%s", fl_http_path(batch[i]),
				 id != NULL ? id : "-");
			status = fl_http_respond(batch[i], 200, "text/plain", body, strlen(body));
			pthread_mutex_lock(&fx.lock);
			fx.last_holder_status = status;
			fx.answered++;
			pthread_cond_broadcast(&fx.changed);
			pthread_mutex_unlock(&fx.lock);
		}
		pthread_mutex_lock(&fx.lock);
	}
	pthread_mutex_unlock(&fx.lock);
	return NULL;
}

static void *answer_early(void *arg)
{
	struct fl_http_request *req = arg;

	fl_http_respond(req, 202, "text/plain", "early", 5);
	return NULL;
}

static enum fl_http_disposition handler(void *ctx, struct fl_http_request *req)
{
	const char *path = fl_http_path(req);

	cr_assert_eq(ctx, &fx);
	if (strcmp(path, "/hello") == 0) {
		const char *seq = fl_http_query(req, "from_seq");
		const char *test = fl_http_header(req, "x-test");

		fl_http_respond_json(req, 200,
				     json_pack("{s:s, s:s, s:s?, s:s?, s:s, s:b}", "method",
					       fl_http_method(req), "path", path, "from_seq", seq,
					       "x_test", test, "remote", fl_http_remote_addr(req),
					       "has_id", fl_http_request_id(req)[0] != '\0'));
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/echo") == 0) {
		size_t len;
		const char *body = fl_http_body(req, &len);

		fl_http_respond(req, 200, fl_http_header(req, "Content-Type"), body, len);
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/mixed") == 0) {
		/* Direct, deferred, or answered early, by request number. */
		const char *number = fl_http_query(req, "i");
		int i = number != NULL ? atoi(number) : 0;

		if (i % 3 == 0) {
			fl_http_respond(req, 200, "text/plain", "deferred /mixed i=", 18);
			return FL_HTTP_DONE;
		}
		if (i % 3 == 2)
			path = "/early";
		else
			path = "/deferred";
	}
	if (strcmp(path, "/deferred") == 0 || strcmp(path, "/group") == 0) {
		pthread_mutex_lock(&fx.lock);
		cr_assert_lt(fx.n_held, MAX_HELD);
		fx.held[fx.n_held++] = req;
		fx.received++;
		pthread_cond_broadcast(&fx.changed);
		pthread_mutex_unlock(&fx.lock);
		return FL_HTTP_DEFERRED;
	}
	if (strcmp(path, "/early") == 0) {
		/* Answered by another thread before the handler returns. */
		pthread_t thread;

		pthread_create(&thread, NULL, answer_early, req);
		pthread_join(thread, NULL);
		return FL_HTTP_DEFERRED;
	}
	if (strcmp(path, "/twice") == 0) {
		cr_assert_eq(fl_http_respond(req, 200, "text/plain", "one", 3), FL_OK);
		cr_assert_eq(fl_http_respond(req, 200, "text/plain", "two", 3), FL_ERR_INVALID);
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/busy") == 0) {
		cr_assert_eq(fl_http_add_header(req, "Retry-After", "3"), FL_OK);
		cr_assert_eq(fl_http_add_header(req, "Bad\nName", "x"), FL_ERR_INVALID);
		cr_assert_eq(fl_http_add_header(req, "X-Bad", "a\r\nb"), FL_ERR_INVALID);
		fl_http_respond_error(req, 503, "not_ready", "still replaying the log", NULL);
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/field") == 0) {
		fl_http_respond_error(req, 400, "invalid_field", "not a \"string\"",
				      "events[0].entity_id");
		return FL_HTTP_DONE;
	}
	if (strcmp(path, "/forget") == 0)
		return FL_HTTP_DONE;
	fl_http_respond_error(req, 404, "not_found", "no such route", NULL);
	return FL_HTTP_DONE;
}

static void on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			int64_t duration_us)
{
	cr_assert_eq(ctx, &fx);
	cr_assert_not_null(fl_http_path(req));
	atomic_store(&fx.last_completed_status, status);
	atomic_store(&fx.last_duration_us, duration_us);
	atomic_fetch_add(&fx.completed, 1);
}

static void start_with(struct fl_http_options options)
{
	char error[256] = "";

	if (options.listen == NULL)
		options.listen = "127.0.0.1:0";
	options.on_complete = on_complete;
	cr_assert_eq(
	    fl_http_server_create(&options, handler, &fx, error, sizeof(error), &fx.server), FL_OK,
	    "%s", error);
	fx.port = fl_http_server_port(fx.server);
	cr_assert_neq(fx.port, 0);
}

static void setup(void)
{
	memset(&fx, 0, sizeof(fx));
	pthread_mutex_init(&fx.lock, NULL);
	pthread_cond_init(&fx.changed, NULL);
	pthread_create(&fx.holder, NULL, holder_run, NULL);
	strcpy(tmp_dir, "/tmp/fledger-http-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp_dir));
}

static void teardown(void)
{
	char command[128];

	fl_http_server_destroy(fx.server);
	fx.server = NULL;
	pthread_mutex_lock(&fx.lock);
	fx.stop = true;
	fx.release = true;
	pthread_cond_broadcast(&fx.changed);
	pthread_mutex_unlock(&fx.lock);
	pthread_join(fx.holder, NULL);
	snprintf(command, sizeof(command), "rm -rf '%s'", tmp_dir);
	cr_assert_eq(system(command), 0);
}

TestSuite(http, .init = setup, .fini = teardown, .timeout = 60);

/* Runs a shell command and returns its standard output (malloc'd). */
static char *run(const char *format, ...) __attribute__((format(printf, 1, 2)));

static char *run(const char *format, ...)
{
	char command[4096];
	va_list args;
	FILE *pipe;
	char *out = NULL;
	size_t len = 0;
	FILE *memory = open_memstream(&out, &len);
	char buffer[4096];
	size_t n;

	va_start(args, format);
	vsnprintf(command, sizeof(command), format, args);
	va_end(args);
	pipe = popen(command, "r");
	cr_assert_not_null(pipe);
	while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0)
		fwrite(buffer, 1, n, memory);
	pclose(pipe);
	fclose(memory);
	return out;
}

#define URL "http://127.0.0.1:%u"

Test(http, get_answers_with_json_and_sees_query_and_headers)
{
	char *out;
	json_t *body;

	start_with((struct fl_http_options){0});
	out = run("curl -s -H 'X-Test: yes' -w '\\n%%{http_code} %%{content_type}' "
		  "'" URL "/hello?from_seq=42&x=%%2F'",
		  fx.port);
	cr_assert(strstr(out, "\n200 application/json") != NULL, "%s", out);
	*strchr(out, '\n') = '\0';
	body = json_loads(out, 0, NULL);
	cr_assert_not_null(body, "%s", out);
	cr_assert_str_eq(json_string_value(json_object_get(body, "method")), "GET");
	cr_assert_str_eq(json_string_value(json_object_get(body, "path")), "/hello");
	cr_assert_str_eq(json_string_value(json_object_get(body, "from_seq")), "42");
	cr_assert_str_eq(json_string_value(json_object_get(body, "x_test")), "yes");
	cr_assert_str_eq(json_string_value(json_object_get(body, "remote")), "127.0.0.1");
	cr_assert(json_is_true(json_object_get(body, "has_id")));
	json_decref(body);
	free(out);
}

Test(http, post_body_is_echoed)
{
	char *out;

	start_with((struct fl_http_options){0});
	out = run("curl -s -H 'Content-Type: application/json' --data-binary '{\"a\": [1, 2]}' "
		  "-w '|%%{http_code}|%%{content_type}' " URL "/echo",
		  fx.port);
	cr_assert_str_eq(out, "{\"a\": [1, 2]}|200|application/json");
	free(out);
}

Test(http, large_body_is_accumulated_whole)
{
	char *out;

	start_with((struct fl_http_options){0});
	/* Just under 1 MiB, in many network reads. */
	out = run("head -c 1048000 /dev/urandom > %s/big && curl -s --data-binary @%s/big " URL
		  "/echo | cmp - %s/big && echo same",
		  tmp_dir, tmp_dir, fx.port, tmp_dir);
	cr_assert_str_eq(out, "same\n");
	free(out);
}

Test(http, body_over_the_limit_is_413_with_a_json_error)
{
	char *out;
	json_t *body;

	start_with((struct fl_http_options){0});
	out = run("head -c 2097152 /dev/zero > %s/huge && curl -s -w '\\n%%{http_code}' "
		  "--data-binary @%s/huge " URL "/echo",
		  tmp_dir, tmp_dir, fx.port);
	cr_assert(strstr(out, "\n413") != NULL, "%s", out);
	*strchr(out, '\n') = '\0';
	body = json_loads(out, 0, NULL);
	cr_assert_not_null(body, "%s", out);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(body, "error"), "code")),
			 "body_too_large");
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(body, "error"), "message")),
	    "the body is larger than 1048576 bytes");
	cr_assert_null(json_object_get(json_object_get(body, "error"), "field"));
	json_decref(body);
	free(out);

	/* Without a Content-Length, the limit holds as the body arrives. */
	out = run("curl -s -w '\\n%%{http_code}' -H 'Transfer-Encoding: chunked' "
		  "--data-binary @%s/huge " URL "/echo",
		  tmp_dir, fx.port);
	cr_assert(strstr(out, "\"body_too_large\"") != NULL, "%s", out);
	cr_assert(strstr(out, "\n413") != NULL, "%s", out);
	free(out);

	/* The server is still serving. */
	out = run("curl -s -o /dev/null -w '%%{http_code}' " URL "/hello", fx.port);
	cr_assert_str_eq(out, "200");
	free(out);
}

Test(http, the_limit_is_exact)
{
	char *out;

	start_with((struct fl_http_options){.max_body_bytes = 1000});
	out = run("head -c 1000 /dev/zero > %s/a && head -c 1001 /dev/zero > %s/b && "
		  "curl -s -o /dev/null -w '%%{http_code} ' --data-binary @%s/a " URL "/echo && "
		  "curl -s -o /dev/null -w '%%{http_code} ' --data-binary @%s/b " URL "/echo && "
		  "curl -s -o /dev/null -w '%%{http_code} ' -H 'Transfer-Encoding: chunked' "
		  "--data-binary @%s/a " URL "/echo && "
		  "curl -s -o /dev/null -w '%%{http_code}' -H 'Transfer-Encoding: chunked' "
		  "--data-binary @%s/b " URL "/echo",
		  tmp_dir, tmp_dir, tmp_dir, fx.port, tmp_dir, fx.port, tmp_dir, fx.port, tmp_dir,
		  fx.port);
	cr_assert_str_eq(out, "200 413 200 413");
	free(out);
}

Test(http, deferred_answer_comes_from_another_thread)
{
	char *out;
	int64_t started;

	fx.delay_ms = 50;
	start_with((struct fl_http_options){0});
	started = now_ms();
	out = run("curl -s -w '|%%{http_code}' '" URL "/deferred?i=7'", fx.port);
	cr_assert_str_eq(out, "deferred /deferred i=7|200");
	cr_assert_geq(now_ms() - started, 50);
	cr_assert_eq(fx.last_holder_status, FL_OK);
	free(out);
}

Test(http, answer_before_the_handler_returns_deferred)
{
	char *out;

	start_with((struct fl_http_options){0});
	out = run("curl -s -w '|%%{http_code}' " URL "/early", fx.port);
	cr_assert_str_eq(out, "early|202");
	free(out);
}

/* n parallel /group requests, all suspended together: every one answered 200. */
static void send_group(int n)
{
	char *out = run("cd %s && curl -s --parallel --parallel-immediate --parallel-max %d "
			"-o 'out_#1' '" URL
			"/group?i=[1-%d]' -w '%%{http_code}\\n' 2>/dev/null | sort | uniq -c",
			tmp_dir, n, fx.port, n);
	char expected[32];
	snprintf(expected, sizeof(expected), "%d 200", n);
	cr_assert(strstr(out, expected) != NULL, "%s", out);
	free(out);
}

/* 3000 /mixed requests on 50 connections: direct, early and late answers. */
static void send_mixed(void)
{
	char *out = run("curl -s --parallel --parallel-max 50 -o /dev/null '" URL
			"/mixed?i=[1-3000]' -w '%%{http_code}\\n' 2>/dev/null | sort | uniq -c",
			fx.port);
	cr_assert_str_eq(out, "   2000 200\n   1000 202\n");
	free(out);
}

Test(http, many_deferred_requests_are_answered_together)
{
	enum { N = 64 };
	char *out;

	fx.group_size = N; /* all must be suspended at once before any answer */
	start_with((struct fl_http_options){0});
	send_group(N);
	for (int i = 1; i <= N; i++) {
		char path[128], expected[64];

		snprintf(path, sizeof(path), "cat %s/out_%d", tmp_dir, i);
		snprintf(expected, sizeof(expected), "deferred /group i=%d", i);
		out = run("%s", path);
		cr_assert_str_eq(out, expected);
		free(out);
	}
	cr_assert_eq(fx.answered, N);
}

Test(http, keep_alive_survives_direct_and_deferred_answers)
{
	char *out;

	start_with((struct fl_http_options){0});
	/* One line per transfer: the second reuses the first's connection. */
	out = run("curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null "
		  "-w '%%{http_code}:%%{num_connects} ' " URL "/hello " URL "/hello " URL
		  "/deferred " URL "/hello",
		  fx.port, fx.port, fx.port, fx.port);
	cr_assert_str_eq(out, "200:1 200:0 200:0 200:0 ");
	free(out);
	/* POST, and an error answer, keep the connection too. */
	out = run("curl -s -o /dev/null -o /dev/null -w '%%{http_code}:%%{num_connects} ' "
		  "--data-binary x " URL "/echo " URL "/nothing",
		  fx.port, fx.port);
	cr_assert_str_eq(out, "200:1 404:0 ");
	free(out);
}

Test(http, handler_without_answer_is_500_and_double_answer_is_refused)
{
	char *out;

	start_with((struct fl_http_options){0});
	out = run("curl -s -w '|%%{http_code}' " URL "/forget", fx.port);
	cr_assert_str_eq(out, "{\"error\":{\"code\":\"internal\",\"message\":\"the handler gave no "
			      "answer\"}}|500");
	free(out);
	out = run("curl -s -w '|%%{http_code}' " URL "/twice", fx.port);
	cr_assert_str_eq(out, "one|200");
	free(out);
}

Test(http, error_bodies_and_extra_headers)
{
	char *out;

	start_with((struct fl_http_options){0});
	out = run("curl -s -i " URL "/busy | tr -d '\\r'", fx.port);
	cr_assert(strncmp(out, "HTTP/1.1 503", 12) == 0, "%s", out);
	cr_assert(strstr(out, "\nRetry-After: 3\n") != NULL, "%s", out);
	cr_assert(strstr(out, "\nContent-Type: application/json\n") != NULL, "%s", out);
	cr_assert(strstr(out, "\n\n{\"error\":{\"code\":\"not_ready\",\"message\":\"still "
			      "replaying the log\"}}") != NULL,
		  "%s", out);
	free(out);
	out = run("curl -s " URL "/field", fx.port);
	cr_assert_str_eq(out, "{\"error\":{\"code\":\"invalid_field\",\"message\":\"not a "
			      "\\\"string\\\"\",\"field\":\"events[0].entity_id\"}}");
	free(out);
}

Test(http, completion_reports_status_and_duration)
{
	char *out;

	fx.delay_ms = 30;
	start_with((struct fl_http_options){0});
	out = run("curl -s -o /dev/null " URL "/deferred", fx.port);
	free(out);
	/* The completion runs after the answer is sent; give it a moment. */
	for (int i = 0; i < 100 && atomic_load(&fx.completed) < 1; i++)
		sleep_ms(10);
	cr_assert_eq(atomic_load(&fx.completed), 1);
	cr_assert_eq(atomic_load(&fx.last_completed_status), 200);
	cr_assert_geq(atomic_load(&fx.last_duration_us), 30000);
}

Test(http, listens_on_ipv6_loopback)
{
	char *out;

	start_with((struct fl_http_options){.listen = "[::1]:0"});
	out =
	    run("curl -s -g -w '|%%{http_code}' 'http://[::1]:%u/echo' --data-binary v6", fx.port);
	cr_assert_str_eq(out, "v6|200");
	free(out);
}

Test(http, bad_listen_addresses_are_refused)
{
	struct fl_http_server *server = NULL;
	char error[256] = "";
	static const char *const bad[] = {
	    "127.0.0.1",    ":80",     "127.0.0.1:", "127.0.0.1:65536",
	    "127.0.0.1:8x", "[::1]80", "[::1:80"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = bad[i]},
						   handler, &fx, error, sizeof(error), &server),
			     FL_ERR_INVALID, "%s", bad[i]);
		cr_assert(strstr(error, "HOST:PORT") != NULL, "%s", error);
	}
	cr_assert_null(server);

	/* A port in use. */
	start_with((struct fl_http_options){0});
	char taken[32];
	snprintf(taken, sizeof(taken), "127.0.0.1:%u", fx.port);
	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = taken}, handler, &fx,
					   error, sizeof(error), &server),
		     FL_ERR_IO);
	cr_assert(strstr(error, "Address already in use") != NULL, "%s", error);
	cr_assert_null(server);
}

Test(http, destroy_while_idle)
{
	struct fl_http_server *server;
	int fd;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	int64_t started;
	char *out;

	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = "127.0.0.1:0"},
					   handler, &fx, NULL, 0, &server),
		     FL_OK);
	started = now_ms();
	fl_http_server_destroy(server);
	cr_assert_lt(now_ms() - started, 1000);

	/* With an idle open connection and a finished keep-alive one. */
	start_with((struct fl_http_options){0});
	out = run("curl -s " URL "/echo --data-binary x", fx.port);
	cr_assert_str_eq(out, "x");
	free(out);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	addr.sin_port = htons(fx.port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	started = now_ms();
	fl_http_server_destroy(fx.server);
	fx.server = NULL;
	cr_assert_lt(now_ms() - started, 1000);
	close(fd);
	fl_http_server_destroy(NULL);
}

/* Runs curl in the background; returns the pipe to read its output from. */
static FILE *start_curl(const char *path)
{
	char command[256];

	snprintf(command, sizeof(command), "curl -s -m 20 -w '|%%{http_code}' " URL "%s", fx.port,
		 path);
	return popen(command, "r");
}

static char *finish_curl(FILE *pipe)
{
	char *out = calloc(1, 4096);

	fread(out, 1, 4095, pipe);
	pclose(pipe);
	return out;
}

static void wait_received(size_t n)
{
	pthread_mutex_lock(&fx.lock);
	while (fx.received < n)
		pthread_cond_wait(&fx.changed, &fx.lock);
	pthread_mutex_unlock(&fx.lock);
}

Test(http, destroy_waits_for_deferred_answers)
{
	FILE *pipe;
	char *out;
	int64_t started;

	fx.delay_ms = 200;
	start_with((struct fl_http_options){.grace_ms = 5000});
	pipe = start_curl("/deferred?i=1");
	wait_received(1);
	started = now_ms();
	fl_http_server_destroy(fx.server);
	fx.server = NULL;
	cr_assert_lt(now_ms() - started, 4000);
	out = finish_curl(pipe);
	cr_assert_str_eq(out, "deferred /deferred i=1|200");
	free(out);
	cr_assert_eq(fx.last_holder_status, FL_OK);
}

Test(http, destroy_answers_503_after_the_grace_time)
{
	FILE *pipe;
	char *out;
	int64_t started;

	fx.hold_forever = true;
	start_with((struct fl_http_options){.grace_ms = 200});
	pipe = start_curl("/deferred?i=2");
	wait_received(1);
	started = now_ms();
	fl_http_server_destroy(fx.server);
	fx.server = NULL;
	cr_assert_geq(now_ms() - started, 190);
	cr_assert_lt(now_ms() - started, 3000);
	out = finish_curl(pipe);
	cr_assert_str_eq(out, "{\"error\":{\"code\":\"shutting_down\",\"message\":\"the server is "
			      "shutting down\"}}|503");
	free(out);

	/* The holder answers late: told so, and the request is freed
	 * (ASan checks both). */
	pthread_mutex_lock(&fx.lock);
	fx.release = true;
	pthread_cond_broadcast(&fx.changed);
	while (fx.answered < 1)
		pthread_cond_wait(&fx.changed, &fx.lock);
	pthread_mutex_unlock(&fx.lock);
	cr_assert_eq(fx.last_holder_status, FL_ERR_UNAVAILABLE);
}

Test(http, answer_paths_race_freely_under_concurrency)
{
	/* The holder answers as soon as it is woken, often while the
	 * handler is still returning: every ordering gets exercised. */
	start_with((struct fl_http_options){0});
	send_mixed();
}

Test(http, two_server_threads_share_the_connections)
{
	enum { N = 64 };

	/* Deferred answers resume connections owned by either thread, and
	 * direct, early and late answers race as on one thread. */
	fx.group_size = N;
	start_with((struct fl_http_options){.threads = 2});
	send_group(N);
	pthread_mutex_lock(&fx.lock);
	fx.group_size = 0;
	pthread_mutex_unlock(&fx.lock);
	send_mixed();
}

/* ---- TLS ---- */

/*
 * Makes a CA, a server certificate for 127.0.0.1 and a client certificate
 * signed by the CA, and a rogue self-signed client certificate, in tmp_dir.
 */
static void make_certificates(void)
{
	char *out =
	    run("(cd %s && "
		"EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes' && "
		"openssl req -x509 $EC -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca && "
		"printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && "
		"openssl req $EC -keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
		"openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		"-out server.pem -days 2 -extfile server.ext && "
		"printf 'extendedKeyUsage=clientAuth\\n' > client.ext && "
		"openssl req $EC -keyout client.key -out client.csr -subj /CN=ranker && "
		"openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
		"-out client.pem -days 2 -extfile client.ext && "
		"openssl req -x509 $EC -keyout rogue.key -out rogue.pem -days 2 -subj /CN=rogue && "
		"echo made) 2>/dev/null",
		tmp_dir);
	cr_assert_str_eq(out, "made\n");
	free(out);
}

static void start_tls(bool mutual)
{
	char cert[128], key[128], ca[128];

	snprintf(cert, sizeof(cert), "%s/server.pem", tmp_dir);
	snprintf(key, sizeof(key), "%s/server.key", tmp_dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", tmp_dir);
	start_with((struct fl_http_options){
	    .tls_cert_file = cert, .tls_key_file = key, .tls_client_ca_file = mutual ? ca : NULL});
}

Test(http, tls_serves_https)
{
	char *out;

	make_certificates();
	start_tls(false);
	out = run("curl -s --cacert %s/ca.pem -w '|%%{http_code}' --data-binary tls "
		  "https://127.0.0.1:%u/echo",
		  tmp_dir, fx.port);
	cr_assert_str_eq(out, "tls|200");
	free(out);
	/* Keep-alive works over TLS too. */
	out = run("curl -s --cacert %s/ca.pem -o /dev/null -o /dev/null "
		  "-w '%%{num_connects} ' https://127.0.0.1:%u/hello https://127.0.0.1:%u/deferred",
		  tmp_dir, fx.port, fx.port);
	cr_assert_str_eq(out, "1 0 ");
	free(out);
	/* Plain HTTP on the TLS port gets nothing useful. */
	out = run("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%u/hello", fx.port);
	cr_assert_str_neq(out, "200");
	free(out);
}

Test(http, mutual_tls_refuses_requests_without_a_trusted_client_certificate)
{
	char *out;

	make_certificates();
	start_tls(true);
	out = run("curl -s --cacert %s/ca.pem -w '|%%{http_code}' https://127.0.0.1:%u/hello",
		  tmp_dir, fx.port);
	cr_assert_str_eq(out,
			 "{\"error\":{\"code\":\"client_certificate_required\",\"message\":"
			 "\"this server requires a client certificate signed by its CA\"}}|403");
	free(out);

	out = run("curl -s --cacert %s/ca.pem --cert %s/rogue.pem --key %s/rogue.key "
		  "-o /dev/null -w '%%{http_code}' https://127.0.0.1:%u/hello",
		  tmp_dir, tmp_dir, tmp_dir, fx.port);
	cr_assert_str_eq(out, "403");
	free(out);

	out = run("curl -s --cacert %s/ca.pem --cert %s/client.pem --key %s/client.key "
		  "-o /dev/null -o /dev/null -w '%%{http_code}:%%{num_connects} ' "
		  "https://127.0.0.1:%u/hello https://127.0.0.1:%u/hello",
		  tmp_dir, tmp_dir, tmp_dir, fx.port, fx.port);
	cr_assert_str_eq(out, "200:1 200:0 ");
	free(out);
}

Test(http, unusable_tls_files_are_refused)
{
	struct fl_http_server *server = NULL;
	char cert[128], key[128], error[256] = "";
	char *out;

	make_certificates();
	snprintf(cert, sizeof(cert), "%s/server.pem", tmp_dir);
	snprintf(key, sizeof(key), "%s/absent.key", tmp_dir);
	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = "127.0.0.1:0",
								     .tls_cert_file = cert,
								     .tls_key_file = key},
					   handler, &fx, error, sizeof(error), &server),
		     FL_ERR_IO);
	cr_assert(strstr(error, "absent.key") != NULL, "%s", error);

	/* A key that does not match the certificate. */
	snprintf(key, sizeof(key), "%s/rogue.key", tmp_dir);
	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = "127.0.0.1:0",
								     .tls_cert_file = cert,
								     .tls_key_file = key},
					   handler, &fx, error, sizeof(error), &server),
		     FL_ERR_CRYPTO);

	/* Not PEM at all. */
	out = run("echo garbage > %s/garbage.pem && echo ok", tmp_dir);
	free(out);
	snprintf(key, sizeof(key), "%s/garbage.pem", tmp_dir);
	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = "127.0.0.1:0",
								     .tls_cert_file = cert,
								     .tls_key_file = key},
					   handler, &fx, error, sizeof(error), &server),
		     FL_ERR_CRYPTO);

	/* A client CA without a certificate of our own. */
	cr_assert_eq(fl_http_server_create(&(struct fl_http_options){.listen = "127.0.0.1:0",
								     .tls_client_ca_file = cert},
					   handler, &fx, error, sizeof(error), &server),
		     FL_ERR_INVALID);
	cr_assert_null(server);
}

Test(http, a_deferred_answer_may_take_longer_than_the_idle_timeout)
{
	char *out;

	fx.delay_ms = 2500;
	start_with((struct fl_http_options){.idle_timeout_s = 1});
	out = run("curl -s -w '|%%{http_code}' '" URL "/deferred?i=3'", fx.port);
	cr_assert_str_eq(out, "deferred /deferred i=3|200");
	free(out);
	cr_assert_eq(fx.last_holder_status, FL_OK);
}

/*
 * An encoded NUL (%00) would cut the path or a query value short
 * ("/hello%00x" read as "/hello"): such a request is 400, and the handler
 * never sees it. Other escapes still decode, and the connection stays usable.
 */
Test(http, encoded_nul_in_the_url_is_400)
{
	start_with((struct fl_http_options){0});
	static const char *const urls[] = {"/hello%00", "/hello%00x", "/hel%00lo",
					   "/hello?from_seq=4%002", "/hello?x%00=1"};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		char *out = run("curl -s -w '|%%{http_code}' '" URL "%s'", fx.port, urls[i]);
		cr_assert(strstr(out, "|400") != NULL, "%s: %s", urls[i], out);
		cr_assert(strstr(out, "\"code\":\"invalid_url\"") != NULL, "%s: %s", urls[i], out);
		free(out);
	}
	char *out = run("curl -s -w '|%%{http_code}' '" URL "/hell%%6F?from_seq=4%%252' "
			"'" URL "/hello%%00' '" URL "/hello'",
			fx.port, fx.port, fx.port);
	cr_assert(strncmp(out, "{", 1) == 0 && strstr(out, "\"from_seq\":\"4%2\"") != NULL, "%s",
		  out);
	cr_assert(strstr(out, "|200") != NULL && strstr(out, "|400") != NULL, "%s", out);
	free(out);
}
