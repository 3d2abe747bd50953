/*
 * shmem.c — the per-dict version table in shared memory.
 *
 * One entry per (database, table) that is a dict.  A version is a hybrid
 * logical clock in microseconds since the Unix epoch: a bump sets it to
 * max(old + 1, now).  That is a strict increment — every committed writer
 * moves the version even when transactions become visible in another order
 * than they bumped — and it also makes versions readable as times and keeps
 * them from being reused after a restart or crash: a new entry (the table is
 * empty after every postmaster start) is seeded from the clock and from the
 * highest version this server has handed out or replayed, which is above any
 * version observed before the restart as long as the clock did not go back.
 *
 * Entries are created by writers before they commit (so that a full table is
 * an error in the writing transaction, never a silently missed bump), by the
 * first reader after a restart, and by WAL replay on a standby.  An existing
 * entry is proof that the table is a dict: ddict_last_updated() needs nothing
 * but a shared LWLock, a hash probe and an atomic read.
 */
#include "ddict.h"

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

typedef struct DictKey
{
	Oid			dboid;
	Oid			relid;
} DictKey;

typedef struct DictEntry
{
	DictKey		key;
	pg_atomic_uint64 version;
	pg_atomic_uint64 commits;
	pg_atomic_uint64 last_changed;	/* TimestampTz */
} DictEntry;

typedef struct DdictShared
{
	LWLock	   *lock;			/* protects the hash table's shape */
	uint64		epoch;			/* when this shared memory was set up */
	pg_atomic_uint64 hlc;		/* highest version handed out or replayed */
} DdictShared;

static DdictShared *shared = NULL;
static HTAB *dict_table = NULL;

Size
ddict_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(DdictShared)),
					hash_estimate_size(ddict_max_dicts, sizeof(DictEntry)));
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
	}
	info.keysize = sizeof(DictKey);
	info.entrysize = sizeof(DictEntry);
	dict_table = ShmemInitHash("ddict versions",
							   ddict_max_dicts, ddict_max_dicts,
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

bool
ddict_version_get(Oid dboid, Oid relid, uint64 *version)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;

	LWLockAcquire(shared->lock, LW_SHARED);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e)
		*version = pg_atomic_read_u64(&e->version);
	LWLockRelease(shared->lock);
	return e != NULL;
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
		pg_atomic_init_u64(&e->version, version ? version : hlc_seed());
		pg_atomic_init_u64(&e->commits, 0);
		pg_atomic_init_u64(&e->last_changed, 0);
	}
	return e;
}

uint64
ddict_version_ensure(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};
	uint64		v;
	bool		full;
	DictEntry  *e;

	if (ddict_version_get(dboid, relid, &v))
		return v;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = entry_create(&key, 0, &full);
	if (e)
		v = pg_atomic_read_u64(&e->version);
	LWLockRelease(shared->lock);
	if (full)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ddict cannot track more than %d dicts", ddict_max_dicts),
				 errhint("Raise ddict.max_dicts and restart the server.")));
	return v;
}

/*
 * Called after commit: must not raise an error.  Returns the new version, or
 * 0 when the entry is missing and there is no room for it.
 */
uint64
ddict_version_bump(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;
	uint64		old,
				new = 0;
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
	old = pg_atomic_read_u64(&e->version);
	do
	{
		new = Max(old + 1, ddict_now_us());
	} while (!pg_atomic_compare_exchange_u64(&e->version, &old, new));
	pg_atomic_fetch_add_u64(&e->commits, 1);
	pg_atomic_write_u64(&e->last_changed, (uint64) GetCurrentTimestamp());
	LWLockRelease(shared->lock);
	hlc_observe(new);
	return new;
}

/*
 * WAL replay of a primary's bump.  Strictly increasing here too, and equal to
 * the primary's version whenever this server's clock is not ahead.
 */
void
ddict_version_redo(Oid dboid, Oid relid, uint64 version)
{
	DictKey		key = {dboid, relid};
	DictEntry  *e;
	bool		full;
	uint64		old,
				new;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	e = hash_search(dict_table, &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		e = entry_create(&key, Max(version, pg_atomic_read_u64(&shared->hlc) + 1), &full);
		if (e)
		{
			pg_atomic_fetch_add_u64(&e->commits, 1);
			pg_atomic_write_u64(&e->last_changed, (uint64) GetCurrentTimestamp());
			hlc_observe(pg_atomic_read_u64(&e->version));
		}
		LWLockRelease(shared->lock);
		return;
	}
	old = pg_atomic_read_u64(&e->version);
	do
	{
		new = Max(old + 1, version);
	} while (!pg_atomic_compare_exchange_u64(&e->version, &old, new));
	pg_atomic_fetch_add_u64(&e->commits, 1);
	pg_atomic_write_u64(&e->last_changed, (uint64) GetCurrentTimestamp());
	LWLockRelease(shared->lock);
	hlc_observe(new);
}

void
ddict_version_forget(Oid dboid, Oid relid)
{
	DictKey		key = {dboid, relid};

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_search(dict_table, &key, HASH_REMOVE, NULL);
	LWLockRelease(shared->lock);
}

int
ddict_stats_collect(Oid dboid, DictStat **out)
{
	HASH_SEQ_STATUS seq;
	DictEntry  *e;
	int			n = 0,
				cap;

	LWLockAcquire(shared->lock, LW_SHARED);
	cap = Max(hash_get_num_entries(dict_table), 1);
	*out = palloc(sizeof(DictStat) * cap);
	hash_seq_init(&seq, dict_table);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dboid != dboid)
			continue;
		(*out)[n].relid = e->key.relid;
		(*out)[n].version = pg_atomic_read_u64(&e->version);
		(*out)[n].commits = pg_atomic_read_u64(&e->commits);
		(*out)[n].last_changed = (TimestampTz) pg_atomic_read_u64(&e->last_changed);
		n++;
	}
	LWLockRelease(shared->lock);
	return n;
}
