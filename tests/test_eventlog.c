/*
 * The LMDB event log: appends, seq, checkpoints, proofs, idempotency, map
 * growth and caps, crash safety, tampering, key rotation, and signatures
 * checked with the stock openssl tool.
 */
#include <criterion/criterion.h>

#include <stdarg.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#include "eventlog/eventlog.h"
#include "fledger/util.h"

static char tmpdir[256];
static char logdir[300];
static struct fl_signer *signer;

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-eventlog-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(logdir, sizeof(logdir), "%s/log", tmpdir);
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
}

static void teardown(void)
{
	char cmd[400];
	fl_signer_destroy(signer);
	signer = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(eventlog, .init = setup, .fini = teardown, .timeout = 300);

/* Appends one batch of count events of about 300 bytes, keys optional. */
static enum fl_status append_batch(struct fl_log *log, const char *producer, const char *key_prefix,
				   uint64_t first_tag, size_t count, struct fl_log_result *results)
{
	struct fl_log_input *inputs = calloc(count, sizeof(*inputs));
	char **tails = calloc(count, sizeof(char *));
	char **keys = calloc(count, sizeof(char *));
	uint8_t(*digests)[FL_HASH_LEN] = calloc(count, FL_HASH_LEN);
	for (size_t i = 0; i < count; i++) {
		tails[i] = malloc(400);
		int n = snprintf(tails[i], 400,
				 "\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e%" PRIu64
				 "\",\"features\":{\"pad\":\"%0240d\"}",
				 first_tag + i, 0);
		inputs[i].body_tail = tails[i];
		inputs[i].body_tail_len = (size_t)n;
		inputs[i].time_us = 1000000 * (int64_t)(first_tag + i);
		if (key_prefix) {
			keys[i] = malloc(64);
			snprintf(keys[i], 64, "%s-%" PRIu64, key_prefix, first_tag + i);
			inputs[i].producer = producer;
			inputs[i].idempotency_key = keys[i];
			fl_merkle_leaf_hash((const uint8_t *)tails[i], (size_t)n, digests[i]);
			inputs[i].digest = digests[i];
		}
	}
	struct fl_log_batch batch = {inputs, count, results, FL_OK, 0};
	enum fl_status st = fl_log_append(log, &batch, 1, NULL);
	if (st == FL_OK)
		st = batch.status;
	for (size_t i = 0; i < count; i++) {
		free(tails[i]);
		free(keys[i]);
	}
	free(tails);
	free(keys);
	free(digests);
	free(inputs);
	return st;
}

static struct fl_log *open_log(const char *dir, size_t max_map)
{
	struct fl_log *log = NULL;
	struct fl_log_options opts = {.initial_map_bytes = 1 << 20, .max_map_bytes = max_map};
	cr_assert_eq(fl_log_open(dir, &opts, signer, &log), FL_OK);
	return log;
}

Test(eventlog, append_assigns_gapless_seqs_and_stores_exact_bodies)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result results[10];

	cr_assert_eq(fl_log_size(log), 0);
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 1, results), FL_OK);
	cr_assert_eq(results[0].seq, 1);
	cr_assert_eq(append_batch(log, NULL, NULL, 2, 10, results), FL_OK);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(results[i].seq, (uint64_t)(2 + i));
	cr_assert_eq(fl_log_size(log), 11);

	struct fl_log_reader *r;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_size(r), 11);
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_get(r, 5, &e), FL_OK);
	const char *prefix = "{\"seq\":5,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e5\"";
	cr_assert_eq(memcmp(e.body, prefix, strlen(prefix)), 0);
	cr_assert_eq(e.body[e.body_len - 1], '}');
	uint8_t leaf[FL_HASH_LEN];
	fl_merkle_leaf_hash(e.body, e.body_len, leaf);
	cr_assert_eq(memcmp(leaf, e.leaf_hash, FL_HASH_LEN), 0);
	uint8_t pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	/* Format v2: no signature per line; the checkpoint's covers it. */
	cr_assert_null(e.sig);
	cr_assert_str_eq(e.key_id, "");
	cr_assert_eq(fl_log_reader_get(r, 12, &e), FL_ERR_NOT_FOUND);
	cr_assert_eq(fl_log_reader_get(r, 0, &e), FL_ERR_NOT_FOUND);

	/* One checkpoint per commit, each signed over the root at its size. */
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_checkpoint(r, 0, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, 11);
	uint8_t root[FL_HASH_LEN];
	cr_assert_eq(fl_log_reader_root(r, 11, root), FL_OK);
	cr_assert_eq(memcmp(root, cp.root_hash, FL_HASH_LEN), 0);
	cr_assert(fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, &cp, pub));
	cr_assert_not(fl_checkpoint_verify(FL_READ_CHECKPOINT_PREFIX, &cp, pub));
	cr_assert_eq(fl_log_reader_checkpoint(r, 1, &cp), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(r, 5, &cp), FL_ERR_NOT_FOUND);
	cr_assert_eq(fl_log_reader_checkpoint_covering(r, 5, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, 11);
	cr_assert_eq(fl_log_reader_checkpoint_covering(r, 1, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, 1);

	/* Proofs from the store verify against the checkpoint roots. */
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t n;
	for (uint64_t seq = 1; seq <= 11; seq++) {
		cr_assert_eq(fl_log_reader_get(r, seq, &e), FL_OK);
		cr_assert_eq(fl_log_reader_inclusion_proof(r, seq, 11, hashes, &n), FL_OK);
		cr_assert(fl_merkle_verify_inclusion(e.leaf_hash, seq - 1, 11, hashes, n, root));
	}
	uint8_t root1[FL_HASH_LEN];
	cr_assert_eq(fl_log_reader_root(r, 1, root1), FL_OK);
	cr_assert_eq(fl_log_reader_consistency_proof(r, 1, 11, hashes, &n), FL_OK);
	cr_assert(fl_merkle_verify_consistency(1, 11, root1, root, hashes, n));
	fl_log_reader_end(r);

	/* Reopen: size, frontier and checkpoints survive. */
	fl_log_close(log);
	log = open_log(logdir, 0);
	cr_assert_eq(fl_log_size(log), 11);
	cr_assert_eq(append_batch(log, NULL, NULL, 12, 1, results), FL_OK);
	cr_assert_eq(results[0].seq, 12);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(rep.events_checked, 12);
	cr_assert_eq(rep.checkpoints_checked, 3);
	fl_log_close(log);
}

Test(eventlog, log_line_matches_contract_format)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res;
	cr_assert_eq(append_batch(log, NULL, NULL, 7, 1, &res), FL_OK);
	struct fl_log_reader *r;
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 1, &e), FL_OK);
	char *line;
	size_t len;
	cr_assert_eq(fl_log_entry_line(&e, &line, &len), FL_OK);
	cr_assert_eq(strlen(line), len);
	cr_assert_eq(strncmp(line, "{\"seq\":1,\"body\":\"", 17), 0);
	char leaf_hex[65];
	fl_hex_encode(e.leaf_hash, 32, leaf_hex);
	cr_assert_not_null(strstr(line, leaf_hex));
	/* Format v2: exactly seq, body and leaf_hash. */
	char want_tail[100];
	snprintf(want_tail, sizeof(want_tail), "\",\"leaf_hash\":\"%s\"}", leaf_hex);
	cr_assert_eq(strcmp(line + len - strlen(want_tail), want_tail), 0, "%s", line);
	cr_assert_null(strstr(line, "key_id"));
	cr_assert_null(strstr(line, "sig"));
	/* The body decodes back to the stored bytes. */
	const char *b = line + 17;
	const char *end = strchr(b, '"');
	uint8_t *body;
	size_t body_len;
	cr_assert_eq(fl_base64_decode(b, (size_t)(end - b), &body, &body_len), FL_OK);
	cr_assert_eq(body_len, e.body_len);
	cr_assert_eq(memcmp(body, e.body, body_len), 0);
	free(body);
	free(line);
	char *json;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_checkpoint(r, 0, &cp), FL_OK);
	cr_assert_eq(fl_checkpoint_json(&cp, &json), FL_OK);
	cr_assert_eq(strncmp(json, "{\"tree_size\":1,\"root_hash\":\"", 28), 0);
	free(json);
	fl_log_reader_end(r);
	fl_log_close(log);
}

