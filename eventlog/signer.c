#include "eventlog/signer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "fledger/util.h"

/*
 * A loaded Ed25519 private key and what is derived from it once: the raw
 * public key, its key id, its PEM, and a signing context set up for it
 * (each signature signs with a copy: setting one up fetches the algorithm
 * and costs 5-10 % of a signature). Nothing here changes after creation,
 * so any number of threads may use one signer at the same time.
 */
struct fl_signer {
	EVP_PKEY *pkey;
	EVP_MD_CTX *sign_ctx; /* initialised for pkey; only ever copied */
	uint8_t public_key[FL_PUBKEY_LEN];
	char key_id[FL_KEY_ID_HEX_LEN];
	char *public_pem;
};

/*
 * The passphrase callback for every PEM read: there is no passphrase. Without
 * it OpenSSL's default callback would prompt on the terminal for an
 * encrypted key; with it such a key simply fails to load.
 */
static int no_passphrase(char *buf, int size, int rwflag, void *user)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)user;
	return -1;
}

static bool is_ed25519(const EVP_PKEY *pkey)
{
	return EVP_PKEY_get_id(pkey) == EVP_PKEY_ED25519;
}

/*
 * Writes pkey as a SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY", what
 * `openssl pkey -pubout` prints) into a new NUL-terminated malloc'd string.
 */
static enum fl_status public_pem_of(EVP_PKEY *pkey, char **ret_pem)
{
	enum fl_status status;
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return FL_ERR_NOMEM;
	if (PEM_write_bio_PUBKEY(bio, pkey) != 1) {
		status = FL_ERR_CRYPTO;
		goto free_bio;
	}
	char *data;
	long len = BIO_get_mem_data(bio, &data);
	if (len <= 0) {
		status = FL_ERR_CRYPTO;
		goto free_bio;
	}
	char *pem = malloc((size_t)len + 1);
	if (pem == NULL) {
		status = FL_ERR_NOMEM;
		goto free_bio;
	}
	memcpy(pem, data, (size_t)len);
	pem[len] = '\0';
	*ret_pem = pem;
	status = FL_OK;
free_bio:
	BIO_free(bio);
	return status;
}

/*
 * Makes a signer around pkey, which it takes over: on success the signer
 * owns it, on failure it is freed. FL_ERR_CRYPTO when pkey is not an
 * Ed25519 private key.
 */
static enum fl_status signer_create(EVP_PKEY *pkey, struct fl_signer **ret_signer)
{
	enum fl_status status;
	if (!is_ed25519(pkey)) {
		status = FL_ERR_CRYPTO;
		goto free_pkey;
	}
	struct fl_signer *signer = calloc(1, sizeof(*signer));
	if (signer == NULL) {
		status = FL_ERR_NOMEM;
		goto free_pkey;
	}
	size_t public_len = sizeof(signer->public_key);
	if (EVP_PKEY_get_raw_public_key(pkey, signer->public_key, &public_len) != 1 ||
	    public_len != FL_PUBKEY_LEN) {
		status = FL_ERR_CRYPTO;
		goto free_signer;
	}
	status = public_pem_of(pkey, &signer->public_pem);
	if (status != FL_OK)
		goto free_signer;
	fl_key_id_of(signer->public_key, signer->key_id);
	signer->sign_ctx = EVP_MD_CTX_new();
	ERR_set_mark();
	bool ready = signer->sign_ctx != NULL &&
		     EVP_DigestSignInit(signer->sign_ctx, NULL, NULL, NULL, pkey) == 1;
	ERR_pop_to_mark();
	if (!ready) {
		status = signer->sign_ctx == NULL ? FL_ERR_NOMEM : FL_ERR_CRYPTO;
		goto free_signer;
	}
	signer->pkey = pkey;
	*ret_signer = signer;
	return FL_OK;

free_signer:
	EVP_MD_CTX_free(signer->sign_ctx);
	free(signer->public_pem);
	free(signer);
free_pkey:
	EVP_PKEY_free(pkey);
	return status;
}

