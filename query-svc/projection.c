/*
 * Read models of query-svc (see projection.h).
 *
 * Keys are built from the view name and entity id joined by NUL bytes:
 *   latest   view NUL entity NUL feature -> be64 event_ts' | be64 seq | value (JSON)
 *   history  view NUL entity NUL be64 event_ts' | be64 seq -> features (JSON object)
 *   views    name -> be64 version | canonical definition
 *   ingest   be64 seq -> be64 ingest_ts' of every feature event in history
 *            (for reads "as known" at a time: fl_read_request.known_at_us)
 *   meta     "applied_seq" -> be64
 *            "log_clock" -> be64 event_ts' of the greatest ingest_ts applied
 * where event_ts' is the timestamp with its sign bit flipped, so that byte
 * order is time order. Values are the exact JSON text of the stored body,
 * never re-serialised, so that two instances hold byte-identical models.
 */
#include "projection.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fledger/event.h"
#include "fledger/jsonw.h"
#include "fledger/slog.h"
#include "fledger/util.h"

#define INITIAL_MAP (64u << 20)
#define KEY_MAX 511 /* LMDB's default maximum key size */
#define MAX_WINDOW_SEQS 1000
#define BOOT_FILE "boot" /* "<boot id> open\n" or "<boot id> closed\n" */
#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"

struct tile_cache;
static void tile_cache_free(struct tile_cache *c);

struct fl_projection {
	char *dir;
	char boot_id[64]; /* "" where the system gives none */
	MDB_env *env;
	MDB_dbi latest, history, views, meta, tiles, ingest;
	size_t map_size;
	_Atomic uint64_t applied_seq;
	int64_t log_clock_us; /* greatest ingest_ts applied (apply thread only) */
	struct fl_view_registry *registry;
	pthread_rwlock_t resize_lock;
	/* apply's scratch (applies run on one thread at a time) */
	uint8_t *record;
	size_t record_cap;
	struct fl_json_member *members;
	size_t members_cap;
	struct fl_json_member *build_members; /* a tile build's scratch */
	size_t build_members_cap;
	uint8_t *tile_record;
	size_t tile_record_cap;
	struct lazy_number *numbers; /* the numbers of members, for the tiles */
	size_t numbers_cap;
	struct tile_cache *tile_cache; /* the tiles of the current apply run */
	bool tile_run; /* the run has more than one event: its tiles go through the cache */
};

#define TILE_LEVELS 8 /* see the tiles below */

/* The seqs an answer served (see seq_add, seq_finish). */
struct seq_set {
	uint64_t *seqs;
	size_t count, cap;
	bool failed;
};

struct fl_projection_read {
	struct fl_projection *projection;
	MDB_txn *txn;
	uint64_t applied_seq;
	uint64_t cost;	      /* read cost units spent (see fl_projection_read_limit_cost) */
	uint64_t cost_limit;  /* 0: none */
	int64_t log_clock_us; /* "now" for the retention guard */
	/*
	 * Cursors kept from one query of the read to the next (opened on first
	 * use, closed with the read): a batch or an export costs no cursor
	 * allocation per entity, and when its queries come in key order (an
	 * export sorts its rows by entity and time) each seek starts on the page
	 * the cursor is on, which LMDB then searches alone, instead of from the
	 * root. A cursor's position carries no meaning between queries.
	 */
	MDB_cursor *latest_cursor, *history_cursor, *tile_cursors[TILE_LEVELS];
	/* the last times written, as JSON strings: the features of one event
	 * share its time, the windows of one read their end */
	struct time_text {
		int64_t us;
		char text[FL_TIME_TEXT_LEN + 2]; /* "RFC 3339", quoted; "" when unset */
	} times[4];
	unsigned next_time; /* the slot the next new time takes */
	/* the answer of fl_projection_query_borrowed, kept for the next */
	struct fl_jw answer_features, answer_windows;
	struct seq_set answer_served;
};

/* The read's kept cursor *cur over dbi, opened when first asked for. */
static int kept_cursor(struct fl_projection_read *read, MDB_dbi dbi, MDB_cursor **cur)
{
	return *cur ? MDB_SUCCESS : mdb_cursor_open(read->txn, dbi, cur);
}

/* Spends one cost unit; false when that goes over the read's limit. */
static bool spend(struct fl_projection_read *read)
{
	return ++read->cost <= read->cost_limit || read->cost_limit == 0;
}

static uint64_t sortable_time(int64_t us)
{
	return (uint64_t)us ^ (UINT64_C(1) << 63);
}

static int64_t time_of_sortable(const uint8_t *p)
{
	return (int64_t)(fl_get_be64(p) ^ (UINT64_C(1) << 63));
}

/* view NUL entity NUL: the prefix of an entity's keys. 0 when too long. */
static size_t entity_prefix(const char *view, const char *entity, uint8_t *out, size_t cap)
{
	size_t vl = strlen(view), el = strlen(entity);
	if (vl + el + 2 > cap)
		return 0;
	memcpy(out, view, vl);
	out[vl] = 0;
	memcpy(out + vl + 1, entity, el);
	out[vl + 1 + el] = 0;
	return vl + el + 2;
}

/* ---- open / close ----------------------------------------------------- */

static enum fl_status load_views(struct fl_projection *p, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val key, val;
	enum fl_status st = FL_OK;

	if (mdb_cursor_open(txn, p->views, &cur) != MDB_SUCCESS)
		return FL_ERR_IO;
	for (int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == MDB_SUCCESS && st == FL_OK;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		json_error_t jerr;
		struct fl_view *view;
		if (val.mv_size < 8) {
			st = FL_ERR_CORRUPT;
			break;
		}
		uint64_t version = fl_get_be64(val.mv_data);
		json_t *def = json_loadb((const char *)val.mv_data + 8, val.mv_size - 8, 0, &jerr);
		st = def ? fl_view_parse(def, &view, NULL) : FL_ERR_CORRUPT;
		json_decref(def);
		if (st != FL_OK) {
			st = FL_ERR_CORRUPT;
			break;
		}
		st = fl_view_registry_restore(p->registry, view, version);
		fl_view_unref(view);
	}
	mdb_cursor_close(cur);
	return st;
}

/*
 * The layout of the read models (2: one latest record per entity; 3: and
 * the log clock; 4: and the window tiles; 5: and each event's ingest time,
 * for reads as known at a moment). Models stored in another layout are
 * emptied when opened,
 * and the apply thread rebuilds them from the replica log: they are derived
 * state.
 */
#define MODELS_FORMAT 5

static bool format_is_current(struct fl_projection *p, MDB_txn *txn)
{
	MDB_val key = {6, "format"}, val;
	return mdb_get(txn, p->meta, &key, &val) == MDB_SUCCESS && val.mv_size == 8 &&
	       fl_get_be64(val.mv_data) == MODELS_FORMAT;
}

/* Empties every read model (and applied_seq), then records the format. */
static int empty_models(struct fl_projection *p, MDB_txn *txn)
{
	uint8_t buf[8];
	int rc;
	if ((rc = mdb_drop(txn, p->latest, 0)) || (rc = mdb_drop(txn, p->history, 0)) ||
	    (rc = mdb_drop(txn, p->views, 0)) || (rc = mdb_drop(txn, p->meta, 0)) ||
	    (rc = mdb_drop(txn, p->tiles, 0)) || (rc = mdb_drop(txn, p->ingest, 0)))
		return rc;
	fl_put_be64(buf, MODELS_FORMAT);
	MDB_val key = {6, "format"}, val = {8, buf};
	return mdb_put(txn, p->meta, &key, &val, 0);
}

/* A big-endian u64 of the meta table; absent: FL_OK with *ret_found false. */
static enum fl_status read_meta_u64(struct fl_projection *p, MDB_txn *txn, const char *name,
				    uint64_t *ret, bool *ret_found)
{
	MDB_val key = {strlen(name), (void *)name}, val;
	int rc = mdb_get(txn, p->meta, &key, &val);
	*ret_found = rc == MDB_SUCCESS;
	if (rc == MDB_NOTFOUND)
		return FL_OK;
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	if (val.mv_size != 8)
		return FL_ERR_CORRUPT;
	*ret = fl_get_be64(val.mv_data);
	return FL_OK;
}

/*
 * The log clock: the greatest ingest_ts among the applied feature events,
 * INT64_MIN before the first. History is pruned by ingest_ts, which
 * command-svc's clock wrote, so the retention guard of reads takes its "now"
 * from there too: a skew between the machines' clocks cannot let an as_of
 * the guard accepts meet pruned history, and replicas agree on it.
 */
static enum fl_status read_log_clock(struct fl_projection *p, MDB_txn *txn, int64_t *ret_us)
{
	uint64_t stored = 0;
	bool found;
	enum fl_status st = read_meta_u64(p, txn, "log_clock", &stored, &found);
	/* stored as a sortable time: the sign bit flipped */
	*ret_us = found ? (int64_t)(stored ^ (UINT64_C(1) << 63)) : INT64_MIN;
	return st;
}

static enum fl_status read_applied(struct fl_projection *p, MDB_txn *txn, uint64_t *ret)
{
	bool found;
	*ret = 0;
	return read_meta_u64(p, txn, "applied_seq", ret, &found);
}

/*
 * The models are committed without a sync (see fl_projection_open). When the
 * process dies its pages stay in the page cache, where the next open finds
 * them. When the machine goes down they may be torn on disk: LMDB keeps its
 * integrity without syncs only on file systems that keep write order. So
 * the directory records the boot in which the models were last open, and
 * models left open by an earlier boot are deleted before LMDB opens them;
 * they are rebuilt from the replica log, which is synced.
 */
static void read_boot_id(char out[64])
{
	FILE *f = fopen(BOOT_ID_PATH, "r");
	out[0] = '\0';
	if (!f)
		return;
	if (!fgets(out, 64, f))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

/*
 * Whether the models in dir may be torn: left open by an earlier boot, or
 * present with no readable record of how they were left (cannot tell).
 */
static bool left_open_by_another_boot(const char *dir, const char *boot_id)
{
	char path[4096], line[160], file_boot[64], state[16];
	snprintf(path, sizeof(path), "%s/%s", dir, BOOT_FILE);
	FILE *f = fopen(path, "r");
	bool found = false;
	if (f) {
		found = fgets(line, sizeof(line), f) &&
			sscanf(line, "%63s %15s", file_boot, state) == 2;
		fclose(f);
	}
	if (!found) {
		/* New models are fine; existing ones without a record are suspect. */
		snprintf(path, sizeof(path), "%s/data.mdb", dir);
		return access(path, F_OK) == 0;
	}
	return strcmp(state, "open") == 0 && strcmp(file_boot, boot_id) != 0;
}

/* Replaces dir's boot file with "<boot id> <state>", synced. */
static enum fl_status write_boot(const char *dir, const char *boot_id, const char *state)
{
	char path[4096], tmp[4096], text[96];
	int n = snprintf(text, sizeof(text), "%s %s\n", boot_id, state);
	snprintf(path, sizeof(path), "%s/%s", dir, BOOT_FILE);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, BOOT_FILE);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return FL_ERR_IO;
	bool ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
	ok = close(fd) == 0 && ok && rename(tmp, path) == 0;
	int dfd = ok ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	ok = dfd >= 0 && fsync(dfd) == 0;
	if (dfd >= 0)
		close(dfd);
	return ok ? FL_OK : FL_ERR_IO;
}

/* Deletes models a machine crash may have torn (absent ones are fine). */
static enum fl_status drop_torn_models(const char *dir)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	char path[4096];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (unlink(path) != 0 && errno != ENOENT)
			return FL_ERR_IO;
	}
	return FL_OK;
}

enum fl_status fl_projection_open(const char *dir, struct fl_projection **ret_projection)
{
	struct fl_projection *p;
	MDB_txn *txn;
	enum fl_status st;
	int rc, dead;

	if (!dir || !ret_projection)
		return FL_ERR_INVALID;
	if (strlen(dir) > 4000)
		return FL_ERR_INVALID;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return FL_ERR_IO;
	p = calloc(1, sizeof(*p));
	if (!p)
		return FL_ERR_NOMEM;
	pthread_rwlock_init(&p->resize_lock, NULL);
	read_boot_id(p->boot_id);
	if (!p->boot_id[0])
		fl_slog(FL_SLOG_WARN,
			"no boot id (" BOOT_ID_PATH "): read models torn by a machine crash would "
			"not be noticed",
			"dir", dir, NULL);
	if (p->boot_id[0] && left_open_by_another_boot(dir, p->boot_id)) {
		if ((st = drop_torn_models(dir)) != FL_OK)
			goto err_free;
		fl_slog(FL_SLOG_WARN,
			"read models that may be torn (left open when the machine went down, or "
			"without a record of how they were left) were dropped; they are rebuilt "
			"from the replica log",
			"dir", dir, NULL);
	}
	p->dir = strdup(dir);
	if (!p->dir) {
		st = FL_ERR_NOMEM;
		goto err_free;
	}
	if (p->boot_id[0] && (st = write_boot(dir, p->boot_id, "open")) != FL_OK)
		goto err_free;
	p->map_size = INITIAL_MAP;
	if ((st = fl_view_registry_create(&p->registry)) != FL_OK)
		goto err_free;
	if ((rc = mdb_env_create(&p->env)) != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_registry;
	}
	mdb_env_set_maxdbs(p->env, 8);
	mdb_env_set_maxreaders(p->env, 1024);
	mdb_env_set_mapsize(p->env, p->map_size);
	/*
	 * No sync on commit: the models are derived from the replica log,
	 * which is synced. A killed process loses nothing (the pages are in
	 * the page cache); models a machine crash may have torn are dropped
	 * above and rebuilt.
	 */
	rc = mdb_env_open(p->env, dir, MDB_NOTLS | MDB_NOSYNC, 0600);
	if (rc != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_env;
	}
	mdb_reader_check(p->env, &dead);
	{
		MDB_envinfo info;
		mdb_env_info(p->env, &info);
		if (info.me_mapsize > p->map_size)
			p->map_size = info.me_mapsize;
	}
	if ((rc = mdb_txn_begin(p->env, NULL, 0, &txn)) != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_env;
	}
	if ((rc = mdb_dbi_open(txn, "latest", MDB_CREATE, &p->latest)) ||
	    (rc = mdb_dbi_open(txn, "history", MDB_CREATE, &p->history)) ||
	    (rc = mdb_dbi_open(txn, "views", MDB_CREATE, &p->views)) ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &p->meta)) ||
	    (rc = mdb_dbi_open(txn, "tiles", MDB_CREATE, &p->tiles)) ||
	    (rc = mdb_dbi_open(txn, "ingest", MDB_CREATE, &p->ingest))) {
		mdb_txn_abort(txn);
		st = fl_status_of_mdb(rc);
		goto err_env;
	}
	if (!format_is_current(p, txn)) {
		MDB_stat stat;
		bool was_empty =
		    mdb_stat(txn, p->meta, &stat) == MDB_SUCCESS && stat.ms_entries == 0;
		if ((rc = empty_models(p, txn)) != MDB_SUCCESS) {
			mdb_txn_abort(txn);
			st = fl_status_of_mdb(rc);
			goto err_env;
		}
		if (!was_empty)
			fl_slog(FL_SLOG_WARN,
				"read models of an older layout dropped; they are rebuilt "
				"from the replica log",
				"dir", dir, NULL);
	}
	uint64_t applied = 0;
	st = read_applied(p, txn, &applied);
	if (st == FL_OK)
		st = read_log_clock(p, txn, &p->log_clock_us);
	if (st == FL_OK)
		st = load_views(p, txn);
	if (st != FL_OK) {
		mdb_txn_abort(txn);
		goto err_env;
	}
	if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_env;
	}
	atomic_store(&p->applied_seq, applied);
	*ret_projection = p;
	return FL_OK;

