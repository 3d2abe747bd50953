/*
 * publisher.c — a background worker that publishes dict versions to Redis.
 *
 * With thousands of client processes, version checks should not all reach
 * PostgreSQL.  For every dict this worker keeps the Redis key
 * <ddict.redis_prefix><database>:<schema>.<table> SET to the dict's version
 * (decimal) and PUBLISHes the version on a channel of the same name.
 *
 * Redis never blocks or fails a commit: a committing backend only sets this
 * worker's latch (ddict_publisher_wake).  The worker wakes, collects every
 * dict whose version differs from what it last published, and sends them in
 * one pipeline, so a burst of commits costs one round trip.  When Redis is
 * down it retries with exponential backoff (up to ddict.redis_max_backoff),
 * logging one line when an outage starts and one when it ends; after every
 * (re)connect it republishes every current version, because a restarted
 * Redis has lost its keys.  A slow Redis is bounded by ddict.redis_timeout
 * per command or pipeline, for its whole reply (redisconn.c), delays only
 * this worker, and never holds off a reload or a shutdown.
 *
 * Every reply is type-checked before it is used (the reply_is_*() checks): a
 * server that answers with the wrong type, nil, an error, garbage or half a
 * reply — a proxy, a "Redis-compatible" store, a broken server — is an
 * outage like any other (logged once, in ddict_redis_status().last_error,
 * retried with backoff), never a crash of this worker, which would make the
 * postmaster restart every backend.
 *
 * The worker needs no database connection: dict names are copied into
 * shared memory by the backends that commit changes (shmem.c).  Its state —
 * connected or not, the last error, versions published, the publish lag — is
 * in shared memory for ddict_redis_status().  The URL may carry a password:
 * the GUC is superuser-only and the worker never logs the URL itself.
 *
 * The loop follows worker_spi/pg_cron: SIGHUP reloads the configuration
 * (and reconnects when the URL changed), SIGTERM ends the worker, and the
 * postmaster restarts it 5 s after an unexpected exit.  Each turn of the
 * loop allocates in a memory context that is reset at the start of the next
 * turn (as pg_cron does), so no path — an error path included — can leak
 * memory turn after turn.
 */
#include "ddict.h"

#include "redisconn.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PGDLLEXPORT void ddict_publisher_main(Datum arg);

PG_FUNCTION_INFO_V1(ddict_redis_status);

char	   *ddict_redis_url_guc = NULL;
char	   *ddict_redis_prefix = NULL;
int			ddict_redis_timeout_ms = 1000;
int			ddict_redis_max_backoff_ms = 10000;
static int	ddict_redis_batch_delay_us = 1000;

#define ERRLEN 256

typedef struct PublisherShared
{
	Latch	   *latch;			/* the running worker's latch, or NULL */
	slock_t		mutex;			/* protects the fields below */
	bool		enabled;		/* a URL is configured */
	bool		connected;
	char		target[ERRLEN]; /* host:port or socket path, never a password */
	char		last_error[ERRLEN];
	TimestampTz last_error_at;
	TimestampTz connected_since;
	uint64		published;		/* SET+PUBLISH pairs acknowledged by Redis */
	uint64		reconnects;
	bool		cleared;		/* stale keys of an earlier server run removed */
	TimestampTz last_publish_at;
	double		last_lag_ms;	/* commit-to-acknowledged, last batch */
	double		max_lag_ms;
} PublisherShared;

static PublisherShared *pub = NULL;

Size
ddict_publisher_shmem_size(void)
{
	return MAXALIGN(sizeof(PublisherShared));
}

