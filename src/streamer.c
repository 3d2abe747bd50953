/*
 * streamer.c — published changes: each change of an opted-in dict is
 * computed once, on the server, and appended to a Redis Stream, so that a
 * fleet of caches follows the dict from Redis instead of each asking
 * PostgreSQL (README, "Published changes (Redis Streams)").
 *
 * Opt-in per dict (ddict_publish_changes()), because values in Redis escape
 * the table's privileges: refused for tables with row-level security, and
 * ALTER TABLE ... ENABLE/FORCE ROW LEVEL SECURITY of a published dict is
 * refused (ddl.c calls ddict_publishes_changes()).
 *
 * Workers.  Computing a delta reads the dict's table, so it needs a database
 * connection, and a background worker connects to one database for life.
 * Hence one dynamic worker per database with published dicts, the "change
 * streamer"; the cluster-wide version publisher (publisher.c) is unchanged.
 * Shared memory holds one slot per database (pid, latch, counters, last
 * error).  A committing backend only sets the streamer's latch, or, when its
 * database has no slot yet (after a server start), registers a streamer
 * that looks at the registry and, finding nothing published, records "none"
 * and exits: later commits in that database then cost a shared-lock probe.
 * Commits never wait for Redis.  A streamer exits when its database has no
 * published dict left; ddict_publish_changes() starts one at commit.
 *
 * The loop is a few named steps (as pg_cron's task states): read the signals;
 * read the registry when told to (a generation counter in the slot); bring
 * the Redis connection through its states (DISCONNECTED -> CONNECTED ->
 * VERIFIED, with backoff); compute the entries of the dicts whose version
 * moved (one READ COMMITTED transaction, one SELECT per dict and batch);
 * append them in one pipeline.  Each turn allocates in a memory context
 * reset at the start of the next.
 *
 * Each entry is ddict_changes()'s answer to the streamer's own previous
 * state, computed by the same function (sync.c): horizon, version, then a
 * snapshot.  So entries chain: entry i+1's "from" is entry i's "cursor".  A
 * transaction larger than ddict.max_delta_keys, a TRUNCATE, a ring that no
 * longer holds the cursor, a new streamer, a renamed dict or a stream Redis
 * lost all give an 'f' marker: no rows, "go to PostgreSQL".  After a Redis
 * outage the streamer resumes exactly when the stream's last entry is still
 * the one it appended last (the entries it could not append are computed
 * then, from its cursor, as one delta); otherwise it appends a marker.
 * Cursors count the dict's own changes (changelog.c), so a published dict
 * nobody writes keeps its cursor however far the ring turns: its next write
 * is still a delta.
 */
#include "ddict.h"
#include "redisconn.h"
#include "common/redis_key.h"

#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

PGDLLEXPORT void ddict_streamer_main(Datum arg);

PG_FUNCTION_INFO_V1(ddict_publish_changes);
PG_FUNCTION_INFO_V1(ddict_change_streams);

static int	ddict_stream_maxlen = 10000;
static int	ddict_stream_max_entry_kb = 65536;
static int	ddict_max_streamers = 8;

#define ERRLEN DDICT_REDIS_ERRLEN
#define STREAMER_LOCK_TIMEOUT "1s"
#define STREAM_ID_LEN 64
#define XADD_FIELDS_AT 6		/* XADD key MAXLEN ~ N * <fields> */
#define REGISTRY_RECHECK_MS 30000
#define START_GRACE_MS 10000

/* ---- shared memory: one slot per database ---- */

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_NONE,					/* looked: this database publishes nothing */
	SLOT_REGISTERED				/* a streamer is registered or running */
} SlotState;

typedef struct StreamerSlot
{
	Oid			dboid;
	SlotState	state;
	TimestampTz registered_at;
	int			pid;			/* 0 until the worker runs */
	Latch	   *latch;
	uint32		generation;		/* bumped when the published set may change */
	bool		connected;
	int			ndicts;
	uint64		entries;		/* 'd' entries appended */
	uint64		markers;		/* 'f' entries appended */
	uint64		statements;		/* SQL statements the streamer executed */
	uint64		batches;		/* turns that computed something */
	TimestampTz last_append_at;
	char		last_error[ERRLEN];
	TimestampTz last_error_at;
} StreamerSlot;

typedef struct StreamerShared
{
	LWLock	   *lock;
	int			nslots;
	StreamerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} StreamerShared;

static StreamerShared *ss = NULL;

Size
ddict_streamer_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(StreamerShared, slots),
							 mul_size(sizeof(StreamerSlot), ddict_max_streamers)));
}

