/*
 * The log's wire formats (see format.h): each writer, and beside it the one
 * parser of what it writes.
 */
#include "eventlog/format.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/jsonw.h"
#include "fledger/util.h"

/* ---- reading members -------------------------------------------------------- */

/* One member a format has: its name, and where the scan found its value. */
struct member {
	const char *name;
	const char *value; /* NULL: absent */
	size_t len;
};

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Reads the object text[0..len) into members (n of them): every member of
 * the object must be one of them, once. Nothing but whitespace may follow
 * the closing brace. Members that are absent keep value NULL: the caller
 * says which are required.
 */
static enum fl_status scan_members(const char *text, size_t len, struct member *members, size_t n,
				   char *error, size_t error_size)
{
	struct fl_json_member m;
	size_t pos = 0, before = 0;
	int more;

	if (!text) {
		fl_set_error(error, error_size, "no text");
		return FL_ERR_INVALID;
	}
	while ((more = fl_json_next_member(text, len, &pos, &m)) == 1) {
		struct member *found = NULL;
		for (size_t i = 0; i < n && !found; i++)
			if (strlen(members[i].name) == m.key_len &&
			    memcmp(members[i].name, m.key, m.key_len) == 0)
				found = &members[i];
		if (!found) {
			fl_set_error(error, error_size, "unknown member \"%.*s\"",
				     (int)(m.key_len < 40 ? m.key_len : 40), m.key);
			return FL_ERR_INVALID;
		}
		if (found->value) {
			fl_set_error(error, error_size, "member %s appears twice", found->name);
			return FL_ERR_INVALID;
		}
		found->value = m.value;
		found->len = m.value_len;
		before = pos;
	}
	if (more < 0) {
		fl_set_error(error, error_size, "not a JSON object");
		return FL_ERR_INVALID;
	}
	/* The scanner stops at the closing brace; what follows is ours to refuse. */
	if (before > 0) {
		for (size_t i = before + 1; i < len; i++) {
			if (!is_ws(text[i])) {
				fl_set_error(error, error_size, "text after the closing brace");
				return FL_ERR_INVALID;
			}
		}
	}
	return FL_OK;
}

static bool required(const struct member *member, char *error, size_t error_size)
{
	if (!member->value)
		fl_set_error(error, error_size, "%s is missing", member->name);
	return member->value != NULL;
}

/* A string's text without its quotes; no escapes (no value here needs one). */
static bool string_value(const struct member *member, const char **ret, size_t *ret_len,
			 char *error, size_t error_size)
{
	const char *v = member->value;
	size_t len = member->len;
	if (len < 2 || v[0] != '"' || v[len - 1] != '"' || memchr(v, '\\', len)) {
		fl_set_error(error, error_size, "%s is not a string without escapes", member->name);
		return false;
	}
	*ret = v + 1;
	*ret_len = len - 2;
	return true;
}

/* A non-negative integer in plain decimal (no sign, no leading zero) that fits 64 bits. */
static bool u64_value(const struct member *member, uint64_t *ret, char *error, size_t error_size)
{
	const char *v = member->value;
	size_t len = member->len;
	uint64_t value = 0;
	bool ok = len > 0 && (len == 1 || v[0] != '0');
	for (size_t i = 0; ok && i < len; i++) {
		unsigned digit = (unsigned)(v[i] - '0');
		ok = v[i] >= '0' && v[i] <= '9' && value <= (UINT64_MAX - digit) / 10;
		value = value * 10 + digit;
	}
	if (!ok) {
		fl_set_error(error, error_size, "%s is not a non-negative integer", member->name);
		return false;
	}
	*ret = value;
	return true;
}

static bool lower_hex(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
			return false;
	return true;
}

/* Exactly 2 * n lowercase hex digits into n bytes. */
static bool decode_hex(const char *text, size_t len, uint8_t *ret_bytes, size_t n)
{
	char buf[2 * FL_HASH_LEN + 1];
	if (len != 2 * n || len >= sizeof(buf) || !lower_hex(text, len))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	return fl_hex_decode(buf, ret_bytes, n) == FL_OK;
}

