/*
 * The trust set (eventlog/trust.h): walking real logs with a legitimate
 * rotation, a rotation forged under the new key, an impostor's fresh log,
 * key events without a line signature, and the pin file.
 */
#include <criterion/criterion.h>
#include <inttypes.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FORGE_NO_MAIN
#include "forge_log.c"

#include "eventlog/trust.h"

static char dir[128];
static struct fl_signer *key_a, *key_b;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "%s/fl_trust_XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(fl_signer_generate(&key_a), FL_OK);
	cr_assert_eq(fl_signer_generate(&key_b), FL_OK);
}

static void teardown(void)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	fl_signer_destroy(key_a);
	fl_signer_destroy(key_b);
}

TestSuite(trust, .init = setup, .fini = teardown);

static char *path_in(const char *name)
{
	static char path[2][256];
	static int turn;
	turn ^= 1;
	snprintf(path[turn], sizeof(path[turn]), "%s/%s", dir, name);
	return path[turn];
}

/* Appends count feature-like events in one commit. */
static void append(struct fl_log *log, int count)
{
	struct fl_log_input in[8];
	struct fl_log_result res[8];
	char tails[8][64];
	uint8_t digest[FL_HASH_LEN] = {0};
	cr_assert_leq(count, 8);
	for (int i = 0; i < count; i++) {
		int len =
		    snprintf(tails[i], sizeof(tails[i]),
			     "\"kind\":\"feature\",\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\"");
		in[i] = (struct fl_log_input){.body_tail = tails[i],
					      .body_tail_len = (size_t)len,
					      .time_us = fl_time_now_us(),
					      .digest = digest};
	}
	struct fl_log_batch batch = {.inputs = in, .count = (size_t)count, .results = res};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
}

/*
 * Walks the whole log as a verifier does: each line, and each stored
 * checkpoint once its lines are in. FL_OK or the first error, with why.
 */
static enum fl_status walk(struct fl_log *log, struct fl_trust *trust, char *why, size_t why_len)
{
	struct fl_log_reader *r;
	enum fl_status st = fl_log_reader_begin(log, &r);
	cr_assert_eq(st, FL_OK);
	uint64_t size = fl_log_reader_size(r);
	for (uint64_t seq = 1; st == FL_OK && seq <= size; seq++) {
		struct fl_log_entry e;
		struct fl_checkpoint cp;
		cr_assert_eq(fl_log_reader_get(r, seq, &e), FL_OK);
		st = fl_trust_line(trust, &e, why, why_len, NULL);
		if (st == FL_OK && fl_log_reader_checkpoint(r, seq, &cp) == FL_OK) {
			st = fl_trust_checkpoint(trust, &cp, why, why_len);
			if (st == FL_OK) /* the stored tree is the log's own: its root matches */
				st = fl_trust_promote(trust, seq, NULL);
		}
	}
	fl_log_reader_end(r);
	return st;
}

static struct fl_trust *trusting(const struct fl_signer *signer)
{
	struct fl_trust *trust;
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_trust_create(&trust), FL_OK);
	fl_signer_public_key(signer, pub);
	cr_assert_eq(fl_trust_add(trust, pub), FL_OK);
	return trust;
}

Test(trust, a_legitimate_rotation_makes_the_new_key_trusted)
{
	struct fl_log *log;
	char why[300] = "";
	cr_assert_eq(fl_log_open(path_in("log"), NULL, key_a, &log), FL_OK);
	append(log, 3);
	cr_assert_eq(fl_log_rotate_key(log, key_b, fl_time_now_us(), NULL), FL_OK);
	append(log, 2);

	struct fl_trust *trust = trusting(key_a);
	cr_assert_eq(walk(log, trust, why, sizeof(why)), FL_OK, "%s", why);
	cr_assert_eq(fl_trust_count(trust), 2);
	cr_assert_str_eq(fl_trust_key_id(trust, 1), fl_signer_key_id(key_b));
	fl_trust_destroy(trust);

	/* Trusting only the new key, the old key's checkpoints are refused. */
	trust = trusting(key_b);
	cr_assert_eq(walk(log, trust, why, sizeof(why)), FL_ERR_DENIED);
	cr_assert_not_null(strstr(why, fl_signer_key_id(key_a)), "%s", why);
	cr_assert_not_null(strstr(why, "checkpoint of tree size 3 "), "%s", why);
	fl_trust_destroy(trust);
	fl_log_close(log);
}

