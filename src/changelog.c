/*
 * changelog.c — a shared ring of the keys that committing transactions
 * changed, so that a client can reload only those keys.
 *
 * Positions are 64-bit byte offsets that only grow; the ring keeps the bytes
 * between tail and head.  A writer appends its keys just before it commits
 * (XACT_EVENT_PRE_COMMIT) and, while it does, publishes the position it
 * started at in its own "in flight" slot; the slot is cleared after the
 * commit became visible (or after abort).
 *
 * The *horizon* is min(head, every in-flight start), read before a client's
 * snapshot is taken.  Every entry before the horizon belongs to a transaction
 * that had finished before that snapshot, so its effects are in what the
 * client loaded.  Every transaction the snapshot did not see wrote its keys
 * at or after the horizon.  A delta therefore needs the keys from the
 * client's horizon on, re-read under a new snapshot taken after the new
 * horizon.  Keys of transactions that were not yet visible, or that aborted
 * after appending, are read again harmlessly (their current values are what
 * the new snapshot sees).  This is the xid-plus-snapshot technique with the
 * snapshot comparison done by position.
 *
 * Per dict, the entries form a *chain*: each carries the dict's change
 * number (consecutive within the chain) and the position of the dict's
 * previous entry; a small shared hash table holds each chain's last entry
 * and next number.  What a client gets as its cursor is not a position but
 * the number of the dict's first entry at or after the horizon, sealed
 * (cursor.c).  So a cursor moves only with its own dict's writes — a ring
 * position moved with every key written anywhere in the cluster, and its
 * steps told a reader the sizes of keys it could not read — a delta walks
 * only its dict's entries, and a dict nobody writes keeps its cursor for as
 * long as the server runs.  A chain is made on the first write or read of
 * its dict and numbered from just above the highest number any dropped
 * chain had reached, so a chain made again (after its slot was taken) never
 * hands out a number an older chain of the dict did: its old cursors are
 * below the new chain's first number and get full answers.  (Numbering from
 * a count of all entries, as first written, told any role how many keys the
 * cluster had changed; and a chain made again right after its drop took the
 * old chain's numbers.)  When the
 * horizon itself has left the ring (a large writer evicted an in-flight
 * one's keys) no cursor can be exact and the answer is 0: reload in full.
 *
 * Each entry carries its writer's top-level xid.  A key is handed out only
 * once its writer is known to have committed: a transaction can still abort
 * after appending (a serialization failure at commit), and a tombstone for
 * a key that never committed would tell a reader a name nobody could ever
 * SELECT.  Entries of writers still in progress are left for the next delta
 * (they are past the horizon the reader takes as its cursor).
 *
 * When the cursor's entries have fallen out of the ring, when a transaction
 * wrote more keys than ddict.max_delta_keys or truncated the dict (a "full"
 * entry), when the cursor is not one this server sealed for this dict, or
 * after a restart (the epoch changed), the client reloads the whole dict.
 *
 * Locking: the ring, its head and tail, and the chains table are guarded by
 * the ring's LWLock (shared to read, exclusive to append or make a chain);
 * in-flight slots are atomics, each written only by its backend.
 */
#include "ddict.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "access/twophase.h"
#include "access/transam.h"
#include "access/xact.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"

int			ddict_changelog_kb = 8192;

void
ddict_changelog_define_gucs(void)
{
	DefineCustomIntVariable("ddict.changelog_size",
							"Size of the shared ring of changed keys used for delta reloads.",
							"Clients whose last reload is older than the ring reload in full.",
							&ddict_changelog_kb,
							8192, 64, INT_MAX / 1024,
							PGC_POSTMASTER, GUC_UNIT_KB,
							NULL, NULL, NULL);
}

#define LOG_MAGIC	0xDD1C7E57u
#define LOG_PAD		0x01			/* filler up to the end of the ring */
#define LOG_FULL	0x02			/* the whole dict changed */
#define LOG_FIRST	0x04			/* the first entry of its number */

typedef struct LogEntry
{
	uint32		magic;
	uint32		len;			/* whole entry, MAXALIGNed */
	Oid			dboid;
	Oid			relid;
	uint32		flags;
	uint32		keylen;
	TransactionId xid;			/* the writer's top-level xid, or invalid */
	uint32		unused;
	uint64		seq;			/* the dict's change number */
	uint64		prev;			/* position of the dict's previous entry, or 0 */
	/* key bytes follow */
} LogEntry;

