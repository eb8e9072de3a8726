/*
 * The signed append-only log in LMDB.
 *
 * Layout (named databases in one environment):
 *   events       be64 seq -> be64 time_us | leaf_hash[32] | sig[64] | key_id[8] | body
 *                (a line of format v2 has no signature: sig and key_id are
 *                all zero bytes; a line of the first format keeps its own)
 *   nodes        u8 level | be64 index -> hash[32]   (complete nodes, level >= 1;
 *                                                     level 0 is the leaf hash)
 *   checkpoints  be64 tree_size -> root[32] | timestamp[27] | key_id[8] | sig[64]
 *   idem         producer NUL idempotency_key -> be64 seq | digest[32]
 *   times        be64 (time_us with the sign bit flipped) | be64 seq -> ""
 *   keys         be64 ordinal -> public_key[32]       (every key ever used)
 *   meta         name -> be64 value                   (counters, "c:<name>")
 *
 * A commit writes the events, the nodes they complete, the idempotency and
 * time index entries, and one signed checkpoint, then syncs. Lines are not
 * signed one by one (format v2): the checkpoint signature covers them all,
 * and each is proven by its inclusion proof against it. The in-memory
 * frontier (right edge of the tree) is rebuilt from the stored nodes at open
 * and rolled back whenever a transaction is aborted.
 */
#include "eventlog/eventlog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "eventlog/filegrow.h"
#include "fledger/util.h"

#define DEFAULT_INITIAL_MAP (16u << 20)
#define EVENT_HEADER_LEN (8 + FL_HASH_LEN + FL_SIG_LEN + FL_KEY_ID_LEN)
#define CHECKPOINT_VALUE_LEN                                                                       \
	(FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN + FL_KEY_ID_LEN + FL_SIG_LEN)
#define MAX_KEYS 256
#define CACHE_LEVEL 6 /* 1/64 of the nodes: 1 MiB of memory per 1M events */

struct cached_node {
	unsigned level;
	uint64_t index;
	uint8_t hash[FL_HASH_LEN];
};

struct log_key {
	uint8_t pub[FL_PUBKEY_LEN];
	char key_id[FL_KEY_ID_HEX_LEN];
};

struct fl_log {
	MDB_env *env;
	MDB_dbi events, nodes, checkpoints, idem, times, keys, meta;
	char *prefix;
	size_t map_size;
	size_t max_map;
	const struct fl_signer *signer; /* NULL: read-only, or a replica */
	bool replica;
	bool writable;
	uint8_t signer_key_raw[FL_KEY_ID_LEN];
	struct fl_filegrow *grow; /* writable logs: data.mdb kept grown ahead */
	int grow_fd;		  /* data.mdb, for grow */
	unsigned page_size;

	/* Writer state, under write_lock. */
	pthread_mutex_t write_lock;
	struct fl_merkle_frontier frontier;
	uint64_t size;

	/* Readers hold it shared; a map resize holds it exclusively. */
	pthread_rwlock_t resize_lock;

	/*
	 * Complete nodes of level >= CACHE_LEVEL kept in memory: they never
	 * change once written, and serving them from here halves the lookups
	 * of a proof. Index i of level L is at cache[L][i]; filled after each
	 * commit, so a reader falls back to LMDB for what is not there yet.
	 */
	pthread_rwlock_t cache_lock;
	uint8_t (*cache[64])[FL_HASH_LEN];
	uint64_t cache_count[64];
	uint64_t cache_cap[64];
	/* Nodes of the open write transaction, added once it commits. */
	struct cached_node *fresh;
	size_t fresh_count, fresh_cap;
};

struct fl_log_reader {
	struct fl_log *log;
	MDB_txn *txn;
	uint64_t size;
};

enum fl_status fl_status_of_mdb(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return FL_OK;
	case MDB_NOTFOUND:
		return FL_ERR_NOT_FOUND;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		return FL_ERR_FULL;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		return FL_ERR_CORRUPT;
	case ENOMEM:
		return FL_ERR_NOMEM;
	default:
		return FL_ERR_IO;
	}
}

static void key_id_hex(const uint8_t raw[FL_KEY_ID_LEN], char out[FL_KEY_ID_HEX_LEN])
{
	fl_hex_encode(raw, FL_KEY_ID_LEN, out);
}

static void time_key(int64_t time_us, uint64_t seq, uint8_t out[16])
{
	fl_put_be64(out, (uint64_t)time_us ^ (UINT64_C(1) << 63));
	fl_put_be64(out + 8, seq);
}

/* ---- node access ------------------------------------------------------ */

struct node_ctx {
	MDB_txn *txn;
	struct fl_log *log;
};

static bool cache_get(struct fl_log *log, unsigned level, uint64_t index,
		      uint8_t ret_hash[FL_HASH_LEN])
{
	bool hit = false;
	if (level < CACHE_LEVEL)
		return false;
	pthread_rwlock_rdlock(&log->cache_lock);
	if (index < log->cache_count[level]) {
		memcpy(ret_hash, log->cache[level][index], FL_HASH_LEN);
		hit = true;
	}
	pthread_rwlock_unlock(&log->cache_lock);
	return hit;
}

/* Adds a node to the cache if it is the next one of its level. */
static void cache_add(struct fl_log *log, unsigned level, uint64_t index,
		      const uint8_t hash[FL_HASH_LEN])
{
	if (level < CACHE_LEVEL || index != log->cache_count[level])
		return;
	if (log->cache_count[level] == log->cache_cap[level]) {
		uint64_t cap = log->cache_cap[level] ? 2 * log->cache_cap[level] : 64;
		void *grown = realloc(log->cache[level], cap * FL_HASH_LEN);
		if (!grown)
			return; /* the cache is only an optimisation */
		log->cache[level] = grown;
		log->cache_cap[level] = cap;
	}
	memcpy(log->cache[level][index], hash, FL_HASH_LEN);
	log->cache_count[level]++;
}

static enum fl_status get_node(void *opaque, unsigned level, uint64_t index,
			       uint8_t ret_hash[FL_HASH_LEN])
{
	struct node_ctx *ctx = opaque;
	uint8_t keybuf[9];
	MDB_val key, val;
	int rc;

	if (cache_get(ctx->log, level, index, ret_hash))
		return FL_OK;
	if (level == 0) {
		fl_put_be64(keybuf, index + 1);
		key = (MDB_val){8, keybuf};
		rc = mdb_get(ctx->txn, ctx->log->events, &key, &val);
		if (rc == MDB_SUCCESS && val.mv_size < EVENT_HEADER_LEN)
			return FL_ERR_CORRUPT;
		if (rc == MDB_SUCCESS)
			memcpy(ret_hash, (uint8_t *)val.mv_data + 8, FL_HASH_LEN);
	} else {
		keybuf[0] = (uint8_t)level;
		fl_put_be64(keybuf + 1, index);
		key = (MDB_val){9, keybuf};
		rc = mdb_get(ctx->txn, ctx->log->nodes, &key, &val);
		if (rc == MDB_SUCCESS && val.mv_size != FL_HASH_LEN)
			return FL_ERR_CORRUPT;
		if (rc == MDB_SUCCESS)
			memcpy(ret_hash, val.mv_data, FL_HASH_LEN);
	}
	/* A node the tree says must exist but does not is damage. */
	return rc == MDB_NOTFOUND ? FL_ERR_CORRUPT : fl_status_of_mdb(rc);
}

static enum fl_status put_node(void *opaque, unsigned level, uint64_t index,
			       const uint8_t hash[FL_HASH_LEN])
{
	struct node_ctx *ctx = opaque;
	uint8_t keybuf[9];

	if (level == 0)
		return FL_OK; /* leaf hashes live in the events table */
	if (level >= CACHE_LEVEL) {
		struct fl_log *log = ctx->log;
		if (log->fresh_count == log->fresh_cap) {
			size_t cap = log->fresh_cap ? 2 * log->fresh_cap : 16;
			void *grown = realloc(log->fresh, cap * sizeof(*log->fresh));
			if (!grown)
				return FL_ERR_NOMEM;
			log->fresh = grown;
			log->fresh_cap = cap;
		}
		log->fresh[log->fresh_count].level = level;
		log->fresh[log->fresh_count].index = index;
		memcpy(log->fresh[log->fresh_count].hash, hash, FL_HASH_LEN);
		log->fresh_count++;
	}
	keybuf[0] = (uint8_t)level;
	fl_put_be64(keybuf + 1, index);
	MDB_val key = {9, keybuf}, val = {FL_HASH_LEN, (void *)hash};
	return fl_status_of_mdb(mdb_put(ctx->txn, ctx->log->nodes, &key, &val, 0));
}

/* Rebuilds the frontier of a tree of size leaves from the stored nodes. */
static enum fl_status load_frontier(struct fl_log *log, MDB_txn *txn, uint64_t size,
				    struct fl_merkle_frontier *ret_frontier)
{
	struct node_ctx ctx = {txn, log};
	struct fl_merkle_frontier frontier;
	uint64_t offset = 0;

