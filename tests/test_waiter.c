/*
 * query-svc's min_seq waiter (waiter.h) on its own: an item is handed on
 * when the applied seq reaches its min_seq (a kick wakes the thread, no
 * tick needed), or when its deadline passes; parked items are capped; stop
 * hands back what still waits.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "fledger/util.h"
#include "waiter.h"

#define LONG_TICK_US INT64_C(30000000) /* longer than any test: only kicks and deadlines wake */

struct record {
	_Atomic uint64_t applied;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct fl_waiter_item *due[8], *expired[8];
	size_t n_due, n_expired;
	uint64_t expired_applied;
	size_t n_waiting;
};

static uint64_t rec_applied(void *ctx)
{
	struct record *r = ctx;
	return r->applied;
}

static void rec_due(void *ctx, struct fl_waiter_item *item)
{
	struct record *r = ctx;
	pthread_mutex_lock(&r->lock);
	r->due[r->n_due++] = item;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
}

static void rec_expired(void *ctx, struct fl_waiter_item *item, uint64_t applied)
{
	struct record *r = ctx;
	pthread_mutex_lock(&r->lock);
	r->expired[r->n_expired++] = item;
	r->expired_applied = applied;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
}

static void rec_counted(void *ctx, size_t n)
{
	struct record *r = ctx;
	pthread_mutex_lock(&r->lock);
	r->n_waiting = n;
	pthread_mutex_unlock(&r->lock);
}

static const struct fl_waiter_ops ops = {
    .applied = rec_applied, .due = rec_due, .expired = rec_expired, .counted = rec_counted};

static struct record rec;

static void setup(void)
{
	rec = (struct record){0};
	pthread_mutex_init(&rec.lock, NULL);
	pthread_cond_init(&rec.changed, NULL);
}

TestSuite(waiter, .init = setup, .timeout = 30);

/* Waits (at most timeout_us) until *count reaches n; false if it did not. */
static bool wait_count(const size_t *count, size_t n, int64_t timeout_us)
{
	int64_t until = fl_time_mono_us() + timeout_us;
	pthread_mutex_lock(&rec.lock);
	while (*count < n && fl_time_mono_us() < until) {
		pthread_mutex_unlock(&rec.lock);
		usleep(2 * 1000);
		pthread_mutex_lock(&rec.lock);
	}
	bool reached = *count >= n;
	pthread_mutex_unlock(&rec.lock);
	return reached;
}

static struct fl_waiter_item item_for(uint64_t min_seq, int64_t wait_us)
{
	return (struct fl_waiter_item){.min_seq = min_seq,
				       .deadline_us = fl_time_mono_us() + wait_us};
}

Test(waiter, wakes_on_apply)
{
	struct fl_waiter *w;
	cr_assert_eq(fl_waiter_start(&ops, &rec, 0, LONG_TICK_US, &w), FL_OK);
	struct fl_waiter_item a = item_for(5, 20000000), b = item_for(9, 20000000);
	cr_assert_eq(fl_waiter_add(w, &a), FL_WAITER_PARKED);
	cr_assert_eq(fl_waiter_add(w, &b), FL_WAITER_PARKED);
	usleep(50 * 1000);
	cr_expect_eq(rec.n_due, 0, "nothing is applied yet");
	rec.applied = 5;
	int64_t kicked = fl_time_mono_us();
	fl_waiter_kick(w);
	cr_assert(wait_count(&rec.n_due, 1, 5000000), "a kick after applying wakes the waiter");
	cr_expect_lt(fl_time_mono_us() - kicked, 2000000, "woken by the kick, not a tick");
	cr_expect_eq(rec.due[0], &a);
	usleep(50 * 1000);
	cr_expect_eq(rec.n_due, 1, "min_seq 9 still waits");
	cr_expect_eq(rec.n_waiting, 1);
	cr_expect_null(fl_waiter_stop(w)->next, "stop hands back the one item left");
	fl_waiter_destroy(w);
}

Test(waiter, times_out)
{
	struct fl_waiter *w;
	cr_assert_eq(fl_waiter_start(&ops, &rec, 0, LONG_TICK_US, &w), FL_OK);
	rec.applied = 3;
	struct fl_waiter_item a = item_for(4, 100000);
	int64_t added = fl_time_mono_us();
	cr_assert_eq(fl_waiter_add(w, &a), FL_WAITER_PARKED);
	cr_assert(wait_count(&rec.n_expired, 1, 5000000), "the deadline passes");
	int64_t waited = fl_time_mono_us() - added;
	cr_expect_geq(waited, 90000, "not before its deadline (%lld us)", (long long)waited);
	cr_expect_lt(waited, 2000000, "soon after its deadline (%lld us)", (long long)waited);
	cr_expect_eq(rec.expired[0], &a);
	cr_expect_eq(rec.expired_applied, 3);
	cr_expect_eq(rec.n_due, 0);
	cr_expect_null(fl_waiter_stop(w));
	fl_waiter_destroy(w);
}

Test(waiter, caps_parked_items_and_refuses_after_stop)
{
	struct fl_waiter *w;
	cr_assert_eq(fl_waiter_start(&ops, &rec, 2, LONG_TICK_US, &w), FL_OK);
	struct fl_waiter_item a = item_for(1, 20000000), b = item_for(2, 20000000),
			      c = item_for(3, 20000000);
	cr_expect_eq(fl_waiter_add(w, &a), FL_WAITER_PARKED);
	cr_expect_eq(fl_waiter_add(w, &b), FL_WAITER_PARKED);
	cr_expect_eq(fl_waiter_add(w, &c), FL_WAITER_FULL);
	struct fl_waiter_item *left = fl_waiter_stop(w);
	size_t n = 0;
	for (struct fl_waiter_item *i = left; i; i = i->next)
		n++;
	cr_expect_eq(n, 2);
	cr_expect_eq(rec.n_waiting, 0);
	cr_expect_eq(fl_waiter_add(w, &c), FL_WAITER_STOPPING);
	fl_waiter_destroy(w);
}
