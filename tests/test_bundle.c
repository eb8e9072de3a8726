/*
 * The audit bundle (cli/bundle.h): a real bundle is built from two
 * in-process signed logs (an event log whose key is rotated midway, and a
 * read-audit log with its own key and checkpoint prefix) with the writer
 * functions `fledger audit export` uses; fl_bundle_verify must accept it,
 * and must reject it, naming the bad item, after any one of: a changed
 * byte, a deleted line, two swapped lines, a checkpoint replaced by an
 * older one, a missing file, lines moved from one log to the other.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "eventlog/eventlog.h"
#include "eventlog/trust.h"
#include "fledger/util.h"

#define EVENT_COMMITS 6 /* of 2 events each; the key changes after the third */
#define READ_COMMITS 4	/* of 2 reads each */
#define T0 INT64_C(1800000000000000)
#define SEC INT64_C(1000000)
/*
 * Times: event seqs 1-6 at T0 + 0..5 s, the key event (seq 7) at T0 + 5.5 s,
 * seqs 8-13 at T0 + 6..11 s; read seqs 1-8 at T0 + 0..7 s. The default range,
 * [T0 + 3 s, T0 + 8.5 s], exports event seqs 4-10 between the boundary lines
 * 3 and 11, and read seqs 4-8 after the boundary line 3 (the end of the log).
 */
#define RANGE_FROM (T0 + 3 * SEC)
#define RANGE_TO (T0 + 8 * SEC + SEC / 2)
#define EVENTS_FROM 4 /* the first exported event seq */
#define EVENTS_TO 10
#define READS_FROM 4

static char tmpdir[256], bundle[300];
static struct fl_signer *event_key, *event_key2, *read_key;
static struct fl_log *event_log, *read_log;

/* Every checkpoint line of each log, kept to replace one with an older one. */
static struct fl_checkpoint event_cps[16], read_cps[16];
static size_t n_event_cps, n_read_cps;
static struct fl_checkpoint first_event_cp, first_read_cp; /* line 1 of each file */

static void append_events(struct fl_log *log, int commit, bool reads)
{
	struct fl_log_input inputs[2];
	struct fl_log_result results[2];
	char tails[2][300], ts[FL_TIME_TEXT_LEN];
	for (int i = 0; i < 2; i++) {
		int64_t t = T0 + (int64_t)(commit * 2 + i) * SEC;
		fl_time_format(t, ts);
		int n =
		    reads
			? snprintf(tails[i], sizeof(tails[i]),
				   "\"kind\":\"read\",\"read_id\":\"r-%d-%d\",\"ts\":\"%s\","
				   "\"principal\":\"ranker\",\"route\":\"/v1/features\","
				   "\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
				   "\"features\":[],\"windows\":[],\"served_seqs\":[%d],"
				   "\"answer_sha256\":\"%064d\",\"status\":200",
				   commit, i, ts, commit + 1, 0)
			: snprintf(tails[i], sizeof(tails[i]),
				   "\"kind\":\"feature\",\"view\":\"user_activity\","
				   "\"entity_id\":\"u%d\",\"event_ts\":\"%s\",\"ingest_ts\":\"%s\","
				   "\"producer\":\"p\",\"features\":{\"dwell_ms\":%d.5}",
				   i, ts, ts, commit);
		inputs[i] = (struct fl_log_input){
		    .body_tail = tails[i], .body_tail_len = (size_t)n, .time_us = t};
	}
	struct fl_log_batch batch = {inputs, 2, results, FL_OK, 0};
	cr_assert_eq(fl_log_append(log, &batch, 1, NULL), FL_OK);
}

static void write_line(struct fl_log_reader *reader, uint64_t seq, FILE *out)
{
	struct fl_log_entry entry;
	char *line;
	cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
	cr_assert_eq(fl_log_entry_line(&entry, &line, NULL), FL_OK);
	fprintf(out, "%s\n", line);
	free(line);
}

/*
 * Writes one log's part of the bundle for the range [from_us, to_us] as
 * `fledger audit export` does: the run of lines from the first to the last
 * in range (the times grow with seq here), the boundary lines, the
 * checkpoints and one proof per line, boundary lines included; for the
 * event log (key_checkpoints not NULL), the checkpoint of each exported key
 * event's commit with its consistency proof to the last checkpoint.
 */
static void export_log(struct fl_log *log, enum fl_bundle_log which, int64_t from_us, int64_t to_us,
		       FILE *lines, FILE *boundaries, FILE *checkpoints, FILE *inclusion,
		       FILE *key_checkpoints)
{
	struct fl_log_reader *reader;
	struct fl_checkpoint first, last;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	char *line;

	cr_assert_eq(fl_log_reader_begin(log, &reader), FL_OK);
	uint64_t size = fl_log_reader_size(reader), run_first = size + 1, run_last = size;
	for (uint64_t seq = size; seq >= 1; seq--) {
		struct fl_log_entry entry;
		cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
		if (entry.time_us >= from_us)
			run_first = seq;
		if (entry.time_us > to_us)
			run_last = seq - 1;
	}
	/* now run_first - 1 is the line before (0: none), run_last + 1 the one after */
	for (uint64_t seq = run_first; seq <= run_last; seq++)
		write_line(reader, seq, lines);
	if (run_first > 1)
		write_line(reader, run_first - 1, boundaries);
	if (run_last < size)
		write_line(reader, run_last + 1, boundaries);

	cr_assert_eq(fl_log_reader_checkpoint(reader, 0, &last), FL_OK);
	first = last;
	if (run_first <= run_last)
		cr_assert_eq(fl_log_reader_checkpoint_covering(reader, run_first, &first), FL_OK);
	if (which == FL_BUNDLE_LOG_EVENTS)
		first_event_cp = first;
	else
		first_read_cp = first;
	cr_assert_eq(fl_bundle_checkpoint_line(&first, NULL, 0, &line), FL_OK);
	fprintf(checkpoints, "%s\n", line);
	free(line);
	if (first.tree_size != last.tree_size) {
		cr_assert_eq(fl_log_reader_consistency_proof(reader, first.tree_size,
							     last.tree_size, hashes, &count),
			     FL_OK);
		cr_assert_eq(fl_bundle_checkpoint_line(&last, (const uint8_t(*)[FL_HASH_LEN])hashes,
						       count, &line),
			     FL_OK);
		fprintf(checkpoints, "%s\n", line);
		free(line);
	}
	uint64_t proofs_from = run_first > 1 ? run_first - 1 : 1;
	uint64_t proofs_to = run_last < size ? run_last + 1 : size;
	for (uint64_t seq = proofs_from; seq <= proofs_to; seq++) {
		cr_assert_eq(fl_log_reader_inclusion_proof(reader, seq, size, hashes, &count),
			     FL_OK);
		cr_assert_eq(fl_bundle_inclusion_line(which, seq, size,
						      (const uint8_t(*)[FL_HASH_LEN])hashes, count,
						      &line),
			     FL_OK);
		fprintf(inclusion, "%s\n", line);
		free(line);
	}
	for (uint64_t seq = proofs_from; key_checkpoints && seq <= proofs_to; seq++) {
		struct fl_log_entry entry;
		struct fl_checkpoint cp;
		uint8_t pub[FL_PUBKEY_LEN];
		char previous[FL_KEY_ID_HEX_LEN];
		cr_assert_eq(fl_log_reader_get(reader, seq, &entry), FL_OK);
		if (fl_log_key_event_parse(entry.body, entry.body_len, pub, previous) != FL_OK)
			continue;
		cr_assert_eq(fl_log_reader_checkpoint_covering(reader, seq, &cp), FL_OK);
		count = 0;
		if (cp.tree_size != last.tree_size)
			cr_assert_eq(fl_log_reader_consistency_proof(
					 reader, cp.tree_size, last.tree_size, hashes, &count),
				     FL_OK);
		cr_assert_eq(fl_bundle_checkpoint_line(&cp, (const uint8_t(*)[FL_HASH_LEN])hashes,
						       count, &line),
			     FL_OK);
		fprintf(key_checkpoints, "%s\n", line);
		free(line);
	}
	/* every checkpoint, for the "older checkpoint" tampering */
	struct fl_checkpoint *all = which == FL_BUNDLE_LOG_EVENTS ? event_cps : read_cps;
	size_t *n_all = which == FL_BUNDLE_LOG_EVENTS ? &n_event_cps : &n_read_cps;
	*n_all = 0;
	for (uint64_t s = 1; s <= size && *n_all < 16; s++)
		if (fl_log_reader_checkpoint(reader, s, &all[*n_all]) == FL_OK)
			(*n_all)++;
	fl_log_reader_end(reader);
}

