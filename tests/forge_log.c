/*
 * A test tool: forges a key rotation the way an impostor holding only a new
 * key could. It copies a real log (every line and every checkpoint,
 * through the replica API) and appends a "key" event that names the new key
 * with the real key as the previous one, signed (line and checkpoint) by the
 * new key itself; both keys are recorded, so a command-svc opened on the
 * copy with the new key lists them in GET /v1/keys. No trusted key vouches
 * for that event: a verifier must refuse it.
 *
 *   forge_log SRC_DIR DST_DIR NEW_KEY_PEM
 *
 * Unit tests include this file with FORGE_NO_MAIN for forge_rotation.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/eventlog.h"
#include "eventlog/merkle.h"
#include "eventlog/signer.h"
#include "fledger/util.h"

static enum fl_status copy_key(void *ctx, const char *key_id, const uint8_t pub[FL_PUBKEY_LEN])
{
	(void)key_id;
	return fl_log_replica_add_key(ctx, pub);
}

/* Copies src (opened by the caller) into a new log at dst_dir and appends the forged event. */
static enum fl_status forge_rotation(struct fl_log *src, const char *dst_dir,
				     const struct fl_signer *new_signer, uint64_t *ret_seq)
{
	struct fl_log_options options = {.replica = true};
	struct fl_log *dst = NULL;
	struct fl_log_reader *reader = NULL;
	struct fl_merkle_frontier frontier;
	struct fl_checkpoint cp;
	enum fl_status st = fl_log_open(dst_dir, &options, NULL, &dst);
	if (st != FL_OK)
		return st;
	st = fl_log_reader_begin(src, &reader);
	uint64_t size = reader ? fl_log_reader_size(reader) : 0;
	struct fl_log_entry *entries = calloc(size + 1, sizeof(*entries));
	if (st == FL_OK && !entries)
		st = FL_ERR_NOMEM;
	fl_merkle_frontier_init(&frontier);
	for (uint64_t seq = 1; st == FL_OK && seq <= size; seq++) {
		st = fl_log_reader_get(reader, seq, &entries[seq - 1]);
		if (st == FL_OK)
			st = fl_merkle_frontier_append(&frontier, entries[seq - 1].leaf_hash, NULL,
						       NULL);
	}
	/* Commit by commit, each with its own checkpoint, as the real log has them. */
	uint64_t copied = 0;
	for (uint64_t seq = 1; st == FL_OK && seq <= size; seq++) {
		if (fl_log_reader_checkpoint(reader, seq, &cp) != FL_OK)
			continue;
		st = fl_log_replicate(dst, entries + copied, seq - copied, &cp, NULL);
		copied = seq;
	}
	if (st == FL_OK && copied != size)
		st = FL_ERR_CORRUPT;
	/* The real keys, then the forger's. */
	char previous[FL_KEY_ID_HEX_LEN];
	snprintf(previous, sizeof(previous), "%s", cp.key_id);
	if (st == FL_OK)
		st = fl_log_reader_keys(reader, copy_key, dst);
	fl_log_reader_end(reader);
	free(entries);

	char pem[400], tail[1024], ts[FL_TIME_TEXT_LEN], *body = NULL;
	size_t n = 0;
	for (const char *p = fl_signer_public_pem(new_signer); *p && n + 3 < sizeof(pem); p++) {
		if (*p == '\n') {
			pem[n++] = '\\';
			pem[n++] = 'n';
		} else {
			pem[n++] = *p;
		}
	}
	pem[n] = '\0';
	fl_time_format(fl_time_now_us(), ts);
	snprintf(tail, sizeof(tail),
		 "{\"seq\":%" PRIu64 ",\"kind\":\"key\",\"ingest_ts\":\"%s\",\"key_id\":\"%s\","
		 "\"alg\":\"ed25519\",\"public_key_pem\":\"%s\",\"previous_key_id\":\"%s\"}",
		 size + 1, ts, fl_signer_key_id(new_signer), pem, previous);
	body = tail;
	uint8_t leaf[FL_HASH_LEN], sig[FL_SIG_LEN], new_pub[FL_PUBKEY_LEN];
	struct fl_log_entry forged = {.seq = size + 1,
				      .body = (const uint8_t *)body,
				      .body_len = strlen(body),
				      .leaf_hash = leaf,
				      .sig = sig,
				      .time_us = fl_time_now_us()};
	fl_merkle_leaf_hash(forged.body, forged.body_len, leaf);
	snprintf(forged.key_id, sizeof(forged.key_id), "%s", fl_signer_key_id(new_signer));
	if (st == FL_OK)
		st = fl_signer_sign(new_signer, leaf, FL_HASH_LEN, sig);
	if (st == FL_OK)
		st = fl_merkle_frontier_append(&frontier, leaf, NULL, NULL);
	struct fl_checkpoint forged_cp = {.tree_size = size + 1};
	char text[256];
	fl_merkle_frontier_root(&frontier, forged_cp.root_hash);
	fl_time_format(fl_time_now_us(), forged_cp.timestamp);
	snprintf(forged_cp.key_id, sizeof(forged_cp.key_id), "%s", fl_signer_key_id(new_signer));
	size_t text_len = fl_checkpoint_text(FL_CHECKPOINT_PREFIX, &forged_cp, text, sizeof(text));
	if (st == FL_OK)
		st = fl_signer_sign(new_signer, (const uint8_t *)text, text_len, forged_cp.sig);
	if (st == FL_OK)
		st = fl_log_replicate(dst, &forged, 1, &forged_cp, NULL);
	fl_signer_public_key(new_signer, new_pub);
	if (st == FL_OK)
		st = fl_log_replica_add_key(dst, new_pub);
	fl_log_close(dst);
	if (st == FL_OK && ret_seq)
		*ret_seq = size + 1;
	return st;
}

#ifndef FORGE_NO_MAIN
int main(int argc, char **argv)
{
	struct fl_log *src = NULL;
	struct fl_signer *new_signer = NULL;
	uint64_t seq = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: %s SRC_DIR DST_DIR NEW_KEY_PEM\n", argv[0]);
		return 2;
	}
	enum fl_status st = fl_log_open(argv[1], NULL, NULL, &src);
	if (st == FL_OK)
		st = fl_signer_load(argv[3], &new_signer);
	if (st == FL_OK)
		st = forge_rotation(src, argv[2], new_signer, &seq);
	fl_log_close(src);
	fl_signer_destroy(new_signer);
	if (st != FL_OK) {
		fprintf(stderr, "forge_log: %s\n", fl_status_str(st));
		return 1;
	}
	printf("%" PRIu64 "\n", seq);
	return 0;
}
#endif