static bool hex_value(const struct member *member, uint8_t *ret_bytes, size_t n, char *error,
		      size_t error_size)
{
	const char *text;
	size_t len;
	if (!string_value(member, &text, &len, error, error_size))
		return false;
	if (!decode_hex(text, len, ret_bytes, n)) {
		fl_set_error(error, error_size, "%s is not %zu lowercase hex digits", member->name,
			     2 * n);
		return false;
	}
	return true;
}

static bool key_id_value(const struct member *member, char ret_key_id[FL_KEY_ID_HEX_LEN],
			 char *error, size_t error_size)
{
	const char *text;
	size_t len;
	if (!string_value(member, &text, &len, error, error_size))
		return false;
	if (len != FL_KEY_ID_HEX_LEN - 1 || !lower_hex(text, len)) {
		fl_set_error(error, error_size, "%s is not %d lowercase hex digits", member->name,
			     FL_KEY_ID_HEX_LEN - 1);
		return false;
	}
	memcpy(ret_key_id, text, len);
	ret_key_id[len] = '\0';
	return true;
}

/* Canonical padded base64. FL_ERR_INVALID (said in error) or FL_ERR_NOMEM. */
static enum fl_status base64_value(const struct member *member, uint8_t **ret_bytes,
				   size_t *ret_len, char *error, size_t error_size)
{
	const char *text;
	size_t len;
	if (!string_value(member, &text, &len, error, error_size))
		return FL_ERR_INVALID;
	enum fl_status st = fl_base64_decode(text, len, ret_bytes, ret_len);
	if (st == FL_ERR_INVALID)
		fl_set_error(error, error_size, "%s is not canonical base64", member->name);
	else if (st != FL_OK)
		fl_set_error(error, error_size, "%s: %s", member->name, fl_status_str(st));
	return st;
}

static enum fl_status sig_value(const struct member *member, uint8_t ret_sig[FL_SIG_LEN],
				char *error, size_t error_size)
{
	uint8_t *bytes;
	size_t len;
	enum fl_status st = base64_value(member, &bytes, &len, error, error_size);
	if (st != FL_OK)
		return st;
	if (len == FL_SIG_LEN)
		memcpy(ret_sig, bytes, FL_SIG_LEN);
	else
		fl_set_error(error, error_size, "%s is %zu bytes, not %d", member->name, len,
			     FL_SIG_LEN);
	free(bytes);
	return len == FL_SIG_LEN ? FL_OK : FL_ERR_INVALID;
}

/* ---- the log line ---------------------------------------------------------- */

enum fl_status fl_log_entry_line(const struct fl_log_entry *entry, char **ret_line, size_t *ret_len)
{
	char leaf_hex[2 * FL_HASH_LEN + 1], sig_b64[100];
	size_t body_b64_len = fl_base64_encoded_len(entry->body_len);
	size_t cap = body_b64_len + 256;
	char *line = malloc(cap);
	if (!line)
		return FL_ERR_NOMEM;

	fl_hex_encode(entry->leaf_hash, FL_HASH_LEN, leaf_hex);
	int head = snprintf(line, cap, "{\"seq\":%" PRIu64 ",\"body\":\"", entry->seq);
	fl_base64_encode(entry->body, entry->body_len, line + head);
	size_t len = (size_t)head + body_b64_len;
	len += (size_t)snprintf(line + len, cap - len, "\",\"leaf_hash\":\"%s\"", leaf_hex);
	if (entry->sig) {
		/* A line of the first format keeps its signature. */
		fl_base64_encode(entry->sig, FL_SIG_LEN, sig_b64);
		len += (size_t)snprintf(line + len, cap - len, ",\"key_id\":\"%s\",\"sig\":\"%s\"",
					entry->key_id, sig_b64);
	}
	line[len++] = '}';
	line[len] = '\0';
	*ret_line = line;
	if (ret_len)
		*ret_len = len;
	return FL_OK;
}

/* The members of a log line, in the order the writer prints them. */
enum { LINE_SEQ, LINE_BODY, LINE_LEAF_HASH, LINE_KEY_ID, LINE_SIG, LINE_MEMBERS };

