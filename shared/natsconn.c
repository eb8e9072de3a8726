/*
 * NATS connection settings for both services (see natsconn.h).
 */
#include "fledger/natsconn.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fledger/slog.h"
#include "fledger/util.h"

/* ---- URLs ------------------------------------------------------------------ */

/*
 * Whether [url, url + len) is scheme://[user[:pass]@]host[:port]; if not,
 * a static text saying why in *ret_why.
 */
static bool url_ok(const char *url, size_t len, const char **ret_why)
{
	const char *end = url + len, *p, *host, *host_end, *at;
	if (len > 7 && strncmp(url, "nats://", 7) == 0)
		p = url + 7;
	else if (len > 6 && strncmp(url, "tls://", 6) == 0)
		p = url + 6;
	else {
		*ret_why = "the scheme must be nats:// or tls://";
		return false;
	}
	at = memchr(p, '@', (size_t)(end - p));
	host = at ? at + 1 : p;
	if (host < end && *host == '[') {
		host_end = memchr(host, ']', (size_t)(end - host));
		if (!host_end || host_end == host + 1) {
			*ret_why = "an IPv6 address needs [ and ]";
			return false;
		}
		host_end++;
	} else {
		host_end = host;
		while (host_end < end && *host_end != ':' && *host_end != '/')
			host_end++;
	}
	if (host_end == host) {
		*ret_why = "no host";
		return false;
	}
	for (const char *c = host; c < host_end; c++) {
		if (isspace((unsigned char)*c) || (unsigned char)*c < 0x21) {
			*ret_why = "a space or control character in the host";
			return false;
		}
	}
	if (host_end == end || (host_end + 1 == end && *host_end == '/'))
		return true;
	if (*host_end != ':') {
		*ret_why = "unexpected text after the host";
		return false;
	}
	unsigned long port = 0;
	const char *q = host_end + 1;
	if (q == end) {
		*ret_why = "an empty port";
		return false;
	}
	for (; q < end && *q != '/'; q++) {
		if (!isdigit((unsigned char)*q) || port > 65535) {
			*ret_why = "the port is not a number from 1 to 65535";
			return false;
		}
		port = port * 10 + (unsigned long)(*q - '0');
	}
	if (port == 0 || port > 65535 || (q < end && q + 1 != end)) {
		*ret_why =
		    q < end ? "a path after the port" : "the port is not a number from 1 to 65535";
		return false;
	}
	return true;
}

/*
 * Splits the comma-separated list into ret_urls (malloc'd copies, blanks
 * around each trimmed; NULL to only check the list) and their count.
 * FL_ERR_INVALID or FL_ERR_NOMEM with a message in error; nothing is kept.
 */
static enum fl_status split_urls(const char *list, char *error, size_t error_size, char **ret_urls,
				 int *ret_count)
{
	enum fl_status status = FL_ERR_INVALID;
	int n = 0;
	const char *p = list;
	for (;;) {
		const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
		const char *b = p, *e = end, *why = NULL;
		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (b == e) {
			fl_set_error(error, error_size, "--nats: an empty URL in the list \"%s\"",
				     list);
			goto bad;
		}
		if (!url_ok(b, (size_t)(e - b), &why)) {
			fl_set_error(error, error_size, "--nats: cannot use \"%.*s\": %s",
				     (int)(e - b), b, why);
			goto bad;
		}
		if (n == FL_NATS_MAX_URLS) {
			fl_set_error(error, error_size, "--nats: more than %d URLs",
				     FL_NATS_MAX_URLS);
			goto bad;
		}
		if (ret_urls && !(ret_urls[n] = strndup(b, (size_t)(e - b)))) {
			fl_set_error(error, error_size, "out of memory");
			status = FL_ERR_NOMEM;
			goto bad;
		}
		n++;
		if (!comma) {
			*ret_count = n;
			return FL_OK;
		}
		p = comma + 1;
	}
bad:
	while (ret_urls && n > 0)
		free(ret_urls[--n]);
	return status;
}

bool fl_nats_tls_wanted(const struct fl_nats_settings *settings)
{
	if (!settings)
		return false;
	if (settings->tls.ca_file || settings->tls.cert_file || settings->tls.key_file)
		return true;
	for (const char *p = settings->urls; p && *p;) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (strncmp(p, "tls://", 6) == 0)
			return true;
		p = strchr(p, ',');
	}
	return false;
}

/* ---- secrets in files ------------------------------------------------------ */

/* The first line of a file, without its line end; NULL with errno. */
static char *read_secret(const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	int failed = ferror(f);
	fclose(f);
	if (failed) {
		errno = EIO;
		return NULL;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		errno = ENODATA;
		return NULL;
	}
	return strdup(buf);
}

