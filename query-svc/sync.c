/*
 * The sync thread (see sync.h). Each round of its loop:
 *
 *   1. unless the last round replicated something (under load the next
 *      events are committed by then), waits for news: a NATS message about
 *      a seq the replica lacks (then takes every message already queued), a
 *      poke, or poll_ms without either;
 *   2. takes the checkpoint that came on NATS with a commit's last line
 *      (header Fledger-Checkpoint) when it is signed by the key of the
 *      replica's latest checkpoint (the log's current key, never a retired
 *      one), or else fetches command-svc's latest, and verifies its
 *      signature with a trusted key (or, for a fetched one, notes that a
 *      key not trusted yet signed it). One from NATS that does not verify,
 *      or that command-svc's lines do not match, is dropped and the latest
 *      fetched instead: nothing from NATS halts. A poke (a read waiting for
 *      a seq the replica lacks) waits a moment for NATS when checkpoints
 *      come that way;
 *   3. replicates up to it: the lines NATS delivered are held in a window
 *      keyed by seq, missing seqs are fetched from GET /v1/log, every line's
 *      signature and every key event is checked against the trusted keys,
 *      then the checkpoint's key, and the run goes to fl_log_replicate,
 *      which accepts it only if it hashes to the checkpoint's root. A large
 *      catch-up goes in steps of about CATCHUP_EVENTS, each ending at an
 *      intermediate checkpoint (GET /v1/log/checkpoint?covering_seq=...),
 *      without waiting between;
 *   4. wakes the apply thread, which applies the newly verified events to
 *      the projection while this thread goes on with the next round.
 *
 * Trust in keys (CONTRACT §4 key trust, eventlog/trust.h): the trusted set
 * is --trust-key plus the keys pinned in <data-dir>/trusted-keys; when both
 * are empty, the key that signed the log's first line is trusted on first
 * use (its public key read from /v1/keys), pinned, and logged as a warning.
 * A key becomes trusted only through a key event that a trusted key vouches
 * for (the event's line signature, or a checkpoint covering it), and is then
 * pinned and recorded in the replica. GET /v1/keys is never a source of
 * trust: a line or checkpoint signed by a key outside the trusted set halts,
 * naming the key, whatever /v1/keys lists. Line signatures are verified one
 * by one (about 0.1 ms each, on this thread).
 *
 * Trust in data: NATS is only a transport. A line from NATS that is
 * malformed, whose leaf hash does not match its body, or that disagrees
 * with another copy of the same seq, is dropped (and acknowledged:
 * redelivering it adds nothing); the seq is then fetched from command-svc.
 * A run holding NATS lines that does not match the signed checkpoint, or
 * whose signatures fail, is retried with lines from the log only. What
 * halts is signed evidence of a problem: log lines from command-svc that do
 * not hash to its signed checkpoint or whose signature fails, a line or
 * checkpoint under a key that is not trusted, a checkpoint whose signature
 * fails, a signed checkpoint that is shorter than the replica or has
 * another root at the replica's size (a reset or forked log), or a verified
 * event the projection cannot apply. Then nothing more is replicated or
 * applied until a restart, and the reason is kept for /readyz. Unsigned
 * trouble (command-svc unreachable, 401, a 404 where a checkpoint should
 * be, /v1/keys not listing the first line's key yet) is retried every round.
 *
 * Everything below runs on the sync thread except apply_main and what it
 * calls (the apply thread), fl_sync_poke, fl_sync_status, the lifetime
 * functions and the NATS connection callback (which only sets an atomic
 * flag). The status is shared under sync->lock;
 * the sync thread is its only writer, so it reads its own fields without.
 */
#include "sync.h"

#include <inttypes.h>
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "fledger/httpc.h"
#include "fledger/slog.h"
#include "fledger/util.h"

#define PENDING_CAP 131072   /* NATS lines held ahead of the replica (a power of 2) */
#define CATCHUP_EVENTS 10000 /* events per fl_log_replicate while catching up */
#define LOG_LIMIT 10000	     /* lines per GET /v1/log (command-svc's maximum) */
#define APPLY_RUN 1000	     /* events per fl_projection_apply */
#define APPLY_RETRY_MS 500   /* after a failed apply */
#define DRAIN_MAX 4096	     /* NATS messages taken per round */
#define SLICE_MS 5	     /* NATS waits are cut in slices this long to see pokes */
#define CHECKPOINT_WAIT_MS 2 /* for a commit's last line, after its first */
#define RETRY_MS 1000	     /* NATS subscribe and key refetch retries */
#define HTTP_TIMEOUT_MS 5000
#define WARN_EVERY_US (10 * 1000000LL)
#define SIG_THREADS 8	     /* threads checking line signatures, at most */
#define SIG_PARALLEL_MIN 256 /* lines in a run before they are shared out */

/* One log line held in memory (CONTRACT §4), as eventlog/format.h reads it. */
struct line {
	struct fl_log_line parsed;
	int64_t time_us;
	bool from_nats;
};

/*
 * A GET /v1/log fetched and parsed ahead on a thread of its own while the
 * sync thread replicates the run before it (during a catch-up), so that
 * command-svc writing the next lines overlaps with checking these.
 */
struct prefetch {
	pthread_t thread;
	bool active;	       /* a thread was started and not joined yet */
	struct fl_httpc *http; /* kept across prefetches: its connection stays open */
	const char *command_url, *command_token;
	uint64_t from_seq;
	size_t limit;
	struct line **lines; /* seqs from_seq, from_seq + 1, ... */
	size_t n_lines;
};

/* Warnings that could repeat every round are logged at most every 10 s. */
enum warning {
	WARN_NATS_LINE,
	WARN_NATS_MISMATCH,
	WARN_UNKNOWN_KEY,
	WARN_LOG_ANSWER,
	WARN_LOCAL,
	WARN_SUBSCRIBE,
	N_WARNINGS,
};

static const char *const warning_msg[N_WARNINGS] = {
    [WARN_NATS_LINE] = "NATS line dropped",
    [WARN_NATS_MISMATCH] = "NATS lines contradict the signed checkpoint",
    [WARN_UNKNOWN_KEY] = "command-svc key unknown",
    [WARN_LOG_ANSWER] = "unusable answer from command-svc",
    [WARN_LOCAL] = "cannot store or apply events",
    [WARN_SUBSCRIBE] = "not consuming NATS; polling command-svc",
};

struct fl_sync {
	char *consumer, *command_url, *command_token;
	struct fl_httpc *http;		  /* the sync thread's connection to command-svc */
	const char *nats_url;		  /* NULL: no NATS; the list, for logs */
	struct fl_nats_settings nats;	  /* strings owned by the caller's configuration */
	struct fl_nats_watch *nats_watch; /* from the pool: outlives the sync */
	int64_t next_consumer_check_us;
	struct fl_log *replica;
	struct fl_projection *projection;
	int poll_ms;
	void (*on_applied)(void *ctx, uint64_t applied_seq);
	void *on_applied_ctx;
	struct fl_histogram *lag;

	pthread_t thread, apply_thread;
	bool apply_started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t apply_wake;    /* the replica grew, or stop */
	pthread_mutex_t warn_lock;    /* guards warned_us and suppressed */
	struct fl_sync_status status; /* applied_seq is read live from the projection */
	atomic_bool stop;
	atomic_bool poked;
	_Atomic uint64_t poke_seq; /* the highest seq a poke waited for */
	atomic_bool nats_reconnected;
	bool command_seen; /* command_reachable has been set once */

	/* The sync thread's own. */
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	int64_t next_connect_us, next_subscribe_us;
	struct line **pending;	/* PENDING_CAP slots, slot = seq % PENDING_CAP */
	struct fl_trust *trust; /* borrowed; this thread's after fl_sync_create */
	char *pin_path;
	size_t pinned_count; /* trusted keys the pin file holds */
	int64_t keys_fetched_us;
	uint64_t root_size; /* the replica's root at root_size, for fork checks */
	uint8_t root[FL_HASH_LEN];
	bool have_root;
	int64_t warned_us[N_WARNINGS];
	uint64_t suppressed[N_WARNINGS];
	struct fl_log_entry *apply_buf; /* APPLY_RUN entries */
	struct prefetch prefetch;
	uint64_t ahead_from; /* the next step's lines to prefetch (ahead_limit 0: none) */
	size_t ahead_limit;
	/* The newest checkpoint a NATS message carried (not verified yet). */
	struct fl_checkpoint nats_checkpoint;
	bool have_nats_checkpoint;
	int64_t nats_checkpoint_us; /* when a step last used one (monotonic) */
	bool stepped_on_nats;	    /* the last step used it instead of a fetch */
};

static bool stopping(struct fl_sync *sync)
{
	return atomic_load(&sync->stop);
}

static bool halted(struct fl_sync *sync)
{
	pthread_mutex_lock(&sync->lock);
	bool is_halted = sync->status.halted;
	pthread_mutex_unlock(&sync->lock);
	return is_halted;
}

