/*
 * The HTTP client (see httpc.h) over one libcurl easy handle per client:
 * the handle keeps its connection cache, DNS cache and TLS sessions across
 * requests, so consecutive requests to one server reuse the connection.
 * Each request resets the handle's options and sets them again, so nothing
 * of one request leaks into the next. libcurl parses URLs and frames
 * bodies (Content-Length, chunked, end of connection); a TLS body that runs
 * to the end of its connection without close_notify is refused here (see
 * watch_alerts), since libcurl 7.88 accepts it.
 */
#include "fledger/httpc.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fledger/text.h"
#include "fledger/util.h"

#define HEAD_MAX (64 * 1024)	 /* a streamed answer's status line and headers */
#define REPORT_EVERY (64 * 1024) /* on_sent at most this often */

struct fl_httpc {
	CURL *easy;
	char *ca_file, *cert_file, *key_file;
	size_t max_body;
	bool close_notify; /* the server's TLS close_notify arrived during this exchange */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_status = CURLE_FAILED_INIT;
static int ctx_client_index = -1; /* the client an SSL_CTX of libcurl's belongs to */

static void global_init(void)
{
	global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
	ctx_client_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (ctx_client_index < 0 && global_status == CURLE_OK)
		global_status = CURLE_OUT_OF_MEMORY;
}

/*
 * libcurl 7.88 with OpenSSL 3 reads a TCP end without close_notify as the
 * end of the stream, which would let a body delimited by the end of the
 * connection be cut by anyone on the path. The client watches for the
 * alert itself, and an exchange whose body ran until the connection ended
 * without it fails (see cut_short).
 */
static void watch_alerts(const SSL *ssl, int where, int ret)
{
	if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT || (ret & 0xff) != SSL_AD_CLOSE_NOTIFY)
		return;
	struct fl_httpc *client = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_client_index);
	if (client)
		client->close_notify = true;
}

/* Called by libcurl for each new TLS connection's context. */
static CURLcode on_new_tls(CURL *easy, void *ssl_ctx, void *opaque)
{
	(void)easy;
	if (SSL_CTX_set_ex_data(ssl_ctx, ctx_client_index, opaque) != 1)
		return CURLE_OUT_OF_MEMORY;
	SSL_CTX_set_info_callback(ssl_ctx, watch_alerts);
	return CURLE_OK;
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
 * Loads the client certificate (with its chain) and its key once, so that
 * a bad pair is an error when the client is made rather than at the first
 * TLS handshake, with a reason a person can act on.
 */
static bool check_client_cert(const char *cert_file, const char *key_file, char *error,
			      size_t error_size)
{
	const char *reason = NULL, *file = cert_file;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		reason = "out of memory";
	} else if (access(cert_file, R_OK) != 0) {
		reason = strerror(errno);
	} else if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		reason = "not a PEM certificate";
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
	SSL_CTX_free(ctx);
	ERR_clear_error();
	if (reason && error)
		fl_set_error(error, error_size, "%s: %s", file, reason);
	return reason == NULL;
}

enum fl_status fl_httpc_create(const struct fl_httpc_options *options, char *error,
			       size_t error_size, struct fl_httpc **ret_client)
{
	static const struct fl_httpc_options none = {0};
	if (error && error_size)
		error[0] = '\0';
	if (!options)
		options = &none;
	if (!ret_client)
		return FL_ERR_INVALID;
	if (!options->cert_file != !options->key_file) {
		if (error)
			fl_set_error(error, error_size,
				     "a client certificate needs both its file and its key");
		return FL_ERR_INVALID;
	}
	if (options->cert_file &&
	    !check_client_cert(options->cert_file, options->key_file, error, error_size))
		return FL_ERR_INVALID;
	pthread_once(&global_once, global_init);
	if (global_status != CURLE_OK)
		return FL_ERR_NOMEM; /* curl_global_init fails only for want of memory */

	struct fl_httpc *client = calloc(1, sizeof(*client));
	if (!client)
		return FL_ERR_NOMEM;
	client->max_body = options->max_body ? options->max_body : FL_HTTPC_MAX_BODY;
	client->easy = curl_easy_init();
	client->ca_file = options->ca_file ? strdup(options->ca_file) : NULL;
	client->cert_file = options->cert_file ? strdup(options->cert_file) : NULL;
	client->key_file = options->key_file ? strdup(options->key_file) : NULL;
	if (!client->easy || (options->ca_file && !client->ca_file) ||
	    (options->cert_file && (!client->cert_file || !client->key_file))) {
		fl_httpc_destroy(client);
		return FL_ERR_NOMEM;
	}
	*ret_client = client;
	return FL_OK;
}