err_env:
	mdb_env_close(p->env);
err_registry:
	fl_view_registry_destroy(p->registry);
err_free:
	pthread_rwlock_destroy(&p->resize_lock);
	free(p->dir);
	free(p);
	return st;
}

void fl_projection_close(struct fl_projection *p)
{
	if (!p)
		return;
	bool synced = mdb_env_sync(p->env, 1) == MDB_SUCCESS;
	mdb_env_close(p->env);
	if (synced && p->boot_id[0])
		write_boot(p->dir, p->boot_id, "closed");
	free(p->dir);
	fl_view_registry_destroy(p->registry);
	pthread_rwlock_destroy(&p->resize_lock);
	free(p->record);
	free(p->members);
	free(p->build_members);
	free(p->tile_record);
	free(p->numbers);
	tile_cache_free(p->tile_cache);
	free(p);
}

enum fl_status fl_projection_reset(struct fl_projection *p)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(p->env, NULL, 0, &txn);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	if ((rc = empty_models(p, txn)) != MDB_SUCCESS) {
		mdb_txn_abort(txn);
		return fl_status_of_mdb(rc);
	}
	if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	struct fl_view_registry *fresh;
	if (fl_view_registry_create(&fresh) != FL_OK)
		return FL_ERR_NOMEM;
	fl_view_registry_destroy(p->registry);
	p->registry = fresh;
	atomic_store(&p->applied_seq, 0);
	p->log_clock_us = INT64_MIN;
	return FL_OK;
}

uint64_t fl_projection_applied_seq(const struct fl_projection *p)
{
	return atomic_load(&((struct fl_projection *)p)->applied_seq);
}

struct fl_view_registry *fl_projection_views(struct fl_projection *p)
{
	return p->registry;
}

/* A stored value's JSON text; it points into the read's LMDB snapshot. */
struct raw_value {
	const char *text;
	size_t len;
};

/* A number of a stored value: an integer when its text is one. */
struct number {
	bool is_int;
	int64_t i;
	double d;
};

/*
 * Reads the text of a stored number. A subnormal double (1e-320) is a valid
 * stored value: strtod sets ERANGE for it but returns it exactly, so only an
 * ERANGE with an infinite result (which validation never stores) fails.
 */
static bool parse_number(const struct raw_value *value, struct number *ret)
{
	char text[64];
	if (value->len == 0 || value->len >= sizeof(text))
		return false;
	memcpy(text, value->text, value->len);
	text[value->len] = '\0';
	char *end;
	errno = 0;
	ret->is_int = strpbrk(text, ".eE") == NULL;
	if (ret->is_int) {
		long long i = strtoll(text, &end, 10);
		ret->i = (int64_t)i;
		ret->d = (double)i;
	} else {
		ret->d = strtod(text, &end);
		if (errno == ERANGE && isfinite(ret->d))
			errno = 0; /* underflow: the subnormal (or zero) read is the value */
	}
	return end != text && *end == '\0' && errno == 0;
}

static bool number_less(const struct number *a, const struct number *b)
{
	if (a->is_int && b->is_int)
		return a->i < b->i;
	return a->d < b->d;
}

/* ---- partials --------------------------------------------------------- */

/*
 * A partial: what the window functions need from a set of values of one
 * feature, mergeable with another set's partial in any order.
 *   count     values (not null) in the set
 *   isum      exact sum of an int64 feature (int128: 2^64 values of 2^63
 *             cannot overflow it; a sum outside int64 is served as a double,
 *             as before partials existed)
 *   dsum, dcomp  sum of a double feature, Neumaier-compensated: merges add
 *             the other's pair with TwoSum, so the error stays about one
 *             rounding of the exact sum, whatever the grouping
 *   mean, m2  Welford's running mean and sum of squared deviations, merged
 *             with Chan et al.'s parallel formula (population stddev)
 *   min, max  the extreme value and the (event_ts, seq) of its event; of
 *             equal values the oldest event (event_ts, then seq) wins, as in
 *             a scan in time order
 */
struct extreme {
	bool set;
	struct number number;
	int64_t ts;
	uint64_t seq;
	struct raw_value text; /* NULL when it came from a stored tile */
};

struct partial {
	uint64_t count;
	bool numeric, integer, invalid; /* invalid: a numeric feature's value was no number */
	__int128 isum;
	double dsum, dcomp;
	double mean, m2;
	struct extreme min, max;
};

static void neumaier_add(double *sum, double *comp, double x)
{
	double t = *sum + x;
	if (fabs(*sum) >= fabs(x))
		*comp += (*sum - t) + x;
	else
		*comp += (x - t) + *sum;
	*sum = t;
}

static bool number_equal(const struct number *a, const struct number *b)
{
	return !number_less(a, b) && !number_less(b, a);
}

static bool event_before(int64_t ts, uint64_t seq, int64_t ts2, uint64_t seq2)
{
	return ts < ts2 || (ts == ts2 && seq < seq2);
}

/* Whether candidate replaces the current extreme (min when want_min). */
static bool extreme_wins(const struct extreme *cand, const struct extreme *cur, bool want_min)
{
	if (!cand->set)
		return false;
	if (!cur->set)
		return true;
	if (want_min ? number_less(&cand->number, &cur->number)
		     : number_less(&cur->number, &cand->number))
		return true;
	return number_equal(&cand->number, &cur->number) &&
	       event_before(cand->ts, cand->seq, cur->ts, cur->seq);
}

/* A value's number, parsed when first needed (state 0: not yet, 1: a number, -1: none). */
struct lazy_number {
	int state;
	struct number number;
};

/*
 * Adds one value (text, of the event (ts, seq)) to a partial; lazy, when not
 * NULL, keeps the value's number across the partials it is added to.
 */
static void partial_add(struct partial *pt, const struct raw_value *value, int64_t ts, uint64_t seq,
			struct lazy_number *lazy)
{
	pt->count++;
	if (!pt->numeric)
		return;
	struct lazy_number own = {0};
	if (!lazy)
		lazy = &own;
	if (!lazy->state)
		lazy->state = parse_number(value, &lazy->number) ? 1 : -1;
	if (lazy->state < 0) {
		pt->invalid = true;
		return;
	}
	struct number number = lazy->number;
	if (pt->integer && number.is_int)
		pt->isum += number.i;
	else
		neumaier_add(&pt->dsum, &pt->dcomp, number.d);
	double delta = number.d - pt->mean;
	pt->mean += delta / (double)pt->count;
	pt->m2 += delta * (number.d - pt->mean);
	struct extreme e = {true, number, ts, seq, *value};
	if (extreme_wins(&e, &pt->min, true))
		pt->min = e;
	if (extreme_wins(&e, &pt->max, false))
		pt->max = e;
}

/* Merges partial b into a (the same feature). */
static void partial_merge(struct partial *a, const struct partial *b)
{
	if (!b->count)
		return;
	a->invalid = a->invalid || b->invalid;
	if (a->numeric) {
		a->isum += b->isum;
		neumaier_add(&a->dsum, &a->dcomp, b->dsum);
		neumaier_add(&a->dsum, &a->dcomp, b->dcomp);
		double n = (double)a->count + (double)b->count;
		double delta = b->mean - a->mean;
		a->m2 = a->m2 + b->m2 + delta * delta * ((double)a->count * (double)b->count / n);
		a->mean = a->count ? a->mean + delta * ((double)b->count / n) : b->mean;
		if (extreme_wins(&b->min, &a->min, true))
			a->min = b->min;
		if (extreme_wins(&b->max, &a->max, false))
			a->max = b->max;
	}
	a->count += b->count;
}

/* The compensated double sum; an overflow stays infinite (served as null). */
static double partial_dsum(const struct partial *pt)
{
	return isfinite(pt->dsum) ? pt->dsum + pt->dcomp : pt->dsum;
}

/*
 * Tiles: for each entity and level k (0..TILE_LEVELS-1, TILE_LEVELS = 8
 * defined above, beside the read's cursors), the partials of
 * every feature over the events whose event_ts lies in one aligned span of
 * 2^(20 + 3k) µs (about 1 s, 8.4 s, 67 s, 9 min, 72 min, 9.5 h, 3.2 days,
 * 25 days). A tile is stored once its span holds TILE_MIN_EVENTS events of
 * the entity, so an entity with few events costs no tiles; a stored tile
 * always equals the partials of exactly the history events in its span
 * (apply adds each new event to the tiles it falls in; pruning an event
 * drops the tiles that held it, and the next event landing there rebuilds
 * them from history).
 *
 *   tiles  view NUL entity NUL level be64 span start' -> per feature, in
 *          name order: [1 name length][name][1 flags][8 count] and, when
 *          numeric, [16 isum][8 dsum][8 dcomp][8 mean][8 m2][min][max] with
 *          min and max as [1 is_int][8 value][8 event_ts'][8 seq]
 *
 * Span arithmetic works on sortable times (event_ts'), where the aligned
 * start of a span is the time with its low bits cleared.
 */
#define TILE_MIN_EVENTS 4
#define TILE_FLAG_NUMERIC 1
#define TILE_FLAG_INTEGER 2
#define TILE_FLAG_INVALID 4
#define TILE_EXTREME_LEN (1 + 8 + 8 + 8)
#define TILE_NUMERIC_LEN (16 + 8 * 4 + 2 * TILE_EXTREME_LEN)

static uint64_t tile_width(int level)
{
	return UINT64_C(1) << (20 + 3 * level);
}

static void put_double(uint8_t *out, double d)
{
	uint64_t bits;
	memcpy(&bits, &d, 8);
	fl_put_be64(out, bits);
}

static double get_double(const uint8_t *in)
{
	uint64_t bits = fl_get_be64(in);
	double d;
	memcpy(&d, &bits, 8);
	return d;
}

static void put_extreme(uint8_t *out, const struct extreme *e)
{
	out[0] = e->number.is_int;
	if (e->number.is_int)
		fl_put_be64(out + 1, (uint64_t)e->number.i);
	else
		put_double(out + 1, e->number.d);
	fl_put_be64(out + 9, sortable_time(e->ts));
	fl_put_be64(out + 17, e->seq);
}

static void get_extreme(const uint8_t *in, bool set, struct extreme *e)
{
	*e = (struct extreme){.set = set};
	e->number.is_int = in[0] != 0;
	if (e->number.is_int) {
		e->number.i = (int64_t)fl_get_be64(in + 1);
		e->number.d = (double)e->number.i;
	} else {
		e->number.d = get_double(in + 1);
	}
	e->ts = time_of_sortable(in + 9);
	e->seq = fl_get_be64(in + 17);
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl);

/* One feature's entry of a tile record. */
struct tile_entry {
	const char *name;
	size_t name_len;
	struct partial partial;
};

/* The entry at *pos, advancing it. False at the end or when malformed. */
static bool tile_next(const uint8_t *rec, size_t len, size_t *pos, struct tile_entry *e)
{
	size_t at = *pos;
	if (at >= len || len - at < 2)
		return false;
	size_t nl = rec[at];
	if (len - at < 1 + nl + 1 + 8)
		return false;
	e->name = (const char *)rec + at + 1;
	e->name_len = nl;
	uint8_t flags = rec[at + 1 + nl];
	struct partial *pt = &e->partial;
	*pt = (struct partial){0};
	pt->count = fl_get_be64(rec + at + 2 + nl);
	pt->numeric = flags & TILE_FLAG_NUMERIC;
	pt->integer = flags & TILE_FLAG_INTEGER;
	pt->invalid = flags & TILE_FLAG_INVALID;
	at += 1 + nl + 1 + 8;
	if (pt->numeric) {
		if (len - at < TILE_NUMERIC_LEN)
			return false;
		const uint8_t *q = rec + at;
		pt->isum =
		    (__int128)(((unsigned __int128)fl_get_be64(q) << 64) | fl_get_be64(q + 8));
		pt->dsum = get_double(q + 16);
		pt->dcomp = get_double(q + 24);
		pt->mean = get_double(q + 32);
		pt->m2 = get_double(q + 40);
		get_extreme(q + 48, pt->count > 0, &pt->min);
		get_extreme(q + 48 + TILE_EXTREME_LEN, pt->count > 0, &pt->max);
		at += TILE_NUMERIC_LEN;
	}
	*pos = at;
	return true;
}

static size_t tile_entry_len(size_t name_len, bool numeric)
{
	return 1 + name_len + 1 + 8 + (numeric ? TILE_NUMERIC_LEN : 0);
}

/*
 * The entry of feature name in a tile record, stepping over the others by
 * their lengths (entries are in name order). False when absent or malformed.
 */
static bool tile_find(const uint8_t *rec, size_t len, const char *name, size_t name_len,
		      struct tile_entry *ret)
{
	size_t at = 0;
	while (at < len && len - at >= 2) {
		size_t nl = rec[at];
		if (len - at < 1 + nl + 1 + 8)
			return false;
		int c = name_cmp((const char *)rec + at + 1, nl, name, name_len);
		if (c == 0) {
			size_t pos = at;
			return tile_next(rec, len, &pos, ret);
		}
		if (c > 0)
			return false;
		at += tile_entry_len(nl, rec[at + 1 + nl] & TILE_FLAG_NUMERIC);
	}
	return false;
}

