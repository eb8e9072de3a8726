/* --version: see fledger/version.h. */
#include "fledger/version.h"

#include <string.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>

#ifndef FL_PROJECT_VERSION
#error "FL_PROJECT_VERSION is set by shared/meson.build from the meson project version"
#endif

const char *fl_version(void)
{
	return FL_PROJECT_VERSION;
}

void fl_version_print(FILE *out, const char *program, const char *lmdb_version,
		      const char *nats_version)
{
	fprintf(out, "%s %s\n", program, fl_version());
	/* mdb_version() names itself: "LMDB 0.9.24: (July 24, 2019)". */
	if (lmdb_version && strncmp(lmdb_version, "LMDB ", 5) == 0)
		lmdb_version += 5;
	if (lmdb_version)
		fprintf(out, "  LMDB           %s\n", lmdb_version);
	if (nats_version)
		fprintf(out, "  libnats        %s\n", nats_version);
	fprintf(out, "  libmicrohttpd  %s\n", MHD_get_version());
	fprintf(out, "  jansson        %s\n", jansson_version_str());
	fprintf(out, "  OpenSSL        %s\n", OpenSSL_version(OPENSSL_VERSION));
}
