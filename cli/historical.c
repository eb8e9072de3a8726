/*
 * `fledger historical`: a training set from the query service's
 * point-in-time joins (CONTRACT §6, POST /v1/features:historical).
 *
 * The rows file (CSV with a header `entity_id,ts`, or NDJSON with one
 * {"entity_id", "ts"} a line) becomes the route's NDJSON body in an
 * unlinked temporary file, which is uploaded from disk; the answer is
 * written to --out as it arrives (through FILE.part, renamed when the whole
 * answer is in). Neither side of a million-row export sits in memory.
 *
 * Line numbers line up with the rows file: the request's head is line 1, so
 * CSV line N (the header is line 1) is request line N, and NDJSON line N is
 * request line N + 1. A 400 naming a request line is reported with the line
 * of the rows file too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fledger/httpc.h"
#include "fledger/util.h"

#define ROUTE "/v1/features:historical"
#define ERROR_BODY_MAX (64 * 1024) /* of a non-200 answer, kept to print it */
#define PROGRESS_EVERY_US 1000000

static const struct fl_config_option historical_options[] = {
    {"view", NULL, NULL, "the view to read", false},
    {"features", NULL, NULL, "features to read, comma-separated (default: all you may read)",
     false},
    {"windows", NULL, NULL, "windows to read, comma-separated (default: all you may read)", false},
    {"rows", NULL, NULL,
     "the rows: a CSV file with the header entity_id,ts, or NDJSON {\"entity_id\",\"ts\"} "
     "lines (- for stdin)",
     false},
    {"as-known", NULL, NULL,
     "each row sees only events already ingested at its ts (point_in_time as_known)", true},
    {"format", NULL, "ndjson", "answer format: ndjson or csv", false},
    {"out", NULL, NULL, "file to write the training set to", false},
};

/* What the answer's callbacks keep. */
struct download {
	FILE *out;
	bool ok; /* status 200: the body goes to out; else to error_body */
	unsigned status;
	char *error_body;
	size_t error_len;
	uint64_t lines, rows_total, bytes;
	bool csv;
	int64_t started_us, last_progress_us;
	uint64_t upload_total;
};

static void progress(struct download *d, bool force)
{
	int64_t now = fl_time_mono_us();
	if (!force && now - d->last_progress_us < PROGRESS_EVERY_US)
		return;
	d->last_progress_us = now;
	uint64_t rows = d->csv && d->lines ? d->lines - 1 : d->lines;
	double seconds = (double)(now - d->started_us) / 1e6;
	fl__cli_progress("%" PRIu64 " of %" PRIu64 " rows received, %.0f rows/s", rows,
			 d->rows_total, seconds > 0 ? (double)rows / seconds : 0.0);
}

static void on_sent(void *ctx, uint64_t sent)
{
	struct download *d = ctx;
	int64_t now = fl_time_mono_us();
	if (now - d->last_progress_us < PROGRESS_EVERY_US)
		return;
	d->last_progress_us = now;
	fl__cli_progress("uploading the rows: %" PRIu64 " of %" PRIu64 " bytes", sent,
			 d->upload_total);
}

static int on_head(void *ctx, unsigned status, const char *head)
{
	struct download *d = ctx;
	char rows[32];
	d->status = status;
	d->ok = status == 200;
	if (d->ok && fl_httpc_head_value(head, "X-Rows", rows, sizeof(rows)))
		d->rows_total = strtoull(rows, NULL, 10);
	d->started_us = fl_time_mono_us();
	return 0;
}

static int on_body(void *ctx, const char *data, size_t len)
{
	struct download *d = ctx;
	if (!d->ok) {
		size_t keep =
		    ERROR_BODY_MAX - d->error_len < len ? ERROR_BODY_MAX - d->error_len : len;
		memcpy(d->error_body + d->error_len, data, keep);
		d->error_len += keep;
		return 0;
	}
	if (fwrite(data, 1, len, d->out) != len)
		return 1;
	d->bytes += len;
	for (const char *p = data; (p = memchr(p, '\n', (size_t)(data + len - p))); p++)
		d->lines++;
	progress(d, false);
	return 0;
}