/* The first "SU…" word of a seed file (a bare seed or an nk/nsc file). */
static char *read_seed(const char *path)
{
	char buf[8192];
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (char *p = buf; (p = strstr(p, "SU")) != NULL; p++) {
		if (p != buf && !isspace((unsigned char)p[-1]))
			continue;
		size_t len = 0;
		while (isalnum((unsigned char)p[len]))
			len++;
		char *seed = strndup(p, len);
		OPENSSL_cleanse(buf, sizeof(buf));
		return seed;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	errno = ENODATA;
	return NULL;
}

/* ---- nkeys ----------------------------------------------------------------- */

/* nkeys' CRC-16 (XMODEM polynomial 0x1021, initial 0). */
static uint16_t crc16(const uint8_t *data, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(data[i] << 8);
		for (int bit = 0; bit < 8; bit++)
			crc =
			    (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* RFC 4648 base32 without padding; ret_len the bytes decoded, -1 if bad. */
static int base32_decode(const char *text, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (const char *p = text; *p; p++) {
		const char *pos = strchr(base32_alphabet, *p);
		if (!pos || *p == '\0')
			return -1;
		acc = (acc << 5) | (uint32_t)(pos - base32_alphabet);
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			if (n == cap)
				return -1;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	return (int)n;
}

static void base32_encode(const uint8_t *data, size_t len, char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | data[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[n++] = base32_alphabet[(acc >> bits) & 31];
		}
	}
	if (bits > 0)
		out[n++] = base32_alphabet[(acc << (5 - bits)) & 31];
	out[n] = '\0';
}

#define NKEY_PREFIX_SEED (18 << 3) /* 'S' */
#define NKEY_PREFIX_USER (20 << 3) /* 'U' */

enum fl_status fl_nats_nkey_public(const char *seed, char ret_public[57])
{
	uint8_t raw[40], pub[35];
	size_t pub_len = 32;
	enum fl_status st = FL_ERR_INVALID;

	if (!seed || strlen(seed) != 58 || base32_decode(seed, raw, sizeof(raw)) != 36)
		goto done;
	uint16_t want = (uint16_t)(raw[34] | (raw[35] << 8));
	if (crc16(raw, 34) != want)
		goto done;
	/* Two prefix bytes: the seed marker and the key type (user). */
	if ((raw[0] & 0xf8) != NKEY_PREFIX_SEED ||
	    (uint8_t)(((raw[0] & 7) << 5) | ((raw[1] & 0xf8) >> 3)) != NKEY_PREFIX_USER)
		goto done;
	EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32);
	if (!key)
		goto done;
	pub[0] = NKEY_PREFIX_USER;
	if (EVP_PKEY_get_raw_public_key(key, pub + 1, &pub_len) == 1 && pub_len == 32) {
		uint16_t crc = crc16(pub, 33);
		pub[33] = (uint8_t)(crc & 0xff);
		pub[34] = (uint8_t)(crc >> 8);
		base32_encode(pub, sizeof(pub), ret_public);
		st = FL_OK;
	}
	EVP_PKEY_free(key);
done:
	OPENSSL_cleanse(raw, sizeof(raw));
	return st;
}

void fl_nats_settings_from_config(const struct fl_config *config, struct fl_nats_settings *ret)
{
	const char *urls = fl_config_get(config, "nats");
	*ret = (struct fl_nats_settings){
	    .urls = urls && urls[0] ? urls : NULL,
	    .tls = {.ca_file = fl_config_get(config, "nats-ca"),
		    .cert_file = fl_config_get(config, "nats-cert"),
		    .key_file = fl_config_get(config, "nats-key")},
	    .creds_file = fl_config_get(config, "nats-creds"),
	    .nkey_file = fl_config_get(config, "nats-nkey"),
	    .user = fl_config_get(config, "nats-user"),
	    .password_file = fl_config_get(config, "nats-password-file"),
	    .token_file = fl_config_get(config, "nats-token-file"),
	};
}

/* ---- checking -------------------------------------------------------------- */

static bool readable(const char *path)
{
	return access(path, R_OK) == 0;
}

enum fl_status fl_nats_settings_check(const struct fl_nats_settings *s, char *error,
				      size_t error_size)
{
	int kinds = 0;
	if (!s || !s->urls || !s->urls[0])
		return FL_OK; /* no NATS */
	int n_urls;
	enum fl_status status = split_urls(s->urls, error, error_size, NULL, &n_urls);
	if (status != FL_OK)
		return status;
	kinds = (s->creds_file != NULL) + (s->nkey_file != NULL) +
		(s->user != NULL || s->password_file != NULL) + (s->token_file != NULL);
	if (kinds > 1)
		return fl_set_error(
			   error, error_size,
			   "give one kind of NATS authentication: --nats-creds, --nats-nkey, "
			   "--nats-user with --nats-password-file, or --nats-token-file"),
		       FL_ERR_INVALID;
	if ((s->user != NULL) != (s->password_file != NULL))
		return fl_set_error(error, error_size,
				    "--nats-user and --nats-password-file go together"),
		       FL_ERR_INVALID;
	const struct {
		const char *flag, *path;
	} files[] = {{"--nats-creds", s->creds_file},
		     {"--nats-nkey", s->nkey_file},
		     {"--nats-password-file", s->password_file},
		     {"--nats-token-file", s->token_file},
		     {"--nats-ca", s->tls.ca_file},
		     {"--nats-cert", s->tls.cert_file},
		     {"--nats-key", s->tls.key_file}};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i].path && !readable(files[i].path))
			return fl_set_error(error, error_size, "%s %s: %s", files[i].flag,
					    files[i].path, strerror(errno)),
			       FL_ERR_INVALID;
	}
	if ((s->tls.cert_file != NULL) != (s->tls.key_file != NULL))
		return fl_set_error(error, error_size, "--nats-cert and --nats-key go together"),
		       FL_ERR_INVALID;
	if (s->creds_file) {
		char buf[256];
		FILE *f = fopen(s->creds_file, "re");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = '\0';
		if (!strstr(buf, "-----BEGIN NATS USER JWT-----"))
			return fl_set_error(error, error_size,
					    "--nats-creds %s: not a NATS credentials file (no "
					    "\"BEGIN NATS USER JWT\" block)",
					    s->creds_file),
			       FL_ERR_INVALID;
	}
	if (s->nkey_file) {
		char pub[57];
		char *seed = read_seed(s->nkey_file);
		enum fl_status st = seed ? fl_nats_nkey_public(seed, pub) : FL_ERR_INVALID;
		if (seed) {
			OPENSSL_cleanse(seed, strlen(seed));
			free(seed);
		}
		if (st != FL_OK)
			return fl_set_error(error, error_size,
					    "--nats-nkey %s: no valid user nkey seed (SU…)",
					    s->nkey_file),
			       FL_ERR_INVALID;
	}
	const char *secret_files[] = {s->password_file, s->token_file};
	for (size_t i = 0; i < 2; i++) {
		if (!secret_files[i])
			continue;
		char *secret = read_secret(secret_files[i]);
		if (!secret)
			return fl_set_error(error, error_size, "%s %s: %s",
					    i == 0 ? "--nats-password-file" : "--nats-token-file",
					    secret_files[i],
					    errno == ENODATA ? "empty" : strerror(errno)),
			       FL_ERR_INVALID;
		OPENSSL_cleanse(secret, strlen(secret));
		free(secret);
	}
	return FL_OK;
}

