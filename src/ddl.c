/*
 * ddl.c — event triggers that keep a dict whole through DDL.
 *
 * A dict's version must move whenever what its clients read changes, and a
 * dict must stay something a client can hold: a NOT NULL unique text key, a
 * NOT NULL value, and ddict's two triggers.  Row triggers see DML only, so
 * DDL is watched by three event triggers (installed ENABLE ALWAYS):
 *
 *   ddl_command_end  ALTER TABLE, ALTER TYPE, ALTER TRIGGER
 *       - every dict among the altered relation and its inheritors
 *         (ALTER TABLE on an inheritance parent or a partitioned table
 *         recurses into the children) is checked and its version moved;
 *       - every dict whose value type uses the altered type, or the altered
 *         relation's row type, through arrays, domains, ranges and
 *         composites, is moved: ALTER TYPE mood RENAME VALUE, ALTER TYPE
 *         comp ADD ATTRIBUTE and ALTER TABLE t ADD COLUMN (when t's row type
 *         is a value type) change the text clients read without touching
 *         the dict's table;
 *       - ALTER TRIGGER of ddict's own triggers is refused.
 *   ddl_command_start  DROP INDEX: the last unique index of a dict's key
 *       may not go (ALTER TABLE ... DROP CONSTRAINT is caught at its end).
 *   sql_drop  DROP TABLE of a dict unregisters it; dropping a dict's own
 *       triggers is refused.
 *
 * ddict's triggers are recognised by their function (ddict_trigger), never by
 * name, and "is this a dict" is answered from the relation's trigger
 * descriptor in the relcache: DDL on tables that are not dicts reads neither
 * the registry nor takes a lock on it, and nothing about one dict can make
 * DDL on another table fail.  The registry is read only for dicts.
 *
 * Rejected: recording a pg_depend entry from ddict's triggers to the
 * extension (it would make DROP TABLE of a dict fail), and checking every
 * registered dict on every DDL command (one broken dict would then fail
 * everybody's DDL, and every ALTER TABLE would read the registry).
 */
#include "ddict.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(ddict_on_ddl_end);
PG_FUNCTION_INFO_V1(ddict_on_ddl_start);
PG_FUNCTION_INFO_V1(ddict_on_sql_drop);

/* 1.0 entry points, still referenced by ddict--1.0.sql (dropped by 1.0--1.1) */
PG_FUNCTION_INFO_V1(ddict_ddl_check);
PG_FUNCTION_INFO_V1(ddict_forget);

/* The OID of ddict_trigger(), cached per installation of the extension. */
Oid
ddict_trigger_fn(void)
{
	static Oid	cached_ext = InvalidOid;
	static Oid	cached_fn = InvalidOid;
	Oid			ext = get_extension_oid("ddict", true);

	if (!OidIsValid(ext))
		return InvalidOid;
	if (ext != cached_ext)
	{
		List	   *name = list_make2(makeString(get_namespace_name(ddict_ext_namespace())),
									  makeString("ddict_trigger"));

		cached_fn = LookupFuncName(name, 0, NULL, false);
		cached_ext = ext;
	}
	return cached_fn;
}

/* Does an open relation carry a trigger that runs ddict_trigger()? */
static bool
rel_has_ddict_trigger(Relation rel, Oid fn)
{
	TriggerDesc *td = rel->trigdesc;

	if (td == NULL || !OidIsValid(fn))
		return false;
	for (int i = 0; i < td->numtriggers; i++)
		if (td->triggers[i].tgfoid == fn)
			return true;
	return false;
}

/*
 * Is relid a dict?  Answered from the relcache: dicts are exactly the tables
 * with ddict's triggers (attach installs them, detach removes them, and
 * dropping or renaming them is refused).  Takes AccessShareLock, as a
 * catalog lookup of a table would; a relation that is gone is no dict.
 */
static bool
is_dict(Oid relid)
{
	Relation	rel;
	bool		yes;

	if (get_rel_relkind(relid) != RELKIND_RELATION)
		return false;
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return false;
	yes = rel_has_ddict_trigger(rel, ddict_trigger_fn());
	relation_close(rel, NoLock);
	return yes;
}

