#ifndef FLEDGER_METRICS_H
#define FLEDGER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "fledger/status.h"

/*
 * Prometheus metrics in the text exposition format (CONTRACT §10).
 *
 * A registry holds metric families: counters (integers that only grow),
 * gauges (doubles that go up and down) and histograms (fixed buckets, in the
 * unit of what is observed, seconds for latencies). A family without labels
 * is itself the one series to update. A family with labels (at most
 * FL_METRICS_MAX_LABELS) hands out one series per combination of label
 * values with fl_counter_with() and friends; the series lives as long as the
 * registry, so a hot path may look it up once and keep the pointer.
 *
 *   static const char *const route_code[] = {"route", "code", NULL};
 *   struct fl_counter *requests;
 *   fl_metrics_counter(reg, "fledger_http_requests_total", "HTTP requests answered.",
 *                      route_code, &requests);
 *   fl_counter_inc(fl_counter_with(requests, (const char *[]){"/v1/events", "201"}));
 *
 * Every update and lookup is safe from any thread. Updates are relaxed
 * atomic operations (a few nanoseconds); looking up an existing series takes
 * no lock; creating a series or a family, and rendering, take the
 * registry's mutex.
 */

#define FL_METRICS_MAX_LABELS 3

struct fl_metrics;
struct fl_counter;
struct fl_gauge;
struct fl_histogram;

enum fl_status fl_metrics_create(struct fl_metrics **ret_metrics);

/* Frees the registry and every family and series it handed out. */
void fl_metrics_destroy(struct fl_metrics *metrics);

/*
 * Registers a family. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, label_names
 * is a NULL-terminated list of names matching [a-zA-Z_][a-zA-Z0-9_]* (not
 * starting with "__"), or NULL for none. help is one line for `# HELP`. The
 * registry copies every string. Errors: FL_ERR_INVALID for a bad name or too
 * many labels, FL_ERR_CONFLICT when the name is taken, FL_ERR_NOMEM.
 */
enum fl_status fl_metrics_counter(struct fl_metrics *metrics, const char *name, const char *help,
				  const char *const *label_names, struct fl_counter **ret_counter);
enum fl_status fl_metrics_gauge(struct fl_metrics *metrics, const char *name, const char *help,
				const char *const *label_names, struct fl_gauge **ret_gauge);

/*
 * As above, with the upper bounds of the buckets in increasing order (the
 * +Inf bucket is implicit). bounds NULL takes the default latency buckets:
 * 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
 * 0.25, 0.5, 1, 2.5, 5, 10 (seconds). The label "le" is reserved.
 */
enum fl_status fl_metrics_histogram(struct fl_metrics *metrics, const char *name, const char *help,
				    const char *const *label_names, const double *bounds,
				    size_t n_bounds, struct fl_histogram **ret_histogram);

/*
 * The series of a labeled family for label_values (one string per label
 * name, in the family's order), created on first use. NULL when family is
 * NULL or has no labels, when a value is NULL, or without memory; the
 * update functions ignore a NULL series, so a failed lookup loses one
 * update and nothing else.
 */
struct fl_counter *fl_counter_with(struct fl_counter *family, const char *const *label_values);
struct fl_gauge *fl_gauge_with(struct fl_gauge *family, const char *const *label_values);
struct fl_histogram *fl_histogram_with(struct fl_histogram *family,
				       const char *const *label_values);

void fl_counter_add(struct fl_counter *counter, uint64_t amount);
void fl_counter_inc(struct fl_counter *counter);
void fl_gauge_set(struct fl_gauge *gauge, double value);
void fl_gauge_add(struct fl_gauge *gauge, double amount);
void fl_histogram_observe(struct fl_histogram *histogram, double value);

/*
 * Renders every family, in registration order and each family's series in
 * creation order, with `# HELP` and `# TYPE` lines. *ret_text is a new
 * NUL-terminated malloc'd string the caller frees, *ret_len its length.
 * A labeled family without series renders only its HELP and TYPE lines.
 */
enum fl_status fl_metrics_render(struct fl_metrics *metrics, char **ret_text, size_t *ret_len);

#endif
