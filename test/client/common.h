/*
 * common.h — helpers shared by the libddict tests (cmocka).
 *
 * The tests run against a real server started by test/client/run.sh, which
 * exports DDICT_TEST_CONNINFO (a database with the ddict and
 * pg_stat_statements extensions) and, for restart scenarios,
 * DDICT_TEST_STOP_CMD / DDICT_TEST_START_CMD / DDICT_TEST_RESTART_CMD.
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

static inline PGconn *
admin_connect(void)
{
	PGconn	   *c = PQconnectdb(test_conninfo());

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
