#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fledger/metrics.h"

static const char *const route_code[] = {"route", "code", NULL};

static char *render(struct fl_metrics *metrics)
{
	char *text = NULL;
	size_t len = 0;

	cr_assert_eq(fl_metrics_render(metrics, &text, &len), FL_OK);
	cr_assert_eq(strlen(text), len);
	return text;
}

Test(metrics, renders_counters_gauges_and_histograms_exactly)
{
	static const double bounds[] = {0.001, 0.01, 0.1};
	static const char *const view[] = {"view", NULL};
	struct fl_metrics *metrics;
	struct fl_counter *ingested, *requests;
	struct fl_gauge *lag;
	struct fl_histogram *latency, *by_view;
	char *text;

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "fledger_ingest_events_total",
					"Events appended to the log.", NULL, &ingested),
		     FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "fledger_http_requests_total",
					"HTTP requests answered.", route_code, &requests),
		     FL_OK);
	cr_assert_eq(fl_metrics_gauge(metrics, "fledger_publish_lag_events",
				      "Events committed but not yet published.", NULL, &lag),
		     FL_OK);
	cr_assert_eq(fl_metrics_histogram(metrics, "fledger_append_latency_seconds",
					  "Time to append and sync a batch.", NULL, bounds, 3,
					  &latency),
		     FL_OK);
	cr_assert_eq(fl_metrics_histogram(metrics, "fledger_read_seconds", "Reads.", view, bounds,
					  3, &by_view),
		     FL_OK);

	fl_counter_add(ingested, 41);
	fl_counter_inc(ingested);
	fl_counter_inc(fl_counter_with(requests, (const char *[]){"/v1/events", "201"}));
	fl_counter_add(fl_counter_with(requests, (const char *[]){"/v1/events", "201"}), 2);
	fl_counter_inc(fl_counter_with(requests, (const char *[]){"/healthz", "200"}));
	fl_gauge_set(lag, 7);
	fl_gauge_add(lag, -2.5);
	fl_histogram_observe(latency, 0.0005);
	fl_histogram_observe(latency, 0.001); /* le is inclusive */
	fl_histogram_observe(latency, 0.05);
	fl_histogram_observe(latency, 3);
	fl_histogram_observe(fl_histogram_with(by_view, (const char *[]){"user_activity"}), 0.002);

	text = render(metrics);
	cr_assert_str_eq(
	    text, "# HELP fledger_ingest_events_total Events appended to the log.\n"
		  "# TYPE fledger_ingest_events_total counter\n"
		  "fledger_ingest_events_total 42\n"
		  "# HELP fledger_http_requests_total HTTP requests answered.\n"
		  "# TYPE fledger_http_requests_total counter\n"
		  "fledger_http_requests_total{route=\"/v1/events\",code=\"201\"} 3\n"
		  "fledger_http_requests_total{route=\"/healthz\",code=\"200\"} 1\n"
		  "# HELP fledger_publish_lag_events Events committed but not yet published.\n"
		  "# TYPE fledger_publish_lag_events gauge\n"
		  "fledger_publish_lag_events 4.5\n"
		  "# HELP fledger_append_latency_seconds Time to append and sync a batch.\n"
		  "# TYPE fledger_append_latency_seconds histogram\n"
		  "fledger_append_latency_seconds_bucket{le=\"0.001\"} 2\n"
		  "fledger_append_latency_seconds_bucket{le=\"0.01\"} 2\n"
		  "fledger_append_latency_seconds_bucket{le=\"0.1\"} 3\n"
		  "fledger_append_latency_seconds_bucket{le=\"+Inf\"} 4\n"
		  "fledger_append_latency_seconds_sum 3.0515\n"
		  "fledger_append_latency_seconds_count 4\n"
		  "# HELP fledger_read_seconds Reads.\n"
		  "# TYPE fledger_read_seconds histogram\n"
		  "fledger_read_seconds_bucket{view=\"user_activity\",le=\"0.001\"} 0\n"
		  "fledger_read_seconds_bucket{view=\"user_activity\",le=\"0.01\"} 1\n"
		  "fledger_read_seconds_bucket{view=\"user_activity\",le=\"0.1\"} 1\n"
		  "fledger_read_seconds_bucket{view=\"user_activity\",le=\"+Inf\"} 1\n"
		  "fledger_read_seconds_sum{view=\"user_activity\"} 0.002\n"
		  "fledger_read_seconds_count{view=\"user_activity\"} 1\n");
	free(text);
	fl_metrics_destroy(metrics);
}

