/*
 * query-svc's read models against a brute-force oracle: thousands of random
 * events (out of order, late, equal timestamps), then every feature and
 * window function at many random as_of times.
 */
#include <criterion/criterion.h>
#include <lmdb.h>

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "eventlog/eventlog.h"
#include "fledger/event.h"
#include "fledger/util.h"
#include "projection.h"

#define N_ENTITIES 5
#define N_EVENTS 3000
#define MIN_US INT64_C(60000000)

static char tmpdir[256];
static struct fl_signer *signer;

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-proj-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
}

static void teardown(void)
{
	char cmd[300];
	fl_signer_destroy(signer);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(projection, .init = setup, .fini = teardown, .timeout = 600);

static const char *view_json =
    "{\"name\":\"v\",\"entity\":\"user_id\",\"max_age\":\"30m\","
    "\"features\":{\"x\":\"int64\",\"d\":\"double\",\"s\":\"string\"},"
    "\"windows\":["
    "{\"name\":\"x_count_5m\",\"fn\":\"count\",\"of\":\"x\",\"size\":\"5m\"},"
    "{\"name\":\"x_sum_10m\",\"fn\":\"sum\",\"of\":\"x\",\"size\":\"10m\"},"
    "{\"name\":\"x_avg_10m\",\"fn\":\"avg\",\"of\":\"x\",\"size\":\"10m\"},"
    "{\"name\":\"x_min_1h\",\"fn\":\"min\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_max_1h\",\"fn\":\"max\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"d_sum_15m\",\"fn\":\"sum\",\"of\":\"d\",\"size\":\"15m\"},"
    "{\"name\":\"d_avg_30m\",\"fn\":\"avg\",\"of\":\"d\",\"size\":\"30m\"},"
    "{\"name\":\"d_std_30m\",\"fn\":\"stddev\",\"of\":\"d\",\"size\":\"30m\"},"
    "{\"name\":\"d_min_2m\",\"fn\":\"min\",\"of\":\"d\",\"size\":\"2m\"},"
    "{\"name\":\"s_count_20m\",\"fn\":\"count\",\"of\":\"s\",\"size\":\"20m\"},"
    "{\"name\":\"s_last_20m\",\"fn\":\"last\",\"of\":\"s\",\"size\":\"20m\"},"
    "{\"name\":\"s_last3_1h\",\"fn\":\"last_n\",\"of\":\"s\",\"size\":\"1h\",\"n\":3}"
    "]}";

struct rec {
	int entity;
	int64_t ts;
	uint64_t seq;
	bool has_x, has_d, has_s;
	int64_t x;
	double d;
	char s[16];
};

static struct rec recs[N_EVENTS];
static size_t n_recs;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Builds an origin log with the view and N_EVENTS random events. */
static struct fl_log *build_log(int64_t base_us)
{
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/origin", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", base_us, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = base_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);

	/* Events over two hours, in random order, many with equal timestamps. */
	for (size_t i = 0; i < N_EVENTS; i += 100) {
		struct fl_log_input inputs[100];
		struct fl_log_result results[100];
		char *tails[100];
		for (size_t j = 0; j < 100; j++) {
			struct rec *r = &recs[i + j];
			r->entity = (int)(next_rand() % N_ENTITIES);
			/* timestamps on a 10 s grid, so that ties happen */
			r->ts = base_us - (int64_t)(next_rand() % 720) * 10000000;
			json_t *features = json_object();
			while (json_object_size(features) == 0) {
				r->has_x = next_rand() % 3 != 0;
				r->has_d = next_rand() % 3 != 0;
				r->has_s = next_rand() % 4 == 0;
				r->x = (int64_t)(next_rand() % 2001) - 1000;
				r->d = (double)(int64_t)(next_rand() % 100000) / 64.0 - 700.0;
				snprintf(r->s, sizeof(r->s), "p%u", (unsigned)(next_rand() % 1000));
				if (r->has_x)
					json_object_set_new(features, "x", json_integer(r->x));
				if (r->has_d)
					json_object_set_new(features, "d", json_real(r->d));
				if (r->has_s)
					json_object_set_new(features, "s", json_string(r->s));
			}
			char ts[FL_TIME_TEXT_LEN], entity[16];
			fl_time_format(r->ts, ts);
			snprintf(entity, sizeof(entity), "e%d", r->entity);
			json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "view", "v", "entity_id",
					       entity, "event_ts", ts, "features", features);
			struct fl_event event;
			struct fl_error err;
			cr_assert_eq(fl_event_validate(ev, "", registry, "p", base_us,
						       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event,
						       &err),
				     FL_OK, "%s", err.message);
			json_decref(ev);
			size_t len;
			cr_assert_eq(fl_event_body_tail(&event, &tails[j], &len), FL_OK);
			fl_event_finish(&event);
			inputs[j] = (struct fl_log_input){
			    .body_tail = tails[j], .body_tail_len = len, .time_us = base_us};
		}
		batch = (struct fl_log_batch){inputs, 100, results, FL_OK, 0};
		cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
		for (size_t j = 0; j < 100; j++) {
			recs[i + j].seq = results[j].seq;
			free(tails[j]);
		}
	}
	n_recs = N_EVENTS;
	fl_view_registry_destroy(registry);
	return log;
}

static struct fl_projection *project(struct fl_log *log, const char *name, size_t run)
{
	struct fl_projection *p;
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	struct fl_log_reader *r;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	uint64_t size = fl_log_reader_size(r);
	struct fl_log_entry *entries = calloc(run, sizeof(*entries));
	for (uint64_t seq = 1; seq <= size;) {
		size_t n = 0;
		while (n < run && seq <= size)
			cr_assert_eq(fl_log_reader_get(r, seq++, &entries[n++]), FL_OK);
		cr_assert_eq(fl_projection_apply(p, entries, n), FL_OK);
	}
	free(entries);
	fl_log_reader_end(r);
	cr_assert_eq(fl_projection_applied_seq(p), size);
	return p;
}

static bool later(const struct rec *a, const struct rec *b)
{
	return a->ts > b->ts || (a->ts == b->ts && a->seq > b->seq);
}

static bool has(const struct rec *r, char f)
{
	return f == 'x' ? r->has_x : f == 'd' ? r->has_d : r->has_s;
}

/* The newest record of entity at or before as_of carrying feature f. */
static const struct rec *oracle_latest(int entity, int64_t as_of, char f)
{
	const struct rec *best = NULL;
	for (size_t i = 0; i < n_recs; i++) {
		const struct rec *r = &recs[i];
		if (r->entity == entity && r->ts <= as_of && has(r, f) && (!best || later(r, best)))
			best = r;
	}
	return best;
}

static void check_close(double got, double want, const char *what)
{
	double tol = 1e-9 * fmax(1.0, fabs(want));
	cr_assert(fabs(got - want) <= tol, "%s: got %.17g, want %.17g", what, got, want);
}

/* Compares one window value with a brute-force computation. */
static void check_window(const struct fl_window *w, int entity, int64_t as_of, json_t *obj)
{
	const struct rec *in[N_EVENTS];
	size_t n = 0;
	char f = w->of[0];
	for (size_t i = 0; i < n_recs; i++) {
		const struct rec *r = &recs[i];
		if (r->entity == entity && r->ts > as_of - w->size_us && r->ts <= as_of &&
		    has(r, f))
			in[n++] = r;
	}
	/* order by (ts, seq) */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && later(in[j - 1], in[j]); j--) {
			const struct rec *t = in[j];
			in[j] = in[j - 1];
			in[j - 1] = t;
		}
	json_t *value = json_object_get(obj, "value");
	cr_assert_eq(json_integer_value(json_object_get(obj, "events")), (json_int_t)n, "%s events",
		     w->name);
	switch (w->fn) {
	case FL_WINDOW_COUNT:
		cr_assert_eq(json_integer_value(value), (json_int_t)n, "%s", w->name);
		break;
	case FL_WINDOW_SUM:
		if (f == 'x') {
			int64_t sum = 0;
			for (size_t i = 0; i < n; i++)
				sum += in[i]->x;
			cr_assert(json_is_integer(value), "%s must be an integer", w->name);
			cr_assert_eq(json_integer_value(value), sum, "%s", w->name);
		} else {
			double sum = 0;
			for (size_t i = 0; i < n; i++)
				sum += in[i]->d;
			check_close(json_real_value(value), sum, w->name);
		}
		break;
	case FL_WINDOW_AVG:
	case FL_WINDOW_STDDEV: {
		if (n == 0) {
			cr_assert(json_is_null(value), "%s empty must be null", w->name);
			break;
		}
		double mean = 0, var = 0;
		for (size_t i = 0; i < n; i++)
			mean += f == 'x' ? (double)in[i]->x : in[i]->d;
		mean /= (double)n;
		for (size_t i = 0; i < n; i++) {
			double v = f == 'x' ? (double)in[i]->x : in[i]->d;
			var += (v - mean) * (v - mean);
		}
		check_close(json_number_value(value), w->fn == FL_WINDOW_AVG ? mean : sqrt(var / n),
			    w->name);
		break;
	}
	case FL_WINDOW_MIN:
	case FL_WINDOW_MAX: {
		if (n == 0) {
			cr_assert(json_is_null(value), "%s empty must be null", w->name);
			break;
		}
		double best = f == 'x' ? (double)in[0]->x : in[0]->d;
		for (size_t i = 1; i < n; i++) {
			double v = f == 'x' ? (double)in[i]->x : in[i]->d;
			best = w->fn == FL_WINDOW_MIN ? fmin(best, v) : fmax(best, v);
		}
		cr_assert(f != 'x' || json_is_integer(value), "%s keeps int64", w->name);
		cr_assert_eq(json_number_value(value), best, "%s", w->name);
		break;
	}
	case FL_WINDOW_LAST:
		if (n == 0)
			cr_assert(json_is_null(value));
		else
			cr_assert_str_eq(json_string_value(value), in[n - 1]->s, "%s", w->name);
		break;
	case FL_WINDOW_LAST_N:
		if (n == 0) {
			cr_assert(json_is_null(value));
			break;
		}
		cr_assert_eq(json_array_size(value), n < w->n ? n : w->n, "%s size", w->name);
		for (size_t i = 0; i < json_array_size(value); i++)
			cr_assert_str_eq(json_string_value(json_array_get(value, i)),
					 in[n - 1 - i]->s, "%s[%zu]", w->name, i);
		break;
	}
}

/* A part of an answer (JSON text), parsed; the test owns the result. */
static json_t *parse_part(const char *text, size_t len)
{
	json_error_t jerr;
	json_t *value = json_loadb(text, len, 0, &jerr);
	cr_assert_not_null(value, "%s at %d in the answer text %.*s", jerr.text, jerr.position,
			   (int)len, text);
	cr_assert(json_is_object(value));
	return value;
}