/* Everything of a line but its seq, into line. */
static enum fl_status line_members(const struct member m[LINE_MEMBERS], struct fl_log_line *line,
				   char *reason, size_t reason_len)
{
	if (!required(&m[LINE_BODY], reason, reason_len) ||
	    !required(&m[LINE_LEAF_HASH], reason, reason_len) ||
	    !hex_value(&m[LINE_LEAF_HASH], line->leaf_hash, FL_HASH_LEN, reason, reason_len))
		return FL_ERR_INVALID;
	/* Format v2: seq, body, leaf_hash; the first format adds key_id and sig. */
	line->has_sig = m[LINE_SIG].value != NULL;
	if ((m[LINE_KEY_ID].value != NULL) != line->has_sig) {
		fl_set_error(reason, reason_len,
			     "key_id and sig go together (a line of the first format has both, a "
			     "line of format v2 neither)");
		return FL_ERR_INVALID;
	}
	if (line->has_sig) {
		if (!key_id_value(&m[LINE_KEY_ID], line->key_id, reason, reason_len))
			return FL_ERR_INVALID;
		enum fl_status st = sig_value(&m[LINE_SIG], line->sig, reason, reason_len);
		if (st != FL_OK)
			return st;
	}
	return base64_value(&m[LINE_BODY], &line->body, &line->body_len, reason, reason_len);
}

enum fl_status fl_log_line_parse(const char *text, size_t len, char *error, size_t error_size,
				 struct fl_log_line *ret_line)
{
	struct member m[LINE_MEMBERS] = {[LINE_SEQ] = {.name = "seq"},
					 [LINE_BODY] = {.name = "body"},
					 [LINE_LEAF_HASH] = {.name = "leaf_hash"},
					 [LINE_KEY_ID] = {.name = "key_id"},
					 [LINE_SIG] = {.name = "sig"}};
	struct fl_log_line line = {0};
	char reason[160];

	if (!ret_line)
		return FL_ERR_INVALID;
	enum fl_status st = scan_members(text, len, m, LINE_MEMBERS, error, error_size);
	if (st != FL_OK)
		return st;
	if (!required(&m[LINE_SEQ], error, error_size) ||
	    !u64_value(&m[LINE_SEQ], &line.seq, error, error_size))
		return FL_ERR_INVALID;
	if (line.seq == 0) {
		fl_set_error(error, error_size, "seq is 0: seqs start at 1");
		return FL_ERR_INVALID;
	}
	st = line_members(m, &line, reason, sizeof(reason));
	if (st != FL_OK) {
		fl_set_error(error, error_size, "seq %" PRIu64 ": %s", line.seq, reason);
		return st;
	}
	*ret_line = line;
	return FL_OK;
}

void fl_log_line_finish(struct fl_log_line *line)
{
	if (!line)
		return;
	free(line->body);
	line->body = NULL;
	line->body_len = 0;
}

bool fl_log_body_has_seq(const uint8_t *body, size_t len, uint64_t seq)
{
	char head[32];
	int n = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 ",", seq);
	return body && len > (size_t)n && memcmp(body, head, (size_t)n) == 0 &&
	       body[len - 1] == '}';
}

bool fl_log_line_holds(const struct fl_log_line *line, char *error, size_t error_size)
{
	uint8_t leaf[FL_HASH_LEN];
	fl_merkle_leaf_hash(line->body, line->body_len, leaf);
	if (memcmp(leaf, line->leaf_hash, FL_HASH_LEN) != 0) {
		fl_set_error(error, error_size,
			     "seq %" PRIu64 ": leaf_hash is not SHA-256(0x00 || body)", line->seq);
		return false;
	}
	if (!fl_log_body_has_seq(line->body, line->body_len, line->seq)) {
		fl_set_error(error, error_size,
			     "seq %" PRIu64 ": the body is not {\"seq\":%" PRIu64 ",...}",
			     line->seq, line->seq);
		return false;
	}
	return true;
}

bool fl_log_line_sig_verify(const struct fl_log_line *line, const uint8_t pub[FL_PUBKEY_LEN])
{
	return line->has_sig && fl_sig_verify(pub, line->leaf_hash, FL_HASH_LEN, line->sig);
}

