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
 * taken for the rows.  Versions move only after the writer is visible, so the rows
 * are at least as new as the version in the header.  READ COMMITTED is
 * required for answers with rows: under REPEATABLE READ the snapshot could
 * predate the version.  "Unchanged" reads no rows and works at any level.
 */
#include "ddict.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ddict_changes);

typedef struct Emitter
{
	ReturnSetInfo *rsinfo;
	Oid			relid;			/* the relation the name means now */
} Emitter;

/*
 * Rows have six columns under the 1.0 SQL definition and seven (the header's
 * relation) under 1.1: the same library serves both until ALTER EXTENSION.
 */
#define CHANGES_MAX_COLS 7

static void
emit(Emitter *em, char kind, Datum key, bool key_null, Datum value, bool value_null)
{
	Datum		values[CHANGES_MAX_COLS];
	bool		nulls[CHANGES_MAX_COLS] = {false, key_null, value_null, true, true, true, true};

	values[0] = CharGetDatum(kind);
	values[1] = key;
	values[2] = value;
	tuplestore_putvalues(em->rsinfo->setResult, em->rsinfo->setDesc, values, nulls);
}

static void
emit_header(Emitter *em, char kind, uint64 version, uint64 epoch, uint64 cursor)
{
	Datum		values[CHANGES_MAX_COLS];
	bool		nulls[CHANGES_MAX_COLS] = {false, true, true, false, false, false, false};

	values[0] = CharGetDatum(kind);
	values[1] = values[2] = (Datum) 0;
	values[3] = Int64GetDatum((int64) version);
	values[4] = Int64GetDatum((int64) epoch);
	values[5] = Int64GetDatum((int64) cursor);
	values[6] = ObjectIdGetDatum(em->relid);
	tuplestore_putvalues(em->rsinfo->setResult, em->rsinfo->setDesc, values, nulls);
}

/* The value expression: bytea as is, anything else through its text form. */
static char *
value_expr(DictInfo *d)
{
	if (getBaseType(d->valtype) == BYTEAOID)
		return d->valcol;
	return psprintf("%s::pg_catalog.text", d->valcol);
}

/* Emit the rows of the current SPI tuptable as 's' rows. */
static void
emit_rows(Emitter *em)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		kn,
					vn;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &kn);
		Datum		v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &vn);

		/* text and bytea share the varlena layout; detoast before storing */
		emit(em, 's', kn ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_PACKED(k)), kn,
			 vn ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_PACKED(v)), vn);
	}
}

static void
full_reload(Emitter *em, DictInfo *d)
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
		emit_rows(em);
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
delta_reload(Emitter *em, DictInfo *d, List *keys, uint64 version, uint64 epoch,
			 uint64 cursor)
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
		emit_header(em, 'd', version, epoch, cursor);
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

	emit_header(em, 'd', version, epoch, cursor);
	emit_rows(em);
	for (int i = 0; i < u; i++)
		if (!found[i])
			emit(em, 'x', PointerGetDatum(arr[i]), false, (Datum) 0, true);
	return true;
}

Datum
ddict_changes(PG_FUNCTION_ARGS)
{
	Emitter		em;
	Oid			relid;
	DictInfo   *d;
	uint64		version,
				epoch,
				cursor = 0;
	bool		have = !PG_ARGISNULL(1) && !PG_ARGISNULL(2);
	bool		other_rel;
	bool		recovery = RecoveryInProgress();
	List	   *keys = NIL;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	relid = PG_GETARG_OID(0);
	InitMaterializedSRF(fcinfo, 0);
	em.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	em.relid = relid;
	if (em.rsinfo->setDesc->natts != 6 && em.rsinfo->setDesc->natts != CHANGES_MAX_COLS)
		elog(ERROR, "ddict_changes() is declared with %d columns: run ALTER EXTENSION ddict UPDATE",
			 em.rsinfo->setDesc->natts);

	/*
	 * The client's state belongs to the relation it names (1.1 clients): if
	 * the name means another relation now, none of it applies.
	 */
	other_rel = PG_NARGS() > 4 && !PG_ARGISNULL(4) && PG_GETARG_OID(4) != relid;
	if (other_rel)
		have = false;

	/*
	 * The horizon is read before the version.  A writer leaves the in-flight
	 * set only after its bump, so when the version is still the client's,
	 * every entry of this dict below the horizon is already in the client's
	 * copy: an unchanged answer can move the client's cursor forward, and a
	 * rarely written dict's cursor does not fall out of the ring.  Standbys
	 * have no change ring: they answer in full whenever the version moved.
	 */
	if (!recovery)
		cursor = ddict_changelog_horizon();

	/*
	 * The common answer, "unchanged", needs neither SPI nor the catalogs: a
	 * version slot exists only for dicts, and the version is public anyway
	 * (ddict_last_updated).
	 */
	if (have)
	{
		bool		pending;

		if (ddict_version_get(MyDatabaseId, relid, &version, &pending) && !pending &&
			(uint64) PG_GETARG_INT64(2) == ddict_epoch() &&
			(uint64) PG_GETARG_INT64(1) == version)
		{
			emit_header(&em, 'u', version, ddict_epoch(), recovery ? 0 : cursor);
			return (Datum) 0;
		}
	}

	SPI_connect();
	d = ddict_lookup(relid);
	version = ddict_current_version(relid);
	epoch = ddict_epoch();

	if (have && (uint64) PG_GETARG_INT64(2) == epoch &&
		(uint64) PG_GETARG_INT64(1) == version)
	{
		emit_header(&em, 'u', version, epoch, recovery ? 0 : cursor);
		SPI_finish();
		return (Datum) 0;
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

	PushActiveSnapshot(GetTransactionSnapshot());
	if (have && !recovery && !PG_ARGISNULL(3) && PG_GETARG_INT64(3) > 0 &&
		(uint64) PG_GETARG_INT64(2) == epoch &&
		ddict_changelog_collect(MyDatabaseId, relid, (uint64) PG_GETARG_INT64(3), &keys) &&
		delta_reload(&em, d, keys, version, epoch, cursor))
	{
		/* answered */
	}
	else
	{
		emit_header(&em, 'f', version, epoch, cursor);
		full_reload(&em, d);
	}
	PopActiveSnapshot();
	SPI_finish();
	return (Datum) 0;
}
