#ifndef FLEDGER_HTTP_H
#define FLEDGER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "fledger/status.h"

/*
 * The HTTP server both services run: libmicrohttpd with internal epoll
 * threads (one unless asked for more), keep-alive, a body size limit, optional TLS with optional
 * client certificates, and deferred answers.
 *
 * The handler runs on the server thread once a request's body is complete.
 * It answers with one of the fl_http_respond* functions and returns
 * FL_HTTP_DONE, or keeps the request, returns FL_HTTP_DEFERRED, and some
 * thread answers it later (group commit: handlers queue work, a committer
 * answers many requests after one fsync). The connection of a deferred
 * request is suspended until the answer comes, so a slow answer costs no
 * server thread. The answer may come from another thread at any moment,
 * even before the handler returns.
 *
 * Every request gets exactly one answer. After its answer a request must not
 * be touched: the server frees it once the answer is sent.
 */

struct fl_http_server;
struct fl_http_request;

enum fl_http_disposition {
	FL_HTTP_DONE,	  /* the handler has answered */
	FL_HTTP_DEFERRED, /* the handler kept the request; it will be answered later */
};

/*
 * Handles one request. If it returns FL_HTTP_DONE without having answered,
 * the client gets a 500.
 */
typedef enum fl_http_disposition (*fl_http_handler_fn)(void *ctx, struct fl_http_request *req);

/*
 * Called on the server thread when a request is over: status is the status
 * sent, 0 when the client went away before an answer was queued;
 * duration_us runs from the first byte of the request to the end of the
 * answer. The request's getters still work here (and its user slot may be
 * freed here): meant for metrics and access logs.
 */
typedef void (*fl_http_complete_fn)(void *ctx, struct fl_http_request *req, unsigned status,
				    int64_t duration_us);

/*
 * Says whether a request's body is spooled to a file rather than kept in
 * memory (see fl_http_options.spool_body). Called on the server thread when
 * the request's head is in.
 */
typedef bool (*fl_http_spool_fn)(void *ctx, const char *method, const char *path);

struct fl_http_options {
	/* "HOST:PORT" ("127.0.0.1:8080", "[::1]:0"); port 0 picks a free
	 * port, see fl_http_server_port(). NULL means "127.0.0.1:8080". */
	const char *listen;
	/* Larger bodies get a 413 (0 means 1 MiB). */
	size_t max_body_bytes;
	/* PEM files. cert and key switch on TLS; client_ca additionally
	 * refuses (403) any request on a connection without a client
	 * certificate that this CA signed. NULL for none. */
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_client_ca_file;
	/* How long fl_http_server_destroy() waits for requests in flight
	 * (0 means 10 s). */
	unsigned grace_ms;
	/* Idle keep-alive connections close after this long (0 means 60 s). */
	unsigned idle_timeout_s;
	/* Once a request's first byte has arrived, the whole request (head
	 * and body) must arrive within this long, or the connection is
	 * closed without an answer (0 means 10 s). */
	unsigned request_timeout_s;
	/* Open connections at most (0 means 4096); more wait in the listen
	 * backlog until one closes. The soft RLIMIT_NOFILE is raised to fit
	 * them. */
	unsigned max_connections;
	/* Open connections from one client address at most (0 means 256);
	 * more are closed at once. */
	unsigned max_connections_per_ip;
	/* Server threads, each with its own epoll and its share of the
	 * connections (0 means 1). Handlers then run on several threads at
	 * once. */
	unsigned threads;
	fl_http_complete_fn on_complete; /* may be NULL */
	/* Routes that opt in (spool_body(ctx, method, path) true; NULL for
	 * none) get their body written, as it arrives, to an unlinked
	 * temporary file in spool_dir (NULL: $TMPDIR, else /tmp) instead of
	 * memory, up to max_spool_body_bytes (0 means 256 MiB; larger bodies
	 * get a 413). The handler reads it with fl_http_body_fd(). */
	fl_http_spool_fn spool_body;
	size_t max_spool_body_bytes;
	const char *spool_dir;
};

/*
 * Starts serving: binds options->listen and starts the server thread, which
 * calls handler(ctx, req) for each request. Errors: FL_ERR_INVALID (a bad
 * listen address or option), FL_ERR_IO (the address cannot be bound, or a
 * TLS file cannot be read), FL_ERR_CRYPTO (the TLS files are not a usable
 * certificate and key), FL_ERR_NOMEM; a message for a person is written
 * into error (error_size bytes, may be 0).
 */
enum fl_status fl_http_server_create(const struct fl_http_options *options,
				     fl_http_handler_fn handler, void *ctx, char *error,
				     size_t error_size, struct fl_http_server **ret_server);

/* The port the server listens on (useful after asking for port 0). */
uint16_t fl_http_server_port(const struct fl_http_server *server);

/*
 * Stops the server: stops accepting connections, answers new requests on
 * open connections with 503 and closes them, waits up to the grace time for
 * requests in flight (deferred ones included) to be answered, answers the
 * deferred requests still waiting with 503, and stops the thread. A
 * deferred request answered by the server this way stays valid for its
 * holder, whose later fl_http_respond* returns FL_ERR_UNAVAILABLE and
 * frees it; its on_complete runs when the 503 is sent, which may be before
 * the holder answers. Call it from a thread other than the server's (not from a
 * handler). Accepts NULL.
 */