void fl_log_line_entry(const struct fl_log_line *line, struct fl_log_entry *ret_entry)
{
	*ret_entry = (struct fl_log_entry){.seq = line->seq,
					   .body = line->body,
					   .body_len = line->body_len,
					   .leaf_hash = line->leaf_hash,
					   .sig = line->has_sig ? line->sig : NULL};
	memcpy(ret_entry->key_id, line->key_id, FL_KEY_ID_HEX_LEN);
}

/* ---- the checkpoint ---------------------------------------------------------- */

size_t fl_checkpoint_text(const char *prefix, const struct fl_checkpoint *checkpoint, char *buf,
			  size_t buf_len)
{
	char root_hex[2 * FL_HASH_LEN + 1];
	fl_hex_encode(checkpoint->root_hash, FL_HASH_LEN, root_hex);
	int n = snprintf(buf, buf_len, "%s\n%" PRIu64 "\n%s\n%s\n", prefix, checkpoint->tree_size,
			 root_hex, checkpoint->timestamp);
	return n < 0 ? 0 : (size_t)n;
}

enum fl_status fl_checkpoint_json(const struct fl_checkpoint *checkpoint, char **ret_json)
{
	char root_hex[2 * FL_HASH_LEN + 1], sig_b64[100];
	char *json = malloc(320);
	if (!json)
		return FL_ERR_NOMEM;
	fl_hex_encode(checkpoint->root_hash, FL_HASH_LEN, root_hex);
	fl_base64_encode(checkpoint->sig, FL_SIG_LEN, sig_b64);
	snprintf(json, 320,
		 "{\"tree_size\":%" PRIu64 ",\"root_hash\":\"%s\",\"timestamp\":\"%s\","
		 "\"key_id\":\"%s\",\"sig\":\"%s\"}",
		 checkpoint->tree_size, root_hex, checkpoint->timestamp, checkpoint->key_id,
		 sig_b64);
	*ret_json = json;
	return FL_OK;
}

bool fl_checkpoint_verify(const char *prefix, const struct fl_checkpoint *checkpoint,
			  const uint8_t pub[FL_PUBKEY_LEN])
{
	char text[256];
	size_t len = fl_checkpoint_text(prefix, checkpoint, text, sizeof(text));
	return len > 0 && len < sizeof(text) &&
	       fl_sig_verify(pub, (const uint8_t *)text, len, checkpoint->sig);
}

/* A timestamp exactly as fl_time_format prints it. */
static bool timestamp_value(const struct member *member,
			    char ret_timestamp[FL_CHECKPOINT_TIMESTAMP_LEN + 1], char *error,
			    size_t error_size)
{
	char text[FL_CHECKPOINT_TIMESTAMP_LEN + 1], again[FL_TIME_TEXT_LEN];
	const char *value;
	size_t len;
	int64_t us;
	if (!string_value(member, &value, &len, error, error_size))
		return false;
	if (len == FL_CHECKPOINT_TIMESTAMP_LEN) {
		memcpy(text, value, len);
		text[len] = '\0';
	}
	if (len != FL_CHECKPOINT_TIMESTAMP_LEN || fl_time_parse(text, &us) != FL_OK ||
	    (fl_time_format(us, again), strcmp(again, text) != 0)) {
		fl_set_error(error, error_size,
			     "%s is not a UTC time with microseconds like "
			     "2026-11-26T21:00:00.201000Z",
			     member->name);
		return false;
	}
	memcpy(ret_timestamp, text, sizeof(text));
	return true;
}

