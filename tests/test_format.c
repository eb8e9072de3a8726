/*
 * The log's wire formats (eventlog/format.h): what each writer prints, its
 * parser reads back the same; and each rule on which the readers once
 * disagreed (tree_size 0, the timestamp's form, the body's closing brace,
 * key_id and sig together) has a test of its own.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/signer.h"
#include "fledger/util.h"

static const char body_text[] =
    "{\"seq\":42,\"kind\":\"feature\",\"view\":\"user_activity\",\"entity_id\":\"u123\","
    "\"event_ts\":\"2026-11-26T21:00:00.123000Z\",\"ingest_ts\":\"2026-11-26T21:00:00.200518Z\","
    "\"producer\":\"clicks-pipeline\",\"features\":{\"dwell_ms\":1200.5}}";

/* An entry of seq for body (its leaf hash computed), signed by signer when not NULL. */
struct made_entry {
	struct fl_log_entry entry;
	uint8_t leaf[FL_HASH_LEN], sig[FL_SIG_LEN];
};

static void make_entry(struct made_entry *m, uint64_t seq, const char *body,
		       const struct fl_signer *signer)
{
	memset(m, 0, sizeof(*m));
	fl_merkle_leaf_hash((const uint8_t *)body, strlen(body), m->leaf);
	m->entry = (struct fl_log_entry){.seq = seq,
					 .body = (const uint8_t *)body,
					 .body_len = strlen(body),
					 .leaf_hash = m->leaf};
	if (signer) {
		cr_assert_eq(fl_signer_sign(signer, m->leaf, FL_HASH_LEN, m->sig), FL_OK);
		m->entry.sig = m->sig;
		snprintf(m->entry.key_id, sizeof(m->entry.key_id), "%s", fl_signer_key_id(signer));
	}
}

/* Parses text, expecting FL_ERR_INVALID with a reason. */
static void assert_line_rejected(const char *text, size_t len)
{
	struct fl_log_line line;
	char why[200] = "";
	cr_expect_eq(fl_log_line_parse(text, len, why, sizeof(why), &line), FL_ERR_INVALID,
		     "accepted: %.*s", (int)len, text);
	cr_expect_neq(why[0], '\0', "no reason for: %.*s", (int)len, text);
}

Test(format, a_v2_line_reads_back_as_written)
{
	struct made_entry m;
	make_entry(&m, 42, body_text, NULL);
	char *text, why[200];
	size_t len;
	cr_assert_eq(fl_log_entry_line(&m.entry, &text, &len), FL_OK);
	cr_assert_eq(strlen(text), len);
	cr_assert_null(strstr(text, "\"sig\""), "%s", text);

	struct fl_log_line line;
	cr_assert_eq(fl_log_line_parse(text, len, why, sizeof(why), &line), FL_OK, "%s", why);
	cr_assert_eq(line.seq, 42);
	cr_assert_eq(line.body_len, strlen(body_text));
	cr_assert_eq(memcmp(line.body, body_text, line.body_len), 0);
	cr_assert_eq(memcmp(line.leaf_hash, m.leaf, FL_HASH_LEN), 0);
	cr_assert_not(line.has_sig);
	cr_assert_str_eq(line.key_id, "");
	cr_assert(fl_log_line_holds(&line, why, sizeof(why)), "%s", why);

	/* The entry view of the parsed line prints the same line again. */
	struct fl_log_entry again;
	char *text2;
	fl_log_line_entry(&line, &again);
	cr_assert_null(again.sig);
	cr_assert_eq(fl_log_entry_line(&again, &text2, NULL), FL_OK);
	cr_assert_str_eq(text2, text);
	free(text2);
	fl_log_line_finish(&line);
	cr_assert_null(line.body);
	free(text);
}

