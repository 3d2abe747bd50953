/*
 * test_stress.c — randomized multi-process stress against a real server.
 *
 *   - SQL writer processes (plain libpq): random upserts and deletes in
 *     transactions that commit or roll back, groups of keys written together,
 *     the odd TRUNCATE;
 *   - a libddict writer process: set / delete / pop / setdefault;
 *   - in this process, reader threads sharing one autosync handle, checking
 *     that every pinned version is internally consistent (a group's keys are
 *     always equal) and that reads never fail;
 *   - a checker (main thread) that repeatedly quiesces the writers (an
 *     exclusive advisory lock; every writer transaction holds it shared),
 *     syncs a manual handle and compares it — and the shared autosync
 *     handle — with a fresh SELECT of the table: they must be equal;
 *   - a server restart in the middle (DDICT_TEST_RESTART_CMD), after which
 *     every handle must recover on its own.
 *
 * Bounded: DDICT_STRESS_SECONDS (default 15) of load, then a final check.
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/wait.h>

#define NKEYS 150
#define GROUP_LOCK 4242			/* advisory lock id */
#define N_SQL_WRITERS 3
#define N_READERS 4

static int	seconds = 15;
static int64_t t_end;

/* ---- writers (child processes) ---- */

static PGconn *
connect_retry(void)
{
	for (;;)
	{
		PGconn	   *c = PQconnectdb(test_conninfo());

		if (PQstatus(c) == CONNECTION_OK)
			return c;
		PQfinish(c);
		if (mono_ms() > t_end)
			return NULL;
		sleep_ms(50);
	}
}

/* Run SQL; 0 ok, 1 server error (expected, e.g. restart), -1 unexpected. */
static int
try_sql(PGconn **c, const char *sql)
{
	PGresult   *r = PQexec(*c, sql);
	ExecStatusType st = PQresultStatus(r);

	PQclear(r);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return 0;
	if (PQstatus(*c) != CONNECTION_OK)
	{
		PQfinish(*c);
		*c = connect_retry();
		return *c ? 1 : -1;
	}
	PQclear(PQexec(*c, "ROLLBACK"));
	return 1;
}

static int
sql_writer(int id)
{
	unsigned	rnd = (unsigned) getpid() * 2654435761u;
	PGconn	   *c = connect_retry();
	long		n = 0,
				commits = 0;
	char		sql[4096];

	if (c == NULL)
		return 2;
	while (mono_ms() < t_end)
	{
		int			ops = 1 + rand_r(&rnd) % 5;
		size_t		len;

		len = (size_t) snprintf(sql, sizeof(sql),
								"BEGIN; SELECT pg_advisory_xact_lock_shared(%d);", GROUP_LOCK);
		for (int i = 0; i < ops; i++)
		{
			int			k = rand_r(&rnd) % NKEYS,
						what = rand_r(&rnd) % 100;

			n++;
			if (what < 55)
				len += (size_t) snprintf(sql + len, sizeof(sql) - len,
										 "INSERT INTO t_stress VALUES ('k%03d', 's%d:%ld%s')"
										 " ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
										 k, id, n, what % 7 == 0 ? "\t\\n" : "");
			else if (what < 80)
				len += (size_t) snprintf(sql + len, sizeof(sql) - len,
										 "DELETE FROM t_stress WHERE key = 'k%03d';", k);
			else if (what < 95)
				len += (size_t) snprintf(sql + len, sizeof(sql) - len,
										 "INSERT INTO t_stress VALUES ('g:a', 'g%d:%ld'), ('g:b', 'g%d:%ld'),"
										 " ('g:c', 'g%d:%ld') ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
										 id, n, id, n, id, n);
			else if (what < 99)
				len += (size_t) snprintf(sql + len, sizeof(sql) - len,
										 "DELETE FROM t_stress WHERE key LIKE 'g:%%';");
			else if (rand_r(&rnd) % 4 == 0)	/* rare: it forces full reloads */
				len += (size_t) snprintf(sql + len, sizeof(sql) - len, "TRUNCATE t_stress;");
		}
		snprintf(sql + len, sizeof(sql) - len, "%s",
				 rand_r(&rnd) % 5 == 0 ? "ROLLBACK;" : "COMMIT;");
		if (try_sql(&c, sql) < 0)
			return 3;
		commits++;
		if (rand_r(&rnd) % 4 == 0)
			sleep_ms(rand_r(&rnd) % 3);
	}
	PQfinish(c);
	return 0;
}

