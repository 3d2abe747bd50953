/*
 * shmem.c — the per-dict version table in shared memory.
 *
 * One entry per (database, table) that is a dict.  A version is a hybrid
 * logical clock in microseconds since the Unix epoch: a bump sets it to
 * max(the clock's last value + 1, now), one clock for all dicts, so no two
 * dicts of a primary ever have the same version.  That is a strict
 * increment — every committed writer
 * moves the version even when transactions become visible in another order
 * than they bumped — and it also makes versions readable as times and keeps
 * them from being reused after a restart or crash: a new entry (the table is
 * empty after every postmaster start) is seeded from the clock and from the
 * highest version this server has handed out or replayed, which is above any
 * version observed before the restart as long as the clock did not go back.
 *
 * Hot standbys (and a primary replaying WAL after a crash) also keep
 * *pending* bumps: a writer logs an intent record (its xid and dicts) just
 * before its commit record, and its bump record just after it becomes
 * visible.  Replaying the intent makes a pending entry; replaying the bump
 * clears it and moves the version to the primary's.  If the bump record was
 * lost (the primary crashed between its commit and the WAL writer's flush),
 * the first reader of the dict resolves the pending entry itself: once the
 * xid is committed and no longer in progress for a fresh snapshot, and its
 * bump record had a second to arrive, the version moves; an aborted xid is
 * dropped.  So the version never moves
 * before the rows are visible, and a committed write never goes unbumped.
 *
 * Writers can abort after logging their intent (a serialization failure at
 * COMMIT, a failed PREPARE), and nothing in the WAL of ours says so.  Replay
 * therefore prunes the table itself once it holds many entries: aborted
 * writers are dropped, committed ones past the grace are bumped.  A writer
 * older than the commit log's horizon (truncated by VACUUM; its status can
 * no longer be read, and asking would fail every read of the dict) is
 * bumped, since it may have committed: spurious bumps are harmless.  When
 * the table is full all the same, the intent is counted on its dict as lost
 * and the bump record that follows moves the version strictly.
 *
 * Entries are created by writers before they commit (so that a full table is
 * an error in the writing transaction, never a silently missed bump), by the
 * first reader after a restart, and by WAL replay on a standby.  An existing
 * entry is proof that the table is a dict: ddict_last_updated() needs nothing
 * but a shared LWLock, a hash probe and an atomic read.
 *
 * Each entry has a slot on the versions page (vpage.c), the file same-host
 * clients map read-only: attached when the entry is created, detached when
 * it is forgotten, and moved together with the version, under the same lock.
 * Whatever moves a version must go through advance() or move the page too.
 */
#include "ddict.h"
#include "vpage.h"

#include "access/transam.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/procarray.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/inval.h"

int			ddict_max_dicts = 1024;

