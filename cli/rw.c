/*
 * `fledger write` (POST /v1/events on command-svc) and `fledger read`
 * (GET /v1/features/... on query-svc).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fledger/text.h"
#include "fledger/util.h"

#define BATCH_MAX 1000

/* ---- the last seq written, per command-svc URL ------------------------------ */

/*
 * `fledger write` remembers the greatest seq it was answered, per
 * command-svc URL, in $XDG_STATE_HOME/fledger/last-seq (default
 * ~/.local/state/fledger/last-seq): one "URL SEQ" line per URL.
 * `fledger read --after-write` reads it back as --min-seq.
 */
static char *state_path(void)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	char *path = NULL;
	if (xdg && xdg[0] == '/') {
		if (asprintf(&path, "%s/fledger/last-seq", xdg) < 0)
			path = NULL;
	} else if (home && home[0]) {
		if (asprintf(&path, "%s/.local/state/fledger/last-seq", home) < 0)
			path = NULL;
	}
	return path;
}

/* The seq recorded for url, or 0 when there is none. */
static uint64_t last_seq_of(const char *path, const char *url)
{
	FILE *in = fopen(path, "r");
	char line[4096];
	uint64_t seq = 0;
	size_t url_len = strlen(url);
	if (!in)
		return 0;
	while (seq == 0 && fgets(line, sizeof(line), in)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, url, url_len) != 0 || line[url_len] != ' ')
			continue; /* another URL's line */
		if (!fl__cli_parse_u64(line + url_len + 1, 1, UINT64_MAX, &seq))
			seq = 0; /* a damaged line counts as none */
	}
	fclose(in);
	return seq;
}

/* Records seq for url (the other URLs' lines are kept); false after printing why. */
static bool save_last_seq(const char *path, const char *url, uint64_t seq)
{
	char *dir = strdup(path), *tmp = NULL;
	char line[4096];
	bool ok = false;
	FILE *in = NULL, *out = NULL;
	size_t url_len = strlen(url);

	if (!dir || asprintf(&tmp, "%s.%ld", path, (long)getpid()) < 0) {
		tmp = NULL;
		goto out;
	}
	*strrchr(dir, '/') = '\0';
	char why[256];
	bool made = fl_make_dirs(dir, 0700, why, sizeof(why)) == FL_OK;
	if (!made || !(out = fopen(tmp, "w"))) {
		fl__cli_error("cannot record the last seq in %s: %s", path,
			      made ? strerror(errno) : why);
		goto out;
	}
	fprintf(out, "%s %" PRIu64 "\n", url, seq);
	if ((in = fopen(path, "r"))) {
		while (fgets(line, sizeof(line), in))
			if (!(strncmp(line, url, url_len) == 0 && line[url_len] == ' '))
				fputs(line, out);
		fclose(in);
	}
	ok = fclose(out) == 0;
	out = NULL;
	if (ok && rename(tmp, path) != 0)
		ok = false;
	if (!ok) {
		fl__cli_error("cannot record the last seq in %s: %s", path, strerror(errno));
		unlink(tmp);
	}
out:
	if (out) {
		fclose(out);
		unlink(tmp);
	}
	free(tmp);
	free(dir);
	return ok;
}

/* ---- write --------------------------------------------------------------------- */

static const struct fl_config_option write_options[] = {
    {"file", NULL, "-",
     "a JSON event, {\"events\": [...]}, a JSON array of events, or NDJSON "
     "(one event a line); - for stdin",
     false},
    {"receipt", NULL, NULL,
     "keep the receipts in this file: each answer, with the signed checkpoint of its commit "
     "and an inclusion proof per event, one a line (check them with fledger receipt verify)",
     false},
};

struct writer {
	struct fl_cli *cli;
	uint64_t events_written, batches;
	uint64_t last_seq; /* the greatest seq answered */
	uint64_t last_progress;
	FILE *receipts; /* --receipt: the answers, one a line */
};