Test(trust, a_rotation_forged_under_the_new_key_is_refused_naming_it)
{
	struct fl_log *log, *forged;
	uint64_t seq = 0;
	char why[300] = "";
	cr_assert_eq(fl_log_open(path_in("log"), NULL, key_a, &log), FL_OK);
	append(log, 4);
	cr_assert_eq(forge_rotation(log, path_in("forged"), key_b, &seq), FL_OK);
	cr_assert_eq(seq, 5);
	fl_log_close(log);

	/* The forged copy is a log the new key can write to, listing both keys. */
	cr_assert_eq(fl_log_open(path_in("forged"), NULL, key_b, &forged), FL_OK);
	append(forged, 1);
	struct fl_log_reader *r;
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_log_reader_begin(forged, &r), FL_OK);
	cr_assert_eq(fl_log_reader_key(r, fl_signer_key_id(key_a), pub), FL_OK);
	cr_assert_eq(fl_log_reader_key(r, fl_signer_key_id(key_b), pub), FL_OK);
	fl_log_reader_end(r);

	struct fl_trust *trust = trusting(key_a);
	cr_assert_eq(walk(forged, trust, why, sizeof(why)), FL_ERR_DENIED);
	cr_assert_not_null(strstr(why, "line 5 "), "%s", why);
	cr_assert_not_null(strstr(why, fl_signer_key_id(key_b)), "%s", why);
	cr_assert_eq(fl_trust_count(trust), 1);
	cr_assert_null(fl_trust_find(trust, fl_signer_key_id(key_b)));
	fl_trust_destroy(trust);
	fl_log_close(forged);
}

Test(trust, an_impostors_fresh_log_is_refused_at_its_first_line_and_checkpoint)
{
	struct fl_log *log;
	char why[300] = "";
	cr_assert_eq(fl_log_open(path_in("impostor"), NULL, key_b, &log), FL_OK);
	append(log, 2);
	struct fl_trust *trust = trusting(key_a);
	cr_assert_eq(walk(log, trust, why, sizeof(why)), FL_ERR_DENIED);
	cr_assert_not_null(strstr(why, fl_signer_key_id(key_b)), "%s", why);

	struct fl_log_reader *r;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(r, 0, &cp), FL_OK);
	fl_log_reader_end(r);
	cr_assert_eq(fl_trust_checkpoint(trust, &cp, why, sizeof(why)), FL_ERR_DENIED);
	cr_assert_not_null(strstr(why, "checkpoint of tree size 2"), "%s", why);
	cr_assert_not_null(strstr(why, fl_signer_key_id(key_b)), "%s", why);
	/* A bad signature under a trusted key is a different error. */
	cr_assert_eq(fl_trust_add(trust, (uint8_t[FL_PUBKEY_LEN]){0}), FL_OK);
	uint8_t pub_b[FL_PUBKEY_LEN];
	fl_signer_public_key(key_b, pub_b);
	cr_assert_eq(fl_trust_add(trust, pub_b), FL_OK);
	cp.sig[0] ^= 1;
	cr_assert_eq(fl_trust_checkpoint(trust, &cp, why, sizeof(why)), FL_ERR_CORRUPT);
	fl_trust_destroy(trust);
	fl_log_close(log);
}

/* A key event body naming next, with previous as the key it replaces. */
static void key_event_body(uint64_t seq, const struct fl_signer *next, const char *previous,
			   char *out, size_t cap)
{
	char pem[400];
	size_t n = 0;
	for (const char *p = fl_signer_public_pem(next); *p; p++) {
		if (*p == '\n') {
			pem[n++] = '\\';
			pem[n++] = 'n';
		} else {
			pem[n++] = *p;
		}
	}
	pem[n] = '\0';
	snprintf(out, cap,
		 "{\"seq\":%" PRIu64
		 ",\"kind\":\"key\",\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\","
		 "\"key_id\":\"%s\",\"alg\":\"ed25519\",\"public_key_pem\":\"%s\","
		 "\"previous_key_id\":\"%s\"}",
		 seq, fl_signer_key_id(next), pem, previous);
}

