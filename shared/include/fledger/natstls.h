#ifndef FLEDGER_NATSTLS_H
#define FLEDGER_NATSTLS_H

/*
 * TLS to NATS (CONTRACT §8), the same for both services: switched on by a
 * tls:// URL or by any of the files below (--nats-ca, --nats-cert,
 * --nats-key). cnats does the TLS with OpenSSL.
 */

#include <stdbool.h>

#include <nats/nats.h>

struct fl_nats_tls {
	const char *ca_file;   /* PEM CA that signed the server's certificate */
	const char *cert_file; /* PEM client certificate (mutual TLS), with key_file */
	const char *key_file;
};

/* Whether the settings or the URL ask for TLS. */
bool fl_nats_tls_wanted(const struct fl_nats_tls *tls, const char *url);

/* Applies the settings to opts (a no-op when TLS is not wanted). */
natsStatus fl_nats_tls_apply(natsOptions *opts, const struct fl_nats_tls *tls, const char *url);

#endif