/* POSTs one body; prints the answer. false (after printing why) when it failed. */
static bool post_events(struct writer *w, const char *body, size_t len, size_t events)
{
	unsigned status;
	char *answer;
	size_t answer_len;
	char what[128];

	if (fl__cli_http(w->cli, "POST", w->cli->command_url,
			 w->receipts ? "/v1/events?receipt=1" : "/v1/events", true,
			 "application/json", body, len, &status, &answer, &answer_len) != FL_OK)
		goto failed;
	if (status != 200 && status != 201) {
		snprintf(what, sizeof(what), "batch %" PRIu64 " (%zu events)", w->batches + 1,
			 events);
		fl__cli_print_http_error(what, status, answer, answer_len);
		free(answer);
		goto failed;
	}
	fwrite(answer, 1, answer_len, stdout);
	if (!answer_len || answer[answer_len - 1] != '\n')
		putchar('\n');
	if (w->receipts) {
		/* One receipt a line: the answer is one line of compact JSON. */
		size_t kept = answer_len;
		while (kept && answer[kept - 1] == '\n')
			kept--;
		fwrite(answer, 1, kept, w->receipts);
		fputc('\n', w->receipts);
		if (fflush(w->receipts) != 0) {
			fl__cli_error("cannot write the receipt file");
			free(answer);
			goto failed;
		}
	}
	json_t *doc = json_loadb(answer, answer_len, 0, NULL);
	size_t i;
	json_t *result;
	json_array_foreach(json_object_get(doc, "results"), i, result)
	{
		json_int_t seq = json_integer_value(json_object_get(result, "seq"));
		if (seq > 0 && (uint64_t)seq > w->last_seq)
			w->last_seq = (uint64_t)seq;
	}
	json_decref(doc);
	free(answer);
	w->batches++;
	w->events_written += events;
	if (w->events_written - w->last_progress >= 100000) {
		w->last_progress = w->events_written;
		fl__cli_progress("%" PRIu64 " events written", w->events_written);
	}
	return true;
failed:
	if (w->batches)
		fl__cli_error("%" PRIu64 " earlier batches (%" PRIu64 " events) were written; this "
			      "one and the rest were not",
			      w->batches, w->events_written);
	return false;
}

/* Posts a JSON array of events in batches of at most BATCH_MAX. */
static bool post_array(struct writer *w, const json_t *events)
{
	size_t total = json_array_size(events);
	if (total == 0) {
		fl__cli_error("no events to write");
		return false;
	}
	for (size_t from = 0; from < total; from += BATCH_MAX) {
		size_t n = total - from < BATCH_MAX ? total - from : BATCH_MAX;
		json_t *batch = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append(batch, json_array_get(events, from + i));
		json_t *doc = json_pack("{s:o}", "events", batch);
		char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(doc);
		bool ok = text && post_events(w, text, strlen(text), n);
		if (!text)
			fl__cli_error("out of memory");
		free(text);
		if (!ok)
			return false;
	}
	return true;
}

/* The next line of text at *p (without its newline and trailing CR/spaces). */
static bool next_line(const char **p, const char *end, const char **ret_line, size_t *ret_len)
{
	if (*p >= end)
		return false;
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	const char *line_end = nl ? nl : end;
	*ret_line = *p;
	*ret_len = (size_t)(line_end - *p);
	while (*ret_len && ((*p)[*ret_len - 1] == '\r' || (*p)[*ret_len - 1] == ' '))
		(*ret_len)--;
	*p = nl ? nl + 1 : end;
	return true;
}

/*
 * NDJSON: each non-empty line one event object, posted verbatim in
 * batches of BATCH_MAX as {"events":[line,line,...]}. Every line is checked
 * before anything is posted.
 */
static bool post_ndjson(struct writer *w, const char *text, size_t len)
{
	const char *p = text, *end = text + len, *line;
	size_t line_len, line_no = 0, events = 0, longest = 0;

	while (next_line(&p, end, &line, &line_len)) {
		json_error_t error;
		line_no++;
		if (!line_len)
			continue;
		json_t *event = json_loadb(line, line_len, 0, &error);
		bool ok = json_is_object(event);
		json_decref(event);
		if (!ok) {
			fl__cli_error("line %zu: not a JSON object%s%s (nothing was written)",
				      line_no, event ? "" : ": ", event ? "" : error.text);
			return false;
		}
		events++;
		longest = line_len > longest ? line_len : longest;
	}
	if (events == 0) {
		fl__cli_error("no events to write");
		return false;
	}
	size_t cap = 16 + BATCH_MAX * (longest + 1), out_len = 0, in_batch = 0;
	char *out = malloc(cap);
	if (!out) {
		fl__cli_error("out of memory");
		return false;
	}
	bool ok = true;
	for (p = text; ok && next_line(&p, end, &line, &line_len);) {
		if (line_len) {
			if (in_batch == 0)
				out_len = (size_t)sprintf(out, "{\"events\":[");
			else
				out[out_len++] = ',';
			memcpy(out + out_len, line, line_len);
			out_len += line_len;
			in_batch++;
		}
		if (in_batch && (in_batch == BATCH_MAX || p >= end)) {
			memcpy(out + out_len, "]}", 3);
			ok = post_events(w, out, out_len + 2, in_batch);
			in_batch = 0;
		}
	}
	free(out);
	return ok;
}

