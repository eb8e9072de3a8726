/*
 * query-svc's answers (read_answer.h) without a socket: plans over a small
 * log, projected in a temporary directory, give the exact bytes of each
 * read route's answer (rows, a batch with a repeated id, Feast's columns,
 * history lines), the seqs the read audit records, and the errors.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/eventlog.h"
#include "fledger/event.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "projection.h"
#include "read_answer.h"
#include "read_plan.h"

/* 2026-11-26T21:00:00Z, the as_of of every read */
#define AS_OF "2026-11-26T21:00:00Z"

static char tmpdir[256];
static struct fl_signer *signer;
static struct fl_log *log_;
static struct fl_projection *projection;
static struct fl_read_sources sources;
static struct fl_read_plan plan;
static struct fl_read_result result;

static const char *view_json =
    "{\"name\":\"stats\",\"entity\":\"user_id\",\"features\":{\"score\":\"double\","
    "\"n\":\"int64\"},\"windows\":[{\"name\":\"n_sum_1h\",\"fn\":\"sum\",\"of\":\"n\","
    "\"size\":\"1h\"}]}";

/* entity, event_ts, features */
static const char *const events[][3] = {
    {"u1", "2026-11-26T20:50:00Z", "{\"score\":1.5,\"n\":2}"},
    {"u1", "2026-11-26T20:55:00Z", "{\"n\":3}"},
    {"u2", "2026-11-26T20:58:00Z", "{\"score\":0.25}"},
};

static void append(const char *tail, size_t len, int64_t time_us)
{
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = len, .time_us = time_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log_, &batch, 1, NULL), FL_OK);
}

static void setup(void)
{
	char dir[300];
	int64_t now;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char *tail;
	size_t len;

	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-answer-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	cr_assert_eq(fl_time_parse(AS_OF, &now), FL_OK);
	snprintf(dir, sizeof(dir), "%s/log", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log_), FL_OK);

	/* seq 1 registers the view; seqs 2-4 are the events */
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, NULL);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", now, &tail, &len), FL_OK);
	append(tail, len, now);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		struct fl_event event;
		struct fl_error err;
		json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "view", "stats", "entity_id",
				       events[i][0], "event_ts", events[i][1], "features",
				       json_loads(events[i][2], 0, NULL));
		cr_assert_eq(fl_event_validate(ev, "", registry, "p", now,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
			     FL_OK, "%s", err.message);
		json_decref(ev);
		cr_assert_eq(fl_event_body_tail(&event, &tail, &len), FL_OK);
		fl_event_finish(&event);
		append(tail, len, now);
		free(tail);
	}
	fl_view_registry_destroy(registry);

	snprintf(dir, sizeof(dir), "%s/projection", tmpdir);
	cr_assert_eq(fl_projection_open(dir, &projection), FL_OK);
	struct fl_log_reader *r;
	struct fl_log_entry entries[4];
	cr_assert_eq(fl_log_reader_begin(log_, &r), FL_OK);
	for (uint64_t seq = 1; seq <= 4; seq++)
		cr_assert_eq(fl_log_reader_get(r, seq, &entries[seq - 1]), FL_OK);
	cr_assert_eq(fl_projection_apply(projection, entries, 4), FL_OK);
	fl_log_reader_end(r);
	sources = (struct fl_read_sources){projection, log_};
}

