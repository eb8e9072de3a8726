/*
 * The HTTP/1.1 client (see httpc.h): getaddrinfo, a non-blocking connect, a
 * request written and an answer read under one deadline kept with poll(),
 * then the answer is parsed once the server has sent all of it.
 */
#include "fledger/httpc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>

#include "fledger/util.h"

#define HEADER_MAX (64 * 1024)

/* Waits until fd is ready for events, or until the monotonic deadline. */
static enum fl_status wait_fd(int fd, short events, int64_t deadline_us)
{
	for (;;) {
		int64_t left_ms = (deadline_us - fl_time_mono_us() + 999) / 1000;
		struct pollfd pfd = {.fd = fd, .events = events};
		if (left_ms <= 0)
			return FL_ERR_TIMEOUT;
		int rc = poll(&pfd, 1, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
		if (rc > 0)
			return FL_OK;
		if (rc < 0 && errno != EINTR)
			return FL_ERR_UNAVAILABLE;
	}
}

/* Connects to the first address of host:port that accepts. */
static enum fl_status dial(const char *host, const char *port, int64_t deadline_us, int *ret_fd)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *list, *ai;
	enum fl_status st = FL_ERR_UNAVAILABLE;

	if (getaddrinfo(host, port, &hints, &list) != 0)
		return FL_ERR_UNAVAILABLE;
	for (ai = list; ai && st != FL_ERR_TIMEOUT; ai = ai->ai_next) {
		int err = 0,
		    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		socklen_t err_len = sizeof(err);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			st = FL_OK;
		else if (errno != EINPROGRESS)
			st = FL_ERR_UNAVAILABLE;
		else if ((st = wait_fd(fd, POLLOUT, deadline_us)) == FL_OK &&
			 (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0 || err != 0))
			st = FL_ERR_UNAVAILABLE;
		if (st == FL_OK) {
			*ret_fd = fd;
			break;
		}
		close(fd);
	}
	freeaddrinfo(list);
	return st;
}

/* True when every byte of text lies in [lo, 0x7e]. */
/* ---- TLS (https://) ------------------------------------------------------- */

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx;
static char *tls_ca_file;
static char *tls_cert_file, *tls_key_file; /* the client certificate, both or neither */

enum fl_status fl_httpc_set_ca_file(const char *ca_file)
{
	char *copy = ca_file ? strdup(ca_file) : NULL;
	if (ca_file && !copy)
		return FL_ERR_NOMEM;
	pthread_mutex_lock(&tls_lock);
	free(tls_ca_file);
	tls_ca_file = copy;
	SSL_CTX_free(tls_ctx); /* made again, with the new CA, on the next use */
	tls_ctx = NULL;
	pthread_mutex_unlock(&tls_lock);
	return FL_OK;
}

/* Keys with a passphrase are refused rather than prompted for. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)userdata;
	return 0;
}

/*
 * Loads the client certificate (with its chain) and its key into ctx. On
 * failure, says why in why[0..why_cap) when why is not NULL.
 */
static bool use_client_cert(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *why,
			    size_t why_cap)
{
	const char *reason = NULL, *file = NULL;
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (access(cert_file, R_OK) != 0) {
		reason = strerror(errno);
		file = cert_file;
	} else if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		reason = "not a PEM certificate";
		file = cert_file;
	} else {
		FILE *f = fopen(key_file, "r");
		int open_errno = errno;
		EVP_PKEY *pkey = f ? PEM_read_PrivateKey(f, NULL, no_passphrase, NULL) : NULL;
		if (f)
			fclose(f);
		file = key_file;
		if (!f)
			reason = strerror(open_errno);
		else if (!pkey)
			reason = "not a PEM private key without a passphrase";
		else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 ||
			 SSL_CTX_check_private_key(ctx) != 1)
			reason = "not the private key of the certificate";
		EVP_PKEY_free(pkey);
	}
	ERR_clear_error();
	if (reason && why)
		snprintf(why, why_cap, "%s: %s", file, reason);
	return reason == NULL;
}