/* Runs a shell command, returns its exit status. */
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

Test(eventlog, signatures_and_checkpoints_verify_with_openssl_cli)
{
	char path[512];
	struct fl_signer *cli_signer;

	/* A key made by the openssl tool, as a deployment would. */
	cr_assert_eq(sh("openssl genpkey -algorithm ed25519 -out '%s/k.pem' 2>/dev/null", tmpdir),
		     0);
	cr_assert_eq(sh("openssl pkey -in '%s/k.pem' -pubout -out '%s/pub.pem'", tmpdir, tmpdir),
		     0);
	snprintf(path, sizeof(path), "%s/k.pem", tmpdir);
	cr_assert_eq(fl_signer_load(path, &cli_signer), FL_OK);
	fl_signer_destroy(signer);
	signer = cli_signer;

	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[3];
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 3, res), FL_OK);
	struct fl_log_reader *r;
	struct fl_log_entry e;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 2, &e), FL_OK);
	snprintf(path, sizeof(path), "%s/body.bin", tmpdir);
	write_file(path, e.body, e.body_len);
	/* leaf hash = sha256(0x00 || body), by stock tools */
	cr_assert_eq(sh("cd '%s' && (printf '\\000'; cat body.bin) | openssl dgst -sha256 -binary "
			"> leaf.bin",
			tmpdir),
		     0);
	char leaf_hex[65];
	fl_hex_encode(e.leaf_hash, 32, leaf_hex);
	cr_assert_eq(
	    sh("cd '%s' && test \"$(od -An -tx1 leaf.bin | tr -d ' \\n')\" = %s", tmpdir, leaf_hex),
	    0);
	/* The line is proven by inclusion: seq 2 of 3 is leaf index 1; its
	 * proof is [leaf 0, leaf 2]: root = H(1 || H(1 || leaf0 || leaf1) || leaf2). */
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t n_hashes;
	cr_assert_eq(fl_log_reader_inclusion_proof(r, 2, 3, hashes, &n_hashes), FL_OK);
	cr_assert_eq(n_hashes, 2);
	snprintf(path, sizeof(path), "%s/p0.bin", tmpdir);
	write_file(path, hashes[0], FL_HASH_LEN);
	snprintf(path, sizeof(path), "%s/p1.bin", tmpdir);
	write_file(path, hashes[1], FL_HASH_LEN);
	cr_assert_eq(sh("cd '%s' && (printf '\\001'; cat p0.bin leaf.bin) | openssl dgst -sha256 "
			"-binary > n1.bin && (printf '\\001'; cat n1.bin p1.bin) | openssl dgst "
			"-sha256 -binary > root.bin",
			tmpdir),
		     0);

	/* The checkpoint text and its signature. */
	cr_assert_eq(fl_log_reader_checkpoint(r, 0, &cp), FL_OK);
	char text[256];
	size_t len = fl_checkpoint_text(FL_CHECKPOINT_PREFIX, &cp, text, sizeof(text));
	char root_hex[65];
	fl_hex_encode(cp.root_hash, 32, root_hex);
	char want[256];
	snprintf(want, sizeof(want), "fledger-checkpoint-v1\n3\n%s\n%s\n", root_hex, cp.timestamp);
	cr_assert_str_eq(text, want);
	cr_assert_eq(
	    sh("cd '%s' && test \"$(od -An -tx1 root.bin | tr -d ' \\n')\" = %s", tmpdir, root_hex),
	    0);
	snprintf(path, sizeof(path), "%s/cp.txt", tmpdir);
	write_file(path, text, len);
	snprintf(path, sizeof(path), "%s/cpsig.bin", tmpdir);
	write_file(path, cp.sig, FL_SIG_LEN);
	cr_assert_eq(sh("cd '%s' && openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in "
			"cp.txt -sigfile cpsig.bin >/dev/null",
			tmpdir),
		     0);
	/* A flipped signature bit fails with the same tool. */
	cp.sig[10] ^= 1;
	write_file(path, cp.sig, FL_SIG_LEN);
	cr_assert_neq(sh("cd '%s' && openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in "
			 "cp.txt -sigfile cpsig.bin >/dev/null 2>&1",
			 tmpdir),
		      0);
	fl_log_reader_end(r);
	fl_log_close(log);
}