Test(projection, features_and_windows_match_a_brute_force_oracle)
{
	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *p = project(log, "proj", 250);
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "v", &view), FL_OK);

	const struct fl_feature *features[3];
	const struct fl_window *windows[16];
	size_t n_windows = fl_view_window_count(view);
	for (size_t i = 0; i < 3; i++)
		features[i] = fl_view_feature_at(view, i);
	for (size_t i = 0; i < n_windows; i++)
		windows[i] = fl_view_window_at(view, i);

	for (int round = 0; round < 300; round++) {
		int entity = (int)(next_rand() % N_ENTITIES);
		/* as_of on and off the 10 s grid, before, inside and after the data */
		int64_t as_of = base - 7500 * INT64_C(1000000) +
				(int64_t)(next_rand() % 8000) * 1000000 +
				(round % 2 ? 0 : (int64_t)(next_rand() % 1000000));
		char entity_id[16];
		snprintf(entity_id, sizeof(entity_id), "e%d", entity);
		struct fl_read_request req = {.view = view,
					      .entity_id = entity_id,
					      .as_of_us = as_of,
					      .features = features,
					      .n_features = 3,
					      .windows = windows,
					      .n_windows = n_windows,
					      .with_window_seqs = true};
		struct fl_projection_read *read;
		struct fl_read_answer answer;
		struct fl_error err;
		cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
		cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK, "%s",
			     err.message);
		fl_projection_read_end(read);
		json_t *answer_features = parse_part(answer.features, answer.features_len);
		json_t *answer_windows = parse_part(answer.windows, answer.windows_len);

		for (size_t i = 0; i < 3; i++) {
			char f = features[i]->name[0];
			const struct rec *want = oracle_latest(entity, as_of, f);
			json_t *obj = json_object_get(answer_features, features[i]->name);
			const char *status = json_string_value(json_object_get(obj, "status"));
			if (!want) {
				cr_assert_str_eq(status, "NOT_FOUND");
				cr_assert(json_is_null(json_object_get(obj, "value")));
				continue;
			}
			cr_assert_eq(json_integer_value(json_object_get(obj, "seq")),
				     (json_int_t)want->seq, "feature %c at round %d", f, round);
			cr_assert_str_eq(status, as_of - want->ts > 30 * MIN_US ? "OUTSIDE_MAX_AGE"
										: "PRESENT");
			json_t *v = json_object_get(obj, "value");
			if (f == 'x')
				cr_assert_eq(json_integer_value(v), want->x);
			else if (f == 'd')
				cr_assert_eq(json_real_value(v), want->d);
			else
				cr_assert_str_eq(json_string_value(v), want->s);
		}
		for (size_t i = 0; i < n_windows; i++)
			check_window(windows[i], entity, as_of,
				     json_object_get(answer_windows, windows[i]->name));
		json_decref(answer_features);
		json_decref(answer_windows);
		fl_read_answer_finish(&answer);
	}
	fl_view_unref(view);
	fl_projection_close(p);
	fl_log_close(log);
}

Test(projection, equal_logs_give_equal_digests_whatever_the_runs)
{
	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *a = project(log, "a", 1000);
	struct fl_projection *b = project(log, "b", 7);
	uint64_t sa, sb;
	char da[65], db[65];
	cr_assert_eq(fl_projection_digest(a, &sa, da), FL_OK);
	cr_assert_eq(fl_projection_digest(b, &sb, db), FL_OK);
	cr_assert_eq(sa, sb);
	cr_assert_str_eq(da, db);

	/* Reopening keeps the state; a reset and a rebuild give it back. */
	fl_projection_close(b);
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/b", tmpdir);
	cr_assert_eq(fl_projection_open(dir, &b), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(b), sa);
	cr_assert_eq(fl_projection_digest(b, &sb, db), FL_OK);
	cr_assert_str_eq(da, db);
	cr_assert_eq(fl_projection_reset(b), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(b), 0);
	cr_assert_eq(fl_projection_digest(b, &sb, db), FL_OK);
	cr_assert_str_neq(da, db);
	fl_projection_close(b);
	b = project(log, "b", 333);
	cr_assert_eq(fl_projection_digest(b, &sb, db), FL_OK);
	cr_assert_str_eq(da, db);

	/* A run that does not start at applied_seq + 1 is refused. */
	struct fl_log_reader *r;
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 5, &e), FL_OK);
	cr_assert_eq(fl_projection_apply(b, &e, 1), FL_ERR_INVALID);
	fl_log_reader_end(r);
	fl_projection_close(a);
	fl_projection_close(b);
	fl_log_close(log);
}

/* Sets the stored layout number of the read models in dir (as an older query-svc left it). */
static void set_stored_format(const char *dir, uint64_t format)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	uint8_t buf[8];
	cr_assert_eq(mdb_env_create(&env), MDB_SUCCESS);
	mdb_env_set_maxdbs(env, 8);
	cr_assert_eq(mdb_env_open(env, dir, 0, 0600), MDB_SUCCESS);
	cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), MDB_SUCCESS);
	cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), MDB_SUCCESS);
	fl_put_be64(buf, format);
	MDB_val key = {6, "format"}, val = {8, buf};
	cr_assert_eq(mdb_put(txn, meta, &key, &val, 0), MDB_SUCCESS);
	cr_assert_eq(mdb_txn_commit(txn), MDB_SUCCESS);
	mdb_env_close(env);
}

Test(projection, models_of_another_layout_are_rebuilt)
{
	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *p = project(log, "layout", 500);
	uint64_t seq, seq2;
	char digest[65], digest2[65];
	cr_assert_eq(fl_projection_digest(p, &seq, digest), FL_OK);
	cr_assert_gt(seq, 0);
	fl_projection_close(p);

	char dir[300];
	snprintf(dir, sizeof(dir), "%s/layout", tmpdir);
	set_stored_format(dir, 1);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0, "models of layout 1 must be emptied");
	fl_projection_close(p);
	/* applied again from the log, they are the same as before */
	p = project(log, "layout", 777);
	cr_assert_eq(fl_projection_digest(p, &seq2, digest2), FL_OK);
	cr_assert_eq(seq2, seq);
	cr_assert_str_eq(digest2, digest);
	fl_projection_close(p);
	/* the current layout is kept across opens */
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), seq);
	fl_projection_close(p);
	fl_log_close(log);
}

Test(projection, late_events_never_overwrite_newer_ones)
{
	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *p = project(log, "p", 500);
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "v", &view), FL_OK);
	const struct fl_feature *x = fl_view_feature(view, "x");
	for (int entity = 0; entity < N_ENTITIES; entity++) {
		char entity_id[16];
		snprintf(entity_id, sizeof(entity_id), "e%d", entity);
		struct fl_read_request req = {.view = view,
					      .entity_id = entity_id,
					      .as_of_us = fl_time_now_us(),
					      .features = &x,
					      .n_features = 1};
		struct fl_projection_read *read;
		struct fl_read_answer answer;
		struct fl_error err;
		cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
		cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
		fl_projection_read_end(read);
		const struct rec *want = oracle_latest(entity, INT64_MAX, 'x');
		json_t *answer_features = parse_part(answer.features, answer.features_len);
		cr_assert_eq(json_integer_value(
				 json_object_get(json_object_get(answer_features, "x"), "seq")),
			     (json_int_t)want->seq);
		json_decref(answer_features);
		/* served seqs name exactly the value's event */
		cr_assert_eq(answer.n_served, 1);
		cr_assert_eq(answer.served_seqs[0], want->seq);
		fl_read_answer_finish(&answer);
	}
	/* An entity never written: every feature NOT_FOUND. */
	struct fl_read_request req = {.view = view,
				      .entity_id = "nobody",
				      .as_of_us = fl_time_now_us(),
				      .features = &x,
				      .n_features = 1};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
	json_t *answer_features = parse_part(answer.features, answer.features_len);
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(answer_features, "x"), "status")),
	    "NOT_FOUND");
	json_decref(answer_features);
	fl_read_answer_finish(&answer);
	/* as_of beyond the retention is a clear 400. */
	req.as_of_us = fl_time_now_us() - 31 * 24 * 60 * MIN_US;
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_ERR_INVALID);
	cr_assert_eq(err.http_status, 400);
	cr_assert_str_eq(err.code, "outside_retention");
	fl_projection_read_end(read);
	fl_view_unref(view);
	fl_projection_close(p);
	fl_log_close(log);
}

/* Writes dir's boot file as a process of boot `boot` would leave it. */
static void set_boot(const char *dir, const char *boot, const char *state)
{
	char path[320];
	snprintf(path, sizeof(path), "%s/boot", dir);
	FILE *f = fopen(path, "w");
	cr_assert(f);
	fprintf(f, "%s %s\n", boot, state);
	fclose(f);
}

/* Overwrites the middle of dir's data.mdb with garbage: a torn write. */
static void tear(const char *dir)
{
	char path[320];
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	FILE *f = fopen(path, "r+b");
	cr_assert(f);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	cr_assert_gt(size, 4 * 4096);
	cr_assert_eq(fseek(f, 0, SEEK_SET), 0); /* both meta pages, and what follows */
	for (long i = 0; i < size / 2; i++)
		fputc(0x5a, f);
	fclose(f);
}

Test(projection, models_left_open_by_an_earlier_boot_are_dropped)
{
	FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
	char boot[64] = "";
	if (!b || !fgets(boot, sizeof(boot), b))
		cr_skip_test("this system gives no boot id");
	fclose(b);
	boot[strcspn(boot, "\n")] = '\0';

	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *p = project(log, "boot", 500);
	uint64_t seq, seq2;
	char digest[65], digest2[65], dir[300];
	cr_assert_eq(fl_projection_digest(p, &seq, digest), FL_OK);
	cr_assert_gt(seq, 0);
	fl_projection_close(p);
	snprintf(dir, sizeof(dir), "%s/boot", tmpdir);

	/* closed cleanly in an earlier boot: kept */
	set_boot(dir, "an-earlier-boot", "closed");
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), seq);
	fl_projection_close(p);
	/* left open by a process of this boot (killed): kept, the page cache has it */
	set_boot(dir, boot, "open");
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), seq);
	fl_projection_close(p);
	/* left open when the machine went down, and torn: dropped, then rebuilt */
	set_boot(dir, "an-earlier-boot", "open");
	tear(dir);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0, "torn models must be dropped");
	fl_projection_close(p);
	p = project(log, "boot", 777);
	cr_assert_eq(fl_projection_digest(p, &seq2, digest2), FL_OK);
	cr_assert_eq(seq2, seq);
	cr_assert_str_eq(digest2, digest);
	fl_projection_close(p);
	fl_log_close(log);
}

/* ---- retention -------------------------------------------------------- */

static const char *retained_view_json =
    "{\"name\":\"r\",\"entity\":\"user_id\",\"retention\":\"1h\","
    "\"features\":{\"x\":\"int64\"},"
    "\"windows\":[{\"name\":\"x_count_10m\",\"fn\":\"count\",\"of\":\"x\",\"size\":\"10m\"}]}";