static FILE *open_in(const char *name, const char *mode)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", bundle, name);
	FILE *f = fopen(path, mode);
	cr_assert_not_null(f, "open %s", path);
	return f;
}

static void add_key(json_t *list, const struct fl_signer *key)
{
	json_array_append_new(list,
			      json_pack("{s:s,s:s,s:s}", "key_id", fl_signer_key_id(key), "alg",
					"ed25519", "public_key_pem", fl_signer_public_pem(key)));
}

/* (Re)writes the bundle's lines, boundaries, checkpoints, proofs and range. */
static void build_bundle(int64_t from_us, int64_t to_us)
{
	FILE *event_lines = open_in(FL_BUNDLE_EVENTS, "w"),
	     *read_lines = open_in(FL_BUNDLE_READS, "w");
	FILE *event_boundaries = open_in(FL_BUNDLE_EVENT_BOUNDARIES, "w"),
	     *read_boundaries = open_in(FL_BUNDLE_READ_BOUNDARIES, "w");
	FILE *event_checkpoints = open_in(FL_BUNDLE_EVENT_CHECKPOINTS, "w");
	FILE *read_checkpoints = open_in(FL_BUNDLE_READ_CHECKPOINTS, "w");
	FILE *inclusion = open_in(FL_BUNDLE_INCLUSION, "w");
	FILE *key_checkpoints = open_in(FL_BUNDLE_KEY_CHECKPOINTS, "w");
	export_log(event_log, FL_BUNDLE_LOG_EVENTS, from_us, to_us, event_lines, event_boundaries,
		   event_checkpoints, inclusion, key_checkpoints);
	export_log(read_log, FL_BUNDLE_LOG_READS, from_us, to_us, read_lines, read_boundaries,
		   read_checkpoints, inclusion, NULL);
	fclose(key_checkpoints);
	fclose(event_lines);
	fclose(read_lines);
	fclose(event_boundaries);
	fclose(read_boundaries);
	fclose(event_checkpoints);
	fclose(read_checkpoints);
	fclose(inclusion);

	char *text, path[400];
	size_t len;
	cr_assert_eq(fl_bundle_range_json(from_us, to_us, &text, &len), FL_OK);
	snprintf(path, sizeof(path), "%s/%s", bundle, FL_BUNDLE_RANGE);
	cr_assert_eq(fl_bundle_write_file(path, text, len, 0644), FL_OK);
	free(text);
}