/* The names of relid's triggers that run ddict_trigger(). */
List *
ddict_trigger_names(Oid relid)
{
	Oid			fn = ddict_trigger_fn();
	List	   *names = NIL;
	Relation	tgrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);

		if (tg->tgfoid == fn)
			names = lappend(names, pstrdup(NameStr(tg->tgname)));
	}
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return names;
}

/*
 * Does typid's text form name catalog objects?  The reg* types print names
 * (regclass prints a table's name), so renaming an object would change what
 * clients read without any write to the dict: such values are refused.
 */
static bool
type_prints_names(Oid typid, int depth)
{
	HeapTuple	tup;
	Form_pg_type typ;
	bool		yes = false;

	if (depth > 32)
		return false;
	switch (typid)
	{
		case REGCLASSOID:
		case REGTYPEOID:
		case REGPROCOID:
		case REGPROCEDUREOID:
		case REGOPEROID:
		case REGOPERATOROID:
		case REGCONFIGOID:
		case REGDICTIONARYOID:
		case REGNAMESPACEOID:
		case REGROLEOID:
		case REGCOLLATIONOID:
			return true;
	}
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		return false;
	typ = (Form_pg_type) GETSTRUCT(tup);
	if (typ->typtype == TYPTYPE_DOMAIN)
		yes = type_prints_names(typ->typbasetype, depth + 1);
	else if (OidIsValid(typ->typelem) && typ->typsubscript == F_ARRAY_SUBSCRIPT_HANDLER)
		yes = type_prints_names(typ->typelem, depth + 1);
	else if (typ->typtype == TYPTYPE_RANGE)
		yes = type_prints_names(get_range_subtype(typid), depth + 1);
	else if (typ->typtype == TYPTYPE_MULTIRANGE)
		yes = type_prints_names(get_multirange_range(typid), depth + 1);
	else if (typ->typtype == TYPTYPE_COMPOSITE && OidIsValid(typ->typrelid))
	{
		TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);

		for (int i = 0; i < desc->natts && !yes; i++)
			if (!TupleDescAttr(desc, i)->attisdropped)
				yes = type_prints_names(TupleDescAttr(desc, i)->atttypid, depth + 1);
		ReleaseTupleDesc(desc);
	}
	ReleaseSysCache(tup);
	return yes;
}

void
ddict_check_value_type(Oid valtype, const char *valcol)
{
	if (type_prints_names(valtype, 0))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("value column \"%s\" of type %s cannot be a dict's value",
						valcol, format_type_be(valtype)),
				 errdetail("Its text names catalog objects, which can be renamed without a write to the dict."),
				 errhint("Store the object's name, or its OID as type oid.")));
}

/*
 * A dict after ALTER TABLE (of itself or of a parent): refuse what would
 * break it, keep its triggers ENABLE ALWAYS, and move its version (the
 * contents may have been rewritten).  SPI connected.
 */