void
ddict_shmem_define_gucs(void)
{
	DefineCustomIntVariable("ddict.max_dicts",
							"Maximum number of dicts (over all databases) whose versions are tracked.",
							NULL,
							&ddict_max_dicts,
							1024, 16, INT_MAX / 2,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}

typedef struct DictKey
{
	Oid			dboid;
	Oid			relid;
} DictKey;

typedef struct DictEntry
{
	DictKey		key;
	pg_atomic_uint32 npending;	/* pending bumps of this dict (replay only) */
	uint32		lost;			/* intents replayed with no room to keep them:
								 * their bump records move the version
								 * strictly (replay only; exclusive lock) */
	pg_atomic_uint32 creator;	/* xid of the uncommitted transaction that
								 * created the dict, until it ended; see
								 * evict_dead() */
	pg_atomic_uint64 version;
	pg_atomic_uint64 commits;
	pg_atomic_uint64 last_changed;	/* TimestampTz */
	pg_atomic_uint64 published;		/* last version the publisher sent */
	char		name[DDICT_NAME_LEN];	/* "database:schema.table", or "" */
	int			vslot;			/* slot on the versions page (vpage.c), or -1 */
} DictEntry;

typedef struct DdictShared
{
	LWLock	   *lock;			/* protects the hash table's shape */
	uint64		epoch;			/* when this shared memory was set up */
	pg_atomic_uint64 hlc;		/* highest version handed out or replayed */
	int			prune_at;		/* replay prunes pending bumps from this many
								 * on (exclusive lock) */
	bool		warned_full;	/* "too many pending bumps" said (idem) */
} DdictShared;

typedef struct PendingBumpKey
{
	Oid			dboid;
	Oid			relid;
	TransactionId xid;
} PendingBumpKey;

typedef struct PendingBump
{
	PendingBumpKey key;
	TimestampTz replayed_at;
} PendingBump;

/*
 * How long a reader leaves a visible commit's bump to its BUMP record (which
 * carries the primary's version, keeping both servers' versions equal) before
 * it moves the version itself: a few WAL writer rounds.
 */
#define PENDING_GRACE_MS	1000

/* Replay looks for finished writers once this many bumps are pending. */
#define PRUNE_MIN			64

static DdictShared *shared = NULL;
static HTAB *dict_table = NULL;
static HTAB *pending_table = NULL;

static int
pending_capacity(void)
{
	return MaxBackends * 8 + ddict_max_dicts * 2;
}

Size
ddict_shmem_size(void)
{
	return add_size(add_size(MAXALIGN(sizeof(DdictShared)),
							 hash_estimate_size(ddict_max_dicts, sizeof(DictEntry))),
					hash_estimate_size(pending_capacity(), sizeof(PendingBump)));
}

void
ddict_shmem_init(void)
{
	HASHCTL		info;
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("ddict", sizeof(DdictShared), &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("ddict"))[0].lock;
		shared->epoch = ddict_now_us();
		pg_atomic_init_u64(&shared->hlc, shared->epoch);
		shared->prune_at = PRUNE_MIN;
		shared->warned_full = false;
	}
	info.keysize = sizeof(DictKey);
	info.entrysize = sizeof(DictEntry);
	dict_table = ShmemInitHash("ddict versions",
							   ddict_max_dicts, ddict_max_dicts,
							   &info, HASH_ELEM | HASH_BLOBS);
	info.keysize = sizeof(PendingBumpKey);
	info.entrysize = sizeof(PendingBump);
	pending_table = ShmemInitHash("ddict pending bumps",
								  pending_capacity(), pending_capacity(),
								  &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

uint64
ddict_epoch(void)
{
	ddict_require_preload();
	return shared->epoch;
}

/* Raise the global clock to at least v. */
static void
hlc_observe(uint64 v)
{
	uint64		cur = pg_atomic_read_u64(&shared->hlc);

	while (cur < v && !pg_atomic_compare_exchange_u64(&shared->hlc, &cur, v))
		;
}

/* A version never handed out before: above the clock and every version seen. */
static uint64
hlc_seed(void)
{
	uint64		cur = pg_atomic_read_u64(&shared->hlc);
	uint64		next;

	do
	{
		next = Max(cur + 1, ddict_now_us());
	} while (!pg_atomic_compare_exchange_u64(&shared->hlc, &cur, next));
	return next;
}

/* Does the slot of (dboid, relid) still need its name for the publisher? */
bool
ddict_version_needs_name(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;
	bool		needs;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	needs = (e != NULL && e->name[0] == '\0');
	LWLockRelease(shared->lock);
	return needs;
}

bool
ddict_version_get(Oid dboid, Oid relid, uint64 *version, bool *pending)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e)
	{
		*version = pg_atomic_read_u64(&e->version);
		if (pending)
			*pending = pg_atomic_read_u32(&e->npending) > 0;
	}
	LWLockRelease(shared->lock);
	return e != NULL;
}

/*
 * The versions of n relations of one database: unchanged[i] is whether
 * relids[i] has a slot at versions[i] with no bump pending (the check of
 * many dicts, probe.c).  One shared lock for a run of lookups instead of
 * one each; released every 64, so that a long probe does not hold off
 * the creation of slots.
 */
