/*
 * functions.c — dict semantics from SQL: get, set, delete, pop, setdefault,
 * items, keys, len.
 *
 * Every function runs its statement through SPI as the calling role, so the
 * table's privileges and row-level security apply exactly as they would to
 * the equivalent INSERT/UPDATE/DELETE/SELECT; none is SECURITY DEFINER.
 * Values are converted with the value column type's input function, so a
 * jsonb dict rejects invalid JSON with PostgreSQL's own error before anything
 * is written.  Reads are STABLE and use the caller's snapshot (SPI read_only);
 * writes take a fresh snapshot per statement as any volatile function does.
 */
#include "ddict.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ddict_get);
PG_FUNCTION_INFO_V1(ddict_set);
PG_FUNCTION_INFO_V1(ddict_delete);
PG_FUNCTION_INFO_V1(ddict_pop);
PG_FUNCTION_INFO_V1(ddict_setdefault);
PG_FUNCTION_INFO_V1(ddict_items);
PG_FUNCTION_INFO_V1(ddict_keys);
PG_FUNCTION_INFO_V1(ddict_len);

/* Check the common (dict, key) arguments, connect SPI, look the dict up. */
static DictInfo *
open_dict(FunctionCallInfo fcinfo)
{
	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	ddict_require_arg(fcinfo, 1, "key");
	SPI_connect();
	return ddict_lookup(PG_GETARG_OID(0));
}

static Datum
value_input(DictInfo *d, text *value)
{
	Oid			infunc,
				ioparam;

	getTypeInputInfo(d->valtype, &infunc, &ioparam);
	return OidInputFunctionCall(infunc, text_to_cstring(value), ioparam, d->valtypmod);
}

/*
 * Run plan with args; return the first column of the first row as text in
 * the caller's memory context (NULL when there is no row).
 */
static text *
run_for_text(SPIPlanPtr plan, Datum *args, bool read_only, uint64 *nrows)
{
	int			rc = SPI_execute_plan(plan, args, NULL, read_only, 0);
	bool		isnull;
	Datum		d;

	if (rc < 0)
		elog(ERROR, "ddict: statement failed: %s", SPI_result_code_string(rc));
	if (nrows)
		*nrows = SPI_processed;
	if (SPI_processed == 0 || SPI_tuptable == NULL)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return NULL;
	/* packed is fine to return; DatumGetTextP would copy into SPI memory */
	return (text *) DatumGetPointer(SPI_datumTransfer(d, false, -1));
}

static SPIPlanPtr
plan_select_value(DictInfo *d)
{
	Oid			argtypes[1] = {TEXTOID};

	return ddict_plan(psprintf("SELECT %s FROM ONLY %s WHERE %s OPERATOR(pg_catalog.=) $1",
							   d->valtext, d->qualname, d->keycol),
					  1, argtypes);
}

Datum
ddict_get(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_dict(fcinfo);
	Datum		args[1] = {PG_GETARG_DATUM(1)};
	text	   *result = run_for_text(plan_select_value(d), args, true, NULL);

	SPI_finish();
	if (result)
		PG_RETURN_TEXT_P(result);
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
		PG_RETURN_DATUM(PG_GETARG_DATUM(2));
	PG_RETURN_NULL();
}

Datum
ddict_set(PG_FUNCTION_ARGS)
{
	DictInfo   *d;
	Oid			argtypes[2];
	Datum		args[2];
	SPIPlanPtr	plan;

	ddict_require_arg(fcinfo, 2, "value");
	d = open_dict(fcinfo);
	argtypes[0] = TEXTOID;
	argtypes[1] = d->valtype;
	args[0] = PG_GETARG_DATUM(1);
	args[1] = value_input(d, PG_GETARG_TEXT_PP(2));
	plan = ddict_plan(psprintf("INSERT INTO %s (%s, %s) VALUES ($1, $2) "
							   "ON CONFLICT (%s) DO UPDATE SET %s = EXCLUDED.%s",
							   d->qualname, d->keycol, d->valcol,
							   d->keycol, d->valcol, d->valcol),
					  2, argtypes);
	(void) run_for_text(plan, args, false, NULL);
	SPI_finish();
	PG_RETURN_VOID();
}

static SPIPlanPtr
plan_delete(DictInfo *d)
{
	Oid			argtypes[1] = {TEXTOID};

	return ddict_plan(psprintf("DELETE FROM ONLY %s WHERE %s OPERATOR(pg_catalog.=) $1 "
							   "RETURNING %s",
							   d->qualname, d->keycol, d->valtext),
					  1, argtypes);
}

Datum
ddict_delete(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_dict(fcinfo);
	Datum		args[1] = {PG_GETARG_DATUM(1)};
	uint64		n;

	(void) run_for_text(plan_delete(d), args, false, &n);
	SPI_finish();
	PG_RETURN_BOOL(n > 0);
}

