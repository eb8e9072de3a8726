/*
 * The formats of the audit bundle (see bundle.h): public keys, log lines,
 * checkpoints with their consistency proofs, inclusion proofs, the README,
 * and the checks one line or one checkpoint must pass.
 */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eventlog/merkle.h"
#include "eventlog/signer.h"
#include "fledger/util.h"

const char *fl_bundle_log_name(enum fl_bundle_log log)
{
	return log == FL_BUNDLE_LOG_READS ? "reads" : "events";
}

const char *fl_bundle_log_prefix(enum fl_bundle_log log)
{
	return log == FL_BUNDLE_LOG_READS ? FL_READ_CHECKPOINT_PREFIX : FL_CHECKPOINT_PREFIX;
}

/* True when text is exactly len lowercase hex digits. */
static bool lower_hex(const char *text, size_t len)
{
	if (strlen(text) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
			return false;
	return true;
}

/* A member that must be a string; NULL (with why) when it is not. */
static const char *string_member(const json_t *obj, const char *name, char *error,
				 size_t error_size)
{
	const json_t *value = json_object_get(obj, name);
	if (!json_is_string(value)) {
		fl_set_error(error, error_size, value ? "%s is not a string" : "%s is missing",
			     name);
		return NULL;
	}
	return json_string_value(value);
}

/* A key id member: 16 lowercase hex digits. */
static bool key_id_member(const json_t *obj, char ret_key_id[FL_KEY_ID_HEX_LEN], char *error,
			  size_t error_size)
{
	const char *text = string_member(obj, "key_id", error, error_size);
	if (!text)
		return false;
	if (!lower_hex(text, FL_KEY_ID_HEX_LEN - 1)) {
		fl_set_error(error, error_size, "key_id is not %d lowercase hex digits",
			     FL_KEY_ID_HEX_LEN - 1);
		return false;
	}
	memcpy(ret_key_id, text, FL_KEY_ID_HEX_LEN);
	return true;
}

/* ---- keys ---------------------------------------------------------------- */

struct bundle_key {
	char key_id[FL_KEY_ID_HEX_LEN];
	uint8_t pub[FL_PUBKEY_LEN];
};

struct fl_bundle_keys {
	struct bundle_key *items;
	size_t count, cap;
};

static struct bundle_key *find_key(const struct fl_bundle_keys *keys, const char *key_id)
{
	for (size_t i = 0; i < keys->count; i++)
		if (strcmp(keys->items[i].key_id, key_id) == 0)
			return &keys->items[i];
	return NULL;
}

/*
 * Adds every key of doc. With merge, a key id seen before is skipped if its
 * key is the same; without, any repeated key id is an error.
 */
static enum fl_status add_keys(struct fl_bundle_keys *keys, const json_t *doc, bool merge,
			       char *error, size_t error_size)
{
	const json_t *list = json_is_object(doc) ? json_object_get(doc, "keys") : NULL;
	size_t index;
	const json_t *item;
	char reason[160];

	if (!json_is_array(list)) {
		fl_set_error(error, error_size, "not an object with a \"keys\" array");
		return FL_ERR_INVALID;
	}
	json_array_foreach(list, index, item)
	{
		struct bundle_key key;
		const char *alg, *pem;
		char actual_id[FL_KEY_ID_HEX_LEN];

		if (!json_is_object(item)) {
			fl_set_error(error, error_size, "key %zu is not an object", index + 1);
			return FL_ERR_INVALID;
		}
		if (!key_id_member(item, key.key_id, reason, sizeof(reason)) ||
		    !(alg = string_member(item, "alg", reason, sizeof(reason))) ||
		    !(pem = string_member(item, "public_key_pem", reason, sizeof(reason)))) {
			fl_set_error(error, error_size, "key %zu: %s", index + 1, reason);
			return FL_ERR_INVALID;
		}
		if (strcmp(alg, "ed25519") != 0) {
			fl_set_error(error, error_size, "key %s: alg is \"%s\", not \"ed25519\"",
				     key.key_id, alg);
			return FL_ERR_INVALID;
		}
		if (fl_pubkey_from_pem(pem, strlen(pem), key.pub) != FL_OK) {
			fl_set_error(error, error_size,
				     "key %s: public_key_pem is not an Ed25519 public key",
				     key.key_id);
			return FL_ERR_INVALID;
		}
		/* Only the canonical PEM text: no two texts may stand for one key. */
		char *canonical;
		if (fl_pubkey_to_pem(key.pub, &canonical) != FL_OK)
			return FL_ERR_NOMEM;
		bool same = strcmp(canonical, pem) == 0;
		free(canonical);
		if (!same) {
			fl_set_error(error, error_size,
				     "key %s: public_key_pem is not in its canonical PEM form",
				     key.key_id);
			return FL_ERR_INVALID;
		}
		fl_key_id_of(key.pub, actual_id);
		if (strcmp(actual_id, key.key_id) != 0) {
			fl_set_error(error, error_size, "key %s: the PEM key's id is %s",
				     key.key_id, actual_id);
			return FL_ERR_INVALID;
		}
		const struct bundle_key *known = find_key(keys, key.key_id);
		if (known && !merge) {
			fl_set_error(error, error_size, "key %s appears twice", key.key_id);
			return FL_ERR_INVALID;
		}
		if (known)
			continue; /* same id, so the same key: the id was checked above */
		if (keys->count == keys->cap) {
			size_t cap = keys->cap ? 2 * keys->cap : 8;
			struct bundle_key *grown = realloc(keys->items, cap * sizeof(*grown));
			if (!grown)
				return FL_ERR_NOMEM;
			keys->items = grown;
			keys->cap = cap;
		}
		keys->items[keys->count++] = key;
	}
	return FL_OK;
}

enum fl_status fl_bundle_keys_parse(const json_t *doc, char *error, size_t error_size,
				    struct fl_bundle_keys **ret_keys)
{
	struct fl_bundle_keys *keys;
	if (!ret_keys)
		return FL_ERR_INVALID;
	if (!(keys = calloc(1, sizeof(*keys))))
		return FL_ERR_NOMEM;
	enum fl_status st = add_keys(keys, doc, false, error, error_size);
	if (st != FL_OK) {
		fl_bundle_keys_destroy(keys);
		return st;
	}
	*ret_keys = keys;
	return FL_OK;
}

enum fl_status fl_bundle_keys_merge(struct fl_bundle_keys *keys, const json_t *doc, char *error,
				    size_t error_size)
{
	if (!keys)
		return FL_ERR_INVALID;
	return add_keys(keys, doc, true, error, error_size);
}

void fl_bundle_keys_destroy(struct fl_bundle_keys *keys)
{
	if (!keys)
		return;
	free(keys->items);
	free(keys);
}

size_t fl_bundle_keys_count(const struct fl_bundle_keys *keys)
{
	return keys ? keys->count : 0;
}

const char *fl_bundle_keys_id(const struct fl_bundle_keys *keys, size_t index)
{
	return keys && index < keys->count ? keys->items[index].key_id : NULL;
}

bool fl_bundle_keys_find(const struct fl_bundle_keys *keys, const char *key_id,
			 uint8_t ret_pub[FL_PUBKEY_LEN])
{
	const struct bundle_key *key = keys && key_id ? find_key(keys, key_id) : NULL;
	if (!key)
		return false;
	memcpy(ret_pub, key->pub, FL_PUBKEY_LEN);
	return true;
}

enum fl_status fl_bundle_keys_json(const struct fl_bundle_keys *keys, char **ret_text,
				   size_t *ret_len)
{
	size_t cap = 64, len;
	char *text;

	if (!keys || !ret_text)
		return FL_ERR_INVALID;
	cap += keys->count * 512;
	if (!(text = malloc(cap)))
		return FL_ERR_NOMEM;
	len = (size_t)snprintf(text, cap, "{\"keys\":[\n");
	for (size_t i = 0; i < keys->count; i++) {
		char *pem;
		if (fl_pubkey_to_pem(keys->items[i].pub, &pem) != FL_OK) {
			free(text);
			return FL_ERR_NOMEM;
		}
		json_t *obj = json_pack("{s:s,s:s,s:s}", "key_id", keys->items[i].key_id, "alg",
					"ed25519", "public_key_pem", pem);
		char *line = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(obj);
		free(pem);
		if (!line || len + strlen(line) + 8 > cap) {
			free(line);
			free(text);
			return FL_ERR_NOMEM;
		}
		len += (size_t)snprintf(text + len, cap - len, "%s%s\n", line,
					i + 1 < keys->count ? "," : "");
		free(line);
	}
	len += (size_t)snprintf(text + len, cap - len, "]}\n");
	*ret_text = text;
	if (ret_len)
		*ret_len = len;
	return FL_OK;
}

/* ---- lines ---------------------------------------------------------------- */

bool fl_bundle_line_check(const struct fl_log_line *line, const struct fl_bundle_keys *keys,
			  char *error, size_t error_size)
{
	uint8_t pub[FL_PUBKEY_LEN];

	if (!fl_log_line_holds(line, error, error_size))
		return false;
	if (!line->has_sig)
		return true; /* format v2: proven by inclusion under a signed checkpoint */
	if (!fl_bundle_keys_find(keys, line->key_id, pub)) {
		fl_set_error(error, error_size, "seq %" PRIu64 ": unknown key_id %s", line->seq,
			     line->key_id);
		return false;
	}
	if (!fl_log_line_sig_verify(line, pub)) {
		fl_set_error(error, error_size,
			     "seq %" PRIu64 ": the signature does not verify with key %s",
			     line->seq, line->key_id);
		return false;
	}
	return true;
}

/* True, with its µs, when text is a time in exactly the form fl_time_format prints. */
static bool fixed_time(const char *text, int64_t *ret_us)
{
	char again[FL_TIME_TEXT_LEN];
	int64_t us;
	if (!text || fl_time_parse(text, &us) != FL_OK)
		return false;
	fl_time_format(us, again);
	if (strcmp(again, text) != 0)
		return false;
	*ret_us = us;
	return true;
}

bool fl_bundle_line_time(const struct fl_log_line *line, enum fl_bundle_log log, char *error,
			 size_t error_size, int64_t *ret_us)
{
	const char *member = log == FL_BUNDLE_LOG_READS ? "ts" : "ingest_ts";
	json_t *body = json_loadb((const char *)line->body, line->body_len, 0, NULL);
	const char *text = json_string_value(json_object_get(body, member));
	int64_t us;
	bool ok = fixed_time(text, &us);
	if (ok)
		*ret_us = us;
	else
		fl_set_error(error, error_size,
			     "seq %" PRIu64
			     ": the body has no %s time like 2027-01-15T08:00:00.000000Z",
			     line->seq, member);
	json_decref(body);
	return ok;
}

enum fl_status fl_bundle_range_json(int64_t from_us, int64_t to_us, char **ret_text,
				    size_t *ret_len)
{
	char from[FL_TIME_TEXT_LEN], to[FL_TIME_TEXT_LEN];
	if (!ret_text || !ret_len || from_us > to_us)
		return FL_ERR_INVALID;
	fl_time_format(from_us, from);
	fl_time_format(to_us, to);
	size_t cap = 2 * FL_TIME_TEXT_LEN + 32;
	char *text = malloc(cap);
	if (!text)
		return FL_ERR_NOMEM;
	*ret_len = (size_t)snprintf(text, cap, "{\"from\":\"%s\",\"to\":\"%s\"}\n", from, to);
	*ret_text = text;
	return FL_OK;
}

bool fl_bundle_range_from_json(const json_t *doc, char *error, size_t error_size,
			       int64_t *ret_from_us, int64_t *ret_to_us)
{
	int64_t from, to;
	if (!json_is_object(doc) || json_object_size(doc) != 2) {
		fl_set_error(error, error_size, "not an object of exactly from and to");
		return false;
	}
	if (!fixed_time(json_string_value(json_object_get(doc, "from")), &from) ||
	    !fixed_time(json_string_value(json_object_get(doc, "to")), &to)) {
		fl_set_error(error, error_size,
			     "from and to must be times like 2027-01-15T08:00:00.000000Z");
		return false;
	}
	if (from > to) {
		fl_set_error(error, error_size, "from is after to");
		return false;
	}
	*ret_from_us = from;
	*ret_to_us = to;
	return true;
}

/* ---- checkpoints and proofs ------------------------------------------------- */

bool fl_bundle_checkpoint_check(enum fl_bundle_log log, const struct fl_checkpoint *checkpoint,
				const struct fl_bundle_keys *keys, char *error, size_t error_size)
{
	uint8_t pub[FL_PUBKEY_LEN];
	if (!fl_bundle_keys_find(keys, checkpoint->key_id, pub)) {
		fl_set_error(error, error_size,
			     "checkpoint of tree size %" PRIu64 ": unknown key_id %s",
			     checkpoint->tree_size, checkpoint->key_id);
		return false;
	}
	if (!fl_checkpoint_verify(fl_bundle_log_prefix(log), checkpoint, pub)) {
		fl_set_error(error, error_size,
			     "checkpoint of tree size %" PRIu64
			     ": the signature over its %s text does not "
			     "verify with key %s",
			     checkpoint->tree_size, fl_bundle_log_prefix(log), checkpoint->key_id);
		return false;
	}
	return true;
}

/* Appends ,"name":[hex,...]} to the JSON object text json (whose '}' goes). */
static enum fl_status append_hashes(const char *json, const char *name,
				    const uint8_t hashes[][FL_HASH_LEN], size_t count,
				    char **ret_line)
{
	struct fl_text line = FL_TEXT_INIT;
	fl_text_append(&line, json, strlen(json) - 1); /* without the closing brace */
	fl_text_printf(&line, ",\"%s\":", name);
	fl_proof_hashes_write(&line, hashes, count);
	fl_text_append(&line, "}", 1);
	char *text = fl_text_take(&line, NULL);
	if (!text)
		return FL_ERR_NOMEM;
	*ret_line = text;
	return FL_OK;
}

enum fl_status fl_bundle_checkpoint_line(const struct fl_checkpoint *checkpoint,
					 const uint8_t consistency[][FL_HASH_LEN], size_t count,
					 char **ret_line)
{
	char *json;
	if (!checkpoint || !ret_line || (count && !consistency) || count > FL_MERKLE_MAX_PROOF)
		return FL_ERR_INVALID;
	enum fl_status st = fl_checkpoint_json(checkpoint, &json);
	if (st != FL_OK)
		return st;
	st = append_hashes(json, "consistency", consistency, count, ret_line);
	free(json);
	return st;
}

enum fl_status fl_bundle_inclusion_line(enum fl_bundle_log log, uint64_t seq, uint64_t tree_size,
					const uint8_t hashes[][FL_HASH_LEN], size_t count,
					char **ret_line)
{
	char head[128];
	if (!ret_line || (count && !hashes) || count > FL_MERKLE_MAX_PROOF)
		return FL_ERR_INVALID;
	snprintf(head, sizeof(head),
		 "{\"log\":\"%s\",\"seq\":%" PRIu64 ",\"tree_size\":%" PRIu64 "}",
		 fl_bundle_log_name(log), seq, tree_size);
	return append_hashes(head, "hashes", hashes, count, ret_line);
}

/* ---- files ------------------------------------------------------------------ */

enum fl_status fl_bundle_write_file(const char *path, const char *data, size_t len, unsigned mode)
{
	size_t path_len = strlen(path);
	char *tmp = malloc(path_len + 16);
	if (!tmp)
		return FL_ERR_NOMEM;
	snprintf(tmp, path_len + 16, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		free(tmp);
		return FL_ERR_IO;
	}
	bool ok = fchmod(fd, (mode_t)mode) == 0;
	for (size_t done = 0; ok && done < len;) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		if (ok)
			done += (size_t)n;
	}
	ok = ok && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (!ok) {
		int saved = errno;
		unlink(tmp);
		errno = saved;
	}
	free(tmp);
	return ok ? FL_OK : FL_ERR_IO;
}