void
ddict_versions_match(Oid dboid, int n, const Oid *relids, const uint64 *versions,
					 bool *unchanged)
{
	for (int i = 0; i < n; i += 64)
	{
		LWLockAcquire(shared->lock, LW_SHARED);
		for (int j = i; j < n && j < i + 64; j++)
		{
			DictKey		key = {dboid, relids[j]};
			DictEntry  *e;

			unchanged[j] = false;
			if (relids[j] == InvalidOid)
				continue;
			e = hash_search(dict_table, &key, HASH_FIND, NULL);
			unchanged[j] = e != NULL && pg_atomic_read_u32(&e->npending) == 0 &&
				pg_atomic_read_u64(&e->version) == versions[j];
		}
		LWLockRelease(shared->lock);
	}
}

static DictEntry *
entry_create(DictKey *key, uint64 version, bool *full)
{
	DictEntry  *e;
	bool		found;

	/*
	 * A shared hash table takes spare shared memory beyond its size estimate
	 * rather than failing; the limit is ours to keep (as pg_stat_statements
	 * does), so that the server's other users keep that reserve.
	 */
	e = hash_search(dict_table, key, HASH_FIND, NULL);
	if (e == NULL && hash_get_num_entries(dict_table) >= ddict_max_dicts)
	{
		*full = true;
		return NULL;
	}
	e = hash_search(dict_table, key, HASH_ENTER_NULL, &found);
	*full = (e == NULL);
	if (e && !found)
	{
		pg_atomic_init_u32(&e->npending, 0);
		e->lost = 0;
		pg_atomic_init_u32(&e->creator, InvalidTransactionId);
		pg_atomic_init_u64(&e->version, version ? version : hlc_seed());
		pg_atomic_init_u64(&e->commits, 0);
		pg_atomic_init_u64(&e->last_changed, 0);
		pg_atomic_init_u64(&e->published, 0);
		e->name[0] = '\0';
		e->vslot = ddict_vpage_attach(key->dboid, key->relid,
									  pg_atomic_read_u64(&e->version));
	}
	return e;
}

/*
 * Copy one item per entry that fill() accepts into a palloc'd array, under
 * the shared lock; returns how many.  The readers of the whole table
 * (statistics, the publisher) differ only in what they copy.
 */
typedef bool (*entry_fill) (DictEntry *e, void *item, const void *arg);

static int
collect_entries(Size itemsize, void **out, entry_fill fill, const void *arg)
{
	HASH_SEQ_STATUS seq;
	DictEntry  *e;
	int			n = 0;
	char	   *items;

	LWLockAcquire(shared->lock, LW_SHARED);
	items = palloc(itemsize * Max(hash_get_num_entries(dict_table), 1));
	hash_seq_init(&seq, dict_table);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (fill(e, items + itemsize * n, arg))
			n++;
	LWLockRelease(shared->lock);
	*out = items;
	return n;
}

typedef struct EvictItem
{
	DictKey		key;
	TransactionId creator;
} EvictItem;

static bool
fill_evict(DictEntry *e, void *item, const void *arg)
{
	EvictItem  *it = item;

	it->key = e->key;
	it->creator = pg_atomic_read_u32(&e->creator);
	return true;
}

/*
 * Is the transaction that created a dict still between its PRE_COMMIT and
 * the end of its commit (or prepared, waiting for COMMIT PREPARED)?  Its
 * table is in no catalog snapshot of other backends yet, but it is alive.
 * In progress, or committed but not yet through its commit callback (which
 * clears the mark): alive.  Aborted, or older than the commit log: not.
 */
