/*
 * probe.c — ddict_unchanged_many(): the autosync check of many dicts in one
 * scalar call (extension 1.2).
 *
 *   ddict_unchanged_many(dicts text[], since_dicts oid[],
 *                        since_versions bigint[], since_epochs bigint[])
 *     RETURNS text
 *
 * One character per dict, in order: 'u' when ddict_unchanged() would return
 * a cursor for it (its name still means since_dict, whose version in this
 * epoch is since_version, no bump pending), '?' otherwise — the client then
 * sends that dict's ddict_changes().  A client with 50 dicts checks them
 * all with one statement whose answer is one short value.
 *
 * Why not ddict_unchanged() per dict in a pipeline, or the 1.1 probe
 * (unnest of the names, each cast to regclass, ddict_last_updated() of
 * each, one row per dict)?  Measured with 50 dicts, most of their time is
 * name resolution: a regclass cast parses the name and searches the
 * search_path, about 0.35 µs a name, 17 µs for 50 against a 14 µs round
 * trip.  Here a name resolves once per backend: a small cache from the name
 * to the relation, flushed by any change to pg_class or pg_namespace (the
 * syscache callbacks) and kept per search_path (the path as it was when an
 * entry was made must still match, PostgreSQL's own generation check; it
 * covers $user and pg_temp).  The cache is backend memory, not session
 * state the protocol depends on: through a transaction pooler any client
 * may find it filled, and it answers what a lookup would.
 *
 * The answer reveals versions only (public: ddict_last_updated()), not the
 * cursor: no SELECT privilege is needed, as for ddict_last_updated().  A
 * name that does not resolve, or is no dict, is '?': its ddict_changes()
 * reports the error.
 *
 * 1.3: ddict_unchanged_packed(probe bytea) RETURNS text, the same answer
 * for the same question packed in one binary value (below, "The packed
 * probe").  Four binary arrays cost the server an array_recv() per element
 * (a receive-function call and a palloc'd Datum each), and then a
 * deconstruct_array() per array, before a single name was looked up; one
 * bytea is received with one memcpy and read in place.
 */
#include "ddict.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "port/pg_bswap.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

PG_FUNCTION_INFO_V1(ddict_unchanged_many);
PG_FUNCTION_INFO_V1(ddict_unchanged_packed);

#define NAME_KEY_LEN 256		/* longer names are resolved every time */
#define NAME_CACHE_MAX 4096		/* entries; then the cache starts over */

typedef struct NameEntry
{
	char		name[NAME_KEY_LEN];
	Oid			relid;			/* InvalidOid: does not resolve */
} NameEntry;

static HTAB *name_cache = NULL;
static MemoryContext name_cxt = NULL;
static OverrideSearchPath *name_path = NULL;	/* the path of every entry */
static bool callbacks_registered = false;

/* the packed probe's memo of its last names (below), in name_cxt */
typedef struct ProbeMemo ProbeMemo;
static ProbeMemo *memo = NULL;
static uint64 names_flushed = 0;	/* flush_names() calls */

static void
flush_names(void)
{
	if (name_cxt)
		MemoryContextDelete(name_cxt);
	name_cxt = NULL;
	name_cache = NULL;
	name_path = NULL;
	memo = NULL;
	names_flushed++;
}

static void
catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	flush_names();
}

static HTAB *
names(void)
{
	HASHCTL		ctl;

	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACENAME, catalog_changed, (Datum) 0);
		callbacks_registered = true;
	}
	if (name_cache && (!OverrideSearchPathMatchesCurrent(name_path) ||
					   hash_get_num_entries(name_cache) >= NAME_CACHE_MAX))
		flush_names();
	if (name_cache)
		return name_cache;
	name_cxt = AllocSetContextCreate(TopMemoryContext, "ddict names", ALLOCSET_SMALL_SIZES);
	name_path = GetOverrideSearchPath(name_cxt);
	ctl.keysize = NAME_KEY_LEN;
	ctl.entrysize = sizeof(NameEntry);
	ctl.hcxt = name_cxt;
	name_cache = hash_create("ddict names", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	return name_cache;
}