/*
 * Parses a PEM Ed25519 private key of len bytes (PKCS#8 "BEGIN PRIVATE KEY",
 * as `openssl genpkey -algorithm ed25519` writes; need not be NUL-terminated).
 * FL_ERR_INVALID when the text holds no readable private key (encrypted keys
 * included: there is no passphrase), FL_ERR_CRYPTO when it holds a key of
 * another type (RSA, EC, X25519, Ed448), FL_ERR_NOMEM. The caller destroys
 * *ret_signer. OpenSSL's error queue is left as it was found.
 */
enum fl_status fl_signer_from_pem(const char *pem, size_t len, struct fl_signer **ret_signer)
{
	if (pem == NULL || len == 0 || len > INT_MAX || ret_signer == NULL)
		return FL_ERR_INVALID;

	enum fl_status status;
	ERR_set_mark();
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	if (bio == NULL) {
		status = FL_ERR_NOMEM;
		goto pop_errors;
	}
	EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if (pkey == NULL) {
		status = FL_ERR_INVALID;
		goto free_bio;
	}
	status = signer_create(pkey, ret_signer);
free_bio:
	BIO_free(bio);
pop_errors:
	ERR_pop_to_mark();
	return status;
}

/*
 * Reads the PEM Ed25519 private key at pem_path. Errors as for
 * fl_signer_from_pem and fl_file_read (FL_ERR_NOT_FOUND, FL_ERR_DENIED,
 * FL_ERR_IO). The file's text is wiped from memory after parsing.
 */
enum fl_status fl_signer_load(const char *pem_path, struct fl_signer **ret_signer)
{
	if (pem_path == NULL || ret_signer == NULL)
		return FL_ERR_INVALID;

	char *text;
	size_t len;
	enum fl_status status = fl_file_read(pem_path, &text, &len);
	if (status != FL_OK)
		return status;
	status = fl_signer_from_pem(text, len, ret_signer);
	OPENSSL_cleanse(text, len);
	free(text);
	return status;
}

/* Makes a fresh Ed25519 key from OpenSSL's CSPRNG. FL_ERR_CRYPTO, FL_ERR_NOMEM. */
enum fl_status fl_signer_generate(struct fl_signer **ret_signer)
{
	if (ret_signer == NULL)
		return FL_ERR_INVALID;

	ERR_set_mark();
	enum fl_status status;
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (pkey == NULL)
		status = FL_ERR_CRYPTO;
	else
		status = signer_create(pkey, ret_signer);
	ERR_pop_to_mark();
	return status;
}

/* Writes len bytes to fd, going on after short writes and EINTR. */
static bool write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t written = write(fd, data, len);
		if (written < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		data += written;
		len -= (size_t)written;
	}
	return true;
}

/* fsyncs the directory that holds path, so that a rename into it lasts. */
static bool sync_parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir =
	    slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (dir == NULL)
		return false;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return false;
	bool ok = fsync(fd) == 0;
	close(fd);
	return ok;
}

/*
 * Writes the private key as PKCS#8 PEM ("BEGIN PRIVATE KEY", unencrypted) to
 * pem_path with mode 0600. The key goes to a new file beside pem_path that is
 * fsynced and then renamed over it, so a crash leaves either the old file or
 * the whole new one, and an existing file's wider mode is not inherited (a
 * symlink at pem_path is replaced, not followed). FL_ERR_NOT_FOUND when the
 * directory does not exist, FL_ERR_DENIED, FL_ERR_IO, FL_ERR_CRYPTO,
 * FL_ERR_NOMEM. On failure no temporary file is left behind, and pem_path is
 * untouched unless only the final fsync of its directory failed (FL_ERR_IO
 * with the new key in place but perhaps not yet durable).
 */
enum fl_status fl_signer_save(const struct fl_signer *signer, const char *pem_path)
{
	if (signer == NULL || pem_path == NULL || pem_path[0] == '\0')
		return FL_ERR_INVALID;