static bool
creator_alive(TransactionId xid)
{
	if (!TransactionIdIsValid(xid))
		return false;
	if (!TransactionIdIsNormal(xid) ||
		TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
		return false;
	if (TransactionIdIsInProgress(xid))
		return true;
	return TransactionIdDidCommit(xid);
}

/*
 * Free the slots of dicts that no longer exist (dropped databases, tables
 * dropped without the event trigger): their versions are never reused,
 * since a re-created slot is seeded above everything handed out.
 *
 * A table that is not in the catalogs may also be one that a transaction
 * still committing has just created (its PRE_COMMIT made the slot; its
 * commit is not visible yet).  Evicting that slot would let the new dict
 * commit without one — its bump lost, and every later use of it failing with
 * "cannot track more than N dicts" instead of its creating transaction —
 * so slots whose creator is alive are kept.  The creator is checked first:
 * a creator seen finished has become visible, and the catalog lookup after
 * it (with invalidations accepted) then finds its table.
 */
static void
evict_dead(void)
{
	EvictItem  *dead;
	int			n = collect_entries(sizeof(EvictItem), (void **) &dead, fill_evict, NULL);

	for (int i = 0; i < n; i++)
	{
		bool		gone;

		if (creator_alive(dead[i].creator))
			continue;
		if (dead[i].key.dboid == MyDatabaseId)
		{
			AcceptInvalidationMessages();
			gone = !SearchSysCacheExists1(RELOID, ObjectIdGetDatum(dead[i].key.relid));
		}
		else
			gone = !SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dead[i].key.dboid));
		if (gone)
			ddict_version_forget(dead[i].key.dboid, dead[i].key.relid);
	}
	pfree(dead);
}

/* Mark e as created by xid (when valid). Exclusive lock held. */
static void
mark_creator(DictEntry *e, TransactionId creator)
{
	if (TransactionIdIsValid(creator))
		pg_atomic_write_u32(&e->creator, creator);
}

/*
 * The version of (dboid, relid), its slot made if needed; an error when the
 * table is full.  creator: the xid of the calling transaction when it
 * created the dict's table (the slot is then kept from eviction until that
 * transaction ends, see evict_dead()), else InvalidTransactionId.
 */
uint64
ddict_version_ensure(Oid dboid, Oid relid, TransactionId creator)
{
	DictKey		key = {dboid, relid};
	uint64		v = 0;
	bool		full = false;
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e && (!TransactionIdIsValid(creator) ||
			  pg_atomic_read_u32(&e->creator) == creator))
	{
		v = pg_atomic_read_u64(&e->version);
		LWLockRelease(shared->lock);
		return v;
	}
	LWLockRelease(shared->lock);

	for (int attempt = 0; attempt < 2; attempt++)
	{
		if (attempt == 1)
			evict_dead();
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		e = entry_create(&key, 0, &full);
		if (e)
		{
			mark_creator(e, creator);
			v = pg_atomic_read_u64(&e->version);
		}
		LWLockRelease(shared->lock);
		if (!full)
			break;
	}
	if (full)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ddict cannot track more than %d dicts", ddict_max_dicts),
				 errhint("Raise ddict.max_dicts and restart the server.")));
	return v;
}

/*
 * The transaction xid ended (aborted, or its prepared transaction was
 * resolved): clear its creator marks.  Nothing to do after a commit, whose
 * bumps clear them.
 */
void
ddict_version_release(TransactionId xid)
{
	HASH_SEQ_STATUS seq;
	DictEntry  *e;

	if (!TransactionIdIsValid(xid))
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	hash_seq_init(&seq, dict_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		uint32		expected = xid;

		(void) pg_atomic_compare_exchange_u32(&e->creator, &expected, InvalidTransactionId);
	}
	LWLockRelease(shared->lock);
}

/* What moves with every version change of e. Lock held. */
static void
moved(DictEntry *e, uint64 new)
{
	pg_atomic_fetch_add_u64(&e->commits, 1);
	pg_atomic_write_u64(&e->last_changed, (uint64) GetCurrentTimestamp());
	ddict_vpage_set(e->vslot, new);
}

/* Move e's version strictly, to at least floor (replay). Lock held. */
static uint64
advance(DictEntry *e, uint64 floor)
{
	uint64		old = pg_atomic_read_u64(&e->version);
	uint64		new;

	do
	{
		new = Max(old + 1, floor);
	} while (!pg_atomic_compare_exchange_u64(&e->version, &old, new));
	moved(e, new);
	return new;
}

/*
 * Bump e to the server's next clock value (hlc_seed()): above its own version
 * and unique among all dicts, so that two relations never show the same
 * version — a client that follows a name through a relation swap and checks
 * only the version (the Redis GET of autosync) sees the change.  Lock held.
 */
