/*
 * Benchmark of the event log: synced appends of ~300-byte events in batches
 * of 1, 100 and 1000 (events/s, commit latency p50/p99), inclusion proofs on
 * a large log, and, in the same run, this machine's single-core Ed25519
 * signing rate, which bounds what a signed log can append.
 *
 * Usage: bench_eventlog [--events N] [--dir DIR] [--sign-only]
 *   --events N   size of the log for the proof benchmark (default 1000000)
 *   --dir DIR    where to put the temporary logs (default $TMPDIR or /tmp)
 *   --sign-only  print the signing rate alone (used by the service benches)
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventlog/eventlog.h"
#include "fledger/util.h"

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double percentile(int64_t *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_i64);
	size_t i = (size_t)(p * (double)(n - 1));
	return (double)v[i] / 1000.0; /* µs -> ms */
}

struct batch_buf {
	struct fl_log_input *inputs;
	struct fl_log_result *results;
	char *tails;
	size_t count;
};

#define TAIL_CAP 320

static void batch_init(struct batch_buf *b, size_t count)
{
	b->count = count;
	b->inputs = calloc(count, sizeof(*b->inputs));
	b->results = calloc(count, sizeof(*b->results));
	b->tails = malloc(count * TAIL_CAP);
}

/* Fills the batch with ~300-byte feature events (the body adds the seq). */
static void batch_fill(struct batch_buf *b, uint64_t tag)
{
	char ts[FL_TIME_TEXT_LEN];
	int64_t now = fl_time_now_us();
	fl_time_format(now, ts);
	for (size_t i = 0; i < b->count; i++) {
		char *tail = b->tails + i * TAIL_CAP;
		int n = snprintf(
		    tail, TAIL_CAP,
		    "\"kind\":\"feature\",\"view\":\"user_activity\",\"entity_id\":\"u%" PRIu64
		    "\",\"event_ts\":\"%s\",\"ingest_ts\":\"%s\",\"producer\":\"clicks-"
		    "pipeline\",\"features\":{\"dwell_ms\":1200.5,\"last_click\":\"p42\","
		    "\"is_mobile\":true,\"cart_items\":3,\"embedding\":[0.1,0.2,0.3,0.4,0.5,"
		    "0.6,0.7,0.8]}",
		    (tag + i) % 100000, ts, ts);
		b->inputs[i] = (struct fl_log_input){
		    .body_tail = tail, .body_tail_len = (size_t)n, .time_us = now};
	}
}

static void batch_free(struct batch_buf *b)
{
	free(b->inputs);
	free(b->results);
	free(b->tails);
}

static void bench_appends(const char *dir, struct fl_signer *signer, size_t batch_size,
			  double seconds, double *ret_rate, double *ret_p50, double *ret_p99)
{
	struct fl_log *log;
	struct fl_log_options opts = {0};
	char path[600];
	snprintf(path, sizeof(path), "%s/append-%zu", dir, batch_size);
	if (fl_log_open(path, &opts, signer, &log) != FL_OK) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(1);
	}
	struct batch_buf b;
	batch_init(&b, batch_size);
	size_t cap = 200000, n = 0;
	int64_t *lat = malloc(cap * sizeof(*lat));
	uint64_t events = 0;
	int64_t start = fl_time_mono_us();
	while (fl_time_mono_us() - start < (int64_t)(seconds * 1e6) && n < cap) {
		batch_fill(&b, events);
		struct fl_log_batch batch = {b.inputs, b.count, b.results, FL_OK, 0};
		int64_t t0 = fl_time_mono_us();
		if (fl_log_append(log, &batch, 1, NULL) != FL_OK) {
			fprintf(stderr, "append failed\n");
			exit(1);
		}
		lat[n++] = fl_time_mono_us() - t0;
		events += batch_size;
	}
	double elapsed = (double)(fl_time_mono_us() - start) / 1e6;
	*ret_rate = (double)events / elapsed;
	*ret_p50 = percentile(lat, n, 0.50);
	*ret_p99 = percentile(lat, n, 0.99);
	free(lat);
	batch_free(&b);
	fl_log_close(log);
}

static double bench_sign(struct fl_signer *signer)
{
	uint8_t msg[FL_HASH_LEN] = {1}, sig[FL_SIG_LEN];
	size_t count = 0;
	int64_t start = fl_time_mono_us();
	while (fl_time_mono_us() - start < 1000000) {
		for (int i = 0; i < 100; i++) {
			msg[0] = (uint8_t)i;
			fl_signer_sign(signer, msg, sizeof(msg), sig);
		}
		count += 100;
	}
	return (double)count / ((double)(fl_time_mono_us() - start) / 1e6);
}

struct proof_job {
	struct fl_log *log;
	uint64_t seed;
	uint64_t count;
};

