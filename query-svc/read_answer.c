/*
 * Answers of read plans (read_answer.h), written as text straight from the
 * read models (this is the hot path): values stay the bytes of their signed
 * events, in the row answers, the proofs and the Feast columns alike.
 */
#include "read_answer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/event.h"
#include "fledger/jsonw.h"
#include "fledger/logroutes.h"
#include "fledger/util.h"

#define FEAST_NO_TIME "1970-01-01T00:00:00Z"

/* What one run of a plan works with, and where its result goes. */
struct answer_run {
	const struct fl_read_plan *plan;
	const struct fl_read_sources *sources;
	const char *read_id;
	uint64_t cost_limit;
	struct fl_read_result *result;
};

/* Fills err with the 500 of an internal failure; returns st. */
static enum fl_status fail_internal(struct fl_error *err, enum fl_status st)
{
	fl_error_set(err, 500, "internal_error", NULL, "%s", fl_status_str(st));
	return st;
}

static enum fl_status served_add(struct fl_read_result *result, uint64_t seq)
{
	fl_text_append(&result->served_buf, &seq, sizeof(seq));
	return result->served_buf.failed ? FL_ERR_NOMEM : FL_OK;
}

/* A read snapshot of the read models; the result names its log prefix. */
static enum fl_status read_begin(struct answer_run *run, struct fl_projection_read **ret_read)
{
	enum fl_status st = fl_projection_read_begin(run->sources->projection, ret_read);
	if (st == FL_OK)
		run->result->applied_seq = fl_projection_read_applied_seq(*ret_read);
	return st;
}

static bool take_written(struct answer_run *run, struct fl_jw *w)
{
	run->result->body = fl_jw_take(w, &run->result->len);
	run->result->content_type = "application/json";
	return run->result->body != NULL;
}

static json_t *hash_list(uint8_t hashes[][FL_HASH_LEN], size_t count)
{
	json_t *list = json_array();
	for (size_t i = 0; list && i < count; i++) {
		char hex[2 * FL_HASH_LEN + 1];
		fl_hex_encode(hashes[i], FL_HASH_LEN, hex);
		json_array_append_new(list, json_string(hex));
	}
	return list;
}

/*
 * Whether the principal may read every feature of the stored event entry:
 * its line carries them all (CONTRACT §6). Otherwise err is the 403
 * proof_forbidden naming the first feature it may not read, served_name
 * being the feature whose proof it is. A feature the view does not know
 * (never expected: features are never removed) counts as unreadable, and a
 * body that does not parse as a feature event is FL_ERR_CORRUPT.
 */
static enum fl_status line_readable(const struct fl_read_plan *plan, const struct fl_view *view,
				    const struct fl_log_entry *entry, const char *served_name,
				    struct fl_error *err)
{
	struct fl_stored_event event;
	enum fl_status st = fl_stored_event_parse(entry->body, entry->body_len, &event);
	if (st != FL_OK)
		return st;
	if (event.kind != FL_BODY_FEATURE) {
		fl_stored_event_finish(&event);
		return FL_ERR_CORRUPT;
	}
	const char *name;
	const json_t *value;
	json_object_foreach((json_t *)event.features, name, value)
	{
		const struct fl_feature *f = fl_view_feature(view, name);
		if (f && fl_read_feature_readable(plan->principal, f))
			continue;
		fl_error_set(err, 403, "proof_forbidden", "proof",
			     "%s may not read feature %s, which the signed line of seq %" PRIu64
			     " (the proof of %s) carries: a proof is served only when every "
			     "feature of its event may be read",
			     fl_principal_name(plan->principal), name, entry->seq, served_name);
		fl_stored_event_finish(&event);
		return FL_ERR_DENIED;
	}
	fl_stored_event_finish(&event);
	return FL_OK;
}