void
ddict_streamer_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ss = ShmemInitStruct("ddict streamers", ddict_streamer_shmem_size(), &found);
	if (!found)
	{
		memset(ss, 0, ddict_streamer_shmem_size());
		ss->lock = &(GetNamedLWLockTranche("ddict streamers"))[0].lock;
		ss->nslots = ddict_max_streamers;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
ddict_streamer_define_gucs(void)
{
	DefineCustomIntVariable("ddict.stream_maxlen",
							"Approximate number of entries a dict's change stream keeps in Redis (XADD MAXLEN ~).",
							"Clients further behind find a gap and catch up from PostgreSQL.",
							&ddict_stream_maxlen, 10000, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ddict.stream_max_entry_size",
							"Largest change a stream entry carries; a larger one is appended as a \"full\" marker.",
							"Its caches then load from PostgreSQL, as for more keys than ddict.max_delta_keys.",
							&ddict_stream_max_entry_kb, 65536, 1, 512 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("ddict.max_change_streamers",
							"Databases that can publish dict changes at once (one background worker each).",
							NULL, &ddict_max_streamers, 8, 1, 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

static StreamerSlot *
slot_find(Oid dboid)
{
	for (int i = 0; i < ss->nslots; i++)
		if (ss->slots[i].state != SLOT_FREE && ss->slots[i].dboid == dboid)
			return &ss->slots[i];
	return NULL;
}

/* A free slot, else one of a database that publishes nothing. Lock held. */
static StreamerSlot *
slot_take(Oid dboid)
{
	StreamerSlot *s = NULL;

	for (int i = 0; i < ss->nslots && s == NULL; i++)
		if (ss->slots[i].state == SLOT_FREE)
			s = &ss->slots[i];
	for (int i = 0; i < ss->nslots && s == NULL; i++)
		if (ss->slots[i].state == SLOT_NONE)
			s = &ss->slots[i];
	if (s)
	{
		memset(s, 0, sizeof(*s));
		s->dboid = dboid;
		s->state = SLOT_NONE;
	}
	return s;
}

/* Register a streamer for slot s. Lock held exclusively; raises no error. */
static void
slot_start(StreamerSlot *s)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;	/* the next commit starts another */
	snprintf(w.bgw_library_name, BGW_MAXLEN, "ddict");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "ddict_streamer_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "ddict change streamer %u", s->dboid);
	snprintf(w.bgw_type, BGW_MAXLEN, "ddict change streamer");
	w.bgw_main_arg = ObjectIdGetDatum(s->dboid);
	w.bgw_notify_pid = 0;
	s->generation++;
	if (RegisterDynamicBackgroundWorker(&w, NULL))
	{
		s->state = SLOT_REGISTERED;
		s->registered_at = GetCurrentTimestamp();
		s->pid = 0;
		s->latch = NULL;
	}
	else
	{
		s->state = SLOT_FREE;	/* no worker slot: the next commit retries */
	}
}

/*
 * At commit of a transaction that wrote a dict of dboid, or changed which
 * dicts publish (config_changed): wake the database's streamer, or start
 * one.  Never blocks on Redis, never raises an error.
 */
void
ddict_streamer_wake(Oid dboid, bool config_changed)
{
	StreamerSlot *s;
	Latch	   *latch = NULL;
	bool		start = false;

	if (ss == NULL)
		return;
	LWLockAcquire(ss->lock, LW_SHARED);
	s = slot_find(dboid);
	if (s == NULL)
		start = true;
	else if (s->state == SLOT_NONE)
		start = config_changed;
	else if (config_changed ||
			 (s->pid == 0 && TimestampDifferenceExceeds(s->registered_at, GetCurrentTimestamp(),
														START_GRACE_MS)))
		start = true;			/* tell it, or a registered worker never came */
	else
		latch = s->latch;
	LWLockRelease(ss->lock);
	if (latch)
		SetLatch(latch);
	if (!start)
		return;

	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	s = slot_find(dboid);
	if (s == NULL)
		s = slot_take(dboid);
	if (s != NULL)
	{
		if (s->state == SLOT_REGISTERED &&
			(s->pid != 0 || !TimestampDifferenceExceeds(s->registered_at, GetCurrentTimestamp(),
														START_GRACE_MS)))
		{
			s->generation++;
			latch = s->latch;
		}
		else if (s->state != SLOT_REGISTERED || s->pid == 0)
			slot_start(s);
	}
	LWLockRelease(ss->lock);
	if (latch)
		SetLatch(latch);
}

/* ---- SQL: opting in and out ---- */

static Oid
registry_relid(void)
{
	return get_relname_relid("ddict_registry", ddict_ext_namespace());
}

/* Does this database's registry have the 1.1 column publish_changes? */
static bool
registry_has_column(void)
{
	Oid			reg = registry_relid();

	return OidIsValid(reg) && get_attnum(reg, "publish_changes") > 0;
}

/* Does dict relid publish its changes? SPI connected. */
bool
ddict_publishes_changes(Oid relid)
{
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	if (!registry_has_column())
		return false;
	/*
	 * FOR SHARE, as the registry's owner: an opt-in that has not committed
	 * yet is waited for and then seen (READ COMMITTED re-reads the row;
	 * REPEATABLE READ fails with a serialization error), so ENABLE ROW LEVEL
	 * SECURITY and ddict_publish_changes() cannot both commit.
	 */
	return ddict_exec_as_registry_owner(psprintf("SELECT FROM %s.ddict_registry "
												 "WHERE dict OPERATOR(pg_catalog.=) $1 "
												 "AND publish_changes FOR SHARE", ddict_ext_schema()),
										1, argtypes, args) > 0;
}

static bool
has_row_security(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	bool		rls;

	if (!HeapTupleIsValid(tup))
		return false;
	rls = ((Form_pg_class) GETSTRUCT(tup))->relrowsecurity ||
		((Form_pg_class) GETSTRUCT(tup))->relforcerowsecurity;
	ReleaseSysCache(tup);
	return rls;
}

Datum
ddict_publish_changes(PG_FUNCTION_ARGS)
{
	Oid			relid;
	bool		enabled;
	Oid			argtypes[2] = {REGCLASSOID, BOOLOID};
	Datum		args[2];

	ddict_require_preload();
	ddict_require_arg(fcinfo, 0, "dict");
	ddict_require_arg(fcinfo, 1, "enabled");
	relid = PG_GETARG_OID(0);
	enabled = PG_GETARG_BOOL(1);
	SPI_connect();
	(void) ddict_lookup(relid);
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
	/* conflicts with ALTER TABLE ... ENABLE ROW LEVEL SECURITY */
	LockRelationOid(relid, ShareRowExclusiveLock);
	if (enabled && has_row_security(relid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot publish the changes of dict \"%s\": it has row-level security enabled",
						get_rel_name(relid)),
				 errdetail("Published keys and values are readable by every client of the Redis server, whatever the table's policies."),
				 errhint("Keep this dict on ddict_changes(), or disable row-level security (NO FORCE, DISABLE) first.")));
	if (!registry_has_column())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ddict_publish_changes() needs version 1.1 of the extension"),
				 errhint("Run ALTER EXTENSION ddict UPDATE.")));
	args[0] = ObjectIdGetDatum(relid);
	args[1] = BoolGetDatum(enabled);
	ddict_exec_as_registry_owner(psprintf("UPDATE %s.ddict_registry SET publish_changes = $2 "
										  "WHERE dict OPERATOR(pg_catalog.=) $1", ddict_ext_schema()),
								 2, argtypes, args);
	ddict_streamer_note_config();
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- the worker's state ---- */

typedef enum RedisState
{
	RS_DISCONNECTED,			/* waiting for the next attempt */
	RS_CONNECTED,			/* connected; streams not yet checked */
	RS_VERIFIED				/* every stream's tip checked: appending */
} RedisState;

typedef struct StreamDict
{
	Oid			relid;
	char		keycol[NAMEDATALEN];
	char		valcol[NAMEDATALEN];
	bool		chained;		/* version/cursor/last_id describe our last entry */
	uint64		version;
	uint64		cursor;
	char		key[DDICT_NAME_LEN + 64];	/* the stream's Redis key */
	char		last_id[STREAM_ID_LEN];	/* of our last entry; "" none */
	char		last_error[128];	/* logged once until it changes */
} StreamDict;

typedef struct Entry
{
	StreamDict *dict;
	char		kind;
	ChangeHeader h;
	uint64		from;
	int			argc;
	char	  **argv;
	size_t	   *argvlen;
	char		id[STREAM_ID_LEN];	/* once appended: its stream id */
} Entry;

static StreamerSlot *myslot = NULL;
static StreamDict *dicts = NULL;
static int	ndicts = 0;
static uint32 registry_generation = 0;
static TimestampTz registry_read_at = 0;
static bool registry_stale = true;

static redisContext *rc = NULL;
static RedisState rstate = RS_DISCONNECTED;
static long backoff_ms = 0;
static TimestampTz next_attempt = 0;
static bool in_outage = false;

static void
slot_error(const char *err)
{
	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	strlcpy(myslot->last_error, err, ERRLEN);
	myslot->last_error_at = GetCurrentTimestamp();
	LWLockRelease(ss->lock);
}

static void
slot_count(uint64 entries, uint64 markers, uint64 statements)
{
	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	myslot->entries += entries;
	myslot->markers += markers;
	myslot->statements += statements;
	myslot->connected = (rstate == RS_VERIFIED);
	myslot->ndicts = ndicts;
	if (entries + markers > 0)
	{
		myslot->batches++;
		myslot->last_append_at = GetCurrentTimestamp();
	}
	LWLockRelease(ss->lock);
}

/* ---- step: the registry ---- */

/*
 * Read this database's published dicts (one statement) when the slot's
 * generation moved, after an error, or every REGISTRY_RECHECK_MS.  Dicts
 * that stay keep their chain; new ones start with a marker.
 */
static void
step_registry(void)
{
	uint32		gen;
	StreamDict *next;
	int			n = 0;

	LWLockAcquire(ss->lock, LW_SHARED);
	gen = myslot->generation;
	LWLockRelease(ss->lock);
	if (!registry_stale && gen == registry_generation &&
		!TimestampDifferenceExceeds(registry_read_at, GetCurrentTimestamp(), REGISTRY_RECHECK_MS))
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "ddict change streamer: reading the registry");
	next = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamDict) * Max(ndicts, 1));
	if (OidIsValid(get_extension_oid("ddict", true)) && registry_has_column())
	{
		int			rc2 = SPI_execute(psprintf("SELECT dict::pg_catalog.oid, key_column::pg_catalog.text, "
											   "value_column::pg_catalog.text FROM %s.ddict_registry "
											   "WHERE publish_changes", ddict_ext_schema()),
									  true, 0);

		if (rc2 != SPI_OK_SELECT)
			elog(ERROR, "ddict: registry read failed: %s", SPI_result_code_string(rc2));
		slot_count(0, 0, 1);
		if (SPI_processed > 0)
		{
			pfree(next);
			next = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamDict) * SPI_processed);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
			StreamDict *d = &next[n++];

			d->relid = relid;
			strlcpy(d->keycol, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), NAMEDATALEN);
			strlcpy(d->valcol, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3), NAMEDATALEN);
			for (int j = 0; j < ndicts; j++)
				if (dicts[j].relid == relid && strcmp(dicts[j].keycol, d->keycol) == 0 &&
					strcmp(dicts[j].valcol, d->valcol) == 0)
				{
					*d = dicts[j];
					break;
				}
		}
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (dicts)
		pfree(dicts);
	dicts = next;
	ndicts = n;
	registry_generation = gen;
	registry_read_at = GetCurrentTimestamp();
	registry_stale = false;
}

