/*
 * ddl.c — event triggers that keep a dict whole through DDL.
 *
 * A dict's version must move whenever what its clients read changes, and a
 * dict must stay something a client can hold: a NOT NULL unique text key
 * with a deterministic collation, a NOT NULL value whose text names no
 * catalog object, ddict's two triggers, and no rules.  Row triggers see DML
 * only, so DDL is watched by three event triggers (installed ENABLE ALWAYS):
 *
 *   ddl_command_end  ALTER TABLE / VIEW / MATERIALIZED VIEW / FOREIGN TABLE /
 *       INDEX / TYPE / TRIGGER / SCHEMA, CREATE VIEW, CREATE RULE
 *       - every dict among the altered relation and its inheritors
 *         (ALTER TABLE on an inheritance parent or a partitioned table
 *         recurses into the children) is checked and its version moved;
 *       - every dict whose value type uses the altered type, or the altered
 *         relation's row type, through arrays, domains, ranges and
 *         composites, is checked and moved: ALTER TYPE mood RENAME VALUE,
 *         ALTER TYPE comp ADD ATTRIBUTE, ALTER TABLE t ADD COLUMN and
 *         CREATE OR REPLACE VIEW v (when t's or v's row type is a value
 *         type) change the text clients read without touching the dict;
 *       - ALTER TRIGGER of ddict's own triggers and rules on dicts are
 *         refused; ALTER SCHEMA ... RENAME renames the dicts it holds;
 *       - CREATE / ALTER POLICY (1.2) on a dict change what its readers
 *         see: its clients reload in full.
 *   ddl_command_start  DROP INDEX: the last unique index of a dict's key
 *       may not go (also through a partitioned parent's index).  Checked
 *       before the drop, because DROP INDEX CONCURRENTLY commits on the way.
 *   sql_drop  DROP TABLE of a dict unregisters it; dropping a dict's own
 *       triggers, its key or value column, or its last unique key index by
 *       a cascade (DROP TYPE/COLLATION/SCHEMA ... CASCADE) is refused; a
 *       dropped policy of a dict (DROP POLICY, or a cascade from what its
 *       expression used) makes its clients reload in full.
 *
 * ddict's triggers are recognised by their function (ddict_trigger), never by
 * name, and "is this a dict" is answered from pg_trigger through its index,
 * without locking the table and without the registry: DDL on tables that are
 * not dicts neither reads the registry nor waits for locks on other tables,
 * and nothing about one dict can make DDL on another table fail.  What a
 * command dropped is read from the catalogs as they were when it started:
 * the active snapshot of a utility command is taken before it runs and its
 * command ID is not advanced by the command's own catalog updates.
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
#include "catalog/pg_collation.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_rewrite.h"
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
#include "utils/snapmgr.h"
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

		cached_fn = LookupFuncName(name, 0, NULL, true);	/* renamed by a superuser: no guards */
		cached_ext = ext;
	}
	return cached_fn;
}

/*
 * The catalogs as they were when the current command started, or NULL (the
 * current catalogs) outside a command that has a snapshot.
 */
static Snapshot
before_command(void)
{
	return ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;
}

/*
 * An OID column of the catalog row whose OID is objid, looked up through the
 * catalog's OID index in the catalogs as of snap (NULL: now); InvalidOid
 * when there is no such row.
 */