Test(format, a_first_format_line_keeps_its_signature)
{
	struct fl_signer *signer;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	uint8_t pub[FL_PUBKEY_LEN], other_pub[FL_PUBKEY_LEN];
	fl_signer_public_key(signer, pub);
	struct made_entry m;
	make_entry(&m, 7, "{\"seq\":7,\"kind\":\"view\"}", signer);
	char *text, why[200];
	size_t len;
	cr_assert_eq(fl_log_entry_line(&m.entry, &text, &len), FL_OK);

	struct fl_log_line line;
	cr_assert_eq(fl_log_line_parse(text, len, why, sizeof(why), &line), FL_OK, "%s", why);
	cr_assert(line.has_sig);
	cr_assert_str_eq(line.key_id, fl_signer_key_id(signer));
	cr_assert_eq(memcmp(line.sig, m.sig, FL_SIG_LEN), 0);
	cr_assert(fl_log_line_holds(&line, why, sizeof(why)), "%s", why);
	cr_assert(fl_log_line_sig_verify(&line, pub));
	memcpy(other_pub, pub, FL_PUBKEY_LEN);
	other_pub[0] ^= 1;
	cr_assert_not(fl_log_line_sig_verify(&line, other_pub));

	struct fl_log_entry again;
	char *text2;
	fl_log_line_entry(&line, &again);
	cr_assert_not_null(again.sig);
	cr_assert_eq(fl_log_entry_line(&again, &text2, NULL), FL_OK);
	cr_assert_str_eq(text2, text);
	free(text2);
	fl_log_line_finish(&line);
	free(text);
	fl_signer_destroy(signer);
}

Test(format, key_id_and_sig_go_together)
{
	struct fl_signer *signer;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	struct made_entry m;
	make_entry(&m, 3, "{\"seq\":3,\"kind\":\"view\"}", signer);
	char *text;
	size_t len;
	cr_assert_eq(fl_log_entry_line(&m.entry, &text, &len), FL_OK);

	/* Drop one of the two members: the line is neither format. */
	char *sig = strstr(text, ",\"sig\":"), *key = strstr(text, ",\"key_id\":");
	cr_assert_not_null(sig);
	cr_assert_not_null(key);
	char without_sig[512], without_key[512];
	snprintf(without_sig, sizeof(without_sig), "%.*s}", (int)(sig - text), text);
	snprintf(without_key, sizeof(without_key), "%.*s%s", (int)(key - text), text, sig);
	assert_line_rejected(without_sig, strlen(without_sig));
	assert_line_rejected(without_key, strlen(without_key));
	free(text);
	fl_signer_destroy(signer);
}