static void setup(void)
{
	char dir[400];
	struct fl_log_result rotated;

	snprintf(tmpdir, sizeof(tmpdir), "%s/fl-bundle-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(bundle, sizeof(bundle), "%s/bundle", tmpdir);
	cr_assert_eq(mkdir(bundle, 0755), 0);
	cr_assert_eq(fl_signer_generate(&event_key), FL_OK);
	cr_assert_eq(fl_signer_generate(&event_key2), FL_OK);
	cr_assert_eq(fl_signer_generate(&read_key), FL_OK);

	snprintf(dir, sizeof(dir), "%s/events", tmpdir);
	cr_assert_eq(fl_log_open(dir, NULL, event_key, &event_log), FL_OK);
	struct fl_log_options read_options = {.checkpoint_prefix = FL_READ_CHECKPOINT_PREFIX};
	snprintf(dir, sizeof(dir), "%s/reads", tmpdir);
	cr_assert_eq(fl_log_open(dir, &read_options, read_key, &read_log), FL_OK);
	for (int c = 0; c < EVENT_COMMITS; c++) {
		append_events(event_log, c, false);
		if (c == 2)
			cr_assert_eq(fl_log_rotate_key(event_log, event_key2,
						       T0 + 5 * SEC + SEC / 2, &rotated),
				     FL_OK);
	}
	for (int c = 0; c < READ_COMMITS; c++)
		append_events(read_log, c, true);
	build_bundle(RANGE_FROM, RANGE_TO);

	/* keys.json as export writes it: the union of both services' lists */
	json_t *command_keys = json_array(), *query_keys = json_array();
	add_key(command_keys, event_key);
	add_key(command_keys, event_key2);
	add_key(query_keys, read_key);
	add_key(query_keys, event_key); /* a repeat is merged away */
	json_t *command_doc = json_pack("{s:o}", "keys", command_keys);
	json_t *query_doc = json_pack("{s:o}", "keys", query_keys);
	struct fl_bundle_keys *keys;
	char why[200], *text, path[400];
	size_t len;
	cr_assert_eq(fl_bundle_keys_parse(command_doc, why, sizeof(why), &keys), FL_OK, "%s", why);
	cr_assert_eq(fl_bundle_keys_merge(keys, query_doc, why, sizeof(why)), FL_OK, "%s", why);
	cr_assert_eq(fl_bundle_keys_count(keys), 3);
	cr_assert_eq(fl_bundle_keys_json(keys, &text, &len), FL_OK);
	snprintf(path, sizeof(path), "%s/%s", bundle, FL_BUNDLE_KEYS);
	cr_assert_eq(fl_bundle_write_file(path, text, len, 0644), FL_OK);
	free(text);
	fl_bundle_keys_destroy(keys);
	json_decref(command_doc);
	json_decref(query_doc);

	struct fl_bundle_info info = {.from = "2027-01-15T08:00:00.000000Z",
				      .to = "2027-01-15T09:00:00.000000Z",
				      .exported_at = "2027-01-15T09:00:01.000000Z"};
	cr_assert_eq(fl_bundle_write_readme(bundle, &info), FL_OK);
}

static void teardown(void)
{
	char cmd[400];
	fl_signer_destroy(event_key);
	fl_signer_destroy(event_key2);
	fl_signer_destroy(read_key);
	n_event_cps = n_read_cps = 0;
	fl_log_close(event_log);
	fl_log_close(read_log);
	event_log = read_log = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(bundle, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------ */

struct file {
	char *text;
	size_t len;
};

static struct file load(const char *name)
{
	struct file f;
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", bundle, name);
	cr_assert_eq(fl_file_read(path, &f.text, &f.len), FL_OK, "read %s", path);
	return f;
}

static void store(const char *name, const char *text, size_t len)
{
	FILE *out = open_in(name, "w");
	cr_assert_eq(fwrite(text, 1, len, out), len);
	fclose(out);
}

/* The offsets of the starts of the lines of f; returns their number. */
static size_t line_starts(const struct file *f, size_t *starts, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < f->len && n < max; i++)
		if (i == 0 || f->text[i - 1] == '\n')
			starts[n++] = i;
	return n;
}

/* Writes f with line a and line b exchanged, or line a removed (b == SIZE_MAX). */
static void store_edited(const char *name, const struct file *f, size_t a, size_t b)
{
	size_t starts[256];
	size_t n = line_starts(f, starts, 256);
	FILE *out = open_in(name, "w");
	for (size_t i = 0; i < n; i++) {
		size_t from = i == a && b != SIZE_MAX ? b : i == b ? a : i;
		size_t end = from + 1 < n ? starts[from + 1] : f->len;
		if (i == a && b == SIZE_MAX)
			continue;
		fwrite(f->text + starts[from], 1, end - starts[from], out);
	}
	fclose(out);
}

/* Verify must fail, naming an item (in file `expect` when not NULL). */
static void assert_rejected(const char *expect, const char *what)
{
	struct fl_bundle_report report;
	enum fl_status st = fl_bundle_verify(bundle, NULL, NULL, &report);
	cr_assert_eq(st, FL_ERR_CORRUPT, "%s: verify passed a tampered bundle", what);
	cr_assert(report.item[0] && report.reason[0], "%s: no item named", what);
	if (expect)
		cr_assert(strncmp(report.item, expect, strlen(expect)) == 0,
			  "%s: named %s (%s), expected %s", what, report.item, report.reason,
			  expect);
}

static void assert_accepted(void)
{
	struct fl_bundle_report report;
	enum fl_status st = fl_bundle_verify(bundle, NULL, NULL, &report);
	cr_assert_eq(st, FL_OK, "verify failed: %s: %s", report.item, report.reason);
}

static const char *const ndjson_files[] = {FL_BUNDLE_EVENTS,
					   FL_BUNDLE_READS,
					   FL_BUNDLE_EVENT_CHECKPOINTS,
					   FL_BUNDLE_READ_CHECKPOINTS,
					   FL_BUNDLE_EVENT_BOUNDARIES,
					   FL_BUNDLE_READ_BOUNDARIES,
					   FL_BUNDLE_INCLUSION};
#define N_NDJSON (sizeof(ndjson_files) / sizeof(ndjson_files[0]))

/* ---- tests ------------------------------------------------------------------ */

Test(bundle, a_genuine_bundle_verifies)
{
	struct fl_bundle_report report;
	enum fl_status st = fl_bundle_verify(bundle, NULL, NULL, &report);
	cr_assert_eq(st, FL_OK, "%s: %s", report.item, report.reason);
	/* 12 feature events and one key event; lines 4-10 between 3 and 11 */
	cr_assert_eq(report.event_lines, EVENTS_TO - EVENTS_FROM + 1);
	cr_assert_eq(report.event_before, EVENTS_FROM - 1);
	cr_assert_eq(report.event_after, EVENTS_TO + 1);
	/* reads 4-8 after 3, up to the end of the log */
	cr_assert_eq(report.read_lines, 2 * READ_COMMITS - (READS_FROM - 1));
	cr_assert_eq(report.read_before, READS_FROM - 1);
	cr_assert_eq(report.read_after, 0);
	cr_assert_eq(report.event_tree_size, 2 * EVENT_COMMITS + 1);
	cr_assert_eq(report.read_tree_size, 2 * READ_COMMITS);
	cr_assert_eq(report.event_checkpoints, 2);
	cr_assert_eq(report.read_checkpoints, 2);
	cr_assert_eq(report.inclusion_proofs, report.event_lines + 2 + report.read_lines + 1);
	cr_assert_eq(report.keys, 3);
	cr_assert_str_eq(report.from, "2027-01-15T08:00:03.000000Z");
	cr_assert_str_eq(report.to, "2027-01-15T08:00:08.500000Z");
	cr_assert_str_empty(report.item);

	/* the README tells how to check by hand, completeness included */
	struct file readme = load(FL_BUNDLE_README);
	cr_assert_not_null(strstr(readme.text, "openssl pkeyutl -verify -pubin"));
	cr_assert_not_null(strstr(readme.text, "fledger-read-checkpoint-v1"));
	cr_assert_not_null(strstr(readme.text, "sha256sum"));
	cr_assert_not_null(strstr(readme.text, FL_BUNDLE_EVENT_BOUNDARIES));
	cr_assert_not_null(strstr(readme.text, FL_BUNDLE_RANGE));
	free(readme.text);
}

Test(bundle, any_changed_byte_is_found)
{
	static const char *const files[] = {
	    FL_BUNDLE_EVENTS,		FL_BUNDLE_READS,	  FL_BUNDLE_EVENT_CHECKPOINTS,
	    FL_BUNDLE_READ_CHECKPOINTS, FL_BUNDLE_INCLUSION,	  FL_BUNDLE_KEYS,
	    FL_BUNDLE_EVENT_BOUNDARIES, FL_BUNDLE_READ_BOUNDARIES};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		struct file f = load(files[i]);
		/* a spread of positions, the first and the last byte included */
		for (size_t at = 0; at < f.len;
		     at = at + 37 < f.len || at == f.len - 1 ? at + 37 : f.len - 1) {
			char what[160];
			f.text[at] ^= 1;
			store(files[i], f.text, f.len);
			snprintf(what, sizeof(what), "%s byte %zu ('%c' -> '%c')", files[i], at,
				 f.text[at] ^ 1, f.text[at]);
			assert_rejected(files[i], what);
			f.text[at] ^= 1;
		}
		store(files[i], f.text, f.len);
		assert_accepted();
		free(f.text);
	}
}

Test(bundle, a_deleted_line_is_found)
{
	for (size_t i = 0; i < N_NDJSON; i++) {
		struct file f = load(ndjson_files[i]);
		size_t starts[256], n = line_starts(&f, starts, 256);
		cr_assert_geq(n, 1);
		for (size_t line = 0; line < n; line++) {
			char what[160];
			snprintf(what, sizeof(what), "%s without line %zu", ndjson_files[i],
				 line + 1);
			store_edited(ndjson_files[i], &f, line, SIZE_MAX);
			assert_rejected(NULL, what);
		}
		store(ndjson_files[i], f.text, f.len);
		free(f.text);
	}
	/* keys.json: one key line less */
	struct file keys = load(FL_BUNDLE_KEYS);
	store_edited(FL_BUNDLE_KEYS, &keys, 2, SIZE_MAX);
	assert_rejected(NULL, "keys.json without a key");
	free(keys.text);
}

Test(bundle, swapped_lines_are_found)
{
	for (size_t i = 0; i < N_NDJSON; i++) {
		struct file f = load(ndjson_files[i]);
		size_t starts[256], n = line_starts(&f, starts, 256);
		for (size_t line = 0; line + 1 < n; line++) {
			char what[160];
			snprintf(what, sizeof(what), "%s lines %zu and %zu swapped",
				 ndjson_files[i], line + 1, line + 2);
			store_edited(ndjson_files[i], &f, line, line + 1);
			assert_rejected(NULL, what);
		}
		/* the first and the last */
		if (n > 1) {
			store_edited(ndjson_files[i], &f, 0, n - 1);
			assert_rejected(NULL, "first and last lines swapped");
		}
		store(ndjson_files[i], f.text, f.len);
		free(f.text);
	}
	assert_accepted();

	/* keys.json: its structure breaks; only the order of the keys is free */
	struct file keys = load(FL_BUNDLE_KEYS);
	store_edited(FL_BUNDLE_KEYS, &keys, 0, 1);
	assert_rejected(FL_BUNDLE_KEYS, "keys.json lines 1 and 2 swapped");
	store_edited(FL_BUNDLE_KEYS, &keys, 2, 3);
	assert_rejected(FL_BUNDLE_KEYS, "keys.json lines 3 and 4 swapped");
	store_edited(FL_BUNDLE_KEYS, &keys, 1, 2);
	assert_accepted();
	free(keys.text);
}

/*
 * Replaces line `index` of a checkpoint file with an older, genuinely signed
 * checkpoint. On the second line it carries a correct consistency proof from
 * the first line's tree whenever one exists (the older tree is larger),
 * so that only the sizes disagree with the rest of the bundle.
 */
static void replace_checkpoint(enum fl_bundle_log which, const struct fl_checkpoint *older,
			       size_t index, const char *expect)
{
	const char *name = which == FL_BUNDLE_LOG_EVENTS ? FL_BUNDLE_EVENT_CHECKPOINTS
							 : FL_BUNDLE_READ_CHECKPOINTS;
	const struct fl_checkpoint *first =
	    which == FL_BUNDLE_LOG_EVENTS ? &first_event_cp : &first_read_cp;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count = 0;
	struct file f = load(name);
	size_t starts[16], n = line_starts(&f, starts, 16);
	char *line, what[200];

	if (index == 1 && older->tree_size > first->tree_size) {
		struct fl_log_reader *reader;
		cr_assert_eq(fl_log_reader_begin(
				 which == FL_BUNDLE_LOG_EVENTS ? event_log : read_log, &reader),
			     FL_OK);
		cr_assert_eq(fl_log_reader_consistency_proof(reader, first->tree_size,
							     older->tree_size, hashes, &count),
			     FL_OK);
		fl_log_reader_end(reader);
	}
	cr_assert_eq(
	    fl_bundle_checkpoint_line(older, (const uint8_t(*)[FL_HASH_LEN])hashes, count, &line),
	    FL_OK);
	FILE *out = open_in(name, "w");
	for (size_t i = 0; i < n; i++) {
		size_t end = i + 1 < n ? starts[i + 1] : f.len;
		if (i == index)
			fprintf(out, "%s\n", line);
		else
			fwrite(f.text + starts[i], 1, end - starts[i], out);
	}
	fclose(out);
	snprintf(what, sizeof(what), "%s line %zu replaced by the checkpoint of size %" PRIu64,
		 name, index + 1, older->tree_size);
	assert_rejected(expect, what);
	store(name, f.text, f.len);
	free(line);
	free(f.text);
}

Test(bundle, an_older_checkpoint_is_found)
{
	/* The last checkpoint replaced by any older one: the proofs no longer fit. */
	for (size_t i = 0; i + 1 < n_event_cps; i++)
		replace_checkpoint(FL_BUNDLE_LOG_EVENTS, &event_cps[i], 1,
				   event_cps[i].tree_size < first_event_cp.tree_size
				       ? FL_BUNDLE_EVENT_CHECKPOINTS ":2"
				       : NULL);
	for (size_t i = 0; i + 1 < n_read_cps; i++)
		replace_checkpoint(FL_BUNDLE_LOG_READS, &read_cps[i], 1,
				   read_cps[i].tree_size < first_read_cp.tree_size
				       ? FL_BUNDLE_READ_CHECKPOINTS ":2"
				       : NULL);
	/* The first replaced by one older than it (it no longer covers line 1). */
	replace_checkpoint(FL_BUNDLE_LOG_EVENTS, &event_cps[0], 0,
			   FL_BUNDLE_EVENT_CHECKPOINTS ":2");
	replace_checkpoint(FL_BUNDLE_LOG_READS, &read_cps[0], 0, FL_BUNDLE_READ_CHECKPOINTS ":2");
	assert_accepted();

	/* A single, older checkpoint: lines beyond it. */
	char *line;
	cr_assert_eq(fl_bundle_checkpoint_line(&event_cps[n_event_cps - 2], NULL, 0, &line), FL_OK);
	store(FL_BUNDLE_EVENT_CHECKPOINTS, line, strlen(line));
	assert_rejected(NULL, "a single older event checkpoint");
	free(line);
}

Test(bundle, the_read_prefix_is_not_the_event_prefix)
{
	/* The two checkpoint files exchanged: each is signed with the other prefix. */
	struct file events = load(FL_BUNDLE_EVENT_CHECKPOINTS),
		    reads = load(FL_BUNDLE_READ_CHECKPOINTS);
	store(FL_BUNDLE_EVENT_CHECKPOINTS, reads.text, reads.len);
	store(FL_BUNDLE_READ_CHECKPOINTS, events.text, events.len);
	assert_rejected(FL_BUNDLE_EVENT_CHECKPOINTS ":1", "checkpoint files exchanged");
	free(events.text);
	free(reads.text);
}

Test(bundle, read_lines_are_not_event_lines)
{
	/* A genuinely signed read line among the events: its kind gives it away. */
	struct file events = load(FL_BUNDLE_EVENTS), reads = load(FL_BUNDLE_READS);
	char *both = malloc(events.len + reads.len);
	memcpy(both, events.text, events.len);
	memcpy(both + events.len, reads.text, reads.len);
	store(FL_BUNDLE_EVENTS, both, events.len + reads.len);
	assert_rejected(FL_BUNDLE_EVENTS ":", "read lines appended to events.ndjson");
	free(both);
	free(events.text);
	free(reads.text);
}

Test(bundle, missing_files_and_extra_proofs_are_found)
{
	static const char *const files[] = {FL_BUNDLE_EVENTS,
					    FL_BUNDLE_READS,
					    FL_BUNDLE_EVENT_CHECKPOINTS,
					    FL_BUNDLE_READ_CHECKPOINTS,
					    FL_BUNDLE_INCLUSION,
					    FL_BUNDLE_KEYS,
					    FL_BUNDLE_RANGE,
					    FL_BUNDLE_EVENT_BOUNDARIES,
					    FL_BUNDLE_READ_BOUNDARIES};
	char path[400], moved[420];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", bundle, files[i]);
		snprintf(moved, sizeof(moved), "%s.away", path);
		cr_assert_eq(rename(path, moved), 0);
		assert_rejected(files[i], "a missing file");
		cr_assert_eq(rename(moved, path), 0);
	}
	assert_accepted();

	/* One proof twice: the second has no line. */
	struct file inclusion = load(FL_BUNDLE_INCLUSION);
	size_t starts[64], n = line_starts(&inclusion, starts, 64);
	char *more = malloc(inclusion.len * 2);
	memcpy(more, inclusion.text, inclusion.len);
	memcpy(more + inclusion.len, inclusion.text + starts[n - 1], inclusion.len - starts[n - 1]);
	store(FL_BUNDLE_INCLUSION, more, inclusion.len + inclusion.len - starts[n - 1]);
	assert_rejected(FL_BUNDLE_INCLUSION ":", "a proof twice");
	free(more);
	free(inclusion.text);
}

