/*
 * The set of trusted log keys and the rules that grow it (see trust.h).
 */
#include "eventlog/trust.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fledger/util.h"

#define PEM_BEGIN "-----BEGIN PUBLIC KEY-----"
#define PEM_END "-----END PUBLIC KEY-----"
#define MAX_FILE_BYTES (1 << 20)

struct trust_key {
	char key_id[FL_KEY_ID_HEX_LEN];
	uint8_t pub[FL_PUBKEY_LEN];
	uint64_t seq; /* announced keys: the seq of the key event */
};

struct fl_trust {
	struct trust_key *trusted, *announced;
	size_t n_trusted, n_announced;
};

enum fl_status fl_trust_create(struct fl_trust **ret_trust)
{
	struct fl_trust *trust;
	if (!ret_trust)
		return FL_ERR_INVALID;
	trust = calloc(1, sizeof(*trust));
	if (!trust)
		return FL_ERR_NOMEM;
	*ret_trust = trust;
	return FL_OK;
}

void fl_trust_destroy(struct fl_trust *trust)
{
	if (!trust)
		return;
	free(trust->trusted);
	free(trust->announced);
	free(trust);
}

static struct trust_key *find_in(struct trust_key *keys, size_t n, const char *key_id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].key_id, key_id) == 0)
			return &keys[i];
	return NULL;
}

static enum fl_status push(struct trust_key **keys, size_t *n, const uint8_t pub[FL_PUBKEY_LEN],
			   uint64_t seq)
{
	struct trust_key *grown = realloc(*keys, (*n + 1) * sizeof(*grown));
	if (!grown)
		return FL_ERR_NOMEM;
	*keys = grown;
	fl_key_id_of(pub, grown[*n].key_id);
	memcpy(grown[*n].pub, pub, FL_PUBKEY_LEN);
	grown[*n].seq = seq;
	(*n)++;
	return FL_OK;
}

enum fl_status fl_trust_add(struct fl_trust *trust, const uint8_t pub[FL_PUBKEY_LEN])
{
	char key_id[FL_KEY_ID_HEX_LEN];
	if (!trust || !pub)
		return FL_ERR_INVALID;
	fl_key_id_of(pub, key_id);
	if (find_in(trust->trusted, trust->n_trusted, key_id))
		return FL_OK;
	return push(&trust->trusted, &trust->n_trusted, pub, 0);
}

size_t fl_trust_count(const struct fl_trust *trust)
{
	return trust ? trust->n_trusted : 0;
}

const char *fl_trust_key_id(const struct fl_trust *trust, size_t index)
{
	return trust && index < trust->n_trusted ? trust->trusted[index].key_id : NULL;
}

const uint8_t *fl_trust_find(const struct fl_trust *trust, const char *key_id)
{
	if (!trust || !key_id)
		return NULL;
	struct trust_key *key = find_in(trust->trusted, trust->n_trusted, key_id);
	return key ? key->pub : NULL;
}

/* Reads a whole small file. FL_ERR_NOT_FOUND, FL_ERR_INVALID (too large), FL_ERR_IO. */
static enum fl_status read_file(const char *path, char **ret_text, size_t *ret_len)
{
	FILE *file = fopen(path, "rb");
	if (!file)
		return errno == ENOENT ? FL_ERR_NOT_FOUND : FL_ERR_IO;
	char *text = malloc(MAX_FILE_BYTES + 1);
	if (!text) {
		fclose(file);
		return FL_ERR_NOMEM;
	}
	size_t len = fread(text, 1, MAX_FILE_BYTES + 1, file);
	bool failed = ferror(file);
	fclose(file);
	if (failed || len > MAX_FILE_BYTES) {
		free(text);
		return failed ? FL_ERR_IO : FL_ERR_INVALID;
	}
	text[len] = '\0';
	*ret_text = text;
	*ret_len = len;
	return FL_OK;
}

enum fl_status fl_trust_load_file(struct fl_trust *trust, const char *path)
{
	char *text;
	size_t len, n_found = 0;
	enum fl_status st;
	struct trust_key *found = NULL;

	if (!trust || !path)
		return FL_ERR_INVALID;
	if ((st = read_file(path, &text, &len)) != FL_OK)
		return st;
	/* Every PEM block must be an Ed25519 public key; text between blocks
	 * (comments) is allowed, as openssl allows it. */
	for (const char *p = text; (p = strstr(p, "-----BEGIN ")) != NULL;) {
		const char *end = strstr(p, PEM_END);
		uint8_t pub[FL_PUBKEY_LEN];
		if (strncmp(p, PEM_BEGIN, strlen(PEM_BEGIN)) != 0 || !end) {
			st = FL_ERR_INVALID;
			break;
		}
		end += strlen(PEM_END);
		if (fl_pubkey_from_pem(p, (size_t)(end - p), pub) != FL_OK) {
			st = FL_ERR_INVALID;
			break;
		}
		if ((st = push(&found, &n_found, pub, 0)) != FL_OK)
			break;
		p = end;
	}
	if (st == FL_OK && n_found == 0)
		st = FL_ERR_INVALID;
	for (size_t i = 0; st == FL_OK && i < n_found; i++)
		st = fl_trust_add(trust, found[i].pub);
	free(found);
	free(text);
	return st;
}