/*
 * The "proof" of the value of seq (CONTRACT §6): the event's log line and its
 * inclusion proof in the tree of checkpoint tree_size (strings and integers
 * only). FL_ERR_NOT_FOUND when the checkpoint does not cover seq;
 * FL_ERR_DENIED (err filled) when the principal may not read every feature
 * of the event (see line_readable).
 */
static enum fl_status proof_object(const struct fl_read_plan *plan, const struct fl_view *view,
				   struct fl_log_reader *reader, uint64_t seq, uint64_t tree_size,
				   const char *served_name, json_t **ret_proof,
				   struct fl_error *err)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	struct fl_log_entry entry;
	char *text;
	size_t len;

	if (seq == 0 || seq > tree_size)
		return FL_ERR_NOT_FOUND;
	enum fl_status st = fl_log_reader_get(reader, seq, &entry);
	if (st == FL_OK)
		st = line_readable(plan, view, &entry, served_name, err);
	if (st != FL_OK || (st = fl_log_entry_line(&entry, &text, &len)) != FL_OK)
		return st;
	json_t *line = json_loadb(text, len, 0, NULL);
	free(text);
	if (!line)
		return FL_ERR_NOMEM;
	st = fl_log_reader_inclusion_proof(reader, seq, tree_size, hashes, &count);
	if (st != FL_OK) {
		json_decref(line);
		return st;
	}
	*ret_proof =
	    json_pack("{s:o,s:I,s:I,s:o}", "line", line, "leaf_index", (json_int_t)(seq - 1),
		      "tree_size", (json_int_t)tree_size, "hashes", hash_list(hashes, count));
	return *ret_proof ? FL_OK : FL_ERR_NOMEM;
}

/*
 * Begins the proof of a read: the latest checkpoint the replica verified.
 * *ret_checkpoint is its JSON (json null when the replica is empty).
 */
static enum fl_status proof_begin(struct fl_log *replica, struct fl_log_reader **ret_reader,
				  uint64_t *ret_tree_size, json_t **ret_checkpoint)
{
	struct fl_checkpoint cp;
	char *text;
	enum fl_status st = fl_log_reader_begin(replica, ret_reader);
	if (st != FL_OK)
		return st;
	st = fl_log_reader_checkpoint(*ret_reader, 0, &cp);
	if (st == FL_ERR_NOT_FOUND) {
		*ret_tree_size = 0;
		*ret_checkpoint = json_null();
		return FL_OK;
	}
	if (st == FL_OK)
		st = fl_checkpoint_json(&cp, &text);
	if (st != FL_OK) {
		fl_log_reader_end(*ret_reader);
		return st;
	}
	*ret_checkpoint = json_loads(text, 0, NULL);
	free(text);
	if (!*ret_checkpoint) {
		fl_log_reader_end(*ret_reader);
		return FL_ERR_NOMEM;
	}
	*ret_tree_size = cp.tree_size;
	return FL_OK;
}

/*
 * The features of one row with a "proof" added to every served value
 * (proof=1). The text is copied member by member, so that values stay the
 * bytes of their signed events; a proof goes before its object's closing
 * brace.
 */
static enum fl_status write_features_with_proofs(const struct fl_read_plan *plan,
						 struct fl_log_reader *reader, uint64_t tree_size,
						 const struct fl_read_answer *answer,
						 struct fl_jw *w, struct fl_error *err)
{
	struct fl_json_member m;
	size_t pos = 0;
	int more;