/* Stops replicating and applying for good, and says why (once). */
__attribute__((format(printf, 2, 3))) static void halt(struct fl_sync *sync, const char *fmt, ...)
{
	char reason[sizeof(sync->status.reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&sync->lock);
	bool first = !sync->status.halted;
	if (first) {
		sync->status.halted = true;
		memcpy(sync->status.reason, reason, sizeof(reason));
	}
	pthread_mutex_unlock(&sync->lock);
	if (first)
		fl_slog(FL_SLOG_ERROR, "sync halted: nothing more is applied until a restart",
			"reason", reason, NULL);
}

/* Logs a warning of a kind that may repeat, at most once per WARN_EVERY_US. */
__attribute__((format(printf, 3, 4))) static void warn(struct fl_sync *sync, enum warning kind,
						       const char *fmt, ...)
{
	char text[400], suppressed[24];
	int64_t now = fl_time_mono_us();
	va_list ap;

	pthread_mutex_lock(&sync->warn_lock);
	if (sync->warned_us[kind] && now - sync->warned_us[kind] < WARN_EVERY_US) {
		sync->suppressed[kind]++;
		pthread_mutex_unlock(&sync->warn_lock);
		return;
	}
	snprintf(suppressed, sizeof(suppressed), "%" PRIu64, sync->suppressed[kind]);
	sync->warned_us[kind] = now;
	sync->suppressed[kind] = 0;
	pthread_mutex_unlock(&sync->warn_lock);
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fl_slog(FL_SLOG_WARN, warning_msg[kind], "detail", text, "suppressed_since_last",
		suppressed, NULL);
}

/* Records whether command-svc answered; logs the first outcome and changes. */
static void set_command_reachable(struct fl_sync *sync, bool reachable, const char *why)
{
	pthread_mutex_lock(&sync->lock);
	bool changed = sync->status.command_reachable != reachable || !sync->command_seen;
	sync->status.command_reachable = reachable;
	sync->command_seen = true;
	pthread_mutex_unlock(&sync->lock);
	if (changed && reachable)
		fl_slog(FL_SLOG_INFO, "command-svc reachable", "command_url", sync->command_url,
			NULL);
	else if (changed)
		fl_slog(FL_SLOG_WARN, "command-svc unreachable", "command_url", sync->command_url,
			"error", why, NULL);
}

/* Records whether NATS is being consumed; logs changes. */
static void set_nats_connected(struct fl_sync *sync, bool connected)
{
	pthread_mutex_lock(&sync->lock);
	bool changed = sync->status.nats_connected != connected;
	bool quiet = sync->status.halted || stopping(sync); /* let go on purpose */
	sync->status.nats_connected = connected;
	pthread_mutex_unlock(&sync->lock);
	if (changed && connected)
		fl_slog(FL_SLOG_INFO, "consuming NATS", "stream", FL_STREAM_NAME, "consumer",
			sync->consumer, "nats_url", sync->nats_url, NULL);
	else if (changed && !quiet)
		fl_slog(FL_SLOG_WARN, "NATS unavailable; polling command-svc", "nats_url",
			sync->nats_url, NULL);
}

/* ---- log lines ----------------------------------------------------------- */

static void line_free(struct line *line)
{
	if (line) {
		fl_log_line_finish(&line->parsed);
		free(line);
	}
}

/* The body's ingest_ts in µs, 0 when it has none (every kind has one). */
static int64_t ingest_time(const uint8_t *body, size_t len)
{
	static const char key[] = "\"ingest_ts\":\"";
	char text[48];
	int64_t us;
	/* The first match is the top-level member: it precedes any nested object,
	 * and a quote inside a string value is escaped. */
	const uint8_t *from = memmem(body, len, key, sizeof(key) - 1), *to;

	if (!from)
		return 0;
	from += sizeof(key) - 1;
	to = memchr(from, '"', (size_t)(body + len - from));
	if (!to || (size_t)(to - from) >= sizeof(text))
		return 0;
	memcpy(text, from, (size_t)(to - from));
	text[to - from] = '\0';
	return fl_time_parse(text, &us) == FL_OK ? us : 0;
}

/*
 * Parses one NDJSON log line (fl_log_line_parse). FL_ERR_INVALID when it is
 * not one; FL_ERR_NOMEM.
 */
static enum fl_status line_parse(const char *text, size_t len, struct line **ret_line)
{
	struct line *line = calloc(1, sizeof(*line));
	if (!line)
		return FL_ERR_NOMEM;
	enum fl_status st = fl_log_line_parse(text, len, NULL, 0, &line->parsed);
	if (st != FL_OK) {
		free(line);
		return st;
	}
	line->time_us = ingest_time(line->parsed.body, line->parsed.body_len);
	*ret_line = line;
	return FL_OK;
}

/* True when the body names the line's seq and hashes to its leaf hash. */
static bool line_consistent(const struct line *line)
{
	return fl_log_line_holds(&line->parsed, NULL, 0);
}

static bool line_same(const struct line *a, const struct line *b)
{
	const struct fl_log_line *x = &a->parsed, *y = &b->parsed;
	return x->body_len == y->body_len && memcmp(x->leaf_hash, y->leaf_hash, FL_HASH_LEN) == 0 &&
	       x->has_sig == y->has_sig && memcmp(x->sig, y->sig, FL_SIG_LEN) == 0 &&
	       strcmp(x->key_id, y->key_id) == 0 && memcmp(x->body, y->body, x->body_len) == 0;
}

/* ---- the window of lines ahead of the replica --------------------------- */

/*
 * Holds line (taking it) when its seq lies in (replica_size, replica_size +
 * PENDING_CAP]; drops it otherwise. Two different lines for one seq are both
 * dropped: the log decides.
 */
static void pending_put(struct fl_sync *sync, uint64_t replica_size, struct line *line)
{
	struct line **slot = &sync->pending[line->parsed.seq & (PENDING_CAP - 1)];

	if (line->parsed.seq <= replica_size || line->parsed.seq - replica_size > PENDING_CAP) {
		line_free(line);
		return;
	}
	if (*slot && (*slot)->parsed.seq == line->parsed.seq) {
		if (!line_same(*slot, line)) {
			warn(sync, WARN_NATS_LINE,
			     "NATS delivered two different lines for seq %" PRIu64
			     "; fetching it from command-svc",
			     line->parsed.seq);
			line_free(*slot);
			*slot = NULL;
		}
		line_free(line);
		return;
	}
	if (*slot) { /* a stale line, at or below the replica's size */
		line_free(*slot);
	}
	*slot = line;
}

static struct line *pending_take(struct fl_sync *sync, uint64_t seq)
{
	struct line **slot = &sync->pending[seq & (PENDING_CAP - 1)], *line = *slot;

	if (!line || line->parsed.seq != seq)
		return NULL;
	*slot = NULL;
	return line;
}

/*
 * Holds the checkpoint a NATS message carries in FL_CHECKPOINT_HEADER (the
 * one of its own seq, published on a commit's last event) for the next
 * step, which verifies it like a fetched one. Anything else is ignored: the
 * step then asks command-svc.
 */
static void hold_checkpoint(struct fl_sync *sync, natsMsg *msg, uint64_t seq)
{
	const char *text = NULL;
	struct fl_checkpoint cp;

	if (natsMsgHeader_Get(msg, FL_CHECKPOINT_HEADER, &text) != NATS_OK || !text ||
	    fl_checkpoint_parse(text, strlen(text), NULL, 0, &cp) != FL_OK || cp.tree_size != seq)
		return;
	if (sync->have_nats_checkpoint && sync->nats_checkpoint.tree_size >= cp.tree_size)
		return;
	sync->nats_checkpoint = cp;
	sync->have_nats_checkpoint = true;
}

/*
 * Takes one NATS message: holds its line, drops a bad one, acknowledges.
 * True when it is news: a line for a seq the replica lacks, good or bad
 * (then the log must provide it).
 */
static bool take_message(struct fl_sync *sync, natsMsg *msg)
{
	struct line *line = NULL;
	bool news = true;
	const char *id = NULL;

	/*
	 * The message id is the seq: a message for a seq already replicated
	 * (a redelivery, or the NATS copy of events filled from the log) is
	 * acknowledged without parsing it.
	 */
	if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id) {
		char *end;
		unsigned long long seq = strtoull(id, &end, 10);
		if (*end == '\0' && end != id && seq <= sync->status.replica_size) {
			natsMsg_Ack(msg, NULL);
			natsMsg_Destroy(msg);
			return false;
		}
	}
	enum fl_status st =
	    line_parse(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), &line);

	if (st == FL_OK && !line_consistent(line)) {
		warn(sync, WARN_NATS_LINE,
		     "NATS line for seq %" PRIu64 " does not hash to its leaf hash; dropped",
		     line->parsed.seq);
		news = line->parsed.seq > sync->status.replica_size;
		line_free(line);
	} else if (st == FL_OK) {
		uint64_t seq = line->parsed.seq;
		line->from_nats = true;
		news = seq > sync->status.replica_size;
		pending_put(sync, sync->status.replica_size, line);
		if (news)
			hold_checkpoint(sync, msg, seq);
	} else if (st == FL_ERR_INVALID) {
		warn(sync, WARN_NATS_LINE, "NATS message on %s is not a log line; dropped",
		     natsMsg_GetSubject(msg));
		news = false;
	}
	/* Without memory, leave it unacknowledged: JetStream redelivers it. */
	if (st != FL_ERR_NOMEM)
		natsMsg_Ack(msg, NULL);
	natsMsg_Destroy(msg);
	return news;
}

