#include "fledger/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <linux/tcp.h>
#include <microhttpd.h>

#include "fledger/util.h"

/*
 * How a request moves through libmicrohttpd (MHD) 0.9.75.
 *
 * MHD calls the access handler (access_cb) several times per request: once
 * when the headers are in, once per piece of body, and once more when the
 * body is complete. We queue answers on a later call, never on the first:
 * an answer queued on the first call makes MHD close the connection
 * afterwards (measured with libmicrohttpd 0.9.75: keep-alive is lost). We exploit that for
 * early refusals (413 by Content-Length, 403 without a client certificate,
 * 503 while stopping), where closing is what we want; it also spares
 * reading a body we refuse.
 *
 * A deferred request's connection is suspended until its answer comes.
 * The answer may be given from any thread at any time, even before the
 * handler has returned, so the request carries a mutex and a state:
 *
 *   READING --handler runs--> IN_HANDLER --answered--> ANSWERED --queued--> QUEUED
 *                                  |                                 ^
 *                         returned DEFERRED                          |
 *                                  v                                 |
 *                              SUSPENDED --answered, resumed--> RESUMING
 *
 * Only MHD's thread queues answers (MHD_queue_response works only inside
 * the access handler). An answer given while the handler runs is queued
 * when the handler returns; one given while suspended resumes the
 * connection, and MHD calls the access handler again, which queues it.
 *
 * A request is freed when MHD is done with it (request_completed_cb),
 * except when the server answered a deferred request itself because it was
 * stopping: then its holder still has it, and it is freed by whichever of
 * the holder's answer and MHD's completion comes last.
 *
 * Lock order: server->lock before req->lock; MHD's own locks after both
 * (MHD_suspend_connection and MHD_resume_connection are called with them
 * held, which keeps a resume from racing with the server's teardown).
 */

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_MAX_BODY_BYTES ((size_t)1 << 20)
#define DEFAULT_MAX_SPOOL_BODY_BYTES ((size_t)256 << 20)
#define STREAM_BLOCK_BYTES (64u * 1024u)
#define DEFAULT_GRACE_MS 10000u
#define DEFAULT_IDLE_TIMEOUT_S 60u
#define DEFAULT_REQUEST_TIMEOUT_S 10u
#define DEFAULT_MAX_CONNECTIONS 4096u
#define DEFAULT_MAX_CONNECTIONS_PER_IP 256u
/* Open files beyond the connections: listen socket, epoll, LMDB, NATS, logs. */
#define RESERVED_FILES 64u
/* How often the request deadlines are checked. */
#define SWEEP_MS 200u
#define CONNECTION_MEMORY_BYTES (16u * 1024u)
#define LISTEN_BACKLOG 1024
#define INITIAL_BODY_CAP ((size_t)16 << 10)
/* After the grace time, how long teardown lets the server's own 503s go out. */
#define FAREWELL_MS 1000u

enum req_state {
	REQ_READING,
	REQ_IN_HANDLER,
	REQ_ANSWERED,
	REQ_SUSPENDED,
	REQ_RESUMING,
	REQ_QUEUED,
};

struct extra_header {
	struct extra_header *next;
	char *name;
	char *value;
};

struct fl_http_server {
	struct MHD_Daemon *daemon;
	fl_http_handler_fn handler;
	fl_http_complete_fn on_complete;
	void *ctx;
	size_t max_body_bytes;
	fl_http_spool_fn spool_body;
	size_t max_spool_body_bytes;
	char *spool_dir;
	unsigned grace_ms;
	uint16_t port;
	bool require_client_cert;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	uint32_t id_prefix;
	_Atomic uint64_t next_request_number;
	_Atomic bool stopping;

	pthread_mutex_t lock;
	pthread_cond_t changed; /* broadcast while stopping when counts drop */
	size_t in_flight;	/* requests MHD has not completed */
	size_t suspended;	/* requests in SUSPENDED or RESUMING, listed below */
	struct fl_http_request *suspended_head;
	bool abandoning; /* past the grace time: deferring is refused */

	/* Request deadlines: every open connection, and a thread that closes
	 * those whose request is late (see struct conn). */
	int64_t request_timeout_us;
	pthread_mutex_t conns_lock;
	pthread_cond_t sweeper_wake;
	struct conn *conns;
	bool sweeper_quit;
	bool sweeper_started;
	pthread_t sweeper;
};

struct fl_http_request {
	struct fl_http_server *server;
	struct MHD_Connection *connection;
	int64_t start_us;
	void *user;
	const char *method; /* in storage */
	const char *path;   /* in storage */
	char *body;
	size_t body_len;
	size_t body_cap;
	size_t content_length; /* as announced; 0 when unknown */
	bool body_too_large;
	int spool_fd; /* the spooled body (spool_body routes), else -1 */
	uint64_t spool_len;
	unsigned sent_status; /* server thread only */
	struct extra_header *headers;

	pthread_mutex_t lock;
	enum req_state state;
	struct MHD_Response *response; /* the answer, until queued */
	unsigned status;
	struct snapshot *snapshot;	     /* headers and query, copied when deferred */
	bool held;			     /* returned DEFERRED, holder has not answered */
	bool server_answered;		     /* the stopping server answered it for the holder */
	bool finished;			     /* MHD has completed it */
	struct fl_http_request *prev, *next; /* server->suspended_head list */
	struct fl_http_request *resume_next; /* in a thread's held resumes */

	char id[32];
	char remote_addr[INET6_ADDRSTRLEN];
	char storage[]; /* method NUL path NUL */
};

/*
 * The headers and query arguments of a deferred request, copied out of
 * MHD's connection memory: if the server gives up on the request while
 * stopping, MHD frees that memory while the holder may still read them.
 */
struct snapshot_entry {
	enum MHD_ValueKind kind;
	const char *key;
	const char *value; /* may be NULL: "?flag" without a value */
};

struct snapshot {
	size_t n_entries;
	size_t text_used;
	struct snapshot_entry *entries; /* in the same allocation */
	char *text;
};

/*
 * Per connection (MHD's socket context). libmicrohttpd's idle timeout
 * restarts with every byte, so a client sending a byte a second would hold
 * a connection for ever. A request therefore has a deadline: once its first
 * byte has arrived, head and body must be in within request_timeout.
 * MHD reports no first byte, so the sweeper notices it from the socket's
 * received-byte count (TCP_INFO), to SWEEP_MS; the first call of the access
 * handler, once the head is in, starts the clock too if it has not started.
 * Connections without a request under way (idle keep-alive, or a request
 * being handled or answered) have no deadline. A late connection is shut
 * down; MHD then closes it.
 */
enum conn_phase {
	CONN_IDLE,	/* waiting for a request; received_at_idle bytes so far */
	CONN_RECEIVING, /* a request is arriving since receiving_since_us */
	CONN_HANDLING,	/* the request is in: handled, answered, sent */
	CONN_EXPIRED,	/* shut down by the sweeper */
};