/* Appends one event of view r (entity e) with x, event_ts and ingest time. */
static uint64_t append_r(struct fl_log *log, struct fl_view_registry *registry, int64_t x,
			 int64_t event_ts_us, int64_t ingest_us)
{
	char ts[FL_TIME_TEXT_LEN];
	fl_time_format(event_ts_us, ts);
	json_t *ev = json_pack("{s:s,s:s,s:s,s:{s:I}}", "view", "r", "entity_id", "e", "event_ts",
			       ts, "features", "x", (json_int_t)x);
	struct fl_event event;
	struct fl_error err;
	cr_assert_eq(fl_event_validate(ev, "", registry, "p", ingest_us,
				       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
		     FL_OK, "%s", err.message);
	json_decref(ev);
	char *tail;
	size_t len;
	cr_assert_eq(fl_event_body_tail(&event, &tail, &len), FL_OK);
	fl_event_finish(&event);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = len, .time_us = ingest_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	return res.seq;
}

static enum fl_status collect_seq(void *ctx, uint64_t seq)
{
	uint64_t *seqs = ctx;
	seqs[++seqs[0]] = seq;
	return FL_OK;
}

/*
 * Reads x and x_count_10m of entity e as of as_of; FL_OK with the value of
 * x (-1 when NOT_FOUND) and the window's count, or the error's status.
 */
static enum fl_status read_r(struct fl_projection *p, int64_t as_of, int64_t *ret_x,
			     int64_t *ret_count, struct fl_error *err)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "r", &view), FL_OK);
	const struct fl_feature *x = fl_view_feature(view, "x");
	const struct fl_window *w = fl_view_window(view, "x_count_10m");
	struct fl_read_request req = {.view = view,
				      .entity_id = "e",
				      .as_of_us = as_of,
				      .features = &x,
				      .n_features = 1,
				      .windows = &w,
				      .n_windows = 1};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	fl_error_clear(err);
	enum fl_status st = fl_projection_query(read, &req, &answer, err);
	fl_projection_read_end(read);
	fl_view_unref(view);
	if (st != FL_OK)
		return st;
	json_t *features = parse_part(answer.features, answer.features_len);
	json_t *windows = parse_part(answer.windows, answer.windows_len);
	json_t *fx = json_object_get(features, "x");
	*ret_x = strcmp(json_string_value(json_object_get(fx, "status")), "PRESENT") == 0
		     ? json_integer_value(json_object_get(fx, "value"))
		     : -1;
	*ret_count =
	    json_integer_value(json_object_get(json_object_get(windows, "x_count_10m"), "value"));
	json_decref(features);
	json_decref(windows);
	fl_read_answer_finish(&answer);
	return FL_OK;
}

/*
 * History is pruned by the log's clock (the ingest_ts command-svc wrote), so
 * the retention guard of reads must use that clock too, not the reader's:
 * here command-svc's clock runs an hour ahead of this process's. An as_of
 * older than the retention answers outside_retention (never a value computed
 * from pruned history), a newer one answers exactly, before and after a
 * reopen.
 */
Test(projection, pruning_and_the_retention_guard_use_the_log_clock)
{
	int64_t now = fl_time_now_us();
	int64_t ahead = now + 60 * MIN_US; /* command-svc's clock */
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/origin-r", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(retained_view_json, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(
	    fl_event_view_body_tail(view, 1, "admin", now - 200 * MIN_US, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);

	/* Two old events, written when they happened: nothing pruned yet. */
	uint64_t s1 = append_r(log, registry, 1, now - 180 * MIN_US, now - 180 * MIN_US);
	uint64_t s2 = append_r(log, registry, 2, now - 90 * MIN_US, now - 90 * MIN_US);
	struct fl_projection *p = project(log, "retained", 100);
	int64_t x, count;
	struct fl_error err;
	cr_assert_eq(read_r(p, now - 85 * MIN_US, &x, &count, &err), FL_OK, "%s", err.message);
	cr_assert_eq(x, 2);
	cr_assert_eq(count, 1);
	fl_projection_close(p);

	/* Now events ingested an hour ahead of this clock: the history of e
	 * older than (their ingest_ts - 1h) = now is pruned. */
	uint64_t s3 = append_r(log, registry, 3, now + 55 * MIN_US, ahead);
	uint64_t s4 = append_r(log, registry, 4, now + 10 * MIN_US, ahead); /* late */
	fl_view_registry_destroy(registry);
	p = project(log, "retained2", 2);

	/* Pruning happened: only the two recent events are left. */
	uint64_t seqs[8] = {0};
	struct fl_projection_read *read;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(
	    fl_projection_history(read, "r", "e", INT64_MIN, INT64_MAX, 100, collect_seq, seqs),
	    FL_OK);
	fl_projection_read_end(read);
	cr_assert_eq(seqs[0], 2, "history left: %" PRIu64 " events", seqs[0]);
	cr_assert_eq(seqs[1], s4);
	cr_assert_eq(seqs[2], s3);
	(void)s1;
	(void)s2;

	for (int reopen = 0; reopen < 2; reopen++) {
		/* Inside this process's now - 1h, but before the log's: refused. */
		cr_assert_eq(read_r(p, now - 30 * MIN_US, &x, &count, &err), FL_ERR_INVALID,
			     "a read of pruned history answered x=%" PRId64, x);
		cr_assert_str_eq(err.code, "outside_retention");
		cr_assert_str_eq(err.field, "as_of");
		cr_assert_eq(read_r(p, now - 85 * MIN_US, &x, &count, &err), FL_ERR_INVALID);
		/* A window reaching before the log's now - 1h: refused. */
		cr_assert_eq(read_r(p, now + 5 * MIN_US, &x, &count, &err), FL_ERR_INVALID);
		cr_assert_str_eq(err.field, "windows");
		/* Newer reads answer exactly. */
		cr_assert_eq(read_r(p, now + 15 * MIN_US, &x, &count, &err), FL_OK, "%s",
			     err.message);
		cr_assert_eq(x, 4);
		cr_assert_eq(count, 1);
		cr_assert_eq(read_r(p, now + 58 * MIN_US, &x, &count, &err), FL_OK, "%s",
			     err.message);
		cr_assert_eq(x, 3);
		cr_assert_eq(count, 1);
		cr_assert_eq(read_r(p, now + 50 * MIN_US, &x, &count, &err), FL_OK);
		cr_assert_eq(x, 4);
		cr_assert_eq(count, 0);
		fl_projection_close(p);
		snprintf(dir, sizeof(dir), "%s/retained2", tmpdir);
		cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	}
	fl_projection_close(p);
	fl_log_close(log);
}

/* An event older than the retention when it arrives is pruned at once, even
 * when it is the only key of the history (it stays the latest value). */
Test(projection, pruning_the_only_history_entry)
{
	int64_t now = fl_time_now_us();
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/origin-one", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(retained_view_json, 0, &jerr);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", now, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	uint64_t seq = append_r(log, registry, 7, now - 120 * MIN_US, now);
	fl_view_registry_destroy(registry);

	struct fl_projection *p = project(log, "one", 10);
	uint64_t seqs[4] = {0};
	struct fl_projection_read *read;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(
	    fl_projection_history(read, "r", "e", INT64_MIN, INT64_MAX, 10, collect_seq, seqs),
	    FL_OK);
	fl_projection_read_end(read);
	cr_assert_eq(seqs[0], 0);
	int64_t x, count;
	struct fl_error err;
	cr_assert_eq(read_r(p, now, &x, &count, &err), FL_OK, "%s", err.message);
	cr_assert_eq(x, 7);
	cr_assert_eq(count, 0);
	(void)seq;
	fl_projection_close(p);
	fl_log_close(log);
}

/* ---- view versions survive a reopen ------------------------------------ */

/* Appends one body tail to log. */
static void append_tail(struct fl_log *log, char *tail, size_t len, int64_t now)
{
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = len, .time_us = now};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
}

/*
 * Appends version `version` of view "w": feature x and one more count window
 * per version (a compatible change), then a few events, to log; the view is
 * put into registry as command-svc does.
 */
static void append_view_version(struct fl_log *log, struct fl_view_registry *registry,
				uint64_t version, int64_t now)
{
	char text[2048];
	int len = snprintf(text, sizeof(text),
			   "{\"name\":\"w\",\"entity\":\"user_id\",\"max_age\":\"%" PRIu64 "h\","
			   "\"features\":{\"x\":\"int64\"},\"windows\":[",
			   version);
	for (uint64_t i = 1; i <= version; i++)
		len += snprintf(text + len, sizeof(text) - (size_t)len,
				"%s{\"name\":\"c%" PRIu64 "\",\"fn\":\"count\",\"of\":\"x\","
				"\"size\":\"%" PRIu64 "m\"}",
				i > 1 ? "," : "", i, 10 * i);
	snprintf(text + len, sizeof(text) - (size_t)len, "]}");
	json_error_t jerr;
	json_t *def = json_loads(text, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	struct fl_view *view;
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, version, "admin", now, &tail, &tail_len), FL_OK);
	append_tail(log, tail, tail_len, now);
	cr_assert_eq(fl_view_registry_put(registry, view, version), FL_OK);
	fl_view_unref(view);
	for (int i = 0; i < 3; i++) {
		json_t *ev = json_pack("{s:s,s:s,s:{s:I}}", "view", "w", "entity_id", "e1",
				       "features", "x", (json_int_t)(version * 10 + (uint64_t)i));
		struct fl_event event;
		struct fl_error err;
		cr_assert_eq(fl_event_validate(ev, "", registry, "p", now,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
			     FL_OK, "%s", err.message);
		json_decref(ev);
		cr_assert_eq(fl_event_body_tail(&event, &tail, &tail_len), FL_OK);
		fl_event_finish(&event);
		append_tail(log, tail, tail_len, now);
	}
}

/* Applies log's seqs after p's applied_seq. */
static void catch_up(struct fl_projection *p, struct fl_log *log)
{
	struct fl_log_reader *r;
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	uint64_t size = fl_log_reader_size(r);
	for (uint64_t seq = fl_projection_applied_seq(p) + 1; seq <= size; seq++) {
		cr_assert_eq(fl_log_reader_get(r, seq, &e), FL_OK);
		cr_assert_eq(fl_projection_apply(p, &e, 1), FL_OK);
	}
	fl_log_reader_end(r);
}

/* The count window named window of entity e1 in p, now. */
static json_int_t count_now(struct fl_projection *p, const char *window)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "w", &view), FL_OK);
	const struct fl_window *w = fl_view_window(view, window);
	cr_assert_not_null(w, "window %s missing from the reopened view", window);
	struct fl_read_request req = {.view = view,
				      .entity_id = "e1",
				      .as_of_us = fl_time_now_us(),
				      .windows = &w,
				      .n_windows = 1};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
	fl_projection_read_end(read);
	json_t *windows = parse_part(answer.windows, answer.windows_len);
	json_int_t count =
	    json_integer_value(json_object_get(json_object_get(windows, window), "value"));
	json_decref(windows);
	fl_read_answer_finish(&answer);
	fl_view_unref(view);
	return count;
}

/*
 * Models that saw 1, 2 and 5 versions of a view (events between them) open
 * again with the latest definition, keep applying, and equal a projection
 * that was never closed; a reset and rebuild gives the same digest.
 */
