/*
 * `fledger demo`: a producer writing a realistic stream of user_activity
 * events (schemas/views/user_activity.json) at a steady rate, in batches,
 * with a share of late events, until Ctrl-C or --duration.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fledger/util.h"

#define TICK_US 100000 /* a batch every 100 ms */
#define BATCH_MAX 1000

static const struct fl_config_option demo_options[] = {
    {"users", NULL, "5000", "number of distinct user ids", false},
    {"rate", NULL, "200", "events per second", false},
    {"duration", NULL, NULL, "stop after this many seconds (default: until Ctrl-C)", false},
    {"view", NULL, "user_activity", "the view to write to (needs user_activity's features)", false},
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int signo)
{
	(void)signo;
	stop_requested = 1;
}

/* xorshift64*: a fast, seedable generator; good enough for demo data. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545F4914F6CDD1DULL;
}

static double uniform(uint64_t *state)
{
	return (double)(next_random(state) >> 11) / 9007199254740992.0;
}

/* Appends one event of user_activity to the JSON array text in out. */
static void add_event(FILE *out, uint64_t *rng, const char *view, uint64_t users, bool first,
		      bool late)
{
	char ts[FL_TIME_TEXT_LEN];
	int64_t now = fl_time_now_us();
	/* a late event is 1 to 30 minutes old; the others a few ms */
	int64_t age =
	    late ? (int64_t)(60e6 + uniform(rng) * 29 * 60e6) : (int64_t)(uniform(rng) * 5000);
	/* Skewed like real traffic: a fifth of the events go to the first 100 users. */
	uint64_t user =
	    1 + (next_random(rng) % 5 == 0 ? next_random(rng) % (users < 100 ? users : 100)
					   : next_random(rng) % users);
	fl_time_format(now - age, ts);
	fprintf(out,
		"%s{\"view\":\"%s\",\"entity_id\":\"u%" PRIu64 "\",\"event_ts\":\"%s\","
		"\"features\":{\"dwell_ms\":%.1f,\"last_click\":\"p%" PRIu64 "\","
		"\"is_mobile\":%s",
		first ? "" : ",", view, user, ts, 50.0 + uniform(rng) * 5000.0,
		next_random(rng) % 500, user % 3 == 0 ? "true" : "false");
	if (next_random(rng) % 4 == 0)
		fprintf(out, ",\"cart_items\":%" PRIu64, next_random(rng) % 12);
	if (next_random(rng) % 10 == 0) {
		fputs(",\"embedding\":[", out);
		for (int i = 0; i < 8; i++)
			fprintf(out, "%s%.4f", i ? "," : "", uniform(rng) * 2.0 - 1.0);
		fputc(']', out);
	}
	fputs("}}", out);
}