static size_t put_tile_entry(uint8_t *out, const char *name, size_t nl, const struct partial *pt)
{
	out[0] = (uint8_t)nl;
	memcpy(out + 1, name, nl);
	out[1 + nl] = (uint8_t)((pt->numeric ? TILE_FLAG_NUMERIC : 0) |
				(pt->integer ? TILE_FLAG_INTEGER : 0) |
				(pt->invalid ? TILE_FLAG_INVALID : 0));
	fl_put_be64(out + 2 + nl, pt->count);
	if (pt->numeric) {
		uint8_t *q = out + 1 + nl + 1 + 8;
		unsigned __int128 isum = (unsigned __int128)pt->isum;
		fl_put_be64(q, (uint64_t)(isum >> 64));
		fl_put_be64(q + 8, (uint64_t)isum);
		put_double(q + 16, pt->dsum);
		put_double(q + 24, pt->dcomp);
		put_double(q + 32, pt->mean);
		put_double(q + 40, pt->m2);
		put_extreme(q + 48, &pt->min);
		put_extreme(q + 48 + TILE_EXTREME_LEN, &pt->max);
	}
	return tile_entry_len(nl, pt->numeric);
}

/* The key of a tile: prefix (view NUL entity NUL), level, span start'. */
static size_t tile_key(uint8_t *out, const uint8_t *prefix, size_t plen, int level, uint64_t start)
{
	if (out != prefix)
		memcpy(out, prefix, plen);
	out[plen] = (uint8_t)level;
	fl_put_be64(out + plen + 1, start);
	return plen + 9;
}

/* ---- apply ------------------------------------------------------------ */

/*
 * The latest record of an entity: for each feature it has, in name order,
 *   [1 name length][name][8 sortable event_ts][8 seq][4 value length][value]
 * where value is the JSON text of the signed body. One record per entity
 * makes a read of many features one lookup, and an event one update.
 */
#define LATEST_ENTRY_FIXED (1 + 8 + 8 + 4)

struct latest_entry {
	const char *name;
	size_t name_len;
	int64_t ts;
	uint64_t seq;
	const char *value;
	size_t value_len;
};

/* The entry at *pos, advancing it. False at the end or on a malformed record. */
static bool latest_next(const uint8_t *rec, size_t len, size_t *pos, struct latest_entry *e)
{
	size_t at = *pos;
	if (at >= len || len - at < LATEST_ENTRY_FIXED)
		return false;
	size_t nl = rec[at];
	if (len - at < LATEST_ENTRY_FIXED + nl)
		return false;
	e->name = (const char *)rec + at + 1;
	e->name_len = nl;
	e->ts = time_of_sortable(rec + at + 1 + nl);
	e->seq = fl_get_be64(rec + at + 1 + nl + 8);
	uint32_t vl = (uint32_t)rec[at + 17 + nl] << 24 | (uint32_t)rec[at + 18 + nl] << 16 |
		      (uint32_t)rec[at + 19 + nl] << 8 | rec[at + 20 + nl];
	if (len - at - LATEST_ENTRY_FIXED - nl < vl)
		return false;
	e->value = (const char *)rec + at + LATEST_ENTRY_FIXED + nl;
	e->value_len = vl;
	*pos = at + LATEST_ENTRY_FIXED + nl + vl;
	return true;
}

static bool latest_find(const uint8_t *rec, size_t len, const char *name, size_t name_len,
			struct latest_entry *ret)
{
	size_t pos = 0;
	while (latest_next(rec, len, &pos, ret))
		if (ret->name_len == name_len && memcmp(ret->name, name, name_len) == 0)
			return true;
	return false;
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

static int member_cmp(const void *x, const void *y)
{
	const struct fl_json_member *a = x, *b = y;
	return name_cmp(a->key, a->key_len, b->key, b->key_len);
}

/* Room for n bytes in a scratch buffer (*buf of *cap bytes, doubled). */
static bool buffer_reserve(uint8_t **buf, size_t *cap, size_t n)
{
	if (n <= *cap)
		return true;
	size_t grown_cap = *cap ? *cap : 4096;
	while (grown_cap < n)
		grown_cap *= 2;
	uint8_t *grown = realloc(*buf, grown_cap);
	if (!grown)
		return false;
	*buf = grown;
	*cap = grown_cap;
	return true;
}

/* Room for n bytes in the scratch record. */
static bool record_reserve(struct fl_projection *p, size_t n)
{
	return buffer_reserve(&p->record, &p->record_cap, n);
}

static void put_entry(uint8_t *out, const char *name, size_t nl, int64_t ts, uint64_t seq,
		      const char *value, size_t vl)
{
	out[0] = (uint8_t)nl;
	memcpy(out + 1, name, nl);
	fl_put_be64(out + 1 + nl, sortable_time(ts));
	fl_put_be64(out + 9 + nl, seq);
	out[17 + nl] = (uint8_t)(vl >> 24);
	out[18 + nl] = (uint8_t)(vl >> 16);
	out[19 + nl] = (uint8_t)(vl >> 8);
	out[20 + nl] = (uint8_t)vl;
	memcpy(out + LATEST_ENTRY_FIXED + nl, value, vl);
}

/*
 * What applying a feature event needs from its body. Strings point into the
 * body, or into the parsed tree of the slow path.
 */
struct feature_head {
	const char *view, *entity_id; /* NUL-terminated */
	int64_t event_ts_us, ingest_ts_us;
	const char *features; /* the "features" object's text, in the body */
	size_t features_len;
	char view_buf[FL_NAME_MAX_LEN + 1];
	char entity_buf[KEY_MAX + 1];
};

/* A string value without escapes, copied NUL-terminated into out. */
static bool plain_string(const struct fl_json_member *m, char *out, size_t cap)
{
	if (m->value_len < 2 || m->value[0] != '"' || m->value[m->value_len - 1] != '"' ||
	    m->value_len - 2 >= cap || memchr(m->value, '\\', m->value_len) ||
	    memchr(m->value, '\0', m->value_len))
		return false;
	memcpy(out, m->value + 1, m->value_len - 2);
	out[m->value_len - 2] = '\0';
	return true;
}

static bool time_value(const struct fl_json_member *m, int64_t *ret_us)
{
	char text[40];
	return plain_string(m, text, sizeof(text)) && fl_time_parse(text, ret_us) == FL_OK;
}

static bool key_is(const struct fl_json_member *m, const char *key)
{
	return m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0;
}

/*
 * The head of a feature body, read in one pass over its members (the fast
 * path of a catch-up). False when the body is not a plain feature body:
 * another kind, or strings with escapes; the caller then parses it whole.
 */
static bool feature_head_scan(const uint8_t *body, size_t len, struct feature_head *h)
{
	char kind[16] = "";
	struct fl_json_member m;
	size_t pos = 0;
	int more;
	bool ok = true, view = false, entity = false, event_ts = false, ingest_ts = false;

	h->features = NULL;
	while (ok && (more = fl_json_next_member((const char *)body, len, &pos, &m)) == 1) {
		if (key_is(&m, "kind"))
			ok = plain_string(&m, kind, sizeof(kind));
		else if (key_is(&m, "view"))
			ok = view = plain_string(&m, h->view_buf, sizeof(h->view_buf));
		else if (key_is(&m, "entity_id"))
			ok = entity = plain_string(&m, h->entity_buf, sizeof(h->entity_buf));
		else if (key_is(&m, "event_ts"))
			ok = event_ts = time_value(&m, &h->event_ts_us);
		else if (key_is(&m, "ingest_ts"))
			ok = ingest_ts = time_value(&m, &h->ingest_ts_us);
		else if (key_is(&m, "features") && m.value[0] == '{') {
			h->features = m.value;
			h->features_len = m.value_len;
		}
	}
	if (!ok || more != 0 || strcmp(kind, "feature") != 0 || !view || !entity || !event_ts ||
	    !ingest_ts || !h->features)
		return false;
	h->view = h->view_buf;
	h->entity_id = h->entity_buf;
	return true;
}

/* The same from a parsed body. */
static bool feature_head_of(const uint8_t *body, size_t len, const struct fl_stored_event *ev,
			    struct feature_head *h)
{
	h->view = ev->view_name;
	h->entity_id = ev->entity_id;
	h->event_ts_us = ev->event_ts_us;
	h->ingest_ts_us = ev->ingest_ts_us;
	return fl_json_member((const char *)body, len, "features", &h->features,
			      &h->features_len) &&
	       h->features[0] == '{';
}

/* The features object's members, sorted by name, in *members (grown as needed). */
static enum fl_status event_members(const char *features, size_t features_len,
				    struct fl_json_member **members, size_t *members_cap,
				    size_t *ret_n)
{
	size_t pos = 0, n = 0;
	struct fl_json_member m;
	int more;
	while ((more = fl_json_next_member(features, features_len, &pos, &m)) == 1) {
		if (m.key_len == 0 || m.key_len > FL_NAME_MAX_LEN ||
		    memchr(m.key, '\\', m.key_len) || m.value_len > UINT32_MAX)
			return FL_ERR_CORRUPT;
		if (n == *members_cap) {
			size_t cap = *members_cap ? 2 * *members_cap : 32;
			struct fl_json_member *grown = realloc(*members, cap * sizeof(*grown));
			if (!grown)
				return FL_ERR_NOMEM;
			*members = grown;
			*members_cap = cap;
		}
		(*members)[n++] = m;
	}
	if (more < 0)
		return FL_ERR_CORRUPT;
	if (n > 1) /* members is NULL until the first one */
		qsort(*members, n, sizeof(**members), member_cmp);
	for (size_t i = 1; i < n; i++)
		if (member_cmp(&(*members)[i - 1], &(*members)[i]) == 0)
			return FL_ERR_CORRUPT; /* a feature twice in one body */
	*ret_n = n;
	return FL_OK;
}

/* Room for n bytes in the tile scratch record. */
static bool tile_record_reserve(struct fl_projection *p, size_t n)
{
	return buffer_reserve(&p->tile_record, &p->tile_record_cap, n);
}

/* An empty partial for a feature of the view (numeric: int64 or double). */
static struct partial partial_for(const struct fl_view *view, const char *name, size_t nl)
{
	char buf[FL_NAME_MAX_LEN + 1];
	struct partial pt = {0};
	if (nl > FL_NAME_MAX_LEN)
		return pt;
	memcpy(buf, name, nl);
	buf[nl] = '\0';
	const struct fl_feature *f = fl_view_feature(view, buf);
	pt.numeric = f && (f->type == FL_FEATURE_INT64 || f->type == FL_FEATURE_DOUBLE);
	pt.integer = f && f->type == FL_FEATURE_INT64;
	return pt;
}

static bool value_is_null(const struct fl_json_member *m)
{
	return m->value_len == 4 && memcmp(m->value, "null", 4) == 0;
}

/*
 * The tile record old (old_len bytes; none when old is NULL) with one more
 * event, whose features are members[0..n) in name order, written into
 * p->tile_record; its length in *ret_len.
 */
static enum fl_status tile_add_event(struct fl_projection *p, const struct fl_view *view,
				     const uint8_t *old, size_t old_len,
				     const struct fl_json_member *members,
				     struct lazy_number *numbers, size_t n, int64_t ts,
				     uint64_t seq, size_t *ret_len)
{
	size_t bound = old_len, pos = 0, out = 0, i = 0;
	for (size_t j = 0; j < n; j++)
		bound += tile_entry_len(members[j].key_len, true);
	if (!tile_record_reserve(p, bound))
		return FL_ERR_NOMEM;
	struct tile_entry e;
	bool have_old = tile_next(old, old_len, &pos, &e);
	while (have_old || i < n) {
		const struct fl_json_member *m = i < n ? &members[i] : NULL;
		int c = !have_old ? 1 : !m ? -1 : name_cmp(e.name, e.name_len, m->key, m->key_len);
		if (c > 0 && value_is_null(m)) { /* a null is no value: no entry */
			i++;
			continue;
		}
		struct partial pt = c <= 0 ? e.partial : partial_for(view, m->key, m->key_len);
		if (c >= 0 && !value_is_null(m))
			partial_add(&pt, &(struct raw_value){m->value, m->value_len}, ts, seq,
				    numbers ? &numbers[i] : NULL);
		out += c <= 0 ? put_tile_entry(p->tile_record + out, e.name, e.name_len, &pt)
			      : put_tile_entry(p->tile_record + out, m->key, m->key_len, &pt);
		if (c <= 0)
			have_old = tile_next(old, old_len, &pos, &e);
		if (c >= 0)
			i++;
	}
	if (pos != old_len)
		return FL_ERR_CORRUPT;
	*ret_len = out;
	return FL_OK;
}

struct cached_tile;
static uint32_t tile_hash(const uint8_t *key, size_t len);
/* A tile of the apply run (see struct tile_cache). */
enum tile_state {
	TILE_SEEN,    /* updated in place once this run; not decoded */
	TILE_DECODED, /* decoded here, newer than what LMDB holds: written with the run */
	TILE_DROPPED  /* pruned this run: not written */
};

static struct cached_tile *tile_cache_put(struct tile_cache *c, const uint8_t *key, size_t len,
					  uint32_t hash, enum tile_state state);
static enum fl_status cached_add_event(struct cached_tile *t, const struct fl_view *view,
				       const struct fl_json_member *members,
				       struct lazy_number *numbers, size_t n, int64_t ts,
				       uint64_t seq);

/*
 * Builds the tile of level at start from the entity's history: every event
 * in its span, in key order; into the run's cache when cache is not NULL
 * (written with the run), else written now. Builds nothing when the span
 * holds fewer than TILE_MIN_EVENTS events (*ret_stored false).
 */
static enum fl_status tile_build(struct fl_projection *p, MDB_txn *txn, const struct fl_view *view,
				 const uint8_t *prefix, size_t plen, int level, uint64_t start,
				 struct tile_cache *cache, bool *ret_stored)
{
	uint8_t key[KEY_MAX + 1];
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t width = tile_width(level), events = 0;
	enum fl_status st = FL_OK;
	*ret_stored = false;
	int rc = mdb_cursor_open(txn, p->history, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	/* count first: most spans of a quiet entity stop here */
	memcpy(key, prefix, plen);
	fl_put_be64(key + plen, start);
	fl_put_be64(key + plen + 8, 0);
	k = (MDB_val){plen + 16, key};
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	     rc == MDB_SUCCESS && events < TILE_MIN_EVENTS;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != plen + 16 || memcmp(k.mv_data, prefix, plen) != 0 ||
		    fl_get_be64((uint8_t *)k.mv_data + plen) - start >= width)
			break;
		events++;
	}
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
		mdb_cursor_close(cur);
		return fl_status_of_mdb(rc);
	}
	if (events < TILE_MIN_EVENTS) {
		mdb_cursor_close(cur);
		return FL_OK;
	}
	if (cache) { /* decoded, in the run's cache */
		uint8_t tkey[KEY_MAX + 1];
		size_t klen = tile_key(tkey, prefix, plen, level, start);
		struct cached_tile *t =
		    tile_cache_put(cache, tkey, klen, tile_hash(tkey, klen), TILE_DECODED);
		if (!t)
			st = FL_ERR_NOMEM;
		k = (MDB_val){plen + 16, key};
		for (rc = st == FL_OK ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
		     rc == MDB_SUCCESS && st == FL_OK; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (k.mv_size != plen + 16 || memcmp(k.mv_data, prefix, plen) != 0 ||
			    fl_get_be64((uint8_t *)k.mv_data + plen) - start >= width)
				break;
			size_t n;
			st = event_members(v.mv_data, v.mv_size, &p->build_members,
					   &p->build_members_cap, &n);
			if (st == FL_OK)
				st = cached_add_event(t, view, p->build_members, NULL, n,
						      time_of_sortable((uint8_t *)k.mv_data + plen),
						      fl_get_be64((uint8_t *)k.mv_data + plen + 8));
		}
		mdb_cursor_close(cur);
		if (st == FL_OK && rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
			st = fl_status_of_mdb(rc);
		*ret_stored = st == FL_OK;
		return st;
	}
	/* the record grows in p->record's twin: build into a private buffer */
	uint8_t *acc = NULL;
	size_t acc_len = 0;
	k = (MDB_val){plen + 16, key};
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS && st == FL_OK;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != plen + 16 || memcmp(k.mv_data, prefix, plen) != 0 ||
		    fl_get_be64((uint8_t *)k.mv_data + plen) - start >= width)
			break;
		size_t n;
		st = event_members(v.mv_data, v.mv_size, &p->build_members, &p->build_members_cap,
				   &n);
		size_t len = 0;
		if (st == FL_OK)
			st = tile_add_event(p, view, acc, acc_len, p->build_members, NULL, n,
					    time_of_sortable((uint8_t *)k.mv_data + plen),
					    fl_get_be64((uint8_t *)k.mv_data + plen + 8), &len);
		if (st == FL_OK) {
			uint8_t *grown = realloc(acc, len ? len : 1);
			if (!grown) {
				st = FL_ERR_NOMEM;
				break;
			}
			acc = grown;
			memcpy(acc, p->tile_record, len);
			acc_len = len;
		}
	}
	mdb_cursor_close(cur);
	if (st == FL_OK && rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		st = fl_status_of_mdb(rc);
	if (st == FL_OK) {
		size_t klen = tile_key(key, prefix, plen, level, start);
		k = (MDB_val){klen, key};
		v = (MDB_val){acc_len, acc};
		st = fl_status_of_mdb(mdb_put(txn, p->tiles, &k, &v, 0));
		*ret_stored = st == FL_OK;
	}
	free(acc);
	return st;
}