void fl_httpc_destroy(struct fl_httpc *client)
{
	if (!client)
		return;
	curl_easy_cleanup(client->easy);
	free(client->ca_file);
	free(client->cert_file);
	free(client->key_file);
	free(client);
}

/* ---- what every exchange checks and sets ----------------------------------- */

/* True when every byte of text lies in [lo, 0x7e]. */
static bool printable(const char *text, unsigned char lo)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		if (*p < lo || *p > 0x7e)
			return false;
	return true;
}

static bool valid_method(const char *method)
{
	return method && method[0] && strlen(method) <= 16 &&
	       strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(method);
}

/* A header value the caller gives: NULL, or printable ASCII of 1 to 200 bytes. */
static bool valid_field(const char *value)
{
	return !value || (value[0] && strlen(value) <= 200 && printable(value, 0x20));
}

/*
 * base_url (checked with libcurl's parser: http or https, a host, a port in
 * 1..65535 if any, no user, query or fragment) without its trailing '/',
 * then path_and_query, into url. FL_ERR_INVALID when either is unusable.
 */
static enum fl_status make_url(const char *base_url, const char *path_and_query,
			       const char *bearer_token, struct fl_text *url)
{
	if (!base_url || !path_and_query || path_and_query[0] != '/' ||
	    !printable(path_and_query, 0x21) ||
	    (bearer_token && (!bearer_token[0] || !printable(bearer_token, 0x20))))
		return FL_ERR_INVALID;
	CURLU *parsed = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *part = NULL;
	if (!parsed)
		return FL_ERR_NOMEM;
	bool ok = curl_url_set(parsed, CURLUPART_URL, base_url, 0) == CURLUE_OK &&
		  curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		  (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
		  curl_url_get(parsed, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] &&
		  curl_url_get(parsed, CURLUPART_USER, &part, 0) == CURLUE_NO_USER &&
		  curl_url_get(parsed, CURLUPART_QUERY, &part, 0) == CURLUE_NO_QUERY &&
		  curl_url_get(parsed, CURLUPART_FRAGMENT, &part, 0) == CURLUE_NO_FRAGMENT;
	CURLUcode port_rc = ok ? curl_url_get(parsed, CURLUPART_PORT, &port, 0) : CURLUE_OK;
	if (ok && port_rc == CURLUE_OK)
		ok = atoi(port) >= 1 && atoi(port) <= 65535;
	else if (ok)
		ok = port_rc == CURLUE_NO_PORT;
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(part); /* each get that found nothing left it NULL */
	curl_url_cleanup(parsed);
	if (!ok)
		return FL_ERR_INVALID;
	size_t base_len = strlen(base_url);
	while (base_len && base_url[base_len - 1] == '/')
		base_len--;
	*url = FL_TEXT_INIT;
	fl_text_append(url, base_url, base_len);
	fl_text_puts(url, path_and_query);
	if (url->failed) {
		fl_text_free(url);
		return FL_ERR_NOMEM;
	}
	return FL_OK;
}

/* Appends the header line name + value to *headers; false without memory. */
static bool add_header(struct curl_slist **headers, const char *name, const char *value)
{
	struct fl_text line = FL_TEXT_INIT;
	fl_text_puts(&line, name);
	fl_text_puts(&line, value);
	struct curl_slist *longer = line.failed ? NULL : curl_slist_append(*headers, line.data);
	fl_text_free(&line);
	if (longer)
		*headers = longer;
	return longer != NULL;
}

/*
 * Resets the handle and sets what every request has: the URL, the
 * protocols, TLS, the method and the request headers (into *ret_headers,
 * which the caller frees after the transfer). A method other than GET and
 * HEAD is sent as a POST renamed, so that it carries a Content-Length; the
 * caller then gives the body.
 */
static enum fl_status prepare(struct fl_httpc *client, const char *method, const char *url,
			      const char *bearer_token, const char *content_type,
			      const char *accept, bool has_body, struct curl_slist **ret_headers)
{
	CURL *easy = client->easy;
	struct curl_slist *headers = NULL;
	bool ok = true;

	curl_easy_reset(easy); /* keeps the open connections and TLS sessions */
#define SET(option, value) (ok = ok && curl_easy_setopt(easy, option, value) == CURLE_OK)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	/* Never a proxy from http_proxy, https_proxy or all_proxy: requests go
	 * to the URL given, as the bearer token is meant for that server. */
	SET(CURLOPT_PROXY, "");
	SET(CURLOPT_NOSIGNAL, 1L); /* the services are threaded */
	SET(CURLOPT_USERAGENT, "fledger");
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SET(CURLOPT_SSL_CTX_FUNCTION, on_new_tls);
	SET(CURLOPT_SSL_CTX_DATA, client);
	if (client->ca_file)
		SET(CURLOPT_CAINFO, client->ca_file);
	if (client->cert_file) {
		SET(CURLOPT_SSLCERT, client->cert_file);
		SET(CURLOPT_SSLKEY, client->key_file);
		SET(CURLOPT_KEYPASSWD, ""); /* never a prompt on the terminal */
	}
	if (strcmp(method, "HEAD") == 0 && !has_body && !content_type) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") == 0 && !has_body && !content_type) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		SET(CURLOPT_POST, 1L);
		if (strcmp(method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, method);
	}
	ok = ok && add_header(&headers, "Accept: ", accept ? accept : "*/*");
	if (bearer_token)
		ok = ok && add_header(&headers, "Authorization: Bearer ", bearer_token);
	/* Without a type, an empty value removes libcurl's own (a form type for POST). */
	ok = ok && add_header(&headers, content_type ? "Content-Type: " : "Content-Type:",
			      content_type ? content_type : "");
	/* A large body goes at once, without waiting for "100 Continue". */
	ok = ok && add_header(&headers, "Expect:", "");
	SET(CURLOPT_HTTPHEADER, headers);
#undef SET
	if (!ok) {
		curl_slist_free_all(headers);
		return FL_ERR_NOMEM;
	}
	*ret_headers = headers;
	return FL_OK;
}

/* Why an exchange failed, from libcurl's code and what the callbacks noted. */
static enum fl_status status_of(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return FL_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return FL_ERR_TIMEOUT;
	case CURLE_FILESIZE_EXCEEDED:
		return FL_ERR_FULL;
	case CURLE_OUT_OF_MEMORY:
		return FL_ERR_NOMEM;
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CRL_BADFILE:
		return FL_ERR_CRYPTO; /* our own files, not the server */
	default:
		return FL_ERR_UNAVAILABLE;
	}
}

