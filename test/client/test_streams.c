/*
 * test_streams.c — push dicts that follow their published changes (issue
 * 10, src/client/stream.c) against a real PostgreSQL (the extension's
 * change streamer) and a real Redis.
 *
 * What must hold: a cache fed from the stream applies each entry without
 * PostgreSQL (pg_stat_statements counts), equals a fresh SELECT after
 * quiescing, never shows a rolled-back or partial transaction, and goes to
 * PostgreSQL exactly when the stream cannot be applied: TRUNCATE and a
 * transaction larger than ddict.max_delta_keys (markers), a trimmed stream
 * (a gap), a server restart (new epoch), a Redis restart (polling, then the
 * server's marker).  DDICT_STREAMS_NOPUB=1 runs them without publishing
 * (plain push, a baseline).  Needs DDICT_TEST_REDIS_URL (run.sh starts a Redis that
 * the cluster publishes to); skipped without it.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>

#include <hiredis/hiredis.h>

#include "internal.h"			/* the handle's stream counters */

static const char *rurl;
static char dbname[128];

/* ---- helpers ---- */

static int
redis_port(void)
{
	const char *p = getenv("DDICT_TEST_REDIS_PORT");

	return p ? atoi(p) : 6379;
}

static redisReply *
redis_cmd(const char *fmt, const char *a, const char *b)
{
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port(), tv);
	redisReply *r = NULL;

	if (c && !c->err)
		r = redisCommand(c, fmt, a, b);
	if (c)
		redisFree(c);
	return r;
}

static long long
redis_int(const char *fmt, const char *a, const char *b)
{
	redisReply *r = redis_cmd(fmt, a, b);
	long long	n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	if (r)
		freeReplyObject(r);
	return n;
}

/* XREAD commands Redis executed so far (INFO commandstats). */
static long long
xread_calls(void)
{
	redisReply *r = redis_cmd("INFO commandstats", NULL, NULL);
	const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "cmdstat_xread:calls=") : NULL;
	long long	n = p ? atoll(p + strlen("cmdstat_xread:calls=")) : (r && r->type == REDIS_REPLY_STRING ? 0 : -1);

	if (r)
		freeReplyObject(r);
	return n;
}

static bool
redis_up(void)
{
	redisReply *r = redis_cmd("PING", NULL, NULL);
	bool		ok = r && r->type == REDIS_REPLY_STATUS;

	if (r)
		freeReplyObject(r);
	return ok;
}

static void
need_redis(void)
{
	if (rurl == NULL)
		skip();
	if (!redis_up())
		assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_START_CMD"), 0);
}

static void
stream_of(const char *dict, char *buf, size_t size)
{
	snprintf(buf, size, "ddict:%s:public.%s:changes", dbname, dict);
}

/* A published dict with keys g<G>:<0..K) all = "init". */
static void
published_dict(const char *name, int groups, int keys)
{
	char		key[256];

	fresh_dict(admin, name, "text");
	stream_of(name, key, sizeof(key));
	redis_int("DEL %s", key, NULL);
	free(sqlf(admin, "INSERT INTO %s SELECT 'g' || g || ':' || k, 'init'"
			  " FROM generate_series(0, %d) g, generate_series(0, %d) k",
			  name, groups - 1, keys - 1));
	if (!getenv("DDICT_STREAMS_NOPUB"))
		free(sqlf(admin, "SELECT ddict_publish_changes('%s')", name));
}

/* A push dict on conninfo (NULL: the test database). */
static ddict *
open_push_at(const char *conninfo, const char *dict, unsigned interval_ms, ddict_change_fn cb,
			 void *arg)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.interval_ms = interval_ms;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	o.timeout_ms = 3000;
	o.on_change = cb;
	o.on_change_arg = arg;
	d = ddict_open(conninfo ? conninfo : test_conninfo(), dict, &o);
	if (d == NULL)
		fail_msg("ddict_open(%s): %s", dict, ddict_errmsg());
	return d;
}

static ddict *
open_push(const char *dict, unsigned interval_ms, ddict_change_fn cb, void *arg)
{
	return open_push_at(NULL, dict, interval_ms, cb, arg);
}

static uint64_t
entries_of(ddict *d)
{
	return atomic_load(&d->stream_entries);
}

static uint64_t
gaps_of(ddict *d)
{
	return atomic_load(&d->stream_gaps);
}

/* Following its stream, caught up (the catch-up check after the position). */
static void
wait_following(ddict *d)
{
	int64_t		deadline = mono_ms() + 5000;

	while (stats_of(d).redis != 1 || ddict_version(d) !=
		   sql_ll(admin, "SELECT ddict_last_updated('%s')", d->dict))
	{
		if (mono_ms() > deadline)
			fail_msg("%s: not following its stream within 5 s (redis %d, key %s, ok %d, id %s,"
					 " version %lld, last error: %s)", d->dict, stats_of(d).redis,
					 atomic_load(&d->stream_key) ? atomic_load(&d->stream_key) : "(none)",
					 d->xs_ok, d->stream_id, (long long) ddict_version(d), stats_of(d).last_error);
		sleep_ms(5);
	}
	sleep_ms(50);
}

static int64_t
wait_value(ddict *d, const char *key, const char *expect, int timeout_ms)
{
	int64_t		t0 = mono_ms();

	for (;;)
	{
		char	   *v = NULL;
		size_t		n;
		int			rc = ddict_get(d, key, DDICT_NTS, &v, &n);
		bool		same = expect ? rc == DDICT_OK && strcmp(v, expect) == 0 : rc == DDICT_NOTFOUND;

		ddict_free(v);
		if (same)
			return mono_ms() - t0;
		if (mono_ms() - t0 > timeout_ms)
			return -1;
		sleep_ms(1);
	}
}

