/*
 * test_shared.c — one ddict_client for many dicts (libddict 1.2).
 *
 *   fifty dicts        one PostgreSQL connection (pg_stat_activity), checks
 *                      of all in one ddict_client_sync()
 *   packed probe       (1.3) the check of 40 dicts, names quoted, beyond
 *                      ASCII, qualified, unnamed and prepared, sees exactly
 *                      the changed ones; a client whose encoding is not
 *                      the server's asks ddict_unchanged_many() instead
 *   busy connection    a read of dict A while dict B's check holds the
 *                      connection does not wait, and the client's thread
 *                      checks A right after
 *   long full load     while a big dict's full load is stuck on the server,
 *                      another dict of the client still sees commits
 *   threads            threads writing and reading their own dicts of one
 *                      client concurrently: every read-your-write holds
 *   close orders       client before or after its dicts
 *   open with Redis    every dict of a client with a redis_url opens at once
 *                      (autosync, interval; after a published push dict)
 *   pool               200 processes x 5 dicts through pgbouncer
 *                      (transaction pooling, pool of 10) all converge after a
 *                      burst of writes (DDICT_TEST_POOL_CONNINFO; skipped
 *                      without it)
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "common.h"


static ddict_client *
client_named(const char *app, int direct)
{
	char		ci[1024];
	ddict_client_options co;
	ddict_client *c;

	snprintf(ci, sizeof(ci), "%s application_name=%s", test_conninfo(), app);
	ddict_client_options_init(&co);
	co.direct = direct;
	c = ddict_client_open(ci, &co);
	if (c == NULL)
		fail_msg("ddict_client_open: %s", ddict_errmsg());
	return c;
}

static ddict *
open_on(ddict_client *c, const char *dict, ddict_mode mode)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = mode;
	d = ddict_open_on(c, dict, &o);
	if (d == NULL)
		fail_msg("ddict_open_on(%s): %s", dict, ddict_errmsg());
	return d;
}

/* Backends of application_name app, waiting up to 3 s for closed ones to go. */
static long long
backends(const char *app, long long want)
{
	long long	n = -1;

	for (int i = 0; i < 300; i++)
	{
		n = sql_ll(admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
		if (n == want)
			break;
		sleep_ms(10);
	}
	return n;
}

/* Calls of statements whose text contains what, in this database. */
static long long
calls_of(const char *what)
{
	return sql_ll(admin, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
				  " WHERE query LIKE '%%%s%%' AND query NOT LIKE '%%pg_stat_statements%%'"
				  " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())", what);
}

static void
test_fifty_dicts_one_connection(void **state)
{
	ddict	   *d[50];
	ddict_client *c;
	char		name[32],
				app[64];

	(void) state;
	snprintf(app, sizeof(app), "ddict_fifty_%d", (int) getpid());
	for (int i = 0; i < 50; i++)
	{
		snprintf(name, sizeof(name), "s50_%d", i);
		fresh_dict(admin, name, "text");
		free(sqlf(admin, "INSERT INTO %s VALUES ('k', 'v%d')", name, i));
	}
	c = client_named(app, 0);
	for (int i = 0; i < 50; i++)
	{
		snprintf(name, sizeof(name), "s50_%d", i);
		d[i] = open_on(c, name, i % 2 ? DDICT_AUTOSYNC : DDICT_INTERVAL);
	}
	assert_int_equal(backends(app, 1), 1);

	/* every dict sees its commit; one ddict_client_sync() covers all */
	for (int i = 0; i < 50; i++)
		free(sqlf(admin, "UPDATE s50_%d SET value = 'w%d'", i, i));
	assert_int_equal(ddict_client_sync(c), 50);
	/* nothing changed: one statement, ddict_unchanged_packed(), checks all
	 * 50 (1.3), no ddict_changes() and no BEGIN (pg_stat_statements) */
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	assert_int_equal(ddict_client_sync(c), 0);
	assert_int_equal(calls_of("ddict_changes("), 0);
	assert_int_equal(calls_of("ddict_unchanged_packed("), 1);
	assert_int_equal(sql_ll(admin, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
							" WHERE query NOT LIKE '%%pg_stat_statements%%'"
							" AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"), 1);
	for (int i = 0; i < 50; i++)
		assert_true(stats_of(d[i]).unchanged >= 1);
	for (int i = 0; i < 50; i++)
	{
		char		want[16];

		snprintf(want, sizeof(want), "w%d", i);
		assert_value(d[i], "k", want);
	}
	/* autosync reads of all 50, and still one connection */
	for (int i = 0; i < 50; i++)
		free(sqlf(admin, "UPDATE s50_%d SET value = 'x%d'", i, i));
	for (int i = 1; i < 50; i += 2)
	{
		char		want[16];

		snprintf(want, sizeof(want), "x%d", i);
		assert_value(d[i], "k", want);
	}
	assert_int_equal(backends(app, 1), 1);
	ddict_client_close(c);		/* the dicts keep it open */
	assert_int_equal(backends(app, 1), 1);
	for (int i = 0; i < 50; i++)
		ddict_close(d[i]);
	assert_int_equal(backends(app, 0), 0);
}

/* ---- the packed probe (1.3) ---- */

#define PK_N 40
/* names that are quoted, beyond ASCII (UTF-8 bytes), schema-qualified */
static const char *const pk_special[] = {"\"Pk Mixed\"", "pk_\xc3\xa9", "public.pk_q"};

static void
pk_name(int i, char *name, size_t size)
{
	if (i < 3)
		snprintf(name, size, "%s", pk_special[i]);
	else
		snprintf(name, size, "pk_%d", i);
}

/*
 * 40 dicts on one client, every third changed: one ddict_client_sync()
 * answers exactly those — its count, their new values, a ddict_changes()
 * for each of them and for no other dict, after one
 * ddict_unchanged_packed() — and the next finds nothing.
 */
static void
packed_probe(int direct)
{
	ddict	   *d[PK_N];
	ddict_stats s0[PK_N];
	ddict_client *c;
	char		name[64],
				app[64],
				want[16];
	int			changed = 0;

	snprintf(app, sizeof(app), "ddict_packed_%d_%d", direct, (int) getpid());
	for (int i = 0; i < PK_N; i++)
	{
		pk_name(i, name, sizeof(name));
		free(sqlf(admin, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (key text PRIMARY KEY, value text NOT NULL);"
				  " SELECT ddict_attach('%s'); INSERT INTO %s VALUES ('k', 'v%d')", name, name, name, name, i));
	}
	c = client_named(app, direct);
	for (int i = 0; i < PK_N; i++)
	{
		pk_name(i, name, sizeof(name));
		d[i] = open_on(c, name, DDICT_MANUAL);
	}
	assert_int_equal(ddict_client_sync(c), 0);
	for (int i = 0; i < PK_N; i += 3, changed++)
	{
		pk_name(i, name, sizeof(name));
		free(sqlf(admin, "UPDATE %s SET value = 'w%d'", name, i));
	}
	for (int i = 0; i < PK_N; i++)
		s0[i] = stats_of(d[i]);
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	assert_int_equal(ddict_client_sync(c), changed);
	assert_int_equal(calls_of("ddict_unchanged_packed("), 1);
	assert_int_equal(calls_of("ddict_unchanged_many("), 0);
	assert_int_equal(calls_of("ddict_changes("), changed);
	for (int i = 0; i < PK_N; i++)
	{
		ddict_stats s = stats_of(d[i]);

		snprintf(want, sizeof(want), "%s%d", i % 3 ? "v" : "w", i);
		assert_value(d[i], "k", want);
		assert_int_equal(s.deltas + s.reloads - s0[i].deltas - s0[i].reloads, i % 3 ? 0 : 1);
		assert_int_equal(s.unchanged - s0[i].unchanged, i % 3 ? 1 : 0);
	}
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	assert_int_equal(ddict_client_sync(c), 0);
	assert_int_equal(calls_of("ddict_unchanged_packed("), 1);
	assert_int_equal(calls_of("ddict_changes("), 0);
	for (int i = 0; i < PK_N; i++)
		ddict_close(d[i]);
	ddict_client_close(c);
	for (int i = 0; i < PK_N; i++)
	{
		pk_name(i, name, sizeof(name));
		free(sqlf(admin, "DROP TABLE %s", name));
	}
}

static void
test_packed_probe(void **state)
{
	(void) state;
	packed_probe(0);
}

static void
test_packed_probe_direct(void **state)
{
	(void) state;
	packed_probe(1);
}

/*
 * A name beyond ASCII while libpq converts between two encodings (here
 * LATIN1 on a UTF8 server): sent as bytes it would not be the name, so the
 * client asks ddict_unchanged_many() (text, converted) — the dicts are
 * still found unchanged without a ddict_changes().
 */
static void
test_packed_probe_encodings(void **state)
{
	char	   *enc = sqlf(admin, "SHOW server_encoding");
	char		ci[1024];
	ddict_client_options co;
	ddict_client *c;
	ddict	   *d[2];

	(void) state;
	if (strcmp(enc, "UTF8") != 0)
	{
		free(enc);
		skip();
	}
	free(enc);
	free(sqlf(admin, "DROP TABLE IF EXISTS pk_\xc3\xa9, pk_3; SELECT ddict_create('pk_\xc3\xa9');"
			  " SELECT ddict_create('pk_3')"));
	snprintf(ci, sizeof(ci), "%s client_encoding=LATIN1", test_conninfo());
	ddict_client_options_init(&co);
	c = ddict_client_open(ci, &co);
	assert_non_null(c);
	d[0] = open_on(c, "pk_\xe9", DDICT_MANUAL);	/* LATIN1 */
	d[1] = open_on(c, "pk_3", DDICT_MANUAL);
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	assert_int_equal(ddict_client_sync(c), 0);
	assert_int_equal(calls_of("ddict_unchanged_many("), 1);
	assert_int_equal(calls_of("ddict_unchanged_packed("), 0);
	assert_int_equal(calls_of("ddict_changes("), 0);
	free(sqlf(admin, "INSERT INTO pk_\xc3\xa9 VALUES ('k', 'v')"));
	assert_int_equal(ddict_client_sync(c), 1);
	assert_value(d[0], "k", "v");
	ddict_close(d[0]);
	ddict_close(d[1]);
	ddict_client_close(c);
	free(sqlf(admin, "DROP TABLE pk_\xc3\xa9, pk_3"));
}

/* ---- a busy connection ---- */

typedef struct sync_arg
{
	ddict	   *d;
	int			rc;
	atomic_int	done;
} sync_arg;

static void *
sync_thread(void *p)
{
	sync_arg   *a = p;

	a->rc = ddict_sync(a->d);
	atomic_store(&a->done, 1);
	return NULL;
}

/* Hold an ACCESS EXCLUSIVE lock on table in an open transaction of its own
 * connection: ddict_changes() of that dict waits on the server. */
static PGconn *
lock_table(const char *table)
{
	PGconn	   *l = PQconnectdb(admin_conninfo());

	assert_int_equal(PQstatus(l), CONNECTION_OK);
	free(sqlf(l, "BEGIN"));
	free(sqlf(l, "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", table));
	return l;
}

static void
test_busy_connection(void **state)
{
	ddict_client *c;
	ddict	   *a,
			   *b;
	sync_arg	arg = {0};
	pthread_t	t;
	PGconn	   *locker;
	int64_t		t0,
				v0,
				slowest = 0;
	ddict_stats s0;

	(void) state;
	/* the round-trip check: with the versions page, a read of a changed
	 * dict waits for its check (README "The versions page") */
	setenv("DDICT_VERSIONS_PAGE", "off", 1);
	c = client_named("ddict_busy", 0);
	unsetenv("DDICT_VERSIONS_PAGE");
	fresh_dict(admin, "busy_a", "text");
	fresh_dict(admin, "busy_b", "text");
	a = open_on(c, "busy_a", DDICT_AUTOSYNC);
	b = open_on(c, "busy_b", DDICT_AUTOSYNC);
	v0 = ddict_version(a);
	/* a change to fetch: the delta reads the table, which is locked */
	free(sqlf(admin, "INSERT INTO busy_b VALUES ('x', 'y')"));
	locker = lock_table("busy_b");
	arg.d = b;
	assert_int_equal(pthread_create(&t, NULL, sync_thread, &arg), 0);
	sleep_ms(200);				/* b's check now holds the connection */
	assert_int_equal(atomic_load(&arg.done), 0);

	free(sqlf(admin, "INSERT INTO busy_a VALUES ('k', 'new')"));
	s0 = stats_of(a);
	for (int i = 0; i < 20; i++)
	{
		int64_t		dt;

		t0 = mono_ms();
		assert_value(a, "k", NULL);	/* served from the snapshot, not waited */
		dt = mono_ms() - t0;
		slowest = dt > slowest ? dt : slowest;
	}
	assert_true(slowest < 50);
	assert_true(stats_of(a).coalesced >= s0.coalesced + 20);

	free(sqlf(locker, "COMMIT"));
	PQfinish(locker);
	pthread_join(t, NULL);
	assert_int_equal(arg.rc, 1);
	/* the client's thread checks a without another read of it (the
	 * counter moves a moment before the snapshot is published: wait for
	 * the snapshot's version, which ddict_version() reads without a check) */
	t0 = mono_ms();
	while (ddict_version(a) == v0 && mono_ms() - t0 < 3000)
		sleep_ms(5);
	assert_true(ddict_version(a) != v0);
	assert_true(stats_of(a).checks > s0.checks);
	{
		ddict_snapshot *s = ddict_pin(a);
		const char *v;
		size_t		n;

		assert_int_equal(ddict_snapshot_get(s, "k", 1, &v, &n), DDICT_OK);
		ddict_unpin(s);
	}
	ddict_close(a);
	ddict_close(b);
	ddict_client_close(c);
}

/* ---- a long full load ---- */

typedef struct open_arg
{
	ddict_client *c;
	ddict	   *d;
	atomic_int	done;
} open_arg;

static void *
open_thread(void *p)
{
	open_arg   *a = p;
	ddict_options o;

	ddict_options_init(&o);
	o.timeout_ms = 10000;
	a->d = ddict_open_on(a->c, "big_dict", &o);
	atomic_store(&a->done, 1);
	return NULL;
}

static void
test_long_full_load(void **state)
{
	ddict_client *c = client_named("ddict_longload", 0);
	ddict	   *small;
	open_arg	arg = {0};
	pthread_t	t;
	PGconn	   *locker;
	char		want[32];

	(void) state;
	fresh_dict(admin, "small_dict", "text");
	fresh_dict(admin, "big_dict", "text");
	free(sqlf(admin, "INSERT INTO big_dict SELECT 'k' || g, 'v' || g FROM generate_series(1, 20000) g"));
	small = open_on(c, "small_dict", DDICT_AUTOSYNC);
	locker = lock_table("big_dict");
	arg.c = c;
	assert_int_equal(pthread_create(&t, NULL, open_thread, &arg), 0);
	sleep_ms(200);				/* big_dict's full load waits on the server */

	/* small_dict's checks go on meanwhile: every commit is seen at once */
	for (int i = 0; i < 5; i++)
	{
		snprintf(want, sizeof(want), "during-%d", i);
		free(sqlf(admin, "SELECT ddict_set('small_dict', 'k', '%s')", want));
		assert_value(small, "k", want);
	}
	assert_int_equal(atomic_load(&arg.done), 0);	/* still loading */
	free(sqlf(locker, "COMMIT"));
	PQfinish(locker);
	pthread_join(t, NULL);
	if (arg.d == NULL)
		fail_msg("ddict_open_on(big_dict): %s", ddict_errmsg());
	assert_int_equal(ddict_len(arg.d), 20000);
	ddict_close(arg.d);
	ddict_close(small);
	ddict_client_close(c);
}

/* ---- threads on different dicts of one client ---- */

typedef struct writer_arg
{
	ddict	   *d;
	int			id;
	int			bad;
} writer_arg;

static void *
writer_thread(void *p)
{
	writer_arg *a = p;

	for (int i = 0; i < 150; i++)
	{
		char		k[32],
					v[32],
				   *got = NULL;
		size_t		n;

		snprintf(k, sizeof(k), "k%d", i % 10);
		snprintf(v, sizeof(v), "t%d-%d", a->id, i);
		if (ddict_set(a->d, k, DDICT_NTS, v, DDICT_NTS) != DDICT_OK)
			a->bad++;
		/* read-your-write: the write's delta is applied before it returns */
		if (ddict_get(a->d, k, DDICT_NTS, &got, &n) != DDICT_OK || strcmp(got, v) != 0)
			a->bad++;
		ddict_free(got);
		if (i % 7 == 0 && ddict_sync(a->d) < 0)
			a->bad++;
	}
	return NULL;
}

static void
test_threads_on_dicts(void **state)
{
	ddict_client *c = client_named("ddict_threads", getenv("DDICT_TEST_DIRECT") != NULL);
	writer_arg	w[4];
	pthread_t	t[4];
	ddict	   *d[4];
	char		name[32];

	(void) state;
	for (int i = 0; i < 4; i++)
	{
		snprintf(name, sizeof(name), "thr_%d", i);
		fresh_dict(admin, name, "text");
		d[i] = open_on(c, name, i % 2 ? DDICT_AUTOSYNC : DDICT_INTERVAL);
		w[i] = (writer_arg) {.d = d[i], .id = i};
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer_thread, &w[i]), 0);
	for (int i = 0; i < 4; i++)
	{
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].bad, 0);
		snprintf(name, sizeof(name), "thr_%d", i);
		assert_int_equal(ddict_len(d[i]), sql_ll(admin, "SELECT count(*) FROM %s", name));
	}
	ddict_client_close(c);
	for (int i = 0; i < 4; i++)
		ddict_close(d[i]);
}

