/*
 * prepared.c — dicts changed by prepared transactions: bumped once COMMIT
 * PREPARED made them visible, in whatever backend and after whatever
 * restart that happens.
 *
 * A two-phase transaction's commit is not its own backend's: COMMIT
 * PREPARED may run in another session, in a logical replication apply
 * worker (subscriptions with two_phase = true prepare every remote
 * two-phase transaction; refusing the PREPARE, as ddict did before, made
 * the worker retry it forever and wedged the subscription), or after a
 * restart.  The commit callbacks of the prepared transaction never run.
 * And PostgreSQL offers extensions no place in a prepared transaction's
 * state file.  So ddict keeps its own record:
 *
 *   PRE_PREPARE  (xact.c) the transaction's xid, database and changed dicts
 *                go into a slot in shared memory and into a file
 *                ddict_twophase/<xid> in the data directory, written and
 *                fsynced before PostgreSQL writes the prepare record (an
 *                error here refuses the PREPARE cleanly); the INTENT record
 *                for standbys is logged as for a commit;
 *   at the end of every transaction in every backend, while any slot is in
 *                use (one atomic read otherwise): each slot whose xid is no
 *                longer in progress is settled — committed: its dicts are
 *                bumped (with their BUMP records, which standbys replay as
 *                for any commit) and a "whole dict" entry is appended to the
 *                change ring; aborted: nothing.  Then the slot and its file
 *                go.
 *
 * The backend that runs COMMIT PREPARED ends a transaction of its own right
 * after FinishPreparedTransaction() made the prepared one visible (its
 * XACT_EVENT_COMMIT, or ABORT should anything fail after), so the bump is
 * never later than that and never earlier than visibility (DESIGN §3.1).
 * The apply worker's COMMIT PREPARED ends the same way.
 *
 * After a restart every version is re-seeded (new epoch: clients reload
 * in full), so what the files must carry across it is only the transactions
 * still prepared; the postmaster reads them back when it sets up shared
 * memory.  A file can outlive its transaction (a crash between PREPARE's
 * file and its prepare record, or before the unlink): its xid then is not
 * in progress and is settled like any other — at worst a spurious bump
 * (harmless; a missed bump is the failure ddict must not have), or dropped
 * when the xid was never handed out before the crash (not below nextXid).
 * Settling reads the commit log under XactTruncationLock and counts an xid
 * older than its horizon as committed.
 *
 * Key-level deltas are not kept for prepared transactions: the change ring
 * (changelog.c) orders writers by their in-flight slot, which belongs to a
 * backend, not to a prepared transaction.  Appending a "whole dict" entry
 * after the commit became visible sends every client that synced before it
 * a full reload, which is exact.
 *
 * Not handled, and refused with a clear error at PREPARE: a prepared
 * transaction that detached or dropped a dict, or changed more than
 * DDICT_PREPARED_MAX_DICTS dicts.
 */
#include "ddict.h"

#include <unistd.h>

#include "access/transam.h"
#include "access/twophase.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "port/pg_crc32c.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#define PREPARED_DIR	"ddict_twophase"
#define PREPARED_MAGIC	0xDD1C2FC1u

typedef struct PreparedWriter
{
	TransactionId xid;			/* invalid: the slot is free */
	bool		settling;		/* claimed by a backend settling it */
	Oid			dboid;
	int32		nrels;
	Oid			relids[DDICT_PREPARED_MAX_DICTS];
} PreparedWriter;

typedef struct PreparedFile
{
	uint32		magic;
	TransactionId xid;
	Oid			dboid;
	int32		nrels;
	Oid			relids[DDICT_PREPARED_MAX_DICTS];
	pg_crc32c	crc;			/* of everything above */
} PreparedFile;

typedef struct PreparedShared
{
	slock_t		mutex;			/* protects the slots */
	pg_atomic_uint32 used;		/* slots in use */
	int			nslots;
	PreparedWriter slots[FLEXIBLE_ARRAY_MEMBER];
} PreparedShared;

static PreparedShared *psh = NULL;

/*
 * Slots: every prepared transaction may have changed dicts, and a PREPARE
 * that fails after PRE_PREPARE holds its slot until its abort.
 */
static int
slot_count(void)
{
	return max_prepared_xacts > 0 ? max_prepared_xacts * 2 + 2 : 0;
}

Size
ddict_prepared_shmem_size(void)
{
	return add_size(offsetof(PreparedShared, slots),
					mul_size(slot_count(), sizeof(PreparedWriter)));
}

static void
file_path(char *path, TransactionId xid)
{
	snprintf(path, MAXPGPATH, PREPARED_DIR "/%08X", xid);
}

