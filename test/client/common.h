/*
 * common.h — helpers shared by the libddict tests (cmocka).
 *
 * The tests run against a real server started by test/client/run.sh, which
 * exports DDICT_TEST_CONNINFO (a database with the ddict and
 * pg_stat_statements extensions) and, for restart scenarios,
 * DDICT_TEST_STOP_CMD / DDICT_TEST_START_CMD / DDICT_TEST_RESTART_CMD.
 *
 * Shared-client runs: with DDICT_TEST_SHARED=1, ddict_open() / ddict_close()
 * of the tests open their dicts on one ddict_client per set of
 * connection options (so every test also runs on a client that serves
 * several dicts), with DDICT_TEST_DIRECT=1 the clients prepare their check.
 * DDICT_TEST_CONNINFO may then point to pgbouncer; DDICT_TEST_ADMIN_CONNINFO
 * (default: the same) is what the tests' own SQL uses.  DDICT_TEST_ONLY
 * (names, space-separated) selects tests.
 */
#ifndef DDICT_TEST_COMMON_H
#define DDICT_TEST_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "libddict.h"

static inline const char *
test_conninfo(void)
{
	const char *c = getenv("DDICT_TEST_CONNINFO");

	return c ? c : "";
}

static inline const char *
admin_conninfo(void)
{
	const char *c = getenv("DDICT_TEST_ADMIN_CONNINFO");

	return c ? c : test_conninfo();
}

/* DDICT_TEST_ONLY="name name ...": run only those tests; returns how many
 * of tests[] are kept (compacted in place). */