void
ddict_publisher_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pub = ShmemInitStruct("ddict publisher", sizeof(PublisherShared), &found);
	if (!found)
	{
		memset(pub, 0, sizeof(PublisherShared));
		SpinLockInit(&pub->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called by committing backends: never blocks, never fails. */
void
ddict_publisher_wake(void)
{
	Latch	   *latch = pub ? pub->latch : NULL;

	/* unlocked reads: a stale "enabled" only delays one wake-up */
	if (latch && pub->enabled)
		SetLatch(latch);
}

/*
 * Has the publisher removed an earlier server run's keys?  The change
 * streamers (streamer.c) append only after that, or their first entries
 * would go with the stale keys.
 */
bool
ddict_publisher_ready(void)
{
	bool		ready;

	SpinLockAcquire(&pub->mutex);
	ready = pub->cleared;
	SpinLockRelease(&pub->mutex);
	return ready;
}

void
ddict_publisher_register(void)
{
	BackgroundWorker w;

	DefineCustomStringVariable("ddict.redis_url",
							   "Redis to publish dict versions to: redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N]; empty: off.",
							   NULL, &ddict_redis_url_guc, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("ddict.redis_prefix",
							   "Prefix of the Redis keys and channels ddict publishes.",
							   NULL, &ddict_redis_prefix, "ddict:",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ddict.redis_timeout",
							"Timeout of connecting to Redis and of each Redis command or pipeline (its whole reply).",
							NULL, &ddict_redis_timeout_ms, 1000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("ddict.redis_batch_delay",
							"Pause, in microseconds, after each publish, so that the commits of that time go in one batch.",
							"Bounds the publisher's wake-ups (and their cost to busy writers) to one per pause; adds at most the pause to the publish lag.",
							&ddict_redis_batch_delay_us, 1000, 0, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ddict.redis_max_backoff",
							"Longest wait between attempts to reach Redis.",
							NULL, &ddict_redis_max_backoff_ms, 10000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "ddict");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "ddict_publisher_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "ddict publisher");
	snprintf(w.bgw_type, BGW_MAXLEN, "ddict publisher");
	RegisterBackgroundWorker(&w);
}

/* ---- status ---- */

static void
set_status(bool connected, const char *error)
{
	SpinLockAcquire(&pub->mutex);
	if (connected && !pub->connected)
		pub->connected_since = GetCurrentTimestamp();
	pub->connected = connected;
	if (error)
	{
		strlcpy(pub->last_error, error, ERRLEN);
		pub->last_error_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&pub->mutex);
}

/* ---- the worker ---- */

static redisContext *rc = NULL;
static bool in_outage = false;
static char *current_url = NULL;

static void
disconnect(void)
{
	if (rc)
		redisFree(rc);
	rc = NULL;
	set_status(false, NULL);
}

/* ---- replies: every one is checked before use ---- */

/* (ddict_reply_is_bulk() and ddict_reply_is_status() are in redisconn.h) */

static bool
reply_is_integer(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_INTEGER;
}

/* A SCAN reply: [cursor (decimal bulk), [key (bulk), ...]]. */
static bool
reply_is_scan(const redisReply *r)
{
	const redisReply *keys;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		!ddict_reply_is_bulk(r->element[0]) || r->element[0]->len == 0 ||
		r->element[0]->len >= 32 ||
		strspn(r->element[0]->str, "0123456789") != r->element[0]->len)
		return false;
	keys = r->element[1];
	if (keys == NULL || keys->type != REDIS_REPLY_ARRAY)
		return false;
	for (size_t i = 0; i < keys->elements; i++)
		if (!ddict_reply_is_bulk(keys->element[i]))
			return false;
	return true;
}

static bool
try_connect(char *err)
{
	RedisTarget t;

	if (!ddict_redis_parse_url(ddict_redis_url_guc, &t, err))
		return false;

	SpinLockAcquire(&pub->mutex);
	if (t.path)
		strlcpy(pub->target, t.path, ERRLEN);
	else
		snprintf(pub->target, ERRLEN, "%s:%d", t.host, t.port);
	SpinLockRelease(&pub->mutex);

	rc = ddict_redis_connect(&t, err);
	if (rc == NULL)
	{
		disconnect();
		return false;
	}
	if (!ddict_redis_login(rc, &t, err))
	{
		disconnect();
		return false;
	}
	return true;
}

/*
 * Once per server start (shared memory is new), remove every key under our
 * prefix before publishing: versions are re-seeded at start, and a dict no
 * backend has touched since has no slot to republish, so its old key could
 * otherwise tell a client "unchanged" forever.  A missing key sends clients
 * to PostgreSQL, which answers with the new epoch.  Hence one prefix per
 * cluster.
 */
static void
scan_pattern(StringInfo pattern)
{
	initStringInfo(pattern);
	for (const char *c = ddict_redis_prefix; *c; c++)
	{
		if (strchr("*?[]\\", *c))
			appendStringInfoChar(pattern, '\\');
		appendStringInfoChar(pattern, *c);
	}
	appendStringInfoChar(pattern, '*');
}

/* DEL the keys of one SCAN reply (checked by reply_is_scan), pipelined. */
static bool
delete_keys(const redisReply *keys, char *err)
{
	TimestampTz deadline = ddict_redis_deadline();

	for (size_t i = 0; i < keys->elements; i++)
		redisAppendCommand(rc, "DEL %b", keys->element[i]->str,
						   (size_t) keys->element[i]->len);
	for (size_t i = 0; i < keys->elements; i++)
	{
		redisReply *d = NULL;
		bool		ok;

		(void) ddict_redis_get_reply(rc, &d, deadline);
		ok = reply_is_integer(d);
		if (!ok)
			ddict_redis_reply_error(rc, "DEL", d, err);
		if (d)
			freeReplyObject(d);
		if (!ok)
			return false;
	}
	return ddict_redis_no_extra_reply(rc, "DEL", err);
}

static bool
clear_stale_keys(char *err)
{
	StringInfoData pattern;
	char		cursor[32] = "0";

	scan_pattern(&pattern);
	do
	{
		redisReply *r = ddict_redis_command(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern.data);
		bool		ok = reply_is_scan(r);

		if (!ok)
			ddict_redis_reply_error(rc, "SCAN", r, err);
		else
			ok = ddict_redis_no_extra_reply(rc, "SCAN", err);
		if (ok)
		{
			strlcpy(cursor, r->element[0]->str, sizeof(cursor));
			ok = delete_keys(r->element[1], err);
		}
		if (r)
			freeReplyObject(r);
		/* a server that never ends the scan must not hold the worker */
		if (ok && (ShutdownRequestPending || ConfigReloadPending))
		{
			snprintf(err, ERRLEN, "SCAN: interrupted");
			ok = false;
		}
		if (!ok)
		{
			pfree(pattern.data);
			return false;
		}
	} while (strcmp(cursor, "0") != 0);
	pfree(pattern.data);
	SpinLockAcquire(&pub->mutex);
	pub->cleared = true;
	SpinLockRelease(&pub->mutex);
	return true;
}

/* Publish the changed versions (all of them after a reconnect). */
static bool
publish(bool all, char *err)
{
	PublishItem *items;
	int			n = ddict_publish_collect(all, &items);
	TimestampTz now;
	TimestampTz deadline = ddict_redis_deadline();
	double		lag = 0,
				maxlag = 0;

	for (int i = 0; i < n; i++)
	{
		char	   *key = psprintf("%s%s", ddict_redis_prefix, items[i].name);
		char		val[32];

		snprintf(val, sizeof(val), UINT64_FORMAT, items[i].version);
		redisAppendCommand(rc, "SET %s %s", key, val);
		redisAppendCommand(rc, "PUBLISH %s %s", key, val);
		pfree(key);
	}
	for (int i = 0; i < 2 * n; i++)
	{
		redisReply *r = NULL;
		bool		ok;

		(void) ddict_redis_get_reply(rc, &r, deadline);
		/* SET answers +OK, PUBLISH the number of receivers */
		ok = i % 2 == 0 ? ddict_reply_is_status(r, "OK") : reply_is_integer(r);
		if (!ok)
			ddict_redis_reply_error(rc, i % 2 == 0 ? "publish: SET" : "publish: PUBLISH", r, err);
		if (r)
			freeReplyObject(r);
		if (!ok)
		{
			pfree(items);
			return false;
		}
	}
	if (n > 0 && !ddict_redis_no_extra_reply(rc, "publish", err))
	{
		pfree(items);
		return false;
	}
	now = GetCurrentTimestamp();
	for (int i = 0; i < n; i++)
	{
		ddict_publish_done(items[i].dboid, items[i].relid, items[i].version);
		if (items[i].changed != 0)
		{
			lag = (double) (now - items[i].changed) / 1000.0;
			maxlag = Max(maxlag, lag);
		}
	}
	if (n > 0)
	{
		SpinLockAcquire(&pub->mutex);
		pub->published += n;
		pub->last_publish_at = now;
		pub->last_lag_ms = maxlag;
		pub->max_lag_ms = Max(pub->max_lag_ms, maxlag);
		SpinLockRelease(&pub->mutex);
	}
	pfree(items);
	return true;
}

static void
publisher_exit(int code, Datum arg)
{
	pub->latch = NULL;
	disconnect();
}

void
ddict_publisher_main(Datum arg)
{
	long		backoff = 0;
	TimestampTz next_attempt = 0;
	TimestampTz last_activity = 0;
	char		err[ERRLEN];
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	pub->latch = MyLatch;
	before_shmem_exit(publisher_exit, (Datum) 0);
	current_url = MemoryContextStrdup(TopMemoryContext, ddict_redis_url_guc);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "ddict publisher loop",
									 ALLOCSET_DEFAULT_SIZES);

	while (!ShutdownRequestPending)
	{
		long		timeout = 60000;
		bool		enabled;

		/* whatever the last turn allocated (an error path included) goes */
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(current_url, ddict_redis_url_guc) != 0)
			{
				pfree(current_url);
				current_url = MemoryContextStrdup(TopMemoryContext, ddict_redis_url_guc);
				disconnect();
				backoff = 0;
				next_attempt = 0;
				in_outage = false;
			}
		}
		enabled = ddict_redis_url_guc[0] != '\0';
		SpinLockAcquire(&pub->mutex);
		pub->enabled = enabled;
		SpinLockRelease(&pub->mutex);

		if (enabled)
		{
			bool		fresh = false;
			bool		failed = false;

			if (rc == NULL && GetCurrentTimestamp() >= next_attempt)
			{
				fresh = try_connect(err);
				failed = !fresh;
			}
			if (rc != NULL && fresh && !pub->cleared && !clear_stale_keys(err))
				failed = true;
			if (rc != NULL && !failed && !publish(fresh, err))
				failed = true;
			/* idle: make sure the connection is alive, so the status is true */
			if (rc != NULL && !failed && !fresh &&
				TimestampDifferenceExceeds(last_activity, GetCurrentTimestamp(), 5000))
				failed = !ddict_redis_command_ok(rc, "PING", "PONG", err, "PING");
			if (!failed)
				last_activity = GetCurrentTimestamp();

			if (failed)
			{
				disconnect();
				set_status(false, err);
				if (!in_outage)
					ereport(LOG,
							(errmsg("ddict: cannot publish to Redis at %s: %s", pub->target, err),
							 errdetail("Commits go on; versions are published once Redis is back.")));
				in_outage = true;
				backoff = backoff ? Min(backoff * 2, ddict_redis_max_backoff_ms) : 100;
				next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff);
			}
			else if (rc != NULL)
			{
				if (fresh)
				{
					set_status(true, NULL);
					SpinLockAcquire(&pub->mutex);
					pub->reconnects++;
					SpinLockRelease(&pub->mutex);
					if (in_outage)
						ereport(LOG, (errmsg("ddict: publishing to Redis at %s again", pub->target)));
				}
				in_outage = false;
				backoff = 0;
			}
			if (rc == NULL)
				timeout = Max(1, (long) ((next_attempt - GetCurrentTimestamp()) / 1000));
			else
				timeout = 5000;
		}
		else if (rc != NULL)
			disconnect();

		/*
		 * After a publish, sleep without waiting on the latch: commits in the
		 * meantime only set it (SetLatch signals only a waiting process), so
		 * under a stream of commits the worker wakes once per pause instead
		 * of once per commit, and they go in one pipeline.
		 */
		if (rc != NULL && ddict_redis_batch_delay_us > 0)
			pg_usleep(ddict_redis_batch_delay_us);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}

/* ---- SQL: ddict_redis_status() ---- */

Datum
ddict_redis_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10] = {false};
	PublisherShared s;
	HeapTuple	tup;

	ddict_require_preload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	SpinLockAcquire(&pub->mutex);
	memcpy(&s, pub, sizeof(s));
	SpinLockRelease(&pub->mutex);

	values[0] = BoolGetDatum(s.enabled);
	values[1] = BoolGetDatum(s.latch != NULL);
	values[2] = BoolGetDatum(s.connected);
	values[3] = CStringGetTextDatum(s.target);
	nulls[3] = s.target[0] == '\0';
	values[4] = CStringGetTextDatum(s.last_error);
	nulls[4] = s.last_error[0] == '\0';
	values[5] = TimestampTzGetDatum(s.last_error_at);
	nulls[5] = s.last_error_at == 0;
	values[6] = Int64GetDatum((int64) s.published);
	values[7] = TimestampTzGetDatum(s.last_publish_at);
	nulls[7] = s.last_publish_at == 0;
	values[8] = Float8GetDatum(s.last_lag_ms);
	values[9] = Float8GetDatum(s.max_lag_ms);
	tup = heap_form_tuple(tupdesc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(tup));
}