	fl_merkle_frontier_init(&frontier);
	frontier.size = size;
	for (int level = 63; level >= 0; level--) {
		if (!(size & (UINT64_C(1) << level)))
			continue;
		enum fl_status st =
		    get_node(&ctx, (unsigned)level, offset >> level, frontier.nodes[level]);
		if (st != FL_OK)
			return st;
		offset += UINT64_C(1) << level;
	}
	*ret_frontier = frontier;
	return FL_OK;
}

static uint64_t last_seq(struct fl_log *log, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val key, val;
	uint64_t seq = 0;

	if (mdb_cursor_open(txn, log->events, &cur) != MDB_SUCCESS)
		return 0;
	if (mdb_cursor_get(cur, &key, &val, MDB_LAST) == MDB_SUCCESS && key.mv_size == 8)
		seq = fl_get_be64(key.mv_data);
	mdb_cursor_close(cur);
	return seq;
}

/* ---- keys ----------------------------------------------------------- */

/* The ordinal of the key with this raw id, or -1. */
static int64_t find_key(struct fl_log *log, MDB_txn *txn, const uint8_t raw_id[FL_KEY_ID_LEN],
			uint64_t *ret_count)
{
	MDB_cursor *cur;
	MDB_val key, val;
	int64_t found = -1;
	uint64_t count = 0;

	if (mdb_cursor_open(txn, log->keys, &cur) != MDB_SUCCESS)
		return -1;
	for (int op = MDB_FIRST; mdb_cursor_get(cur, &key, &val, (MDB_cursor_op)op) == 0;
	     op = MDB_NEXT) {
		char id[FL_KEY_ID_HEX_LEN];
		uint8_t raw[FL_KEY_ID_LEN];
		count++;
		if (val.mv_size != FL_PUBKEY_LEN)
			continue;
		fl_key_id_of(val.mv_data, id);
		if (fl_hex_decode(id, raw, FL_KEY_ID_LEN) == FL_OK &&
		    memcmp(raw, raw_id, FL_KEY_ID_LEN) == 0)
			found = (int64_t)fl_get_be64(key.mv_data);
	}
	mdb_cursor_close(cur);
	if (ret_count)
		*ret_count = count;
	return found;
}

static enum fl_status add_key(struct fl_log *log, MDB_txn *txn, const struct fl_signer *signer)
{
	uint8_t raw_id[FL_KEY_ID_LEN], pub[FL_PUBKEY_LEN], ord[8];
	uint64_t count = 0;

	fl_hex_decode(fl_signer_key_id(signer), raw_id, FL_KEY_ID_LEN);
	if (find_key(log, txn, raw_id, &count) >= 0)
		return FL_OK;
	fl_signer_public_key(signer, pub);
	fl_put_be64(ord, count);
	MDB_val key = {8, ord}, val = {FL_PUBKEY_LEN, pub};
	return fl_status_of_mdb(mdb_put(txn, log->keys, &key, &val, 0));
}

static enum fl_status meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *ret)
{
	MDB_val key = {strlen(name), (void *)name}, val;
	int rc = mdb_get(txn, dbi, &key, &val);
	if (rc == MDB_NOTFOUND) {
		*ret = 0;
		return FL_OK;
	}
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	if (val.mv_size != 8)
		return FL_ERR_CORRUPT;
	*ret = fl_get_be64(val.mv_data);
	return FL_OK;
}

static enum fl_status meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t value)
{
	uint8_t buf[8];
	fl_put_be64(buf, value);
	MDB_val key = {strlen(name), (void *)name}, val = {8, buf};
	return fl_status_of_mdb(mdb_put(txn, dbi, &key, &val, 0));
}

/* ---- open / close ----------------------------------------------------- */

/* Fills the node cache from the stored nodes of level >= CACHE_LEVEL. */
static void load_cache(struct fl_log *log, MDB_txn *txn)
{
	MDB_cursor *cur;
	uint8_t start[9] = {CACHE_LEVEL};
	MDB_val key = {9, start}, val;

	if (mdb_cursor_open(txn, log->nodes, &cur) != MDB_SUCCESS)
		return;
	for (int rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != 9 || val.mv_size != FL_HASH_LEN)
			break;
		const uint8_t *k = key.mv_data;
		cache_add(log, k[0], fl_get_be64(k + 1), val.mv_data);
	}
	mdb_cursor_close(cur);
}

/* Moves the nodes of a committed transaction into the cache. */
static void cache_commit(struct fl_log *log)
{
	pthread_rwlock_wrlock(&log->cache_lock);
	for (size_t i = 0; i < log->fresh_count; i++)
		cache_add(log, log->fresh[i].level, log->fresh[i].index, log->fresh[i].hash);
	pthread_rwlock_unlock(&log->cache_lock);
	log->fresh_count = 0;
}

/*
 * The key of the latest checkpoint is the log's current key, unless the
 * latest event is a key event that this checkpoint covers: then the key it
 * introduced is. A writer must open with the current key (a change of key
 * goes through fl_log_rotate_key, signed by the old key). FL_ERR_CONFLICT
 * otherwise.
 */
static enum fl_status check_current_key(struct fl_log *log, MDB_txn *txn, uint64_t size)
{
	uint8_t keybuf[8];
	MDB_val key = {8, keybuf}, val;

	fl_put_be64(keybuf, size);
	int rc = mdb_get(txn, log->checkpoints, &key, &val);
	if (rc != MDB_SUCCESS)
		return rc == MDB_NOTFOUND ? FL_ERR_CORRUPT : fl_status_of_mdb(rc);
	if (val.mv_size != CHECKPOINT_VALUE_LEN)
		return FL_ERR_CORRUPT;
	/* The latest commit may be a rotation: its checkpoint is signed by the
	 * old key, and the key its event introduced is the current one. */
	char current[FL_KEY_ID_HEX_LEN], signer_id[FL_KEY_ID_HEX_LEN], previous[FL_KEY_ID_HEX_LEN];
	uint8_t pub[FL_PUBKEY_LEN];
	key_id_hex((uint8_t *)val.mv_data + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN, current);
	key_id_hex(log->signer_key_raw, signer_id);
	rc = mdb_get(txn, log->events, &key, &val);
	if (rc != MDB_SUCCESS)
		return rc == MDB_NOTFOUND ? FL_ERR_CORRUPT : fl_status_of_mdb(rc);
	if (val.mv_size <= EVENT_HEADER_LEN)
		return FL_ERR_CORRUPT;
	if (fl_log_key_event_parse((uint8_t *)val.mv_data + EVENT_HEADER_LEN,
				   val.mv_size - EVENT_HEADER_LEN, pub, previous) == FL_OK &&
	    strcmp(previous, current) == 0)
		fl_key_id_of(pub, current);
	return strcmp(current, signer_id) == 0 ? FL_OK : FL_ERR_CONFLICT;
}

static int commit_write(struct fl_log *log, MDB_txn *txn);

static enum fl_status open_dbis(struct fl_log *log, bool create)
{
	MDB_txn *txn;
	unsigned flags = create ? MDB_CREATE : 0;
	int rc = mdb_txn_begin(log->env, NULL, create ? 0 : MDB_RDONLY, &txn);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	if ((rc = mdb_dbi_open(txn, "events", flags, &log->events)) ||
	    (rc = mdb_dbi_open(txn, "nodes", flags, &log->nodes)) ||
	    (rc = mdb_dbi_open(txn, "checkpoints", flags, &log->checkpoints)) ||
	    (rc = mdb_dbi_open(txn, "idem", flags, &log->idem)) ||
	    (rc = mdb_dbi_open(txn, "times", flags, &log->times)) ||
	    (rc = mdb_dbi_open(txn, "keys", flags, &log->keys)) ||
	    (rc = mdb_dbi_open(txn, "meta", flags, &log->meta))) {
		mdb_txn_abort(txn);
		return fl_status_of_mdb(rc);
	}
	uint64_t size = last_seq(log, txn);
	enum fl_status st = load_frontier(log, txn, size, &log->frontier);
	if (st != FL_OK) {
		mdb_txn_abort(txn);
		return st;
	}
	log->size = size;
	load_cache(log, txn);
	if (log->signer && size == 0)
		st = add_key(log, txn, log->signer);
	if (log->signer && size > 0)
		st = check_current_key(log, txn, size);
	if (st != FL_OK) {
		mdb_txn_abort(txn);
		return st;
	}
	/* Committed even when read-only: an aborted transaction would close the
	 * database handles it opened. */
	rc = commit_write(log, txn);
	return fl_status_of_mdb(rc);
}

static void free_cache(struct fl_log *log)
{
	for (int level = 0; level < 64; level++)
		free(log->cache[level]);
	free(log->fresh);
}