static int
lib_writer(void)
{
	unsigned	rnd = (unsigned) getpid() * 2246822519u;
	PGconn	   *lock = connect_retry();
	ddict_options o;
	ddict	   *d;
	long		n = 0,
				bad = 0;
	char		key[16],
				val[32],
				sql[128];

	if (lock == NULL)
		return 2;
	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;
	o.backoff_max_ms = 300;
	d = ddict_open(test_conninfo(), "t_stress", &o);
	if (d == NULL)
		return 4;
	while (mono_ms() < t_end)
	{
		int			k = rand_r(&rnd) % NKEYS,
					what = rand_r(&rnd) % 4,
					rc;
		char	   *v = NULL;

		snprintf(key, sizeof(key), "k%03d", k);
		snprintf(val, sizeof(val), "c:%ld", ++n);
		snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock_shared(%d)", GROUP_LOCK);
		if (try_sql(&lock, sql) != 0)
		{
			if (lock == NULL)
				break;
			continue;
		}
		if (what == 0)
			rc = ddict_set(d, key, DDICT_NTS, val, strlen(val));
		else if (what == 1)
			rc = ddict_delete(d, key, DDICT_NTS);
		else if (what == 2)
			rc = ddict_pop(d, key, DDICT_NTS, &v, NULL);
		else
			rc = ddict_setdefault(d, key, DDICT_NTS, val, strlen(val), &v, NULL);
		ddict_free(v);
		snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock_shared(%d)", GROUP_LOCK);
		(void) try_sql(&lock, sql);
		/*
		 * Expected: connection trouble (the restart), and the deadlocks and
		 * serialization failures that concurrent writers of the same keys
		 * get from PostgreSQL (the SQL writers touch several keys per
		 * transaction in random order); the victim's write is rolled back.
		 */
		if (rc == DDICT_ESERVER && (strstr(ddict_errmsg(), "40P01") != NULL ||
									strstr(ddict_errmsg(), "40001") != NULL))
			rc = DDICT_OK;
		if (rc < 0 && rc != DDICT_ECONN && rc != DDICT_ETIMEDOUT)
		{
			fprintf(stderr, "# lib writer: unexpected %d: %s\n", rc, ddict_errmsg());
			bad++;
		}
		if (rc == DDICT_ECONN)
			sleep_ms(20);
	}
	ddict_close(d);
	PQfinish(lock);
	return bad ? 5 : 0;
}

/* ---- readers (threads of this process) ---- */

typedef struct reader
{
	ddict	   *d;
	atomic_int *stop;
	long		reads;
	long		bad;
	long		stale_reads;
} reader;

static bool
well_formed(const char *v, size_t n)
{
	return n >= 3 && (v[0] == 's' || v[0] == 'c' || v[0] == 'g') &&
		(v[1] == ':' || (v[1] >= '0' && v[1] <= '9'));
}

