/*
 * The data file grown ahead of LMDB, in zero-filled, synced steps (see
 * filegrow.h for why, and for why it never writes bytes LMDB wrote).
 */
#include "eventlog/filegrow.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEP (256u << 10)	  /* one zero-filled write, then a sync */
#define MIN_MARGIN (256u << 10)	  /* margin past the last page in use ... */
#define MAX_MARGIN (4u << 20)	  /* ... a quarter of it, within these */
#define SMALL_COMMIT (256u << 10) /* commits that grow the file more pay for it */

struct fl_filegrow {
	int fd;
	pthread_t thread;
	/* Held across a commit, and across one zero-filled write. */
	pthread_mutex_t write_lock;
	/* The request, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake, idle;
	uint64_t target; /* grow the file to this size */
	uint64_t known_size;
	uint64_t last_used; /* under write_lock */
	bool busy, failed, stop;
	char *zeros;
};

/*
 * Writes one step of zeros at the file's current end, below target. Returns
 * the new size, or 0 when nothing could be written.
 */
static uint64_t write_step(struct fl_filegrow *grow, uint64_t target)
{
	uint64_t size = 0;
	struct stat st;

	pthread_mutex_lock(&grow->write_lock);
	if (fstat(grow->fd, &st) == 0 && (uint64_t)st.st_size < target) {
		uint64_t n = target - (uint64_t)st.st_size;
		if (n > STEP)
			n = STEP;
		ssize_t wrote = pwrite(grow->fd, grow->zeros, n, st.st_size);
		if (wrote > 0)
			size = (uint64_t)st.st_size + (uint64_t)wrote;
	} else if (fstat(grow->fd, &st) == 0) {
		size = (uint64_t)st.st_size; /* LMDB got there first */
	}
	pthread_mutex_unlock(&grow->write_lock);
	return size;
}

static void *run(void *opaque)
{
	struct fl_filegrow *grow = opaque;

	pthread_mutex_lock(&grow->lock);
	for (;;) {
		while (!grow->stop && (grow->failed || grow->known_size >= grow->target)) {
			grow->busy = false;
			pthread_cond_broadcast(&grow->idle);
			pthread_cond_wait(&grow->wake, &grow->lock);
		}
		if (grow->stop)
			break;
		grow->busy = true;
		uint64_t target = grow->target;
		pthread_mutex_unlock(&grow->lock);

		uint64_t size = write_step(grow, target);
		/* Synced now, so that a commit's fdatasync finds no zeros to flush. */
		bool ok = size > 0 && fdatasync(grow->fd) == 0;

		pthread_mutex_lock(&grow->lock);
		if (ok)
			grow->known_size = size;
		else
			grow->failed = true; /* disk full, a size limit: LMDB will say */
	}
	grow->busy = false;
	pthread_cond_broadcast(&grow->idle);
	pthread_mutex_unlock(&grow->lock);
	return NULL;
}

/* Frees grow, whose thread is not running. */
static void destroy(struct fl_filegrow *grow)
{
	pthread_cond_destroy(&grow->idle);
	pthread_cond_destroy(&grow->wake);
	pthread_mutex_destroy(&grow->lock);
	pthread_mutex_destroy(&grow->write_lock);
	free(grow->zeros);
	free(grow);
}

enum fl_status fl_filegrow_start(int fd, struct fl_filegrow **ret_grow)
{
	struct fl_filegrow *grow = calloc(1, sizeof(*grow));
	struct stat st;

	if (!grow)
		return FL_ERR_NOMEM;
	grow->zeros = calloc(1, STEP);
	if (!grow->zeros || fstat(fd, &st) != 0) {
		enum fl_status st_err = grow->zeros ? FL_ERR_IO : FL_ERR_NOMEM;
		free(grow->zeros);
		free(grow);
		return st_err;
	}
	grow->fd = fd;
	grow->known_size = grow->target = (uint64_t)st.st_size;
	pthread_mutex_init(&grow->write_lock, NULL);
	pthread_mutex_init(&grow->lock, NULL);
	pthread_cond_init(&grow->wake, NULL);
	pthread_cond_init(&grow->idle, NULL);
	if (pthread_create(&grow->thread, NULL, run, grow) != 0) {
		destroy(grow);
		return FL_ERR_NOMEM;
	}
	*ret_grow = grow;
	return FL_OK;
}

void fl_filegrow_stop(struct fl_filegrow *grow)
{
	if (!grow)
		return;
	pthread_mutex_lock(&grow->lock);
	grow->stop = true;
	pthread_cond_signal(&grow->wake);
	pthread_mutex_unlock(&grow->lock);
	pthread_join(grow->thread, NULL);
	destroy(grow);
}

void fl_filegrow_commit_begin(struct fl_filegrow *grow)
{
	if (grow)
		pthread_mutex_lock(&grow->write_lock);
}

void fl_filegrow_commit_end(struct fl_filegrow *grow, uint64_t used_bytes, uint64_t limit_bytes)
{
	if (!grow)
		return;
	/* A large commit (a catch-up, a bulk write) pays its own allocation
	 * once for many pages; zeros written ahead of it would only double
	 * its writes. The margin is for runs of small commits. */
	bool small = used_bytes < grow->last_used + SMALL_COMMIT;
	if (used_bytes > grow->last_used)
		grow->last_used = used_bytes;
	pthread_mutex_unlock(&grow->write_lock);
	if (!small)
		return;

	uint64_t margin = used_bytes / 4;
	if (margin < MIN_MARGIN)
		margin = MIN_MARGIN;
	if (margin > MAX_MARGIN)
		margin = MAX_MARGIN;
	uint64_t want = used_bytes + margin;
	if (want > limit_bytes)
		want = limit_bytes;
	pthread_mutex_lock(&grow->lock);
	/* LMDB wrote past where a zero-filled write failed: there is room again. */
	if (grow->failed && used_bytes > grow->known_size)
		grow->failed = false;
	/* Asked again only once half the margin is used up. */
	if (want > grow->target && grow->known_size < used_bytes + margin / 2) {
		grow->target = want;
		pthread_cond_signal(&grow->wake);
	}
	pthread_mutex_unlock(&grow->lock);
}

void fl_filegrow_wait_idle(struct fl_filegrow *grow)
{
	if (!grow)
		return;
	pthread_mutex_lock(&grow->lock);
	while (grow->busy || (!grow->failed && !grow->stop && grow->known_size < grow->target))
		pthread_cond_wait(&grow->idle, &grow->lock);
	pthread_mutex_unlock(&grow->lock);
}