/*
 * The tiles of an apply run, keyed by their tile key. The first event of
 * the run that lands in a stored tile updates it in place (one lookup, one
 * put) and the tile is noted as seen; the second one decodes it, and from
 * then on it takes the run's events in memory and is written once, in key
 * order, before the run commits (in the same transaction, so committed
 * tiles always match applied_seq). A tile built from history during the
 * run is built decoded. Most events of a run share the coarse levels, so
 * most of the lookups, decodes, encodes and puts of one event at a time go
 * away, while a tile the run touches once costs what it did. A decoded
 * tile equals the decoding of its encoding (see tile_normalize), so the
 * bytes written do not depend on how events were grouped into runs or when
 * the cache was flushed. Pruning marks a tile of the run dropped: it is not
 * written, and the next event landing in its span rebuilds it from
 * history, as before.
 */
#define TILE_CACHE_MAX 4096 /* tiles held before they are written mid-run */

struct cached_entry {
	uint8_t name_len;
	char name[FL_NAME_MAX_LEN + 1];
	struct partial partial;
};

struct cached_tile {
	enum tile_state state;
	uint32_t hash;
	size_t index_at;	/* its slot in the index */
	size_t key_at, key_len; /* in the cache's keys */
	size_t n, cap;		/* entries, in name order */
	struct cached_entry *entries;
};

struct tile_cache {
	struct cached_tile *tiles; /* kept, with their entries, across runs */
	size_t n, cap;
	uint32_t *index;  /* open addressing: a tile's position + 1, 0 when empty */
	size_t index_cap; /* a power of 2, at least 2 * TILE_CACHE_MAX */
	uint8_t *keys;	  /* the tiles' keys, one after another */
	size_t keys_len, keys_cap;
};

static void tile_cache_free(struct tile_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->cap; i++)
		free(c->tiles[i].entries);
	free(c->tiles);
	free(c->index);
	free(c->keys);
	free(c);
}

static void tile_cache_reset(struct tile_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) /* no deletions: these are all the index holds */
		c->index[c->tiles[i].index_at] = 0;
	c->n = 0;
	c->keys_len = 0;
}

static uint32_t tile_hash(const uint8_t *key, size_t len)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * UINT64_C(1099511628211);
	return (uint32_t)(h ^ (h >> 32));
}

/* The slot of the index where key is or would go. */
static uint32_t *tile_cache_slot(struct tile_cache *c, const uint8_t *key, size_t len,
				 uint32_t hash)
{
	size_t mask = c->index_cap - 1;
	for (size_t at = hash & mask;; at = (at + 1) & mask) {
		uint32_t *slot = &c->index[at];
		if (!*slot)
			return slot;
		const struct cached_tile *t = &c->tiles[*slot - 1];
		if (t->hash == hash && t->key_len == len &&
		    memcmp(c->keys + t->key_at, key, len) == 0)
			return slot;
	}
}

/* A tile's partials are those its record decodes to (extremes: set once
 * the tile counts a value, no text), so that caching changes no byte. */
static void tile_normalize(struct partial *pt)
{
	if (!pt->numeric)
		return;
	pt->min.set = pt->max.set = pt->count > 0;
	pt->min.text = pt->max.text = (struct raw_value){0};
}

static bool tile_entries_reserve(struct cached_tile *t, size_t n)
{
	if (n <= t->cap)
		return true;
	size_t cap = t->cap ? t->cap * 2 : 4;
	while (cap < n)
		cap *= 2;
	struct cached_entry *grown = realloc(t->entries, cap * sizeof(*grown));
	if (!grown)
		return false;
	t->entries = grown;
	t->cap = cap;
	return true;
}

/* Decodes a stored tile record into t. */
static enum fl_status tile_decode(struct cached_tile *t, const uint8_t *rec, size_t len)
{
	size_t pos = 0;
	struct tile_entry e;
	t->n = 0;
	while (tile_next(rec, len, &pos, &e)) {
		if (e.name_len > FL_NAME_MAX_LEN || !tile_entries_reserve(t, t->n + 1))
			return e.name_len > FL_NAME_MAX_LEN ? FL_ERR_CORRUPT : FL_ERR_NOMEM;
		struct cached_entry *ce = &t->entries[t->n++];
		ce->name_len = (uint8_t)e.name_len;
		memcpy(ce->name, e.name, e.name_len);
		ce->partial = e.partial;
	}
	return pos == len ? FL_OK : FL_ERR_CORRUPT;
}

/*
 * Adds one event, whose features are members[0..n) in name order, to a
 * cached tile: what tile_add_event does to a record.
 */
static enum fl_status cached_add_event(struct cached_tile *t, const struct fl_view *view,
				       const struct fl_json_member *members,
				       struct lazy_number *numbers, size_t n, int64_t ts,
				       uint64_t seq)
{
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		const struct fl_json_member *m = &members[i];
		int c = -1;
		while (at < t->n && (c = name_cmp(t->entries[at].name, t->entries[at].name_len,
						  m->key, m->key_len)) < 0)
			at++;
		if (value_is_null(m)) /* a null is no value: no entry, no change */
			continue;
		if (at == t->n || c > 0) { /* the tile's first value of the feature */
			if (m->key_len > FL_NAME_MAX_LEN)
				return FL_ERR_CORRUPT;
			if (!tile_entries_reserve(t, t->n + 1))
				return FL_ERR_NOMEM;
			memmove(&t->entries[at + 1], &t->entries[at],
				(t->n - at) * sizeof(*t->entries));
			t->n++;
			struct cached_entry *ce = &t->entries[at];
			ce->name_len = (uint8_t)m->key_len;
			memcpy(ce->name, m->key, m->key_len);
			ce->partial = partial_for(view, m->key, m->key_len);
		}
		struct partial *pt = &t->entries[at].partial;
		partial_add(pt, &(struct raw_value){m->value, m->value_len}, ts, seq,
			    numbers ? &numbers[i] : NULL);
		tile_normalize(pt);
	}
	return FL_OK;
}

struct tile_to_write {
	const uint8_t *key;
	size_t key_len;
	const struct cached_tile *tile;
};

static int tile_to_write_cmp(const void *x, const void *y)
{
	const struct tile_to_write *a = x, *b = y;
	size_t len = a->key_len < b->key_len ? a->key_len : b->key_len;
	int c = memcmp(a->key, b->key, len);
	return c ? c : (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

/* Writes the run's decoded tiles in key order, and empties the cache. */
static enum fl_status tile_cache_flush(struct fl_projection *p, MDB_txn *txn)
{
	struct tile_cache *c = p->tile_cache;
	if (!c || !c->n)
		return FL_OK;
	struct tile_to_write *order = malloc(c->n * sizeof(*order));
	if (!order)
		return FL_ERR_NOMEM;
	size_t n = 0;
	for (size_t i = 0; i < c->n; i++)
		if (c->tiles[i].state == TILE_DECODED)
			order[n++] = (struct tile_to_write){c->keys + c->tiles[i].key_at,
							    c->tiles[i].key_len, &c->tiles[i]};
	qsort(order, n, sizeof(*order), tile_to_write_cmp);
	MDB_cursor *cur = NULL;
	enum fl_status st = fl_status_of_mdb(mdb_cursor_open(txn, p->tiles, &cur));
	for (size_t i = 0; i < n && st == FL_OK; i++) {
		const struct cached_tile *t = order[i].tile;
		size_t bound = 0, len = 0;
		for (size_t j = 0; j < t->n; j++)
			bound += tile_entry_len(t->entries[j].name_len, true);
		if (!tile_record_reserve(p, bound)) {
			st = FL_ERR_NOMEM;
			break;
		}
		for (size_t j = 0; j < t->n; j++)
			len += put_tile_entry(p->tile_record + len, t->entries[j].name,
					      t->entries[j].name_len, &t->entries[j].partial);
		MDB_val k = {t->key_len, (void *)order[i].key}, v = {len, p->tile_record};
		st = fl_status_of_mdb(mdb_cursor_put(cur, &k, &v, 0));
	}
	if (cur)
		mdb_cursor_close(cur);
	free(order);
	tile_cache_reset(c);
	return st;
}

/* The run's tile of key, in any state (NULL when the run has none). */
static struct cached_tile *tile_cache_get(struct tile_cache *c, const uint8_t *key, size_t len,
					  uint32_t hash)
{
	if (!c || !c->n)
		return NULL;
	uint32_t *slot = tile_cache_slot(c, key, len, hash);
	return *slot ? &c->tiles[*slot - 1] : NULL;
}

/* The run's tile of key in state, with no entries (an earlier one of key
 * is taken again). */
static struct cached_tile *tile_cache_put(struct tile_cache *c, const uint8_t *key, size_t len,
					  uint32_t hash, enum tile_state state)
{
	uint32_t *slot = tile_cache_slot(c, key, len, hash);
	if (!*slot) {
		if (c->keys_len + len > c->keys_cap) {
			size_t cap = c->keys_cap ? c->keys_cap * 2 : 16384;
			while (cap < c->keys_len + len)
				cap *= 2;
			uint8_t *grown = realloc(c->keys, cap);
			if (!grown)
				return NULL;
			c->keys = grown;
			c->keys_cap = cap;
		}
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			struct cached_tile *grown = realloc(c->tiles, cap * sizeof(*grown));
			if (!grown)
				return NULL;
			memset(grown + c->cap, 0, (cap - c->cap) * sizeof(*grown));
			c->tiles = grown;
			c->cap = cap;
		}
		struct cached_tile *t = &c->tiles[c->n++];
		*slot = (uint32_t)c->n;
		t->index_at = (size_t)(slot - c->index);
		t->hash = hash;
		t->key_at = c->keys_len;
		t->key_len = len;
		memcpy(c->keys + c->keys_len, key, len);
		c->keys_len += len;
	}
	struct cached_tile *t = &c->tiles[*slot - 1];
	t->state = state;
	t->n = 0;
	return t;
}

static enum fl_status tile_cache_ensure(struct fl_projection *p)
{
	if (p->tile_cache)
		return FL_OK;
	struct tile_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return FL_ERR_NOMEM;
	c->index_cap = 2 * TILE_CACHE_MAX;
	c->index = calloc(c->index_cap, sizeof(*c->index));
	if (!c->index) {
		free(c);
		return FL_ERR_NOMEM;
	}
	p->tile_cache = c;
	return FL_OK;
}

/*
 * update_tiles for a run of one event (the live path), without the cache:
 * each tile is read, updated and written in place through one cursor.
 */
static enum fl_status update_tiles_directly(struct fl_projection *p, MDB_txn *txn,
					    const struct fl_view *view, const uint8_t *prefix,
					    size_t plen, int64_t ts, uint64_t seq, size_t n)
{
	uint8_t key[KEY_MAX + 1];
	uint64_t when = sortable_time(ts);
	enum fl_status st = FL_OK;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, p->tiles, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	for (int level = TILE_LEVELS - 1; level >= 0 && st == FL_OK; level--) {
		uint64_t start = when & ~(tile_width(level) - 1);
		MDB_val k = {tile_key(key, prefix, plen, level, start), key}, v;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET); /* k stays ours */
		if (rc == MDB_NOTFOUND) {
			bool stored;
			st = tile_build(p, txn, view, prefix, plen, level, start, NULL, &stored);
			if (st == FL_OK && !stored)
				break;
			continue;
		}
		if (rc != MDB_SUCCESS) {
			st = fl_status_of_mdb(rc);
			break;
		}
		size_t len;
		st = tile_add_event(p, view, v.mv_data, v.mv_size, p->members, p->numbers, n, ts,
				    seq, &len);
		if (st == FL_OK) {
			v = (MDB_val){len, p->tile_record};
			st = fl_status_of_mdb(mdb_cursor_put(cur, &k, &v, MDB_CURRENT));
		}
	}
	mdb_cursor_close(cur);
	return st;
}

