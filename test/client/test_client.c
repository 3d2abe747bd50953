/*
 * test_client.c — libddict against a real server: dict semantics, sync
 * modes, what crosses the network (library counters and
 * pg_stat_statements), deltas, deletes, TRUNCATE, bytea, pins, callbacks,
 * borrowed connections, the snapshot file, timeouts, network loss (through
 * a proxy), version going backwards, server stop/start, threads, large dicts.
 */
#include "common.h"
#include "internal.h"
#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdatomic.h>


/* pg_stat_statements: calls and rows of ddict_changes() since the reset. */
static void
pgss_reset(void)
{
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
}

/* calls and rows of the statements whose text contains what (a LIKE
 * pattern's middle) since the reset, in this database */
static void
pgss_like(const char *what, long long *calls, long long *rows)
{
	/* The pattern is built at run time so that this query never matches itself. */
	char	   *v = sqlf(admin,
						 "SELECT coalesce(sum(calls), 0) || ' ' || coalesce(sum(rows), 0)"
						 "  FROM pg_stat_statements"
						 " WHERE query LIKE '%%' || '%s' || '%%'"
						 "   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
						 what);

	assert_non_null(v);
	assert_int_equal(sscanf(v, "%lld %lld", calls, rows), 2);
	free(v);
}

static void
pgss_changes(long long *calls, long long *rows)
{
	pgss_like("ddict_changes(", calls, rows);
}

/* Every statement since the reset, but pg_stat_statements' own. */
static long long
pgss_statements(void)
{
	return sql_ll(admin, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
				  " WHERE query NOT LIKE '%%' || 'pg_stat_statements' || '%%'"
				  "   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())");
}

/* ---- errors ---- */

static void
test_open_errors(void **state)
{
	ddict_options o;

	(void) state;
	ddict_options_init(&o);
	assert_null(ddict_open(test_conninfo(), "no_such_table", &o));
	assert_non_null(strstr(ddict_errmsg(), "does not exist"));

	free(sqlf(admin, "DROP TABLE IF EXISTS plain_table; CREATE TABLE plain_table(key text primary key, value text)"));
	assert_null(ddict_open(test_conninfo(), "plain_table", &o));
	assert_non_null(strstr(ddict_errmsg(), "not a ddict dict"));

	assert_null(ddict_open(test_conninfo(), NULL, &o));
	assert_null(ddict_open(test_conninfo(), "", &o));
	assert_null(ddict_open("host=/nonexistent-dir port=1", "settings", &o));
	assert_non_null(strstr(ddict_errmsg(), "could not connect"));
	o.mode = (ddict_mode) 42;
	assert_null(ddict_open(test_conninfo(), "plain_table", &o));
	assert_int_equal(ddict_get(NULL, "k", 1, NULL, NULL), DDICT_EINVAL);
	assert_string_equal(ddict_strerror(DDICT_NOTFOUND), "key not found");
}

/* ---- dict semantics ---- */

static void
test_semantics(void **state)
{
	ddict	   *d;
	char	   *v;
	char		buf[4];
	size_t		n;

	(void) state;
	fresh_dict(admin, "t_sem", "text");
	free(sqlf(admin, "INSERT INTO t_sem VALUES ('a', 'alpha'), ('b', 'beta')"));
	d = open_mode("t_sem", DDICT_AUTOSYNC);
	assert_int_equal(ddict_len(d), 2);
	assert_value(d, "a", "alpha");
	assert_value(d, "zzz", NULL);
	assert_int_equal(ddict_get(d, "a", DDICT_NTS, NULL, &n), DDICT_OK);
	assert_int_equal(n, 5);
	/* length-aware keys: "ab" with length 1 is "a" */
	assert_int_equal(ddict_get(d, "ab", 1, &v, &n), DDICT_OK);
	assert_string_equal(v, "alpha");
	ddict_free(v);

	assert_int_equal(ddict_get_buf(d, "a", DDICT_NTS, buf, sizeof(buf), &n), DDICT_ERANGE);
	assert_int_equal(n, 5);
	assert_int_equal(ddict_get_buf(d, "b", DDICT_NTS, buf, sizeof(buf), &n), DDICT_OK);
	assert_memory_equal(buf, "beta", 4);

	assert_int_equal(ddict_set(d, "c", DDICT_NTS, "gamma", 5), DDICT_OK);
	assert_value(d, "c", "gamma");
	assert_int_equal(ddict_set(d, "c", DDICT_NTS, "GAMMA", 5), DDICT_OK);
	assert_value(d, "c", "GAMMA");
	assert_int_equal(sql_ll(admin, "SELECT count(*) FROM t_sem WHERE key = 'c' AND value = 'GAMMA'"), 1);
	assert_int_equal(ddict_len(d), 3);

	assert_int_equal(ddict_delete(d, "c", DDICT_NTS), DDICT_OK);
	assert_int_equal(ddict_delete(d, "c", DDICT_NTS), DDICT_NOTFOUND);
	assert_value(d, "c", NULL);

	assert_int_equal(ddict_pop(d, "b", DDICT_NTS, &v, &n), DDICT_OK);
	assert_string_equal(v, "beta");
	assert_int_equal(n, 4);
	ddict_free(v);
	assert_int_equal(ddict_pop(d, "b", DDICT_NTS, &v, &n), DDICT_NOTFOUND);
	assert_null(v);
	assert_value(d, "b", NULL);

	assert_int_equal(ddict_setdefault(d, "s", DDICT_NTS, "first", 5, &v, &n), DDICT_OK);
	assert_string_equal(v, "first");
	ddict_free(v);
	assert_int_equal(ddict_setdefault(d, "s", DDICT_NTS, "second", 6, &v, NULL), DDICT_OK);
	assert_string_equal(v, "first");
	ddict_free(v);
	assert_value(d, "s", "first");

	/* Keys are text: NUL bytes are refused before reaching the server. */
	assert_int_equal(ddict_set(d, "x\0y", 3, "v", 1), DDICT_EINVAL);
	assert_int_equal(ddict_set(d, "k", DDICT_NTS, "a\0b", 3), DDICT_EINVAL);
	assert_non_null(strstr(ddict_errmsg(), "bytea"));

	/* Odd keys round-trip. */
	assert_int_equal(ddict_set(d, "tab\there \"q\" 'x' \\ ünï", DDICT_NTS, "odd", 3), DDICT_OK);
	assert_value(d, "tab\there \"q\" 'x' \\ ünï", "odd");
	assert_int_equal(ddict_set(d, "", 0, "empty key", DDICT_NTS), DDICT_OK);
	assert_value(d, "", "empty key");
	assert_int_equal(ddict_set(d, "ev", DDICT_NTS, "", 0), DDICT_OK);
	assert_value(d, "ev", "");
	assert_int_equal(ddict_len(d), sql_ll(admin, "SELECT count(*) FROM t_sem"));

	ddict_close(d);
}

static void
test_jsonb(void **state)
{
	ddict	   *d;

	(void) state;
	fresh_dict(admin, "t_json", "jsonb");
	d = open_mode("t_json", DDICT_MANUAL);
	/* The cache holds what the server stored (normalised), not our input. */
	assert_int_equal(ddict_set(d, "j", DDICT_NTS, "{\"b\":1,   \"a\":[1,2]}", DDICT_NTS), DDICT_OK);
	assert_value(d, "j", "{\"a\": [1, 2], \"b\": 1}");
	assert_int_equal(ddict_set(d, "bad", DDICT_NTS, "{not json", DDICT_NTS), DDICT_ESERVER);
	assert_non_null(strstr(ddict_errmsg(), "22P02"));
	assert_value(d, "bad", NULL);
	assert_int_equal(sql_ll(admin, "SELECT count(*) FROM t_json"), 1);
	ddict_close(d);
}

/* ---- sync modes ---- */

static void
test_autosync_next_read(void **state)
{
	ddict	   *d;
	char		key[32];

	(void) state;
	fresh_dict(admin, "t_auto", "text");
	d = open_mode("t_auto", DDICT_AUTOSYNC);
	for (int i = 0; i < 50; i++)
	{
		snprintf(key, sizeof(key), "k%d", i);
		free(sqlf(admin, "INSERT INTO t_auto VALUES ('%s', 'v%d')", key, i));
		/* the very next read sees the other connection's commit */
		{
			char		expect[32];

			snprintf(expect, sizeof(expect), "v%d", i);
			assert_value(d, key, expect);
		}
		free(sqlf(admin, "UPDATE t_auto SET value = 'u' WHERE key = '%s'", key));
		assert_value(d, key, "u");
		free(sqlf(admin, "DELETE FROM t_auto WHERE key = '%s'", key));
		assert_value(d, key, NULL);
	}
	assert_int_equal(ddict_is_stale(d), 0);
	ddict_close(d);
}

static void
test_manual_until_sync(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	long long	calls,
				rows;

	(void) state;
	fresh_dict(admin, "t_manual", "text");
	d = open_mode("t_manual", DDICT_MANUAL);
	s0 = stats_of(d);
	pgss_reset();
	free(sqlf(admin, "INSERT INTO t_manual VALUES ('k', 'v')"));
	for (int i = 0; i < 20; i++)
		assert_value(d, "k", NULL);
	assert_int_equal(ddict_len(d), 0);
	s1 = stats_of(d);
	assert_int_equal(s1.checks, s0.checks);	/* reads never touched the network */
	pgss_changes(&calls, &rows);
	assert_int_equal(calls, 0);

	assert_int_equal(ddict_sync(d), 1);
	assert_value(d, "k", "v");
	assert_int_equal(ddict_sync(d), 0);
	assert_int_equal(ddict_len(d), 1);
	ddict_close(d);
}

