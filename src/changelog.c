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
 * A client's cursor is the *horizon*: min(head, every in-flight start),
 * read before the client's snapshot is taken.  Every entry before the horizon
 * belongs to a transaction that had finished before that snapshot, so its
 * effects are in what the client loaded.  Every transaction the snapshot did
 * not see wrote its keys at or after the horizon.  A delta therefore needs the
 * keys between the client's cursor and the current head, re-read under a new
 * snapshot taken after the new horizon.  Keys of transactions that were not
 * yet visible, or that aborted after appending, are read again harmlessly
 * (their current values are what the new snapshot sees).  This is the
 * xid-plus-snapshot technique with the snapshot comparison done by position.
 *
 * Each entry carries its writer's top-level xid.  A key is handed out only
 * once its writer is known to have committed: a transaction can still abort
 * after appending (a serialization failure at commit), and a tombstone for
 * a key that never committed would tell a reader a name nobody could ever
 * SELECT.  Entries of writers still in progress are left for the next delta
 * (they are past the horizon the reader takes as its cursor).
 *
 * A cursor comes back from the client, so it is not trusted: it must be
 * aligned, inside the ring, and marked in a bitmap of entry starts that only
 * the writers set (key bytes can look like an entry header; they are never
 * marked).  Anything else is answered with a full reload.
 *
 * When the cursor has fallen out of the ring, when a transaction wrote more
 * keys than ddict.max_delta_keys or truncated the dict (a "full" entry), or
 * after a restart (the epoch changed), the client reloads the whole dict.
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

#define LOG_MAGIC	0xDD1C7E57u
#define LOG_PAD		0x01			/* filler up to the end of the ring */
#define LOG_FULL	0x02			/* the whole dict changed */

typedef struct LogEntry
{
	uint32		magic;
	uint32		len;			/* whole entry, MAXALIGNed */
	Oid			dboid;
	Oid			relid;
	uint32		flags;
	uint32		keylen;
	TransactionId xid;			/* the writer's top-level xid, or invalid */
	/* key bytes follow */
} LogEntry;

#define ENTRY_HDR	MAXALIGN(sizeof(LogEntry))

typedef struct LogShared
{
	LWLock	   *lock;
	uint64		size;			/* bytes in the ring */
	uint64		head;			/* next position to write */
	uint64		tail;			/* oldest position still in the ring */
	int			nslots;
	pg_atomic_uint64 inflight[FLEXIBLE_ARRAY_MEMBER];	/* start + 1, or 0 */
} LogShared;

static LogShared *logsh = NULL;
static char *ring = NULL;
static uint8 *starts = NULL;	/* one bit per MAXALIGN unit of the ring */
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

static Size
bitmap_bytes(void)
{
	return MAXALIGN(ring_bytes() / MAXIMUM_ALIGNOF / 8 + 1);
}

Size
ddict_changelog_shmem_size(void)
{
	Size		sz = offsetof(LogShared, inflight);

	sz = add_size(sz, mul_size(sizeof(pg_atomic_uint64), slot_count()));
	return add_size(add_size(MAXALIGN(sz), ring_bytes()), bitmap_bytes());
}

static inline void
mark_unit(uint64 off, bool start)
{
	uint64		unit = off / MAXIMUM_ALIGNOF;

	if (start)
		starts[unit / 8] |= (uint8) (1 << (unit % 8));
	else
		starts[unit / 8] &= (uint8) ~(1 << (unit % 8));
}

static inline bool
is_start(uint64 off)
{
	uint64		unit = off / MAXIMUM_ALIGNOF;

	return (starts[unit / 8] & (1 << (unit % 8))) != 0;
}

/* Mark [off, off + len) as one entry starting at off. */
static void
mark_entry(uint64 off, uint64 len)
{
	mark_unit(off, true);
	for (uint64 o = off + MAXIMUM_ALIGNOF; o < off + len; o += MAXIMUM_ALIGNOF)
		mark_unit(o, false);
}

