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
 * PREPARE TRANSACTION of a transaction that changed a dict does what
 * PRE_COMMIT does but the change ring, and hands the dicts to prepared.c,
 * which records them durably and bumps them once COMMIT PREPARED made the
 * changes visible — possibly in another backend, a logical replication
 * apply worker (two_phase subscriptions prepare every remote two-phase
 * transaction) or after a restart.  A prepared transaction that detached
 * or dropped a dict is still refused.
 *
 * A dict whose table the transaction created is not in other backends'
 * catalog snapshots until it commits: its slot is marked with the xid, so
 * that slot eviction (shmem.c) leaves it alone until the transaction ended.
 */
#include "ddict.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

int			ddict_max_delta_keys = 10000;

void
ddict_xact_define_gucs(void)
{
	DefineCustomIntVariable("ddict.max_delta_keys",
							"Keys one transaction may change in one dict before clients reload it in full.",
							NULL,
							&ddict_max_delta_keys,
							10000, 0, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
}

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
	char	   *name;			/* qualified name, for messages (it may be gone) */
} Forget;

static Forget *forgets = NULL;
static int	nforgets = 0,
			maxforgets = 0;


/* per dict of this transaction; see count_for() */
static Touched *counts = NULL;
static int	ncounts = 0,
			maxcounts = 0;
static bool counts_valid = true;


/*
 * This transaction changed which dicts publish their changes (streamer.c); a
 * subtransaction that rolls back leaves it set: one spurious wake-up.
 */
static bool streamer_config = false;

void
ddict_streamer_note_config(void)
{
	streamer_config = true;
}

/*
 * Keys of rows from before that this transaction updated without changing
 * key or value: not changes, but the rows are now this transaction's, which
 * skip_transient_keys() must know.  Past a bound it gives up instead.
 */
static PendingKey *kept = NULL;
static int	nkept = 0,
			maxkept = 0;
static bool kept_overflow = false;

static void
reset_state(void)
{
	kept = NULL;
	nkept = maxkept = 0;
	kept_overflow = false;
	pending = NULL;				/* memory lives in TopTransactionContext */
	npending = maxpending = 0;
	forgets = NULL;
	nforgets = maxforgets = 0;
	counts = NULL;
	ncounts = maxcounts = 0;
	counts_valid = true;
	streamer_config = false;
}

static void
push_pending(Oid relid, bool full, const char *key, int len, KeyWrite w)
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
	p->skip = false;
	p->w = w;
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
 * Per dict of this transaction: keys recorded and whether a "whole dict"
 * record exists.  Kept incrementally (a transaction writes few dicts);
 * rebuilt from pending after a subtransaction abort dropped records.
 */

static void rebuild_counts(void);

static Touched *
count_for(Oid relid)
{
	if (!counts_valid)
		rebuild_counts();
	for (int i = ncounts - 1; i >= 0; i--)
		if (counts[i].relid == relid)
			return &counts[i];
	if (ncounts == maxcounts)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		maxcounts = maxcounts ? maxcounts * 2 : 8;
		counts = counts ? repalloc(counts, sizeof(Touched) * maxcounts)
			: palloc(sizeof(Touched) * maxcounts);
		MemoryContextSwitchTo(old);
	}
	counts[ncounts].relid = relid;
	counts[ncounts].nkeys = 0;
	counts[ncounts].full = false;
	return &counts[ncounts++];
}

static void
rebuild_counts(void)
{
	ncounts = 0;
	counts_valid = true;
	for (int i = 0; i < npending; i++)
	{
		Touched    *t = count_for(pending[i].relid);

		if (pending[i].full)
			t->full = true;
		else
			t->nkeys++;
	}
}

void
ddict_note_change(Oid relid, const char *key, int len, KeyWrite w)
{
	Touched    *t = count_for(relid);

	/*
	 * Every record has a level no deeper than the current one (deeper ones
	 * were relabelled or dropped when their subtransaction ended), so a
	 * "whole dict" record already covers this change.
	 */
	if (t->full)
		return;
	if (key == NULL || t->nkeys >= ddict_max_delta_keys)
	{
		push_pending(relid, true, NULL, 0, DDICT_WRITE_ALL);
		t->full = true;
	}
	else
	{
		push_pending(relid, false, key, len, w);
		t->nkeys++;
	}
}

/* Has this transaction (still) changed relid? */
bool
ddict_xact_changed(Oid relid)
{
	if (!counts_valid)
		rebuild_counts();
	for (int i = 0; i < ncounts; i++)
		if (counts[i].relid == relid)
			return true;
	return false;
}