Test(projection, view_versions_survive_a_reopen)
{
	static const uint64_t versions[] = {1, 2, 5};
	for (size_t t = 0; t < sizeof(versions) / sizeof(versions[0]); t++) {
		uint64_t n_versions = versions[t];
		int64_t now = fl_time_now_us();
		char name[32], dir[300];
		struct fl_log *log;
		struct fl_view_registry *registry;
		snprintf(dir, sizeof(dir), "%s/origin%zu", tmpdir, t);
		cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
		cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
		for (uint64_t v = 1; v <= n_versions; v++)
			append_view_version(log, registry, v, now);

		snprintf(name, sizeof(name), "kept%zu", t);
		struct fl_projection *kept = project(log, name, 2);
		snprintf(name, sizeof(name), "reopened%zu", t);
		struct fl_projection *reopened = project(log, name, 3);
		fl_projection_close(reopened);
		snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
		cr_assert_eq(fl_projection_open(dir, &reopened), FL_OK,
			     "reopen after %" PRIu64 " versions", n_versions);

		struct fl_view *view;
		cr_assert_eq(fl_view_registry_get(fl_projection_views(reopened), "w", &view),
			     FL_OK);
		cr_assert_eq(fl_view_version(view), n_versions);
		cr_assert_eq(fl_view_window_count(view), n_versions);
		fl_view_unref(view);
		char window[32];
		snprintf(window, sizeof(window), "c%" PRIu64, n_versions);
		cr_assert_eq(count_now(reopened, window), (json_int_t)(3 * n_versions));

		uint64_t seq_kept, seq_reopened;
		char digest_kept[65], digest_reopened[65];
		cr_assert_eq(fl_projection_digest(kept, &seq_kept, digest_kept), FL_OK);
		cr_assert_eq(fl_projection_digest(reopened, &seq_reopened, digest_reopened), FL_OK);
		cr_assert_eq(seq_reopened, seq_kept);
		cr_assert_str_eq(digest_reopened, digest_kept);

		/* One more version and more events, applied to both. */
		append_view_version(log, registry, n_versions + 1, now);
		catch_up(kept, log);
		catch_up(reopened, log);
		snprintf(window, sizeof(window), "c%" PRIu64, n_versions + 1);
		cr_assert_eq(count_now(reopened, window), (json_int_t)(3 * (n_versions + 1)));
		cr_assert_eq(fl_projection_digest(kept, &seq_kept, digest_kept), FL_OK);
		cr_assert_eq(fl_projection_digest(reopened, &seq_reopened, digest_reopened), FL_OK);
		cr_assert_str_eq(digest_reopened, digest_kept);

		/* Closed again, reset (as --rebuild does) and applied anew. */
		fl_projection_close(reopened);
		cr_assert_eq(fl_projection_open(dir, &reopened), FL_OK);
		cr_assert_eq(fl_projection_reset(reopened), FL_OK);
		catch_up(reopened, log);
		cr_assert_eq(fl_projection_digest(reopened, &seq_reopened, digest_reopened), FL_OK);
		cr_assert_str_eq(digest_reopened, digest_kept);

		fl_projection_close(reopened);
		fl_projection_close(kept);
		fl_view_registry_destroy(registry);
		fl_log_close(log);
	}
}

/* The cost of a read: one unit per entity, one per stored event visited. */
Test(projection, a_read_over_its_cost_limit_is_422)
{
	int64_t now = fl_time_now_us();
	char dir[300];
	struct fl_log *log;
	struct fl_view_registry *registry;
	snprintf(dir, sizeof(dir), "%s/origin", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	append_view_version(log, registry, 1, now); /* e1: 3 events, window c1 */
	struct fl_projection *p = project(log, "cost", 10);
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "w", &view), FL_OK);
	const struct fl_window *w = fl_view_window(view, "c1");
	struct fl_read_request req = {.view = view,
				      .entity_id = "e1",
				      .as_of_us = fl_time_now_us(),
				      .windows = &w,
				      .n_windows = 1};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;

	static const struct {
		uint64_t limit;
		bool fits;
	} cases[] = {{0, true}, {4, true}, {3, false}, {1, false}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
		fl_projection_read_limit_cost(read, cases[i].limit);
		fl_error_clear(&err);
		enum fl_status st = fl_projection_query(read, &req, &answer, &err);
		if (cases[i].fits) {
			cr_assert_eq(st, FL_OK, "limit %" PRIu64, cases[i].limit);
			cr_assert_eq(fl_projection_read_cost(read), 4, "1 entity + 3 events");
			fl_read_answer_finish(&answer);
		} else {
			cr_assert_eq(st, FL_ERR_INVALID, "limit %" PRIu64, cases[i].limit);
			cr_assert_eq(err.http_status, 422);
			cr_assert_str_eq(err.code, "read_too_expensive");
		}
		fl_projection_read_end(read);
	}
	/* the cost adds up over the queries of one read (a batch) */
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	fl_projection_read_limit_cost(read, 8);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
	fl_read_answer_finish(&answer);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
	fl_read_answer_finish(&answer);
	cr_assert_eq(fl_projection_read_cost(read), 8);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_ERR_INVALID);
	cr_assert_eq(err.http_status, 422);
	fl_projection_read_end(read);
	fl_view_unref(view);
	fl_projection_close(p);
	fl_view_registry_destroy(registry);
	fl_log_close(log);
}

/*
 * An origin log holding the view of view_json and one event per text of
 * features (JSON objects), all for entity "e0", one second apart, the last
 * one a minute before base_us.
 */
static struct fl_log *log_of_events(int64_t base_us, const char *const *features, size_t n)
{
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/origin", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", base_us, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = base_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	for (size_t i = 0; i < n; i++) {
		json_t *f = json_loads(features[i], 0, &jerr);
		cr_assert_not_null(f, "%s: %s", features[i], jerr.text);
		char ts[FL_TIME_TEXT_LEN];
		fl_time_format(base_us - MIN_US - (int64_t)(n - i) * 1000000, ts);
		json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "view", "v", "entity_id", "e0",
				       "event_ts", ts, "features", f);
		struct fl_event event;
		struct fl_error err;
		cr_assert_eq(fl_event_validate(ev, "", registry, "p", base_us,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
			     FL_OK, "%s: %s", features[i], err.message);
		json_decref(ev);
		cr_assert_eq(fl_event_body_tail(&event, &tail, &tail_len), FL_OK);
		fl_event_finish(&event);
		in = (struct fl_log_input){
		    .body_tail = tail, .body_tail_len = tail_len, .time_us = base_us};
		batch = (struct fl_log_batch){&in, 1, &res, FL_OK, 0};
		cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
		free(tail);
	}
	fl_view_registry_destroy(registry);
	return log;
}

/* Reads every feature and window of "e0" at as_of; the test frees the parts. */
static void read_all(struct fl_projection *p, int64_t as_of, json_t **ret_features,
		     json_t **ret_windows)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "v", &view), FL_OK);
	const struct fl_feature *features[3];
	const struct fl_window *windows[16];
	size_t n_windows = fl_view_window_count(view);
	for (size_t i = 0; i < 3; i++)
		features[i] = fl_view_feature_at(view, i);
	for (size_t i = 0; i < n_windows; i++)
		windows[i] = fl_view_window_at(view, i);
	struct fl_read_request req = {.view = view,
				      .entity_id = "e0",
				      .as_of_us = as_of,
				      .features = features,
				      .n_features = 3,
				      .windows = windows,
				      .n_windows = n_windows,
				      .with_window_seqs = true};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK, "%s", err.message);
	fl_projection_read_end(read);
	*ret_features = parse_part(answer.features, answer.features_len);
	*ret_windows = parse_part(answer.windows, answer.windows_len);
	fl_read_answer_finish(&answer);
	fl_view_unref(view);
}

static double window_value(json_t *windows, const char *name)
{
	json_t *v = json_object_get(json_object_get(windows, name), "value");
	cr_assert(json_is_number(v), "%s: not a number", name);
	return json_number_value(v);
}

/*
 * Subnormal doubles (strtod reports ERANGE for them) are values like any
 * other: the latest value and every window over them are read, exactly.
 */
Test(projection, subnormal_doubles_are_read_exactly)
{
	static const char *const events[] = {
	    "{\"d\":1e-320}",
	    "{\"d\":-4.9406564584124654e-324, \"x\":1}",
	    "{\"d\":2.2250738585072009e-308}", /* the largest subnormal */
	    "{\"d\":1e-320}",
	};
	int64_t base = fl_time_now_us();
	struct fl_log *log = log_of_events(base, events, 4);
	struct fl_projection *p = project(log, "p", 10);
	json_t *features, *windows;
	read_all(p, base, &features, &windows);
	json_t *d = json_object_get(features, "d");
	cr_assert_str_eq(json_string_value(json_object_get(d, "status")), "PRESENT");
	cr_assert_eq(json_real_value(json_object_get(d, "value")), 1e-320);
	double sum = 1e-320 + -4.9406564584124654e-324 + 2.2250738585072009e-308 + 1e-320;
	cr_assert_eq(window_value(windows, "d_sum_15m"), sum);
	cr_assert_eq(window_value(windows, "d_avg_30m"), sum / 4);
	cr_assert_eq(window_value(windows, "d_min_2m"), -4.9406564584124654e-324);
	cr_assert(window_value(windows, "d_std_30m") >= 0);
	cr_assert_eq(
	    json_integer_value(json_object_get(json_object_get(windows, "d_sum_15m"), "events")),
	    4);
	json_decref(features);
	json_decref(windows);
	fl_projection_close(p);
	fl_log_close(log);
}

/* Sums beyond the double range are null, never an error. */
Test(projection, overflowing_window_sums_are_null_not_errors)
{
	static const char *const events[] = {
	    "{\"d\":1.7976931348623157e308}",
	    "{\"d\":1.7976931348623157e308}",
	};
	int64_t base = fl_time_now_us();
	struct fl_log *log = log_of_events(base, events, 2);
	struct fl_projection *p = project(log, "p", 10);
	json_t *features, *windows;
	read_all(p, base, &features, &windows);
	cr_assert(json_is_null(json_object_get(json_object_get(windows, "d_sum_15m"), "value")));
	cr_assert_eq(window_value(windows, "d_min_2m"), 1.7976931348623157e308);
	json_decref(features);
	json_decref(windows);
	fl_projection_close(p);
	fl_log_close(log);
}

/*
 * A log in tmpdir/name with the view and events (entity e1, event_ts base
 * minus minutes_ago[i] minutes, feature x = xs[i]).
 */
static struct fl_log *small_log(const char *name, int64_t base_us, const int *minutes_ago,
				const int64_t *xs, size_t n)
{
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", base_us, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = base_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	for (size_t i = 0; i < n; i++) {
		char ts[FL_TIME_TEXT_LEN];
		fl_time_format(base_us - minutes_ago[i] * MIN_US, ts);
		json_t *ev = json_pack("{s:s,s:s,s:s,s:{s:I}}", "view", "v", "entity_id", "e1",
				       "event_ts", ts, "features", "x", (json_int_t)xs[i]);
		struct fl_event event;
		struct fl_error err;
		cr_assert_eq(fl_event_validate(ev, "", registry, "p", base_us,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
			     FL_OK, "%s", err.message);
		json_decref(ev);
		cr_assert_eq(fl_event_body_tail(&event, &tail, &tail_len), FL_OK);
		fl_event_finish(&event);
		in = (struct fl_log_input){
		    .body_tail = tail, .body_tail_len = tail_len, .time_us = base_us};
		batch = (struct fl_log_batch){&in, 1, &res, FL_OK, 0};
		cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
		free(tail);
	}
	fl_view_registry_destroy(registry);
	return log;
}