struct conn {
	struct conn *prev, *next; /* server->conns, under conns_lock */
	int fd;
	enum conn_phase phase; /* under conns_lock */
	uint64_t received_at_idle;
	int64_t receiving_since_us;
	/* Client certificate check, when they are required (MHD's thread). */
	bool tls_checked;
	bool tls_ok;
};

static struct timespec deadline_after_ms(unsigned ms)
{
	return fl_deadline_after_us((int64_t)ms * 1000);
}

/* ---- responses ---- */

static struct MHD_Response *make_error_response(const char *code, const char *message,
						const char *field)
{
	static const char fallback[] =
	    "{\"error\":{\"code\":\"internal\",\"message\":\"the error could not be encoded\"}}";
	json_t *error = json_pack("{s:s, s:s}", "code", code != NULL ? code : "error", "message",
				  message != NULL ? message : "");
	json_t *body = NULL;
	struct MHD_Response *response;
	char *text = NULL;

	if (error != NULL && field != NULL &&
	    json_object_set_new(error, "field", json_string(field)) != 0)
		json_object_del(error, "field");
	if (error != NULL)
		body = json_pack("{s:o}", "error", error);
	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	/* jansson allocates with malloc unless told otherwise, so MHD may
	 * free() the text. */
	if (text != NULL)
		response =
		    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	else
		response = MHD_create_response_from_buffer(sizeof(fallback) - 1, (void *)fallback,
							   MHD_RESPMEM_PERSISTENT);
	if (response == NULL) {
		free(text);
		return NULL;
	}
	if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
	    MHD_YES) {
		MHD_destroy_response(response);
		return NULL;
	}
	/* A 503 of the server's own (shutting down) says when to come back (§9). */
	if (code != NULL && strcmp(code, "shutting_down") == 0 &&
	    MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES) {
		MHD_destroy_response(response);
		return NULL;
	}
	return response;
}

/* Applies the headers the application added, and frees them. */
static bool apply_extra_headers(struct fl_http_request *req, struct MHD_Response *response)
{
	bool ok = true;

	while (req->headers != NULL) {
		struct extra_header *header = req->headers;

		req->headers = header->next;
		if (MHD_add_response_header(response, header->name, header->value) != MHD_YES)
			ok = false;
		free(header->name);
		free(header->value);
		free(header);
	}
	return ok;
}

/* ---- requests ---- */

static void request_free(struct fl_http_request *req)
{
	if (req == NULL)
		return;
	while (req->headers != NULL) {
		struct extra_header *header = req->headers;

		req->headers = header->next;
		free(header->name);
		free(header->value);
		free(header);
	}
	if (req->response != NULL)
		MHD_destroy_response(req->response);
	pthread_mutex_destroy(&req->lock);
	if (req->spool_fd >= 0)
		close(req->spool_fd);
	free(req->snapshot);
	free(req->body);
	free(req);
}

static struct fl_http_request *request_new(struct fl_http_server *server,
					   struct MHD_Connection *connection, const char *url,
					   const char *method)
{
	size_t method_len = strlen(method), url_len = strlen(url);
	struct fl_http_request *req = calloc(1, sizeof(*req) + method_len + url_len + 2);
	const union MHD_ConnectionInfo *info;
	uint64_t number;

	if (req == NULL)
		return NULL;
	if (pthread_mutex_init(&req->lock, NULL) != 0) {
		free(req);
		return NULL;
	}
	req->server = server;
	req->connection = connection;
	req->spool_fd = -1;
	req->start_us = fl_time_mono_us();
	req->state = REQ_READING;
	memcpy(req->storage, method, method_len + 1);
	memcpy(req->storage + method_len + 1, url, url_len + 1);
	req->method = req->storage;
	req->path = req->storage + method_len + 1;

	number = atomic_fetch_add_explicit(&server->next_request_number, 1, memory_order_relaxed);
	snprintf(req->id, sizeof(req->id), "%08x-%llx", server->id_prefix,
		 (unsigned long long)number);

	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info != NULL && info->client_addr != NULL) {
		const struct sockaddr *addr = info->client_addr;

		if (addr->sa_family == AF_INET)
			inet_ntop(AF_INET,
				  &((const struct sockaddr_in *)(const void *)addr)->sin_addr,
				  req->remote_addr, sizeof(req->remote_addr));
		else if (addr->sa_family == AF_INET6)
			inet_ntop(AF_INET6,
				  &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr,
				  req->remote_addr, sizeof(req->remote_addr));
	}
	return req;
}

/* Under server->lock: takes req off the suspended list. */
static void unlist_suspended(struct fl_http_server *server, struct fl_http_request *req)
{
	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		server->suspended_head = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
	server->suspended--;
	if (atomic_load(&server->stopping))
		pthread_cond_broadcast(&server->changed);
}

/*
 * On the server thread: hands the answer waiting in req to MHD. Returns
 * what the access handler should return.
 */
static enum MHD_Result queue_answer(struct fl_http_request *req)
{
	struct fl_http_server *server = req->server;
	struct MHD_Response *response;
	enum MHD_Result result;
	bool was_suspended;
	unsigned status;

	pthread_mutex_lock(&req->lock);
	response = req->response;
	status = req->status;
	was_suspended = req->state == REQ_RESUMING;
	req->response = NULL;
	req->state = REQ_QUEUED;
	pthread_mutex_unlock(&req->lock);

	if (was_suspended) {
		pthread_mutex_lock(&server->lock);
		unlist_suspended(server, req);
		pthread_mutex_unlock(&server->lock);
	}
	if (response == NULL)
		return MHD_NO;
	if (atomic_load(&server->stopping))
		MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
	result = MHD_queue_response(req->connection, status, response);
	MHD_destroy_response(response);
	if (result == MHD_YES)
		req->sent_status = status;
	return result;
}

/* On the server thread, before the handler: answers with an error and queues it. */
static enum MHD_Result refuse(struct fl_http_request *req, unsigned status, const char *code,
			      const char *message)
{
	struct MHD_Response *response = make_error_response(code, message, NULL);

	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
	pthread_mutex_lock(&req->lock);
	req->response = response;
	req->status = status;
	req->state = REQ_ANSWERED;
	pthread_mutex_unlock(&req->lock);
	return queue_answer(req);
}

/*
 * The resumes a thread holds back between fl_http_resume_hold and
 * fl_http_resume_release: requests in RESUMING, answered, whose
 * connections are still suspended (so the server waits for them when it
 * stops, and MHD does not touch them).
 */
static _Thread_local struct held_resumes {
	bool active;
	struct fl_http_request *head, *tail;
} held_resumes;

void fl_http_resume_hold(void)
{
	held_resumes.active = true;
}

void fl_http_resume_release(void)
{
	struct fl_http_request *req = held_resumes.head;

	held_resumes = (struct held_resumes){0};
	while (req != NULL) {
		struct fl_http_request *next = req->resume_next;

		pthread_mutex_lock(&req->lock);
		MHD_resume_connection(req->connection);
		pthread_mutex_unlock(&req->lock);
		req = next;
	}
}