static void teardown(void)
{
	char cmd[300];
	fl_read_plan_finish(&plan);
	fl_read_result_finish(&result);
	fl_projection_close(projection);
	fl_log_close(log_);
	fl_signer_destroy(signer);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(read_answer, .init = setup, .fini = teardown, .timeout = 120);

static const char *get_param(const void *ctx, const char *name)
{
	size_t n = strlen(name);
	for (const char *const *p = ctx; *p; p++)
		if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
			return *p + n + 1;
	return NULL;
}

static void plan_one(const char *rest, const char *const *query)
{
	const struct fl_read_params params = {get_param, query};
	struct fl_error err;
	fl_read_plan_init(&plan, FL_READ_ONE, fl_svc_dev_principal(),
			  fl_projection_views(projection));
	cr_assert(fl_read_plan_one(&plan, rest, &params, &err), "%s", err.message);
}

static void plan_body(enum fl_read_kind kind, const char *text)
{
	struct fl_error err;
	json_t *body = json_loads(text, 0, NULL);
	cr_assert_not_null(body);
	fl_read_plan_init(&plan, kind, fl_svc_dev_principal(), fl_projection_views(projection));
	cr_assert(kind == FL_READ_BATCH ? fl_read_plan_batch(&plan, body, &err)
					: fl_read_plan_feast(&plan, body, &err),
		  "%s", err.message);
	json_decref(body);
}

/* Answers the plan and checks the bytes and the served seqs. */
static void expect_answer(const char *expected, const uint64_t *served, size_t n_served)
{
	enum fl_status st = fl_read_answer_plan(&plan, &sources, "r-test", 0, &result);
	cr_assert_eq(st, FL_OK, "%s", result.err.message);
	cr_expect_eq(result.len, strlen(expected));
	cr_expect_str_eq(result.body, expected);
	cr_expect_eq(result.applied_seq, 4);
	cr_assert_eq(result.n_served, n_served);
	for (size_t i = 0; i < n_served; i++)
		cr_expect_eq(result.served[i], served[i], "served[%zu]", i);
}

#define U1_ROW                                                                                     \
	"{\"view\":\"stats\",\"entity_id\":\"u1\",\"as_of\":\"2026-11-26T21:00:00.000000Z\","      \
	"\"features\":{\"n\":{\"value\":3,\"status\":\"PRESENT\",\"event_ts\":"                    \
	"\"2026-11-26T20:55:00.000000Z\",\"seq\":3},\"score\":{\"value\":1.5,\"status\":"          \
	"\"PRESENT\",\"event_ts\":\"2026-11-26T20:50:00.000000Z\",\"seq\":2}},"                    \
	"\"windows\":{\"n_sum_1h\":"                                                               \
	"{\"value\":5,\"from\":\"2026-11-26T20:00:00.000000Z\",\"to\":"                            \
	"\"2026-11-26T21:00:00.000000Z\",\"events\":2}}"

Test(read_answer, one)
{
	const char *q[] = {"as_of=" AS_OF, NULL};
	plan_one("stats/u1", q);
	cr_expect_eq(result.n_served, 0);
	const uint64_t served[] = {2, 3};
	expect_answer(U1_ROW ",\"applied_seq\":4,\"read_id\":\"r-test\"}", served, 2);
	cr_expect_str_eq(result.content_type, "application/json");
}

Test(read_answer, batch_repeats_a_row)
{
	plan_body(FL_READ_BATCH,
		  "{\"view\":\"stats\",\"entity_ids\":[\"u1\",\"u9\",\"u1\"],"
		  "\"features\":[\"score\"],\"windows\":[],\"as_of\":\"" AS_OF "\"}");
	const uint64_t served[] = {2};
	expect_answer("{\"rows\":[{\"view\":\"stats\",\"entity_id\":\"u1\",\"as_of\":"
		      "\"2026-11-26T21:00:00.000000Z\",\"features\":{\"score\":{\"value\":1.5,"
		      "\"status\":\"PRESENT\",\"event_ts\":\"2026-11-26T20:50:00.000000Z\","
		      "\"seq\":2}},\"windows\":{}},"
		      "{\"view\":\"stats\",\"entity_id\":\"u9\",\"as_of\":"
		      "\"2026-11-26T21:00:00.000000Z\",\"features\":{\"score\":{\"value\":null,"
		      "\"status\":\"NOT_FOUND\"}},\"windows\":{}},"
		      "{\"view\":\"stats\",\"entity_id\":\"u1\",\"as_of\":"
		      "\"2026-11-26T21:00:00.000000Z\",\"features\":{\"score\":{\"value\":1.5,"
		      "\"status\":\"PRESENT\",\"event_ts\":\"2026-11-26T20:50:00.000000Z\","
		      "\"seq\":2}},\"windows\":{}}],"
		      "\"applied_seq\":4,\"read_id\":\"r-test\"}",
		      served, 1);
}

Test(read_answer, feast_columns)
{
	plan_body(FL_READ_FEAST, "{\"features\":[\"stats:score\",\"stats:n_sum_1h\"],"
				 "\"entities\":{\"user_id\":[\"u2\",\"u9\"]}}");
	plan.as_of_given = true;
	cr_assert_eq(fl_time_parse(AS_OF, &plan.as_of_us), FL_OK);
	const uint64_t served[] = {4};
	expect_answer("{\"metadata\":{\"feature_names\":[\"user_id\",\"score\",\"n_sum_1h\"]},"
		      "\"results\":[{\"values\":[\"u2\",\"u9\"],\"statuses\":[\"PRESENT\","
		      "\"PRESENT\"],\"event_timestamps\":[\"1970-01-01T00:00:00Z\","
		      "\"1970-01-01T00:00:00Z\"]},"
		      "{\"values\":[0.25,null],\"statuses\":[\"PRESENT\",\"NOT_FOUND\"],"
		      "\"event_timestamps\":[\"2026-11-26T20:58:00Z\",\"1970-01-01T00:00:00Z\"]},"
		      "{\"values\":[0,0],\"statuses\":[\"PRESENT\",\"PRESENT\"],"
		      "\"event_timestamps\":[\"2026-11-26T21:00:00Z\",\"2026-11-26T21:00:00Z\"]}]}",
		      served, 1);
}

Test(read_answer, history_lines)
{
	const struct fl_read_params params = {get_param, (const char *const[]){"limit=5", NULL}};
	struct fl_error err;
	fl_read_plan_init(&plan, FL_READ_HISTORY, fl_svc_dev_principal(),
			  fl_projection_views(projection));
	cr_assert(fl_read_plan_history(&plan, "stats/u1", &params, &err), "%s", err.message);
	cr_assert_eq(fl_read_answer_plan(&plan, &sources, "r-test", 0, &result), FL_OK, "%s",
		     result.err.message);
	cr_expect_str_eq(result.content_type, "application/x-ndjson");
	cr_assert_eq(result.n_served, 2);
	cr_expect_eq(result.served[0], 2);
	cr_expect_eq(result.served[1], 3);
	/* two lines, each the signed log line of its seq */
	const char *second = memchr(result.body, '\n', result.len);
	cr_assert_not_null(second);
	cr_expect_not_null(strstr(result.body, "\"seq\":2,"));
	cr_expect_not_null(strstr(second, "\"seq\":3,"));
	cr_expect_eq(result.body[result.len - 1], '\n');
	cr_expect_eq(memchr(second + 1, '\n', result.len - (size_t)(second + 1 - result.body)),
		     result.body + result.len - 1);
}

Test(read_answer, cost_bound_and_proofs)
{
	const char *q[] = {"as_of=" AS_OF, NULL};
	plan_one("stats/u1", q);
	enum fl_status st = fl_read_answer_plan(&plan, &sources, "r-test", 1, &result);
	cr_expect_eq(st, FL_ERR_INVALID);
	cr_expect_str_eq(result.err.code, "read_too_expensive");
	cr_expect_null(result.body);
	fl_read_result_finish(&result);

	/* With proofs: each served value carries its signed line and inclusion proof. */
	plan.proof = true;
	st = fl_read_answer_plan(&plan, &sources, "r-test", 0, &result);
	cr_assert_eq(st, FL_OK, "%s", result.err.message);
	cr_expect_not_null(strstr(result.body, "\"seq\":3,\"proof\":{\"line\":{\"seq\":3,"), "%s",
			   result.body);
	cr_expect_not_null(strstr(result.body, "\"seq\":2,\"proof\":{\"line\":{\"seq\":2,"), "%s",
			   result.body);
	cr_expect_not_null(strstr(result.body, ",\"checkpoint\":"), "%s", result.body);
}
