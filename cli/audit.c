/*
 * `fledger audit export` writes the audit bundle of CONTRACT §7 from the two
 * services; `fledger audit verify` checks one offline (bundle.h).
 *
 * Export takes each log's latest checkpoint as the end of the bundle: event
 * lines are fetched up to its tree size; read lines are fetched first and
 * the read log's checkpoint after them, so it covers every one of them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bundle.h"
#include "cli.h"
#include "eventlog/merkle.h"
#include "fledger/util.h"

#define LOG_PAGE 10000
#define READS_PAGE 100000
#define PROGRESS_EVERY 100000

/* ---- export -------------------------------------------------------------------- */

static const struct fl_config_option export_options[] = {
    {"from", NULL, NULL, "start of the range (RFC 3339, inclusive)", false},
    {"to", NULL, NULL, "end of the range (RFC 3339, inclusive; default now)", false},
    {"out", NULL, NULL, "directory to write the bundle into (created if missing)", false},
    {"force", NULL, NULL, "replace a bundle already in --out", true},
    {"require-lines", NULL, NULL,
     "fail (exit 1) when neither log has a line in the range (else only a warning)", true},
};

/* What one log contributes to the bundle. */
struct exported_log {
	enum fl_bundle_log log;
	const char *base_url;
	const char *route_prefix; /* "/v1/log" or "/v1/audit" */
	uint64_t *seqs;		  /* exported seqs, ascending */
	size_t count, cap;
	bool have_latest;
	struct fl_checkpoint first, latest;
	uint8_t consistency[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t consistency_count;
};

struct exporter {
	struct fl_cli *cli;
	const char *dir;
	int64_t from_us, to_us;
	struct exported_log events, reads;
};

static char *path_in(const char *dir, const char *name)
{
	size_t len = strlen(dir) + strlen(name) + 2;
	char *path = malloc(len);
	if (path)
		snprintf(path, len, "%s/%s", dir, name);
	return path;
}

static bool add_seq(struct exported_log *l, uint64_t seq)
{
	if (l->count == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		uint64_t *grown = realloc(l->seqs, cap * sizeof(*grown));
		if (!grown) {
			fl__cli_error("out of memory");
			return false;
		}
		l->seqs = grown;
		l->cap = cap;
	}
	l->seqs[l->count++] = seq;
	return true;
}

/* GETs a text answer that must be 200; false after printing why. */
static bool get_text(struct exporter *e, const char *base_url, const char *path, char **ret_body,
		     size_t *ret_len)
{
	unsigned status;
	if (fl__cli_http(e->cli, "GET", base_url, path, true, NULL, NULL, 0, &status, ret_body,
			 ret_len) != FL_OK)
		return false;
	if (status == 200)
		return true;
	char what[300];
	snprintf(what, sizeof(what), "GET %s%s", base_url, path);
	fl__cli_print_http_error(what, status, *ret_body, *ret_len);
	free(*ret_body);
	return false;
}

/*
 * A checkpoint of the log: query "" (the latest), "?covering_seq=N".
 * FL_ERR_NOT_FOUND (silently) when the log has none yet.
 */
static enum fl_status get_checkpoint(struct exporter *e, struct exported_log *l, const char *query,
				     struct fl_checkpoint *ret_checkpoint)
{
	char path[128], why[200];
	unsigned status;
	snprintf(path, sizeof(path), "%s/checkpoint%s", l->route_prefix, query);
	json_t *doc = fl__cli_get_json(e->cli, l->base_url, path, true, &status);
	if (!doc)
		return status == 404 && !query[0] ? FL_ERR_NOT_FOUND : FL_ERR_UNAVAILABLE;
	bool ok = fl_bundle_checkpoint_from_json(doc, why, sizeof(why), ret_checkpoint);
	json_decref(doc);
	if (!ok) {
		fl__cli_error("GET %s%s: not a checkpoint: %s", l->base_url, path, why);
		return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

/* A proof: "inclusion?seq=N&tree_size=M" or "consistency?first=M&second=N". */
static bool get_proof(struct exporter *e, struct exported_log *l, const char *query,
		      uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count)
{
	char path[160], why[200];
	snprintf(path, sizeof(path), "%s/proof/%s", l->route_prefix, query);
	json_t *doc = fl__cli_get_json(e->cli, l->base_url, path, true, NULL);
	if (!doc)
		return false;
	bool ok = fl_bundle_hashes_from_json(json_object_get(doc, "hashes"), why, sizeof(why),
					     ret_hashes, ret_count);
	if (!ok)
		fl__cli_error("GET %s%s: %s", l->base_url, path, why);
	json_decref(doc);
	return ok;
}

/*
 * The time member (ingest_ts or ts) of a line's body, in µs. false when the
 * line or its body cannot be read, or has no such member.
 */
static bool line_time(const char *line, size_t len, const char *member, uint64_t *ret_seq,
		      int64_t *ret_us)
{
	struct fl_bundle_line parsed;
	if (fl_bundle_line_parse(line, len, NULL, 0, &parsed) != FL_OK)
		return false;
	json_t *body = json_loadb((const char *)parsed.body, parsed.body_len, 0, NULL);
	const char *ts = json_string_value(json_object_get(body, member));
	bool ok = ts && fl_time_parse(ts, ret_us) == FL_OK;
	*ret_seq = parsed.seq;
	json_decref(body);
	fl_bundle_line_finish(&parsed);
	return ok;
}

/*
 * events.ndjson: walks the event log from seq 1 to the latest checkpoint's
 * size and keeps the lines whose ingest_ts is in range, as they came.
 */
static bool export_events(struct exporter *e, FILE *out)
{
	struct exported_log *l = &e->events;
	uint64_t size = l->latest.tree_size;

	for (uint64_t from = 1; from <= size;) {
		char path[96], *body;
		size_t len;
		uint64_t limit = size - from + 1 < LOG_PAGE ? size - from + 1 : LOG_PAGE, got = 0;
		snprintf(path, sizeof(path), "/v1/log?from_seq=%" PRIu64 "&limit=%" PRIu64, from,
			 limit);
		if (!get_text(e, l->base_url, path, &body, &len))
			return false;
		for (char *line = body, *end = body + len; line < end && from + got <= size;) {
			char *nl = memchr(line, '\n', (size_t)(end - line));
			size_t line_len = (size_t)((nl ? nl : end) - line);
			uint64_t seq;
			int64_t ts;
			if (line_len) {
				if (!line_time(line, line_len, "ingest_ts", &seq, &ts) ||
				    seq != from + got) {
					fl__cli_error("GET %s: line %" PRIu64
						      " is not a log line with "
						      "an ingest_ts",
						      path, from + got);
					free(body);
					return false;
				}
				if (ts >= e->from_us && ts <= e->to_us) {
					if (!add_seq(l, seq) ||
					    fwrite(line, 1, line_len, out) != line_len ||
					    fputc('\n', out) == EOF) {
						free(body);
						return false;
					}
				}
				got++;
				if ((from + got - 1) % PROGRESS_EVERY == 0)
					fl__cli_progress("event log: %" PRIu64 " of %" PRIu64
							 " lines scanned, %zu in range",
							 from + got - 1, size, l->count);
			}
			line = nl ? nl + 1 : end;
		}
		free(body);
		if (got == 0) {
			fl__cli_error("the event log ends at seq %" PRIu64
				      ", before its checkpoint's tree size %" PRIu64,
				      from - 1, size);
			return false;
		}
		from += got;
	}
	return true;
}

struct read_line {
	uint64_t seq;
	char *text;
	size_t len;
};

static int by_seq(const void *a, const void *b)
{
	const struct read_line *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * reads.ndjson: the read-log lines whose ts is in range (GET
 * /v1/audit/reads, in pages by time), in seq order.
 */
static bool export_reads(struct exporter *e, FILE *out)
{
	struct exported_log *l = &e->reads;
	struct read_line *lines = NULL;
	size_t count = 0, cap = 0;
	int64_t page_from = e->from_us;
	bool ok = true;

	for (;;) {
		char from_text[FL_TIME_TEXT_LEN], to_text[FL_TIME_TEXT_LEN], path[160], *body;
		size_t len, in_page = 0;
		int64_t last_ts = page_from;
		fl_time_format(page_from, from_text);
		fl_time_format(e->to_us, to_text);
		snprintf(path, sizeof(path), "/v1/audit/reads?from=%s&to=%s&limit=%d", from_text,
			 to_text, READS_PAGE);
		if (!get_text(e, l->base_url, path, &body, &len)) {
			ok = false;
			break;
		}
		for (char *line = body, *end = body + len; ok && line < end;) {
			char *nl = memchr(line, '\n', (size_t)(end - line));
			size_t line_len = (size_t)((nl ? nl : end) - line);
			struct read_line r = {.len = line_len};
			int64_t ts;
			if (line_len) {
				in_page++;
				if (!line_time(line, line_len, "ts", &r.seq, &ts)) {
					fl__cli_error(
					    "GET %s: a line is not a read-log line with a ts",
					    path);
					ok = false;
					break;
				}
				last_ts = ts;
				if (count == cap) {
					cap = cap ? 2 * cap : 1024;
					struct read_line *grown =
					    realloc(lines, cap * sizeof(*grown));
					if (!grown) {
						ok = false;
						break;
					}
					lines = grown;
				}
				if (!(r.text = malloc(line_len))) {
					ok = false;
					break;
				}
				memcpy(r.text, line, line_len);
				lines[count++] = r;
			}
			line = nl ? nl + 1 : end;
		}
		free(body);
		if (!ok || in_page < READS_PAGE)
			break;
		if (last_ts == page_from) {
			fl__cli_error(
			    "more than %d reads share the time %s: cannot page through them",
			    READS_PAGE, from_text);
			ok = false;
			break;
		}
		page_from = last_ts; /* the lines at last_ts come again: duplicates go below */
		fl__cli_progress("read log: %zu lines so far", count);
	}
	if (ok && count)
		qsort(lines, count, sizeof(*lines), by_seq);
	for (size_t i = 0; ok && i < count; i++) {
		if (i > 0 && lines[i].seq == lines[i - 1].seq)
			continue;
		ok = add_seq(l, lines[i].seq) &&
		     fwrite(lines[i].text, 1, lines[i].len, out) == lines[i].len &&
		     fputc('\n', out) != EOF;
	}
	for (size_t i = 0; i < count; i++)
		free(lines[i].text);
	free(lines);
	return ok;
}

/*
 * The checkpoints of a log: the oldest covering its first exported line,
 * then the latest, with the consistency proof between them.
 */
static bool export_checkpoints(struct exporter *e, struct exported_log *l, FILE *out)
{
	char *line;
	char query[96];
	if (!l->have_latest)
		return true; /* an empty log: no checkpoint at all */
	l->first = l->latest;
	if (l->count) {
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, l->seqs[0]);
		if (get_checkpoint(e, l, query, &l->first) != FL_OK)
			return false;
		if (l->first.tree_size > l->latest.tree_size) {
			fl__cli_error("the checkpoint covering seq %" PRIu64 " is newer than the "
				      "latest one",
				      l->seqs[0]);
			return false;
		}
	}
	bool two = l->first.tree_size != l->latest.tree_size;
	if (two) {
		snprintf(query, sizeof(query), "consistency?first=%" PRIu64 "&second=%" PRIu64,
			 l->first.tree_size, l->latest.tree_size);
		if (!get_proof(e, l, query, l->consistency, &l->consistency_count))
			return false;
	}
	bool ok = fl_bundle_checkpoint_line(two ? &l->first : &l->latest, NULL, 0, &line) == FL_OK;
	ok = ok && fprintf(out, "%s\n", line) >= 0;
	free(ok ? line : NULL);
	if (ok && two) {
		ok = fl_bundle_checkpoint_line(&l->latest,
					       (const uint8_t(*)[FL_HASH_LEN])l->consistency,
					       l->consistency_count, &line) == FL_OK;
		ok = ok && fprintf(out, "%s\n", line) >= 0;
		free(ok ? line : NULL);
	}
	return ok;
}

/* inclusion.ndjson: a proof for each exported line against the latest checkpoint. */
static bool export_inclusion(struct exporter *e, struct exported_log *l, FILE *out)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	char query[96], *line;
	for (size_t i = 0; i < l->count; i++) {
		snprintf(query, sizeof(query), "inclusion?seq=%" PRIu64 "&tree_size=%" PRIu64,
			 l->seqs[i], l->latest.tree_size);
		if (!get_proof(e, l, query, hashes, &count))
			return false;
		if (fl_bundle_inclusion_line(l->log, l->seqs[i], l->latest.tree_size,
					     (const uint8_t(*)[FL_HASH_LEN])hashes, count,
					     &line) != FL_OK)
			return false;
		bool ok = fprintf(out, "%s\n", line) >= 0;
		free(line);
		if (!ok)
			return false;
		if ((i + 1) % 10000 == 0)
			fl__cli_progress("%s: %zu of %zu inclusion proofs",
					 fl_bundle_log_name(l->log), i + 1, l->count);
	}
	return true;
}

/* The union of both services' public keys, as keys.json. */
static bool export_keys(struct exporter *e)
{
	struct fl_bundle_keys *keys = NULL;
	char why[200], *text, *path;
	size_t len;
	json_t *command = fl__cli_get_json(e->cli, e->cli->command_url, "/v1/keys", false, NULL);
	json_t *query =
	    command ? fl__cli_get_json(e->cli, e->cli->query_url, "/v1/audit/keys", false, NULL)
		    : NULL;
	bool ok = query && fl_bundle_keys_parse(command, why, sizeof(why), &keys) == FL_OK &&
		  fl_bundle_keys_merge(keys, query, why, sizeof(why)) == FL_OK;
	if (query && !ok)
		fl__cli_error("the services' keys: %s", why);
	json_decref(command);
	json_decref(query);
	if (ok && fl_bundle_keys_json(keys, &text, &len) == FL_OK) {
		path = path_in(e->dir, FL_BUNDLE_KEYS);
		ok = path && fl_bundle_write_file(path, text, len, 0644) == FL_OK;
		free(path);
		free(text);
	}
	fl_bundle_keys_destroy(keys);
	return ok;
}

/* Opens DIR/name.partial for writing; renamed into place by finish_file. */
static FILE *start_file(struct exporter *e, const char *name)
{
	char partial[256];
	snprintf(partial, sizeof(partial), "%s.partial", name);
	char *path = path_in(e->dir, partial);
	FILE *out = path ? fopen(path, "w") : NULL;
	if (!out)
		fl__cli_error("cannot write %s/%s: %s", e->dir, partial, strerror(errno));
	free(path);
	return out;
}

static bool finish_file(struct exporter *e, const char *name, FILE *out, bool ok)
{
	char partial[256];
	snprintf(partial, sizeof(partial), "%s.partial", name);
	char *from = path_in(e->dir, partial), *to = path_in(e->dir, name);
	ok = (fflush(out) == 0 && fsync(fileno(out)) == 0 && ok) & (fclose(out) == 0);
	ok = ok && from && to && rename(from, to) == 0;
	if (!ok && from)
		remove(from);
	free(from);
	free(to);
	return ok;
}

static bool bundle_exists(const char *dir)
{
	static const char *const names[] = {FL_BUNDLE_EVENTS, FL_BUNDLE_READS, FL_BUNDLE_INCLUSION,
					    FL_BUNDLE_KEYS};
	struct stat info;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *path = path_in(dir, names[i]);
		bool found = path && stat(path, &info) == 0;
		free(path);
		if (found)
			return true;
	}
	return false;
}

static void progress_line(void *ctx, const char *file, uint64_t lines)
{
	(void)ctx;
	fl__cli_progress("%s: %" PRIu64 " lines verified", file, lines);
}

static void print_report(const char *dir, const struct fl_bundle_report *report)
{
	printf("OK: the bundle in %s verifies\n", dir);
	printf("  keys.json                 %zu keys\n", report->keys);
	printf("  events.ndjson             %" PRIu64 " lines\n", report->event_lines);
	printf("  reads.ndjson              %" PRIu64 " lines\n", report->read_lines);
	printf("  event-checkpoints.ndjson  %" PRIu64 " checkpoints, last tree size %" PRIu64 "\n",
	       report->event_checkpoints, report->event_tree_size);
	printf("  read-checkpoints.ndjson   %" PRIu64 " checkpoints, last tree size %" PRIu64 "\n",
	       report->read_checkpoints, report->read_tree_size);
	printf("  inclusion.ndjson          %" PRIu64 " proofs\n", report->inclusion_proofs);
}

static int audit_export(struct fl_cli *cli)
{
	const char *from = fl_config_get(cli->config, "from");
	const char *to = fl_config_get(cli->config, "to");
	const char *dir = fl_config_get(cli->config, "out");
	struct exporter e = {
	    .cli = cli,
	    .dir = dir,
	    .events = {.log = FL_BUNDLE_LOG_EVENTS, .route_prefix = "/v1/log"},
	    .reads = {.log = FL_BUNDLE_LOG_READS, .route_prefix = "/v1/audit"},
	};
	char exported_at[FL_TIME_TEXT_LEN], from_text[FL_TIME_TEXT_LEN], to_text[FL_TIME_TEXT_LEN];
	FILE *out;
	int rc = FL_CLI_FAIL;
	bool empty_refused = false;
	enum fl_status st;

	e.events.base_url = cli->command_url;
	e.reads.base_url = cli->query_url;
	e.to_us = fl_time_now_us();
	if (!from || !dir || fl_time_parse(from, &e.from_us) != FL_OK ||
	    (to && fl_time_parse(to, &e.to_us) != FL_OK) || e.from_us > e.to_us) {
		fl__cli_error("audit export needs --from T [--to T] --out DIR, T in RFC 3339 "
			      "with a zone, from <= to");
		return FL_CLI_USAGE;
	}
	if (!fl__cli_token(cli, true))
		return FL_CLI_FAIL;
	int err = fl_make_dirs(dir, 0755);
	if (err) {
		fl__cli_error("cannot make the directory %s: %s", dir, strerror(err));
		return FL_CLI_FAIL;
	}
	if (bundle_exists(dir) && !fl_config_get_bool(cli->config, "force")) {
		fl__cli_error("%s already holds a bundle (--force replaces it)", dir);
		return FL_CLI_FAIL;
	}
	fl_time_format(fl_time_now_us(), exported_at);
	fl_time_format(e.from_us, from_text);
	fl_time_format(e.to_us, to_text);

	if (!export_keys(&e))
		goto out;

	/* The event log, up to its latest checkpoint. */
	st = get_checkpoint(&e, &e.events, "", &e.events.latest);
	if (st != FL_OK && st != FL_ERR_NOT_FOUND)
		goto out;
	e.events.have_latest = st == FL_OK;
	if (!(out = start_file(&e, FL_BUNDLE_EVENTS)) ||
	    !finish_file(&e, FL_BUNDLE_EVENTS, out,
			 !e.events.have_latest || export_events(&e, out)))
		goto out;
	fl__cli_progress("events: %zu lines in range of %" PRIu64, e.events.count,
			 e.events.have_latest ? e.events.latest.tree_size : 0);

	/* The read log: its lines, then a checkpoint that covers all of them. */
	if (!(out = start_file(&e, FL_BUNDLE_READS)) ||
	    !finish_file(&e, FL_BUNDLE_READS, out, export_reads(&e, out)))
		goto out;
	for (int attempt = 0;; attempt++) {
		st = get_checkpoint(&e, &e.reads, "", &e.reads.latest);
		if (st != FL_OK && st != FL_ERR_NOT_FOUND)
			goto out;
		e.reads.have_latest = st == FL_OK;
		uint64_t last = e.reads.count ? e.reads.seqs[e.reads.count - 1] : 0;
		if (last == 0 || (e.reads.have_latest && e.reads.latest.tree_size >= last))
			break;
		if (attempt == 20) {
			fl__cli_error("the read log's checkpoint does not reach its seq %" PRIu64,
				      last);
			goto out;
		}
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	fl__cli_progress("reads: %zu lines in range", e.reads.count);

	if (!(out = start_file(&e, FL_BUNDLE_EVENT_CHECKPOINTS)) ||
	    !finish_file(&e, FL_BUNDLE_EVENT_CHECKPOINTS, out,
			 export_checkpoints(&e, &e.events, out)))
		goto out;
	if (!(out = start_file(&e, FL_BUNDLE_READ_CHECKPOINTS)) ||
	    !finish_file(&e, FL_BUNDLE_READ_CHECKPOINTS, out,
			 export_checkpoints(&e, &e.reads, out)))
		goto out;
	if (!(out = start_file(&e, FL_BUNDLE_INCLUSION)) ||
	    !finish_file(&e, FL_BUNDLE_INCLUSION, out,
			 export_inclusion(&e, &e.events, out) &&
			     export_inclusion(&e, &e.reads, out)))
		goto out;
	struct fl_bundle_info info = {
	    .from = from_text,
	    .to = to_text,
	    .exported_at = exported_at,
	    .command_url = cli->command_url,
	    .query_url = cli->query_url,
	    .event_lines = e.events.count,
	    .read_lines = e.reads.count,
	    .event_tree_size = e.events.have_latest ? e.events.latest.tree_size : 0,
	    .read_tree_size = e.reads.have_latest ? e.reads.latest.tree_size : 0,
	};
	if (fl_bundle_write_readme(dir, &info) != FL_OK) {
		fl__cli_error("cannot write %s/%s", dir, FL_BUNDLE_README);
		goto out;
	}

	/* What the services served must hold up before anyone relies on it. */
	struct fl_bundle_report report;
	if (fl_bundle_verify(dir, progress_line, NULL, &report) != FL_OK) {
		fl__cli_error("the exported bundle does not verify: %s: %s", report.item,
			      report.reason);
		goto out;
	}
	/* An empty bundle verifies, and proves nothing about the range: say so. */
	uint64_t event_log_size = e.events.have_latest ? e.events.latest.tree_size : 0;
	if (e.events.count == 0 && e.reads.count == 0 &&
	    fl_config_get_bool(cli->config, "require-lines")) {
		fl__cli_error(
		    "no event-log line and no read record lies in [%s, %s] (--require-lines); "
		    "the event log holds %" PRIu64 " lines in all: check --from and --to "
		    "(RFC 3339, e.g. --from \"$(date -u -d '1 hour ago' +%%FT%%TZ)\")",
		    from_text, to_text, event_log_size);
		empty_refused = true;
		goto out;
	}
	printf("exported %zu event lines and %zu read lines from %s to %s into %s\n",
	       e.events.count, e.reads.count, from_text, to_text, dir);
	print_report(dir, &report);
	fflush(stdout); /* the warnings below come after the report */
	if (e.events.count == 0 && e.reads.count == 0)
		fl__cli_error("warning: no event-log line and no read record lies in [%s, %s]: the "
			      "bundle is empty and proves nothing about that range; the event log "
			      "holds %" PRIu64 " lines in all: check --from and --to "
			      "(--require-lines makes this an error)",
			      from_text, to_text, event_log_size);
	else if (e.events.count == 0)
		fl__cli_error(
		    "warning: no event-log line lies in [%s, %s] (the bundle has only read "
		    "records)",
		    from_text, to_text);
	else if (e.reads.count == 0)
		fl__cli_error("warning: no read record lies in [%s, %s] (the bundle has only "
			      "event-log lines)",
			      from_text, to_text);
	rc = FL_CLI_OK;
out:
	if (rc != FL_CLI_OK && !empty_refused)
		fl__cli_error("the export to %s is incomplete", dir);
	free(e.events.seqs);
	free(e.reads.seqs);
	return rc;
}

const struct fl_cli_command fl__cli_audit_export_command = {
    .group = "audit",
    .sub = "export",
    .args_usage = "",
    .summary = "write a self-contained, verifiable audit bundle",
    .description =
	"Writes into --out the event-log lines whose ingest_ts and the read-audit lines\n"
	"whose ts lie in [--from, --to], each log's checkpoints (the oldest covering the\n"
	"first exported line and the latest, with a consistency proof), an inclusion\n"
	"proof per line, both services' public keys and a README telling a reviewer how\n"
	"to check it with openssl, base64 and sha256sum (CONTRACT §7). Needs a token\n"
	"with the role auditor. The bundle is verified before the command succeeds.\n"
	"A range with no line of a log gets a warning (times are UTC); with\n"
	"--require-lines a range with no line at all fails (exit 1).\n",
    .options = export_options,
    .n_options = sizeof(export_options) / sizeof(export_options[0]),
    .run = audit_export,
};

/* ---- verify -------------------------------------------------------------------- */

static int audit_verify(struct fl_cli *cli)
{
	struct fl_bundle_report report;
	const char *dir = cli->args[0];
	struct stat info;

	if (stat(dir, &info) != 0 || !S_ISDIR(info.st_mode)) {
		fl__cli_error("%s is not a directory", dir);
		return FL_CLI_FAIL;
	}
	enum fl_status st = fl_bundle_verify(dir, progress_line, NULL, &report);
	if (st != FL_OK) {
		fprintf(stderr, "FAILED: %s: %s\n", report.item[0] ? report.item : dir,
			report.reason[0] ? report.reason : fl_status_str(st));
		return FL_CLI_FAIL;
	}
	print_report(dir, &report);
	return FL_CLI_OK;
}

const struct fl_cli_command fl__cli_audit_verify_command = {
    .group = "audit",
    .sub = "verify",
    .args_usage = "DIR",
    .summary = "check an audit bundle offline",
    .description = "Checks, without any network, every line's leaf hash, {\"seq\":N, prefix and\n"
		   "signature, the seq order, every checkpoint's signature (prefix\n"
		   "fledger-checkpoint-v1 or fledger-read-checkpoint-v1), the consistency proofs\n"
		   "between checkpoints, and one inclusion proof per line against the last\n"
		   "checkpoint of its log. Names the first bad item (file:line) and why, and\n"
		   "exits 1; prints a summary and exits 0 when everything holds.\n",
    .min_args = 1,
    .max_args = 1,
    .run = audit_verify,
    .offline = true,
};