enum fl_status fl_httpc_set_client_cert(const char *cert_file, const char *key_file, char *why,
					size_t why_cap)
{
	if (why && why_cap)
		why[0] = '\0';
	if (!cert_file != !key_file) {
		if (why)
			snprintf(why, why_cap,
				 "a client certificate needs both its file and its key");
		return FL_ERR_INVALID;
	}
	if (cert_file) {
		/* Load them once now, so that a bad pair is an error here. */
		SSL_CTX *probe = SSL_CTX_new(TLS_client_method());
		if (!probe)
			return FL_ERR_NOMEM;
		bool ok = use_client_cert(probe, cert_file, key_file, why, why_cap);
		SSL_CTX_free(probe);
		if (!ok)
			return FL_ERR_INVALID;
	}
	char *cert = cert_file ? strdup(cert_file) : NULL,
	     *key = key_file ? strdup(key_file) : NULL;
	if (cert_file && (!cert || !key)) {
		free(cert);
		free(key);
		return FL_ERR_NOMEM;
	}
	pthread_mutex_lock(&tls_lock);
	free(tls_cert_file);
	free(tls_key_file);
	tls_cert_file = cert;
	tls_key_file = key;
	SSL_CTX_free(tls_ctx);
	tls_ctx = NULL;
	pthread_mutex_unlock(&tls_lock);
	return FL_OK;
}

/*
 * The shared client context: verifies servers with the CA file, else the
 * system's; presents the client certificate when one is set.
 */
static SSL_CTX *client_ctx(void)
{
	pthread_mutex_lock(&tls_lock);
	if (!tls_ctx) {
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		bool ok = ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1;
		if (ok && tls_ca_file)
			ok = SSL_CTX_load_verify_locations(ctx, tls_ca_file, NULL) == 1;
		else if (ok)
			ok = SSL_CTX_set_default_verify_paths(ctx) == 1;
		if (ok && tls_cert_file)
			ok = use_client_cert(ctx, tls_cert_file, tls_key_file, NULL, 0);
		if (ok) {
			SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
			tls_ctx = ctx;
		} else {
			SSL_CTX_free(ctx);
		}
	}
	if (tls_ctx)
		SSL_CTX_up_ref(tls_ctx);
	SSL_CTX *ctx = tls_ctx;
	pthread_mutex_unlock(&tls_lock);
	return ctx;
}

/* A connection: a socket, with TLS over it for https://. */
struct conn {
	int fd;
	SSL *ssl;
};

/* Waits as a TLS call asked (want read or want write); false on a real error. */
static enum fl_status tls_wait(struct conn *c, int rc, int64_t deadline_us)
{
	int err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ)
		return wait_fd(c->fd, POLLIN, deadline_us);
	if (err == SSL_ERROR_WANT_WRITE)
		return wait_fd(c->fd, POLLOUT, deadline_us);
	return FL_ERR_UNAVAILABLE;
}

/* The TLS handshake, with the server's name (or IP address) verified. */
static enum fl_status tls_start(struct conn *c, const char *host, int64_t deadline_us)
{
	unsigned char addr[16];
	SSL_CTX *ctx = client_ctx();
	if (!ctx)
		return FL_ERR_CRYPTO;
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL keeps its own reference */
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
		return FL_ERR_CRYPTO;
	bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
	if (is_ip) {
		X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
			return FL_ERR_CRYPTO;
	} else if (SSL_set_tlsext_host_name(c->ssl, host) != 1 ||
		   SSL_set1_host(c->ssl, host) != 1) {
		return FL_ERR_CRYPTO;
	}
	for (;;) {
		int rc = SSL_connect(c->ssl);
		if (rc == 1)
			return FL_OK;
		enum fl_status st = tls_wait(c, rc, deadline_us);
		if (st != FL_OK)
			return st;
	}
}

/* Sends up to len bytes: how many, 0 after a wait, -1 on failure (status in *st). */
static ssize_t conn_send(struct conn *c, const char *data, size_t len, int64_t deadline_us,
			 enum fl_status *st)
{
	if (!c->ssl) {
		ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			*st = wait_fd(c->fd, POLLOUT, deadline_us);
		else if (errno != EINTR)
			*st = FL_ERR_UNAVAILABLE;
		return *st == FL_OK ? 0 : -1;
	}
	int n = SSL_write(c->ssl, data, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0)
		return n;
	*st = tls_wait(c, n, deadline_us);
	return *st == FL_OK ? 0 : -1;
}