static uint64
advance_unique(DictEntry *e)
{
	uint64		old = pg_atomic_read_u64(&e->version);
	uint64		new;

	do
	{
		new = hlc_seed();
	} while (new <= old || !pg_atomic_compare_exchange_u64(&e->version, &old, new));
	moved(e, new);
	return new;
}

/*
 * Called after commit: must not raise an error.  Returns the new version, or
 * 0 when the entry is missing and there is no room for it.  xid: the
 * committed transaction, whose creator mark (if any) is cleared.
 */
uint64
ddict_version_bump(Oid dboid, Oid relid, TransactionId xid)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;
	uint64		new;
	bool		full;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		LWLockRelease(shared->lock);
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		e = entry_create(&key, 0, &full);
		if (e == NULL)
		{
			LWLockRelease(shared->lock);
			return 0;
		}
	}
	new = advance_unique(e);
	if (TransactionIdIsValid(xid))
	{
		uint32		expected = xid;

		/* the creator's commit is visible: its table is in the catalogs */
		(void) pg_atomic_compare_exchange_u32(&e->creator, &expected, InvalidTransactionId);
	}
	LWLockRelease(shared->lock);
	return new;
}

/* Find or create the entry of a replayed dict. Lock held exclusively. */
static DictEntry *
redo_entry(DictKey *key, uint64 version)
{
	DictEntry  *e = hash_search(dict_table, key, HASH_FIND, NULL);
	bool		full;

	if (e == NULL)
		e = entry_create(key, Max(version, pg_atomic_read_u64(&shared->hlc) + 1), &full);
	if (e == NULL)
		elog(WARNING, "ddict: no room to track dict %u of database %u during replay; raise ddict.max_dicts",
			 key->relid, key->dboid);
	return e;
}

/*
 * What became of a pending bump's writer.  Asked under XactTruncationLock,
 * so that the commit log is not truncated between the horizon check and the
 * read: an xid older than the commit log's horizon finished long ago and its
 * status can no longer be read (asking would fail with "could not access
 * status of transaction", on every read of the dict).  Such a writer may
 * have committed: it is given a bump (a spurious bump is harmless, a missed
 * one is not).  In replay (in_redo) an xid that neither committed nor
 * explicitly aborted may still commit further on in the WAL (during crash
 * recovery the proc array knows no running xids), so it counts as running.
 */
typedef enum WriterState
{
	WRITER_RUNNING,
	WRITER_COMMITTED,
	WRITER_ABORTED,
	WRITER_FORGOTTEN
} WriterState;

static WriterState
writer_state(TransactionId xid, bool in_redo)
{
	WriterState st;

	LWLockAcquire(XactTruncationLock, LW_SHARED);
	if (!TransactionIdIsNormal(xid) ||
		TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
		st = WRITER_FORGOTTEN;
	else if (TransactionIdDidCommit(xid))
		st = WRITER_COMMITTED;
	else if (TransactionIdIsInProgress(xid))
		st = WRITER_RUNNING;
	else if (TransactionIdDidCommit(xid))	/* committed in between */
		st = WRITER_COMMITTED;
	else if (in_redo && !TransactionIdDidAbort(xid))
		st = WRITER_RUNNING;
	else
		st = WRITER_ABORTED;
	LWLockRelease(XactTruncationLock);
	return st;
}

/* Drop pending bump p of dict e (NULL: its dict is gone). Exclusive lock. */
static void
pending_drop(PendingBump *p, DictEntry *e)
{
	hash_search(pending_table, &p->key, HASH_REMOVE, NULL);
	if (e)
		pg_atomic_fetch_sub_u32(&e->npending, 1);
}

/*
 * Replay: settle the pending bumps whose writers finished, so that writers
 * that failed at COMMIT after logging their intent (serialization failures)
 * do not fill the table while no reader asks about their dicts.  Aborted:
 * dropped.  Committed more than the grace ago (its commit record, earlier in
 * the WAL, has been replayed, so it is visible) or forgotten by the commit
 * log: bumped and dropped.  Exclusive lock held.
 */
static void
prune_pending(void)
{
	HASH_SEQ_STATUS seq;
	PendingBump *p;
	TimestampTz now = GetCurrentTimestamp();
	long		left;

	hash_seq_init(&seq, pending_table);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		DictKey		key = {p->key.dboid, p->key.relid};
		DictEntry  *e = hash_search(dict_table, &key, HASH_FIND, NULL);

		switch (writer_state(p->key.xid, true))
		{
			case WRITER_RUNNING:
				break;
			case WRITER_COMMITTED:
				if (!TimestampDifferenceExceeds(p->replayed_at, now, PENDING_GRACE_MS))
					break;
				/* FALLTHROUGH */
			case WRITER_FORGOTTEN:
				if (e)
					(void) advance_unique(e);
				pending_drop(p, e);
				break;
			case WRITER_ABORTED:
				pending_drop(p, e);
				break;
		}
	}
	left = hash_get_num_entries(pending_table);
	shared->prune_at = (int) Min(Max(PRUNE_MIN, left * 2), pending_capacity());
	if (left < pending_capacity())
		shared->warned_full = false;
}

