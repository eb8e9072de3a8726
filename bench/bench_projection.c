/*
 * Benchmark of query-svc's read models at the library level (no HTTP, no
 * NATS, no log): the apply cost per event and the cost of a window read of a
 * hot entity against a light one.
 *
 *   apply  N events of one hot entity (event times spread over the last
 *          hour, in random order), then N events spread over 1,000
 *          entities, each applied in runs of 1000 as a catch-up does
 *          (--run 1: one event a run, as live events arrive);
 *          µs per event and the models' size on disk
 *   read   seven 1h windows (sum, avg, min, max, stddev over a double,
 *          last_n 5 over a string, count over an int64) of the hot entity
 *          and of a light one (1 event), reads/s of each and their ratio
 *
 * Built twice: bench_projection, and bench_projection_untiled, whose
 * projection keeps no window tiles (FL_PROJECTION_UNTILED, a switch for
 * this comparison only: its reads scan raw events). run-projection-bench.sh
 * runs both and prints the table.
 *
 * Usage: bench_projection [--hot N] [--secs S] [--dir DIR] [--no-many]
 *   --hot N     events of the hot entity (default 20000)
 *   --secs S    seconds per read measurement (default 3)
 *   --dir DIR   where to put the models (default $TMPDIR or /tmp)
 *   --no-many   skip the many-entities apply
 *   --run N     events per apply run (default 1000; 1 is the live path)
 * For profiling: BENCH_HOT_ONLY=1 skips the light reads, BENCH_SHOW_COST=1
 * prints each entity's read cost (records visited).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "eventlog/eventlog.h"
#include "fledger/event.h"
#include "fledger/util.h"
#include "fledger/view.h"
#include "projection.h"

#define RUN 1000 /* events per apply run, as a catch-up applies them */
#define MANY_ENTITIES 1000
#define SEC_US INT64_C(1000000)

static const char *view_json =
    "{\"name\":\"hotv\",\"entity\":\"id\",\"retention\":\"2h\","
    "\"features\":{\"v\":\"double\",\"n\":\"int64\",\"tag\":\"string\"},"
    "\"windows\":[{\"name\":\"v_sum\",\"fn\":\"sum\",\"of\":\"v\",\"size\":\"1h\"},"
    "{\"name\":\"v_avg\",\"fn\":\"avg\",\"of\":\"v\",\"size\":\"1h\"},"
    "{\"name\":\"v_min\",\"fn\":\"min\",\"of\":\"v\",\"size\":\"1h\"},"
    "{\"name\":\"v_max\",\"fn\":\"max\",\"of\":\"v\",\"size\":\"1h\"},"
    "{\"name\":\"v_std\",\"fn\":\"stddev\",\"of\":\"v\",\"size\":\"1h\"},"
    "{\"name\":\"tag_last5\",\"fn\":\"last_n\",\"of\":\"tag\",\"size\":\"1h\",\"n\":5},"
    "{\"name\":\"n_count\",\"fn\":\"count\",\"of\":\"n\",\"size\":\"1h\"}],"
    "\"audit_reads\":false}";

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double now_s(void)
{
	return (double)fl_time_now_us() / 1e6;
}

/* The stored bodies of a view event and of feature events, as the log holds them. */
struct bodies {
	char *text;
	size_t *offsets, *lens;
	size_t n, len, cap;
};

static void body_add(struct bodies *b, const char *text, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->cap + len) * 2;
		b->text = realloc(b->text, b->cap);
	}
	b->offsets = realloc(b->offsets, (b->n + 1) * sizeof(*b->offsets));
	b->lens = realloc(b->lens, (b->n + 1) * sizeof(*b->lens));
	if (!b->text || !b->offsets || !b->lens) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	memcpy(b->text + b->len, text, len);
	b->offsets[b->n] = b->len;
	b->lens[b->n++] = len;
	b->len += len;
}

static struct fl_view *parse_view(void)
{
	json_error_t jerr;
	struct fl_view *view;
	json_t *def = json_loads(view_json, 0, &jerr);
	if (!def || fl_view_parse(def, &view, NULL) != FL_OK) {
		fprintf(stderr, "bad view\n");
		exit(1);
	}
	json_decref(def);
	return view;
}