/*
 * Adds the event (already in history; its features members[0..n)) to the
 * entity's tiles, coarsest level first. A tile that is not stored is built
 * from history when its span now holds TILE_MIN_EVENTS events; when it
 * holds fewer, so do the finer spans inside it, and the walk stops.
 */
static enum fl_status update_tiles(struct fl_projection *p, MDB_txn *txn,
				   const struct fl_view *view, const uint8_t *prefix, size_t plen,
				   int64_t ts, uint64_t seq, size_t n)
{
	uint8_t key[KEY_MAX + 1];
	uint64_t when = sortable_time(ts);
	enum fl_status st = FL_OK;
	MDB_cursor *cur = NULL;
#ifdef FL_PROJECTION_UNTILED /* bench/bench_projection_untiled: apply without tiles */
	return FL_OK;
#endif
	if (n > p->numbers_cap) {
		struct lazy_number *grown = realloc(p->numbers, n * sizeof(*grown));
		if (!grown)
			return FL_ERR_NOMEM;
		p->numbers = grown;
		p->numbers_cap = n;
	}
	memset(p->numbers, 0, n * sizeof(*p->numbers)); /* each parsed once for all levels */
	if (!p->tile_run)
		return update_tiles_directly(p, txn, view, prefix, plen, ts, seq, n);
	if ((st = tile_cache_ensure(p)) != FL_OK)
		return st;
	struct tile_cache *c = p->tile_cache;
	if (c->n + TILE_LEVELS > TILE_CACHE_MAX && (st = tile_cache_flush(p, txn)) != FL_OK)
		return st;
	for (int level = TILE_LEVELS - 1; level >= 0 && st == FL_OK; level--) {
		uint64_t start = when & ~(tile_width(level) - 1);
		size_t klen = tile_key(key, prefix, plen, level, start);
		uint32_t hash = tile_hash(key, klen);
		struct cached_tile *t = tile_cache_get(c, key, klen, hash);
		if (!t || t->state != TILE_DECODED) {
			/* one cursor: the entity's tiles of neighbouring levels often
			 * share a page, and a cursor's lookup stays on its page */
			int rc = cur ? MDB_SUCCESS : mdb_cursor_open(txn, p->tiles, &cur);
			MDB_val k = {klen, key}, v;
			if (rc == MDB_SUCCESS)
				rc = mdb_cursor_get(cur, &k, &v, MDB_SET); /* k stays ours */
			if (rc == MDB_NOTFOUND) {
				bool stored;
				st = tile_build(p, txn, view, prefix, plen, level, start, c,
						&stored);
				if (st == FL_OK && !stored)
					break;
				continue;
			}
			if (rc != MDB_SUCCESS) {
				st = fl_status_of_mdb(rc);
				break;
			}
			if (!t || t->state == TILE_DROPPED) { /* the run's first event here */
				size_t len;
				st = tile_add_event(p, view, v.mv_data, v.mv_size, p->members,
						    p->numbers, n, ts, seq, &len);
				if (st == FL_OK) {
					v = (MDB_val){len, p->tile_record};
					st = fl_status_of_mdb(
					    mdb_cursor_put(cur, &k, &v, MDB_CURRENT));
				}
				if (st == FL_OK && !tile_cache_put(c, key, klen, hash, TILE_SEEN))
					st = FL_ERR_NOMEM;
				continue;
			}
			/* the second: decoded from here on */
			t = tile_cache_put(c, key, klen, hash, TILE_DECODED);
			if ((st = tile_decode(t, v.mv_data, v.mv_size)) != FL_OK) {
				t->state = TILE_DROPPED; /* not written */
				break;
			}
		}
		st = cached_add_event(t, view, p->members, p->numbers, n, ts, seq);
	}
	if (cur)
		mdb_cursor_close(cur);
	return st;
}

/* Drops the entity's tiles (every level) whose span holds event_ts ts. */
static enum fl_status drop_tiles_at(struct fl_projection *p, MDB_txn *txn, const uint8_t *prefix,
				    size_t plen, int64_t ts, uint64_t dropped[TILE_LEVELS])
{
	uint8_t key[KEY_MAX + 1];
	uint64_t when = sortable_time(ts);
	for (int level = 0; level < TILE_LEVELS; level++) {
		uint64_t start = when & ~(tile_width(level) - 1);
		if (dropped[level] == start + 1)
			continue; /* done for an earlier event of this prune */
		dropped[level] = start + 1;
		MDB_val k = {tile_key(key, prefix, plen, level, start), key};
		/* a tile the run holds is not written back either */
		struct cached_tile *t =
		    tile_cache_get(p->tile_cache, key, k.mv_size, tile_hash(key, k.mv_size));
		if (t)
			t->state = TILE_DROPPED;
		int rc = mdb_del(txn, p->tiles, &k, NULL);
		if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
			return fl_status_of_mdb(rc);
	}
	return FL_OK;
}

/*
 * Drops the entity's history older than bound (the view's retention). After
 * each delete the cursor seeks the prefix again: MDB_GET_CURRENT after
 * deleting the last key of the database is EINVAL, not MDB_NOTFOUND.
 */
static enum fl_status prune_history(struct fl_projection *p, MDB_txn *txn, const uint8_t *prefix,
				    size_t prefix_len, int64_t bound_us)
{
	MDB_cursor *cur;
	MDB_val key, val;
	uint64_t dropped[TILE_LEVELS] = {0};
	enum fl_status st = FL_OK;
	int rc = mdb_cursor_open(txn, p->history, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	for (;;) {
		key = (MDB_val){prefix_len, (void *)prefix};
		rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
		if (rc != MDB_SUCCESS)
			break;
		if (key.mv_size != prefix_len + 16 || memcmp(key.mv_data, prefix, prefix_len) != 0)
			break;
		int64_t ts = time_of_sortable((uint8_t *)key.mv_data + prefix_len);
		if (ts >= bound_us)
			break;
		uint8_t seq_key[8];
		memcpy(seq_key, (uint8_t *)key.mv_data + prefix_len + 8, 8);
		MDB_val ingest_key = {8, seq_key};
		rc = mdb_del(txn, p->ingest, &ingest_key, NULL);
		if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc != MDB_SUCCESS)
			break;
		/* a tile that held the event no longer equals its span's events */
		if ((st = drop_tiles_at(p, txn, prefix, prefix_len, ts, dropped)) != FL_OK)
			break;
	}
	mdb_cursor_close(cur);
	if (st != FL_OK)
		return st;
	return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? FL_OK : fl_status_of_mdb(rc);
}

/* Merges one event into the latest record under key[0..plen). */
static enum fl_status merge_latest(struct fl_projection *p, MDB_txn *txn, const uint8_t *key,
				   size_t plen, uint64_t seq, const struct feature_head *h,
				   size_t n)
{
	MDB_val k = {plen, (void *)key}, v = {0, NULL};
	int rc = mdb_get(txn, p->latest, &k, &v);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return fl_status_of_mdb(rc);
	const uint8_t *old = v.mv_data;
	size_t old_len = rc == MDB_SUCCESS ? v.mv_size : 0, pos = 0, out = 0, i = 0;
	size_t bound = old_len;
	for (size_t j = 0; j < n; j++)
		bound += LATEST_ENTRY_FIXED + p->members[j].key_len + p->members[j].value_len;
	if (!record_reserve(p, bound))
		return FL_ERR_NOMEM;
	struct latest_entry e;
	bool have_old = latest_next(old, old_len, &pos, &e), changed = false;
	while (have_old || i < n) {
		const struct fl_json_member *m = i < n ? &p->members[i] : NULL;
		int c = !have_old ? 1 : !m ? -1 : name_cmp(e.name, e.name_len, m->key, m->key_len);
		if (c < 0 || (c == 0 &&
			      (e.ts > h->event_ts_us || (e.ts == h->event_ts_us && e.seq > seq)))) {
			put_entry(p->record + out, e.name, e.name_len, e.ts, e.seq, e.value,
				  e.value_len); /* the stored value stays */
			out += LATEST_ENTRY_FIXED + e.name_len + e.value_len;
		} else {
			put_entry(p->record + out, m->key, m->key_len, h->event_ts_us, seq,
				  m->value, m->value_len);
			out += LATEST_ENTRY_FIXED + m->key_len + m->value_len;
			changed = true;
		}
		if (c <= 0)
			have_old = latest_next(old, old_len, &pos, &e);
		if (c >= 0)
			i++;
	}
	if (pos != old_len)
		return FL_ERR_CORRUPT; /* a record that does not parse to its end */
	if (!changed)
		return FL_OK;
	v = (MDB_val){out, p->record};
	return fl_status_of_mdb(mdb_put(txn, p->latest, &k, &v, 0));
}

/*
 * Puts the event in the entity's history and, feature by feature, in the
 * latest values where it is the newest. Values are stored as the text the
 * signed body carries, so reads serve exactly those bytes.
 */
static enum fl_status apply_feature(struct fl_projection *p, MDB_txn *txn,
				    const struct fl_log_entry *entry, const struct feature_head *h)
{
	uint8_t key[KEY_MAX + 1];
	struct fl_view *view;
	enum fl_status st;

	if (fl_view_registry_get(p->registry, h->view, &view) != FL_OK)
		return FL_OK; /* a view we never saw registered: nothing to serve */
	size_t plen = entity_prefix(h->view, h->entity_id, key, sizeof(key) - 16);
	if (!plen) {
		fl_view_unref(view);
		return FL_ERR_CORRUPT;
	}
	/* history */
	fl_put_be64(key + plen, sortable_time(h->event_ts_us));
	fl_put_be64(key + plen + 8, entry->seq);
	MDB_val k = {plen + 16, key}, v = {h->features_len, (void *)h->features};
	st = fl_status_of_mdb(mdb_put(txn, p->history, &k, &v, 0));
	if (st == FL_OK) { /* when the event became known, for as_known reads */
		uint8_t ingest_ts[8];
		fl_put_be64(ingest_ts, sortable_time(h->ingest_ts_us));
		MDB_val ik = {8, key + plen + 8}, iv = {8, ingest_ts};
		st = fl_status_of_mdb(mdb_put(txn, p->ingest, &ik, &iv, 0));
	}

	size_t n = 0;
	if (st == FL_OK)
		st = event_members(h->features, h->features_len, &p->members, &p->members_cap, &n);
	/* latest: the entity's record, merged feature by feature (newest
	 * (event_ts, seq) wins: a late event never overwrites a newer value) */
	if (st == FL_OK)
		st = merge_latest(p, txn, key, plen, entry->seq, h, n);
	/* the window tiles the event falls in, in the same transaction */
	if (st == FL_OK)
		st = update_tiles(p, txn, view, key, plen, h->event_ts_us, entry->seq, n);
	if (st == FL_OK)
		st = prune_history(p, txn, key, plen, h->ingest_ts_us - fl_view_retention_us(view));
	if (st == FL_OK && h->ingest_ts_us > p->log_clock_us)
		p->log_clock_us = h->ingest_ts_us;
	fl_view_unref(view);
	return st;
}

static enum fl_status apply_view(struct fl_projection *p, MDB_txn *txn,
				 const struct fl_stored_event *ev)
{
	const char *canonical;
	size_t len;
	const char *name = fl_view_name(ev->view);
	MDB_val k = {strlen(name), (void *)name}, v;

	int rc = mdb_get(txn, p->views, &k, &v);
	if (rc == MDB_SUCCESS && v.mv_size >= 8 && fl_get_be64(v.mv_data) >= ev->version)
		return FL_OK; /* seen before */
	fl_view_canonical(ev->view, &canonical, &len);
	v = (MDB_val){8 + len, NULL};
	rc = mdb_put(txn, p->views, &k, &v, MDB_RESERVE);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	fl_put_be64(v.mv_data, ev->version);
	memcpy((uint8_t *)v.mv_data + 8, canonical, len);
	return FL_OK;
}

static enum fl_status apply_once(struct fl_projection *p, const struct fl_log_entry *entries,
				 size_t n, struct fl_stored_event *views, size_t *ret_n_views)
{
	MDB_txn *txn;
	enum fl_status st = FL_OK;
	size_t n_views = 0;
	int rc = mdb_txn_begin(p->env, NULL, 0, &txn);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	tile_cache_reset(p->tile_cache); /* what a failed run held is gone with it */
	p->tile_run = n > 1;
	for (size_t i = 0; i < n && st == FL_OK; i++) {
		struct fl_stored_event ev;
		struct feature_head head;
		if (feature_head_scan(entries[i].body, entries[i].body_len, &head)) {
			st = apply_feature(p, txn, &entries[i], &head);
			continue;
		}
		st = fl_stored_event_parse(entries[i].body, entries[i].body_len, &ev);
		if (st != FL_OK)
			break;
		if (ev.kind == FL_BODY_FEATURE) {
			st = feature_head_of(entries[i].body, entries[i].body_len, &ev, &head)
				 ? apply_feature(p, txn, &entries[i], &head)
				 : FL_ERR_CORRUPT;
			fl_stored_event_finish(&ev);
		} else if (ev.kind == FL_BODY_VIEW) {
			st = apply_view(p, txn, &ev);
			/* Views take effect for the events after them in this run. */
			if (st == FL_OK &&
			    fl_view_registry_put(p->registry, ev.view, ev.version) == FL_OK)
				views[n_views++] = ev;
			else
				fl_stored_event_finish(&ev);
		} else {
			fl_stored_event_finish(&ev);
		}
	}
	if (st == FL_OK) /* the run's tiles, in its transaction */
		st = tile_cache_flush(p, txn);
	if (st == FL_OK) {
		uint8_t buf[8];
		fl_put_be64(buf, entries[n - 1].seq);
		MDB_val k = {11, "applied_seq"}, v = {8, buf};
		st = fl_status_of_mdb(mdb_put(txn, p->meta, &k, &v, 0));
	}
	if (st == FL_OK && p->log_clock_us != INT64_MIN) {
		uint8_t buf[8];
		fl_put_be64(buf, sortable_time(p->log_clock_us));
		MDB_val k = {9, "log_clock"}, v = {8, buf};
		st = fl_status_of_mdb(mdb_put(txn, p->meta, &k, &v, 0));
	}
	if (st == FL_OK)
		st = fl_status_of_mdb(mdb_txn_commit(txn));
	else
		mdb_txn_abort(txn);
	*ret_n_views = n_views;
	return st;
}

