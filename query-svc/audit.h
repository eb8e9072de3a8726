#ifndef QUERY_SVC_AUDIT_H
#define QUERY_SVC_AUDIT_H

/*
 * The read audit (CONTRACT §7). Every audited read is recorded in a signed
 * log of its own (the eventlog library, signed with query-svc's key, with
 * checkpoints prefixed "fledger-read-checkpoint-v1") before its answer is
 * sent. Reads are gathered into group commits by one thread: a handler
 * submits the record with the answer it wants to send and returns
 * FL_HTTP_DEFERRED; the thread appends a group of records in one synced
 * transaction and then sends each answer. A record that cannot be stored
 * turns its answer into a 503: nothing is ever answered unaudited.
 */

#include <jansson.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/http.h"
#include "fledger/metrics.h"
#include "fledger/status.h"

struct fl_audit;

struct fl_audit_config {
	struct fl_log *log;		     /* borrowed: the read audit log */
	struct fl_histogram *commit_latency; /* seconds; may be NULL */
	/*
	 * How the answers of fl_audit_submit leave, from the audit thread:
	 * NULL for fl_http_respond, fl_http_add_header and
	 * fl_http_respond_error. A test passes functions that record them,
	 * with requests of its own making.
	 */
	enum fl_status (*respond)(struct fl_http_request *req, unsigned status,
				  const char *content_type, const void *body, size_t len);
	enum fl_status (*add_header)(struct fl_http_request *req, const char *name,
				     const char *value);
	enum fl_status (*respond_error)(struct fl_http_request *req, unsigned status,
					const char *code, const char *message, const char *field);
};

enum fl_status fl_audit_create(const struct fl_audit_config *config, struct fl_audit **ret_audit);

/* Records and answers what is queued, then stops. Accepts NULL. */
void fl_audit_destroy(struct fl_audit *audit);

/*
 * A list of strings for a record, for a caller that holds C strings: the
 * online reads, which so build no JSON tree per read. A string that is not
 * valid UTF-8 is recorded with each byte >= 0x80 as '?'.
 */
struct fl_audit_names {
	const char *const *names;
	size_t count;
};

/*
 * What a read served, for its record; everything is borrowed (copied). Each
 * list is the JSON array when that is set, else the C strings (none: []).
 */
struct fl_audit_record {
	const char *read_id;
	const char *principal;	  /* NULL for a request without a valid token */
	const char *route;	  /* "/v1/features", "/v1/features:batch", ... */
	const char *view;	  /* NULL when unknown */
	const json_t *entity_ids; /* array of strings, or NULL */
	const json_t *features;	  /* array of names, or NULL */
	const json_t *windows;	  /* array of names, or NULL */
	struct fl_audit_names entity_id_names, feature_names, window_names;
	const uint64_t *served_seqs;
	size_t n_served;
	/* A training-data export (CONTRACT §7): when request_sha256 is set
	 * (hex), the record holds "rows" and "request_sha256" instead of
	 * "entity_ids". */
	const char *request_sha256;
	uint64_t rows;
	/* Every record: the log prefix the answer was computed from, which
	 * determines every window (0 when the read computed nothing). */
	uint64_t applied_seq;
};

/*
 * Records rec with status and SHA-256 of body, then answers req with it.
 * On FL_OK it owns body (malloc'd) and the caller returns FL_HTTP_DEFERRED;
 * on failure neither req nor body was touched.
 */
enum fl_status fl_audit_submit(struct fl_audit *audit, struct fl_http_request *req,
			       const struct fl_audit_record *rec, unsigned status,
			       const char *content_type, char *body, size_t len);

/*
 * Records rec with status and the answer's SHA-256 (answer_sha256), on the
 * calling thread, and returns once the record is durable (FL_OK), so that
 * the caller may then send an answer it streams from elsewhere. Safe from
 * any thread (the log serialises appends).
 */
enum fl_status fl_audit_record_now(struct fl_audit *audit, const struct fl_audit_record *rec,
				   unsigned status, const uint8_t answer_sha256[32]);

/* As fl_audit_submit, for a §9 error answer (401, 403, 400, 404...). */
enum fl_status fl_audit_submit_error(struct fl_audit *audit, struct fl_http_request *req,
				     const struct fl_audit_record *rec, unsigned status,
				     const char *code, const char *message, const char *field);

#endif
