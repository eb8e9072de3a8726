#ifndef FLEDGER_HTTPC_H
#define FLEDGER_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fledger/status.h"

/*
 * A small blocking HTTP/1.1 client for service-to-service GETs (query-svc
 * reading command-svc's log, checkpoints and keys) and the fledger CLI's
 * requests (fl_httpc_request: POST with a body). One request per
 * connection (Connection: close). The answer is delimited by Content-Length,
 * by chunked transfer coding, or by the end of the connection.
 *
 * http:// and https:// (OpenSSL, TLS 1.2 or later; the server's certificate
 * is verified against fl_httpc_set_ca_file's CA, else the system's CAs, and
 * must name the URL's host or IP address; a client certificate is presented
 * when fl_httpc_set_client_cert gave one).
 */

/*
 * The PEM CA file that https:// servers must be signed by (NULL: the
 * system's CA store). Applies to the requests that start after the call.
 */
enum fl_status fl_httpc_set_ca_file(const char *ca_file);

/*
 * The client certificate (PEM, with its chain) and its private key (PEM,
 * without a passphrase) presented to https:// servers that ask for one
 * (mutual TLS); both NULL: none. FL_ERR_INVALID when only one is given, or
 * when they cannot be loaded or do not match; then why (may be NULL) gets
 * the file and the reason. Applies to the requests that start after the
 * call.
 */
enum fl_status fl_httpc_set_client_cert(const char *cert_file, const char *key_file, char *why,
					size_t why_cap);

/* Answers larger than this are refused with FL_ERR_FULL. */
#define FL_HTTPC_MAX_BODY ((size_t)256 << 20)

/*
 * GETs base_url + path_and_query. base_url is "http://HOST[:PORT][/PREFIX]"
 * (HOST a name, an IPv4 address or a bracketed IPv6 address; PORT 80 by
 * default); path_and_query starts with '/'. bearer_token (may be NULL) is
 * sent as "Authorization: Bearer <token>". timeout_ms bounds the whole
 * exchange, connect and read (name resolution is the system's and is not
 * bounded).
 *
 * FL_OK when an HTTP answer arrived, whatever its status: *ret_status is the
 * status code, *ret_body a new NUL-terminated malloc'd copy of the body that
 * the caller frees, *ret_len its length. Errors, with nothing written:
 * FL_ERR_INVALID (a malformed or https:// base URL, a path not starting with
 * '/', a control character in the path or token), FL_ERR_UNAVAILABLE (the
 * name does not resolve, no address accepts the connection, the connection
 * breaks, or the answer is not HTTP), FL_ERR_TIMEOUT (timeout_ms ran out),
 * FL_ERR_FULL (the answer is over FL_HTTPC_MAX_BODY), FL_ERR_NOMEM.
 */
enum fl_status fl_httpc_get(const char *base_url, const char *path_and_query,
			    const char *bearer_token, int timeout_ms, unsigned *ret_status,
			    char **ret_body, size_t *ret_len);

/*
 * As fl_httpc_get, with any method (upper-case letters: "POST", "PUT",
 * "DELETE", ...) and an optional body of body_len bytes (body may be NULL
 * when body_len is 0). content_type (may be NULL) is sent as Content-Type;
 * a Content-Length header is sent with a body, a content type, or any
 * method but GET. The body is the caller's and is only read. Same answers
 * and errors as fl_httpc_get; FL_ERR_INVALID also for a malformed method or
 * content type.
 */
enum fl_status fl_httpc_request(const char *method, const char *base_url,
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
	 * only). A nonzero return stops the
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
 * that neither is held in memory, whatever its size (no FL_HTTPC_MAX_BODY).
 * timeout_ms bounds the connection and each wait for the server (to accept
 * more of the body, or to send more of the answer), not the whole exchange:
 * a long transfer that keeps moving is never cut.
 *
 * FL_OK when the whole answer arrived (*ret_status its status). Errors: as
 * fl_httpc_request, plus FL_ERR_IO (body_file ended or failed before
 * body_len bytes, or a callback asked to stop); on an error
 * the callbacks may already have seen part of the answer.
 */
enum fl_status fl_httpc_request_stream(const char *method, const char *base_url,
				       const char *path_and_query, const char *bearer_token,
				       const char *content_type,
				       const struct fl_httpc_stream *stream, int timeout_ms,
				       unsigned *ret_status);

/*
 * The value of header name (case-insensitive) in a head as given to
 * on_head, copied into buf (NUL-terminated, cut to buf_cap - 1 bytes);
 * false when the head has no such header.
 */
bool fl_httpc_head_value(const char *head, const char *name, char *buf, size_t buf_cap);

#endif