/*
 * The digest covers the read models, not only applied_seq: logs of the same
 * length whose projections differ give different digests, whether the
 * difference is in the latest values or only in the history (an older
 * event that does not change the latest value).
 */
Test(projection, digest_tells_states_of_equal_applied_seq_apart)
{
	int64_t base = fl_time_now_us() - 10 * MIN_US;
	const int ago[] = {1, 3};
	const int64_t xs[] = {10, 20}, history_only[] = {10, 21}, latest_too[] = {11, 20};
	struct fl_log *logs[4] = {
	    small_log("log-a", base, ago, xs, 2),
	    small_log("log-b", base, ago, xs, 2),
	    small_log("log-history", base, ago, history_only, 2),
	    small_log("log-latest", base, ago, latest_too, 2),
	};
	const char *names[4] = {"p-a", "p-b", "p-history", "p-latest"};
	char digests[4][65];
	uint64_t seqs[4];
	for (size_t i = 0; i < 4; i++) {
		struct fl_projection *p = project(logs[i], names[i], 1 + i);
		cr_assert_eq(fl_projection_digest(p, &seqs[i], digests[i]), FL_OK);
		fl_projection_close(p);
		fl_log_close(logs[i]);
		cr_assert_eq(seqs[i], 3);
	}
	cr_assert_str_eq(digests[0], digests[1], "the same events, another instance");
	cr_assert_str_neq(digests[0], digests[2], "an older value differs: the history differs");
	cr_assert_str_neq(digests[0], digests[3], "the latest value differs");
	cr_assert_str_neq(digests[2], digests[3]);
}

/*
 * Torn models: the garbage matters (LMDB refuses torn models the boot
 * record does not flag, so they are never read as valid), models left open
 * by an earlier boot are dropped, and so are models with a missing or
 * unreadable boot record (nobody can tell how they were left).
 */
Test(projection, torn_models_are_refused_or_dropped_never_read)
{
	FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
	char boot[64] = "", dir[300], path[320];
	if (!b || !fgets(boot, sizeof(boot), b))
		cr_skip_test("this system gives no boot id");
	fclose(b);
	boot[strcspn(boot, "\n")] = '\0';

	int64_t base = fl_time_now_us() - 60 * MIN_US;
	struct fl_log *log = build_log(base);
	struct fl_projection *p = project(log, "torn", 500);
	uint64_t seq = fl_projection_applied_seq(p);
	cr_assert_gt(seq, 0);
	fl_projection_close(p);
	snprintf(dir, sizeof(dir), "%s/torn", tmpdir);
	snprintf(path, sizeof(path), "%s/boot", dir);

	/* Torn, but the record says closed, or open in this boot: refused. */
	tear(dir);
	set_boot(dir, "an-earlier-boot", "closed");
	p = NULL;
	cr_assert_neq(fl_projection_open(dir, &p), FL_OK, "torn models opened");
	set_boot(dir, boot, "open");
	cr_assert_neq(fl_projection_open(dir, &p), FL_OK, "torn models opened");
	/* Torn, left open by an earlier boot: dropped, empty, rebuilt. */
	set_boot(dir, "an-earlier-boot", "open");
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0);
	fl_projection_close(p);

	/* Whole models without a boot record: cannot tell, dropped. */
	p = project(log, "torn", 500);
	fl_projection_close(p);
	cr_assert_eq(remove(path), 0);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0, "models without a boot record were kept");
	fl_projection_close(p);
	/* Torn without a boot record: dropped too. */
	p = project(log, "torn", 500);
	fl_projection_close(p);
	tear(dir);
	cr_assert_eq(remove(path), 0);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0);
	fl_projection_close(p);
	/* An unreadable boot record is no record. */
	p = project(log, "torn", 500);
	fl_projection_close(p);
	FILE *f = fopen(path, "w");
	cr_assert(f);
	fputs("\x5a\x5a\x5a", f);
	fclose(f);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), 0);
	fl_projection_close(p);
	/* A clean close keeps them. */
	p = project(log, "torn", 500);
	fl_projection_close(p);
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert_eq(fl_projection_applied_seq(p), seq);
	fl_projection_close(p);
	fl_log_close(log);
}

/* ---- windows from tiles against a raw-event oracle ------------------------ */

/*
 * Entity "hot" gets TILE_TEST_HOT events, "wide" TILE_TEST_WIDE events whose
 * d is 1e9 plus a small delta (hostile to a naive variance), "cold" a few.
 * Events arrive in random order, in batches whose ingest time moves on a
 * minute each, so that retention (3h) prunes the oldest ones as the log goes
 * on; timestamps repeat (whole seconds) and some sit on tile boundaries.
 */
#define TILE_TEST_HOT 3500
#define TILE_TEST_WIDE 1500
#define TILE_TEST_COLD 5
#define TILE_TEST_N (TILE_TEST_HOT + TILE_TEST_WIDE + TILE_TEST_COLD)
#define SEC_US INT64_C(1000000)

static const char *tile_view_json =
    "{\"name\":\"t\",\"entity\":\"id\",\"retention\":\"3h\","
    "\"features\":{\"x\":\"int64\",\"d\":\"double\",\"s\":\"string\"},"
    "\"windows\":["
    "{\"name\":\"x_count\",\"fn\":\"count\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_sum\",\"fn\":\"sum\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_avg\",\"fn\":\"avg\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_min\",\"fn\":\"min\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_max\",\"fn\":\"max\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_std\",\"fn\":\"stddev\",\"of\":\"x\",\"size\":\"1h\"},"
    "{\"name\":\"x_sum_7s\",\"fn\":\"sum\",\"of\":\"x\",\"size\":\"7s\"},"
    "{\"name\":\"x_max_10m\",\"fn\":\"max\",\"of\":\"x\",\"size\":\"10m\"},"
    "{\"name\":\"d_sum\",\"fn\":\"sum\",\"of\":\"d\",\"size\":\"1h\"},"
    "{\"name\":\"d_avg_90m\",\"fn\":\"avg\",\"of\":\"d\",\"size\":\"90m\"},"
    "{\"name\":\"d_min\",\"fn\":\"min\",\"of\":\"d\",\"size\":\"1h\"},"
    "{\"name\":\"d_max_2h\",\"fn\":\"max\",\"of\":\"d\",\"size\":\"2h\"},"
    "{\"name\":\"d_std\",\"fn\":\"stddev\",\"of\":\"d\",\"size\":\"1h\"},"
    "{\"name\":\"d_std_5m\",\"fn\":\"stddev\",\"of\":\"d\",\"size\":\"5m\"},"
    "{\"name\":\"s_count\",\"fn\":\"count\",\"of\":\"s\",\"size\":\"1h\"},"
    "{\"name\":\"s_last\",\"fn\":\"last\",\"of\":\"s\",\"size\":\"1h\"},"
    "{\"name\":\"s_last5\",\"fn\":\"last_n\",\"of\":\"s\",\"size\":\"1h\",\"n\":5}"
    "]}";

struct tile_rec {
	const char *entity;
	int64_t ts, ingest;
	uint64_t seq;
	bool has_x, has_d, has_s;
	int64_t x;
	double d;
	char s[16];
};

static struct tile_rec trecs[TILE_TEST_N];

/* Builds the origin log of the tile tests; returns its last ingest time. */
static struct fl_log *build_tile_log(int64_t t0, int64_t *ret_clock)
{
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;

	snprintf(dir, sizeof(dir), "%s/origin", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(tile_view_json, 0, &jerr);
	cr_assert_not_null(def, "%s", jerr.text);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", t0, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = t0};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);

	/* who gets which event, shuffled */
	for (size_t i = 0; i < TILE_TEST_N; i++)
		trecs[i].entity = i < TILE_TEST_HOT		       ? "hot"
				  : i < TILE_TEST_HOT + TILE_TEST_WIDE ? "wide"
								       : "cold";
	for (size_t i = TILE_TEST_N - 1; i > 0; i--) {
		size_t j = next_rand() % (i + 1);
		const char *t = trecs[i].entity;
		trecs[i].entity = trecs[j].entity;
		trecs[j].entity = t;
	}
	int64_t ingest = t0;
	for (size_t i = 0; i < TILE_TEST_N; i += 100) {
		size_t in_batch = TILE_TEST_N - i < 100 ? TILE_TEST_N - i : 100;
		struct fl_log_input inputs[100];
		struct fl_log_result results[100];
		char *tails[100];
		ingest = t0 + (int64_t)(i / 100) * 60 * SEC_US;
		for (size_t j = 0; j < in_batch; j++) {
			struct tile_rec *r = &trecs[i + j];
			bool wide = strcmp(r->entity, "wide") == 0;
			r->ingest = ingest;
			/* whole seconds over the 3 h before ingest (ties), some with a
			 * fraction, some on a tile boundary (2^20 .. 2^26 µs) */
			uint64_t pick = next_rand() % 8;
			r->ts = ingest - (int64_t)(next_rand() % 10800) * SEC_US;
			if (pick == 0)
				r->ts -= (int64_t)(next_rand() % SEC_US);
			else if (pick == 1)
				r->ts &= ~((INT64_C(1) << (20 + 3 * (next_rand() % 3))) - 1);
			json_t *features = json_object();
			while (json_object_size(features) == 0) {
				r->has_x = !wide && next_rand() % 4 != 0;
				r->has_d = wide || next_rand() % 3 != 0;
				r->has_s = !wide && next_rand() % 3 == 0;
				r->x = (int64_t)(next_rand() % 20001) - 10000;
				if (next_rand() % 50 == 0)
					r->x = next_rand() % 2 ? INT64_MAX / 4 : INT64_MIN / 4;
				/* multiples of 1/64: every sum of them is exact in a double */
				r->d = wide
					   ? 1e9 + (double)(next_rand() % 1024) / 64.0
					   : (double)(int64_t)(next_rand() % 100000) / 64.0 - 700.0;
				snprintf(r->s, sizeof(r->s), "s%u",
					 (unsigned)(next_rand() % 100000));
				if (r->has_x)
					json_object_set_new(features, "x", json_integer(r->x));
				if (r->has_d)
					json_object_set_new(features, "d", json_real(r->d));
				if (r->has_s)
					json_object_set_new(features, "s", json_string(r->s));
			}
			char ts[FL_TIME_TEXT_LEN];
			fl_time_format(r->ts, ts);
			json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "view", "t", "entity_id",
					       r->entity, "event_ts", ts, "features", features);
			struct fl_event event;
			struct fl_error err;
			cr_assert_eq(fl_event_validate(ev, "", registry, "p", ingest,
						       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event,
						       &err),
				     FL_OK, "%s", err.message);
			json_decref(ev);
			size_t len;
			cr_assert_eq(fl_event_body_tail(&event, &tails[j], &len), FL_OK);
			fl_event_finish(&event);
			inputs[j] = (struct fl_log_input){
			    .body_tail = tails[j], .body_tail_len = len, .time_us = ingest};
		}
		batch = (struct fl_log_batch){inputs, in_batch, results, FL_OK, 0};
		cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
		for (size_t j = 0; j < in_batch; j++) {
			trecs[i + j].seq = results[j].seq;
			free(tails[j]);
		}
	}
	fl_view_registry_destroy(registry);
	*ret_clock = ingest;
	return log;
}