#define ENTRY_HDR	MAXALIGN(sizeof(LogEntry))

typedef struct ChainKey
{
	Oid			dboid;
	Oid			relid;
} ChainKey;

typedef struct Chain
{
	ChainKey	key;
	uint64		next_seq;		/* the number of the dict's next entry */
	uint64		first_seq;		/* the oldest number a cursor may hold */
	uint64		last_pos;		/* position of the dict's last entry, or 0 */
	TimestampTz refused_at;		/* last time a made-up cursor retired numbers */
} Chain;

typedef struct LogShared
{
	LWLock	   *lock;
	uint64		size;			/* bytes in the ring */
	uint64		head;			/* next position to write */
	uint64		tail;			/* oldest position still in the ring */
	uint64		floor;			/* above every number of a dropped chain */
	uint8		cursor_key[DDICT_CURSOR_KEY_LEN];	/* seals cursors (cursor.c) */
	int			nslots;
	pg_atomic_uint64 inflight[FLEXIBLE_ARRAY_MEMBER];	/* start + 1, or 0 */
} LogShared;

static LogShared *logsh = NULL;
static char *ring = NULL;
static HTAB *chains = NULL;
static bool my_inflight = false;

static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static uint64
ring_bytes(void)
{
	return (uint64) ddict_changelog_kb * 1024;
}

static long
chain_capacity(void)
{
	return (long) ddict_max_dicts * 2;
}

static Size
header_bytes(void)
{
	return MAXALIGN(offsetof(LogShared, inflight) + sizeof(pg_atomic_uint64) * slot_count());
}

Size
ddict_changelog_shmem_size(void)
{
	return add_size(add_size(header_bytes(), ring_bytes()),
					hash_estimate_size(chain_capacity(), sizeof(Chain)));
}