Test(eventlog, idempotency_keys_are_permanent)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result first[3], again[3];

	cr_assert_eq(append_batch(log, "p1", "k", 1, 3, first), FL_OK);
	cr_assert_eq(fl_log_size(log), 3);
	/* Same keys, same events: the original results, marked duplicate. */
	cr_assert_eq(append_batch(log, "p1", "k", 1, 3, again), FL_OK);
	for (int i = 0; i < 3; i++) {
		cr_assert(again[i].duplicate);
		cr_assert_eq(again[i].seq, first[i].seq);
		cr_assert_eq(memcmp(again[i].leaf_hash, first[i].leaf_hash, 32), 0);
	}
	cr_assert_eq(fl_log_size(log), 3);
	/* Another producer has its own key space. */
	cr_assert_eq(append_batch(log, "p2", "k", 1, 1, again), FL_OK);
	cr_assert_not(again[0].duplicate);
	cr_assert_eq(again[0].seq, 4);

	/* Same key, other event: conflict; nothing of the batch is written. */
	const char *tail = "\"kind\":\"feature\",\"other\":1";
	uint8_t digest[32] = {1};
	struct fl_log_input in[2] = {
	    {.body_tail = "\"kind\":\"feature\",\"fresh\":1", .body_tail_len = 26, .time_us = 1},
	    {.body_tail = tail,
	     .body_tail_len = strlen(tail),
	     .time_us = 1,
	     .producer = "p1",
	     .idempotency_key = "k-2",
	     .digest = digest},
	};
	struct fl_log_result res[2];
	struct fl_log_batch batch = {in, 2, res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	cr_assert_eq(batch.status, FL_ERR_CONFLICT);
	cr_assert_eq(batch.conflict_index, 1);
	cr_assert_eq(fl_log_size(log), 4);

	/* The same within one batch: a repeat is a duplicate of the first. */
	uint8_t d2[32] = {2};
	struct fl_log_input twice[2] = {
	    {.body_tail = tail,
	     .body_tail_len = strlen(tail),
	     .producer = "p1",
	     .idempotency_key = "new",
	     .digest = d2},
	    {.body_tail = tail,
	     .body_tail_len = strlen(tail),
	     .producer = "p1",
	     .idempotency_key = "new",
	     .digest = d2},
	};
	batch = (struct fl_log_batch){twice, 2, res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	cr_assert_eq(batch.status, FL_OK);
	cr_assert_eq(res[0].seq, 5);
	cr_assert_not(res[0].duplicate);
	cr_assert_eq(res[1].seq, 5);
	cr_assert(res[1].duplicate);

	/* Across a close and reopen. */
	fl_log_close(log);
	log = open_log(logdir, 0);
	cr_assert_eq(append_batch(log, "p1", "k", 1, 3, again), FL_OK);
	for (int i = 0; i < 3; i++) {
		cr_assert(again[i].duplicate);
		cr_assert_eq(again[i].seq, first[i].seq);
	}
	batch = (struct fl_log_batch){in, 2, res, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
	cr_assert_eq(batch.status, FL_ERR_CONFLICT);
	cr_assert_eq(fl_log_size(log), 5);
	fl_log_close(log);
}

Test(eventlog, group_commit_isolates_a_conflicting_batch)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result r0[1];
	cr_assert_eq(append_batch(log, "p", "k", 1, 1, r0), FL_OK);

	const char *t1 = "\"a\":1", *t2 = "\"b\":2", *t3 = "\"c\":3";
	uint8_t other[32] = {9};
	struct fl_log_input a[1] = {{.body_tail = t1, .body_tail_len = 5}};
	struct fl_log_input b[1] = {{.body_tail = t2,
				     .body_tail_len = 5,
				     .producer = "p",
				     .idempotency_key = "k-1",
				     .digest = other}};
	struct fl_log_input c[1] = {{.body_tail = t3, .body_tail_len = 5}};
	struct fl_log_result ra, rb, rc;
	struct fl_log_batch batches[3] = {
	    {a, 1, &ra, FL_OK, 0}, {b, 1, &rb, FL_OK, 0}, {c, 1, &rc, FL_OK, 0}};
	uint64_t size = 0;
	cr_assert_eq(fl_log_append(log, batches, 3, &size), FL_OK);
	cr_assert_eq(batches[0].status, FL_OK);
	cr_assert_eq(batches[1].status, FL_ERR_CONFLICT);
	cr_assert_eq(batches[2].status, FL_OK);
	cr_assert_eq(ra.seq, 2);
	cr_assert_eq(rc.seq, 3);
	cr_assert_eq(size, 3);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	fl_log_close(log);
}

/* One input of a test batch with an idempotency key. */
static struct fl_log_input keyed(const char *tail, const char *producer, const char *key,
				 const uint8_t *digest)
{
	return (struct fl_log_input){.body_tail = tail,
				     .body_tail_len = strlen(tail),
				     .time_us = 1,
				     .producer = producer,
				     .idempotency_key = key,
				     .digest = digest};
}

/*
 * Requests that race each other land in one group commit: a key that an
 * earlier batch of the same commit is about to write counts like a committed
 * key (one event; the same digest is a duplicate of it, another is a
 * conflict), and a batch refused for a conflict leaves none of its keys
 * behind for the batches after it.
 */
Test(eventlog, keys_in_flight_in_one_group_commit_count_like_committed_keys)
{
	struct fl_log *log = open_log(logdir, 0);
	uint8_t d[32] = {7}, other[32] = {8}, dx[32] = {9}, dy[32] = {10};
	const char *t = "\"kind\":\"feature\",\"n\":1", *u = "\"kind\":\"feature\",\"n\":2";
	struct fl_log_input a[1] = {keyed(t, "p", "race", d)};
	struct fl_log_input b[1] = {keyed(t, "p", "race", d)};
	struct fl_log_input c[1] = {keyed(u, "p", "race", other)};
	struct fl_log_input e[1] = {keyed(t, "q", "race", d)}; /* another producer */
	/* x is new, y conflicts with "race": the batch is refused whole... */
	struct fl_log_input f[2] = {keyed(t, "p", "x", dx), keyed(u, "p", "race", dy)};
	/* ...so x is still unused for the batch after it. */
	struct fl_log_input g[2] = {keyed(u, "p", "x", dx), keyed(t, "p", "race", d)};
	struct fl_log_input h[1] = {keyed(u, "p", "x", dx)};
	struct fl_log_result ra, rb, rc, re, rf[2], rg[2], rh;
	struct fl_log_batch batches[] = {{a, 1, &ra, FL_OK, 0}, {b, 1, &rb, FL_OK, 0},
					 {c, 1, &rc, FL_OK, 0}, {e, 1, &re, FL_OK, 0},
					 {f, 2, rf, FL_OK, 0},	{g, 2, rg, FL_OK, 0},
					 {h, 1, &rh, FL_OK, 0}};
	uint64_t size = 0;
	cr_assert_eq(fl_log_append(log, batches, 7, &size), FL_OK);
	cr_assert_eq(batches[0].status, FL_OK);
	cr_assert_eq(ra.seq, 1);
	cr_assert_not(ra.duplicate);
	cr_assert_eq(batches[1].status, FL_OK);
	cr_assert_eq(rb.seq, 1);
	cr_assert(rb.duplicate);
	cr_assert_eq(memcmp(rb.leaf_hash, ra.leaf_hash, 32), 0);
	cr_assert_eq(batches[2].status, FL_ERR_CONFLICT);
	cr_assert_eq(batches[3].status, FL_OK);
	cr_assert_eq(re.seq, 2);
	cr_assert_not(re.duplicate);
	cr_assert_eq(batches[4].status, FL_ERR_CONFLICT);
	cr_assert_eq(batches[4].conflict_index, 1);
	cr_assert_eq(batches[5].status, FL_OK);
	cr_assert_eq(rg[0].seq, 3);
	cr_assert_not(rg[0].duplicate);
	cr_assert_eq(rg[1].seq, 1);
	cr_assert(rg[1].duplicate);
	cr_assert_eq(batches[6].status, FL_OK);
	cr_assert_eq(rh.seq, 3);
	cr_assert(rh.duplicate);
	cr_assert_eq(size, 3);
	cr_assert_eq(fl_log_size(log), 3);

	/* The next group commit sees them as committed keys. */
	struct fl_log_input a2[1] = {keyed(t, "p", "race", d)};
	struct fl_log_input c2[1] = {keyed(u, "p", "race", other)};
	struct fl_log_result ra2, rc2;
	struct fl_log_batch next[] = {{a2, 1, &ra2, FL_OK, 0}, {c2, 1, &rc2, FL_OK, 0}};
	cr_assert_eq(fl_log_append(log, next, 2, &size), FL_OK);
	cr_assert_eq(next[0].status, FL_OK);
	cr_assert_eq(ra2.seq, 1);
	cr_assert(ra2.duplicate);
	cr_assert_eq(next[1].status, FL_ERR_CONFLICT);
	cr_assert_eq(size, 3);

	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	fl_log_close(log);
}

/* A key committed just before a kill -9 is a duplicate after the restart. */
Test(eventlog, a_key_survives_sigkill_right_after_its_commit)
{
	uint8_t d[32] = {5};
	const char *t = "\"kind\":\"feature\",\"n\":1", *u = "\"kind\":\"feature\",\"n\":2";
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct fl_log *log = NULL;
		struct fl_log_options opts = {.initial_map_bytes = 1 << 20};
		struct fl_log_input in[1] = {keyed(t, "p", "k", d)};
		struct fl_log_result r;
		struct fl_log_batch b = {in, 1, &r, FL_OK, 0};
		if (fl_log_open(logdir, &opts, signer, &log) != FL_OK ||
		    fl_log_append(log, &b, 1, NULL) != FL_OK || b.status != FL_OK || r.seq != 1)
			_exit(3);
		raise(SIGKILL);
		_exit(4);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);

	struct fl_log *log = open_log(logdir, 0);
	cr_assert_eq(fl_log_size(log), 1);
	struct fl_log_input same[1] = {keyed(t, "p", "k", d)};
	uint8_t other[32] = {6};
	struct fl_log_input changed[1] = {keyed(u, "p", "k", other)};
	struct fl_log_result rs, rc;
	struct fl_log_batch batches[] = {{same, 1, &rs, FL_OK, 0}, {changed, 1, &rc, FL_OK, 0}};
	cr_assert_eq(fl_log_append(log, batches, 2, NULL), FL_OK);
	cr_assert_eq(batches[0].status, FL_OK);
	cr_assert_eq(rs.seq, 1);
	cr_assert(rs.duplicate);
	cr_assert_eq(batches[1].status, FL_ERR_CONFLICT);
	cr_assert_eq(fl_log_size(log), 1);
	fl_log_close(log);
}