/*
 * Hands an answer to req from any thread (see the state diagram at the
 * top). Takes ownership of response in every case.
 */
static enum fl_status deliver(struct fl_http_request *req, unsigned status,
			      struct MHD_Response *response)
{
	enum fl_status result = FL_OK;
	bool free_request = false;

	pthread_mutex_lock(&req->lock);
	if (req->server_answered) {
		req->held = false;
		free_request = req->finished;
		result = FL_ERR_UNAVAILABLE;
	} else if (req->state == REQ_IN_HANDLER) {
		req->response = response;
		req->status = status;
		req->state = REQ_ANSWERED;
		response = NULL;
	} else if (req->state == REQ_SUSPENDED) {
		req->response = response;
		req->status = status;
		req->state = REQ_RESUMING;
		req->held = false;
		response = NULL;
		if (held_resumes.active) {
			req->resume_next = NULL;
			if (held_resumes.tail != NULL)
				held_resumes.tail->resume_next = req;
			else
				held_resumes.head = req;
			held_resumes.tail = req;
		} else {
			MHD_resume_connection(req->connection);
		}
	} else {
		result = FL_ERR_INVALID;
	}
	pthread_mutex_unlock(&req->lock);

	if (response != NULL)
		MHD_destroy_response(response);
	if (free_request)
		request_free(req);
	return result;
}

/*
 * Finishes an answer built by the caller: extra headers, then deliver.
 * Without memory for the answer, the request is still ended: a NULL
 * response makes queue_answer() close the connection, so neither the
 * client nor the server's teardown waits for an answer that cannot come.
 */
static enum fl_status finish_response(struct fl_http_request *req, unsigned status,
				      struct MHD_Response *response, const char *content_type)
{
	enum fl_status delivered;

	if (response != NULL && ((content_type != NULL &&
				  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
							  content_type) != MHD_YES) ||
				 !apply_extra_headers(req, response))) {
		MHD_destroy_response(response);
		response = NULL;
	}
	delivered = deliver(req, status, response);
	if (delivered == FL_OK && response == NULL)
		return FL_ERR_NOMEM;
	return delivered;
}

static bool valid_status(unsigned status)
{
	return status >= 100 && status <= 999;
}

enum fl_status fl_http_respond(struct fl_http_request *req, unsigned status,
			       const char *content_type, const void *body, size_t len)
{
	struct MHD_Response *response;

	if (req == NULL || !valid_status(status) || (body == NULL && len > 0))
		return FL_ERR_INVALID;
	response = MHD_create_response_from_buffer(len, (void *)(body != NULL ? body : ""),
						   MHD_RESPMEM_MUST_COPY);
	return finish_response(req, status, response, content_type);
}

struct stream {
	fl_http_stream_fn read;
	void *ctx;
	void (*free_ctx)(void *ctx);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *stream = cls;
	ssize_t n = stream->read(stream->ctx, pos, buf, max);

	if (n > 0)
		return n;
	return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
	struct stream *stream = cls;

	if (stream->free_ctx != NULL)
		stream->free_ctx(stream->ctx);
	free(stream);
}

enum fl_status fl_http_respond_stream(struct fl_http_request *req, unsigned status,
				      const char *content_type, uint64_t size,
				      fl_http_stream_fn read, void *ctx,
				      void (*free_ctx)(void *ctx))
{
	struct MHD_Response *response = NULL;
	struct stream *stream;

	if (req == NULL || !valid_status(status) || read == NULL) {
		if (free_ctx != NULL)
			free_ctx(ctx);
		return FL_ERR_INVALID;
	}
	stream = malloc(sizeof(*stream));
	if (stream != NULL) {
		*stream = (struct stream){read, ctx, free_ctx};
		response = MHD_create_response_from_callback(
		    size == UINT64_MAX ? MHD_SIZE_UNKNOWN : size, STREAM_BLOCK_BYTES, stream_read,
		    stream, stream_free);
		if (response == NULL)
			free(stream);
	}
	if (response == NULL && free_ctx != NULL)
		free_ctx(ctx);
	/* From here the response owns the stream: destroying it frees ctx. */
	return finish_response(req, status, response, content_type);
}

int fl_http_body_fd(const struct fl_http_request *req, uint64_t *ret_len)
{
	if (req == NULL || req->spool_fd < 0)
		return -1;
	if (ret_len != NULL)
		*ret_len = req->spool_len;
	return req->spool_fd;
}

enum fl_status fl_http_respond_json(struct fl_http_request *req, unsigned status, json_t *body)
{
	struct MHD_Response *response;
	char *text;

	if (req == NULL || !valid_status(status)) {
		json_decref(body);
		return FL_ERR_INVALID;
	}
	text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(body);
	if (text == NULL)
		return fl_http_respond_error(req, 500, "internal",
					     "the answer could not be encoded as JSON", NULL);
	/* jansson allocates with malloc unless told otherwise, so MHD may
	 * free() the text. */
	response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (response == NULL)
		free(text);
	return finish_response(req, status, response, "application/json");
}

enum fl_status fl_http_respond_error(struct fl_http_request *req, unsigned status, const char *code,
				     const char *message, const char *field)
{
	struct MHD_Response *response;

	if (req == NULL || !valid_status(status) || code == NULL || message == NULL)
		return FL_ERR_INVALID;
	response = make_error_response(code, message, field);
	/* make_error_response has set the content type. */
	return finish_response(req, status, response, NULL);
}

static bool header_text_ok(const char *text, bool is_name)
{
	if (text == NULL || (is_name && text[0] == '\0'))
		return false;
	for (const char *c = text; *c != '\0'; c++) {
		if (*c == '\r' || *c == '\n' || (is_name && (*c == ':' || *c == ' ')))
			return false;
	}
	return true;
}

enum fl_status fl_http_add_header(struct fl_http_request *req, const char *name, const char *value)
{
	struct extra_header *header;
	enum req_state state;

	if (req == NULL || !header_text_ok(name, true) || !header_text_ok(value, false))
		return FL_ERR_INVALID;
	pthread_mutex_lock(&req->lock);
	state = req->state;
	pthread_mutex_unlock(&req->lock);
	if (state != REQ_IN_HANDLER && state != REQ_SUSPENDED)
		return FL_ERR_INVALID;

	header = calloc(1, sizeof(*header));
	if (header == NULL)
		return FL_ERR_NOMEM;
	header->name = strdup(name);
	header->value = strdup(value);
	if (header->name == NULL || header->value == NULL) {
		free(header->name);
		free(header->value);
		free(header);
		return FL_ERR_NOMEM;
	}
	header->next = req->headers;
	req->headers = header;
	return FL_OK;
}

/* ---- getters ---- */

const char *fl_http_method(const struct fl_http_request *req)
{
	return req != NULL ? req->method : NULL;
}