static int demo(struct fl_cli *cli)
{
	uint64_t users, rate, duration = 0;
	const char *view = fl_config_get(cli->config, "view");
	const char *duration_text = fl_config_get(cli->config, "duration");

	if (!fl__cli_parse_u64(fl_config_get(cli->config, "users"), 1, 100000000, &users) ||
	    !fl__cli_parse_u64(fl_config_get(cli->config, "rate"), 1, 1000000, &rate) ||
	    (duration_text && !fl__cli_parse_u64(duration_text, 1, 365 * 86400, &duration))) {
		fl__cli_error("--users, --rate and --duration are positive integers");
		return FL_CLI_USAGE;
	}
	if (!fl__cli_token(cli, true))
		return FL_CLI_FAIL;

	struct sigaction action = {.sa_handler = on_signal};
	sigaction(SIGINT, &action, NULL);
	sigaction(SIGTERM, &action, NULL);

	uint64_t rng = (uint64_t)fl_time_now_us() | 1, written = 0, late_written = 0, last_seq = 0,
		 failures = 0;
	int64_t start = fl_time_mono_us(), next_tick = start, next_report = start + 5000000;
	int64_t end = duration ? start + (int64_t)duration * 1000000 : INT64_MAX;
	double owed = 0; /* events due but not yet sent (fractional) */

	fl__cli_progress("writing to %s at %" PRIu64 " events/s for %" PRIu64
			 " users%s; Ctrl-C stops",
			 view, rate, users, duration ? "" : " until stopped");
	while (!stop_requested && fl_time_mono_us() < end) {
		int64_t now = fl_time_mono_us();
		if (now < next_tick) {
			int64_t wait = next_tick - now;
			nanosleep(&(struct timespec){wait / 1000000, (wait % 1000000) * 1000},
				  NULL);
			continue;
		}
		next_tick += TICK_US;
		owed += (double)rate * TICK_US / 1e6;
		size_t n = owed >= BATCH_MAX ? BATCH_MAX : (size_t)owed;
		if (n == 0)
			continue;
		owed -= (double)n;
		if (owed > 10.0 * rate)
			owed = 0; /* the service is slower than the rate: do not pile up */

		char *body = NULL;
		size_t len = 0, late = 0;
		FILE *out = open_memstream(&body, &len);
		if (!out) {
			fl__cli_error("out of memory");
			return FL_CLI_FAIL;
		}
		fputs("{\"events\":[", out);
		for (size_t i = 0; i < n; i++) {
			bool is_late = next_random(&rng) % 100 < 5;
			late += is_late;
			add_event(out, &rng, view, users, i == 0, is_late);
		}
		fputs("]}", out);
		fclose(out);

		unsigned status;
		char *answer;
		size_t answer_len;
		enum fl_status st =
		    fl__cli_http(cli, "POST", cli->command_url, "/v1/events", true,
				 "application/json", body, len, &status, &answer, &answer_len);
		free(body);
		if (st == FL_OK && status == 201) {
			json_t *doc = json_loadb(answer, answer_len, 0, NULL);
			json_t *results = json_object_get(doc, "results");
			json_t *last = json_array_get(results, json_array_size(results) - 1);
			last_seq = (uint64_t)json_integer_value(json_object_get(last, "seq"));
			json_decref(doc);
			written += n;
			late_written += late;
		} else if (st == FL_OK) {
			fl__cli_print_http_error("POST /v1/events", status, answer, answer_len);
			failures++;
		} else {
			failures++;
		}
		if (st == FL_OK)
			free(answer);
		if (failures >= 20 && written == 0) {
			fl__cli_error("giving up: every batch failed");
			return FL_CLI_FAIL;
		}
		if (fl_time_mono_us() >= next_report) {
			next_report += 5000000;
			fl__cli_progress("%" PRIu64 " events written (%" PRIu64
					 " late), last seq %" PRIu64 ", %" PRIu64 " failed batches",
					 written, late_written, last_seq, failures);
		}
	}
	double seconds = (double)(fl_time_mono_us() - start) / 1e6;
	printf("%" PRIu64 " events written (%" PRIu64 " late) in %.1f s, %.0f events/s; last seq "
	       "%" PRIu64 "\n",
	       written, late_written, seconds, seconds > 0 ? (double)written / seconds : 0.0,
	       last_seq);
	return failures && written == 0 ? FL_CLI_FAIL : FL_CLI_OK;
}

const struct fl_cli_command fl__cli_demo_command = {
    .group = "demo",
    .args_usage = "",
    .summary = "produce a realistic demo stream of user_activity events",
    .description = "Writes events for --users user ids (u1, u2, ..., a fifth of the events on\n"
		   "the first 100) at --rate events/s in a batch every 100 ms: dwell_ms,\n"
		   "last_click and is_mobile on every event, cart_items on a quarter, an\n"
		   "8-float embedding on a tenth; about 5% are late (event_ts 1 to 30 minutes\n"
		   "in the past). Register the view first:\n"
		   "  fledger views apply schemas/views/user_activity.json\n"
		   "Prints progress every 5 s; runs until Ctrl-C or --duration seconds.\n",
    .options = demo_options,
    .n_options = sizeof(demo_options) / sizeof(demo_options[0]),
    .run = demo,
};