static void
test_close_orders(void **state)
{
	ddict_client *c;
	ddict	   *a;
	ddict_client_options co;

	(void) state;
	fresh_dict(admin, "ord", "text");
	c = client_named("ddict_order", 0);
	a = open_on(c, "ord", DDICT_MANUAL);
	ddict_close(a);
	a = open_on(c, "ord", DDICT_PUSH);	/* the thread starts, no Redis: polls */
	ddict_client_close(c);
	free(sqlf(admin, "INSERT INTO ord VALUES ('k', 'v')"));
	ddict_close(a);
	ddict_client_close(NULL);
	assert_int_equal(ddict_client_sync(NULL), DDICT_EINVAL);
	assert_null(ddict_open_on(NULL, "ord", NULL));
	/* bad options: clear errors, nothing opened */
	ddict_client_options_init(&co);
	co.redis_url = "redis://h:99999";
	assert_null(ddict_client_open(test_conninfo(), &co));
	assert_non_null(strstr(ddict_errmsg(), "invalid port"));
	co.redis_url = NULL;
	co.size = 3;
	assert_null(ddict_client_open(test_conninfo(), &co));
	assert_non_null(strstr(ddict_errmsg(), "ddict_client_options_init"));
	/* a dict that does not exist: the client stays usable */
	c = client_named("ddict_order", 0);
	assert_null(ddict_open_on(c, "no_such_dict_here", NULL));
	a = open_on(c, "ord", DDICT_AUTOSYNC);
	assert_value(a, "k", "v");
	ddict_close(a);
	ddict_client_close(c);
}