enum fl_status fl_checkpoint_parse_with(const char *text, size_t len, const char *extra,
					char *error, size_t error_size,
					struct fl_checkpoint *ret_checkpoint,
					const char **ret_extra, size_t *ret_extra_len)
{
	enum { TREE_SIZE, ROOT_HASH, TIMESTAMP, KEY_ID, SIG, EXTRA, N };
	struct member m[N] = {[TREE_SIZE] = {.name = "tree_size"},
			      [ROOT_HASH] = {.name = "root_hash"},
			      [TIMESTAMP] = {.name = "timestamp"},
			      [KEY_ID] = {.name = "key_id"},
			      [SIG] = {.name = "sig"},
			      [EXTRA] = {.name = extra}};
	struct fl_checkpoint cp = {0};

	if (!ret_checkpoint || (extra && (!ret_extra || !ret_extra_len)))
		return FL_ERR_INVALID;
	enum fl_status st = scan_members(text, len, m, extra ? N : EXTRA, error, error_size);
	if (st != FL_OK)
		return st;
	for (size_t i = 0; i < (extra ? N : EXTRA); i++)
		if (!required(&m[i], error, error_size))
			return FL_ERR_INVALID;
	if (!u64_value(&m[TREE_SIZE], &cp.tree_size, error, error_size))
		return FL_ERR_INVALID;
	if (cp.tree_size == 0) {
		fl_set_error(error, error_size,
			     "tree_size is 0: the log signs no checkpoint of the empty tree");
		return FL_ERR_INVALID;
	}
	if (!hex_value(&m[ROOT_HASH], cp.root_hash, FL_HASH_LEN, error, error_size) ||
	    !timestamp_value(&m[TIMESTAMP], cp.timestamp, error, error_size) ||
	    !key_id_value(&m[KEY_ID], cp.key_id, error, error_size))
		return FL_ERR_INVALID;
	st = sig_value(&m[SIG], cp.sig, error, error_size);
	if (st != FL_OK)
		return st;
	*ret_checkpoint = cp;
	if (extra) {
		*ret_extra = m[EXTRA].value;
		*ret_extra_len = m[EXTRA].len;
	}
	return FL_OK;
}

enum fl_status fl_checkpoint_parse(const char *text, size_t len, char *error, size_t error_size,
				   struct fl_checkpoint *ret_checkpoint)
{
	return fl_checkpoint_parse_with(text, len, NULL, error, error_size, ret_checkpoint, NULL,
					NULL);
}

/* ---- proofs ---------------------------------------------------------------- */

void fl_proof_hashes_write(struct fl_text *text, const uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	char hex[2 * FL_HASH_LEN + 1];
	fl_text_append(text, "[", 1);
	for (size_t i = 0; i < count; i++) {
		fl_hex_encode(hashes[i], FL_HASH_LEN, hex);
		fl_text_printf(text, "%s\"%s\"", i ? "," : "", hex);
	}
	fl_text_append(text, "]", 1);
}

enum fl_status fl_proof_hashes_parse(const char *text, size_t len, char *error, size_t error_size,
				     uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count = 0, i = 0;

	if (!text || !ret_hashes || !ret_count)
		return FL_ERR_INVALID;
	while (i < len && is_ws(text[i]))
		i++;
	if (i == len || text[i] != '[') {
		fl_set_error(error, error_size, "the proof is not an array of hashes");
		return FL_ERR_INVALID;
	}
	for (i++;;) {
		while (i < len && is_ws(text[i]))
			i++;
		if (i < len && text[i] == ']' && count == 0)
			break;
		if (count == FL_MERKLE_MAX_PROOF) {
			fl_set_error(error, error_size,
				     "the proof has more than %d hashes, more than any proof can "
				     "have",
				     FL_MERKLE_MAX_PROOF);
			return FL_ERR_INVALID;
		}
		/* "<64 lowercase hex digits>" */
		if (len - i < 2 * FL_HASH_LEN + 2 || text[i] != '"' ||
		    text[i + 2 * FL_HASH_LEN + 1] != '"' ||
		    !decode_hex(text + i + 1, 2 * FL_HASH_LEN, hashes[count], FL_HASH_LEN)) {
			fl_set_error(error, error_size,
				     "proof hash %zu is not 64 lowercase hex digits", count + 1);
			return FL_ERR_INVALID;
		}
		count++;
		i += 2 * FL_HASH_LEN + 2;
		while (i < len && is_ws(text[i]))
			i++;
		if (i < len && text[i] == ']')
			break;
		if (i == len || text[i] != ',') {
			fl_set_error(error, error_size, "the proof is not an array of hashes");
			return FL_ERR_INVALID;
		}
		i++;
	}
	for (i++; i < len; i++) {
		if (!is_ws(text[i])) {
			fl_set_error(error, error_size, "text after the proof's closing bracket");
			return FL_ERR_INVALID;
		}
	}
	memcpy(ret_hashes, hashes, count * FL_HASH_LEN);
	*ret_count = count;
	return FL_OK;
}

