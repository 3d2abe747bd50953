/*
 * sync.c — ddict_changes(): what a client cache needs, in one round trip.
 *
 *   ddict_changes(dict, since_version, since_epoch, since_cursor, since_dict)
 *     RETURNS TABLE(kind "char", key text, value bytea,
 *                   version bigint, epoch bigint, cursor bigint, dict oid)
 *
 * The first row is a header: kind 'u' (unchanged: nothing follows), 'd'
 * (delta: the changed keys follow) or 'f' (full: every key follows; the
 * client replaces its contents), with the version, epoch and cursor the
 * client stores for its next call, and the OID of the relation the name
 * means now.  Then one row per key: 's' with its value, or 'x' when it no
 * longer exists.  Values are bytes: a bytea value as is, any other type as
 * its text output, so the client needs no per-type code and binary values
 * survive.
 *
 * A client's (version, epoch, cursor) describe one relation.  A name can
 * come to mean another one (a blue/green ALTER SCHEMA ... RENAME, another
 * search_path): when since_dict is given and is not the relation the name
 * means now, the answer is 'f' for the new relation, whatever the rest says.
 * The 1.0 signature (four arguments, six columns) is still served by this
 * function, for databases not yet updated: it then behaves as before.
 * 1.2 adds full_rows (default true): false answers 'f' with the header
 * alone, for a client that then loads the rows by COPY (fullload.c).
 *
 * Row-level security: a delta re-reads its changed keys with the caller's
 * privileges, and a key it does not get back would become an 'x' row.  When
 * row security applies to the caller, "not returned" may mean "hidden", and
 * an 'x' would name a row the caller may not see; so then a delta with any
 * key missing is answered in full instead ('f' returns only visible rows and
 * the client replaces its contents, which also drops rows that were deleted
 * or became hidden).  Without row security deltas are exact, as always.
 *
 * Order is what makes it correct: the change ring's horizon (the next
 * cursor) is read first, then the version, and only then a fresh snapshot is
 * taken for the rows; the ring's head is read after that snapshot and
 * returned as "until" (1.1, header of 'd' and 'f'): every transaction the
 * snapshot saw wrote its keys below it, and the delta holds every key from
 * the client's cursor up to it.  A client following published changes
 * (streamer.c) needs it to join the Redis stream exactly.  Versions move only after the writer is visible, so the rows
 * are at least as new as the version in the header.  READ COMMITTED is
 * required for answers with rows: under REPEATABLE READ the snapshot could
 * predate the version.  "Unchanged" reads no rows and works at any level.
 *
 * The computation (ddict_changes_compute) is shared with the change streamer
 * (streamer.c), which publishes each change once to Redis: both emit through
 * a ChangeSink, this file's into the SRF's tuplestore.
 *
 * ddict_unchanged(), with the same arguments, is the common answer alone as
 * a scalar: the cursor of a 'u' header, or NULL for "ask ddict_changes()".
 * An autosync check is nearly always "unchanged", and as a set-returning
 * function it costs PostgreSQL a function scan that a scalar call does not
 * (README, "Where the server's time goes").
 */
#include "ddict.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ddict_changes);
PG_FUNCTION_INFO_V1(ddict_unchanged);

/* ddict_changes()'s sink: rows of the SRF's tuplestore. */
typedef struct Emitter
{
	ChangeSink	sink;
	ReturnSetInfo *rsinfo;
	Oid			relid;			/* the relation the name means now */
} Emitter;

/*
 * Rows have six columns under the 1.0 SQL definition, seven (the header's
 * relation) and eight ("until") under 1.1: the same library serves every
 * shape until ALTER EXTENSION.
 */
#define CHANGES_MAX_COLS 8

static void
emit(ChangeSink *sink, char kind, Datum key, bool key_null, Datum value, bool value_null)
{
	Emitter    *em = (Emitter *) sink;
	Datum		values[CHANGES_MAX_COLS];
	bool		nulls[CHANGES_MAX_COLS] = {false, key_null, value_null, true, true, true, true, true};

	values[0] = CharGetDatum(kind);
	values[1] = key;
	values[2] = value;
	tuplestore_putvalues(em->rsinfo->setResult, em->rsinfo->setDesc, values, nulls);
}