const char *fl_http_path(const struct fl_http_request *req)
{
	return req != NULL ? req->path : NULL;
}

/*
 * Looks name up in the snapshot of a deferred request, else in MHD's
 * memory, which stays valid until MHD completes the request. Names compare
 * without case, as MHD compares them.
 */
static const char *lookup_value(const struct fl_http_request *req, enum MHD_ValueKind kind,
				const char *name)
{
	struct fl_http_request *mutable_req = (struct fl_http_request *)req;
	const char *value = NULL;

	if (req == NULL || name == NULL)
		return NULL;
	pthread_mutex_lock(&mutable_req->lock);
	if (req->snapshot != NULL) {
		for (size_t i = 0; i < req->snapshot->n_entries; i++) {
			const struct snapshot_entry *entry = &req->snapshot->entries[i];

			if (entry->kind == kind && strcasecmp(entry->key, name) == 0) {
				value = entry->value;
				break;
			}
		}
	} else if (!req->finished) {
		value = MHD_lookup_connection_value(req->connection, kind, name);
	}
	pthread_mutex_unlock(&mutable_req->lock);
	return value;
}

const char *fl_http_query(const struct fl_http_request *req, const char *name)
{
	return lookup_value(req, MHD_GET_ARGUMENT_KIND, name);
}

const char *fl_http_header(const struct fl_http_request *req, const char *name)
{
	return lookup_value(req, MHD_HEADER_KIND, name);
}

const char *fl_http_body(const struct fl_http_request *req, size_t *ret_len)
{
	if (req == NULL) {
		if (ret_len != NULL)
			*ret_len = 0;
		return NULL;
	}
	if (ret_len != NULL)
		*ret_len = req->body_len;
	return req->body != NULL ? req->body : "";
}

const char *fl_http_request_id(const struct fl_http_request *req)
{
	return req != NULL ? req->id : NULL;
}

const char *fl_http_remote_addr(const struct fl_http_request *req)
{
	return req != NULL ? req->remote_addr : NULL;
}

void *fl_http_user(const struct fl_http_request *req)
{
	return req != NULL ? req->user : NULL;
}

void fl_http_set_user(struct fl_http_request *req, void *user)
{
	if (req != NULL)
		req->user = user;
}

/* ---- the MHD callbacks ---- */

/* Whether the connection of req presented a client certificate our CA signed. */
static bool client_certificate_ok(struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *info;
	struct conn *tls = NULL;
	unsigned int verify_status = 0;
	bool ok;

	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL)
		tls = info->socket_context;
	if (tls != NULL && tls->tls_checked)
		return tls->tls_ok;
	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	ok = info != NULL && info->tls_session != NULL &&
	     gnutls_certificate_type_get((gnutls_session_t)info->tls_session) == GNUTLS_CRT_X509 &&
	     gnutls_certificate_verify_peers2((gnutls_session_t)info->tls_session,
					      &verify_status) == GNUTLS_E_SUCCESS &&
	     verify_status == 0;
	if (tls != NULL) {
		tls->tls_checked = true;
		tls->tls_ok = ok;
	}
	return ok;
}

/* Bytes the kernel has received on fd; 0 when it cannot tell. */
static uint64_t bytes_received(int fd)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(info.tcpi_bytes_received))
		return 0;
	return info.tcpi_bytes_received;
}

/*
 * MHD calls this when a connection opens and before it closes its socket,
 * so a listed conn's fd is open.
 */
static void connection_cb(void *cls, struct MHD_Connection *connection, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct fl_http_server *server = cls;
	struct conn *conn = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *info =
		    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);

		/* Without memory the connection has no deadline (and the
		 * client certificate is checked on every request). */
		conn = calloc(1, sizeof(*conn));
		if (conn == NULL || info == NULL) {
			free(conn);
			return;
		}
		conn->fd = info->connect_fd;
		conn->phase = CONN_IDLE;
		conn->received_at_idle = 0;
		pthread_mutex_lock(&server->conns_lock);
		conn->next = server->conns;
		if (conn->next != NULL)
			conn->next->prev = conn;
		server->conns = conn;
		pthread_mutex_unlock(&server->conns_lock);
		*socket_context = conn;
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED && conn != NULL) {
		pthread_mutex_lock(&server->conns_lock);
		if (conn->prev != NULL)
			conn->prev->next = conn->next;
		else
			server->conns = conn->next;
		if (conn->next != NULL)
			conn->next->prev = conn->prev;
		pthread_mutex_unlock(&server->conns_lock);
		free(conn);
		*socket_context = NULL;
	}
}

static struct conn *conn_of(struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info != NULL ? info->socket_context : NULL;
}

/* Moves the connection of req to phase (MHD's thread). */
static void conn_enter(struct fl_http_server *server, struct MHD_Connection *connection,
		       enum conn_phase phase)
{
	struct conn *conn = conn_of(connection);

	if (conn == NULL)
		return;
	pthread_mutex_lock(&server->conns_lock);
	if (conn->phase == CONN_EXPIRED) {
		/* Already shut down: MHD closes it. */
	} else if (phase == CONN_RECEIVING) {
		if (conn->phase == CONN_IDLE) {
			conn->phase = CONN_RECEIVING;
			conn->receiving_since_us = fl_time_mono_us();
		}
	} else {
		conn->phase = phase;
		if (phase == CONN_IDLE)
			conn->received_at_idle = bytes_received(conn->fd);
	}
	pthread_mutex_unlock(&server->conns_lock);
}

/* Closes connections whose request is late; see struct conn. */
static void *sweeper_main(void *arg)
{
	struct fl_http_server *server = arg;

	pthread_mutex_lock(&server->conns_lock);
	while (!server->sweeper_quit) {
		struct timespec until = deadline_after_ms(SWEEP_MS);
		int64_t now = fl_time_mono_us();

		for (struct conn *conn = server->conns; conn != NULL; conn = conn->next) {
			if (conn->phase == CONN_IDLE &&
			    bytes_received(conn->fd) != conn->received_at_idle) {
				conn->phase = CONN_RECEIVING;
				conn->receiving_since_us = now;
			} else if (conn->phase == CONN_RECEIVING &&
				   now - conn->receiving_since_us > server->request_timeout_us) {
				conn->phase = CONN_EXPIRED;
				shutdown(conn->fd, SHUT_RDWR);
			}
		}
		pthread_cond_timedwait(&server->sweeper_wake, &server->conns_lock, &until);
	}
	pthread_mutex_unlock(&server->conns_lock);
	return NULL;
}

struct framing {
	unsigned content_lengths;
	unsigned transfer_encodings;
	const char *transfer_encoding;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct framing *framing = cls;

	(void)kind;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		framing->content_lengths++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		framing->transfer_encodings++;
		framing->transfer_encoding = value;
	}
	return MHD_YES;
}