/*
 * Opening dicts on a client with a redis_url: each open waits for the
 * client's first Redis answer that covers the dict — which, for autosync and
 * interval dicts opened after the GET connection was up, never came: each
 * took connect_timeout_ms + timeout_ms + 500 ms (10.5 s; attack round 5,
 * finding 26).  Also after a push dict whose changes are published (the
 * subscription carries its stream's channel only).  Every open < 2 s.
 */
static void
open_timed(ddict_client *c, const char *dict, ddict_mode mode, ddict **out)
{
	int64_t		t0 = mono_ms(),
				ms;

	*out = open_on(c, dict, mode);
	ms = mono_ms() - t0;
	print_message("# open %s (mode %d): %lld ms\n", dict, (int) mode, (long long) ms);
	if (ms >= 2000)
		fail_msg("opening %s took %lld ms", dict, (long long) ms);
}

static void
test_open_with_redis(void **state)
{
	const char *rurl = getenv("DDICT_TEST_REDIS_URL");
	ddict_client_options co;
	ddict_client *c;
	ddict	   *d[5];
	char		name[32];

	(void) state;
	if (rurl == NULL)
		skip();
	for (int i = 0; i < 5; i++)
	{
		snprintf(name, sizeof(name), "sr_open%d", i);
		fresh_dict(admin, name, "text");
	}
	free(sqlf(admin, "SELECT ddict_publish_changes('sr_open4')"));
	ddict_client_options_init(&co);
	co.redis_url = rurl;
	for (int round = 0; round < 2; round++)
	{
		c = ddict_client_open(test_conninfo(), &co);
		assert_non_null(c);
		/* round 0: autosync and interval; round 1: a published push dict
		 * first, then autosync and interval */
		if (round == 1)
			open_timed(c, "sr_open4", DDICT_PUSH, &d[4]);
		for (int i = 0; i < 4; i++)
		{
			snprintf(name, sizeof(name), "sr_open%d", i);
			open_timed(c, name, i % 2 ? DDICT_INTERVAL : DDICT_AUTOSYNC, &d[i]);
		}
		free(sqlf(admin, "INSERT INTO sr_open3 VALUES ('k', 'v%d')", round));
		ddict_sync(d[3]);
		assert_value(d[3], "k", round ? "v1" : "v0");
		free(sqlf(admin, "DELETE FROM sr_open3"));
		for (int i = 0; i < 4 + round; i++)
			ddict_close(d[i]);
		ddict_client_close(c);
	}
}