enum fl_status fl_log_open(const char *dir, const struct fl_log_options *options,
			   const struct fl_signer *signer, struct fl_log **ret_log)
{
	struct fl_log *log;
	enum fl_status st = FL_ERR_NOMEM;
	int rc, dead;

	if (!dir || !ret_log)
		return FL_ERR_INVALID;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return FL_ERR_IO;
	log = calloc(1, sizeof(*log));
	if (!log)
		return FL_ERR_NOMEM;
	log->signer = signer;
	log->replica = options && options->replica;
	log->writable = signer || log->replica;
	log->map_size = options && options->initial_map_bytes ? options->initial_map_bytes
							      : DEFAULT_INITIAL_MAP;
	log->max_map = options ? options->max_map_bytes : 0;
	if (log->max_map && log->map_size > log->max_map)
		log->map_size = log->max_map;
	log->prefix = strdup(options && options->checkpoint_prefix ? options->checkpoint_prefix
								   : FL_CHECKPOINT_PREFIX);
	if (!log->prefix)
		goto err_free;
	if (signer)
		fl_hex_decode(fl_signer_key_id(signer), log->signer_key_raw, FL_KEY_ID_LEN);
	pthread_mutex_init(&log->write_lock, NULL);
	pthread_rwlock_init(&log->resize_lock, NULL);
	pthread_rwlock_init(&log->cache_lock, NULL);

	if ((rc = mdb_env_create(&log->env)) != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_locks;
	}
	mdb_env_set_maxdbs(log->env, 8);
	mdb_env_set_maxreaders(log->env, 1024);
	mdb_env_set_mapsize(log->env, log->map_size);
	unsigned flags = MDB_NOTLS | (log->writable ? 0 : MDB_RDONLY);
	if (log->replica)
		flags |= MDB_NOMETASYNC; /* see fl_log_options.replica */
	rc = mdb_env_open(log->env, dir, flags, 0600);
	if (rc != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto err_env;
	}
	/* Clear reader slots left behind by processes that were killed. */
	mdb_reader_check(log->env, &dead);
	{
		MDB_envinfo info;
		mdb_env_info(log->env, &info);
		if (info.me_mapsize > log->map_size)
			log->map_size = info.me_mapsize;
	}
	st = open_dbis(log, log->writable);
	if (st != FL_OK)
		goto err_env;
	if (log->writable) {
		/* Its own descriptor, not LMDB's: a writeback error is then
		 * reported to LMDB's next fdatasync too, not only to the one of
		 * the thread that grows the file (errors are kept per open file). */
		MDB_stat stat;
		char path[4096];
		mdb_env_stat(log->env, &stat);
		log->page_size = stat.ms_psize;
		snprintf(path, sizeof(path), "%s/data.mdb", dir);
		log->grow_fd = open(path, O_WRONLY | O_CLOEXEC);
		if (log->grow_fd < 0) {
			st = fl_status_of_errno(errno);
			goto err_env;
		}
		if ((st = fl_filegrow_start(log->grow_fd, &log->grow)) != FL_OK) {
			close(log->grow_fd);
			goto err_env;
		}
	}
	*ret_log = log;
	return FL_OK;

err_env:
	mdb_env_close(log->env);
err_locks:
	free_cache(log);
	pthread_rwlock_destroy(&log->cache_lock);
	pthread_rwlock_destroy(&log->resize_lock);
	pthread_mutex_destroy(&log->write_lock);
err_free:
	free(log->prefix);
	free(log);
	return st;
}

void fl_log_close(struct fl_log *log)
{
	if (!log)
		return;
	fl_filegrow_stop(log->grow);
	if (log->grow)
		close(log->grow_fd);
	/* A replica's last meta page is not synced by its commit (see
	 * fl_log_options.replica): a clean close leaves nothing to take back. */
	if (log->replica)
		mdb_env_sync(log->env, 1);
	mdb_env_close(log->env);
	free_cache(log);
	pthread_rwlock_destroy(&log->cache_lock);
	pthread_rwlock_destroy(&log->resize_lock);
	pthread_mutex_destroy(&log->write_lock);
	free(log->prefix);
	free(log);
}

uint64_t fl_log_size(struct fl_log *log)
{
	pthread_mutex_lock(&log->write_lock);
	uint64_t size = log->size;
	pthread_mutex_unlock(&log->write_lock);
	return size;
}

/*
 * Commits a write transaction. Every write LMDB makes to the data file is
 * made here, bracketed so that the file-growing thread never writes beside
 * it; the thread is then told how far the file is in use.
 */
static int commit_write(struct fl_log *log, MDB_txn *txn)
{
	uint64_t used = 0;

	fl_filegrow_commit_begin(log->grow);
	int rc = mdb_txn_commit(txn);
	if (rc == MDB_SUCCESS && log->grow) {
		MDB_envinfo info;
		mdb_env_info(log->env, &info);
		used = ((uint64_t)info.me_last_pgno + 1) * log->page_size;
	}
	fl_filegrow_commit_end(log->grow, used, log->map_size);
	return rc;
}

/*
 * Doubles the map (within the cap). Called by the writer with no transaction
 * open; waits for this process's readers to finish.
 */
static enum fl_status grow_map(struct fl_log *log)
{
	size_t next = log->map_size * 2;

	if (log->max_map && log->map_size >= log->max_map)
		return FL_ERR_FULL;
	if (log->max_map && next > log->max_map)
		next = log->max_map;
	pthread_rwlock_wrlock(&log->resize_lock);
	int rc = mdb_env_set_mapsize(log->env, next);
	pthread_rwlock_unlock(&log->resize_lock);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	log->map_size = next;
	return FL_OK;
}

/* ---- append ----------------------------------------------------------- */

/* One event being written: its body and hashes, before it is stored. */
struct pending {
	const struct fl_log_input *input;
	uint64_t seq;
	char *body;
	size_t body_len;
	uint8_t leaf_hash[FL_HASH_LEN];
	uint8_t sig[FL_SIG_LEN];
};

static char *make_body(uint64_t seq, const char *tail, size_t tail_len, size_t *ret_len)
{
	char head[32];
	int head_len = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 ",", seq);
	char *body = malloc((size_t)head_len + tail_len + 2);
	if (!body)
		return NULL;
	memcpy(body, head, (size_t)head_len);
	memcpy(body + head_len, tail, tail_len);
	body[(size_t)head_len + tail_len] = '}';
	body[(size_t)head_len + tail_len + 1] = '\0';
	*ret_len = (size_t)head_len + tail_len + 1;
	return body;
}

static size_t idem_key(const struct fl_log_input *in, uint8_t *buf, size_t cap)
{
	size_t plen = strlen(in->producer ? in->producer : "");
	size_t klen = strlen(in->idempotency_key);
	if (plen + 1 + klen > cap)
		return 0;
	memcpy(buf, in->producer ? in->producer : "", plen);
	buf[plen] = 0;
	memcpy(buf + plen + 1, in->idempotency_key, klen);
	return plen + 1 + klen;
}

static bool same_key(const struct fl_log_input *a, const struct fl_log_input *b)
{
	return a->idempotency_key && b->idempotency_key &&
	       strcmp(a->idempotency_key, b->idempotency_key) == 0 &&
	       strcmp(a->producer ? a->producer : "", b->producer ? b->producer : "") == 0;
}

/*
 * Decides for each input of a batch whether it is new, a duplicate (result
 * filled in, is_dup set) or a conflict (returns FL_ERR_CONFLICT and the index).
 * The idem table read through txn holds the committed keys and the keys of
 * the earlier batches of this transaction (claim_keys): a key in flight
 * counts like a committed one. Its event is one of items, the events of
 * this transaction so far, whose first seq is log->size + 1.
 */
static enum fl_status check_batch(struct fl_log *log, MDB_txn *txn, struct fl_log_batch *batch,
				  const struct pending *items, size_t n_items, bool *is_dup,
				  size_t *ret_conflict)
{
	for (size_t i = 0; i < batch->count; i++) {
		const struct fl_log_input *in = &batch->inputs[i];
		uint8_t keybuf[512];
		MDB_val key, val;
		size_t klen;

		is_dup[i] = false;
		if (!in->idempotency_key)
			continue;
		if (!in->digest || !(klen = idem_key(in, keybuf, sizeof(keybuf))))
			return FL_ERR_INVALID;
		key = (MDB_val){klen, keybuf};
		int rc = mdb_get(txn, log->idem, &key, &val);
		if (rc == MDB_SUCCESS) {
			if (val.mv_size != 8 + FL_HASH_LEN)
				return FL_ERR_CORRUPT;
			if (memcmp((uint8_t *)val.mv_data + 8, in->digest, FL_HASH_LEN) != 0) {
				*ret_conflict = i;
				return FL_ERR_CONFLICT;
			}
			uint64_t seq = fl_get_be64(val.mv_data);
			if (seq > log->size) {
				/* In flight: an event of an earlier batch of this commit. */
				if (seq - log->size > n_items)
					return FL_ERR_CORRUPT;
				memcpy(batch->results[i].leaf_hash,
				       items[seq - log->size - 1].leaf_hash, FL_HASH_LEN);
			} else {
				struct node_ctx ctx = {txn, log};
				enum fl_status st =
				    get_node(&ctx, 0, seq - 1, batch->results[i].leaf_hash);
				if (st != FL_OK)
					return st;
			}
			batch->results[i].seq = seq;
			batch->results[i].duplicate = true;
			is_dup[i] = true;
			continue;
		} else if (rc != MDB_NOTFOUND) {
			return fl_status_of_mdb(rc);
		}
		/* The same key earlier in this very batch. */
		for (size_t j = 0; j < i; j++) {
			if (!same_key(in, &batch->inputs[j]))
				continue;
			if (memcmp(in->digest, batch->inputs[j].digest, FL_HASH_LEN) != 0) {
				*ret_conflict = i;
				return FL_ERR_CONFLICT;
			}
			is_dup[i] = true; /* filled in once j has its seq */
			batch->results[i].duplicate = false;
			break;
		}
	}
	return FL_OK;
}