static Oid
catalog_oid_field(Oid catalog, Oid oidindex, AttrNumber oidatt, Oid objid,
				  AttrNumber field, Snapshot snap)
{
	Relation	rel = table_open(catalog, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			result = InvalidOid;

	ScanKeyInit(&key, oidatt, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(objid));
	scan = systable_beginscan(rel, oidindex, true, snap, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, field, RelationGetDescr(rel), &isnull);

		if (!isnull)
			result = DatumGetObjectId(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/*
 * How many triggers running ddict_trigger() relid has, in the catalogs as of
 * snap (NULL: now).  Read from pg_trigger through its index: no lock on the
 * table, so DDL on a type never waits behind a lock on a table using it.
 */
static int
count_ddict_triggers(Oid relid, Snapshot snap)
{
	Oid			fn = ddict_trigger_fn();
	Relation	tgrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			n = 0;

	if (!OidIsValid(fn))
		return 0;
	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true, snap, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		if (((Form_pg_trigger) GETSTRUCT(tup))->tgfoid == fn)
			n++;
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return n;
}

/*
 * Is relid a dict (now)?  Dicts are exactly the tables with ddict's triggers:
 * attach installs them, detach removes them, and dropping or renaming them is
 * refused.  relhastriggers answers most tables from the syscache.
 */
static bool
is_dict(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	bool		maybe;

	if (!HeapTupleIsValid(tup))
		return false;
	maybe = ((Form_pg_class) GETSTRUCT(tup))->relkind == RELKIND_RELATION &&
		((Form_pg_class) GETSTRUCT(tup))->relhastriggers;
	ReleaseSysCache(tup);
	return maybe && count_ddict_triggers(relid, NULL) > 0;
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

	check_stack_depth();
	switch (typid)
	{
		case ACLITEMOID:		/* role names */
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

/* InvalidOid, or deterministic; a collation dropped by this command was. */
static bool
collation_is_deterministic(Oid coll)
{
	HeapTuple	tup;
	bool		yes;

	if (!OidIsValid(coll))
		return true;
	tup = SearchSysCache1(COLLOID, ObjectIdGetDatum(coll));
	if (!HeapTupleIsValid(tup))
		return true;
	yes = ((Form_pg_collation) GETSTRUCT(tup))->collisdeterministic;
	ReleaseSysCache(tup);
	return yes;
}

/*
 * Does relid's key column katt have a valid, immediate, non-partial unique
 * index with a deterministic collation, other than those in except, in the
 * catalogs as of snap (NULL: now)?  A non-deterministic collation would let
 * 'Key' and 'KEY' be one key to the index and two to a client.
 */
static bool
key_unique_in(Oid relid, AttrNumber katt, List *except, Snapshot snap)
{
	Relation	idxrel = table_open(IndexRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		ok = false;

	ScanKeyInit(&key, Anum_pg_index_indrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(idxrel, IndexIndrelidIndexId, true, snap, 1, &key);
	while (!ok && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		bool		isnull;
		Datum		coll;

		if (list_member_oid(except, idx->indexrelid) ||
			!idx->indisunique || !idx->indimmediate || !idx->indisvalid ||
			idx->indnkeyatts != 1 || idx->indkey.values[0] != katt ||
			!heap_attisnull(tup, Anum_pg_index_indpred, RelationGetDescr(idxrel)) ||
			!heap_attisnull(tup, Anum_pg_index_indexprs, RelationGetDescr(idxrel)))
			continue;
		coll = heap_getattr(tup, Anum_pg_index_indcollation, RelationGetDescr(idxrel), &isnull);
		if (!isnull)
		{
			Oid			c = ((oidvector *) DatumGetPointer(coll))->values[0];

			if (!collation_is_deterministic(c))
				continue;
		}
		ok = true;
	}
	systable_endscan(scan);
	table_close(idxrel, AccessShareLock);
	return ok;
}

/* The key column's own collation must be deterministic (see above). */
void
ddict_check_key_collation(Oid relid, AttrNumber katt, const char *keycol)
{
	Oid			type,
				coll;
	int32		typmod;

	get_atttypetypmodcoll(relid, katt, &type, &typmod, &coll);

	if (!collation_is_deterministic(coll))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("key column \"%s\" of table \"%s\" has a non-deterministic collation",
						keycol, get_rel_name(relid)),
				 errdetail("Keys that the collation calls equal would be one key in the table and two in a client."),
				 errhint("Use a deterministic collation such as \"C\" or \"default\" for the key.")));
}

/* Set while check_dict() re-enables triggers, whose ALTER TABLE comes back here. */
static bool reenabling = false;

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
	ddict_check_key_collation(relid, katt, keycol);
	/*
	 * The key must keep a unique index, if it had one when the command
	 * started: pg_restore creates and enables a dict's triggers before a
	 * partition gets its parent's index, and that is no reason to fail.
	 */
	if (!key_unique_in(relid, katt, NIL, NULL) &&
		key_unique_in(relid, katt, NIL, before_command()))
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
		reenabling = true;
		PG_TRY();
		{
			ddict_exec_as_registry_owner(sql.data, 0, NULL, NULL);
		}
		PG_FINALLY();
		{
			reenabling = false;
		}
		PG_END_TRY();
	}
	/* a whole-dict change; its commit also notes the name (ALTER TABLE ...
	 * RENAME / SET SCHEMA): xact.c */
	ddict_note_change(relid, NULL, 0, DDICT_WRITE_ALL);
}

/*
 * Move the version of every dict whose value type uses typid: walk the
 * dependencies on the type upwards (arrays, domains, ranges, composite
 * attributes, row types of relations) to table columns.  A dict reached
 * through any of its columns is moved: a spurious bump costs a reload, a
 * missed one serves stale text.
 */
static void
bump_users_of_type(Oid typid, List **seen)
{
	Relation	deprel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *types = NIL,
			   *dicts = NIL;
	ListCell   *lc;

	check_stack_depth();
	if (list_member_oid(*seen, typid))
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
				dicts = list_append_unique_oid(dicts, dep->objid);
			if (OidIsValid(reltype))
				types = lappend_oid(types, reltype);	/* a column of a row type */
		}
	}
	systable_endscan(scan);
	table_close(deprel, AccessShareLock);

	foreach(lc, dicts)
	{
		Oid			relid = lfirst_oid(lc);
		char	   *valcol;

		ddict_require_preload();
		if (ddict_registry_row(relid, NULL, &valcol))
			ddict_check_value_type(get_atttype(relid, get_attnum(relid, valcol)), valcol);
		ddict_note_change(relid, NULL, 0, DDICT_WRITE_ALL);
	}
	foreach(lc, types)
		bump_users_of_type(lfirst_oid(lc), seen);
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
		/* the command locked what it recursed into; NoLock for ONLY */
		rels = find_all_inheritors(relid, NoLock, NULL);
		foreach(lc, rels)
		{
			Oid			child = lfirst_oid(lc);

			if (is_dict(child))
				check_dict(child);
		}
	}
	if (OidIsValid(get_rel_type_id(relid)))
		bump_users_of_type(get_rel_type_id(relid), seen_types);
}