void
ddict_changelog_init(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	logsh = ShmemInitStruct("ddict changelog", header_bytes() + ring_bytes(), &found);
	ring = (char *) logsh + header_bytes();
	if (!found)
	{
		logsh->lock = &(GetNamedLWLockTranche("ddict"))[1].lock;
		logsh->size = ring_bytes();
		/* Position 0 means "no previous entry" in a chain: start after it. */
		logsh->head = logsh->tail = MAXIMUM_ALIGNOF;
		/* Change number 0 means "no cursor" to clients: start after it. */
		logsh->floor = 0;
		if (!pg_strong_random(logsh->cursor_key, sizeof(logsh->cursor_key)))
			ereport(FATAL,
					(errmsg("ddict: could not generate the key that seals cursors")));
		logsh->nslots = slot_count();
		for (int i = 0; i < logsh->nslots; i++)
			pg_atomic_init_u64(&logsh->inflight[i], 0);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ChainKey);
	info.entrysize = sizeof(Chain);
	chains = ShmemInitHash("ddict change chains", chain_capacity(), chain_capacity(),
						   &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

static inline LogEntry *
entry_at(uint64 pos)
{
	return (LogEntry *) (ring + pos % logsh->size);
}

/*
 * The length of the entry at pos.  Fewer bytes than a header before the end
 * of the ring can only be filler (no entry fits there), written without a
 * header: a header would overrun the ring.
 */
static inline uint64
entry_len(uint64 pos)
{
	uint64		left = logsh->size - pos % logsh->size;

	return left < ENTRY_HDR ? left : entry_at(pos)->len;
}

/* Drop entries from the tail until "need" more bytes fit. Lock held. */
static void
make_room(uint64 need)
{
	while (logsh->head + need - logsh->tail > logsh->size)
		logsh->tail += entry_len(logsh->tail);
}

/*
 * The entry of chain (dboid, relid) at pos, if it is still in the ring and
 * is what the chain says.  Lock held.
 */
static LogEntry *
chain_entry(uint64 pos, Oid dboid, Oid relid)
{
	LogEntry   *e;

	if (pos < logsh->tail || pos >= logsh->head)
		return NULL;
	e = entry_at(pos);
	if (e->magic != LOG_MAGIC || (e->flags & LOG_PAD) || e->dboid != dboid ||
		e->relid != relid || e->len < ENTRY_HDR || e->keylen > e->len - ENTRY_HDR)
		return NULL;			/* cannot happen: entries are only written here */
	return e;
}

static Chain *
chain_find(Oid dboid, Oid relid)
{
	ChainKey	k = {dboid, relid};

	return hash_search(chains, &k, HASH_FIND, NULL);
}

static uint64 horizon_position(void);

/*
 * May chain c be dropped (to make room)?  Only when every entry it has
 * belongs to a finished writer (below the horizon) or left the ring: a
 * chain made again later is numbered above every number c handed out, so
 * its clients reload in full once, and no reader can take a number of the
 * new chain for entries of the old one that it has not seen (those of a
 * writer still in flight).  Not while keep() says the caller needs it.
 */
static bool
chain_droppable(const Chain *c, uint64 horizon)
{
	return c->last_pos == 0 || c->last_pos < horizon || c->last_pos < logsh->tail;
}

/*
 * Room for n more chains, dropping the droppable ones that were written to
 * longest ago (not those of keep[0..nkeep)).  Exclusive lock held.
 */
static bool
chains_room(int n, const Oid *keep, int nkeep, Oid dboid)
{
	uint64		horizon = horizon_position();

	while (hash_get_num_entries(chains) + n > chain_capacity())
	{
		HASH_SEQ_STATUS it;
		Chain	   *c,
				   *oldest = NULL;

		hash_seq_init(&it, chains);
		while ((c = hash_seq_search(&it)) != NULL)
		{
			bool		kept = false;

			for (int i = 0; i < nkeep && !kept; i++)
				kept = c->key.dboid == dboid && c->key.relid == keep[i];
			if (!kept && chain_droppable(c, horizon) &&
				(oldest == NULL || c->last_pos < oldest->last_pos))
				oldest = c;
		}
		if (oldest == NULL)
			return false;
		logsh->floor = Max(logsh->floor, oldest->next_seq);
		(void) hash_search(chains, &oldest->key, HASH_REMOVE, NULL);
	}
	return true;
}

/* Make the chain of (dboid, relid): room was made.  Exclusive lock held. */
static Chain *
chain_make(Oid dboid, Oid relid)
{
	ChainKey	k = {dboid, relid};
	bool		found;
	Chain	   *c = hash_search(chains, &k, HASH_ENTER_NULL, &found);

	if (c != NULL && !found)
	{
		c->first_seq = c->next_seq = logsh->floor + 1;
		c->last_pos = 0;
		c->refused_at = 0;
	}
	return c;
}

/* The chain of (dboid, relid), made if needed; NULL: no room.  Exclusive lock held. */
static Chain *
chain_get(Oid dboid, Oid relid)
{
	Chain	   *c = chain_find(dboid, relid);

	if (c != NULL)
		return c;
	return chains_room(1, &relid, 1, dboid) ? chain_make(dboid, relid) : NULL;
}

static void
write_entry(Chain *c, uint64 seq, uint32 flags, const char *key, uint32 keylen,
			TransactionId xid)
{
	uint64		need = ENTRY_HDR + MAXALIGN(keylen);
	uint64		off = logsh->head % logsh->size;
	LogEntry   *e;

	if (off + need > logsh->size)
	{
		uint64		pad = logsh->size - off;

		make_room(pad);
		if (pad >= ENTRY_HDR)
		{
			e = entry_at(logsh->head);
			memset(e, 0, sizeof(LogEntry));
			e->magic = LOG_MAGIC;
			e->len = (uint32) pad;
			e->flags = LOG_PAD;
		}
		logsh->head += pad;
	}
	make_room(need);
	e = entry_at(logsh->head);
	e->magic = LOG_MAGIC;
	e->len = (uint32) need;
	e->dboid = c->key.dboid;
	e->relid = c->key.relid;
	e->flags = flags;
	e->keylen = keylen;
	e->xid = xid;
	e->unused = 0;
	e->seq = seq;
	e->prev = c->last_pos;
	if (keylen)
		memcpy((char *) e + ENTRY_HDR, key, keylen);
	c->last_pos = logsh->head;
	logsh->head += need;
}

/* (numbers fit 40 bits: cursor.c; this bit marks "none written yet") */
#define FIRST_PENDING	(UINT64CONST(1) << 63)

void
ddict_changelog_append(Oid dboid, PendingKey *keys, int nkeys)
{
	/* Keys this large would evict most of the ring: log them as "full". */
	uint64		maxkey = logsh->size / 16;
	TransactionId xid = GetTopTransactionIdIfAny();
	Oid		   *relids = palloc(sizeof(Oid) * Max(nkeys, 1));
	uint64	   *seqs = palloc(sizeof(uint64) * Max(nkeys, 1));
	Chain	  **cs = palloc(sizeof(Chain *) * Max(nkeys, 1));
	int			nrel = 0,
				missing = 0,
				r = 0;

	/* the dicts written, once each, in order of first appearance */
	for (int i = 0; i < nkeys; i++)
	{
		int			j = 0;

		if (keys[i].skip)
			continue;
		while (j < nrel && relids[j] != keys[i].relid)
			j++;
		if (j == nrel)
			relids[nrel++] = keys[i].relid;
	}

	LWLockAcquire(logsh->lock, LW_EXCLUSIVE);
	/* every chain first: no room is an error before anything is written */
	for (int j = 0; j < nrel; j++)
		missing += (cs[j] = chain_find(dboid, relids[j])) == NULL;
	if (missing > 0 && !chains_room(missing, relids, nrel, dboid))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ddict: too many dicts with changes in flight in the change ring"),
				 errhint("Raise ddict.max_dicts.")));
	for (int j = 0; j < nrel; j++)
	{
		if (cs[j] == NULL && (cs[j] = chain_make(dboid, relids[j])) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("ddict: out of shared memory for the change ring's chains"),
					 errhint("Raise ddict.max_dicts.")));
		/* one number per transaction and dict: numbers count commits, not keys */
		seqs[j] = cs[j]->next_seq++ | FIRST_PENDING;
	}
	if (!my_inflight)
	{
		pg_atomic_write_u64(&logsh->inflight[MyProc->pgprocno], logsh->head + 1);
		my_inflight = true;
	}
	for (int i = 0; i < nkeys; i++)
	{
		PendingKey *k = &keys[i];
		uint32		first;

		if (k->skip)
			continue;
		if (relids[r] != k->relid)
			for (r = 0; relids[r] != k->relid; r++)
				;
		first = seqs[r] & FIRST_PENDING ? LOG_FIRST : 0;
		seqs[r] &= ~FIRST_PENDING;
		if (k->full || k->len > maxkey)
			write_entry(cs[r], seqs[r], LOG_FULL | first, NULL, 0, xid);
		else
			write_entry(cs[r], seqs[r], first, k->data, k->len, xid);
	}
	LWLockRelease(logsh->lock);
	pfree(relids);
	pfree(seqs);
	pfree(cs);
}

