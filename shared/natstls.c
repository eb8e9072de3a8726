/*
 * TLS settings for NATS connections (see natstls.h).
 */
#include "fledger/natstls.h"

#include <string.h>

bool fl_nats_tls_wanted(const struct fl_nats_tls *tls, const char *url)
{
	return (url && strncmp(url, "tls://", 6) == 0) ||
	       (tls && (tls->ca_file || tls->cert_file || tls->key_file));
}

natsStatus fl_nats_tls_apply(natsOptions *opts, const struct fl_nats_tls *tls, const char *url)
{
	natsStatus s = NATS_OK;
	if (!fl_nats_tls_wanted(tls, url))
		return NATS_OK;
	s = natsOptions_SetSecure(opts, true);
	if (s == NATS_OK && tls && tls->ca_file)
		s = natsOptions_LoadCATrustedCertificates(opts, tls->ca_file);
	if (s == NATS_OK && tls && (tls->cert_file || tls->key_file)) {
		if (!tls->cert_file || !tls->key_file)
			return NATS_INVALID_ARG;
		s = natsOptions_LoadCertificatesChain(opts, tls->cert_file, tls->key_file);
	}
	return s;
}