static void add_view(struct bodies *b, int64_t now)
{
	struct fl_view *view = parse_view();
	char *tail, *body;
	size_t tail_len;
	if (fl_event_view_body_tail(view, 1, "admin", now, &tail, &tail_len) != FL_OK)
		exit(1);
	body = malloc(tail_len + 16);
	int n = snprintf(body, tail_len + 16, "{\"seq\":1,%s}", tail);
	body_add(b, body, (size_t)n);
	free(body);
	free(tail);
	fl_view_unref(view);
}

static void add_feature(struct bodies *b, const char *entity, int64_t event_ts, int64_t now)
{
	char body[512], ts[FL_TIME_TEXT_LEN], ingest[FL_TIME_TEXT_LEN];
	fl_time_format(event_ts, ts);
	fl_time_format(now, ingest);
	int n = snprintf(body, sizeof(body),
			 "{\"seq\":%zu,\"kind\":\"feature\",\"view\":\"hotv\",\"entity_id\":\"%s\","
			 "\"event_ts\":\"%s\",\"ingest_ts\":\"%s\",\"producer\":\"bench\","
			 "\"features\":{\"n\":%u,\"tag\":\"t%zu\",\"v\":%u.%03u}}",
			 b->n + 1, entity, ts, ingest, (unsigned)(next_rand() % 100), b->n,
			 (unsigned)(next_rand() % 1000), (unsigned)(next_rand() % 8) * 125);
	body_add(b, body, (size_t)n);
}

static uint64_t dir_kib(const char *dir)
{
	char path[4200];
	struct stat st;
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	/* LMDB's file is sparse beyond what it used: count allocated blocks */
	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks / 2 : 0;
}

/* Applies the bodies into a new projection at dir; returns µs per event. */
static size_t run_len = RUN;

static double apply_all(const char *dir, const struct bodies *b, struct fl_projection **ret_p)
{
	struct fl_projection *p;
	struct fl_log_entry *entries = calloc(run_len, sizeof(*entries));
	if (fl_projection_open(dir, &p) != FL_OK || !entries) {
		fprintf(stderr, "cannot open %s\n", dir);
		exit(1);
	}
	double t0 = now_s();
	for (size_t at = 0; at < b->n;) {
		size_t n = 0;
		while (n < run_len && at < b->n) {
			entries[n] =
			    (struct fl_log_entry){.seq = at + 1,
						  .body = (uint8_t *)b->text + b->offsets[at],
						  .body_len = b->lens[at]};
			n++;
			at++;
		}
		enum fl_status st = fl_projection_apply(p, entries, n);
		if (st != FL_OK) {
			fprintf(stderr, "apply: %s\n", fl_status_str(st));
			exit(1);
		}
	}
	double secs = now_s() - t0;
	free(entries);
	*ret_p = p;
	return secs * 1e6 / (double)(b->n - 1);
}

/* Reads all windows of entity for secs seconds; returns reads/s. */
static double reads_per_s(struct fl_projection *p, const char *entity, int64_t as_of, double secs,
			  uint64_t want_count)
{
	struct fl_view *view;
	if (fl_view_registry_get(fl_projection_views(p), "hotv", &view) != FL_OK)
		exit(1);
	const struct fl_window *windows[16];
	size_t n_windows = fl_view_window_count(view);
	for (size_t i = 0; i < n_windows; i++)
		windows[i] = fl_view_window_at(view, i);
	const struct fl_feature *features[1] = {fl_view_feature(view, "v")};
	struct fl_read_request req = {.view = view,
				      .entity_id = entity,
				      .as_of_us = as_of,
				      .features = features,
				      .n_features = 1,
				      .windows = windows,
				      .n_windows = n_windows};
	uint64_t reads = 0;
	double t0 = now_s(), t = t0;
	while (t - t0 < secs) {
		for (int k = 0; k < 50; k++) {
			struct fl_projection_read *read;
			struct fl_read_answer answer;
			struct fl_error err;
			if (fl_projection_read_begin(p, &read) != FL_OK ||
			    fl_projection_query(read, &req, &answer, &err) != FL_OK) {
				fprintf(stderr, "read failed\n");
				exit(1);
			}
			if (reads == 0 && getenv("BENCH_SHOW_COST"))
				fprintf(stderr, "%s: cost %" PRIu64 "\n", entity,
					fl_projection_read_cost(read));
			if (reads == 0) { /* the answer counts every event */
				char want[48];
				snprintf(want, sizeof(want), "\"events\":%" PRIu64 "}", want_count);
				if (!strstr(answer.windows, want)) {
					fprintf(stderr, "%s: %.*s lacks %s\n", entity,
						(int)answer.windows_len, answer.windows, want);
					exit(1);
				}
			}
			fl_read_answer_finish(&answer);
			fl_projection_read_end(read);
			reads++;
		}
		t = now_s();
	}
	fl_view_unref(view);
	return (double)reads / (t - t0);
}

