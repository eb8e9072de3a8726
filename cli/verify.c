/*
 * fl_bundle_verify: the offline check of an audit bundle (see bundle.h).
 *
 * The checkpoint files are read first (each is small); then the two lines
 * files are walked in step with inclusion.ndjson, which holds one proof per
 * line in the same order, so that memory stays constant however large the
 * bundle is. The boundary lines (at most two per log) are read before the
 * lines; each log's proofs come in ascending seq: the line before the range,
 * the lines of the range, the line after it. Completeness is checked on the
 * way: each seq must be the one after the seq before it.
 */
#include "bundle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/trust.h"
#include "fledger/jsonw.h"
#include "fledger/util.h"

#define PROGRESS_EVERY 100000

/* A file read line by line, with its name and current line number. */
struct reader {
	FILE *file;
	const char *name;
	uint64_t line_no;
	char *text;
	size_t cap;
	size_t len;
};

struct verify {
	const char *dir;
	struct fl_bundle_report *report;
	fl_bundle_progress_fn progress;
	void *progress_ctx;
	struct fl_bundle_keys *keys;
	struct fl_checkpoint first[2], last[2]; /* per log: valid when count > 0 */
	uint64_t checkpoints[2];
	struct reader inclusion;
	int64_t from_us, to_us; /* range.json */
	/* per log: the line before the range [0] and after it [1], if any */
	struct fl_log_line boundary[2][2];
	bool has_boundary[2][2];
	uint64_t boundary_line_no[2][2];
	/* for the key trust pass, per log: every checkpoint, the key ids that
	 * signed exported lines, and (event log) the exported key events */
	struct fl_checkpoint *cps[2];
	size_t n_cps[2];
	char (*signers[2])[FL_KEY_ID_HEX_LEN];
	size_t n_signers[2];
	struct key_event *key_events;
	size_t n_key_events;
	/* key-checkpoints.ndjson: the checkpoints of key events' commits */
	struct fl_checkpoint *key_cps;
	size_t n_key_cps;
};

struct key_event {
	uint64_t seq;
	uint8_t pub[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN]; /* the key it replaces */
	char signer[FL_KEY_ID_HEX_LEN];	  /* the key of its line signature */
	bool trusted;
};

enum { BEFORE, AFTER };