static struct fl_checkpoint signed_checkpoint(uint64_t size, const struct fl_signer *signer)
{
	struct fl_checkpoint cp = {.tree_size = size};
	char text[256];
	snprintf(cp.timestamp, sizeof(cp.timestamp), "2026-11-26T21:00:00.000000Z");
	snprintf(cp.key_id, sizeof(cp.key_id), "%s", fl_signer_key_id(signer));
	size_t len = fl_checkpoint_text(FL_CHECKPOINT_PREFIX, &cp, text, sizeof(text));
	cr_assert_eq(fl_signer_sign(signer, (uint8_t *)text, len, cp.sig), FL_OK);
	return cp;
}

Test(trust, an_unsigned_key_event_needs_a_checkpoint_by_a_trusted_key)
{
	char body[1024], why[300] = "";
	uint8_t leaf[FL_HASH_LEN], sig[FL_SIG_LEN];
	key_event_body(7, key_b, fl_signer_key_id(key_a), body, sizeof(body));
	struct fl_log_entry e = {
	    .seq = 7, .body = (uint8_t *)body, .body_len = strlen(body), .leaf_hash = leaf};
	fl_merkle_leaf_hash(e.body, e.body_len, leaf);

	/* Covered by a checkpoint of the old, trusted key: the new key is trusted. */
	struct fl_trust *trust = trusting(key_a);
	bool new_key = false;
	cr_assert_eq(fl_trust_line(trust, &e, why, sizeof(why), &new_key), FL_OK, "%s", why);
	cr_assert_not(new_key);
	/* A line of the announced key is accepted provisionally ... */
	struct fl_log_entry next = {.seq = 8,
				    .body = (uint8_t *)"{\"seq\":8,\"kind\":\"x\"}",
				    .body_len = 20,
				    .leaf_hash = leaf,
				    .sig = sig};
	fl_merkle_leaf_hash(next.body, next.body_len, leaf);
	cr_assert_eq(fl_signer_sign(key_b, leaf, FL_HASH_LEN, sig), FL_OK);
	snprintf(next.key_id, sizeof(next.key_id), "%s", fl_signer_key_id(key_b));
	cr_assert_eq(fl_trust_line(trust, &next, why, sizeof(why), NULL), FL_OK, "%s", why);
	/* ... but a checkpoint by the announced key itself is not enough. */
	struct fl_checkpoint by_b = signed_checkpoint(8, key_b);
	cr_assert_eq(fl_trust_checkpoint(trust, &by_b, why, sizeof(why)), FL_ERR_DENIED);
	cr_assert_not_null(strstr(why, fl_signer_key_id(key_b)), "%s", why);
	/* A checkpoint by a trusted key that ends before the event does not vouch. */
	struct fl_checkpoint early = signed_checkpoint(6, key_a);
	cr_assert_eq(fl_trust_checkpoint(trust, &early, why, sizeof(why)), FL_OK);
	cr_assert_eq(fl_trust_promote(trust, 6, &new_key), FL_OK);
	cr_assert_not(new_key);
	cr_assert_null(fl_trust_find(trust, fl_signer_key_id(key_b)));
	struct fl_checkpoint by_a = signed_checkpoint(8, key_a);
	cr_assert_eq(fl_trust_checkpoint(trust, &by_a, why, sizeof(why)), FL_OK, "%s", why);
	cr_assert_null(fl_trust_find(trust, fl_signer_key_id(key_b))); /* root not matched yet */
	cr_assert_eq(fl_trust_promote(trust, 8, &new_key), FL_OK);
	cr_assert(new_key);
	cr_assert_not_null(fl_trust_find(trust, fl_signer_key_id(key_b)));
	fl_trust_destroy(trust);

	/* Dropped announcements are forgotten. */
	trust = trusting(key_a);
	cr_assert_eq(fl_trust_line(trust, &e, why, sizeof(why), NULL), FL_OK);
	fl_trust_drop_announced(trust);
	cr_assert_eq(fl_trust_line(trust, &next, why, sizeof(why), NULL), FL_ERR_DENIED);
	fl_trust_destroy(trust);
}