int main(int argc, char **argv)
{
	size_t hot = 20000;
	double secs = 3;
	bool many = true;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--hot") == 0 && i + 1 < argc)
			hot = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--secs") == 0 && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else if (strcmp(argv[i], "--no-many") == 0)
			many = false;
		else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc &&
			 (run_len = strtoull(argv[++i], NULL, 10)) > 0)
			;
		else {
			fprintf(
			    stderr,
			    "usage: %s [--hot N] [--secs S] [--dir DIR] [--no-many] [--run N]\n",
			    argv[0]);
			return 2;
		}
	}
	char dir[4096], path[4200];
	snprintf(dir, sizeof(dir), "%s/fl-bench-proj-XXXXXX", base);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	int64_t now = fl_time_now_us();
	struct fl_projection *p;

	/* the hot entity: events over the hour before now, in random order */
	struct bodies b = {0};
	add_view(&b, now);
	for (size_t i = 0; i < hot; i++)
		add_feature(&b, "hot", now - 60 * SEC_US - (int64_t)(next_rand() % (3240 * SEC_US)),
			    now);
	add_feature(&b, "light", now - 120 * SEC_US, now);
	snprintf(path, sizeof(path), "%s/hot", dir);
	double hot_us = apply_all(path, &b, &p);
	printf("apply, one hot entity (%zu events, runs of %zu): %.2f µs/event, %" PRIu64
	       " KiB on disk\n",
	       hot, run_len, hot_us, dir_kib(path));
	fflush(stdout);
	double light_rps = getenv("BENCH_HOT_ONLY") ? 1 : reads_per_s(p, "light", now, secs, 1);
	double hot_rps = reads_per_s(p, "hot", now, secs, hot);
	printf("read, 7 windows of 1h, light entity (1 event): %.0f reads/s\n", light_rps);
	printf("read, 7 windows of 1h, hot entity (%zu events): %.0f reads/s\n", hot, hot_rps);
	printf("hot / light: %.3f\n", hot_rps / light_rps);
	fl_projection_close(p);
	free(b.text);
	free(b.offsets);
	free(b.lens);

	if (many) {
		struct bodies m = {0};
		add_view(&m, now);
		for (size_t i = 0; i < hot; i++) {
			char entity[24];
			snprintf(entity, sizeof(entity), "e%u",
				 (unsigned)(next_rand() % MANY_ENTITIES));
			add_feature(&m, entity,
				    now - 60 * SEC_US - (int64_t)(next_rand() % (3240 * SEC_US)),
				    now);
		}
		snprintf(path, sizeof(path), "%s/many", dir);
		double many_us = apply_all(path, &m, &p);
		printf("apply, %d entities (%zu events, runs of %zu): %.2f µs/event, %" PRIu64
		       " KiB on disk\n",
		       MANY_ENTITIES, hot, run_len, many_us, dir_kib(path));
		fl_projection_close(p);
		free(m.text);
		free(m.offsets);
		free(m.lens);
	}
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	return system(path) == 0 ? 0 : 1;
}