/* ---- NATS ------------------------------------------------------------------ */

static void on_nats_connected(natsConnection *nc, void *closure)
{
	struct fl_sync *sync = closure;
	(void)nc;
	atomic_store(&sync->nats_reconnected, true);
}

/* How often a live subscription's consumer is checked on the server. */
#define CONSUMER_CHECK_MS 5000

static void nats_teardown(struct fl_sync *sync)
{
	if (!sync->nc)
		return;
	/* Close first: it stops the connection's reader, so no message can be
	 * in delivery to the subscription destroyed next. Only destroying it
	 * (never unsubscribing) keeps the durable consumer on the server. */
	natsConnection_Close(sync->nc);
	natsSubscription_Destroy(sync->sub);
	jsCtx_Destroy(sync->js);
	natsConnection_Destroy(sync->nc);
	sync->sub = NULL;
	sync->js = NULL;
	sync->nc = NULL;
	set_nats_connected(sync, false);
}

static void nats_connect(struct fl_sync *sync)
{
	natsOptions *opts = NULL;
	/* Every server of the list, for this connection and its reconnects;
	 * it connects in the background when none answers yet. */
	natsStatus s = fl_nats_options_create(&sync->nats, sync->nats_watch, 250, &opts);

	if (s == NATS_OK) {
		s = natsConnection_Connect(&sync->nc, opts);
		if (s == NATS_OK)
			fl_nats_watch_connected(sync->nats_watch, sync->nc);
		if (s == NATS_NOT_YET_CONNECTED)
			s = NATS_OK;
	}
	if (s == NATS_OK)
		s = natsConnection_JetStream(&sync->js, sync->nc, NULL);
	natsOptions_Destroy(opts);
	if (s != NATS_OK) {
		warn(sync, WARN_SUBSCRIBE, "NATS connection to %s failed: %s", sync->nats_url,
		     natsStatus_GetText(s));
		nats_teardown(sync);
	}
}

static void nats_subscribe(struct fl_sync *sync)
{
	jsOptions jo;
	jsSubOptions so;
	jsErrCode jerr = 0;

	jsOptions_Init(&jo);
	jo.Wait = 2000;
	jsSubOptions_Init(&so);
	so.Stream = FL_STREAM_NAME;
	so.ManualAck = true;
	so.Config.Durable = sync->consumer;
	/* A new durable starts at the stream's end: whatever came before is in
	 * command-svc's log, which a fresh replica reads from GET /v1/log in
	 * large runs anyway (receiving the same events again through NATS
	 * cost a catch-up about a seventh of its time). An existing durable
	 * keeps its place. */
	so.Config.DeliverPolicy = js_DeliverNew;
	so.Config.AckPolicy = js_AckExplicit;
	natsStatus s = js_SubscribeSync(&sync->sub, sync->js, FL_SUBJECTS, &jo, &so, &jerr);
	if (s != NATS_OK) {
		sync->sub = NULL;
		/* The stream may not exist yet (command-svc creates it): retry. */
		warn(sync, WARN_SUBSCRIBE,
		     "cannot consume %s as %s yet (%s, JetStream error %d); polling command-svc",
		     FL_STREAM_NAME, sync->consumer, natsStatus_GetText(s), (int)jerr);
		return;
	}
	atomic_store(&sync->nats_reconnected, false);
	sync->warned_us[WARN_SUBSCRIBE] = 0;
}

/* Connects and subscribes as needed; checks the consumer after a reconnect. */
static void nats_maintain(struct fl_sync *sync)
{
	int64_t now = fl_time_mono_us();

	if (!sync->nats_url)
		return;
	if (!sync->nc && now >= sync->next_connect_us) {
		sync->next_connect_us = now + RETRY_MS * 1000LL;
		nats_connect(sync);
	}
	if (!sync->nc)
		return;
	natsConnStatus status = natsConnection_Status(sync->nc);
	if (status == NATS_CONN_STATUS_CLOSED) {
		/* The library gave this connection up (a server refused the
		 * credentials twice in a row): make a new one, which reads the
		 * credential files again; meanwhile the log is polled. */
		nats_teardown(sync);
		return;
	}
	bool connected = status == NATS_CONN_STATUS_CONNECTED;
	bool reconnected = atomic_exchange(&sync->nats_reconnected, false);
	if (connected && sync->sub && (reconnected || now >= sync->next_consumer_check_us)) {
		/* Is the consumer still delivering? A server that came back without
		 * its state has lost the durable consumer, and a consumer whose
		 * server died answers nothing: either way the subscription would
		 * wait for nothing while we reported consuming. */
		jsConsumerInfo *ci = NULL;
		jsErrCode jerr = 0;
		jsOptions jo;
		jsOptions_Init(&jo);
		jo.Wait = 2000;
		sync->next_consumer_check_us = now + CONSUMER_CHECK_MS * 1000LL;
		natsStatus s = natsSubscription_GetConsumerInfo(&ci, sync->sub, &jo, &jerr);
		jsConsumerInfo_Destroy(ci);
		if (s != NATS_OK) {
			fl_slog(FL_SLOG_WARN,
				s == NATS_NOT_FOUND
				    ? "the NATS consumer is gone; subscribing again"
				    : "the NATS consumer does not answer; subscribing again",
				"consumer", sync->consumer, "error", natsStatus_GetText(s), NULL);
			nats_teardown(sync);
			sync->next_connect_us = 0;
			return;
		}
	}
	if (connected && !sync->sub && now >= sync->next_subscribe_us) {
		sync->next_subscribe_us = now + RETRY_MS * 1000LL;
		nats_subscribe(sync);
	}
	set_nats_connected(sync, connected && sync->sub);
}

/* Takes the messages already queued, without waiting. True if any was news. */
static bool nats_drain(struct fl_sync *sync)
{
	natsMsg *msg;
	bool news = false;
	for (int i = 0; sync->sub && i < DRAIN_MAX; i++) {
		if (natsSubscription_NextMsg(&msg, sync->sub, 0) != NATS_OK)
			break;
		news |= take_message(sync, msg);
	}
	return news;
}

/* Whether checkpoints came on NATS lately (a verified one in the last second). */
static bool nats_brings_checkpoints(struct fl_sync *sync)
{
	return sync->sub && sync->nats_checkpoint_us &&
	       fl_time_mono_us() - sync->nats_checkpoint_us < 1000000;
}

/*
 * News came without a checkpoint. When command-svc sends checkpoints on
 * NATS, the line that carries this commit's is a moment behind the first
 * (one message per line): wait for it a little rather than ask command-svc.
 */
static void await_checkpoint(struct fl_sync *sync)
{
	int64_t deadline_us = fl_time_mono_us() + CHECKPOINT_WAIT_MS * 1000LL;

	while (nats_brings_checkpoints(sync) && !sync->have_nats_checkpoint && !stopping(sync)) {
		int64_t left_us = deadline_us - fl_time_mono_us();
		natsMsg *msg = NULL;
		if (left_us <= 0 ||
		    natsSubscription_NextMsg(&msg, sync->sub, left_us / 1000 + 1) != NATS_OK)
			return;
		take_message(sync, msg);
		nats_drain(sync);
	}
}

/*
 * Waits up to poll_ms for news from NATS (then takes all queued messages), a
 * poke or the stop. Messages about seqs the replica already holds (NATS
 * catching up with what the log gave) are acknowledged and waited past.
 * Without a subscription, sleeps on the condition instead.
 */
static void wait_for_news(struct fl_sync *sync)
{
	int64_t deadline_us = fl_time_mono_us() + (int64_t)sync->poll_ms * 1000;

	for (;;) {
		/* A poke (a read waiting for a seq the replica lacks) asks
		 * command-svc at once, unless NATS brings checkpoints: then it
		 * waits a moment for them. Pokes are taken here only, so none is
		 * lost; one for a seq replicated meanwhile is done with. */
		if (atomic_exchange(&sync->poked, false) &&
		    atomic_load(&sync->poke_seq) > sync->status.replica_size) {
			if (!nats_brings_checkpoints(sync))
				return;
			int64_t soon = fl_time_mono_us() + CHECKPOINT_WAIT_MS * 1000LL;
			if (soon < deadline_us)
				deadline_us = soon;
		}
		int64_t left_ms = (deadline_us - fl_time_mono_us()) / 1000;
		if (stopping(sync) || left_ms <= 0)
			return;
		if (sync->sub) {
			natsMsg *msg = NULL;
			natsStatus s = natsSubscription_NextMsg(
			    &msg, sync->sub, left_ms < SLICE_MS ? left_ms : SLICE_MS);
			if (s == NATS_OK) {
				bool news = take_message(sync, msg);
				if (nats_drain(sync) || news) {
					await_checkpoint(sync);
					return;
				}
				continue;
			}
			if (s == NATS_TIMEOUT || s == NATS_SLOW_CONSUMER)
				continue;
			/* A broken subscription: start NATS over, poll meanwhile. */
			warn(sync, WARN_SUBSCRIBE, "NATS subscription failed: %s",
			     natsStatus_GetText(s));
			nats_teardown(sync);
			continue;
		}
		struct timespec until = fl_deadline_after_us((int64_t)left_ms * 1000);
		pthread_mutex_lock(&sync->lock);
		if (!stopping(sync) && !atomic_load(&sync->poked))
			pthread_cond_timedwait(&sync->wake, &sync->lock, &until);
		pthread_mutex_unlock(&sync->lock);
	}
}