Test(trust, a_line_with_a_bad_signature_or_a_malformed_key_event_is_corrupt)
{
	char body[1024], why[300] = "";
	uint8_t leaf[FL_HASH_LEN], sig[FL_SIG_LEN];
	key_event_body(3, key_b, fl_signer_key_id(key_a), body, sizeof(body));
	struct fl_log_entry e = {.seq = 3,
				 .body = (uint8_t *)body,
				 .body_len = strlen(body),
				 .leaf_hash = leaf,
				 .sig = sig};
	snprintf(e.key_id, sizeof(e.key_id), "%s", fl_signer_key_id(key_a));
	fl_merkle_leaf_hash(e.body, e.body_len, leaf);
	cr_assert_eq(fl_signer_sign(key_a, leaf, FL_HASH_LEN, sig), FL_OK);
	sig[5] ^= 1;
	struct fl_trust *trust = trusting(key_a);
	cr_assert_eq(fl_trust_line(trust, &e, why, sizeof(why), NULL), FL_ERR_CORRUPT);
	cr_assert_not_null(strstr(why, "line 3 does not verify under key"), "%s", why);
	sig[5] ^= 1;
	/* The key id in the event is not its key's: malformed. */
	char *id = strstr(body, fl_signer_key_id(key_b));
	id[0] = id[0] == '0' ? '1' : '0';
	fl_merkle_leaf_hash(e.body, e.body_len, leaf);
	cr_assert_eq(fl_signer_sign(key_a, leaf, FL_HASH_LEN, sig), FL_OK);
	cr_assert_eq(fl_trust_line(trust, &e, why, sizeof(why), NULL), FL_ERR_CORRUPT);
	cr_assert_not_null(strstr(why, "malformed key event"), "%s", why);
	cr_assert_eq(fl_trust_count(trust), 1);
	fl_trust_destroy(trust);
}

Test(trust, the_pin_file_round_trips_and_bad_files_are_refused)
{
	struct fl_trust *trust = trusting(key_a), *loaded;
	uint8_t pub_b[FL_PUBKEY_LEN];
	fl_signer_public_key(key_b, pub_b);
	cr_assert_eq(fl_trust_add(trust, pub_b), FL_OK);
	cr_assert_eq(fl_trust_add(trust, pub_b), FL_OK); /* no duplicate */
	cr_assert_eq(fl_trust_save_file(trust, path_in("trusted-keys")), FL_OK);
	cr_assert_eq(fl_trust_create(&loaded), FL_OK);
	cr_assert_eq(fl_trust_load_file(loaded, path_in("trusted-keys")), FL_OK);
	cr_assert_eq(fl_trust_count(loaded), 2);
	cr_assert_str_eq(fl_trust_key_id(loaded, 0), fl_signer_key_id(key_a));
	cr_assert_str_eq(fl_trust_key_id(loaded, 1), fl_signer_key_id(key_b));
	cr_assert_eq(fl_trust_load_file(loaded, path_in("absent")), FL_ERR_NOT_FOUND);

	/* A private key, an empty file and a damaged block add nothing. */
	cr_assert_eq(fl_signer_save(key_a, path_in("private.pem")), FL_OK);
	struct fl_trust *other;
	cr_assert_eq(fl_trust_create(&other), FL_OK);
	cr_assert_eq(fl_trust_load_file(other, path_in("private.pem")), FL_ERR_INVALID);
	FILE *f = fopen(path_in("empty.pem"), "w");
	fclose(f);
	cr_assert_eq(fl_trust_load_file(other, path_in("empty.pem")), FL_ERR_INVALID);
	f = fopen(path_in("damaged.pem"), "w");
	fprintf(f, "%s-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		fl_signer_public_pem(key_a));
	fclose(f);
	cr_assert_eq(fl_trust_load_file(other, path_in("damaged.pem")), FL_ERR_INVALID);
	cr_assert_eq(fl_trust_count(other), 0);
	fl_trust_destroy(other);
	fl_trust_destroy(loaded);
	fl_trust_destroy(trust);
}

/* Copies the fixture log of the first format (tests/fixtures/v1-log) into dst. */
static void copy_fixture(const char *name, const char *dst)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "cp -r '%s/v1-log/%s' '%s' && chmod -R u+w '%s'",
		 FL_TEST_FIXTURES, name, dst, dst);
	cr_assert_eq(system(cmd), 0);
}