static void *
reader_main(void *p)
{
	reader	   *r = p;
	unsigned	rnd = (unsigned) (uintptr_t) p;

	while (!atomic_load(r->stop))
	{
		ddict_snapshot *s = ddict_pin(r->d);
		const char *a,
				   *b,
				   *c,
				   *v;
		size_t		la,
					lb,
					lc,
					lv;
		int			ra = ddict_snapshot_get(s, "g:a", 3, &a, &la),
					rb = ddict_snapshot_get(s, "g:b", 3, &b, &lb),
					rc = ddict_snapshot_get(s, "g:c", 3, &c, &lc);
		char		key[16];

		/* written together, deleted together: one version shows all or none */
		if (ra != rb || rb != rc ||
			(ra == DDICT_OK && (la != lb || lb != lc || memcmp(a, b, la) || memcmp(b, c, lb))))
		{
			fprintf(stderr, "# inconsistent group in version %lld\n",
					(long long) ddict_snapshot_version(s));
			r->bad++;
		}
		for (int i = 0; i < 5; i++)
		{
			snprintf(key, sizeof(key), "k%03d", rand_r(&rnd) % NKEYS);
			if (ddict_snapshot_get(s, key, DDICT_NTS, &v, &lv) == DDICT_OK && !well_formed(v, lv))
				r->bad++;
		}
		ddict_unpin(s);

		/* plain reads: never an error, even while the server is away */
		snprintf(key, sizeof(key), "k%03d", rand_r(&rnd) % NKEYS);
		{
			char	   *val = NULL;
			size_t		n;
			int			g = ddict_get(r->d, key, DDICT_NTS, &val, &n);

			if (g < 0 || (g == DDICT_OK && !well_formed(val, n)))
				r->bad++;
			ddict_free(val);
		}
		if (ddict_is_stale(r->d))
			r->stale_reads++;
		r->reads += 2;
		/* Like a real service, do something else now and then: under
		 * valgrind (one thread at a time) spinning readers would starve the
		 * checker. */
		if ((r->reads & 511) == 0)
			sleep_ms(1);
	}
	return NULL;
}

/* ---- the checker ---- */

typedef struct kv
{
	char	   *k,
			   *v;
	size_t		kl,
				vl;
} kv;

static int
kv_cmp(const void *a, const void *b)
{
	const kv   *x = a,
			   *y = b;
	size_t		n = x->kl < y->kl ? x->kl : y->kl;
	int			c = memcmp(x->k, y->k, n);

	return c ? c : (x->kl > y->kl) - (x->kl < y->kl);
}

/* Compare a pinned snapshot with the table; returns the number of keys, or
 * -1 after printing the first difference. */
static long
compare(ddict_snapshot *s, PGresult *r, const char *who)
{
	long		n = PQntuples(r);
	kv		   *rows = calloc((size_t) n + 1, sizeof(kv)),
			   *mine = calloc(ddict_snapshot_len(s) + 1, sizeof(kv));
	size_t		pos = 0,
				m = 0;
	const char *k,
			   *v;
	size_t		kl,
				vl;
	long		result = n;

	for (long i = 0; i < n; i++)
		rows[i] = (kv) {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
		(size_t) PQgetlength(r, i, 0), (size_t) PQgetlength(r, i, 1)};
	while (ddict_snapshot_next(s, &pos, &k, &kl, &v, &vl))
		mine[m++] = (kv) {(char *) k, (char *) v, kl, vl};
	qsort(rows, (size_t) n, sizeof(kv), kv_cmp);
	qsort(mine, m, sizeof(kv), kv_cmp);
	if (m != (size_t) n || m != ddict_snapshot_len(s))
	{
		fprintf(stderr, "# %s: %zu keys cached (len %zu), %ld in the table\n", who, m,
				ddict_snapshot_len(s), n);
		result = -1;
	}
	for (size_t i = 0; result >= 0 && i < m; i++)
		if (kv_cmp(&rows[i], &mine[i]) != 0 || rows[i].vl != mine[i].vl ||
			memcmp(rows[i].v, mine[i].v, mine[i].vl) != 0)
		{
			fprintf(stderr, "# %s: differs at key %.*s: cache \"%.*s\", table \"%.*s\"\n", who,
					(int) mine[i].kl, mine[i].k, (int) mine[i].vl, mine[i].v,
					(int) rows[i].vl, rows[i].v);
			result = -1;
		}
	free(rows);
	free(mine);
	return result;
}

typedef struct check_result
{
	int			rounds;
	int			failed;
	int			skipped;
} check_result;