static bool trec_has(const struct tile_rec *r, char f)
{
	return f == 'x' ? r->has_x : f == 'd' ? r->has_d : r->has_s;
}

static bool trec_later(const struct tile_rec *a, const struct tile_rec *b)
{
	return a->ts > b->ts || (a->ts == b->ts && a->seq > b->seq);
}

/*
 * The oracle: window w of entity at as_of from the raw events, sorted by
 * (event_ts, seq); sums in long double, stddev in two passes. Every event
 * of a window the retention guard admits is still in history (pruning
 * removes only events older than every admitted window).
 */
static double tile_stddev_worst; /* the largest relative stddev error seen */

static void tile_check_window(const struct fl_window *w, const char *entity, int64_t as_of,
			      json_t *obj, const char *ctx)
{
	static const struct tile_rec *in[TILE_TEST_N];
	size_t n = 0;
	char f = w->of[0];
	for (size_t i = 0; i < TILE_TEST_N; i++) {
		const struct tile_rec *r = &trecs[i];
		if (strcmp(r->entity, entity) == 0 && r->ts > as_of - w->size_us &&
		    r->ts <= as_of && trec_has(r, f))
			in[n++] = r;
	}
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && trec_later(in[j - 1], in[j]); j--) {
			const struct tile_rec *t = in[j];
			in[j] = in[j - 1];
			in[j - 1] = t;
		}
	json_t *value = json_object_get(obj, "value");
	cr_assert_eq(json_integer_value(json_object_get(obj, "events")), (json_int_t)n,
		     "%s events %s", w->name, ctx);
	if (n == 0 && w->fn != FL_WINDOW_COUNT && w->fn != FL_WINDOW_SUM) {
		cr_assert(json_is_null(value), "%s empty must be null %s", w->name, ctx);
		return;
	}
	long double sum = 0, mean = 0, m2 = 0;
	for (size_t i = 0; i < n; i++)
		sum += f == 'x' ? (long double)in[i]->x : (long double)in[i]->d;
	if (n)
		mean = sum / n;
	for (size_t i = 0; i < n; i++) {
		long double v = f == 'x' ? (long double)in[i]->x : (long double)in[i]->d;
		m2 += (v - mean) * (v - mean);
	}
	switch (w->fn) {
	case FL_WINDOW_COUNT:
		cr_assert_eq(json_integer_value(value), (json_int_t)n, "%s %s", w->name, ctx);
		break;
	case FL_WINDOW_SUM:
		if (f == 'x') {
			__int128 isum = 0;
			for (size_t i = 0; i < n; i++)
				isum += in[i]->x;
			if (isum > INT64_MAX || isum < INT64_MIN)
				cr_assert_eq(json_real_value(value), (double)isum, "%s %s", w->name,
					     ctx);
			else
				cr_assert(json_is_integer(value) &&
					      json_integer_value(value) == (json_int_t)isum,
					  "%s %s: not the exact integer sum", w->name, ctx);
		} else { /* sums of multiples of 1/64 are exact: equal, not close */
			cr_assert_eq(json_real_value(value), (double)sum, "%s %s", w->name, ctx);
		}
		break;
	case FL_WINDOW_AVG:
		if (f == 'd')
			cr_assert_eq(json_real_value(value), (double)sum / (double)n, "%s %s",
				     w->name, ctx);
		else
			check_close(json_real_value(value), (double)(sum / n), w->name);
		break;
	case FL_WINDOW_STDDEV: {
		double want = (double)sqrtl(m2 / n), got = json_real_value(value);
		double err = want == 0 ? fabs(got) : fabs(got - want) / want;
		if (err > tile_stddev_worst)
			tile_stddev_worst = err;
		/* Welford/Chan: on 1e9 + deltas of ~5, the running mean carries
		 * ~1e-7 of rounding, a few 1e-9 of the stddev */
		cr_assert(want == 0 ? got < 1e-6 : err <= 1e-7, "%s %s: got %.17g, want %.17g",
			  w->name, ctx, got, want);
		break;
	}
	case FL_WINDOW_MIN:
	case FL_WINDOW_MAX: {
		const struct tile_rec *best = in[0];
		for (size_t i = 1; i < n; i++) {
			double v = f == 'x' ? (double)in[i]->x : in[i]->d;
			double b = f == 'x' ? (double)best->x : best->d;
			if (w->fn == FL_WINDOW_MIN ? v < b : v > b)
				best = in[i];
		}
		if (f == 'x')
			cr_assert(json_is_integer(value) && json_integer_value(value) == best->x,
				  "%s %s", w->name, ctx);
		else
			cr_assert_eq(json_real_value(value), best->d, "%s %s", w->name, ctx);
		break;
	}
	case FL_WINDOW_LAST:
		cr_assert_str_eq(json_string_value(value), in[n - 1]->s, "%s %s", w->name, ctx);
		break;
	case FL_WINDOW_LAST_N:
		cr_assert_eq(json_array_size(value), n < w->n ? n : w->n, "%s size %s", w->name,
			     ctx);
		for (size_t i = 0; i < json_array_size(value); i++)
			cr_assert_str_eq(json_string_value(json_array_get(value, i)),
					 in[n - 1 - i]->s, "%s[%zu] %s", w->name, i, ctx);
		break;
	}
	json_t *seqs = json_object_get(obj, "seqs");
	if (seqs) { /* listed: exactly the window's events */
		cr_assert(n <= 1000, "%s lists %zu seqs", w->name, n);
		cr_assert_eq(json_array_size(seqs), n, "%s seqs %s", w->name, ctx);
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(json_integer_value(json_array_get(seqs, i)),
				     (json_int_t)in[i]->seq, "%s seqs[%zu] %s", w->name, i, ctx);
	}
}

/* Reads every window of entity at as_of; the caller frees the answer. */
static json_t *tile_read(struct fl_projection *p, const char *entity, int64_t as_of, bool seqs,
			 uint64_t *ret_cost)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "t", &view), FL_OK);
	const struct fl_window *windows[32];
	size_t n_windows = fl_view_window_count(view);
	for (size_t i = 0; i < n_windows; i++)
		windows[i] = fl_view_window_at(view, i);
	struct fl_read_request req = {.view = view,
				      .entity_id = entity,
				      .as_of_us = as_of,
				      .windows = windows,
				      .n_windows = n_windows,
				      .with_window_seqs = seqs};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK, "%s", err.message);
	if (ret_cost)
		*ret_cost = fl_projection_read_cost(read);
	fl_projection_read_end(read);
	json_t *windows_obj = parse_part(answer.windows, answer.windows_len);
	fl_read_answer_finish(&answer);
	fl_view_unref(view);
	return windows_obj;
}

/*
 * Every window function of entities with thousands of events, from tiles,
 * equals the oracle at as_of on, just before and just after event times and
 * tile boundaries; the answer is the same with and without seqs; a hot
 * entity's read visits a few hundred records, not its thousands of events.
 */
Test(projection, tiled_windows_match_a_raw_event_oracle)
{
	int64_t t0 = fl_time_now_us() - 40 * MIN_US, clock;
	struct fl_log *log = build_tile_log(t0, &clock);
	struct fl_projection *p = project(log, "tiles", 97);
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "t", &view), FL_OK);
	/* the longest window (2h) must stay inside retention (3h) */
	int64_t earliest = clock - 3 * 60 * MIN_US + 2 * 60 * MIN_US;
	static const char *const entities[] = {"hot", "wide", "cold"};
	uint64_t hot_cost_max = 0;
	for (int round = 0; round < 360; round++) {
		const char *entity = entities[round % 3];
		int64_t as_of;
		const struct tile_rec *r = &trecs[next_rand() % TILE_TEST_N];
		switch (round % 6) {
		case 0: /* on an event */
		case 1:
			as_of = r->ts + (int64_t)(next_rand() % 3) - 1; /* at, before, after */
			break;
		case 2: /* a window edge on an event: as_of - size = its ts */
			as_of = r->ts + 60 * MIN_US + (int64_t)(next_rand() % 3) - 1;
			break;
		case 3: { /* on a tile boundary, at and around it */
			int64_t width = INT64_C(1) << (20 + 3 * (next_rand() % 5));
			as_of = (r->ts & ~(width - 1)) + (int64_t)(next_rand() % 3) - 1;
			break;
		}
		default:
			as_of = earliest + (int64_t)(next_rand() % (uint64_t)(clock - earliest));
		}
		if (as_of < earliest || as_of > clock)
			as_of = earliest + (int64_t)(next_rand() % (uint64_t)(clock - earliest));
		uint64_t cost;
		json_t *plain = tile_read(p, entity, as_of, false, &cost);
		json_t *listed = tile_read(p, entity, as_of, true, NULL);
		char ctx[96];
		snprintf(ctx, sizeof(ctx), "(%s, round %d, as_of %" PRId64 ")", entity, round,
			 as_of);
		for (size_t i = 0; i < fl_view_window_count(view); i++) {
			const struct fl_window *w = fl_view_window_at(view, i);
			json_t *a = json_object_get(plain, w->name),
			       *b = json_object_get(listed, w->name);
			tile_check_window(w, entity, as_of, a, ctx);
			tile_check_window(w, entity, as_of, b, ctx);
			cr_assert(
			    json_equal(json_object_get(a, "value"), json_object_get(b, "value")),
			    "%s %s: the value depends on proof", w->name, ctx);
		}
		if (strcmp(entity, "hot") == 0 && cost > hot_cost_max)
			hot_cost_max = cost;
		json_decref(plain);
		json_decref(listed);
	}
	/* ~3500 events over 3 h: a 1 h window holds ~1000 of them, the 2 h one ~2000 */
	cr_assert(hot_cost_max < 1200, "a hot read visited %" PRIu64 " records", hot_cost_max);
	fprintf(stderr,
		"tiled windows: largest relative stddev error %.3g; hot read cost <= %" PRIu64 "\n",
		tile_stddev_worst, hot_cost_max);
	fl_view_unref(view);
	fl_projection_close(p);
	fl_log_close(log);
}

