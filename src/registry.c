/*
 * registry.c — which tables are dicts, and the functions that make and unmake
 * them: ddict_create(), ddict_attach(), ddict_detach().
 *
 * The registry is the extension's configuration table ddict_registry
 * (dict regclass, key_column name, value_column name), dumped by pg_dump via
 * pg_extension_config_dump and readable by everyone.  Only the table's owner
 * may attach or detach it; the registry row itself is written with the
 * registry owner's rights (SetUserIdAndSecContext, as CREATE EXTENSION
 * scripts' objects are written), so no role needs rights on the registry.
 *
 * SQL is never built from values: values travel as parameters, identifiers
 * are quoted with quote_identifier(), types with format_type_be_qualified(),
 * and operators are spelled OPERATOR(pg_catalog.=) so that a search_path
 * cannot redirect them.  Prepared plans are kept per backend, keyed by their
 * text and argument types (plancache.c replans them after DDL).
 */
#include "ddict.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "parser/parse_type.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "storage/lmgr.h"

PG_FUNCTION_INFO_V1(ddict_create);
PG_FUNCTION_INFO_V1(ddict_attach);
PG_FUNCTION_INFO_V1(ddict_detach);

#define PLAN_KEY_LEN 1024

typedef struct PlanEntry
{
	char		key[PLAN_KEY_LEN];
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plan_cache = NULL;

SPIPlanPtr
ddict_plan(const char *sql, int nargs, Oid *argtypes)
{
	StringInfoData key;
	PlanEntry  *e;
	bool		found;
	SPIPlanPtr	plan;

	initStringInfo(&key);
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&key, "%u,", argtypes[i]);
	appendStringInfo(&key, "|%s", sql);

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = PLAN_KEY_LEN;
		ctl.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("ddict plans", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	if (key.len < PLAN_KEY_LEN)
	{
		e = hash_search(plan_cache, key.data, HASH_FIND, NULL);
		if (e)
			return e->plan;
	}

	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "ddict: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (key.len >= PLAN_KEY_LEN)
		return plan;			/* too long to cache: lives until SPI_finish */
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "ddict: SPI_keepplan failed");
	e = hash_search(plan_cache, key.data, HASH_ENTER, &found);
	e->plan = plan;
	return plan;
}

/* Namespace of the installed extension, looked up in pg_extension. */
Oid
ddict_ext_namespace(void)
{
	static Oid	cached_ext = InvalidOid;
	static Oid	cached_nsp = InvalidOid;
	Oid			ext = get_extension_oid("ddict", true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	if (!OidIsValid(ext))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"ddict\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION ddict.")));
	if (ext == cached_ext)
		return cached_nsp;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "ddict: extension %u vanished", ext);
	cached_nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	cached_ext = ext;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return cached_nsp;
}

char *
ddict_ext_schema(void)
{
	return pstrdup(quote_identifier(get_namespace_name(ddict_ext_namespace())));
}

static char *
registry_sql(const char *fmt)
{
	return psprintf(fmt, ddict_ext_schema());
}