/* ---- events ---------------------------------------------------------------- */

struct fl_nats_watch {
	const char *who;
	pthread_mutex_t lock; /* guards on_connected and ctx against retire */
	fl_nats_connected_fn on_connected;
	void *ctx;
	_Atomic int64_t last_error_us; /* rate limit of asynchronous error lines */
	_Atomic int suppressed;
};

#define WATCH_POOL 16
static struct fl_nats_watch watch_pool[WATCH_POOL];
static size_t watches_used;
static pthread_mutex_t watch_pool_lock = PTHREAD_MUTEX_INITIALIZER;

struct fl_nats_watch *fl_nats_watch_get(const char *who, fl_nats_connected_fn on_connected,
					void *ctx)
{
	struct fl_nats_watch *w = NULL;
	pthread_mutex_lock(&watch_pool_lock);
	if (watches_used < WATCH_POOL) {
		w = &watch_pool[watches_used++];
		w->who = who ? who : "nats";
		pthread_mutex_init(&w->lock, NULL);
		w->on_connected = on_connected;
		w->ctx = ctx;
	}
	pthread_mutex_unlock(&watch_pool_lock);
	return w;
}

void fl_nats_watch_retire(struct fl_nats_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->on_connected = NULL;
	w->ctx = NULL;
	pthread_mutex_unlock(&w->lock);
}

static void call_connected(struct fl_nats_watch *w, natsConnection *nc)
{
	pthread_mutex_lock(&w->lock);
	if (w->on_connected)
		w->on_connected(nc, w->ctx);
	pthread_mutex_unlock(&w->lock);
}

static void server_of(natsConnection *nc, char *buf, size_t cap)
{
	if (natsConnection_GetConnectedUrl(nc, buf, cap) != NATS_OK || !buf[0])
		snprintf(buf, cap, "-");
}

