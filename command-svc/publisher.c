/*
 * The NATS outbox (see publisher.h). One thread: connect, make sure the
 * stream exists, then publish chunks of up to CHUNK events asynchronously and
 * wait for all their acknowledgements before moving the durable cursor.
 */
#include "publisher.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fledger/slog.h"
#include "fledger/util.h"

#define CHUNK 1000
#define ACK_WAIT_MS 3000 /* then resend: a stream leader may have changed */
#define FLUSH_WAIT_MS 100
#define JS_API_WAIT_MS 2000
#define RETRY_MS 250
#define CURSOR_NAME "published_seq"
#define CURSOR_EVERY_MS 1000 /* the cursor is stored at most this often */

struct fl_publisher {
	struct fl_publisher_config config;
	struct fl_nats_watch *watch; /* from the pool: outlives the publisher */
	struct fl_log *log;
	int64_t stream_max_age_us; /* what the stream was last set up with */
	bool stream_checked;	   /* its settings were compared once (warn once) */
	int64_t next_views_check_us;
	int64_t last_warn_us;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	int64_t drain_deadline_us; /* monotonic; 0 while running */
	_Atomic uint64_t published;
	uint64_t stored; /* the cursor in the log; behind published after a failed store */
	int64_t cursor_due_us;
	bool cursor_failed;
	_Atomic bool connected;
	_Atomic bool ack_failed;
	_Atomic bool need_stream;

	natsConnection *nc;
	jsCtx *js;
};

bool fl_publisher_subject(const uint8_t *body, size_t len, char *ret_subject, size_t cap)
{
	static const char kind_key[] = "\"kind\":\"key\"";
	static const char view_key[] = "\"view\":\"";
	size_t scan = len < 256 ? len : 256;
	const uint8_t *p;

	if (memmem(body, scan, kind_key, sizeof(kind_key) - 1)) {
		snprintf(ret_subject, cap, "%s_keys", FL_SUBJECT_PREFIX);
		return true;
	}
	p = memmem(body, scan, view_key, sizeof(view_key) - 1);
	if (!p)
		return false;
	p += sizeof(view_key) - 1;
	size_t n = 0;
	while (p + n < body + len && p[n] != '"')
		n++;
	if (n == 0 || p + n >= body + len)
		return false;
	return snprintf(ret_subject, cap, "%s%.*s", FL_SUBJECT_PREFIX, (int)n, (const char *)p) <
	       (int)cap;
}

static void on_ack_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	struct fl_publisher *pub = closure;
	(void)js;
	(void)pae;
	atomic_store(&pub->ack_failed, true);
}

/* A warning about publishing, at most every 5 s (the thread retries every
 * 250 ms while NATS is away). Only the publisher thread calls it. */
static void warn_publish(struct fl_publisher *pub, const char *msg, natsStatus s,
			 const char *detail)
{
	int64_t now = fl_time_mono_us();
	if (pub->last_warn_us && now - pub->last_warn_us < 5000000)
		return;
	pub->last_warn_us = now;
	char backlog[24];
	snprintf(backlog, sizeof(backlog), "%" PRIu64, fl_publisher_backlog(pub));
	fl_slog(FL_SLOG_WARN, msg, "component", "publisher", "error", natsStatus_GetText(s),
		"detail", detail ? detail : nats_GetLastError(NULL), "backlog", backlog, NULL);
}

/* The stream's max age: the flag, else the longest view retention, at
 * least the default retention. */
static int64_t wanted_max_age_us(struct fl_publisher *pub)
{
	struct fl_view **views = NULL;
	size_t n = 0;
	int64_t age = FL_VIEW_DEFAULT_RETENTION_US;
	if (pub->config.max_age_us > 0)
		return pub->config.max_age_us;
	if (pub->config.registry &&
	    fl_view_registry_list(pub->config.registry, &views, &n) == FL_OK) {
		for (size_t i = 0; i < n; i++) {
			int64_t r = fl_view_retention_us(views[i]);
			if (r > age)
				age = r;
		}
		fl_view_list_free(views, n);
	}
	return age;
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	struct fl_publisher *pub = closure;
	(void)nc;
	/* A restarted server may have lost the stream: check it again. */
	atomic_store(&pub->need_stream, true);
	pthread_mutex_lock(&pub->lock);
	pthread_cond_signal(&pub->wake);
	pthread_mutex_unlock(&pub->lock);
}