/* ---- 200 processes x 5 dicts through a transaction pooler ---- */

#define POOL_PROCS 200
#define POOL_DICTS 5
#define POOL_KEYS 20
#define POOL_ROUNDS 3

static int
pool_child(const char *conninfo, int ready_fd)
{
	ddict_client_options co;
	ddict_client *c;
	ddict	   *d[POOL_DICTS];
	char		name[32],
				want[32];
	int64_t		t0;

	ddict_client_options_init(&co);
	co.timeout_ms = 20000;
	co.connect_timeout_ms = 20000;
	c = ddict_client_open(conninfo, &co);
	for (int i = 0; i < POOL_DICTS; i++)
	{
		ddict_options o;

		ddict_options_init(&o);
		o.mode = DDICT_INTERVAL;
		o.interval_ms = 300;
		o.timeout_ms = 20000;
		snprintf(name, sizeof(name), "pool_%d", i);
		if (c == NULL || (d[i] = ddict_open_on(c, name, &o)) == NULL)
		{
			fprintf(stderr, "# child %d: open %s: %s\n", (int) getpid(), name, ddict_errmsg());
			return 2;
		}
	}
	ddict_client_close(c);
	if (write(ready_fd, "r", 1) != 1)
		return 3;
	close(ready_fd);
	snprintf(want, sizeof(want), "v%d-%d", POOL_KEYS - 1, POOL_ROUNDS);
	t0 = mono_ms();
	while (mono_ms() - t0 < 90000)
	{
		int			converged = 0;

		for (int i = 0; i < POOL_DICTS; i++)
		{
			char	   *done = NULL,
					   *last = NULL;
			size_t		n;

			if (ddict_get(d[i], "done", 4, &done, &n) == DDICT_OK &&
				ddict_get(d[i], "k19", 3, &last, &n) == DDICT_OK &&
				strcmp(done, "1") == 0 && strcmp(last, want) == 0 &&
				ddict_len(d[i]) == POOL_KEYS + 1)
				converged++;
			ddict_free(done);
			ddict_free(last);
		}
		if (converged == POOL_DICTS)
		{
			for (int i = 0; i < POOL_DICTS; i++)
				ddict_close(d[i]);
			return 0;
		}
		sleep_ms(50);
	}
	return 1;
}