/* The cache equals a fresh SELECT once it has the table's version. */
static void
assert_equals_table(ddict *d, int timeout_ms)
{
	int64_t		deadline = mono_ms() + timeout_ms;
	PGresult   *r;
	char		q[256];

	while (ddict_version(d) != sql_ll(admin, "SELECT ddict_last_updated('%s')", d->dict))
	{
		if (mono_ms() > deadline)
			fail_msg("%s: version %lld never reached %lld", d->dict, (long long) ddict_version(d),
					 sql_ll(admin, "SELECT ddict_last_updated('%s')", d->dict));
		sleep_ms(5);
	}
	snprintf(q, sizeof(q), "SELECT key, value FROM %s", d->dict);
	r = PQexec(admin, q);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_int_equal(ddict_len(d), PQntuples(r));
	for (int i = 0; i < PQntuples(r); i++)
	{
		char	   *v = NULL;
		size_t		n;

		if (ddict_get(d, PQgetvalue(r, i, 0), DDICT_NTS, &v, &n) != DDICT_OK ||
			strcmp(v, PQgetvalue(r, i, 1)) != 0)
			fail_msg("%s: key %s: cache %s, table %s", d->dict, PQgetvalue(r, i, 0),
					 v ? v : "(none)", PQgetvalue(r, i, 1));
		ddict_free(v);
	}
	PQclear(r);
}

/* Statements of the clients (ddict_changes, the version probe) and of the
 * streamer (its delta SELECTs and registry reads). */
static long long
pgss_calls(const char *what)
{
	return sql_ll(admin, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
				  " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
				  " AND (%s)", what);
}

#define CLIENT_STMTS "query LIKE '%%' || 'ddict_changes' || '(%%' OR query LIKE '%%' || 'ddict_last_updated(u.d' || '%%'"
#define STREAMER_STMTS "query LIKE '%%FROM ON' || 'LY%%' OR query LIKE '%%WHERE publish' || '_changes%%'"

/* ---- applying the stream ---- */

/* Many push caches follow; every commit (multi-key, with rollbacks in
 * between) is applied from the stream: PostgreSQL runs at most 2
 * statements per commit for all of them, the clients none; and it comes
 * as deliveries on the subscription, not by reading the stream (no XREAD
 * per commit and cache). */
static void
test_stream_applies(void **state)
{
	enum
	{
		H = 6, N = 30
	};
	ddict	   *d[H];
	uint64_t	e0[H];
	long long	cl,
				st,
				xr;
	char		v[32];

	(void) state;
	need_redis();
	published_dict("s_apply", 1, 5);
	for (int i = 0; i < H; i++)
		d[i] = open_push("s_apply", 60000, NULL, NULL);	/* no polling */
	for (int i = 0; i < H; i++)
	{
		wait_following(d[i]);
		e0[i] = entries_of(d[i]);
	}
	/* idle, caught up: no reads of the stream at all */
	sleep_ms(200);
	xr = xread_calls();
	sleep_ms(1000);
	assert_int_equal(xread_calls(), xr);
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	xr = xread_calls();
	for (int n = 0; n < N; n++)
	{
		snprintf(v, sizeof(v), "v%d", n);
		free(sqlf(admin, "BEGIN; UPDATE s_apply SET value = 'rb%d'; ROLLBACK", n));
		free(sqlf(admin, "UPDATE s_apply SET value = '%s'", v));
		for (int i = 0; i < H; i++)
			if (wait_value(d[i], "g0:4", v, 5000) < 0)
				fail_msg("commit %d not seen by cache %d within 5 s", n, i);
	}
	cl = pgss_calls(CLIENT_STMTS);
	st = pgss_calls(STREAMER_STMTS);
	xr = xread_calls() - xr;
	print_message("# %d caches, %d commits: %lld client statements, %lld streamer statements,"
				  " %lld XREADs\n", H, N, cl, st, xr);
	assert_int_equal(cl, 0);
	assert_true(xr >= 0 && xr < N);
	assert_true(st <= 2 * N);
	for (int i = 0; i < H; i++)
	{
		assert_true(entries_of(d[i]) - e0[i] >= N);
		assert_equals_table(d[i], 5000);
		ddict_close(d[i]);
	}
}

/* Markers: TRUNCATE and a transaction larger than ddict.max_delta_keys
 * send the cache to PostgreSQL; the stream goes on after them. */
static void
test_stream_markers(void **state)
{
	ddict	   *d;
	uint64_t	g0,
				e0;

	(void) state;
	need_redis();
	published_dict("s_mark", 2, 3);
	d = open_push("s_mark", 60000, NULL, NULL);
	wait_following(d);
	g0 = gaps_of(d);
	free(sqlf(admin, "TRUNCATE s_mark"));
	assert_true(wait_value(d, "g0:0", NULL, 5000) >= 0);
	assert_equals_table(d, 5000);
	assert_true(gaps_of(d) > g0);
	free(sqlf(admin, "INSERT INTO s_mark SELECT 'big' || i, 'b' FROM generate_series(1, %lld) i",
			  sql_ll(admin, "SELECT current_setting('ddict.max_delta_keys')::int + 5")));
	assert_equals_table(d, 10000);
	assert_true(gaps_of(d) > g0 + 1);
	e0 = entries_of(d);
	free(sqlf(admin, "INSERT INTO s_mark VALUES ('after', 'stream')"));
	assert_true(wait_value(d, "after", "stream", 5000) >= 0);
	assert_true(entries_of(d) > e0);
	assert_equals_table(d, 5000);
	ddict_close(d);
}

/*
 * A cache whose deliveries were lost (its subscription killed while its
 * thread was stalled in a change callback, five commits meanwhile) reads
 * them from the stream; when the stream was trimmed past its position it
 * finds a gap there and catches up from PostgreSQL; either way it follows
 * the deliveries again.
 */
static atomic_int hold_cb;

static void
slow_cb(const ddict_change *change, void *arg)
{
	(void) change, (void) arg;
	while (atomic_load(&hold_cb))
		sleep_ms(5);
}