static void stream_config(struct fl_publisher *pub, jsStreamConfig *cfg, const char **subjects,
			  int64_t max_age_us)
{
	jsStreamConfig_Init(cfg);
	cfg->Name = FL_STREAM_NAME;
	cfg->Subjects = subjects;
	cfg->SubjectsLen = 1;
	cfg->Storage = js_FileStorage;
	cfg->Replicas = pub->config.replicas > 0 ? pub->config.replicas : 1;
	cfg->MaxAge = max_age_us * 1000; /* nanoseconds */
	cfg->Duplicates = (pub->config.duplicate_window_us > 0 ? pub->config.duplicate_window_us
							       : INT64_C(120000000)) *
			  1000;
}

static void warn_setting(const char *setting, int64_t have, int64_t want, const char *unit)
{
	char h[32], w[32];
	snprintf(h, sizeof(h), "%" PRId64 "%s", have, unit);
	snprintf(w, sizeof(w), "%" PRId64 "%s", want, unit);
	fl_slog(FL_SLOG_WARN, "the NATS stream differs from the configuration; left as it is",
		"stream", FL_STREAM_NAME, "setting", setting, "stream_value", h, "configured", w,
		NULL);
}

/*
 * Creates the stream with the configured settings, or checks an existing
 * one: a setting that differs is a warning naming it (an operator may have
 * sized the stream on purpose), except a default max age that views have
 * outgrown, which is raised.
 */
static natsStatus ensure_stream(struct fl_publisher *pub)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	jsStreamConfig cfg;
	const char *subjects[] = {FL_SUBJECTS};
	int64_t max_age_us = wanted_max_age_us(pub);
	natsStatus s = js_GetStreamInfo(&si, pub->js, FL_STREAM_NAME, NULL, &jerr);

	stream_config(pub, &cfg, subjects, max_age_us);
	if (s == NATS_NOT_FOUND) {
		s = js_AddStream(&si, pub->js, &cfg, NULL, &jerr);
		if (s == NATS_OK) {
			char replicas[24], age[24];
			snprintf(replicas, sizeof(replicas), "%" PRId64, cfg.Replicas);
			snprintf(age, sizeof(age), "%" PRId64 "s", max_age_us / 1000000);
			fl_slog(FL_SLOG_INFO, "NATS stream created", "stream", FL_STREAM_NAME,
				"replicas", replicas, "max_age", age, NULL);
			pub->stream_max_age_us = max_age_us;
			pub->stream_checked = true;
		} else {
			char code[16];
			snprintf(code, sizeof(code), "%d", (int)jerr);
			warn_publish(pub, "cannot create the NATS stream", s, code);
		}
		jsStreamInfo_Destroy(si);
		return s;
	}
	if (s != NATS_OK) {
		warn_publish(pub, "cannot look up the NATS stream", s, NULL);
		return s;
	}
	jsStreamConfig *have = si->Config;
	bool age_differs = have->MaxAge != cfg.MaxAge;
	if (have->Replicas != cfg.Replicas && !pub->stream_checked)
		warn_setting("replicas", have->Replicas, cfg.Replicas, "");
	if (have->Duplicates != cfg.Duplicates && !pub->stream_checked)
		warn_setting("duplicate_window", have->Duplicates / 1000000000,
			     cfg.Duplicates / 1000000000, "s");
	if (age_differs && pub->config.max_age_us == 0 && have->MaxAge != 0 &&
	    have->MaxAge < cfg.MaxAge) {
		/* A view with a longer retention came: keep its events as long. */
		jsStreamConfig up = *have;
		jsStreamInfo *si2 = NULL;
		up.MaxAge = cfg.MaxAge;
		s = js_UpdateStream(&si2, pub->js, &up, NULL, &jerr);
		jsStreamInfo_Destroy(si2);
		if (s == NATS_OK) {
			char age[24];
			snprintf(age, sizeof(age), "%" PRId64 "s", max_age_us / 1000000);
			fl_slog(FL_SLOG_INFO, "NATS stream max age raised to the longest retention",
				"stream", FL_STREAM_NAME, "max_age", age, NULL);
		} else {
			warn_publish(pub, "cannot raise the NATS stream's max age", s, NULL);
			s = NATS_OK; /* publishing still works */
		}
	} else if (age_differs && (!pub->stream_checked || pub->stream_max_age_us != max_age_us)) {
		warn_setting("max_age", have->MaxAge / 1000000000, cfg.MaxAge / 1000000000, "s");
	}
	pub->stream_max_age_us = max_age_us;
	pub->stream_checked = true;
	jsStreamInfo_Destroy(si);
	return NATS_OK;
}