/*
 * Records the keys of a batch's new events in the idem table of txn, as soon
 * as the batch is accepted, so that the later batches of the same commit
 * (racing requests with the same key) see them (check_batch).
 */
static enum fl_status claim_keys(struct fl_log *log, MDB_txn *txn, const struct pending *items,
				 size_t n_items)
{
	for (size_t i = 0; i < n_items; i++) {
		const struct pending *p = &items[i];
		uint8_t ikey[512], ival[8 + FL_HASH_LEN];
		if (!p->input->idempotency_key)
			continue;
		size_t klen = idem_key(p->input, ikey, sizeof(ikey));
		fl_put_be64(ival, p->seq);
		memcpy(ival + 8, p->input->digest, FL_HASH_LEN);
		MDB_val key = {klen, ikey}, val = {sizeof(ival), ival};
		int rc = mdb_put(txn, log->idem, &key, &val, 0);
		if (rc != MDB_SUCCESS)
			return fl_status_of_mdb(rc);
	}
	return FL_OK;
}

/*
 * Stores one event. key_raw NULL: a line of format v2 (no signature; sig and
 * key_id are stored as zero bytes); otherwise a line of the first format
 * signed (p->sig) by the key of key_raw, which only replicas store.
 */
static enum fl_status store_event(struct fl_log *log, MDB_txn *txn, const struct pending *p,
				  const uint8_t key_raw[FL_KEY_ID_LEN])
{
	uint8_t keybuf[16];
	MDB_val key, val;
	int rc;

	fl_put_be64(keybuf, p->seq);
	key = (MDB_val){8, keybuf};
	val = (MDB_val){EVENT_HEADER_LEN + p->body_len, NULL};
	rc = mdb_put(txn, log->events, &key, &val, MDB_RESERVE | MDB_APPEND);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	uint8_t *out = val.mv_data;
	fl_put_be64(out, (uint64_t)p->input->time_us);
	memcpy(out + 8, p->leaf_hash, FL_HASH_LEN);
	if (key_raw) {
		memcpy(out + 8 + FL_HASH_LEN, p->sig, FL_SIG_LEN);
		memcpy(out + 8 + FL_HASH_LEN + FL_SIG_LEN, key_raw, FL_KEY_ID_LEN);
	} else {
		memset(out + 8 + FL_HASH_LEN, 0, FL_SIG_LEN + FL_KEY_ID_LEN);
	}
	memcpy(out + EVENT_HEADER_LEN, p->body, p->body_len);

	time_key(p->input->time_us, p->seq, keybuf);
	key = (MDB_val){16, keybuf};
	val = (MDB_val){0, ""};
	rc = mdb_put(txn, log->times, &key, &val, 0);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);

	/* The idempotency key went in with claim_keys. */
	struct node_ctx ctx = {txn, log};
	return fl_merkle_frontier_append(&log->frontier, p->leaf_hash, put_node, &ctx);
}

static enum fl_status store_checkpoint(struct fl_log *log, MDB_txn *txn,
				       const struct fl_signer *signer)
{
	struct fl_checkpoint cp;
	char text[256];
	uint8_t keybuf[8], value[CHECKPOINT_VALUE_LEN];
	enum fl_status st;

	cp.tree_size = log->frontier.size;
	fl_merkle_frontier_root(&log->frontier, cp.root_hash);
	fl_time_format(fl_time_now_us(), cp.timestamp);
	snprintf(cp.key_id, sizeof(cp.key_id), "%s", fl_signer_key_id(signer));
	size_t len = fl_checkpoint_text(log->prefix, &cp, text, sizeof(text));
	st = fl_signer_sign(signer, (const uint8_t *)text, len, cp.sig);
	if (st != FL_OK)
		return st;
	memcpy(value, cp.root_hash, FL_HASH_LEN);
	memcpy(value + FL_HASH_LEN, cp.timestamp, FL_CHECKPOINT_TIMESTAMP_LEN);
	fl_hex_decode(cp.key_id, value + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN, FL_KEY_ID_LEN);
	memcpy(value + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN + FL_KEY_ID_LEN, cp.sig,
	       FL_SIG_LEN);
	fl_put_be64(keybuf, cp.tree_size);
	MDB_val key = {8, keybuf}, val = {sizeof(value), value};
	return fl_status_of_mdb(mdb_put(txn, log->checkpoints, &key, &val, MDB_APPEND));
}

static void free_pending(struct pending *items, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(items[i].body);
	free(items);
}

/*
 * One attempt at writing all batches in a transaction. On any failure the
 * transaction is aborted and the caller restores the frontier.
 */
static enum fl_status append_once(struct fl_log *log, struct fl_log_batch *batches,
				  size_t n_batches, size_t total)
{
	MDB_txn *txn;
	struct pending *items = calloc(total ? total : 1, sizeof(*items));
	bool *is_dup = calloc(total ? total : 1, sizeof(*is_dup));
	enum fl_status st = FL_ERR_NOMEM;
	size_t n_items = 0;
	uint64_t next_seq = log->size + 1;
	int rc;

	if (!items || !is_dup)
		goto out_free;
	rc = mdb_txn_begin(log->env, NULL, 0, &txn);
	if (rc != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto out_free;
	}
	/* Pass 1: idempotency decisions, seqs, bodies and leaf hashes. */
	size_t offset = 0;
	for (size_t b = 0; b < n_batches; b++) {
		struct fl_log_batch *batch = &batches[b];
		bool *dup = is_dup + offset;
		size_t first_item = n_items;
		offset += batch->count;
		batch->status =
		    check_batch(log, txn, batch, items, n_items, dup, &batch->conflict_index);
		if (batch->status == FL_ERR_CONFLICT)
			continue;
		if (batch->status != FL_OK) {
			st = batch->status;
			goto out_abort;
		}
		for (size_t i = 0; i < batch->count; i++) {
			if (dup[i])
				continue;
			struct pending *p = &items[n_items++];
			p->input = &batch->inputs[i];
			p->seq = next_seq++;
			p->body = make_body(p->seq, p->input->body_tail, p->input->body_tail_len,
					    &p->body_len);
			if (!p->body) {
				st = FL_ERR_NOMEM;
				goto out_abort;
			}
			fl_merkle_leaf_hash((const uint8_t *)p->body, p->body_len, p->leaf_hash);
			batch->results[i].seq = p->seq;
			memcpy(batch->results[i].leaf_hash, p->leaf_hash, FL_HASH_LEN);
			batch->results[i].duplicate = false;
		}
		st = claim_keys(log, txn, items + first_item, n_items - first_item);
		if (st != FL_OK)
			goto out_abort;
		/* Duplicates of an earlier input of the same batch. */
		for (size_t i = 0; i < batch->count; i++) {
			if (!dup[i] || batch->results[i].duplicate)
				continue;
			for (size_t j = 0; j < i; j++) {
				if (same_key(&batch->inputs[i], &batch->inputs[j])) {
					batch->results[i] = batch->results[j];
					batch->results[i].duplicate = true;
					break;
				}
			}
		}
	}
	if (n_items == 0) {
		/* Nothing new: no commit, no checkpoint. */
		mdb_txn_abort(txn);
		st = FL_OK;
		goto out_free;
	}
	/* Pass 2: the writes; one signature, the checkpoint's, covers them. */
	for (size_t i = 0; i < n_items; i++) {
		st = store_event(log, txn, &items[i], NULL);
		if (st != FL_OK)
			goto out_abort;
	}
	st = store_checkpoint(log, txn, log->signer);
	if (st != FL_OK)
		goto out_abort;
	rc = commit_write(log, txn);
	if (rc != MDB_SUCCESS) {
		st = fl_status_of_mdb(rc);
		goto out_free;
	}
	cache_commit(log);
	log->size = next_seq - 1;
	st = FL_OK;
	goto out_free;

out_abort:
	mdb_txn_abort(txn);
out_free:
	log->fresh_count = 0; /* nodes of an aborted transaction */
	free_pending(items, n_items);
	free(is_dup);
	return st;
}