/* Appends the names of a comma-separated list to array; false on an empty name. */
static bool add_names(json_t *array, const char *list)
{
	const char *p = list;
	for (;;) {
		size_t n = strcspn(p, ",");
		if (n == 0)
			return false;
		json_array_append_new(array, json_stringn(p, n));
		if (!p[n])
			return true;
		p += n + 1;
	}
}

/*
 * Splits a CSV line (no line breaks inside fields) into at most cap fields
 * in place: quotes removed, "" unquoted to ". The number of fields, or -1
 * when the quoting is malformed or there are more than cap fields.
 */
static int split_csv(char *line, char **fields, int cap)
{
	int n = 0;
	char *in = line;
	for (;;) {
		char *out = in, *start = in;
		if (n == cap)
			return -1;
		if (*in == '"') {
			in++;
			for (;;) {
				if (!*in)
					return -1;
				if (*in == '"' && in[1] == '"') {
					*out++ = '"';
					in += 2;
				} else if (*in == '"') {
					in++;
					break;
				} else {
					*out++ = *in++;
				}
			}
			if (*in && *in != ',')
				return -1;
		} else {
			while (*in && *in != ',') {
				if (*in == '"')
					return -1;
				*out++ = *in++;
			}
		}
		char end = *in;
		*out = '\0';
		fields[n++] = start;
		if (!end)
			return n;
		in++;
	}
}

/* Writes {"entity_id": …, "ts": …} and a newline; false on a write error. */
static bool write_row(FILE *body, const char *entity_id, const char *ts)
{
	json_t *row = json_pack("{s:s, s:s}", "entity_id", entity_id, "ts", ts);
	int rc = row ? json_dumpf(row, body, JSON_COMPACT) : -1;
	json_decref(row);
	return rc == 0 && fputc('\n', body) != EOF;
}

/*
 * Writes the request body (the head line, then one line per line of the
 * rows file) into body; *ret_csv says which kind the rows file was,
 * *ret_rows counts its rows. False after printing why.
 */
static bool build_body(FILE *rows_file, const char *rows_name, const char *head, FILE *body,
		       bool *ret_csv, uint64_t *ret_rows)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	uint64_t line_no = 0, rows = 0;
	int entity_col = -1, ts_col = -1, n_cols = 0;
	bool csv = false, ok = false;

	if (fputs(head, body) == EOF || fputc('\n', body) == EOF)
		goto write_failed;
	while ((len = getline(&line, &cap, rows_file)) >= 0) {
		line_no++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (line_no == 1) {
			/* NDJSON starts with '{'; anything else is the CSV header */
			csv = len == 0 || line[strspn(line, " \t")] != '{';
			if (csv) {
				char *fields[64];
				n_cols = split_csv(line, fields, 64);
				for (int i = 0; i < n_cols; i++) {
					if (strcmp(fields[i], "entity_id") == 0)
						entity_col = i;
					else if (strcmp(fields[i], "ts") == 0)
						ts_col = i;
				}
				if (entity_col < 0 || ts_col < 0) {
					fl__cli_error(
					    "%s line 1: a CSV rows file starts with the "
					    "header entity_id,ts (NDJSON rows start with {)",
					    rows_name);
					goto done;
				}
				continue; /* the header is request line 1: the head */
			}
		}
		if (len == 0 || strspn(line, " \t") == (size_t)len) {
			if (fputc('\n', body) == EOF) /* blank: keeps the numbering */
				goto write_failed;
			continue;
		}
		rows++;
		if (!csv) {
			if (fwrite(line, 1, (size_t)len, body) != (size_t)len ||
			    fputc('\n', body) == EOF)
				goto write_failed;
			continue;
		}
		char *fields[64];
		int n = split_csv(line, fields, 64);
		if (n != n_cols) {
			fl__cli_error("%s line %" PRIu64 ": %s (the header has %d)", rows_name,
				      line_no,
				      n < 0 ? "malformed quoting, or more than 64 fields"
					    : "not as many fields as the header",
				      n_cols);
			goto done;
		}
		if (!write_row(body, fields[entity_col], fields[ts_col]))
			goto write_failed;
	}
	if (ferror(rows_file)) {
		fl__cli_error("cannot read %s: %s", rows_name, strerror(errno));
		goto done;
	}
	if (fflush(body) != 0)
		goto write_failed;
	*ret_csv = csv;
	*ret_rows = rows;
	ok = true;
	goto done;
