/*
 * fullload.c — a full load by COPY (extension 1.2): the header, and the
 * query whose rows the client streams with COPY ... TO STDOUT (FORMAT binary).
 *
 *   ddict_full_begin(dict regclass)
 *     RETURNS TABLE(version bigint, epoch bigint, "cursor" bigint, dict oid,
 *                   query text, token bigint)
 *   ddict_full_end(dict oid, token bigint) RETURNS bigint   -- "until"
 *   _ddict_bytes(text) RETURNS bytea                         -- a relabel
 *
 * Why: ddict_changes() answers a full load as rows of a set-returning
 * function, which PostgreSQL materialises in a tuplestore before the first
 * row leaves, and which libpq hands over one PGresult per row (single-row
 * mode): 0.53x a bare COPY (FORMAT binary) into a hash table.  COPY streams
 * rows straight from the scan, and the client parses them in place.
 *
 * The client runs, in one transaction (pooler-safe: nothing outlives it):
 *
 *   BEGIN ISOLATION LEVEL READ COMMITTED;
 *   SELECT ... FROM ddict_full_begin($dict);        -- header + query
 *   COPY (<query>) TO STDOUT (FORMAT binary);       -- the rows
 *   SELECT ddict_full_end($oid, $token);            -- check + "until"
 *   COMMIT;
 *
 * The invariants of ddict_changes() (sync.c) hold:
 *
 * - Header before rows.  ddict_full_begin() reads the ring's horizon, then
 *   the version; the COPY is a later statement of a READ COMMITTED
 *   transaction, so its snapshot is taken after both: the rows are at least
 *   as new as the version.  (Under REPEATABLE READ the snapshot would be the
 *   transaction's first: refused, SQLSTATE 0A000, as ddict_changes() does.)
 *   "until" (the dict's next change number after the rows' snapshot) is read by
 *   ddict_full_end(), after the COPY: at or above the head at the COPY's
 *   snapshot, which is the safe side of the stream rule (README, published
 *   changes: a cache with a higher floor skips at most entries it already
 *   holds, or goes back to PostgreSQL).
 *
 * - One relation.  The query names the table (SQL has no other way), and a
 *   name can come to mean another relation between two statements.  So
 *   ddict_full_begin() takes ACCESS SHARE on the relation the dict argument
 *   resolved to, until the end of the transaction: it can no longer be
 *   renamed, moved to another schema or dropped, and no other relation can
 *   take its name in its schema.  What that lock cannot stop is a rename of
 *   the schema itself (a blue/green ALTER SCHEMA ... RENAME takes no lock
 *   on the tables in it).  The token is the xmin of the schema's pg_namespace
 *   row as the query was built; every rename writes a new row version, so
 *   when ddict_full_end() (after the COPY, invalidations accepted) finds the
 *   same xmin, the schema had its name throughout, and the COPY's lookup of
 *   schema.table found this relation.  Otherwise it raises
 *   serialization_failure (40001) and the client loads again.  Rejected: a
 *   tableoid column or filter in the query (an empty table shows nothing);
 *   locking pg_namespace (blocks every schema's DDL, and deadlocks with a
 *   swap that drops the old table); a cursor opened by the function (FETCH
 *   is not COPY).
 *
 * - Row-level security and privileges: the query runs as the caller, as any
 *   COPY (SELECT ...) does; ddict_full_begin() itself requires SELECT on the
 *   table, as ddict_changes() does.
 *
 * - Bytes as ddict_changes() sends them: keys as text, values of bytea
 *   dicts as they are, other values as their type's text output
 *   (value_expr() as in sync.c), relabelled as bytea by _ddict_bytes() so
 *   that COPY does not convert them to the client's encoding (the text
 *   output's bytes are sent as ddict_changes() sends them: unconverted).
 */
#include "ddict.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(ddict_full_begin);
PG_FUNCTION_INFO_V1(ddict_full_end);
PG_FUNCTION_INFO_V1(ddict_bytes);