static pg_crc32c
file_crc(const PreparedFile *f)
{
	pg_crc32c	crc;

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, f, offsetof(PreparedFile, crc));
	FIN_CRC32C(crc);
	return crc;
}

/* Postmaster, setting up shared memory: the files of prepared writers. */
static void
load_files(void)
{
	DIR		   *dir = AllocateDir(PREPARED_DIR);
	struct dirent *de;
	int			n = 0;

	if (dir == NULL)
		return;					/* no two-phase writer ever: no directory */
	while ((de = ReadDirExtended(dir, PREPARED_DIR, LOG)) != NULL)
	{
		char		path[MAXPGPATH];
		PreparedFile f;
		int			fd;
		int			r;

		if (strlen(de->d_name) != 8 || strspn(de->d_name, "0123456789ABCDEF") != 8)
		{
			if (de->d_name[0] != '.')
			{
				snprintf(path, MAXPGPATH, PREPARED_DIR "/%s", de->d_name);
				(void) unlink(path);	/* a temporary file of a crashed PREPARE */
			}
			continue;
		}
		snprintf(path, MAXPGPATH, PREPARED_DIR "/%s", de->d_name);
		fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
		if (fd < 0)
		{
			elog(LOG, "ddict: could not open \"%s\": %m", path);
			continue;
		}
		r = read(fd, &f, sizeof(f));
		CloseTransientFile(fd);
		if (r != sizeof(f) || f.magic != PREPARED_MAGIC || f.crc != file_crc(&f) ||
			f.nrels < 0 || f.nrels > DDICT_PREPARED_MAX_DICTS)
		{
			elog(LOG, "ddict: ignoring invalid file \"%s\"", path);
			continue;
		}
		if (n >= psh->nslots)
		{
			/* cannot happen: at most as many files as slots were in use */
			elog(WARNING, "ddict: more prepared writers than slots; \"%s\" left for later", path);
			break;
		}
		psh->slots[n].xid = f.xid;
		psh->slots[n].settling = false;
		psh->slots[n].dboid = f.dboid;
		psh->slots[n].nrels = f.nrels;
		memcpy(psh->slots[n].relids, f.relids, sizeof(Oid) * f.nrels);
		n++;
	}
	FreeDir(dir);
	pg_atomic_write_u32(&psh->used, n);
	if (n > 0)
		elog(LOG, "ddict: %d prepared transaction(s) with dict changes to bump at COMMIT PREPARED", n);
}

void
ddict_prepared_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	psh = ShmemInitStruct("ddict prepared writers", ddict_prepared_shmem_size(), &found);
	if (!found)
	{
		SpinLockInit(&psh->mutex);
		pg_atomic_init_u32(&psh->used, 0);
		psh->nslots = slot_count();
		for (int i = 0; i < psh->nslots; i++)
			psh->slots[i].xid = InvalidTransactionId;
		if (psh->nslots > 0)
			load_files();
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * PRE_PREPARE of transaction xid, which changed the n dicts relids of the
 * current database: record it durably.  Errors refuse the PREPARE.
 */
void
ddict_prepared_register(TransactionId xid, const Oid *relids, int n)
{
	PreparedFile f;
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	int			fd;
	int			slot = -1;

	if (psh->nslots == 0)
		return;					/* max_prepared_transactions = 0: PREPARE fails next */
	Assert(TransactionIdIsValid(xid));
	if (n > DDICT_PREPARED_MAX_DICTS)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that changed more than %d ddict dicts",
						DDICT_PREPARED_MAX_DICTS)));

	memset(&f, 0, sizeof(f));
	f.magic = PREPARED_MAGIC;
	f.xid = xid;
	f.dboid = MyDatabaseId;
	f.nrels = n;
	memcpy(f.relids, relids, sizeof(Oid) * n);
	f.crc = file_crc(&f);

	if (MakePGDirectory(PREPARED_DIR) == 0)
		fsync_fname(".", true);
	else if (errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", PREPARED_DIR)));
	file_path(path, xid);
	snprintf(tmp, MAXPGPATH, "%s.tmp", path);
	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
	errno = 0;
	if (write(fd, &f, sizeof(f)) != sizeof(f))
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmp)));
	}
	if (pg_fsync(fd) != 0)
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", tmp)));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", tmp)));
	/* fsyncs the file and the directory */
	(void) durable_rename(tmp, path, ERROR);

	SpinLockAcquire(&psh->mutex);
	for (int i = 0; i < psh->nslots; i++)
		if (!TransactionIdIsValid(psh->slots[i].xid))
		{
			slot = i;
			psh->slots[i].xid = xid;
			psh->slots[i].settling = false;
			psh->slots[i].dboid = MyDatabaseId;
			psh->slots[i].nrels = n;
			memcpy(psh->slots[i].relids, relids, sizeof(Oid) * n);
			pg_atomic_fetch_add_u32(&psh->used, 1);
			break;
		}
	SpinLockRelease(&psh->mutex);
	if (slot < 0)
	{
		(void) unlink(path);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ddict cannot track more prepared transactions that changed dicts"),
				 errhint("Commit or roll back prepared transactions first.")));
	}
}