static void
emit_header(ChangeSink *sink, char kind, const ChangeHeader *h)
{
	Emitter    *em = (Emitter *) sink;
	Datum		values[CHANGES_MAX_COLS];
	bool		nulls[CHANGES_MAX_COLS] = {false, true, true, false, false, false, false, false};

	values[0] = CharGetDatum(kind);
	values[1] = values[2] = (Datum) 0;
	values[3] = Int64GetDatum((int64) h->version);
	values[4] = Int64GetDatum((int64) h->epoch);
	values[5] = Int64GetDatum((int64) h->cursor);
	values[6] = ObjectIdGetDatum(em->relid);
	values[7] = Int64GetDatum((int64) h->until);
	nulls[7] = (kind == 'u' || h->until == 0);
	tuplestore_putvalues(em->rsinfo->setResult, em->rsinfo->setDesc, values, nulls);
}

static void
sink_header(ChangeSink *sink, char kind, uint64 version, uint64 epoch, uint64 cursor,
			uint64 until)
{
	ChangeHeader h = {version, epoch, cursor, until};

	sink->header(sink, kind, &h);
}

/* The value expression: bytea as is, anything else through its text form. */
static char *
value_expr(DictInfo *d)
{
	if (getBaseType(d->valtype) == BYTEAOID)
		return d->valcol;
	return d->valtext;
}

/* Emit the rows of the current SPI tuptable as 's' rows. */
static void
emit_rows(ChangeSink *sink)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		kn,
					vn;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &kn);
		Datum		v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &vn);

		/* text and bytea share the varlena layout; detoast before storing */
		sink->row(sink, 's', kn ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_PACKED(k)), kn,
			 vn ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_PACKED(v)), vn);
	}
}

static void
full_reload(ChangeSink *sink, DictInfo *d)
{
	SPIPlanPtr	plan;
	Portal		portal;

	plan = ddict_plan(psprintf("SELECT %s::pg_catalog.text, %s FROM ONLY %s",
							   d->keycol, value_expr(d), d->qualname), 0, NULL);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		emit_rows(sink);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

static int
text_cmp(const void *a, const void *b)
{
	text	   *ta = *(text *const *) a;
	text	   *tb = *(text *const *) b;
	int			la = VARSIZE_ANY_EXHDR(ta),
				lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/*
 * Does row security filter what the caller reads from the dict?  noError:
 * with row_security = off the SELECT itself raises the error, and until then
 * we assume the worst.
 */
static bool
rls_applies(Oid relid)
{
	return check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED;
}

/*
 * The changed keys, re-read: 's' for those the SELECT returns, 'x' for the
 * others, after a 'd' header.  Returns false, having emitted nothing, when
 * row security applies and a key was not returned: it may exist unseen, and
 * its 'x' would name it.  The caller then answers in full.
 */
static bool
delta_reload(ChangeSink *sink, DictInfo *d, List *keys, const ChangeHeader *h)
{
	int			n = list_length(keys),
				u = 0,
				missing = 0;
	text	  **arr;
	bool	   *found;
	Datum	   *elems;
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	SPIPlanPtr	plan;
	int			rc;

	if (n == 0)
	{
		sink->header(sink, 'd', h);
		return true;
	}
	arr = palloc(sizeof(text *) * n);
	for (int i = 0; i < n; i++)
		arr[i] = (text *) list_nth(keys, i);
	qsort(arr, n, sizeof(text *), text_cmp);
	for (int i = 0; i < n; i++)
		if (u == 0 || text_cmp(&arr[u - 1], &arr[i]) != 0)
			arr[u++] = arr[i];
	elems = palloc(sizeof(Datum) * u);
	for (int i = 0; i < u; i++)
		elems[i] = PointerGetDatum(arr[i]);
	args[0] = PointerGetDatum(construct_array(elems, u, TEXTOID, -1, false, TYPALIGN_INT));

	plan = ddict_plan(psprintf("SELECT %s::pg_catalog.text, %s FROM ONLY %s "
							   "WHERE %s OPERATOR(pg_catalog.=) ANY ($1)",
							   d->keycol, value_expr(d), d->qualname, d->keycol),
					  1, argtypes);
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "ddict: delta query failed: %s", SPI_result_code_string(rc));

	found = palloc0(sizeof(bool) * u);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		kn;
		text	   *k = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &kn));
		text	  **hit = bsearch(&k, arr, u, sizeof(text *), text_cmp);

		if (hit)
			found[hit - arr] = true;
	}
	for (int i = 0; i < u; i++)
		missing += !found[i];
	if (missing > 0 && rls_applies(d->relid))
		return false;

	sink->header(sink, 'd', h);
	emit_rows(sink);
	for (int i = 0; i < u; i++)
		if (!found[i])
			sink->row(sink, 'x', PointerGetDatum(arr[i]), false, (Datum) 0, true);
	return true;
}