/* A body must be {"seq":N,...} for its line's seq, closing brace included. */
Test(format, the_body_names_its_seq_and_closes)
{
	static const struct {
		const char *body;
		uint64_t seq;
		bool holds;
	} cases[] = {
	    {"{\"seq\":5,\"kind\":\"feature\"}", 5, true},
	    {"{\"seq\":5,\"kind\":\"feature\"", 5, false}, /* no closing brace */
	    {"{\"seq\":5,\"kind\":\"feature\"} ", 5, false},
	    {"{\"seq\":6,\"kind\":\"feature\"}", 5, false},
	    {"{\"seq\":55,\"kind\":\"feature\"}", 5, false},
	    {"{\"seq\":5}", 5, false},
	    {"{\"seq\":5,}", 5, true}, /* the smallest body the prefix and brace allow */
	    {"{ \"seq\":5,\"kind\":\"feature\"}", 5, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct made_entry m;
		make_entry(&m, cases[i].seq, cases[i].body, NULL);
		char *text, why[200] = "";
		size_t len;
		struct fl_log_line line;
		cr_assert_eq(fl_log_entry_line(&m.entry, &text, &len), FL_OK);
		cr_assert_eq(fl_log_line_parse(text, len, why, sizeof(why), &line), FL_OK, "%s",
			     why);
		cr_expect_eq(fl_log_line_holds(&line, why, sizeof(why)), cases[i].holds, "%s: %s",
			     cases[i].body, why);
		cr_expect_eq(fl_log_body_has_seq(line.body, line.body_len, cases[i].seq),
			     cases[i].holds, "%s", cases[i].body);
		fl_log_line_finish(&line);
		free(text);
	}

	/* A leaf hash of another body does not hold either. */
	struct made_entry m;
	make_entry(&m, 5, "{\"seq\":5,\"kind\":\"feature\"}", NULL);
	m.leaf[0] ^= 1;
	char *text, why[200] = "";
	size_t len;
	struct fl_log_line line;
	cr_assert_eq(fl_log_entry_line(&m.entry, &text, &len), FL_OK);
	cr_assert_eq(fl_log_line_parse(text, len, why, sizeof(why), &line), FL_OK);
	cr_assert_not(fl_log_line_holds(&line, why, sizeof(why)));
	cr_assert_not_null(strstr(why, "leaf_hash"), "%s", why);
	fl_log_line_finish(&line);
	free(text);
}

Test(format, lines_that_are_not_lines_are_refused)
{
	/* a valid line: seq 1, body {"seq":1,} */
	char leaf[2 * FL_HASH_LEN + 1], good[256];
	uint8_t hash[FL_HASH_LEN];
	fl_merkle_leaf_hash((const uint8_t *)"{\"seq\":1,}", 10, hash);
	fl_hex_encode(hash, FL_HASH_LEN, leaf);
	snprintf(good, sizeof(good),
		 "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}", leaf);
	struct fl_log_line line;
	char why[200];
	cr_assert_eq(fl_log_line_parse(good, strlen(good), why, sizeof(why), &line), FL_OK, "%s",
		     why);
	cr_assert(fl_log_line_holds(&line, why, sizeof(why)), "%s", why);
	fl_log_line_finish(&line);

	/* Whitespace between tokens (a pretty-printer's) and after the object is fine. */
	char spaced[300];
	snprintf(
	    spaced, sizeof(spaced),
	    " { \"seq\" : 1 ,\n \"body\" : \"eyJzZXEiOjEsfQ==\" , \"leaf_hash\" : \"%s\" }\r\n",
	    leaf);
	cr_assert_eq(fl_log_line_parse(spaced, strlen(spaced), why, sizeof(why), &line), FL_OK,
		     "%s", why);
	cr_assert_eq(line.seq, 1);
	fl_log_line_finish(&line);

	const char *const templates[] = {
	    "",
	    "{",
	    "[]",
	    "null",
	    "{}",
	    "{\"seq\":1}",
	    "{\"seq\":0,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":01,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":-1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1.0,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":\"1\",\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":18446744073709551616,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfR==\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ\\u003d=\",\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\",\"seq\":1}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\",\"extra\":1}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}x",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\"}{}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%.63s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\"}",
	    "{\"seq\":1,\"leaf_hash\":\"%s\"}",
	    "{\"seq\":1,\"body\":\"eyJzZXEiOjEsfQ==\",\"leaf_hash\":\"%s\",\"key_id\":\"00\","
	    "\"sig\":\"AA==\"}",
	};
	for (size_t i = 0; i < sizeof(templates) / sizeof(templates[0]); i++) {
		char text[400];
		snprintf(text, sizeof(text), templates[i], leaf);
		assert_line_rejected(text, strlen(text));
	}
	/* Upper-case hex is not what the writer prints. */
	char upper[256];
	snprintf(upper, sizeof(upper), "%s", good);
	char *hex = strstr(upper, leaf);
	for (size_t i = 0; i < 2 * FL_HASH_LEN; i++)
		if (hex[i] >= 'a' && hex[i] <= 'f')
			hex[i] = (char)(hex[i] - 'a' + 'A');
	assert_line_rejected(upper, strlen(upper));
	/* A NUL byte inside, and a line cut short anywhere. */
	char with_nul[256];
	memcpy(with_nul, good, strlen(good));
	with_nul[20] = '\0';
	assert_line_rejected(with_nul, strlen(good));
	for (size_t cut = 0; cut < strlen(good); cut++)
		assert_line_rejected(good, cut);
}

/* A checkpoint signed by signer over prefix, at tree_size, with a given timestamp. */
static struct fl_checkpoint signed_checkpoint(const struct fl_signer *signer, const char *prefix,
					      uint64_t tree_size)
{
	struct fl_checkpoint cp = {.tree_size = tree_size};
	char text[256];
	for (size_t i = 0; i < FL_HASH_LEN; i++)
		cp.root_hash[i] = (uint8_t)(i * 7 + tree_size);
	fl_time_format(1795726800201000LL, cp.timestamp);
	snprintf(cp.key_id, sizeof(cp.key_id), "%s", fl_signer_key_id(signer));
	size_t len = fl_checkpoint_text(prefix, &cp, text, sizeof(text));
	cr_assert(len > 0 && len < sizeof(text));
	cr_assert_eq(fl_signer_sign(signer, (const uint8_t *)text, len, cp.sig), FL_OK);
	return cp;
}

static void assert_same_checkpoint(const struct fl_checkpoint *a, const struct fl_checkpoint *b)
{
	cr_assert_eq(a->tree_size, b->tree_size);
	cr_assert_eq(memcmp(a->root_hash, b->root_hash, FL_HASH_LEN), 0);
	cr_assert_str_eq(a->timestamp, b->timestamp);
	cr_assert_str_eq(a->key_id, b->key_id);
	cr_assert_eq(memcmp(a->sig, b->sig, FL_SIG_LEN), 0);
}

Test(format, a_checkpoint_reads_back_and_still_verifies)
{
	struct fl_signer *signer;
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	fl_signer_public_key(signer, pub);
	const char *const prefixes[] = {FL_CHECKPOINT_PREFIX, FL_READ_CHECKPOINT_PREFIX};
	for (size_t i = 0; i < 2; i++) {
		struct fl_checkpoint cp = signed_checkpoint(signer, prefixes[i], 42), parsed;
		char *json, why[200];
		cr_assert_eq(fl_checkpoint_json(&cp, &json), FL_OK);
		static const char head[] = "{\"tree_size\":42,\"root_hash\":\"";
		cr_assert_eq(strncmp(json, head, strlen(head)), 0, "%s", json);
		cr_assert_eq(fl_checkpoint_parse(json, strlen(json), why, sizeof(why), &parsed),
			     FL_OK, "%s", why);
		assert_same_checkpoint(&cp, &parsed);
		cr_assert(fl_checkpoint_verify(prefixes[i], &parsed, pub));
		cr_assert_not(fl_checkpoint_verify(prefixes[1 - i], &parsed, pub));
		free(json);
	}
	fl_signer_destroy(signer);
}

/* Replaces the first occurrence of from in text (a checkpoint's JSON) with to. */
static char *replaced(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	cr_assert_not_null(at, "%s not in %s", from, text);
	size_t len = strlen(text) - strlen(from) + strlen(to);
	char *out = malloc(len + 1);
	cr_assert_not_null(out);
	snprintf(out, len + 1, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
	return out;
}

static enum fl_status parse_variant(const char *json, const char *from, const char *to, char *why,
				    size_t why_len)
{
	struct fl_checkpoint cp;
	char *text = replaced(json, from, to);
	enum fl_status st = fl_checkpoint_parse(text, strlen(text), why, why_len, &cp);
	free(text);
	return st;
}

/* The log signs one checkpoint per commit; there is none of the empty tree. */
Test(format, a_checkpoint_of_tree_size_0_is_refused)
{
	struct fl_signer *signer;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	struct fl_checkpoint cp = signed_checkpoint(signer, FL_CHECKPOINT_PREFIX, 1);
	char *json, why[200] = "";
	cr_assert_eq(fl_checkpoint_json(&cp, &json), FL_OK);
	cr_assert_eq(parse_variant(json, "\"tree_size\":1,", "\"tree_size\":1,", why, sizeof(why)),
		     FL_OK, "%s", why);
	cr_assert_eq(parse_variant(json, "\"tree_size\":1,", "\"tree_size\":0,", why, sizeof(why)),
		     FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "tree_size"), "%s", why);
	cr_assert_eq(parse_variant(json, "\"tree_size\":1,", "\"tree_size\":-1,", why, sizeof(why)),
		     FL_ERR_INVALID);
	cr_assert_eq(
	    parse_variant(json, "\"tree_size\":1,", "\"tree_size\":\"1\",", why, sizeof(why)),
	    FL_ERR_INVALID);
	free(json);
	fl_signer_destroy(signer);
}

/*
 * The timestamp is read only in the form the log signs and stores: UTC with
 * microseconds, 27 characters. (A quote or a control character must not get
 * through either: bundle files are written from what was read.)
 */
Test(format, a_checkpoint_timestamp_has_exactly_the_stored_form)
{
	struct fl_signer *signer;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	struct fl_checkpoint cp = signed_checkpoint(signer, FL_CHECKPOINT_PREFIX, 8);
	char *json, why[200] = "", stamp[64];
	cr_assert_eq(fl_checkpoint_json(&cp, &json), FL_OK);
	snprintf(stamp, sizeof(stamp), "\"%s\"", cp.timestamp);
	static const char *const bad[] = {
	    "\"2026-11-26T21:00:00Z\"",		    /* RFC 3339, but not as stored */
	    "\"2026-11-26T21:00:00.201Z\"",	    /* milliseconds */
	    "\"2026-11-26T21:00:00.201000+00:00\"", /* a zone offset */
	    "\"2026-11-26T22:00:00.201000+01:0\"",  /* 27 characters, not UTC */
	    "\"2026-11-26t21:00:00.201000z\"",
	    "\"2026-12-0\\\"21:2[5:36.654796Z\"",
	    "\"2026-11-26T21:00:00\\\\Z\"",
	    "\"2026-11-26T21:00:00\tZ\"",
	    "\"yesterday\"",
	    "1795726800",
	};
	cr_assert_eq(parse_variant(json, stamp, stamp, why, sizeof(why)), FL_OK, "%s", why);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		cr_expect_eq(parse_variant(json, stamp, bad[i], why, sizeof(why)), FL_ERR_INVALID,
			     "accepted %s", bad[i]);
		cr_expect_neq(why[0], '\0');
	}
	free(json);
	fl_signer_destroy(signer);
}