/*
 * How long the body is must be said once: libmicrohttpd takes the first of
 * two Content-Lengths and lets Transfer-Encoding override Content-Length,
 * where a proxy in front may do otherwise (request smuggling). NULL when
 * the framing is sound, else the message of a 400.
 */
static const char *framing_problem(struct MHD_Connection *connection, bool *ret_not_implemented)
{
	struct framing framing = {0};

	*ret_not_implemented = false;
	MHD_get_connection_values(connection, MHD_HEADER_KIND, count_framing, &framing);
	if (framing.content_lengths > 1)
		return "Content-Length is given more than once";
	if (framing.transfer_encodings > 1)
		return "Transfer-Encoding is given more than once";
	if (framing.transfer_encodings == 1 && framing.content_lengths == 1)
		return "Content-Length and Transfer-Encoding are both given";
	if (framing.transfer_encodings == 1 &&
	    strcasecmp(framing.transfer_encoding != NULL ? framing.transfer_encoding : "",
		       "chunked") != 0) {
		*ret_not_implemented = true;
		return "the only Transfer-Encoding accepted is chunked";
	}
	return NULL;
}

/*
 * The connection value (of a kind no client can send here: there is no post
 * processor) that marks a URL in which an encoded NUL was decoded.
 */
#define URL_NUL_MARK "fledger-url-nul"

/*
 * Percent-decodes a URL part (the path, a query key or value) as MHD does,
 * and marks the request when it decodes a NUL (%00): C strings would end
 * there ("/v1/views/rt%00x" read as "/v1/views/rt"), so start_request
 * refuses it with 400.
 */
static size_t unescape_cb(void *cls, struct MHD_Connection *connection, char *text)
{
	size_t len = MHD_http_unescape(text);

	(void)cls;
	if (strlen(text) != len)
		MHD_set_connection_value(connection, MHD_POSTDATA_KIND, URL_NUL_MARK, "1");
	return len;
}

/* The body limit of req: its route's, when its body is spooled. */
static size_t body_limit(const struct fl_http_request *req)
{
	return req->spool_fd >= 0 ? req->server->max_spool_body_bytes : req->server->max_body_bytes;
}

