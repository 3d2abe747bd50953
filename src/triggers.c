/*
 * triggers.c — the trigger every dict table carries.
 *
 * ddict_attach() installs it twice, ENABLE ALWAYS so that it also fires under
 * session_replication_role = replica and in logical replication apply:
 *
 *   AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW
 *   AFTER TRUNCATE FOR EACH STATEMENT
 *
 * with the key and value column names as arguments.  It only notes the
 * change for xact.c; versions move at commit.  An UPDATE that leaves key and
 * value as they were (another column changed, or value = value) is not a
 * change of the dict.  It also enforces
 * ddict.max_value_size, so an oversized value fails on every write path
 * (ddict_set, plain INSERT, COPY) with the same clear error.
 */
#include "ddict.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "catalog/pg_type.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

int			ddict_max_value_size = 1024 * 1024;

void
ddict_triggers_define_gucs(void)
{
	DefineCustomIntVariable("ddict.max_value_size",
							"Largest value, in bytes, that may be stored in a dict.",
							"Enforced by the dict trigger on every write path.",
							&ddict_max_value_size,
							1024 * 1024, 1, MaxAllocSize,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(ddict_trigger);

static int
column_number(Relation rel, const char *name)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("dict column \"%s\" of table \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint("Columns of a dict must not be renamed; detach and attach it again.")));
	return attnum;
}

/*
 * The key and value column numbers of a trigger, and whether its key type
 * was checked, cached per backend: a row need not search the columns by name
 * again (a scan of the descriptor, wide tables included) nor, for a domain
 * key, look its base type up in the catalogs.  An entry is used only while
 * the relation's columns at those numbers still have the trigger's names and
 * the key the type that was checked, so it never answers differently from a
 * fresh lookup.
 */
typedef struct TriggerColumns
{
	Oid			tgoid;
	int			keyatt;
	int			valatt;
	Oid			keytype;		/* checked to be text or varchar underneath */
} TriggerColumns;

#define TRIGGER_CACHE_SIZE 16
static TriggerColumns trigger_cache[TRIGGER_CACHE_SIZE];
static int	trigger_cache_next = 0;

static bool
column_is(TupleDesc desc, int attnum, const char *name)
{
	Form_pg_attribute att;

	if (attnum <= 0 || attnum > desc->natts)
		return false;
	att = TupleDescAttr(desc, attnum - 1);
	return !att->attisdropped && strcmp(NameStr(att->attname), name) == 0;
}

static void
check_key_type(Relation rel, Trigger *tg, Oid keytype)
{
	/* the key is read as text below; ALTER TYPE is refused, but be sure */
	if (keytype != TEXTOID && keytype != VARCHAROID &&
		getBaseType(keytype) != TEXTOID && getBaseType(keytype) != VARCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("key column \"%s\" of dict \"%s\" must be of type text or varchar",
						tg->tgargs[0], RelationGetRelationName(rel))));
}

static const TriggerColumns *
trigger_columns(Relation rel, Trigger *tg)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerColumns *c;
	int			keyatt,
				valatt;
	Oid			keytype;

	for (int i = 0; i < TRIGGER_CACHE_SIZE; i++)
	{
		c = &trigger_cache[i];
		if (c->tgoid == tg->tgoid && OidIsValid(c->tgoid) &&
			column_is(desc, c->keyatt, tg->tgargs[0]) &&
			column_is(desc, c->valatt, tg->tgargs[1]) &&
			TupleDescAttr(desc, c->keyatt - 1)->atttypid == c->keytype)
			return c;
	}
	keyatt = column_number(rel, tg->tgargs[0]);
	valatt = column_number(rel, tg->tgargs[1]);
	keytype = TupleDescAttr(desc, keyatt - 1)->atttypid;
	check_key_type(rel, tg, keytype);

	c = &trigger_cache[trigger_cache_next];
	trigger_cache_next = (trigger_cache_next + 1) % TRIGGER_CACHE_SIZE;
	c->tgoid = tg->tgoid;
	c->keyatt = keyatt;
	c->valatt = valatt;
	c->keytype = keytype;
	return c;
}