static void
check_dict(Oid relid)
{
	char	   *keycol,
			   *valcol;
	AttrNumber	katt,
				vatt;
	Oid			keytype;
	Relation	rel;
	TriggerDesc *td;
	Oid			fn = ddict_trigger_fn();
	List	   *reenable = NIL;

	ddict_require_preload();
	if (!ddict_registry_row(relid, &keycol, &valcol))
		return;					/* triggers without registration: attach in progress */
	katt = get_attnum(relid, keycol);
	vatt = get_attnum(relid, valcol);
	if (katt <= 0 || vatt <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("column \"%s\" of dict \"%s\" cannot be renamed or dropped",
						katt <= 0 ? keycol : valcol, get_rel_name(relid)),
				 errhint("Detach the dict with ddict_detach() first, and attach it again after.")));
	keytype = getBaseType(get_atttype(relid, katt));
	if (keytype != TEXTOID && keytype != VARCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("key column \"%s\" of dict \"%s\" must stay of type text or varchar",
						keycol, get_rel_name(relid))));
	ddict_check_value_type(get_atttype(relid, vatt), valcol);

	rel = table_open(relid, AccessShareLock);
	if (!TupleDescAttr(RelationGetDescr(rel), katt - 1)->attnotnull ||
		!TupleDescAttr(RelationGetDescr(rel), vatt - 1)->attnotnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("%s column \"%s\" of dict \"%s\" must stay NOT NULL",
						TupleDescAttr(RelationGetDescr(rel), katt - 1)->attnotnull ? "value" : "key",
						TupleDescAttr(RelationGetDescr(rel), katt - 1)->attnotnull ? valcol : keycol,
						RelationGetRelationName(rel)),
				 errhint("Detach the dict with ddict_detach() first.")));
	/* values published to Redis escape row security (streamer.c) */
	if ((rel->rd_rel->relrowsecurity || rel->rd_rel->relforcerowsecurity) &&
		ddict_publishes_changes(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("cannot enable row-level security on dict \"%s\": its changes are published to Redis",
						RelationGetRelationName(rel)),
				 errdetail("Published keys and values are readable by every client of the Redis server, whatever the table's policies."),
				 errhint("Stop publishing first: SELECT ddict_publish_changes('%s', false).",
						 RelationGetRelationName(rel))));
	if (!ddict_key_is_unique(rel, katt, NIL))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("key column \"%s\" of dict \"%s\" must keep a unique index",
						keycol, RelationGetRelationName(rel)),
				 errhint("Add another unique index on the key first, or detach the dict with ddict_detach().")));

	td = rel->trigdesc;
	for (int i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *tg = &td->triggers[i];

		if (tg->tgfoid != fn)
			continue;
		if (tg->tgenabled == TRIGGER_DISABLED)
			ereport(WARNING,
					(errmsg("trigger %s of dict \"%s\" is disabled",
							tg->tgname, RelationGetRelationName(rel)),
					 errdetail("Changes made while it is disabled do not move the dict's version; enabling it again moves it.")));
		else if (tg->tgenabled != TRIGGER_FIRES_ALWAYS)
			reenable = lappend(reenable, pstrdup(tg->tgname));
	}
	table_close(rel, NoLock);

	if (reenable != NIL)
	{
		StringInfoData sql;
		ListCell   *lc;

		initStringInfo(&sql);
		appendStringInfo(&sql, "ALTER TABLE %s", ddict_qualified_name(relid));
		foreach(lc, reenable)
			appendStringInfo(&sql, "%s ENABLE ALWAYS TRIGGER %s",
							 foreach_current_index(lc) ? "," : "",
							 quote_identifier((char *) lfirst(lc)));
		ddict_exec_as_registry_owner(sql.data, 0, NULL, NULL);
	}
	ddict_note_change(relid, NULL, 0);
	ddict_note_name(relid);		/* ALTER TABLE ... RENAME / SET SCHEMA */
}

/*
 * Move the version of every dict whose value type uses typid: walk the
 * dependencies on the type upwards (arrays, domains, ranges, composite
 * attributes, row types of relations) to table columns.  A dict reached
 * through any of its columns is moved: a spurious bump costs a reload, a
 * missed one serves stale text.
 */
static void
bump_users_of_type(Oid typid, List **seen, int depth)
{
	Relation	deprel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *types = NIL;
	ListCell   *lc;

	if (depth > 32 || list_member_oid(*seen, typid))
		return;
	*seen = lappend_oid(*seen, typid);

	deprel = table_open(DependRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(TypeRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(typid));
	scan = systable_beginscan(deprel, DependReferenceIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);

		if (dep->classid == TypeRelationId)
			types = lappend_oid(types, dep->objid);		/* array, domain, range */
		else if (dep->classid == RelationRelationId && dep->objsubid > 0)
		{
			Oid			reltype = get_rel_type_id(dep->objid);

			if (is_dict(dep->objid))
			{
				ddict_require_preload();
				ddict_note_change(dep->objid, NULL, 0);
			}
			if (OidIsValid(reltype))
				types = lappend_oid(types, reltype);	/* a column of a row type */
		}
	}
	systable_endscan(scan);
	table_close(deprel, AccessShareLock);

	foreach(lc, types)
		bump_users_of_type(lfirst_oid(lc), seen, depth + 1);
}