enum fl_status fl_trust_save_file(const struct fl_trust *trust, const char *path)
{
	if (!trust || !path)
		return FL_ERR_INVALID;
	size_t tmp_len = strlen(path) + 8;
	char *tmp = malloc(tmp_len);
	if (!tmp)
		return FL_ERR_NOMEM;
	snprintf(tmp, tmp_len, "%s.new", path);
	enum fl_status st = FL_OK;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(tmp);
		return FL_ERR_IO;
	}
	for (size_t i = 0; st == FL_OK && i < trust->n_trusted; i++) {
		char *pem = NULL;
		st = fl_pubkey_to_pem(trust->trusted[i].pub, &pem);
		if (st != FL_OK)
			break;
		size_t len = strlen(pem);
		if (write(fd, pem, len) != (ssize_t)len)
			st = FL_ERR_IO;
		free(pem);
	}
	if (st == FL_OK && fsync(fd) != 0)
		st = FL_ERR_IO;
	if (close(fd) != 0 && st == FL_OK)
		st = FL_ERR_IO;
	if (st == FL_OK && rename(tmp, path) != 0)
		st = FL_ERR_IO;
	if (st != FL_OK)
		unlink(tmp);
	free(tmp);
	return st;
}

enum fl_status fl_trust_promote(struct fl_trust *trust, uint64_t tree_size, bool *ret_new_key)
{
	size_t kept = 0;
	if (!trust)
		return FL_ERR_INVALID;
	enum fl_status st = FL_OK;
	for (size_t i = 0; i < trust->n_announced; i++) {
		struct trust_key *key = &trust->announced[i];
		if (st == FL_OK && key->seq <= tree_size) {
			bool known = fl_trust_find(trust, key->key_id) != NULL;
			st = fl_trust_add(trust, key->pub);
			if (st == FL_OK && !known && ret_new_key)
				*ret_new_key = true;
			if (st == FL_OK)
				continue;
		}
		trust->announced[kept++] = *key;
	}
	trust->n_announced = kept;
	return st;
}

enum fl_status fl_trust_line(struct fl_trust *trust, const struct fl_log_entry *entry, char *error,
			     size_t error_size, bool *ret_new_key)
{
	const uint8_t *signer = NULL;
	bool signer_trusted = false;
	uint8_t pub[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN];

	if (!trust || !entry || !entry->body)
		return FL_ERR_INVALID;
	if (entry->sig) {
		signer = fl_trust_find(trust, entry->key_id);
		signer_trusted = signer != NULL;
		if (!signer) {
			struct trust_key *announced =
			    find_in(trust->announced, trust->n_announced, entry->key_id);
			signer = announced ? announced->pub : NULL;
		}
		if (!signer) {
			fl_set_error(error, error_size,
				     "line %" PRIu64 " is signed by key %s, which is not trusted",
				     entry->seq, entry->key_id);
			return FL_ERR_DENIED;
		}
		if (!fl_sig_verify(signer, entry->leaf_hash, FL_HASH_LEN, entry->sig)) {
			fl_set_error(error, error_size,
				     "the signature of line %" PRIu64
				     " does not verify under key %s",
				     entry->seq, entry->key_id);
			return FL_ERR_CORRUPT;
		}
	}
	enum fl_status st = fl_log_key_event_parse(entry->body, entry->body_len, pub, previous);
	if (st == FL_ERR_NOT_FOUND)
		return FL_OK;
	if (st != FL_OK) {
		fl_set_error(error, error_size, "line %" PRIu64 " is a malformed key event",
			     entry->seq);
		return FL_ERR_CORRUPT;
	}
	char new_id[FL_KEY_ID_HEX_LEN];
	fl_key_id_of(pub, new_id);
	if (fl_trust_find(trust, new_id) || find_in(trust->announced, trust->n_announced, new_id))
		return FL_OK;
	if (signer_trusted && strcmp(previous, entry->key_id) == 0) {
		/* Its own signature, by the key it replaces, vouches for it. */
		st = fl_trust_add(trust, pub);
		if (st == FL_OK && ret_new_key)
			*ret_new_key = true;
		return st;
	}
	return push(&trust->announced, &trust->n_announced, pub, entry->seq);
}

enum fl_status fl_trust_checkpoint(const struct fl_trust *trust,
				   const struct fl_checkpoint *checkpoint, char *error,
				   size_t error_size)
{
	if (!trust || !checkpoint)
		return FL_ERR_INVALID;
	const uint8_t *pub = fl_trust_find(trust, checkpoint->key_id);
	if (!pub) {
		fl_set_error(error, error_size,
			     "the checkpoint of tree size %" PRIu64
			     " is signed by key %s, which is not "
			     "trusted",
			     checkpoint->tree_size, checkpoint->key_id);
		return FL_ERR_DENIED;
	}
	if (!fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, checkpoint, pub)) {
		fl_set_error(error, error_size,
			     "the signature of the checkpoint of tree size %" PRIu64
			     " does not verify under key %s",
			     checkpoint->tree_size, checkpoint->key_id);
		return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

void fl_trust_drop_announced(struct fl_trust *trust)
{
	if (trust)
		trust->n_announced = 0;
}
