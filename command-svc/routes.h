#ifndef COMMAND_SVC_ROUTES_H
#define COMMAND_SVC_ROUTES_H

/* The HTTP face of command-svc: one handler that dispatches every route. */

#include "committer.h"
#include "eventlog/eventlog.h"
#include "fledger/auth.h"
#include "fledger/http.h"
#include "fledger/metrics.h"
#include "fledger/slog.h"
#include "fledger/view.h"
#include "publisher.h"

/* Everything the routes use; owned by main. */
struct fl_command {
	struct fl_log *log;
	struct fl_view_registry *registry;
	struct fl_committer *committer;
	struct fl_publisher *publisher;
	const struct fl_auth *auth; /* NULL: insecure development mode */
	struct fl_metrics *metrics;
	struct fl_counter *http_requests; /* {route, code} */
	struct fl_gauge *publish_lag;
	struct fl_gauge *tree_size;
	struct fl_gauge *nats_connected;
	int64_t max_future_skew_us; /* --max-future-skew */
};

enum fl_http_disposition fl_command_handle(void *ctx, struct fl_http_request *req);
void fl_command_on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			    int64_t duration_us);

#endif