Test(bundle, an_unknown_key_is_found)
{
	/* keys.json without the rotated-to key: the lines it signed fail. */
	json_t *list = json_array();
	add_key(list, event_key);
	add_key(list, read_key);
	json_t *doc = json_pack("{s:o}", "keys", list);
	char *text = json_dumps(doc, JSON_COMPACT);
	store(FL_BUNDLE_KEYS, text, strlen(text));
	free(text);
	json_decref(doc);
	struct fl_bundle_report report;
	cr_assert_eq(fl_bundle_verify(bundle, NULL, NULL, &report), FL_ERR_CORRUPT);
	cr_assert_not_null(strstr(report.reason, fl_signer_key_id(event_key2)), "%s: %s",
			   report.item, report.reason);
}

/* A trust set of the given signers (NULL-terminated). */
static struct fl_trust *trusting(const struct fl_signer *a, const struct fl_signer *b)
{
	struct fl_trust *trust;
	uint8_t pub[FL_PUBKEY_LEN];
	cr_assert_eq(fl_trust_create(&trust), FL_OK);
	const struct fl_signer *signers[] = {a, b};
	for (int i = 0; i < 2; i++)
		if (signers[i]) {
			fl_signer_public_key(signers[i], pub);
			cr_assert_eq(fl_trust_add(trust, pub), FL_OK);
		}
	return trust;
}