/* Reads the registry row of relid into key/value column names; SPI connected. */
bool
ddict_registry_row(Oid relid, char **keycol, char **valcol)
{
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	SPIPlanPtr	plan;
	int			rc;

	plan = ddict_plan(registry_sql("SELECT key_column::pg_catalog.text, value_column::pg_catalog.text "
								   "FROM %s.ddict_registry WHERE dict OPERATOR(pg_catalog.=) $1"),
					  1, argtypes);
	rc = SPI_execute_plan(plan, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "ddict: registry lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	if (keycol)
		*keycol = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (valcol)
		*valcol = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return true;
}

bool
ddict_is_registered(Oid relid)
{
	return ddict_registry_row(relid, NULL, NULL);
}

static char *
rel_name_or_error(Oid relid)
{
	char	   *name = get_rel_name(relid);

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return name;
}

char *
ddict_qualified_name(Oid relid)
{
	char	   *rel = rel_name_or_error(relid);

	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
}

/*
 * SQL for the text of a value column (quoted name valcol, type valtype):
 * the text its type's output function gives, which is what SELECT shows
 * (value::text would go through a cast: boolean's says "true" where SELECT
 * shows "t", char(n)'s trims, and CREATE CAST changes no row and moves no
 * version).  The output function is called by its qualified name and the
 * cstring made text by pg_catalog.textin: an output function takes exactly
 * its type (or, in pg_catalog, a pseudo-type such as anyenum), so no
 * overload anyone can create resolves better — the former
 * _ddict_text(anyelement) lost to an exact-type overload created in the
 * extension's schema, which then ran as every reader.  A domain is read
 * as its base type (casts from domains are ignored by PostgreSQL).
 */
char *
ddict_value_text_sql(const char *valcol, Oid valtype)
{
	Oid			base = getBaseType(valtype);
	Oid			out;
	bool		varlena;

	getTypeOutputInfo(base, &out, &varlena);
	/* a domain, however deep, as its base type: a relabelling, no cast */
	return psprintf("pg_catalog.textin(%s(%s%s%s))",
					quote_qualified_identifier(get_namespace_name(get_func_namespace(out)),
											   get_func_name(out)),
					valcol, base != valtype ? "::" : "",
					base != valtype ? format_type_be_qualified(base) : "");
}

DictInfo *
ddict_lookup(Oid relid)
{
	DictInfo   *d = palloc0(sizeof(DictInfo));
	char	   *keycol,
			   *valcol;
	AttrNumber	katt,
				vatt;
	Oid			coll;
	int32		ktypmod;

	(void) rel_name_or_error(relid);
	if (!ddict_registry_row(relid, &keycol, &valcol))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not a dict", get_rel_name(relid)),
				 errhint("Create one with ddict_create() or adopt a table with ddict_attach().")));
	katt = get_attnum(relid, keycol);
	vatt = get_attnum(relid, valcol);
	if (katt <= 0 || vatt <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("dict \"%s\" has no column \"%s\"", get_rel_name(relid),
						katt <= 0 ? keycol : valcol),
				 errhint("Columns of a dict must not be renamed; detach and attach it again.")));
	d->relid = relid;
	d->qualname = ddict_qualified_name(relid);
	d->keycol = pstrdup(quote_identifier(keycol));
	d->valcol = pstrdup(quote_identifier(valcol));
	get_atttypetypmodcoll(relid, katt, &d->keytype, &ktypmod, &coll);
	get_atttypetypmodcoll(relid, vatt, &d->valtype, &d->valtypmod, &coll);
	d->valtext = ddict_value_text_sql(d->valcol, d->valtype);
	return d;
}

/*
 * Run a utility or DML statement through SPI as the registry's owner;
 * returns the number of rows it processed.
 */
uint64
ddict_exec_as_registry_owner(const char *sql, int nargs, Oid *argtypes, Datum *args)
{
	Oid			nsp = ddict_ext_namespace();
	Oid			regrel = get_relname_relid("ddict_registry", nsp);
	HeapTuple	tup;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	int			rc;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(regrel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "ddict: registry table not found");
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	rc = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (rc < 0)
		elog(ERROR, "ddict: registry update failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

static void
exec_sql(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "ddict: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

static void
check_owner(Oid relid)
{
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
}

static AttrNumber
user_column(Oid relid, const char *name, const char *what)
{
	AttrNumber	att = get_attnum(relid, name);

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" does not exist in table \"%s\"",
						what, name, get_rel_name(relid))));
	if (att < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s column \"%s\" is a system column", what, name)));
	return att;
}

/*
 * A valid, immediate, non-partial unique index on exactly the key column,
 * other than the indexes in "except" (a list of OIDs, NIL for none)?
 */
