/*
 * command-svc's group commit, without a socket: the committer answers
 * through functions that record each answer (the requests are slots of an
 * array). One request can be held at its answer, which keeps the committer
 * thread busy while others queue up: those then form the next group.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "committer.h"
#include "fledger/util.h"

#define MAX_REQUESTS 64
#define ANSWER_WAIT_US (20 * 1000000)

struct answer {
	bool done;
	unsigned status;
	json_t *body; /* the JSON answer, or {"code", "message", "field"} */
};

static struct answer answers[MAX_REQUESTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed;
static int held = -1; /* the request whose answer waits for release() */
static bool holding;  /* the committer is waiting in that answer */
static int commits;   /* calls of notify */

static char tmpdir[256];
static char logdir[300];
static struct fl_signer *signer;

static struct fl_http_request *request(int index)
{
	return (struct fl_http_request *)&answers[index];
}

static void record(struct fl_http_request *req, unsigned status, json_t *body)
{
	int index = (int)((struct answer *)req - answers);
	cr_assert(index >= 0 && index < MAX_REQUESTS);
	pthread_mutex_lock(&lock);
	cr_assert_not(answers[index].done, "request %d answered twice", index);
	answers[index] = (struct answer){.done = true, .status = status, .body = body};
	pthread_cond_broadcast(&changed);
	if (index == held) {
		holding = true;
		pthread_cond_broadcast(&changed);
		while (held == index)
			pthread_cond_wait(&changed, &lock);
		holding = false;
	}
	pthread_mutex_unlock(&lock);
}

/* A write's answer, as the bytes the client gets: parsed, it must be JSON. */
static enum fl_status record_text(struct fl_http_request *req, unsigned status,
				  const char *content_type, const void *body, size_t len)
{
	json_error_t error;
	json_t *parsed = json_loadb(body, len, 0, &error);
	cr_assert_not_null(parsed, "the answer is not JSON (%s): %.*s", error.text, (int)len,
			   (const char *)body);
	cr_assert_str_eq(content_type, "application/json");
	/* Byte for byte what jansson's compact form of the same object is
	 * (what the answer was before it was written as text). */
	char *again = json_dumps(parsed, JSON_COMPACT);
	cr_assert(again && strlen(again) == len && memcmp(again, body, len) == 0,
		  "not jansson's compact form:\n%.*s\n%s", (int)len, (const char *)body, again);
	free(again);
	record(req, status, parsed);
	return FL_OK;
}

static enum fl_status record_json(struct fl_http_request *req, unsigned status, json_t *body)
{
	record(req, status, body);
	return FL_OK;
}

static enum fl_status record_error(struct fl_http_request *req, unsigned status, const char *code,
				   const char *message, const char *field)
{
	record(req, status,
	       json_pack("{s:s,s:s,s:s}", "code", code, "message", message, "field",
			 field ? field : ""));
	return FL_OK;
}

static void count_commit(void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&lock);
	commits++;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

/* The commits notified, once there are at least n (notices follow answers). */
static int commits_after_wait(int n)
{
	struct timespec deadline = fl_deadline_after_us(ANSWER_WAIT_US);
	pthread_mutex_lock(&lock);
	while (commits < n && pthread_cond_timedwait(&changed, &lock, &deadline) == 0)
		;
	int seen = commits;
	pthread_mutex_unlock(&lock);
	return seen;
}

/* Waits until request index is answered and returns its answer. */
static struct answer *answer_of(int index)
{
	struct timespec deadline = fl_deadline_after_us(ANSWER_WAIT_US);
	pthread_mutex_lock(&lock);
	while (!answers[index].done && pthread_cond_timedwait(&changed, &lock, &deadline) == 0)
		;
	bool done = answers[index].done;
	pthread_mutex_unlock(&lock);
	cr_assert(done, "request %d was not answered", index);
	return &answers[index];
}

/* Waits until the committer holds on the answer of request index. */
static void wait_holding(int index)
{
	struct timespec deadline = fl_deadline_after_us(ANSWER_WAIT_US);
	pthread_mutex_lock(&lock);
	while (!holding && pthread_cond_timedwait(&changed, &lock, &deadline) == 0)
		;
	bool ok = holding && held == index;
	pthread_mutex_unlock(&lock);
	cr_assert(ok, "the committer did not reach the answer of request %d", index);
}

static void hold(int index)
{
	pthread_mutex_lock(&lock);
	held = index;
	pthread_mutex_unlock(&lock);
}

static void release(void)
{
	pthread_mutex_lock(&lock);
	held = -1;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-committer-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(logdir, sizeof(logdir), "%s/log", tmpdir);
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	cr_assert_eq(fl_cond_init_monotonic(&changed), FL_OK);
}

static void teardown(void)
{
	char cmd[400];
	fl_signer_destroy(signer);
	for (int i = 0; i < MAX_REQUESTS; i++)
		json_decref(answers[i].body);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(committer, .init = setup, .fini = teardown, .timeout = 120);

struct fixture {
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_committer *committer;
};

static void start(struct fixture *f, size_t max_map_bytes)
{
	struct fl_log_options options = {.initial_map_bytes = 1 << 20,
					 .max_map_bytes = max_map_bytes};
	cr_assert_eq(fl_log_open(logdir, &options, signer, &f->log), FL_OK);
	cr_assert_eq(fl_view_registry_create(&f->registry), FL_OK);
	struct fl_committer_config config = {.log = f->log,
					     .registry = f->registry,
					     .notify = count_commit,
					     .respond = record_text,
					     .respond_json = record_json,
					     .respond_error = record_error};
	cr_assert_eq(fl_committer_create(&config, &f->committer), FL_OK);
}

static void stop(struct fixture *f)
{
	release();
	fl_committer_destroy(f->committer);
	fl_view_registry_destroy(f->registry);
	fl_log_close(f->log);
}

/* What a request's events need to stay valid until the answer (its keep). */
struct keep {
	char keys[4][32];
	uint8_t digests[4][FL_HASH_LEN];
};

/*
 * Submits request index: count events for entity, each with pad bytes of
 * padding, keyed "key-<i>" (key NULL: no keys) with a digest of content.
 */
/* Whether submit asks for receipts (?receipt=1). */
static bool with_receipt;

static void submit(struct fixture *f, int index, size_t count, const char *entity, const char *key,
		   const char *content, size_t pad)
{
	cr_assert(count <= 4);
	struct fl_log_input *inputs = calloc(count, sizeof(*inputs));
	char **tails = calloc(count, sizeof(*tails));
	struct keep *keep = calloc(1, sizeof(*keep));
	cr_assert(inputs && tails && keep);
	for (size_t i = 0; i < count; i++) {
		size_t cap = pad + 200;
		tails[i] = malloc(cap);
		cr_assert_not_null(tails[i]);
		int len = snprintf(tails[i], cap,
				   "\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"%s\","
				   "\"features\":{\"n\":%zu,\"pad\":\"%0*d\"}",
				   entity, i, (int)pad, 0);
		inputs[i] = (struct fl_log_input){.body_tail = tails[i],
						  .body_tail_len = (size_t)len,
						  .time_us = fl_time_now_us()};
		if (key) {
			snprintf(keep->keys[i], sizeof(keep->keys[i]), "%s-%zu", key, i);
			fl_merkle_leaf_hash((const uint8_t *)content, strlen(content),
					    keep->digests[i]);
			inputs[i].producer = "tester";
			inputs[i].idempotency_key = keep->keys[i];
			inputs[i].digest = keep->digests[i];
		}
	}
	cr_assert_eq(fl_committer_submit_events(f->committer, request(index), inputs, tails, count,
						keep, with_receipt),
		     FL_OK);
}

static uint64_t member_u64(const json_t *object, const char *key)
{
	const json_t *value = json_object_get(object, key);
	cr_assert(json_is_integer(value), "no integer %s", key);
	return (uint64_t)json_integer_value(value);
}

static const json_t *result_at(const struct answer *a, size_t i)
{
	const json_t *result = json_array_get(json_object_get(a->body, "results"), i);
	cr_assert_not_null(result);
	return result;
}

static const char *member_str(const json_t *object, const char *key)
{
	const char *text = json_string_value(json_object_get(object, key));
	cr_assert_not_null(text, "no string %s", key);
	return text;
}

struct submitter {
	struct fixture *f;
	int index;
};

static void *submit_thread(void *opaque)
{
	struct submitter *s = opaque;
	char entity[16];
	snprintf(entity, sizeof(entity), "e%d", s->index);
	submit(s->f, s->index, 2, entity, NULL, NULL, 10);
	return NULL;
}

/*
 * Requests that arrive while a commit is under way are appended together in
 * the next transaction: one commit, one checkpoint and one notification for
 * all of them, each request's events contiguous.
 */
Test(committer, requests_waiting_together_become_one_commit)
{
	enum { THREADS = 8 };
	struct fixture f;
	start(&f, 0);

	hold(0);
	submit(&f, 0, 1, "first", NULL, NULL, 10);
	wait_holding(0);
	cr_assert_eq(fl_log_size(f.log), 1);

	pthread_t threads[THREADS];
	struct submitter submitters[THREADS];
	for (int i = 0; i < THREADS; i++) {
		submitters[i] = (struct submitter){&f, 1 + i};
		cr_assert_eq(pthread_create(&threads[i], NULL, submit_thread, &submitters[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	release();

	uint64_t expected_size = 1 + 2 * THREADS;
	bool seen[1 + 2 * THREADS + 1] = {false};
	for (int i = 1; i <= THREADS; i++) {
		struct answer *a = answer_of(i);
		cr_assert_eq(a->status, 201, "request %d: %u", i, a->status);
		cr_assert_eq(member_u64(a->body, "tree_size"), expected_size);
		const json_t *checkpoint = json_object_get(a->body, "checkpoint");
		cr_assert_eq(member_u64(checkpoint, "tree_size"), expected_size);
		uint64_t first = member_u64(result_at(a, 0), "seq");
		cr_assert_eq(member_u64(result_at(a, 1), "seq"), first + 1,
			     "a request's events are one atomic batch");
		cr_assert(first >= 2 && first + 1 <= expected_size);
		cr_assert_not(seen[first] || seen[first + 1]);
		seen[first] = seen[first + 1] = true;
	}
	cr_assert_eq(fl_log_size(f.log), expected_size);

	/* Two commits: the first request's and the group's. */
	int notified = commits_after_wait(2);
	cr_assert_eq(notified, 2);
	struct fl_log_reader *reader;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_begin(f.log, &reader), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(reader, 1, &cp), FL_OK);
	for (uint64_t size = 2; size < expected_size; size++)
		cr_assert_eq(fl_log_reader_checkpoint(reader, size, &cp), FL_ERR_NOT_FOUND,
			     "a commit ended at tree size %" PRIu64, size);
	cr_assert_eq(fl_log_reader_checkpoint(reader, expected_size, &cp), FL_OK);
	fl_log_reader_end(reader);
	stop(&f);
}

/*
 * A group whose transaction fails (here the map cap: each request would fit
 * alone, together they do not) fails every request in it, and writes
 * nothing; the next request is committed.
 */
Test(committer, a_failed_commit_fails_every_waiter)
{
	enum { WAITERS = 4 };
	struct fixture f;
	start(&f, 2 << 20);

	hold(0);
	submit(&f, 0, 1, "first", NULL, NULL, 10);
	wait_holding(0);
	for (int i = 1; i <= WAITERS; i++)
		submit(&f, i, 1, "big", NULL, NULL, 700 * 1024);
	release();

	for (int i = 1; i <= WAITERS; i++) {
		struct answer *a = answer_of(i);
		cr_assert_eq(a->status, 507, "request %d: %u", i, a->status);
		cr_assert_str_eq(member_str(a->body, "code"), "log_full");
	}
	cr_assert_eq(fl_log_size(f.log), 1);
	pthread_mutex_lock(&lock);
	int notified = commits;
	pthread_mutex_unlock(&lock);
	cr_assert_eq(notified, 1, "nothing was appended, nothing to publish");

	submit(&f, WAITERS + 1, 1, "big", NULL, NULL, 700 * 1024);
	struct answer *a = answer_of(WAITERS + 1);
	cr_assert_eq(a->status, 201);
	cr_assert_eq(member_u64(result_at(a, 0), "seq"), 2);
	stop(&f);
}

/*
 * Idempotency keys are checked across the requests of one group, before any
 * of them is committed: the same key and content is a duplicate of the
 * first (200, its seq), the same key with other content a 409 for that
 * request alone; a key committed earlier is a duplicate too.
 */
Test(committer, idempotency_keys_in_flight)
{
	struct fixture f;
	start(&f, 0);

	hold(0);
	submit(&f, 0, 1, "first", "k0", "content 0", 10);
	wait_holding(0);
	submit(&f, 1, 1, "a", "k1", "content a", 10);
	submit(&f, 2, 1, "a", "k1", "content a", 10);	  /* same key, same content */
	submit(&f, 3, 1, "b", "k1", "content b", 10);	  /* same key, other content */
	submit(&f, 4, 1, "c", "k2", "content c", 10);	  /* another key */
	submit(&f, 5, 1, "first", "k0", "content 0", 10); /* a committed key */
	release();

	struct answer *first = answer_of(1);
	cr_assert_eq(first->status, 201);
	cr_assert_not(json_is_true(json_object_get(result_at(first, 0), "duplicate")));
	uint64_t seq = member_u64(result_at(first, 0), "seq");

	struct answer *again = answer_of(2);
	cr_assert_eq(again->status, 200, "a duplicate only: %u", again->status);
	cr_assert(json_is_true(json_object_get(result_at(again, 0), "duplicate")));
	cr_assert_eq(member_u64(result_at(again, 0), "seq"), seq);
	cr_assert_str_eq(member_str(result_at(again, 0), "leaf_hash"),
			 member_str(result_at(first, 0), "leaf_hash"));

	struct answer *conflict = answer_of(3);
	cr_assert_eq(conflict->status, 409);
	cr_assert_str_eq(member_str(conflict->body, "code"), "idempotency_conflict");
	cr_assert_str_eq(member_str(conflict->body, "field"), "idempotency_key");

	struct answer *other = answer_of(4);
	cr_assert_eq(other->status, 201);
	cr_assert_eq(member_u64(result_at(other, 0), "seq"), seq + 1);

	struct answer *committed = answer_of(5);
	cr_assert_eq(committed->status, 200);
	cr_assert_eq(member_u64(result_at(committed, 0), "seq"), 1);

	/* One commit for the group: the first request and two new events. */
	cr_assert_eq(fl_log_size(f.log), 3);
	cr_assert_eq(member_u64(first->body, "tree_size"), 3);
	cr_assert_eq(member_u64(committed->body, "tree_size"), 3);
	stop(&f);
}

/*
 * ?receipt=1: each event's inclusion proof against the checkpoint the
 * answer carries, duplicates included; the answer is verified with the
 * Merkle library alone.
 */
Test(committer, a_receipt_proves_every_event_against_its_checkpoint)
{
	struct fixture f;
	start(&f, 0);
	submit(&f, 0, 3, "r", "rk", "content", 10);
	struct answer *first = answer_of(0);
	cr_assert_eq(first->status, 201);
	with_receipt = true;
	submit(&f, 1, 4, "r", "rk", "content", 10); /* 3 duplicates and one new event */
	submit(&f, 2, 2, "s", NULL, NULL, 10);
	with_receipt = false;
	for (int index = 1; index <= 2; index++) {
		struct answer *a = answer_of(index);
		cr_assert_eq(a->status, 201, "request %d: %u", index, a->status);
		const json_t *checkpoint = json_object_get(a->body, "checkpoint");
		uint64_t tree_size = member_u64(checkpoint, "tree_size");
		cr_assert_eq(member_u64(a->body, "tree_size"), tree_size);
		uint8_t root[FL_HASH_LEN];
		cr_assert_eq(fl_hex_decode(member_str(checkpoint, "root_hash"), root, FL_HASH_LEN),
			     FL_OK);
		const json_t *results = json_object_get(a->body, "results");
		for (size_t i = 0; i < json_array_size(results); i++) {
			const json_t *r = json_array_get(results, i);
			const json_t *proof = json_object_get(r, "proof");
			cr_assert_not_null(proof, "request %d, event %zu: no proof", index, i);
			uint64_t seq = member_u64(r, "seq");
			cr_assert_eq(member_u64(proof, "leaf_index"), seq - 1);
			cr_assert_eq(member_u64(proof, "tree_size"), tree_size);
			const json_t *hashes = json_object_get(proof, "hashes");
			uint8_t path[FL_MERKLE_MAX_PROOF][FL_HASH_LEN], leaf[FL_HASH_LEN];
			size_t count = json_array_size(hashes);
			cr_assert(count <= FL_MERKLE_MAX_PROOF);
			for (size_t k = 0; k < count; k++)
				cr_assert_eq(
				    fl_hex_decode(json_string_value(json_array_get(hashes, k)),
						  path[k], FL_HASH_LEN),
				    FL_OK);
			cr_assert_eq(fl_hex_decode(member_str(r, "leaf_hash"), leaf, FL_HASH_LEN),
				     FL_OK);
			cr_assert(fl_merkle_verify_inclusion(leaf, seq - 1, tree_size,
							     (const uint8_t(*)[FL_HASH_LEN])path,
							     count, root),
				  "request %d, event %zu: the proof does not lead to the root",
				  index, i);
		}
	}
	/* The first three of request 1 were duplicates of request 0's. */
	const json_t *results = json_object_get(answer_of(1)->body, "results");
	for (size_t i = 0; i < 3; i++)
		cr_assert(json_is_true(json_object_get(json_array_get(results, i), "duplicate")));
	stop(&f);
}