/* {"<a>":A,"<b>":B,"hashes":[...]} */
static enum fl_status proof_json(const char *name_a, uint64_t a, const char *name_b, uint64_t b,
				 const uint8_t hashes[][FL_HASH_LEN], size_t count, char **ret_json)
{
	struct fl_text text = FL_TEXT_INIT;
	if (!ret_json || count > FL_MERKLE_MAX_PROOF || (count && !hashes))
		return FL_ERR_INVALID;
	fl_text_printf(&text, "{\"%s\":%" PRIu64 ",\"%s\":%" PRIu64 ",\"hashes\":", name_a, a,
		       name_b, b);
	fl_proof_hashes_write(&text, hashes, count);
	fl_text_append(&text, "}", 1);
	char *json = fl_text_take(&text, NULL);
	if (!json)
		return FL_ERR_NOMEM;
	*ret_json = json;
	return FL_OK;
}

enum fl_status fl_inclusion_proof_json(uint64_t leaf_index, uint64_t tree_size,
				       const uint8_t hashes[][FL_HASH_LEN], size_t count,
				       char **ret_json)
{
	return proof_json("leaf_index", leaf_index, "tree_size", tree_size, hashes, count,
			  ret_json);
}

enum fl_status fl_consistency_proof_json(uint64_t first, uint64_t second,
					 const uint8_t hashes[][FL_HASH_LEN], size_t count,
					 char **ret_json)
{
	return proof_json("first", first, "second", second, hashes, count, ret_json);
}

/* The three members of a proof: two sizes and the hashes. */
static enum fl_status proof_parse(const char *text, size_t len, const char *name_a,
				  const char *name_b, char *error, size_t error_size,
				  uint64_t *ret_a, uint64_t *ret_b,
				  uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count)
{
	struct member m[3] = {{.name = name_a}, {.name = name_b}, {.name = "hashes"}};
	enum fl_status st = scan_members(text, len, m, 3, error, error_size);
	if (st != FL_OK)
		return st;
	for (size_t i = 0; i < 3; i++)
		if (!required(&m[i], error, error_size))
			return FL_ERR_INVALID;
	if (!u64_value(&m[0], ret_a, error, error_size) ||
	    !u64_value(&m[1], ret_b, error, error_size))
		return FL_ERR_INVALID;
	return fl_proof_hashes_parse(m[2].value, m[2].len, error, error_size, ret_hashes,
				     ret_count);
}

enum fl_status fl_inclusion_proof_parse(const char *text, size_t len, char *error,
					size_t error_size, struct fl_inclusion_proof *ret_proof)
{
	struct fl_inclusion_proof proof;
	if (!ret_proof)
		return FL_ERR_INVALID;
	enum fl_status st =
	    proof_parse(text, len, "leaf_index", "tree_size", error, error_size, &proof.leaf_index,
			&proof.tree_size, proof.hashes, &proof.count);
	if (st != FL_OK)
		return st;
	if (proof.leaf_index >= proof.tree_size) {
		fl_set_error(error, error_size,
			     "leaf_index %" PRIu64 " is not in a tree of size %" PRIu64,
			     proof.leaf_index, proof.tree_size);
		return FL_ERR_INVALID;
	}
	*ret_proof = proof;
	return FL_OK;
}

enum fl_status fl_consistency_proof_parse(const char *text, size_t len, char *error,
					  size_t error_size, struct fl_consistency_proof *ret_proof)
{
	struct fl_consistency_proof proof;
	if (!ret_proof)
		return FL_ERR_INVALID;
	enum fl_status st = proof_parse(text, len, "first", "second", error, error_size,
					&proof.first, &proof.second, proof.hashes, &proof.count);
	if (st != FL_OK)
		return st;
	if (proof.first == 0 || proof.first > proof.second) {
		fl_set_error(error, error_size,
			     "a consistency proof from tree size %" PRIu64 " to %" PRIu64
			     ": it needs 1 <= first <= second",
			     proof.first, proof.second);
		return FL_ERR_INVALID;
	}
	*ret_proof = proof;
	return FL_OK;
}