/* One quiesced comparison; returns 1 checked, 0 skipped (server away). */
static int
check_round(PGconn **admin, ddict *chk, ddict *shared, check_result *res)
{
	char		sql[128];
	PGresult   *r;
	ddict_snapshot *s;
	int			rc;

	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d)", GROUP_LOCK);
	if (*admin == NULL || try_sql(admin, sql) != 0)
	{
		if (*admin == NULL)
			*admin = connect_retry();
		res->skipped++;
		return 0;
	}
	/* Writers are quiet: every committed change is visible and versioned. */
	rc = ddict_sync(chk);
	r = PQexec(*admin, "SELECT key, value FROM t_stress");
	if (rc >= 0 && PQresultStatus(r) == PGRES_TUPLES_OK)
	{
		res->rounds++;
		s = ddict_pin(chk);
		if (compare(s, r, "manual handle after ddict_sync") < 0)
			res->failed++;
		ddict_unpin(s);
		/*
		 * The shared autosync handle: ddict_sync() waits for a check that a
		 * reader thread may have in flight (started before the writers were
		 * quiesced; reads coalesce with it) and then makes its own.
		 */
		if (ddict_sync(shared) >= 0)
		{
			s = ddict_pin(shared);
			if (compare(s, r, "shared autosync handle") < 0)
				res->failed++;
			ddict_unpin(s);
		}
	}
	else
		res->skipped++;
	PQclear(r);
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)", GROUP_LOCK);
	(void) try_sql(admin, sql);
	return rc >= 0;
}