static enum fl_status verify_trusting(const struct fl_signer *a, const struct fl_signer *b,
				      struct fl_bundle_report *report)
{
	struct fl_trust *trust = trusting(a, b);
	enum fl_status st = fl_bundle_verify_trusted(bundle, trust, NULL, NULL, report);
	fl_trust_destroy(trust);
	return st;
}

Test(bundle, keys_are_trusted_by_the_rules_not_by_keys_json)
{
	struct fl_bundle_report report;
	/* The real keys: the rotated-to key comes from the key event at seq 7,
	 * whose commit's checkpoint (key-checkpoints.ndjson) the trusted old key
	 * signed (a line of format v2 has no signature of its own). */
	cr_assert_eq(verify_trusting(event_key, read_key, &report), FL_OK, "%s: %s", report.item,
		     report.reason);
	cr_assert_str_empty(report.tofu_key[FL_BUNDLE_LOG_EVENTS]);
	/* No key given: each log's first checkpoint key, on first use. */
	cr_assert_eq(verify_trusting(NULL, NULL, &report), FL_OK, "%s: %s", report.item,
		     report.reason);
	cr_assert_str_eq(report.tofu_key[FL_BUNDLE_LOG_EVENTS], fl_signer_key_id(event_key));
	cr_assert_str_eq(report.tofu_key[FL_BUNDLE_LOG_READS], fl_signer_key_id(read_key));
	/* The read log has no key events: its key must be given too. */
	cr_assert_eq(verify_trusting(event_key, NULL, &report), FL_ERR_CORRUPT);
	cr_assert_str_eq(report.item, FL_BUNDLE_READ_CHECKPOINTS ":1");
	cr_assert_not_null(strstr(report.reason, fl_signer_key_id(read_key)), "%s", report.reason);

	/* An impostor key in keys.json signs the last event checkpoint. */
	struct fl_signer *impostor;
	cr_assert_eq(fl_signer_generate(&impostor), FL_OK);
	struct file keys = load(FL_BUNDLE_KEYS);
	json_error_t error;
	json_t *doc = json_loadb(keys.text, keys.len, 0, &error);
	cr_assert_not_null(doc);
	add_key(json_object_get(doc, "keys"), impostor);
	char *text = json_dumps(doc, JSON_COMPACT);
	store(FL_BUNDLE_KEYS, text, strlen(text));
	free(text);
	json_decref(doc);

	struct file cps = load(FL_BUNDLE_EVENT_CHECKPOINTS);
	size_t starts[4];
	cr_assert_eq(line_starts(&cps, starts, 4), 2);
	doc = json_loadb(cps.text + starts[1], cps.len - starts[1], JSON_DISABLE_EOF_CHECK, &error);
	cr_assert_not_null(doc, "%s", error.text);
	struct fl_checkpoint cp;
	char why[200], buf[512], sig[128];
	uint8_t raw[FL_SIG_LEN];
	const char *consistency;
	size_t consistency_len;
	cr_assert_eq(fl_checkpoint_parse_with(cps.text + starts[1], cps.len - starts[1],
					      "consistency", why, sizeof(why), &cp, &consistency,
					      &consistency_len),
		     FL_OK, "%s", why);
	memcpy(cp.key_id, fl_signer_key_id(impostor), FL_KEY_ID_HEX_LEN);
	size_t n = fl_checkpoint_text(FL_CHECKPOINT_PREFIX, &cp, buf, sizeof(buf));
	cr_assert_eq(fl_signer_sign(impostor, (const uint8_t *)buf, n, raw), FL_OK);
	fl_base64_encode(raw, FL_SIG_LEN, sig);
	json_object_set_new(doc, "key_id", json_string(cp.key_id));
	json_object_set_new(doc, "sig", json_string(sig));
	text = json_dumps(doc, JSON_COMPACT);
	FILE *out = open_in(FL_BUNDLE_EVENT_CHECKPOINTS, "w");
	fwrite(cps.text, 1, starts[1], out);
	fprintf(out, "%s\n", text);
	fclose(out);
	free(text);
	json_decref(doc);
	free(cps.text);
	free(keys.text);

	/* keys.json trusted (the exporter's own check): it verifies. */
	cr_assert_eq(fl_bundle_verify(bundle, NULL, NULL, &report), FL_OK, "%s: %s", report.item,
		     report.reason);
	/* Under the rules, with the real keys or on first use: refused, naming it. */
	cr_assert_eq(verify_trusting(event_key, read_key, &report), FL_ERR_CORRUPT);
	cr_assert_str_eq(report.item, FL_BUNDLE_EVENT_CHECKPOINTS ":2");
	cr_assert_not_null(strstr(report.reason, fl_signer_key_id(impostor)), "%s", report.reason);
	cr_assert_not_null(strstr(report.reason, "not trusted"), "%s", report.reason);
	cr_assert_eq(verify_trusting(NULL, NULL, &report), FL_ERR_CORRUPT);
	cr_assert_not_null(strstr(report.reason, fl_signer_key_id(impostor)), "%s", report.reason);
	fl_signer_destroy(impostor);
}