	enum fl_status status;
	ERR_set_mark();
	BIO *bio = BIO_new(BIO_s_secmem());
	if (bio == NULL) {
		status = FL_ERR_NOMEM;
		goto pop_errors;
	}
	if (PEM_write_bio_PrivateKey(bio, signer->pkey, NULL, NULL, 0, NULL, NULL) != 1) {
		status = FL_ERR_CRYPTO;
		goto free_bio;
	}
	char *pem;
	long pem_len = BIO_get_mem_data(bio, &pem);
	if (pem_len <= 0) {
		status = FL_ERR_CRYPTO;
		goto free_bio;
	}

	size_t path_len = strlen(pem_path);
	char *temp_path = malloc(path_len + sizeof(".XXXXXX"));
	if (temp_path == NULL) {
		status = FL_ERR_NOMEM;
		goto free_bio;
	}
	memcpy(temp_path, pem_path, path_len);
	memcpy(temp_path + path_len, ".XXXXXX", sizeof(".XXXXXX"));

	/* mkostemp creates the file with mode 0600 and O_EXCL. */
	int fd = mkostemp(temp_path, O_CLOEXEC);
	if (fd < 0) {
		status = fl_status_of_errno(errno);
		goto free_temp_path;
	}
	if (!write_all(fd, pem, (size_t)pem_len) || fsync(fd) != 0) {
		status = fl_status_of_errno(errno);
		close(fd);
		goto unlink_temp;
	}
	if (close(fd) != 0 || rename(temp_path, pem_path) != 0) {
		status = fl_status_of_errno(errno);
		goto unlink_temp;
	}
	status = sync_parent_dir(pem_path) ? FL_OK : FL_ERR_IO;
	goto free_temp_path;

unlink_temp:
	unlink(temp_path);
free_temp_path:
	free(temp_path);
free_bio:
	BIO_free(bio);
pop_errors:
	ERR_pop_to_mark();
	return status;
}

/* Frees the signer and its key. Accepts NULL. */
void fl_signer_destroy(struct fl_signer *signer)
{
	if (signer == NULL)
		return;
	EVP_MD_CTX_free(signer->sign_ctx);
	EVP_PKEY_free(signer->pkey);
	free(signer->public_pem);
	free(signer);
}

/*
 * Signs the len bytes of msg with Ed25519 (pure, one-shot: there is no
 * streaming). Thread-safe: each call signs with its own copy of the
 * signer's context, which is never modified. FL_ERR_INVALID for NULL arguments,
 * FL_ERR_NOMEM, FL_ERR_CRYPTO; ret_sig is written only on success.
 */
enum fl_status fl_signer_sign(const struct fl_signer *signer, const uint8_t *msg, size_t len,
			      uint8_t ret_sig[FL_SIG_LEN])
{
	static const uint8_t empty[1];
	if (signer == NULL || ret_sig == NULL || (msg == NULL && len > 0))
		return FL_ERR_INVALID;
	if (msg == NULL)
		msg = empty;

	enum fl_status status;
	ERR_set_mark();
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL) {
		status = FL_ERR_NOMEM;
		goto pop_errors;
	}
	uint8_t sig[FL_SIG_LEN];
	size_t sig_len = sizeof(sig);
	if (EVP_MD_CTX_copy_ex(ctx, signer->sign_ctx) != 1 ||
	    EVP_DigestSign(ctx, sig, &sig_len, msg, len) != 1 || sig_len != FL_SIG_LEN) {
		status = FL_ERR_CRYPTO;
		goto free_ctx;
	}
	memcpy(ret_sig, sig, FL_SIG_LEN);
	status = FL_OK;
free_ctx:
	EVP_MD_CTX_free(ctx);
pop_errors:
	ERR_pop_to_mark();
	return status;
}

/* Copies the raw 32-byte public key to ret_pub. */
void fl_signer_public_key(const struct fl_signer *signer, uint8_t ret_pub[FL_PUBKEY_LEN])
{
	assert(signer != NULL && ret_pub != NULL);
	memcpy(ret_pub, signer->public_key, FL_PUBKEY_LEN);
}

/* The key id as 16 lowercase hex digits; valid as long as the signer. */
const char *fl_signer_key_id(const struct fl_signer *signer)
{
	assert(signer != NULL);
	return signer->key_id;
}