/*
 * Nothing published: leave, unless the published set changed while we read
 * it (then the next turn reads it again).
 */
static bool
maybe_exit(void)
{
	bool		leave;

	if (ndicts > 0)
		return false;
	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	leave = (myslot->generation == registry_generation);
	if (leave)
	{
		myslot->state = SLOT_NONE;
		myslot->pid = 0;
		myslot->latch = NULL;
		myslot->connected = false;
		myslot->ndicts = 0;
	}
	LWLockRelease(ss->lock);
	return leave;
}

/* ---- step: the Redis connection ---- */

static void
disconnect(void)
{
	if (rc)
		redisFree(rc);
	rc = NULL;
	rstate = RS_DISCONNECTED;
}

static bool
try_connect(char *err)
{
	RedisTarget t;

	if (!ddict_redis_parse_url(ddict_redis_url_guc, &t, err))
		return false;
	rc = ddict_redis_connect(&t, err);
	if (rc == NULL)
		return false;
	return ddict_redis_login(rc, &t, err);
}

/* The stream key of dict d now: its name may have changed (then: a marker). */
static bool
stream_key(StreamDict *d, char *out, size_t len)
{
	char	   *db = get_database_name(MyDatabaseId);
	char	   *rel = get_rel_name(d->relid);
	char	   *nsp = rel ? get_namespace_name(get_rel_namespace(d->relid)) : NULL;

	char		name[DDICT_NAME_LEN + sizeof(DDICT_REDIS_STREAM_SUFFIX)];

	if (db == NULL || rel == NULL || nsp == NULL ||
		ddict_redis_dict_name(name, sizeof(name), db, nsp, rel,
							  DDICT_REDIS_STREAM_SUFFIX) >= sizeof(name))
		return false;
	snprintf(out, len, "%s%s", ddict_redis_prefix, name);
	return true;
}