/* ---- the answer's head ------------------------------------------------------ */

/* Where an exchange stands, shared by libcurl's callbacks. */
struct flow {
	const struct fl_httpc_stream *stream; /* NULL: a buffered exchange */
	CURL *easy;
	uint64_t sent, reported;
	struct fl_text head; /* the answer's head so far */
	bool head_done;
	bool head_too_long;
	bool stopped;	  /* a callback of the caller's asked to stop */
	bool file_failed; /* body_file ended or failed early */
	bool idle;	  /* the server moved nothing for timeout_ms */
	int timeout_ms;
	curl_off_t last_down, last_up;
	int64_t last_moved_us;
};

/*
 * Each line of the answer's head, then an empty line. The head goes to
 * on_head at the first empty line after a final (not 1xx) status; what
 * comes later (trailers) is not the head.
 */
static size_t take_head_line(char *data, size_t size, size_t count, void *opaque)
{
	struct flow *f = opaque;
	size_t len = size * count, text_len = len;
	if (f->head_done)
		return len;
	while (text_len && (data[text_len - 1] == '\n' || data[text_len - 1] == '\r'))
		text_len--;
	if (text_len) {
		if (f->head.len + text_len + 2 > HEAD_MAX) {
			f->head_too_long = true;
			return 0;
		}
		if (f->head.len)
			fl_text_puts(&f->head, "\r\n");
		fl_text_append(&f->head, data, text_len);
		return f->head.failed ? 0 : len;
	}
	long status = 0;
	curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 100 && status < 200) {
		f->head.len = 0; /* an interim answer: the real one follows */
		return len;
	}
	f->head_done = true;
	if (f->stream && f->stream->on_head &&
	    f->stream->on_head(f->stream->ctx, (unsigned)status,
			       f->head.data ? f->head.data : "")) {
		f->stopped = true;
		return 0;
	}
	return len;
}