/* A write of rows (+1, 0, -1) of the key of tuple, or of the key of a row
 * that was replaced (old_row): was that row there before this transaction? */
static KeyWrite
write_of(int rows, HeapTuple old_row)
{
	KeyWrite	w = {rows, false};

	if (old_row != NULL)
		w.old = !TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(old_row->t_data));
	return w;
}

static void
note_key(Oid relid, HeapTuple tuple, TupleDesc desc, int keyatt, KeyWrite w)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, keyatt, desc, &isnull);
	text	   *t;

	if (isnull)
	{
		/* not a key a client can hold: reload the dict whole */
		ddict_note_change(relid, NULL, 0, w);
		return;
	}
	t = DatumGetTextPP(d);
	ddict_note_change(relid, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), w);
}

/* A row from before was updated without a change of its key or value. */
static void
note_kept(Oid relid, HeapTuple tuple, TupleDesc desc, int keyatt)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, keyatt, desc, &isnull);

	if (!isnull)
	{
		text	   *t = DatumGetTextPP(d);

		ddict_note_kept(relid, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	}
}

static void
check_value_size(Relation rel, HeapTuple tuple, int valatt)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, valatt, RelationGetDescr(rel), &isnull);
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), valatt - 1);
	Size		sz;

	if (isnull || att->attlen != -1)
		return;
	sz = toast_raw_datum_size(d) - VARHDRSZ;
	if (sz > (Size) ddict_max_value_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %zu bytes exceeds ddict.max_value_size (%d bytes) in dict \"%s\"",
						sz, ddict_max_value_size, RelationGetRelationName(rel))));
}

/*
 * Same stored image of column att?  Unchanged toasted values keep their toast
 * pointer; a value stored differently but equal only costs a spurious bump.
 */
static bool
same_column(HeapTuple a, HeapTuple b, TupleDesc desc, int att)
{
	Form_pg_attribute attr = TupleDescAttr(desc, att - 1);
	bool		na,
				nb;
	Datum		da = heap_getattr(a, att, desc, &na);
	Datum		db = heap_getattr(b, att, desc, &nb);

	if (na || nb)
		return na == nb;
	return datumIsEqual(da, db, attr->attbyval, attr->attlen);
}

Datum
ddict_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	Oid			relid;
	int			keyatt,
				valatt;

	ddict_require_preload();
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ddict_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || td->tg_trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ddict_trigger() must be installed by ddict_attach()")));

	rel = td->tg_relation;
	relid = RelationGetRelid(rel);
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		ddict_note_change(relid, NULL, 0, DDICT_WRITE_ALL);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ddict_trigger() must be installed by ddict_attach()")));

	desc = RelationGetDescr(rel);
	{
		const TriggerColumns *cols = trigger_columns(rel, td->tg_trigger);

		keyatt = cols->keyatt;
		valatt = cols->valatt;
	}

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		check_value_size(rel, td->tg_trigtuple, valatt);
		note_key(relid, td->tg_trigtuple, desc, keyatt, write_of(+1, NULL));
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		note_key(relid, td->tg_trigtuple, desc, keyatt, write_of(-1, td->tg_trigtuple));
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		bool		key_same = same_column(td->tg_trigtuple, td->tg_newtuple, desc, keyatt);

		if (key_same && same_column(td->tg_trigtuple, td->tg_newtuple, desc, valatt))
		{
			/* not a change; but the row is now this transaction's (xact.c) */
			if (write_of(0, td->tg_trigtuple).old)
				note_kept(relid, td->tg_trigtuple, desc, keyatt);
			return PointerGetDatum(NULL);
		}
		check_value_size(rel, td->tg_newtuple, valatt);
		if (!key_same)
			note_key(relid, td->tg_trigtuple, desc, keyatt, write_of(-1, td->tg_trigtuple));
		note_key(relid, td->tg_newtuple, desc, keyatt,
				 key_same ? write_of(0, td->tg_trigtuple) : write_of(+1, NULL));
	}
	return PointerGetDatum(NULL);
}