	fl_jw_open(w, '{');
	while ((more = fl_json_next_member(answer->features, answer->features_len, &pos, &m)) ==
	       1) {
		const char *seq_text;
		size_t seq_len;
		fl_jw_sep(w);
		fl_jw_strn(w, m.key, m.key_len);
		fl_jw_char(w, ':');
		if (!fl_json_member(m.value, m.value_len, "seq", &seq_text, &seq_len)) {
			fl_jw_raw(w, m.value, m.value_len);
			continue;
		}
		char digits[24], *end;
		if (seq_len > 20) /* more digits than any uint64 */
			return FL_ERR_CORRUPT;
		snprintf(digits, sizeof(digits), "%.*s", (int)seq_len, seq_text);
		unsigned long long seq = strtoull(digits, &end, 10);
		char served_name[FL_NAME_MAX_LEN + 1];
		snprintf(served_name, sizeof(served_name), "%.*s", (int)m.key_len, m.key);
		json_t *proof = NULL;
		enum fl_status st =
		    end != digits && *end == '\0'
			? proof_object(plan, plan->parts[0].view, reader, (uint64_t)seq, tree_size,
				       served_name, &proof, err)
			: FL_ERR_CORRUPT;
		char *text = st == FL_OK ? json_dumps(proof, JSON_COMPACT) : NULL;
		json_decref(proof);
		if (st == FL_OK && !text)
			st = FL_ERR_NOMEM;
		if (st != FL_OK)
			return st;
		fl_jw_raw(w, m.value, m.value_len - 1); /* without its '}' */
		fl_jw_raw(w, ",\"proof\":", 9);
		fl_jw_raw(w, text, strlen(text));
		fl_jw_char(w, '}');
		free(text);
	}
	fl_jw_close(w, '}');
	return more == 0 ? FL_OK : FL_ERR_CORRUPT;
}

/* One row: {"view","entity_id","as_of","features","windows"} (open at the end). */
static enum fl_status write_row(const struct fl_read_plan *plan, struct fl_log_reader *reader,
				uint64_t tree_size, const char *entity_id, int64_t as_of_us,
				const struct fl_read_answer *answer, struct fl_jw *w,
				struct fl_error *err)
{
	fl_jw_open(w, '{');
	fl_jw_key(w, "view");
	fl_jw_str(w, fl_view_name(plan->parts[0].view));
	fl_jw_key(w, "entity_id");
	fl_jw_str(w, entity_id);
	fl_jw_key(w, "as_of");
	fl_jw_time(w, as_of_us);
	fl_jw_key(w, "features");
	if (reader) {
		enum fl_status st =
		    write_features_with_proofs(plan, reader, tree_size, answer, w, err);
		if (st != FL_OK)
			return st;
	} else {
		fl_jw_raw(w, answer->features, answer->features_len);
	}
	fl_jw_key(w, "windows");
	fl_jw_raw(w, answer->windows, answer->windows_len);
	return FL_OK;
}

struct id_index {
	const char *id;
	size_t index;
};

static int compare_id_index(const void *a, const void *b)
{
	const struct id_index *x = a, *y = b;
	int order = strcmp(x->id, y->id);
	return order ? order : (x->index > y->index) - (x->index < y->index);
}

/*
 * For each of the plan's entity ids, the index of its first occurrence
 * (ret_first) and, at that first index, the index of its last occurrence
 * (ret_last): a batch that names an id several times computes it once.
 * FL_ERR_NOMEM.
 */
static enum fl_status find_repeats(const struct fl_read_plan *plan, size_t **ret_first,
				   size_t **ret_last)
{
	size_t n = plan->n_entities;
	struct id_index *sorted = malloc(n * sizeof(*sorted));
	size_t *first = malloc(n * sizeof(*first)), *last = malloc(n * sizeof(*last));
	if (!sorted || !first || !last) {
		free(sorted);
		free(first);
		free(last);
		return FL_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++)
		sorted[i] = (struct id_index){plan->entity_ids[i], i};
	qsort(sorted, n, sizeof(*sorted), compare_id_index);
	for (size_t i = 0; i < n; i++) {
		bool repeat = i > 0 && strcmp(sorted[i].id, sorted[i - 1].id) == 0;
		first[sorted[i].index] = repeat ? first[sorted[i - 1].index] : sorted[i].index;
		last[first[sorted[i].index]] = sorted[i].index; /* ascending within a run */
	}
	free(sorted);
	*ret_first = first;
	*ret_last = last;
	return FL_OK;
}