/*
 * True when the answer's body ran until the connection ended (HTTP/1.x, no
 * Content-Length, not chunked, a status and method that carry a body), over
 * TLS, and the server's close_notify did not come before that end: the body
 * may have been cut by anyone on the path.
 */
static bool cut_short(struct fl_httpc *client, const struct flow *f, const char *method);

/*
 * The outcome of a transfer: what the callbacks noted, else libcurl's code;
 * an answer is whole only if it was not cut short (cut_short). *ret_status
 * is the answer's status when FL_OK.
 */
static enum fl_status outcome(struct fl_httpc *client, const struct flow *f, CURLcode rc,
			      const char *method, unsigned *ret_status)
{
	enum fl_status st;
	long status = 0;
	if (f->idle)
		st = FL_ERR_TIMEOUT;
	else if (f->stopped || f->file_failed)
		st = FL_ERR_IO;
	else if (f->head.failed)
		st = FL_ERR_NOMEM;
	else if (f->head_too_long)
		st = FL_ERR_UNAVAILABLE;
	else
		st = status_of(rc);
	if (st == FL_OK &&
	    (curl_easy_getinfo(client->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
	     cut_short(client, f, method)))
		st = FL_ERR_UNAVAILABLE;
	if (st == FL_OK)
		*ret_status = (unsigned)status;
	return st;
}

static bool cut_short(struct fl_httpc *client, const struct flow *f, const char *method)
{
	char *scheme = NULL, coding[64];
	long version = 0, status = 0;
	curl_off_t length = -1;
	curl_easy_getinfo(client->easy, CURLINFO_SCHEME, &scheme);
	curl_easy_getinfo(client->easy, CURLINFO_HTTP_VERSION, &version);
	curl_easy_getinfo(client->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(client->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
	bool chunked =
	    fl_httpc_head_value(f->head.data, "Transfer-Encoding", coding, sizeof(coding)) &&
	    strcasestr(coding, "chunked");
	return scheme && strcasecmp(scheme, "https") == 0 && version < CURL_HTTP_VERSION_2_0 &&
	       length < 0 && !chunked && status != 204 && status != 304 &&
	       strcmp(method, "HEAD") != 0 && !client->close_notify;
}

/* ---- buffered exchanges ---------------------------------------------------- */

struct collect {
	struct fl_text body;
	size_t max_body;
	bool full;
};

static size_t collect_body(char *data, size_t size, size_t count, void *opaque)
{
	struct collect *c = opaque;
	size_t len = size * count;
	if (len > c->max_body - c->body.len) {
		c->full = true;
		return 0; /* libcurl stops with CURLE_WRITE_ERROR */
	}
	fl_text_append(&c->body, data, len);
	return c->body.failed ? 0 : len;
}

static enum fl_status exchange(struct fl_httpc *client, const char *method, const char *base_url,
			       const char *path_and_query, const char *bearer_token,
			       const char *content_type, const char *payload, size_t payload_len,
			       int timeout_ms, unsigned *ret_status, char **ret_body,
			       size_t *ret_len)
{
	struct fl_text url;
	struct curl_slist *headers = NULL;
	struct collect c = {.body = FL_TEXT_INIT, .max_body = client->max_body};
	struct flow f = {.easy = client->easy, .head = FL_TEXT_INIT};
	enum fl_status st;
	bool has_body = payload_len || strcmp(method, "GET") != 0;

	if (timeout_ms <= 0 || !ret_status || !ret_body || !ret_len)
		return FL_ERR_INVALID;
	if ((st = make_url(base_url, path_and_query, bearer_token, &url)) != FL_OK)
		return st;
	if (strcmp(method, "HEAD") == 0)
		has_body = payload_len > 0;
	st =
	    prepare(client, method, url.data, bearer_token, content_type, NULL, has_body, &headers);
	if (st != FL_OK)
		goto free_url;
	CURL *easy = client->easy;
	bool ok = true;
#define SET(option, value) (ok = ok && curl_easy_setopt(easy, option, value) == CURLE_OK)
	if (has_body || content_type) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload_len);
		SET(CURLOPT_POSTFIELDS, payload_len ? payload : "");
	}
	SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	/* An announced body over the limit is refused before it arrives. */
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)client->max_body);
	SET(CURLOPT_HEADERFUNCTION, take_head_line);
	SET(CURLOPT_HEADERDATA, &f);
	SET(CURLOPT_WRITEFUNCTION, collect_body);
	SET(CURLOPT_WRITEDATA, &c);