Test(eventlog, map_grows_by_itself)
{
	struct fl_log *log = open_log(logdir, 0); /* starts at 1 MiB */
	struct fl_log_result *res = calloc(1000, sizeof(*res));
	for (int i = 0; i < 20; i++)
		cr_assert_eq(append_batch(log, NULL, NULL, (uint64_t)i * 1000 + 1, 1000, res),
			     FL_OK);
	cr_assert_eq(fl_log_size(log), 20000);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 19990, 0, &rep), FL_OK, "%s", rep.reason);
	free(res);
	fl_log_close(log);
}

/* True when the last len bytes of the file at path are all zero. */
static bool ends_in_zeros(const char *path, size_t len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	bool zeros = fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size > len;
	char *buf = malloc(len);
	zeros = zeros && pread(fd, buf, len, st.st_size - (off_t)len) == (ssize_t)len;
	for (size_t i = 0; zeros && i < len; i++)
		zeros = buf[i] == 0;
	free(buf);
	if (fd >= 0)
		close(fd);
	return zeros;
}

/*
 * data.mdb is grown ahead in zero-filled steps (eventlog/filegrow.h): a file
 * longer than LMDB's last page reopens, takes appends and verifies.
 */
Test(eventlog, a_file_grown_ahead_reopens_appends_and_verifies)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/data.mdb", logdir);
	/* The file never grows past the map: give it room. */
	struct fl_log *log = NULL;
	struct fl_log_options opts = {.initial_map_bytes = 16 << 20};
	cr_assert_eq(fl_log_open(logdir, &opts, signer, &log), FL_OK);
	struct fl_log_result *res = calloc(1000, sizeof(*res));
	/* A large commit pays for its own pages; small ones get the margin. */
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 950, res), FL_OK);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(append_batch(log, NULL, NULL, 951 + (uint64_t)i * 10, 10, res), FL_OK);
	/* The margin is written by a thread: give it time. */
	bool grown = false;
	for (int i = 0; i < 500 && !grown; i++) {
		grown = ends_in_zeros(path, 128 * 1024); /* at least half the margin */
		usleep(10000);
	}
	cr_assert(grown, "data.mdb does not end in a zero-filled margin");
	fl_log_close(log);

	log = open_log(logdir, 0);
	cr_assert_eq(fl_log_size(log), 1000);
	for (int i = 1; i < 10; i++)
		cr_assert_eq(append_batch(log, NULL, NULL, (uint64_t)i * 1000 + 1, 1000, res),
			     FL_OK);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(rep.events_checked, 10000);
	free(res);
	fl_log_close(log);
}