/* An altered relation: itself and its inheritors, and users of its row type. */
static void
altered_relation(Oid relid, List **seen_rels, List **seen_types)
{
	char		relkind = get_rel_relkind(relid);
	List	   *rels;
	ListCell   *lc;

	if (relkind == '\0' || list_member_oid(*seen_rels, relid))
		return;
	*seen_rels = lappend_oid(*seen_rels, relid);
	if (relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE ||
		relkind == RELKIND_FOREIGN_TABLE)
	{
		rels = find_all_inheritors(relid, AccessShareLock, NULL);
		foreach(lc, rels)
		{
			Oid			child = lfirst_oid(lc);

			if (is_dict(child))
				check_dict(child);
		}
	}
	if (OidIsValid(get_rel_type_id(relid)))
		bump_users_of_type(get_rel_type_id(relid), seen_types, 0);
}

/* ALTER TRIGGER (RENAME, DEPENDS ON EXTENSION) of ddict's own triggers. */
static void
altered_trigger(Oid trigoid)
{
	Relation	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(trigoid));
	scan = systable_beginscan(tgrel, TriggerOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup) &&
		((Form_pg_trigger) GETSTRUCT(tup))->tgfoid == ddict_trigger_fn())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("the ddict triggers of dict \"%s\" cannot be renamed or altered",
						get_rel_name(((Form_pg_trigger) GETSTRUCT(tup))->tgrelid)),
				 errhint("Use ddict_detach() to stop a table being a dict.")));
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
}

Datum
ddict_on_ddl_end(PG_FUNCTION_ARGS)
{
	SPIPlanPtr	plan;
	List	   *seen_rels = NIL,
			   *seen_types = NIL;
	int			n;
	Oid		   *classids,
			   *objids;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "ddict: not fired by an event trigger");
	SPI_connect();
	plan = ddict_plan("SELECT classid, objid FROM pg_catalog.pg_event_trigger_ddl_commands()",
					  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ddict: pg_event_trigger_ddl_commands() failed");
	n = (int) SPI_processed;
	classids = palloc(sizeof(Oid) * Max(n, 1));
	objids = palloc(sizeof(Oid) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		classids[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));
		objids[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 2, &isnull));
	}
	for (int i = 0; i < n; i++)
	{
		if (classids[i] == RelationRelationId)
			altered_relation(objids[i], &seen_rels, &seen_types);
		else if (classids[i] == TypeRelationId)
			bump_users_of_type(objids[i], &seen_types, 0);
		else if (classids[i] == TriggerRelationId)
			altered_trigger(objids[i]);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * DROP INDEX, before it runs: the index (or one of the indexes) that keeps a
 * dict's key unique may go only if another one remains.
 */
Datum
ddict_on_ddl_start(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	ListCell   *lc;
	List	   *indexes = NIL,
			   *tables = NIL;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "ddict: not fired by an event trigger");
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_INDEX)
		PG_RETURN_VOID();

	/* every index of the statement first: DROP INDEX a, b may drop both */
	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			index = RangeVarGetRelid(rv, NoLock, true);

		if (OidIsValid(index) && get_rel_relkind(index) == RELKIND_INDEX)
			indexes = lappend_oid(indexes, index);
	}
	foreach(lc, indexes)
	{
		Oid			table = IndexGetRelation(lfirst_oid(lc), true);
		char	   *keycol;
		Relation	rel;
		AttrNumber	katt;
		bool		ok = true;

		if (!OidIsValid(table) || list_member_oid(tables, table) || !is_dict(table))
			continue;
		tables = lappend_oid(tables, table);
		SPI_connect();
		if (ddict_registry_row(table, &keycol, NULL))
		{
			rel = table_open(table, AccessShareLock);
			katt = get_attnum(table, keycol);
			/* refuse only what makes a unique key non-unique */
			ok = ddict_key_is_unique(rel, katt, indexes) ||
				!ddict_key_is_unique(rel, katt, NIL);
			table_close(rel, NoLock);
		}
		SPI_finish();
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("cannot drop index \"%s\": it keeps the key of dict \"%s\" unique",
							get_rel_name(lfirst_oid(lc)), get_rel_name(table)),
					 errhint("Create another unique index on the key first, or detach the dict with ddict_detach().")));
	}
	PG_RETURN_VOID();
}