/* Receives: bytes read, 0 at the end of the answer, -2 after a wait, -1 on failure. */
static ssize_t conn_recv(struct conn *c, char *buf, size_t cap, int64_t deadline_us,
			 enum fl_status *st)
{
	if (!c->ssl) {
		ssize_t n = recv(c->fd, buf, cap, 0);
		if (n >= 0)
			return n;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			*st = wait_fd(c->fd, POLLIN, deadline_us);
		else if (errno != EINTR)
			*st = FL_ERR_UNAVAILABLE;
		return *st == FL_OK ? -2 : -1;
	}
	int n = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
	if (n > 0)
		return n;
	int err = SSL_get_error(c->ssl, n);
	if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
		return 0; /* closed (cleanly, or without close_notify after the answer) */
	*st = tls_wait(c, n, deadline_us);
	return *st == FL_OK ? -2 : -1;
}

static bool printable(const char *text, unsigned char lo)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		if (*p < lo || *p > 0x7e)
			return false;
	return true;
}

/* Decodes a chunked body in place; false when it is malformed or cut short. */
static bool dechunk(char *data, size_t len, size_t *ret_len)
{
	size_t in = 0, out = 0;
	for (;;) {
		char *line_end = memmem(data + in, len - in, "\r\n", 2), *end;
		if (!line_end || !isxdigit((unsigned char)data[in]))
			return false;
		unsigned long long size = strtoull(data + in, &end, 16);
		if (end != line_end && *end != ';')
			return false;
		in = (size_t)(line_end - data) + 2;
		if (size == 0) {
			*ret_len = out;
			return true;
		}
		if (size > len - in || len - in - size < 2 || memcmp(data + in + size, "\r\n", 2))
			return false;
		memmove(data + out, data + in, size);
		out += size;
		in += size + 2;
	}
}

/* Parses the status line and the headers that delimit the body. */
static bool parse_head(const char *head, unsigned *ret_status, long long *ret_length,
		       bool *ret_chunked)
{
	if (strncmp(head, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)head[7]) ||
	    head[8] != ' ' || !isdigit((unsigned char)head[9]) ||
	    !isdigit((unsigned char)head[10]) || !isdigit((unsigned char)head[11]))
		return false;
	*ret_status = (unsigned)atoi(head + 9);
	*ret_length = -1;
	*ret_chunked = false;
	for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r';
	     line = strstr(line + 2, "\r\n")) {
		const char *name = line + 2, *value = strchr(name, ':');
		if (!value)
			return false;
		value += 1 + strspn(value + 1, " \t");
		if (strncasecmp(name, "Content-Length:", 15) == 0) {
			if (!isdigit((unsigned char)*value))
				return false;
			*ret_length = strtoll(value, NULL, 10);
		} else if (strncasecmp(name, "Transfer-Encoding:", 18) == 0) {
			*ret_chunked = strncasecmp(value, "chunked", 7) == 0;
		}
	}
	return true;
}

/* The parts of a base URL (see fl_httpc_get); false when it is malformed. */
struct url_parts {
	bool https;
	char host[256], port[8];
	const char *authority; /* "host:port", authority_len bytes */
	size_t authority_len;
	const char *prefix; /* path prefix without trailing '/', prefix_len bytes */
	size_t prefix_len;
};

static bool split_url(const char *base_url, struct url_parts *u)
{
	u->https = strncasecmp(base_url, "https://", 8) == 0;
	if ((!u->https && strncasecmp(base_url, "http://", 7) != 0) || !printable(base_url, 0x21))
		return false;
	snprintf(u->port, sizeof(u->port), "%s", u->https ? "443" : "80");
	const char *authority = base_url + (u->https ? 8 : 7),
		   *prefix = authority + strcspn(authority, "/?#@");
	const char *host_from = authority, *host_to = prefix, *port_from = NULL;
	if (*authority == '[') {
		host_from = authority + 1;
		host_to = memchr(host_from, ']', (size_t)(prefix - host_from));
		if (!host_to || (host_to + 1 < prefix && host_to[1] != ':'))
			return false;
		port_from = host_to + 1 < prefix ? host_to + 2 : NULL;
	} else if ((port_from = memchr(authority, ':', (size_t)(prefix - authority)))) {
		host_to = port_from++;
	}
	size_t prefix_len = strlen(prefix);
	while (prefix_len && prefix[prefix_len - 1] == '/')
		prefix_len--;
	if (host_to == host_from || host_to - host_from >= (long)sizeof(u->host) ||
	    (*prefix && *prefix != '/') ||
	    (port_from && (prefix - port_from < 1 || prefix - port_from > 5 ||
			   strspn(port_from, "0123456789") < (size_t)(prefix - port_from))))
		return false;
	snprintf(u->host, sizeof(u->host), "%.*s", (int)(host_to - host_from), host_from);
	if (port_from)
		snprintf(u->port, sizeof(u->port), "%.*s", (int)(prefix - port_from), port_from);
	u->authority = authority;
	u->authority_len = (size_t)(prefix - authority);
	u->prefix = prefix;
	u->prefix_len = prefix_len;
	return atoi(u->port) >= 1 && atoi(u->port) <= 65535;
}