enum fl_status fl_projection_apply(struct fl_projection *p, const struct fl_log_entry *entries,
				   size_t n)
{
	enum fl_status st;
	if (!p || (!entries && n))
		return FL_ERR_INVALID;
	if (n == 0)
		return FL_OK;
	uint64_t applied = atomic_load(&p->applied_seq);
	for (size_t i = 0; i < n; i++)
		if (entries[i].seq != applied + 1 + i)
			return FL_ERR_INVALID;
	struct fl_stored_event *views = calloc(n, sizeof(*views));
	if (!views)
		return FL_ERR_NOMEM;
	int64_t log_clock_before = p->log_clock_us;
	for (;;) {
		size_t n_views = 0;
		p->log_clock_us = log_clock_before; /* a failed run moved it */
		st = apply_once(p, entries, n, views, &n_views);
		for (size_t i = 0; i < n_views; i++)
			fl_stored_event_finish(&views[i]);
		if (st == FL_OK)
			break;
		/*
		 * Views registered in a failed run stay in the registry: they are
		 * re-applied (as no-ops) when the run is retried.
		 */
		if (st != FL_ERR_FULL)
			break;
		pthread_rwlock_wrlock(&p->resize_lock);
		int rc = mdb_env_set_mapsize(p->env, p->map_size * 2);
		if (rc == MDB_SUCCESS)
			p->map_size *= 2;
		pthread_rwlock_unlock(&p->resize_lock);
		if (rc != MDB_SUCCESS)
			break;
	}
	free(views);
	if (st == FL_OK)
		atomic_store(&p->applied_seq, entries[n - 1].seq);
	else
		p->log_clock_us = log_clock_before;
	return st;
}

/* ---- reads ------------------------------------------------------------ */

enum fl_status fl_projection_read_begin(struct fl_projection *p,
					struct fl_projection_read **ret_read)
{
	struct fl_projection_read *read = calloc(1, sizeof(*read));
	if (!read)
		return FL_ERR_NOMEM;
	read->projection = p;
	pthread_rwlock_rdlock(&p->resize_lock);
	int rc = mdb_txn_begin(p->env, NULL, MDB_RDONLY, &read->txn);
	if (rc == MDB_SUCCESS)
		rc = read_applied(p, read->txn, &read->applied_seq) == FL_OK &&
			     read_log_clock(p, read->txn, &read->log_clock_us) == FL_OK
			 ? MDB_SUCCESS
			 : EIO;
	if (rc != MDB_SUCCESS) {
		if (read->txn)
			mdb_txn_abort(read->txn);
		pthread_rwlock_unlock(&p->resize_lock);
		free(read);
		return fl_status_of_mdb(rc);
	}
	*ret_read = read;
	return FL_OK;
}

void fl_projection_read_limit_cost(struct fl_projection_read *read, uint64_t limit)
{
	read->cost_limit = limit;
}

uint64_t fl_projection_read_cost(const struct fl_projection_read *read)
{
	return read->cost;
}

uint64_t fl_projection_read_applied_seq(const struct fl_projection_read *read)
{
	return read->applied_seq;
}

void fl_projection_read_end(struct fl_projection_read *read)
{
	if (!read)
		return;
	if (read->latest_cursor)
		mdb_cursor_close(read->latest_cursor);
	if (read->history_cursor)
		mdb_cursor_close(read->history_cursor);
	for (int level = 0; level < TILE_LEVELS; level++)
		if (read->tile_cursors[level])
			mdb_cursor_close(read->tile_cursors[level]);
	fl_jw_free(&read->answer_features);
	fl_jw_free(&read->answer_windows);
	free(read->answer_served.seqs);
	mdb_txn_abort(read->txn);
	pthread_rwlock_unlock(&read->projection->resize_lock);
	free(read);
}

void fl_read_answer_finish(struct fl_read_answer *answer)
{
	if (!answer)
		return;
	free(answer->features);
	free(answer->windows);
	free(answer->served_seqs);
	memset(answer, 0, sizeof(*answer));
}

static void seq_add(struct seq_set *set, uint64_t seq)
{
	if (set->count == set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 32;
		uint64_t *grown = realloc(set->seqs, cap * sizeof(*grown));
		if (!grown) {
			set->failed = true;
			return;
		}
		set->seqs = grown;
		set->cap = cap;
	}
	set->seqs[set->count++] = seq;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static void seq_finish(struct seq_set *set)
{
	if (set->count == 0)
		return;
	qsort(set->seqs, set->count, sizeof(uint64_t), cmp_u64);
	size_t out = 1;
	for (size_t i = 1; i < set->count; i++)
		if (set->seqs[i] != set->seqs[out - 1])
			set->seqs[out++] = set->seqs[i];
	set->count = out;
}

/* A time as fl_jw_time writes it, formatted once for the times read lately. */
static void write_time(struct fl_projection_read *read, struct fl_jw *w, int64_t us)
{
	struct time_text *t = NULL;
	for (size_t i = 0; i < sizeof(read->times) / sizeof(read->times[0]) && !t; i++)
		if (read->times[i].us == us && read->times[i].text[0])
			t = &read->times[i];
	if (!t) {
		t = &read->times[read->next_time++ %
				 (sizeof(read->times) / sizeof(read->times[0]))];
		t->us = us;
		t->text[0] = '"';
		fl_time_format(us, t->text + 1);
		size_t len = strlen(t->text);
		t->text[len] = '"';
		t->text[len + 1] = '\0';
	}
	fl_jw_raw(w, t->text, strlen(t->text));
}

#define JW_LITERAL(w, text) fl_jw_raw((w), (text), sizeof(text) - 1)

/*
 * "name":{"value":…,"status":…[,"event_ts":…,"seq":…]}, as the fl_jw calls
 * of its members would write it; status is already a JSON string.
 */
static void write_feature(struct fl_projection_read *read, struct fl_jw *w, const char *name,
			  const struct raw_value *value, const char *status, int64_t event_ts,
			  uint64_t seq)
{
	fl_jw_key(w, name);
	if (!value->text) {
		JW_LITERAL(w, "{\"value\":null,\"status\":");
		fl_jw_raw(w, status, strlen(status));
	} else {
		JW_LITERAL(w, "{\"value\":");
		fl_jw_raw(w, value->text, value->len);
		JW_LITERAL(w, ",\"status\":");
		fl_jw_raw(w, status, strlen(status));
		JW_LITERAL(w, ",\"event_ts\":");
		write_time(read, w, event_ts);
		JW_LITERAL(w, ",\"seq\":");
		fl_jw_u64(w, seq);
	}
	fl_jw_close(w, '}');
}

/*
 * Whether the event seq counts for a read: every applied event does, unless
 * the read is "as known" at known_at_us (CONTRACT §6, point_in_time
 * "as_known"), when only those ingested at or before it do. The one place
 * that filter lives; an event without an ingest record does not count.
 */
static bool known(struct fl_projection_read *read, int64_t known_at_us, uint64_t seq)
{
	if (!known_at_us)
		return true;
	uint8_t seq_key[8];
	fl_put_be64(seq_key, seq);
	MDB_val key = {8, seq_key}, val;
	return mdb_get(read->txn, read->projection->ingest, &key, &val) == MDB_SUCCESS &&
	       val.mv_size == 8 && time_of_sortable(val.mv_data) <= known_at_us;
}

/* One feature's value as of a time: its text, event time and seq. */
struct found_value {
	struct raw_value value; /* text NULL: none */
	int64_t ts;
	uint64_t seq;
};

/*
 * For each names[i] with wanted[i]: the newest event at or before as_of
 * carrying it (and known at known_at_us, see known()), into found[i] (its
 * text stays NULL when there is none; the others are left as they are), by one walk backwards over
 * the entity's history that serves them all: a record is visited (one cost unit) and checked for
 * being known once, whatever the number of features it is searched for, and the walk stops when
 * each has its value.
 */
static enum fl_status scan_features(struct fl_projection_read *read, const uint8_t *prefix,
				    size_t plen, const char *const *names, const bool *wanted,
				    size_t n, int64_t as_of, int64_t known_at_us,
				    struct found_value *found)
{
	uint8_t start[KEY_MAX + 1];
	MDB_val key, val;
	size_t missing = 0, name_len[n ? n : 1];
	for (size_t i = 0; i < n; i++) {
		if (wanted[i])
			found[i].value = (struct raw_value){0};
		name_len[i] = wanted[i] ? strlen(names[i]) : 0;
		missing += wanted[i];
	}
	if (!missing)
		return FL_OK;
	int rc = kept_cursor(read, read->projection->history, &read->history_cursor);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	MDB_cursor *cur = read->history_cursor;
	memcpy(start, prefix, plen);
	fl_put_be64(start + plen, sortable_time(as_of));
	fl_put_be64(start + plen + 8, UINT64_MAX);
	key = (MDB_val){plen + 16, start};
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	rc = rc == MDB_SUCCESS ? mdb_cursor_get(cur, &key, &val, MDB_PREV)
			       : mdb_cursor_get(cur, &key, &val, MDB_LAST);
	for (; rc == MDB_SUCCESS && missing; rc = mdb_cursor_get(cur, &key, &val, MDB_PREV)) {
		if (key.mv_size != plen + 16 || memcmp(key.mv_data, prefix, plen) != 0)
			break;
		if (!spend(read))
			return FL_ERR_INVALID;
		uint64_t seq = fl_get_be64((uint8_t *)key.mv_data + plen + 8);
		if (!known(read, known_at_us, seq))
			continue;
		/* one pass over the record's members for every feature still
		 * missing; the first member of a name counts, as fl_json_member */
		struct fl_json_member m;
		size_t pos = 0;
		while (missing && fl_json_next_member(val.mv_data, val.mv_size, &pos, &m) == 1) {
			for (size_t i = 0; i < n; i++) {
				struct found_value *f = &found[i];
				if (!wanted[i] || f->value.text || m.key_len != name_len[i] ||
				    memcmp(m.key, names[i], name_len[i]) != 0)
					continue;
				f->value = (struct raw_value){m.value, m.value_len};
				f->ts = time_of_sortable((uint8_t *)key.mv_data + plen);
				f->seq = seq;
				missing--;
			}
		}
	}
	return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? FL_OK : fl_status_of_mdb(rc);
}

/*
 * Windows. A window (as_of - size, as_of] is the sortable half-open span
 * [lo, hi). When it holds at most RAW_FIRST events of the entity they are
 * read one by one, as before tiles existed. Otherwise the span is cut into
 * whole tiles, coarsest first (walk_span): at each level, the whole tiles
 * inside what is left, and the two ragged ends go one level down; below
 * the finest level come the raw events of the ends. A tile that is not
 * stored (its span held too few events) is read one level down as well.
 * So a window of an entity with n events in it visits O(log n) records
 * (at most 7 tiles a level on each side) plus the events of the ragged ends
 * (under about 1 s each), and last / last_n read the newest events backwards.
 */
#define RAW_FIRST 32

/* Accumulator of one window. */
struct window_acc {
	const struct fl_window *window;
	bool integer;	 /* over an int64 feature */
	bool numeric;	 /* over an int64 or double feature */
	int64_t from_us; /* exclusive */
	struct partial part;
	struct raw_value *recent; /* last / last_n: a ring, then the newest first */
	size_t keep, n_recent;
	uint64_t pushed; /* values put in the ring */
	struct seq_set seqs;
	bool failed;
};

/* The windows of one read that share a span, and what walks it. */
struct window_walk {
	struct fl_projection_read *read;
	const uint8_t *prefix;
	size_t plen;
	struct window_acc **accs;
	size_t n;
	/* lead[i]: the first of accs over accs[i]'s feature, which alone
	 * gathers the partial (NULL: each its own); of_len[i]: its name's length */
	const size_t *lead;
	const size_t *of_len;
	MDB_cursor *history; /* the read's, as tile_cursors[level] are */
	bool over_cost;
	bool rings;	     /* feed last / last_n rings and seqs (the raw-first pass) */
	bool seqs_only;	     /* collect seqs, nothing else */
	int64_t known_at_us; /* "as known" then (0: every event); raw events only */
};

static bool is_last(const struct window_acc *acc)
{
	return acc->window->fn == FL_WINDOW_LAST || acc->window->fn == FL_WINDOW_LAST_N;
}

static void acc_reset(struct window_acc *acc)
{
	acc->part = (struct partial){.numeric = acc->numeric, .integer = acc->integer};
	acc->pushed = 0;
	acc->n_recent = 0;
	acc->seqs.count = 0;
}

/* Feeds one stored event (its features object) to the accumulators. */
static void walk_event(struct window_walk *ww, const MDB_val *key, const MDB_val *val)
{
	int64_t ts = time_of_sortable((uint8_t *)key->mv_data + ww->plen);
	uint64_t seq = fl_get_be64((uint8_t *)key->mv_data + ww->plen + 8);
	struct raw_value values[ww->n];
	for (size_t i = 0; i < ww->n; i++) {
		struct window_acc *acc = ww->accs[i];
		size_t lead = ww->lead ? ww->lead[i] : i;
		struct raw_value value = {0};
		if (lead != i) /* its lead found the feature in this event */
			value = values[lead];
		else if (!fl_json_member(val->mv_data, val->mv_size, acc->window->of, &value.text,
					 &value.len) ||
			 (value.len == 4 && memcmp(value.text, "null", 4) == 0))
			value.text = NULL;
		values[i] = value;
		if (!value.text)
			continue;
		if (ww->seqs_only) {
			seq_add(&acc->seqs, seq);
			continue;
		}
		if (lead == i)
			partial_add(&acc->part, &value, ts, seq, NULL);
		if (!ww->rings)
			continue;
		if (is_last(acc))
			acc->recent[acc->pushed++ % acc->keep] = value;
		seq_add(&acc->seqs, seq);
	}
}

/*
 * Feeds the raw events in [a, b) (sortable times). With limit (at most
 * RAW_FIRST), feeds them only when there are at most limit of them, and
 * says so in *ret_complete: a span with more costs limit + 1 key visits and
 * no parsing.
 */
static int walk_raw(struct window_walk *ww, uint64_t a, uint64_t b, uint64_t limit,
		    bool *ret_complete)
{
	uint8_t start[KEY_MAX + 1];
	MDB_val key, val, held_keys[RAW_FIRST], held_vals[RAW_FIRST];
	uint64_t seen = 0;
	size_t held = 0;
	assert(limit <= RAW_FIRST);
	memcpy(start, ww->prefix, ww->plen);
	fl_put_be64(start + ww->plen, a);
	fl_put_be64(start + ww->plen + 8, 0);
	key = (MDB_val){ww->plen + 16, start};
	int rc = mdb_cursor_get(ww->history, &key, &val, MDB_SET_RANGE);
	for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(ww->history, &key, &val, MDB_NEXT)) {
		if (key.mv_size != ww->plen + 16 ||
		    memcmp(key.mv_data, ww->prefix, ww->plen) != 0 ||
		    fl_get_be64((uint8_t *)key.mv_data + ww->plen) >= b)
			break;
		if (limit && seen == limit) {
			*ret_complete = false;
			return MDB_SUCCESS;
		}
		seen++;
		if (!spend(ww->read)) {
			ww->over_cost = true;
			return MDB_SUCCESS;
		}
		if (ww->known_at_us && !known(ww->read, ww->known_at_us,
					      fl_get_be64((uint8_t *)key.mv_data + ww->plen + 8)))
			continue;
		if (limit) { /* fed once the span proves small */
			held_keys[held] = key;
			held_vals[held++] = val;
			continue;
		}
		walk_event(ww, &key, &val);
	}
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return rc;
	for (size_t i = 0; i < held; i++)
		walk_event(ww, &held_keys[i], &held_vals[i]);
	if (ret_complete)
		*ret_complete = true;
	return MDB_SUCCESS;
}