/* Format v2: the rotation is followed through the checkpoint of its commit only. */
Test(bundle, a_rotation_is_followed_through_the_checkpoint_of_its_commit)
{
	struct fl_bundle_report report;
	struct file kcps = load(FL_BUNDLE_KEY_CHECKPOINTS);
	size_t starts[4];
	cr_assert_eq(line_starts(&kcps, starts, 4), 1);
	json_error_t error;
	json_t *doc = json_loadb(kcps.text, kcps.len, 0, &error);
	cr_assert_not_null(doc, "%s", error.text);
	struct fl_checkpoint cp;
	char why[200];
	const char *consistency;
	size_t consistency_len;
	cr_assert_eq(fl_checkpoint_parse_with(kcps.text, kcps.len, "consistency", why, sizeof(why),
					      &cp, &consistency, &consistency_len),
		     FL_OK, "%s", why);
	cr_assert_eq(cp.tree_size, 7, "the key event's own commit");
	cr_assert_str_eq(cp.key_id, fl_signer_key_id(event_key), "signed by the old key");
	cr_assert_eq(verify_trusting(event_key, read_key, &report), FL_OK, "%s: %s", report.item,
		     report.reason);
	cr_assert_eq(report.key_checkpoints, 1);

	/* Without it the new key is not trusted, though keys.json lists it. */
	char path[400], moved[420];
	snprintf(path, sizeof(path), "%s/%s", bundle, FL_BUNDLE_KEY_CHECKPOINTS);
	snprintf(moved, sizeof(moved), "%s.away", path);
	cr_assert_eq(rename(path, moved), 0);
	assert_accepted(); /* optional: a bundle without a key event needs none */
	cr_assert_eq(verify_trusting(event_key, read_key, &report), FL_ERR_CORRUPT);
	cr_assert_str_eq(report.item, FL_BUNDLE_EVENT_CHECKPOINTS ":2");
	cr_assert_not_null(strstr(report.reason, fl_signer_key_id(event_key2)), "%s",
			   report.reason);
	cr_assert_eq(rename(moved, path), 0);

	/* The new key signing its own introduction does not count. */
	for (size_t i = 0; i < n_event_cps; i++)
		if (event_cps[i].tree_size == 9)
			cp = event_cps[i]; /* a later commit's checkpoint: the new key's */
	cr_assert_eq(cp.tree_size, 9);
	cr_assert_str_eq(cp.key_id, fl_signer_key_id(event_key2));
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	struct fl_log_reader *reader;
	char *line;
	cr_assert_eq(fl_log_reader_begin(event_log, &reader), FL_OK);
	cr_assert_eq(fl_log_reader_consistency_proof(reader, 9, 13, hashes, &count), FL_OK);
	fl_log_reader_end(reader);
	cr_assert_eq(
	    fl_bundle_checkpoint_line(&cp, (const uint8_t(*)[FL_HASH_LEN])hashes, count, &line),
	    FL_OK);
	store(FL_BUNDLE_KEY_CHECKPOINTS, line, strlen(line));
	assert_accepted();
	cr_assert_eq(verify_trusting(event_key, read_key, &report), FL_ERR_CORRUPT);
	cr_assert_str_eq(report.item, FL_BUNDLE_KEY_CHECKPOINTS ":1");
	cr_assert_not_null(strstr(report.reason, "not trusted"), "%s", report.reason);

	/* A changed root: its signature and its consistency proof fail. */
	json_object_set_new(doc, "root_hash",
			    json_string("00000000000000000000000000000000"
					"00000000000000000000000000000000"));
	free(line);
	line = json_dumps(doc, JSON_COMPACT);
	store(FL_BUNDLE_KEY_CHECKPOINTS, line, strlen(line));
	assert_rejected(FL_BUNDLE_KEY_CHECKPOINTS ":1", "a key checkpoint of another tree");
	free(line);
	json_decref(doc);
	free(kcps.text);
}

