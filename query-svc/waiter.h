#ifndef QUERY_SVC_WAITER_H
#define QUERY_SVC_WAITER_H

/*
 * Reads parked until the projection applies their min_seq (CONTRACT §6):
 * one thread looks at the parked items whenever it is kicked (the sync
 * applied something, or an item was parked) and at least every tick, and
 * hands each item to due() once applied() reaches its min_seq, or to
 * expired() once its deadline passes. Both run on the waiter's thread,
 * outside its lock; the item is the callee's from then on.
 */

#include <stddef.h>
#include <stdint.h>

#include "fledger/status.h"

/* Embedded in what waits (a read); the waiter links it. */
struct fl_waiter_item {
	uint64_t min_seq;
	int64_t deadline_us; /* monotonic (fl_time_mono_us) */
	struct fl_waiter_item *next;
};

struct fl_waiter_ops {
	uint64_t (*applied)(void *ctx); /* the seq the read models have applied */
	void (*due)(void *ctx, struct fl_waiter_item *item);
	void (*expired)(void *ctx, struct fl_waiter_item *item, uint64_t applied);
	void (*counted)(void *ctx, size_t n_waiting); /* may be NULL: the count changed */
	void (*tick)(void *ctx, int64_t now_us);      /* may be NULL: each time it looks */
};

enum fl_waiter_add {
	FL_WAITER_PARKED,   /* the item may be handed on and gone at any moment */
	FL_WAITER_STOPPING, /* stopping: the item is still the caller's */
	FL_WAITER_FULL,	    /* max_waiting items wait already: still the caller's */
};

struct fl_waiter;

/*
 * Starts the thread. max_waiting bounds the parked items (0: no bound);
 * tick_us is the longest the thread sleeps. FL_ERR_NOMEM or FL_ERR_IO.
 */
enum fl_status fl_waiter_start(const struct fl_waiter_ops *ops, void *ctx, size_t max_waiting,
			       int64_t tick_us, struct fl_waiter **ret_waiter);

enum fl_waiter_add fl_waiter_add(struct fl_waiter *waiter, struct fl_waiter_item *item);

/* Something was applied: the thread looks again. */
void fl_waiter_kick(struct fl_waiter *waiter);

/*
 * Stops the thread (later adds are FL_WAITER_STOPPING) and hands back the
 * items still parked, a list by next, for the caller to answer.
 */
struct fl_waiter_item *fl_waiter_stop(struct fl_waiter *waiter);

void fl_waiter_destroy(struct fl_waiter *waiter); /* stops it first; accepts NULL */

#endif