write_failed:
	fl__cli_error("cannot write the request to a temporary file: %s", strerror(errno));
done:
	free(line);
	return ok;
}

/* The head line of the request, as a new string. */
static char *head_line(struct fl_cli *cli, const char *view)
{
	const char *features = fl_config_get(cli->config, "features");
	const char *windows = fl_config_get(cli->config, "windows");
	json_t *head =
	    json_pack("{s:s, s:s}", "view", view, "point_in_time",
		      fl_config_get_bool(cli->config, "as-known") ? "as_known" : "event_time");
	char *text = NULL;
	if (!head)
		return NULL;
	if (features) {
		json_t *list = json_array();
		if (!add_names(list, features)) {
			fl__cli_error("--features: a comma-separated list of names, none empty");
			json_decref(list);
			goto out;
		}
		json_object_set_new(head, "features", list);
	}
	if (windows) {
		json_t *list = json_array();
		if (!add_names(list, windows)) {
			fl__cli_error("--windows: a comma-separated list of names, none empty");
			json_decref(list);
			goto out;
		}
		json_object_set_new(head, "windows", list);
	}
	text = json_dumps(head, JSON_COMPACT);
out:
	json_decref(head);
	return text;
}

/* Prints a non-200 answer, with the rows file's line when it names one. */
static void print_failure(const struct download *d, const char *rows_name, bool csv)
{
	fl__cli_print_http_error("POST " ROUTE, d->status, d->error_body, d->error_len);
	json_t *doc = json_loadb(d->error_body, d->error_len, 0, NULL);
	json_int_t line = json_integer_value(json_object_get(doc, "line"));
	if (line > 1 || (line == 1 && csv))
		fl__cli_error("that is line %" JSON_INTEGER_FORMAT " of %s", csv ? line : line - 1,
			      rows_name);
	else if (line == 1)
		fl__cli_error("line 1 is the request's head (--view, --features, --windows)");
	json_decref(doc);
}