enum fl_status fl_log_append(struct fl_log *log, struct fl_log_batch *batches, size_t n_batches,
			     uint64_t *ret_tree_size)
{
	enum fl_status st;
	size_t total = 0;

	if (!log || (!batches && n_batches))
		return FL_ERR_INVALID;
	if (!log->signer)
		return FL_ERR_INVALID;
	for (size_t b = 0; b < n_batches; b++) {
		if (!batches[b].results || (!batches[b].inputs && batches[b].count))
			return FL_ERR_INVALID;
		for (size_t i = 0; i < batches[b].count; i++)
			if (!batches[b].inputs[i].body_tail)
				return FL_ERR_INVALID;
		total += batches[b].count;
	}
	pthread_mutex_lock(&log->write_lock);
	for (;;) {
		struct fl_merkle_frontier saved = log->frontier;
		st = append_once(log, batches, n_batches, total);
		if (st == FL_OK)
			break;
		log->frontier = saved;
		if (st != FL_ERR_FULL)
			break;
		/* The map is full (or the disk): grow within the cap and retry. */
		if (grow_map(log) != FL_OK)
			break;
	}
	if (st == FL_OK && ret_tree_size)
		*ret_tree_size = log->size;
	pthread_mutex_unlock(&log->write_lock);
	return st;
}

static size_t json_escape_pem(const char *pem, char *out, size_t cap)
{
	size_t n = 0;
	for (const char *p = pem; *p && n + 3 < cap; p++) {
		if (*p == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = *p;
		}
	}
	out[n] = 0;
	return n;
}

/* Takes literal from *p (within end); false when the text differs. */
static bool take_literal(const char **p, const char *end, const char *literal)
{
	size_t n = strlen(literal);
	if ((size_t)(end - *p) < n || memcmp(*p, literal, n) != 0)
		return false;
	*p += n;
	return true;
}