/*
 * XREVRANGE key + - COUNT 1: the id of the stream's last entry ("" when the
 * stream is empty or missing).  False, with err, on a malformed reply;
 * *key_error when it is an error reply (WRONGTYPE: a problem of this key).
 */
static bool
stream_tip(const char *key, char *id, bool *key_error, char *err)
{
	redisReply *r = ddict_redis_command(rc, "XREVRANGE %s + - COUNT 1", key);
	bool		ok = ddict_reply_is_array(r) && r->elements <= 1;

	id[0] = '\0';
	*key_error = r != NULL && r->type == REDIS_REPLY_ERROR;
	if (ok && r->elements == 1)
	{
		redisReply *e = r->element[0];

		ok = ddict_reply_is_array(e) && e->elements == 2 && ddict_reply_is_bulk(e->element[0]) &&
			e->element[0]->len < STREAM_ID_LEN;
		if (ok)
			strlcpy(id, e->element[0]->str, STREAM_ID_LEN);
	}
	if (!ok)
		ddict_redis_reply_error(rc, "XREVRANGE", r, err);
	if (r)
		freeReplyObject(r);
	return ok && ddict_redis_no_extra_reply(rc, "XREVRANGE", err);
}

/*
 * After a (re)connect: a stream whose last entry is not the one we appended
 * last (Redis restarted, was flushed, or an append's fate is unknown) gets a
 * marker; the others resume exactly.  Needs catalog access (names).
 */
static bool
verify_streams(char *err)
{
	bool		ok = true;

	for (int i = 0; i < ndicts && ok; i++)
	{
		StreamDict *d = &dicts[i];
		char		tip[STREAM_ID_LEN];
		bool		key_error;

		if (!d->chained || d->last_id[0] == '\0')
		{
			d->chained = false;
			continue;
		}
		ok = stream_tip(d->key, tip, &key_error, err);
		if (ok && strcmp(tip, d->last_id) != 0)
			d->chained = false;
		else if (!ok && key_error && ddict_redis_no_extra_reply(rc, "XREVRANGE", err))
		{
			/* an error reply for this key only: its next entry is a marker */
			slot_error(err);
			d->chained = false;
			ok = true;
		}
	}
	return ok;
}

static void
redis_failed(const char *err)
{
	disconnect();
	slot_error(err);
	if (!in_outage)
		ereport(LOG,
				(errmsg("ddict: change streamer cannot append to Redis: %s", err),
				 errdetail("Commits go on; the streams resume (or get a \"full\" marker) once Redis is back.")));
	in_outage = true;
	backoff_ms = backoff_ms ? Min(backoff_ms * 2, ddict_redis_max_backoff_ms) : 100;
	next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
}

static void
step_redis(void)
{
	char		err[ERRLEN];

	if (ddict_redis_url_guc[0] == '\0')
	{
		if (rc)
			disconnect();
		return;
	}
	if (rstate == RS_DISCONNECTED && GetCurrentTimestamp() >= next_attempt)
	{
		if (!try_connect(err))
		{
			redis_failed(err);
			return;
		}
		rstate = RS_CONNECTED;
	}
	/* the publisher first removes an earlier run's keys; streams go with them */
	if (rstate == RS_CONNECTED && ddict_publisher_ready())
	{
		if (!verify_streams(err))
		{
			redis_failed(err);
			return;
		}
		rstate = RS_VERIFIED;
		if (in_outage)
			ereport(LOG, (errmsg("ddict: change streamer appending to Redis again")));
		in_outage = false;
		backoff_ms = 0;
	}
}