/*
 * What a client in state "since" needs of dict d, emitted through sink: the
 * body of ddict_changes() after its fast path, shared with the change
 * streamer.  horizon is the change ring's horizon, read by the caller before
 * anything else (0 on a standby).  SPI connected, in a transaction.  With
 * full_rows false a full answer is only its header (the streamer's marker).
 * Returns the kind of the answer: 'u', 'd' or 'f'.
 */
char
ddict_changes_compute(DictInfo *d, uint64 horizon, const ChangesSince *since,
					  ChangeSink *sink)
{
	bool		recovery = RecoveryInProgress();
	ChangeHeader h;
	List	   *keys = NIL;
	char		kind;

	/*
	 * The dict's lock before its version and snapshot: TRUNCATE is not
	 * MVCC-safe, and a snapshot taken before a TRUNCATE committed would read
	 * its new, empty file once the lock was granted — a state that never
	 * committed, under the version from before.  Holding the lock first, the
	 * TRUNCATE has either committed and bumped (so both see it) or waits.
	 */
	LockRelationOid(d->relid, AccessShareLock);
	h.version = ddict_current_version(d->relid);
	h.epoch = ddict_epoch();
	h.cursor = recovery ? 0 : horizon;
	h.until = 0;

	if (since->have && since->epoch == h.epoch && since->version == h.version)
	{
		sink->header(sink, 'u', &h);
		return 'u';
	}

	/*
	 * Rows must come from a snapshot taken after the version was read.  Only
	 * answers with rows need one: "unchanged" is right in any isolation
	 * level, so a client whose database defaults to REPEATABLE READ or
	 * SERIALIZABLE pays for an explicit READ COMMITTED transaction only when
	 * something changed (it retries on this error's SQLSTATE).
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ddict_changes() must run in a READ COMMITTED transaction"),
				 errdetail("Its rows must come from a snapshot taken after the version was read."),
				 errhint("Run it in BEGIN ISOLATION LEVEL READ COMMITTED.")));

	/*
	 * Rows read by a transaction that changed the dict include its own
	 * uncommitted changes, under a version that does not have them: after a
	 * rollback the client would keep them for ever ("unchanged").
	 */
	if (ddict_xact_changed(d->relid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("ddict_changes() cannot answer with rows in a transaction that changed dict %s",
						d->qualname),
				 errdetail("The rows would include changes that are not committed."),
				 errhint("Call it after COMMIT.")));

	PushActiveSnapshot(GetTransactionSnapshot());
	/* every transaction this snapshot sees wrote its keys below the head */
	if (!recovery)
		h.until = ddict_changelog_until(MyDatabaseId, d->relid, true);
	if (since->have && !recovery && since->cursor > 0 && since->epoch == h.epoch &&
		ddict_changelog_collect(MyDatabaseId, d->relid, since->cursor, &keys) &&
		delta_reload(sink, d, keys, &h))
		kind = 'd';
	else
	{
		kind = 'f';
		sink->header(sink, 'f', &h);
		if (sink->full_rows)
			full_reload(sink, d);
	}
	PopActiveSnapshot();
	return kind;
}

/*
 * Is "unchanged" the answer for a client in state since of relid?  Its
 * version is the dict's, in the same epoch, with no bump pending.  *version:
 * the dict's version when it has one.
 */