Test(format, a_checkpoint_has_exactly_its_members)
{
	struct fl_signer *signer;
	cr_assert_eq(fl_signer_generate(&signer), FL_OK);
	struct fl_checkpoint cp = signed_checkpoint(signer, FL_CHECKPOINT_PREFIX, 8), parsed;
	char *json, why[200] = "";
	cr_assert_eq(fl_checkpoint_json(&cp, &json), FL_OK);
	cr_assert_eq(parse_variant(json, "{", "{\"extra\":1,", why, sizeof(why)), FL_ERR_INVALID);
	cr_assert_eq(parse_variant(json, "{", "{\"tree_size\":8,", why, sizeof(why)),
		     FL_ERR_INVALID);
	cr_assert_eq(parse_variant(json, "\"tree_size\":8,", "", why, sizeof(why)), FL_ERR_INVALID);
	cr_assert_eq(parse_variant(json, "\"key_id\":\"", "\"key_id\":\"A", why, sizeof(why)),
		     FL_ERR_INVALID);
	cr_assert_eq(parse_variant(json, "\"sig\":\"", "\"sig\":\"AAAA", why, sizeof(why)),
		     FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "sig"), "%s", why);

	/* One more member, when the caller names it: an audit bundle's "consistency". */
	char *with = replaced(json, "{", "{\"consistency\":[ ],");
	const char *extra;
	size_t extra_len;
	cr_assert_eq(fl_checkpoint_parse(with, strlen(with), why, sizeof(why), &parsed),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_checkpoint_parse_with(with, strlen(with), "consistency", why, sizeof(why),
					      &parsed, &extra, &extra_len),
		     FL_OK, "%s", why);
	assert_same_checkpoint(&cp, &parsed);
	cr_assert_eq(extra_len, 3);
	cr_assert_eq(strncmp(extra, "[ ]", 3), 0);
	/* ... which must then be there. */
	cr_assert_eq(fl_checkpoint_parse_with(json, strlen(json), "consistency", why, sizeof(why),
					      &parsed, &extra, &extra_len),
		     FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "consistency"), "%s", why);
	free(with);
	free(json);
	fl_signer_destroy(signer);
}