/* ---- command-svc ----------------------------------------------------------- */

/*
 * GETs path from command-svc. FL_OK with a 200 body (caller frees);
 * FL_ERR_NOT_FOUND on 404; FL_ERR_DENIED on 401/403; FL_ERR_UNAVAILABLE or
 * FL_ERR_TIMEOUT when it cannot be reached or answers otherwise.
 */
static enum fl_status command_get(struct fl_sync *sync, const char *path, bool with_token,
				  char **ret_body, size_t *ret_len)
{
	unsigned status = 0;
	char *body = NULL, why[80];
	size_t len = 0;
	enum fl_status st = fl_httpc_get(sync->http, sync->command_url, path,
					 with_token ? sync->command_token : NULL, HTTP_TIMEOUT_MS,
					 &status, &body, &len);

	if (st != FL_OK) {
		set_command_reachable(sync, false, fl_status_str(st));
		return st == FL_ERR_NOMEM ? st : st == FL_ERR_TIMEOUT ? st : FL_ERR_UNAVAILABLE;
	}
	if (status == 200) {
		set_command_reachable(sync, true, NULL);
		*ret_body = body;
		*ret_len = len;
		return FL_OK;
	}
	free(body);
	snprintf(why, sizeof(why), "GET %.40s answered %u", path, status);
	set_command_reachable(sync, status == 404, why);
	return status == 404			? FL_ERR_NOT_FOUND
	       : status == 401 || status == 403 ? FL_ERR_DENIED
						: FL_ERR_UNAVAILABLE;
}

/*
 * The public key command-svc's GET /v1/keys lists under key_id (its PEM
 * must have that id). Used only to trust on first use: a key listed there
 * is not trusted for being listed. FL_ERR_NOT_FOUND when it is not listed;
 * other errors mean "not now" (at most one fetch per RETRY_MS).
 */
static enum fl_status listed_key(struct fl_sync *sync, const char *key_id,
				 uint8_t ret_pub[FL_PUBKEY_LEN])
{
	char *body;
	size_t len, i;
	json_t *root, *item;
	int64_t now = fl_time_mono_us();

	if (sync->keys_fetched_us && now - sync->keys_fetched_us < RETRY_MS * 1000LL)
		return FL_ERR_UNAVAILABLE;
	sync->keys_fetched_us = now;
	enum fl_status st = command_get(sync, "/v1/keys", false, &body, &len);
	if (st != FL_OK)
		return st;
	root = json_loadb(body, len, 0, NULL);
	free(body);
	st = FL_ERR_NOT_FOUND;
	json_array_foreach(json_object_get(root, "keys"), i, item)
	{
		const char *listed_id = json_string_value(json_object_get(item, "key_id"));
		const char *pem = json_string_value(json_object_get(item, "public_key_pem"));
		char actual_id[FL_KEY_ID_HEX_LEN];
		uint8_t pub[FL_PUBKEY_LEN];

		if (!listed_id || strcmp(listed_id, key_id) != 0 || !pem ||
		    fl_pubkey_from_pem(pem, strlen(pem), pub) != FL_OK)
			continue;
		fl_key_id_of(pub, actual_id);
		if (strcmp(actual_id, key_id) != 0) {
			warn(sync, WARN_UNKNOWN_KEY,
			     "command-svc lists key %.20s under a wrong key id", key_id);
			continue;
		}
		memcpy(ret_pub, pub, FL_PUBKEY_LEN);
		st = FL_OK;
		break;
	}
	json_decref(root);
	return st;
}

/*
 * Records the keys trusted since the last call: in the replica (whose key
 * table lists the trusted keys) and in the pin file, so that the next start
 * trusts them. A failure is retried after the next replicated run.
 */
static void pin_keys(struct fl_sync *sync, const char *how)
{
	size_t count = fl_trust_count(sync->trust);
	if (count == sync->pinned_count)
		return;
	for (size_t i = sync->pinned_count; i < count; i++) {
		const char *key_id = fl_trust_key_id(sync->trust, i);
		fl_slog(FL_SLOG_INFO, "trusting a new command-svc key", "key_id", key_id, "how",
			how, NULL);
	}
	for (size_t i = 0; i < count; i++) {
		const char *key_id = fl_trust_key_id(sync->trust, i);
		if (fl_log_replica_add_key(sync->replica, fl_trust_find(sync->trust, key_id)) !=
		    FL_OK)
			warn(sync, WARN_LOCAL, "cannot record key %s in the replica", key_id);
	}
	enum fl_status st = fl_trust_save_file(sync->trust, sync->pin_path);
	if (st != FL_OK) {
		warn(sync, WARN_LOCAL, "cannot write the pinned keys to %s: %s", sync->pin_path,
		     fl_status_str(st));
		return;
	}
	sync->pinned_count = count;
}

/*
 * Trust on first use for a log of format v2, whose first line carries no
 * signature: the key of the oldest checkpoint that covers line 1, once its
 * signature verifies under the key command-svc lists for it. FL_OK with the
 * key in ret_pub and its id in ret_key_id.
 */
static enum fl_status first_checkpoint_key(struct fl_sync *sync, uint8_t ret_pub[FL_PUBKEY_LEN],
					   char ret_key_id[FL_KEY_ID_HEX_LEN])
{
	char *body;
	size_t len;
	struct fl_checkpoint cp;
	enum fl_status st =
	    command_get(sync, "/v1/log/checkpoint?covering_seq=1", true, &body, &len);
	if (st != FL_OK)
		return st;
	bool parsed = fl_checkpoint_parse(body, len, NULL, 0, &cp) == FL_OK;
	free(body);
	if (!parsed) {
		warn(sync, WARN_LOG_ANSWER,
		     "command-svc answered GET /v1/log/checkpoint?covering_seq=1 with no "
		     "checkpoint");
		return FL_ERR_INVALID;
	}
	memcpy(ret_key_id, cp.key_id, FL_KEY_ID_HEX_LEN);
	st = listed_key(sync, cp.key_id, ret_pub);
	if (st == FL_ERR_NOT_FOUND)
		warn(sync, WARN_UNKNOWN_KEY,
		     "the first checkpoint is signed by key %s, which command-svc's /v1/keys does "
		     "not "
		     "list (yet)",
		     cp.key_id);
	if (st == FL_OK && !fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, &cp, ret_pub)) {
		warn(sync, WARN_UNKNOWN_KEY,
		     "the first checkpoint's signature does not verify under key %s", cp.key_id);
		st = FL_ERR_CORRUPT;
	}
	return st;
}

/*
 * Trust on first use, for an empty replica without trusted keys: pins the
 * key that signed the log's first line (a line of the first format), or for
 * a log of format v2 the key of the first checkpoint, which covers line 1
 * (from it, key events lead to every later key), with a warning naming it.
 * True when a key is trusted now.
 */
static bool trust_first_key(struct fl_sync *sync)
{
	char *body;
	size_t len;
	struct line *first = NULL;
	uint8_t pub[FL_PUBKEY_LEN];

	if (fl_trust_count(sync->trust) > 0)
		return true;
	enum fl_status st = command_get(sync, "/v1/log?from_seq=1&limit=1", true, &body, &len);
	if (st != FL_OK)
		return false;
	char *newline = memchr(body, '\n', len);
	if (len > 0)
		st = line_parse(body, newline ? (size_t)(newline - body) : len, &first);
	free(body);
	if (len == 0)
		return false; /* an empty log: nothing to trust yet */
	if (st != FL_OK || first->parsed.seq != 1 || !line_consistent(first)) {
		warn(sync, WARN_LOG_ANSWER,
		     "command-svc answered GET /v1/log?from_seq=1 with no first line");
		line_free(first);
		return false;
	}
	if (!first->parsed.has_sig) {
		st = first_checkpoint_key(sync, pub, first->parsed.key_id);
	} else {
		st = listed_key(sync, first->parsed.key_id, pub);
		if (st == FL_ERR_NOT_FOUND)
			warn(sync, WARN_UNKNOWN_KEY,
			     "the first line is signed by key %s, which command-svc's /v1/keys "
			     "does not list (yet)",
			     first->parsed.key_id);
	}
	if (st == FL_OK && first->parsed.has_sig && !fl_log_line_sig_verify(&first->parsed, pub)) {
		warn(sync, WARN_UNKNOWN_KEY,
		     "the first line's signature does not verify under key %s",
		     first->parsed.key_id);
		st = FL_ERR_CORRUPT;
	}
	if (st == FL_OK)
		st = fl_trust_add(sync->trust, pub);
	if (st == FL_OK)
		fl_slog(FL_SLOG_WARN,
			"no --trust-key: trusting command-svc's first key on first use; check it "
			"out of band",
			"key_id", first->parsed.key_id, "pinned_in", sync->pin_path, NULL);
	line_free(first);
	if (st != FL_OK)
		return false;
	pin_keys(sync, "trust on first use");
	return true;
}