/* An unlinked temporary file for a spooled body; -1 when none can be made. */
static int open_spool(const struct fl_http_server *server)
{
	const char *dir = server->spool_dir;
	char path[4096];
	int fd;

	if (dir == NULL)
		dir = getenv("TMPDIR") != NULL && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
		return fd;
	/* A file system without O_TMPFILE: make a file and unlink it at once. */
	if (snprintf(path, sizeof(path), "%s/fledger-body-XXXXXX", dir) >= (int)sizeof(path))
		return -1;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

/* The first call for a request: set-up and early refusals. */
static enum MHD_Result start_request(struct fl_http_server *server,
				     struct MHD_Connection *connection, const char *url,
				     const char *method, void **con_cls)
{
	struct fl_http_request *req = request_new(server, connection, url, method);
	const char *content_length, *framing;
	bool not_implemented;

	if (req == NULL)
		return MHD_NO;
	*con_cls = req;
	pthread_mutex_lock(&server->lock);
	server->in_flight++;
	pthread_mutex_unlock(&server->lock);

	if (atomic_load(&server->stopping))
		return refuse(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
			      "the server is shutting down");
	if (server->require_client_cert && !client_certificate_ok(connection))
		return refuse(req, MHD_HTTP_FORBIDDEN, "client_certificate_required",
			      "this server requires a client certificate signed by its CA");
	conn_enter(server, connection, CONN_RECEIVING);
	framing = framing_problem(connection, &not_implemented);
	if (framing != NULL && not_implemented)
		return refuse(req, MHD_HTTP_NOT_IMPLEMENTED, "not_implemented", framing);
	if (framing != NULL)
		return refuse(req, MHD_HTTP_BAD_REQUEST, "bad_request", framing);
	if (MHD_lookup_connection_value(connection, MHD_POSTDATA_KIND, URL_NUL_MARK) != NULL)
		return refuse(req, MHD_HTTP_BAD_REQUEST, "invalid_url",
			      "the URL holds an encoded NUL (%00)");

	if (server->spool_body != NULL && server->spool_body(server->ctx, method, req->path)) {
		req->spool_fd = open_spool(server);
		if (req->spool_fd < 0)
			return refuse(req, MHD_HTTP_SERVICE_UNAVAILABLE, "spool_unavailable",
				      "no temporary file for the request body could be made");
	}
	content_length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
	if (content_length != NULL) {
		/* MHD has refused a malformed Content-Length already. */
		unsigned long long announced = strtoull(content_length, NULL, 10);

		if (announced > body_limit(req)) {
			char message[96];

			snprintf(message, sizeof(message), "the body is larger than %zu bytes",
				 body_limit(req));
			return refuse(req, 413, "body_too_large", message);
		}
		req->content_length = (size_t)announced;
	}
	return MHD_YES;
}

/* Appends a piece of body, or notes that the body is too large. */
static bool append_body(struct fl_http_request *req, const char *data, size_t size)
{
	size_t limit = body_limit(req);

	if (req->body_too_large)
		return true;
	if (req->spool_fd >= 0) {
		if (size > limit - req->spool_len) {
			req->body_too_large = true;
			return true;
		}
		for (size_t done = 0; done < size;) {
			ssize_t n = write(req->spool_fd, data + done, size - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return false; /* a full disk: the connection is closed */
			done += (size_t)n;
		}
		req->spool_len += size;
		return true;
	}
	if (size > limit - req->body_len) {
		/* A chunked body went over the limit: stop keeping it. */
		req->body_too_large = true;
		free(req->body);
		req->body = NULL;
		req->body_len = req->body_cap = 0;
		return true;
	}
	if (req->body_len + size + 1 > req->body_cap) {
		size_t cap = req->body_cap > 0 ? req->body_cap : INITIAL_BODY_CAP;
		size_t most = (req->content_length > 0 ? req->content_length : limit) + 1;
		char *grown;

		while (cap < req->body_len + size + 1)
			cap *= 2;
		if (cap > most && most >= req->body_len + size + 1)
			cap = most;
		grown = realloc(req->body, cap);
		if (grown == NULL)
			return false;
		req->body = grown;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, size);
	req->body_len += size;
	req->body[req->body_len] = '\0';
	return true;
}

/*
 * A body without Content-Length (chunked) has just passed the limit.
 * libmicrohttpd 0.9.75 accepts an answer only before the body or after all
 * of it, and this body may never end: rather than read it to the end, the
 * 413 is written to the socket here, where nothing else is being written
 * (MHD writes nothing while it reads a body), and returning MHD_NO makes
 * MHD close the connection. Over TLS the bytes would have to go through
 * the TLS session, so the connection is just closed.
 */
static enum MHD_Result refuse_mid_body(struct fl_http_request *req)
{
	struct fl_http_server *server = req->server;
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
	char head[192], message[96];
	json_t *body;
	char *text = NULL;
	int head_len;

	if (server->tls_cert != NULL || info == NULL)
		return MHD_NO;
	snprintf(message, sizeof(message), "the body is larger than %zu bytes", body_limit(req));
	body = json_pack("{s:{s:s, s:s}}", "error", "code", "body_too_large", "message", message);
	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	head_len = snprintf(head, sizeof(head),
			    "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
			    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			    strlen(text));
	if (send(info->connect_fd, head, (size_t)head_len, MSG_NOSIGNAL | MSG_DONTWAIT) ==
		head_len &&
	    send(info->connect_fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT) ==
		(ssize_t)strlen(text))
		req->sent_status = 413;
	/* The client sees the end of the answer, not a reset, while it sends. */
	shutdown(info->connect_fd, SHUT_WR);
	free(text);
	return MHD_NO;
}

/* Sizes a snapshot (first pass) or fills it (second pass). */
static enum MHD_Result snapshot_visit(void *cls, enum MHD_ValueKind kind, const char *key,
				      const char *value)
{
	struct snapshot *snapshot = cls;
	size_t key_len = strlen(key) + 1, value_len = value != NULL ? strlen(value) + 1 : 0;

	if (snapshot->entries != NULL) {
		struct snapshot_entry *entry = &snapshot->entries[snapshot->n_entries];

		entry->kind = kind;
		entry->key = memcpy(snapshot->text + snapshot->text_used, key, key_len);
		entry->value =
		    value != NULL
			? memcpy(snapshot->text + snapshot->text_used + key_len, value, value_len)
			: NULL;
	}
	snapshot->n_entries++;
	snapshot->text_used += key_len + value_len;
	return MHD_YES;
}

/* Copies the headers and query arguments of req; NULL without memory. */
static struct snapshot *snapshot_take(struct fl_http_request *req)
{
	enum MHD_ValueKind kinds = MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND;
	struct snapshot sizes = {0}, *snapshot;

	MHD_get_connection_values(req->connection, kinds, snapshot_visit, &sizes);
	snapshot = malloc(sizeof(*snapshot) + sizes.n_entries * sizeof(struct snapshot_entry) +
			  sizes.text_used);
	if (snapshot == NULL)
		return NULL;
	snapshot->n_entries = 0;
	snapshot->text_used = 0;
	snapshot->entries = (struct snapshot_entry *)(snapshot + 1);
	snapshot->text = (char *)(snapshot->entries + sizes.n_entries);
	MHD_get_connection_values(req->connection, kinds, snapshot_visit, snapshot);
	return snapshot;
}

/* Queues the 500 a handler earned by returning DONE without an answer. */
static enum MHD_Result answer_unanswered(struct fl_http_request *req)
{
	struct MHD_Response *response =
	    make_error_response("internal", "the handler gave no answer", NULL);

	if (response == NULL)
		return MHD_NO;
	pthread_mutex_lock(&req->lock);
	req->response = response;
	req->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	req->state = REQ_ANSWERED;
	pthread_mutex_unlock(&req->lock);
	return queue_answer(req);
}

/* The body is complete: runs the handler and acts on its disposition. */
static enum MHD_Result run_handler(struct fl_http_server *server, struct fl_http_request *req)
{
	enum fl_http_disposition disposition;
	bool answered;

	conn_enter(server, req->connection, CONN_HANDLING);
	pthread_mutex_lock(&req->lock);
	req->state = REQ_IN_HANDLER;
	pthread_mutex_unlock(&req->lock);

	disposition = server->handler(server->ctx, req);

	if (disposition == FL_HTTP_DEFERRED) {
		/* Taken before the locks (only this thread writes MHD's
		 * copy). Without memory there is none, and the getters read
		 * MHD's copy, valid unless the server gives up on req. */
		struct snapshot *snapshot = snapshot_take(req);

		pthread_mutex_lock(&server->lock);
		pthread_mutex_lock(&req->lock);
		if (req->state == REQ_IN_HANDLER)
			req->snapshot = snapshot;
		else
			free(snapshot);
		if (req->state == REQ_IN_HANDLER && server->abandoning) {
			/* Too late to wait: answer for the holder, who
			 * learns it from its own answer's status. */
			req->response = make_error_response("shutting_down",
							    "the server is shutting down", NULL);
			req->status = MHD_HTTP_SERVICE_UNAVAILABLE;
			req->state = REQ_ANSWERED;
			req->held = true;
			req->server_answered = true;
		} else if (req->state == REQ_IN_HANDLER) {
			req->state = REQ_SUSPENDED;
			req->held = true;
			req->next = server->suspended_head;
			if (req->next != NULL)
				req->next->prev = req;
			server->suspended_head = req;
			server->suspended++;
			MHD_suspend_connection(req->connection);
			pthread_mutex_unlock(&req->lock);
			pthread_mutex_unlock(&server->lock);
			return MHD_YES;
		}
		answered = req->state == REQ_ANSWERED;
		pthread_mutex_unlock(&req->lock);
		pthread_mutex_unlock(&server->lock);
		/* Without memory for the farewell, queue_answer() closes the
		 * connection. */
		return answered ? queue_answer(req) : MHD_NO;
	}

	pthread_mutex_lock(&req->lock);
	answered = req->state == REQ_ANSWERED;
	pthread_mutex_unlock(&req->lock);
	return answered ? queue_answer(req) : answer_unanswered(req);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *connection, const char *url,
				 const char *method, const char *version, const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	struct fl_http_server *server = cls;
	struct fl_http_request *req = *con_cls;
	enum req_state state;

	(void)version;
	if (req == NULL)
		return start_request(server, connection, url, method, con_cls);

	pthread_mutex_lock(&req->lock);
	state = req->state;
	pthread_mutex_unlock(&req->lock);

	if (state == REQ_READING) {
		if (*upload_data_size > 0) {
			if (!append_body(req, upload_data, *upload_data_size))
				return MHD_NO;
			*upload_data_size = 0;
			if (req->body_too_large)
				return refuse_mid_body(req);
			return MHD_YES;
		}
		if (req->body_too_large) {
			char message[96];

			snprintf(message, sizeof(message), "the body is larger than %zu bytes",
				 body_limit(req));
			return refuse(req, 413, "body_too_large", message);
		}
		return run_handler(server, req);
	}
	if (state == REQ_RESUMING)
		return queue_answer(req);
	/* Nothing else is expected; a stray call must not queue twice. */
	*upload_data_size = 0;
	return state == REQ_QUEUED ? MHD_YES : MHD_NO;
}

static void request_completed_cb(void *cls, struct MHD_Connection *connection, void **con_cls,
				 enum MHD_RequestTerminationCode toe)
{
	struct fl_http_server *server = cls;
	struct fl_http_request *req = *con_cls;
	bool free_request;

	(void)toe;
	conn_enter(server, connection, CONN_IDLE);
	if (req == NULL)
		return;
	*con_cls = NULL;
	if (server->on_complete != NULL)
		server->on_complete(server->ctx, req, req->sent_status,
				    fl_time_mono_us() - req->start_us);

	pthread_mutex_lock(&server->lock);
	pthread_mutex_lock(&req->lock);
	if (req->state == REQ_SUSPENDED || req->state == REQ_RESUMING)
		unlist_suspended(server, req);
	req->finished = true;
	free_request = !req->held;
	pthread_mutex_unlock(&req->lock);
	server->in_flight--;
	if (atomic_load(&server->stopping))
		pthread_cond_broadcast(&server->changed);
	pthread_mutex_unlock(&server->lock);

	if (free_request)
		request_free(req);
}

/* ---- server ---- */

/*
 * Splits "HOST:PORT" or "[V6]:PORT" and opens a bound, listening,
 * non-blocking socket.
 */
static enum fl_status open_listener(const char *listen_text, char *error, size_t error_size,
				    int *ret_fd, uint16_t *ret_port)
{
	char host[256], port[8];
	const char *colon;
	size_t host_len;
	struct addrinfo hints = {0}, *found = NULL;
	struct sockaddr_storage bound;
	socklen_t bound_len = sizeof(bound);
	int fd, one = 1, rc;
	char *end;
	unsigned long port_number;

	if (listen_text[0] == '[') {
		const char *close = strchr(listen_text, ']');
		if (close == NULL || close[1] != ':')
			goto bad_address;
		host_len = (size_t)(close - listen_text - 1);
		memcpy(host, listen_text + 1, host_len < sizeof(host) ? host_len : 0);
		colon = close + 1;
	} else {
		colon = strrchr(listen_text, ':');
		if (colon == NULL)
			goto bad_address;
		host_len = (size_t)(colon - listen_text);
		memcpy(host, listen_text, host_len < sizeof(host) ? host_len : 0);
	}
	if (host_len == 0 || host_len >= sizeof(host))
		goto bad_address;
	host[host_len] = '\0';
	errno = 0;
	port_number = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 || port_number > 65535)
		goto bad_address;
	snprintf(port, sizeof(port), "%lu", port_number);

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &found);
	if (rc != 0) {
		fl_set_error(error, error_size, "cannot resolve listen host \"%s\": %s", host,
			     gai_strerror(rc));
		return FL_ERR_INVALID;
	}
	fd = socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    found->ai_protocol);
	if (fd < 0)
		goto fail_errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &bound_len) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		goto fail_errno;
	}
	freeaddrinfo(found);
	if (bound.ss_family == AF_INET6)
		*ret_port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
	else
		*ret_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
	*ret_fd = fd;
	return FL_OK;