static bool
answer_unchanged(Oid relid, const ChangesSince *since, uint64 *version)
{
	bool		pending;

	return since->have &&
		ddict_version_get(MyDatabaseId, relid, version, &pending) && !pending &&
		since->epoch == ddict_epoch() && since->version == *version;
}

/*
 * The result's row type, cached per backend.  InitMaterializedSRF() asks
 * get_call_result_type(), which rebuilds it from pg_proc on every call (a
 * syscache lookup, three arrays decoded, a type lookup per column): on the
 * "unchanged" answer of an autosync check that was most of this function's
 * own time.  The executor hands us the row type it expects (expectedDesc,
 * in FROM and in a select list), and a cached copy with the same columns is
 * used instead;
 * every SQL declaration of this function (1.0's six columns, 1.1's, a new
 * one after ALTER EXTENSION UPDATE) gets its own.  Their refcount marks them
 * as not the executor's to free (ExecMakeTableFunctionResult frees only
 * uncounted descriptors); nothing pins or releases them.  Without an
 * expected row type, or past a few shapes, the row type is built per call as
 * before.
 */
#define CACHED_SHAPES 4
static TupleDesc cached_desc[CACHED_SHAPES];
static int	ncached_desc = 0;

static bool
same_columns(TupleDesc a, TupleDesc b)
{
	if (a->natts != b->natts)
		return false;
	for (int i = 0; i < a->natts; i++)
		if (TupleDescAttr(a, i)->atttypid != TupleDescAttr(b, i)->atttypid ||
			TupleDescAttr(a, i)->atttypmod != TupleDescAttr(b, i)->atttypmod ||
			TupleDescAttr(a, i)->attisdropped != TupleDescAttr(b, i)->attisdropped)
			return false;
	return true;
}

/* In the per-query context. */
static TupleDesc
result_desc(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo)
{
	TupleDesc	desc;
	MemoryContext old;

	if (rsinfo->expectedDesc != NULL)
	{
		for (int i = 0; i < ncached_desc; i++)
			if (same_columns(cached_desc[i], rsinfo->expectedDesc))
				return cached_desc[i];
		if (ncached_desc < CACHED_SHAPES)
		{
			old = MemoryContextSwitchTo(TopMemoryContext);
			desc = CreateTupleDescCopy(rsinfo->expectedDesc);
			MemoryContextSwitchTo(old);
			desc->tdrefcount = 1;	/* never freed by the executor */
			cached_desc[ncached_desc++] = desc;
			return desc;
		}
	}
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	return desc;
}

/*
 * InitMaterializedSRF() without its per-call row type: the tuplestore in
 * the per-query context, the cached row type.
 */
static void
init_result(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->setDesc = result_desc(fcinfo, rsinfo);
	rsinfo->setResult = tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
											  false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	MemoryContextSwitchTo(old);
}

/*
 * The caller must be able to SELECT from the dict (the table, or one of its
 * columns), as for the rows themselves: even the header of an "unchanged"
 * answer moves with the dict's writes (the cursor), which is nothing for a
 * role that may not read the dict to learn.
 */