Test(bundle, key_ids_must_match_their_keys)
{
	json_t *list = json_array();
	add_key(list, event_key);
	add_key(list, event_key2);
	add_key(list, read_key);
	/* the read key's PEM under the first event key's id */
	json_object_set_new(json_array_get(list, 2), "key_id",
			    json_string(fl_signer_key_id(event_key)));
	json_t *doc = json_pack("{s:o}", "keys", list);
	char why[200];
	struct fl_bundle_keys *keys;
	cr_assert_eq(fl_bundle_keys_parse(doc, why, sizeof(why), &keys), FL_ERR_INVALID);
	cr_assert_not_null(strstr(why, "id"), "%s", why);
	json_decref(doc);
}

/* ---- completeness ------------------------------------------------------------ */

/* Ranges at the start, in the middle and at the end of the logs, and empty ones. */
static const struct {
	const char *name;
	int64_t from, to;
	/* expected: event lines, before, after; read lines, before, after (0: none) */
	uint64_t events, event_before, event_after, reads, read_before, read_after;
} ranges[] = {
    {"the default range", RANGE_FROM, RANGE_TO, 7, 3, 11, 5, 3, 0},
    {"the start of the logs", T0 - 10 * SEC, T0 + 2 * SEC + SEC / 2, 3, 0, 4, 3, 0, 4},
    {"the end of the event log", T0 + 9 * SEC + SEC / 2, T0 + 100 * SEC, 2, 11, 0, 0, 8, 0},
    {"both logs whole", T0 - 10 * SEC, T0 + 100 * SEC, 13, 0, 0, 8, 0, 0},
    {"an empty range between two lines", T0 + 2 * SEC + SEC / 5, T0 + 2 * SEC + SEC / 2, 0, 3, 4, 0,
     3, 4},
    {"an empty range before the logs", T0 - 10 * SEC, T0 - SEC, 0, 0, 1, 0, 0, 1},
    {"an empty range after the logs", T0 + 50 * SEC, T0 + 100 * SEC, 0, 13, 0, 0, 8, 0},
};
#define N_RANGES (sizeof(ranges) / sizeof(ranges[0]))

/* The seq of an NDJSON log line ({"seq":N,...}). */
static uint64_t seq_of(const char *line)
{
	uint64_t seq = 0;
	cr_assert_eq(sscanf(line, "{\"seq\":%" SCNu64 ",", &seq), 1, "%.40s", line);
	return seq;
}

/* The index of the line of inclusion.ndjson that proves seq of log, or SIZE_MAX. */
static size_t proof_index(const struct file *inclusion, enum fl_bundle_log log, uint64_t seq)
{
	char head[96];
	size_t starts[256], n = line_starts(inclusion, starts, 256);
	int len = snprintf(head, sizeof(head), "{\"log\":\"%s\",\"seq\":%" PRIu64 ",",
			   fl_bundle_log_name(log), seq);
	for (size_t i = 0; i < n; i++)
		if (strncmp(inclusion->text + starts[i], head, (size_t)len) == 0)
			return i;
	return SIZE_MAX;
}

Test(bundle, complete_bundles_verify)
{
	for (size_t i = 0; i < N_RANGES; i++) {
		struct fl_bundle_report report;
		build_bundle(ranges[i].from, ranges[i].to);
		enum fl_status st = fl_bundle_verify(bundle, NULL, NULL, &report);
		cr_assert_eq(st, FL_OK, "%s: %s: %s", ranges[i].name, report.item, report.reason);
		cr_assert_eq(report.event_lines, ranges[i].events, "%s", ranges[i].name);
		cr_assert_eq(report.event_before, ranges[i].event_before, "%s", ranges[i].name);
		cr_assert_eq(report.event_after, ranges[i].event_after, "%s", ranges[i].name);
		cr_assert_eq(report.read_lines, ranges[i].reads, "%s", ranges[i].name);
		cr_assert_eq(report.read_before, ranges[i].read_before, "%s", ranges[i].name);
		cr_assert_eq(report.read_after, ranges[i].read_after, "%s", ranges[i].name);
		cr_assert_eq(report.inclusion_proofs,
			     report.event_lines + report.read_lines + !!report.event_before +
				 !!report.event_after + !!report.read_before + !!report.read_after,
			     "%s", ranges[i].name);
	}
}

/*
 * Every single line of either log, in the range or a boundary line, at the
 * start, in the middle and at the end, for every range: removed alone or
 * together with its inclusion proof, the bundle must not verify.
 */
Test(bundle, every_hidden_line_is_found)
{
	static const struct {
		enum fl_bundle_log log;
		const char *file;
	} files[] = {{FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS},
		     {FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENT_BOUNDARIES},
		     {FL_BUNDLE_LOG_READS, FL_BUNDLE_READS},
		     {FL_BUNDLE_LOG_READS, FL_BUNDLE_READ_BOUNDARIES}};
	size_t removals = 0;
	for (size_t r = 0; r < N_RANGES; r++) {
		build_bundle(ranges[r].from, ranges[r].to);
		struct file inclusion = load(FL_BUNDLE_INCLUSION);
		for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
			struct file lines = load(files[f].file);
			size_t starts[256], n = line_starts(&lines, starts, 256);
			for (size_t i = 0; i < n; i++) {
				uint64_t seq = seq_of(lines.text + starts[i]);
				size_t proof = proof_index(&inclusion, files[f].log, seq);
				char what[200];
				cr_assert_neq(proof, SIZE_MAX, "no proof of seq %" PRIu64, seq);

				store_edited(files[f].file, &lines, i, SIZE_MAX);
				snprintf(what, sizeof(what),
					 "%s: %s line %zu (seq %" PRIu64 ") removed",
					 ranges[r].name, files[f].file, i + 1, seq);
				assert_rejected(NULL, what);

				store_edited(FL_BUNDLE_INCLUSION, &inclusion, proof, SIZE_MAX);
				snprintf(what, sizeof(what),
					 "%s: %s line %zu (seq %" PRIu64 ") removed with its proof",
					 ranges[r].name, files[f].file, i + 1, seq);
				assert_rejected(NULL, what);
				store(FL_BUNDLE_INCLUSION, inclusion.text, inclusion.len);
				removals++;
			}
			store(files[f].file, lines.text, lines.len);
			free(lines.text);
		}
		free(inclusion.text);
		assert_accepted();
	}
	cr_assert_gt(removals, 50);
}