/*
 * One exchange: method, base_url + path_and_query, an optional bearer token
 * and an optional body with its content type (see fl_httpc_request).
 */
static enum fl_status exchange(const char *method, const char *base_url, const char *path_and_query,
			       const char *bearer_token, const char *content_type,
			       const char *payload, size_t payload_len, int timeout_ms,
			       unsigned *ret_status, char **ret_body, size_t *ret_len)
{
	int64_t deadline_us = fl_time_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
	char *request = NULL, *buf = NULL, *head_end = NULL;
	size_t len = 0, cap = 0, sent = 0, request_len;
	struct conn c = {-1, NULL};
	struct url_parts u;
	enum fl_status st;

	if (!base_url || !path_and_query || !ret_status || !ret_body || !ret_len)
		return FL_ERR_INVALID;
	if (path_and_query[0] != '/' || !printable(path_and_query, 0x21) ||
	    (bearer_token && (!bearer_token[0] || !printable(bearer_token, 0x20))) ||
	    !split_url(base_url, &u))
		return FL_ERR_INVALID;

	char content_head[320] = "";
	if (content_type || payload_len || strcmp(method, "GET") != 0)
		snprintf(content_head, sizeof(content_head), "%s%s%sContent-Length: %zu\r\n",
			 content_type ? "Content-Type: " : "", content_type ? content_type : "",
			 content_type ? "\r\n" : "", payload_len);
	request_len = strlen(path_and_query) + u.prefix_len + u.authority_len +
		      (bearer_token ? strlen(bearer_token) : 0) + strlen(method) +
		      strlen(content_head) + 160;
	if (payload_len > SIZE_MAX - request_len || !(request = malloc(request_len + payload_len)))
		return FL_ERR_NOMEM;
	request_len = (size_t)snprintf(
	    request, request_len,
	    "%s %.*s%s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: fledger\r\nAccept: */*\r\n"
	    "Connection: close\r\n%s%s%s%s\r\n",
	    method, (int)u.prefix_len, u.prefix, path_and_query, (int)u.authority_len, u.authority,
	    bearer_token ? "Authorization: Bearer " : "", bearer_token ? bearer_token : "",
	    bearer_token ? "\r\n" : "", content_head);
	if (payload_len)
		memcpy(request + request_len, payload, payload_len);
	request_len += payload_len;
	st = dial(u.host, u.port, deadline_us, &c.fd);
	if (st == FL_OK && u.https)
		st = tls_start(&c, u.host, deadline_us);
	while (st == FL_OK && sent < request_len) {
		ssize_t n = conn_send(&c, request + sent, request_len - sent, deadline_us, &st);
		if (n > 0)
			sent += (size_t)n;
	}

	unsigned status = 0;
	long long length = -1;
	bool chunked = false;
	while (st == FL_OK) {
		if (!head_end && (head_end = memmem(buf ? buf : "", len, "\r\n\r\n", 4))) {
			*head_end = '\0'; /* the head ends here: parse it alone */
			if (!parse_head(buf, &status, &length, &chunked))
				st = FL_ERR_UNAVAILABLE;
			else if (length > (long long)FL_HTTPC_MAX_BODY)
				st = FL_ERR_FULL;
		} else if (!head_end && len > HEADER_MAX) {
			st = FL_ERR_UNAVAILABLE;
		}
		if (st != FL_OK ||
		    (head_end && !chunked && length >= 0 &&
		     len - (size_t)(head_end + 4 - buf) >= (unsigned long long)length))
			break;
		if (cap - len < 16 * 1024) {
			size_t head_at = head_end ? (size_t)(head_end - buf) : 0;
			size_t grown_cap = cap ? 2 * cap : 64 * 1024;
			if (grown_cap > FL_HTTPC_MAX_BODY + HEADER_MAX + 1)
				grown_cap = FL_HTTPC_MAX_BODY + HEADER_MAX + 1;
			char *grown = grown_cap > cap ? realloc(buf, grown_cap) : NULL;
			if (!grown) {
				st = grown_cap > cap ? FL_ERR_NOMEM : FL_ERR_FULL;
				break;
			}
			buf = grown;
			cap = grown_cap;
			head_end = head_end ? buf + head_at : NULL;
		}
		ssize_t n = conn_recv(&c, buf + len, cap - len - 1, deadline_us, &st);
		if (n > 0)
			len += (size_t)n;
		else if (n == 0)
			break;
	}
	if (c.ssl) {
		ERR_clear_error(); /* leave nothing of this exchange on the thread's queue */
		SSL_free(c.ssl);
	}
	if (c.fd >= 0)
		close(c.fd);
	free(request);

	size_t body_at = head_end ? (size_t)(head_end + 4 - buf) : 0, body_len = len - body_at;
	if (st == FL_OK && !head_end)
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && chunked && !dechunk(buf + body_at, body_len, &body_len))
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && !chunked && length >= 0 && body_len < (unsigned long long)length)
		st = FL_ERR_UNAVAILABLE;
	else if (st == FL_OK && !chunked && length >= 0)
		body_len = (size_t)length;
	if (st == FL_OK && body_len > FL_HTTPC_MAX_BODY)
		st = FL_ERR_FULL;
	if (st != FL_OK) {
		free(buf);
		return st;
	}
	memmove(buf, buf + body_at, body_len);
	buf[body_len] = '\0';
	*ret_status = status;
	*ret_body = buf;
	*ret_len = body_len;
	return FL_OK;
}