bool
ddict_key_is_unique(Relation rel, AttrNumber keyatt, List *except)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		ok = false;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (list_member_oid(except, idx->indexrelid))
		{
			ReleaseSysCache(tup);
			continue;
		}
		if (idx->indisunique && idx->indimmediate && idx->indisvalid &&
			idx->indnkeyatts == 1 && idx->indkey.values[0] == keyatt &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL))
		{
			bool		isnull;
			Datum		coll = SysCacheGetAttr(INDEXRELID, tup, Anum_pg_index_indcollation, &isnull);
			Oid			c = isnull ? InvalidOid : ((oidvector *) DatumGetPointer(coll))->values[0];

			/* 'Key' and 'KEY' equal to the index would be two keys to a client */
			if (!OidIsValid(c) || get_collation_isdeterministic(c))
				ok = true;
		}
		ReleaseSysCache(tup);
	}
	list_free(indexes);
	return ok;
}

/* The body of ddict_attach(); SPI connected. */
static void
attach_internal(Oid relid, const char *keycol, const char *valcol)
{
	Relation	rel;
	AttrNumber	katt,
				vatt;
	Oid			keytype;
	char	   *qual;
	char	   *schema = ddict_ext_schema();
	char	   *args;
	Oid			argtypes[3] = {REGCLASSOID, NAMEOID, NAMEOID};
	Datum		values[3];
	NameData	kname,
				vname;

	/* ownership first, so that a stranger cannot queue a lock behind writers */
	(void) rel_name_or_error(relid);
	check_owner(relid);
	rel = table_open(relid, ShareRowExclusiveLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("Only ordinary tables can be dicts.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("temporary table \"%s\" cannot be a dict", RelationGetRelationName(rel)),
				 errdetail("Clients in other sessions could never read it.")));
	check_owner(relid);
	katt = user_column(relid, keycol, "key");
	vatt = user_column(relid, valcol, "value");
	if (katt == vatt)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key and value must be different columns")));
	keytype = getBaseType(get_atttype(relid, katt));
	if (keytype != TEXTOID && keytype != VARCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("key column \"%s\" must be of type text or varchar, not %s",
						keycol, format_type_be(get_atttype(relid, katt)))));
	if (!TupleDescAttr(RelationGetDescr(rel), katt - 1)->attnotnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("key column \"%s\" of table \"%s\" must be NOT NULL",
						keycol, RelationGetRelationName(rel)),
				 errhint("ALTER TABLE ... ALTER COLUMN ... SET NOT NULL, or use a PRIMARY KEY.")));
	ddict_check_key_collation(relid, katt, keycol);
	if (!ddict_key_is_unique(rel, katt, NIL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("key column \"%s\" of table \"%s\" has no unique index",
						keycol, RelationGetRelationName(rel)),
				 errhint("Add a PRIMARY KEY or a UNIQUE constraint on the key column.")));
	if (!TupleDescAttr(RelationGetDescr(rel), vatt - 1)->attnotnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("value column \"%s\" of table \"%s\" must be NOT NULL",
						valcol, RelationGetRelationName(rel)),
				 errdetail("A dict has no NULL values: a key is present with a value, or absent."),
				 errhint("ALTER TABLE ... ALTER COLUMN ... SET NOT NULL, or delete the rows whose value is NULL first.")));
	ddict_check_value_type(get_atttype(relid, vatt), valcol);
	table_close(rel, NoLock);
	if (ddict_is_registered(relid))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already a dict", get_rel_name(relid))));

	qual = ddict_qualified_name(relid);
	args = psprintf("%s, %s", quote_literal_cstr(keycol), quote_literal_cstr(valcol));
	/*
	 * No "UPDATE OF key, value": PostgreSQL skips column triggers when only a
	 * BEFORE trigger changed the column.  The trigger compares old and new
	 * key and value itself.
	 */
	/*
	 * ddict_trigger() is not executable by PUBLIC, so that nobody can attach
	 * it to other tables; the owner has been checked above.
	 */
	ddict_exec_as_registry_owner(psprintf("CREATE TRIGGER ddict_change AFTER INSERT OR UPDATE OR DELETE ON %s "
									"FOR EACH ROW EXECUTE FUNCTION %s.ddict_trigger(%s)",
									qual, schema, args), 0, NULL, NULL);
	ddict_exec_as_registry_owner(psprintf("CREATE TRIGGER ddict_truncate AFTER TRUNCATE ON %s "
									"FOR EACH STATEMENT EXECUTE FUNCTION %s.ddict_trigger(%s)",
									qual, schema, args), 0, NULL, NULL);
	ddict_exec_as_registry_owner(psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER ddict_change, "
									"ENABLE ALWAYS TRIGGER ddict_truncate", qual), 0, NULL, NULL);

	namestrcpy(&kname, keycol);
	namestrcpy(&vname, valcol);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = NameGetDatum(&kname);
	values[2] = NameGetDatum(&vname);
	ddict_exec_as_registry_owner(psprintf("INSERT INTO %s.ddict_registry (dict, key_column, value_column) "
									"VALUES ($1, $2, $3)", schema),
						   3, argtypes, values);

	/*
	 * A new dict: its version moves at commit, and clients load it whole.
	 * Its version slot is taken at commit, so a rolled-back attach takes none.
	 */
	ddict_note_change(relid, NULL, 0, DDICT_WRITE_ALL);
}