static int write_events(struct fl_cli *cli)
{
	const char *file = fl_config_get(cli->config, "file");
	struct writer w = {.cli = cli};
	char *text;
	size_t len;

	enum fl_status st = fl__cli_read_input(file, &text, &len);
	if (st != FL_OK) {
		fl__cli_error("cannot read %s: %s", strcmp(file, "-") ? file : "stdin",
			      fl_status_str(st));
		return FL_CLI_FAIL;
	}
	if (!fl__cli_token(cli, true)) {
		free(text);
		return FL_CLI_FAIL;
	}
	const char *receipt_path = fl_config_get(cli->config, "receipt");
	if (receipt_path && !(w.receipts = fopen(receipt_path, "a"))) {
		fl__cli_error("cannot open the receipt file %s", receipt_path);
		free(text);
		return FL_CLI_FAIL;
	}
	bool ok;
	json_t *doc = json_loadb(text, len, 0, NULL);
	const json_t *events = json_object_get(doc, "events");
	if (json_is_array(doc))
		ok = post_array(&w, doc);
	else if (json_is_array(events) && json_array_size(events) > BATCH_MAX)
		ok = post_array(&w, events);
	else if (json_is_object(doc))
		ok =
		    post_events(&w, text, len, json_is_array(events) ? json_array_size(events) : 1);
	else
		ok = post_ndjson(&w, text, len); /* several JSON values: one event a line */
	json_decref(doc);
	free(text);
	if (w.receipts && fclose(w.receipts) != 0) {
		fl__cli_error("cannot write the receipt file %s", receipt_path);
		ok = false;
	}
	if (w.last_seq) {
		char *path = state_path();
		if (path)
			save_last_seq(path, cli->command_url, w.last_seq);
		free(path);
		fl__cli_progress("read it back with --min-seq %" PRIu64
				 " (or fledger read VIEW ENTITY --after-write)",
				 w.last_seq);
	}
	if (ok && w.batches > 1)
		fl__cli_progress("%" PRIu64 " events written in %" PRIu64 " batches",
				 w.events_written, w.batches);
	return ok ? FL_CLI_OK : FL_CLI_FAIL;
}

const struct fl_cli_command fl__cli_write_command = {
    .group = "write",
    .args_usage = "",
    .summary = "write events (POST /v1/events)",
    .description =
	"Posts events to command-svc (role producer): one JSON event, {\"events\": [...]},\n"
	"a JSON array, or NDJSON with one event a line, in atomic batches of at most\n"
	"1000. Prints each batch's answer ({\"results\": [...], \"tree_size\": N,\n"
	"\"checkpoint\": {...}}: the signed checkpoint of the commit), and on\n"
	"stderr the --min-seq that reads it back. That seq is also recorded, per\n"
	"--command-url, in $XDG_STATE_HOME/fledger/last-seq (default\n"
	"~/.local/state/fledger/last-seq) for `fledger read --after-write`.\n"
	"With --receipt FILE, each answer also carries an inclusion proof per event, and\n"
	"is appended to FILE, one a line: `fledger receipt verify FILE --key pub.pem`\n"
	"checks them offline.\n",
    .options = write_options,
    .n_options = sizeof(write_options) / sizeof(write_options[0]),
    .run = write_events,
};

/* ---- read ---------------------------------------------------------------------- */

static const struct fl_config_option read_options[] = {
    {"features", NULL, NULL, "features to read, comma-separated (default: all you may read)",
     false},
    {"windows", NULL, NULL, "windows to compute, comma-separated (default: all)", false},
    {"as-of", NULL, NULL, "RFC 3339 time of the read (default: now)", false},
    {"min-seq", NULL, NULL, "wait until query-svc has applied this seq (read your writes)", false},
    {"after-write", NULL, NULL,
     "--min-seq of the last `fledger write` to --command-url (from its state file)", true},
    {"wait-ms", NULL, NULL, "how long to wait for --min-seq (server default 1000)", false},
    {"proof", NULL, NULL, "add inclusion proofs and the signed checkpoint", true},
};

