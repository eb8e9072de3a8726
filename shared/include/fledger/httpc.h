#ifndef FLEDGER_HTTPC_H
#define FLEDGER_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fledger/status.h"

/*
 * A blocking HTTP client (libcurl underneath) for service-to-service
 * requests (query-svc reading command-svc's log, checkpoints and keys) and
 * the fledger CLI's requests. A client keeps its connections open between
 * requests (keep-alive), so a series of requests to one server pays for one
 * TCP connection and one TLS handshake.
 *
 * http:// and https:// (TLS 1.2 or later; the server's certificate is
 * verified against the client's CA file, else the system's CAs, and must
 * name the URL's host or IP address; a client certificate is presented when
 * the client has one). A TLS answer that ends without the server's
 * close_notify is an error, never a clean end. Requests go to the URL given:
 * no proxy (the environment's http_proxy and the like are ignored), and a
 * redirect is an answer like any other, never followed.
 *
 * A client is used by one thread at a time; two threads take two clients.
 */
struct fl_httpc;

/* What a client is made with (fl_httpc_create). The strings are copied. */
struct fl_httpc_options {
	/* The PEM CA file that https:// servers must be signed by (NULL: the
	 * system's CA store). */
	const char *ca_file;
	/* The client certificate (PEM, with its chain) and its private key
	 * (PEM, without a passphrase), presented to https:// servers that ask
	 * for one (mutual TLS); both NULL: none. */
	const char *cert_file;
	const char *key_file;
	/* Buffered answers larger than this are refused with FL_ERR_FULL (0:
	 * FL_HTTPC_MAX_BODY). */
	size_t max_body;
};

/* The default limit on a buffered answer's body. */
#define FL_HTTPC_MAX_BODY ((size_t)256 << 20)

/*
 * A new client (options may be NULL: no CA file, no client certificate).
 * FL_ERR_INVALID when only one of cert_file and key_file is given, or when
 * they cannot be loaded or do not match; then error (may be NULL) gets the
 * file and the reason. FL_ERR_NOMEM. The caller destroys the client.
 */
enum fl_status fl_httpc_create(const struct fl_httpc_options *options, char *error,
			       size_t error_size, struct fl_httpc **ret_client);

/* Closes the client's connections and frees it. Accepts NULL. */
void fl_httpc_destroy(struct fl_httpc *client);

/*
 * GETs base_url + path_and_query. base_url is "http[s]://HOST[:PORT][/PREFIX]"
 * (HOST a name, an IPv4 address or a bracketed IPv6 address; no user, query
 * or fragment); path_and_query starts with '/'. bearer_token (may be NULL)
 * is sent as "Authorization: Bearer <token>". timeout_ms (> 0) bounds the
 * whole exchange: name resolution, connect, request and answer.
 *
 * FL_OK when an HTTP answer arrived, whatever its status: *ret_status is the
 * status code, *ret_body a new NUL-terminated malloc'd copy of the body that
 * the caller frees, *ret_len its length. Errors, with nothing written:
 * FL_ERR_INVALID (a malformed base URL, a path not starting with '/', a
 * control character in the path or token, timeout_ms <= 0),
 * FL_ERR_UNAVAILABLE (the name does not resolve, no address accepts the
 * connection, TLS fails, the connection breaks, or the answer is not HTTP
 * or is cut short), FL_ERR_TIMEOUT (timeout_ms ran out), FL_ERR_FULL (the
 * answer is over the client's max_body), FL_ERR_CRYPTO (the client's own
 * CA file or certificate cannot be used), FL_ERR_NOMEM.
 */
enum fl_status fl_httpc_get(struct fl_httpc *client, const char *base_url,
			    const char *path_and_query, const char *bearer_token, int timeout_ms,
			    unsigned *ret_status, char **ret_body, size_t *ret_len);

/*
 * As fl_httpc_get, with any method (upper-case letters: "POST", "PUT",
 * "DELETE", ...) and an optional body of body_len bytes (body may be NULL
 * when body_len is 0). content_type (may be NULL) is sent as Content-Type;
 * a Content-Length header is sent with a body, a content type, or any
 * method but GET and HEAD. The body is the caller's and is only read. Same
 * answers and errors as fl_httpc_get; FL_ERR_INVALID also for a malformed
 * method or content type.
 */
enum fl_status fl_httpc_request(struct fl_httpc *client, const char *method, const char *base_url,
				const char *path_and_query, const char *bearer_token,
				const char *content_type, const char *body, size_t body_len,
				int timeout_ms, unsigned *ret_status, char **ret_body,
				size_t *ret_len);

/* ---- streaming ---------------------------------------------------------- */

/*
 * What a streamed exchange sends and where its answer goes
 * (fl_httpc_request_stream). Nothing of the body is held in memory beyond
 * one buffer of a few tens of KiB, in either direction.
 */
struct fl_httpc_stream {
	/*
	 * The request body: exactly body_len bytes read from body_file from
	 * its current position (body_file may be NULL when body_len is 0).
	 * The file is the caller's; it is only read.
	 */
	FILE *body_file;
	uint64_t body_len;
	/* Sent as Accept (may be NULL: any type); printable ASCII, at most 200 bytes. */
	const char *accept;
	/*
	 * Called (may be NULL) as the body is sent, with the bytes sent so far,
	 * at most every 64 KiB.
	 */
	void (*on_sent)(void *ctx, uint64_t sent);
	/*
	 * Called once when the answer's head has arrived, with its status and
	 * its head ("HTTP/1.1 200 OK\r\nName: value", the status line and the
	 * headers without the CRLF after the last one; valid during the call
	 * only; interim 1xx answers are skipped). A nonzero return stops the
	 * exchange with FL_ERR_IO.
	 */
	int (*on_head)(void *ctx, unsigned status, const char *head);
	/*
	 * Called with each piece of the answer's body as it arrives (chunked
	 * transfer coding already removed), in order. A nonzero return stops
	 * the exchange with FL_ERR_IO.
	 */
	int (*on_body)(void *ctx, const char *data, size_t len);
	void *ctx;
};

/*
 * As fl_httpc_request, but the request body comes from stream->body_file and
 * the answer goes to stream->on_head and stream->on_body as it arrives, so
 * that neither is held in memory, whatever its size (no max_body).
 * timeout_ms bounds the connection and each wait for the server (to accept
 * more of the body, or to send more of the answer; checked about once a
 * second), not the whole exchange: a long transfer that keeps moving is
 * never cut.
 *
 * FL_OK when the whole answer arrived (*ret_status its status). Errors: as
 * fl_httpc_request, plus FL_ERR_IO (body_file ended or failed before
 * body_len bytes, or a callback asked to stop); on an error
 * the callbacks may already have seen part of the answer.
 */
enum fl_status fl_httpc_request_stream(struct fl_httpc *client, const char *method,
				       const char *base_url, const char *path_and_query,
				       const char *bearer_token, const char *content_type,
				       const struct fl_httpc_stream *stream, int timeout_ms,
				       unsigned *ret_status);

/*
 * The value of header name (case-insensitive) in a head as given to
 * on_head, copied into buf (NUL-terminated, cut to buf_cap - 1 bytes);
 * false when the head has no such header.
 */
bool fl_httpc_head_value(const char *head, const char *name, char *buf, size_t buf_cap);

#endif