enum fl_status fl_httpc_get(const char *base_url, const char *path_and_query,
			    const char *bearer_token, int timeout_ms, unsigned *ret_status,
			    char **ret_body, size_t *ret_len)
{
	return exchange("GET", base_url, path_and_query, bearer_token, NULL, NULL, 0, timeout_ms,
			ret_status, ret_body, ret_len);
}

enum fl_status fl_httpc_request(const char *method, const char *base_url,
				const char *path_and_query, const char *bearer_token,
				const char *content_type, const char *body, size_t body_len,
				int timeout_ms, unsigned *ret_status, char **ret_body,
				size_t *ret_len)
{
	if (!method || !method[0] || strlen(method) > 16 ||
	    strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method) ||
	    (content_type &&
	     (!content_type[0] || strlen(content_type) > 200 || !printable(content_type, 0x20))) ||
	    (body_len && !body))
		return FL_ERR_INVALID;
	return exchange(method, base_url, path_and_query, bearer_token, content_type, body,
			body_len, timeout_ms, ret_status, ret_body, ret_len);
}

/* ---- streaming (fl_httpc_request_stream) ----------------------------------- */

#define STREAM_BUF (64 * 1024)

/* Where a streamed answer's body stands. */
struct body_state {
	const struct fl_httpc_stream *stream;
	bool chunked;
	long long length; /* -1: until the connection ends */
	uint64_t received;
	bool done;
	/* chunked: */
	enum { CHUNK_SIZE, CHUNK_DATA, CHUNK_DATA_END, CHUNK_TRAILER } chunk;
	uint64_t chunk_left;
	char line[256];
	size_t line_len;
};

/* Passes data to on_body; false when it asked to stop. */
static bool deliver(struct body_state *b, const char *data, size_t len)
{
	b->received += len;
	return len == 0 || !b->stream->on_body ||
	       b->stream->on_body(b->stream->ctx, data, len) == 0;
}

/*
 * Takes len more bytes of the answer's body: decodes chunks, stops at
 * Content-Length. FL_ERR_UNAVAILABLE for a malformed chunked body, FL_ERR_IO
 * when on_body asked to stop.
 */