/* Takes a key id of 16 lowercase hex digits and its closing quote. */
static bool take_key_id(const char **p, const char *end, char out[FL_KEY_ID_HEX_LEN])
{
	if (end - *p < 2 * FL_KEY_ID_LEN + 1 || (*p)[2 * FL_KEY_ID_LEN] != '"')
		return false;
	for (int i = 0; i < 2 * FL_KEY_ID_LEN; i++) {
		char c = (*p)[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		out[i] = c;
	}
	out[2 * FL_KEY_ID_LEN] = '\0';
	*p += 2 * FL_KEY_ID_LEN + 1;
	return true;
}

enum fl_status fl_log_key_event_parse(const uint8_t *body, size_t len,
				      uint8_t ret_pub[FL_PUBKEY_LEN],
				      char ret_previous_key_id[FL_KEY_ID_HEX_LEN])
{
	const char *p = (const char *)body, *end = p + len;
	char key_id[FL_KEY_ID_HEX_LEN], previous[FL_KEY_ID_HEX_LEN], actual[FL_KEY_ID_HEX_LEN];
	char pem[400];
	size_t pem_len = 0;
	uint8_t pub[FL_PUBKEY_LEN];

	if (!body || !ret_pub || !ret_previous_key_id || !take_literal(&p, end, "{\"seq\":"))
		return FL_ERR_NOT_FOUND;
	while (p < end && *p >= '0' && *p <= '9')
		p++;
	if (!take_literal(&p, end, ",\"kind\":\"key\","))
		return FL_ERR_NOT_FOUND;
	/* A key event from here on: anything amiss is a malformed one. */
	if (!take_literal(&p, end, "\"ingest_ts\":\"") || end - p < FL_TIME_TEXT_LEN ||
	    p[FL_TIME_TEXT_LEN - 1] != '"')
		return FL_ERR_INVALID;
	p += FL_TIME_TEXT_LEN;
	if (!take_literal(&p, end, ",\"key_id\":\"") || !take_key_id(&p, end, key_id) ||
	    !take_literal(&p, end, ",\"alg\":\"ed25519\",\"public_key_pem\":\""))
		return FL_ERR_INVALID;
	/* The PEM text, with its newlines escaped as \n (json_escape_pem). */
	for (; p < end && *p != '"'; p++) {
		char c = *p;
		if (c == '\\') {
			if (p + 1 >= end || p[1] != 'n')
				return FL_ERR_INVALID;
			c = '\n';
			p++;
		}
		if (pem_len + 1 >= sizeof(pem))
			return FL_ERR_INVALID;
		pem[pem_len++] = c;
	}
	pem[pem_len] = '\0';
	if (!take_literal(&p, end, "\",\"previous_key_id\":\"") ||
	    !take_key_id(&p, end, previous) || !take_literal(&p, end, "}") || p != end ||
	    fl_pubkey_from_pem(pem, pem_len, pub) != FL_OK)
		return FL_ERR_INVALID;
	fl_key_id_of(pub, actual);
	if (strcmp(actual, key_id) != 0 || strcmp(previous, key_id) == 0)
		return FL_ERR_INVALID;
	memcpy(ret_pub, pub, FL_PUBKEY_LEN);
	memcpy(ret_previous_key_id, previous, FL_KEY_ID_HEX_LEN);
	return FL_OK;
}

enum fl_status fl_log_rotate_key(struct fl_log *log, const struct fl_signer *new_signer,
				 int64_t time_us, struct fl_log_result *ret_result)
{
	char tail[1024], pem[400], ts[FL_TIME_TEXT_LEN];
	enum fl_status st;

	if (!log || !new_signer || !log->signer)
		return FL_ERR_INVALID;
	if (strcmp(fl_signer_key_id(new_signer), fl_signer_key_id(log->signer)) == 0)
		return FL_OK;
	json_escape_pem(fl_signer_public_pem(new_signer), pem, sizeof(pem));
	fl_time_format(time_us, ts);
	int len =
	    snprintf(tail, sizeof(tail),
		     "\"kind\":\"key\",\"ingest_ts\":\"%s\",\"key_id\":\"%s\","
		     "\"alg\":\"ed25519\",\"public_key_pem\":\"%s\",\"previous_key_id\":\"%s\"",
		     ts, fl_signer_key_id(new_signer), pem, fl_signer_key_id(log->signer));
	if (len <= 0 || (size_t)len >= sizeof(tail))
		return FL_ERR_INVALID;

	pthread_mutex_lock(&log->write_lock);
	const struct fl_signer *old = log->signer;
	for (;;) {
		struct fl_merkle_frontier saved = log->frontier;
		MDB_txn *txn;
		struct pending p = {0};
		struct fl_log_input in = {
		    .body_tail = tail, .body_tail_len = (size_t)len, .time_us = time_us};
		int rc = mdb_txn_begin(log->env, NULL, 0, &txn);
		if (rc != MDB_SUCCESS) {
			st = fl_status_of_mdb(rc);
			break;
		}
		p.input = &in;
		p.seq = log->size + 1;
		p.body = make_body(p.seq, tail, (size_t)len, &p.body_len);
		st = p.body ? FL_OK : FL_ERR_NOMEM;
		if (st == FL_OK) {
			fl_merkle_leaf_hash((const uint8_t *)p.body, p.body_len, p.leaf_hash);
			st = store_event(log, txn, &p, NULL);
		}
		if (st == FL_OK)
			st = add_key(log, txn, new_signer);
		/* The old key signs the checkpoint that covers the key event: a
		 * verifier that trusts only the old key learns the new one from
		 * it (CONTRACT §4, key trust). */
		if (st == FL_OK)
			st = store_checkpoint(log, txn, old);
		if (st == FL_OK) {
			rc = commit_write(log, txn);
			st = fl_status_of_mdb(rc);
		} else {
			mdb_txn_abort(txn);
		}
		free(p.body);
		if (st == FL_OK)
			cache_commit(log);
		log->fresh_count = 0;
		if (st == FL_OK) {
			log->size = p.seq;
			log->signer = new_signer;
			fl_hex_decode(fl_signer_key_id(new_signer), log->signer_key_raw,
				      FL_KEY_ID_LEN);
			if (ret_result) {
				ret_result->seq = p.seq;
				memcpy(ret_result->leaf_hash, p.leaf_hash, FL_HASH_LEN);
				ret_result->duplicate = false;
			}
			break;
		}
		log->frontier = saved;
		if (st != FL_ERR_FULL || grow_map(log) != FL_OK)
			break;
	}
	pthread_mutex_unlock(&log->write_lock);
	return st;
}

/* Stores a checkpoint signed elsewhere, as it is. */
static enum fl_status put_checkpoint(struct fl_log *log, MDB_txn *txn,
				     const struct fl_checkpoint *cp)
{
	uint8_t keybuf[8], value[CHECKPOINT_VALUE_LEN];
	if (strlen(cp->timestamp) != FL_CHECKPOINT_TIMESTAMP_LEN ||
	    fl_hex_decode(cp->key_id, value + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN,
			  FL_KEY_ID_LEN) != FL_OK)
		return FL_ERR_INVALID;
	memcpy(value, cp->root_hash, FL_HASH_LEN);
	memcpy(value + FL_HASH_LEN, cp->timestamp, FL_CHECKPOINT_TIMESTAMP_LEN);
	memcpy(value + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN + FL_KEY_ID_LEN, cp->sig,
	       FL_SIG_LEN);
	fl_put_be64(keybuf, cp->tree_size);
	MDB_val key = {8, keybuf}, val = {sizeof(value), value};
	return fl_status_of_mdb(mdb_put(txn, log->checkpoints, &key, &val, 0));
}

static enum fl_status replicate_once(struct fl_log *log, const struct fl_log_entry *entries,
				     size_t n, const struct fl_checkpoint *cp,
				     struct fl_log_verify_report *report)
{
	MDB_txn *txn;
	enum fl_status st = FL_OK;
	uint8_t root[FL_HASH_LEN];
	int rc = mdb_txn_begin(log->env, NULL, 0, &txn);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	for (size_t i = 0; i < n; i++) {
		const struct fl_log_entry *e = &entries[i];
		uint8_t leaf[FL_HASH_LEN], key_raw[FL_KEY_ID_LEN];
		struct pending p = {.seq = log->size + 1 + i};
		struct fl_log_input input = {.time_us = e->time_us};
		if (e->seq != p.seq || !fl_log_body_has_seq(e->body, e->body_len, e->seq)) {
			report->bad_seq = p.seq;
			snprintf(report->reason, sizeof(report->reason),
				 "expected seq %" PRIu64 ", got an entry for %" PRIu64, p.seq,
				 e->seq);
			st = FL_ERR_CORRUPT;
			break;
		}
		fl_merkle_leaf_hash(e->body, e->body_len, leaf);
		if (memcmp(leaf, e->leaf_hash, FL_HASH_LEN) != 0 ||
		    (e->sig && fl_hex_decode(e->key_id, key_raw, FL_KEY_ID_LEN) != FL_OK)) {
			report->bad_seq = e->seq;
			snprintf(report->reason, sizeof(report->reason),
				 "leaf hash does not match the body");
			st = FL_ERR_CORRUPT;
			break;
		}
		p.input = &input;
		p.body = (char *)e->body;
		p.body_len = e->body_len;
		memcpy(p.leaf_hash, leaf, FL_HASH_LEN);
		if (e->sig)
			memcpy(p.sig, e->sig, FL_SIG_LEN);
		st = store_event(log, txn, &p, e->sig ? key_raw : NULL);
		if (st != FL_OK)
			break;
	}
	if (st == FL_OK) {
		fl_merkle_frontier_root(&log->frontier, root);
		if (cp->tree_size != log->size + n ||
		    memcmp(root, cp->root_hash, FL_HASH_LEN) != 0) {
			report->bad_checkpoint = cp->tree_size;
			report->bad_seq = n ? entries[n - 1].seq : log->size;
			snprintf(report->reason, sizeof(report->reason),
				 "the events do not hash to the checkpoint of tree size %" PRIu64,
				 cp->tree_size);
			st = FL_ERR_CORRUPT;
		}
	}
	if (st == FL_OK)
		st = put_checkpoint(log, txn, cp);
	if (st != FL_OK) {
		mdb_txn_abort(txn);
		log->fresh_count = 0;
		return st;
	}
	rc = commit_write(log, txn);
	if (rc != MDB_SUCCESS) {
		log->fresh_count = 0;
		return fl_status_of_mdb(rc);
	}
	cache_commit(log);
	log->size += n;
	return FL_OK;
}

enum fl_status fl_log_replicate(struct fl_log *log, const struct fl_log_entry *entries, size_t n,
				const struct fl_checkpoint *checkpoint,
				struct fl_log_verify_report *ret_report)
{
	struct fl_log_verify_report report = {0};
	enum fl_status st;

	if (!log || !checkpoint || (n && !entries) || !log->replica)
		return FL_ERR_INVALID;
	pthread_mutex_lock(&log->write_lock);
	for (;;) {
		struct fl_merkle_frontier saved = log->frontier;
		st = replicate_once(log, entries, n, checkpoint, &report);
		if (st == FL_OK)
			break;
		log->frontier = saved;
		if (st != FL_ERR_FULL || grow_map(log) != FL_OK)
			break;
	}
	pthread_mutex_unlock(&log->write_lock);
	if (ret_report)
		*ret_report = report;
	return st;
}

enum fl_status fl_log_replica_add_key(struct fl_log *log, const uint8_t pub[FL_PUBKEY_LEN])
{
	uint8_t raw_id[FL_KEY_ID_LEN], ord[8];
	char id[FL_KEY_ID_HEX_LEN];
	uint64_t count = 0;
	enum fl_status st;

	if (!log || !pub || !log->writable)
		return FL_ERR_INVALID;
	fl_key_id_of(pub, id);
	fl_hex_decode(id, raw_id, FL_KEY_ID_LEN);
	pthread_mutex_lock(&log->write_lock);
	MDB_txn *txn;
	int rc = mdb_txn_begin(log->env, NULL, 0, &txn);
	st = fl_status_of_mdb(rc);
	if (st == FL_OK) {
		if (find_key(log, txn, raw_id, &count) >= 0) {
			mdb_txn_abort(txn);
		} else {
			fl_put_be64(ord, count);
			MDB_val key = {8, ord}, val = {FL_PUBKEY_LEN, (void *)pub};
			st = fl_status_of_mdb(mdb_put(txn, log->keys, &key, &val, 0));
			if (st == FL_OK)
				st = fl_status_of_mdb(commit_write(log, txn));
			else
				mdb_txn_abort(txn);
		}
	}
	pthread_mutex_unlock(&log->write_lock);
	return st;
}

enum fl_status fl_log_counter_get(struct fl_log *log, const char *name, uint64_t *ret_value)
{
	struct fl_log_reader *reader;
	char key[80];
	enum fl_status st;

	if (!log || !name || !ret_value || strlen(name) > 70)
		return FL_ERR_INVALID;
	snprintf(key, sizeof(key), "c:%s", name);
	st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return st;
	st = meta_get(reader->txn, log->meta, key, ret_value);
	fl_log_reader_end(reader);
	return st;
}

enum fl_status fl_log_counter_set(struct fl_log *log, const char *name, uint64_t value)
{
	char key[80];
	enum fl_status st;

	if (!log || !name || strlen(name) > 70 || !log->writable)
		return FL_ERR_INVALID;
	snprintf(key, sizeof(key), "c:%s", name);
	pthread_mutex_lock(&log->write_lock);
	for (;;) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(log->env, NULL, 0, &txn);
		if (rc != MDB_SUCCESS) {
			st = fl_status_of_mdb(rc);
			break;
		}
		st = meta_put(txn, log->meta, key, value);
		if (st == FL_OK)
			st = fl_status_of_mdb(commit_write(log, txn));
		else
			mdb_txn_abort(txn);
		if (st != FL_ERR_FULL || grow_map(log) != FL_OK)
			break;
	}
	pthread_mutex_unlock(&log->write_lock);
	return st;
}

/* ---- readers ---------------------------------------------------------- */

enum fl_status fl_log_reader_begin(struct fl_log *log, struct fl_log_reader **ret_reader)
{
	struct fl_log_reader *reader;
	int rc;

	if (!log || !ret_reader)
		return FL_ERR_INVALID;
	reader = calloc(1, sizeof(*reader));
	if (!reader)
		return FL_ERR_NOMEM;
	reader->log = log;
	pthread_rwlock_rdlock(&log->resize_lock);
	rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &reader->txn);
	if (rc == MDB_MAP_RESIZED) {
		/* Another process grew the map: adopt its size, then retry. */
		pthread_rwlock_unlock(&log->resize_lock);
		pthread_rwlock_wrlock(&log->resize_lock);
		mdb_env_set_mapsize(log->env, 0);
		pthread_rwlock_unlock(&log->resize_lock);
		pthread_rwlock_rdlock(&log->resize_lock);
		rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &reader->txn);
	}
	if (rc != MDB_SUCCESS) {
		pthread_rwlock_unlock(&log->resize_lock);
		free(reader);
		return fl_status_of_mdb(rc);
	}
	reader->size = last_seq(log, reader->txn);
	*ret_reader = reader;
	return FL_OK;
}

void fl_log_reader_end(struct fl_log_reader *reader)
{
	if (!reader)
		return;
	mdb_txn_abort(reader->txn);
	pthread_rwlock_unlock(&reader->log->resize_lock);
	free(reader);
}