static void fail(struct verify *v, const char *file, uint64_t line_no, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first bad item; later calls keep the first. */
static void fail(struct verify *v, const char *file, uint64_t line_no, const char *format, ...)
{
	va_list args;
	if (v->report->item[0])
		return;
	if (line_no)
		snprintf(v->report->item, sizeof(v->report->item), "%s:%" PRIu64, file, line_no);
	else
		snprintf(v->report->item, sizeof(v->report->item), "%s", file);
	va_start(args, format);
	vsnprintf(v->report->reason, sizeof(v->report->reason), format, args);
	va_end(args);
}

static char *path_in(const char *dir, const char *name)
{
	size_t len = strlen(dir) + strlen(name) + 2;
	char *path = malloc(len);
	if (path)
		snprintf(path, len, "%s/%s", dir, name);
	return path;
}

static enum fl_status reader_open(struct verify *v, const char *name, struct reader *ret_reader)
{
	char *path = path_in(v->dir, name);
	if (!path)
		return FL_ERR_NOMEM;
	FILE *file = fopen(path, "r");
	int saved = errno;
	free(path);
	if (!file) {
		fail(v, name, 0, "cannot be opened: %s", strerror(saved));
		return FL_ERR_CORRUPT;
	}
	*ret_reader = (struct reader){.file = file, .name = name};
	return FL_OK;
}

static void reader_close(struct reader *r)
{
	if (r->file)
		fclose(r->file);
	free(r->text);
	r->file = NULL;
	r->text = NULL;
}

/*
 * Reads the next line into r->text (without its newline). FL_OK, or
 * FL_ERR_NOT_FOUND at the end of the file, or FL_ERR_CORRUPT for an empty
 * line, a NUL byte or a read error (recorded).
 */
static enum fl_status reader_next(struct verify *v, struct reader *r)
{
	errno = 0;
	ssize_t n = getline(&r->text, &r->cap, r->file);
	if (n < 0) {
		if (ferror(r->file)) {
			fail(v, r->name, r->line_no + 1, "cannot be read: %s", strerror(errno));
			return FL_ERR_CORRUPT;
		}
		return errno == ENOMEM ? FL_ERR_NOMEM : FL_ERR_NOT_FOUND;
	}
	r->line_no++;
	if (n > 0 && r->text[n - 1] == '\n')
		r->text[--n] = '\0';
	r->len = (size_t)n;
	if (n == 0) {
		fail(v, r->name, r->line_no, "empty line");
		return FL_ERR_CORRUPT;
	}
	if (strlen(r->text) != r->len) {
		fail(v, r->name, r->line_no, "a NUL byte in the line");
		return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

static void tick(struct verify *v, const char *file, uint64_t lines)
{
	if (v->progress && lines % PROGRESS_EVERY == 0)
		v->progress(v->progress_ctx, file, lines);
}

/* ---- keys.json ---------------------------------------------------------- */

static enum fl_status check_keys(struct verify *v)
{
	char *path = path_in(v->dir, FL_BUNDLE_KEYS), error[200];
	json_error_t jerr;
	if (!path)
		return FL_ERR_NOMEM;
	json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	free(path);
	if (!doc) {
		fail(v, FL_BUNDLE_KEYS, jerr.line > 0 ? (uint64_t)jerr.line : 0,
		     "not valid JSON: %s", jerr.text);
		return FL_ERR_CORRUPT;
	}
	enum fl_status st = fl_bundle_keys_parse(doc, error, sizeof(error), &v->keys);
	json_decref(doc);
	if (st == FL_ERR_INVALID) {
		fail(v, FL_BUNDLE_KEYS, 0, "%s", error);
		return FL_ERR_CORRUPT;
	}
	if (st == FL_OK && fl_bundle_keys_count(v->keys) == 0) {
		fail(v, FL_BUNDLE_KEYS, 0, "holds no key");
		return FL_ERR_CORRUPT;
	}
	if (st == FL_OK)
		v->report->keys = fl_bundle_keys_count(v->keys);
	return st;
}

/* ---- checkpoint files ----------------------------------------------------- */

/*
 * One line of a checkpoints file: a checkpoint with its "consistency" proof
 * (to the line before, or to the last event checkpoint). False, said in v,
 * when it is not one.
 */
static bool checkpoint_line(struct verify *v, const struct reader *r, struct fl_checkpoint *cp,
			    uint8_t hashes[][FL_HASH_LEN], size_t *ret_count)
{
	char error[200];
	const char *consistency;
	size_t consistency_len;
	if (fl_checkpoint_parse_with(r->text, r->len, "consistency", error, sizeof(error), cp,
				     &consistency, &consistency_len) != FL_OK ||
	    fl_proof_hashes_parse(consistency, consistency_len, error, sizeof(error), hashes,
				  ret_count) != FL_OK) {
		fail(v, r->name, r->line_no, "%s", error);
		return false;
	}
	return true;
}

static enum fl_status check_checkpoints(struct verify *v, enum fl_bundle_log log)
{
	const char *name =
	    log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_CHECKPOINTS : FL_BUNDLE_READ_CHECKPOINTS;
	struct reader r = {0};
	char error[200];
	enum fl_status st = reader_open(v, name, &r);

	while (st == FL_OK && (st = reader_next(v, &r)) == FL_OK) {
		struct fl_checkpoint cp;
		uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
		size_t count;
		st = FL_ERR_CORRUPT;
		if (!checkpoint_line(v, &r, &cp, hashes, &count))
			; /* said error */
		else if (!fl_bundle_checkpoint_check(log, &cp, v->keys, error, sizeof(error)))
			fail(v, name, r.line_no, "%s", error);
		else if (v->checkpoints[log] == 0 && count != 0)
			fail(v, name, r.line_no,
			     "the first checkpoint must have \"consistency\": [] (it has %zu "
			     "hashes)",
			     count);
		else if (v->checkpoints[log] > 0 && cp.tree_size < v->last[log].tree_size)
			fail(v, name, r.line_no,
			     "tree size %" PRIu64 " is smaller than the %" PRIu64
			     " of the line before: the log shrank",
			     cp.tree_size, v->last[log].tree_size);
		else if (v->checkpoints[log] > 0 &&
			 !fl_merkle_verify_consistency(v->last[log].tree_size, cp.tree_size,
						       v->last[log].root_hash, cp.root_hash, hashes,
						       count))
			fail(v, name, r.line_no,
			     "the consistency proof from tree size %" PRIu64 " (line %" PRIu64
			     ") to %" PRIu64 " does not verify: the log was rewritten",
			     v->last[log].tree_size, r.line_no - 1, cp.tree_size);
		else
			st = FL_OK;
		if (st == FL_OK) {
			struct fl_checkpoint *grown =
			    realloc(v->cps[log], (v->n_cps[log] + 1) * sizeof(*grown));
			if (grown) {
				v->cps[log] = grown;
				grown[v->n_cps[log]++] = cp;
			} else {
				st = FL_ERR_NOMEM;
			}
		}
		if (st != FL_OK)
			break;
		if (v->checkpoints[log] == 0)
			v->first[log] = cp;
		v->last[log] = cp;
		v->checkpoints[log]++;
	}
	reader_close(&r);
	if (log == FL_BUNDLE_LOG_EVENTS)
		v->report->event_checkpoints = v->checkpoints[log];
	else
		v->report->read_checkpoints = v->checkpoints[log];
	if (st == FL_ERR_NOT_FOUND)
		st = FL_OK;
	if (st == FL_OK && v->checkpoints[log]) {
		if (log == FL_BUNDLE_LOG_EVENTS)
			v->report->event_tree_size = v->last[log].tree_size;
		else
			v->report->read_tree_size = v->last[log].tree_size;
	}
	return st;
}

/*
 * key-checkpoints.ndjson (optional): checkpoints of the event log, each
 * signed (by a key of keys.json here; the trust pass judges the key), at
 * most the last event checkpoint's tree size, ascending, and consistent
 * with that last checkpoint, so that it covers the same lines.
 */
static enum fl_status check_key_checkpoints(struct verify *v)
{
	const char *name = FL_BUNDLE_KEY_CHECKPOINTS;
	const struct fl_checkpoint *last = &v->last[FL_BUNDLE_LOG_EVENTS];
	struct reader r = {0};
	char error[200];
	char *path = path_in(v->dir, name);
	if (!path)
		return FL_ERR_NOMEM;
	FILE *file = fopen(path, "r");
	int saved = errno;
	free(path);
	if (!file && saved == ENOENT)
		return FL_OK; /* a bundle without key checkpoints */
	if (!file) {
		fail(v, name, 0, "cannot be opened: %s", strerror(saved));
		return FL_ERR_CORRUPT;
	}
	r = (struct reader){.file = file, .name = name};
	enum fl_status st = FL_OK;
	while (st == FL_OK && (st = reader_next(v, &r)) == FL_OK) {
		struct fl_checkpoint cp;
		uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
		size_t count;
		st = FL_ERR_CORRUPT;
		if (!checkpoint_line(v, &r, &cp, hashes, &count))
			; /* said error */
		else if (!fl_bundle_checkpoint_check(FL_BUNDLE_LOG_EVENTS, &cp, v->keys, error,
						     sizeof(error)))
			fail(v, name, r.line_no, "%s", error);
		else if (v->checkpoints[FL_BUNDLE_LOG_EVENTS] == 0 ||
			 cp.tree_size > last->tree_size)
			fail(v, name, r.line_no,
			     "tree size %" PRIu64 " is beyond the last event checkpoint (tree size "
			     "%" PRIu64 ")",
			     cp.tree_size,
			     v->checkpoints[FL_BUNDLE_LOG_EVENTS] ? last->tree_size : 0);
		else if (v->n_key_cps > 0 && cp.tree_size <= v->key_cps[v->n_key_cps - 1].tree_size)
			fail(v, name, r.line_no,
			     "tree size %" PRIu64 " is not after the %" PRIu64
			     " of the line before: key checkpoints go in ascending tree size",
			     cp.tree_size, v->key_cps[v->n_key_cps - 1].tree_size);
		else if (!fl_merkle_verify_consistency(cp.tree_size, last->tree_size, cp.root_hash,
						       last->root_hash, hashes, count))
			fail(v, name, r.line_no,
			     "the consistency proof from tree size %" PRIu64 " to %" PRIu64
			     ", the last event checkpoint, does not verify",
			     cp.tree_size, last->tree_size);
		else
			st = FL_OK;
		if (st == FL_OK) {
			struct fl_checkpoint *grown =
			    realloc(v->key_cps, (v->n_key_cps + 1) * sizeof(*grown));
			if (grown) {
				v->key_cps = grown;
				grown[v->n_key_cps++] = cp;
			} else {
				st = FL_ERR_NOMEM;
			}
		}
	}
	reader_close(&r);
	v->report->key_checkpoints = v->n_key_cps;
	return st == FL_ERR_NOT_FOUND ? FL_OK : st;
}

/* ---- range.json and the boundary lines ---------------------------------------- */

static enum fl_status check_range(struct verify *v)
{
	char *path = path_in(v->dir, FL_BUNDLE_RANGE), error[200];
	json_error_t jerr;
	if (!path)
		return FL_ERR_NOMEM;
	json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	free(path);
	if (!doc) {
		fail(v, FL_BUNDLE_RANGE, 0, "not valid JSON: %s", jerr.text);
		return FL_ERR_CORRUPT;
	}
	bool ok = fl_bundle_range_from_json(doc, error, sizeof(error), &v->from_us, &v->to_us);
	if (ok) {
		snprintf(v->report->from, sizeof(v->report->from), "%s",
			 json_string_value(json_object_get(doc, "from")));
		snprintf(v->report->to, sizeof(v->report->to), "%s",
			 json_string_value(json_object_get(doc, "to")));
	} else {
		fail(v, FL_BUNDLE_RANGE, 0, "%s", error);
	}
	json_decref(doc);
	return ok ? FL_OK : FL_ERR_CORRUPT;
}

static bool check_kind(const struct fl_log_line *line, enum fl_bundle_log log, char *error,
		       size_t error_size);

/*
 * Keeps what the key trust pass needs of a checked line: the key that
 * signed it and, in the event log, a key event. FL_ERR_NOMEM, or
 * FL_ERR_CORRUPT (recorded by the caller's check of the kind first).
 */
static enum fl_status note_line(struct verify *v, enum fl_bundle_log log,
				const struct fl_log_line *line, const char *file, uint64_t line_no)
{
	bool known = !line->has_sig; /* a line of format v2: no signer */
	for (size_t i = 0; i < v->n_signers[log] && !known; i++)
		known = strcmp(v->signers[log][i], line->key_id) == 0;
	if (!known) {
		char(*grown)[FL_KEY_ID_HEX_LEN] =
		    realloc(v->signers[log], (v->n_signers[log] + 1) * sizeof(*grown));
		if (!grown)
			return FL_ERR_NOMEM;
		v->signers[log] = grown;
		memcpy(grown[v->n_signers[log]++], line->key_id, FL_KEY_ID_HEX_LEN);
	}
	if (log != FL_BUNDLE_LOG_EVENTS)
		return FL_OK;
	struct key_event event = {.seq = line->seq};
	enum fl_status st =
	    fl_log_key_event_parse(line->body, line->body_len, event.pub, event.previous);
	if (st == FL_ERR_NOT_FOUND)
		return FL_OK;
	if (st == FL_ERR_INVALID) {
		fail(v, file, line_no, "seq %" PRIu64 ": a malformed key event", line->seq);
		return FL_ERR_CORRUPT;
	}
	if (st != FL_OK)
		return st;
	if (line->has_sig)
		memcpy(event.signer, line->key_id, FL_KEY_ID_HEX_LEN);
	struct key_event *grown = realloc(v->key_events, (v->n_key_events + 1) * sizeof(*grown));
	if (!grown)
		return FL_ERR_NOMEM;
	v->key_events = grown;
	grown[v->n_key_events++] = event;
	return FL_OK;
}

/*
 * The boundary file of a log: at most one line before the range (its time
 * before "from") and one after it (its time after "to"), in that order, each
 * a good line of the log within its last checkpoint.
 */
static enum fl_status check_boundaries(struct verify *v, enum fl_bundle_log log)
{
	const char *name =
	    log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_BOUNDARIES : FL_BUNDLE_READ_BOUNDARIES;
	const char *member = log == FL_BUNDLE_LOG_EVENTS ? "ingest_ts" : "ts";
	struct reader r = {0};
	char error[240], from[FL_TIME_TEXT_LEN], to[FL_TIME_TEXT_LEN];
	enum fl_status st = reader_open(v, name, &r);

	fl_time_format(v->from_us, from);
	fl_time_format(v->to_us, to);
	while (st == FL_OK && (st = reader_next(v, &r)) == FL_OK) {
		struct fl_log_line line;
		int64_t time_us;
		st = fl_log_line_parse(r.text, r.len, error, sizeof(error), &line);
		if (st == FL_ERR_INVALID) {
			fail(v, name, r.line_no, "%s", error);
			st = FL_ERR_CORRUPT;
		}
		if (st != FL_OK)
			break;
		int side = -1;
		st = FL_ERR_CORRUPT;
		if (!fl_bundle_line_check(&line, v->keys, error, sizeof(error)) ||
		    !check_kind(&line, log, error, sizeof(error)) ||
		    !fl_bundle_line_time(&line, log, error, sizeof(error), &time_us))
			fail(v, name, r.line_no, "%s", error);
		else if (v->checkpoints[log] == 0 || line.seq > v->last[log].tree_size)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 " is beyond the last checkpoint (tree size %" PRIu64
			     ")",
			     line.seq, v->checkpoints[log] ? v->last[log].tree_size : 0);
		else if (time_us >= v->from_us && time_us <= v->to_us)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 ": its %s lies in the range [%s, %s]: a line of the "
			     "range is not a boundary line",
			     line.seq, member, from, to);
		else if ((side = time_us < v->from_us ? BEFORE : AFTER) == BEFORE &&
			 (v->has_boundary[log][BEFORE] || v->has_boundary[log][AFTER]))
			fail(v, name, r.line_no,
			     "seq %" PRIu64 ": a second line before the range, or one after the "
			     "line after it",
			     line.seq);
		else if (side == AFTER && v->has_boundary[log][AFTER])
			fail(v, name, r.line_no, "seq %" PRIu64 ": a second line after the range",
			     line.seq);
		else if (side == AFTER && v->has_boundary[log][BEFORE] &&
			 line.seq <= v->boundary[log][BEFORE].seq)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 ", the line after the range, is not after seq %" PRIu64
			     ", the line before it",
			     line.seq, v->boundary[log][BEFORE].seq);
		else
			st = note_line(v, log, &line, name, r.line_no);
		if (st != FL_OK) {
			fl_log_line_finish(&line);
			break;
		}
		v->boundary[log][side] = line;
		v->has_boundary[log][side] = true;
		v->boundary_line_no[log][side] = r.line_no;
	}
	reader_close(&r);
	if (log == FL_BUNDLE_LOG_EVENTS) {
		v->report->event_before =
		    v->has_boundary[log][BEFORE] ? v->boundary[log][BEFORE].seq : 0;
		v->report->event_after =
		    v->has_boundary[log][AFTER] ? v->boundary[log][AFTER].seq : 0;
	} else {
		v->report->read_before =
		    v->has_boundary[log][BEFORE] ? v->boundary[log][BEFORE].seq : 0;
		v->report->read_after =
		    v->has_boundary[log][AFTER] ? v->boundary[log][AFTER].seq : 0;
	}
	return st == FL_ERR_NOT_FOUND ? FL_OK : st;
}