#undef SET
	if (!ok) {
		st = FL_ERR_NOMEM;
		goto free_headers;
	}
	client->close_notify = false;
	CURLcode rc = curl_easy_perform(easy);
	unsigned status = 0;
	if (rc == CURLE_WRITE_ERROR && (c.full || c.body.failed))
		st = c.full ? FL_ERR_FULL : FL_ERR_NOMEM;
	else
		st = outcome(client, &f, rc, method, &status);
	if (st == FL_OK && !c.body.data)
		fl_text_reserve(&c.body, 0); /* an empty body is "" */
	if (st == FL_OK && c.body.failed)
		st = FL_ERR_NOMEM;
	if (st == FL_OK) {
		*ret_status = status;
		*ret_body = fl_text_take(&c.body, ret_len);
	}
free_headers:
	curl_slist_free_all(headers);
	fl_text_free(&f.head);
	fl_text_free(&c.body);
free_url:
	fl_text_free(&url);
	return st;
}

enum fl_status fl_httpc_get(struct fl_httpc *client, const char *base_url,
			    const char *path_and_query, const char *bearer_token, int timeout_ms,
			    unsigned *ret_status, char **ret_body, size_t *ret_len)
{
	if (!client)
		return FL_ERR_INVALID;
	return exchange(client, "GET", base_url, path_and_query, bearer_token, NULL, NULL, 0,
			timeout_ms, ret_status, ret_body, ret_len);
}

enum fl_status fl_httpc_request(struct fl_httpc *client, const char *method, const char *base_url,
				const char *path_and_query, const char *bearer_token,
				const char *content_type, const char *body, size_t body_len,
				int timeout_ms, unsigned *ret_status, char **ret_body,
				size_t *ret_len)
{
	if (!client || !valid_method(method) || !valid_field(content_type) || (body_len && !body))
		return FL_ERR_INVALID;
	return exchange(client, method, base_url, path_and_query, bearer_token, content_type, body,
			body_len, timeout_ms, ret_status, ret_body, ret_len);
}

/* ---- streaming (fl_httpc_request_stream) ----------------------------------- */