/* ---- step: compute the entries ---- */

typedef struct EntrySink
{
	ChangeSink	sink;
	Entry	   *e;
	int			maxargs;
	MemoryContext cxt;
	uint64		bytes;			/* of the changes kept so far */
	bool		oversize;		/* above ddict.stream_max_entry_bytes: a marker */
} EntrySink;

static void
entry_push(EntrySink *es, const char *p, size_t len)
{
	Entry	   *e = es->e;

	if (e->argc == es->maxargs)
	{
		es->maxargs *= 2;
		e->argv = repalloc_huge(e->argv, sizeof(char *) * es->maxargs);
		e->argvlen = repalloc_huge(e->argvlen, sizeof(size_t) * es->maxargs);
	}
	e->argv[e->argc] = (char *) p;
	e->argvlen[e->argc++] = len;
}

static void
entry_header(ChangeSink *sink, char kind, const ChangeHeader *h)
{
	EntrySink  *es = (EntrySink *) sink;

	es->e->kind = kind;
	es->e->h = *h;
}

/* One change: field = 's' or 'x' then the key's bytes; value = the value's bytes. */
static void
entry_row(ChangeSink *sink, char kind, Datum key, bool key_null, Datum value, bool value_null)
{
	EntrySink  *es = (EntrySink *) sink;
	MemoryContext old;
	text	   *k;
	size_t		klen;
	char	   *field;

	if (es->oversize)
		return;					/* a marker already: keep nothing more */
	old = MemoryContextSwitchTo(es->cxt);
	k = (text *) PG_DETOAST_DATUM_PACKED(key);
	klen = VARSIZE_ANY_EXHDR(k);
	field = palloc(klen + 1);

	field[0] = kind;
	memcpy(field + 1, VARDATA_ANY(k), klen);
	entry_push(es, field, klen + 1);
	if (kind == 's' && !value_null)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(value);
		size_t		vlen = VARSIZE_ANY_EXHDR(v);
		char	   *bytes = palloc(vlen + 1);

		memcpy(bytes, VARDATA_ANY(v), vlen);
		entry_push(es, bytes, vlen);
		es->bytes += vlen;
	}
	else
		entry_push(es, "", 0);
	es->bytes += klen + 1;
	if (es->bytes > (uint64) ddict_stream_max_entry_kb * 1024)
	{
		/* too big for one Redis command: the dict's caches go to
		 * PostgreSQL for this one (as for ddict.max_delta_keys) */
		es->oversize = true;
		es->e->argc = 0;
	}
	MemoryContextSwitchTo(old);
}

static DictInfo *
dict_info(StreamDict *sd)
{
	AttrNumber	katt = get_attnum(sd->relid, sd->keycol);
	AttrNumber	vatt = get_attnum(sd->relid, sd->valcol);
	DictInfo   *d;
	int32		typmod;
	Oid			coll;

	if (get_rel_name(sd->relid) == NULL || katt <= 0 || vatt <= 0)
		return NULL;
	d = palloc0(sizeof(DictInfo));
	d->relid = sd->relid;
	d->qualname = ddict_qualified_name(sd->relid);
	d->keycol = pstrdup(quote_identifier(sd->keycol));
	d->valcol = pstrdup(quote_identifier(sd->valcol));
	get_atttypetypmodcoll(sd->relid, katt, &d->keytype, &typmod, &coll);
	get_atttypetypmodcoll(sd->relid, vatt, &d->valtype, &d->valtypmod, &coll);
	d->valtext = ddict_value_text_sql(d->valcol, d->valtype);
	return d;
}

static char *
decimal(uint64 v)
{
	return psprintf(UINT64_FORMAT, v);
}

/* XADD key MAXLEN ~ N * kind .. dict .. epoch .. version .. from .. cursor .. until .. n .. */
static void
entry_finish(Entry *e)
{
	char	   *hdr[16];
	int			nh = 0;
	char	  **argv = palloc(sizeof(char *) * (e->argc + 22));
	size_t	   *argvlen = palloc(sizeof(size_t) * (e->argc + 22));
	int			n = 0;

	hdr[nh++] = "kind";
	hdr[nh++] = e->kind == 'd' ? "d" : "f";
	hdr[nh++] = "dict";
	hdr[nh++] = psprintf("%u", e->dict->relid);
	hdr[nh++] = "epoch";
	hdr[nh++] = decimal(e->h.epoch);
	hdr[nh++] = "version";
	hdr[nh++] = decimal(e->h.version);
	hdr[nh++] = "from";
	hdr[nh++] = decimal(e->from);
	hdr[nh++] = "cursor";
	hdr[nh++] = decimal(e->h.cursor);
	hdr[nh++] = "until";
	hdr[nh++] = decimal(e->h.until);
	hdr[nh++] = "n";
	hdr[nh++] = psprintf("%d", e->argc / 2);

	argv[n++] = "XADD";
	argv[n++] = e->dict->key;
	argv[n++] = "MAXLEN";
	argv[n++] = "~";
	argv[n++] = psprintf("%d", ddict_stream_maxlen);
	argv[n++] = "*";
	Assert(n == XADD_FIELDS_AT);
	for (int i = 0; i < n; i++)
		argvlen[i] = strlen(argv[i]);
	for (int i = 0; i < nh; i++, n++)
	{
		argv[n] = hdr[i];
		argvlen[n] = strlen(hdr[i]);
	}
	for (int i = 0; i < e->argc; i++, n++)
	{
		argv[n] = e->argv[i];
		argvlen[n] = e->argvlen[i];
	}
	e->argv = argv;
	e->argvlen = argvlen;
	e->argc = n;
}