static void
lose_deliveries(const char *name, bool trim)
{
	ddict	   *d;
	char		key[256];
	uint64_t	g0,
				e0;
	long long	len0,
				stmts0;

	need_redis();
	published_dict(name, 1, 1);
	stream_of(name, key, sizeof(key));
	d = open_push(name, 60000, slow_cb, NULL);
	wait_following(d);
	g0 = gaps_of(d);
	atomic_store(&hold_cb, 1);	/* the cache stalls in its next change */
	len0 = redis_int("XLEN %s", key, NULL);
	free(sqlf(admin, "UPDATE %s SET value = 'stall'", name));
	sleep_ms(200);
	/* its subscription goes: what is published from here on never reaches it */
	assert_true(redis_int("CLIENT KILL TYPE %s", "pubsub", NULL) >= 1);
	stmts0 = pgss_calls(CLIENT_STMTS);
	for (int n = 0; n < 5; n++)	/* a key each: an entry applied across
								 * the gap would lose the others */
	{
		free(sqlf(admin, "INSERT INTO %s VALUES ('behind%d', 'x')", name, n));
		/* each in an entry of its own: a streamer slowed down by a loaded
		 * machine would otherwise send several commits as one entry, and
		 * the trim below might then leave no gap */
		for (int waited = 0; waited < 20000 && redis_int("XLEN %s", key, NULL) < len0 + 2 + n;
			 waited += 20)
			sleep_ms(20);
	}
	if (trim)					/* a gap exists; the streamer's own MAXLEN ~
								 * may have trimmed some already */
		assert_true(redis_int("XTRIM %s MAXLEN 1", key, NULL) >= 1);
	e0 = entries_of(d);
	atomic_store(&hold_cb, 0);
	assert_true(wait_value(d, "behind4", "x", 5000) >= 0);
	assert_equals_table(d, 5000);
	if (trim)
		assert_true(gaps_of(d) > g0);
	else
	{
		/* all five from the stream, none from PostgreSQL */
		assert_true(entries_of(d) >= e0 + 5);
		assert_int_equal(gaps_of(d), g0);
		assert_int_equal(pgss_calls(CLIENT_STMTS), stmts0);
	}
	/* the subscription is back: deliveries again */
	e0 = entries_of(d);
	for (int waited = 0; waited < 10000 && !atomic_load(&d->subscribed); waited += 20)
		sleep_ms(20);
	free(sqlf(admin, "UPDATE %s SET value = 'again'", name));
	assert_true(wait_value(d, "g0:0", "again", 5000) >= 0);
	assert_true(entries_of(d) > e0);
	assert_equals_table(d, 5000);
	ddict_close(d);
}

static void
test_stream_lost_deliveries(void **state)
{
	(void) state;
	lose_deliveries("s_lost", false);
}

static void
test_stream_trimmed(void **state)
{
	(void) state;
	lose_deliveries("s_trim", true);
}

/* PostgreSQL backends of this test's idle-close client. */
static long long
idle_backends(void)
{
	return sql_ll(admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ddict_idle_close'");
}

static bool
wait_backends(long long n, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 20)
	{
		if (idle_backends() == n)
			return true;
		sleep_ms(20);
	}
	return idle_backends() == n;
}

/*
 * idle_close_ms: a client whose dicts all follow published changes closes
 * its PostgreSQL connection once idle, keeps applying deliveries without
 * it, reconnects for a marker (TRUNCATE) and closes again.
 */
static void
test_stream_idle_close(void **state)
{
	ddict_client_options co;
	ddict_client *cl;
	ddict_options o;
	ddict	   *d[2];
	char		conninfo[1024];
	uint64_t	e0;

	(void) state;
	need_redis();
	published_dict("s_idle1", 1, 3);
	published_dict("s_idle2", 1, 3);
	snprintf(conninfo, sizeof(conninfo), "%s application_name=ddict_idle_close", test_conninfo());
	ddict_client_options_init(&co);
	co.redis_url = rurl;
	co.interval_ms = 60000;
	co.idle_close_ms = 300;
	co.backoff_min_ms = 20;
	co.backoff_max_ms = 200;
	cl = ddict_client_open(conninfo, &co);
	assert_non_null(cl);
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	for (int i = 0; i < 2; i++)
	{
		d[i] = ddict_open_on(cl, i ? "s_idle2" : "s_idle1", &o);
		assert_non_null(d[i]);
	}
	for (int i = 0; i < 2; i++)
		wait_following(d[i]);
	assert_true(wait_backends(0, 5000));	/* idle: closed */
	e0 = entries_of(d[0]);
	free(sqlf(admin, "UPDATE s_idle1 SET value = 'delivered'"));
	assert_true(wait_value(d[0], "g0:0", "delivered", 5000) >= 0);
	assert_true(entries_of(d[0]) > e0);
	assert_int_equal(idle_backends(), 0);	/* applied without PostgreSQL */
	free(sqlf(admin, "TRUNCATE s_idle2"));	/* a marker: a load from PostgreSQL */
	free(sqlf(admin, "INSERT INTO s_idle2 VALUES ('after', 'truncate')"));
	assert_true(wait_value(d[1], "after", "truncate", 5000) >= 0);
	assert_true(wait_value(d[1], "g0:0", NULL, 5000) >= 0);
	assert_equals_table(d[1], 5000);
	assert_true(wait_backends(0, 5000));	/* and closed again */
	/* a write reconnects */
	assert_int_equal(ddict_set(d[0], "w", 1, "x", 1), DDICT_OK);
	assert_true(wait_value(d[0], "w", "x", 5000) >= 0);
	assert_equals_table(d[0], 5000);
	assert_true(wait_backends(0, 5000));
	for (int i = 0; i < 2; i++)
		ddict_close(d[i]);
	ddict_client_close(cl);
}

/* Redis restarts: the cache polls PostgreSQL meanwhile, then reads on from
 * its position; the server's marker for the lost stream sends it to
 * PostgreSQL once; then entries apply again. */