/* ALTER TRIGGER (RENAME, DEPENDS ON EXTENSION) of ddict's own triggers. */
static void
altered_trigger(Oid trigoid)
{
	Oid			fn = catalog_oid_field(TriggerRelationId, TriggerOidIndexId, Anum_pg_trigger_oid,
									   trigoid, Anum_pg_trigger_tgfoid, NULL);
	Oid			table = catalog_oid_field(TriggerRelationId, TriggerOidIndexId, Anum_pg_trigger_oid,
										  trigoid, Anum_pg_trigger_tgrelid, NULL);

	if (OidIsValid(fn) && fn == ddict_trigger_fn())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("the ddict triggers of dict \"%s\" cannot be renamed or altered",
						get_rel_name(table)),
				 errhint("Use ddict_detach() to stop a table being a dict.")));
}

/* CREATE RULE on a dict: a rule can make writes vanish or go elsewhere. */
static void
created_rule(Oid ruleoid)
{
	Oid			table = catalog_oid_field(RewriteRelationId, RewriteOidIndexId, Anum_pg_rewrite_oid,
										  ruleoid, Anum_pg_rewrite_ev_class, NULL);

	if (OidIsValid(table) && is_dict(table))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("dict \"%s\" cannot have rules", get_rel_name(table)),
				 errdetail("A rule can make a write to a dict vanish or land elsewhere, and ddict_set() would not know."),
				 errhint("Use a trigger, or detach the dict with ddict_detach() first.")));
}

/*
 * CREATE / ALTER POLICY on a dict: what its readers' SELECT returns changes
 * without a write.  Clients reload in full (a delta would miss rows that
 * became visible).
 */
static void
altered_policy(Oid policyoid)
{
	Oid			table = catalog_oid_field(PolicyRelationId, PolicyOidIndexId, Anum_pg_policy_oid,
										  policyoid, Anum_pg_policy_polrelid, NULL);

	if (OidIsValid(table) && is_dict(table))
	{
		ddict_require_preload();
		ddict_note_change(table, NULL, 0, DDICT_WRITE_ALL);
	}
}