/* Tiles are part of the digest: any split into runs gives the same models. */
Test(projection, tiles_are_the_same_whatever_the_runs)
{
	int64_t t0 = fl_time_now_us() - 40 * MIN_US, clock;
	struct fl_log *log = build_tile_log(t0, &clock);
	struct fl_projection *a = project(log, "a", 1000), *b = project(log, "b", 7);
	char ha[2 * FL_HASH_LEN + 1], hb[2 * FL_HASH_LEN + 1];
	uint64_t sa, sb;
	cr_assert_eq(fl_projection_digest(a, &sa, ha), FL_OK);
	cr_assert_eq(fl_projection_digest(b, &sb, hb), FL_OK);
	cr_assert_eq(sa, sb);
	cr_assert_str_eq(ha, hb);
	/* and a rebuild (reset, apply again) gives them again */
	cr_assert_eq(fl_projection_reset(b), FL_OK);
	fl_projection_close(b);
	b = project(log, "b", 333);
	cr_assert_eq(fl_projection_digest(b, &sb, hb), FL_OK);
	cr_assert_str_eq(ha, hb);
	/* runs of one event (the live path) update the tiles in place */
	cr_assert_eq(fl_projection_reset(b), FL_OK);
	fl_projection_close(b);
	b = project(log, "b", 1);
	cr_assert_eq(fl_projection_digest(b, &sb, hb), FL_OK);
	cr_assert_str_eq(ha, hb);
	fl_projection_close(a);
	fl_projection_close(b);
	fl_log_close(log);
}

/* Appends one event of view "v" for entity e1 with x, ingested at ingest_us. */
static uint64_t append_known(struct fl_log *log, struct fl_view_registry *registry,
			     int64_t event_us, int64_t ingest_us, int x)
{
	char ts[FL_TIME_TEXT_LEN];
	fl_time_format(event_us, ts);
	json_t *ev = json_pack("{s:s,s:s,s:s,s:{s:i}}", "view", "v", "entity_id", "e1", "event_ts",
			       ts, "features", "x", x);
	struct fl_event event;
	struct fl_error err;
	cr_assert_eq(fl_event_validate(ev, "", registry, "p", ingest_us,
				       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
		     FL_OK, "%s", err.message);
	json_decref(ev);
	char *tail;
	size_t len;
	cr_assert_eq(fl_event_body_tail(&event, &tail, &len), FL_OK);
	fl_event_finish(&event);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = len, .time_us = ingest_us};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	return res.seq;
}

/* x's seq and the two windows (count, sum) of e1 read as of as_of, known at known_at. */
static void read_known(struct fl_projection *p, int64_t as_of, int64_t known_at,
		       json_int_t *ret_seq, json_int_t *ret_count, json_int_t *ret_sum)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "v", &view), FL_OK);
	const struct fl_feature *x = fl_view_feature(view, "x");
	const struct fl_window *windows[2] = {fl_view_window(view, "x_count_5m"),
					      fl_view_window(view, "x_sum_10m")};
	struct fl_read_request req = {.view = view,
				      .entity_id = "e1",
				      .as_of_us = as_of,
				      .features = &x,
				      .n_features = 1,
				      .windows = windows,
				      .n_windows = 2,
				      .known_at_us = known_at};
	struct fl_projection_read *read;
	struct fl_read_answer answer;
	struct fl_error err;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	cr_assert_eq(fl_projection_query(read, &req, &answer, &err), FL_OK);
	fl_projection_read_end(read);
	json_t *f = parse_part(answer.features, answer.features_len);
	json_t *w = parse_part(answer.windows, answer.windows_len);
	*ret_seq = json_integer_value(json_object_get(json_object_get(f, "x"), "seq"));
	*ret_count = json_integer_value(json_object_get(json_object_get(w, "x_count_5m"), "value"));
	*ret_sum = json_integer_value(json_object_get(json_object_get(w, "x_sum_10m"), "value"));
	json_decref(f);
	json_decref(w);
	fl_read_answer_finish(&answer);
	fl_view_unref(view);
}

Test(projection, as_known_reads_skip_events_ingested_later)
{
	int64_t t = fl_time_now_us() - 60 * MIN_US, s = 1000000;
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;
	snprintf(dir, sizeof(dir), "%s/origin", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, &jerr);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	int64_t start = t - 10 * MIN_US;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", start, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = start};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);

	uint64_t a = append_known(log, registry, t - 100 * s, t - 100 * s, 1);
	uint64_t c = append_known(log, registry, t + 10 * s, t + 10 * s, 4);
	uint64_t b = append_known(log, registry, t - 50 * s, t + 100 * s, 2); /* late */
	fl_view_registry_destroy(registry);
	struct fl_projection *p = project(log, "p", 10);
	json_int_t seq, count, sum;

	/* every applied event: the late one is the value as of t */
	read_known(p, t, 0, &seq, &count, &sum);
	cr_assert_eq(seq, (json_int_t)b);
	cr_assert_eq(count, 2);
	cr_assert_eq(sum, 3);
	/* as known at t: the late event was not there yet */
	read_known(p, t, t, &seq, &count, &sum);
	cr_assert_eq(seq, (json_int_t)a);
	cr_assert_eq(count, 1);
	cr_assert_eq(sum, 1);
	/* at t + 20 s: c is known, b is not */
	read_known(p, t + 20 * s, t + 20 * s, &seq, &count, &sum);
	cr_assert_eq(seq, (json_int_t)c);
	cr_assert_eq(count, 2);
	cr_assert_eq(sum, 5);
	/* at t + 100 s everything is known: the same as the plain read */
	json_int_t seq0, count0, sum0;
	read_known(p, t + 100 * s, t + 100 * s, &seq, &count, &sum);
	read_known(p, t + 100 * s, 0, &seq0, &count0, &sum0);
	cr_assert_eq(seq, seq0);
	cr_assert_eq(count, count0);
	cr_assert_eq(sum, sum0);
	cr_assert_eq(count, 3);
	fl_projection_close(p);
	fl_log_close(log);
}

/* The log's entries, copied out of its snapshot (a forked child must not use the log's LMDB). */
struct held_entries {
	struct fl_log_entry *entries;
	size_t n;
};

static struct held_entries hold_entries(struct fl_log *log)
{
	struct fl_log_reader *r;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	struct held_entries h = {.n = fl_log_reader_size(r)};
	h.entries = calloc(h.n, sizeof(*h.entries));
	for (uint64_t seq = 1; seq <= h.n; seq++) {
		struct fl_log_entry e;
		cr_assert_eq(fl_log_reader_get(r, seq, &e), FL_OK);
		uint8_t *body = malloc(e.body_len);
		memcpy(body, e.body, e.body_len);
		h.entries[seq - 1] = (struct fl_log_entry){
		    .seq = e.seq, .body = body, .body_len = e.body_len, .time_us = e.time_us};
	}
	fl_log_reader_end(r);
	return h;
}

/* Applies entries applied_seq+1 .. upto in runs of run; false on a failure. */
static bool apply_upto(struct fl_projection *p, const struct held_entries *h, uint64_t upto,
		       size_t run)
{
	for (uint64_t seq = fl_projection_applied_seq(p) + 1; seq <= upto;) {
		size_t n = upto - seq + 1 < run ? (size_t)(upto - seq + 1) : run;
		if (fl_projection_apply(p, &h->entries[seq - 1], n) != FL_OK)
			return false;
		seq += n;
	}
	return true;
}

/* The digest of p and its windows' answers equal those of a clean apply of as many events. */
static void check_against_clean(struct fl_projection *p, const struct held_entries *h,
				int64_t clock, int round)
{
	uint64_t applied = fl_projection_applied_seq(p), clean_applied;
	char name[300], got[2 * FL_HASH_LEN + 1], want[2 * FL_HASH_LEN + 1];
	struct fl_projection *clean;
	snprintf(name, sizeof(name), "%s/clean%d", tmpdir, round);
	cr_assert_eq(fl_projection_open(name, &clean), FL_OK);
	cr_assert(apply_upto(clean, h, applied, 97));
	cr_assert_eq(fl_projection_digest(p, &applied, got), FL_OK);
	cr_assert_eq(fl_projection_digest(clean, &clean_applied, want), FL_OK);
	cr_assert_eq(applied, clean_applied);
	cr_assert_str_eq(got, want,
			 "round %d: killed at applied_seq %" PRIu64 ", the models differ", round,
			 applied);
	static const char *const entities[] = {"hot", "wide", "cold"};
	static const int64_t back[] = {0, 10 * MIN_US, 45 * MIN_US};
	for (size_t e = 0; applied > 0 && e < 3; e++) {
		for (size_t b = 0; b < 3; b++) {
			json_t *a = tile_read(p, entities[e], clock - back[b], false, NULL);
			json_t *c = tile_read(clean, entities[e], clock - back[b], false, NULL);
			char *at = json_dumps(a, JSON_SORT_KEYS),
			     *ct = json_dumps(c, JSON_SORT_KEYS);
			cr_assert_str_eq(at, ct, "round %d, %s, as_of clock - %" PRId64 " us",
					 round, entities[e], back[b]);
			free(at);
			free(ct);
			json_decref(a);
			json_decref(c);
		}
	}
	fl_projection_close(clean);
}

/*
 * A process killed (SIGKILL) at a random moment of a long catch-up leaves
 * read models whose tiles agree with their applied_seq: reopened, their
 * digest and window answers equal those of models that applied exactly as
 * many events cleanly, and the catch-up resumes from there. Tiles are
 * written in the transaction of their events' history records.
 */
Test(projection, a_kill_mid_apply_leaves_tiles_consistent_with_applied_seq)
{
	int64_t t0 = fl_time_now_us() - 40 * MIN_US, clock;
	struct fl_log *log = build_tile_log(t0, &clock);
	struct held_entries h = hold_entries(log);
	fl_log_close(log);
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/killed", tmpdir);

	/* how long a whole catch-up takes here: kills land inside it */
	struct fl_projection *p;
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	int64_t started = fl_time_now_us();
	cr_assert(apply_upto(p, &h, h.n, 7));
	int64_t whole_us = fl_time_now_us() - started;
	cr_assert_eq(fl_projection_reset(p), FL_OK);
	fl_projection_close(p);

	int killed_mid = 0;
	uint64_t last_applied = 0;
	for (int round = 0; round < 16; round++) {
		pid_t child = fork();
		cr_assert(child >= 0);
		if (child == 0) { /* resume the catch-up in runs of 7 until killed */
			struct fl_projection *cp;
			if (fl_projection_open(dir, &cp) != FL_OK)
				_exit(2);
			_exit(apply_upto(cp, &h, h.n, 7) ? 0 : 3);
		}
		/* a random moment within what is left of the catch-up */
		int64_t left_us = whole_us * (int64_t)(h.n - last_applied) / (int64_t)h.n;
		struct timespec delay = {0, 0};
		int64_t wait_us = 1000 + (int64_t)(next_rand() % (uint64_t)(left_us + 1));
		delay.tv_sec = wait_us / SEC_US;
		delay.tv_nsec = (long)(wait_us % SEC_US) * 1000;
		nanosleep(&delay, NULL);
		kill(child, SIGKILL);
		int status;
		cr_assert_eq(waitpid(child, &status, 0), child);
		cr_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
			  "the child failed (status %d)", status);
		cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
		uint64_t applied = fl_projection_applied_seq(p);
		cr_assert_geq(applied, last_applied);
		if (WIFSIGNALED(status) && applied < h.n)
			killed_mid++;
		check_against_clean(p, &h, clock, round);
		last_applied = applied;
		if (applied == h.n && killed_mid == 0) {
			/* the catch-up ran faster than measured (a quieter moment):
			 * start it again from nothing, with kills sooner */
			cr_assert_eq(fl_projection_reset(p), FL_OK);
			last_applied = 0;
			whole_us /= 2;
		}
		fl_projection_close(p);
		if (applied == h.n && killed_mid > 0)
			break;
	}
	cr_assert_gt(killed_mid, 0, "no kill landed inside the catch-up");
	/* and the catch-up completes to the same models as a clean one */
	cr_assert_eq(fl_projection_open(dir, &p), FL_OK);
	cr_assert(apply_upto(p, &h, h.n, 7));
	check_against_clean(p, &h, clock, 99);
	fprintf(stderr, "kill mid-apply: %d kills inside a catch-up of %zu events (%.0f ms)\n",
		killed_mid, h.n, (double)whole_us / 1000);
	fl_projection_close(p);
	for (size_t i = 0; i < h.n; i++)
		free((void *)h.entries[i].body);
	free(h.entries);
}

