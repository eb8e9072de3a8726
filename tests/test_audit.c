/*
 * query-svc's read audit, without a socket: the audit answers through
 * functions that record each answer (the requests are slots of an array)
 * and look, at the moment of answering, for the read's record in the log.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "fledger/sha256.h"
#include "fledger/util.h"

#define MAX_REQUESTS 16
#define ANSWER_WAIT_US (20 * 1000000)

struct answer {
	char read_id[32]; /* set by the test before submitting */
	bool done;
	bool recorded_first; /* the record was in the log when the answer left */
	unsigned status;
	char *body; /* the body sent, or the error code */
	size_t len;
	char retry_after[8];
	int answers; /* calls of respond and respond_error */
};

static struct answer answers[MAX_REQUESTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed;

static char tmpdir[256];
static char logdir[300];
static struct fl_signer *signer;
static struct fl_log *audit_log;

static struct fl_http_request *request(int index)
{
	return (struct fl_http_request *)&answers[index];
}

static struct answer *slot(struct fl_http_request *req)
{
	int index = (int)((struct answer *)req - answers);
	cr_assert(index >= 0 && index < MAX_REQUESTS);
	return &answers[index];
}

/* The body of the record with read_id, as JSON, or NULL. */
static json_t *find_record(const char *read_id)
{
	struct fl_log_reader *reader;
	json_t *found = NULL;
	cr_assert_eq(fl_log_reader_begin(audit_log, &reader), FL_OK);
	for (uint64_t seq = 1; !found && seq <= fl_log_reader_size(reader); seq++) {
		struct fl_log_entry entry;
		cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
		json_t *body = json_loadb((const char *)entry.body, entry.body_len, 0, NULL);
		cr_assert_not_null(body);
		const char *id = json_string_value(json_object_get(body, "read_id"));
		if (id && strcmp(id, read_id) == 0)
			found = body;
		else
			json_decref(body);
	}
	fl_log_reader_end(reader);
	return found;
}

static void answered(struct answer *a, unsigned status, const void *body, size_t len)
{
	json_t *record = find_record(a->read_id);
	pthread_mutex_lock(&lock);
	a->recorded_first = record != NULL;
	a->status = status;
	a->body = malloc(len + 1);
	cr_assert_not_null(a->body);
	memcpy(a->body, body, len);
	a->body[len] = '\0';
	a->len = len;
	a->answers++;
	a->done = true;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
	json_decref(record);
}

static enum fl_status record_respond(struct fl_http_request *req, unsigned status,
				     const char *content_type, const void *body, size_t len)
{
	cr_assert_str_eq(content_type, "application/json");
	answered(slot(req), status, body, len);
	return FL_OK;
}

static enum fl_status record_header(struct fl_http_request *req, const char *name,
				    const char *value)
{
	if (strcmp(name, "Retry-After") == 0)
		snprintf(slot(req)->retry_after, sizeof(slot(req)->retry_after), "%s", value);
	return FL_OK;
}

static enum fl_status record_error(struct fl_http_request *req, unsigned status, const char *code,
				   const char *message, const char *field)
{
	(void)message;
	(void)field;
	answered(slot(req), status, code, strlen(code));
	return FL_OK;
}

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

static void open_log(const struct fl_signer *with)
{
	struct fl_log_options options = {.checkpoint_prefix = FL_READ_CHECKPOINT_PREFIX};
	cr_assert_eq(fl_log_open(logdir, &options, with, &audit_log), FL_OK);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-audit-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(logdir, sizeof(logdir), "%s/audit", tmpdir);
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	cr_assert_eq(fl_cond_init_monotonic(&changed), FL_OK);
	open_log(signer);
}

static void teardown(void)
{
	char cmd[400];
	fl_log_close(audit_log);
	fl_signer_destroy(signer);
	for (int i = 0; i < MAX_REQUESTS; i++)
		free(answers[i].body);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 120);

static struct fl_audit *start(void)
{
	struct fl_audit *audit;
	struct fl_audit_config config = {.log = audit_log,
					 .respond = record_respond,
					 .add_header = record_header,
					 .respond_error = record_error};
	cr_assert_eq(fl_audit_create(&config, &audit), FL_OK);
	return audit;
}

static const uint64_t served[] = {3, 7};

/* The record of a read of entity e<index>'s features. */
static struct fl_audit_record read_of(int index, json_t *entity_ids)
{
	snprintf(answers[index].read_id, sizeof(answers[index].read_id), "read-%d", index);
	return (struct fl_audit_record){.read_id = answers[index].read_id,
					.principal = "reader",
					.route = "/v1/features",
					.view = "v",
					.entity_ids = entity_ids,
					.served_seqs = served,
					.n_served = 2,
					.applied_seq = 7};
}

static void submit(struct fl_audit *audit, int index)
{
	json_t *entity_ids = json_pack("[s]", "e");
	struct fl_audit_record rec = read_of(index, entity_ids);
	char *body;
	cr_assert_gt(asprintf(&body, "{\"value\":%d}", index), 0);
	cr_assert_eq(fl_audit_submit(audit, request(index), &rec, 200, "application/json", body,
				     strlen(body)),
		     FL_OK);
	json_decref(entity_ids);
}

static void sha256_hex(const void *bytes, size_t len, char out[65])
{
	uint8_t digest[32];
	cr_assert(fl_sha256(bytes, len, digest));
	fl_hex_encode(digest, 32, out);
}

/*
 * Every answer leaves after its record is in the log (and the log syncs
 * before an append returns); the record names the read and the SHA-256 of
 * exactly the bytes answered.
 */
Test(audit, a_read_is_answered_after_its_record_is_stored)
{
	struct fl_audit *audit = start();
	for (int i = 0; i < 6; i++)
		submit(audit, i);
	for (int i = 0; i < 6; i++) {
		struct answer *a = answer_of(i);
		cr_assert_eq(a->status, 200);
		cr_assert(a->recorded_first, "read %d was answered before it was recorded", i);
		char expected[32];
		snprintf(expected, sizeof(expected), "{\"value\":%d}", i);
		cr_assert_str_eq(a->body, expected);

		json_t *record = find_record(a->read_id);
		char hex[65];
		sha256_hex(a->body, a->len, hex);
		cr_assert_str_eq(json_string_value(json_object_get(record, "answer_sha256")), hex);
		cr_assert_str_eq(json_string_value(json_object_get(record, "kind")), "read");
		cr_assert_str_eq(json_string_value(json_object_get(record, "principal")), "reader");
		cr_assert_eq(json_integer_value(json_object_get(record, "status")), 200);
		cr_assert_eq(json_integer_value(json_object_get(record, "applied_seq")), 7);
		cr_assert_eq(json_array_size(json_object_get(record, "served_seqs")), 2);
		json_decref(record);
	}
	fl_audit_destroy(audit);
	cr_assert_eq(fl_log_size(audit_log), 6);
}

/* fl_audit_record_now returns once the record is in the log. */
Test(audit, a_record_now_is_stored_when_the_call_returns)
{
	struct fl_audit *audit = start();
	for (int i = 0; i < 3; i++) {
		json_t *entity_ids = json_pack("[s]", "e");
		struct fl_audit_record rec = read_of(i, entity_ids);
		uint8_t digest[32];
		cr_assert(fl_sha256("streamed", 8, digest));
		cr_assert_eq(fl_audit_record_now(audit, &rec, 200, digest), FL_OK);
		json_decref(entity_ids);
		cr_assert_eq(fl_log_size(audit_log), (uint64_t)i + 1);
		json_t *record = find_record(answers[i].read_id);
		cr_assert_not_null(record, "read %d is not in the log", i);
		char hex[65];
		sha256_hex("streamed", 8, hex);
		cr_assert_str_eq(json_string_value(json_object_get(record, "answer_sha256")), hex);
		json_decref(record);
	}
	fl_audit_destroy(audit);
}

/*
 * A record that cannot be stored (here: a log opened read-only) is reported:
 * fl_audit_record_now returns the failure, and a submitted read is answered
 * 503 with Retry-After instead of its answer.
 */
Test(audit, a_store_failure_is_reported)
{
	fl_log_close(audit_log);
	open_log(NULL);
	struct fl_audit *audit = start();

	json_t *entity_ids = json_pack("[s]", "e");
	struct fl_audit_record rec = read_of(0, entity_ids);
	uint8_t digest[32] = {0};
	cr_assert_neq(fl_audit_record_now(audit, &rec, 200, digest), FL_OK);
	json_decref(entity_ids);

	submit(audit, 1);
	submit(audit, 2);
	for (int i = 1; i <= 2; i++) {
		struct answer *a = answer_of(i);
		cr_assert_eq(a->status, 503);
		cr_assert_str_eq(a->body, "audit_unavailable");
		cr_assert_str_eq(a->retry_after, "1");
	}
	fl_audit_destroy(audit);
	for (int i = 1; i <= 2; i++)
		cr_assert_eq(answers[i].answers, 1, "read %d was answered twice", i);
	cr_assert_eq(fl_log_size(audit_log), 0);
}

/*
 * The records verify against the log's latest checkpoint: the checkpoint is
 * signed as a read checkpoint (and so cannot pass for one of the event audit_log),
 * and each record's leaf is included in its tree.
 */
Test(audit, records_verify_against_their_checkpoint)
{
	struct fl_audit *audit = start();
	for (int i = 0; i < 5; i++)
		submit(audit, i);
	for (int i = 0; i < 5; i++)
		answer_of(i);
	uint8_t digest[32] = {0};
	json_t *entity_ids = json_pack("[s]", "e");
	struct fl_audit_record rec = read_of(5, entity_ids);
	cr_assert_eq(fl_audit_record_now(audit, &rec, 200, digest), FL_OK);
	json_decref(entity_ids);
	fl_audit_destroy(audit);

	uint8_t pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	struct fl_log_reader *reader;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_begin(audit_log, &reader), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(reader, 0, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, 6);
	cr_assert(fl_checkpoint_verify(FL_READ_CHECKPOINT_PREFIX, &cp, pub));
	cr_assert_not(fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, &cp, pub));
	for (uint64_t seq = 1; seq <= cp.tree_size; seq++) {
		struct fl_log_entry entry;
		uint8_t leaf[FL_HASH_LEN];
		uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
		size_t count;
		cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
		fl_merkle_leaf_hash(entry.body, entry.body_len, leaf);
		cr_assert_arr_eq(leaf, entry.leaf_hash, FL_HASH_LEN);
		cr_assert_eq(
		    fl_log_reader_inclusion_proof(reader, seq, cp.tree_size, hashes, &count),
		    FL_OK);
		cr_assert(fl_merkle_verify_inclusion(leaf, seq - 1, cp.tree_size, hashes, count,
						     cp.root_hash),
			  "record %llu is not in the checkpoint's tree", (unsigned long long)seq);
	}
	fl_log_reader_end(reader);
}