static enum fl_status feed_body(struct body_state *b, const char *data, size_t len)
{
	if (!b->chunked) {
		if (b->length >= 0 && (uint64_t)len > (uint64_t)b->length - b->received)
			len = (size_t)((uint64_t)b->length - b->received);
		if (!deliver(b, data, len))
			return FL_ERR_IO;
		b->done = b->length >= 0 && b->received == (uint64_t)b->length;
		return FL_OK;
	}
	size_t at = 0;
	while (at < len && !b->done) {
		if (b->chunk == CHUNK_DATA) {
			size_t n = len - at < b->chunk_left ? len - at : (size_t)b->chunk_left;
			if (!deliver(b, data + at, n))
				return FL_ERR_IO;
			at += n;
			b->chunk_left -= n;
			if (b->chunk_left == 0) {
				b->chunk = CHUNK_DATA_END;
				b->line_len = 0;
			}
			continue;
		}
		/* a line: the size line, the CRLF after data, or a trailer line */
		char c = data[at++];
		if (b->line_len >= sizeof(b->line) - 1)
			return FL_ERR_UNAVAILABLE;
		b->line[b->line_len++] = c;
		if (c != '\n')
			continue;
		b->line[b->line_len] = '\0';
		if (b->line_len < 2 || b->line[b->line_len - 2] != '\r')
			return FL_ERR_UNAVAILABLE;
		bool empty = b->line_len == 2;
		b->line_len = 0;
		if (b->chunk == CHUNK_DATA_END) {
			if (!empty)
				return FL_ERR_UNAVAILABLE;
			b->chunk = CHUNK_SIZE;
		} else if (b->chunk == CHUNK_TRAILER) {
			b->done = empty;
		} else {
			char *end;
			if (!isxdigit((unsigned char)b->line[0]))
				return FL_ERR_UNAVAILABLE;
			errno = 0;
			unsigned long long size = strtoull(b->line, &end, 16);
			if (errno || (*end != '\r' && *end != ';'))
				return FL_ERR_UNAVAILABLE;
			b->chunk_left = size;
			b->chunk = size ? CHUNK_DATA : CHUNK_TRAILER;
		}
	}
	return FL_OK;
}

/* Sends all of data, each wait bounded by timeout_ms. */
static enum fl_status send_all(struct conn *c, const char *data, size_t len, int timeout_ms)
{
	enum fl_status st = FL_OK;
	size_t sent = 0;
	while (sent < len) {
		ssize_t n = conn_send(c, data + sent, len - sent,
				      fl_time_mono_us() + (int64_t)timeout_ms * 1000, &st);
		if (n < 0)
			return st;
		sent += (size_t)n;
	}
	return FL_OK;
}

bool fl_httpc_head_value(const char *head, const char *name, char *buf, size_t buf_cap)
{
	size_t name_len = strlen(name);
	if (!head || !buf || !buf_cap)
		return false;
	for (const char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		const char *field = line + 2;
		if (strncasecmp(field, name, name_len) != 0 || field[name_len] != ':')
			continue;
		const char *value = field + name_len + 1;
		value += strspn(value, " \t");
		size_t len = strcspn(value, "\r\n");
		while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
			len--;
		snprintf(buf, buf_cap, "%.*s", (int)len, value);
		return true;
	}
	return false;
}