/*
 * The relation a (possibly qualified) name means, InvalidOid for nothing or
 * for a name that is not one (bad syntax, four parts, another database):
 * a check of many dicts answers "?" for it instead of failing them all.
 */
static Oid
lookup_name(const char *name)
{
	char	   *copy = pstrdup(name);
	List	   *parts = NIL,
			   *names = NIL;
	ListCell   *lc;

	if (!SplitIdentifierString(copy, '.', &parts) || list_length(parts) < 1 ||
		list_length(parts) > 3)
		return InvalidOid;
	if (list_length(parts) == 3 &&
		strcmp((char *) linitial(parts), get_database_name(MyDatabaseId)) != 0)
		return InvalidOid;
	foreach(lc, parts)
		names = lappend(names, makeString((char *) lfirst(lc)));
	return RangeVarGetRelid(makeRangeVarFromNameList(names), NoLock, true);
}

/*
 * What a name of len bytes (no NUL) means now, InvalidOid for nothing: what
 * name::regclass means, from the cache when the name is there.  Short names
 * are copied to the stack for the lookup: no palloc on a hit.
 */
static Oid
resolve_name(const char *name, int len)
{
	char		key[NAME_KEY_LEN];
	char	   *s;
	NameEntry  *e;
	bool		found;
	Oid			relid;

	if (len >= NAME_KEY_LEN)
	{
		s = pnstrdup(name, len);
		relid = lookup_name(s);
		pfree(s);
		return relid;
	}
	memcpy(key, name, len);
	key[len] = '\0';
	e = hash_search(name_cache ? name_cache : names(), key, HASH_FIND, NULL);
	if (e)
		return e->relid;
	relid = lookup_name(key);
	/* the lookup may have processed invalidations that emptied the cache */
	if (name_cache)
	{
		e = hash_search(name_cache, key, HASH_ENTER, &found);
		e->relid = relid;
	}
	return relid;
}

