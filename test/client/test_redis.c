/*
 * test_redis.c — libddict with Redis as the version source: autosync and
 * interval checks answered by a GET (no PostgreSQL round trip when nothing
 * changed: library counters and pg_stat_statements), a commit seen by the
 * next read once Redis has its version, push mode (SUBSCRIBE) with its
 * latency, Redis outages and restarts (fallback to PostgreSQL, reconnects),
 * push mode without Redis, prompt close, the callback's thread.
 *
 * run.sh starts a redis-server and sets ddict.redis_url on the test cluster;
 * it exports DDICT_TEST_REDIS_URL, and DDICT_TEST_REDIS_STOP_CMD /
 * DDICT_TEST_REDIS_START_CMD to simulate an outage (a restarted Redis is
 * empty).  Without them every test is skipped.
 */
#include "common.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

static const char *rurl;
static char dbname[128];

/* ---- helpers ---- */

static int
group_setup(void **state)
{
	char	   *db;

	(void) state;
	admin = admin_connect();
	if (admin == NULL)
		return -1;
	rurl = getenv("DDICT_TEST_REDIS_URL");
	db = sqlf(admin, "SELECT current_database()");
	snprintf(dbname, sizeof(dbname), "%s", db);
	free(db);
	return 0;
}

static int
group_teardown(void **state)
{
	(void) state;
	PQfinish(admin);
	return 0;
}

static int
redis_port(void)
{
	const char *p = getenv("DDICT_TEST_REDIS_PORT");

	return p ? atoi(p) : 6379;
}

/* GET with a fresh connection each time (Redis restarts under us). */
static char *
redis_get(const char *key)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port(), tv);
	redisReply *r;
	char	   *out = NULL;

	if (c == NULL || c->err)
	{
		if (c)
			redisFree(c);
		return NULL;
	}
	r = redisCommand(c, "GET %s", key);
	if (r && r->type == REDIS_REPLY_STRING)
		out = strdup(r->str);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return out;
}

static bool
redis_up(void)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port(), tv);
	redisReply *r;
	bool		ok = false;

	if (c && !c->err && (r = redisCommand(c, "PING")) != NULL)
	{
		ok = r->type == REDIS_REPLY_STATUS;
		freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	return ok;
}

static void
need_redis(void)
{
	if (rurl == NULL)
		skip();
	/* a failed test may have left it stopped */
	if (!redis_up())
		assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_START_CMD"), 0);
}

static void
redis_stop(void)
{
	assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_STOP_CMD"), 0);
}

static void
redis_start(void)
{
	assert_int_equal(run_env_cmd("DDICT_TEST_REDIS_START_CMD"), 0);
}

static void
key_of(const char *dict, char *buf, size_t size)
{
	snprintf(buf, size, "ddict:%s:public.%s", dbname, dict);
}

/* Wait until Redis holds the dict's current version; false on timeout. */
static bool
wait_published(const char *dict, int timeout_ms)
{
	char		key[256];
	int64_t		deadline = mono_ms() + timeout_ms;

	key_of(dict, key, sizeof(key));
	for (;;)
	{
		long long	v = sql_ll(admin, "SELECT ddict_last_updated('%s')", dict);
		char	   *got = redis_get(key);
		bool		same = got && atoll(got) == v;

		free(got);
		if (same)
			return true;
		if (mono_ms() > deadline)
			return false;
		sleep_ms(5);
	}
}

static ddict *
open_redis(const char *dict, ddict_mode mode, unsigned interval_ms, const char *url)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = mode;
	o.interval_ms = interval_ms;
	o.redis_url = url;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	o.timeout_ms = 3000;
	d = ddict_open(test_conninfo(), dict, &o);
	if (d == NULL)
		fail_msg("ddict_open(%s): %s", dict, ddict_errmsg());
	return d;
}

static void
pgss_reset(void)
{
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
}

/* Statements that asked the server about the dict: ddict_changes() or the
 * scalar check ddict_unchanged(). */
static long long
pgss_changes_calls(void)
{
	/* The pattern is built at run time so that this query never matches itself. */
	return sql_ll(admin,
				  "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
				  " WHERE (query LIKE '%%' || 'ddict_changes' || '(%%'"
				  "        OR query LIKE '%%' || 'ddict_unchanged' || '(%%')"
				  "   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())");
}