/* Free slot i (claimed for settling) and its file. */
static void
release_slot(int i, TransactionId xid)
{
	char		path[MAXPGPATH];

	file_path(path, xid);
	(void) unlink(path);		/* a file left behind is settled again: harmless */
	SpinLockAcquire(&psh->mutex);
	psh->slots[i].xid = InvalidTransactionId;
	psh->slots[i].settling = false;
	SpinLockRelease(&psh->mutex);
	pg_atomic_fetch_sub_u32(&psh->used, 1);
}

/* The PREPARE of xid failed after PRE_PREPARE: forget it. */
void
ddict_prepared_unregister(TransactionId xid)
{
	int			slot = -1;

	if (psh == NULL || psh->nslots == 0 || !TransactionIdIsValid(xid))
		return;
	SpinLockAcquire(&psh->mutex);
	for (int i = 0; i < psh->nslots; i++)
		if (psh->slots[i].xid == xid && !psh->slots[i].settling)
		{
			psh->slots[i].settling = true;
			slot = i;
			break;
		}
	SpinLockRelease(&psh->mutex);
	if (slot >= 0)
		release_slot(slot, xid);
}

typedef enum PreparedState
{
	PREPARED_RUNNING,
	PREPARED_COMMITTED,
	PREPARED_ABORTED
} PreparedState;

static PreparedState
prepared_state(TransactionId xid)
{
	PreparedState st;

	if (TransactionIdIsInProgress(xid))
		return PREPARED_RUNNING;
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	if (!TransactionIdPrecedes(xid, ReadNextTransactionId()))
		st = PREPARED_ABORTED;	/* never handed out: a PREPARE lost in a crash */
	else if (TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
		st = PREPARED_COMMITTED;	/* long gone; maybe committed */
	else if (TransactionIdDidCommit(xid))
		st = PREPARED_COMMITTED;
	else
		st = PREPARED_ABORTED;
	LWLockRelease(XactTruncationLock);
	return st;
}

/*
 * End of any transaction: settle the prepared writers that finished.  Runs
 * in commit and abort callbacks, so it allocates nothing and raises nothing
 * of its own.
 */
void
ddict_prepared_settle(void)
{
	if (psh == NULL || psh->nslots == 0 || pg_atomic_read_u32(&psh->used) == 0)
		return;
	if (RecoveryInProgress())
		return;					/* a standby moves versions by replay */

	for (int i = 0; i < psh->nslots; i++)
	{
		PreparedWriter w;
		PreparedState st;

		SpinLockAcquire(&psh->mutex);
		w = psh->slots[i];
		SpinLockRelease(&psh->mutex);
		if (!TransactionIdIsValid(w.xid) || w.settling)
			continue;
		st = prepared_state(w.xid);
		if (st == PREPARED_RUNNING)
			continue;

		/* claim it: exactly one backend settles a slot */
		SpinLockAcquire(&psh->mutex);
		if (psh->slots[i].xid != w.xid || psh->slots[i].settling)
		{
			SpinLockRelease(&psh->mutex);
			continue;
		}
		psh->slots[i].settling = true;
		SpinLockRelease(&psh->mutex);

		if (st == PREPARED_COMMITTED)
		{
			for (int r = 0; r < w.nrels; r++)
			{
				uint64		v;

				/* clients that synced before see a "whole dict" entry */
				ddict_changelog_append_full(w.dboid, w.relids[r]);
				v = ddict_version_bump(w.dboid, w.relids[r], w.xid);
				if (v != 0)
					ddict_wal_log_bump(w.dboid, w.relids[r], w.xid, v);
			}
			if (w.nrels > 0)
			{
				ddict_publisher_wake();
				ddict_streamer_wake(w.dboid, false);
			}
		}
		ddict_version_release(w.xid);	/* creator marks (shmem.c) */
		release_slot(i, w.xid);
	}
	ddict_changelog_finish();	/* the whole-dict entries are bumped */
}