Test(metrics, default_buckets_and_empty_families)
{
	struct fl_metrics *metrics;
	struct fl_histogram *latency;
	struct fl_counter *requests;
	char *text;

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(
	    fl_metrics_counter(metrics, "requests_total", "Requests.", route_code, &requests),
	    FL_OK);
	cr_assert_eq(
	    fl_metrics_histogram(metrics, "latency_seconds", "Latency.", NULL, NULL, 0, &latency),
	    FL_OK);
	text = render(metrics);
	cr_assert_str_eq(text, "# HELP requests_total Requests.\n"
			       "# TYPE requests_total counter\n"
			       "# HELP latency_seconds Latency.\n"
			       "# TYPE latency_seconds histogram\n"
			       "latency_seconds_bucket{le=\"0.0001\"} 0\n"
			       "latency_seconds_bucket{le=\"0.00025\"} 0\n"
			       "latency_seconds_bucket{le=\"0.0005\"} 0\n"
			       "latency_seconds_bucket{le=\"0.001\"} 0\n"
			       "latency_seconds_bucket{le=\"0.0025\"} 0\n"
			       "latency_seconds_bucket{le=\"0.005\"} 0\n"
			       "latency_seconds_bucket{le=\"0.01\"} 0\n"
			       "latency_seconds_bucket{le=\"0.025\"} 0\n"
			       "latency_seconds_bucket{le=\"0.05\"} 0\n"
			       "latency_seconds_bucket{le=\"0.1\"} 0\n"
			       "latency_seconds_bucket{le=\"0.25\"} 0\n"
			       "latency_seconds_bucket{le=\"0.5\"} 0\n"
			       "latency_seconds_bucket{le=\"1\"} 0\n"
			       "latency_seconds_bucket{le=\"2.5\"} 0\n"
			       "latency_seconds_bucket{le=\"5\"} 0\n"
			       "latency_seconds_bucket{le=\"10\"} 0\n"
			       "latency_seconds_bucket{le=\"+Inf\"} 0\n"
			       "latency_seconds_sum 0\n"
			       "latency_seconds_count 0\n");
	free(text);
	fl_metrics_destroy(metrics);
}

Test(metrics, label_values_and_help_are_escaped)
{
	static const char *const path[] = {"path", NULL};
	struct fl_metrics *metrics;
	struct fl_counter *counter;
	char *text;

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "odd_total", "Help with \\ and\nnewline \"q\".",
					path, &counter),
		     FL_OK);
	fl_counter_inc(fl_counter_with(counter, (const char *[]){"a\"b\\c\nd"}));
	text = render(metrics);
	cr_assert_str_eq(text, "# HELP odd_total Help with \\\\ and\\nnewline \"q\".\n"
			       "# TYPE odd_total counter\n"
			       "odd_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
	free(text);
	fl_metrics_destroy(metrics);
}

Test(metrics, the_same_labels_give_the_same_series)
{
	struct fl_metrics *metrics;
	struct fl_counter *requests, *a, *b, *c;

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(
	    fl_metrics_counter(metrics, "requests_total", "Requests.", route_code, &requests),
	    FL_OK);
	a = fl_counter_with(requests, (const char *[]){"/x", "200"});
	b = fl_counter_with(requests, (const char *[]){"/x", "200"});
	c = fl_counter_with(requests, (const char *[]){"/x2", "00"});
	cr_assert_not_null(a);
	cr_assert_eq(a, b);
	cr_assert_neq(a, c);
	cr_assert_null(fl_counter_with(requests, (const char *[]){"/x", NULL}));
	cr_assert_null(fl_counter_with(requests, NULL));
	/* A series of a series, or of an unlabeled family, does not exist. */
	cr_assert_null(fl_counter_with(a, (const char *[]){"/x", "200"}));
	fl_counter_inc(NULL); /* ignored */
	fl_metrics_destroy(metrics);
}