void
ddict_note_kept(Oid relid, const char *key, int len)
{
	MemoryContext old;
	PendingKey *p;

	if (kept_overflow)
		return;
	if (nkept >= Max(ddict_max_delta_keys, 64))
	{
		kept_overflow = true;
		return;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	if (nkept == maxkept)
	{
		maxkept = maxkept ? maxkept * 2 : 16;
		kept = kept ? repalloc(kept, sizeof(PendingKey) * maxkept)
			: palloc(sizeof(PendingKey) * maxkept);
	}
	p = &kept[nkept++];
	memset(p, 0, sizeof(PendingKey));
	p->relid = relid;
	p->len = len;
	p->data = len > 0 ? palloc(len) : NULL;
	if (len > 0)
		memcpy(p->data, key, len);
	MemoryContextSwitchTo(old);
}

void
ddict_note_forget(Oid relid, const char *name)
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
	forgets[nforgets].name = pstrdup(name ? name : "?");
	nforgets++;
	MemoryContextSwitchTo(old);
}

static TransactionId commit_xid = InvalidTransactionId;
static const char *first_forgotten_name(void);

/* PRE_COMMIT marked a version slot as created by commit_xid */
static bool marked_creator = false;

/* Was relid's table created by this transaction (not yet committed)? */
static bool
created_here(Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);
	bool		created;

	if (rel == NULL)
		return false;
	created = rel->rd_createSubid != InvalidSubTransactionId;
	RelationClose(rel);
	return created;
}

static bool
same_key(const PendingKey *x, const PendingKey *y)
{
	return x->relid == y->relid && x->len == y->len &&
		(x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
}

/* PendingKeys ordered by dict and key */
static int
key_cmp(const PendingKey *x, const PendingKey *y)
{
	int			c;

	if (x->relid != y->relid)
		return x->relid < y->relid ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->len > 0 && (c = memcmp(x->data, y->data, x->len)) != 0)
		return c;
	return 0;
}

static int
kept_order(const void *a, const void *b)
{
	return key_cmp(a, b);
}

/* pending[] indexes ordered by dict, key, then order of writing */
static int
key_order(const void *a, const void *b)
{
	int			c = key_cmp(&pending[*(const int *) a], &pending[*(const int *) b]);

	return c != 0 ? c : *(const int *) a - *(const int *) b;
}

/*
 * Keys that existed only inside this transaction are not logged: a key
 * inserted (or updated into) and deleted again before commit was never seen
 * by anyone, and its tombstone in a delta would name a row no reader could
 * ever SELECT.  A key qualifies when every write of it that survived
 * (rolled-back subtransactions' are already gone) touched only rows this
 * transaction made, and as many rows of it appeared as went.  Then what
 * others could see of the key before — no row, or a row this transaction
 * never touched — is what they see after.  The rule counts and does not
 * depend on order: AFTER ROW events do not arrive in the order of the
 * changes (a trigger's own writes, a foreign key's actions come first).
 * A row from before that was updated without a change (no write noted)
 * became this transaction's too: its key is in kept[] and never skipped.
 * Sorting is paid only by transactions that both made and removed rows of
 * their own.
 */
static void
skip_transient_keys(void)
{
	bool		appears = false,
				goes = false;
	int		   *idx;
	int			n = 0;

	for (int i = 0; i < npending; i++)
	{
		appears |= pending[i].w.rows > 0;
		goes |= pending[i].w.rows < 0 && !pending[i].w.old;
	}
	if (!appears || !goes || kept_overflow)
		return;
	if (nkept > 1)
		qsort(kept, nkept, sizeof(PendingKey), kept_order);
	idx = palloc(sizeof(int) * npending);
	for (int i = 0; i < npending; i++)
		if (!pending[i].full)
			idx[n++] = i;
	qsort(idx, n, sizeof(int), key_order);
	for (int g = 0, e; g < n; g = e)
	{
		bool		old = false;
		int			rows = 0;

		/* [g, e): the writes of one key */
		for (e = g; e < n && same_key(&pending[idx[g]], &pending[idx[e]]); e++)
		{
			old |= pending[idx[e]].w.old;
			rows += pending[idx[e]].w.rows;
		}
		if (!old && rows == 0 &&
			(nkept == 0 || bsearch(&pending[idx[g]], kept, nkept, sizeof(PendingKey),
								   kept_order) == NULL))
			for (int k = g; k < e; k++)
				pending[idx[k]].skip = true;
	}
	pfree(idx);
}

/*
 * Every changed dict gets a version slot (an error here still aborts the
 * transaction cleanly) and its name for the publisher; the intent record
 * for standbys is logged.  Returns the changed dicts (palloc'd), *n of them.
 */