/* ---- README ------------------------------------------------------------------ */

static const char readme_checks[] =
    "## What is in it\n"
    "\n"
    "| file | content |\n"
    "|---|---|\n"
    "| `events.ndjson` | lines of the event log (command-svc) whose `ingest_ts` is in range, "
    "view and key events included, ascending and contiguous in `seq` (a line whose time "
    "lies just outside the range can sit among them where two requests' times and seqs "
    "crossed) |\n"
    "| `reads.ndjson` | lines of the read-audit log (query-svc) whose `ts` is in range, the "
    "same way |\n"
    "| `event-checkpoints.ndjson` | signed checkpoints of the event log: the oldest one that "
    "covers the first exported line, then the latest at export time; each carries "
    "`\"consistency\"`, the RFC 9162 consistency proof from the line before (`[]` on the "
    "first line) |\n"
    "| `read-checkpoints.ndjson` | the same for the read-audit log |\n"
    "| `key-checkpoints.ndjson` | for each key event (`\"kind\":\"key\"`) among the exported "
    "and boundary lines, the signed checkpoint of its commit, which the key it replaces "
    "signed, with `\"consistency\"` from it to the last line of `event-checkpoints.ndjson` "
    "(empty when there is no key event) |\n"
    "| `range.json` | the exported range, `{\"from\":\"...\",\"to\":\"...\"}` |\n"
    "| `event-boundaries.ndjson` | the event-log line just before the range and the one just "
    "after it, where they exist: they prove that no line of the range was left out (step 5) "
    "|\n"
    "| `read-boundaries.ndjson` | the same for the read-audit log |\n"
    "| `inclusion.ndjson` | one RFC 9162 inclusion proof per exported and boundary line, "
    "against the **last** checkpoint of its log: `{\"log\":\"events\"\\|\"reads\",\"seq\":N,"
    "\"tree_size\":M,\"hashes\":[...]}` (events first, then reads, each in ascending "
    "`seq`) |\n"
    "| `keys.json` | every public key of both services (`{\"keys\":[...]}`, one key a line) "
    "|\n"
    "\n"
    "A line is `{\"seq\":N,\"body\":\"<base64 of B>\",\"leaf_hash\":\"<hex>\"}` where "
    "`B` is the exact JSON the service stored and `leaf_hash = SHA-256(0x00 || B)`. Lines are "
    "not signed one by one: signatures are per commit, and a line is proven by its inclusion "
    "proof (step 3) against a signed checkpoint (step 2). Lines written by the first log "
    "format also carry `\"key_id\":\"<hex>\",\"sig\":\"<base64>\"`, where `sig` is "
    "Ed25519 over the 32 raw bytes of `leaf_hash`; such a signature is checked too (step 1). "
    "A checkpoint's `sig` is Ed25519 over the text\n"
    "`<prefix>\\n<tree_size>\\n<root_hash>\\n<timestamp>\\n`, with the prefix\n"
    "`fledger-checkpoint-v1` for the event log and `fledger-read-checkpoint-v1` for the\n"
    "read-audit log. Trees are RFC 6962 Merkle trees: leaf index = seq - 1, interior\n"
    "node = SHA-256(0x01 || left || right).\n"
    "\n"
    "## Checking everything at once\n"
    "\n"
    "    fledger audit verify .\n"
    "\n"
    "checks every hash, signature, consistency and inclusion proof, and that no line of\n"
    "the range was left out (step 5), offline, and names the first bad item. The keys\n"
    "in `keys.json` come with the bundle: compare their ids\n"
    "with the ones you know from elsewhere (the services' `/v1/keys`, a published\n"
    "list) before you trust anything they sign.\n"
    "\n"
    "## Checking by hand with openssl, base64 and sha256sum\n"
    "\n"
    "Run the blocks below with bash in this directory (GNU coreutils and sed; no other\n"
    "tool). Each prints `OK ...` or `Signature Verified Successfully` when the item is\n"
    "good. A helper turns a key id into a PEM file:\n"
    "\n"
    "```sh\n"
    "pem_of() {  # pem_of KEY_ID > key.pem\n"
    "  grep \"\\\"key_id\\\":\\\"$1\\\"\" keys.json |\n"
    "    sed 's/.*\"public_key_pem\":\"\\([^\"]*\\)\".*/\\1/; s/\\\\n/\\n/g'\n"
    "}\n"
    "field() {  # field NAME <<< \"$line\": a string or number member of a line\n"
    "  sed -n \"s/.*\\\"$1\\\":\\\"\\{0,1\\}\\([^\\\",]*\\).*/\\1/p\"\n"
    "}\n"
    "```\n"
    "\n"
    "### 1. A line: its leaf hash (and the signature of a line of the first format)\n"
    "\n"
    "Take a line (here the first of `events.ndjson`; any line of `reads.ndjson` works the\n"
    "same):\n"
    "\n"
    "```sh\n"
    "line=$(sed -n 1p events.ndjson)\n"
    "field body <<< \"$line\" | base64 -d > body.bin\n"
    "head -c 60 body.bin; echo ...\n"
    "leaf=$( (printf '\\000'; cat body.bin) | sha256sum | cut -d' ' -f1)\n"
    "[ \"$leaf\" = \"$(field leaf_hash <<< \"$line\")\" ] && echo \"OK leaf hash $leaf\"\n"
    "if [ -n \"$(field sig <<< \"$line\")\" ]; then  # a line of the first format\n"
    "  pem_of \"$(field key_id <<< \"$line\")\" > key.pem\n"
    "  printf \"$(echo \"$leaf\" | sed 's/../\\\\x&/g')\" > leaf.bin  # the 32 raw bytes\n"
    "  field sig <<< \"$line\" | base64 -d > sig.bin\n"
    "  openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in leaf.bin -sigfile sig.bin\n"
    "else\n"
    "  echo \"OK no line signature (format v2): steps 2 and 3 prove the line\"\n"
    "fi\n"
    "```\n"
    "\n"
    "The body must also start with `{\"seq\":N,` where N is the line's `seq`.\n"
    "\n"
    "### 2. A checkpoint: its signature\n"
    "\n"
    "The last line of `event-checkpoints.ndjson` (use `fledger-read-checkpoint-v1` for\n"
    "`read-checkpoints.ndjson`):\n"
    "\n"
    "```sh\n"
    "cp=$(tail -n 1 event-checkpoints.ndjson)\n"
    "printf 'fledger-checkpoint-v1\\n%s\\n%s\\n%s\\n' \"$(field tree_size <<< \"$cp\")\" \\\n"
    "  \"$(field root_hash <<< \"$cp\")\" \"$(field timestamp <<< \"$cp\")\" > checkpoint.txt\n"
    "cat checkpoint.txt\n"
    "pem_of \"$(field key_id <<< \"$cp\")\" > key.pem\n"
    "field sig <<< \"$cp\" | base64 -d > checkpoint.sig\n"
    "openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in checkpoint.txt "
    "-sigfile checkpoint.sig\n"
    "```\n"
    "\n"
    "### 3. An inclusion proof: the line is in the checkpoint's tree\n"
    "\n"
    "The proof of the line of step 1 (its `seq`) folds its leaf hash up to the root of the\n"
    "last checkpoint of step 2 (RFC 9162 §2.1.3.2):\n"
    "\n"
    "```sh\n"
    "node() {  # node LEFT RIGHT: SHA-256(0x01 || left || right), hex in and out\n"
    "  (printf '\\001'; printf \"$(echo \"$1$2\" | sed 's/../\\\\x&/g')\") | sha256sum | "
    "cut -d' ' -f1\n"
    "}\n"
    "seq=$(field seq <<< \"$line\")\n"
    "proof=$(grep \"^{\\\"log\\\":\\\"events\\\",\\\"seq\\\":$seq,\" inclusion.ndjson)\n"
    "size=$(field tree_size <<< \"$proof\")\n"
    "[ \"$size\" = \"$(field tree_size <<< \"$cp\")\" ] && echo \"OK proof against tree size "
    "$size\"\n"
    "fn=$((seq - 1)); sn=$((size - 1)); r=$leaf\n"
    "for p in $(echo \"$proof\" | sed 's/.*\"hashes\":\\[\\(.*\\)\\].*/\\1/' | tr -d '\"' | "
    "tr ',' ' '); do\n"
    "  if [ $sn -eq 0 ]; then r=too-long; break; fi\n"
    "  if [ $((fn & 1)) -eq 1 ] || [ $fn -eq $sn ]; then\n"
    "    r=$(node \"$p\" \"$r\")\n"
    "    while [ $((fn & 1)) -eq 0 ] && [ $fn -ne 0 ]; do fn=$((fn >> 1)); sn=$((sn >> 1)); "
    "done\n"
    "  else\n"
    "    r=$(node \"$r\" \"$p\")\n"
    "  fi\n"
    "  fn=$((fn >> 1)); sn=$((sn >> 1))\n"
    "done\n"
    "[ $sn -eq 0 ] && [ \"$r\" = \"$(field root_hash <<< \"$cp\")\" ] && echo \"OK seq $seq is "
    "in the tree of size $size\"\n"
    "```\n"
    "\n"
    "### 4. Consistency between checkpoints\n"
    "\n"
    "Each later line of a checkpoint file proves that its tree extends the tree of the\n"
    "line before (nothing was removed or rewritten): RFC 9162 §2.1.4.2 over its\n"
    "`consistency` hashes. `fledger audit verify` checks it; by hand it is the same kind\n"
    "of fold as step 3, with both roots carried along.\n"
    "\n"
    "A key event (`\"kind\":\"key\"`) introduces the key that signs later checkpoints.\n"
    "Trust that key only when the line of `key-checkpoints.ndjson` whose `tree_size` is\n"
    "at least the key event's `seq` (the first such line) verifies with step 2 under the\n"
    "key the event names as `previous_key_id` (a key you already trust), and its\n"
    "`consistency` hashes lead to the last event checkpoint as above: that checkpoint\n"
    "covers the key event's line.\n"
    "\n"
    "### 5. Completeness: no line of the range was left out\n"
    "\n"
    "`range.json` holds the exported range. For each log the bundle holds, besides the\n"
    "lines of the range, its boundary lines (`event-boundaries.ndjson`,\n"
    "`read-boundaries.ndjson`): the last line before the range (its time, `ingest_ts`\n"
    "for events and `ts` for reads, is before `from`) and the first line after it (its\n"
    "time is after `to`). Check each boundary line with steps 1 and 3 like any line\n"
    "(`line=$(sed -n 1p event-boundaries.ndjson)`, then its second line). Then the\n"
    "seqs from the line before to the line after must all be there, once; without a\n"
    "line before, the first seq must be 1; without a line after, the last seq must be\n"
    "the tree size of the last checkpoint (the range reaches the end of the log as that\n"
    "checkpoint saw it; lines appended later are not covered).\n"
    "\n"
    "```sh\n"
    "ts_of() {  # ts_of MEMBER <<< \"$line\": the time MEMBER (ingest_ts, ts) of the body\n"
    "  field body | base64 -d | grep -o \"\\\"$1\\\":\\\"[^\\\"]*\\\"\" | head -n 1 | cut -d'\"' "
    "-f4\n"
    "}\n"
    "complete() {  # complete events|reads\n"
    "  case $1 in events) p=event m=ingest_ts ;; *) p=read m=ts ;; esac\n"
    "  from=$(field from < range.json); to=$(field to < range.json)\n"
    "  size=$(tail -n 1 $p-checkpoints.ndjson | field tree_size)\n"
    "  seqs=$(cat $p-boundaries.ndjson $1.ndjson | sed 's/^{\"seq\":\\([0-9]*\\),.*/\\1/' | sort "
    "-n)\n"
    "  if [ -z \"$seqs\" ]; then\n"
    "    if [ -z \"$size\" ]; then echo \"OK $1: the log is empty\"; else\n"
    "      echo \"BAD $1: no line at all, but the log has $size\"; fi\n"
    "    return\n"
    "  fi\n"
    "  first=$(head -n 1 <<< \"$seqs\"); last=$(tail -n 1 <<< \"$seqs\")\n"
    "  if [ \"$seqs\" != \"$(seq \"$first\" \"$last\")\" ]; then\n"
    "    echo \"BAD $1: a seq between $first and $last is missing or repeated\"; return\n"
    "  fi\n"
    "  before=none; after=none\n"
    "  while read -r b; do\n"
    "    t=$(ts_of $m <<< \"$b\"); s=$(field seq <<< \"$b\")\n"
    "    if [[ $t < $from ]]; then before=$s; elif [[ $t > $to ]]; then after=$s; else\n"
    "      echo \"BAD $1: the boundary line seq $s ($t) lies in the range\"; return; fi\n"
    "  done < $p-boundaries.ndjson\n"
    "  if [ $before = none ] && [ \"$first\" != 1 ]; then\n"
    "    echo \"BAD $1: no line before the range, and the first seq is $first, not 1\"; return; "
    "fi\n"
    "  if [ $before != none ] && [ \"$before\" != \"$first\" ]; then\n"
    "    echo \"BAD $1: the line before the range, seq $before, is not the first\"; return; fi\n"
    "  if [ $after = none ] && [ \"$last\" != \"$size\" ]; then\n"
    "    echo \"BAD $1: no line after the range, and the last seq $last < tree size $size\"; "
    "return; fi\n"
    "  if [ $after != none ] && [ \"$after\" != \"$last\" ]; then\n"
    "    echo \"BAD $1: the line after the range, seq $after, is not the last\"; return; fi\n"
    "  echo \"OK $1: seqs $first to $last, none missing (before the range: $before, after it: "
    "$after)\"\n"
    "}\n"
    "complete events\n"
    "complete reads\n"
    "```\n"
    "\n"
    "Clean up with `rm -f body.bin leaf.bin sig.bin key.pem checkpoint.txt checkpoint.sig`.\n";

