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

#include "fledger/util.h"

#define CHUNK 1000
#define ACK_WAIT_MS 5000
#define RETRY_MS 250
#define CURSOR_NAME "published_seq"

struct fl_publisher {
	char *url;
	struct fl_nats_tls tls;
	struct fl_log *log;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	int64_t drain_deadline_us; /* monotonic; 0 while running */
	_Atomic uint64_t published;
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

static natsStatus ensure_stream(struct fl_publisher *pub)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, pub->js, FL_STREAM_NAME, NULL, &jerr);
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return NATS_OK;
	}
	if (s != NATS_NOT_FOUND)
		return s;
	jsStreamConfig cfg;
	const char *subjects[] = {FL_SUBJECT_PREFIX ">"};
	jsStreamConfig_Init(&cfg);
	cfg.Name = FL_STREAM_NAME;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	s = js_AddStream(&si, pub->js, &cfg, NULL, &jerr);
	if (s == NATS_OK)
		jsStreamInfo_Destroy(si);
	return s;
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
	natsStatus s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, pub->url);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, RETRY_MS);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, on_reconnected, pub);
	if (s == NATS_OK)
		s = fl_nats_tls_apply(opts, &pub->tls, pub->url);
	if (s == NATS_OK)
		s = natsConnection_Connect(&pub->nc, opts);
	natsOptions_Destroy(opts);
	if (s != NATS_OK)
		return s;
	jsOptions_Init(&jo);
	jo.PublishAsync.ErrHandler = on_ack_error;
	jo.PublishAsync.ErrHandlerClosure = pub;
	jo.PublishAsync.MaxPending = 2 * CHUNK;
	s = natsConnection_JetStream(&pub->js, pub->nc, &jo);
	if (s == NATS_OK)
		s = ensure_stream(pub);
	if (s != NATS_OK) {
		disconnect(pub);
		return s;
	}
	atomic_store(&pub->need_stream, false);
	atomic_store(&pub->connected, true);
	return NATS_OK;
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
			s = js_PublishMsgAsync(pub->js, &msg, NULL);
		natsMsg_Destroy(msg); /* NULL when the library took it */
		free(line);
	}
	fl_log_reader_end(reader);
	if (s == NATS_OK) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = ACK_WAIT_MS;
		s = js_PublishAsyncComplete(pub->js, &po);
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
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&pub->lock);
	pthread_cond_timedwait(&pub->wake, &pub->lock, &ts);
	pthread_mutex_unlock(&pub->lock);
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
		if (natsConnection_Status(pub->nc) != NATS_CONN_STATUS_CONNECTED) {
			atomic_store(&pub->connected, false);
			wait_ms(pub, RETRY_MS / 5);
			continue;
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
		if (published >= size) {
			wait_ms(pub, 1000);
			continue;
		}
		uint64_t last = size - published > CHUNK ? published + CHUNK : size;
		if (publish_chunk(pub, published + 1, last) != NATS_OK) {
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
		fl_log_counter_set(pub->log, CURSOR_NAME, last);
	}
	if (pub->nc)
		disconnect(pub);
	return NULL;
}

enum fl_status fl_publisher_create(const char *url, const struct fl_nats_tls *tls,
				   struct fl_log *log, struct fl_publisher **ret_publisher)
{
	struct fl_publisher *pub;
	uint64_t published = 0;
	enum fl_status st;

	if (!url || !log || !ret_publisher)
		return FL_ERR_INVALID;
	st = fl_log_counter_get(log, CURSOR_NAME, &published);
	if (st != FL_OK)
		return st;
	pub = calloc(1, sizeof(*pub));
	if (!pub)
		return FL_ERR_NOMEM;
	pub->url = strdup(url);
	pub->log = log;
	if (tls)
		pub->tls = *tls; /* the strings are the configuration's, alive as long */
	atomic_store(&pub->published, published);
	pthread_mutex_init(&pub->lock, NULL);
	pthread_cond_init(&pub->wake, NULL);
	if (!pub->url || pthread_create(&pub->thread, NULL, run, pub) != 0) {
		pthread_cond_destroy(&pub->wake);
		pthread_mutex_destroy(&pub->lock);
		free(pub->url);
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
	pthread_cond_destroy(&pub->wake);
	pthread_mutex_destroy(&pub->lock);
	free(pub->url);
	free(pub);
}