/*
 * A "whole dict" entry for (dboid, relid), written after a commit became
 * visible (a prepared transaction's, prepared.c): every client whose cursor
 * is before it reloads in full.  Raises nothing (commit callbacks).  The
 * caller bumps the version, then calls ddict_changelog_finish().  A dict
 * without a chain needs none: a chain made later starts above every number
 * handed out before, so no cursor this server would accept predates it.
 */
void
ddict_changelog_append_full(Oid dboid, Oid relid)
{
	Chain	   *c;

	LWLockAcquire(logsh->lock, LW_EXCLUSIVE);
	c = chain_find(dboid, relid);
	if (c != NULL)
	{
		/*
		 * In flight until the caller's bump and ddict_changelog_finish(): a
		 * reader in between must take a cursor at or below this entry (its
		 * "unchanged" answer would otherwise step past it).
		 */
		if (!my_inflight)
		{
			pg_atomic_write_u64(&logsh->inflight[MyProc->pgprocno], logsh->head + 1);
			my_inflight = true;
		}
		write_entry(c, c->next_seq++, LOG_FULL | LOG_FIRST, NULL, 0, InvalidTransactionId);
	}
	LWLockRelease(logsh->lock);
}

/* After commit or abort: this backend's entries are settled. */
void
ddict_changelog_finish(void)
{
	if (!my_inflight)
		return;
	pg_memory_barrier();
	pg_atomic_write_u64(&logsh->inflight[MyProc->pgprocno], 0);
	my_inflight = false;
}