/* Appends &name=<encoded value> (or ?name=) to the path being built. */
static void add_query(struct fl_text *path, const char *name, const char *value)
{
	char *encoded = fl__cli_url_encode(value);
	if (!encoded) {
		path->failed = true;
		return;
	}
	fl_text_printf(path, "%c%s=%s", path->data && strchr(path->data, '?') ? '&' : '?', name,
		       encoded);
	free(encoded);
}

static int read_features(struct fl_cli *cli)
{
	static const char *const params[][2] = {{"features", "features"},
						{"windows", "windows"},
						{"as-of", "as_of"},
						{"min-seq", "min_seq"},
						{"wait-ms", "wait_ms"}};
	char *view = fl__cli_url_encode(cli->args[0]), *entity = fl__cli_url_encode(cli->args[1]);
	struct fl_text path = FL_TEXT_INIT;
	char *answer;
	size_t answer_len;
	unsigned status;
	uint64_t number;
	bool ok = view && entity;
	int rc = FL_CLI_FAIL;

	if (ok)
		fl_text_printf(&path, "/v1/features/%s/%s", view, entity);
	for (size_t i = 0; ok && i < sizeof(params) / sizeof(params[0]); i++) {
		const char *value = fl_config_get(cli->config, params[i][0]);
		if (!value)
			continue;
		if ((i == 3 || i == 4) && !fl__cli_parse_u64(value, 0, UINT64_MAX, &number)) {
			fl__cli_error("--%s must be a number", params[i][0]);
			rc = FL_CLI_USAGE;
			goto out;
		}
		if (i == 2 && fl_time_parse(value, (int64_t[]){0}) != FL_OK) {
			fl__cli_error("--as-of must be an RFC 3339 time with a zone "
				      "(2026-11-26T21:00:00Z)");
			rc = FL_CLI_USAGE;
			goto out;
		}
		add_query(&path, params[i][1], value);
	}
	if (ok && fl_config_get_bool(cli->config, "after-write")) {
		if (fl_config_get(cli->config, "min-seq")) {
			fl__cli_error("--after-write and --min-seq: give one of them");
			rc = FL_CLI_USAGE;
			goto out;
		}
		char *state = state_path(), seq_text[24];
		uint64_t seq = state ? last_seq_of(state, cli->command_url) : 0;
		if (!seq) {
			fl__cli_error("--after-write: no write to %s recorded in %s (fledger write "
				      "records it; --command-url must be the one written to)",
				      cli->command_url,
				      state ? state : "$XDG_STATE_HOME/fledger/last-seq");
			free(state);
			goto out;
		}
		free(state);
		snprintf(seq_text, sizeof(seq_text), "%" PRIu64, seq);
		add_query(&path, "min_seq", seq_text);
	}
	if (ok && fl_config_get_bool(cli->config, "proof"))
		add_query(&path, "proof", "1");
	if (!ok || path.failed) {
		fl__cli_error("out of memory");
		goto out;
	}
	if (fl__cli_http(cli, "GET", cli->query_url, path.data, fl__cli_token(cli, false) != NULL,
			 NULL, NULL, 0, &status, &answer, &answer_len) != FL_OK)
		goto out;
	if (status == 200) {
		fwrite(answer, 1, answer_len, stdout);
		if (!answer_len || answer[answer_len - 1] != '\n')
			putchar('\n');
		rc = FL_CLI_OK;
	} else {
		char what[64];
		snprintf(what, sizeof(what), "read %s/%s", cli->args[0], cli->args[1]);
		fl__cli_print_http_error(what, status, answer, answer_len);
	}
	free(answer);
out:
	fl_text_free(&path);
	free(view);
	free(entity);
	return rc;
}

const struct fl_cli_command fl__cli_read_command = {
    .group = "read",
    .args_usage = "VIEW ENTITY",
    .summary = "read an entity's features (GET /v1/features/...)",
    .description = "Reads from query-svc (role reader, per the view's ACL) and prints the JSON\n"
		   "answer as received. Every read is recorded in the signed read audit.\n",
    .options = read_options,
    .n_options = sizeof(read_options) / sizeof(read_options[0]),
    .min_args = 2,
    .max_args = 2,
    .run = read_features,
};