/* A timestamp as protobuf's JSON writes it: 0, 3 or 6 fractional digits. */
static void feast_time(int64_t us, char out[FL_TIME_TEXT_LEN])
{
	fl_time_format(us, out); /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
	if (strcmp(out + 20, "000000Z") == 0)
		strcpy(out + 19, "Z");
	else if (strcmp(out + 23, "000Z") == 0)
		strcpy(out + 23, "Z");
}

/* Which list of a Feast result column is being written. */
enum feast_list { FEAST_VALUES, FEAST_STATUSES, FEAST_TIMES };

/*
 * One cell of a feature or window column, from the answer's text: the value
 * as its stored bytes (null when absent), the status, or the timestamp
 * (a feature's event_ts; a window's as_of).
 */
static void write_feast_cell(struct fl_jw *w, const struct fl_read_answer *answer, bool is_window,
			     const char *name, const char *as_of, enum feast_list list)
{
	const char *cell = NULL, *text = NULL;
	size_t cell_len = 0, text_len = 0;
	if (is_window)
		fl_json_member(answer->windows, answer->windows_len, name, &cell, &cell_len);
	else
		fl_json_member(answer->features, answer->features_len, name, &cell, &cell_len);
	switch (list) {
	case FEAST_VALUES:
		if (cell && fl_json_member(cell, cell_len, "value", &text, &text_len))
			fl_jw_raw(w, text, text_len);
		else
			fl_jw_raw(w, "null", 4);
		return;
	case FEAST_STATUSES:
		if (is_window)
			fl_jw_str(w, "PRESENT");
		else if (cell && fl_json_member(cell, cell_len, "status", &text, &text_len))
			fl_jw_raw(w, text, text_len); /* a JSON string already */
		else
			fl_jw_str(w, "NOT_FOUND");
		return;
	case FEAST_TIMES: {
		char stamp[FL_TIME_TEXT_LEN] = FEAST_NO_TIME, event_ts[FL_TIME_TEXT_LEN + 2];
		int64_t event_us;
		if (is_window) {
			fl_jw_str(w, as_of);
			return;
		}
		if (cell && fl_json_member(cell, cell_len, "event_ts", &text, &text_len) &&
		    text_len >= 2 && text_len - 2 < sizeof(event_ts)) {
			memcpy(event_ts, text + 1, text_len - 2); /* without the quotes */
			event_ts[text_len - 2] = '\0';
			if (fl_time_parse(event_ts, &event_us) == FL_OK)
				feast_time(event_us, stamp);
		}
		fl_jw_str(w, stamp);
		return;
	}
	}
}

/*
 * GET /v1/features/... and POST /v1/features:batch. Rows keep the order of
 * the ids asked for; an id named again repeats its row.
 */
static enum fl_status answer_rows(struct answer_run *run)
{
	const struct fl_read_plan *plan = run->plan;
	struct fl_error *err = &run->result->err;
	struct fl_projection_read *read;
	const struct fl_read_part *part = &plan->parts[0];
	struct fl_log_reader *reader = NULL;
	uint64_t tree_size = 0;
	json_t *checkpoint = NULL;
	struct fl_jw w;

	size_t *first = NULL, *last = NULL;
	struct fl_read_answer one, *answers = NULL;