static void
test_stream_redis_restart(void **state)
{
	ddict	   *d;
	uint64_t	e0;

	(void) state;
	need_redis();
	published_dict("s_redis", 1, 2);
	d = open_push("s_redis", 100, NULL, NULL);
	wait_following(d);
	assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_STOP_CMD"), 0);
	free(sqlf(admin, "UPDATE s_redis SET value = 'while down'"));
	assert_true(wait_value(d, "g0:1", "while down", 5000) >= 0);	/* polled */
	assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_START_CMD"), 0);
	free(sqlf(admin, "UPDATE s_redis SET value = 'after restart'"));
	assert_true(wait_value(d, "g0:1", "after restart", 5000) >= 0);
	assert_true(stats_of(d).redis == 1 || (sleep_ms(1000), stats_of(d).redis == 1));
	sleep_ms(300);
	e0 = entries_of(d);
	for (int n = 0; n < 5; n++)
	{
		char		v[16];

		snprintf(v, sizeof(v), "r%d", n);
		free(sqlf(admin, "UPDATE s_redis SET value = '%s'", v));
		assert_true(wait_value(d, "g0:1", v, 5000) >= 0);
	}
	assert_true(entries_of(d) > e0);
	assert_equals_table(d, 5000);
	ddict_close(d);
}

/* The server restarts: new epoch, the streamer's first entry is a marker:
 * the cache reloads from PostgreSQL, then follows the stream. */
static void
test_stream_server_restart(void **state)
{
	ddict	   *d;
	uint64_t	e0;
	ddict_stats s0;

	(void) state;
	need_redis();
	if (!getenv("DDICT_TEST_RESTART_CMD"))
		skip();
	published_dict("s_pg", 1, 2);
	d = open_push("s_pg", 500, NULL, NULL);
	wait_following(d);
	s0 = stats_of(d);
	PQfinish(admin);
	admin = NULL;
	assert_int_equal(run_env_cmd("DDICT_TEST_RESTART_CMD"), 0);
	admin = admin_connect();
	assert_non_null(admin);
	free(sqlf(admin, "UPDATE s_pg SET value = 'after'"));
	assert_true(wait_value(d, "g0:0", "after", 10000) >= 0);
	assert_true(stats_of(d).reloads > s0.reloads);
	/* The restarted streamer and the client's return to its stream take
	 * their time (seconds under TSan): commit until one commit arrives as a
	 * stream entry, for at most 20 s. */
	for (int n = 0, deadline = 20000;; n++)
	{
		char		v[32];

		snprintf(v, sizeof(v), "streamed%d", n);
		e0 = entries_of(d);
		free(sqlf(admin, "UPDATE s_pg SET value = '%s'", v));
		assert_true(wait_value(d, "g0:0", v, 5000) >= 0);
		if (entries_of(d) > e0)
			break;
		deadline -= 500;
		if (deadline <= 0)
			fail_msg("no commit arrived through the stream within 20 s after the restart");
		sleep_ms(500);
	}
	assert_equals_table(d, 5000);
	ddict_close(d);
}

/* Opted out while followed: no more entries, but the version key moves:
 * within about two intervals the cache goes to PostgreSQL. */
static void
test_stream_opt_out(void **state)
{
	ddict	   *d;
	uint64_t	g0;
	int64_t		ms;

	(void) state;
	need_redis();
	published_dict("s_out", 1, 1);
	d = open_push("s_out", 200, NULL, NULL);
	wait_following(d);
	g0 = gaps_of(d);
	free(sqlf(admin, "SELECT ddict_publish_changes('s_out', false)"));
	free(sqlf(admin, "UPDATE s_out SET value = 'unpublished'"));
	ms = wait_value(d, "g0:0", "unpublished", 5000);
	assert_true(ms >= 0);
	assert_true(gaps_of(d) > g0);
	print_message("# opted out: a commit seen after %lld ms (interval 200 ms)\n", (long long) ms);
	assert_equals_table(d, 5000);
	ddict_close(d);
}

/*
 * One client following more published dicts than one batch of the version
 * watchdog used to cover (64): the last one opened, opted out and then
 * written, is noticed by its version key like the first (attack round 5,
 * finding 16: it stayed stale for ever).
 */
static void
test_stream_many_dicts(void **state)
{
	enum
	{
		M = 70
	};
	ddict_client_options co;
	ddict_client *cl;
	ddict_options o;
	ddict	   *d[M];
	char		name[32];
	uint64_t	g0;
	int64_t		ms;

	(void) state;
	need_redis();
	if (getenv("DDICT_STREAMS_NOPUB"))
		skip();
	for (int i = 0; i < M; i++)
	{
		snprintf(name, sizeof(name), "s_many%d", i);
		published_dict(name, 1, 1);
	}
	ddict_client_options_init(&co);
	co.redis_url = rurl;
	co.interval_ms = 200;
	co.backoff_min_ms = 20;
	co.backoff_max_ms = 200;
	cl = ddict_client_open(test_conninfo(), &co);
	assert_non_null(cl);
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	for (int i = 0; i < M; i++)
	{
		snprintf(name, sizeof(name), "s_many%d", i);
		d[i] = ddict_open_on(cl, name, &o);
		if (d[i] == NULL)
			fail_msg("ddict_open_on(%s): %s", name, ddict_errmsg());
	}
	for (int i = 0; i < M; i++)
		wait_following(d[i]);
	g0 = gaps_of(d[M - 1]);
	free(sqlf(admin, "SELECT ddict_publish_changes('s_many%d', false)", M - 1));
	free(sqlf(admin, "UPDATE s_many%d SET value = 'unpublished'", M - 1));
	free(sqlf(admin, "UPDATE s_many0 SET value = 'streamed'"));
	ms = wait_value(d[M - 1], "g0:0", "unpublished", 5000);
	print_message("# dict %d of %d opted out: a commit seen after %lld ms (interval 200 ms)\n",
				  M, M, (long long) ms);
	assert_true(ms >= 0);
	assert_true(gaps_of(d[M - 1]) > g0);
	assert_true(wait_value(d[0], "g0:0", "streamed", 5000) >= 0);
	for (int i = 0; i < M; i++)
	{
		assert_equals_table(d[i], 5000);
		ddict_close(d[i]);
	}
	ddict_client_close(cl);
	for (int i = 0; i < M; i++)
		free(sqlf(admin, "DROP TABLE s_many%d", i));
}