void fl_http_server_destroy(struct fl_http_server *server);

/* The method ("GET") and the URL-decoded path, without the query. */
const char *fl_http_method(const struct fl_http_request *req);
const char *fl_http_path(const struct fl_http_request *req);

/*
 * The URL-decoded value of a query argument, or of a request header (name
 * case-insensitive; the first if repeated), or NULL when absent. The text
 * belongs to the request. Any thread holding the request may call these
 * until it answers: a deferred request's headers and query are copied when
 * its handler returns, so they stay readable even after a stopping server
 * has given up on it.
 */
const char *fl_http_query(const struct fl_http_request *req, const char *name);
const char *fl_http_header(const struct fl_http_request *req, const char *name);

/*
 * The whole request body, NUL-terminated for convenience (the body itself
 * may hold NULs: trust *ret_len). Empty bodies give "" and 0.
 */
const char *fl_http_body(const struct fl_http_request *req, size_t *ret_len);

/*
 * The spooled body of a request whose route opted in (see
 * fl_http_options.spool_body): a readable file descriptor (read it with
 * pread; the request owns it and closes it when it is freed), and its
 * length in *ret_len. -1 for a request whose body is in memory.
 */
int fl_http_body_fd(const struct fl_http_request *req, uint64_t *ret_len);

/* A string naming this request uniquely in this process, for logs. */
const char *fl_http_request_id(const struct fl_http_request *req);

/* The client's IP address as text ("127.0.0.1", "::1"). */
const char *fl_http_remote_addr(const struct fl_http_request *req);

/* A slot for the application's own per-request state (NULL at first). */
void *fl_http_user(const struct fl_http_request *req);
void fl_http_set_user(struct fl_http_request *req, void *user);

/*
 * Adds a header to the coming answer (e.g. Retry-After), copying both
 * strings. Call it from the thread that will answer, before answering.
 * FL_ERR_INVALID for an empty name, a name with ':' or a space, CR or LF in
 * either, or when the request is already answered.
 */
enum fl_status fl_http_add_header(struct fl_http_request *req, const char *name, const char *value);

/*
 * Answers req with status and a copy of body (content_type NULL sends no
 * Content-Type), from any thread. Returns FL_OK; FL_ERR_INVALID for a bad
 * argument or when req was already answered (nothing else happens);
 * FL_ERR_UNAVAILABLE when a stopping server gave up on the deferred request
 * (the answer is dropped); FL_ERR_NOMEM when no answer could be built (the
 * connection is closed instead). On any return but FL_ERR_INVALID, req is
 * finished with and must not be touched again.
 */
enum fl_status fl_http_respond(struct fl_http_request *req, unsigned status,
			       const char *content_type, const void *body, size_t len);

/*
 * Produces the bytes of a streamed answer from offset pos: writes at most
 * max bytes into buf and returns how many (> 0), 0 at the end of the
 * answer, or -1 on an error (the connection is then closed, so the client
 * sees a truncated answer, never a complete-looking one). Called on the
 * server thread, only when the connection can take more bytes: a slow
 * client is never buffered for.
 */
typedef ssize_t (*fl_http_stream_fn)(void *ctx, uint64_t pos, char *buf, size_t max);

/*
 * Answers req with status and a body produced by read(ctx, ...) as the
 * client takes it (chunked when size is UINT64_MAX, else with that
 * Content-Length). free_ctx(ctx) (may be NULL) runs exactly once, when the
 * answer is over, sent or abandoned (the client went away), or at once when
 * this call fails. From any thread; returns as fl_http_respond.
 */
enum fl_status fl_http_respond_stream(struct fl_http_request *req, unsigned status,
				      const char *content_type, uint64_t size,
				      fl_http_stream_fn read, void *ctx,
				      void (*free_ctx)(void *ctx));

/*
 * Answers with body dumped as compact JSON (application/json). Steals the
 * reference to body; a NULL body or a failed dump answers 500.
 */
enum fl_status fl_http_respond_json(struct fl_http_request *req, unsigned status, json_t *body);

/*
 * Answers with the error body of CONTRACT §9:
 * {"error":{"code":code,"message":message,"field":field}}, without "field"
 * when field is NULL.
 */
enum fl_status fl_http_respond_error(struct fl_http_request *req, unsigned status, const char *code,
				     const char *message, const char *field);

/*
 * Between fl_http_resume_hold() and fl_http_resume_release(), the answers
 * the calling thread gives to deferred requests are handed over as ever,
 * but their connections are resumed only by fl_http_resume_release, all in
 * a row: the server thread then wakes about once for them rather than once
 * per answer. For a thread that answers many deferred requests at a time
 * (the read audit's group commits). Calls do not nest; release before the
 * thread does anything else (a held answer waits until then).
 */
void fl_http_resume_hold(void);
void fl_http_resume_release(void);

#endif