/* ---- lines and their inclusion proofs --------------------------------------- */

/* The kind of a body, checked against the log it is in. */
static bool check_kind(const struct fl_log_line *line, enum fl_bundle_log log, char *error,
		       size_t error_size)
{
	json_error_t jerr;
	json_t *body =
	    json_loadb((const char *)line->body, line->body_len, JSON_REJECT_DUPLICATES, &jerr);
	const char *kind = json_string_value(json_object_get(body, "kind"));
	bool ok = false;

	if (!json_is_object(body))
		snprintf(error, error_size, "seq %" PRIu64 ": the body is not a JSON object",
			 line->seq);
	else if (!kind)
		snprintf(error, error_size, "seq %" PRIu64 ": the body has no kind", line->seq);
	else if (log == FL_BUNDLE_LOG_READS && strcmp(kind, "read") != 0)
		snprintf(error, error_size,
			 "seq %" PRIu64 ": a read-log body of kind \"%s\", not \"read\"", line->seq,
			 kind);
	else if (log == FL_BUNDLE_LOG_EVENTS && strcmp(kind, "feature") != 0 &&
		 strcmp(kind, "view") != 0 && strcmp(kind, "key") != 0)
		snprintf(error, error_size,
			 "seq %" PRIu64
			 ": an event-log body of kind \"%s\", not feature, view or key",
			 line->seq, kind);
	else
		ok = true;
	json_decref(body);
	return ok;
}