/* The record of rec as jansson writes it (the format of CONTRACT §7), seq and ts taken as given. */
static char *expected_record(uint64_t seq, const char *ts, const struct fl_audit_record *rec,
			     const json_t *entity_ids, const json_t *features,
			     const json_t *windows, unsigned status, const char *digest_hex)
{
	json_t *seqs = json_array();
	for (size_t i = 0; i < rec->n_served; i++)
		json_array_append_new(seqs, json_integer((json_int_t)rec->served_seqs[i]));
	json_t *obj = json_object();
	json_object_set_new(obj, "seq", json_integer((json_int_t)seq));
	json_object_set_new(obj, "kind", json_string("read"));
	json_object_set_new(obj, "read_id", json_string(rec->read_id));
	json_object_set_new(obj, "ts", json_string(ts));
	json_object_set_new(obj, "principal",
			    rec->principal ? json_string(rec->principal) : json_null());
	json_object_set_new(obj, "route", json_string(rec->route));
	json_object_set_new(obj, "view", rec->view ? json_string(rec->view) : json_null());
	if (rec->request_sha256) {
		json_object_set_new(obj, "rows", json_integer((json_int_t)rec->rows));
		json_object_set_new(obj, "request_sha256", json_string(rec->request_sha256));
	} else {
		json_object_set_new(obj, "entity_ids", json_deep_copy(entity_ids));
	}
	json_object_set_new(obj, "features", json_deep_copy(features));
	json_object_set_new(obj, "windows", json_deep_copy(windows));
	json_object_set_new(obj, "served_seqs", seqs);
	json_object_set_new(obj, "applied_seq", json_integer((json_int_t)rec->applied_seq));
	json_object_set_new(obj, "answer_sha256", json_string(digest_hex));
	json_object_set_new(obj, "status", json_integer(status));
	char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	return text;
}