/*
 * Fetches a checkpoint (query "" for the latest) and verifies its signature.
 * FL_OK with *ret_checkpoint verified; FL_ERR_DENIED with *ret_checkpoint
 * unverified when a key that is not trusted (yet) signed it: a key event
 * in the lines it covers may introduce the key (replicate_run decides);
 * FL_ERR_NOT_FOUND when there is none (empty log); FL_ERR_CORRUPT after
 * halting on a bad signature; other errors mean "not now".
 */
static enum fl_status fetch_checkpoint(struct fl_sync *sync, const char *query,
				       struct fl_checkpoint *ret_checkpoint)
{
	char path[96], *body;
	size_t len;
	struct fl_checkpoint cp;

	snprintf(path, sizeof(path), "/v1/log/checkpoint%s", query);
	enum fl_status st = command_get(sync, path, true, &body, &len);
	if (st != FL_OK)
		return st;
	bool parsed = fl_checkpoint_parse(body, len, NULL, 0, &cp) == FL_OK;
	free(body);
	if (!parsed) {
		warn(sync, WARN_LOG_ANSWER, "command-svc answered GET %s with no checkpoint", path);
		return FL_ERR_UNAVAILABLE;
	}
	char why[200];
	*ret_checkpoint = cp;
	st = fl_trust_checkpoint(sync->trust, &cp, why, sizeof(why));
	if (st == FL_ERR_CORRUPT) {
		halt(sync, "bad signature: %s", why);
		return FL_ERR_CORRUPT;
	}
	return st;
}

static void *prefetch_main(void *opaque)
{
	struct prefetch *pf = opaque;
	char path[96], *body = NULL;
	size_t len = 0;
	unsigned status = 0;

	snprintf(path, sizeof(path), "/v1/log?from_seq=%" PRIu64 "&limit=%zu", pf->from_seq,
		 pf->limit);
	if (fl_httpc_get(pf->http, pf->command_url, path, pf->command_token, HTTP_TIMEOUT_MS,
			 &status, &body, &len) != FL_OK ||
	    status != 200) {
		free(body);
		return NULL;
	}
	for (char *cursor = body, *end = body + len; cursor < end && pf->n_lines < pf->limit;) {
		char *newline = memchr(cursor, '\n', (size_t)(end - cursor));
		size_t line_len = (size_t)((newline ? newline : end) - cursor);
		struct line *line = NULL;
		if (line_len > 0) {
			if (line_parse(cursor, line_len, &line) != FL_OK)
				break;
			if (line->parsed.seq != pf->from_seq + pf->n_lines) {
				line_free(line);
				break;
			}
			pf->lines[pf->n_lines++] = line;
		}
		cursor = newline ? newline + 1 : end;
	}
	free(body);
	return NULL;
}

/* Drops what the prefetch holds (waiting for its thread). */
static void prefetch_discard(struct fl_sync *sync)
{
	struct prefetch *pf = &sync->prefetch;
	if (!pf->active)
		return;
	pthread_join(pf->thread, NULL);
	for (size_t i = 0; i < pf->n_lines; i++)
		line_free(pf->lines[i]);
	free(pf->lines);
	pf->lines = NULL;
	pf->n_lines = 0;
	pf->active = false;
}

/* Starts fetching limit lines from from_seq (best effort: on failure, none). */
static void prefetch_start(struct fl_sync *sync, uint64_t from_seq, size_t limit)
{
	struct prefetch *pf = &sync->prefetch;
	prefetch_discard(sync);
	pf->lines = calloc(limit, sizeof(*pf->lines));
	if (!pf->lines)
		return;
	pf->command_url = sync->command_url;
	pf->command_token = sync->command_token;
	pf->from_seq = from_seq;
	pf->limit = limit;
	pf->n_lines = 0;
	if (pthread_create(&pf->thread, NULL, prefetch_main, pf) != 0) {
		free(pf->lines);
		pf->lines = NULL;
		return;
	}
	pf->active = true;
}

/*
 * Puts the prefetched lines into the empty slots of run (seqs first_seq ..
 * first_seq + n - 1) when the prefetch began at seq first_seq + from, and
 * ends the prefetch either way. True when it placed any line.
 */
static bool prefetch_take(struct fl_sync *sync, uint64_t first_seq, size_t from, struct line **run,
			  size_t n)
{
	struct prefetch *pf = &sync->prefetch;
	if (!pf->active)
		return false;
	pthread_join(pf->thread, NULL);
	pf->active = false;
	bool placed = false;
	for (size_t i = 0; i < pf->n_lines; i++) {
		size_t at = from + i;
		if (pf->from_seq == first_seq + from && at < n && !run[at]) {
			run[at] = pf->lines[i];
			placed = true;
		} else {
			line_free(pf->lines[i]);
		}
	}
	free(pf->lines);
	pf->lines = NULL;
	pf->n_lines = 0;
	return placed;
}

/*
 * Fills the empty slots of run (seqs first_seq .. first_seq + n - 1) from
 * GET /v1/log. FL_OK when every slot is filled.
 */
static enum fl_status fill_from_log(struct fl_sync *sync, uint64_t first_seq, struct line **run,
				    size_t n)
{
	size_t from = 0;

	for (;;) {
		while (from < n && run[from])
			from++;
		if (from == n)
			return FL_OK;
		size_t to = n; /* one past the last empty slot */
		while (run[to - 1])
			to--;
		bool placed = prefetch_take(sync, first_seq, from, run, n);
		if (sync->ahead_limit) { /* this step's lines are in: fetch the next's */
			prefetch_start(sync, sync->ahead_from, sync->ahead_limit);
			sync->ahead_limit = 0;
		}
		if (placed)
			continue;
		size_t limit = to - from < LOG_LIMIT ? to - from : LOG_LIMIT;
		char path[96], *body;
		size_t len;
		snprintf(path, sizeof(path), "/v1/log?from_seq=%" PRIu64 "&limit=%zu",
			 first_seq + from, limit);
		enum fl_status st = command_get(sync, path, true, &body, &len);
		if (st != FL_OK)
			return st;
		size_t at = from, got = 0;
		for (char *cursor = body, *end = body + len; cursor < end && st == FL_OK;) {
			char *newline = memchr(cursor, '\n', (size_t)(end - cursor));
			size_t line_len = (size_t)((newline ? newline : end) - cursor);
			struct line *line = NULL;
			if (line_len > 0) {
				st = line_parse(cursor, line_len, &line);
				if (st == FL_OK &&
				    (at >= n || line->parsed.seq != first_seq + at)) {
					line_free(line);
					st = FL_ERR_INVALID;
				} else if (st == FL_OK) {
					if (run[at])
						line_free(line);
					else
						run[at] = line;
					at++;
					got++;
				}
			}
			cursor = newline ? newline + 1 : end;
		}
		free(body);
		if (st == FL_OK && got == 0)
			st = FL_ERR_INVALID;
		if (st != FL_OK) {
			if (st == FL_ERR_INVALID)
				warn(
				    sync, WARN_LOG_ANSWER,
				    "command-svc answered GET %s with lines that are not the log's "
				    "(or none)",
				    path);
			return st;
		}
	}
}

/* A slice of a run whose line signatures a thread checks (see presign_check). */
struct sig_slice {
	const struct fl_trust *trust; /* read only while the slices run */
	const struct fl_log_entry *entries;
	bool *verified;
	size_t from, to;
};

static void *sig_slice_main(void *opaque)
{
	struct sig_slice *slice = opaque;
	for (size_t i = slice->from; i < slice->to; i++) {
		const struct fl_log_entry *e = &slice->entries[i];
		const uint8_t *pub = e->sig ? fl_trust_find(slice->trust, e->key_id) : NULL;
		slice->verified[i] = pub && fl_sig_verify(pub, e->leaf_hash, FL_HASH_LEN, e->sig);
	}
	return NULL;
}

/*
 * Checks the signatures of a run's lines by keys trusted before it, on up to
 * SIG_THREADS cores (one Ed25519 verify costs about 0.1 ms: a catch-up's
 * dominant cost). verified[i] true: line i's signature holds under a trusted
 * key. A line left false is checked again, in order, by fl_trust_line, which
 * also knows the keys the run's key events introduce and names the failure.
 */