/* Reads the next inclusion proof, which must be the one of line, and checks it. */
static enum fl_status check_inclusion(struct verify *v, enum fl_bundle_log log,
				      const struct fl_log_line *line, const char *lines_name,
				      uint64_t lines_line_no)
{
	struct reader *r = &v->inclusion;
	const struct fl_checkpoint *last = &v->last[log];
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count, hashes_len;
	const char *hashes_text;
	char error[200] = "the proof has no hashes";
	json_error_t jerr;

	enum fl_status st = reader_next(v, r);
	if (st == FL_ERR_NOT_FOUND) {
		fail(v, r->name, r->line_no + 1,
		     "missing: no inclusion proof for %s seq %" PRIu64 " (%s:%" PRIu64 ")",
		     fl_bundle_log_name(log), line->seq, lines_name, lines_line_no);
		return FL_ERR_CORRUPT;
	}
	if (st != FL_OK)
		return st;
	json_t *obj = json_loadb(r->text, r->len, JSON_REJECT_DUPLICATES, &jerr);
	const json_t *seq = json_object_get(obj, "seq"), *size = json_object_get(obj, "tree_size");
	const char *log_name = json_string_value(json_object_get(obj, "log"));

	st = FL_ERR_CORRUPT;
	if (!obj)
		fail(v, r->name, r->line_no, "not JSON: %s", jerr.text);
	else if (!json_is_object(obj) || json_object_size(obj) != 4 || !log_name ||
		 !json_is_integer(seq) || !json_is_integer(size))
		fail(v, r->name, r->line_no,
		     "not an object of exactly log, seq, tree_size (integers) and hashes");
	else if (strcmp(log_name, "events") != 0 && strcmp(log_name, "reads") != 0)
		fail(v, r->name, r->line_no, "unknown log \"%s\"", log_name);
	else if (strcmp(log_name, fl_bundle_log_name(log)) != 0 ||
		 json_integer_value(seq) != (json_int_t)line->seq)
		fail(v, r->name, r->line_no,
		     "the proof for %s seq %" PRIdMAX " is not the one of the next exported line, "
		     "%s seq %" PRIu64 " (%s:%" PRIu64
		     "): a proof or a line is missing or out of order",
		     log_name, (intmax_t)json_integer_value(seq), fl_bundle_log_name(log),
		     line->seq, lines_name, lines_line_no);
	else if (json_integer_value(size) != (json_int_t)last->tree_size)
		fail(v, r->name, r->line_no,
		     "the proof is against tree size %" PRIdMAX ", not the %" PRIu64
		     " of the last checkpoint of the %s log",
		     (intmax_t)json_integer_value(size), last->tree_size, fl_bundle_log_name(log));
	else if (!fl_json_member(r->text, r->len, "hashes", &hashes_text, &hashes_len) ||
		 fl_proof_hashes_parse(hashes_text, hashes_len, error, sizeof(error), hashes,
				       &count) != FL_OK)
		fail(v, r->name, r->line_no, "%s", error);
	else if (!fl_merkle_verify_inclusion(line->leaf_hash, line->seq - 1, last->tree_size,
					     (const uint8_t(*)[FL_HASH_LEN])hashes, count,
					     last->root_hash))
		fail(v, r->name, r->line_no,
		     "the inclusion proof of %s seq %" PRIu64 " does not lead to the root of the "
		     "checkpoint of tree size %" PRIu64,
		     fl_bundle_log_name(log), line->seq, last->tree_size);
	else
		st = FL_OK;
	json_decref(obj);
	if (st == FL_OK)
		v->report->inclusion_proofs++;
	return st;
}