fail_errno:
	fl_set_error(error, error_size, "cannot listen on %s: %s", listen_text, strerror(errno));
	freeaddrinfo(found);
	return FL_ERR_IO;
bad_address:
	fl_set_error(error, error_size, "listen address \"%s\" is not HOST:PORT or [IPV6]:PORT",
		     listen_text);
	return FL_ERR_INVALID;
}

static enum fl_status read_pem(const char *path, const char *what, char *error, size_t error_size,
			       char **ret_text)
{
	size_t len;
	enum fl_status status = fl_file_read(path, ret_text, &len);

	if (status == FL_OK)
		return FL_OK;
	fl_set_error(error, error_size, "cannot read the TLS %s %s", what, path);
	return status == FL_ERR_NOMEM ? FL_ERR_NOMEM : FL_ERR_IO;
}

/*
 * Makes room for max_connections open sockets: raises the soft limit on
 * open files up to the hard limit if need be.
 */
static enum fl_status fit_open_files(unsigned max_connections, char *error, size_t error_size)
{
	struct rlimit limit;
	rlim_t needed = (rlim_t)max_connections + RESERVED_FILES;

	if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY ||
	    limit.rlim_cur >= needed)
		return FL_OK;
	if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
		fl_set_error(
		    error, error_size,
		    "%u connections need %llu open files, and the hard limit on open files "
		    "is %llu: allow more (ulimit -Hn) or accept fewer connections",
		    max_connections, (unsigned long long)needed,
		    (unsigned long long)limit.rlim_max);
		return FL_ERR_INVALID;
	}
	limit.rlim_cur = needed;
	if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
		fl_set_error(error, error_size, "cannot raise the limit on open files to %llu: %s",
			     (unsigned long long)needed, strerror(errno));
		return FL_ERR_IO;
	}
	return FL_OK;
}

static void server_free(struct fl_http_server *server)
{
	if (server == NULL)
		return;
	if (server->sweeper_started) {
		pthread_mutex_lock(&server->conns_lock);
		server->sweeper_quit = true;
		pthread_cond_signal(&server->sweeper_wake);
		pthread_mutex_unlock(&server->conns_lock);
		pthread_join(server->sweeper, NULL);
	}
	pthread_cond_destroy(&server->sweeper_wake);
	pthread_mutex_destroy(&server->conns_lock);
	pthread_cond_destroy(&server->changed);
	pthread_mutex_destroy(&server->lock);
	free(server->tls_cert);
	if (server->tls_key != NULL) {
		/* A private key should not outlive its use in freed memory. */
		explicit_bzero(server->tls_key, strlen(server->tls_key));
		free(server->tls_key);
	}
	free(server->tls_client_ca);
	free(server->spool_dir);
	free(server);
}