	enum fl_status st = FL_OK;
	if (plan->n_entities > 1) {
		st = find_repeats(plan, &first, &last);
		answers = st == FL_OK ? calloc(plan->n_entities, sizeof(*answers)) : NULL;
		if (st == FL_OK && !answers)
			st = FL_ERR_NOMEM;
	}
	if (st == FL_OK)
		st = read_begin(run, &read);
	if (st != FL_OK) {
		free(first);
		free(last);
		free(answers);
		return fail_internal(err, st);
	}
	fl_projection_read_limit_cost(read, run->cost_limit);
	if (plan->proof &&
	    (st = proof_begin(run->sources->replica, &reader, &tree_size, &checkpoint)) != FL_OK) {
		fl_projection_read_end(read);
		free(first);
		free(last);
		free(answers);
		return fail_internal(err, st);
	}
	uint64_t applied_seq = fl_projection_read_applied_seq(read);
	int64_t as_of_us = plan->as_of_given ? plan->as_of_us : fl_time_now_us();
	struct fl_read_request request = {
	    .view = part->view,
	    .as_of_us = as_of_us,
	    .features = part->features,
	    .n_features = part->n_features,
	    .windows = part->windows,
	    .n_windows = part->n_windows,
	    .with_window_seqs = plan->proof,
	};
	fl_jw_init(&w);
	if (plan->kind != FL_READ_ONE) {
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "rows");
		fl_jw_open(&w, '[');
	}
	for (size_t i = 0; st == FL_OK && i < plan->n_entities; i++) {
		size_t f = first ? first[i] : i;
		struct fl_read_answer *answer = answers ? &answers[f] : &one;
		if (f == i) {
			request.entity_id = plan->entity_ids[i];
			st = fl_projection_query(read, &request, answer, err);
			if (st != FL_OK)
				break;
			for (size_t k = 0; st == FL_OK && k < answer->n_served; k++)
				st = served_add(run->result, answer->served_seqs[k]);
		}
		if (plan->kind != FL_READ_ONE)
			fl_jw_sep(&w);
		if (st == FL_OK)
			st = write_row(plan, reader, tree_size, plan->entity_ids[i], as_of_us,
				       answer, &w, err);
		if (!last || last[f] == i)
			fl_read_answer_finish(answer);
		if (plan->kind != FL_READ_ONE)
			fl_jw_close(&w, '}');
	}
	fl_projection_read_end(read);
	if (reader)
		fl_log_reader_end(reader);
	for (size_t i = 0; answers && i < plan->n_entities; i++)
		fl_read_answer_finish(&answers[i]); /* those kept for a repeat not reached */
	free(first);
	free(last);
	free(answers);
	if (st != FL_OK) {
		fl_jw_free(&w);
		json_decref(checkpoint);
		if (st == FL_ERR_INVALID && err->http_status)
			return st;
		if (st == FL_ERR_DENIED && err->http_status) {
			run->result->served_buf.len = 0; /* refused: nothing was served */
			return st;
		}
		if (st == FL_ERR_NOT_FOUND && plan->proof) {
			fl_error_set(err, 503, "proof_unavailable", NULL,
				     "the replica holds no checkpoint covering a served value yet; "
				     "retry");
			return st;
		}
		return fail_internal(err, st);
	}
	if (plan->kind != FL_READ_ONE)
		fl_jw_close(&w, ']');
	fl_jw_key(&w, "applied_seq");
	fl_jw_u64(&w, applied_seq);
	fl_jw_key(&w, "read_id");
	fl_jw_str(&w, run->read_id);
	if (checkpoint) {
		char *text = json_dumps(checkpoint, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(checkpoint);
		if (!text) {
			fl_jw_free(&w);
			return fail_internal(err, FL_ERR_NOMEM);
		}
		fl_jw_key(&w, "checkpoint");
		fl_jw_raw(&w, text, strlen(text));
		free(text);
	}
	fl_jw_close(&w, '}');
	return take_written(run, &w) ? FL_OK : fail_internal(err, FL_ERR_NOMEM);
}

/*
 * POST /get-online-features: Feast's columnar answer, the entity column
 * first.
 */
static enum fl_status answer_feast(struct answer_run *run)
{
	const struct fl_read_plan *plan = run->plan;
	struct fl_error *err = &run->result->err;
	struct fl_projection_read *read;
	char as_of[FL_TIME_TEXT_LEN];
	size_t n_answers = plan->n_entities * plan->n_parts;
	struct fl_read_answer *answers = calloc(n_answers, sizeof(*answers));
	size_t *first = NULL, *last = NULL;

