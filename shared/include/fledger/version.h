#ifndef FLEDGER_VERSION_H
#define FLEDGER_VERSION_H

/*
 * `--version` of every program: the project version (meson's project
 * version, compiled in) and the versions of the libraries the program runs
 * with, asked of the libraries themselves where they offer a call.
 */

#include <stdio.h>

/* The project version, "0.1.0". */
const char *fl_version(void);

/*
 * Prints "<program> <version>", then one line per library: LMDB and
 * libnats as the caller gives them (mdb_version(), nats_GetVersion();
 * NULL: the program does not link the library, no line), libmicrohttpd,
 * jansson and OpenSSL.
 */
void fl_version_print(FILE *out, const char *program, const char *lmdb_version,
		      const char *nats_version);

#endif