/*
 * Records that the seqs between previous (0: the log's start) and next are
 * missing: "seq 17 is missing between 16 and 18".
 */
static void fail_gap(struct verify *v, const char *file, uint64_t line_no, uint64_t previous,
		     uint64_t next, const char *context)
{
	if (previous == 0 && next == 2)
		fail(v, file, line_no, "seq 1 is missing before seq 2%s", context);
	else if (previous == 0)
		fail(v, file, line_no, "seqs 1 to %" PRIu64 " are missing before seq %" PRIu64 "%s",
		     next - 1, next, context);
	else if (next == previous + 2)
		fail(v, file, line_no,
		     "seq %" PRIu64 " is missing between %" PRIu64 " and %" PRIu64 "%s",
		     previous + 1, previous, next, context);
	else
		fail(v, file, line_no,
		     "seqs %" PRIu64 " to %" PRIu64 " are missing between %" PRIu64 " and %" PRIu64
		     "%s",
		     previous + 1, next - 1, previous, next, context);
}

/*
 * The lines of one log with their proofs, between its boundary lines: every
 * seq from the line before the range (or seq 1) to the line after it (or
 * the last checkpoint's tree size) must be there, once, in order.
 */
static enum fl_status check_lines(struct verify *v, enum fl_bundle_log log)
{
	const char *name = log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENTS : FL_BUNDLE_READS;
	const char *cp_name =
	    log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_CHECKPOINTS : FL_BUNDLE_READ_CHECKPOINTS;
	const char *bounds_name =
	    log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_BOUNDARIES : FL_BUNDLE_READ_BOUNDARIES;
	const struct fl_log_line *before =
	    v->has_boundary[log][BEFORE] ? &v->boundary[log][BEFORE] : NULL;
	const struct fl_log_line *after =
	    v->has_boundary[log][AFTER] ? &v->boundary[log][AFTER] : NULL;
	uint64_t *count =
	    log == FL_BUNDLE_LOG_EVENTS ? &v->report->event_lines : &v->report->read_lines;
	uint64_t previous_seq = 0; /* the seq the next line must follow; 0: none yet */
	struct reader r = {0};
	char error[240];
	enum fl_status st = FL_OK;