static struct fl_signer *fixture_key(const char *name)
{
	char path[512];
	struct fl_signer *signer;
	snprintf(path, sizeof(path), "%s/v1-log/%s", FL_TEST_FIXTURES, name);
	cr_assert_eq(fl_signer_load(path, &signer), FL_OK, "%s", path);
	return signer;
}

Test(trust, a_log_of_the_first_format_verifies_and_grows_in_format_v2)
{
	struct fl_log *log;
	struct fl_log_verify_report rep;
	char why[300] = "";
	struct fl_signer *old_key = fixture_key("command-old-signing.pem");
	struct fl_signer *new_key = fixture_key("command-signing.pem");
	copy_fixture("command-data", path_in("v1"));

	/* As written: 15 signed lines (a rotation at seq 12), every checkpoint. */
	cr_assert_eq(fl_log_open(path_in("v1"), NULL, NULL, &log), FL_OK);
	cr_assert_eq(fl_log_size(log), 15);
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	struct fl_log_reader *r;
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	for (uint64_t seq = 1; seq <= 15; seq++) {
		cr_assert_eq(fl_log_reader_get(r, seq, &e), FL_OK);
		cr_assert_not_null(e.sig, "seq %" PRIu64, seq);
		cr_assert_str_eq(e.key_id, fl_signer_key_id(seq <= 12 ? old_key : new_key));
	}
	char *line;
	cr_assert_eq(fl_log_entry_line(&e, &line, NULL), FL_OK);
	cr_assert_not_null(strstr(line, "\"key_id\":\""), "%s", line);
	cr_assert_not_null(strstr(line, "\"sig\":\""), "%s", line);
	free(line);
	/* A damaged signature of a line of the first format is still caught. */
	uint8_t bad_sig[FL_SIG_LEN];
	struct fl_trust *checker = trusting(old_key);
	cr_assert_eq(fl_log_reader_get(r, 3, &e), FL_OK);
	cr_assert_eq(fl_trust_line(checker, &e, why, sizeof(why), NULL), FL_OK, "%s", why);
	memcpy(bad_sig, e.sig, FL_SIG_LEN);
	bad_sig[5] ^= 1;
	e.sig = bad_sig;
	cr_assert_eq(fl_trust_line(checker, &e, why, sizeof(why), NULL), FL_ERR_CORRUPT);
	fl_trust_destroy(checker);
	fl_log_reader_end(r);
	fl_log_close(log);

	/* Opened by today's writer with its current key: new lines are v2. */
	cr_assert_eq(fl_log_open(path_in("v1"), NULL, new_key, &log), FL_OK);
	append(log, 2);
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(rep.events_checked, 17);
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 16, &e), FL_OK);
	cr_assert_null(e.sig);
	fl_log_reader_end(r);

	/* Key trust across both formats: the old key leads to the new one
	 * through the key event's own line signature (the first format). */
	struct fl_trust *trust = trusting(old_key);
	cr_assert_eq(walk(log, trust, why, sizeof(why)), FL_OK, "%s", why);
	cr_assert_eq(fl_trust_count(trust), 2);
	fl_trust_destroy(trust);
	fl_log_close(log);
	fl_signer_destroy(old_key);
	fl_signer_destroy(new_key);
}