Datum
ddict_attach(PG_FUNCTION_ARGS)
{
	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	ddict_require_arg(fcinfo, 1, "key_column");
	ddict_require_arg(fcinfo, 2, "value_column");
	SPI_connect();
	attach_internal(PG_GETARG_OID(0), NameStr(*PG_GETARG_NAME(1)),
					NameStr(*PG_GETARG_NAME(2)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * ddict_create(dict text, value_type text DEFAULT 'text'), and the 1.0
 * signature ddict_create(dict text, value_type regtype).  The type is given
 * as text so that its modifier survives: regtype input drops it, and
 * 'varchar(5)' or 'numeric(4,2)' would silently become unlimited.
 */
Datum
ddict_create(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			valtype;
	int32		valtypmod = -1;
	RangeVar   *rv;
	Oid			nsp;
	Oid			relid;
	char		typtype;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	ddict_require_arg(fcinfo, 1, "value_type");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (get_fn_expr_argtype(fcinfo->flinfo, 1) == REGTYPEOID)
		valtype = PG_GETARG_OID(1);
	else
		parseTypeString(text_to_cstring(PG_GETARG_TEXT_PP(1)), &valtype, &valtypmod, false);
	typtype = get_typtype(valtype);
	if (typtype == TYPTYPE_PSEUDO || typtype == '\0' || !get_typisdefined(valtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("type %s cannot be the value type of a dict", format_type_be(valtype))));
	ddict_check_value_type(valtype, "value");

	rv = makeRangeVarFromNameList(stringToQualifiedNameList(name));
	nsp = RangeVarGetCreationNamespace(rv);

	SPI_connect();
	exec_sql(psprintf("CREATE TABLE %s (key pg_catalog.text PRIMARY KEY, value %s NOT NULL)",
					  quote_qualified_identifier(get_namespace_name(nsp), rv->relname),
					  format_type_extended(valtype, valtypmod,
										   FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY)));
	relid = get_relname_relid(rv->relname, nsp);
	if (!OidIsValid(relid))
		elog(ERROR, "ddict: created table \"%s\" not found", rv->relname);
	attach_internal(relid, "key", "value");
	SPI_finish();
	PG_RETURN_OID(relid);
}

Datum
ddict_detach(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *qual;
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		values[1];

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	relid = PG_GETARG_OID(0);
	SPI_connect();
	(void) ddict_lookup(relid);
	check_owner(relid);
	LockRelationOid(relid, ShareRowExclusiveLock);
	qual = ddict_qualified_name(relid);
	values[0] = ObjectIdGetDatum(relid);
	ddict_exec_as_registry_owner(psprintf("DELETE FROM %s.ddict_registry WHERE dict OPERATOR(pg_catalog.=) $1",
									ddict_ext_schema()),
						   1, argtypes, values);
	/* by function, not by name: whatever they are called, they go */
	{
		List	   *names = ddict_trigger_names(relid);
		ListCell   *lc;

		foreach(lc, names)
			exec_sql(psprintf("DROP TRIGGER %s ON %s",
							  quote_identifier((char *) lfirst(lc)), qual));
	}
	ddict_note_forget(relid, qual);
	SPI_finish();
	PG_RETURN_VOID();
}