/* Random inclusion proofs against the full tree for 2 s, on one reader. */
static void *proof_worker(void *opaque)
{
	struct proof_job *job = opaque;
	struct fl_log_reader *r;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t n;
	uint64_t x = job->seed;
	if (fl_log_reader_begin(job->log, &r) != FL_OK)
		exit(1);
	uint64_t size = fl_log_reader_size(r);
	int64_t start = fl_time_mono_us();
	while (fl_time_mono_us() - start < 2000000) {
		for (int i = 0; i < 1000; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			if (fl_log_reader_inclusion_proof(r, 1 + x % size, size, hashes, &n) !=
			    FL_OK)
				exit(1);
		}
		job->count += 1000;
	}
	fl_log_reader_end(r);
	return NULL;
}

/* Proofs per second with the given number of reader threads. */
static double proof_rate(struct fl_log *log, int threads)
{
	pthread_t ids[8];
	struct proof_job jobs[8];
	int64_t start = fl_time_mono_us();
	for (int t = 0; t < threads; t++) {
		jobs[t] = (struct proof_job){log, 88172645463325252ull + (uint64_t)t * 7919, 0};
		pthread_create(&ids[t], NULL, proof_worker, &jobs[t]);
	}
	uint64_t total = 0;
	for (int t = 0; t < threads; t++) {
		pthread_join(ids[t], NULL);
		total += jobs[t].count;
	}
	return (double)total / ((double)(fl_time_mono_us() - start) / 1e6);
}

static double bench_proofs(const char *dir, struct fl_signer *signer, uint64_t events,
			   double *ret_build_rate, double *ret_rate_two)
{
	struct fl_log *log;
	char path[600];
	snprintf(path, sizeof(path), "%s/proofs", dir);
	if (fl_log_open(path, NULL, signer, &log) != FL_OK)
		exit(1);
	struct batch_buf b;
	batch_init(&b, 1000);
	int64_t start = fl_time_mono_us();
	for (uint64_t done = 0; done < events; done += 1000) {
		batch_fill(&b, done);
		struct fl_log_batch batch = {b.inputs, events - done < 1000 ? events - done : 1000,
					     b.results, FL_OK, 0};
		if (fl_log_append(log, &batch, 1, NULL) != FL_OK)
			exit(1);
	}
	*ret_build_rate = (double)events / ((double)(fl_time_mono_us() - start) / 1e6);
	batch_free(&b);

	*ret_rate_two = proof_rate(log, 2);
	double rate = proof_rate(log, 1);
	fl_log_close(log);
	return rate;
}

int main(int argc, char **argv)
{
	uint64_t events = 1000000;
	bool sign_only = false;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			events = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else if (strcmp(argv[i], "--sign-only") == 0)
			sign_only = true;
		else {
			fprintf(stderr, "usage: %s [--events N] [--dir DIR]\n", argv[0]);
			return 2;
		}
	}
	if (sign_only) {
		/* For the service benchmarks: the signing rate alone. */
		struct fl_signer *s;
		fl_signer_generate(&s);
		printf("%.0f\n", bench_sign(s));
		fl_signer_destroy(s);
		return 0;
	}
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/fl-bench-XXXXXX", base);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "cannot make a temporary folder in %s (--dir must exist): %s\n",
			base, strerror(errno));
		return 1;
	}
	struct fl_signer *signer;
	fl_signer_generate(&signer);

	double sign_rate = bench_sign(signer);
	printf("fledger eventlog benchmark (%ld cores)\n\n", sysconf(_SC_NPROCESSORS_ONLN));
	printf("| measure | value |\n|---|---|\n");
	printf("| Ed25519 signing, one core | %.0f signatures/s |\n", sign_rate);
	fflush(stdout);
	size_t sizes[3] = {1, 100, 1000};
	double batch1000_rate = 0;
	for (int i = 0; i < 3; i++) {
		double rate, p50, p99;
		bench_appends(dir, signer, sizes[i], 3.0, &rate, &p50, &p99);
		printf("| append, batch %zu, synced | %.0f events/s, commit p50 %.3f ms, p99 %.3f "
		       "ms |\n",
		       sizes[i], rate, p50, p99);
		fflush(stdout);
		if (sizes[i] == 1000)
			batch1000_rate = rate;
	}
	printf("| batch-1000 rate / signing rate | %.2f |\n", batch1000_rate / sign_rate);
	double build_rate, two;
	double one = bench_proofs(dir, signer, events, &build_rate, &two);
	printf("| building a %" PRIu64 "-event log | %.0f events/s |\n", events, build_rate);
	printf("| inclusion proofs at %" PRIu64 " events | %.0f proofs/s on one thread, %.0f on "
	       "two |\n",
	       events, one, two);

	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	fl_signer_destroy(signer);
	return 0;
}
