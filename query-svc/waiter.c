/*
 * The min_seq waiter (waiter.h): a list under one lock and a thread on a
 * monotonic condition variable that wakes at the nearest deadline, at the
 * latest after a tick, or when kicked.
 */
#include "waiter.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "fledger/util.h"

struct fl_waiter {
	struct fl_waiter_ops ops;
	void *ctx;
	size_t max_waiting;
	int64_t tick_us;

	pthread_mutex_t lock; /* guards the list and the flags below */
	pthread_cond_t wake;  /* on CLOCK_MONOTONIC */
	pthread_t thread;
	bool thread_started;
	struct fl_waiter_item *waiting;
	size_t n_waiting;
	bool kicked;   /* something changed since the thread last looked */
	bool stopping; /* no new items */
	bool quit;     /* the thread exits */
};

static void counted(struct fl_waiter *w, size_t n)
{
	if (w->ops.counted)
		w->ops.counted(w->ctx, n);
}

static void *waiter_main(void *arg)
{
	struct fl_waiter *w = arg;

	pthread_mutex_lock(&w->lock);
	while (!w->quit) {
		uint64_t applied = w->ops.applied(w->ctx);
		int64_t now = fl_time_mono_us(), next = now + w->tick_us;
		struct fl_waiter_item *due = NULL, *expired = NULL, **link = &w->waiting;
		w->kicked = false;
		while (*link) {
			struct fl_waiter_item *item = *link;
			if (applied >= item->min_seq || item->deadline_us <= now) {
				*link = item->next;
				w->n_waiting--;
				struct fl_waiter_item **list =
				    applied >= item->min_seq ? &due : &expired;
				item->next = *list;
				*list = item;
				continue;
			}
			if (item->deadline_us < next)
				next = item->deadline_us;
			link = &item->next;
		}
		counted(w, w->n_waiting);
		pthread_mutex_unlock(&w->lock);

		while (due) {
			struct fl_waiter_item *item = due;
			due = item->next;
			w->ops.due(w->ctx, item);
		}
		while (expired) {
			struct fl_waiter_item *item = expired;
			expired = item->next;
			w->ops.expired(w->ctx, item, applied);
		}
		if (w->ops.tick)
			w->ops.tick(w->ctx, now);

		pthread_mutex_lock(&w->lock);
		if (w->kicked || w->quit)
			continue;
		struct timespec until = {.tv_sec = next / 1000000,
					 .tv_nsec = (long)(next % 1000000) * 1000};
		pthread_cond_timedwait(&w->wake, &w->lock, &until);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

enum fl_status fl_waiter_start(const struct fl_waiter_ops *ops, void *ctx, size_t max_waiting,
			       int64_t tick_us, struct fl_waiter **ret_waiter)
{
	struct fl_waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return FL_ERR_NOMEM;
	w->ops = *ops;
	w->ctx = ctx;
	w->max_waiting = max_waiting;
	w->tick_us = tick_us;
	pthread_mutex_init(&w->lock, NULL);
	fl_cond_init_monotonic(&w->wake);
	if (pthread_create(&w->thread, NULL, waiter_main, w) != 0) {
		fl_waiter_destroy(w);
		return FL_ERR_IO;
	}
	w->thread_started = true;
	*ret_waiter = w;
	return FL_OK;
}

enum fl_waiter_add fl_waiter_add(struct fl_waiter *w, struct fl_waiter_item *item)
{
	pthread_mutex_lock(&w->lock);
	if (w->stopping) {
		pthread_mutex_unlock(&w->lock);
		return FL_WAITER_STOPPING;
	}
	if (w->max_waiting > 0 && w->n_waiting >= w->max_waiting) {
		pthread_mutex_unlock(&w->lock);
		return FL_WAITER_FULL;
	}
	item->next = w->waiting;
	w->waiting = item;
	w->n_waiting++;
	counted(w, w->n_waiting);
	w->kicked = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	return FL_WAITER_PARKED;
}

void fl_waiter_kick(struct fl_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	w->kicked = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
}

struct fl_waiter_item *fl_waiter_stop(struct fl_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	w->quit = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	if (w->thread_started) {
		pthread_join(w->thread, NULL);
		w->thread_started = false;
	}
	/* Nothing joins the list any more. */
	struct fl_waiter_item *list = w->waiting;
	w->waiting = NULL;
	w->n_waiting = 0;
	counted(w, 0);
	return list;
}

void fl_waiter_destroy(struct fl_waiter *w)
{
	if (!w)
		return;
	fl_waiter_stop(w);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
