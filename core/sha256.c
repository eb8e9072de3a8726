#include "fledger/sha256.h"

#include <pthread.h>

#include <openssl/evp.h>

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MD *fetched; /* lives until exit */

static void fetch(void)
{
	fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const void *fl_sha256_md(void)
{
	pthread_once(&fetch_once, fetch);
	return fetched != NULL ? fetched : EVP_sha256();
}

bool fl_sha256(const void *bytes, size_t len, uint8_t out[32])
{
	unsigned int out_len = 0;
	const EVP_MD *md = fl_sha256_md();
	return EVP_Digest(bytes, len, out, &out_len, md, NULL) == 1 && out_len == 32;
}