/* The xmin of the pg_namespace row of nsp, as the caches have it now. */
static int64
namespace_token(Oid nsp, char **name)
{
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	int64		token;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the schema of the dict was dropped during its full load")));
	token = (int64) HeapTupleHeaderGetRawXmin(tup->t_data);
	if (name)
		*name = pstrdup(NameStr(((Form_pg_namespace) GETSTRUCT(tup))->nspname));
	ReleaseSysCache(tup);
	return token;
}


Datum
ddict_full_begin(PG_FUNCTION_ARGS)
{
	Oid			relid;
	uint64		horizon = 0,
				version,
				epoch;
	bool		recovery = RecoveryInProgress();
	DictInfo   *d;
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	char	   *nspname;
	char	   *relname;
	int64		token;
	const char *value;
	char	   *query;
	MemoryContext outer,
				old;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	relid = PG_GETARG_OID(0);

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ddict_full_begin() must run in a READ COMMITTED transaction"),
				 errdetail("The rows must come from a snapshot taken after the version was read."),
				 errhint("Run it in BEGIN ISOLATION LEVEL READ COMMITTED.")));
	if (!IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("ddict_full_begin() must run in a transaction block"),
				 errhint("The COPY of its query and ddict_full_end() follow in the same transaction.")));

	/* The relation keeps its name in its schema until the end (header). */
	LockRelationOid(relid, AccessShareLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	ddict_require_select(relid);
	outer = CurrentMemoryContext;
	SPI_connect();
	d = ddict_lookup(relid);	/* a dict, its columns */
	/* as ddict_changes(): no rows of this transaction's own changes */
	if (ddict_xact_changed(relid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("ddict_full_begin() cannot load dict %s in a transaction that changed it",
						d->qualname),
				 errdetail("The rows would include changes that are not committed."),
				 errhint("Call it after COMMIT.")));

	/* As ddict_changes(): the horizon first, then the version. */
	if (!recovery)
		horizon = ddict_changelog_horizon(MyDatabaseId, relid, true);
	version = ddict_current_version(relid);
	epoch = ddict_epoch();

	/* The schema's name and its row's xmin, read together (header). */
	token = namespace_token(get_rel_namespace(relid), &nspname);
	relname = get_rel_name(relid);
	if (relname == NULL)
		elog(ERROR, "ddict: relation %u vanished under its lock", relid);
	value = getBaseType(d->valtype) == BYTEAOID ? d->valcol :
		psprintf("%s._ddict_bytes(%s)", ddict_ext_schema(), d->valtext);
	old = MemoryContextSwitchTo(outer);
	query = psprintf("SELECT %s::pg_catalog.text, %s FROM ONLY %s", d->keycol, value,
					 quote_qualified_identifier(nspname, relname));
	MemoryContextSwitchTo(old);
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	values[0] = Int64GetDatum((int64) version);
	values[1] = Int64GetDatum((int64) epoch);
	values[2] = Int64GetDatum((int64) horizon);
	values[3] = ObjectIdGetDatum(relid);
	values[4] = CStringGetTextDatum(query);
	values[5] = Int64GetDatum(token);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

Datum
ddict_full_end(PG_FUNCTION_ARGS)
{
	Oid			relid;
	int64		token;
	LOCKTAG		tag;
	uint64		until;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	ddict_require_arg(fcinfo, 1, "token");
	relid = PG_GETARG_OID(0);
	token = PG_GETARG_INT64(1);
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	if (!LockHeldByMe(&tag, AccessShareLock))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ddict_full_end() without ddict_full_begin() in this transaction")));
	ddict_require_select(relid);
	/* what other sessions committed until now, renames included */
	AcceptInvalidationMessages();
	if (namespace_token(get_rel_namespace(relid), NULL) != token)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("the schema of dict \"%s\" was renamed during its full load",
						get_rel_name(relid)),
				 errdetail("The rows may come from another relation than the header's."),
				 errhint("Load it again.")));
	if (RecoveryInProgress())
		PG_RETURN_NULL();
	/*
	 * Made by ddict_full_begin() (for a dict only): any SELECT takes the
	 * lock checked above, and chains are for dicts.  Gone since: no until.
	 */
	until = ddict_changelog_until(MyDatabaseId, relid, false);
	if (until == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) until);
}

/* text -> bytea, the same bytes: COPY then sends them unconverted. */
Datum
ddict_bytes(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}