Test(eventlog, capped_map_fails_cleanly_and_recovers_when_raised)
{
	struct fl_log *log = open_log(logdir, 2 << 20);
	struct fl_log_result *res = calloc(1000, sizeof(*res));
	enum fl_status st = FL_OK;
	uint64_t tag = 1;
	while (st == FL_OK && tag < 1000000) {
		st = append_batch(log, NULL, NULL, tag, 500, res);
		tag += 500;
	}
	cr_assert_eq(st, FL_ERR_FULL);
	uint64_t size = fl_log_size(log);
	cr_assert_gt(size, 0);
	/* Nothing of the failed batch is there and the log still verifies. */
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(rep.events_checked, size);
	/* A single small event still does not fit in a map that is full... */
	cr_assert_eq(append_batch(log, NULL, NULL, tag, 500, res), FL_ERR_FULL);
	cr_assert_eq(fl_log_size(log), size);
	fl_log_close(log);

	/* ...and appends work again once the cap is raised. */
	log = open_log(logdir, 64 << 20);
	cr_assert_eq(fl_log_size(log), size);
	cr_assert_eq(append_batch(log, NULL, NULL, tag, 500, res), FL_OK);
	cr_assert_eq(res[0].seq, size + 1);
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	free(res);
	fl_log_close(log);
}

/*
 * The child appends batches forever and writes the last seq of each
 * committed batch to the pipe; the parent kills it at a random moment.
 */
static void crash_child(int fd)
{
	struct fl_log *log = NULL;
	struct fl_log_result res[50];
	struct fl_log_options opts = {.initial_map_bytes = 1 << 20};
	if (fl_log_open(logdir, &opts, signer, &log) != FL_OK)
		_exit(2);
	for (uint64_t tag = fl_log_size(log) + 1;; tag += 50) {
		size_t count = 1 + (size_t)(tag % 50);
		if (append_batch(log, NULL, NULL, tag, count, res) != FL_OK)
			_exit(3);
		uint64_t last = res[count - 1].seq;
		if (write(fd, &last, sizeof(last)) != sizeof(last))
			_exit(4);
	}
}

Test(eventlog, survives_sigkill_at_random_moments)
{
	uint64_t acknowledged = 0;
	srand(12345);
	for (int round = 0; round < 50; round++) {
		int fds[2];
		cr_assert_eq(pipe(fds), 0);
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			close(fds[0]);
			crash_child(fds[1]);
		}
		close(fds[1]);
		usleep(2000 + (useconds_t)(rand() % 30000));
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		cr_assert(WIFSIGNALED(status), "child exited on its own: %d", WEXITSTATUS(status));
		uint64_t seq;
		while (read(fds[0], &seq, sizeof(seq)) == sizeof(seq))
			acknowledged = seq > acknowledged ? seq : acknowledged;
		close(fds[0]);

		struct fl_log *log = open_log(logdir, 0);
		cr_assert_geq(fl_log_size(log), acknowledged, "round %d lost acknowledged events",
			      round);
		struct fl_log_verify_report rep;
		/* Verify the whole log now and then, the recent part each round. */
		uint64_t from = round % 10 == 9 ? 1 : (acknowledged > 200 ? acknowledged - 200 : 1);
		cr_assert_eq(fl_log_verify(log, from, 0, &rep), FL_OK, "round %d: %s", round,
			     rep.reason);
		fl_log_close(log);
	}
	cr_assert_gt(acknowledged, 0);
}

/* Finds needle in the file and flips one bit of the byte at offset delta. */
static bool flip_in_file(const char *path, const char *needle, size_t delta)
{
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return false;
	struct stat st;
	fstat(fd, &st);
	char *data = malloc((size_t)st.st_size);
	bool done = false;
	if (read(fd, data, (size_t)st.st_size) == st.st_size) {
		char *hit = memmem(data, (size_t)st.st_size, needle, strlen(needle));
		if (hit) {
			hit[delta] ^= 0x01;
			done = pwrite(fd, hit + delta, 1, hit + delta - data) == 1;
		}
	}
	free(data);
	close(fd);
	return done;
}

