/*
 * xact.c — what the current transaction changed, and the commit-time bump.
 *
 * The dict trigger only records (dict, key, nest level) here.  Keys written
 * in a subtransaction that rolls back are forgotten with it, so a savepoint
 * rollback never bumps.  At commit:
 *
 *   PRE_COMMIT  make sure every changed dict has a version slot (an error
 *               here still aborts the transaction cleanly), log an intent
 *               record for hot standbys (wal.c) and append the changed keys
 *               to the shared change ring;
 *   COMMIT      runs after ProcArrayEndTransaction, so the transaction is
 *               visible to every new snapshot: only now bump each dict's
 *               version and log the bump to WAL.
 *
 * PREPARE TRANSACTION of a transaction that changed a dict is refused: the
 * bump would have to happen at COMMIT PREPARED, possibly in another backend
 * or after a restart, and a silently missed bump is the one failure ddict
 * must not have.
 */
#include "ddict.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

typedef struct Touched
{
	Oid			relid;
	int			nkeys;			/* keys recorded (for ddict.max_delta_keys) */
	bool		full;			/* a "whole dict" record exists */
} Touched;

static PendingKey *pending = NULL;
static int	npending = 0,
			maxpending = 0;
typedef struct Forget
{
	Oid			relid;
	int			pos;			/* npending when the dict was detached/dropped */
	int			level;			/* transaction nest level of the detach/drop */
} Forget;

static Forget *forgets = NULL;
static int	nforgets = 0,
			maxforgets = 0;

static Touched *touched_list(int *n);

static void
reset_state(void)
{
	pending = NULL;				/* memory lives in TopTransactionContext */
	npending = maxpending = 0;
	forgets = NULL;
	nforgets = maxforgets = 0;
}

static void
push_pending(Oid relid, bool full, const char *key, int len)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingKey *p;

	if (npending == maxpending)
	{
		maxpending = maxpending ? maxpending * 2 : 64;
		pending = pending ? repalloc_huge(pending, sizeof(PendingKey) * maxpending)
			: palloc(sizeof(PendingKey) * maxpending);
	}
	p = &pending[npending++];
	p->relid = relid;
	p->level = GetCurrentTransactionNestLevel();
	p->full = full;
	p->len = full ? 0 : len;
	p->data = NULL;
	if (!full && len > 0)
	{
		p->data = palloc(len);
		memcpy(p->data, key, len);
	}
	MemoryContextSwitchTo(old);
}

/*
 * How many keys, and whether a "whole dict" record, the transaction holds for
 * the dict it last wrote; recounted when another dict is written or after a
 * subtransaction abort dropped records.
 */
static int	cached_relid_keys = 0;
static Oid	cached_relid = InvalidOid;
static bool cached_full = false;
static int	cached_npending = -1;

void
ddict_note_change(Oid relid, const char *key, int len)
{
	if (cached_relid != relid || cached_npending != npending)
	{
		cached_relid = relid;
		cached_relid_keys = 0;
		cached_full = false;
		for (int i = 0; i < npending; i++)
			if (pending[i].relid == relid)
			{
				if (pending[i].full)
					cached_full = true;
				else
					cached_relid_keys++;
			}
	}
	/*
	 * Every record has a level no deeper than the current one (deeper ones
	 * were relabelled or dropped when their subtransaction ended), so a
	 * "whole dict" record already covers this change.
	 */
	if (cached_full)
	{
		cached_npending = npending;
		return;
	}
	if (key == NULL || cached_relid_keys >= ddict_max_delta_keys)
	{
		push_pending(relid, true, NULL, 0);
		cached_full = true;
	}
	else
	{
		push_pending(relid, false, key, len);
		cached_relid_keys++;
	}
	cached_npending = npending;
}

void
ddict_note_forget(Oid relid)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	if (nforgets == maxforgets)
	{
		maxforgets = maxforgets ? maxforgets * 2 : 8;
		forgets = forgets ? repalloc(forgets, sizeof(Forget) * maxforgets)
			: palloc(sizeof(Forget) * maxforgets);
	}
	forgets[nforgets].relid = relid;
	forgets[nforgets].pos = npending;
	forgets[nforgets].level = GetCurrentTransactionNestLevel();
	nforgets++;
	MemoryContextSwitchTo(old);
}

