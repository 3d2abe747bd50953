/*
 * stats.c — reading versions: ddict_last_updated(), ddict_epoch() and the
 * per-dict statistics behind the ddict_stats view.
 *
 * ddict_last_updated() is the function clients poll: when the dict has a
 * slot in shared memory it takes a shared LWLock, probes the hash table and
 * reads an atomic, and touches no table.  Only the first call for a dict
 * after a server start (or on a standby before the first replayed bump)
 * checks the registry and creates the slot.
 */
#include "ddict.h"
#include "common/redis_key.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "commands/dbcommands.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ddict_last_updated);
PG_FUNCTION_INFO_V1(ddict_epoch_sql);
PG_FUNCTION_INFO_V1(ddict_stats_internal);
PG_FUNCTION_INFO_V1(ddict_changelog_status);

uint64
ddict_current_version(Oid relid)
{
	uint64		v;
	bool		pending;

	if (ddict_version_get(MyDatabaseId, relid, &v, &pending))
	{
		if (!pending)
			return v;
		ddict_version_resolve(MyDatabaseId, relid);
		if (ddict_version_get(MyDatabaseId, relid, &v, NULL))
			return v;
	}
	SPI_connect();
	(void) ddict_lookup(relid);
	SPI_finish();
	v = ddict_version_ensure(MyDatabaseId, relid, InvalidTransactionId);
	ddict_note_name(relid);
	return v;
}

/*
 * Record "database:schema.table" for the publisher (see publisher.c), each
 * component escaped (src/common/redis_key.h).
 */
void
ddict_note_name(Oid relid)
{
	char	   *db = get_database_name(MyDatabaseId);
	char	   *rel = get_rel_name(relid);
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));
	char		name[DDICT_NAME_LEN];

	if (db && rel && nsp)
	{
		if (ddict_redis_dict_name(name, sizeof(name), db, nsp, rel, NULL) < sizeof(name))
			ddict_version_set_name(MyDatabaseId, relid, name);
	}
}

Datum
ddict_last_updated(PG_FUNCTION_ARGS)
{
	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	PG_RETURN_INT64((int64) ddict_current_version(PG_GETARG_OID(0)));
}

Datum
ddict_epoch_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) ddict_epoch());
}

Datum
ddict_stats_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DictStat   *st;
	int			n;

	ddict_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	n = ddict_stats_collect(MyDatabaseId, &st);
	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = ObjectIdGetDatum(st[i].relid);
		values[1] = Int64GetDatum((int64) st[i].version);
		values[2] = Int64GetDatum((int64) st[i].commits);
		values[3] = TimestampTzGetDatum(st[i].last_changed);
		nulls[3] = (st[i].last_changed == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * ddict_changelog_status(): the change ring's size, head, tail and horizon
 * (byte positions), its chains and the next chain's first number.  For
 * monitoring (how fast the ring turns over) and tests.  Positions move with
 * every dict's writes in the cluster, so the function is not for everyone:
 * the SQL script grants it to pg_read_all_stats only.
 */
Datum
ddict_changelog_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {0};
	DdictRingState st;

	ddict_require_preload();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ddict_changelog_status() must return a row");
	ddict_changelog_state(&st);
	values[0] = Int64GetDatum((int64) st.size);
	values[1] = Int64GetDatum((int64) st.head);
	values[2] = Int64GetDatum((int64) st.tail);
	values[3] = Int64GetDatum((int64) st.horizon);
	values[4] = Int64GetDatum((int64) st.chains);
	values[5] = Int64GetDatum((int64) st.numbered);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