/* min(head, every in-flight start).  Lock held. */
static uint64
horizon_position(void)
{
	uint64		h = logsh->head;

	for (int i = 0; i < logsh->nslots; i++)
	{
		uint64		s = pg_atomic_read_u64(&logsh->inflight[i]);

		if (s != 0 && s - 1 < h)
			h = s - 1;
	}
	return h;
}

/*
 * The number of chain c's first entry at or after position h, or 0 when it
 * cannot be known (entries at or after h left the ring).  A transaction's
 * entries are contiguous and h is a transaction's start or the head, so
 * entries of one number are all below h or all at or after it.  Lock held.
 */
static uint64
number_at(Chain *c, uint64 h)
{
	uint64		seq = c->next_seq;
	uint64		pos = c->last_pos;

	if (h < logsh->tail)
		return 0;
	while (pos != 0 && pos >= h)
	{
		LogEntry   *e = chain_entry(pos, c->key.dboid, c->key.relid);

		if (e == NULL || e->seq > seq)
			return 0;
		seq = e->seq;
		pos = e->prev;
	}
	return seq;
}

/*
 * Run f on the chain of (dboid, relid) under the ring's lock, made if needed
 * and asked for (the lock taken again exclusively only then).  0 when there
 * is none.
 */
static uint64
with_chain(Oid dboid, Oid relid, bool make, uint64 (*f) (Chain *c))
{
	Chain	   *c;
	uint64		r = 0;

	LWLockAcquire(logsh->lock, LW_SHARED);
	if ((c = chain_find(dboid, relid)) != NULL)
		r = f(c);
	LWLockRelease(logsh->lock);
	if (c != NULL || !make)
		return r;
	LWLockAcquire(logsh->lock, LW_EXCLUSIVE);
	if ((c = chain_get(dboid, relid)) != NULL)
		r = f(c);
	LWLockRelease(logsh->lock);
	return r;
}

static uint64
horizon_number(Chain *c)
{
	return number_at(c, horizon_position());
}

static uint64
next_number(Chain *c)
{
	return c->next_seq;
}

/*
 * The cursor of (dboid, relid) at the horizon: read before a client's
 * snapshot, every entry of the dict numbered below it belongs to a
 * transaction that finished before.  0: no exact cursor now (reload in full
 * next time), or the dict has no chain and make is false.  Only callers that
 * know the relation is a dict make chains (the table of chains is shared).
 */
uint64
ddict_changelog_horizon(Oid dboid, Oid relid, bool make)
{
	return ddict_cursor_seal(logsh->cursor_key, dboid, relid,
							 with_chain(dboid, relid, make, horizon_number));
}

/*
 * The cursor of the dict's next entry.  Read after a snapshot was taken, it
 * bounds the entries of every transaction that snapshot sees (they append
 * before they commit): the "until" of a delta (sync.c, streamer.c).
 */
uint64
ddict_changelog_until(Oid dboid, Oid relid, bool make)
{
	return ddict_cursor_seal(logsh->cursor_key, dboid, relid,
							 with_chain(dboid, relid, make, next_number));
}

/*
 * Did the writer of an entry commit?  In progress (or committed but not yet
 * visible): not yet.  Writers older than the commit log's horizon finished
 * long ago and are taken as committed (their status can no longer be read).
 */