static void on_disconnected(natsConnection *nc, void *closure)
{
	struct fl_nats_watch *w = closure;
	const char *why = NULL;
	natsConnection_GetLastError(nc, &why);
	fl_slog(FL_SLOG_WARN, "NATS disconnected", "component", w->who, "error",
		why && why[0] ? why : "connection lost", NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	struct fl_nats_watch *w = closure;
	char url[256];
	server_of(nc, url, sizeof(url));
	fl_slog(FL_SLOG_INFO, "NATS reconnected", "component", w->who, "server", url, NULL);
	call_connected(w, nc);
}

void fl_nats_watch_connected(struct fl_nats_watch *w, natsConnection *nc)
{
	char url[256];
	server_of(nc, url, sizeof(url));
	fl_slog(FL_SLOG_INFO, "NATS connected", "component", w->who, "server", url, NULL);
}

/* RetryOnFailedConnect's callback: the first connection came up late. */
static void on_connected(natsConnection *nc, void *closure)
{
	struct fl_nats_watch *w = closure;
	fl_nats_watch_connected(w, nc);
	call_connected(w, nc);
}

static void on_closed(natsConnection *nc, void *closure)
{
	struct fl_nats_watch *w = closure;
	const char *why = NULL;
	natsConnection_GetLastError(nc, &why);
	fl_slog(FL_SLOG_INFO, "NATS connection closed", "component", w->who, "error",
		why && why[0] ? why : "none", NULL);
}

/* Asynchronous errors (slow consumer, permissions, heartbeats): at most one
 * line a second, with the count of those left out. */
static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	struct fl_nats_watch *w = closure;
	int64_t now = fl_time_mono_us(), last = atomic_load(&w->last_error_us);
	(void)sub;
	if (now - last < 1000000 ||
	    !atomic_compare_exchange_strong(&w->last_error_us, &last, now)) {
		atomic_fetch_add(&w->suppressed, 1);
		return;
	}
	char url[256], more[16];
	server_of(nc, url, sizeof(url));
	snprintf(more, sizeof(more), "%d", atomic_exchange(&w->suppressed, 0));
	fl_slog(FL_SLOG_WARN, "NATS error", "component", w->who, "server", url, "error",
		natsStatus_GetText(err), "suppressed", more, NULL);
}

natsStatus fl_nats_options_create(const struct fl_nats_settings *settings, struct fl_nats_watch *w,
				  int reconnect_wait_ms, natsOptions **ret_opts)
{
	char *urls[FL_NATS_MAX_URLS];
	char *secret = NULL;
	natsOptions *opts = NULL;
	int n;

	if (!settings || !settings->urls || !w || !ret_opts)
		return NATS_INVALID_ARG;
	if (split_urls(settings->urls, NULL, 0, urls, &n) != FL_OK)
		return NATS_INVALID_ARG;
	natsStatus s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, (const char **)urls, n);
	/* Keep the order given: the first URL is the preferred server. */
	if (s == NATS_OK)
		s = natsOptions_SetNoRandomize(opts, true);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, reconnect_wait_ms);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, on_reconnected, w);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, on_disconnected, w);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(opts, on_closed, w);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, on_error, w);
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, w);
	if (s == NATS_OK && settings->creds_file)
		s = natsOptions_SetUserCredentialsFromFiles(opts, settings->creds_file, NULL);
	if (s == NATS_OK && settings->nkey_file) {
		char pub[57];
		char *seed = read_seed(settings->nkey_file);
		s = seed && fl_nats_nkey_public(seed, pub) == FL_OK
			? natsOptions_SetNKeyFromSeed(opts, pub, settings->nkey_file)
			: NATS_INVALID_ARG;
		if (seed) {
			OPENSSL_cleanse(seed, strlen(seed));
			free(seed);
		}
	}
	if (s == NATS_OK && settings->user) {
		secret = read_secret(settings->password_file);
		s = secret ? natsOptions_SetUserInfo(opts, settings->user, secret)
			   : NATS_INVALID_ARG;
	}
	if (s == NATS_OK && settings->token_file) {
		secret = read_secret(settings->token_file);
		s = secret ? natsOptions_SetToken(opts, secret) : NATS_INVALID_ARG;
	}
	if (secret) {
		OPENSSL_cleanse(secret, strlen(secret));
		free(secret);
	}
	if (s == NATS_OK && fl_nats_tls_wanted(settings)) {
		s = natsOptions_SetSecure(opts, true);
		if (s == NATS_OK && settings->tls.ca_file)
			s = natsOptions_LoadCATrustedCertificates(opts, settings->tls.ca_file);
		if (s == NATS_OK && settings->tls.cert_file && settings->tls.key_file)
			s = natsOptions_LoadCertificatesChain(opts, settings->tls.cert_file,
							      settings->tls.key_file);
		else if (s == NATS_OK && (settings->tls.cert_file || settings->tls.key_file))
			s = NATS_INVALID_ARG;
	}
	for (int i = 0; i < n; i++)
		free(urls[i]);
	if (s != NATS_OK) {
		natsOptions_Destroy(opts);
		return s;
	}
	*ret_opts = opts;
	return NATS_OK;
}