/*
 * ddict_changes_compute() as the table's owner, in a security-restricted
 * operation (as VACUUM and REINDEX run index expressions): the streamer is
 * the bootstrap superuser, and planning the delta's SELECT evaluates the
 * owner's index predicates and expressions — as the superuser, any owner
 * of a published dict could have run code with its rights.  GUC changes
 * made meanwhile are undone.  An error leaves both to the (sub)transaction's
 * abort.
 */
static char
compute_as_owner(DictInfo *d, uint64 horizon, const ChangesSince *since, ChangeSink *sink)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(d->relid));
	Oid			owner,
				save_userid;
	int			save_sec_context,
				save_nestlevel;
	char		kind;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", d->relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	kind = ddict_changes_compute(d, horizon, since, sink);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return kind;
}

/*
 * The entry of dict sd, or NULL when it has none to append (its version did
 * not move).  In a transaction, SPI connected; allocates in cxt.
 */
static Entry *
compute_entry(StreamDict *sd, MemoryContext cxt, uint64 *statements)
{
	EntrySink	es;
	ChangesSince since;
	DictInfo   *d;
	uint64		horizon,
				v;
	bool		pending;
	char		key[sizeof(sd->key)];
	char		kind;

	if (!stream_key(sd, key, sizeof(key)) || (d = dict_info(sd)) == NULL)
	{
		registry_stale = true;	/* dropped, detached or altered */
		return NULL;
	}
	if (has_row_security(sd->relid))
	{
		slot_error(psprintf("dict %s has row-level security: its changes are not published", d->qualname));
		return NULL;
	}
	if (strcmp(key, sd->key) != 0)
	{
		strlcpy(sd->key, key, sizeof(sd->key));
		sd->chained = false;	/* a new name: a new stream, from a marker */
	}
	if (sd->chained && ddict_version_get(MyDatabaseId, sd->relid, &v, &pending) &&
		!pending && v == sd->version)
		return NULL;			/* its cursor stays good: it counts its own changes */

	es.sink.header = entry_header;
	es.sink.row = entry_row;
	es.sink.full_rows = false;	/* a full answer is a marker: no rows */
	es.cxt = cxt;
	es.maxargs = 16;
	es.bytes = 0;
	es.oversize = false;
	es.e = MemoryContextAllocZero(cxt, sizeof(Entry));
	es.e->dict = sd;
	es.e->argv = MemoryContextAlloc(cxt, sizeof(char *) * es.maxargs);
	es.e->argvlen = MemoryContextAlloc(cxt, sizeof(size_t) * es.maxargs);

	since.have = sd->chained;
	since.version = sd->version;
	since.epoch = ddict_epoch();
	since.cursor = sd->cursor;
	/* the order of ddict_changes(): horizon, version, snapshot */
	horizon = ddict_changelog_horizon(MyDatabaseId, sd->relid, true);
	kind = compute_as_owner(d, horizon, &since, &es.sink);
	if (kind == 'u')
		return NULL;
	if (kind == 'd' && (es.e->argc > 0 || es.oversize))
		(*statements)++;		/* the delta's SELECT */
	if (es.oversize)
	{
		kind = es.e->kind = 'f';	/* no rows: its caches go to PostgreSQL */
		es.e->argc = 0;
	}
	es.e->from = (kind == 'd') ? sd->cursor : 0;
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		entry_finish(es.e);
		MemoryContextSwitchTo(old);
	}
	return es.e;
}

/*
 * compute_entry() in a subtransaction of its own: a dict whose entry fails
 * (its table locked beyond lock_timeout, its owner without SELECT, a
 * dropped column...) gets none this turn, the other dicts' entries go on,
 * and the next turn tries again from the same state.  Its error is in
 * ddict_change_streams() and logged once until it changes.
 */
static Entry *
compute_isolated(StreamDict *sd, MemoryContext cxt, uint64 *statements)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Entry	   *volatile e = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		e = compute_entry(sd, cxt, statements);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		sd->last_error[0] = '\0';
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		slot_error(edata->message);
		if (strncmp(sd->last_error, edata->message, sizeof(sd->last_error) - 1) != 0)
			ereport(LOG, (errmsg("ddict: change streamer: %s", edata->message),
						  errdetail("Its next turn tries again; the other dicts' streams go on.")));
		strlcpy(sd->last_error, edata->message, sizeof(sd->last_error));
		registry_stale = true;
		e = NULL;
	}
	PG_END_TRY();
	return e;
}

/*
 * The entries of every dict whose version moved, in one READ COMMITTED
 * transaction.  An error (a dict dropped under us...) is reported, the
 * transaction aborted, and the registry read again next turn.
 */