Test(eventlog, tampered_event_fails_verification_and_names_its_seq)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[100];
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 100, res), FL_OK);
	fl_log_close(log);

	char copy[400], path[500];
	snprintf(copy, sizeof(copy), "%s/copy", tmpdir);
	cr_assert_eq(sh("cp -r '%s' '%s'", logdir, copy), 0);
	snprintf(path, sizeof(path), "%s/data.mdb", copy);
	/* Change the entity id inside event 37's body: "e37" -> "e27"... */
	cr_assert(flip_in_file(path, "\"entity_id\":\"e37\"", 14));
	log = open_log(copy, 0);
	struct fl_log_verify_report rep;
	enum fl_status st = fl_log_verify(log, 0, 0, &rep);
	cr_assert_eq(st, FL_ERR_CORRUPT);
	cr_assert_eq(rep.bad_seq, 37, "reason: %s", rep.reason);
	cr_assert_not_null(strstr(rep.reason, "leaf hash"));
	fl_log_close(log);
}

Test(eventlog, key_rotation_keeps_old_events_verifiable)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[5], rot;
	struct fl_signer *next;
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 5, res), FL_OK);
	cr_assert_eq(fl_signer_generate(&next), FL_OK);
	cr_assert_eq(fl_log_rotate_key(log, next, fl_time_now_us(), &rot), FL_OK);
	cr_assert_eq(rot.seq, 6);
	cr_assert_eq(append_batch(log, NULL, NULL, 6, 2, res), FL_OK);

	struct fl_log_reader *r;
	struct fl_log_entry e;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 6, &e), FL_OK);
	cr_assert_null(e.sig); /* the checkpoint of its commit vouches for it */
	cr_assert_not_null(memmem(e.body, e.body_len, "\"kind\":\"key\"", 12));
	cr_assert_not_null(memmem(e.body, e.body_len, fl_signer_key_id(next), 16));
	cr_assert_eq(fl_log_reader_get(r, 7, &e), FL_OK);
	cr_assert_null(e.sig);
	struct fl_checkpoint cp;
	/* The old key signs the checkpoint that covers the key event. */
	cr_assert_eq(fl_log_reader_checkpoint(r, 6, &cp), FL_OK);
	cr_assert_str_eq(cp.key_id, fl_signer_key_id(signer));
	cr_assert_eq(fl_log_reader_checkpoint(r, 8, &cp), FL_OK);
	cr_assert_str_eq(cp.key_id, fl_signer_key_id(next));
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_log_reader_key(r, fl_signer_key_id(signer), pub), FL_OK);
	cr_assert_eq(fl_log_reader_key(r, fl_signer_key_id(next), pub), FL_OK);
	fl_log_reader_end(r);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(rep.events_checked, 8);
	fl_log_close(log);

	/* The old key may no longer write; the new one may. */
	struct fl_log *reopened = NULL;
	cr_assert_eq(fl_log_open(logdir, NULL, signer, &reopened), FL_ERR_CONFLICT);
	cr_assert_eq(fl_log_open(logdir, NULL, next, &reopened), FL_OK);
	fl_log_close(reopened);
	fl_signer_destroy(next);
}

Test(eventlog, new_key_writes_right_after_a_rotation_and_the_key_event_parses)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[3], rot;
	struct fl_signer *next;
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 3, res), FL_OK);
	cr_assert_eq(fl_signer_generate(&next), FL_OK);
	cr_assert_eq(fl_log_rotate_key(log, next, fl_time_now_us(), &rot), FL_OK);
	fl_log_close(log);

	/* The latest checkpoint is the old key's, yet the new key is current. */
	struct fl_log *reopened = NULL;
	cr_assert_eq(fl_log_open(logdir, NULL, signer, &reopened), FL_ERR_CONFLICT);
	struct fl_signer *other;
	cr_assert_eq(fl_signer_generate(&other), FL_OK);
	cr_assert_eq(fl_log_open(logdir, NULL, other, &reopened), FL_ERR_CONFLICT);
	fl_signer_destroy(other);
	cr_assert_eq(fl_log_open(logdir, NULL, next, &reopened), FL_OK);

	struct fl_log_reader *r;
	struct fl_log_entry e;
	uint8_t pub[FL_PUBKEY_LEN], expect[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN];
	cr_assert_eq(fl_log_reader_begin(reopened, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, rot.seq, &e), FL_OK);
	cr_assert_eq(fl_log_key_event_parse(e.body, e.body_len, pub, previous), FL_OK);
	fl_signer_public_key(next, expect);
	cr_assert_arr_eq(pub, expect, FL_PUBKEY_LEN);
	cr_assert_str_eq(previous, fl_signer_key_id(signer));
	/* Not a key event; a key event cut short. */
	cr_assert_eq(fl_log_reader_get(r, 1, &e), FL_OK);
	cr_assert_eq(fl_log_key_event_parse(e.body, e.body_len, pub, previous), FL_ERR_NOT_FOUND);
	cr_assert_eq(fl_log_reader_get(r, rot.seq, &e), FL_OK);
	cr_assert_eq(fl_log_key_event_parse(e.body, e.body_len - 2, pub, previous), FL_ERR_INVALID);
	fl_log_reader_end(r);
	cr_assert_eq(append_batch(reopened, NULL, NULL, 5, 1, res), FL_OK);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(reopened, 0, 0, &rep), FL_OK, "%s", rep.reason);
	fl_log_close(reopened);
	fl_signer_destroy(next);
}

struct collect {
	uint64_t *seqs;
	uint64_t *n;
};

static enum fl_status collect_fn(void *ctx, const struct fl_log_entry *e)
{
	struct collect *c = ctx;
	c->seqs[(*c->n)++] = e->seq;
	return FL_OK;
}