static void
test_unchanged_zero_rows(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	long long	calls,
				rows;
	const int	N = 100;

	(void) state;
	fresh_dict(admin, "t_zero", "text");
	free(sqlf(admin, "INSERT INTO t_zero SELECT 'k' || g, 'v' || g FROM generate_series(1, 1000) g"));
	/* the round-trip check (test_vpage covers the versions page's) */
	setenv("DDICT_VERSIONS_PAGE", "off", 1);
	d = open_mode("t_zero", DDICT_AUTOSYNC);
	unsetenv("DDICT_VERSIONS_PAGE");
	s0 = stats_of(d);
	assert_int_equal(s0.rows_fetched, 1000);
	pgss_reset();
	for (int i = 0; i < N; i++)
		assert_value(d, "k7", "v7");
	s1 = stats_of(d);
	/* one round trip per read, every one answered "unchanged", no rows */
	assert_int_equal(s1.checks - s0.checks, N);
	assert_int_equal(s1.unchanged - s0.unchanged, N);
	assert_int_equal(s1.rows_fetched, s0.rows_fetched);
	assert_int_equal(s1.reloads, s0.reloads);
	assert_int_equal(s1.deltas, s0.deltas);
	/* one statement per check: ddict_unchanged() alone, no BEGIN, no
	 * COMMIT, no ddict_changes() */
	pgss_like("ddict_unchanged(", &calls, &rows);
	assert_int_equal(calls, N);
	assert_int_equal(rows, N);	/* one scalar each */
	pgss_changes(&calls, &rows);
	assert_int_equal(calls, 0);
	assert_int_equal(pgss_statements(), N);
	ddict_close(d);
}

static void
test_delta_one_row(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	long long	calls,
				rows;

	(void) state;
	fresh_dict(admin, "t_delta", "text");
	free(sqlf(admin, "INSERT INTO t_delta SELECT 'k' || g, 'v' || g FROM generate_series(1, 5000) g"));
	d = open_mode("t_delta", DDICT_AUTOSYNC);
	s0 = stats_of(d);
	pgss_reset();
	free(sqlf(admin, "UPDATE t_delta SET value = 'changed' WHERE key = 'k42'"));
	assert_value(d, "k42", "changed");
	s1 = stats_of(d);
	assert_int_equal(s1.deltas - s0.deltas, 1);
	assert_int_equal(s1.reloads, s0.reloads);
	assert_int_equal(s1.rows_fetched - s0.rows_fetched, 1);
	pgss_changes(&calls, &rows);
	assert_int_equal(calls, 1);
	assert_int_equal(rows, 2);	/* header + the changed key */
	assert_int_equal(ddict_len(d), 5000);

	/* A transaction that changed three keys: a delta of three rows. */
	free(sqlf(admin, "BEGIN; UPDATE t_delta SET value = 'x' WHERE key IN ('k1', 'k2');"
			  " DELETE FROM t_delta WHERE key = 'k3'; COMMIT"));
	s0 = stats_of(d);
	assert_value(d, "k1", "x");
	s1 = stats_of(d);
	assert_int_equal(s1.rows_fetched - s0.rows_fetched, 3);
	assert_int_equal(s1.deltas - s0.deltas, 1);
	assert_value(d, "k3", NULL);
	assert_int_equal(ddict_len(d), 4999);

	/* A rolled-back transaction moves nothing. */
	s0 = stats_of(d);
	free(sqlf(admin, "BEGIN; UPDATE t_delta SET value = 'no' WHERE key = 'k5'; ROLLBACK"));
	assert_value(d, "k5", "v5");
	s1 = stats_of(d);
	assert_int_equal(s1.rows_fetched, s0.rows_fetched);
	ddict_close(d);
}

static void
test_deletes_truncate(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;

	(void) state;
	fresh_dict(admin, "t_trunc", "text");
	free(sqlf(admin, "INSERT INTO t_trunc SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g"));
	d = open_mode("t_trunc", DDICT_MANUAL);
	assert_int_equal(ddict_len(d), 100);

	free(sqlf(admin, "DELETE FROM t_trunc WHERE key IN ('k1', 'k2')"));
	s0 = stats_of(d);
	assert_int_equal(ddict_sync(d), 1);
	s1 = stats_of(d);
	assert_int_equal(s1.deltas - s0.deltas, 1);
	assert_int_equal(s1.rows_fetched - s0.rows_fetched, 2);
	assert_value(d, "k1", NULL);
	assert_int_equal(ddict_len(d), 98);

	free(sqlf(admin, "TRUNCATE t_trunc"));
	s0 = stats_of(d);
	assert_int_equal(ddict_sync(d), 1);
	s1 = stats_of(d);
	assert_int_equal(s1.reloads - s0.reloads, 1);	/* TRUNCATE: full reload */
	assert_int_equal(ddict_len(d), 0);
	assert_value(d, "k3", NULL);

	free(sqlf(admin, "BEGIN; INSERT INTO t_trunc VALUES ('a', '1'); TRUNCATE t_trunc;"
			  " INSERT INTO t_trunc VALUES ('b', '2'); COMMIT"));
	assert_int_equal(ddict_sync(d), 1);
	assert_int_equal(ddict_len(d), 1);
	assert_value(d, "a", NULL);
	assert_value(d, "b", "2");

	/* deletes after deltas: overlays with tombstones, then compaction */
	free(sqlf(admin, "INSERT INTO t_trunc SELECT 'm' || g, 'v' FROM generate_series(1, 3000) g"));
	assert_int_equal(ddict_sync(d), 1);
	for (int i = 1; i <= 600; i++)
	{
		free(sqlf(admin, "DELETE FROM t_trunc WHERE key = 'm%d'", i));
		if (i % 3 == 0)
			free(sqlf(admin, "INSERT INTO t_trunc VALUES ('n%d', 'new')", i));
		assert_int_equal(ddict_sync(d), 1);
	}
	s1 = stats_of(d);
	assert_true(s1.compactions > 0);
	assert_int_equal(ddict_len(d), sql_ll(admin, "SELECT count(*) FROM t_trunc"));
	assert_value(d, "m600", NULL);
	assert_value(d, "m601", "v");
	assert_value(d, "n300", "new");
	ddict_close(d);
}

/* ---- bytea ---- */