Test(metrics, bad_names_and_duplicates_are_refused)
{
	static const char *const bad_label[] = {"__reserved", NULL};
	static const char *const le[] = {"le", NULL};
	static const char *const twice[] = {"a", "a", NULL};
	static const char *const too_many[] = {"a", "b", "c", "d", NULL};
	static const double unordered[] = {1, 0.5};
	struct fl_metrics *metrics;
	struct fl_counter *counter;
	struct fl_gauge *gauge;
	struct fl_histogram *histogram;

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "9starts_with_digit", "", NULL, &counter),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_counter(metrics, "has-dash", "", NULL, &counter), FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_counter(metrics, "ok_total", "", bad_label, &counter),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_counter(metrics, "ok_total", "", twice, &counter), FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_counter(metrics, "ok_total", "", too_many, &counter),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_histogram(metrics, "h_seconds", "", le, NULL, 0, &histogram),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_histogram(metrics, "h_seconds", "", NULL, unordered, 2, &histogram),
		     FL_ERR_INVALID);
	cr_assert_eq(fl_metrics_counter(metrics, "ok_total", "", NULL, &counter), FL_OK);
	cr_assert_eq(fl_metrics_gauge(metrics, "ok_total", "", NULL, &gauge), FL_ERR_CONFLICT);
	fl_metrics_destroy(metrics);
}

struct hammer {
	struct fl_counter *requests;
	struct fl_counter *plain;
	struct fl_gauge *gauge;
	struct fl_histogram *histogram;
};

#define THREADS 4
#define ROUNDS 100000

static void *hammer_run(void *arg)
{
	struct hammer *hammer = arg;
	static const char *const codes[] = {"200", "201", "400", "503"};

	for (int i = 0; i < ROUNDS; i++) {
		fl_counter_inc(fl_counter_with(hammer->requests,
					       (const char *[]){"/v1/events", codes[i % 4]}));
		fl_counter_inc(hammer->plain);
		fl_gauge_add(hammer->gauge, 1);
		fl_histogram_observe(hammer->histogram, (i % 2) ? 0.5 : 0.0005);
	}
	return NULL;
}

Test(metrics, updates_from_many_threads_are_not_lost)
{
	static const double bounds[] = {0.001};
	struct fl_metrics *metrics;
	struct hammer hammer;
	pthread_t threads[THREADS];
	char *text;
	char expected[2048];

	cr_assert_eq(fl_metrics_create(&metrics), FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "r_total", "R.", route_code, &hammer.requests),
		     FL_OK);
	cr_assert_eq(fl_metrics_counter(metrics, "p_total", "P.", NULL, &hammer.plain), FL_OK);
	cr_assert_eq(fl_metrics_gauge(metrics, "g", "G.", NULL, &hammer.gauge), FL_OK);
	cr_assert_eq(fl_metrics_histogram(metrics, "h", "H.", NULL, bounds, 1, &hammer.histogram),
		     FL_OK);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, hammer_run, &hammer);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);

	text = render(metrics);
	snprintf(expected, sizeof(expected),
		 "# HELP r_total R.\n# TYPE r_total counter\n"
		 "r_total{route=\"/v1/events\",code=\"200\"} %d\n"
		 "r_total{route=\"/v1/events\",code=\"201\"} %d\n"
		 "r_total{route=\"/v1/events\",code=\"400\"} %d\n"
		 "r_total{route=\"/v1/events\",code=\"503\"} %d\n"
		 "# HELP p_total P.\n# TYPE p_total counter\np_total %d\n"
		 "# HELP g G.\n# TYPE g gauge\ng %d\n"
		 "# HELP h H.\n# TYPE h histogram\n"
		 "h_bucket{le=\"0.001\"} %d\nh_bucket{le=\"+Inf\"} %d\n"
		 "h_sum %s\nh_count %d\n",
		 THREADS * ROUNDS / 4, THREADS * ROUNDS / 4, THREADS * ROUNDS / 4,
		 THREADS * ROUNDS / 4, THREADS * ROUNDS, THREADS * ROUNDS, THREADS * ROUNDS / 2,
		 THREADS * ROUNDS, strstr(text, "h_sum ") + 6, THREADS * ROUNDS);
	/* The sum of doubles depends on the order of additions; check it
	 * apart, and the rest exactly. */
	*strstr(expected, "h_sum ") = '\0';
	cr_assert_eq(strncmp(text, expected, strlen(expected)), 0, "%s", text);
	cr_assert_float_eq(strtod(strstr(text, "h_sum ") + 6, NULL),
			   THREADS * ROUNDS / 2 * (0.5 + 0.0005), 1e-3);
	free(text);
	fl_metrics_destroy(metrics);
}

/*
 * fl_metrics_destroy(NULL) is a no-op: run it in a child process (under the sanitizers in
 * the ASan build) and assert that the child survives it and goes on.
 */
Test(metrics, destroy_accepts_null)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fl_metrics_destroy(NULL);
		_exit(42); /* reached only when the call returned */
	}
	int status = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
	cr_assert_eq(WEXITSTATUS(status), 42, "the child exited %d", WEXITSTATUS(status));
}