static void presign_check(const struct fl_trust *trust, const struct fl_log_entry *entries,
			  size_t n, bool *verified)
{
	struct sig_slice slices[SIG_THREADS];
	pthread_t threads[SIG_THREADS];
	bool started[SIG_THREADS] = {false};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t parts = n < SIG_PARALLEL_MIN ? 1 : cpus < 1 ? 1 : (size_t)cpus;

	if (parts > SIG_THREADS)
		parts = SIG_THREADS;
	for (size_t p = 0; p < parts; p++)
		slices[p] = (struct sig_slice){trust, entries, verified, n * p / parts,
					       n * (p + 1) / parts};
	for (size_t p = 1; p < parts; p++)
		started[p] = pthread_create(&threads[p], NULL, sig_slice_main, &slices[p]) == 0;
	sig_slice_main(&slices[0]);
	for (size_t p = 1; p < parts; p++) {
		if (started[p])
			pthread_join(threads[p], NULL);
		else
			sig_slice_main(&slices[p]);
	}
}

/*
 * Checks run, n lines ending at checkpoint, against the trusted keys (each
 * line's signature, key events, the checkpoint's key), then fl_log_replicate;
 * keys its key events introduced are trusted once it is stored.
 * FL_ERR_DENIED (a key that is not trusted) or FL_ERR_CORRUPT with the
 * reason in the report (*ret_trust_failed true when a signature or key
 * event failed, not the root); other errors from fl_log_replicate.
 */
static enum fl_status replicate_run(struct fl_sync *sync, struct line **run, size_t n,
				    const struct fl_checkpoint *checkpoint,
				    struct fl_log_verify_report *ret_report, bool *ret_trust_failed)
{
	struct fl_log_entry *entries = calloc(n ? n : 1, sizeof(*entries));
	if (!entries)
		return FL_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		fl_log_line_entry(&run[i]->parsed, &entries[i]);
		entries[i].time_us = run[i]->time_us;
	}
	bool *verified = calloc(n ? n : 1, sizeof(*verified));
	if (!verified) {
		free(entries);
		return FL_ERR_NOMEM;
	}
	presign_check(sync->trust, entries, n, verified);
	enum fl_status st = FL_OK;
	uint8_t pub[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN];
	for (size_t i = 0; st == FL_OK && i < n; i++) {
		if (verified[i] && fl_log_key_event_parse(entries[i].body, entries[i].body_len, pub,
							  previous) == FL_ERR_NOT_FOUND)
			continue; /* a signed line that is not a key event: nothing to learn */
		st = fl_trust_line(sync->trust, &entries[i], ret_report->reason,
				   sizeof(ret_report->reason), NULL);
		if (st != FL_OK)
			ret_report->bad_seq = entries[i].seq;
	}
	free(verified);
	if (st == FL_OK) {
		st = fl_trust_checkpoint(sync->trust, checkpoint, ret_report->reason,
					 sizeof(ret_report->reason));
		if (st != FL_OK)
			ret_report->bad_checkpoint = checkpoint->tree_size;
	}
	*ret_trust_failed = st != FL_OK;
	if (st == FL_OK)
		st = fl_log_replicate(sync->replica, entries, n, checkpoint, ret_report);
	if (st == FL_OK)
		st = fl_trust_promote(sync->trust, checkpoint->tree_size, NULL);
	else
		fl_trust_drop_announced(sync->trust);
	free(entries);
	if (st == FL_OK)
		pin_keys(sync, "a key event covered by a trusted signature");
	return st;
}

/*
 * Replicates seqs replica_size+1 .. checkpoint->tree_size. A checkpoint that
 * came on NATS (from_nats) is evidence of nothing: when the run does not
 * match it, even with every line from command-svc, it is dropped and the
 * next step asks command-svc, whose answer alone may halt.
 */
static enum fl_status replicate_to(struct fl_sync *sync, uint64_t replica_size,
				   const struct fl_checkpoint *checkpoint,
				   bool checkpoint_from_nats)
{
	size_t n = (size_t)(checkpoint->tree_size - replica_size);
	struct fl_log_verify_report report = {0};
	struct line **run = calloc(n, sizeof(*run));
	size_t from_nats = 0;
	bool trust_failed = false;
	enum fl_status st;

	if (!run)
		return FL_ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		run[i] = pending_take(sync, replica_size + 1 + i);
	st = fill_from_log(sync, replica_size + 1, run, n);
	if (st == FL_OK)
		st = replicate_run(sync, run, n, checkpoint, &report, &trust_failed);
	for (size_t i = 0; (st == FL_ERR_CORRUPT || st == FL_ERR_DENIED) && i < n; i++) {
		if (run[i]->from_nats) {
			line_free(run[i]);
			run[i] = NULL;
			from_nats++;
		}
	}
	if (from_nats > 0) {
		/* Lines NATS brought do not add up to the signed root: forged or
		 * damaged in transit. Take the whole run from the log instead. */
		warn(sync, WARN_NATS_MISMATCH,
		     "%zu NATS lines in seqs %" PRIu64 "..%" PRIu64
		     " do not match the signed checkpoint (%s); fetching them from command-svc",
		     from_nats, replica_size + 1, checkpoint->tree_size, report.reason);
		st = fill_from_log(sync, replica_size + 1, run, n);
		if (st == FL_OK)
			st = replicate_run(sync, run, n, checkpoint, &report, &trust_failed);
	}
	if ((st == FL_ERR_DENIED || st == FL_ERR_CORRUPT) && checkpoint_from_nats) {
		warn(sync, WARN_NATS_LINE,
		     "a checkpoint from NATS (tree size %" PRIu64
		     ") does not match command-svc's log (%s); dropped, asking command-svc",
		     checkpoint->tree_size, report.reason);
		st = FL_ERR_UNAVAILABLE;
	} else if (st == FL_ERR_DENIED) {
		halt(sync, "untrusted key: %s", report.reason);
	} else if (st == FL_ERR_CORRUPT && trust_failed) {
		halt(sync, "command-svc's log: %s", report.reason);
	} else if (st == FL_ERR_CORRUPT) {
		halt(sync,
		     "command-svc's log does not match its signed checkpoint of tree size %" PRIu64
		     " at seq %" PRIu64 ": %s",
		     checkpoint->tree_size, report.bad_seq, report.reason);
	} else if (st == FL_OK) {
		sync->root_size = checkpoint->tree_size;
		memcpy(sync->root, checkpoint->root_hash, FL_HASH_LEN);
		sync->have_root = true;
		pthread_mutex_lock(&sync->lock);
		sync->status.replica_size = checkpoint->tree_size;
		pthread_cond_signal(&sync->apply_wake);
		pthread_mutex_unlock(&sync->lock);
	} else if (st != FL_ERR_UNAVAILABLE && st != FL_ERR_TIMEOUT && st != FL_ERR_INVALID) {
		warn(sync, WARN_LOCAL, "cannot store events in the replica log: %s",
		     fl_status_str(st));
	}
	for (size_t i = 0; i < n; i++) {
		/* Keep what NATS brought for the next try; the rest is freed. */
		if (st != FL_OK && run[i] && run[i]->from_nats)
			pending_put(sync, replica_size, run[i]);
		else
			line_free(run[i]);
	}
	free(run);
	return st;
}

/*
 * The fork check: compares the replica's root at size with root. FL_OK with
 * *ret_same set, or the read error: then nobody can tell whether the log
 * forked, and the caller must not go on as if it had not.
 */
static enum fl_status replica_root_is(struct fl_sync *sync, uint64_t size,
				      const uint8_t root[FL_HASH_LEN], bool *ret_same)
{
	*ret_same = false;
	if (sync->have_root && sync->root_size == size) {
		*ret_same = memcmp(sync->root, root, FL_HASH_LEN) == 0;
		return FL_OK;
	}
	struct fl_log_reader *reader;
	enum fl_status st = fl_log_reader_begin(sync->replica, &reader);
	if (st != FL_OK)
		return st;
	st = fl_log_reader_root_equals(reader, size, root, ret_same);
	fl_log_reader_end(reader);
	if (st == FL_OK && *ret_same) {
		memcpy(sync->root, root, FL_HASH_LEN);
		sync->root_size = size;
		sync->have_root = true;
	}
	return st;
}

/*
 * The checkpoint NATS brought, when it is ahead of the replica and verifies
 * under the log's current key (below); else false, and the step asks
 * command-svc. Nothing from NATS halts: a checkpoint that does not verify
 * there (forged, retired or not yet trusted key) is dropped, and
 * command-svc's answer decides.
 */