/* Server connections pgbouncer holds for the pool's database. */
static long long
pool_servers(PGconn *pgb)
{
	PGresult   *r = PQexec(pgb, "SHOW SERVERS");
	long long	n = 0;
	int			db = PQfnumber(r, "database");

	for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
		if (strcmp(PQgetvalue(r, i, db), "ddict_p10") == 0)
			n++;
	PQclear(r);
	return n;
}

static void
test_pool_200_processes(void **state)
{
	const char *pool = getenv("DDICT_TEST_POOL_CONNINFO");
	const char *pgb_admin = getenv("DDICT_TEST_PGB_ADMIN");
	pid_t		pids[POOL_PROCS];
	int			fds[2],
				ready = 0,
				failed = 0;
	long long	max_servers = 0;
	PGconn	   *pgb;
	char		c;
	int64_t		t0 = mono_ms();

	(void) state;
	if (pool == NULL || pgb_admin == NULL)
		skip();
	for (int i = 0; i < POOL_DICTS; i++)
	{
		char		name[32];

		snprintf(name, sizeof(name), "pool_%d", i);
		fresh_dict(admin, name, "text");
		free(sqlf(admin, "INSERT INTO %s SELECT 'k' || g, 'v' || g || '-0' FROM generate_series(0, %d) g",
				  name, POOL_KEYS - 1));
	}
	pgb = PQconnectdb(pgb_admin);
	assert_int_equal(PQstatus(pgb), CONNECTION_OK);
	assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	for (int i = 0; i < POOL_PROCS; i++)
	{
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
		{
			close(fds[0]);
			_exit(pool_child(pool, fds[1]));
		}
	}
	close(fds[1]);
	while (ready < POOL_PROCS && read(fds[0], &c, 1) == 1)
	{
		ready++;
		if (ready % 20 == 0)
		{
			long long	n = pool_servers(pgb);

			max_servers = n > max_servers ? n : max_servers;
		}
	}
	close(fds[0]);
	print_message("# %d processes x %d dicts open through pgbouncer after %lld ms\n",
				  ready, POOL_DICTS, (long long) (mono_ms() - t0));

	/* the burst: every key of every dict, POOL_ROUNDS times, then done */
	for (int r = 1; r <= POOL_ROUNDS; r++)
		for (int i = 0; i < POOL_DICTS; i++)
			free(sqlf(admin, "SELECT ddict_set('pool_%d', 'k' || g, 'v' || g || '-%d') "
					  "FROM generate_series(0, %d) g", i, r, POOL_KEYS - 1));
	for (int i = 0; i < POOL_DICTS; i++)
		free(sqlf(admin, "SELECT ddict_set('pool_%d', 'done', '1')", i));
	for (int i = 0; i < POOL_PROCS; i++)
	{
		int			st;
		long long	n = pool_servers(pgb);

		max_servers = n > max_servers ? n : max_servers;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	PQfinish(pgb);
	print_message("# all converged after %lld ms; pgbouncer held at most %lld server connections\n",
				  (long long) (mono_ms() - t0), max_servers);
	assert_int_equal(ready, POOL_PROCS);
	assert_int_equal(failed, 0);
	assert_true(max_servers <= 10);
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifty_dicts_one_connection),
		cmocka_unit_test(test_packed_probe),
		cmocka_unit_test(test_packed_probe_direct),
		cmocka_unit_test(test_packed_probe_encodings),
		cmocka_unit_test(test_busy_connection),
		cmocka_unit_test(test_long_full_load),
		cmocka_unit_test(test_threads_on_dicts),
		cmocka_unit_test(test_close_orders),
		cmocka_unit_test(test_open_with_redis),
		cmocka_unit_test(test_pool_200_processes),
	};

	signal(SIGPIPE, SIG_IGN);
	return _cmocka_run_group_tests("shared", tests, select_tests(tests, sizeof(tests) / sizeof(tests[0])),
								   admin_setup, admin_teardown);
}