/*
 * After DROP of anything: unregister dropped dicts, and refuse a command that
 * dropped a dict's own triggers while the dict stays.  Only dicts named by
 * the dropped objects are looked at.
 */
Datum
ddict_on_sql_drop(PG_FUNCTION_ARGS)
{
	SPIPlanPtr	plan;
	Oid			argtypes[1] = {OIDOID};
	char	   *schema;
	int			n;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "ddict: not fired by an event trigger");
	SPI_connect();
	schema = ddict_ext_schema();
	plan = ddict_plan("SELECT objid, object_type, address_names[1], address_names[2], "
					  "pg_catalog.quote_ident(address_names[1]) OPERATOR(pg_catalog.||) '.' "
					  "OPERATOR(pg_catalog.||) pg_catalog.quote_ident(address_names[2]) "
					  "FROM pg_catalog.pg_event_trigger_dropped_objects() "
					  "WHERE (object_type OPERATOR(pg_catalog.=) 'table' AND objsubid OPERATOR(pg_catalog.=) 0) "
					  "OR object_type OPERATOR(pg_catalog.=) 'trigger'",
					  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ddict: pg_event_trigger_dropped_objects() failed");
	n = (int) SPI_processed;
	{
		SPITupleTable *tt = SPI_tuptable;

		for (int i = 0; i < n; i++)
		{
			HeapTuple	row = tt->vals[i];
			bool		isnull;
			Oid			objid = DatumGetObjectId(SPI_getbinval(row, tt->tupdesc, 1, &isnull));
			char	   *type = SPI_getvalue(row, tt->tupdesc, 2);

			if (strcmp(type, "table") == 0)
			{
				Datum		values[1] = {ObjectIdGetDatum(objid)};

				ddict_require_preload();
				if (ddict_exec_as_registry_owner(psprintf("DELETE FROM %s.ddict_registry "
														  "WHERE dict::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
														  schema),
												 1, argtypes, values) > 0)
					ddict_note_forget(objid, SPI_getvalue(row, tt->tupdesc, 5));
			}
			else
			{
				/* a trigger: address_names = {schema, table, trigger} */
				char	   *nspname = SPI_getvalue(row, tt->tupdesc, 3);
				char	   *relname = SPI_getvalue(row, tt->tupdesc, 4);
				Oid			nsp = nspname ? get_namespace_oid(nspname, true) : InvalidOid;
				Oid			table = OidIsValid(nsp) && relname ? get_relname_relid(relname, nsp) : InvalidOid;

				if (OidIsValid(table) && ddict_is_registered(table) &&
					list_length(ddict_trigger_names(table)) < 2)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_IN_USE),
							 errmsg("cannot drop the ddict triggers of dict %s",
									ddict_qualified_name(table)),
							 errhint("Use ddict_detach() to stop a table being a dict.")));
			}
		}
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/* 1.0's _ddict_ddl_check(oid): a dict after ALTER TABLE. */
Datum
ddict_ddl_check(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	SPI_connect();
	if (is_dict(PG_GETARG_OID(0)))
		check_dict(PG_GETARG_OID(0));
	SPI_finish();
	PG_RETURN_VOID();
}

/* 1.0's _ddict_forget(oid): a dropped dict. */
Datum
ddict_forget(PG_FUNCTION_ARGS)
{
	ddict_require_preload();
	if (!PG_ARGISNULL(0))
		ddict_note_forget(PG_GETARG_OID(0), NULL);
	PG_RETURN_VOID();
}