/* What name::regclass means now, InvalidOid for nothing. */
static Oid
resolve(text *t)
{
	return resolve_name(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

static void
check_array(ArrayType *a, Oid elemtype, int n, const char *what)
{
	if (ARR_NDIM(a) > 1 || ARR_ELEMTYPE(a) != elemtype || ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array as long as dicts", what)));
}

Datum
ddict_unchanged_many(PG_FUNCTION_ARGS)
{
	ArrayType  *dicts,
			   *rels,
			   *vers,
			   *epochs;
	Datum	   *dv,
			   *rv,
			   *vv,
			   *ev;
	bool	   *dn,
			   *rn,
			   *vn,
			   *en;
	int			n;
	uint64		epoch;
	char	   *out;

	ddict_require_preload();
	for (int i = 0; i < 4; i++)
		ddict_require_arg(fcinfo, i, i == 0 ? "dicts" : i == 1 ? "since_dicts" :
						  i == 2 ? "since_versions" : "since_epochs");
	dicts = PG_GETARG_ARRAYTYPE_P(0);
	rels = PG_GETARG_ARRAYTYPE_P(1);
	vers = PG_GETARG_ARRAYTYPE_P(2);
	epochs = PG_GETARG_ARRAYTYPE_P(3);
	if (ARR_NDIM(dicts) > 1 || ARR_ELEMTYPE(dicts) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dicts must be a one-dimensional text array")));
	n = ArrayGetNItems(ARR_NDIM(dicts), ARR_DIMS(dicts));
	check_array(rels, OIDOID, n, "since_dicts");
	check_array(vers, INT8OID, n, "since_versions");
	check_array(epochs, INT8OID, n, "since_epochs");
	deconstruct_array(dicts, TEXTOID, -1, false, TYPALIGN_INT, &dv, &dn, &n);
	deconstruct_array(rels, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &rv, &rn, &n);
	deconstruct_array(vers, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &vv, &vn, &n);
	deconstruct_array(epochs, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ev, &en, &n);

	epoch = ddict_epoch();
	(void) names();				/* the cache, for this search_path */
	out = palloc(n + 1);
	for (int i = 0; i < n; i++)
	{
		uint64		version;
		bool		pending;
		Oid			relid;

		out[i] = '?';
		if (dn[i] || rn[i] || vn[i] || en[i] || (uint64) DatumGetInt64(ev[i]) != epoch)
			continue;
		relid = resolve(DatumGetTextPP(dv[i]));
		if (relid == InvalidOid || relid != DatumGetObjectId(rv[i]))
			continue;
		if (ddict_version_get(MyDatabaseId, relid, &version, &pending) && !pending &&
			version == (uint64) DatumGetInt64(vv[i]))
			out[i] = 'u';
	}
	out[n] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* ---- The packed probe (1.3) ---- */

/*
 * ddict_unchanged_packed(probe bytea) RETURNS text.  The probe, integers
 * big-endian (network order):
 *
 *   1 byte    format: 1 (PROBE_FORMAT)
 *   4 bytes   n, the number of dicts
 *   n times   4 bytes  since_dict (relation OID)
 *             8 bytes  since_version
 *             8 bytes  since_epoch
 *   n times   2 bytes  the name's length L
 *             L bytes  the name, in the database's encoding (no NUL)
 *
 * The answer is n characters, 'u' or '?', exactly what
 * ddict_unchanged_many() answers for the same dicts.  A probe that is not
 * this shape (another format, cut short, bytes after the last name) is an
 * error (22P03), nothing answered; a name that is not text in the
 * database's encoding (a NUL, a bad byte sequence) means nothing: '?'.
 * Names are bytes: not converted from client_encoding (the client sends
 * them only when that changes nothing: libddict's sync.c).
 *
 * The names come in a block of their own because a client asks about the
 * same dicts again and again: the backend keeps the last block it
 * resolved, with its relations (the memo, in the name cache's memory and
 * flushed with it), and a probe whose block is the same bytes resolves no
 * name at all — one memcmp() instead of a lookup per name.  The versions
 * are then read under one lock (ddict_versions_match()).
 */
#define PROBE_FORMAT 1
#define PROBE_HEAD 5			/* format, n */
#define PROBE_FIXED 20			/* since_dict, since_version, since_epoch */
#define PROBE_MIN (PROBE_FIXED + 2) /* with an empty name */
#define PROBE_MEMO_MAX 65536	/* bytes of names a backend keeps */

struct ProbeMemo
{
	uint32		n;
	int			len;			/* of the names block */
	char	   *names;
	Oid		   *relids;
};

static void
malformed(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("malformed ddict probe"),
			 errdetail_internal("%s", detail)));
}

static inline uint32
get32(const char *p)
{
	uint32		v;

	memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

static inline uint64
get64(const char *p)
{
	uint64		v;

	memcpy(&v, p, 8);
	return pg_ntoh64(v);
}

/* A name the lookup may see: text in the database's encoding. */
static bool
name_ok(const char *name, int len)
{
	return memchr(name, '\0', len) == NULL &&
		pg_verify_mbstr(GetDatabaseEncoding(), name, len, true);
}

/*
 * The relations the n names of the block [p, end) mean, into relids[];
 * the block's shape is checked (malformed() when it is not n names).
 */
static void
resolve_block(const char *p, const char *end, uint32 n, Oid *relids)
{
	for (uint32 i = 0; i < n; i++)
	{
		int			len;

		if (end - p < 2 || end - p - 2 < (len = (p[0] & 0xff) << 8 | (p[1] & 0xff)))
			malformed(psprintf("The probe ends within the name of dict %u of %u.", i + 1, n));
		p += 2;
		relids[i] = name_ok(p, len) ? resolve_name(p, len) : InvalidOid;
		p += len;
	}
	if (p != end)
		malformed(psprintf("%d bytes follow the last of %u names.", (int) (end - p), n));
}

/* Keep the block and its relations for the next probe (in name_cxt). */
static void
remember(const char *block, int len, uint32 n, const Oid *relids)
{
	ProbeMemo  *m;

	if (name_cxt == NULL || len > PROBE_MEMO_MAX)
		return;
	if (memo)
	{
		pfree(memo->names);
		pfree(memo->relids);
		pfree(memo);
		memo = NULL;
	}
	m = MemoryContextAlloc(name_cxt, sizeof(ProbeMemo));
	m->n = n;
	m->len = len;
	m->names = MemoryContextAlloc(name_cxt, Max(len, 1));
	memcpy(m->names, block, len);
	m->relids = MemoryContextAlloc(name_cxt, sizeof(Oid) * Max(n, 1));
	memcpy(m->relids, relids, sizeof(Oid) * n);
	memo = m;
}

/* The relations the probe's names mean: the memo's, or looked up. */
static Oid *
probe_relids(const char *block, const char *end, uint32 n)
{
	int			len = end - block;
	uint64		flushed;
	Oid		   *relids;

	(void) names();				/* the cache (and memo) of this search_path */
	if (memo && memo->n == n && memo->len == len && memcmp(memo->names, block, len) == 0)
		return memo->relids;
	flushed = names_flushed;
	relids = palloc(sizeof(Oid) * Max(n, 1));
	resolve_block(block, end, n, relids);
	/* not when an invalidation came during the lookups: some are older */
	if (names_flushed == flushed)
		remember(block, len, n, relids);
	return relids;
}

Datum
ddict_unchanged_packed(PG_FUNCTION_ARGS)
{
	bytea	   *probe;
	const char *p,
			   *end,
			   *rec;
	uint32		n;
	uint64		epoch;
	Oid		   *relids,
			   *want;
	uint64	   *versions;
	bool	   *unchanged;
	text	   *out;

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "probe");
	probe = PG_GETARG_BYTEA_PP(0);
	p = VARDATA_ANY(probe);
	end = p + VARSIZE_ANY_EXHDR(probe);
	if (end - p < PROBE_HEAD)
		malformed(psprintf("The probe has %d bytes, fewer than its header's %d.",
						   (int) (end - p), PROBE_HEAD));
	if ((p[0] & 0xff) != PROBE_FORMAT)
		malformed(psprintf("Format %d is not %d.", p[0] & 0xff, PROBE_FORMAT));
	n = get32(p + 1);
	rec = p + PROBE_HEAD;
	if (n > (uint32) ((end - rec) / PROBE_MIN))
		malformed(psprintf("%u dicts cannot fit in %d bytes.", n, (int) (end - rec)));

	epoch = ddict_epoch();
	/* (may be the memo's: read before anything that can flush it) */
	relids = probe_relids(rec + (size_t) n * PROBE_FIXED, end, n);
	want = palloc(sizeof(Oid) * Max(n, 1));
	versions = palloc(sizeof(uint64) * Max(n, 1));
	unchanged = palloc(sizeof(bool) * Max(n, 1));
	for (uint32 i = 0; i < n; i++, rec += PROBE_FIXED)
	{
		Oid			since_dict = get32(rec);

		/* the name must mean since_dict, in this epoch */
		want[i] = since_dict == relids[i] && get64(rec + 12) == epoch ? since_dict : InvalidOid;
		versions[i] = get64(rec + 4);
	}
	ddict_versions_match(MyDatabaseId, (int) n, want, versions, unchanged);
	out = (text *) palloc(VARHDRSZ + n);
	SET_VARSIZE(out, VARHDRSZ + n);
	for (uint32 i = 0; i < n; i++)
		VARDATA(out)[i] = unchanged[i] ? 'u' : '?';
	PG_RETURN_TEXT_P(out);
}