/* Poll reads (no network of their own in push mode) until key == expect. */
static int64_t
wait_value(ddict *d, const char *key, const char *expect, int timeout_ms)
{
	int64_t		t0 = mono_ms();

	for (;;)
	{
		char	   *v = NULL;
		size_t		n;
		bool		same = ddict_get(d, key, DDICT_NTS, &v, &n) == DDICT_OK &&
			strcmp(v, expect) == 0;

		ddict_free(v);
		if (same)
			return mono_ms() - t0;
		if (mono_ms() - t0 > timeout_ms)
			return -1;
		nanosleep(&(struct timespec) {0, 100000}, NULL);	/* 0.1 ms */
	}
}

static bool
wait_stat_redis(ddict *d, int want, int timeout_ms)
{
	int64_t		deadline = mono_ms() + timeout_ms;

	while (stats_of(d).redis != want)
	{
		if (mono_ms() > deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

static int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_ll(const void *a, const void *b)
{
	long long	x = *(const long long *) a,
				y = *(const long long *) b;

	return (x > y) - (x < y);
}

/* ---- options ---- */

static void
test_options(void **state)
{
	ddict_options o;
	PGconn	   *c;
	const char *bad[] = {
		"http://127.0.0.1:6379", "redis://127.0.0.1:0", "redis://127.0.0.1:99999",
		"redis://127.0.0.1:63x9", "redis://127.0.0.1/abc", "unix://relative/path",
		"unix:///tmp/redis.sock?database=1", "redis://[::1"
	};

	(void) state;
	fresh_dict(admin, "r_opts", "text");
	ddict_options_init(&o);
	assert_null(o.redis_url);
	assert_null(o.redis_prefix);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		o.redis_url = bad[i];
		if (ddict_open(test_conninfo(), "r_opts", &o) != NULL)
			fail_msg("redis_url \"%s\" was accepted", bad[i]);
		assert_non_null(strstr(ddict_errmsg(), "redis"));
	}
	/* "" means none */
	o.redis_url = "";
	{
		ddict	   *d = ddict_open(test_conninfo(), "r_opts", &o);

		assert_non_null(d);
		assert_int_equal(stats_of(d).redis, 0);
		ddict_close(d);
	}

	/* Push mode needs a connection of its own. */
	c = admin_connect();
	assert_non_null(c);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	assert_null(ddict_open_conn(c, "r_opts", &o));
	assert_non_null(strstr(ddict_errmsg(), "push"));
	PQfinish(c);
	o.mode = (ddict_mode) 4;
	assert_null(ddict_open(test_conninfo(), "r_opts", &o));
}

/* ---- autosync ---- */

static void
test_autosync_unchanged_no_pg(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	const int	N = 200;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_zero", "text");
	free(sqlf(admin, "INSERT INTO r_zero SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g"));
	d = open_redis("r_zero", DDICT_AUTOSYNC, 0, rurl);
	assert_int_equal(stats_of(d).redis, 1);	/* connected by ddict_open() */
	assert_true(wait_published("r_zero", 5000));

	s0 = stats_of(d);
	pgss_reset();
	for (int i = 0; i < N; i++)
		assert_value(d, "k7", "v7");
	s1 = stats_of(d);
	/* every check answered by Redis, none reached PostgreSQL */
	assert_int_equal(s1.redis_checks - s0.redis_checks, N);
	assert_int_equal(s1.checks, s0.checks);
	assert_int_equal(s1.rows_fetched, s0.rows_fetched);
	assert_int_equal(s1.redis_errors, s0.redis_errors);
	assert_int_equal(pgss_changes_calls(), 0);
	assert_int_equal(ddict_is_stale(d), 0);
	assert_true(s1.staleness_ms >= 0 && s1.staleness_ms < 1000);
	/* an explicit sync still asks the server */
	assert_int_equal(ddict_sync(d), 0);
	assert_int_equal(pgss_changes_calls(), 1);

	/* what a check costs, with Redis and without */
	{
		ddict	   *plain = open_mode("r_zero", DDICT_AUTOSYNC);
		int64_t		t0 = mono_ms();
		int64_t		tr,
					tp;

		for (int i = 0; i < 2000; i++)
			(void) ddict_get(d, "k7", 2, NULL, NULL);
		tr = mono_ms() - t0;
		t0 = mono_ms();
		for (int i = 0; i < 2000; i++)
			(void) ddict_get(plain, "k7", 2, NULL, NULL);
		tp = mono_ms() - t0;
		print_message("# autosync check: %.1f us with Redis (GET), %.1f us without (ddict_changes)\n",
					  tr * 1000.0 / 2000, tp * 1000.0 / 2000);
		ddict_close(plain);
	}
	ddict_close(d);
}

static void
test_autosync_sees_commit(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	char		expect[32];

	(void) state;
	need_redis();
	fresh_dict(admin, "r_next", "text");
	d = open_redis("r_next", DDICT_AUTOSYNC, 0, rurl);
	for (int i = 0; i < 30; i++)
	{
		snprintf(expect, sizeof(expect), "v%d", i);
		free(sqlf(admin, "INSERT INTO r_next VALUES ('k', '%s')"
				  " ON CONFLICT (key) DO UPDATE SET value = excluded.value", expect));
		/* once Redis has the new version, the very next read sees the commit */
		assert_true(wait_published("r_next", 5000));
		s0 = stats_of(d);
		assert_value(d, "k", expect);
		s1 = stats_of(d);
		assert_int_equal(s1.redis_checks - s0.redis_checks, 1);
		assert_int_equal(s1.checks - s0.checks, 1);	/* the delta */
		assert_int_equal(s1.deltas - s0.deltas, 1);
		/* and the next one is answered by Redis alone */
		assert_value(d, "k", expect);
		assert_int_equal(stats_of(d).checks, s1.checks);
	}
	/* A write of our own: Redis lags a little; reads stay correct. */
	assert_int_equal(ddict_set(d, "k", 1, "mine", 4), DDICT_OK);
	assert_value(d, "k", "mine");
	assert_true(wait_published("r_next", 5000));
	s0 = stats_of(d);
	assert_value(d, "k", "mine");
	assert_int_equal(stats_of(d).checks, s0.checks);
	ddict_close(d);
}

static void
test_interval_redis(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	int64_t		t0;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_int", "text");
	free(sqlf(admin, "INSERT INTO r_int VALUES ('k', 'v')"));
	d = open_redis("r_int", DDICT_INTERVAL, 100, rurl);
	assert_true(wait_published("r_int", 5000));
	s0 = stats_of(d);
	t0 = mono_ms();
	while (mono_ms() - t0 < 550)
	{
		assert_value(d, "k", "v");
		sleep_ms(1);
	}
	s1 = stats_of(d);
	assert_true(s1.redis_checks - s0.redis_checks >= 3);
	assert_true(s1.redis_checks - s0.redis_checks <= 6);
	assert_int_equal(s1.checks, s0.checks);
	free(sqlf(admin, "UPDATE r_int SET value = 'w'"));
	assert_true(wait_published("r_int", 5000));
	sleep_ms(120);
	assert_value(d, "k", "w");	/* the interval has passed: this read checks */
	ddict_close(d);
}

/* Autosync with Redis stopped: every check falls back to PostgreSQL. */
static void
test_autosync_redis_down(void **state)
{
	ddict	   *d;
	ddict_stats st,
				s0;
	char		expect[32];
	int64_t		t0;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_down", "text");
	free(sqlf(admin, "INSERT INTO r_down VALUES ('k', 'start')"));
	d = open_redis("r_down", DDICT_AUTOSYNC, 0, rurl);
	assert_true(wait_published("r_down", 5000));
	assert_value(d, "k", "start");
	s0 = stats_of(d);
	assert_int_equal(s0.redis, 1);

	redis_stop();
	for (int i = 0; i < 10; i++)
	{
		snprintf(expect, sizeof(expect), "down%d", i);
		free(sqlf(admin, "UPDATE r_down SET value = '%s'", expect));
		t0 = mono_ms();
		assert_value(d, "k", expect);	/* the next read sees it */
		assert_true(mono_ms() - t0 < 2000);
		assert_int_equal(ddict_is_stale(d), 0);
	}
	st = stats_of(d);
	assert_int_equal(st.redis, 0);
	assert_true(st.redis_errors > s0.redis_errors);
	assert_true(st.checks - s0.checks >= 10);
	assert_non_null(strstr(st.last_error, "Redis"));
	print_message("# Redis down: %llu Redis errors, last: %s\n",
				  (unsigned long long) (st.redis_errors - s0.redis_errors), st.last_error);

	/* Opening while Redis is down works too: PostgreSQL only, Redis later. */
	{
		ddict	   *d2 = open_redis("r_down", DDICT_AUTOSYNC, 0, rurl);

		assert_int_equal(stats_of(d2).redis, 0);
		assert_value(d2, "k", "down9");

		/* Redis back (empty): the handles reconnect by themselves, the
		 * server republishes, and checks stop reaching PostgreSQL again. */
		redis_start();
		assert_true(wait_stat_redis(d, 1, 5000));
		assert_true(wait_stat_redis(d2, 1, 5000));
		assert_true(wait_published("r_down", 5000));
		assert_value(d2, "k", "down9");
		st = stats_of(d2);
		for (int i = 0; i < 20; i++)
			assert_value(d2, "k", "down9");
		assert_int_equal(stats_of(d2).checks, st.checks);
		ddict_close(d2);
	}
	st = stats_of(d);
	assert_value(d, "k", "down9");
	assert_value(d, "k", "down9");
	assert_int_equal(stats_of(d).checks, st.checks);
	assert_true(stats_of(d).redis_checks > st.redis_checks);
	ddict_close(d);
}

/* URLs: passwords (refused, or with a user), databases, a unix socket. */
static ddict_stats
open_stats(const char *dict, const char *url, ddict **out)
{
	ddict	   *d = open_redis(dict, DDICT_AUTOSYNC, 0, url);

	*out = d;
	return stats_of(d);
}

static void
test_redis_urls(void **state)
{
	char		url[512];
	const char *sock = getenv("DDICT_TEST_REDIS_SOCKET");
	ddict	   *d;
	ddict_stats st,
				s1;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_urls", "text");
	free(sqlf(admin, "INSERT INTO r_urls VALUES ('k', 'v')"));

	/* a password Redis refuses (it has none): PostgreSQL only, and why */
	snprintf(url, sizeof(url), "redis://:wrong-password@127.0.0.1:%d", redis_port());
	st = open_stats("r_urls", url, &d);
	assert_int_equal(st.redis, 0);
	assert_true(st.redis_errors >= 1);
	assert_non_null(strstr(st.last_error, "AUTH"));
	assert_null(strstr(st.last_error, "wrong-password"));
	free(sqlf(admin, "UPDATE r_urls SET value = 'w'"));
	assert_value(d, "k", "w");
	ddict_close(d);

	/* user:password (the default user takes any password here) */
	snprintf(url, sizeof(url), "redis://default:any@127.0.0.1:%d/0", redis_port());
	st = open_stats("r_urls", url, &d);
	assert_int_equal(st.redis, 1);
	assert_true(wait_published("r_urls", 5000));
	assert_value(d, "k", "w");
	s1 = stats_of(d);
	assert_value(d, "k", "w");
	assert_int_equal(stats_of(d).checks, s1.checks);
	ddict_close(d);

	/* another database: connected, but nothing is published there */
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/1", redis_port());
	st = open_stats("r_urls", url, &d);
	assert_int_equal(st.redis, 1);
	assert_value(d, "k", "w");
	s1 = stats_of(d);
	assert_int_equal(s1.redis_checks - st.redis_checks, 1);
	assert_int_equal(s1.checks - st.checks, 1);
	ddict_close(d);

	/* a database Redis does not have */
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/9999", redis_port());
	st = open_stats("r_urls", url, &d);
	assert_int_equal(st.redis, 0);
	assert_non_null(strstr(st.last_error, "SELECT"));
	assert_value(d, "k", "w");
	ddict_close(d);

	/* a unix socket */
	if (sock)
	{
		snprintf(url, sizeof(url), "unix://%s?db=0", sock);
		st = open_stats("r_urls", url, &d);
		assert_int_equal(st.redis, 1);
		assert_value(d, "k", "w");
		s1 = stats_of(d);
		assert_value(d, "k", "w");
		assert_int_equal(stats_of(d).checks, s1.checks);
		assert_true(stats_of(d).redis_checks > s1.redis_checks);
		ddict_close(d);
	}

	/* nothing listens there */
	st = open_stats("r_urls", "redis://127.0.0.1:1", &d);
	assert_int_equal(st.redis, 0);
	assert_non_null(strstr(st.last_error, "refused"));
	ddict_close(d);
}

/* A prefix nobody publishes under: GET finds nothing, PostgreSQL answers. */
static void
test_redis_prefix(void **state)
{
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				s1;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_prefix", "text");
	ddict_options_init(&o);
	o.redis_url = rurl;
	o.redis_prefix = "nobody:";
	d = ddict_open(test_conninfo(), "r_prefix", &o);
	assert_non_null(d);
	assert_true(wait_published("r_prefix", 5000));	/* under "ddict:" */
	s0 = stats_of(d);
	for (int i = 0; i < 10; i++)
		assert_value(d, "k", NULL);
	s1 = stats_of(d);
	assert_int_equal(s1.redis_checks - s0.redis_checks, 10);
	assert_int_equal(s1.checks - s0.checks, 10);
	ddict_close(d);
}

/* A borrowed connection works with Redis; manual mode ignores Redis. */
static void
test_redis_other_modes(void **state)
{
	ddict_options o;
	PGconn	   *c;
	ddict	   *d;
	ddict_stats s0,
				s1;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_modes", "text");
	free(sqlf(admin, "INSERT INTO r_modes VALUES ('k', 'v')"));
	c = admin_connect();
	assert_non_null(c);
	ddict_options_init(&o);
	o.redis_url = rurl;
	d = ddict_open_conn(c, "r_modes", &o);
	assert_non_null(d);
	assert_int_equal(stats_of(d).redis, 1);
	assert_true(wait_published("r_modes", 5000));
	s0 = stats_of(d);
	for (int i = 0; i < 10; i++)
		assert_value(d, "k", "v");
	s1 = stats_of(d);
	assert_int_equal(s1.checks, s0.checks);
	assert_int_equal(s1.redis_checks - s0.redis_checks, 10);
	free(sqlf(admin, "UPDATE r_modes SET value = 'w'"));
	assert_true(wait_published("r_modes", 5000));
	assert_value(d, "k", "w");
	ddict_close(d);
	assert_int_equal(PQstatus(c), CONNECTION_OK);	/* still the application's */
	PQfinish(c);

	o.mode = DDICT_MANUAL;
	d = ddict_open(test_conninfo(), "r_modes", &o);
	assert_non_null(d);
	for (int i = 0; i < 10; i++)
		assert_value(d, "k", "w");
	s1 = stats_of(d);
	assert_int_equal(s1.redis, 0);
	assert_int_equal(s1.redis_checks, 0);
	assert_int_equal(s1.redis_errors, 0);
	ddict_close(d);
}

/* ---- push ---- */

typedef struct cb_state
{
	pthread_t	main;
	atomic_int	calls;
	atomic_int	in_other_thread;
	atomic_int	busy_rc;
} cb_state;

static cb_state cbs;
static _Atomic(ddict *) cb_handle;	/* set by the test's thread, read by the callback's */

static void
on_change(const ddict_change *c, void *arg)
{
	cb_state   *s = arg;

	(void) c;
	atomic_fetch_add(&s->calls, 1);
	if (!pthread_equal(pthread_self(), s->main))
		atomic_fetch_add(&s->in_other_thread, 1);
	{
		ddict	   *h = atomic_load(&cb_handle);

		if (h)
			atomic_store(&s->busy_rc, ddict_sync(h));
	}
}

static void
test_push_latency(void **state)
{
	enum
	{
		N = 25
	};
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				s1;
	long long	lat[N],
				vis[N];
	char		expect[32];

	(void) state;
	need_redis();
	fresh_dict(admin, "r_push", "text");
	free(sqlf(admin, "INSERT INTO r_push VALUES ('k', 'start')"));
	memset(&cbs, 0, sizeof(cbs));
	cbs.main = pthread_self();
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.interval_ms = 60000;		/* no polling could explain what we see */
	o.on_change = on_change;
	o.on_change_arg = &cbs;
	d = ddict_open(test_conninfo(), "r_push", &o);
	assert_non_null(d);
	assert_int_equal(stats_of(d).redis, 1);	/* subscribed by ddict_open() */
	assert_int_equal(atomic_load(&cbs.in_other_thread), 0);	/* the load: this thread */
	assert_true(wait_published("r_push", 5000));
	sleep_ms(100);				/* the thread's catch-up sync after subscribing */
	atomic_store(&cb_handle, d);
	s0 = stats_of(d);
	pgss_reset();
	for (int i = 0; i < N; i++)
	{
		int64_t		t0;

		snprintf(expect, sizeof(expect), "v%d", i);
		t0 = mono_us();
		free(sqlf(admin, "UPDATE r_push SET value = '%s'", expect));
		if (wait_value(d, "k", expect, 5000) < 0)
			fail_msg("push: commit %d not seen within 5 s", i);
		/* from sending the UPDATE to visible in the cache (us) */
		lat[i] = mono_us() - t0;
		/* from the commit (the version is its time in us) to visible */
		vis[i] = wall_us() - ddict_version(d);
	}
	s1 = stats_of(d);
	atomic_store(&cb_handle, (ddict *) NULL);
	/* one delta per commit, nothing polled; the callback ran in the push thread */
	assert_true(s1.pushes - s0.pushes >= N);
	assert_int_equal(s1.checks - s0.checks, N);
	assert_int_equal(s1.deltas - s0.deltas, N);
	assert_int_equal(pgss_changes_calls(), N);
	assert_int_equal(atomic_load(&cbs.in_other_thread), N);
	assert_int_equal(atomic_load(&cbs.busy_rc), DDICT_EBUSY);
	assert_int_equal(s1.redis, 1);
	assert_int_equal(s1.redis_errors, s0.redis_errors);
	qsort(lat, N, sizeof(lat[0]), cmp_ll);
	qsort(vis, N, sizeof(vis[0]), cmp_ll);
	print_message("# push: %d commits; UPDATE sent -> visible: median %.2f ms, max %.2f ms;"
				  " commit -> visible: median %.2f ms, max %.2f ms\n",
				  N, lat[N / 2] / 1000.0, lat[N - 1] / 1000.0, vis[N / 2] / 1000.0,
				  vis[N - 1] / 1000.0);

	/* Reads never touch the network in push mode. */
	s0 = stats_of(d);
	for (int i = 0; i < 100; i++)
		assert_value(d, "k", expect);
	s1 = stats_of(d);
	assert_int_equal(s1.checks, s0.checks);
	assert_int_equal(s1.redis_checks, s0.redis_checks);
	ddict_close(d);
}

/*
 * Names with ':' or '.' (src/common/redis_key.h): the server publishes under
 * the escaped key and the client subscribes to that same key, so a push
 * dict named "r:colon" or "r.dot" follows its commits through Redis (no
 * polling: interval 60 s), and "r:colon" does not take the stream key of a
 * dict "r" (its own key is ...public.r\:colon).
 */
static void
test_push_escaped_names(void **state)
{
	static const char *const names[] = {"\"r:colon\"", "\"r.dot\""};
	static const char *const keys[] = {"public.r\\:colon", "public.r\\.dot"};

	(void) state;
	need_redis();
	for (int i = 0; i < 2; i++)
	{
		ddict	   *d;
		char		key[256],
					expect[32];
		char	   *got;

		fresh_dict(admin, names[i], "text");
		free(sqlf(admin, "SELECT ddict_set('%s', 'k', 'v0')", names[i]));
		d = open_redis(names[i], DDICT_PUSH, 60000, rurl);
		assert_int_equal(stats_of(d).redis, 1);	/* subscribed */
		snprintf(key, sizeof(key), "ddict:%s:%s", dbname, keys[i]);
		for (int64_t until = mono_ms() + 5000; mono_ms() < until; sleep_ms(10))
		{
			got = redis_get(key);
			if (got && atoll(got) == sql_ll(admin, "SELECT ddict_last_updated('%s')", names[i]))
			{
				free(got);
				break;
			}
			free(got);
		}
		got = redis_get(key);
		assert_non_null(got);
		assert_true(atoll(got) == sql_ll(admin, "SELECT ddict_last_updated('%s')", names[i]));
		free(got);
		sleep_ms(100);			/* the catch-up sync after subscribing */
		for (int j = 1; j <= 3; j++)
		{
			snprintf(expect, sizeof(expect), "v%d", j);
			free(sqlf(admin, "SELECT ddict_set('%s', 'k', '%s')", names[i], expect));
			if (wait_value(d, "k", expect, 5000) < 0)
				fail_msg("%s: commit %d not pushed within 5 s", names[i], j);
		}
		assert_true(stats_of(d).pushes >= 3);
		ddict_close(d);
	}
}

static void
test_push_redis_restart(void **state)
{
	ddict_options o;
	ddict	   *d;
	ddict_stats st,
				s0;
	int64_t		ms;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_restart", "text");
	free(sqlf(admin, "INSERT INTO r_restart VALUES ('k', 'start')"));
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.interval_ms = 100;		/* the polling fallback */
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	d = ddict_open(test_conninfo(), "r_restart", &o);
	assert_non_null(d);
	assert_int_equal(stats_of(d).redis, 1);
	free(sqlf(admin, "UPDATE r_restart SET value = 'pushed'"));
	assert_true(wait_value(d, "k", "pushed", 5000) >= 0);

	/* Redis goes away: the handle notices, polls PostgreSQL, converges. */
	redis_stop();
	assert_true(wait_stat_redis(d, 0, 5000));
	s0 = stats_of(d);
	free(sqlf(admin, "UPDATE r_restart SET value = 'while down'"));
	ms = wait_value(d, "k", "while down", 5000);
	assert_true(ms >= 0);
	st = stats_of(d);
	assert_true(st.checks > s0.checks);
	assert_true(st.redis_errors >= 1);
	assert_int_equal(ddict_is_stale(d), 0);
	print_message("# push, Redis down: seen by polling after %lld ms\n", (long long) ms);

	/* Back, empty: resubscribed (and caught up) by itself; pushes again. */
	redis_start();
	assert_true(wait_stat_redis(d, 1, 5000));
	sleep_ms(300);				/* its catch-up sync is done */
	s0 = stats_of(d);
	free(sqlf(admin, "UPDATE r_restart SET value = 'after restart'"));
	ms = wait_value(d, "k", "after restart", 5000);
	assert_true(ms >= 0);
	print_message("# push, Redis restarted: seen after %lld ms\n", (long long) ms);
	assert_true(wait_published("r_restart", 5000));
	/* and it was pushed, not polled: polling has stopped */
	sleep_ms(300);
	st = stats_of(d);
	assert_true(st.pushes > s0.pushes);
	assert_true(st.checks - s0.checks <= 1);
	assert_int_equal(st.redis, 1);
	ddict_close(d);
}

/* The server restarts under a push handle: the next pushed change is
 * fetched over a new connection, in full (new epoch). */
static void
test_push_server_restart(void **state)
{
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				st;
	int64_t		ms;

	(void) state;
	need_redis();
	if (!getenv("DDICT_TEST_RESTART_CMD"))
		skip();
	fresh_dict(admin, "r_pgrestart", "text");
	free(sqlf(admin, "INSERT INTO r_pgrestart VALUES ('k', 'before')"));
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.interval_ms = 60000;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	d = ddict_open(test_conninfo(), "r_pgrestart", &o);
	assert_non_null(d);
	s0 = stats_of(d);

	PQfinish(admin);
	admin = NULL;
	assert_int_equal(run_env_cmd("DDICT_TEST_RESTART_CMD"), 0);
	admin = admin_connect();
	assert_non_null(admin);
	free(sqlf(admin, "UPDATE r_pgrestart SET value = 'after'"));
	ms = wait_value(d, "k", "after", 10000);
	assert_true(ms >= 0);
	st = stats_of(d);
	/* through a transaction pooler the client's connection outlives the
	 * server's (DDICT_TEST_POOLED): nothing to reconnect */
	if (getenv("DDICT_TEST_POOLED") == NULL)
		assert_true(st.reconnects > s0.reconnects);
	assert_true(st.reloads > s0.reloads);	/* new epoch: in full */
	assert_true(st.pushes > s0.pushes);
	assert_int_equal(ddict_is_stale(d), 0);
	print_message("# push, server restarted: next commit seen after %lld ms\n", (long long) ms);
	ddict_close(d);
}

static void
test_push_without_redis(void **state)
{
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				s1;
	int64_t		ms;

	(void) state;
	fresh_dict(admin, "r_poll", "text");
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.interval_ms = 50;
	d = ddict_open(test_conninfo(), "r_poll", &o);
	assert_non_null(d);
	free(sqlf(admin, "INSERT INTO r_poll VALUES ('k', 'v')"));
	ms = wait_value(d, "k", "v", 5000);
	assert_true(ms >= 0);
	s0 = stats_of(d);
	sleep_ms(500);
	s1 = stats_of(d);
	/* about one poll per 50 ms */
	assert_true(s1.checks - s0.checks >= 4);
	assert_true(s1.checks - s0.checks <= 12);
	assert_int_equal(s1.redis, 0);
	assert_int_equal(s1.pushes, 0);
	assert_int_equal(s1.redis_checks, 0);
	ddict_close(d);
}

/* ddict_close() stops the thread at once, whatever it is doing. */
static void
test_push_close_prompt(void **state)
{
	ddict_options o;
	ddict	   *d;
	PGconn	   *locker;
	int64_t		t0;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_close", "text");
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.timeout_ms = 20000;

	/* idle, subscribed */
	d = ddict_open(test_conninfo(), "r_close", &o);
	assert_non_null(d);
	sleep_ms(50);
	t0 = mono_ms();
	ddict_close(d);
	assert_true(mono_ms() - t0 < 500);

	/* in the middle of a sync that waits for a lock (timeout_ms is 20 s) */
	d = ddict_open(test_conninfo(), "r_close", &o);
	assert_non_null(d);
	locker = admin_connect();
	assert_non_null(locker);
	free(sqlf(admin, "INSERT INTO r_close VALUES ('k', 'v')"));
	free(sqlf(locker, "BEGIN; LOCK TABLE r_close IN ACCESS EXCLUSIVE MODE"));
	sleep_ms(300);				/* pushed; the thread's delta now waits for the lock */
	t0 = mono_ms();
	ddict_close(d);
	assert_true(mono_ms() - t0 < 1000);
	free(sqlf(locker, "COMMIT"));
	PQfinish(locker);

	/* Redis unreachable: between attempts, or in one */
	redis_stop();
	d = ddict_open(test_conninfo(), "r_close", &o);
	assert_non_null(d);
	assert_int_equal(stats_of(d).redis, 0);
	sleep_ms(100);
	t0 = mono_ms();
	ddict_close(d);
	assert_true(mono_ms() - t0 < 500);
	redis_start();

	/* autosync: the thread that reconnects Redis */
	d = open_redis("r_close", DDICT_AUTOSYNC, 0, rurl);
	t0 = mono_ms();
	ddict_close(d);
	assert_true(mono_ms() - t0 < 500);
}

/* ---- threads: readers on push and autosync+Redis handles while commits land ---- */

static void
test_threads(void **state)
{
	enum
	{
		NT = 4
	};
	pthread_t	th[NT];
	reader_arg	args[NT];
	atomic_int	stop = 0;
	ddict	   *push,
			   *autos;
	ddict_options o;
	char		last[32];
	long		total = 0;

	(void) state;
	need_redis();
	fresh_dict(admin, "r_thr", "text");
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = rurl;
	o.interval_ms = 200;
	push = ddict_open(test_conninfo(), "r_thr", &o);
	assert_non_null(push);
	autos = open_redis("r_thr", DDICT_AUTOSYNC, 0, rurl);
	assert_true(wait_published("r_thr", 5000));	/* the server publishes again */
	for (int i = 0; i < NT; i++)
	{
		args[i] = (reader_arg) {.d = i % 2 ? autos : push, .stop = &stop};
		pthread_create(&th[i], NULL, reader_thread, &args[i]);
	}
	for (int i = 0; i < 150; i++)
	{
		if (i % 50 == 49)
			free(sqlf(admin, "TRUNCATE r_thr"));
		else
			free(sqlf(admin, "INSERT INTO r_thr VALUES ('g:a', '%d'), ('g:b', '%d'), ('n%d', 'x')"
					  " ON CONFLICT (key) DO UPDATE SET value = excluded.value", i, i, i));
	}
	free(sqlf(admin, "INSERT INTO r_thr VALUES ('g:a', 'end'), ('g:b', 'end')"
			  " ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
	snprintf(last, sizeof(last), "end");
	assert_true(wait_value(push, "g:a", last, 5000) >= 0);
	assert_true(wait_value(autos, "g:a", last, 5000) >= 0);
	atomic_store(&stop, 1);
	for (int i = 0; i < NT; i++)
	{
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].bad, 0);
		total += args[i].reads;
	}
	assert_int_equal(ddict_len(push), sql_ll(admin, "SELECT count(*) FROM r_thr"));
	assert_int_equal(ddict_len(autos), sql_ll(admin, "SELECT count(*) FROM r_thr"));
	print_message("# %ld reads by %d threads; push handle: %llu pushes, %llu checks\n",
				  total, NT, (unsigned long long) stats_of(push).pushes,
				  (unsigned long long) stats_of(push).checks);
	ddict_close(push);
	ddict_close(autos);
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_autosync_unchanged_no_pg),
		cmocka_unit_test(test_autosync_sees_commit),
		cmocka_unit_test(test_interval_redis),
		cmocka_unit_test(test_autosync_redis_down),
		cmocka_unit_test(test_redis_urls),
		cmocka_unit_test(test_redis_prefix),
		cmocka_unit_test(test_redis_other_modes),
		cmocka_unit_test(test_push_latency),
		cmocka_unit_test(test_push_escaped_names),
		cmocka_unit_test(test_push_redis_restart),
		cmocka_unit_test(test_push_server_restart),
		cmocka_unit_test(test_push_without_redis),
		cmocka_unit_test(test_push_close_prompt),
		cmocka_unit_test(test_threads),
	};


	/* Redis as the version source: the versions page (which answers
	 * autosync checks before Redis on the server's host) is test_vpage's */
	setenv("DDICT_VERSIONS_PAGE", "off", 1);
	return _cmocka_run_group_tests("redis", tests, select_tests(tests, sizeof(tests) / sizeof(tests[0])),
								   group_setup, group_teardown);
}