/* The stored body of the record at seq, as text, and its ts. */
static char *stored_record(uint64_t seq, char ts[64])
{
	struct fl_log_reader *reader;
	struct fl_log_entry entry;
	cr_assert_eq(fl_log_reader_begin(audit_log, &reader), FL_OK);
	cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
	char *text = strndup((const char *)entry.body, entry.body_len);
	fl_log_reader_end(reader);
	json_t *body = json_loads(text, 0, NULL);
	cr_assert_not_null(body, "record %llu is not JSON: %s", (unsigned long long)seq, text);
	snprintf(ts, 64, "%s", json_string_value(json_object_get(body, "ts")));
	json_decref(body);
	return text;
}

/*
 * The records are written byte for byte as before (jansson's compact
 * output in the member order of CONTRACT §7), from JSON arrays or from C
 * strings: escapes, UTF-8 passed through, a string that is not UTF-8
 * recorded with '?' for its bytes >= 0x80, a missing list as [], a null
 * principal, and the export form (rows, request_sha256).
 */
Test(audit, records_are_written_as_jansson_writes_them)
{
	struct fl_audit *audit = start();
	static const uint64_t seqs[] = {1, 9007199254740993u, UINT64_C(1) << 62};
	const char *ids[] = {"e\"1\\\n\t\x01/", "caf\xc3\xa9", "bad\xff\xc3", "\xed\xa0\x80"};
	const char *feature_names[] = {"amount", "clicks"};
	json_t *id_array = json_pack("[s,s,s,s]", "e\"1\\\n\t\x01/", "caf\xc3\xa9", "bad??", "???");
	json_t *feature_array = json_pack("[s,s]", "amount", "clicks");
	json_t *window_array = json_pack("[s]", "w\xe2\x80\xa8");
	json_t *empty = json_array();

	snprintf(answers[0].read_id, sizeof(answers[0].read_id), "r-0");
	struct fl_audit_record from_names = {
	    .read_id = "r-0",
	    .route = "/v1/features",
	    .view = "v\xff",
	    .entity_id_names = {ids, 4},
	    .feature_names = {feature_names, 2},
	    .windows = window_array,
	    .served_seqs = seqs,
	    .n_served = 3,
	    .applied_seq = UINT64_C(1) << 40,
	};
	char *body = strdup("{\"answer\":\"\xc3\xa9\"}");
	size_t len = strlen(body);
	char hex[65];
	sha256_hex(body, len, hex);
	cr_assert_eq(
	    fl_audit_submit(audit, request(0), &from_names, 403, "application/json", body, len),
	    FL_OK);
	cr_assert_eq(answer_of(0)->status, 403);

	struct fl_audit_record export = {
	    .read_id = "r-1",
	    .principal = "trainer",
	    .route = "/v1/training-rows",
	    .view = "v",
	    .features = feature_array,
	    .request_sha256 = "ab12",
	    .rows = 123456,
	    .applied_seq = 77,
	};
	uint8_t digest[32] = {1, 2, 3};
	char digest_hex[65];
	fl_hex_encode(digest, 32, digest_hex);
	cr_assert_eq(fl_audit_record_now(audit, &export, 200, digest), FL_OK);
	fl_audit_destroy(audit);

	char ts[64];
	char *stored = stored_record(1, ts);
	struct fl_audit_record as_view = from_names;
	as_view.view = "v?";
	char *expected =
	    expected_record(1, ts, &as_view, id_array, feature_array, window_array, 403, hex);
	cr_assert_str_eq(stored, expected);
	free(stored);
	free(expected);

	stored = stored_record(2, ts);
	expected = expected_record(2, ts, &export, NULL, feature_array, empty, 200, digest_hex);
	cr_assert_str_eq(stored, expected);
	free(stored);
	free(expected);
	json_decref(id_array);
	json_decref(feature_array);
	json_decref(window_array);
	json_decref(empty);
}