Datum
ddict_pop(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_dict(fcinfo);
	Datum		args[1] = {PG_GETARG_DATUM(1)};
	uint64		n;
	text	   *result = run_for_text(plan_delete(d), args, false, &n);
	Oid			relid = d->relid;

	SPI_finish();
	if (n > 0)
		PG_RETURN_TEXT_P(result);
	if (PG_NARGS() > 2)
	{
		if (PG_ARGISNULL(2))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(2));
	}
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("key \"%s\" not found in dict \"%s\"",
					text_to_cstring(PG_GETARG_TEXT_PP(1)), get_rel_name(relid)),
			 errhint("Pass a default to ddict_pop() to get it instead of an error.")));
	PG_RETURN_NULL();			/* not reached */
}

/*
 * Insert-if-absent that returns what is stored, also under concurrency:
 * ON CONFLICT DO NOTHING waits for a concurrent inserter of the same key and
 * then does nothing; the following SELECT, with a fresh snapshot, sees that
 * inserter's row.  If the row was deleted in between, try again.
 */
Datum
ddict_setdefault(PG_FUNCTION_ARGS)
{
	DictInfo   *d;
	Oid			argtypes[2];
	Datum		args[2];
	SPIPlanPtr	ins;
	text	   *result = NULL;

	ddict_require_arg(fcinfo, 2, "default");
	d = open_dict(fcinfo);
	argtypes[0] = TEXTOID;
	argtypes[1] = d->valtype;
	args[0] = PG_GETARG_DATUM(1);
	args[1] = value_input(d, PG_GETARG_TEXT_PP(2));
	ins = ddict_plan(psprintf("INSERT INTO %s (%s, %s) VALUES ($1, $2) "
							  "ON CONFLICT (%s) DO NOTHING RETURNING %s",
							  d->qualname, d->keycol, d->valcol, d->keycol, d->valtext),
					 2, argtypes);
	for (int attempt = 0; attempt < 100 && result == NULL; attempt++)
	{
		CHECK_FOR_INTERRUPTS();
		result = run_for_text(ins, args, false, NULL);
		if (result == NULL)
			result = run_for_text(plan_select_value(d), args, false, NULL);
	}
	SPI_finish();
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("ddict_setdefault() gave up: the key kept being deleted concurrently")));
	PG_RETURN_TEXT_P(result);
}

/* Stream "sql" into the SRF's tuplestore through a cursor. */
static void
materialize(FunctionCallInfo fcinfo, const char *sql)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPIPlanPtr	plan;
	Portal		portal;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	plan = ddict_plan(sql, 0, NULL);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			Datum		values[2];
			bool		nulls[2];
			int			natts = rsinfo->setDesc->natts;

			for (int c = 0; c < natts; c++)
				values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
										  c + 1, &nulls[c]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

static DictInfo *
open_whole_dict(FunctionCallInfo fcinfo)
{
	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	SPI_connect();
	return ddict_lookup(PG_GETARG_OID(0));
}

Datum
ddict_items(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_whole_dict(fcinfo);

	materialize(fcinfo, psprintf("SELECT %s::pg_catalog.text, %s FROM ONLY %s ORDER BY 1",
								 d->keycol, d->valtext, d->qualname));
	SPI_finish();
	return (Datum) 0;
}

Datum
ddict_keys(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_whole_dict(fcinfo);

	materialize(fcinfo, psprintf("SELECT %s::pg_catalog.text FROM ONLY %s ORDER BY 1",
								 d->keycol, d->qualname));
	SPI_finish();
	return (Datum) 0;
}

Datum
ddict_len(PG_FUNCTION_ARGS)
{
	DictInfo   *d = open_whole_dict(fcinfo);
	bool		isnull;
	int64		n;
	int			rc;

	rc = SPI_execute_plan(ddict_plan(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s", d->qualname),
									 0, NULL), NULL, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "ddict: count failed: %s", SPI_result_code_string(rc));
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT64(n);
}

/*
 * _ddict_text(value anyelement) → text: a value's text through its type's
 * output function.  value::text would go through a cast from the value type
 * to text if its owner created one, and CREATE CAST changes no row and moves
 * no version: clients would read text the dict never had.  Built-in types
 * keep ::text (nobody but a superuser can cast from them), so char(n) keeps
 * its trimmed text.  Caches the output function per call site.
 */
PG_FUNCTION_INFO_V1(ddict_value_text);
Datum
ddict_value_text(PG_FUNCTION_ARGS)
{
	typedef struct
	{
		Oid			type;
		FmgrInfo	out;
	} OutCache;
	OutCache   *c = (OutCache *) fcinfo->flinfo->fn_extra;
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, 0);

	if (c == NULL || c->type != type)
	{
		Oid			outfn;
		bool		varlena;

		if (!OidIsValid(type))
			elog(ERROR, "ddict: _ddict_text() could not determine its argument's type");
		if (c == NULL)
			c = fcinfo->flinfo->fn_extra = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(OutCache));
		getTypeOutputInfo(type, &outfn, &varlena);
		fmgr_info_cxt(outfn, &c->out, fcinfo->flinfo->fn_mcxt);
		c->type = type;
	}
	PG_RETURN_TEXT_P(cstring_to_text(OutputFunctionCall(&c->out, PG_GETARG_DATUM(0))));
}
