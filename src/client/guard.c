/*
 * guard.c — when may a reload free the snapshot it replaced?
 *
 * Readers must never lock, never wait for a reload, and never wait for each
 * other.  A plain reference count on the current snapshot does not work by
 * itself: between loading the pointer and incrementing its count, the
 * snapshot could be freed.  We use a small read-copy-update scheme of our
 * own, scoped to one handle:
 *
 *   reader:  enter (count +1 in its slot), load the current pointer, use it
 *            for a bounded moment (a lookup and a copy, or taking a pin's
 *            reference), exit (count -1).  Two atomic adds on a cache line
 *            that, with up to 64 threads, no other thread writes.
 *   reload:  publish the new pointer; drop the old one once every reader
 *            that could have loaded it has exited (see "Reclamation" below).
 *
 * Each slot has two counters selected by a phase bit.  After publishing, the
 * reloader flips the phase and looks for the old phase's counters at zero;
 * the old snapshot is freed once that has happened for two flips made after
 * it was replaced.  New readers use the new phase, so a steady stream of
 * them cannot keep a phase from draining; the second flip covers a reader
 * that read the phase just before the first one.  All accesses are
 * sequentially consistent: if the reloader's look does not see a reader's
 * increment, that reader's later load of the pointer sees the new snapshot.
 *
 * Why not liburcu: its default flavours need every reader thread to call
 * rcu_register_thread() (or announce quiescent states), which a library
 * cannot ask of its callers' threads; the "bulletproof" flavour avoids that
 * but needs fork handlers around call_rcu and adds a runtime dependency,
 * while readers here only ever hold a section for a lookup.  Long-lived
 * references (pinned snapshots) are plain reference counts taken inside a
 * section, so they can last as long as the caller wants and be released in
 * any thread.
 */
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

static atomic_uint next_slot;
static _Thread_local unsigned tl_slot = ~0u;

dd_reader_slot *
dd_guard_enter(dd_guard *g, unsigned *phase)
{
	dd_reader_slot *s;
	unsigned	p;

	if (DD_UNLIKELY(tl_slot == ~0u))
		tl_slot = atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) % DD_GUARD_SLOTS;
	s = &g->slots[tl_slot];
	p = atomic_load(&g->phase) & 1;
	atomic_fetch_add(&s->active[p], 1);
	*phase = p;
	return s;
}

void
dd_guard_exit(dd_reader_slot *slot, unsigned phase)
{
	atomic_fetch_sub(&slot->active[phase], 1);
}

/*
 * Reclamation, by the single reloading thread (sync_lock held).  A grace
 * "round" is: flip the phase, then observe every slot's counter of the old
 * phase at zero.  An object retired while `started` rounds had begun is safe
 * once two more rounds have completed.  Rounds are polled, not waited for, so
 * a reader descheduled inside its section delays only the freeing of old
 * snapshots, never the reload itself; if more than DD_LIMBO_MAX objects wait,
 * the reloader waits for rounds to complete (bounding memory).
 */
#define DD_LIMBO_MAX 8

typedef struct dd_retired
{
	struct dd_retired *next;
	uint64_t	after;			/* free when completed >= after */
	void		(*free_fn) (void *);
	void	   *obj;
} dd_retired;

static bool
round_done(dd_guard *g)
{
	unsigned	p;

	if (!g->in_round)
		return true;
	p = (atomic_load(&g->phase) & 1) ^ 1;	/* the phase before the flip */
	for (int i = 0; i < DD_GUARD_SLOTS; i++)
		if (atomic_load(&g->slots[i].active[p]) != 0)
			return false;
	g->in_round = false;
	g->completed++;
	return true;
}

static void
round_start(dd_guard *g)
{
	atomic_fetch_xor(&g->phase, 1);
	g->started++;
	g->in_round = true;
}

static void
free_ready(dd_guard *g)
{
	dd_retired **pp = &g->limbo;

	while (*pp)
	{
		dd_retired *r = *pp;

		if (r->after <= g->completed)
		{
			*pp = r->next;
			g->nlimbo--;
			r->free_fn(r->obj);
			free(r);
		}
		else
			pp = &r->next;
	}
}

static void
advance(dd_guard *g, bool wait)
{
	unsigned	spins = 0;

	for (;;)
	{
		free_ready(g);
		if (g->limbo == NULL || (!wait && g->nlimbo <= DD_LIMBO_MAX && g->in_round &&
								 !round_done(g)))
			return;
		if (!round_done(g))
		{
			/* Waiting: spin briefly, then yield, then sleep. */
			if (++spins < 100)
				continue;
			if (spins < 200)
				sched_yield();
			else
				nanosleep(&(struct timespec) {.tv_nsec = 50000}, NULL);
			continue;
		}
		round_start(g);
	}
}

int
dd_guard_retire(dd_guard *g, void *obj, void (*free_fn) (void *))
{
	dd_retired *r = malloc(sizeof(dd_retired));

	if (r == NULL)
	{
		/* No memory to defer: wait for two full rounds right here. */
		advance(g, true);
		for (int i = 0; i < 2; i++)
		{
			while (!round_done(g))
				sched_yield();
			round_start(g);
		}
		while (!round_done(g))
			sched_yield();
		free_fn(obj);
		return DDICT_OK;
	}
	r->obj = obj;
	r->free_fn = free_fn;
	r->after = g->started + 2;
	r->next = g->limbo;
	g->limbo = r;
	g->nlimbo++;
	advance(g, g->nlimbo > DD_LIMBO_MAX);
	return DDICT_OK;
}

void
dd_guard_drain(dd_guard *g)
{
	advance(g, true);
}