static void disconnect(struct fl_publisher *pub)
{
	atomic_store(&pub->connected, false);
	jsCtx_Destroy(pub->js);
	pub->js = NULL;
	natsConnection_Destroy(pub->nc);
	pub->nc = NULL;
}

static natsStatus connect_nats(struct fl_publisher *pub)
{
	natsOptions *opts = NULL;
	jsOptions jo;
	/* Every server of the list, for this connection and its reconnects. */
	natsStatus s = fl_nats_options_create(&pub->config.nats, pub->watch, RETRY_MS, &opts);
	if (s == NATS_OK) {
		s = natsConnection_Connect(&pub->nc, opts);
		if (s == NATS_OK)
			fl_nats_watch_connected(pub->watch, pub->nc);
	}
	natsOptions_Destroy(opts);
	if (s == NATS_NOT_YET_CONNECTED) {
		/* The connection comes up in the background; the run loop waits
		 * for it and then sets up the stream. */
		warn_publish(pub, "no NATS server answers yet; retrying", s, pub->config.nats.urls);
		s = NATS_OK;
	} else if (s != NATS_OK) {
		warn_publish(pub, "cannot connect to NATS", s, pub->config.nats.urls);
		natsConnection_Destroy(pub->nc);
		pub->nc = NULL;
		return s;
	}
	jsOptions_Init(&jo);
	/* Short API waits: while a cluster elects a stream leader, requests
	 * go unanswered, and the next try should come soon after. */
	jo.Wait = JS_API_WAIT_MS;
	jo.PublishAsync.ErrHandler = on_ack_error;
	jo.PublishAsync.ErrHandlerClosure = pub;
	jo.PublishAsync.MaxPending = 2 * CHUNK;
	s = natsConnection_JetStream(&pub->js, pub->nc, &jo);
	if (s != NATS_OK) {
		disconnect(pub);
		return s;
	}
	atomic_store(&pub->need_stream, true);
	return NATS_OK;
}

/*
 * The last event of each commit carries the signed checkpoint of its seq
 * (the log stores one exactly there) in header FL_CHECKPOINT_HEADER, as GET
 * /v1/log/checkpoint?tree_size=<seq> answers it: consumers may verify and
 * use it instead of asking for it. One lookup per event finds the ends.
 */
static natsStatus set_checkpoint_header(struct fl_log_reader *reader, natsMsg *msg, uint64_t seq)
{
	struct fl_checkpoint cp;
	char *json = NULL;
	if (fl_log_reader_checkpoint(reader, seq, &cp) != FL_OK)
		return NATS_OK; /* not a commit's end */
	if (fl_checkpoint_json(&cp, &json) != FL_OK)
		return NATS_OK; /* consumers will ask for it */
	natsStatus s = natsMsgHeader_Set(msg, FL_CHECKPOINT_HEADER, json);
	free(json);
	return s;
}

/* Publishes seqs first..last and waits for every acknowledgement. */
static natsStatus publish_chunk(struct fl_publisher *pub, uint64_t first, uint64_t last)
{
	struct fl_log_reader *reader;
	natsStatus s = NATS_OK;

	if (fl_log_reader_begin(pub->log, &reader) != FL_OK)
		return NATS_ERR;
	atomic_store(&pub->ack_failed, false);
	for (uint64_t seq = first; seq <= last && s == NATS_OK; seq++) {
		struct fl_log_entry entry;
		char subject[128], id[24], *line = NULL;
		size_t len;
		natsMsg *msg = NULL;

		if (fl_log_reader_get(reader, seq, &entry) != FL_OK ||
		    fl_log_entry_line(&entry, &line, &len) != FL_OK) {
			s = NATS_ERR;
			break;
		}
		if (!fl_publisher_subject(entry.body, entry.body_len, subject, sizeof(subject)))
			snprintf(subject, sizeof(subject), "%s_unknown", FL_SUBJECT_PREFIX);
		snprintf(id, sizeof(id), "%" PRIu64, seq);
		s = natsMsg_Create(&msg, subject, NULL, line, (int)len);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
		if (s == NATS_OK)
			s = set_checkpoint_header(reader, msg, seq);
		if (s == NATS_OK)
			s = js_PublishMsgAsync(pub->js, &msg, NULL);
		natsMsg_Destroy(msg); /* NULL when the library took it */
		free(line);
	}
	fl_log_reader_end(reader);
	/* Out now: the library's flusher thread would first wait 1 ms for more
	 * (libnats 3.4, conn.c _flusher), and every reader of the events with it.
	 * Best effort: while the library reconnects this fails at once, and the
	 * acknowledgements below decide, as they did without it. */
	if (s == NATS_OK)
		(void)natsConnection_FlushTimeout(pub->nc, FLUSH_WAIT_MS);
	/* Wait for the acknowledgements in short steps: when the connection
	 * moved to another server meanwhile, those in flight are lost, and the
	 * chunk is resent at once rather than after the whole wait. */
	int64_t deadline_us = fl_time_mono_us() + ACK_WAIT_MS * 1000LL;
	while (s == NATS_OK) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = 100;
		s = js_PublishAsyncComplete(pub->js, &po);
		if (s != NATS_TIMEOUT)
			break;
		if (atomic_load(&pub->need_stream) || fl_time_mono_us() >= deadline_us)
			break; /* reconnected, or no answer in time */
		s = NATS_OK;
	}
	if (s == NATS_OK && atomic_load(&pub->ack_failed))
		s = NATS_ERR;
	return s;
}