static List *
step_compute(MemoryContext cxt, uint64 *statements)
{
	List	   *entries = NIL;
	volatile bool failed = false;

	if (rstate != RS_VERIFIED || ndicts == 0)
		return NIL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		XactIsoLevel = XACT_READ_COMMITTED;
		SPI_connect();
		/*
		 * For catalog and registry lookups on the way (a dict no backend has
		 * touched since the server started has no version slot yet); each
		 * change is still read under the fresh snapshot that
		 * ddict_changes_compute() takes after the version.
		 */
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "ddict change streamer: computing changes");
		for (int i = 0; i < ndicts; i++)
		{
			Entry	   *e = compute_isolated(&dicts[i], cxt, statements);

			if (e)
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				entries = lappend(entries, e);
				MemoryContextSwitchTo(old);
			}
		}
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		slot_error(edata->message);
		ereport(LOG, (errmsg("ddict: change streamer: %s", edata->message)));
		registry_stale = true;
		failed = true;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return failed ? NIL : entries;
}

/* ---- step: append ---- */

/*
 * The delivery of an appended entry: PUBLISH on the channel named as its
 * stream key, "<id>\n" and its fields as one RESP array of bulk strings
 * (what XRANGE would answer for it), or "<id>" alone for an entry larger
 * than DELIVERY_MAX (its followers read it from the stream).
 *
 * Why besides the stream: a follower blocked in XREAD costs Redis a command
 * per entry and follower (the reply, then the next XREAD to parse, block
 * and time out), and the follower a send and a wakeup more; a PUBLISH
 * writes one payload to every subscriber.  At 1,000 followers on two cores
 * that halved commit-to-visible (README, fleet table).  The stream stays the
 * record: a follower that lost a delivery (a reconnect, a trimmed Redis
 * buffer) sees the next one's "from" beyond its cursor and reads the stream
 * from the last id it applied.
 */
#define DELIVERY_MAX (256 * 1024)

static void
resp_bulk(StringInfo buf, const char *p, size_t len)
{
	appendStringInfo(buf, "$%zu\r\n", len);
	appendBinaryStringInfo(buf, p, (int) len);
	appendBinaryStringInfo(buf, "\r\n", 2);
}

static char *
delivery_payload(const Entry *e, size_t *len)
{
	StringInfoData buf;
	size_t		bytes = 0;

	initStringInfo(&buf);
	appendStringInfoString(&buf, e->id);
	for (int i = XADD_FIELDS_AT; i < e->argc; i++)
		bytes += e->argvlen[i];
	if (bytes <= DELIVERY_MAX)
	{
		appendStringInfo(&buf, "\n*%d\r\n", e->argc - XADD_FIELDS_AT);
		for (int i = XADD_FIELDS_AT; i < e->argc; i++)
			resp_bulk(&buf, e->argv[i], e->argvlen[i]);
	}
	*len = buf.len;
	return buf.data;
}

/* PUBLISH every appended entry, in order, in one pipeline.  False: Redis
 * failed (err). */
static bool
deliver(List *entries, char *err)
{
	ListCell   *lc;
	int			sent = 0;
	bool		ok = true;
	TimestampTz deadline = ddict_redis_deadline();

	foreach(lc, entries)
	{
		Entry	   *e = lfirst(lc);
		const char *argv[3];
		size_t		argvlen[3];

		if (e->id[0] == '\0')
			continue;			/* not appended (an error reply for its key) */
		argv[0] = "PUBLISH";
		argvlen[0] = 7;
		argv[1] = e->dict->key;
		argvlen[1] = strlen(e->dict->key);
		argv[2] = delivery_payload(e, &argvlen[2]);
		redisAppendCommandArgv(rc, 3, argv, argvlen);
		sent++;
	}
	for (int i = 0; i < sent && ok; i++)
	{
		redisReply *r = NULL;

		(void) ddict_redis_get_reply(rc, &r, deadline);
		if (r != NULL && r->type == REDIS_REPLY_ERROR)
		{
			/*
			 * Refused (an ACL without the channel: NOPERM): the entries are
			 * in the streams, whose caches notice through the version keys;
			 * reported, not an outage (which would hold every append back).
			 */
			char		perr[ERRLEN];

			ddict_redis_reply_error(rc, "PUBLISH", r, perr);
			slot_error(perr);
		}
		else if (!(ok = r != NULL && r->type == REDIS_REPLY_INTEGER))
			ddict_redis_reply_error(rc, "PUBLISH", r, err);
		if (r)
			freeReplyObject(r);
	}
	return ok && ddict_redis_no_extra_reply(rc, "PUBLISH", err);
}

/* An XADD reply: the new entry's id, "<ms>-<seq>". */
static bool
reply_is_stream_id(const redisReply *r)
{
	return ddict_reply_is_bulk(r) && r->len > 2 && r->len < STREAM_ID_LEN &&
		strspn(r->str, "0123456789-") == r->len && strchr(r->str, '-') != NULL;
}