Test(eventlog, time_index_and_counters)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[10];
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 10, res), FL_OK); /* times 1..10 s */
	struct fl_log_reader *r;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	uint64_t seqs[10], n = 0;
	struct collect c = {seqs, &n};
	cr_assert_eq(fl_log_reader_time_range(r, 3000000, 6000000, collect_fn, &c), FL_OK);
	cr_assert_eq(n, 4);
	cr_assert_eq(seqs[0], 3);
	cr_assert_eq(seqs[3], 6);
	fl_log_reader_end(r);

	uint64_t v = 99;
	cr_assert_eq(fl_log_counter_get(log, "published_seq", &v), FL_OK);
	cr_assert_eq(v, 0);
	cr_assert_eq(fl_log_counter_set(log, "published_seq", 42), FL_OK);
	fl_log_close(log);
	log = open_log(logdir, 0);
	cr_assert_eq(fl_log_counter_get(log, "published_seq", &v), FL_OK);
	cr_assert_eq(v, 42);
	fl_log_close(log);
}

struct reader_arg {
	struct fl_log *log;
	volatile bool *stop;
	uint64_t checks;
	bool failed;
};

static void *reader_thread(void *opaque)
{
	struct reader_arg *arg = opaque;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	while (!*arg->stop) {
		struct fl_log_reader *r;
		struct fl_checkpoint cp;
		struct fl_log_entry e;
		size_t n;
		if (fl_log_reader_begin(arg->log, &r) != FL_OK) {
			arg->failed = true;
			break;
		}
		uint64_t size = fl_log_reader_size(r);
		if (size > 0) {
			uint64_t seq = 1 + (uint64_t)rand() % size;
			if (fl_log_reader_checkpoint(r, 0, &cp) != FL_OK || cp.tree_size != size ||
			    fl_log_reader_get(r, seq, &e) != FL_OK ||
			    fl_log_reader_inclusion_proof(r, seq, size, hashes, &n) != FL_OK ||
			    !fl_merkle_verify_inclusion(e.leaf_hash, seq - 1, size, hashes, n,
							cp.root_hash))
				arg->failed = true;
			arg->checks++;
		}
		fl_log_reader_end(r);
	}
	return NULL;
}

Test(eventlog, readers_see_consistent_snapshots_during_appends)
{
	struct fl_log *log = open_log(logdir, 0);
	volatile bool stop = false;
	struct reader_arg args[3];
	pthread_t threads[3];
	for (int i = 0; i < 3; i++) {
		args[i] = (struct reader_arg){log, &stop, 0, false};
		pthread_create(&threads[i], NULL, reader_thread, &args[i]);
	}
	struct fl_log_result res[20];
	for (int i = 0; i < 200; i++)
		cr_assert_eq(append_batch(log, NULL, NULL, (uint64_t)i * 20 + 1, 20, res), FL_OK);
	stop = true;
	for (int i = 0; i < 3; i++) {
		pthread_join(threads[i], NULL);
		cr_assert_not(args[i].failed);
		cr_assert_gt(args[i].checks, 0);
	}
	fl_log_close(log);
}

Test(eventlog, replica_accepts_only_what_hashes_to_the_checkpoint)
{
	struct fl_log *origin = open_log(logdir, 0);
	struct fl_log_result res[30];
	cr_assert_eq(append_batch(origin, NULL, NULL, 1, 10, res), FL_OK);
	cr_assert_eq(append_batch(origin, NULL, NULL, 11, 20, res), FL_OK);

	char dir[400];
	snprintf(dir, sizeof(dir), "%s/replica", tmpdir);
	struct fl_log *replica = NULL;
	struct fl_log_options ropts = {.replica = true};
	cr_assert_eq(fl_log_open(dir, &ropts, NULL, &replica), FL_OK);
	uint8_t pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	cr_assert_eq(fl_log_replica_add_key(replica, pub), FL_OK);

	struct fl_log_reader *r;
	cr_assert_eq(fl_log_reader_begin(origin, &r), FL_OK);
	struct fl_log_entry entries[30];
	for (uint64_t seq = 1; seq <= 30; seq++)
		cr_assert_eq(fl_log_reader_get(r, seq, &entries[seq - 1]), FL_OK);
	struct fl_checkpoint cp10, cp30;
	cr_assert_eq(fl_log_reader_checkpoint(r, 10, &cp10), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(r, 30, &cp30), FL_OK);

	/* Events that stop short of the checkpoint's size are refused. */
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_replicate(replica, entries, 9, &cp10, &rep), FL_ERR_CORRUPT);
	cr_assert_eq(fl_log_size(replica), 0);
	cr_assert_eq(fl_log_replicate(replica, entries, 10, &cp10, &rep), FL_OK, "%s", rep.reason);
	cr_assert_eq(fl_log_size(replica), 10);

	/* A body changed in transit (with a matching leaf hash) breaks the root. */
	struct fl_log_entry forged[20];
	memcpy(forged, entries + 10, sizeof(forged));
	char *body = malloc(forged[5].body_len);
	memcpy(body, forged[5].body, forged[5].body_len);
	body[forged[5].body_len - 3] ^= 1;
	uint8_t leaf[FL_HASH_LEN];
	fl_merkle_leaf_hash((uint8_t *)body, forged[5].body_len, leaf);
	forged[5].body = (uint8_t *)body;
	forged[5].leaf_hash = leaf;
	cr_assert_eq(fl_log_replicate(replica, forged, 20, &cp30, &rep), FL_ERR_CORRUPT);
	cr_assert_eq(rep.bad_checkpoint, 30);
	/* ...and a body that does not match its leaf hash names its seq. */
	forged[5].leaf_hash = entries[15].leaf_hash;
	cr_assert_eq(fl_log_replicate(replica, forged, 20, &cp30, &rep), FL_ERR_CORRUPT);
	cr_assert_eq(rep.bad_seq, 16);
	cr_assert_eq(fl_log_size(replica), 10);
	free(body);

	cr_assert_eq(fl_log_replicate(replica, entries + 10, 20, &cp30, &rep), FL_OK, "%s",
		     rep.reason);
	fl_log_reader_end(r);

	/* The replica serves the same lines, checkpoints and proofs, and verifies. */
	cr_assert_eq(fl_log_verify(replica, 0, 0, &rep), FL_OK, "%s", rep.reason);
	struct fl_log_reader *rr;
	cr_assert_eq(fl_log_reader_begin(replica, &rr), FL_OK);
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_checkpoint(rr, 0, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, cp30.tree_size);
	cr_assert_eq(memcmp(cp.root_hash, cp30.root_hash, FL_HASH_LEN), 0);
	cr_assert_eq(memcmp(cp.sig, cp30.sig, FL_SIG_LEN), 0);
	cr_assert_str_eq(cp.timestamp, cp30.timestamp);
	cr_assert_str_eq(cp.key_id, cp30.key_id);
	fl_log_reader_end(rr);
	/* A replica cannot sign appends of its own. */
	cr_assert_eq(append_batch(replica, NULL, NULL, 99, 1, res), FL_ERR_INVALID);
	fl_log_close(replica);
	fl_log_close(origin);
}