	enum fl_status st = answers ? find_repeats(plan, &first, &last) : FL_ERR_NOMEM;
	if (st == FL_OK)
		st = read_begin(run, &read);
	if (st != FL_OK) {
		free(answers);
		free(first);
		free(last);
		return fail_internal(err, st);
	}
	fl_projection_read_limit_cost(read, run->cost_limit);
	int64_t as_of_us = plan->as_of_given ? plan->as_of_us : fl_time_now_us();
	feast_time(as_of_us, as_of);
	/* An id named again is computed once; its cells repeat the first one's. */
	for (size_t e = 0; st == FL_OK && e < plan->n_entities; e++)
		for (size_t p = 0; st == FL_OK && first[e] == e && p < plan->n_parts; p++) {
			const struct fl_read_part *part = &plan->parts[p];
			struct fl_read_request request = {
			    .view = part->view,
			    .entity_id = plan->entity_ids[e],
			    .as_of_us = as_of_us,
			    .features = part->features,
			    .n_features = part->n_features,
			    .windows = part->windows,
			    .n_windows = part->n_windows,
			};
			st = fl_projection_query(read, &request, &answers[e * plan->n_parts + p],
						 err);
		}
	fl_projection_read_end(read);

	char *entity_values = st == FL_OK ? json_dumps(plan->entity_values, JSON_COMPACT) : NULL;
	if (st == FL_OK && !entity_values)
		st = FL_ERR_NOMEM;
	struct fl_jw w;
	fl_jw_init(&w);
	if (st == FL_OK) {
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "metadata");
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "feature_names");
		fl_jw_open(&w, '[');
		fl_jw_sep(&w);
		fl_jw_str(&w, plan->entity_column);
		for (size_t c = 0; c < plan->n_columns; c++) {
			fl_jw_sep(&w);
			fl_jw_str(&w, plan->columns[c].name);
		}
		fl_jw_close(&w, ']');
		fl_jw_close(&w, '}');
		fl_jw_key(&w, "results");
		fl_jw_open(&w, '[');
		/* The entity column: the ids as sent, PRESENT, no timestamp. */
		fl_jw_sep(&w);
		fl_jw_open(&w, '{');
		fl_jw_key(&w, "values");
		fl_jw_raw(&w, entity_values, strlen(entity_values));
		for (int list = FEAST_STATUSES; list <= FEAST_TIMES; list++) {
			fl_jw_key(&w, list == FEAST_STATUSES ? "statuses" : "event_timestamps");
			fl_jw_open(&w, '[');
			for (size_t e = 0; e < plan->n_entities; e++) {
				fl_jw_sep(&w);
				fl_jw_str(&w, list == FEAST_STATUSES ? "PRESENT" : FEAST_NO_TIME);
			}
			fl_jw_close(&w, ']');
		}
		fl_jw_close(&w, '}');
	}
	static const char *const list_names[] = {"values", "statuses", "event_timestamps"};
	for (size_t c = 0; st == FL_OK && c < plan->n_columns; c++) {
		const struct fl_feast_column *col = &plan->columns[c];
		const struct fl_read_part *part = &plan->parts[col->part];
		const char *name = col->is_window ? part->windows[col->index]->name
						  : part->features[col->index]->name;
		fl_jw_sep(&w);
		fl_jw_open(&w, '{');
		for (int list = FEAST_VALUES; list <= FEAST_TIMES; list++) {
			fl_jw_key(&w, list_names[list]);
			fl_jw_open(&w, '[');
			for (size_t e = 0; e < plan->n_entities; e++) {
				fl_jw_sep(&w);
				write_feast_cell(&w, &answers[first[e] * plan->n_parts + col->part],
						 col->is_window, name, as_of,
						 (enum feast_list)list);
			}
			fl_jw_close(&w, ']');
		}
		fl_jw_close(&w, '}');
	}
	for (size_t i = 0; i < n_answers; i++) {
		for (size_t k = 0; st == FL_OK && k < answers[i].n_served; k++)
			st = served_add(run->result, answers[i].served_seqs[k]);
	}
	for (size_t i = 0; i < n_answers; i++)
		fl_read_answer_finish(&answers[i]);
	free(answers);
	free(first);
	free(last);
	free(entity_values);
	if (st != FL_OK) {
		fl_jw_free(&w);
		if (st == FL_ERR_INVALID && err->http_status)
			return st;
		return fail_internal(err, st);
	}
	fl_jw_close(&w, ']');
	fl_jw_close(&w, '}');
	return take_written(run, &w) ? FL_OK : fail_internal(err, FL_ERR_NOMEM);
}