static void fill_hashes(uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	for (size_t i = 0; i < count; i++)
		for (size_t j = 0; j < FL_HASH_LEN; j++)
			hashes[i][j] = (uint8_t)(i * 31 + j);
}

Test(format, proofs_read_back_as_written)
{
	static uint8_t hashes[FL_MERKLE_MAX_PROOF + 1][FL_HASH_LEN];
	static const size_t counts[] = {0, 1, 3, FL_MERKLE_MAX_PROOF};
	fill_hashes(hashes, FL_MERKLE_MAX_PROOF + 1);
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		size_t count = counts[i];
		char *json, why[200];
		struct fl_inclusion_proof inclusion;
		struct fl_consistency_proof consistency;

		cr_assert_eq(fl_inclusion_proof_json(41, 42, (const uint8_t(*)[FL_HASH_LEN])hashes,
						     count, &json),
			     FL_OK);
		static const char head[] = "{\"leaf_index\":41,\"tree_size\":42,\"hashes\":[";
		cr_assert_eq(strncmp(json, head, strlen(head)), 0, "%s", json);
		cr_assert_eq(
		    fl_inclusion_proof_parse(json, strlen(json), why, sizeof(why), &inclusion),
		    FL_OK, "%s", why);
		cr_assert_eq(inclusion.leaf_index, 41);
		cr_assert_eq(inclusion.tree_size, 42);
		cr_assert_eq(inclusion.count, count);
		cr_assert_eq(memcmp(inclusion.hashes, hashes, count * FL_HASH_LEN), 0);
		free(json);

		cr_assert_eq(fl_consistency_proof_json(7, 42, (const uint8_t(*)[FL_HASH_LEN])hashes,
						       count, &json),
			     FL_OK);
		cr_assert_eq(
		    fl_consistency_proof_parse(json, strlen(json), why, sizeof(why), &consistency),
		    FL_OK, "%s", why);
		cr_assert_eq(consistency.first, 7);
		cr_assert_eq(consistency.second, 42);
		cr_assert_eq(consistency.count, count);
		cr_assert_eq(memcmp(consistency.hashes, hashes, count * FL_HASH_LEN), 0);
		free(json);
	}
	/* No proof is longer than FL_MERKLE_MAX_PROOF: neither written nor read. */
	char *json;
	cr_assert_eq(fl_inclusion_proof_json(0, 1, (const uint8_t(*)[FL_HASH_LEN])hashes,
					     FL_MERKLE_MAX_PROOF + 1, &json),
		     FL_ERR_INVALID);
	struct fl_text text = FL_TEXT_INIT;
	fl_proof_hashes_write(&text, (const uint8_t(*)[FL_HASH_LEN])hashes,
			      FL_MERKLE_MAX_PROOF + 1);
	cr_assert_not(text.failed);
	uint8_t read[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	char why[200];
	cr_assert_eq(fl_proof_hashes_parse(text.data, text.len, why, sizeof(why), read, &count),
		     FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "more than"), "%s", why);
	fl_text_free(&text);
}