void
ddict_require_select(Oid relid)
{
	Oid			user = GetUserId();

	if (pg_class_aclcheck(relid, user, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(relid, user, ACL_SELECT, ACLMASK_ANY) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, get_rel_name(relid));
}

/*
 * The dict's cursor at the horizon (changelog.c), 0 on a standby.  Chains
 * are made only for dicts: a version entry proves relid is one (ddict_changes()
 * makes the chain later otherwise, after its lookup).
 */
static uint64
read_horizon(Oid relid)
{
	uint64		cursor,
				v;
	bool		pending;

	if (RecoveryInProgress())
		return 0;
	cursor = ddict_changelog_horizon(MyDatabaseId, relid, false);
	if (cursor == 0 && ddict_version_get(MyDatabaseId, relid, &v, &pending))
		cursor = ddict_changelog_horizon(MyDatabaseId, relid, true);
	return cursor;
}

Datum
ddict_changes(PG_FUNCTION_ARGS)
{
	Emitter		em;
	Oid			relid;
	uint64		version,
				cursor = 0;
	ChangesSince since;
	bool		recovery = RecoveryInProgress();

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	relid = PG_GETARG_OID(0);
	ddict_require_select(relid);
	init_result(fcinfo);
	em.sink.header = emit_header;
	em.sink.row = emit;
	/* 1.2: full_rows false answers 'f' with its header alone (the client
	 * loads the rows by COPY: fullload.c) */
	em.sink.full_rows = !(PG_NARGS() > 5 && !PG_ARGISNULL(5) && !PG_GETARG_BOOL(5));
	em.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	em.relid = relid;
	if (em.rsinfo->setDesc->natts < 6 || em.rsinfo->setDesc->natts > CHANGES_MAX_COLS)
		elog(ERROR, "ddict_changes() is declared with %d columns: run ALTER EXTENSION ddict UPDATE",
			 em.rsinfo->setDesc->natts);

	since.have = !PG_ARGISNULL(1) && !PG_ARGISNULL(2);
	since.version = since.have ? (uint64) PG_GETARG_INT64(1) : 0;
	since.epoch = since.have ? (uint64) PG_GETARG_INT64(2) : 0;
	since.cursor = (!PG_ARGISNULL(3) && PG_GETARG_INT64(3) > 0) ? (uint64) PG_GETARG_INT64(3) : 0;

	/*
	 * The client's state belongs to the relation it names (1.1 clients): if
	 * the name means another relation now, none of it applies.
	 */
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4) && PG_GETARG_OID(4) != relid)
		since.have = false;

	/*
	 * The horizon is read before the version.  A writer leaves the in-flight
	 * set only after its bump, so when the version is still the client's,
	 * every entry of this dict below the horizon is already in the client's
	 * copy: an unchanged answer can move the client's cursor forward, and a
	 * rarely written dict's cursor does not fall out of the ring.  Standbys
	 * have no change ring: they answer in full whenever the version moved.
	 */
	cursor = read_horizon(relid);

	/*
	 * The common answer, "unchanged", needs neither SPI nor the catalogs: a
	 * version slot exists only for dicts, and the version is public anyway
	 * (ddict_last_updated).
	 */
	if (answer_unchanged(relid, &since, &version))
	{
		sink_header(&em.sink, 'u', version, ddict_epoch(), cursor, 0);
		return (Datum) 0;
	}

	SPI_connect();
	{
		DictInfo   *d = ddict_lookup(relid);

		/* a dict read first after a restart: its chain, before its version */
		if (cursor == 0 && !recovery)
			cursor = ddict_changelog_horizon(MyDatabaseId, relid, true);
		(void) ddict_changes_compute(d, cursor, &since, &em.sink);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * ddict_unchanged(dict, since_version, since_epoch, since_cursor, since_dict)
 *   RETURNS bigint
 *
 * ddict_changes()'s common answer without its shape: the cursor to store
 * next when ddict_changes() would answer 'u' for this state of this
 * relation, NULL when it would not (the client then asks ddict_changes()).
 * since_dict is required: the state belongs to the relation it came from.
 * A scalar call spares the executor a function scan (a row type built from
 * pg_proc, a tuplestore) and the protocol six columns: measured, it brings
 * an autosync check from about 1.35x a prepared SELECT 1 to about 1.1x
 * (README, "Where the server's time goes").  Same order as ddict_changes():
 * the horizon is read before the version.
 */
Datum
ddict_unchanged(PG_FUNCTION_ARGS)
{
	Oid			relid;
	uint64		version,
				cursor = 0;
	ChangesSince since;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	relid = PG_GETARG_OID(0);
	ddict_require_select(relid);
	since.have = !PG_ARGISNULL(1) && !PG_ARGISNULL(2) && !PG_ARGISNULL(4) &&
		PG_GETARG_OID(4) == relid;
	if (!since.have)
		PG_RETURN_NULL();
	since.version = (uint64) PG_GETARG_INT64(1);
	since.epoch = (uint64) PG_GETARG_INT64(2);
	since.cursor = 0;
	cursor = read_horizon(relid);
	if (!answer_unchanged(relid, &since, &version))
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) cursor);
}