static bool take_nats_checkpoint(struct fl_sync *sync, uint64_t size,
				 struct fl_checkpoint *ret_checkpoint)
{
	if (!sync->have_nats_checkpoint)
		return false;
	sync->have_nats_checkpoint = false;
	struct fl_checkpoint cp = sync->nats_checkpoint;
	if (cp.tree_size <= size || size == 0)
		return false;
	/*
	 * Only under the key of the replica's own latest checkpoint, the log's
	 * current key: a retired key (maybe retired for leaking) is trusted
	 * for what it signed, never for new commits that come on NATS. The
	 * commit after a rotation is fetched once, then NATS serves again.
	 */
	struct fl_log_reader *reader;
	struct fl_checkpoint last;
	bool current = false;
	if (fl_log_reader_begin(sync->replica, &reader) == FL_OK) {
		current = fl_log_reader_checkpoint(reader, size, &last) == FL_OK &&
			  strcmp(last.key_id, cp.key_id) == 0;
		fl_log_reader_end(reader);
	}
	if (!current)
		return false;
	char why[200];
	if (fl_trust_checkpoint(sync->trust, &cp, why, sizeof(why)) != FL_OK) {
		warn(sync, WARN_NATS_LINE,
		     "a checkpoint from NATS (tree size %" PRIu64
		     ") does not verify (%s); asking command-svc",
		     cp.tree_size, why);
		return false;
	}
	sync->nats_checkpoint_us = fl_time_mono_us();
	*ret_checkpoint = cp;
	return true;
}

/*
 * One verification step: fetch and verify the latest checkpoint, replicate
 * towards it (at most about CATCHUP_EVENTS at once). True when events were
 * replicated.
 */
static bool sync_step(struct fl_sync *sync)
{
	struct fl_checkpoint latest, target;
	uint64_t size = sync->status.replica_size; /* written by this thread only */

	if (!trust_first_key(sync))
		return false;
	sync->stepped_on_nats = take_nats_checkpoint(sync, size, &latest);
	enum fl_status st = sync->stepped_on_nats ? FL_OK : fetch_checkpoint(sync, "", &latest);
	if (st == FL_ERR_NOT_FOUND && size > 0)
		warn(sync, WARN_LOG_ANSWER,
		     "command-svc has no checkpoint, but this replica holds %" PRIu64 " events",
		     size);
	if (st != FL_OK && st != FL_ERR_DENIED)
		return false;
	pthread_mutex_lock(&sync->lock);
	sync->status.checkpoint_size = latest.tree_size;
	pthread_mutex_unlock(&sync->lock);
	if (st == FL_ERR_DENIED && latest.tree_size <= size) {
		/* No line left that could introduce the key. */
		halt(sync,
		     "untrusted key: command-svc's checkpoint of tree size %" PRIu64
		     " is signed by key %s, which is not trusted",
		     latest.tree_size, latest.key_id);
		return false;
	}
	if (latest.tree_size < size) {
		halt(sync,
		     "command-svc's signed log has %" PRIu64 " events, fewer than the %" PRIu64
		     " this replica verified: it was reset or forked",
		     latest.tree_size, size);
		return false;
	}
	if (latest.tree_size == size) {
		bool same = true;
		enum fl_status rst =
		    size > 0 ? replica_root_is(sync, size, latest.root_hash, &same) : FL_OK;
		if (rst != FL_OK) {
			/* Cannot tell whether the log forked: say so, retry next round. */
			warn(sync, WARN_LOCAL,
			     "cannot read this replica's root at tree size %" PRIu64
			     " to compare it with command-svc's signed root: %s",
			     size, fl_status_str(rst));
		} else if (!same) {
			halt(sync,
			     "command-svc's signed root at tree size %" PRIu64
			     " differs from this replica's: the log forked",
			     size);
		}
		return false;
	}
	target = latest;
	if (st == FL_ERR_DENIED) {
		/* The latest checkpoint's key is not trusted (yet): go one commit
		 * at a time. The checkpoint of a key event's commit is signed by
		 * the key it replaces, and once it holds, the new key is trusted;
		 * a checkpoint of a key nothing introduced stops replication. */
		char query[64];
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, size + 1);
		st = fetch_checkpoint(sync, query, &target);
		if (st != FL_OK && st != FL_ERR_DENIED)
			return false;
		if (target.tree_size <= size || target.tree_size > latest.tree_size)
			target = latest;
	} else if (latest.tree_size - size > CATCHUP_EVENTS) {
		char query[64];
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, size + CATCHUP_EVENTS);
		st = fetch_checkpoint(sync, query, &target);
		if (st != FL_OK && st != FL_ERR_DENIED)
			return false;
		if (target.tree_size <= size || target.tree_size > latest.tree_size)
			target = latest; /* an odd answer: take the whole way at once */
	}
	/* Still behind after this step: fetch the next step's lines while this
	 * one is checked and stored (started once this step's lines are in). */
	sync->ahead_limit = 0;
	if (latest.tree_size > target.tree_size) {
		uint64_t ahead = latest.tree_size - target.tree_size;
		sync->ahead_from = target.tree_size + 1;
		sync->ahead_limit = ahead < LOG_LIMIT ? (size_t)ahead : LOG_LIMIT;
	}
	if (replicate_to(sync, size, &target, sync->stepped_on_nats) != FL_OK)
		return false;
	return true;
}

/* ---- applying -------------------------------------------------------------- */

/* Applies the verified events the projection lacks, in runs of APPLY_RUN. */
static uint64_t verified_size(struct fl_sync *sync)
{
	pthread_mutex_lock(&sync->lock);
	uint64_t size = sync->status.replica_size;
	pthread_mutex_unlock(&sync->lock);
	return size;
}

/*
 * Applies the verified events the projection lacks, in runs of APPLY_RUN.
 * False when it stopped on an error before reaching the replica's size.
 */
static bool apply_replica(struct fl_sync *sync)
{
	for (;;) {
		uint64_t applied = fl_projection_applied_seq(sync->projection);
		uint64_t size = verified_size(sync), last;
		struct fl_log_reader *reader;
		size_t n = 0;

		if (applied >= size || stopping(sync) || halted(sync))
			return true;
		last = size - applied > APPLY_RUN ? applied + APPLY_RUN : size;
		enum fl_status st = fl_log_reader_begin(sync->replica, &reader);
		if (st == FL_OK) {
			/* The entries point into the reader's snapshot: apply, then end it. */
			for (uint64_t seq = applied + 1; st == FL_OK && seq <= last; seq++)
				st = fl_log_reader_get(reader, seq, &sync->apply_buf[n++]);
			if (st == FL_OK)
				st = fl_projection_apply(sync->projection, sync->apply_buf, n);
			int64_t now = fl_time_now_us();
			for (size_t i = 0; st == FL_OK && i < n; i++)
				if (sync->apply_buf[i].time_us > 0)
					fl_histogram_observe(
					    sync->lag,
					    (double)(now - sync->apply_buf[i].time_us) / 1e6);
			fl_log_reader_end(reader);
		}
		if (st == FL_ERR_CORRUPT) {
			halt(sync,
			     "the projection cannot apply a verified event in seqs %" PRIu64
			     "..%" PRIu64,
			     applied + 1, last);
			return false;
		}
		if (st != FL_OK) {
			warn(sync, WARN_LOCAL, "cannot apply seqs %" PRIu64 "..%" PRIu64 ": %s",
			     applied + 1, last, fl_status_str(st));
			return false;
		}
		if (sync->on_applied)
			sync->on_applied(sync->on_applied_ctx, last);
	}
}

/*
 * The apply thread: applies what the sync thread verified, so that fetching
 * and checking the next events overlaps with writing the read models of
 * the last ones. After a failed run it retries every APPLY_RETRY_MS.
 */
static void *apply_main(void *opaque)
{
	struct fl_sync *sync = opaque;

	pthread_mutex_lock(&sync->lock);
	while (!stopping(sync)) {
		if (sync->status.halted ||
		    fl_projection_applied_seq(sync->projection) >= sync->status.replica_size) {
			pthread_cond_wait(&sync->apply_wake, &sync->lock);
			continue;
		}
		pthread_mutex_unlock(&sync->lock);
		bool done = apply_replica(sync);
		pthread_mutex_lock(&sync->lock);
		if (!done && !stopping(sync)) {
			struct timespec until = fl_deadline_after_us(APPLY_RETRY_MS * 1000LL);
			pthread_cond_timedwait(&sync->apply_wake, &sync->lock, &until);
		}
	}
	pthread_mutex_unlock(&sync->lock);
	return NULL;
}

/* ---- the thread -------------------------------------------------------------- */

static void *run(void *opaque)
{
	struct fl_sync *sync = opaque;

	while (!stopping(sync)) {
		bool progressed = !halted(sync) && sync_step(sync);
		if (halted(sync)) {
			nats_teardown(sync); /* the durable keeps our place */
			pthread_mutex_lock(&sync->lock);
			while (!stopping(sync))
				pthread_cond_wait(&sync->wake, &sync->lock);
			pthread_mutex_unlock(&sync->lock);
			break;
		}
		if (!progressed)
			prefetch_discard(sync);
		nats_maintain(sync);
		/* After progress, go again at once: under load the next events
		 * are committed by now, and the checkpoint may show them sooner
		 * than NATS does (command-svc publishes after its commit, in
		 * chunks). A step on a checkpoint from NATS goes again at once
		 * only when NATS brought the next one: its commits come with
		 * their checkpoints. Otherwise wait for news. */
		if (progressed)
			nats_drain(sync);
		if (!progressed || (sync->stepped_on_nats && !sync->have_nats_checkpoint))
			wait_for_news(sync);
	}
	prefetch_discard(sync);
	nats_teardown(sync);
	return NULL;
}