/* Distinct dicts in pending, palloc'd in the current context. */
static Touched *
touched_list(int *n)
{
	Touched    *t = palloc0(sizeof(Touched) * Max(npending, 1));

	*n = 0;
	for (int i = 0; i < npending; i++)
	{
		int			j;

		for (j = *n - 1; j >= 0; j--)
			if (t[j].relid == pending[i].relid)
				break;
		if (j < 0)
			t[(*n)++].relid = pending[i].relid;
	}
	return t;
}

static TransactionId commit_xid = InvalidTransactionId;

static void
pre_commit(void)
{
	Touched    *t;
	Oid		   *relids;
	int			n;

	if (npending == 0)
		return;
	t = touched_list(&n);
	relids = palloc(sizeof(Oid) * n);
	for (int i = 0; i < n; i++)
	{
		(void) ddict_version_ensure(MyDatabaseId, t[i].relid);
		ddict_note_name(t[i].relid);
		relids[i] = t[i].relid;
	}
	commit_xid = GetTopTransactionIdIfAny();
	if (TransactionIdIsValid(commit_xid))
		ddict_wal_log_intent(MyDatabaseId, commit_xid, relids, n);
	ddict_changelog_append(MyDatabaseId, pending, npending);
	pfree(relids);
	pfree(t);
}

/* Was relid detached or dropped, and not written or re-attached after that? */
static bool
forgotten(Oid relid)
{
	bool		gone = false;

	for (int i = 0; i < nforgets; i++)
	{
		if (forgets[i].relid != relid)
			continue;
		gone = true;
		for (int j = forgets[i].pos; j < npending; j++)
			if (pending[j].relid == relid)
			{
				gone = false;
				break;
			}
	}
	return gone;
}

static void
at_commit(void)
{
	Touched    *t = NULL;
	int			n = 0;

	for (int i = 0; i < nforgets; i++)
		if (forgotten(forgets[i].relid))
		{
			ddict_version_forget(MyDatabaseId, forgets[i].relid);
			ddict_wal_log_forget(MyDatabaseId, forgets[i].relid);
		}
	if (npending > 0)
		t = touched_list(&n);
	for (int i = 0; i < n; i++)
	{
		uint64		v;

		if (forgotten(t[i].relid))
			continue;
		v = ddict_version_bump(MyDatabaseId, t[i].relid);
		if (v != 0)
			ddict_wal_log_bump(MyDatabaseId, t[i].relid, commit_xid, v);
	}
	commit_xid = InvalidTransactionId;
	ddict_changelog_finish();
	if (n > 0)
		ddict_publisher_wake();
}

static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			pre_commit();
			break;
		case XACT_EVENT_COMMIT:
			at_commit();
			reset_state();
			cached_npending = -1;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (npending > 0 || nforgets > 0)
			{
				Oid			relid = npending > 0 ? pending[0].relid : forgets[0].relid;
				char	   *name = get_rel_name(relid);

				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed ddict dict \"%s\"",
								name ? name : "?"),
						 errdetail("Versions of dicts move at commit; a prepared transaction would commit without moving them."),
						 errhint("Change dicts outside of two-phase transactions.")));
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			commit_xid = InvalidTransactionId;
			ddict_changelog_finish();
			reset_state();
			cached_npending = -1;
			break;
		default:
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	int			lvl = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (npending > 0 && pending[npending - 1].level >= lvl)
			npending--;
		while (nforgets > 0 && forgets[nforgets - 1].level >= lvl)
			nforgets--;
		cached_npending = -1;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = npending - 1; i >= 0 && pending[i].level >= lvl; i--)
			pending[i].level = lvl - 1;
		for (int i = nforgets - 1; i >= 0 && forgets[i].level >= lvl; i--)
			forgets[i].level = lvl - 1;
	}
}

void
ddict_xact_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
