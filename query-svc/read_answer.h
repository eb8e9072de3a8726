#ifndef QUERY_SVC_READ_ANSWER_H
#define QUERY_SVC_READ_ANSWER_H

/*
 * The answer of a read plan (read_plan.h) from one snapshot of the read
 * models: the exact bytes of a 200 answer, or the error to answer instead,
 * and what the read audit records of it (every seq a value came from, the
 * log prefix it was computed from). No sockets: the caller sends the bytes.
 */

#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/error.h"
#include "fledger/text.h"
#include "projection.h"
#include "read_plan.h"

/* Where answers come from. */
struct fl_read_sources {
	struct fl_projection *projection;
	struct fl_log *replica; /* the verified log copy: proofs and history lines */
};

struct fl_read_result {
	char *body; /* the 200 answer (FL_OK) */
	size_t len;
	const char *content_type; /* static */
	struct fl_error err;	  /* the answer instead (not FL_OK) */
	uint64_t *served;	  /* every seq a value came from: ascending, no repeats */
	size_t n_served;
	uint64_t applied_seq;	   /* the log prefix the answer was computed from (0: none) */
	struct fl_text served_buf; /* holds served */
};

/*
 * Answers plan. read_id goes into row answers; as_of defaults to now. A
 * run spends at most cost_limit cost units (0: no bound) before it fails
 * with FL_ERR_INVALID and err read_too_expensive. Any other failure also
 * fills err (an answer such as 403 proof_forbidden, 503 proof_unavailable,
 * or a 500); a refused proof serves nothing. *result is overwritten; free
 * it with fl_read_result_finish either way.
 */
enum fl_status fl_read_answer_plan(const struct fl_read_plan *plan,
				   const struct fl_read_sources *sources, const char *read_id,
				   uint64_t cost_limit, struct fl_read_result *result);

void fl_read_result_finish(struct fl_read_result *result); /* leaves it empty */

#endif