static inline size_t
select_tests(struct CMUnitTest *tests, size_t n)
{
	const char *only = getenv("DDICT_TEST_ONLY");
	size_t		k = 0;

	if (only == NULL || *only == '\0')
		return n;
	for (size_t i = 0; i < n; i++)
	{
		size_t		len = strlen(tests[i].name);
		const char *p = only;

		while ((p = strstr(p, tests[i].name)) != NULL)
		{
			if ((p == only || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			{
				tests[k++] = tests[i];
				break;
			}
			p += len;
		}
	}
	return k;
}

/* ---- DDICT_TEST_SHARED: the tests' ddict_open() on shared clients ---- */

#include <pthread.h>

typedef struct shared_client
{
	char		key[2048];
	ddict_client *client;
	int			open;			/* handles of the tests on it */
} shared_client;

static shared_client shared_clients[32];
static struct
{
	ddict	   *d;
	int			slot;
} shared_handles[512];
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;

static inline ddict *
shared_open(const char *conninfo, const char *dict, const ddict_options *opts)
{
	ddict_options o;
	ddict_client_options co;
	char		key[2048];
	int			slot = -1;
	ddict	   *d;

	if (getenv("DDICT_TEST_SHARED") == NULL)
		return (ddict_open) (conninfo, dict, opts);
	if (opts)
		o = *opts;
	else
		ddict_options_init(&o);
	/* manual mode checks (but ignores) a redis_url: the private path */
	if (o.mode == DDICT_MANUAL && o.redis_url && o.redis_url[0])
		return (ddict_open) (conninfo, dict, opts);
	snprintf(key, sizeof(key), "%s|%u|%u|%u|%u|%u|%s|%s", conninfo ? conninfo : "",
			 o.timeout_ms, o.connect_timeout_ms, o.backoff_min_ms, o.backoff_max_ms,
			 o.interval_ms, o.mode == DDICT_MANUAL || !o.redis_url ? "" : o.redis_url,
			 o.redis_prefix ? o.redis_prefix : "");
	pthread_mutex_lock(&shared_mu);
	for (int i = 0; i < 32 && slot < 0; i++)
		if (shared_clients[i].client && strcmp(shared_clients[i].key, key) == 0)
			slot = i;
	for (int i = 0; i < 32 && slot < 0; i++)
		if (shared_clients[i].client == NULL)
		{
			ddict_client_options_init(&co);
			co.timeout_ms = o.timeout_ms;
			co.connect_timeout_ms = o.connect_timeout_ms;
			co.backoff_min_ms = o.backoff_min_ms;
			co.backoff_max_ms = o.backoff_max_ms;
			co.interval_ms = o.interval_ms;
			co.redis_url = o.mode == DDICT_MANUAL ? NULL : o.redis_url;
			co.redis_prefix = o.redis_prefix;
			co.direct = getenv("DDICT_TEST_DIRECT") != NULL;
			shared_clients[i].client = ddict_client_open(conninfo, &co);
			if (shared_clients[i].client == NULL)
			{
				pthread_mutex_unlock(&shared_mu);
				return NULL;
			}
			snprintf(shared_clients[i].key, sizeof(shared_clients[i].key), "%s", key);
			shared_clients[i].open = 0;
			slot = i;
		}
	if (slot < 0)
	{
		pthread_mutex_unlock(&shared_mu);
		return (ddict_open) (conninfo, dict, opts);
	}
	d = ddict_open_on(shared_clients[slot].client, dict, opts);
	if (d)
	{
		for (int i = 0; i < 512; i++)
			if (shared_handles[i].d == NULL)
			{
				shared_handles[i].d = d;
				shared_handles[i].slot = slot;
				shared_clients[slot].open++;
				break;
			}
	}
	else if (shared_clients[slot].open == 0)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", ddict_errmsg());
		ddict_client_close(shared_clients[slot].client);
		shared_clients[slot].client = NULL;
		/* keep the message for the test (closing sets none, but be safe) */
		(void) msg;
	}
	pthread_mutex_unlock(&shared_mu);
	return d;
}

static inline void
shared_close(ddict *d)
{
	ddict_client *last = NULL;

	pthread_mutex_lock(&shared_mu);
	for (int i = 0; d && i < 512; i++)
		if (shared_handles[i].d == d)
		{
			int			slot = shared_handles[i].slot;

			shared_handles[i].d = NULL;
			if (--shared_clients[slot].open == 0)
			{
				last = shared_clients[slot].client;
				shared_clients[slot].client = NULL;
			}
			break;
		}
	pthread_mutex_unlock(&shared_mu);
	(ddict_close) (d);
	ddict_client_close(last);
}

#define ddict_open(c, d, o) shared_open(c, d, o)
#define ddict_close(d) shared_close(d)

static inline PGconn *
admin_connect(void)
{
	PGconn	   *c = PQconnectdb(admin_conninfo());

	if (PQstatus(c) != CONNECTION_OK)
	{
		fprintf(stderr, "# connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	PQclear(PQexec(c, "SET client_min_messages = warning"));
	return c;
}

/* Run SQL (printf-style); fail the test on error.  Returns the first value
 * of the first row as a malloc'd string, or NULL when there is none. */
/* A test program's admin connection, opened by its group setup. */
static PGconn *admin __attribute__((unused));

static inline int
admin_setup(void **state)
{
	(void) state;
	admin = admin_connect();
	return admin ? 0 : -1;
}

static inline int
admin_teardown(void **state)
{
	(void) state;
	PQfinish(admin);
	admin = NULL;
	return 0;
}

static inline char *
sqlf(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline char *
sqlf(PGconn *c, const char *fmt, ...)
{
	char		buf[8192];
	va_list		ap;
	PGresult   *r;
	char	   *out = NULL;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	r = PQexec(c, buf);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "# SQL failed: %s\n# %s", buf, PQresultErrorMessage(r));
		PQclear(r);
		fail_msg("SQL failed: %s", buf);
	}
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		out = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return out;
}

static inline long long
sql_ll(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline long long
sql_ll(PGconn *c, const char *fmt, ...)
{
	char		buf[8192];
	va_list		ap;
	char	   *v;
	long long	n;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	v = sqlf(c, "%s", buf);
	n = v ? atoll(v) : -1;
	free(v);
	return n;
}

/* Drop and create a dict table. */
static inline void
fresh_dict(PGconn *c, const char *name, const char *type)
{
	free(sqlf(c, "DROP TABLE IF EXISTS %s", name));
	free(sqlf(c, "SELECT ddict_create('%s', '%s')", name, type));
}

static inline ddict *
open_mode(const char *dict, ddict_mode mode)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = mode;
	d = ddict_open(test_conninfo(), dict, &o);
	if (d == NULL)
		fail_msg("ddict_open(%s): %s", dict, ddict_errmsg());
	return d;
}

static inline ddict_stats
stats_of(ddict *d)
{
	ddict_stats s;

	assert_int_equal(ddict_get_stats(d, &s), DDICT_OK);
	return s;
}

/* The value of key as a malloc'd C string, or NULL when absent. */
static inline char *
get_str(ddict *d, const char *key)
{
	char	   *v = NULL;
	size_t		n;
	int			rc = ddict_get(d, key, DDICT_NTS, &v, &n);

	if (rc < 0)
		fail_msg("ddict_get(%s): %s", key, ddict_errmsg());
	return rc == DDICT_OK ? v : NULL;
}

static inline void
assert_value(ddict *d, const char *key, const char *expect)
{
	char	   *v = get_str(d, key);

	if (expect == NULL)
	{
		if (v != NULL)
			fail_msg("key %s: expected absent, got \"%s\"", key, v);
		return;
	}
	if (v == NULL)
		fail_msg("key %s: expected \"%s\", got absent", key, expect);
	assert_string_equal(v, expect);
	ddict_free(v);
}

static inline int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Run a shell command from the environment (server stop/start/restart). */
static inline int
run_env_cmd(const char *var)
{
	const char *cmd = getenv(var);

	if (cmd == NULL || cmd[0] == '\0')
		return -1;
	fflush(NULL);
	return system(cmd);
}

/*
 * A reader thread for the thread tests: the keys g:a and g:b are always
 * written together in one transaction, so one pinned version must show them
 * equal; counts reads and violations.
 */
typedef struct reader_arg
{
	ddict	   *d;
	atomic_int *stop;
	long		reads;
	long		bad;
} reader_arg;

static inline void *
reader_thread(void *p)
{
	reader_arg *a = p;

	while (!atomic_load(a->stop))
	{
		/* Group g's keys are always written together in one transaction:
		 * one pinned version must show them equal. */
		ddict_snapshot *s = ddict_pin(a->d);
		const char *v1,
				   *v2;
		size_t		n1,
					n2;
		int			r1 = ddict_snapshot_get(s, "g:a", 3, &v1, &n1),
					r2 = ddict_snapshot_get(s, "g:b", 3, &v2, &n2);

		if (r1 != r2 || (r1 == DDICT_OK && (n1 != n2 || memcmp(v1, v2, n1) != 0)))
			a->bad++;
		ddict_unpin(s);
		if (ddict_get(a->d, "g:a", 3, NULL, NULL) < 0)
			a->bad++;
		a->reads += 2;
	}
	return NULL;
}

#endif							/* DDICT_TEST_COMMON_H */