static void
test_bytea(void **state)
{
	ddict	   *d;
	const char	raw[] = {'a', 0, 'b', '\t', '\n', '\\', (char) 0xff, 0, 0};
	char	   *v;
	size_t		n;
	const char *sv;
	ddict_snapshot *s;

	(void) state;
	fresh_dict(admin, "t_bytea", "bytea");
	free(sqlf(admin, "INSERT INTO t_bytea VALUES ('sql', '\\x00010200ff00'::bytea)"));
	d = open_mode("t_bytea", DDICT_AUTOSYNC);
	assert_int_equal(ddict_get(d, "sql", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(n, 6);
	assert_memory_equal(v, "\x00\x01\x02\x00\xff\x00", 6);
	ddict_free(v);

	assert_int_equal(ddict_set(d, "lib", DDICT_NTS, raw, sizeof(raw)), DDICT_OK);
	assert_int_equal(ddict_get(d, "lib", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(n, sizeof(raw));
	assert_memory_equal(v, raw, sizeof(raw));
	ddict_free(v);
	assert_int_equal(sql_ll(admin, "SELECT length(value) FROM t_bytea WHERE key = 'lib'"), sizeof(raw));
	assert_int_equal(sql_ll(admin, "SELECT count(*) FROM t_bytea WHERE key = 'lib'"
							" AND value = '\\x6100620"
							"90a5cff0000'::bytea"), 1);

	s = ddict_pin(d);
	assert_int_equal(ddict_snapshot_get(s, "lib", DDICT_NTS, &sv, &n), DDICT_OK);
	assert_int_equal(n, sizeof(raw));
	assert_memory_equal(sv, raw, sizeof(raw));
	ddict_unpin(s);

	assert_int_equal(ddict_setdefault(d, "lib", DDICT_NTS, "x", 1, &v, &n), DDICT_OK);
	assert_int_equal(n, sizeof(raw));
	assert_memory_equal(v, raw, sizeof(raw));
	ddict_free(v);
	assert_int_equal(ddict_pop(d, "lib", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(n, sizeof(raw));
	assert_memory_equal(v, raw, sizeof(raw));
	ddict_free(v);
	assert_int_equal(ddict_get(d, "lib", DDICT_NTS, NULL, NULL), DDICT_NOTFOUND);
	assert_int_equal(ddict_set(d, "empty", DDICT_NTS, "", 0), DDICT_OK);
	assert_int_equal(ddict_get(d, "empty", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(n, 0);
	ddict_free(v);
	ddict_close(d);
}

/* ---- pins and iteration ---- */

static int
count_cb(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
	(void) k;
	(void) kl;
	(void) v;
	(void) vl;
	(*(int *) arg)++;
	return 0;
}

static void
test_pin(void **state)
{
	ddict	   *d;
	ddict_snapshot *s;
	const char *v,
			   *k;
	size_t		n,
				kl,
				pos = 0;
	int			count = 0;
	int64_t		ver;

	(void) state;
	fresh_dict(admin, "t_pin", "text");
	free(sqlf(admin, "INSERT INTO t_pin SELECT 'k' || g, 'v' || g FROM generate_series(1, 300) g"));
	d = open_mode("t_pin", DDICT_AUTOSYNC);
	s = ddict_pin(d);
	ver = ddict_snapshot_version(s);
	assert_true(ver > 0);
	assert_int_equal(ddict_snapshot_len(s), 300);

	/* The world moves on; the pinned version does not. */
	free(sqlf(admin, "UPDATE t_pin SET value = 'new' WHERE key = 'k1'; DELETE FROM t_pin WHERE key = 'k2'"));
	assert_value(d, "k1", "new");
	assert_true(ddict_version(d) > ver);
	assert_int_equal(ddict_snapshot_get(s, "k1", DDICT_NTS, &v, &n), DDICT_OK);
	assert_string_equal(v, "v1");
	assert_int_equal(ddict_snapshot_get(s, "k2", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(ddict_snapshot_version(s), ver);

	while (ddict_snapshot_next(s, &pos, &k, &kl, &v, &n))
	{
		assert_int_equal(kl, strlen(k));
		assert_int_equal(strcmp(v + 1, k + 1), 0);	/* "kN" -> "vN" */
		count++;
	}
	assert_int_equal(count, 300);

	/* A pin outlives its handle. */
	ddict_close(d);
	assert_int_equal(ddict_snapshot_get(s, "k300", DDICT_NTS, &v, &n), DDICT_OK);
	assert_string_equal(v, "v300");
	ddict_unpin(s);

	d = open_mode("t_pin", DDICT_MANUAL);
	count = 0;
	assert_int_equal(ddict_foreach(d, count_cb, &count), 0);
	assert_int_equal(count, 299);
	/* the overlay (deltas) and the base iterate together */
	free(sqlf(admin, "INSERT INTO t_pin VALUES ('extra', 'e'); DELETE FROM t_pin WHERE key = 'k3'"));
	assert_int_equal(ddict_sync(d), 1);
	count = 0;
	assert_int_equal(ddict_foreach(d, count_cb, &count), 0);
	assert_int_equal(count, 299);
	ddict_close(d);
}

/* ---- change callback ---- */

typedef struct cb_log
{
	ddict	   *d;
	int			n;
	char		lines[64][128];
	int			busy_rc;
	int			get_rc;
} cb_log;

static void
log_change(const ddict_change *c, void *arg)
{
	cb_log	   *l = arg;

	if (l->n < 64)
		snprintf(l->lines[l->n++], 128, "%.*s:%.*s>%.*s", (int) c->keylen, c->key,
				 c->old_value ? (int) c->old_len : 1, c->old_value ? c->old_value : "-",
				 c->new_value ? (int) c->new_len : 1, c->new_value ? c->new_value : "-");
	if (l->d)
	{
		/* From inside the callback: reads work and see the new version,
		 * syncs and writes are refused instead of deadlocking. */
		l->busy_rc = ddict_sync(l->d);
		l->get_rc = ddict_get(l->d, c->key, c->keylen, NULL, NULL);
		if (ddict_set(l->d, "x", 1, "y", 1) != DDICT_EBUSY)
			l->busy_rc = 99;
	}
}

static int
has_line(const cb_log *l, const char *s)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->lines[i], s) == 0)
			return 1;
	return 0;
}

static void
test_callback(void **state)
{
	ddict_options o;
	ddict	   *d;
	cb_log		log;

	(void) state;
	memset(&log, 0, sizeof(log));
	fresh_dict(admin, "t_cb", "text");
	free(sqlf(admin, "INSERT INTO t_cb VALUES ('a', '1'), ('b', '2')"));
	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	o.on_change = log_change;
	o.on_change_arg = &log;
	d = ddict_open(test_conninfo(), "t_cb", &o);
	assert_non_null(d);
	assert_int_equal(log.n, 2);		/* the initial load: everything is new */
	assert_true(has_line(&log, "a:->1"));
	assert_true(has_line(&log, "b:->2"));

	log.n = 0;
	log.d = d;
	free(sqlf(admin, "BEGIN; UPDATE t_cb SET value = '10' WHERE key = 'a'; DELETE FROM t_cb WHERE key = 'b';"
			  " INSERT INTO t_cb VALUES ('c', '3'); COMMIT"));
	assert_int_equal(ddict_sync(d), 1);
	assert_int_equal(log.n, 3);
	assert_true(has_line(&log, "a:1>10"));
	assert_true(has_line(&log, "b:2>-"));
	assert_true(has_line(&log, "c:->3"));
	assert_int_equal(log.busy_rc, DDICT_EBUSY);
	assert_true(log.get_rc == DDICT_OK || log.get_rc == DDICT_NOTFOUND);

	/* a key in the delta whose value ends up the same is not reported */
	log.n = 0;
	log.d = NULL;
	free(sqlf(admin, "BEGIN; UPDATE t_cb SET value = 'tmp' WHERE key = 'a';"
			  " UPDATE t_cb SET value = '10' WHERE key = 'a'; COMMIT"));
	assert_int_equal(ddict_sync(d), 1);
	assert_int_equal(log.n, 0);

	/* a full reload reports differences only */
	free(sqlf(admin, "BEGIN; TRUNCATE t_cb; INSERT INTO t_cb VALUES ('a', '10'), ('d', '4'); COMMIT"));
	assert_int_equal(ddict_sync(d), 1);
	assert_int_equal(log.n, 2);
	assert_true(has_line(&log, "c:3>-"));
	assert_true(has_line(&log, "d:->4"));

	/* a write's own change is reported too */
	log.n = 0;
	assert_int_equal(ddict_set(d, "e", 1, "5", 1), DDICT_OK);
	assert_int_equal(log.n, 1);
	assert_true(has_line(&log, "e:->5"));
	ddict_close(d);
}

/* ---- interval mode ---- */

static void
test_interval(void **state)
{
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				s1;
	int64_t		start;
	int			reads = 0;

	(void) state;
	fresh_dict(admin, "t_int", "text");
	ddict_options_init(&o);
	o.mode = DDICT_INTERVAL;
	o.interval_ms = 100;
	d = ddict_open(test_conninfo(), "t_int", &o);
	assert_non_null(d);
	s0 = stats_of(d);
	start = mono_ms();
	while (mono_ms() - start < 550)
	{
		(void) ddict_get(d, "k", 1, NULL, NULL);
		reads++;
		sleep_ms(1);
	}
	s1 = stats_of(d);
	/* ~550 ms / 100 ms: at most 6 checks (one per started interval) */
	assert_true(reads > 100);
	assert_true(s1.checks - s0.checks >= 3);
	assert_true(s1.checks - s0.checks <= 6);

	free(sqlf(admin, "INSERT INTO t_int VALUES ('k', 'v')"));
	sleep_ms(120);
	assert_value(d, "k", "v");	/* the interval has passed: this read checks */
	ddict_close(d);
}

/* ---- borrowed connection ---- */

static void
test_borrowed_conn(void **state)
{
	PGconn	   *c = admin_connect();
	ddict	   *d;

	(void) state;
	assert_non_null(c);
	fresh_dict(admin, "t_borrow", "text");
	free(sqlf(admin, "INSERT INTO t_borrow VALUES ('a', '1')"));
	d = ddict_open_conn(c, "t_borrow", NULL);
	assert_non_null(d);
	assert_value(d, "a", "1");
	assert_int_equal(ddict_set(d, "b", 1, "2", 1), DDICT_OK);
	free(sqlf(admin, "INSERT INTO t_borrow VALUES ('c', '3')"));
	assert_value(d, "c", "3");

	/* The application's transaction is its own: ddict stays out of it. */
	free(sqlf(c, "BEGIN"));
	free(sqlf(c, "INSERT INTO t_borrow VALUES ('uncommitted', 'x')"));
	assert_int_equal(ddict_sync(d), DDICT_EBUSY);
	assert_int_equal(ddict_set(d, "z", 1, "z", 1), DDICT_EBUSY);
	assert_value(d, "uncommitted", NULL);	/* served from the snapshot */
	free(sqlf(c, "ROLLBACK"));
	assert_int_equal(ddict_sync(d), 0);
	assert_value(d, "uncommitted", NULL);

	/* A failed write hands the connection back idle (no pipeline, no transaction). */
	fresh_dict(admin, "t_bjson", "jsonb");
	{
		ddict	   *dj = ddict_open_conn(c, "t_bjson", NULL);

		assert_non_null(dj);
		assert_int_equal(ddict_set(dj, "j", 1, "{bad", 4), DDICT_ESERVER);
		assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
		assert_int_equal(PQpipelineStatus(c), PQ_PIPELINE_OFF);
		assert_int_equal(ddict_set(dj, "j", 1, "[1]", 3), DDICT_OK);
		assert_value(dj, "j", "[1]");
		ddict_close(dj);
	}

	ddict_close(d);
	/* still the application's, still usable */
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	assert_int_equal(sql_ll(c, "SELECT count(*) FROM t_borrow"), 3);
	PQfinish(c);
}

/* ---- snapshot file ---- */

static void
test_snapshot_file(void **state)
{
	char		path[256];
	ddict_options o;
	ddict	   *d,
			   *off;
	ddict_stats st;
	int64_t		v1,
				v2;

	(void) state;
	snprintf(path, sizeof(path), "/tmp/ddict-test-snap-%d.bin", (int) getpid());
	unlink(path);
	fresh_dict(admin, "t_snap", "text");
	free(sqlf(admin, "INSERT INTO t_snap VALUES ('a', 'first'), ('tab', 'x\ty')"));

	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	o.snapshot_path = path;
	o.snapshot_interval_ms = 0;		/* d follows every change on disk */
	d = ddict_open(test_conninfo(), "t_snap", &o);
	assert_non_null(d);
	o.snapshot_interval_ms = 3600000;	/* the others: only at close */
	v1 = ddict_version(d);
	assert_int_equal(access(path, R_OK), 0);	/* written after the first load */

	/* Server unreachable at start: serve the file, marked stale. */
	off = ddict_open("host=/nonexistent-dir port=1 connect_timeout=2", "t_snap", &o);
	assert_non_null(off);
	assert_int_equal(ddict_is_stale(off), 1);
	assert_int_equal(ddict_version(off), v1);
	assert_value(off, "a", "first");
	assert_value(off, "tab", "x\ty");
	st = stats_of(off);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.connected, 0);
	assert_true(st.staleness_ms == -1);
	assert_true(ddict_sync(off) < 0);
	assert_int_equal(ddict_set(off, "a", 1, "b", 1), DDICT_ECONN);
	assert_value(off, "a", "first");

	/* Fresher data is written at close; the stale handle never overwrites it. */
	free(sqlf(admin, "UPDATE t_snap SET value = 'second' WHERE key = 'a'"));
	assert_int_equal(ddict_sync(d), 1);
	v2 = ddict_version(d);
	assert_true(v2 > v1);
	{
		/* already on disk, before any close */
		ddict	   *peek = ddict_open("host=/nonexistent-dir port=1", "t_snap", &o);

		assert_non_null(peek);
		assert_int_equal(ddict_version(peek), v2);
		ddict_close(peek);
	}
	ddict_close(d);
	ddict_close(off);			/* holds v1: must not replace the file's v2 */
	off = ddict_open("host=/nonexistent-dir port=1 connect_timeout=2", "t_snap", &o);
	assert_non_null(off);
	assert_int_equal(ddict_version(off), v2);
	assert_value(off, "a", "second");
	assert_int_equal(ddict_save_snapshot(off), DDICT_OK);
	ddict_close(off);

	/* A file of another dict is refused. */
	assert_null(ddict_open("host=/nonexistent-dir port=1", "other_dict", &o));
	assert_non_null(strstr(ddict_errmsg(), "another dict"));

	/* A damaged file is refused, not trusted. */
	{
		FILE	   *f = fopen(path, "r+b");
		int			c;

		assert_non_null(f);
		fseek(f, -12, SEEK_END);	/* in the last value: flip its bits */
		c = fgetc(f);
		fseek(f, -12, SEEK_END);
		fputc(c ^ 0x5a, f);
		fclose(f);
	}
	assert_null(ddict_open("host=/nonexistent-dir port=1", "t_snap", &o));
	assert_non_null(strstr(ddict_errmsg(), "damaged"));
	unlink(path);
	{
		char		lock[300];

		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
}

/* ---- timeouts: a silent server, a blocked query ---- */

static void
test_timeouts(void **state)
{
	ddict_options o;
	ddict	   *d;
	int			lsock;
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	char		conninfo[128];
	int64_t		t0;
	PGconn	   *locker;
	int			rc;

	(void) state;
	/* A listener that never answers: the TCP handshake completes (backlog),
	 * the startup packet is never answered. */
	lsock = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lsock >= 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lsock, (struct sockaddr *) &addr, sizeof(addr)), 0);
	assert_int_equal(listen(lsock, 8), 0);
	assert_int_equal(getsockname(lsock, (struct sockaddr *) &addr, &alen), 0);
	snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d sslmode=disable",
			 ntohs(addr.sin_port));
	ddict_options_init(&o);
	o.connect_timeout_ms = 300;
	t0 = mono_ms();
	assert_null(ddict_open(conninfo, "t_tmo", &o));
	assert_true(mono_ms() - t0 < 3000);
	assert_non_null(strstr(ddict_errmsg(), "timed out"));
	close(lsock);

	/* A check whose rows are blocked by a lock: the read gives up after
	 * timeout_ms and serves the snapshot; the handle recovers afterwards. */
	fresh_dict(admin, "t_tmo", "text");
	free(sqlf(admin, "INSERT INTO t_tmo VALUES ('k', 'v1')"));
	o.timeout_ms = 300;
	o.backoff_min_ms = 10;
	d = ddict_open(test_conninfo(), "t_tmo", &o);
	assert_non_null(d);
	free(sqlf(admin, "UPDATE t_tmo SET value = 'v2'"));
	locker = admin_connect();
	assert_non_null(locker);
	free(sqlf(locker, "BEGIN; LOCK TABLE t_tmo IN ACCESS EXCLUSIVE MODE"));
	t0 = mono_ms();
	assert_value(d, "k", "v1");	/* stale, but served */
	assert_true(mono_ms() - t0 < 3000);
	assert_int_equal(ddict_is_stale(d), 1);
	rc = ddict_sync(d);
	assert_int_equal(rc, DDICT_ETIMEDOUT);
	free(sqlf(locker, "COMMIT"));
	PQfinish(locker);
	assert_int_equal(ddict_sync(d), 1);
	assert_value(d, "k", "v2");
	assert_int_equal(ddict_is_stale(d), 0);
	ddict_close(d);
}

/* ---- network loss without a restart (through a proxy) ---- */

static int
proxy_conninfo(proxy *p, char *buf, size_t size)
{
	const char *port = getenv("DDICT_TEST_PORT"),
			   *db = getenv("DDICT_TEST_DBNAME");

	if (port == NULL || db == NULL)
		return -1;
	if (proxy_start(p, atoi(port)) != 0)
		return -1;
	snprintf(buf, size, "host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable",
			 p->port, db);
	return 0;
}

/* Static, not on the stack: a failed assertion leaves the test by longjmp
 * while the proxy thread still runs. */
static proxy px_net,
			px_back;

static void
test_network_loss(void **state)
{
	proxy	   *px = &px_net;
	char		conninfo[256];
	ddict_options o;
	ddict	   *d;
	ddict_stats s0,
				s1;
	int64_t		t0;
	int			rc;

	(void) state;
	if (proxy_conninfo(px, conninfo, sizeof(conninfo)) != 0)
		skip();
	fresh_dict(admin, "t_net", "text");
	free(sqlf(admin, "INSERT INTO t_net SELECT 'k' || g, 'v' FROM generate_series(1, 1000) g"));
	ddict_options_init(&o);
	o.timeout_ms = 300;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 100;
	d = ddict_open(conninfo, "t_net", &o);
	assert_non_null(d);

	/* The network drops every connection; the server is fine and moves on. */
	atomic_store(&px->mode, PROXY_DOWN);
	sleep_ms(50);
	free(sqlf(admin, "UPDATE t_net SET value = 'changed' WHERE key = 'k1'"));
	assert_value(d, "k1", "v");
	assert_int_equal(ddict_is_stale(d), 1);
	rc = ddict_set(d, "k2", 2, "x", 1);
	assert_true(rc == DDICT_ECONN || rc == DDICT_ETIMEDOUT);
	s0 = stats_of(d);

	/* Back: the handle reconnects by itself and, the server's epoch being the
	 * same, resumes with a delta of the one changed key — no full reload. */
	atomic_store(&px->mode, PROXY_PASS);
	t0 = mono_ms();
	for (;;)
	{
		char	   *v = get_str(d, "k1");
		bool		done = v && strcmp(v, "changed") == 0;

		ddict_free(v);
		if (done)
			break;
		assert_true(mono_ms() - t0 < 5000);
		sleep_ms(10);
	}
	s1 = stats_of(d);
	assert_int_equal(ddict_is_stale(d), 0);
	assert_true(s1.reconnects > s0.reconnects);
	assert_int_equal(s1.reloads, s0.reloads);
	assert_int_equal(s1.deltas - s0.deltas, 1);
	assert_int_equal(s1.rows_fetched - s0.rows_fetched, 1);

	/* A dead link (nothing comes back): reads give up within timeout_ms. */
	free(sqlf(admin, "UPDATE t_net SET value = 'again' WHERE key = 'k1'"));
	atomic_store(&px->mode, PROXY_BLACKHOLE);
	t0 = mono_ms();
	assert_value(d, "k1", "changed");
	assert_true(mono_ms() - t0 < 2000);
	assert_int_equal(ddict_is_stale(d), 1);
	assert_int_equal(ddict_sync(d) < 0, 1);
	atomic_store(&px->mode, PROXY_PASS);
	assert_int_equal(ddict_sync(d), 1);
	assert_value(d, "k1", "again");
	assert_int_equal(ddict_len(d), 1000);
	ddict_close(d);
	proxy_stop(px);
}

/* ---- a name that comes to mean another relation (issue 8, item 2) ---- */

/*
 * A blue/green swap: the dict's name now means the staging table.  The cache
 * follows the name and holds exactly the new table's rows (a full reload),
 * never the old rows patched with a delta of the new table; later changes
 * are the new table's.
 */
static void
test_relation_swap(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;

	(void) state;
	free(sqlf(admin, "DROP SCHEMA IF EXISTS sw_live, sw_staging, sw_old CASCADE;"
			  "CREATE SCHEMA sw_live; CREATE SCHEMA sw_staging"));
	free(sqlf(admin, "SELECT ddict_create('sw_live.conf'); SELECT ddict_create('sw_staging.conf')"));
	free(sqlf(admin, "INSERT INTO sw_live.conf VALUES ('color', 'blue'), ('old_only', 'x')"));
	free(sqlf(admin, "INSERT INTO sw_staging.conf VALUES ('color', 'green'), ('new_only', 'y')"));
	d = open_mode("sw_live.conf", DDICT_AUTOSYNC);
	assert_value(d, "color", "blue");
	assert_int_equal(ddict_len(d), 2);

	free(sqlf(admin, "ALTER SCHEMA sw_live RENAME TO sw_old;"
			  "ALTER SCHEMA sw_staging RENAME TO sw_live"));
	/* answered by the versions page, the name is checked again within
	 * DD_VPAGE_REBIND_MS (1 s, README "The versions page") */
	if (stats_of(d).versions_page)
		sleep_ms(1100);
	s0 = stats_of(d);
	assert_value(d, "color", "green");
	assert_value(d, "new_only", "y");
	assert_value(d, "old_only", NULL);
	assert_int_equal(ddict_len(d), 2);
	s1 = stats_of(d);
	assert_int_equal(s1.reloads - s0.reloads, 1);

	/* then the new table's changes, as deltas; the old table is forgotten */
	free(sqlf(admin, "UPDATE sw_live.conf SET value = 'teal' WHERE key = 'color'"));
	assert_value(d, "color", "teal");
	free(sqlf(admin, "UPDATE sw_old.conf SET value = 'red' WHERE key = 'color';"
			  "INSERT INTO sw_old.conf VALUES ('late_old', 'z')"));
	assert_value(d, "color", "teal");
	assert_value(d, "late_old", NULL);
	assert_int_equal(ddict_set(d, "written", DDICT_NTS, "w", 1), DDICT_OK);
	assert_int_equal(sql_ll(admin, "SELECT count(*) FROM sw_live.conf WHERE key = 'written'"), 1);
	assert_int_equal(ddict_len(d), 3);
	assert_int_equal(stats_of(d).reloads, s1.reloads);
	ddict_close(d);
	free(sqlf(admin, "DROP SCHEMA sw_live, sw_old CASCADE"));
}

/*
 * The snapshot file records the relation: a file written for the old table
 * and read while the server is unreachable is served (stale), but the first
 * check reloads the new table in full instead of patching the old rows.
 */
static proxy px_swap;

static void
test_snapshot_file_relation(void **state)
{
	proxy	   *px = &px_swap;
	char		path[256],
				conninfo[256];
	ddict_options o;
	ddict	   *d;

	(void) state;
	if (proxy_conninfo(px, conninfo, sizeof(conninfo)) != 0)
		skip();
	snprintf(path, sizeof(path), "/tmp/ddict-test-snaprel-%d.bin", (int) getpid());
	unlink(path);
	free(sqlf(admin, "DROP SCHEMA IF EXISTS sn_live, sn_staging, sn_old CASCADE;"
			  "CREATE SCHEMA sn_live; CREATE SCHEMA sn_staging"));
	free(sqlf(admin, "SELECT ddict_create('sn_live.conf'); SELECT ddict_create('sn_staging.conf')"));
	free(sqlf(admin, "INSERT INTO sn_live.conf VALUES ('a', 'old'), ('only_old', '1');"
			  "INSERT INTO sn_staging.conf VALUES ('a', 'new'), ('only_new', '2')"));
	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	o.snapshot_path = path;
	o.snapshot_interval_ms = 0;
	o.timeout_ms = 2000;
	o.backoff_min_ms = 10;
	o.backoff_max_ms = 50;
	d = ddict_open(conninfo, "sn_live.conf", &o);
	assert_non_null(d);
	ddict_close(d);

	/* another table behind the name, unchanged since the file was written */
	free(sqlf(admin, "ALTER SCHEMA sn_live RENAME TO sn_old;"
			  "ALTER SCHEMA sn_staging RENAME TO sn_live"));

	atomic_store(&px->mode, PROXY_DOWN);
	d = ddict_open(conninfo, "sn_live.conf", &o);
	assert_non_null(d);
	assert_int_equal(ddict_is_stale(d), 1);
	assert_value(d, "a", "old");	/* the file: all there is while unreachable */
	atomic_store(&px->mode, PROXY_PASS);
	assert_int_equal(ddict_sync(d), 1);
	assert_int_equal(ddict_is_stale(d), 0);
	assert_value(d, "a", "new");
	assert_value(d, "only_new", "2");
	assert_value(d, "only_old", NULL);
	assert_int_equal(ddict_len(d), 2);
	ddict_close(d);

	/* the file now holds the new table: from it, the next check is 'u' */
	atomic_store(&px->mode, PROXY_DOWN);
	d = ddict_open(conninfo, "sn_live.conf", &o);
	assert_non_null(d);
	assert_value(d, "a", "new");
	atomic_store(&px->mode, PROXY_PASS);
	assert_int_equal(ddict_sync(d), 0);
	assert_int_equal(ddict_len(d), 2);
	ddict_close(d);
	proxy_stop(px);
	unlink(path);
	{
		char		lock[300];

		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
	free(sqlf(admin, "DROP SCHEMA sn_live, sn_old CASCADE"));
}

/* Rewrite a format 2 snapshot file as format 1 (no relation): drop the u32
 * after the dict's name, recompute the chained checksum (snapfile.c). */
static void
snapfile_to_format1(const char *path)
{
	static const uint64_t ck_key[2] = {UINT64_C(0x6464696374736e31), UINT64_C(0x636865636b73756d)};
	FILE	   *f = fopen(path, "rb");
	unsigned char buf[4096];
	size_t		n,
				pos,
				dlen;
	uint32_t	one = htole32(1),
				u;
	uint64_t	ck = 0;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_true(n > 20 && n < sizeof(buf));
	memcpy(&u, buf + 12, 4);
	dlen = le32toh(u);
	memcpy(buf + 8, &one, 4);
	memmove(buf + 16 + dlen, buf + 20 + dlen, n - 20 - dlen);
	n -= 4 + 8;					/* no relid, checksum recomputed */
	/* the writer's chaining: one step per field written (snapfile.c put()) */
	{
		size_t		fields[] = {8, 4, 4, dlen, 8, 8, 8, 8};

		pos = 0;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		{
			ck = (ck ^ dd_hash(ck_key, buf + pos, fields[i])) * UINT64_C(0x100000001b3) + fields[i];
			pos += fields[i];
		}
		while (pos < n)
		{
			uint32_t	kl,
						vl;

			memcpy(&kl, buf + pos, 4);
			memcpy(&vl, buf + pos + 4, 4);
			kl = le32toh(kl);
			vl = le32toh(vl);
			{
				size_t		f2[] = {4, 4, kl, vl};

				for (size_t i = 0; i < 4; i++)
				{
					if (f2[i] > 0)
						ck = (ck ^ dd_hash(ck_key, buf + pos, f2[i])) * UINT64_C(0x100000001b3) + f2[i];
					pos += f2[i];
				}
			}
		}
	}
	ck = htole64(ck);
	memcpy(buf + n, &ck, 8);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, n + 8, f), n + 8);
	fclose(f);
}

/* A format 1 file (written before files recorded the relation) still loads;
 * its relation is unknown, so the first check is a full reload. */
static proxy px_fmt1;

static void
test_snapshot_file_format1(void **state)
{
	proxy	   *px = &px_fmt1;
	char		path[256],
				conninfo[256];
	ddict_options o;
	ddict	   *d;
	ddict_stats s0;

	(void) state;
	if (proxy_conninfo(px, conninfo, sizeof(conninfo)) != 0)
		skip();
	snprintf(path, sizeof(path), "/tmp/ddict-test-snapf1-%d.bin", (int) getpid());
	unlink(path);
	fresh_dict(admin, "t_snapf1", "text");
	free(sqlf(admin, "INSERT INTO t_snapf1 VALUES ('a', '1'), ('b', '')"));
	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	o.snapshot_path = path;
	o.snapshot_interval_ms = 0;
	o.backoff_min_ms = 10;
	o.backoff_max_ms = 50;
	d = ddict_open(conninfo, "t_snapf1", &o);
	assert_non_null(d);
	ddict_close(d);
	snapfile_to_format1(path);

	atomic_store(&px->mode, PROXY_DOWN);
	d = ddict_open(conninfo, "t_snapf1", &o);
	assert_non_null(d);
	assert_int_equal(ddict_is_stale(d), 1);
	assert_value(d, "a", "1");
	assert_value(d, "b", "");
	atomic_store(&px->mode, PROXY_PASS);
	s0 = stats_of(d);
	assert_int_equal(ddict_sync(d), 1);	/* unknown relation: in full */
	assert_int_equal(stats_of(d).reloads - s0.reloads, 1);
	assert_int_equal(ddict_sync(d), 0);	/* and from then on as usual */
	assert_value(d, "a", "1");
	assert_int_equal(ddict_len(d), 2);
	ddict_close(d);
	proxy_stop(px);
	unlink(path);
	{
		char		lock[300];

		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
}

/* A version older than ours, in the same epoch: never applied as a delta. */
static void
test_version_backwards(void **state)
{
	proxy	   *px = &px_back;
	char		conninfo[256],
				path[256];
	ddict_options o;
	ddict	   *a,
			   *b;
	ddict_snapshot *s,
				fake;
	ddict_stats st;

	(void) state;
	if (proxy_conninfo(px, conninfo, sizeof(conninfo)) != 0)
		skip();
	snprintf(path, sizeof(path), "/tmp/ddict-test-back-%d.bin", (int) getpid());
	unlink(path);
	fresh_dict(admin, "t_back", "text");
	free(sqlf(admin, "INSERT INTO t_back VALUES ('k', 'server'), ('only_server', 'x')"));
	ddict_options_init(&o);
	o.snapshot_path = path;
	o.backoff_min_ms = 20;
	a = ddict_open(test_conninfo(), "t_back", &o);
	assert_non_null(a);

	/* A snapshot file from "the future" of this server (same epoch, a much
	 * newer version, other contents), as a failed-over-from server might
	 * have left. */
	s = ddict_pin(a);
	memcpy(&fake, s, sizeof(fake));
	fake.version += INT64_C(1000000000000);
	fake.base = dd_table_new(1);
	assert_int_equal(dd_table_put(fake.base, dd_hash(fake.seed, "k", 1), "k", 1, "file", 4), DDICT_OK);
	fake.over = NULL;
	fake.len = 1;
	assert_int_equal(dd_snapfile_write(a, &fake), DDICT_OK);
	dd_table_unref(fake.base);
	ddict_unpin(s);

	atomic_store(&px->mode, PROXY_DOWN);
	o.mode = DDICT_MANUAL;
	b = ddict_open(conninfo, "t_back", &o);
	assert_non_null(b);
	assert_int_equal(ddict_is_stale(b), 1);
	assert_value(b, "k", "file");	/* served from the file */

	atomic_store(&px->mode, PROXY_PASS);
	assert_int_equal(ddict_sync(b), 1);
	/* The server answered with a delta whose version is older than ours:
	 * the client dropped it and reloaded in full. */
	assert_int_equal(ddict_sync(a), 0);
	assert_int_equal(ddict_version(b), ddict_version(a));
	assert_value(b, "k", "server");
	assert_value(b, "only_server", "x");
	st = stats_of(b);
	assert_int_equal(st.reloads, 1);
	assert_int_equal(st.deltas, 0);
	assert_int_equal(st.checks, 2);	/* the dropped delta, then the full reload */

	ddict_close(b);
	ddict_close(a);
	proxy_stop(px);
	unlink(path);
	{
		char		lock[300];

		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
}

/* ---- the server goes away and comes back ---- */

static void
test_server_down(void **state)
{
	char		path[256];
	ddict_options o;
	ddict	   *h,
			   *m,
			   *f;
	ddict_stats st;
	int64_t		deadline;
	char	   *v;
	int			rc;

	(void) state;
	if (!getenv("DDICT_TEST_STOP_CMD") || !getenv("DDICT_TEST_START_CMD"))
		skip();
	snprintf(path, sizeof(path), "/tmp/ddict-test-down-%d.bin", (int) getpid());
	unlink(path);
	fresh_dict(admin, "t_down", "text");
	free(sqlf(admin, "INSERT INTO t_down VALUES ('k', 'before')"));

	ddict_options_init(&o);
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	o.snapshot_path = path;
	h = ddict_open(test_conninfo(), "t_down", &o);	/* autosync; writes the file */
	assert_non_null(h);
	o.snapshot_path = NULL;
	o.mode = DDICT_MANUAL;
	m = ddict_open(test_conninfo(), "t_down", &o);
	assert_non_null(m);

	PQfinish(admin);
	admin = NULL;
	assert_int_equal(run_env_cmd("DDICT_TEST_STOP_CMD"), 0);

	/* Reads keep serving the last snapshot and say it may be stale. */
	for (int i = 0; i < 20; i++)
		assert_value(h, "k", "before");
	assert_int_equal(ddict_is_stale(h), 1);
	st = stats_of(h);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.connected, 0);
	assert_true(st.errors > 0);
	assert_true(strlen(st.last_error) > 0);
	assert_int_equal(ddict_len(h), 1);
	/* Writes fail clearly. */
	rc = ddict_set(h, "k", 1, "x", 1);
	assert_true(rc == DDICT_ECONN || rc == DDICT_ETIMEDOUT);
	assert_non_null(strstr(ddict_errmsg(), "ddict_set"));
	assert_true(ddict_sync(m) < 0);
	assert_value(m, "k", "before");

	/* Starting while the server is away: from the snapshot file, stale. */
	o.mode = DDICT_AUTOSYNC;
	o.snapshot_path = path;
	f = ddict_open(test_conninfo(), "t_down", &o);
	assert_non_null(f);
	assert_int_equal(ddict_is_stale(f), 1);
	assert_value(f, "k", "before");

	assert_int_equal(run_env_cmd("DDICT_TEST_START_CMD"), 0);
	admin = admin_connect();
	assert_non_null(admin);
	free(sqlf(admin, "UPDATE t_down SET value = 'after' WHERE key = 'k'"));

	/* Both autosync handles reconnect by themselves (backoff <= 200 ms). */
	deadline = mono_ms() + 10000;
	while ((v = get_str(h, "k")) != NULL && strcmp(v, "before") == 0 && mono_ms() < deadline)
	{
		ddict_free(v);
		sleep_ms(20);
	}
	assert_non_null(v);
	assert_string_equal(v, "after");
	ddict_free(v);
	assert_int_equal(ddict_is_stale(h), 0);
	st = stats_of(h);
	assert_true(st.reconnects >= 1);
	assert_int_equal(st.connected, 1);
	assert_true(st.staleness_ms >= 0 && st.staleness_ms < 1000);
	assert_true(st.reloads >= 2);	/* new epoch: a full reload */

	deadline = mono_ms() + 10000;
	while ((v = get_str(f, "k")) != NULL && strcmp(v, "before") == 0 && mono_ms() < deadline)
	{
		ddict_free(v);
		sleep_ms(20);
	}
	assert_non_null(v);
	assert_string_equal(v, "after");
	ddict_free(v);
	assert_int_equal(ddict_is_stale(f), 0);

	/* The manual handle: explicit sync reconnects at once. */
	assert_int_equal(ddict_sync(m), 1);
	assert_value(m, "k", "after");
	assert_int_equal(ddict_set(h, "k2", 2, "w", 1), DDICT_OK);
	assert_value(h, "k2", "w");

	ddict_close(f);
	ddict_close(m);
	ddict_close(h);
	unlink(path);
	{
		char		lock[300];

		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
}

/* ---- threads: many readers on one handle while it reloads ---- */

static void
test_threads(void **state)
{
	enum
	{
		NT = 6
	};
	pthread_t	th[NT];
	reader_arg	args[NT];
	atomic_int	stop = 0;
	ddict	   *d;
	ddict_stats st;
	long		total = 0;

	(void) state;
	fresh_dict(admin, "t_thr", "text");
	d = open_mode("t_thr", DDICT_AUTOSYNC);
	for (int i = 0; i < NT; i++)
	{
		args[i] = (reader_arg) {.d = d, .stop = &stop};
		pthread_create(&th[i], NULL, reader_thread, &args[i]);
	}
	for (int i = 0; i < 300; i++)
	{
		if (i % 50 == 49)
			free(sqlf(admin, "TRUNCATE t_thr"));
		else
			free(sqlf(admin, "INSERT INTO t_thr VALUES ('g:a', '%d'), ('g:b', '%d'), ('n%d', 'x')"
					  " ON CONFLICT (key) DO UPDATE SET value = excluded.value", i, i, i));
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < NT; i++)
	{
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].bad, 0);
		total += args[i].reads;
	}
	st = stats_of(d);
	assert_true(total > 0);
	assert_true(st.deltas + st.reloads > 0);
	assert_int_equal(ddict_sync(d) >= 0, 1);
	assert_int_equal(ddict_len(d), sql_ll(admin, "SELECT count(*) FROM t_thr"));
	print_message("# %ld reads by %d threads, %llu checks, %llu coalesced, %llu deltas, %llu reloads\n",
				  total, NT, (unsigned long long) st.checks, (unsigned long long) st.coalesced,
				  (unsigned long long) st.deltas, (unsigned long long) st.reloads);
	ddict_close(d);
}

/* ---- large dict ---- */

static long
peak_rss_kb(void)
{
	FILE	   *f = fopen("/proc/self/status", "r");
	char		line[256];
	long		kb = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

/* ddict_open() on conninfo + extra (a later keyword wins), page off. */
static ddict *
open_extra(const char *extra, const char *dict, ddict_mode mode)
{
	char		conninfo[1024];
	ddict_options o;
	ddict	   *d;

	snprintf(conninfo, sizeof(conninfo), "%s %s", test_conninfo(), extra);
	ddict_options_init(&o);
	o.mode = mode;
	setenv("DDICT_VERSIONS_PAGE", "off", 1);
	d = ddict_open(conninfo, dict, &o);
	unsetenv("DDICT_VERSIONS_PAGE");
	if (d == NULL)
		fail_msg("ddict_open(%s, %s): %s", extra, dict, ddict_errmsg());
	return d;
}

/*
 * Full loads by COPY (1.2): ddict_full_begin, one COPY, ddict_full_end,
 * and no ddict_changes() rows; values are the bytes ddict_changes() sends
 * (the text output, not converted to the client's encoding: a LATIN1 client
 * still gets UTF-8 values, as before), keys text; row-level security holds.
 */
static void
test_full_load_copy(void **state)
{
	ddict	   *d;
	char	   *v;
	size_t		n;
	long long	calls,
				rows;
	ddict_stats s0,
				s1;

	(void) state;
	fresh_dict(admin, "t_copy", "jsonb");
	free(sqlf(admin, "INSERT INTO t_copy SELECT 'k' || g, jsonb_build_object('n', g, 's', 'é')"
			  " FROM generate_series(1, 3000) g"));
	free(sqlf(admin, "INSERT INTO t_copy VALUES ('clé', '\"ü\"')"));
	pgss_reset();
	d = open_extra("client_encoding=LATIN1", "t_copy", DDICT_MANUAL);
	pgss_like("ddict_full_begin(", &calls, &rows);
	assert_int_equal(calls, 1);
	pgss_like("COPY (SELECT", &calls, &rows);
	assert_int_equal(calls, 1);
	assert_int_equal(rows, 3001);
	pgss_like("ddict_full_end(", &calls, &rows);
	assert_int_equal(calls, 1);
	pgss_changes(&calls, &rows);
	assert_int_equal(calls, 0);
	assert_int_equal(ddict_len(d), 3001);
	assert_int_equal(stats_of(d).rows_fetched, 3001);
	/* the jsonb text output's UTF-8 bytes, as the server spells them */
	assert_int_equal(ddict_get(d, "k42", DDICT_NTS, &v, &n), DDICT_OK);
	assert_int_equal(n, strlen("{\"n\": 42, \"s\": \"\xc3\xa9\"}"));
	assert_memory_equal(v, "{\"n\": 42, \"s\": \"\xc3\xa9\"}", n);
	ddict_free(v);
	/* keys in the client's encoding (LATIN1 'clé'), as ddict_changes() sends them */
	assert_int_equal(ddict_get(d, "cl\xe9", DDICT_NTS, &v, &n), DDICT_OK);
	assert_memory_equal(v, "\"\xc3\xbc\"", 4);
	ddict_free(v);

	/* TRUNCATE: no delta applies; the check's 'f' comes alone, the rows by COPY */
	free(sqlf(admin, "TRUNCATE t_copy; INSERT INTO t_copy VALUES ('only', '1')"));
	s0 = stats_of(d);
	pgss_reset();
	assert_int_equal(ddict_sync(d), 1);
	s1 = stats_of(d);
	assert_int_equal(s1.reloads - s0.reloads, 1);
	assert_int_equal(s1.rows_fetched - s0.rows_fetched, 1);
	assert_int_equal(ddict_len(d), 1);
	assert_value(d, "only", "1");
	pgss_changes(&calls, &rows);
	assert_int_equal(rows, calls);	/* headers only */
	pgss_like("COPY (SELECT", &calls, &rows);
	assert_int_equal(calls, 1);
	ddict_close(d);

	/* row-level security: a role that sees its rows only loads those */
	free(sqlf(admin, "DROP TABLE IF EXISTS t_copy_rls; DROP ROLE IF EXISTS ddict_copy_reader;"
			  "CREATE ROLE ddict_copy_reader LOGIN"));
	fresh_dict(admin, "t_copy_rls", "text");
	free(sqlf(admin, "INSERT INTO t_copy_rls SELECT 'k' || g, g::text FROM generate_series(1, 10) g;"
			  "ALTER TABLE t_copy_rls ENABLE ROW LEVEL SECURITY;"
			  "CREATE POLICY mine ON t_copy_rls FOR SELECT TO ddict_copy_reader USING (value::int <= 3);"
			  "GRANT SELECT ON t_copy_rls TO ddict_copy_reader;"
			  "GRANT USAGE ON SCHEMA public TO ddict_copy_reader"));
	d = open_extra("user=ddict_copy_reader", "t_copy_rls", DDICT_MANUAL);
	assert_int_equal(ddict_len(d), 3);
	assert_value(d, "k3", "3");
	assert_value(d, "k4", NULL);
	ddict_close(d);
	free(sqlf(admin, "DROP TABLE t_copy_rls; DROP OWNED BY ddict_copy_reader; DROP ROLE ddict_copy_reader"));
}

/*
 * A session whose transactions default to REPEATABLE READ: the
 * one-statement check (ddict_unchanged() reads no rows) still answers
 * "unchanged"; a change goes to BEGIN ISOLATION LEVEL READ COMMITTED;
 * ddict_changes(), whose delta is exact, and a full reload by COPY too.
 */
static void
test_repeatable_read_session(void **state)
{
	ddict	   *d;
	ddict_stats s0,
				s1;
	long long	calls,
				rows;
	char	   *iso,
				conninfo[1024];
	PGconn	   *rr;

	(void) state;
	fresh_dict(admin, "t_rr", "text");
	free(sqlf(admin, "INSERT INTO t_rr SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g"));
	/* the session really is REPEATABLE READ */
	snprintf(conninfo, sizeof(conninfo), "%s options='-c default_transaction_isolation=repeatable\\\\ read'",
			 test_conninfo());
	rr = PQconnectdb(conninfo);
	assert_int_equal(PQstatus(rr), CONNECTION_OK);
	iso = sqlf(rr, "SHOW transaction_isolation");
	assert_string_equal(iso, "repeatable read");
	free(iso);
	PQfinish(rr);

	d = open_extra("options='-c default_transaction_isolation=repeatable\\\\ read'", "t_rr",
				   DDICT_AUTOSYNC);
	assert_value(d, "k7", "v7");
	s0 = stats_of(d);
	pgss_reset();
	for (int i = 0; i < 5; i++)
		assert_value(d, "k7", "v7");
	s1 = stats_of(d);
	assert_int_equal(s1.unchanged - s0.unchanged, 5);
	pgss_like("ddict_unchanged(", &calls, &rows);
	assert_int_equal(calls, 5);
	assert_int_equal(pgss_statements(), 5);

	free(sqlf(admin, "UPDATE t_rr SET value = 'changed' WHERE key = 'k7'; DELETE FROM t_rr WHERE key = 'k8'"));
	s0 = stats_of(d);
	assert_value(d, "k7", "changed");
	assert_value(d, "k8", NULL);
	s1 = stats_of(d);
	assert_int_equal(s1.deltas - s0.deltas, 1);
	assert_int_equal(s1.reloads, s0.reloads);
	assert_int_equal(ddict_len(d), 99);

	free(sqlf(admin, "TRUNCATE t_rr; INSERT INTO t_rr VALUES ('after', 'truncate')"));
	assert_value(d, "after", "truncate");
	assert_int_equal(ddict_len(d), 1);
	assert_int_equal(stats_of(d).reloads - s1.reloads, 1);
	assert_int_equal(stats_of(d).errors, s0.errors);
	ddict_close(d);
}

/*
 * A database whose extension is still at 1.1: no ddict_full_begin(), so
 * full loads come as ddict_changes() rows, and the check of many dicts is
 * the 1.1 probe; everything works as before.
 */
static void
test_server_at_1_1(void **state)
{
	ddict	   *d;
	ddict_client_options co;
	ddict_client *c;
	ddict	   *e[3];
	char		conninfo[1024];
	PGconn	   *old;

	(void) state;
	free(sqlf(admin, "DROP DATABASE IF EXISTS ddict_v11"));
	free(sqlf(admin, "CREATE DATABASE ddict_v11"));
	snprintf(conninfo, sizeof(conninfo), "%s dbname=ddict_v11", admin_conninfo());
	old = PQconnectdb(conninfo);
	assert_int_equal(PQstatus(old), CONNECTION_OK);
	free(sqlf(old, "SET client_min_messages = warning; CREATE EXTENSION ddict VERSION '1.1'"));
	free(sqlf(old, "SELECT ddict_create('t' || g) FROM generate_series(1, 3) g"));
	free(sqlf(old, "INSERT INTO t1 SELECT 'k' || g, 'v' || g FROM generate_series(1, 500) g"));

	d = open_extra("dbname=ddict_v11", "t1", DDICT_AUTOSYNC);
	assert_int_equal(ddict_len(d), 500);
	assert_value(d, "k5", "v5");
	free(sqlf(old, "UPDATE t1 SET value = 'x' WHERE key = 'k5'"));
	assert_value(d, "k5", "x");
	assert_int_equal(stats_of(d).deltas, 1);
	free(sqlf(old, "TRUNCATE t1"));
	assert_value(d, "k5", NULL);
	assert_int_equal(ddict_len(d), 0);
	assert_int_equal(stats_of(d).reloads, 2);
	ddict_close(d);

	/* three dicts on one client: the 1.1 probe, then the pipeline */
	ddict_client_options_init(&co);
	snprintf(conninfo, sizeof(conninfo), "%s dbname=ddict_v11", test_conninfo());
	c = ddict_client_open(conninfo, &co);
	assert_non_null(c);
	for (int i = 0; i < 3; i++)
	{
		char		name[16];
		ddict_options o;

		snprintf(name, sizeof(name), "t%d", i + 1);
		ddict_options_init(&o);
		o.mode = DDICT_MANUAL;
		e[i] = ddict_open_on(c, name, &o);
		assert_non_null(e[i]);
	}
	assert_int_equal(ddict_client_sync(c), 0);
	free(sqlf(old, "INSERT INTO t2 VALUES ('new', 'row')"));
	assert_int_equal(ddict_client_sync(c), 1);
	assert_value(e[1], "new", "row");
	for (int i = 0; i < 3; i++)
		ddict_close(e[i]);
	ddict_client_close(c);
	PQfinish(old);
	free(sqlf(admin, "DROP DATABASE ddict_v11"));
}

/*
 * A database whose extension is still at 1.2: no ddict_unchanged_packed(),
 * so the check of many dicts is ddict_unchanged_many() (binary arrays), on
 * unnamed statements and prepared (direct) alike; it settles the unchanged
 * dicts and the changed one reloads.
 */
static void
server_at_1_2(int direct)
{
	ddict_client_options co;
	ddict_client *c;
	ddict	   *e[3];
	char		conninfo[1024];
	PGconn	   *old;

	free(sqlf(admin, "DROP DATABASE IF EXISTS ddict_v12"));
	free(sqlf(admin, "CREATE DATABASE ddict_v12"));
	snprintf(conninfo, sizeof(conninfo), "%s dbname=ddict_v12", admin_conninfo());
	old = PQconnectdb(conninfo);
	assert_int_equal(PQstatus(old), CONNECTION_OK);
	free(sqlf(old, "SET client_min_messages = warning; CREATE EXTENSION ddict VERSION '1.2'"));
	free(sqlf(old, "SELECT ddict_create('t' || g) FROM generate_series(1, 3) g"));
	free(sqlf(old, "INSERT INTO t1 SELECT 'k' || g, 'v' || g FROM generate_series(1, 50) g"));

	ddict_client_options_init(&co);
	co.direct = direct;
	snprintf(conninfo, sizeof(conninfo), "%s dbname=ddict_v12", test_conninfo());
	c = ddict_client_open(conninfo, &co);
	assert_non_null(c);
	for (int i = 0; i < 3; i++)
	{
		char		name[16];
		ddict_options o;

		snprintf(name, sizeof(name), "t%d", i + 1);
		ddict_options_init(&o);
		o.mode = DDICT_MANUAL;
		e[i] = ddict_open_on(c, name, &o);
		assert_non_null(e[i]);
	}
	assert_int_equal(ddict_len(e[0]), 50);
	free(sqlf(admin, "SELECT pg_stat_statements_reset()"));
	assert_int_equal(ddict_client_sync(c), 0);
	free(sqlf(old, "INSERT INTO t2 VALUES ('new', 'row')"));
	assert_int_equal(ddict_client_sync(c), 1);
	assert_value(e[1], "new", "row");
	assert_int_equal(stats_of(e[0]).unchanged, 2);
	assert_int_equal(stats_of(e[1]).deltas, 1);
	assert_int_equal(sql_ll(admin, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
							" WHERE query LIKE '%%ddict_unchanged_many(%%' AND dbid ="
							" (SELECT oid FROM pg_database WHERE datname = 'ddict_v12')"), 2);
	for (int i = 0; i < 3; i++)
		ddict_close(e[i]);
	ddict_client_close(c);
	PQfinish(old);
	free(sqlf(admin, "DROP DATABASE ddict_v12"));
}

static void
test_server_at_1_2(void **state)
{
	(void) state;
	server_at_1_2(0);
	server_at_1_2(1);
}

/*
 * A check that fails on the server inside its BEGIN ... COMMIT (here: the
 * role lost SELECT on the dict) leaves no aborted transaction behind: once
 * the privilege is back, the next check works on the same connection.
 */
static void
test_check_error_recovers(void **state)
{
	ddict	   *d;

	(void) state;
	free(sqlf(admin, "DROP TABLE IF EXISTS t_err; DROP ROLE IF EXISTS ddict_err_reader;"
			  "CREATE ROLE ddict_err_reader LOGIN"));
	fresh_dict(admin, "t_err", "text");
	free(sqlf(admin, "INSERT INTO t_err VALUES ('k', 'v'); GRANT SELECT ON t_err TO ddict_err_reader"));
	d = open_extra("user=ddict_err_reader", "t_err", DDICT_MANUAL);
	assert_value(d, "k", "v");
	free(sqlf(admin, "REVOKE SELECT ON t_err FROM ddict_err_reader; UPDATE t_err SET value = 'w'"));
	assert_int_equal(ddict_sync(d), DDICT_ESERVER);
	assert_non_null(strstr(ddict_errmsg(), "permission denied"));
	assert_value(d, "k", "v");	/* the snapshot is still served */
	free(sqlf(admin, "GRANT SELECT ON t_err TO ddict_err_reader"));
	assert_int_equal(ddict_sync(d), 1);
	assert_value(d, "k", "w");
	ddict_close(d);
	free(sqlf(admin, "DROP TABLE t_err; DROP OWNED BY ddict_err_reader; DROP ROLE ddict_err_reader"));
}

static void
test_large(void **state)
{
	const char *env = getenv("DDICT_TEST_LARGE_KEYS");
	long		nkeys = env ? atol(env) : 1000000;
	ddict	   *d;
	long		before,
				after;
	int64_t		t0;
	ddict_stats st;
	char		key[32],
				expect[64];

	(void) state;
	if (nkeys <= 0)
		skip();
	fresh_dict(admin, "t_large", "text");
	free(sqlf(admin, "INSERT INTO t_large SELECT 'key:' || g, 'value number ' || g"
			  " FROM generate_series(1, %ld) g", nkeys));
	before = peak_rss_kb();
	t0 = mono_ms();
	d = open_mode("t_large", DDICT_MANUAL);
	after = peak_rss_kb();
	st = stats_of(d);
	assert_int_equal(ddict_len(d), nkeys);
	assert_int_equal(st.rows_fetched, nkeys);
	snprintf(key, sizeof(key), "key:%ld", nkeys / 2);
	snprintf(expect, sizeof(expect), "value number %ld", nkeys / 2);
	assert_value(d, key, expect);
	/*
	 * Rows arrive one by one (COPY data, or single-row mode from a 1.1
	 * server): the peak is the table plus
	 * small change.  A materialised PGresult of the same rows alone would
	 * take more than ~100 bytes per row on top of it.
	 */
	print_message("# %ld keys loaded in %lld ms, peak RSS grew by %ld MB (%ld bytes/key)\n",
				  nkeys, (long long) (mono_ms() - t0), (after - before) / 1024,
				  (after - before) * 1024 / nkeys);
	if (getenv("DDICT_TEST_NO_RSS") == NULL)
		assert_true((after - before) * 1024 / nkeys < 150);

	/* one change to a big dict: a delta of one row */
	free(sqlf(admin, "UPDATE t_large SET value = 'x' WHERE key = 'key:1'"));
	t0 = mono_ms();
	assert_int_equal(ddict_sync(d), 1);
	print_message("# delta of 1 key on %ld keys applied in %lld ms\n", nkeys,
				  (long long) (mono_ms() - t0));
	assert_value(d, "key:1", "x");
	ddict_close(d);
	free(sqlf(admin, "DROP TABLE t_large"));
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_semantics),
		cmocka_unit_test(test_jsonb),
		cmocka_unit_test(test_autosync_next_read),
		cmocka_unit_test(test_manual_until_sync),
		cmocka_unit_test(test_unchanged_zero_rows),
		cmocka_unit_test(test_delta_one_row),
		cmocka_unit_test(test_deletes_truncate),
		cmocka_unit_test(test_bytea),
		cmocka_unit_test(test_pin),
		cmocka_unit_test(test_callback),
		cmocka_unit_test(test_interval),
		cmocka_unit_test(test_borrowed_conn),
		cmocka_unit_test(test_snapshot_file),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_network_loss),
		cmocka_unit_test(test_relation_swap),
		cmocka_unit_test(test_snapshot_file_relation),
		cmocka_unit_test(test_snapshot_file_format1),
		cmocka_unit_test(test_version_backwards),
		cmocka_unit_test(test_server_down),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_full_load_copy),
		cmocka_unit_test(test_repeatable_read_session),
		cmocka_unit_test(test_server_at_1_1),
		cmocka_unit_test(test_server_at_1_2),
		cmocka_unit_test(test_check_error_recovers),
		cmocka_unit_test(test_large),
	};


	return _cmocka_run_group_tests("client", tests, select_tests(tests, sizeof(tests) / sizeof(tests[0])),
								   admin_setup, admin_teardown);
}