static void
test_stress(void **state)
{
	pid_t		kids[N_SQL_WRITERS + 1];
	pthread_t	th[N_READERS];
	reader		rd[N_READERS];
	atomic_int	stop = 0;
	PGconn	   *admin;
	ddict_options o;
	ddict	   *chk,
			   *shared;
	check_result res = {0};
	bool		restarted = false,
				recovered = false;
	int64_t		t_start = mono_ms();
	ddict_stats sc,
				ss;
	long		reads = 0,
				bad = 0,
				stale_reads = 0;
	int			kids_failed = 0;

	(void) state;
	if (getenv("DDICT_STRESS_SECONDS"))
		seconds = atoi(getenv("DDICT_STRESS_SECONDS"));
	t_end = t_start + seconds * 1000L;
	admin = admin_connect();
	assert_non_null(admin);
	fresh_dict(admin, "t_stress", "text");

	/* Fork before any thread exists. */
	fflush(NULL);
	for (int i = 0; i <= N_SQL_WRITERS; i++)
	{
		pid_t		p = fork();

		assert_true(p >= 0);
		if (p == 0)
		{
			PQfinish(admin);	/* the child's copy: closing it only closes the socket */
			_exit(i < N_SQL_WRITERS ? sql_writer(i) : lib_writer());
		}
		kids[i] = p;
	}

	ddict_options_init(&o);
	o.backoff_max_ms = 300;
	o.timeout_ms = 3000;
	shared = ddict_open(test_conninfo(), "t_stress", &o);
	assert_non_null(shared);
	o.mode = DDICT_MANUAL;
	chk = ddict_open(test_conninfo(), "t_stress", &o);
	assert_non_null(chk);
	for (int i = 0; i < N_READERS; i++)
	{
		rd[i] = (reader) {.d = shared, .stop = &stop};
		pthread_create(&th[i], NULL, reader_main, &rd[i]);
	}

	while (mono_ms() < t_end)
	{
		/* unquiesced syncs: deltas under concurrent, out-of-order commits */
		for (int i = 0; i < 5; i++)
		{
			(void) ddict_sync(chk);
			sleep_ms(10);
		}
		check_round(&admin, chk, shared, &res);
		if (!restarted && mono_ms() - t_start > seconds * 400L &&
			getenv("DDICT_TEST_RESTART_CMD"))
		{
			print_message("# restarting the server\n");
			assert_int_equal(run_env_cmd("DDICT_TEST_RESTART_CMD"), 0);
			restarted = true;
			PQfinish(admin);
			admin = connect_retry();
		}
		if (restarted && !recovered && check_round(&admin, chk, shared, &res))
			recovered = true;
	}

	/*
	 * Under valgrind the run can end before the first full check after the
	 * restart got its turn: give it a bounded grace (the check itself, cache
	 * equal to a fresh SELECT, is unchanged).
	 */
	for (int64_t until = mono_ms() + 30000;
		 restarted && !recovered && mono_ms() < until; sleep_ms(200))
		if (check_round(&admin, chk, shared, &res))
			recovered = true;

	/* Writers stop at t_end; reap them. */
	for (int i = 0; i <= N_SQL_WRITERS; i++)
	{
		int			st = 0;
		int64_t		deadline = mono_ms() + 20000;

		while (waitpid(kids[i], &st, WNOHANG) == 0)
		{
			if (mono_ms() > deadline)
			{
				kill(kids[i], SIGKILL);
				waitpid(kids[i], &st, 0);
				break;
			}
			sleep_ms(20);
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		{
			fprintf(stderr, "# writer %d failed (status %d)\n", i, st);
			kids_failed++;
		}
	}
	/* Final: quiet table, both handles must equal it. */
	for (int i = 0; i < 50 && !check_round(&admin, chk, shared, &res); i++)
		sleep_ms(100);
	atomic_store(&stop, 1);
	for (int i = 0; i < N_READERS; i++)
	{
		pthread_join(th[i], NULL);
		reads += rd[i].reads;
		bad += rd[i].bad;
		stale_reads += rd[i].stale_reads;
	}
	sc = stats_of(chk);
	ss = stats_of(shared);
	print_message("# %lld ms: %d quiesced checks (%d skipped while the server was away), "
				  "%ld reads (%ld while stale), %d writer failures\n",
				  (long long) (mono_ms() - t_start), res.rounds, res.skipped, reads,
				  stale_reads, kids_failed);
	print_message("# checker: %llu checks, %llu deltas, %llu reloads, %llu rows, %llu reconnects,"
				  " %llu compactions\n",
				  (unsigned long long) sc.checks, (unsigned long long) sc.deltas,
				  (unsigned long long) sc.reloads, (unsigned long long) sc.rows_fetched,
				  (unsigned long long) sc.reconnects, (unsigned long long) sc.compactions);
	print_message("# shared: %llu checks, %llu coalesced, %llu deltas, %llu reloads,"
				  " %llu reconnects, version %lld, %llu keys\n",
				  (unsigned long long) ss.checks, (unsigned long long) ss.coalesced,
				  (unsigned long long) ss.deltas, (unsigned long long) ss.reloads,
				  (unsigned long long) ss.reconnects, (long long) ss.version,
				  (unsigned long long) ss.len);

	assert_int_equal(res.failed, 0);
	assert_int_equal(bad, 0);
	assert_int_equal(kids_failed, 0);
	/* Under valgrind everything is ~50x slower: DDICT_STRESS_MIN lowers the
	 * bars for the amount of work done (never for correctness). */
	assert_true(res.rounds >= (getenv("DDICT_STRESS_MIN") ? atoi(getenv("DDICT_STRESS_MIN")) : 5));
	assert_true(reads > 1000);
	assert_true((long) sc.deltas >= (getenv("DDICT_STRESS_MIN") ? 0 : 10));
	if (restarted)
	{
		assert_true(recovered);
		assert_true(sc.reconnects >= 1);
		assert_true(ss.reconnects >= 1);
		assert_true(sc.reloads >= 2);	/* the epoch changed: a full reload */
		assert_int_equal(ddict_is_stale(shared), 0);
	}
	ddict_close(chk);
	ddict_close(shared);
	PQfinish(admin);
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stress),
	};


	return _cmocka_run_group_tests("stress", tests, select_tests(tests, sizeof(tests) / sizeof(tests[0])),
								   NULL, NULL);
}