/*
 * A malformed entry in one stream (forged by an XADD: readable id, fields
 * that are not the server's) sends only its dict to PostgreSQL, which then
 * reads on after it; the client's other dict keeps following its stream.
 * Before, the client dropped its stream connection for every dict and met
 * the same entry at each reconnect: all polled PostgreSQL for good (attack
 * round 5, finding 10).  The entry is announced by its id alone, as the
 * streamer does for a large entry: the client reads it from the stream.
 */
static void
test_stream_forged_entry(void **state)
{
	ddict	   *d,
			   *e;
	char		key[256];
	redisReply *r;
	uint64_t	gd,
				ed,
				ee;

	(void) state;
	need_redis();
	if (getenv("DDICT_STREAMS_NOPUB"))
		skip();
	published_dict("s_forged", 1, 1);
	published_dict("s_clean", 1, 1);
	d = open_push("s_forged", 200, NULL, NULL);
	e = open_push("s_clean", 200, NULL, NULL);
	wait_following(d);
	wait_following(e);
	gd = gaps_of(d);
	stream_of("s_forged", key, sizeof(key));
	r = redis_cmd("XADD %s * kind d dict x epoch y version z from a cursor b until c n d %s v", key, "sgarbage");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_true(redis_int("PUBLISH %s %s", key, r->str) >= 1);
	freeReplyObject(r);
	sleep_ms(300);
	for (int waited = 0; gaps_of(d) == gd; waited += 10)
	{
		if (waited > 5000)
			fail_msg("the forged entry did not send its dict to PostgreSQL within 5 s");
		sleep_ms(10);
	}
	/* both follow their streams again: commits come as entries */
	ed = entries_of(d);
	ee = entries_of(e);
	for (int waited = 0; stats_of(d).redis != 1 || stats_of(e).redis != 1; waited += 10)
	{
		if (waited > 5000)
			fail_msg("not following the streams 5 s after the forged entry (redis %d, %d): %s",
					 stats_of(d).redis, stats_of(e).redis, stats_of(e).last_error);
		sleep_ms(10);
	}
	sleep_ms(300);
	free(sqlf(admin, "UPDATE s_forged SET value = 'after'"));
	free(sqlf(admin, "UPDATE s_clean SET value = 'after'"));
	assert_true(wait_value(d, "g0:0", "after", 5000) >= 0);
	assert_true(wait_value(e, "g0:0", "after", 5000) >= 0);
	assert_true(entries_of(d) > ed);
	assert_true(entries_of(e) > ee);
	assert_int_equal(gaps_of(d), gd + 1);
	assert_equals_table(d, 5000);
	assert_equals_table(e, 5000);
	ddict_close(d);
	ddict_close(e);
}

/* A RESP bulk string appended to buf at *len. */
static void
resp_bulk(char *buf, size_t size, size_t *len, const char *s)
{
	*len += (size_t) snprintf(buf + *len, size - *len, "$%zu\r\n%s\r\n", strlen(s), s);
}

/*
 * A forged delivery that follows the cache (so it is applied) with a
 * version and a stream id far ahead: the cache is ahead of the version key
 * for an interval, starts again from a new position and a check the server
 * answers in full — the forged key goes, real deliveries apply again
 * (attack round 6: it stayed frozen, real entries skipped as older).
 */
static void
test_stream_forged_ahead(void **state)
{
	ddict	   *d;
	char		key[256],
				payload[2048],
				num[7][32];
	const ddict_snapshot *cur;
	size_t		len;
	const char *names[7] = {"dict", "epoch", "version", "from", "cursor", "until", "n"};
	uint64_t	e0;

	(void) state;
	need_redis();
	if (getenv("DDICT_STREAMS_NOPUB"))
		skip();
	published_dict("s_ahead", 1, 2);
	d = open_push("s_ahead", 200, NULL, NULL);
	wait_following(d);
	stream_of("s_ahead", key, sizeof(key));
	cur = atomic_load(&d->current);
	snprintf(num[0], 32, "%u", (unsigned) cur->relid);
	snprintf(num[1], 32, "%lld", (long long) cur->epoch);
	snprintf(num[2], 32, "%lld", (long long) cur->version + 1000000000000LL);
	snprintf(num[3], 32, "%lld", (long long) cur->cursor);
	snprintf(num[4], 32, "%lld", (long long) cur->cursor + 1000000);
	snprintf(num[5], 32, "%lld", (long long) cur->cursor + 1000000);
	snprintf(num[6], 32, "1");
	len = (size_t) snprintf(payload, sizeof(payload), "99999999999999-0\n*18\r\n");
	resp_bulk(payload, sizeof(payload), &len, "kind");
	resp_bulk(payload, sizeof(payload), &len, "d");
	for (int i = 0; i < 7; i++)
	{
		resp_bulk(payload, sizeof(payload), &len, names[i]);
		resp_bulk(payload, sizeof(payload), &len, num[i]);
	}
	resp_bulk(payload, sizeof(payload), &len, "sforged");
	resp_bulk(payload, sizeof(payload), &len, "evil");
	assert_true(redis_int("PUBLISH %s %s", key, payload) >= 1);
	assert_true(wait_value(d, "forged", "evil", 5000) >= 0);	/* applied: it follows */
	/* within a few intervals: the server's table again, without the key */
	assert_true(wait_value(d, "forged", NULL, 5000) >= 0);
	assert_equals_table(d, 5000);
	wait_following(d);
	e0 = entries_of(d);
	free(sqlf(admin, "UPDATE s_ahead SET value = 'real'"));
	assert_true(wait_value(d, "g0:1", "real", 5000) >= 0);
	assert_true(entries_of(d) > e0);	/* from a delivery, not skipped */
	assert_equals_table(d, 5000);
	ddict_close(d);
}