uint64_t fl_log_reader_size(const struct fl_log_reader *reader)
{
	return reader->size;
}

static enum fl_status entry_from(uint64_t seq, const MDB_val *val, struct fl_log_entry *ret_entry)
{
	const uint8_t *p = val->mv_data;
	if (val->mv_size < EVENT_HEADER_LEN)
		return FL_ERR_CORRUPT;
	ret_entry->seq = seq;
	ret_entry->time_us = (int64_t)fl_get_be64(p);
	ret_entry->leaf_hash = p + 8;
	/* All zero bytes where sig and key_id go: a line of format v2. */
	static const uint8_t unsigned_line[FL_SIG_LEN + FL_KEY_ID_LEN];
	if (memcmp(p + 8 + FL_HASH_LEN, unsigned_line, sizeof(unsigned_line)) == 0) {
		ret_entry->sig = NULL;
		ret_entry->key_id[0] = '\0';
	} else {
		ret_entry->sig = p + 8 + FL_HASH_LEN;
		key_id_hex(p + 8 + FL_HASH_LEN + FL_SIG_LEN, ret_entry->key_id);
	}
	ret_entry->body = p + EVENT_HEADER_LEN;
	ret_entry->body_len = val->mv_size - EVENT_HEADER_LEN;
	return FL_OK;
}

enum fl_status fl_log_reader_get(struct fl_log_reader *reader, uint64_t seq,
				 struct fl_log_entry *ret_entry)
{
	uint8_t keybuf[8];
	MDB_val key = {8, keybuf}, val;

	if (!reader || !ret_entry)
		return FL_ERR_INVALID;
	if (seq == 0 || seq > reader->size)
		return FL_ERR_NOT_FOUND;
	fl_put_be64(keybuf, seq);
	int rc = mdb_get(reader->txn, reader->log->events, &key, &val);
	if (rc == MDB_NOTFOUND)
		return FL_ERR_CORRUPT; /* a gap below the last seq */
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	return entry_from(seq, &val, ret_entry);
}

static enum fl_status checkpoint_from(const MDB_val *key, const MDB_val *val,
				      struct fl_checkpoint *ret_checkpoint)
{
	const uint8_t *p = val->mv_data;
	if (key->mv_size != 8 || val->mv_size != CHECKPOINT_VALUE_LEN)
		return FL_ERR_CORRUPT;
	ret_checkpoint->tree_size = fl_get_be64(key->mv_data);
	memcpy(ret_checkpoint->root_hash, p, FL_HASH_LEN);
	memcpy(ret_checkpoint->timestamp, p + FL_HASH_LEN, FL_CHECKPOINT_TIMESTAMP_LEN);
	ret_checkpoint->timestamp[FL_CHECKPOINT_TIMESTAMP_LEN] = 0;
	key_id_hex(p + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN, ret_checkpoint->key_id);
	memcpy(ret_checkpoint->sig, p + FL_HASH_LEN + FL_CHECKPOINT_TIMESTAMP_LEN + FL_KEY_ID_LEN,
	       FL_SIG_LEN);
	return FL_OK;
}

static enum fl_status checkpoint_seek(struct fl_log_reader *reader, uint64_t tree_size,
				      MDB_cursor_op op, struct fl_checkpoint *ret_checkpoint)
{
	MDB_cursor *cur;
	uint8_t keybuf[8];
	MDB_val key = {8, keybuf}, val;
	int rc;

	rc = mdb_cursor_open(reader->txn, reader->log->checkpoints, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	fl_put_be64(keybuf, tree_size);
	rc = mdb_cursor_get(cur, &key, &val, op);
	enum fl_status st = fl_status_of_mdb(rc);
	if (st == FL_OK && fl_get_be64(key.mv_data) > reader->size)
		st = FL_ERR_NOT_FOUND; /* committed after this snapshot began */
	if (st == FL_OK)
		st = checkpoint_from(&key, &val, ret_checkpoint);
	mdb_cursor_close(cur);
	return st;
}

enum fl_status fl_log_reader_checkpoint(struct fl_log_reader *reader, uint64_t tree_size,
					struct fl_checkpoint *ret_checkpoint)
{
	if (!reader || !ret_checkpoint)
		return FL_ERR_INVALID;
	if (tree_size == 0) {
		if (reader->size == 0)
			return FL_ERR_NOT_FOUND;
		tree_size = reader->size;
	}
	return checkpoint_seek(reader, tree_size, MDB_SET_KEY, ret_checkpoint);
}

enum fl_status fl_log_reader_checkpoint_covering(struct fl_log_reader *reader, uint64_t seq,
						 struct fl_checkpoint *ret_checkpoint)
{
	if (!reader || !ret_checkpoint || seq == 0)
		return FL_ERR_INVALID;
	return checkpoint_seek(reader, seq, MDB_SET_RANGE, ret_checkpoint);
}

enum fl_status fl_log_reader_root(struct fl_log_reader *reader, uint64_t tree_size,
				  uint8_t ret_root[FL_HASH_LEN])
{
	if (!reader || tree_size > reader->size)
		return FL_ERR_INVALID;
	struct node_ctx ctx = {reader->txn, reader->log};
	return fl_merkle_root(get_node, &ctx, tree_size, ret_root);
}

enum fl_status fl_log_reader_root_equals(struct fl_log_reader *reader, uint64_t tree_size,
					 const uint8_t root[FL_HASH_LEN], bool *ret_same)
{
	uint8_t have[FL_HASH_LEN];
	if (!ret_same)
		return FL_ERR_INVALID;
	*ret_same = false;
	if (!root)
		return FL_ERR_INVALID;
	enum fl_status st = fl_log_reader_root(reader, tree_size, have);
	if (st == FL_OK)
		*ret_same = memcmp(have, root, FL_HASH_LEN) == 0;
	return st;
}

enum fl_status fl_log_reader_inclusion_proof(struct fl_log_reader *reader, uint64_t seq,
					     uint64_t tree_size, uint8_t ret_hashes[][FL_HASH_LEN],
					     size_t *ret_count)
{
	if (!reader || seq == 0 || seq > tree_size || tree_size > reader->size)
		return FL_ERR_INVALID;
	struct node_ctx ctx = {reader->txn, reader->log};
	return fl_merkle_inclusion_proof(get_node, &ctx, seq - 1, tree_size, ret_hashes, ret_count);
}

enum fl_status fl_log_reader_consistency_proof(struct fl_log_reader *reader, uint64_t first,
					       uint64_t second, uint8_t ret_hashes[][FL_HASH_LEN],
					       size_t *ret_count)
{
	if (!reader || first == 0 || first > second || second > reader->size)
		return FL_ERR_INVALID;
	struct node_ctx ctx = {reader->txn, reader->log};
	return fl_merkle_consistency_proof(get_node, &ctx, first, second, ret_hashes, ret_count);
}

enum fl_status fl_log_reader_time_range(struct fl_log_reader *reader, int64_t from_us,
					int64_t to_us, fl_log_entry_fn fn, void *ctx)
{
	MDB_cursor *cur;
	uint8_t start[16];
	MDB_val key = {16, start}, val;
	enum fl_status st = FL_OK;
	int rc;

	if (!reader || !fn)
		return FL_ERR_INVALID;
	rc = mdb_cursor_open(reader->txn, reader->log->times, &cur);
	if (rc != MDB_SUCCESS)
		return fl_status_of_mdb(rc);
	time_key(from_us, 0, start);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		struct fl_log_entry entry;
		if (key.mv_size != 16) {
			st = FL_ERR_CORRUPT;
			break;
		}
		int64_t t = (int64_t)(fl_get_be64(key.mv_data) ^ (UINT64_C(1) << 63));
		uint64_t seq = fl_get_be64((uint8_t *)key.mv_data + 8);
		if (t > to_us)
			break;
		if (seq > reader->size)
			continue;
		st = fl_log_reader_get(reader, seq, &entry);
		if (st == FL_OK)
			st = fn(ctx, &entry);
		if (st != FL_OK)
			break;
	}
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND && st == FL_OK)
		st = fl_status_of_mdb(rc);
	mdb_cursor_close(cur);
	return st;
}

enum fl_status fl_log_reader_key(struct fl_log_reader *reader, const char *key_id,
				 uint8_t ret_pub[FL_PUBKEY_LEN])
{
	uint8_t raw[FL_KEY_ID_LEN];
	MDB_cursor *cur;
	MDB_val key, val;
	enum fl_status st = FL_ERR_NOT_FOUND;

	if (!reader || !key_id || fl_hex_decode(key_id, raw, FL_KEY_ID_LEN) != FL_OK)
		return FL_ERR_INVALID;
	if (mdb_cursor_open(reader->txn, reader->log->keys, &cur) != MDB_SUCCESS)
		return FL_ERR_IO;
	for (int op = MDB_FIRST; mdb_cursor_get(cur, &key, &val, (MDB_cursor_op)op) == 0;
	     op = MDB_NEXT) {
		char id[FL_KEY_ID_HEX_LEN];
		if (val.mv_size != FL_PUBKEY_LEN)
			continue;
		fl_key_id_of(val.mv_data, id);
		if (strcmp(id, key_id) == 0) {
			memcpy(ret_pub, val.mv_data, FL_PUBKEY_LEN);
			st = FL_OK;
			break;
		}
	}
	mdb_cursor_close(cur);
	return st;
}

