#ifndef EVENTLOG_SIGNER_H
#define EVENTLOG_SIGNER_H

/*
 * Ed25519 keys, with OpenSSL 3: load or generate a private key, sign the
 * 32 bytes of a leaf hash or a checkpoint text, and check signatures with a
 * public key. key_id = lowercase hex of the first 8 bytes of SHA-256 of the
 * raw 32-byte public key (CONTRACT §4).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fledger/status.h"

#define FL_SIG_LEN 64
#define FL_PUBKEY_LEN 32
#define FL_KEY_ID_LEN 8	     /* raw bytes */
#define FL_KEY_ID_HEX_LEN 17 /* 16 hex digits and a NUL */

struct fl_signer;

/* Reads a PEM Ed25519 private key (PKCS#8, as `openssl genpkey` writes). */
enum fl_status fl_signer_load(const char *pem_path, struct fl_signer **ret_signer);

/* Parses a PEM Ed25519 private key held in memory. */
enum fl_status fl_signer_from_pem(const char *pem, size_t len, struct fl_signer **ret_signer);

/* Makes a fresh key. */
enum fl_status fl_signer_generate(struct fl_signer **ret_signer);

/* Writes the private key as PEM to path with mode 0600. */
enum fl_status fl_signer_save(const struct fl_signer *signer, const char *pem_path);

/* Frees the key. Accepts NULL. */
void fl_signer_destroy(struct fl_signer *signer);

/* Signs msg (any length; Ed25519 one-shot). Thread-safe. */
enum fl_status fl_signer_sign(const struct fl_signer *signer, const uint8_t *msg, size_t len,
			      uint8_t ret_sig[FL_SIG_LEN]);

/* The raw public key, its key id (hex) and its PEM text (NUL-terminated). */
void fl_signer_public_key(const struct fl_signer *signer, uint8_t ret_pub[FL_PUBKEY_LEN]);
const char *fl_signer_key_id(const struct fl_signer *signer);
const char *fl_signer_public_pem(const struct fl_signer *signer);

/* Key id (hex, NUL-terminated) of a raw public key. */
void fl_key_id_of(const uint8_t pub[FL_PUBKEY_LEN], char ret_key_id[FL_KEY_ID_HEX_LEN]);

/* Extracts the raw public key from a PEM public key ("BEGIN PUBLIC KEY"). */
enum fl_status fl_pubkey_from_pem(const char *pem, size_t len, uint8_t ret_pub[FL_PUBKEY_LEN]);

/* Formats a raw public key as a PEM public key (caller frees). */
enum fl_status fl_pubkey_to_pem(const uint8_t pub[FL_PUBKEY_LEN], char **ret_pem);

/* True when sig is a valid Ed25519 signature of msg under pub. */
bool fl_sig_verify(const uint8_t pub[FL_PUBKEY_LEN], const uint8_t *msg, size_t len,
		   const uint8_t sig[FL_SIG_LEN]);

#endif