/*
 * A published dict of a LATIN1 database, a client whose client_encoding is
 * UTF8: loads and checks come converted, stream entries would carry the
 * server's bytes ('café' twice in the cache, the loaded one stale: attack
 * round 5, finding 28).  Such a client follows the version channel instead
 * (plain push) and equals a fresh SELECT.
 */
/* foreach: the key has the same value in the dict arg. */
static int
same_in(void *arg, const char *key, size_t klen, const char *val, size_t vlen)
{
	char	   *v = NULL;
	size_t		n = 0;
	int			rc = ddict_get(arg, key, klen, &v, &n);

	if (rc != DDICT_OK || n != vlen || memcmp(v, val, n) != 0)
		fail_msg("key %.*s: %s", (int) klen, key, rc == DDICT_OK ? "another value" : "absent");
	ddict_free(v);
	return 0;
}

static void
test_stream_client_encoding(void **state)
{
	PGconn	   *l1;
	char		ci[1024];
	ddict_options o;
	ddict	   *d,
			   *m;

	(void) state;
	need_redis();
	if (getenv("DDICT_STREAMS_NOPUB"))
		skip();
	free(sqlf(admin, "DROP DATABASE IF EXISTS ddict_latin1 WITH (FORCE)"));
	free(sqlf(admin, "CREATE DATABASE ddict_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
			  " TEMPLATE template0"));
	snprintf(ci, sizeof(ci), "%s dbname=ddict_latin1 client_encoding=UTF8", admin_conninfo());
	l1 = PQconnectdb(ci);
	assert_int_equal(PQstatus(l1), CONNECTION_OK);
	free(sqlf(l1, "SET client_min_messages = warning"));
	free(sqlf(l1, "CREATE EXTENSION ddict"));
	free(sqlf(l1, "SELECT ddict_create('enc')"));
	free(sqlf(l1, "SELECT ddict_publish_changes('enc')"));
	free(sqlf(l1, "SELECT ddict_set('enc', 'café', 'crème')"));
	free(sqlf(l1, "SELECT ddict_set('enc', 'gone', 'x')"));
	snprintf(ci, sizeof(ci), "%s dbname=ddict_latin1 client_encoding=UTF8", test_conninfo());
	d = open_push_at(ci, "enc", 200, NULL, NULL);
	assert_null(atomic_load(&d->stream_key));	/* not followed: plain push */
	assert_int_equal(ddict_get(d, "café", DDICT_NTS, NULL, NULL), DDICT_OK);
	free(sqlf(l1, "SELECT ddict_set('enc', 'café', 'brûlée')"));
	free(sqlf(l1, "SELECT ddict_set('enc', 'naïve', 'oui')"));
	free(sqlf(l1, "SELECT ddict_delete('enc', 'gone')"));
	assert_true(wait_value(d, "gone", NULL, 5000) >= 0);
	assert_true(wait_value(d, "naïve", "oui", 5000) >= 0);
	/* one café (the loaded key, converted, was replaced), and every value
	 * as a fresh load gives it (values come in the server's encoding from
	 * loads and checks alike) */
	assert_int_equal(ddict_len(d), 2);
	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	m = ddict_open(ci, "enc", &o);
	assert_non_null(m);
	assert_int_equal(ddict_len(m), 2);
	assert_int_equal(ddict_foreach(m, same_in, d), DDICT_OK);
	ddict_close(m);
	ddict_close(d);
	PQfinish(l1);
	free(sqlf(admin, "DROP DATABASE ddict_latin1 WITH (FORCE)"));
}

/*
 * A push client of a hot standby, with the primary's Redis: the published
 * stream is the primary's, whose epoch the standby never has — every entry
 * cost the client a full reload on the standby (attack round 5, finding 9).
 * It follows the version channel instead (plain push).  Needs
 * DDICT_TEST_STANDBY_CONNINFO (run.sh starts a streaming standby).
 */
static void
test_stream_standby(void **state)
{
	const char *sci = getenv("DDICT_TEST_STANDBY_CONNINFO");
	PGconn	   *sb;
	long long	v;
	ddict	   *d;

	(void) state;
	need_redis();
	if (sci == NULL || getenv("DDICT_STREAMS_NOPUB"))
		skip();
	published_dict("s_standby", 1, 2);
	v = sql_ll(admin, "SELECT ddict_last_updated('s_standby')");
	sb = PQconnectdb(sci);
	assert_int_equal(PQstatus(sb), CONNECTION_OK);
	free(sqlf(sb, "SET client_min_messages = warning"));
	for (int waited = 0; sql_ll(sb, "SELECT count(*) FROM ddict_dicts WHERE dict = pg_catalog.to_regclass('s_standby')"
								" AND version >= %lld", v) != 1; waited += 20)
	{
		if (waited > 10000)
			fail_msg("the standby did not replay s_standby within 10 s");
		sleep_ms(20);
	}
	d = open_push_at(sci, "s_standby", 200, NULL, NULL);
	assert_null(atomic_load(&d->stream_key));	/* the version channel */
	for (int n = 0; n < 3; n++)
	{
		char		val[16];

		snprintf(val, sizeof(val), "sb%d", n);
		free(sqlf(admin, "UPDATE s_standby SET value = '%s'", val));
		assert_true(wait_value(d, "g0:1", val, 5000) >= 0);
	}
	assert_int_equal(gaps_of(d), 0);
	assert_int_equal(entries_of(d), 0);
	ddict_close(d);
	PQfinish(sb);
}

/* ---- change callbacks and the client's other dicts ---- */

/*
 * The thread that runs a change callback holds its client's locks (the
 * connection for a version-channel push, the list for a delivery): from
 * the callback, writes, syncs and opens on ANY dict of the same client
 * return DDICT_EBUSY, reads of them serve their snapshots.  Before, a
 * write of another dict deadlocked the client's thread on itself for
 * ever (attack round 5, finding 22).  A deadlock here ends the program
 * (alarm) instead of hanging the suite.
 */
typedef struct cb_calls
{
	ddict_client *cl;
	ddict	   *other;			/* an autosync dict of the same client */
	atomic_int	calls,
				set_rc,
				sync_rc,
				client_sync_rc,
				get_rc,
				open_busy;
} cb_calls;