static size_t read_body(char *buf, size_t size, size_t count, void *opaque)
{
	struct flow *f = opaque;
	const struct fl_httpc_stream *stream = f->stream;
	size_t want = size * count;
	if (want > stream->body_len - f->sent)
		want = (size_t)(stream->body_len - f->sent);
	if (want == 0)
		return 0;
	size_t got = fread(buf, 1, want, stream->body_file);
	if (got == 0) {
		f->file_failed = true;
		return CURL_READFUNC_ABORT;
	}
	f->sent += got;
	if (stream->on_sent &&
	    (f->sent - f->reported >= REPORT_EVERY || f->sent == stream->body_len)) {
		stream->on_sent(stream->ctx, f->sent);
		f->reported = f->sent;
	}
	return got;
}

static size_t take_body(char *data, size_t size, size_t count, void *opaque)
{
	struct flow *f = opaque;
	size_t len = size * count;
	if (len && f->stream->on_body && f->stream->on_body(f->stream->ctx, data, len) != 0) {
		f->stopped = true;
		return 0;
	}
	return len;
}

/* Stops the exchange when neither direction moved for timeout_ms. */
static int watch_idle(void *opaque, curl_off_t down_total, curl_off_t down_now, curl_off_t up_total,
		      curl_off_t up_now)
{
	struct flow *f = opaque;
	int64_t now = fl_time_mono_us();
	(void)down_total;
	(void)up_total;
	if (down_now != f->last_down || up_now != f->last_up) {
		f->last_down = down_now;
		f->last_up = up_now;
		f->last_moved_us = now;
		return 0;
	}
	if (now - f->last_moved_us >= (int64_t)f->timeout_ms * 1000) {
		f->idle = true;
		return 1;
	}
	return 0;
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

enum fl_status fl_httpc_request_stream(struct fl_httpc *client, const char *method,
				       const char *base_url, const char *path_and_query,
				       const char *bearer_token, const char *content_type,
				       const struct fl_httpc_stream *stream, int timeout_ms,
				       unsigned *ret_status)
{
	struct fl_text url;
	struct curl_slist *headers = NULL;
	enum fl_status st;

	if (!client || !valid_method(method) || !valid_field(content_type) || !stream ||
	    (stream->body_len && !stream->body_file) || !valid_field(stream->accept) ||
	    !ret_status || timeout_ms <= 0)
		return FL_ERR_INVALID;
	if ((st = make_url(base_url, path_and_query, bearer_token, &url)) != FL_OK)
		return st;
	bool has_body = stream->body_len || strcmp(method, "GET") != 0;
	if (strcmp(method, "HEAD") == 0)
		has_body = stream->body_len > 0;
	st = prepare(client, method, url.data, bearer_token, content_type, stream->accept, has_body,
		     &headers);
	if (st != FL_OK)
		goto free_url;
	struct flow f = {.stream = stream,
			 .easy = client->easy,
			 .head = FL_TEXT_INIT,
			 .timeout_ms = timeout_ms,
			 .last_moved_us = fl_time_mono_us()};
	CURL *easy = client->easy;
	bool ok = true;
#define SET(option, value) (ok = ok && curl_easy_setopt(easy, option, value) == CURLE_OK)
	if (has_body || content_type) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)stream->body_len);
		SET(CURLOPT_READFUNCTION, read_body);
		SET(CURLOPT_READDATA, &f);
	}
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	SET(CURLOPT_NOPROGRESS, 0L);
	SET(CURLOPT_XFERINFOFUNCTION, watch_idle);
	SET(CURLOPT_XFERINFODATA, &f);
	SET(CURLOPT_HEADERFUNCTION, take_head_line);
	SET(CURLOPT_HEADERDATA, &f);
	SET(CURLOPT_WRITEFUNCTION, take_body);
	SET(CURLOPT_WRITEDATA, &f);
#undef SET
	if (!ok) {
		st = FL_ERR_NOMEM;
		goto free_head;
	}
	client->close_notify = false;
	st = outcome(client, &f, curl_easy_perform(easy), method, ret_status);
free_head:
	fl_text_free(&f.head);
	curl_slist_free_all(headers);
free_url:
	fl_text_free(&url);
	return st;
}