/* Merges a tile record's partials of each window's feature. */
static void walk_tile(struct window_walk *ww, const MDB_val *val)
{
	for (size_t i = 0; i < ww->n; i++) {
		struct window_acc *acc = ww->accs[i];
		struct tile_entry e;
		if (ww->lead[i] == i &&
		    tile_find(val->mv_data, val->mv_size, acc->window->of, ww->of_len[i], &e))
			partial_merge(&acc->part, &e.partial);
	}
}

static int walk_span(struct window_walk *ww, int level, uint64_t a, uint64_t b);

/* The whole tiles of level in [a, b) (aligned), and what they lack below. */
static int walk_tiles(struct window_walk *ww, int level, uint64_t a, uint64_t b)
{
	uint8_t start[KEY_MAX + 1];
	MDB_val key, val;
	uint64_t width = tile_width(level), pos = a;
	int rc = MDB_SUCCESS;
	MDB_cursor **cur = &ww->read->tile_cursors[level];
	if ((rc = kept_cursor(ww->read, ww->read->projection->tiles, cur)) != MDB_SUCCESS)
		return rc;
	key = (MDB_val){tile_key(start, ww->prefix, ww->plen, level, a), start};
	for (rc = mdb_cursor_get(*cur, &key, &val, MDB_SET_RANGE);
	     rc == MDB_SUCCESS && !ww->over_cost; rc = mdb_cursor_get(*cur, &key, &val, MDB_NEXT)) {
		const uint8_t *k = key.mv_data;
		if (key.mv_size != ww->plen + 9 || memcmp(k, ww->prefix, ww->plen) != 0 ||
		    k[ww->plen] != level)
			break;
		uint64_t s = fl_get_be64(k + ww->plen + 1);
		if (s >= b)
			break;
		if (s > pos && (rc = walk_span(ww, level - 1, pos, s)) != MDB_SUCCESS)
			return rc; /* the deeper walk used other cursors: this one stays put */
		if (!spend(ww->read)) {
			ww->over_cost = true;
			return MDB_SUCCESS;
		}
		walk_tile(ww, &val);
		pos = s + width;
	}
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return rc;
	return pos < b && !ww->over_cost ? walk_span(ww, level - 1, pos, b) : MDB_SUCCESS;
}

/* Everything in [a, b) from tiles of level and finer, and raw events. */
static int walk_span(struct window_walk *ww, int level, uint64_t a, uint64_t b)
{
	if (a >= b || ww->over_cost)
		return MDB_SUCCESS;
	if (level < 0)
		return walk_raw(ww, a, b, 0, NULL);
	uint64_t width = tile_width(level);
	uint64_t first = a > UINT64_MAX - (width - 1) ? b : (a + width - 1) & ~(width - 1);
	uint64_t end = b & ~(width - 1);
	if (first >= end)
		return walk_span(ww, level - 1, a, b);
	int rc = walk_span(ww, level - 1, a, first);
	if (rc == MDB_SUCCESS)
		rc = walk_tiles(ww, level, first, end);
	if (rc == MDB_SUCCESS)
		rc = walk_span(ww, level - 1, end, b);
	return rc;
}

/* last / last_n after a tiled walk: the newest values, backwards from as_of. */
static int walk_newest(struct window_walk *ww, int64_t as_of, int64_t from)
{
	uint8_t start[KEY_MAX + 1];
	MDB_val key, val;
	size_t wanted = 0;
	for (size_t i = 0; i < ww->n; i++)
		if (is_last(ww->accs[i]))
			wanted++;
	if (!wanted)
		return MDB_SUCCESS;
	memcpy(start, ww->prefix, ww->plen);
	fl_put_be64(start + ww->plen, sortable_time(as_of));
	fl_put_be64(start + ww->plen + 8, UINT64_MAX);
	key = (MDB_val){ww->plen + 16, start};
	int rc = mdb_cursor_get(ww->history, &key, &val, MDB_SET_RANGE);
	rc = rc == MDB_SUCCESS ? mdb_cursor_get(ww->history, &key, &val, MDB_PREV)
			       : mdb_cursor_get(ww->history, &key, &val, MDB_LAST);
	for (; rc == MDB_SUCCESS && wanted;
	     rc = mdb_cursor_get(ww->history, &key, &val, MDB_PREV)) {
		if (key.mv_size != ww->plen + 16 ||
		    memcmp(key.mv_data, ww->prefix, ww->plen) != 0 ||
		    time_of_sortable((uint8_t *)key.mv_data + ww->plen) <= from)
			break;
		if (!spend(ww->read)) {
			ww->over_cost = true;
			return MDB_SUCCESS;
		}
		for (size_t i = 0; i < ww->n; i++) {
			struct window_acc *acc = ww->accs[i];
			struct raw_value value;
			if (!is_last(acc) || acc->n_recent == acc->keep ||
			    !fl_json_member(val.mv_data, val.mv_size, acc->window->of, &value.text,
					    &value.len) ||
			    (value.len == 4 && memcmp(value.text, "null", 4) == 0))
				continue;
			acc->recent[acc->n_recent++] = value;
			if (acc->n_recent == acc->keep)
				wanted--;
		}
	}
	return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* The ring of the raw pass, turned newest first. */
static bool ring_to_newest(struct window_acc *acc)
{
	size_t held = acc->pushed < acc->keep ? (size_t)acc->pushed : acc->keep;
	struct raw_value *newest = calloc(acc->keep, sizeof(*newest));
	if (!newest)
		return false;
	for (size_t k = 0; k < held; k++)
		newest[k] = acc->recent[(acc->pushed - 1 - k) % acc->keep];
	free(acc->recent);
	acc->recent = newest;
	acc->n_recent = held;
	return true;
}

/* The text of an extreme a tile gave (it keeps only its event's key). */
static enum fl_status extreme_text(struct window_walk *ww, const struct window_acc *acc,
				   struct extreme *e)
{
	uint8_t k[KEY_MAX + 1];
	MDB_val key, val;
	if (!e->set || e->text.text)
		return FL_OK;
	memcpy(k, ww->prefix, ww->plen);
	fl_put_be64(k + ww->plen, sortable_time(e->ts));
	fl_put_be64(k + ww->plen + 8, e->seq);
	key = (MDB_val){ww->plen + 16, k};
	if (!spend(ww->read)) {
		ww->over_cost = true;
		return FL_ERR_INVALID;
	}
	int rc = mdb_get(ww->read->txn, ww->read->projection->history, &key, &val);
	if (rc != MDB_SUCCESS)
		return rc == MDB_NOTFOUND ? FL_ERR_CORRUPT : fl_status_of_mdb(rc);
	return fl_json_member(val.mv_data, val.mv_size, acc->window->of, &e->text.text,
			      &e->text.len)
		   ? FL_OK
		   : FL_ERR_CORRUPT;
}

/* Gives each window the partial its lead gathered. */
static void share_partials(struct window_acc **accs, size_t n, const size_t *lead)
{
	for (size_t i = 0; i < n; i++)
		if (lead[i] != i)
			accs[i]->part = accs[lead[i]]->part;
}

/*
 * Computes the windows accs[0..n) (all over the same span) into their
 * accumulators; with seqs, also the seqs of those covering at most
 * MAX_WINDOW_SEQS events.
 */
static enum fl_status compute_windows(struct fl_projection_read *read, const uint8_t *prefix,
				      size_t plen, int64_t as_of, int64_t known_at_us,
				      struct window_acc **accs, size_t n, bool seqs)
{
	struct window_walk ww = {.read = read,
				 .prefix = prefix,
				 .plen = plen,
				 .accs = accs,
				 .n = n,
				 .known_at_us = known_at_us};
	int64_t from = accs[0]->from_us;
	uint64_t lo = sortable_time(from) + 1, hi = sortable_time(as_of) + 1;
	/* windows over one feature share its partial: their lead gathers it */
	size_t lead[n], of_len[n];
	for (size_t i = 0; i < n; i++) {
		of_len[i] = strlen(accs[i]->window->of);
		lead[i] = i;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(accs[j]->window->of, accs[i]->window->of) == 0) {
				lead[i] = j;
				break;
			}
		}
	}
	ww.lead = lead;
	ww.of_len = of_len;
	enum fl_status st = FL_OK;
	bool complete = false;
	int rc = kept_cursor(read, read->projection->history, &read->history_cursor);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	ww.history = read->history_cursor;
	ww.rings = true;
	/* As known at a moment, tiles (which hold every applied event) do not
	 * apply: the window is walked event by event, each checked. */
	rc = walk_raw(&ww, lo, hi, known_at_us ? 0 : RAW_FIRST, &complete);
	ww.rings = false;
	if (rc == MDB_SUCCESS && !complete && !ww.over_cost) {
		for (size_t i = 0; i < n; i++)
			acc_reset(accs[i]);
		rc = walk_span(&ww, TILE_LEVELS - 1, lo, hi);
		share_partials(accs, n, lead);
		if (rc == MDB_SUCCESS && !ww.over_cost)
			rc = walk_newest(&ww, as_of, from);
		if (rc == MDB_SUCCESS && seqs && !ww.over_cost) {
			/* the seqs of the windows of at most MAX_WINDOW_SEQS events */
			struct window_acc *listed[n];
			size_t n_listed = 0;
			for (size_t i = 0; i < n; i++)
				if (accs[i]->part.count <= MAX_WINDOW_SEQS)
					listed[n_listed++] = accs[i];
			if (n_listed) {
				ww.accs = listed;
				ww.n = n_listed;
				ww.lead = NULL;
				ww.seqs_only = true;
				rc = walk_raw(&ww, lo, hi, 0, NULL);
				ww.seqs_only = false;
				ww.accs = accs;
				ww.n = n;
				ww.lead = lead;
			}
		}
	} else if (rc == MDB_SUCCESS && complete) {
		share_partials(accs, n, lead);
		for (size_t i = 0; i < n && st == FL_OK; i++)
			if (is_last(accs[i]) && !ring_to_newest(accs[i]))
				st = FL_ERR_NOMEM;
	}
	for (size_t i = 0; i < n && st == FL_OK && rc == MDB_SUCCESS && !ww.over_cost; i++) {
		if (accs[i]->window->fn == FL_WINDOW_MIN)
			st = extreme_text(&ww, accs[i], &accs[i]->part.min);
		else if (accs[i]->window->fn == FL_WINDOW_MAX)
			st = extreme_text(&ww, accs[i], &accs[i]->part.max);
	}
	if (ww.over_cost)
		return FL_ERR_INVALID;
	if (st != FL_OK)
		return st;
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	for (size_t i = 0; i < n; i++) {
		enum fl_window_fn fn = accs[i]->window->fn;
		bool numeric_fn = fn == FL_WINDOW_SUM || fn == FL_WINDOW_AVG ||
				  fn == FL_WINDOW_MIN || fn == FL_WINDOW_MAX ||
				  fn == FL_WINDOW_STDDEV;
		if ((numeric_fn && (accs[i]->part.invalid || !accs[i]->numeric)) ||
		    accs[i]->seqs.failed)
			return FL_ERR_CORRUPT;
	}
	return FL_OK;
}

static void write_acc_value(struct fl_jw *w, const struct window_acc *acc)
{
	const struct partial *pt = &acc->part;
	switch (acc->window->fn) {
	case FL_WINDOW_COUNT:
		fl_jw_u64(w, pt->count);
		return;
	case FL_WINDOW_SUM:
		if (!acc->integer)
			fl_jw_double(w, partial_dsum(pt));
		else if (pt->isum > INT64_MAX || pt->isum < INT64_MIN)
			fl_jw_double(w, (double)pt->isum);
		else
			fl_jw_i64(w, (int64_t)pt->isum);
		return;
	case FL_WINDOW_AVG:
		if (!pt->count)
			break;
		fl_jw_double(w, (acc->integer ? (double)pt->isum : partial_dsum(pt)) /
				    (double)pt->count);
		return;
	case FL_WINDOW_MIN:
	case FL_WINDOW_MAX: {
		const struct extreme *e = acc->window->fn == FL_WINDOW_MIN ? &pt->min : &pt->max;
		if (!e->set)
			break;
		fl_jw_raw(w, e->text.text, e->text.len);
		return;
	}
	case FL_WINDOW_LAST:
	case FL_WINDOW_LAST_N: {
		if (!acc->n_recent)
			break;
		if (acc->window->fn == FL_WINDOW_LAST) {
			fl_jw_raw(w, acc->recent[0].text, acc->recent[0].len);
			return;
		}
		fl_jw_open(w, '[');
		for (size_t k = 0; k < acc->n_recent; k++) { /* newest first */
			fl_jw_sep(w);
			fl_jw_raw(w, acc->recent[k].text, acc->recent[k].len);
		}
		fl_jw_close(w, ']');
		return;
	}
	case FL_WINDOW_STDDEV:
		if (!pt->count)
			break;
		fl_jw_double(w, sqrt(pt->m2 / (double)pt->count));
		return;
	}
	fl_jw_raw(w, "null", 4);
}

