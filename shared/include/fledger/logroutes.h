#ifndef FLEDGER_LOGROUTES_H
#define FLEDGER_LOGROUTES_H

/*
 * HTTP answers over a signed log (CONTRACT §4, §7), shared by command-svc
 * (the event log) and query-svc (the read audit log): NDJSON lines, the
 * checkpoints, inclusion and consistency proofs and the public keys. Each
 * function answers req itself (errors as in §9) and returns FL_HTTP_DONE;
 * authorisation is the caller's.
 */

#include "eventlog/eventlog.h"
#include "fledger/http.h"
#include "fledger/text.h"

/* ?from_seq=N (default 1) &limit=M (default 1000, at most 10000). */
enum fl_http_disposition fl_logroutes_lines(struct fl_log *log, struct fl_http_request *req);

/*
 * ?from=<RFC 3339>&to=<RFC 3339> (defaults: the beginning, now): the lines
 * whose indexed time lies in [from, to], in time order, at most limit
 * (?limit, default and maximum 100000).
 */
enum fl_http_disposition fl_logroutes_lines_by_time(struct fl_log *log,
						    struct fl_http_request *req);

/* The latest checkpoint, or ?tree_size=N exactly, or ?covering_seq=N. */
enum fl_http_disposition fl_logroutes_checkpoint(struct fl_log *log, struct fl_http_request *req);

/* ?seq=N&tree_size=M (inclusion) or ?first=M&second=N (consistency). */
enum fl_http_disposition fl_logroutes_proof(struct fl_log *log, struct fl_http_request *req,
					    bool inclusion);

/* {"keys": [{"key_id", "alg": "ed25519", "public_key_pem"}]}: every key ever used. */
enum fl_http_disposition fl_logroutes_keys(struct fl_log *log, struct fl_http_request *req);

/*
 * NDJSON text of log lines, built one line at a time; start from {0} and
 * fl_text_free(&nd.text) when done.
 */
struct fl_ndjson {
	struct fl_text text;
	uint64_t count; /* lines added */
};

/* Appends the log line of entry and a newline. */
enum fl_status fl_ndjson_add(struct fl_ndjson *nd, const struct fl_log_entry *entry);

/* Appends the log line of seq, read with reader. */
enum fl_status fl_ndjson_add_seq(struct fl_ndjson *nd, struct fl_log_reader *reader, uint64_t seq);

#endif