enum fl_status fl_http_server_create(const struct fl_http_options *options,
				     fl_http_handler_fn handler, void *ctx, char *error,
				     size_t error_size, struct fl_http_server **ret_server)
{
	struct fl_http_server *server;
	struct MHD_OptionItem extra_options[5]; /* TLS, threads, the end */
	size_t n_extra = 0;
	const char *listen_text;
	unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
	unsigned int idle_timeout_s, max_connections, max_per_ip;
	int listen_fd = -1;
	enum fl_status status;

	if (options == NULL || handler == NULL || ret_server == NULL) {
		fl_set_error(error, error_size, "invalid arguments");
		return FL_ERR_INVALID;
	}
	if ((options->tls_cert_file == NULL) != (options->tls_key_file == NULL) ||
	    (options->tls_client_ca_file != NULL && options->tls_cert_file == NULL)) {
		fl_set_error(error, error_size,
			     "TLS needs both a certificate and a key (and a client CA only with "
			     "them)");
		return FL_ERR_INVALID;
	}

	server = calloc(1, sizeof(*server));
	if (server == NULL) {
		fl_set_error(error, error_size, "out of memory");
		return FL_ERR_NOMEM;
	}
	pthread_mutex_init(&server->lock, NULL);
	fl_cond_init_monotonic(&server->changed);
	pthread_mutex_init(&server->conns_lock, NULL);
	fl_cond_init_monotonic(&server->sweeper_wake);
	server->handler = handler;
	server->ctx = ctx;
	server->on_complete = options->on_complete;
	server->max_body_bytes =
	    options->max_body_bytes > 0 ? options->max_body_bytes : DEFAULT_MAX_BODY_BYTES;
	server->spool_body = options->spool_body;
	server->max_spool_body_bytes = options->max_spool_body_bytes > 0
					   ? options->max_spool_body_bytes
					   : DEFAULT_MAX_SPOOL_BODY_BYTES;
	if (options->spool_dir != NULL &&
	    (server->spool_dir = strdup(options->spool_dir)) == NULL) {
		fl_set_error(error, error_size, "out of memory");
		server_free(server);
		return FL_ERR_NOMEM;
	}
	server->grace_ms = options->grace_ms > 0 ? options->grace_ms : DEFAULT_GRACE_MS;
	idle_timeout_s =
	    options->idle_timeout_s > 0 ? options->idle_timeout_s : DEFAULT_IDLE_TIMEOUT_S;
	server->request_timeout_us =
	    (int64_t)(options->request_timeout_s > 0 ? options->request_timeout_s
						     : DEFAULT_REQUEST_TIMEOUT_S) *
	    1000000;
	max_connections =
	    options->max_connections > 0 ? options->max_connections : DEFAULT_MAX_CONNECTIONS;
	max_per_ip = options->max_connections_per_ip > 0 ? options->max_connections_per_ip
							 : DEFAULT_MAX_CONNECTIONS_PER_IP;
	if (getrandom(&server->id_prefix, sizeof(server->id_prefix), 0) !=
	    (ssize_t)sizeof(server->id_prefix))
		server->id_prefix = (uint32_t)getpid() ^ (uint32_t)fl_time_now_us();

	if (options->tls_cert_file != NULL) {
		status = read_pem(options->tls_cert_file, "certificate", error, error_size,
				  &server->tls_cert);
		if (status == FL_OK)
			status = read_pem(options->tls_key_file, "key", error, error_size,
					  &server->tls_key);
		if (status == FL_OK && options->tls_client_ca_file != NULL)
			status = read_pem(options->tls_client_ca_file, "client CA", error,
					  error_size, &server->tls_client_ca);
		if (status != FL_OK)
			goto fail;
		flags |= MHD_USE_TLS;
		extra_options[n_extra++] =
		    (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, server->tls_cert};
		extra_options[n_extra++] =
		    (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, server->tls_key};
		if (server->tls_client_ca != NULL) {
			extra_options[n_extra++] = (struct MHD_OptionItem){
			    MHD_OPTION_HTTPS_MEM_TRUST, 0, server->tls_client_ca};
			server->require_client_cert = true;
		}
	}
	if (options->threads > 1)
		extra_options[n_extra++] = (struct MHD_OptionItem){
		    MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)options->threads, NULL};
	extra_options[n_extra] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

	status = fit_open_files(max_connections, error, error_size);
	if (status != FL_OK)
		goto fail;
	listen_text = options->listen != NULL ? options->listen : DEFAULT_LISTEN;
	status = open_listener(listen_text, error, error_size, &listen_fd, &server->port);
	if (status != FL_OK)
		goto fail;

	/*
	 * Each connection's memory pool holds its request head and read
	 * buffer, and libmicrohttpd clears all of it between two requests of
	 * a keep-alive connection: 16 KiB instead of the default 32 KiB halves
	 * that cost and still leaves room for heads far beyond what clients
	 * send (bodies stream through the upload callback).
	 */
	server->daemon = MHD_start_daemon(
	    flags, 0, NULL, NULL, access_cb, server, MHD_OPTION_LISTEN_SOCKET, listen_fd,
	    MHD_OPTION_NOTIFY_COMPLETED, request_completed_cb, server, MHD_OPTION_NOTIFY_CONNECTION,
	    connection_cb, server, MHD_OPTION_CONNECTION_TIMEOUT, idle_timeout_s,
	    MHD_OPTION_CONNECTION_LIMIT, max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    max_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_BYTES,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape_cb, NULL, MHD_OPTION_ARRAY, extra_options,
	    MHD_OPTION_END);
	if (server->daemon == NULL) {
		/* MHD closes the listen socket it was given when it fails
		 * (measured with 0.9.75), so it is not closed here. */
		if (flags & MHD_USE_TLS) {
			fl_set_error(error, error_size,
				     "libmicrohttpd refused the TLS certificate, key or client CA");
			status = FL_ERR_CRYPTO;
		} else {
			fl_set_error(error, error_size, "libmicrohttpd could not start");
			status = FL_ERR_IO;
		}
		goto fail;
	}
	if (pthread_create(&server->sweeper, NULL, sweeper_main, server) != 0) {
		MHD_stop_daemon(server->daemon);
		fl_set_error(error, error_size, "cannot start the request deadline thread");
		status = FL_ERR_IO;
		goto fail;
	}
	server->sweeper_started = true;
	*ret_server = server;
	return FL_OK;

fail:
	server_free(server);
	return status;
}

uint16_t fl_http_server_port(const struct fl_http_server *server)
{
	return server != NULL ? server->port : 0;
}

/*
 * Under server->lock, past the grace time: answers every suspended request
 * with 503 and resumes it, and refuses further deferrals.
 */
static void abandon_suspended(struct fl_http_server *server)
{
	server->abandoning = true;
	for (struct fl_http_request *req = server->suspended_head; req != NULL; req = req->next) {
		pthread_mutex_lock(&req->lock);
		if (req->state == REQ_SUSPENDED) {
			struct MHD_Response *response = make_error_response(
			    "shutting_down", "the server is shutting down", NULL);

			/* Without memory for an answer the resumed request
			 * gets MHD_NO, which closes its connection. */
			req->response = response;
			req->status = MHD_HTTP_SERVICE_UNAVAILABLE;
			req->state = REQ_RESUMING;
			req->server_answered = true;
			MHD_resume_connection(req->connection);
		}
		pthread_mutex_unlock(&req->lock);
	}
}

void fl_http_server_destroy(struct fl_http_server *server)
{
	struct timespec deadline;
	MHD_socket listen_fd;

	if (server == NULL)
		return;
	atomic_store(&server->stopping, true);
	listen_fd = MHD_quiesce_daemon(server->daemon);
	if (listen_fd != MHD_INVALID_SOCKET)
		close(listen_fd);

	pthread_mutex_lock(&server->lock);
	deadline = deadline_after_ms(server->grace_ms);
	while (server->in_flight > 0 &&
	       pthread_cond_timedwait(&server->changed, &server->lock, &deadline) != ETIMEDOUT)
		;
	abandon_suspended(server);
	/* MHD must have taken every connection off its suspended list before
	 * it stops; its thread does so promptly once resumed. */
	while (server->suspended > 0) {
		deadline = deadline_after_ms(100);
		pthread_cond_timedwait(&server->changed, &server->lock, &deadline);
	}
	deadline = deadline_after_ms(FAREWELL_MS);
	while (server->in_flight > 0 &&
	       pthread_cond_timedwait(&server->changed, &server->lock, &deadline) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&server->lock);

	MHD_stop_daemon(server->daemon);
	server_free(server);
}