	if (before) {
		st = check_inclusion(v, log, before, bounds_name, v->boundary_line_no[log][BEFORE]);
		previous_seq = before->seq;
	}
	if (st == FL_OK)
		st = reader_open(v, name, &r);
	while (st == FL_OK && (st = reader_next(v, &r)) == FL_OK) {
		struct fl_log_line line;
		st = fl_log_line_parse(r.text, r.len, error, sizeof(error), &line);
		if (st == FL_ERR_INVALID) {
			fail(v, name, r.line_no, "%s", error);
			st = FL_ERR_CORRUPT;
		}
		if (st != FL_OK)
			break;
		st = FL_ERR_CORRUPT;
		if (!fl_bundle_line_check(&line, v->keys, error, sizeof(error)) ||
		    !check_kind(&line, log, error, sizeof(error)))
			fail(v, name, r.line_no, "%s", error);
		else if (line.seq <= previous_seq && *count == 0)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 " is not after seq %" PRIu64
			     ", the line before the range "
			     "(%s)",
			     line.seq, previous_seq, bounds_name);
		else if (line.seq <= previous_seq)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 " after seq %" PRIu64
			     ": lines must be in ascending seq order without duplicates",
			     line.seq, previous_seq);
		else if (line.seq != previous_seq + 1 && *count == 0 && !before)
			fail(v, name, r.line_no,
			     "the first exported line is seq %" PRIu64 " and %s has no line before "
			     "the range: the line before the range is missing (or seq 1 would be "
			     "the first)",
			     line.seq, bounds_name);
		else if (line.seq != previous_seq + 1)
			fail_gap(v, name, r.line_no, previous_seq, line.seq, "");
		else if (v->checkpoints[log] == 0)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 " is not covered by any checkpoint: %s is empty",
			     line.seq, cp_name);
		else if (line.seq > v->last[log].tree_size)
			fail(v, name, r.line_no,
			     "seq %" PRIu64 " is beyond the last checkpoint (tree size %" PRIu64
			     ")",
			     line.seq, v->last[log].tree_size);
		else if (*count == 0 && line.seq > v->first[log].tree_size)
			fail(v, name, r.line_no,
			     "the first exported line, seq %" PRIu64
			     ", is not covered by the first "
			     "checkpoint of %s (tree size %" PRIu64 ")",
			     line.seq, cp_name, v->first[log].tree_size);
		else if ((st = check_inclusion(v, log, &line, name, r.line_no)) == FL_OK)
			st = note_line(v, log, &line, name, r.line_no);
		previous_seq = line.seq;
		fl_log_line_finish(&line);
		if (st != FL_OK)
			break;
		(*count)++;
		tick(v, name, *count);
	}
	reader_close(&r);
	if (st != FL_ERR_NOT_FOUND)
		return st;

	/* The end: the line after the range, or the end of the log. */
	uint64_t size = v->checkpoints[log] ? v->last[log].tree_size : 0;
	uint64_t after_line_no = after ? v->boundary_line_no[log][AFTER] : 0;
	if (after && after->seq <= previous_seq) {
		fail(v, bounds_name, after_line_no,
		     "seq %" PRIu64 ", the line after the range, is not after the last exported "
		     "seq %" PRIu64,
		     after->seq, previous_seq);
		return FL_ERR_CORRUPT;
	}
	if (after && after->seq != previous_seq + 1) {
		fail_gap(v, name, 0, previous_seq, after->seq,
			 previous_seq
			     ? ", the line after the range"
			     : ", the line after the range, and there is no line before it");
		return FL_ERR_CORRUPT;
	}
	if (after)
		return check_inclusion(v, log, after, bounds_name, after_line_no);
	if (previous_seq != size) {
		fail(v, name, 0,
		     "the line after the range is missing: last exported seq %" PRIu64
		     " < tree size %" PRIu64 " and no boundary line in %s",
		     previous_seq, size, bounds_name);
		return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

/* ---- key trust ------------------------------------------------------------- */

static int by_seq(const void *a, const void *b)
{
	const struct key_event *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * The key trust pass over one log (see fl_bundle_verify_trusted), once
 * everything else holds: the checkpoints in order, each after the key
 * events it covers; then the keys of the exported lines.
 */
static enum fl_status check_trust(struct verify *v, struct fl_trust *trust, enum fl_bundle_log log)
{
	const char *chain_name =
	    log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_CHECKPOINTS : FL_BUNDLE_READ_CHECKPOINTS;
	const char *lines_name = log == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENTS : FL_BUNDLE_READS;
	size_t n_events = log == FL_BUNDLE_LOG_EVENTS ? v->n_key_events : 0, next_event = 0;
	size_t n_key_cps = log == FL_BUNDLE_LOG_EVENTS ? v->n_key_cps : 0;
	enum fl_status st = FL_OK;

	if (v->n_cps[log] == 0)
		return FL_OK;
	/* Both checkpoint files, merged in ascending tree size. */
	size_t chain_i = 0, key_i = 0;
	if (fl_trust_count(trust) == 0) {
		uint8_t pub[FL_PUBKEY_LEN];
		const char *key_id = n_key_cps && v->key_cps[0].tree_size < v->cps[log][0].tree_size
					 ? v->key_cps[0].key_id
					 : v->cps[log][0].key_id;
		if (!fl_bundle_keys_find(v->keys, key_id, pub))
			return FL_ERR_CORRUPT; /* the checkpoint check found it */
		if ((st = fl_trust_add(trust, pub)) != FL_OK)
			return st;
		memcpy(v->report->tofu_key[log], key_id, FL_KEY_ID_HEX_LEN);
	}
	if (n_events > 1)
		qsort(v->key_events, n_events, sizeof(*v->key_events), by_seq);
	while (chain_i < v->n_cps[log] || key_i < n_key_cps) {
		bool from_keys = key_i < n_key_cps &&
				 (chain_i == v->n_cps[log] ||
				  v->key_cps[key_i].tree_size <= v->cps[log][chain_i].tree_size);
		const struct fl_checkpoint *cp =
		    from_keys ? &v->key_cps[key_i++] : &v->cps[log][chain_i++];
		const char *name = from_keys ? FL_BUNDLE_KEY_CHECKPOINTS : chain_name;
		uint64_t line_no = from_keys ? key_i : chain_i;
		/* the key events it covers: vouched for by their line signature */
		for (; next_event < n_events && v->key_events[next_event].seq <= cp->tree_size;
		     next_event++) {
			struct key_event *event = &v->key_events[next_event];
			if (event->signer[0] && fl_trust_find(trust, event->signer) &&
			    strcmp(event->signer, event->previous) == 0) {
				if ((st = fl_trust_add(trust, event->pub)) != FL_OK)
					return st;
				event->trusted = true;
			}
		}
		const uint8_t *pub = fl_trust_find(trust, cp->key_id);
		if (!pub) {
			fail(v, name, line_no,
			     "checkpoint of tree size %" PRIu64
			     " is signed by key %s, which is not "
			     "trusted (neither given as trusted nor introduced by a key event "
			     "under a "
			     "checkpoint of a trusted key; keys.json listing it does not count)",
			     cp->tree_size, cp->key_id);
			return FL_ERR_CORRUPT;
		}
		if (!fl_checkpoint_verify(fl_bundle_log_prefix(log), cp, pub)) {
			fail(v, name, line_no,
			     "checkpoint of tree size %" PRIu64
			     ": the signature does not verify with the trusted key %s",
			     cp->tree_size, cp->key_id);
			return FL_ERR_CORRUPT;
		}
		/* a trusted checkpoint vouches for every key event it covers */
		for (size_t e = 0; e < next_event; e++)
			if (!v->key_events[e].trusted) {
				if ((st = fl_trust_add(trust, v->key_events[e].pub)) != FL_OK)
					return st;
				v->key_events[e].trusted = true;
			}
	}
	for (size_t i = 0; i < v->n_signers[log]; i++)
		if (!fl_trust_find(trust, v->signers[log][i])) {
			fail(
			    v, lines_name, 0,
			    "lines are signed by key %s, which is not trusted (neither given as "
			    "trusted nor introduced by a key event under a checkpoint of a trusted "
			    "key)",
			    v->signers[log][i]);
			return FL_ERR_CORRUPT;
		}
	return FL_OK;
}

enum fl_status fl_bundle_verify(const char *dir, fl_bundle_progress_fn progress, void *ctx,
				struct fl_bundle_report *ret_report)
{
	return fl_bundle_verify_trusted(dir, NULL, progress, ctx, ret_report);
}

enum fl_status fl_bundle_verify_trusted(const char *dir, struct fl_trust *given,
					fl_bundle_progress_fn progress, void *ctx,
					struct fl_bundle_report *ret_report)
{
	struct verify v = {
	    .dir = dir, .report = ret_report, .progress = progress, .progress_ctx = ctx};
	struct fl_trust *own[2] = {NULL, NULL};
	enum fl_status st;

	if (!dir || !ret_report)
		return FL_ERR_INVALID;
	memset(ret_report, 0, sizeof(*ret_report));
	if ((st = check_keys(&v)) != FL_OK ||
	    (st = check_checkpoints(&v, FL_BUNDLE_LOG_EVENTS)) != FL_OK ||
	    (st = check_key_checkpoints(&v)) != FL_OK ||
	    (st = check_checkpoints(&v, FL_BUNDLE_LOG_READS)) != FL_OK ||
	    (st = check_range(&v)) != FL_OK ||
	    (st = check_boundaries(&v, FL_BUNDLE_LOG_EVENTS)) != FL_OK ||
	    (st = check_boundaries(&v, FL_BUNDLE_LOG_READS)) != FL_OK ||
	    (st = reader_open(&v, FL_BUNDLE_INCLUSION, &v.inclusion)) != FL_OK)
		goto out;
	if ((st = check_lines(&v, FL_BUNDLE_LOG_EVENTS)) != FL_OK ||
	    (st = check_lines(&v, FL_BUNDLE_LOG_READS)) != FL_OK)
		goto out;
	st = reader_next(&v, &v.inclusion);
	if (st == FL_OK) {
		fail(&v, FL_BUNDLE_INCLUSION, v.inclusion.line_no,
		     "a proof without an exported or boundary line (every line's proof came "
		     "before it)");
		st = FL_ERR_CORRUPT;
	} else if (st == FL_ERR_NOT_FOUND) {
		st = FL_OK;
	}
	/* Keys given: one set for both logs. None: each log trusts its first key.
	 * No set at all (the exporter's own check): keys.json is trusted. */
	for (int log = 0; given && st == FL_OK && log < 2; log++) {
		struct fl_trust *trust = given;
		if (fl_trust_count(given) == 0 && (st = fl_trust_create(&own[log])) == FL_OK)
			trust = own[log];
		if (st == FL_OK)
			st = check_trust(&v, trust, (enum fl_bundle_log)log);
	}
out:
	fl_trust_destroy(own[0]);
	fl_trust_destroy(own[1]);
	for (int log = 0; log < 2; log++) {
		free(v.cps[log]);
		free(v.signers[log]);
	}
	free(v.key_events);
	free(v.key_cps);
	for (int log = 0; log < 2; log++)
		for (int side = BEFORE; side <= AFTER; side++)
			if (v.has_boundary[log][side])
				fl_log_line_finish(&v.boundary[log][side]);
	reader_close(&v.inclusion);
	fl_bundle_keys_destroy(v.keys);
	if (st == FL_ERR_NOMEM && !ret_report->item[0])
		fail(&v, dir, 0, "out of memory");
	return st;
}