Test(format, proofs_out_of_their_trees_are_refused)
{
	static const char *const bad_inclusion[] = {
	    "{\"leaf_index\":42,\"tree_size\":42,\"hashes\":[]}",
	    "{\"leaf_index\":0,\"tree_size\":0,\"hashes\":[]}",
	    "{\"leaf_index\":0,\"tree_size\":1}",
	    "{\"leaf_index\":0,\"tree_size\":1,\"hashes\":[],\"extra\":[]}",
	    "{\"leaf_index\":0,\"tree_size\":1,\"hashes\":{}}",
	    "{\"leaf_index\":0,\"tree_size\":2,\"hashes\":[\"00\"]}",
	    "{\"leaf_index\":0,\"tree_size\":2,\"hashes\":[,]}",
	    "{\"first\":1,\"second\":2,\"hashes\":[]}",
	};
	static const char *const bad_consistency[] = {
	    "{\"first\":0,\"second\":4,\"hashes\":[]}",
	    "{\"first\":5,\"second\":4,\"hashes\":[]}",
	    "{\"first\":1,\"second\":4,\"hashes\":[]} x",
	    "{\"leaf_index\":0,\"tree_size\":1,\"hashes\":[]}",
	};
	struct fl_inclusion_proof inclusion;
	struct fl_consistency_proof consistency;
	char why[200];
	for (size_t i = 0; i < sizeof(bad_inclusion) / sizeof(bad_inclusion[0]); i++)
		cr_expect_eq(fl_inclusion_proof_parse(bad_inclusion[i], strlen(bad_inclusion[i]),
						      why, sizeof(why), &inclusion),
			     FL_ERR_INVALID, "accepted %s", bad_inclusion[i]);
	for (size_t i = 0; i < sizeof(bad_consistency) / sizeof(bad_consistency[0]); i++)
		cr_expect_eq(fl_consistency_proof_parse(bad_consistency[i],
							strlen(bad_consistency[i]), why,
							sizeof(why), &consistency),
			     FL_ERR_INVALID, "accepted %s", bad_consistency[i]);
	/* first == second: the empty proof. */
	static const char empty[] = "{\"first\":4,\"second\":4,\"hashes\":[]}";
	cr_assert_eq(
	    fl_consistency_proof_parse(empty, strlen(empty), why, sizeof(why), &consistency), FL_OK,
	    "%s", why);
	cr_assert_eq(consistency.count, 0);
	/* Trailing commas and upper-case hex in the list are not what is written. */
	uint8_t hashes[2][FL_HASH_LEN];
	size_t count;
	char list[200], hex[2 * FL_HASH_LEN + 1];
	fill_hashes(hashes, 1);
	fl_hex_encode(hashes[0], FL_HASH_LEN, hex);
	snprintf(list, sizeof(list), "[\"%s\",]", hex);
	cr_assert_eq(fl_proof_hashes_parse(list, strlen(list), why, sizeof(why), hashes, &count),
		     FL_ERR_INVALID);
	snprintf(list, sizeof(list), " [ \"%s\" ] ", hex);
	cr_assert_eq(fl_proof_hashes_parse(list, strlen(list), why, sizeof(why), hashes, &count),
		     FL_OK, "%s", why);
	cr_assert_eq(count, 1);
	for (char *c = list; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	cr_assert_eq(fl_proof_hashes_parse(list, strlen(list), why, sizeof(why), hashes, &count),
		     FL_ERR_INVALID);
}