/*
 * A log of late arrivals: n events of n_entities entities (e0, e1, ...),
 * appended in ingest order one per 100 ms over the two hours before base,
 * each with an event time up to 30 minutes before its ingest time, so that
 * reads "as known" at a time differ from plain ones.
 */
static struct fl_log *build_late_log(const char *name, int64_t base_us, size_t n, int n_entities)
{
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_view *view;
	char dir[300];
	json_error_t jerr;
	int64_t start = base_us - 120 * MIN_US;

	snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
	cr_assert_eq(fl_log_open(dir, NULL, signer, &log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *def = json_loads(view_json, 0, &jerr);
	cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK);
	json_decref(def);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", start, &tail, &tail_len), FL_OK);
	struct fl_log_input in = {.body_tail = tail, .body_tail_len = tail_len, .time_us = start};
	struct fl_log_result res;
	struct fl_log_batch batch = {&in, 1, &res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	free(tail);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);

	for (size_t i = 0; i < n; i++) {
		int64_t ingest = start + (int64_t)(i + 1) * 100000;
		/* event times on a 1 s grid (ties happen), late by up to 30 min */
		int64_t event_ts = ingest - (int64_t)(next_rand() % 1800) * 1000000;
		event_ts -= event_ts % 1000000;
		char ts[FL_TIME_TEXT_LEN], entity[16], s[16];
		fl_time_format(event_ts, ts);
		snprintf(entity, sizeof(entity), "e%d", (int)(next_rand() % (uint64_t)n_entities));
		snprintf(s, sizeof(s), "p%u", (unsigned)(next_rand() % 1000));
		json_t *features = json_object();
		if (next_rand() % 3)
			json_object_set_new(features, "x",
					    json_integer((json_int_t)(next_rand() % 2001) - 1000));
		if (next_rand() % 3 || json_object_size(features) == 0)
			json_object_set_new(
			    features, "d",
			    json_real((double)(int64_t)(next_rand() % 100000) / 64.0 - 700.0));
		if (next_rand() % 4 == 0)
			json_object_set_new(features, "s", json_string(s));
		json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "view", "v", "entity_id", entity,
				       "event_ts", ts, "features", features);
		struct fl_event event;
		struct fl_error err;
		cr_assert_eq(fl_event_validate(ev, "", registry, "p", ingest,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &err),
			     FL_OK, "%s", err.message);
		json_decref(ev);
		cr_assert_eq(fl_event_body_tail(&event, &tail, &tail_len), FL_OK);
		fl_event_finish(&event);
		in = (struct fl_log_input){
		    .body_tail = tail, .body_tail_len = tail_len, .time_us = ingest};
		batch = (struct fl_log_batch){&in, 1, &res, FL_OK, 0};
		cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
		free(tail);
	}
	fl_view_registry_destroy(registry);
	return log;
}

/* One row of a batch read: what to ask, and what a fresh read answered. */
struct reuse_row {
	char entity_id[16];
	int64_t as_of_us;
	bool as_known;
	enum fl_status status;
	char *features, *windows;
	size_t features_len, windows_len;
	uint64_t *served;
	size_t n_served;
};

static int reuse_row_key_order(const void *x, const void *y)
{
	const struct reuse_row *a = *(struct reuse_row *const *)x,
			       *b = *(struct reuse_row *const *)y;
	int c = strcmp(a->entity_id, b->entity_id);
	return c ? c : (a->as_of_us > b->as_of_us) - (a->as_of_us < b->as_of_us);
}

/*
 * The row's read on read (with fl_projection_query_borrowed in the orders
 * named "borrowed"); its answer must be the fresh read's, byte for byte.
 */
static void check_reused(struct fl_projection_read *read, struct fl_read_request *req,
			 const struct reuse_row *row, const char *order, size_t k)
{
	bool borrowed = strstr(order, "borrowed") != NULL;
	struct fl_read_answer answer;
	struct fl_error err;
	fl_error_clear(&err);
	req->entity_id = row->entity_id;
	req->as_of_us = row->as_of_us;
	req->known_at_us = row->as_known ? row->as_of_us : 0;
	enum fl_status st = borrowed ? fl_projection_query_borrowed(read, req, &answer, &err)
				     : fl_projection_query(read, req, &answer, &err);
	cr_assert_eq(st, row->status, "%s row %zu (%s at %" PRId64 ")", order, k, row->entity_id,
		     row->as_of_us);
	if (st != FL_OK)
		return;
	cr_assert_eq(answer.features_len, row->features_len, "%s row %zu", order, k);
	cr_assert(memcmp(answer.features, row->features, row->features_len) == 0,
		  "%s row %zu: features %.*s, fresh %.*s", order, k, (int)answer.features_len,
		  answer.features, (int)row->features_len, row->features);
	cr_assert_eq(answer.windows_len, row->windows_len, "%s row %zu", order, k);
	cr_assert(memcmp(answer.windows, row->windows, row->windows_len) == 0,
		  "%s row %zu: windows %.*s, fresh %.*s", order, k, (int)answer.windows_len,
		  answer.windows, (int)row->windows_len, row->windows);
	cr_assert_eq(answer.n_served, row->n_served, "%s row %zu", order, k);
	cr_assert(row->n_served == 0 ||
		      memcmp(answer.served_seqs, row->served, row->n_served * 8) == 0,
		  "%s row %zu: served seqs", order, k);
	if (!borrowed)
		fl_read_answer_finish(&answer);
}

/*
 * One read serving many rows (a batch, or an export in (entity, ts) order)
 * keeps its cursors and times from one query to the next: its answers are
 * those of a fresh read per row, byte for byte, in any order, for plain
 * reads and reads as known at their time, entities absent, and times before
 * the first event, inside the data and after it. So are the answers of
 * fl_projection_query_borrowed, kept by the read from one row to the next.
 */
Test(projection, a_read_reused_over_many_rows_answers_as_fresh_reads)
{
	int64_t base = fl_time_now_us() - 10 * MIN_US;
	struct fl_log *log = build_late_log("late-origin", base, 3000, 8);
	struct fl_projection *p = project(log, "late", 100);
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(fl_projection_views(p), "v", &view), FL_OK);
	const struct fl_feature *features[3];
	const struct fl_window *windows[16];
	size_t n_windows = fl_view_window_count(view);
	for (size_t i = 0; i < 3; i++)
		features[i] = fl_view_feature_at(view, i);
	for (size_t i = 0; i < n_windows; i++)
		windows[i] = fl_view_window_at(view, i);
	struct fl_read_request req = {.view = view,
				      .features = features,
				      .n_features = 3,
				      .windows = windows,
				      .n_windows = n_windows};

	enum { N_ROWS = 600 };
	static struct reuse_row rows[N_ROWS];
	struct reuse_row *sorted[N_ROWS];
	size_t found = 0, not_found = 0, known_differs = 0;
	for (size_t k = 0; k < N_ROWS; k++) {
		struct reuse_row *row = &rows[k];
		/* e8 and e9 have no events */
		snprintf(row->entity_id, sizeof(row->entity_id), "e%d", (int)(next_rand() % 10));
		/* from 10 minutes before the first event to 5 minutes after the last */
		row->as_of_us = base - 160 * MIN_US +
				(int64_t)(next_rand() % (165 * 60)) * 1000000 +
				(k % 2 ? 0 : (int64_t)(next_rand() % 1000000));
		row->as_known = k % 3 == 0;
		struct fl_projection_read *read;
		struct fl_read_answer answer;
		struct fl_error err;
		fl_error_clear(&err);
		req.entity_id = row->entity_id;
		req.as_of_us = row->as_of_us;
		req.known_at_us = row->as_known ? row->as_of_us : 0;
		cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
		row->status = fl_projection_query(read, &req, &answer, &err);
		cr_assert_eq(row->status, FL_OK, "%s", err.message);
		if (row->as_known) { /* the plain read of the row, to see that it differs */
			struct fl_read_answer plain;
			req.known_at_us = 0;
			cr_assert_eq(fl_projection_query(read, &req, &plain, &err), FL_OK);
			if (plain.features_len != answer.features_len ||
			    memcmp(plain.features, answer.features, plain.features_len) != 0)
				known_differs++;
			fl_read_answer_finish(&plain);
		}
		fl_projection_read_end(read);
		row->features = answer.features;
		row->features_len = answer.features_len;
		row->windows = answer.windows;
		row->windows_len = answer.windows_len;
		row->served = answer.served_seqs;
		row->n_served = answer.n_served;
		if (strstr(row->features, "PRESENT"))
			found++;
		else
			not_found++;
		sorted[k] = row;
	}
	/* the rows cover what they are meant to */
	cr_assert_gt(found, N_ROWS / 4);
	cr_assert_gt(not_found, N_ROWS / 20);
	cr_assert_gt(known_differs, N_ROWS / 30);

	struct fl_projection_read *read;
	cr_assert_eq(fl_projection_read_begin(p, &read), FL_OK);
	for (size_t k = 0; k < N_ROWS; k++)
		check_reused(read, &req, &rows[k], "input order", k);
	qsort(sorted, N_ROWS, sizeof(sorted[0]), reuse_row_key_order);
	for (size_t k = 0; k < N_ROWS; k++)
		check_reused(read, &req, sorted[k], "key order", k);
	for (size_t k = N_ROWS; k-- > 0;)
		check_reused(read, &req, sorted[k], "reverse key order", k);
	for (size_t k = 0; k < N_ROWS; k++)
		check_reused(read, &req, sorted[k], "key order, borrowed", k);
	for (size_t k = 0; k < N_ROWS; k++)
		check_reused(read, &req, &rows[k], "input order, borrowed", k);
	fl_projection_read_end(read);

	for (size_t k = 0; k < N_ROWS; k++) {
		free(rows[k].features);
		free(rows[k].windows);
		free(rows[k].served);
	}
	fl_view_unref(view);
	fl_projection_close(p);
	fl_log_close(log);
}