Test(eventlog, a_read_only_open_sees_the_whole_log)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[5];
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 5, res), FL_OK);

	/* Another reader of the same directory, without a key. */
	struct fl_log *reader_log = NULL;
	cr_assert_eq(fl_log_open(logdir, NULL, NULL, &reader_log), FL_OK);
	cr_assert_eq(fl_log_size(reader_log), 5);
	struct fl_log_reader *r;
	struct fl_log_entry e;
	struct fl_checkpoint cp;
	cr_assert_eq(fl_log_reader_begin(reader_log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_get(r, 5, &e), FL_OK);
	cr_assert_eq(fl_log_reader_checkpoint(r, 0, &cp), FL_OK);
	cr_assert_eq(cp.tree_size, 5);
	fl_log_reader_end(r);
	struct fl_log_verify_report rep;
	cr_assert_eq(fl_log_verify(reader_log, 0, 0, &rep), FL_OK, "%s", rep.reason);
	/* It cannot write. */
	cr_assert_eq(append_batch(reader_log, NULL, NULL, 6, 1, res), FL_ERR_INVALID);
	fl_log_close(reader_log);
	fl_log_close(log);
}

/* Deletes the stored Merkle node (level, index) behind the log's back. */
static void delete_node(const char *dir, unsigned level, uint64_t index)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t keybuf[9];
	cr_assert_eq(mdb_env_create(&env), MDB_SUCCESS);
	cr_assert_eq(mdb_env_set_maxdbs(env, 16), MDB_SUCCESS);
	cr_assert_eq(mdb_env_set_mapsize(env, 1 << 20), MDB_SUCCESS);
	cr_assert_eq(mdb_env_open(env, dir, MDB_NOTLS, 0600), MDB_SUCCESS);
	cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), MDB_SUCCESS);
	cr_assert_eq(mdb_dbi_open(txn, "nodes", 0, &dbi), MDB_SUCCESS);
	keybuf[0] = (uint8_t)level;
	fl_put_be64(keybuf + 1, index);
	MDB_val key = {sizeof(keybuf), keybuf};
	cr_assert_eq(mdb_del(txn, dbi, &key, NULL), MDB_SUCCESS);
	cr_assert_eq(mdb_txn_commit(txn), MDB_SUCCESS);
	mdb_env_close(env);
}

/*
 * The fork check: a root that cannot be read is "cannot tell", never "same"
 * (query-svc's sync thread would otherwise take a forked log for its own).
 */
Test(eventlog, root_check_that_cannot_read_never_says_same)
{
	struct fl_log *log = open_log(logdir, 0);
	struct fl_log_result res[5];
	cr_assert_eq(append_batch(log, NULL, NULL, 1, 5, res), FL_OK);
	struct fl_log_reader *r;
	uint8_t root2[FL_HASH_LEN], root5[FL_HASH_LEN], other[FL_HASH_LEN];
	bool same = true;
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	cr_assert_eq(fl_log_reader_root(r, 2, root2), FL_OK);
	cr_assert_eq(fl_log_reader_root(r, 5, root5), FL_OK);
	memcpy(other, root2, FL_HASH_LEN);
	other[7] ^= 0x20;
	cr_assert_eq(fl_log_reader_root_equals(r, 2, root2, &same), FL_OK);
	cr_assert(same);
	cr_assert_eq(fl_log_reader_root_equals(r, 5, root5, &same), FL_OK);
	cr_assert(same);
	cr_assert_eq(fl_log_reader_root_equals(r, 2, other, &same), FL_OK);
	cr_assert_not(same, "a different root must read as a fork");
	same = true;
	/* Beyond the snapshot: not readable. */
	cr_assert_neq(fl_log_reader_root_equals(r, 6, root5, &same), FL_OK);
	cr_assert_not(same);
	same = true;
	cr_assert_neq(fl_log_reader_root_equals(NULL, 2, root2, &same), FL_OK);
	cr_assert_not(same);
	fl_log_reader_end(r);
	fl_log_close(log);

	/* A damaged replica: the node holding the root at size 2 is gone. */
	delete_node(logdir, 1, 0);
	log = open_log(logdir, 0);
	cr_assert_eq(fl_log_reader_begin(log, &r), FL_OK);
	same = true;
	enum fl_status st = fl_log_reader_root_equals(r, 2, root2, &same);
	cr_assert_neq(st, FL_OK, "a missing node must be a read error");
	cr_assert_not(same, "an unreadable root must not read as the same root");
	/* What can still be read still compares. */
	cr_assert_eq(fl_log_reader_root_equals(r, 5, root5, &same), FL_OK);
	cr_assert(same);
	fl_log_reader_end(r);
	fl_log_close(log);
}