static bool consumer_name_ok(const char *name)
{
	if (!name || !name[0] || strlen(name) > 200)
		return false;
	for (const char *p = name; *p; p++)
		if (*p <= ' ' || *p == '.' || *p == '*' || *p == '>' || *p == '/' || *p == '\\' ||
		    *p == 0x7f)
			return false;
	return true;
}

/*
 * Trust on first use for a replica that already holds events but has no
 * trusted keys: trusts the key of its first line, and every key a key
 * event it holds introduces with that event's line signed by a trusted key
 * (the replica's lines were checked against signed checkpoints when they
 * came). Logs a warning naming the first key.
 */
static enum fl_status trust_replica_keys(struct fl_sync *sync, struct fl_log_reader *reader)
{
	struct fl_log_entry entry;
	uint8_t pub[FL_PUBKEY_LEN];
	char why[200];
	struct fl_checkpoint first_cp;
	enum fl_status st = fl_log_reader_get(reader, 1, &entry);
	if (st == FL_OK && !entry.sig) {
		/* Format v2: the key of the first checkpoint, which covers line 1. */
		st = fl_log_reader_checkpoint_covering(reader, 1, &first_cp);
		if (st == FL_OK)
			memcpy(entry.key_id, first_cp.key_id, sizeof(entry.key_id));
	}
	if (st == FL_OK)
		st = fl_log_reader_key(reader, entry.key_id, pub);
	if (st == FL_OK)
		st = fl_trust_add(sync->trust, pub);
	if (st != FL_OK)
		return st;
	fl_slog(FL_SLOG_WARN,
		"no --trust-key: trusting the first key of the replica on first use; check it "
		"out of band",
		"key_id", entry.key_id, "pinned_in", sync->pin_path, NULL);
	for (uint64_t seq = 1; seq <= sync->status.replica_size; seq++) {
		st = fl_log_reader_get(reader, seq, &entry);
		if (st != FL_OK)
			return st;
		if (fl_log_key_event_parse(entry.body, entry.body_len, pub, why) ==
		    FL_ERR_NOT_FOUND)
			continue;
		st = fl_trust_line(sync->trust, &entry, why, sizeof(why), NULL);
		if (st != FL_OK) {
			/* Not trusted: the next checkpoint from command-svc will say so. */
			fl_slog(FL_SLOG_WARN,
				"a key event of the replica introduces no trusted key", "detail",
				why, NULL);
			break;
		}
	}
	return fl_trust_promote(sync->trust, sync->status.replica_size, NULL);
}

enum fl_status fl_sync_create(const struct fl_sync_config *config, struct fl_sync **ret_sync)
{
	struct fl_sync *sync;
	struct fl_log_reader *reader;
	enum fl_status st;

	if (!config || !ret_sync || !config->replica || !config->projection ||
	    !config->command_url || !config->trust || !config->trust_pin_path ||
	    (strncmp(config->command_url, "http://", 7) != 0 &&
	     strncmp(config->command_url, "https://", 8) != 0) ||
	    (config->nats.urls && config->nats.urls[0] && !consumer_name_ok(config->consumer)))
		return FL_ERR_INVALID;
	sync = calloc(1, sizeof(*sync));
	if (!sync)
		return FL_ERR_NOMEM;
	sync->replica = config->replica;
	sync->projection = config->projection;
	sync->poll_ms = config->poll_ms > 0 ? config->poll_ms : 1000;
	sync->on_applied = config->on_applied;
	sync->on_applied_ctx = config->on_applied_ctx;
	sync->lag = config->lag;
	sync->trust = config->trust;
	sync->pin_path = config->trust_pin_path ? strdup(config->trust_pin_path) : NULL;
	sync->nats = config->nats;
	sync->nats_url = config->nats.urls && config->nats.urls[0] ? config->nats.urls : NULL;
	sync->nats_watch = fl_nats_watch_get("consumer", on_nats_connected, sync);
	sync->consumer = config->consumer ? strdup(config->consumer) : NULL;
	sync->command_url = strdup(config->command_url);
	sync->command_token = config->command_token ? strdup(config->command_token) : NULL;
	sync->pending = calloc(PENDING_CAP, sizeof(*sync->pending));
	sync->apply_buf = calloc(APPLY_RUN, sizeof(*sync->apply_buf));
	st = fl_httpc_create(&config->command_http, NULL, 0, &sync->http);
	if (st == FL_OK)
		st = fl_httpc_create(&config->command_http, NULL, 0, &sync->prefetch.http);
	pthread_mutex_init(&sync->lock, NULL);
	pthread_mutex_init(&sync->warn_lock, NULL);
	fl_cond_init_monotonic(&sync->wake);
	fl_cond_init_monotonic(&sync->apply_wake);
	if (st != FL_OK)
		goto fail;
	if (!sync->nats_watch || (config->consumer && !sync->consumer) || !sync->pin_path ||
	    !sync->command_url || (config->command_token && !sync->command_token) ||
	    !sync->pending || !sync->apply_buf) {
		st = FL_ERR_NOMEM;
		goto fail;
	}
	/* The replica's verified size; without trusted keys, a replica that
	 * holds events (kept from before keys were pinned) pins its own. */
	st = fl_log_reader_begin(sync->replica, &reader);
	if (st != FL_OK)
		goto fail;
	sync->status.replica_size = fl_log_reader_size(reader);
	sync->pinned_count = fl_trust_count(sync->trust);
	if (sync->pinned_count == 0 && sync->status.replica_size > 0)
		st = trust_replica_keys(sync, reader);
	fl_log_reader_end(reader);
	if (st != FL_OK)
		goto fail;
	pin_keys(sync, "trust on first use (the replica's first key and its key events)");
	if (pthread_create(&sync->apply_thread, NULL, apply_main, sync) != 0) {
		st = FL_ERR_NOMEM;
		goto fail;
	}
	sync->apply_started = true;
	if (pthread_create(&sync->thread, NULL, run, sync) != 0) {
		st = FL_ERR_NOMEM;
		goto fail;
	}
	*ret_sync = sync;
	return FL_OK;

fail:
	if (sync->apply_started) {
		pthread_mutex_lock(&sync->lock);
		atomic_store(&sync->stop, true);
		pthread_cond_signal(&sync->apply_wake);
		pthread_mutex_unlock(&sync->lock);
		pthread_join(sync->apply_thread, NULL);
	}
	fl_nats_watch_retire(sync->nats_watch);
	pthread_cond_destroy(&sync->wake);
	pthread_cond_destroy(&sync->apply_wake);
	pthread_mutex_destroy(&sync->warn_lock);
	pthread_mutex_destroy(&sync->lock);
	fl_httpc_destroy(sync->prefetch.http);
	fl_httpc_destroy(sync->http);
	free(sync->apply_buf);
	free(sync->pending);
	free(sync->pin_path);
	free(sync->command_token);
	free(sync->command_url);
	free(sync->consumer);
	free(sync);
	return st;
}

void fl_sync_poke(struct fl_sync *sync, uint64_t seq)
{
	if (!sync)
		return;
	uint64_t wanted = atomic_load(&sync->poke_seq);
	while (wanted < seq && !atomic_compare_exchange_weak(&sync->poke_seq, &wanted, seq))
		;
	atomic_store(&sync->poked, true);
	pthread_mutex_lock(&sync->lock);
	pthread_cond_signal(&sync->wake);
	pthread_mutex_unlock(&sync->lock);
}

void fl_sync_status(struct fl_sync *sync, struct fl_sync_status *ret_status)
{
	pthread_mutex_lock(&sync->lock);
	*ret_status = sync->status;
	pthread_mutex_unlock(&sync->lock);
	ret_status->applied_seq = fl_projection_applied_seq(sync->projection);
}

void fl_sync_destroy(struct fl_sync *sync)
{
	if (!sync)
		return;
	pthread_mutex_lock(&sync->lock);
	atomic_store(&sync->stop, true);
	pthread_cond_signal(&sync->wake);
	pthread_cond_signal(&sync->apply_wake);
	pthread_mutex_unlock(&sync->lock);
	pthread_join(sync->thread, NULL);
	pthread_join(sync->apply_thread, NULL);
	fl_nats_watch_retire(sync->nats_watch);
	for (size_t i = 0; i < PENDING_CAP; i++)
		line_free(sync->pending[i]);
	pthread_cond_destroy(&sync->wake);
	pthread_cond_destroy(&sync->apply_wake);
	pthread_mutex_destroy(&sync->warn_lock);
	pthread_mutex_destroy(&sync->lock);
	fl_httpc_destroy(sync->prefetch.http);
	fl_httpc_destroy(sync->http);
	free(sync->apply_buf);
	free(sync->pending);
	free(sync->pin_path);
	free(sync->command_token);
	free(sync->command_url);
	free(sync->consumer);
	free(sync);
}