enum fl_status fl_log_reader_keys(struct fl_log_reader *reader, fl_log_key_fn fn, void *ctx)
{
	MDB_cursor *cur;
	MDB_val key, val;
	enum fl_status st = FL_OK;

	if (!reader || !fn)
		return FL_ERR_INVALID;
	if (mdb_cursor_open(reader->txn, reader->log->keys, &cur) != MDB_SUCCESS)
		return FL_ERR_IO;
	for (int op = MDB_FIRST;
	     st == FL_OK && mdb_cursor_get(cur, &key, &val, (MDB_cursor_op)op) == 0;
	     op = MDB_NEXT) {
		char id[FL_KEY_ID_HEX_LEN];
		if (val.mv_size != FL_PUBKEY_LEN) {
			st = FL_ERR_CORRUPT;
			break;
		}
		fl_key_id_of(val.mv_data, id);
		st = fn(ctx, id, val.mv_data);
	}
	mdb_cursor_close(cur);
	return st;
}

/* ---- verification ----------------------------------------------------- */

struct verify_ctx {
	MDB_txn *txn;
	struct fl_log *log;
	bool node_mismatch;
	unsigned bad_level;
	uint64_t bad_index;
};

/* Compares each node the recomputed tree completes with the stored one. */
static enum fl_status compare_node(void *opaque, unsigned level, uint64_t index,
				   const uint8_t hash[FL_HASH_LEN])
{
	struct verify_ctx *ctx = opaque;
	struct node_ctx nctx = {ctx->txn, ctx->log};
	uint8_t stored[FL_HASH_LEN];

	if (level == 0)
		return FL_OK;
	enum fl_status st = get_node(&nctx, level, index, stored);
	if (st != FL_OK || memcmp(stored, hash, FL_HASH_LEN) != 0) {
		ctx->node_mismatch = true;
		ctx->bad_level = level;
		ctx->bad_index = index;
	}
	return FL_OK;
}

enum fl_status fl_log_verify(struct fl_log *log, uint64_t from_seq, uint64_t to_seq,
			     struct fl_log_verify_report *ret_report)
{
	struct fl_log_verify_report report = {0};
	struct fl_log_reader *reader;
	struct log_key keys[MAX_KEYS];
	size_t n_keys = 0;
	struct fl_merkle_frontier frontier;
	MDB_cursor *cp_cur = NULL;
	MDB_val cp_key, cp_val;
	int cp_rc;
	enum fl_status st;

	if (!log || !ret_report)
		return FL_ERR_INVALID;
	if (from_seq == 0)
		from_seq = 1;
	st = fl_log_reader_begin(log, &reader);
	if (st != FL_OK)
		return st;
	if (to_seq == 0 || to_seq > reader->size)
		to_seq = reader->size;

	/* Every key the log knows, for signature checks by key id. */
	{
		MDB_cursor *cur;
		MDB_val key, val;
		if (mdb_cursor_open(reader->txn, log->keys, &cur) != MDB_SUCCESS) {
			st = FL_ERR_IO;
			goto out;
		}
		for (int op = MDB_FIRST;
		     n_keys < MAX_KEYS && mdb_cursor_get(cur, &key, &val, (MDB_cursor_op)op) == 0;
		     op = MDB_NEXT) {
			if (val.mv_size != FL_PUBKEY_LEN)
				continue;
			memcpy(keys[n_keys].pub, val.mv_data, FL_PUBKEY_LEN);
			fl_key_id_of(keys[n_keys].pub, keys[n_keys].key_id);
			n_keys++;
		}
		mdb_cursor_close(cur);
	}
	/* The tree before the range, from the stored nodes. */
	st = from_seq - 1 <= reader->size ? load_frontier(log, reader->txn, from_seq - 1, &frontier)
					  : FL_ERR_INVALID;
	if (st != FL_OK) {
		snprintf(report.reason, sizeof(report.reason),
			 "cannot load the tree before seq %" PRIu64 ": %s", from_seq,
			 fl_status_str(st));
		report.bad_seq = from_seq;
		st = FL_ERR_CORRUPT;
		goto out;
	}
	if (mdb_cursor_open(reader->txn, log->checkpoints, &cp_cur) != MDB_SUCCESS) {
		st = FL_ERR_IO;
		goto out;
	}
	{
		uint8_t start[8];
		fl_put_be64(start, from_seq);
		cp_key = (MDB_val){8, start};
		cp_rc = mdb_cursor_get(cp_cur, &cp_key, &cp_val, MDB_SET_RANGE);
	}

	for (uint64_t seq = from_seq; seq <= to_seq; seq++) {
		struct fl_log_entry entry;
		uint8_t leaf[FL_HASH_LEN];
		const struct log_key *key = NULL;
		struct verify_ctx vctx = {reader->txn, log, false, 0, 0};

		st = fl_log_reader_get(reader, seq, &entry);
		if (st != FL_OK) {
			report.bad_seq = seq;
			snprintf(report.reason, sizeof(report.reason), "event unreadable: %s",
				 fl_status_str(st));
			st = FL_ERR_CORRUPT;
			goto out;
		}
		fl_merkle_leaf_hash(entry.body, entry.body_len, leaf);
		if (memcmp(leaf, entry.leaf_hash, FL_HASH_LEN) != 0) {
			report.bad_seq = seq;
			snprintf(report.reason, sizeof(report.reason),
				 "leaf hash does not match the body");
			st = FL_ERR_CORRUPT;
			goto out;
		}
		if (!fl_log_body_has_seq(entry.body, entry.body_len, seq)) {
			report.bad_seq = seq;
			snprintf(report.reason, sizeof(report.reason),
				 "body does not carry seq %" PRIu64, seq);
			st = FL_ERR_CORRUPT;
			goto out;
		}
		/* A line of the first format: its own signature, too. */
		for (size_t k = 0; entry.sig && k < n_keys; k++)
			if (strcmp(keys[k].key_id, entry.key_id) == 0)
				key = &keys[k];
		if (entry.sig && (!key || !fl_sig_verify(key->pub, leaf, FL_HASH_LEN, entry.sig))) {
			report.bad_seq = seq;
			snprintf(report.reason, sizeof(report.reason), "%s (key %s)",
				 key ? "signature does not verify" : "unknown signing key",
				 entry.key_id);
			st = FL_ERR_CORRUPT;
			goto out;
		}
		fl_merkle_frontier_append(&frontier, leaf, compare_node, &vctx);
		if (vctx.node_mismatch) {
			report.bad_seq = seq;
			snprintf(report.reason, sizeof(report.reason),
				 "stored tree node (level %u, index %" PRIu64
				 ") does not match the leaves",
				 vctx.bad_level, vctx.bad_index);
			st = FL_ERR_CORRUPT;
			goto out;
		}
		report.events_checked++;

		/* Every checkpoint at this size: root and signature. */
		while (cp_rc == MDB_SUCCESS && cp_key.mv_size == 8 &&
		       fl_get_be64(cp_key.mv_data) == seq) {
			struct fl_checkpoint cp;
			uint8_t root[FL_HASH_LEN];
			const struct log_key *ck = NULL;

			st = checkpoint_from(&cp_key, &cp_val, &cp);
			fl_merkle_frontier_root(&frontier, root);
			for (size_t k = 0; st == FL_OK && k < n_keys; k++)
				if (strcmp(keys[k].key_id, cp.key_id) == 0)
					ck = &keys[k];
			if (st != FL_OK || memcmp(root, cp.root_hash, FL_HASH_LEN) != 0 || !ck ||
			    !fl_checkpoint_verify(log->prefix, &cp, ck->pub)) {
				report.bad_checkpoint = seq;
				snprintf(report.reason, sizeof(report.reason),
					 "checkpoint of tree size %" PRIu64 ": %s", seq,
					 st != FL_OK ? "unreadable"
					 : memcmp(root, cp.root_hash, FL_HASH_LEN) != 0
					     ? "root hash does not match the events"
					 : !ck ? "unknown signing key"
					       : "signature does not verify");
				st = FL_ERR_CORRUPT;
				goto out;
			}
			report.checkpoints_checked++;
			cp_rc = mdb_cursor_get(cp_cur, &cp_key, &cp_val, MDB_NEXT);
		}
	}
	st = FL_OK;
out:
	if (cp_cur)
		mdb_cursor_close(cp_cur);
	fl_log_reader_end(reader);
	*ret_report = report;
	return st;
}