enum fl_status fl_bundle_write_readme(const char *dir, const struct fl_bundle_info *info)
{
	char *text = NULL, *path = NULL;
	size_t len = 0;
	enum fl_status st = FL_ERR_NOMEM;

	if (!dir || !info)
		return FL_ERR_INVALID;
	FILE *out = open_memstream(&text, &len);
	if (!out)
		return FL_ERR_NOMEM;
	fprintf(out,
		"# fledger audit bundle\n"
		"\n"
		"Exported at %s by `fledger audit export`: the event-log\n"
		"lines whose `ingest_ts` and the read-audit lines whose `ts` lie in\n"
		"[%s, %s].\n"
		"\n"
		"- event log%s%s: %" PRIu64 " lines, last checkpoint at tree size %" PRIu64 "\n"
		"- read-audit log%s%s: %" PRIu64 " lines, last checkpoint at tree size %" PRIu64
		"\n\n",
		info->exported_at ? info->exported_at : "?", info->from ? info->from : "?",
		info->to ? info->to : "?", info->command_url ? " of " : "",
		info->command_url ? info->command_url : "", info->event_lines,
		info->event_tree_size, info->query_url ? " of " : "",
		info->query_url ? info->query_url : "", info->read_lines, info->read_tree_size);
	fputs(readme_checks, out);
	if (fclose(out) != 0 || !text) {
		free(text);
		return FL_ERR_NOMEM;
	}
	if ((path = malloc(strlen(dir) + sizeof(FL_BUNDLE_README) + 2))) {
		sprintf(path, "%s/%s", dir, FL_BUNDLE_README);
		st = fl_bundle_write_file(path, text, len, 0644);
	}
	free(path);
	free(text);
	return st;
}