static Oid *
prepare_bump(int *n)
{
	Oid		   *relids;

	if (!counts_valid)
		rebuild_counts();
	relids = palloc(sizeof(Oid) * Max(ncounts, 1));
	commit_xid = GetTopTransactionIdIfAny();
	for (int i = 0; i < ncounts; i++)
	{
		TransactionId creator = InvalidTransactionId;

		/*
		 * A dict whose table this transaction created is invisible to other
		 * backends until the commit: its slot is marked as ours so that they
		 * do not take it for a dropped dict's (shmem.c, evict_dead()).
		 */
		if (created_here(counts[i].relid))
		{
			creator = commit_xid;
			marked_creator = true;
		}
		(void) ddict_version_ensure(MyDatabaseId, counts[i].relid, creator);
		/*
		 * Its name for the publisher: once, and again after a whole-dict
		 * change — a rename (ALTER TABLE, ALTER SCHEMA) is one (ddl.c), so
		 * a name changes only when its transaction commits.
		 */
		if (counts[i].full || ddict_version_needs_name(MyDatabaseId, counts[i].relid))
			ddict_note_name(counts[i].relid);
		relids[i] = counts[i].relid;
	}
	if (TransactionIdIsValid(commit_xid))
		ddict_wal_log_intent(MyDatabaseId, commit_xid, relids, ncounts);
	*n = ncounts;
	return relids;
}

static void
pre_commit(void)
{
	int			n;

	if (npending == 0)
		return;
	pfree(prepare_bump(&n));
	skip_transient_keys();
	ddict_changelog_append(MyDatabaseId, pending, npending);
}

/*
 * PREPARE TRANSACTION of a transaction that changed dicts: what a commit
 * would do before its commit record, except the change ring (prepared.c
 * appends a "whole dict" entry once COMMIT PREPARED made the changes
 * visible), and a durable record of the dicts for whoever commits it.
 */
static TransactionId prepared_xid = InvalidTransactionId;

static void
pre_prepare(void)
{
	Oid		   *relids;
	int			n;

	if (nforgets > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that detached or dropped ddict dict %s",
						first_forgotten_name()),
				 errdetail("Prepared transactions can change dicts, but not detach or drop them."),
				 errhint("Detach or drop dicts outside of two-phase transactions.")));
	if (npending == 0)
		return;
	relids = prepare_bump(&n);
	if (TransactionIdIsValid(commit_xid))
	{
		ddict_prepared_register(commit_xid, relids, n);
		prepared_xid = commit_xid;
	}
	pfree(relids);
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

/* After commit: allocates nothing and raises no error. */
static void
at_commit(void)
{
	int			n = npending > 0 ? ncounts : 0;

	for (int i = 0; i < nforgets; i++)
		if (forgotten(forgets[i].relid))
		{
			ddict_version_forget(MyDatabaseId, forgets[i].relid);
			ddict_wal_log_forget(MyDatabaseId, forgets[i].relid);
		}
	for (int i = 0; i < n; i++)
	{
		uint64		v;

		if (forgotten(counts[i].relid))
			continue;
		v = ddict_version_bump(MyDatabaseId, counts[i].relid, commit_xid);
		if (v != 0)
			ddict_wal_log_bump(MyDatabaseId, counts[i].relid, commit_xid, v);
	}
	if (marked_creator)
		ddict_version_release(commit_xid);	/* a forgotten dict's mark */
	marked_creator = false;
	commit_xid = InvalidTransactionId;
	ddict_changelog_finish();
	if (n > 0)
		ddict_publisher_wake();
	/* published changes: wake (or start) this database's change streamer */
	if (n > 0 || nforgets > 0 || streamer_config)
		ddict_streamer_wake(MyDatabaseId, streamer_config || nforgets > 0);
}

/*
 * The qualified name of the first dict this transaction detached or
 * dropped, for messages: a dict dropped in this transaction is no longer in
 * the catalogs, so the name recorded when it was dropped is used.
 */
static const char *
first_forgotten_name(void)
{
	if (get_rel_name(forgets[0].relid) != NULL)
		return ddict_qualified_name(forgets[0].relid);
	return forgets[0].name;
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
			/* a COMMIT PREPARED in this transaction, or in another backend */
			ddict_prepared_settle();
			break;
		case XACT_EVENT_PRE_PREPARE:
			pre_prepare();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			if (marked_creator && event != XACT_EVENT_PREPARE)
				ddict_version_release(commit_xid);
			if (TransactionIdIsValid(prepared_xid) && event != XACT_EVENT_PREPARE)
				ddict_prepared_unregister(prepared_xid);	/* PREPARE failed */
			prepared_xid = InvalidTransactionId;
			marked_creator = false;
			commit_xid = InvalidTransactionId;
			ddict_changelog_finish();
			reset_state();
			if (event == XACT_EVENT_ABORT)
				ddict_prepared_settle();
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
		counts_valid = false;
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
