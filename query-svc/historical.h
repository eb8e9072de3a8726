#ifndef QUERY_SVC_HISTORICAL_H
#define QUERY_SVC_HISTORICAL_H

/*
 * Training data: POST /v1/features:historical (CONTRACT §6), point-in-time
 * joins of many (entity_id, ts) rows, answered as a stream. See the top of
 * historical.c for how memory stays flat and when the read is recorded.
 */

#include <stdbool.h>

#include "fledger/http.h"
#include "routes.h"

/* The fl_http_options.spool_body of query-svc: true for this route. */
bool fl_query_historical_spools(void *ctx, const char *method, const char *path);

/*
 * Handles one request of the route (the HTTP layer spooled its body):
 * checks the token, role, head line and ACLs on the calling thread, then
 * computes, records and answers on a thread of its own (FL_HTTP_DEFERRED).
 * read_id names the read in the audit log.
 */
enum fl_http_disposition fl_query_historical(struct fl_query *q, struct fl_http_request *req,
					     const char *read_id);

/* For shutdown: exports still computing stop with 503; waits until none runs. */
void fl_query_historical_stop(void);

#endif