/*
 * WAL replay of a writer's intent: its xid will bump relid once visible.
 * When the table is full even after pruning, the intent is counted as lost
 * on the dict: the bump record that follows the commit then moves the
 * version strictly (ddict_version_redo).  What is not covered then is only
 * a primary crash before that bump record was flushed (README, Hot standby).
 */
void
ddict_version_redo_intent(Oid dboid, Oid relid, TransactionId xid)
{
	DictKey		key = {dboid, relid};
	PendingBumpKey pkey = {dboid, relid, xid};
	DictEntry  *e;
	bool		found;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = redo_entry(&key, 0);
	if (e)
	{
		long		n = hash_get_num_entries(pending_table);
		PendingBump *p = NULL;

		if (n >= shared->prune_at || n >= pending_capacity())
		{
			prune_pending();
			n = hash_get_num_entries(pending_table);
		}
		if (n < pending_capacity())
			p = hash_search(pending_table, &pkey, HASH_ENTER_NULL, &found);
		if (p == NULL)
		{
			e->lost++;
			if (!shared->warned_full)
				elog(WARNING, "ddict: too many pending bumps during replay; dicts move only with their bump records until some are settled");
			shared->warned_full = true;
		}
		else if (!found)
		{
			p->replayed_at = GetCurrentTimestamp();
			pg_atomic_fetch_add_u32(&e->npending, 1);
		}
	}
	LWLockRelease(shared->lock);
}

/*
 * WAL replay of a primary's bump.  Strictly increasing here too, and equal to
 * the primary's version whenever this server's clock is not ahead.  When a
 * reader already resolved the pending bump, only catch up with the primary;
 * when the dict has intents that found no room (lost), move strictly: this
 * may be one of them (and if it is not, the bump is merely spurious).
 */
void
ddict_version_redo(Oid dboid, Oid relid, TransactionId xid, uint64 version)
{
	DictKey		key = {dboid, relid};
	PendingBumpKey pkey = {dboid, relid, xid};
	DictEntry  *e;
	uint64		new;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = redo_entry(&key, version);
	if (e == NULL)
	{
		LWLockRelease(shared->lock);
		return;
	}
	if (hash_search(pending_table, &pkey, HASH_REMOVE, NULL))
	{
		pg_atomic_fetch_sub_u32(&e->npending, 1);
		new = advance(e, version);
	}
	else if (e->lost > 0)
	{
		e->lost--;
		new = advance(e, version);
	}
	else
	{
		uint64		old = pg_atomic_read_u64(&e->version);

		while (old < version && !pg_atomic_compare_exchange_u64(&e->version, &old, version))
			;
		new = Max(old, version);
		ddict_vpage_set(e->vslot, new);
	}
	hlc_observe(new);
	LWLockRelease(shared->lock);
}