enum fl_status fl_httpc_request_stream(const char *method, const char *base_url,
				       const char *path_and_query, const char *bearer_token,
				       const char *content_type,
				       const struct fl_httpc_stream *stream, int timeout_ms,
				       unsigned *ret_status)
{
	struct url_parts u;
	struct conn c = {-1, NULL};
	struct body_state b = {.stream = stream, .length = -1};
	char *head = NULL, *buf = NULL;
	size_t head_len = 0;
	unsigned status = 0;
	enum fl_status st;

	if (!method || !method[0] || strlen(method) > 16 ||
	    strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method) || !base_url ||
	    !path_and_query || path_and_query[0] != '/' || !printable(path_and_query, 0x21) ||
	    (bearer_token && (!bearer_token[0] || !printable(bearer_token, 0x20))) ||
	    (content_type &&
	     (!content_type[0] || strlen(content_type) > 200 || !printable(content_type, 0x20))) ||
	    !stream || (stream->body_len && !stream->body_file) || !ret_status ||
	    (stream->accept && (!stream->accept[0] || strlen(stream->accept) > 200 ||
				!printable(stream->accept, 0x20))) ||
	    timeout_ms <= 0 || !split_url(base_url, &u))
		return FL_ERR_INVALID;
	size_t head_cap = strlen(path_and_query) + u.prefix_len + u.authority_len +
			  (bearer_token ? strlen(bearer_token) : 0) + strlen(method) +
			  (content_type ? strlen(content_type) : 0) + 512;
	if (!(head = malloc(head_cap > HEADER_MAX + 1 ? head_cap : HEADER_MAX + 1)) ||
	    !(buf = malloc(STREAM_BUF))) {
		st = FL_ERR_NOMEM;
		goto free_buffers;
	}
	char length_line[48] = "";
	if (content_type || stream->body_len || strcmp(method, "GET") != 0)
		snprintf(length_line, sizeof(length_line), "Content-Length: %llu\r\n",
			 (unsigned long long)stream->body_len);
	int n_head =
	    snprintf(head, head_cap,
		     "%s %.*s%s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: fledger\r\nAccept: %s\r\n"
		     "Connection: close\r\n%s%s%s%s%s%s%s\r\n",
		     method, (int)u.prefix_len, u.prefix, path_and_query, (int)u.authority_len,
		     u.authority, stream->accept ? stream->accept : "*/*",
		     bearer_token ? "Authorization: Bearer " : "", bearer_token ? bearer_token : "",
		     bearer_token ? "\r\n" : "", content_type ? "Content-Type: " : "",
		     content_type ? content_type : "", content_type ? "\r\n" : "", length_line);
	if (n_head < 0 || (size_t)n_head >= head_cap) {
		st = FL_ERR_INVALID;
		goto free_buffers;
	}

	st = dial(u.host, u.port, fl_time_mono_us() + (int64_t)timeout_ms * 1000, &c.fd);
	if (st == FL_OK && u.https)
		st = tls_start(&c, u.host, fl_time_mono_us() + (int64_t)timeout_ms * 1000);
	if (st != FL_OK)
		goto close_conn;

	/*
	 * The request. A server may answer early (an error) and close while the
	 * body is still going out: a failed send then falls through to reading
	 * whatever answer there is.
	 */
	enum fl_status send_st = send_all(&c, head, (size_t)n_head, timeout_ms);
	uint64_t sent = 0, reported = 0;
	while (send_st == FL_OK && sent < stream->body_len) {
		size_t want = stream->body_len - sent < STREAM_BUF
				  ? (size_t)(stream->body_len - sent)
				  : STREAM_BUF;
		size_t got = fread(buf, 1, want, stream->body_file);
		if (got == 0) {
			st = FL_ERR_IO; /* the file ended or failed early */
			goto close_conn;
		}
		send_st = send_all(&c, buf, got, timeout_ms);
		sent += got;
		if (stream->on_sent &&
		    (sent - reported >= STREAM_BUF || sent == stream->body_len)) {
			stream->on_sent(stream->ctx, sent);
			reported = sent;
		}
	}
	if (send_st == FL_ERR_TIMEOUT) {
		st = FL_ERR_TIMEOUT;
		goto close_conn;
	}

	/* The answer: the head into head[], then the body piece by piece. */
	bool have_head = false;
	for (;;) {
		char *into = have_head ? buf : head + head_len;
		size_t cap = have_head ? STREAM_BUF : HEADER_MAX - head_len;
		if (!have_head && cap == 0) {
			st = FL_ERR_UNAVAILABLE;
			break;
		}
		ssize_t n =
		    conn_recv(&c, into, cap, fl_time_mono_us() + (int64_t)timeout_ms * 1000, &st);
		if (n == -2)
			continue;
		if (n < 0)
			break;
		if (n == 0) { /* the connection ended */
			if (!have_head || b.chunked || (b.length >= 0 && !b.done))
				st = FL_ERR_UNAVAILABLE;
			break;
		}
		if (have_head) {
			st = feed_body(&b, buf, (size_t)n);
		} else {
			head_len += (size_t)n;
			head[head_len] = '\0';
			char *end = memmem(head, head_len, "\r\n\r\n", 4);
			if (!end)
				continue;
			have_head = true;
			size_t rest_at = (size_t)(end + 4 - head), rest = head_len - rest_at;
			memcpy(buf, head + rest_at, rest);
			*end = '\0'; /* the head alone, as parse_head takes it */
			if (!parse_head(head, &status, &b.length, &b.chunked)) {
				st = FL_ERR_UNAVAILABLE;
				break;
			}
			if (stream->on_head && stream->on_head(stream->ctx, status, head) != 0) {
				st = FL_ERR_IO;
				break;
			}
			b.done = !b.chunked && b.length == 0;
			if (rest)
				st = feed_body(&b, buf, rest);
		}
		if (st != FL_OK || b.done)
			break;
	}
close_conn:
	if (c.ssl) {
		ERR_clear_error();
		SSL_free(c.ssl);
	}
	if (c.fd >= 0)
		close(c.fd);
free_buffers:
	free(buf);
	free(head);
	if (st == FL_OK)
		*ret_status = status;
	return st;
}
