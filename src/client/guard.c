/*
 * guard.c — when may a reload free the snapshot it replaced?
 *
 * Readers must never lock, never wait for a reload, and never wait for each
 * other; and a read costs a hash lookup plus as little as we can manage.  A
 * plain reference count on the current snapshot does not work by itself:
 * between loading the pointer and incrementing its count, the snapshot could
 * be freed.  We use a small read-copy-update scheme of our own, scoped to
 * one handle:
 *
 *   reader:  enter, load the current pointer, use it for a bounded moment (a
 *            lookup and a copy, or taking a pin's reference), exit.
 *   reload:  publish the new pointer; free the old one after a grace period:
 *            once every reader that could have loaded it has exited.
 *
 * Owned slots (the read path).  The first DD_GUARD_SLOTS threads that read
 * get a slot each, for as long as they live (a thread-exit destructor gives
 * it back).  Its owner alone writes it, so entering is a plain load and store
 * of a counter (odd: inside a section), exiting another, and the per-read
 * counters are plain adds: no atomic read-modify-write, no shared cache line.
 * The order a reader needs — its counter store before its load of the
 * pointer — costs it only a compiler barrier: the reclaimer runs
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) after publishing, which
 * makes every running thread of the process execute a full barrier, so a
 * reader either already shows an odd counter to the reclaimer's next look,
 * or loads the new pointer (the scheme of liburcu's "memb" flavour, without
 * its thread registration: the slot is taken on first use).  Where
 * membarrier is unavailable, the readers' counter stores are sequentially
 * consistent instead (a full barrier each).
 *
 * Grace period ("round"): after the membarrier, note every owned slot's
 * counter; the round is complete when each that was odd has moved (its
 * section ended — a later section does not matter: it began after the
 * publication and loads the new pointer).  Rounds are polled, never waited
 * for on the read path, so a reader descheduled inside its section delays
 * only the freeing of old snapshots.
 *
 * The shared slot.  Threads beyond DD_GUARD_SLOTS share one more slot with
 * the previous scheme: two counters selected by a phase bit, sequentially
 * consistent atomic adds; a round flips the phase and waits for the old
 * phase's counter to drain (new readers use the new phase, so a steady
 * stream of them cannot keep it from draining).
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
#include <linux/membarrier.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

_Thread_local unsigned dd_tl_slot __attribute__((tls_model("initial-exec"))) = ~0u;
bool		dd_guard_membarrier;

static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t owners;			/* bit i: owned slot i is taken */
static pthread_key_t owner_key;

static void
give_back(void *p)
{
	unsigned	i = (unsigned) ((uintptr_t) p - 1);

	pthread_mutex_lock(&owners_lock);
	owners &= ~(UINT64_C(1) << i);
	pthread_mutex_unlock(&owners_lock);
}

static void
guard_init(void)
{
	(void) pthread_key_create(&owner_key, give_back);
	/* readers may use a compiler barrier only if the reclaimer can fence them */
	dd_guard_membarrier =
		syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

/* The library may be unloaded while threads that read still run. */
__attribute__((destructor)) static void
guard_fini(void)
{
	if (pthread_once(&guard_once, guard_init) == 0)
		(void) pthread_key_delete(owner_key);
}

/* First section of this thread: an owned slot if one is free. */
unsigned
dd_guard_thread_slot(void)
{
	unsigned	t = DD_GUARD_SHARED;

	pthread_once(&guard_once, guard_init);
	pthread_mutex_lock(&owners_lock);
	if (~owners != 0)
	{
		t = (unsigned) __builtin_ctzll(~owners);
		if (pthread_setspecific(owner_key, (void *) (uintptr_t) (t + 1)) == 0)
			owners |= UINT64_C(1) << t;
		else
			t = DD_GUARD_SHARED;
	}
	pthread_mutex_unlock(&owners_lock);
	dd_tl_slot = t;
	return t;
}

dd_reader_slot *
dd_guard_enter_shared(dd_guard *g, unsigned *phase)
{
	dd_reader_slot *s = &g->slots[DD_GUARD_SHARED];
	unsigned	p = atomic_load(&g->phase) & 1;

	atomic_fetch_add(&s->active[p], 1);
	*phase = p;
	return s;
}

/*
 * Reclamation, by the single reloading thread (sync_lock held); a grace
 * round is described in the header.  An object retired while `started`
 * rounds had begun is safe once two more rounds have completed.  Rounds
 * are polled, not waited for, so
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
	if (atomic_load(&g->slots[DD_GUARD_SHARED].active[p]) != 0)
		return false;
	for (int i = 0; i < DD_GUARD_SLOTS; i++)
		if ((g->seen[i] & 1) &&
			atomic_load_explicit(&g->slots[i].ctr, memory_order_acquire) == g->seen[i])
			return false;
	g->in_round = false;
	g->completed++;
	return true;
}

static void
round_start(dd_guard *g)
{
	pthread_once(&guard_once, guard_init);
	atomic_fetch_xor(&g->phase, 1);
	/* every reader's counter store is now visible, or it loads the new pointer */
	if (dd_guard_membarrier)
		(void) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	/* (else: readers' stores and these loads are sequentially consistent,
	 * as are the publication of the pointer and the readers' loads of it) */
	for (int i = 0; i < DD_GUARD_SLOTS; i++)
		g->seen[i] = atomic_load(&g->slots[i].ctr);
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

/*
 * Free what completed rounds allow, starting a round when none runs; with
 * wait, until the limbo is empty.  A round that completes frees first and
 * only then is another started (a publish with no reader inside a section
 * costs two membarrier() calls, not three).
 */
static void
advance(dd_guard *g, bool wait)
{
	unsigned	spins = 0;

	for (;;)
	{
		free_ready(g);
		if (g->limbo == NULL)
			return;
		if (!g->in_round)
		{
			round_start(g);
			continue;
		}
		if (round_done(g))
			continue;
		if (!wait && g->nlimbo <= DD_LIMBO_MAX)
			return;
		/* Waiting: spin briefly, then yield, then sleep. */
		if (++spins < 100)
			continue;
		if (spins < 200)
			sched_yield();
		else
			nanosleep(&(struct timespec) {.tv_nsec = 50000}, NULL);
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
	/*
	 * Two more rounds, even when none runs: a reader of the shared slot may
	 * read the phase, be preempted while a round flips and checks it, and
	 * then count itself in the old phase with the pointer published before
	 * that round — only the round after the next one looks at that phase
	 * again (attack round 6; one round sufficed for owned slots alone).
	 */
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