/* ALTER SCHEMA ... RENAME / OWNER: dicts in it have a new qualified name. */
static void
altered_schema(Oid nsp)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(nsp)};
	SPIPlanPtr	plan;
	uint64		n;
	Oid		   *dicts;

	plan = ddict_plan(psprintf("SELECT r.dict::pg_catalog.oid FROM %s.ddict_registry r "
							   "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.dict "
							   "WHERE c.relnamespace OPERATOR(pg_catalog.=) $1",
							   ddict_ext_schema()),
					  1, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ddict: registry lookup failed");
	n = SPI_processed;
	dicts = palloc(sizeof(Oid) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		dicts[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												  SPI_tuptable->tupdesc, 1, &isnull));
	}
	/*
	 * Renamed with its schema: a whole-dict change, so that its commit notes
	 * the new name and moves the version — a key that bore the name keeps
	 * another relation's version otherwise (a blue/green swap of schemas
	 * went unnoticed by clients reading versions from Redis).
	 */
	for (uint64 i = 0; i < n; i++)
	{
		ddict_require_preload();
		ddict_note_change(dicts[i], NULL, 0, DDICT_WRITE_ALL);
	}
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
	if (reenabling)
		PG_RETURN_VOID();		/* our own ENABLE ALWAYS TRIGGER */
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
			bump_users_of_type(objids[i], &seen_types);
		else if (classids[i] == TriggerRelationId)
			altered_trigger(objids[i]);
		else if (classids[i] == RewriteRelationId)
			created_rule(objids[i]);
		else if (classids[i] == NamespaceRelationId)
			altered_schema(objids[i]);
		else if (classids[i] == PolicyRelationId)
			altered_policy(objids[i]);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Would dropping these indexes leave a dict's key without a unique index?
 * Partitioned indexes take their partitions' indexes with them.  Refused
 * before anything is dropped.
 */
static void
refuse_dropping_key_indexes(List *indexes)
{
	List	   *all = NIL,
			   *tables = NIL;
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Oid			index = lfirst_oid(lc);

		if (get_rel_relkind(index) == RELKIND_PARTITIONED_INDEX)
			all = list_concat_unique_oid(all, find_all_inheritors(index, NoLock, NULL));
		else
			all = list_append_unique_oid(all, index);
	}
	foreach(lc, all)
	{
		Oid			index = lfirst_oid(lc);
		Oid			table = IndexGetRelation(index, true);
		char	   *keycol;
		AttrNumber	katt;

		if (!OidIsValid(table) || list_member_oid(tables, table) || !is_dict(table))
			continue;
		tables = lappend_oid(tables, table);
		SPI_connect();
		if (ddict_registry_row(table, &keycol, NULL))
		{
			katt = get_attnum(table, keycol);
			/* refuse only what makes a unique key non-unique */
			if (!key_unique_in(table, katt, all, NULL) && key_unique_in(table, katt, NIL, NULL))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_IN_USE),
						 errmsg("cannot drop index \"%s\": it keeps the key of dict \"%s\" unique",
								get_rel_name(index), get_rel_name(table)),
						 errhint("Create another unique index on the key first, or detach the dict with ddict_detach().")));
		}
		SPI_finish();
	}
}

/* DROP INDEX, before it runs. */
Datum
ddict_on_ddl_start(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	ListCell   *lc;
	List	   *indexes = NIL;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "ddict: not fired by an event trigger");
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_INDEX)
		PG_RETURN_VOID();
	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			index = RangeVarGetRelid(rv, NoLock, true);
		char		kind = OidIsValid(index) ? get_rel_relkind(index) : '\0';

		if (kind == RELKIND_INDEX || kind == RELKIND_PARTITIONED_INDEX)
			indexes = lappend_oid(indexes, index);
	}
	refuse_dropping_key_indexes(indexes);
	PG_RETURN_VOID();
}

/* A dropped trigger's table and function, from the catalogs before the command. */
static bool
dropped_trigger(Oid trigoid, Oid *table, Oid *fn)
{
	*fn = catalog_oid_field(TriggerRelationId, TriggerOidIndexId, Anum_pg_trigger_oid,
							trigoid, Anum_pg_trigger_tgfoid, before_command());
	*table = catalog_oid_field(TriggerRelationId, TriggerOidIndexId, Anum_pg_trigger_oid,
							   trigoid, Anum_pg_trigger_tgrelid, before_command());
	return OidIsValid(*fn);
}

/* A dropped index's table, from the catalogs before the command. */
static Oid
dropped_index_table(Oid index)
{
	return catalog_oid_field(IndexRelationId, IndexRelidIndexId, Anum_pg_index_indexrelid,
							 index, Anum_pg_index_indrelid, before_command());
}

/*
 * A dict that still exists after a DROP (of its column, index or trigger,
 * perhaps by a cascade from a type, collation or schema): is it whole?
 */