/*
 * Resolve replayed pending bumps of a dict whose bump record never came:
 * bump for each xid that committed and is visible to a fresh snapshot, drop
 * each xid that did not commit.  Called by readers, in a transaction.
 */
void
ddict_version_resolve(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;
	HASH_SEQ_STATUS seq;
	PendingBump *p;
	Snapshot	snap = GetLatestSnapshot();
	TimestampTz now = GetCurrentTimestamp();
	uint64		new = 0;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		LWLockRelease(shared->lock);
		return;
	}
	hash_seq_init(&seq, pending_table);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		bool		done = false;

		if (p->key.dboid != dboid || p->key.relid != relid)
			continue;
		switch (writer_state(p->key.xid, false))
		{
			case WRITER_RUNNING:
				break;
			case WRITER_COMMITTED:
				done = !XidInMVCCSnapshot(p->key.xid, snap) &&
					TimestampDifferenceExceeds(p->replayed_at, now, PENDING_GRACE_MS);
				if (done)
					new = advance_unique(e);
				break;
			case WRITER_FORGOTTEN:
				new = advance_unique(e);
				done = true;
				break;
			case WRITER_ABORTED:
				done = true;
				break;
		}
		if (done)
			pending_drop(p, e);
	}
	if (new)
		hlc_observe(new);
	LWLockRelease(shared->lock);
}

void
ddict_version_forget(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};
	HASH_SEQ_STATUS seq;
	PendingBump *p;
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = hash_search(dict_table, &key, HASH_REMOVE, NULL);
	if (e)
		ddict_vpage_detach(e->vslot);
	hash_seq_init(&seq, pending_table);
	while ((p = hash_seq_search(&seq)) != NULL)
		if (p->key.dboid == dboid && p->key.relid == relid)
			hash_search(pending_table, &p->key, HASH_REMOVE, NULL);
	LWLockRelease(shared->lock);
}

static bool
fill_stat(DictEntry *e, void *item, const void *arg)
{
	DictStat   *st = item;

	if (e->key.dboid != *(const Oid *) arg)
		return false;
	st->relid = e->key.relid;
	st->version = pg_atomic_read_u64(&e->version);
	st->commits = pg_atomic_read_u64(&e->commits);
	st->last_changed = (TimestampTz) pg_atomic_read_u64(&e->last_changed);
	return true;
}

int
ddict_stats_collect(Oid dboid, DictStat **out)
{
	return collect_entries(sizeof(DictStat), (void **) out, fill_stat, &dboid);
}

/*
 * Publishing support (publisher.c).  Names are set by backends, which have
 * catalog access, whenever they commit a change or read a dict's version
 * first; the publisher, which is connected to no database, only copies them.
 */
void
ddict_version_set_name(Oid dboid, Oid relid, const char *name)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e && strncmp(e->name, name, DDICT_NAME_LEN) != 0)
	{
		LWLockRelease(shared->lock);
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		e = hash_search(dict_table, &key, HASH_FIND, NULL);
		if (e)
			strlcpy(e->name, name, DDICT_NAME_LEN);
	}
	LWLockRelease(shared->lock);
}

static bool
fill_publish(DictEntry *e, void *item, const void *arg)
{
	PublishItem *it = item;
	uint64		v = pg_atomic_read_u64(&e->version);

	if (e->name[0] == '\0' ||
		(!*(const bool *) arg && v == pg_atomic_read_u64(&e->published)))
		return false;
	it->dboid = e->key.dboid;
	it->relid = e->key.relid;
	it->version = v;
	it->changed = (TimestampTz) pg_atomic_read_u64(&e->last_changed);
	memcpy(it->name, e->name, DDICT_NAME_LEN);
	return true;
}

int
ddict_publish_collect(bool all, PublishItem **out)
{
	return collect_entries(sizeof(PublishItem), (void **) out, fill_publish, &all);
}

void
ddict_publish_done(Oid dboid, Oid relid, uint64 version)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e)
	{
		uint64		old = pg_atomic_read_u64(&e->published);

		while (old < version && !pg_atomic_compare_exchange_u64(&e->published, &old, version))
			;
	}
	LWLockRelease(shared->lock);
}