static bool should_stop(struct fl_publisher *pub, uint64_t size)
{
	bool stop;
	pthread_mutex_lock(&pub->lock);
	stop = pub->stop && (atomic_load(&pub->published) >= size || pub->drain_deadline_us == 0 ||
			     fl_time_mono_us() >= pub->drain_deadline_us);
	pthread_mutex_unlock(&pub->lock);
	return stop;
}

static void wait_ms(struct fl_publisher *pub, int ms)
{
	struct timespec ts = fl_deadline_after_us((int64_t)ms * 1000);
	pthread_mutex_lock(&pub->lock);
	pthread_cond_timedwait(&pub->wake, &pub->lock, &ts);
	pthread_mutex_unlock(&pub->lock);
}

enum fl_status fl_publisher_store_cursor(uint64_t published, uint64_t *stored,
					 fl_publisher_store_fn store, void *ctx)
{
	if (published <= *stored)
		return FL_OK;
	enum fl_status st = store(ctx, published);
	if (st == FL_OK) {
		*stored = published;
		return FL_OK;
	}
	/* The cursor stays behind until a later call stores it; after a
	 * restart meanwhile the events go out again and the stream drops them
	 * by message id. */
	char seq[24];
	snprintf(seq, sizeof(seq), "%" PRIu64, published);
	fl_slog(FL_SLOG_ERROR, "cannot store the publish cursor; retrying", "component",
		"publisher", "status", fl_status_str(st), "published_seq", seq, NULL);
	return st;
}

static enum fl_status store_in_log(void *ctx, uint64_t seq)
{
	return fl_log_counter_set(ctx, CURSOR_NAME, seq);
}

/*
 * Stores the cursor when a second has passed since the last store, or when a
 * store failed, or when forced. The cursor only bounds what a restart
 * publishes again (the stream and the consumers drop repeats), so it is not
 * worth a synced commit, taken from the committer, per chunk.
 */
static enum fl_status store_cursor_due(struct fl_publisher *pub, bool force)
{
	int64_t now = fl_time_mono_us();
	if (!force && !pub->cursor_failed && now < pub->cursor_due_us)
		return FL_OK;
	enum fl_status st = fl_publisher_store_cursor(atomic_load(&pub->published), &pub->stored,
						      store_in_log, pub->log);
	pub->cursor_failed = st != FL_OK;
	pub->cursor_due_us = now + CURSOR_EVERY_MS * 1000LL;
	return st;
}