static int run_historical(struct fl_cli *cli)
{
	const char *view = fl_config_get(cli->config, "view");
	const char *rows_name = fl_config_get(cli->config, "rows");
	const char *out_name = fl_config_get(cli->config, "out");
	const char *format = fl_config_get(cli->config, "format");
	struct download d = {0};
	FILE *rows_file = NULL, *body = NULL;
	char *head = NULL, *part_name = NULL;
	int rc = FL_CLI_FAIL;
	bool csv_rows = false;
	uint64_t n_rows = 0;

	if (!view || !rows_name || !out_name) {
		fl__cli_error("fledger historical needs --view, --rows and --out (see --help)");
		return FL_CLI_USAGE;
	}
	if (strcmp(format, "ndjson") != 0 && strcmp(format, "csv") != 0) {
		fl__cli_error("--format is ndjson or csv");
		return FL_CLI_USAGE;
	}
	d.csv = strcmp(format, "csv") == 0;
	const char *token = fl__cli_token(cli, true);
	if (!token)
		return FL_CLI_FAIL;
	if (!(head = head_line(cli, view)))
		return FL_CLI_USAGE;

	rows_file = strcmp(rows_name, "-") == 0 ? stdin : fopen(rows_name, "r");
	if (!rows_file) {
		fl__cli_error("cannot open %s: %s", rows_name, strerror(errno));
		goto free_head;
	}
	if (!(body = tmpfile())) {
		fl__cli_error("cannot create a temporary file: %s", strerror(errno));
		goto close_rows;
	}
	if (!build_body(rows_file, rows_name, head, body, &csv_rows, &n_rows))
		goto close_body;
	long body_len = ftell(body);
	if (body_len < 0 || fseek(body, 0, SEEK_SET) != 0) {
		fl__cli_error("cannot rewind the temporary file: %s", strerror(errno));
		goto close_body;
	}

	size_t part_len = strlen(out_name) + 6;
	if (!(part_name = malloc(part_len)) || !(d.error_body = malloc(ERROR_BODY_MAX))) {
		fl__cli_error("out of memory");
		goto close_body;
	}
	snprintf(part_name, part_len, "%s.part", out_name);
	if (!(d.out = fopen(part_name, "w"))) {
		fl__cli_error("cannot create %s: %s", part_name, strerror(errno));
		goto close_body;
	}
	d.upload_total = (uint64_t)body_len;
	d.last_progress_us = d.started_us = fl_time_mono_us();
	int64_t began_us = d.started_us;
	struct fl_httpc_stream stream = {.body_file = body,
					 .body_len = (uint64_t)body_len,
					 .accept = d.csv ? "text/csv" : "application/x-ndjson",
					 .on_sent = on_sent,
					 .on_head = on_head,
					 .on_body = on_body,
					 .ctx = &d};
	unsigned status;
	enum fl_status st =
	    fl_httpc_request_stream(cli->http, "POST", cli->query_url, ROUTE, token,
				    "application/x-ndjson", &stream, cli->timeout_ms, &status);
	bool closed = fclose(d.out) == 0;
	if (st == FL_ERR_IO && d.ok) {
		fl__cli_error("cannot write %s: %s", part_name, strerror(errno));
	} else if (st == FL_ERR_IO) {
		fl__cli_error("cannot read the temporary request file");
	} else if (st == FL_ERR_TIMEOUT) {
		fl__cli_error("POST %s%s: the service was silent for %d ms (--timeout-ms; it "
			      "computes every row before the first answer byte, so a large export "
			      "may need more)",
			      cli->query_url, ROUTE, cli->timeout_ms);
	} else if (st == FL_ERR_INVALID) {
		fl__cli_error("POST %s%s: not a usable request (the URL must be "
			      "http[s]://HOST:PORT)",
			      cli->query_url, ROUTE);
	} else if (st == FL_ERR_UNAVAILABLE) {
		fl__cli_error("POST %s%s: cannot reach the service, or the answer broke off",
			      cli->query_url, ROUTE);
	} else if (st != FL_OK) {
		fl__cli_error("POST %s%s: %s", cli->query_url, ROUTE, fl_status_str(st));
	} else if (status != 200) {
		print_failure(&d, rows_name, csv_rows);
	} else if (!closed) {
		fl__cli_error("cannot write %s: %s", part_name, strerror(errno));
	} else if (rename(part_name, out_name) != 0) {
		fl__cli_error("cannot rename %s to %s: %s", part_name, out_name, strerror(errno));
	} else {
		double seconds = (double)(fl_time_mono_us() - began_us) / 1e6;
		uint64_t rows = d.csv && d.lines ? d.lines - 1 : d.lines;
		fl__cli_progress("%" PRIu64 " rows (%" PRIu64 " bytes) written to %s in %.1f s, "
				 "%.0f rows/s",
				 rows, d.bytes, out_name, seconds,
				 seconds > 0 ? (double)rows / seconds : 0.0);
		rc = FL_CLI_OK;
	}
	if (rc != FL_CLI_OK)
		unlink(part_name);
close_body:
	fclose(body);
close_rows:
	if (rows_file != stdin)
		fclose(rows_file);
free_head:
	free(head);
	free(part_name);
	free(d.error_body);
	(void)n_rows;
	return rc;
}

const struct fl_cli_command fl__cli_historical_command = {
    .group = "historical",
    .sub = NULL,
    .args_usage = "",
    .summary = "export a training set: features of each row's entity as of its time",
    .description =
	"Sends the rows (entity_id, ts) to the query service's point-in-time join\n"
	"(POST /v1/features:historical) and writes its answer to --out, byte for byte:\n"
	"one line per row, in the rows' order, with the values an online read at as_of = ts\n"
	"would give. --as-known limits each row to events already ingested at its ts.\n"
	"Both the rows and the answer stream through files, never memory. A row the\n"
	"service refuses is reported with its line in the rows file (exit 1), and --out is\n"
	"left untouched. --timeout-ms bounds each wait for the service, which computes\n"
	"every row before it sends the first: raise it for very large exports.\n",
    .options = historical_options,
    .n_options = sizeof(historical_options) / sizeof(historical_options[0]),
    .min_args = 0,
    .max_args = 0,
    .run = run_historical,
};