static void
step_append(List *entries)
{
	ListCell   *lc;
	char		err[ERRLEN];
	uint64		nd = 0,
				nf = 0;
	bool		ok = true;
	TimestampTz deadline = ddict_redis_deadline();

	if (entries == NIL)
		return;
	foreach(lc, entries)
	{
		Entry	   *e = lfirst(lc);

		redisAppendCommandArgv(rc, e->argc, (const char **) e->argv, e->argvlen);
	}
	foreach(lc, entries)
	{
		Entry	   *e = lfirst(lc);
		redisReply *r = NULL;

		if (!ok)
			break;
		(void) ddict_redis_get_reply(rc, &r, deadline);
		if (r != NULL && r->type == REDIS_REPLY_ERROR)
		{
			/*
			 * This key only (WRONGTYPE: something else holds it): the other
			 * dicts' entries go on; this dict's next entry is a marker.
			 */
			ddict_redis_reply_error(rc, "XADD", r, err);
			slot_error(err);
			e->dict->chained = false;
		}
		else if (!(ok = reply_is_stream_id(r)))
			ddict_redis_reply_error(rc, "XADD", r, err);
		else
		{
			/* acknowledged: the chain moves on */
			e->dict->chained = true;
			e->dict->version = e->h.version;
			e->dict->cursor = e->h.cursor;
			strlcpy(e->dict->last_id, r->str, STREAM_ID_LEN);
			strlcpy(e->id, r->str, STREAM_ID_LEN);
			if (e->kind == 'd')
				nd++;
			else
				nf++;
		}
		if (r)
			freeReplyObject(r);
	}
	if (ok)
		ok = ddict_redis_no_extra_reply(rc, "XADD", err);
	slot_count(nd, nf, 0);
	if (ok)
		ok = deliver(entries, err);
	if (!ok)
		redis_failed(err);
}

/* ---- the worker ---- */

static void
streamer_exit(int code, Datum arg)
{
	disconnect();
	if (myslot == NULL)
		return;
	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	if (myslot->pid == MyProcPid)
	{
		myslot->pid = 0;
		myslot->latch = NULL;
		myslot->connected = false;
		if (myslot->state == SLOT_REGISTERED)
			myslot->state = SLOT_FREE;	/* the next commit starts another */
	}
	LWLockRelease(ss->lock);
}

/* Take this database's slot; false when another streamer holds it. */
static bool
claim_slot(Oid dboid)
{
	StreamerSlot *s;
	bool		ok = false;

	LWLockAcquire(ss->lock, LW_EXCLUSIVE);
	s = slot_find(dboid);
	if (s == NULL)
		s = slot_take(dboid);
	if (s != NULL && s->pid == 0)
	{
		s->state = SLOT_REGISTERED;
		s->pid = MyProcPid;
		s->latch = MyLatch;
		s->last_error[0] = '\0';
		myslot = s;
		ok = true;
	}
	LWLockRelease(ss->lock);
	return ok;
}

void
ddict_streamer_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(streamer_exit, (Datum) 0);
	if (!claim_slot(dboid))
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* a dict locked by someone's open transaction must not stop the others:
	 * its entry fails after this and is tried again next turn */
	SetConfigOption("lock_timeout", STREAMER_LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("ddict change streamer");
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "ddict streamer loop",
									 ALLOCSET_DEFAULT_SIZES);

	while (!ShutdownRequestPending)
	{
		uint64		statements = 0;
		List	   *entries;
		long		timeout;

		/* whatever the last turn allocated (an error path included) goes */
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			disconnect();		/* the URL or prefix may have changed */
			next_attempt = 0;
		}
		step_registry();
		MemoryContextSwitchTo(loop_cxt);
		if (maybe_exit())
			break;
		step_redis();
		entries = step_compute(loop_cxt, &statements);
		slot_count(0, 0, statements);
		step_append(entries);

		if (rstate == RS_DISCONNECTED && ddict_redis_url_guc[0] != '\0')
			timeout = Max(1, (long) ((next_attempt - GetCurrentTimestamp()) / 1000));
		else if (rstate == RS_CONNECTED)
			timeout = 100;		/* waiting for the publisher's first clean-up */
		else
			timeout = registry_stale ? 1000 : 5000;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}

/* ---- SQL: ddict_change_streams() ---- */

Datum
ddict_change_streams(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StreamerSlot *copy;
	int			n;

	ddict_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(StreamerSlot) * ss->nslots);
	LWLockAcquire(ss->lock, LW_SHARED);
	n = ss->nslots;
	memcpy(copy, ss->slots, sizeof(StreamerSlot) * n);
	LWLockRelease(ss->lock);
	for (int i = 0; i < n; i++)
	{
		StreamerSlot *s = &copy[i];
		Datum		values[12];
		bool		nulls[12] = {false};

		if (s->state == SLOT_FREE)
			continue;
		values[0] = ObjectIdGetDatum(s->dboid);
		values[1] = CStringGetTextDatum(s->state == SLOT_NONE ? "none" :
										s->pid != 0 ? "running" : "starting");
		values[2] = Int32GetDatum(s->pid);
		nulls[2] = s->pid == 0;
		values[3] = BoolGetDatum(s->connected);
		values[4] = Int32GetDatum(s->ndicts);
		values[5] = Int64GetDatum((int64) s->entries);
		values[6] = Int64GetDatum((int64) s->markers);
		values[7] = Int64GetDatum((int64) s->statements);
		values[8] = Int64GetDatum((int64) s->batches);
		values[9] = TimestampTzGetDatum(s->last_append_at);
		nulls[9] = s->last_append_at == 0;
		values[10] = CStringGetTextDatum(s->last_error);
		nulls[10] = s->last_error[0] == '\0';
		values[11] = TimestampTzGetDatum(s->last_error_at);
		nulls[11] = s->last_error_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
