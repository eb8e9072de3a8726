/*
 * `fledger audit export` writes the audit bundle of CONTRACT §7 from the two
 * services; `fledger audit verify` checks one offline (bundle.h).
 *
 * Export takes each log's latest checkpoint as the end of the bundle: event
 * lines are fetched up to its tree size; read lines are found first (by
 * time) and the read log's checkpoint after them, so it covers every one of
 * them.
 *
 * Each log contributes a run of lines contiguous in seq, from the first line
 * in the range to the last, and the boundary lines around it: the line just
 * before the run, whose time is before --from, and the line just after it,
 * whose time is after --to. Times follow seq only roughly (a request's time
 * is taken before its seq is given), so the run is widened from the lines in
 * range until its neighbours lie outside the range on their side; a line
 * inside the run may then lie just outside the range. With no line in range
 * the run is empty and the two boundary lines are neighbours.
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
#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/trust.h"
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
	const char *lines_route;  /* lines by seq: "/v1/log" or "/v1/audit/log" */
	bool have_latest;
	struct fl_checkpoint first, latest;
	uint8_t consistency[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t consistency_count;
	/* the exported run of seqs; run_first > run_last when it is empty */
	uint64_t run_first, run_last;
	/* lines in range found before the run is settled (0: none) */
	uint64_t first_in, last_in;
	uint64_t anchor; /* with no line in range: a line after the range, 0: none */
	/* the seqs of the exported key events (run and boundary lines) */
	uint64_t *key_seqs;
	size_t n_key_seqs;
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

static uint64_t tree_size(const struct exported_log *l)
{
	return l->have_latest ? l->latest.tree_size : 0;
}

static uint64_t run_count(const struct exported_log *l)
{
	return l->run_first <= l->run_last ? l->run_last - l->run_first + 1 : 0;
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
	char path[128], why[200], *body;
	size_t len;
	unsigned status = 0;
	snprintf(path, sizeof(path), "%s/checkpoint%s", l->route_prefix, query);
	if (fl__cli_get_text(e->cli, l->base_url, path, true, &status, &body, &len) != FL_OK)
		return status == 404 && !query[0] ? FL_ERR_NOT_FOUND : FL_ERR_UNAVAILABLE;
	bool ok = fl_checkpoint_parse(body, len, why, sizeof(why), ret_checkpoint) == FL_OK;
	free(body);
	if (!ok) {
		fl__cli_error("GET %s%s: not a checkpoint: %s", l->base_url, path, why);
		return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

/*
 * A proof: "inclusion?seq=N&tree_size=M" or "consistency?first=M&second=N",
 * read by the parser of its kind.
 */
static bool get_proof(struct exporter *e, struct exported_log *l, const char *query,
		      uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count)
{
	char path[160], why[200], *body;
	size_t len;
	enum fl_status st;
	snprintf(path, sizeof(path), "%s/proof/%s", l->route_prefix, query);
	if (fl__cli_get_text(e->cli, l->base_url, path, true, NULL, &body, &len) != FL_OK)
		return false;
	if (strncmp(query, "inclusion?", 10) == 0) {
		struct fl_inclusion_proof proof;
		st = fl_inclusion_proof_parse(body, len, why, sizeof(why), &proof);
		if (st == FL_OK) {
			memcpy(ret_hashes, proof.hashes, proof.count * FL_HASH_LEN);
			*ret_count = proof.count;
		}
	} else {
		struct fl_consistency_proof proof;
		st = fl_consistency_proof_parse(body, len, why, sizeof(why), &proof);
		if (st == FL_OK) {
			memcpy(ret_hashes, proof.hashes, proof.count * FL_HASH_LEN);
			*ret_count = proof.count;
		}
	}
	free(body);
	if (st != FL_OK)
		fl__cli_error("GET %s%s: %s", l->base_url, path, why);
	return st == FL_OK;
}

/* The seq and the time (ingest_ts or ts) of a log line; false when unreadable. */
static bool line_time(enum fl_bundle_log log, const char *line, size_t len, uint64_t *ret_seq,
		      int64_t *ret_us)
{
	struct fl_log_line parsed;
	if (fl_log_line_parse(line, len, NULL, 0, &parsed) != FL_OK)
		return false;
	bool ok = fl_bundle_line_time(&parsed, log, NULL, 0, ret_us);
	*ret_seq = parsed.seq;
	fl_log_line_finish(&parsed);
	return ok;
}

/* Called for each line of walk_lines, in seq order; false stops the walk. */
typedef bool (*line_fn)(struct exporter *e, struct exported_log *l, uint64_t seq, int64_t time_us,
			const char *text, size_t len, void *ctx);

/*
 * Fetches the lines first..last of the log by seq (GET /v1/log or
 * /v1/audit/log, in pages) and hands each to fn. false after printing why.
 */
static bool walk_lines(struct exporter *e, struct exported_log *l, uint64_t first, uint64_t last,
		       line_fn fn, void *ctx)
{
	for (uint64_t from = first; from <= last;) {
		char path[128], *body;
		size_t len;
		uint64_t limit = last - from + 1 < LOG_PAGE ? last - from + 1 : LOG_PAGE, got = 0;
		snprintf(path, sizeof(path), "%s?from_seq=%" PRIu64 "&limit=%" PRIu64,
			 l->lines_route, from, limit);
		if (!get_text(e, l->base_url, path, &body, &len))
			return false;
		for (char *line = body, *end = body + len; line < end && from + got <= last;) {
			char *nl = memchr(line, '\n', (size_t)(end - line));
			size_t line_len = (size_t)((nl ? nl : end) - line);
			uint64_t seq;
			int64_t time_us;
			if (line_len) {
				if (!line_time(l->log, line, line_len, &seq, &time_us) ||
				    seq != from + got) {
					fl__cli_error("GET %s%s: line %" PRIu64
						      " is not a log line with its time",
						      l->base_url, path, from + got);
					free(body);
					return false;
				}
				if (!fn(e, l, seq, time_us, line, line_len, ctx)) {
					free(body);
					return false;
				}
				got++;
			}
			line = nl ? nl + 1 : end;
		}
		free(body);
		if (got == 0) {
			fl__cli_error("the %s log ends at seq %" PRIu64
				      ", before its checkpoint's tree size %" PRIu64,
				      fl_bundle_log_name(l->log), from - 1, tree_size(l));
			return false;
		}
		from += got;
	}
	return true;
}

/* Notes where the lines in range are (a walk over the whole event log). */
static bool note_in_range(struct exporter *e, struct exported_log *l, uint64_t seq, int64_t time_us,
			  const char *text, size_t len, void *ctx)
{
	(void)text;
	(void)len;
	(void)ctx;
	if (time_us >= e->from_us && time_us <= e->to_us) {
		if (!l->first_in)
			l->first_in = seq;
		l->last_in = seq;
	} else if (time_us > e->to_us && !l->anchor) {
		l->anchor = seq;
	}
	if (seq % PROGRESS_EVERY == 0)
		fl__cli_progress("event log: %" PRIu64 " of %" PRIu64 " lines scanned", seq,
				 tree_size(l));
	return true;
}

static bool keep_time(struct exporter *e, struct exported_log *l, uint64_t seq, int64_t time_us,
		      const char *text, size_t len, void *ctx)
{
	(void)e;
	(void)l;
	(void)seq;
	(void)text;
	(void)len;
	*(int64_t *)ctx = time_us;
	return true;
}

static bool time_at(struct exporter *e, struct exported_log *l, uint64_t seq, int64_t *ret_us)
{
	return walk_lines(e, l, seq, seq, keep_time, ret_us);
}

/*
 * Settles the run of the log from the lines in range (first_in..last_in)
 * or, with none, from an anchor line after the range: widened until the
 * line before it lies before the range and the line after it after the
 * range (see the head of this file).
 */
static bool settle_run(struct exporter *e, struct exported_log *l)
{
	uint64_t size = tree_size(l);
	int64_t time_us = 0;

	if (!l->first_in) {
		/* no line in range: the after line is the first of those after it */
		uint64_t after = l->anchor && l->anchor <= size ? l->anchor : size + 1;
		while (after > 1) {
			if (!time_at(e, l, after - 1, &time_us))
				return false;
			if (time_us <= e->to_us)
				break;
			after--;
		}
		l->run_first = after;
		l->run_last = after - 1;
		if (after == 1 || time_us < e->from_us)
			return true;
		l->first_in = l->last_in = after - 1; /* in range after all: it came late */
	}
	l->run_first = l->first_in;
	l->run_last = l->last_in;
	while (l->run_first > 1) {
		if (!time_at(e, l, l->run_first - 1, &time_us))
			return false;
		if (time_us < e->from_us)
			break;
		l->run_first--;
	}
	while (l->run_last < size) {
		if (!time_at(e, l, l->run_last + 1, &time_us))
			return false;
		if (time_us > e->to_us)
			break;
		l->run_last++;
	}
	return true;
}

/* Notes the seq of a key event of the event log; false when out of memory. */
static bool note_key_event(struct exported_log *l, uint64_t seq, const char *text, size_t len)
{
	static const char kind[] = "\"kind\":\"key\"";
	struct fl_log_line line;
	uint8_t pub[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN];
	if (l->log != FL_BUNDLE_LOG_EVENTS || fl_log_line_parse(text, len, NULL, 0, &line) != FL_OK)
		return true; /* walk_lines parsed it already */
	bool key = memmem(line.body, line.body_len, kind, sizeof(kind) - 1) &&
		   fl_log_key_event_parse(line.body, line.body_len, pub, previous) == FL_OK;
	fl_log_line_finish(&line);
	if (!key)
		return true;
	uint64_t *grown = realloc(l->key_seqs, (l->n_key_seqs + 1) * sizeof(*grown));
	if (!grown) {
		fl__cli_error("out of memory");
		return false;
	}
	l->key_seqs = grown;
	grown[l->n_key_seqs++] = seq;
	return true;
}

static bool write_line(struct exporter *e, struct exported_log *l, uint64_t seq, int64_t time_us,
		       const char *text, size_t len, void *ctx)
{
	(void)e;
	(void)time_us;
	if (!note_key_event(l, seq, text, len))
		return false;
	if (fwrite(text, 1, len, ctx) != len || fputc('\n', ctx) == EOF) {
		fl__cli_error("cannot write the %s lines: %s", fl_bundle_log_name(l->log),
			      strerror(errno));
		return false;
	}
	if (seq % PROGRESS_EVERY == 0)
		fl__cli_progress("%s log: seq %" PRIu64 " exported", fl_bundle_log_name(l->log),
				 seq);
	return true;
}

/* events.ndjson or reads.ndjson: the run. */
static bool export_run(struct exporter *e, struct exported_log *l, FILE *out)
{
	return run_count(l) == 0 || walk_lines(e, l, l->run_first, l->run_last, write_line, out);
}

/* The boundary file: the line before the run and the line after it, where they exist. */
static bool export_boundaries(struct exporter *e, struct exported_log *l, FILE *out)
{
	if (!l->have_latest)
		return true;
	if (l->run_first > 1 &&
	    !walk_lines(e, l, l->run_first - 1, l->run_first - 1, write_line, out))
		return false;
	return l->run_last >= tree_size(l) ||
	       walk_lines(e, l, l->run_last + 1, l->run_last + 1, write_line, out);
}

/*
 * The read log's lines in range, by time (GET /v1/audit/reads, in pages):
 * where they are, and with none, the first line after the range.
 */
static bool find_reads(struct exporter *e, struct exported_log *l)
{
	int64_t page_from = e->from_us;
	for (;;) {
		char from_text[FL_TIME_TEXT_LEN], to_text[FL_TIME_TEXT_LEN], path[160], *body;
		size_t len, in_page = 0;
		int64_t last_ts = page_from;
		fl_time_format(page_from, from_text);
		fl_time_format(e->to_us, to_text);
		snprintf(path, sizeof(path), "/v1/audit/reads?from=%s&to=%s&limit=%d", from_text,
			 to_text, READS_PAGE);
		if (!get_text(e, l->base_url, path, &body, &len))
			return false;
		for (char *line = body, *end = body + len; line < end;) {
			char *nl = memchr(line, '\n', (size_t)(end - line));
			size_t line_len = (size_t)((nl ? nl : end) - line);
			uint64_t seq;
			if (line_len) {
				in_page++;
				if (!line_time(l->log, line, line_len, &seq, &last_ts)) {
					fl__cli_error(
					    "GET %s: a line is not a read-log line with a ts",
					    path);
					free(body);
					return false;
				}
				if (!l->first_in || seq < l->first_in)
					l->first_in = seq;
				if (seq > l->last_in)
					l->last_in = seq;
			}
			line = nl ? nl + 1 : end;
		}
		free(body);
		if (in_page < READS_PAGE)
			break;
		if (last_ts == page_from) {
			fl__cli_error(
			    "more than %d reads share the time %s: cannot page through them",
			    READS_PAGE, from_text);
			return false;
		}
		page_from = last_ts; /* the lines at last_ts come again */
		fl__cli_progress("read log: lines in range up to %s", from_text);
	}
	if (l->first_in)
		return true;
	/* None in range: the earliest line after it, where to look around. */
	char from_text[FL_TIME_TEXT_LEN], path[160], *body;
	size_t len;
	uint64_t seq;
	int64_t time_us;
	fl_time_format(e->to_us + 1, from_text);
	snprintf(path, sizeof(path),
		 "/v1/audit/reads?from=%s&to=9999-12-31T23:59:59.999999Z&limit=1", from_text);
	if (!get_text(e, l->base_url, path, &body, &len))
		return false;
	char *nl = memchr(body, '\n', len);
	size_t line_len = nl ? (size_t)(nl - body) : len;
	bool ok = line_len == 0 || line_time(l->log, body, line_len, &seq, &time_us);
	if (line_len && ok)
		l->anchor = seq;
	if (!ok)
		fl__cli_error("GET %s: not a read-log line with a ts", path);
	free(body);
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
	if (run_count(l)) {
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, l->run_first);
		if (get_checkpoint(e, l, query, &l->first) != FL_OK)
			return false;
		if (l->first.tree_size > l->latest.tree_size) {
			fl__cli_error("the checkpoint covering seq %" PRIu64 " is newer than the "
				      "latest one",
				      l->run_first);
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

static int by_value(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * key-checkpoints.ndjson: for each exported key event, the oldest
 * checkpoint covering it (that of its own commit, which the key it replaces
 * signed), with the consistency proof from it to the latest checkpoint;
 * once per checkpoint, in ascending tree size.
 */
static bool export_key_checkpoints(struct exporter *e, struct exported_log *l, FILE *out)
{
	uint64_t written = 0; /* the tree size of the last line written */
	if (l->n_key_seqs > 1)
		qsort(l->key_seqs, l->n_key_seqs, sizeof(*l->key_seqs), by_value);
	for (size_t i = 0; i < l->n_key_seqs; i++) {
		struct fl_checkpoint cp;
		uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
		size_t count = 0;
		char query[96], *line;
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, l->key_seqs[i]);
		if (get_checkpoint(e, l, query, &cp) != FL_OK)
			return false;
		if (cp.tree_size > l->latest.tree_size) {
			fl__cli_error("the checkpoint covering seq %" PRIu64 " is newer than the "
				      "latest one",
				      l->key_seqs[i]);
			return false;
		}
		if (cp.tree_size == written)
			continue;
		if (cp.tree_size != l->latest.tree_size) {
			snprintf(query, sizeof(query),
				 "consistency?first=%" PRIu64 "&second=%" PRIu64, cp.tree_size,
				 l->latest.tree_size);
			if (!get_proof(e, l, query, hashes, &count))
				return false;
		}
		if (fl_bundle_checkpoint_line(&cp, (const uint8_t(*)[FL_HASH_LEN])hashes, count,
					      &line) != FL_OK)
			return false;
		bool ok = fprintf(out, "%s\n", line) >= 0;
		free(line);
		if (!ok)
			return false;
		written = cp.tree_size;
	}
	return true;
}

/*
 * inclusion.ndjson: a proof against the latest checkpoint for each line of
 * the run and each boundary line, in seq order.
 */
static bool export_inclusion(struct exporter *e, struct exported_log *l, FILE *out)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	char query[96], *line;
	uint64_t size = tree_size(l);
	uint64_t first = l->run_first > 1 ? l->run_first - 1 : 1;
	uint64_t last = l->run_last < size ? l->run_last + 1 : size;
	for (uint64_t seq = first; seq <= last; seq++) {
		snprintf(query, sizeof(query), "inclusion?seq=%" PRIu64 "&tree_size=%" PRIu64, seq,
			 size);
		if (!get_proof(e, l, query, hashes, &count))
			return false;
		if (fl_bundle_inclusion_line(l->log, seq, size,
					     (const uint8_t(*)[FL_HASH_LEN])hashes, count,
					     &line) != FL_OK)
			return false;
		bool ok = fprintf(out, "%s\n", line) >= 0;
		free(line);
		if (!ok)
			return false;
		if ((seq - first + 1) % 10000 == 0)
			fl__cli_progress("%s: %" PRIu64 " of %" PRIu64 " inclusion proofs",
					 fl_bundle_log_name(l->log), seq - first + 1,
					 last - first + 1);
	}
	return true;
}

/* range.json */
static bool export_range(struct exporter *e)
{
	char *text, *path;
	size_t len;
	if (fl_bundle_range_json(e->from_us, e->to_us, &text, &len) != FL_OK)
		return false;
	path = path_in(e->dir, FL_BUNDLE_RANGE);
	bool ok = path && fl_bundle_write_file(path, text, len, 0644) == FL_OK;
	if (!ok)
		fl__cli_error("cannot write %s/%s", e->dir, FL_BUNDLE_RANGE);
	free(path);
	free(text);
	return ok;
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

/* "seq 3" or "none (the log starts there)" */
static const char *boundary_text(uint64_t seq, const char *none, char *buf, size_t len)
{
	if (!seq)
		return none;
	snprintf(buf, len, "seq %" PRIu64, seq);
	return buf;
}

static void print_report(const char *dir, const struct fl_bundle_report *report)
{
	char before[32], after[32];
	printf("OK: the bundle in %s verifies\n", dir);
	printf("  range.json                %s to %s\n", report->from, report->to);
	printf("  keys.json                 %zu keys\n", report->keys);
	printf("  events.ndjson             %" PRIu64 " lines, complete: line before the range %s, "
	       "after it %s\n",
	       report->event_lines,
	       boundary_text(report->event_before, "none (the log starts there)", before,
			     sizeof(before)),
	       boundary_text(report->event_after,
			     "none (the end of the log at its last checkpoint)", after,
			     sizeof(after)));
	printf("  reads.ndjson              %" PRIu64 " lines, complete: line before the range %s, "
	       "after it %s\n",
	       report->read_lines,
	       boundary_text(report->read_before, "none (the log starts there)", before,
			     sizeof(before)),
	       boundary_text(report->read_after, "none (the end of the log at its last checkpoint)",
			     after, sizeof(after)));
	printf("  event-checkpoints.ndjson  %" PRIu64 " checkpoints, last tree size %" PRIu64 "\n",
	       report->event_checkpoints, report->event_tree_size);
	printf("  key-checkpoints.ndjson    %" PRIu64 " checkpoints of key events' commits\n",
	       report->key_checkpoints);
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
	    .events = {.log = FL_BUNDLE_LOG_EVENTS,
		       .route_prefix = "/v1/log",
		       .lines_route = "/v1/log"},
	    .reads = {.log = FL_BUNDLE_LOG_READS,
		      .route_prefix = "/v1/audit",
		      .lines_route = "/v1/audit/log"},
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
	char why[256];
	if (fl_make_dirs(dir, 0755, why, sizeof(why)) != FL_OK) {
		fl__cli_error("cannot make the directory %s: %s", dir, why);
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
	if (!walk_lines(&e, &e.events, 1, tree_size(&e.events), note_in_range, NULL) ||
	    !settle_run(&e, &e.events))
		goto out;
	if (!(out = start_file(&e, FL_BUNDLE_EVENTS)) ||
	    !finish_file(&e, FL_BUNDLE_EVENTS, out, export_run(&e, &e.events, out)) ||
	    !(out = start_file(&e, FL_BUNDLE_EVENT_BOUNDARIES)) ||
	    !finish_file(&e, FL_BUNDLE_EVENT_BOUNDARIES, out,
			 export_boundaries(&e, &e.events, out)))
		goto out;
	fl__cli_progress("events: %" PRIu64 " lines in range of %" PRIu64, run_count(&e.events),
			 tree_size(&e.events));

	/* The read log: its lines in range, then a checkpoint that covers them. */
	if (!find_reads(&e, &e.reads))
		goto out;
	for (int attempt = 0;; attempt++) {
		st = get_checkpoint(&e, &e.reads, "", &e.reads.latest);
		if (st != FL_OK && st != FL_ERR_NOT_FOUND)
			goto out;
		e.reads.have_latest = st == FL_OK;
		uint64_t last = e.reads.first_in ? e.reads.last_in : e.reads.anchor;
		if (last == 0 || tree_size(&e.reads) >= last)
			break;
		if (attempt == 20) {
			fl__cli_error("the read log's checkpoint does not reach its seq %" PRIu64,
				      last);
			goto out;
		}
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	if (!settle_run(&e, &e.reads))
		goto out;
	if (!(out = start_file(&e, FL_BUNDLE_READS)) ||
	    !finish_file(&e, FL_BUNDLE_READS, out, export_run(&e, &e.reads, out)) ||
	    !(out = start_file(&e, FL_BUNDLE_READ_BOUNDARIES)) ||
	    !finish_file(&e, FL_BUNDLE_READ_BOUNDARIES, out, export_boundaries(&e, &e.reads, out)))
		goto out;
	fl__cli_progress("reads: %" PRIu64 " lines in range", run_count(&e.reads));

	if (!(out = start_file(&e, FL_BUNDLE_EVENT_CHECKPOINTS)) ||
	    !finish_file(&e, FL_BUNDLE_EVENT_CHECKPOINTS, out,
			 export_checkpoints(&e, &e.events, out)))
		goto out;
	if (!(out = start_file(&e, FL_BUNDLE_KEY_CHECKPOINTS)) ||
	    !finish_file(&e, FL_BUNDLE_KEY_CHECKPOINTS, out,
			 export_key_checkpoints(&e, &e.events, out)))
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
	if (!export_range(&e))
		goto out;
	struct fl_bundle_info info = {
	    .from = from_text,
	    .to = to_text,
	    .exported_at = exported_at,
	    .command_url = cli->command_url,
	    .query_url = cli->query_url,
	    .event_lines = run_count(&e.events),
	    .read_lines = run_count(&e.reads),
	    .event_tree_size = tree_size(&e.events),
	    .read_tree_size = tree_size(&e.reads),
	    .event_boundaries =
		(e.events.run_first > 1) + (e.events.run_last < tree_size(&e.events)),
	    .read_boundaries = (e.reads.run_first > 1) + (e.reads.run_last < tree_size(&e.reads)),
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
	/* A range with no line is proven empty; still say so, it may be a typo. */
	uint64_t event_lines = run_count(&e.events), read_lines = run_count(&e.reads);
	if (event_lines == 0 && read_lines == 0 &&
	    fl_config_get_bool(cli->config, "require-lines")) {
		fl__cli_error(
		    "no event-log line and no read record lies in [%s, %s] (--require-lines); "
		    "the event log holds %" PRIu64 " lines in all: check --from and --to "
		    "(RFC 3339, e.g. --from \"$(date -u -d '1 hour ago' +%%FT%%TZ)\")",
		    from_text, to_text, tree_size(&e.events));
		empty_refused = true;
		goto out;
	}
	printf("exported %" PRIu64 " event lines and %" PRIu64
	       " read lines from %s to %s into %s\n",
	       event_lines, read_lines, from_text, to_text, dir);
	print_report(dir, &report);
	fflush(stdout); /* the warnings below come after the report */
	if (event_lines == 0 && read_lines == 0)
		fl__cli_error("warning: no event-log line and no read record lies in [%s, %s] (the "
			      "bundle proves it with the lines around the range); the event log "
			      "holds %" PRIu64 " lines in all: check --from and --to "
			      "(--require-lines makes this an error)",
			      from_text, to_text, tree_size(&e.events));
	else if (event_lines == 0)
		fl__cli_error(
		    "warning: no event-log line lies in [%s, %s] (the bundle has only read "
		    "records)",
		    from_text, to_text);
	else if (read_lines == 0)
		fl__cli_error("warning: no read record lies in [%s, %s] (the bundle has only "
			      "event-log lines)",
			      from_text, to_text);
	rc = FL_CLI_OK;
out:
	free(e.events.key_seqs);
	if (rc != FL_CLI_OK && !empty_refused)
		fl__cli_error("the export to %s is incomplete", dir);
	return rc;
}

const struct fl_cli_command fl__cli_audit_export_command = {
    .group = "audit",
    .sub = "export",
    .args_usage = "",
    .summary = "write a self-contained, verifiable audit bundle",
    .description =
	"Writes into --out the event-log lines whose ingest_ts and the read-audit lines\n"
	"whose ts lie in [--from, --to], contiguous in seq, the lines just before and\n"
	"just after them (which prove that none was left out), each log's checkpoints\n"
	"(the oldest covering the first exported line and the latest, with a\n"
	"consistency proof), an inclusion proof per line, both services' public keys\n"
	"and a README telling a reviewer how to check it with openssl, base64 and\n"
	"sha256sum (CONTRACT §7). Needs a token with the role auditor. The bundle is\n"
	"verified before the command succeeds. A range with no line of a log gets a\n"
	"warning (times are UTC); with --require-lines a range with no line at all\n"
	"fails (exit 1).\n",
    .options = export_options,
    .n_options = sizeof(export_options) / sizeof(export_options[0]),
    .run = audit_export,
};

/* ---- verify -------------------------------------------------------------------- */

static const struct fl_config_option verify_options[] = {
    {"trust-key", "FLEDGER_TRUST_KEY", NULL,
     "PEM public key to trust (repeatable; the variable is a list split at , or :): "
     "command-svc's and query-svc's; without any, each log's first checkpoint key is "
     "trusted on first use",
     false},
};

static int audit_verify(struct fl_cli *cli)
{
	struct fl_bundle_report report;
	const char *dir = cli->args[0];
	struct stat info;
	struct fl_trust *trust = NULL;
	char **files = NULL;
	size_t n_files = 0;

	if (stat(dir, &info) != 0 || !S_ISDIR(info.st_mode)) {
		fl__cli_error("%s is not a directory", dir);
		return FL_CLI_FAIL;
	}
	enum fl_status st = fl_trust_create(&trust);
	if (st == FL_OK)
		st = fl_config_get_list(cli->config, "trust-key", ",:", &files, &n_files);
	if (st != FL_OK)
		fl__cli_error("%s", fl_status_str(st));
	for (size_t i = 0; st == FL_OK && i < n_files; i++) {
		st = fl_trust_load_file(trust, files[i]);
		if (st != FL_OK)
			fl__cli_error("--trust-key %s: %s", files[i],
				      st == FL_ERR_INVALID ? "not a file of PEM Ed25519 public keys"
				      : st == FL_ERR_NOT_FOUND ? "no such file"
							       : fl_status_str(st));
	}
	fl_config_list_free(files);
	if (st == FL_OK) {
		st = fl_bundle_verify_trusted(dir, trust, progress_line, NULL, &report);
		if (st != FL_OK)
			fprintf(stderr, "FAILED: %s: %s\n", report.item[0] ? report.item : dir,
				report.reason[0] ? report.reason : fl_status_str(st));
	}
	fl_trust_destroy(trust);
	if (st != FL_OK)
		return FL_CLI_FAIL;
	for (int log = 0; log < 2; log++)
		if (report.tofu_key[log][0])
			printf(
			    "TOFU: no --trust-key given: trusting key %s, which signed the first "
			    "checkpoint of the %s log, on first use; check it out of band\n",
			    report.tofu_key[log], log == FL_BUNDLE_LOG_EVENTS ? "event" : "read");
	print_report(dir, &report);
	return FL_CLI_OK;
}

const struct fl_cli_command fl__cli_audit_verify_command = {
    .group = "audit",
    .sub = "verify",
    .args_usage = "DIR",
    .summary = "check an audit bundle offline",
    .description = "Checks, without any network, every line's leaf hash, {\"seq\":N, prefix and\n"
		   "signature, every checkpoint's signature (prefix fledger-checkpoint-v1 or\n"
		   "fledger-read-checkpoint-v1), the consistency proofs between checkpoints,\n"
		   "one inclusion proof per line against the last checkpoint of its log, and\n"
		   "completeness: in each log the seqs run without a gap from the line before\n"
		   "the range (its time before range.json's from; or seq 1) to the line after\n"
		   "it (its time after to; or the last checkpoint's tree size). Names the first\n"
		   "bad item (file:line) and why, and exits 1; prints a summary and exits 0\n"
		   "when everything holds.\n"
		   "\n"
		   "Keys: keys.json is not trusted. The --trust-key keys are (give both\n"
		   "services' keys); without any, the key of each log's first checkpoint is\n"
		   "(trust on first use, said in the output). Another key is trusted only when\n"
		   "an exported key event introduces it, with the line signature of the trusted\n"
		   "key it replaces or under a checkpoint a trusted key signed. A checkpoint\n"
		   "or line signed by any other key fails, naming the key. A key change whose\n"
		   "key event lies outside the range cannot be followed: trust both keys.\n",
    .options = verify_options,
    .n_options = sizeof(verify_options) / sizeof(verify_options[0]),
    .min_args = 1,
    .max_args = 1,
    .run = audit_verify,
    .offline = true,
};