static void
other_dict_cb(const ddict_change *change, void *arg)
{
	cb_calls   *c = arg;
	ddict	   *o;

	(void) change;
	atomic_store(&c->set_rc, ddict_set(c->other, "from_cb", DDICT_NTS, "x", 1));
	atomic_store(&c->sync_rc, ddict_sync(c->other));
	atomic_store(&c->client_sync_rc, ddict_client_sync(c->cl));
	atomic_store(&c->get_rc, ddict_get(c->other, "k", DDICT_NTS, NULL, NULL));
	o = ddict_open_on(c->cl, "s_cb_other", NULL);
	atomic_store(&c->open_busy, o == NULL && strstr(ddict_errmsg(), "change callback") != NULL);
	if (o)
		ddict_close(o);
	atomic_fetch_add(&c->calls, 1);
}

static void
on_deadlock(int sig)
{
	static const char m[] = "# the client deadlocked (a call from a change callback)\n";

	(void) sig;
	(void) !write(2, m, sizeof(m) - 1);
	_exit(3);
}

static void
test_stream_callback_other_dicts(void **state)
{
	ddict_client_options co;
	ddict_client *cl;
	ddict_options o;
	ddict	   *a,
			   *p;
	cb_calls	c = {0};

	(void) state;
	need_redis();
	fresh_dict(admin, "s_cb_other", "text");
	free(sqlf(admin, "INSERT INTO s_cb_other VALUES ('k', 'v0')"));
	fresh_dict(admin, "s_cb_plain", "text");	/* push on the version channel */
	published_dict("s_cb_pub", 1, 1);			/* push by deliveries */
	signal(SIGALRM, on_deadlock);
	alarm(60);
	ddict_client_options_init(&co);
	co.redis_url = rurl;
	co.interval_ms = 200;
	co.versions_page = "off";	/* the read of the other dict checks */
	cl = ddict_client_open(test_conninfo(), &co);
	assert_non_null(cl);
	c.cl = cl;
	c.other = ddict_open_on(cl, "s_cb_other", NULL);
	assert_non_null(c.other);
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.on_change = other_dict_cb;
	o.on_change_arg = &c;
	a = ddict_open_on(cl, "s_cb_plain", &o);
	p = ddict_open_on(cl, "s_cb_pub", &o);
	assert_non_null(a);
	assert_non_null(p);
	if (!getenv("DDICT_STREAMS_NOPUB"))
		wait_following(p);
	for (int i = 0; i < 2; i++)
	{
		ddict	   *d = i ? a : p;	/* deliveries first: the list lock */
		int			calls = atomic_load(&c.calls);

		/* the other dict moved: a read of it would check */
		free(sqlf(admin, "UPDATE s_cb_other SET value = 'v%d'", i + 1));
		sleep_ms(300);
		free(sqlf(admin, "INSERT INTO %s VALUES ('cb', '%d')", d->dict, i));
		for (int waited = 0; atomic_load(&c.calls) == calls; waited += 5)
		{
			if (waited > 10000)
				fail_msg("%s: no change callback within 10 s", d->dict);
			sleep_ms(5);
		}
		assert_int_equal(atomic_load(&c.set_rc), DDICT_EBUSY);
		assert_int_equal(atomic_load(&c.sync_rc), DDICT_EBUSY);
		assert_int_equal(atomic_load(&c.client_sync_rc), DDICT_EBUSY);
		assert_int_equal(atomic_load(&c.get_rc), DDICT_OK);
		assert_true(atomic_load(&c.open_busy));
	}
	/* the client goes on: writes from this thread, every dict follows */
	assert_int_equal(ddict_set(c.other, "main", DDICT_NTS, "y", 1), DDICT_OK);
	assert_value(c.other, "main", "y");
	free(sqlf(admin, "UPDATE s_cb_pub SET value = 'after'"));
	assert_true(wait_value(p, "cb", "after", 5000) >= 0);
	free(sqlf(admin, "UPDATE s_cb_plain SET value = 'after'"));
	assert_true(wait_value(a, "cb", "after", 5000) >= 0);
	alarm(0);
	ddict_close(a);
	ddict_close(p);
	ddict_close(c.other);
	ddict_client_close(cl);
}

/* ---- stress ---- */

enum
{
	GROUPS = 4, KEYS = 5, WRITERS = 4, CACHES = 3
};

static atomic_int stop_all;
static atomic_long commits,
			rollbacks,
			bad_reads,
			missing_reads,
			reads_done;

static void *
writer(void *arg)
{
	int			id = (int) (intptr_t) arg;
	PGconn	   *c = PQconnectdb(admin_conninfo());
	unsigned	seed = (unsigned) id * 7919u + 1;

	if (PQstatus(c) != CONNECTION_OK)
	{
		atomic_fetch_add(&bad_reads, 1000000);
		PQfinish(c);
		return NULL;
	}
	PQclear(PQexec(c, "SET client_min_messages = warning"));
	for (long n = 0; !atomic_load(&stop_all); n++)
	{
		int			g = (int) (rand_r(&seed) % GROUPS),
					what = (int) (rand_r(&seed) % 40);
		bool		rb = rand_r(&seed) % 5 == 0;
		char		q[512];
		PGresult   *r;

		/* out of order: a random sleep inside each transaction */
		if (what == 0 && id == 0)
			snprintf(q, sizeof(q), "BEGIN; TRUNCATE s_stress;"
					 " INSERT INTO s_stress SELECT 'g' || g || ':' || k, 'T%d-%ld'"
					 " FROM generate_series(0, %d) g, generate_series(0, %d) k; %s",
					 id, n, GROUPS - 1, KEYS - 1, rb ? "ROLLBACK" : "COMMIT");
		else if (what == 1 && id == 1)
			snprintf(q, sizeof(q), "BEGIN; INSERT INTO s_stress SELECT 'big' || i, 'x'"
					 " FROM generate_series(1, current_setting('ddict.max_delta_keys')::int + 10) i"
					 " ON CONFLICT (key) DO UPDATE SET value = 'y%ld'; DELETE FROM s_stress WHERE key LIKE 'big%%'"
					 " AND random() < 0.5; %s", n, rb ? "ROLLBACK" : "COMMIT");
		else
			snprintf(q, sizeof(q), "BEGIN; UPDATE s_stress SET value = '%sw%d-%ld' WHERE key LIKE 'g%d:%%';"
					 " SELECT pg_sleep(%f); %s", rb ? "RB" : "", id, n, g,
					 (rand_r(&seed) % 20) / 1000.0, rb ? "ROLLBACK" : "COMMIT");
		r = PQexec(c, q);
		if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
			atomic_fetch_add(rb ? &rollbacks : &commits, 1);
		PQclear(r);
	}
	PQfinish(c);
	return NULL;
}