/* The "features" object of a read. */
static enum fl_status query_features(struct fl_projection_read *read,
				     const struct fl_read_request *req, const uint8_t *prefix,
				     size_t plen, struct fl_jw *w, struct seq_set *served)
{
	size_t n = req->n_features;
	int64_t max_age = fl_view_max_age_us(req->view);
	MDB_val k = {plen, (void *)prefix}, record = {0, NULL};
	int rc = kept_cursor(read, read->projection->latest, &read->latest_cursor);
	if (rc == MDB_SUCCESS)
		rc = mdb_cursor_get(read->latest_cursor, &k, &record, MDB_SET);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return fl_status_of_mdb(rc);
	if (rc == MDB_NOTFOUND)
		record.mv_size = 0;
	struct found_value found[n ? n : 1];
	const char *names[n ? n : 1];
	bool wanted[n ? n : 1], scan = false;
	for (size_t i = 0; i < n; i++) {
		struct latest_entry e;
		names[i] = req->features[i]->name;
		found[i].value = (struct raw_value){0};
		wanted[i] = false;
		if (!latest_find(record.mv_data, record.mv_size, names[i], strlen(names[i]), &e))
			continue;
		found[i].ts = e.ts;
		found[i].seq = e.seq;
		if (e.ts <= req->as_of_us && known(read, req->known_at_us, e.seq))
			found[i].value = (struct raw_value){e.value, e.value_len};
		else /* newer than as_of (or not known then): what was current */
			scan = wanted[i] = true;
	}
	enum fl_status st = scan ? scan_features(read, prefix, plen, names, wanted, n,
						 req->as_of_us, req->known_at_us, found)
				 : FL_OK;
	if (st != FL_OK)
		return st;
	fl_jw_open(w, '{');
	for (size_t i = 0; i < n; i++) {
		const struct found_value *f = &found[i];
		const char *status = !f->value.text ? "\"NOT_FOUND\""
				     : (max_age && req->as_of_us - f->ts > max_age)
					 ? "\"OUTSIDE_MAX_AGE\""
					 : "\"PRESENT\"";
		if (f->value.text)
			seq_add(served, f->seq);
		write_feature(read, w, names[i], &f->value, status, f->ts, f->seq);
	}
	fl_jw_close(w, '}');
	return FL_OK;
}

/* The "windows" object of a read (its seqs are not served values, CONTRACT §7). */
static enum fl_status query_windows(struct fl_projection_read *read,
				    const struct fl_read_request *req, const uint8_t *prefix,
				    size_t plen, struct fl_jw *w)
{
	enum fl_status st = FL_OK;
	size_t n = req->n_windows;
	struct window_acc *accs = calloc(n ? n : 1, sizeof(*accs));
	struct window_acc **group = calloc(n ? n : 1, sizeof(*group));
	bool *done = calloc(n ? n : 1, sizeof(*done));
	if (!accs || !group || !done)
		st = FL_ERR_NOMEM;
	for (size_t i = 0; st == FL_OK && i < n; i++) {
		const struct fl_window *win = req->windows[i];
		const struct fl_feature *of = fl_view_feature(req->view, win->of);
		accs[i].window = win;
		accs[i].integer = of && of->type == FL_FEATURE_INT64;
		accs[i].numeric =
		    of && (of->type == FL_FEATURE_INT64 || of->type == FL_FEATURE_DOUBLE);
		accs[i].from_us = req->as_of_us - win->size_us;
		accs[i].keep = win->fn == FL_WINDOW_LAST_N && win->n > 1 ? win->n : 1;
		acc_reset(&accs[i]);
		if (win->fn == FL_WINDOW_LAST || win->fn == FL_WINDOW_LAST_N) {
			accs[i].recent = calloc(accs[i].keep, sizeof(*accs[i].recent));
			if (!accs[i].recent)
				st = FL_ERR_NOMEM;
		}
	}
	/* windows of one size share their span: one walk serves them all */
	for (size_t i = 0; st == FL_OK && i < n; i++) {
		size_t in_group = 0;
		if (done[i])
			continue;
		for (size_t j = i; j < n; j++) {
			if (!done[j] && accs[j].from_us == accs[i].from_us) {
				group[in_group++] = &accs[j];
				done[j] = true;
			}
		}
		st = compute_windows(read, prefix, plen, req->as_of_us, req->known_at_us, group,
				     in_group, req->with_window_seqs);
	}
	fl_jw_open(w, '{');
	for (size_t i = 0; accs && i < n; i++) {
		struct window_acc *acc = &accs[i];
		if (st == FL_OK) {
			bool listed = req->with_window_seqs && acc->part.count <= MAX_WINDOW_SEQS;
			fl_jw_key(w, acc->window->name);
			fl_jw_open(w, '{');
			fl_jw_key(w, "value");
			write_acc_value(w, acc);
			fl_jw_key(w, "from");
			write_time(read, w, acc->from_us);
			fl_jw_key(w, "to");
			write_time(read, w, req->as_of_us);
			fl_jw_key(w, "events");
			fl_jw_u64(w, acc->part.count);
			if (listed) {
				fl_jw_key(w, "seqs");
				fl_jw_open(w, '[');
				for (size_t j = 0; j < acc->seqs.count; j++) {
					fl_jw_sep(w);
					fl_jw_u64(w, acc->seqs.seqs[j]);
				}
				fl_jw_close(w, ']');
				/* Not served values (CONTRACT §7): the read's applied_seq
				 * names the prefix that determines every window. */
			}
			fl_jw_close(w, '}');
		}
		free(acc->recent);
		free(acc->seqs.seqs);
	}
	fl_jw_close(w, '}');
	free(accs);
	free(group);
	free(done);
	return st;
}

/*
 * The one read of an entity (fl_projection_query and
 * fl_projection_query_borrowed both come here): its features and windows
 * appended to features and windows, the seqs served added to served. On
 * failure the buffers hold a partial answer, for the caller to drop.
 */
static enum fl_status query(struct fl_projection_read *read, const struct fl_read_request *req,
			    struct fl_jw *features, struct fl_jw *windows, struct seq_set *served,
			    struct fl_error *err)
{
	uint8_t prefix[KEY_MAX + 1];

	if (!read || !req || !req->view || !req->entity_id)
		return FL_ERR_INVALID;
	/* "now" is the log's clock (read_log_clock): history is pruned by it. */
	int64_t retained_from = read->log_clock_us == INT64_MIN
				    ? INT64_MIN
				    : read->log_clock_us - fl_view_retention_us(req->view);
	if (req->as_of_us < retained_from) {
		fl_error_set(err, 400, "outside_retention", "as_of",
			     "as_of is older than the view's retained history (%s)", "retention");
		return FL_ERR_INVALID;
	}
	for (size_t i = 0; i < req->n_windows; i++) {
		if (req->as_of_us - req->windows[i]->size_us < retained_from - 1) {
			fl_error_set(err, 400, "outside_retention", "windows",
				     "window %s reaches before the view's retained history",
				     req->windows[i]->name);
			return FL_ERR_INVALID;
		}
	}
	size_t plen =
	    entity_prefix(fl_view_name(req->view), req->entity_id, prefix, sizeof(prefix) - 16);
	if (!plen)
		return FL_ERR_INVALID;

	bool affordable = spend(read); /* the entity's row */
	enum fl_status st =
	    affordable ? query_features(read, req, prefix, plen, features, served) : FL_ERR_INVALID;
	if (st == FL_OK)
		st = query_windows(read, req, prefix, plen, windows);
	if (st != FL_OK && read->cost_limit && read->cost > read->cost_limit) {
		fl_error_set(err, 422, "read_too_expensive", NULL,
			     "the read needs more than %" PRIu64
			     " cost units (one per entity id, one per stored event "
			     "visited; the --max-read-cost bound): ask for fewer entity ids, "
			     "fewer or shorter windows, or split the batch",
			     read->cost_limit);
		st = FL_ERR_INVALID;
	}
	if (st == FL_OK && (features->text.failed || windows->text.failed || served->failed))
		st = FL_ERR_NOMEM;
	if (st == FL_OK)
		seq_finish(served);
	return st;
}

enum fl_status fl_projection_query(struct fl_projection_read *read,
				   const struct fl_read_request *req,
				   struct fl_read_answer *ret_answer, struct fl_error *err)
{
	struct fl_jw features, windows;
	struct seq_set served = {0};
	if (!ret_answer)
		return FL_ERR_INVALID;
	fl_jw_init(&features);
	fl_jw_init(&windows);
	enum fl_status st = query(read, req, &features, &windows, &served, err);
	if (st != FL_OK) {
		fl_jw_free(&features);
		fl_jw_free(&windows);
		free(served.seqs);
		return st;
	}
	ret_answer->features = fl_jw_take(&features, &ret_answer->features_len);
	ret_answer->windows = fl_jw_take(&windows, &ret_answer->windows_len);
	ret_answer->served_seqs = served.seqs;
	ret_answer->n_served = served.count;
	return FL_OK;
}

/* Empties a kept buffer for the next answer, keeping its room. */
static void jw_reuse(struct fl_jw *w)
{
	if (w->text.failed)
		fl_jw_free(w);
	w->text.len = 0;
	if (w->text.data)
		w->text.data[0] = '\0';
	w->first = true;
}

enum fl_status fl_projection_query_borrowed(struct fl_projection_read *read,
					    const struct fl_read_request *req,
					    struct fl_read_answer *ret_answer, struct fl_error *err)
{
	if (!read || !ret_answer)
		return FL_ERR_INVALID;
	jw_reuse(&read->answer_features);
	jw_reuse(&read->answer_windows);
	read->answer_served.count = 0;
	if (read->answer_served.failed) {
		free(read->answer_served.seqs);
		read->answer_served = (struct seq_set){0};
	}
	enum fl_status st = query(read, req, &read->answer_features, &read->answer_windows,
				  &read->answer_served, err);
	if (st != FL_OK)
		return st;
	ret_answer->features = read->answer_features.text.data;
	ret_answer->features_len = read->answer_features.text.len;
	ret_answer->windows = read->answer_windows.text.data;
	ret_answer->windows_len = read->answer_windows.text.len;
	ret_answer->served_seqs = read->answer_served.seqs;
	ret_answer->n_served = read->answer_served.count;
	return FL_OK;
}

enum fl_status fl_projection_history(struct fl_projection_read *read, const char *view,
				     const char *entity_id, int64_t from_us, int64_t to_us,
				     uint64_t limit, enum fl_status (*fn)(void *ctx, uint64_t seq),
				     void *ctx)
{
	uint8_t start[KEY_MAX + 1];
	MDB_cursor *cur;
	MDB_val key, val;
	enum fl_status st = FL_OK;
	size_t plen = entity_prefix(view, entity_id, start, sizeof(start) - 16);
	if (!plen || !fn)
		return FL_ERR_INVALID;
	int rc = mdb_cursor_open(read->txn, read->projection->history, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	fl_put_be64(start + plen, sortable_time(from_us));
	fl_put_be64(start + plen + 8, 0);
	key = (MDB_val){plen + 16, start};
	uint64_t count = 0;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	     rc == MDB_SUCCESS && count < limit; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != plen + 16 || memcmp(key.mv_data, start, plen) != 0)
			break;
		if (time_of_sortable((uint8_t *)key.mv_data + plen) > to_us)
			break;
		st = fn(ctx, fl_get_be64((uint8_t *)key.mv_data + plen + 8));
		if (st != FL_OK)
			break;
		count++;
	}
	mdb_cursor_close(cur);
	return st;
}

/* ---- digest ----------------------------------------------------------- */

static enum fl_status digest_db(MDB_txn *txn, MDB_dbi dbi, const char *name, EVP_MD_CTX *md)
{
	MDB_cursor *cur;
	MDB_val key, val;
	uint8_t len[8];
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	EVP_DigestUpdate(md, name, strlen(name) + 1);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		fl_put_be64(len, key.mv_size);
		EVP_DigestUpdate(md, len, 8);
		EVP_DigestUpdate(md, key.mv_data, key.mv_size);
		fl_put_be64(len, val.mv_size);
		EVP_DigestUpdate(md, len, 8);
		EVP_DigestUpdate(md, val.mv_data, val.mv_size);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? FL_OK : fl_status_of_mdb(rc);
}

enum fl_status fl_projection_digest(struct fl_projection *p, uint64_t *ret_applied_seq,
				    char ret_hex[2 * FL_HASH_LEN + 1])
{
	struct fl_projection_read *read;
	uint8_t hash[FL_HASH_LEN];
	unsigned hash_len = 0;
	enum fl_status st = fl_projection_read_begin(p, &read);
	if (st != FL_OK)
		return st;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		fl_projection_read_end(read);
		return FL_ERR_CRYPTO;
	}
	uint8_t applied[8];
	fl_put_be64(applied, read->applied_seq);
	EVP_DigestUpdate(md, "fledger-projection-v1", 22);
	EVP_DigestUpdate(md, applied, 8);
	st = digest_db(read->txn, p->views, "views", md);
	if (st == FL_OK)
		st = digest_db(read->txn, p->latest, "latest", md);
	if (st == FL_OK)
		st = digest_db(read->txn, p->history, "history", md);
	if (st == FL_OK)
		st = digest_db(read->txn, p->tiles, "tiles", md);
	if (st == FL_OK && !EVP_DigestFinal_ex(md, hash, &hash_len))
		st = FL_ERR_CRYPTO;
	EVP_MD_CTX_free(md);
	if (st == FL_OK) {
		*ret_applied_seq = read->applied_seq;
		fl_hex_encode(hash, FL_HASH_LEN, ret_hex);
	}
	fl_projection_read_end(read);
	return st;
}