/* Removes the line of file with seq, and its proof. */
static void hide(enum fl_bundle_log log, const char *file, uint64_t seq)
{
	struct file lines = load(file), inclusion = load(FL_BUNDLE_INCLUSION);
	size_t starts[256], n = line_starts(&lines, starts, 256), index = SIZE_MAX;
	for (size_t i = 0; i < n; i++)
		if (seq_of(lines.text + starts[i]) == seq)
			index = i;
	cr_assert_neq(index, SIZE_MAX, "%s has no seq %" PRIu64, file, seq);
	store_edited(file, &lines, index, SIZE_MAX);
	store_edited(FL_BUNDLE_INCLUSION, &inclusion, proof_index(&inclusion, log, seq), SIZE_MAX);
	free(lines.text);
	free(inclusion.text);
}

static void assert_reason(const char *item, const char *reason, const char *what)
{
	struct fl_bundle_report report;
	cr_assert_eq(fl_bundle_verify(bundle, NULL, NULL, &report), FL_ERR_CORRUPT,
		     "%s: verify passed", what);
	cr_assert_str_eq(report.item, item, "%s: %s: %s", what, report.item, report.reason);
	cr_assert_not_null(strstr(report.reason, reason), "%s: %s: %s", what, report.item,
			   report.reason);
}

Test(bundle, hidden_lines_are_named)
{
	/* a line in the middle */
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS, 7);
	assert_reason(FL_BUNDLE_EVENTS ":4", "seq 7 is missing between 6 and 8", "events seq 7");
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_READS, FL_BUNDLE_READS, 6);
	assert_reason(FL_BUNDLE_READS ":3", "seq 6 is missing between 5 and 7", "reads seq 6");
	/* the first line of the range: the line before it is there */
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS, EVENTS_FROM);
	assert_reason(FL_BUNDLE_EVENTS ":1", "seq 4 is missing between 3 and 5", "the first line");
	/* the last line of the range: the line after it is there */
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS, EVENTS_TO);
	assert_reason(FL_BUNDLE_EVENTS, "seq 10 is missing between 9 and 11", "the last line");
	/* the last line and the line after it: the log goes on */
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS, EVENTS_TO);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENT_BOUNDARIES, EVENTS_TO + 1);
	assert_reason(FL_BUNDLE_EVENTS,
		      "the line after the range is missing: last exported seq 9 < tree size 13",
		      "the last line and the line after");
	/* the line at the end of the read log */
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_READS, FL_BUNDLE_READS, 8);
	assert_reason(FL_BUNDLE_READS,
		      "the line after the range is missing: last exported seq 7 < tree size 8",
		      "the end of the read log");
	/* the first line and the line before it */
	build_bundle(RANGE_FROM, RANGE_TO);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENTS, EVENTS_FROM);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENT_BOUNDARIES, EVENTS_FROM - 1);
	assert_reason(FL_BUNDLE_EVENTS ":1", "the line before the range is missing",
		      "the first line and the line before");
	/* seq 1 at the start of the log */
	build_bundle(T0 - 10 * SEC, T0 + 2 * SEC + SEC / 2);
	hide(FL_BUNDLE_LOG_READS, FL_BUNDLE_READS, 1);
	assert_reason(FL_BUNDLE_READS ":1", "the first exported line is seq 2", "read seq 1");
	/* an empty range: either boundary line */
	build_bundle(T0 + 2 * SEC + SEC / 5, T0 + 2 * SEC + SEC / 2);
	hide(FL_BUNDLE_LOG_EVENTS, FL_BUNDLE_EVENT_BOUNDARIES, 4);
	assert_reason(FL_BUNDLE_EVENTS, "last exported seq 3 < tree size 13",
		      "the line after an empty range");
	build_bundle(T0 + 2 * SEC + SEC / 5, T0 + 2 * SEC + SEC / 2);
	hide(FL_BUNDLE_LOG_READS, FL_BUNDLE_READ_BOUNDARIES, 3);
	assert_reason(FL_BUNDLE_READS, "seqs 1 to 3 are missing before seq 4",
		      "the line before an empty range");
}

Test(bundle, boundary_lines_must_lie_outside_the_range)
{
	/* the range widened so that the line before (seq 3, T0 + 2 s) lies in it */
	char *text, path[400];
	size_t len;
	cr_assert_eq(fl_bundle_range_json(T0 + 2 * SEC, RANGE_TO, &text, &len), FL_OK);
	snprintf(path, sizeof(path), "%s/%s", bundle, FL_BUNDLE_RANGE);
	cr_assert_eq(fl_bundle_write_file(path, text, len, 0644), FL_OK);
	free(text);
	assert_reason(FL_BUNDLE_EVENT_BOUNDARIES ":1", "lies in the range", "a wider range");

	/* a line of the range given as the line after it (its proof in place) */
	build_bundle(RANGE_FROM, RANGE_TO);
	struct file bounds = load(FL_BUNDLE_EVENT_BOUNDARIES), lines = load(FL_BUNDLE_EVENTS);
	size_t starts[16], n = line_starts(&lines, starts, 16), b_starts[4];
	cr_assert_eq(line_starts(&bounds, b_starts, 4), 2);
	cr_assert_eq(seq_of(lines.text + starts[n - 1]), EVENTS_TO);
	FILE *out = open_in(FL_BUNDLE_EVENT_BOUNDARIES, "w");
	fwrite(bounds.text, 1, b_starts[1], out);
	fwrite(lines.text + starts[n - 1], 1, lines.len - starts[n - 1], out);
	fclose(out);
	store(FL_BUNDLE_EVENTS, lines.text, starts[n - 1]);
	assert_reason(FL_BUNDLE_EVENT_BOUNDARIES ":2", "seq 10: its ingest_ts lies in the range",
		      "the last line as the line after");
	free(lines.text);
	free(bounds.text);

	/* range.json must hold exactly from and to, in the fixed time form */
	static const char *const bad[] = {
	    "{\"from\":\"2027-01-15T08:00:03Z\",\"to\":\"2027-01-15T08:00:08.500000Z\"}",
	    "{\"from\":\"2027-01-15T08:00:09.000000Z\",\"to\":\"2027-01-15T08:00:08.500000Z\"}",
	    "{\"from\":\"2027-01-15T08:00:03.000000Z\"}", "[]", "{"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		store(FL_BUNDLE_RANGE, bad[i], strlen(bad[i]));
		assert_rejected(FL_BUNDLE_RANGE, bad[i]);
	}
}