static enum fl_status collect_seq(void *ctx, uint64_t seq)
{
	return served_add(ctx, seq);
}

/* GET /v1/history/...: the entity's log lines, NDJSON, oldest event first. */
static enum fl_status answer_history(struct answer_run *run)
{
	const struct fl_read_plan *plan = run->plan;
	struct fl_read_result *result = run->result;
	struct fl_projection_read *read;
	struct fl_log_reader *reader;

	enum fl_status st = read_begin(run, &read);
	if (st != FL_OK)
		return fail_internal(&result->err, st);
	st = fl_projection_history(read, fl_view_name(plan->parts[0].view), plan->entity_ids[0],
				   plan->from_us, plan->to_us, plan->limit, collect_seq, result);
	fl_projection_read_end(read);
	/* The replica holds at least what the projection applied. */
	if (st != FL_OK || (st = fl_log_reader_begin(run->sources->replica, &reader)) != FL_OK)
		return fail_internal(&result->err, st);
	const uint64_t *seqs = (const uint64_t *)(const void *)result->served_buf.data;
	size_t n = result->served_buf.len / sizeof(*seqs);
	struct fl_ndjson nd = {0};
	for (size_t i = 0; st == FL_OK && i < n; i++)
		st = fl_ndjson_add_seq(&nd, reader, seqs[i]);
	fl_log_reader_end(reader);
	if (st != FL_OK) {
		fl_text_free(&nd.text);
		return fail_internal(&result->err, st);
	}
	result->body = fl_text_take(&nd.text, &result->len);
	if (result->body == NULL)
		return fail_internal(&result->err, FL_ERR_NOMEM);
	result->content_type = "application/x-ndjson";
	return FL_OK;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

enum fl_status fl_read_answer_plan(const struct fl_read_plan *plan,
				   const struct fl_read_sources *sources, const char *read_id,
				   uint64_t cost_limit, struct fl_read_result *result)
{
	*result = (struct fl_read_result){0};
	fl_error_clear(&result->err);
	struct answer_run run = {plan, sources, read_id, cost_limit, result};
	enum fl_status st;
	switch (plan->kind) {
	case FL_READ_FEAST:
		st = answer_feast(&run);
		break;
	case FL_READ_HISTORY:
		st = answer_history(&run);
		break;
	case FL_READ_ONE:
	case FL_READ_BATCH:
	default:
		st = answer_rows(&run);
		break;
	}
	/* The served seqs, ascending without repeats (the audit's served_seqs). */
	uint64_t *seqs = (uint64_t *)(void *)result->served_buf.data;
	size_t n = result->served_buf.len / sizeof(*seqs), kept = n ? 1 : 0;
	if (n > 1) {
		qsort(seqs, n, sizeof(*seqs), compare_u64);
		for (size_t i = 1; i < n; i++)
			if (seqs[i] != seqs[kept - 1])
				seqs[kept++] = seqs[i];
	}
	result->served = seqs;
	result->n_served = kept;
	return st;
}

void fl_read_result_finish(struct fl_read_result *result)
{
	free(result->body);
	fl_text_free(&result->served_buf);
	*result = (struct fl_read_result){0};
}