void
ddict_changelog_init(void)
{
	bool		found;
	Size		hdr = MAXALIGN(offsetof(LogShared, inflight) +
							   sizeof(pg_atomic_uint64) * slot_count());

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	logsh = ShmemInitStruct("ddict changelog", hdr + ring_bytes() + bitmap_bytes(), &found);
	ring = (char *) logsh + hdr;
	starts = (uint8 *) ring + ring_bytes();
	if (!found)
	{
		memset(starts, 0, bitmap_bytes());
		logsh->lock = &(GetNamedLWLockTranche("ddict"))[1].lock;
		logsh->size = ring_bytes();
		/* Position 0 means "no cursor" to clients: start after it. */
		logsh->head = logsh->tail = MAXIMUM_ALIGNOF;
		logsh->nslots = slot_count();
		for (int i = 0; i < logsh->nslots; i++)
			pg_atomic_init_u64(&logsh->inflight[i], 0);
	}
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
 * header: a header would overrun the ring into the bitmap of entry starts.
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

static void
write_entry(Oid dboid, Oid relid, uint32 flags, const char *key, uint32 keylen,
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
			e->magic = LOG_MAGIC;
			e->len = (uint32) pad;
			e->flags = LOG_PAD;
			e->dboid = e->relid = InvalidOid;
			e->keylen = 0;
			e->xid = InvalidTransactionId;
		}
		mark_entry(off, pad);
		logsh->head += pad;
	}
	make_room(need);
	mark_entry(logsh->head % logsh->size, need);
	e = entry_at(logsh->head);
	e->magic = LOG_MAGIC;
	e->len = (uint32) need;
	e->dboid = dboid;
	e->relid = relid;
	e->flags = flags;
	e->keylen = keylen;
	e->xid = xid;
	if (keylen)
		memcpy((char *) e + ENTRY_HDR, key, keylen);
	logsh->head += need;
}

void
ddict_changelog_append(Oid dboid, PendingKey *keys, int nkeys)
{
	/* Keys this large would evict most of the ring: log them as "full". */
	uint64		maxkey = logsh->size / 16;
	TransactionId xid = GetTopTransactionIdIfAny();

	LWLockAcquire(logsh->lock, LW_EXCLUSIVE);
	if (!my_inflight)
	{
		pg_atomic_write_u64(&logsh->inflight[MyProc->pgprocno], logsh->head + 1);
		my_inflight = true;
	}
	for (int i = 0; i < nkeys; i++)
	{
		PendingKey *k = &keys[i];

		if (k->full || k->len > maxkey)
			write_entry(dboid, k->relid, LOG_FULL, NULL, 0, xid);
		else
			write_entry(dboid, k->relid, 0, k->data, k->len, xid);
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

uint64
ddict_changelog_horizon(void)
{
	uint64		h;

	LWLockAcquire(logsh->lock, LW_SHARED);
	h = logsh->head;
	for (int i = 0; i < logsh->nslots; i++)
	{
		uint64		s = pg_atomic_read_u64(&logsh->inflight[i]);

		if (s != 0 && s - 1 < h)
			h = s - 1;
	}
	LWLockRelease(logsh->lock);
	return h;
}

/*
 * The next position to write.  Read after a snapshot was taken, it bounds the
 * entries of every transaction that snapshot sees (they append before they
 * commit): the "until" of a delta (sync.c, streamer.c).
 */
uint64
ddict_changelog_head(void)
{
	uint64		h;

	LWLockAcquire(logsh->lock, LW_SHARED);
	h = logsh->head;
	LWLockRelease(logsh->lock);
	return h;
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
 * Keys of (dboid, relid) logged at or after "since" by writers that
 * committed.  Returns false when a delta cannot be exact and the caller must
 * reload everything.
 */
bool
ddict_changelog_collect(Oid dboid, Oid relid, uint64 since, List **keys)
{
	bool		ok = true;
	uint64		pos;
	List	   *found = NIL;
	List	   *xids = NIL;
	ListCell   *lk,
			   *lx;
	TransactionId last = InvalidTransactionId;
	bool		last_committed = true;

	*keys = NIL;
	LWLockAcquire(logsh->lock, LW_SHARED);
	if (since < logsh->tail || since > logsh->head || since % MAXIMUM_ALIGNOF != 0 ||
		(since < logsh->head && !is_start(since % logsh->size)))
		ok = false;
	for (pos = since; ok && pos < logsh->head;)
	{
		LogEntry   *e = entry_at(pos);

		if (logsh->size - pos % logsh->size < ENTRY_HDR)
		{
			pos += entry_len(pos);	/* filler without a header */
			continue;
		}

		if (e->magic != LOG_MAGIC || e->len < ENTRY_HDR ||
			e->len > logsh->size - pos % logsh->size ||
			e->keylen > e->len - ENTRY_HDR)
		{
			ok = false;			/* cannot happen: entries are only written here */
			break;
		}
		if (!(e->flags & LOG_PAD) && e->dboid == dboid && e->relid == relid)
		{
			/* keys as written; whose writers committed is asked below */
			found = lappend(found, (e->flags & LOG_FULL) ? NULL :
							cstring_to_text_with_len((char *) e + ENTRY_HDR, e->keylen));
			xids = lappend_oid(xids, (Oid) e->xid);	/* 32 bits, as an Oid */
		}
		pos += e->len;
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
	if (!ok)
	{
		list_free_deep(*keys);
		*keys = NIL;
	}
	return ok;
}