/* The public key as PEM ("BEGIN PUBLIC KEY"); valid as long as the signer. */
const char *fl_signer_public_pem(const struct fl_signer *signer)
{
	assert(signer != NULL);
	return signer->public_pem;
}

/* Key id: lowercase hex of the first 8 bytes of SHA-256 of the raw public key. */
void fl_key_id_of(const uint8_t pub[FL_PUBKEY_LEN], char ret_key_id[FL_KEY_ID_HEX_LEN])
{
	assert(pub != NULL && ret_key_id != NULL);
	uint8_t digest[SHA256_DIGEST_LENGTH];
	SHA256(pub, FL_PUBKEY_LEN, digest);
	fl_hex_encode(digest, FL_KEY_ID_LEN, ret_key_id);
}

/*
 * Extracts the raw Ed25519 public key from a SubjectPublicKeyInfo PEM
 * ("BEGIN PUBLIC KEY") of len bytes. FL_ERR_INVALID when the text holds no
 * public key, FL_ERR_CRYPTO when the key is not Ed25519.
 */
enum fl_status fl_pubkey_from_pem(const char *pem, size_t len, uint8_t ret_pub[FL_PUBKEY_LEN])
{
	if (pem == NULL || len == 0 || len > INT_MAX || ret_pub == NULL)
		return FL_ERR_INVALID;

	enum fl_status status;
	ERR_set_mark();
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	if (bio == NULL) {
		status = FL_ERR_NOMEM;
		goto pop_errors;
	}
	EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	if (pkey == NULL) {
		status = FL_ERR_INVALID;
		goto free_bio;
	}
	uint8_t pub[FL_PUBKEY_LEN];
	size_t pub_len = sizeof(pub);
	if (!is_ed25519(pkey) || EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) != 1 ||
	    pub_len != FL_PUBKEY_LEN) {
		status = FL_ERR_CRYPTO;
		goto free_pkey;
	}
	memcpy(ret_pub, pub, FL_PUBKEY_LEN);
	status = FL_OK;
free_pkey:
	EVP_PKEY_free(pkey);
free_bio:
	BIO_free(bio);
pop_errors:
	ERR_pop_to_mark();
	return status;
}

/*
 * Formats a raw Ed25519 public key as a SubjectPublicKeyInfo PEM in a new
 * NUL-terminated malloc'd string that the caller frees.
 */
enum fl_status fl_pubkey_to_pem(const uint8_t pub[FL_PUBKEY_LEN], char **ret_pem)
{
	if (pub == NULL || ret_pem == NULL)
		return FL_ERR_INVALID;

	enum fl_status status;
	ERR_set_mark();
	EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, FL_PUBKEY_LEN);
	if (pkey == NULL) {
		status = FL_ERR_CRYPTO;
		goto pop_errors;
	}
	status = public_pem_of(pkey, ret_pem);
	EVP_PKEY_free(pkey);
pop_errors:
	ERR_pop_to_mark();
	return status;
}

/*
 * True when sig is a valid Ed25519 signature of the len bytes of msg under
 * the raw public key pub. False for a bad signature, a public key that is
 * not a curve point, NULL arguments, or any OpenSSL failure. Thread-safe.
 */
bool fl_sig_verify(const uint8_t pub[FL_PUBKEY_LEN], const uint8_t *msg, size_t len,
		   const uint8_t sig[FL_SIG_LEN])
{
	static const uint8_t empty[1];
	if (pub == NULL || sig == NULL || (msg == NULL && len > 0))
		return false;
	if (msg == NULL)
		msg = empty;

	bool valid = false;
	ERR_set_mark();
	EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, FL_PUBKEY_LEN);
	if (pkey == NULL)
		goto pop_errors;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		goto free_pkey;
	valid = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
		EVP_DigestVerify(ctx, sig, FL_SIG_LEN, msg, len) == 1;
	EVP_MD_CTX_free(ctx);
free_pkey:
	EVP_PKEY_free(pkey);
pop_errors:
	ERR_pop_to_mark();
	return valid;
}