static bool
writer_committed(TransactionId xid)
{
	if (!TransactionIdIsValid(xid))
		return true;
	if (TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
		return true;
	if (TransactionIdIsInProgress(xid))
		return false;
	return TransactionIdDidCommit(xid);
}

/*
 * A cursor this server did not seal was presented for (dboid, relid): a
 * client bug, or someone guessing seals to reach back before the numbers it
 * was given (to the tombstones of keys deleted before it could read the
 * dict).  The 23 bits of a seal fall to a few million tries; so the first
 * wrong one makes every number handed out so far unusable: clients behind
 * reload in full, caught-up ones (whose cursor is the next number) do not
 * notice, and a guess can only ever reach numbers handed out after it — to
 * the guesser, who could read the dict then.  At most once per
 * REFUSE_INTERVAL_MS, so that wrong cursors cannot keep every client
 * reloading; and one log line each time.
 */
#define REFUSE_INTERVAL_MS	10000

static void
refuse_older_cursors(Oid dboid, Oid relid)
{
	TimestampTz now = GetCurrentTimestamp();
	Chain	   *c;
	bool		retired = false;

	LWLockAcquire(logsh->lock, LW_EXCLUSIVE);
	c = chain_find(dboid, relid);
	if (c != NULL && (c->refused_at == 0 ||
					  TimestampDifferenceExceeds(c->refused_at, now, REFUSE_INTERVAL_MS)))
	{
		c->first_seq = c->next_seq;
		c->refused_at = now;
		retired = true;
	}
	LWLockRelease(logsh->lock);
	if (retired)
		ereport(LOG,
				(errmsg("ddict: a cursor this server did not hand out was presented for dict %u in database %u; its older cursors are no longer accepted",
						relid, dboid)));
}

/*
 * Keys of (dboid, relid) logged at or after cursor "since" by writers that
 * committed.  Returns false when a delta cannot be exact and the caller must
 * reload everything.
 */
bool
ddict_changelog_collect(Oid dboid, Oid relid, uint64 since, List **keys)
{
	bool		ok;
	uint64		from;
	List	   *found = NIL;
	List	   *xids = NIL;
	ListCell   *lk,
			   *lx;
	TransactionId last = InvalidTransactionId;
	bool		last_committed = true;
	Chain	   *c;

	*keys = NIL;
	if (!ddict_cursor_open(logsh->cursor_key, dboid, relid, since, &from))
	{
		refuse_older_cursors(dboid, relid);
		return false;
	}
	LWLockAcquire(logsh->lock, LW_SHARED);
	c = chain_find(dboid, relid);
	ok = c != NULL && from >= c->first_seq && from <= c->next_seq;
	if (ok && from < c->next_seq)
	{
		uint64		pos = c->last_pos;
		uint64		seq = c->next_seq;

		/*
		 * Back from the chain's last entry until one numbered below the
		 * cursor, or the chain's first: numbers are consecutive, so every
		 * entry numbered from the cursor on was seen.  An entry that left
		 * the ring before that: full.
		 */
		while (pos != 0)
		{
			LogEntry   *e = chain_entry(pos, dboid, relid);

			if (e == NULL || e->seq > seq || e->seq + 1 < seq)
			{
				ok = false;		/* left the ring */
				break;
			}
			seq = e->seq;
			if (seq < from)
				break;
			/* keys as written; whose writers committed is asked below */
			found = lcons((e->flags & LOG_FULL) ? NULL :
						  cstring_to_text_with_len((char *) e + ENTRY_HDR, e->keylen), found);
			xids = lcons_oid((Oid) e->xid, xids);	/* 32 bits, as an Oid */
			if (seq == from && (e->flags & LOG_FIRST))
				break;			/* the cursor's number is whole: done */
			pos = e->prev;
		}
		if (ok && pos == 0 && seq > from)
			ok = false;			/* cannot happen: the chain's start is past the cursor */
	}
	LWLockRelease(logsh->lock);

	/* the commit log and the proc array are read without the ring's lock */
	forboth(lk, found, lx, xids)
	{
		TransactionId xid = (TransactionId) lfirst_oid(lx);

		if (!ok)
			break;
		if (xid != last)
		{
			last = xid;
			last_committed = writer_committed(xid);
		}
		if (!last_committed)
			continue;
		if (lfirst(lk) == NULL)
			ok = false;			/* a committed "whole dict" entry */
		else
			*keys = lappend(*keys, lfirst(lk));
	}
	list_free(xids);
	list_free(found);
	if (!ok)
	{
		list_free_deep(*keys);
		*keys = NIL;
	}
	return ok;
}

/* The ring's state, for ddict_changelog_status() (stats.c). */
void
ddict_changelog_state(DdictRingState *st)
{
	LWLockAcquire(logsh->lock, LW_SHARED);
	st->size = logsh->size;
	st->head = logsh->head;
	st->tail = logsh->tail;
	st->horizon = horizon_position();
	st->chains = hash_get_num_entries(chains);
	st->numbered = logsh->floor + 1;
	LWLockRelease(logsh->lock);
}