static void
check_dict_after_drop(Oid relid)
{
	char	   *keycol,
			   *valcol;
	AttrNumber	katt,
				vatt;

	if (!ddict_registry_row(relid, &keycol, &valcol))
		return;
	katt = get_attnum(relid, keycol);
	vatt = get_attnum(relid, valcol);
	if (katt <= 0 || vatt <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("cannot drop column \"%s\" of dict %s",
						katt <= 0 ? keycol : valcol, ddict_qualified_name(relid)),
				 errhint("Detach the dict with ddict_detach() first.")));
	if (count_ddict_triggers(relid, NULL) < 2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("cannot drop the ddict triggers of dict %s",
						ddict_qualified_name(relid)),
				 errhint("Use ddict_detach() to stop a table being a dict.")));
	if (!key_unique_in(relid, katt, NIL, NULL) && key_unique_in(relid, katt, NIL, before_command()))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("cannot drop the last unique index on the key of dict %s",
						ddict_qualified_name(relid)),
				 errhint("Create another unique index on the key first, or detach the dict with ddict_detach().")));
}

/*
 * After DROP of anything: unregister dropped dicts, and refuse a command that
 * took from a dict that stays its triggers, key or value column, or key
 * index.  Which dropped objects belonged to dicts is read from the catalogs
 * as they were before the command: tables that are not dicts cost no
 * registry access.
 */
Datum
ddict_on_sql_drop(PG_FUNCTION_ARGS)
{
	SPIPlanPtr	plan;
	Oid			argtypes[1] = {OIDOID};
	List	   *gone = NIL,
			   *touched = NIL;
	List	   *gone_names = NIL;
	ListCell   *lc,
			   *lc2;
	int			n;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "ddict: not fired by an event trigger");
	SPI_connect();
	plan = ddict_plan("SELECT objid, objsubid, object_type, "
					  "pg_catalog.quote_ident(address_names[1]) OPERATOR(pg_catalog.||) '.' "
					  "OPERATOR(pg_catalog.||) pg_catalog.quote_ident(address_names[2]) "
					  "FROM pg_catalog.pg_event_trigger_dropped_objects() "
					  "WHERE object_type OPERATOR(pg_catalog.=) ANY "
					  "('{table,trigger,index,\"table column\",policy}'::pg_catalog.text[])",
					  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "ddict: pg_event_trigger_dropped_objects() failed");
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			objid = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
		int32		subid = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
		char	   *type = SPI_getvalue(row, desc, 3);
		Oid			table = InvalidOid,
					fn;

		if (strcmp(type, "table") == 0)
		{
			if (count_ddict_triggers(objid, before_command()) > 0)
			{
				gone = lappend_oid(gone, objid);
				gone_names = lappend(gone_names, SPI_getvalue(row, desc, 4));
			}
			continue;
		}
		if (strcmp(type, "policy") == 0)
		{
			/* by DROP POLICY, or by a cascade from what its expression used */
			table = catalog_oid_field(PolicyRelationId, PolicyOidIndexId, Anum_pg_policy_oid,
									  objid, Anum_pg_policy_polrelid, before_command());
			if (OidIsValid(table) && is_dict(table))
			{
				ddict_require_preload();
				ddict_note_change(table, NULL, 0, DDICT_WRITE_ALL);
			}
			continue;
		}
		if (strcmp(type, "trigger") == 0)
		{
			if (!dropped_trigger(objid, &table, &fn) || fn != ddict_trigger_fn())
				continue;
		}
		else if (strcmp(type, "index") == 0)
			table = dropped_index_table(objid);
		else if (subid > 0)
			table = objid;		/* a column */
		if (OidIsValid(table) && is_dict(table))
			touched = list_append_unique_oid(touched, table);
		else if (OidIsValid(table) && strcmp(type, "trigger") == 0 &&
				 get_rel_relkind(table) != '\0')
			touched = list_append_unique_oid(touched, table);	/* lost both */
	}

	forboth(lc, gone, lc2, gone_names)
	{
		Datum		values[1] = {ObjectIdGetDatum(lfirst_oid(lc))};

		ddict_require_preload();
		if (ddict_exec_as_registry_owner(psprintf("DELETE FROM %s.ddict_registry "
												  "WHERE dict::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
												  ddict_ext_schema()),
										 1, argtypes, values) > 0)
			ddict_note_forget(lfirst_oid(lc), (char *) lfirst(lc2));
	}
	foreach(lc, touched)
	{
		if (!list_member_oid(gone, lfirst_oid(lc)))
			check_dict_after_drop(lfirst_oid(lc));
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
