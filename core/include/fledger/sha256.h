#ifndef FLEDGER_SHA256_H
#define FLEDGER_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * SHA-256 of bytes into out (32 bytes), with OpenSSL's implementation
 * fetched once per process: EVP_sha256() makes OpenSSL 3 look it up again
 * on every call, which costs more than hashing a token or a short answer.
 * False only if OpenSSL fails.
 */
bool fl_sha256(const void *bytes, size_t len, uint8_t out[32]);

/*
 * The same fetched implementation, for callers that hash in several updates
 * (an EVP_MD_CTX): never NULL; EVP_sha256() if the fetch failed, so that the
 * failure is reported by the digest call itself. An `const EVP_MD *`, typed
 * void here so that this header does not pull in OpenSSL.
 */
const void *fl_sha256_md(void);

#endif