/* Every read of a pinned version: each group's keys carry one value (a
 * transaction moves together), never a rolled-back one. */
static void *
reader(void *arg)
{
	ddict	   *d = arg;

	while (!atomic_load(&stop_all))
	{
		ddict_snapshot *s = ddict_pin(d);

		for (int g = 0; g < GROUPS; g++)
		{
			const char *first = NULL;

			for (int k = 0; k < KEYS; k++)
			{
				char		key[32];
				const char *v;
				size_t		n;

				snprintf(key, sizeof(key), "g%d:%d", g, k);
				if (ddict_snapshot_get(s, key, DDICT_NTS, &v, &n) != DDICT_OK)
				{
					/* every key exists in every committed state (a TRUNCATE
					 * re-inserts them in its transaction); a full load whose
					 * snapshot predated a TRUNCATE's commit once read its
					 * new, empty file (sync.c now locks the dict first) */
					if (atomic_fetch_add(&missing_reads, 1) == 0)
						print_message("# version %lld: %s missing\n",
									  (long long) ddict_snapshot_version(s), key);
					continue;
				}
				if (strncmp(v, "RB", 2) == 0 || (first && strcmp(first, v) != 0))
				{
					if (atomic_fetch_add(&bad_reads, 1) == 0)
						print_message("# version %lld: %s = %s, previous key %s\n",
									  (long long) ddict_snapshot_version(s), key, v,
									  first ? first : "-");
				}
				first = v;
			}
		}
		ddict_unpin(s);
		atomic_fetch_add(&reads_done, 1);
	}
	return NULL;
}

static void
test_stream_stress(void **state)
{
	pthread_t	w[WRITERS],
				r[CACHES];
	ddict	   *d[CACHES];
	uint64_t	e = 0,
				g = 0;
	const char *sec = getenv("DDICT_STRESS_SECONDS");
	int			seconds = sec ? atoi(sec) : 8;

	(void) state;
	need_redis();
	published_dict("s_stress", GROUPS, KEYS);
	for (int i = 0; i < CACHES; i++)
	{
		d[i] = open_push("s_stress", i == 0 ? 60000 : 200, NULL, NULL);
		wait_following(d[i]);
	}
	atomic_store(&stop_all, 0);
	for (int i = 0; i < CACHES; i++)
		assert_int_equal(pthread_create(&r[i], NULL, reader, d[i]), 0);
	for (int i = 0; i < WRITERS; i++)
		assert_int_equal(pthread_create(&w[i], NULL, writer, (void *) (intptr_t) i), 0);
	sleep_ms(seconds * 1000);
	atomic_store(&stop_all, 1);
	for (int i = 0; i < WRITERS; i++)
		pthread_join(w[i], NULL);
	for (int i = 0; i < CACHES; i++)
		pthread_join(r[i], NULL);
	for (int i = 0; i < CACHES; i++)
	{
		assert_equals_table(d[i], 15000);
		e += entries_of(d[i]);
		g += gaps_of(d[i]);
	}
	print_message("# stress %d s: %ld commits, %ld rollbacks, %ld pinned reads (%ld saw a key"
				  " missing); %llu entries applied from the stream, %llu sent to PostgreSQL\n",
				  seconds, atomic_load(&commits), atomic_load(&rollbacks), atomic_load(&reads_done),
				  atomic_load(&missing_reads), (unsigned long long) e, (unsigned long long) g);
	assert_int_equal(atomic_load(&bad_reads), 0);
	assert_int_equal(atomic_load(&missing_reads), 0);
	assert_true(atomic_load(&commits) > 10);
	assert_true(e > 0 || getenv("DDICT_STREAMS_NOPUB"));
	for (int i = 0; i < CACHES; i++)
		ddict_close(d[i]);
}

static int
setup(void **state)
{
	char	   *db;

	(void) state;
	rurl = getenv("DDICT_TEST_REDIS_URL");
	admin = admin_connect();
	if (admin == NULL)
		return -1;
	db = sqlf(admin, "SELECT current_database()");
	snprintf(dbname, sizeof(dbname), "%s", db);
	free(db);
	return 0;
}

static int
teardown(void **state)
{
	(void) state;
	PQfinish(admin);
	return 0;
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_applies),
		cmocka_unit_test(test_stream_markers),
		cmocka_unit_test(test_stream_lost_deliveries),
		cmocka_unit_test(test_stream_trimmed),
		cmocka_unit_test(test_stream_idle_close),
		cmocka_unit_test(test_stream_redis_restart),
		cmocka_unit_test(test_stream_opt_out),
		cmocka_unit_test(test_stream_many_dicts),
		cmocka_unit_test(test_stream_forged_entry),
		cmocka_unit_test(test_stream_forged_ahead),
		cmocka_unit_test(test_stream_client_encoding),
		cmocka_unit_test(test_stream_standby),
		cmocka_unit_test(test_stream_callback_other_dicts),
		cmocka_unit_test(test_stream_stress),
		cmocka_unit_test(test_stream_server_restart),
	};
	size_t		n = select_tests(tests, sizeof(tests) / sizeof(tests[0]));

	return _cmocka_run_group_tests("streams", tests, n, setup, teardown);
}