static void *run(void *opaque)
{
	struct fl_publisher *pub = opaque;

	for (;;) {
		uint64_t size = fl_log_size(pub->log);
		if (should_stop(pub, size))
			break;
		if (!pub->nc && connect_nats(pub) != NATS_OK) {
			wait_ms(pub, RETRY_MS);
			continue;
		}
		natsConnStatus cs = natsConnection_Status(pub->nc);
		if (cs == NATS_CONN_STATUS_CLOSED) {
			/* The library gave this connection up (a server refused the
			 * credentials twice in a row): make a new one, which reads
			 * the credential files again. */
			disconnect(pub);
			wait_ms(pub, RETRY_MS);
			continue;
		}
		if (cs != NATS_CONN_STATUS_CONNECTED) {
			atomic_store(&pub->connected, false);
			wait_ms(pub, RETRY_MS / 5);
			continue;
		}
		if (fl_time_mono_us() >= pub->next_views_check_us) {
			/* A view with a longer retention may have come. */
			pub->next_views_check_us = fl_time_mono_us() + 5000000;
			if (pub->config.max_age_us == 0 &&
			    wanted_max_age_us(pub) != pub->stream_max_age_us)
				atomic_store(&pub->need_stream, true);
		}
		if (atomic_load(&pub->need_stream)) {
			if (ensure_stream(pub) != NATS_OK) {
				wait_ms(pub, RETRY_MS);
				continue;
			}
			atomic_store(&pub->need_stream, false);
		}
		atomic_store(&pub->connected, true);
		uint64_t published = atomic_load(&pub->published);
		/* A cursor that could not be stored is stored before more goes out. */
		if (store_cursor_due(pub, false) != FL_OK) {
			wait_ms(pub, RETRY_MS);
			continue;
		}
		if (published >= size) {
			wait_ms(pub, 1000);
			continue;
		}
		uint64_t last = size - published > CHUNK ? published + CHUNK : size;
		natsStatus ps = publish_chunk(pub, published + 1, last);
		if (ps != NATS_OK) {
			char range[48];
			snprintf(range, sizeof(range), "seqs %" PRIu64 "-%" PRIu64, published + 1,
				 last);
			warn_publish(pub, "NATS publish or acknowledgement failed; resending", ps,
				     range);
			/*
			 * Resend the chunk on a fresh connection: acknowledgements
			 * lost across a reconnect never arrive on the old context.
			 * The stream drops repeats by message id.
			 */
			disconnect(pub);
			wait_ms(pub, RETRY_MS);
			continue;
		}
		atomic_store(&pub->published, last);
	}
	store_cursor_due(pub, true);
	if (pub->nc)
		disconnect(pub);
	return NULL;
}

enum fl_status fl_publisher_create(const struct fl_publisher_config *config,
				   struct fl_publisher **ret_publisher)
{
	struct fl_publisher *pub;
	uint64_t published = 0;
	enum fl_status st;

	if (!config || !config->nats.urls || !config->log || !ret_publisher)
		return FL_ERR_INVALID;
	st = fl_log_counter_get(config->log, CURSOR_NAME, &published);
	if (st != FL_OK)
		return st;
	pub = calloc(1, sizeof(*pub));
	if (!pub)
		return FL_ERR_NOMEM;
	pub->config = *config; /* the strings are the configuration's, alive as long */
	pub->log = config->log;
	pub->watch = fl_nats_watch_get("publisher", on_reconnected, pub);
	if (!pub->watch) {
		free(pub);
		return FL_ERR_NOMEM;
	}
	atomic_store(&pub->published, published);
	pub->stored = published;
	pthread_mutex_init(&pub->lock, NULL);
	fl_cond_init_monotonic(&pub->wake);
	if (pthread_create(&pub->thread, NULL, run, pub) != 0) {
		pthread_cond_destroy(&pub->wake);
		pthread_mutex_destroy(&pub->lock);
		free(pub);
		return FL_ERR_NOMEM;
	}
	*ret_publisher = pub;
	return FL_OK;
}

void fl_publisher_notify(struct fl_publisher *pub)
{
	pthread_mutex_lock(&pub->lock);
	pthread_cond_signal(&pub->wake);
	pthread_mutex_unlock(&pub->lock);
}

uint64_t fl_publisher_backlog(struct fl_publisher *pub)
{
	uint64_t size = fl_log_size(pub->log), published = atomic_load(&pub->published);
	return size > published ? size - published : 0;
}

bool fl_publisher_connected(struct fl_publisher *pub)
{
	return atomic_load(&pub->connected);
}

void fl_publisher_destroy(struct fl_publisher *pub, int drain_ms)
{
	if (!pub)
		return;
	pthread_mutex_lock(&pub->lock);
	pub->stop = true;
	pub->drain_deadline_us = drain_ms > 0 ? fl_time_mono_us() + (int64_t)drain_ms * 1000 : 0;
	pthread_cond_signal(&pub->wake);
	pthread_mutex_unlock(&pub->lock);
	pthread_join(pub->thread, NULL);
	fl_nats_watch_retire(pub->watch);
	pthread_cond_destroy(&pub->wake);
	pthread_mutex_destroy(&pub->lock);
	free(pub);
}
