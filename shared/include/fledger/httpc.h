#ifndef FLEDGER_HTTPC_H
#define FLEDGER_HTTPC_H

#include <stddef.h>

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

#endif
