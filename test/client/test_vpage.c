/*
 * test_vpage.c — autosync checks answered by the server's versions page
 * (sync.c; README "The versions page"), against the real server of run.sh,
 * reached over its Unix socket (the page lies beside it).
 *
 * Each property of issue 11 has a test: nothing changed → no round trip;
 * strict from many threads and processes (a read that starts after a writer
 * was told COMMIT sees it; no coalescing); never stale after an immediate
 * stop, a restart and writes while clients read; a dropped dict's slot
 * reused by another; the mapping is read-only; fallback (option "off", a
 * path that is not a page, TCP) with the stats field saying which check.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "common.h"

#define DD_TEST_REBIND_MS 1100	/* the client's DD_VPAGE_REBIND_MS, and a bit */


static ddict_client *
client_with(const char *conninfo, const char *page)
{
	ddict_client_options co;
	ddict_client *c;

	ddict_client_options_init(&co);
	co.versions_page = page;
	c = ddict_client_open(conninfo, &co);
	if (c == NULL)
		fail_msg("ddict_client_open: %s", ddict_errmsg());
	return c;
}

static ddict *
open_on(ddict_client *c, const char *dict)
{
	ddict	   *d = ddict_open_on(c, dict, NULL);

	if (d == NULL)
		fail_msg("ddict_open_on(%s): %s", dict, ddict_errmsg());
	return d;
}

static long long
get_ll(ddict *d, const char *key)
{
	char	   *v = get_str(d, key);
	long long	n = v ? atoll(v) : -1;

	ddict_free(v);
	return n;
}

/* Over the socket: the page answers, and 2000 reads with nothing changed
 * make no round trip; a commit is seen by the next read. */
static void
test_page_answers(void **state)
{
	ddict_client *c;
	ddict	   *d;
	ddict_stats s0,
				s1;

	(void) state;
	fresh_dict(admin, "vp_a", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_a', 'k', '1')"));
	c = client_with(test_conninfo(), NULL);
	d = open_on(c, "vp_a");
	assert_value(d, "k", "1");
	assert_value(d, "k", "1");	/* the second check finds the page open */
	s0 = stats_of(d);
	assert_int_equal(s0.versions_page, 1);
	for (int i = 0; i < 2000; i++)
		assert_int_equal(ddict_get(d, "k", 1, NULL, NULL), DDICT_OK);
	s1 = stats_of(d);
	/* at most one rebinding round trip (DD_VPAGE_REBIND_MS) in between */
	assert_true(s1.checks - s0.checks <= 1);
	free(sqlf(admin, "SELECT ddict_set('vp_a', 'k', '2')"));
	assert_value(d, "k", "2");
	ddict_close(d);
	ddict_client_close(c);
}

/* Fallback: "off", a file that is not a page, a TCP connection — the round
 * trip silently, stats say so, reads are still current. */
static void
test_fallback(void **state)
{
	char		ci[1024],
				bogus[] = "/tmp/ddict_vp_bogusXXXXXX";
	int			fd = mkstemp(bogus);
	const char *port = getenv("DDICT_TEST_PORT"),
			   *db = getenv("DDICT_TEST_DBNAME");

	(void) state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a versions page, not at all............", 43), 43);
	close(fd);
	fresh_dict(admin, "vp_b", "text");
	for (int k = 0; k < 3; k++)
	{
		ddict_client *c;
		ddict	   *d;
		ddict_stats s0,
					s1;

		if (k == 2)
		{
			if (port == NULL || db == NULL)
				continue;
			snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%s dbname=%s user=postgres", port, db);
		}
		c = client_with(k == 2 ? ci : test_conninfo(), k == 0 ? "off" : k == 1 ? bogus : NULL);
		d = open_on(c, "vp_b");
		assert_value(d, "k", NULL);
		s0 = stats_of(d);
		assert_int_equal(s0.versions_page, 0);
		free(sqlf(admin, "SELECT ddict_set('vp_b', 'k', '%d')", k));
		assert_int_equal(get_ll(d, "k"), k);
		s1 = stats_of(d);
		assert_true(s1.checks > s0.checks);	/* round trips */
		assert_int_equal(s1.versions_page, 0);
		free(sqlf(admin, "DELETE FROM vp_b"));
		ddict_close(d);
		ddict_client_close(c);
	}
	unlink(bogus);
}

/* The mapping is read-only: /proc/self/maps shows the page r--s. */
static void
test_read_only(void **state)
{
	ddict_client *c;
	ddict	   *d;
	FILE	   *f;
	char		line[1024];
	int			found = 0;

	(void) state;
	fresh_dict(admin, "vp_c", "text");
	c = client_with(test_conninfo(), NULL);
	d = open_on(c, "vp_c");
	assert_value(d, "x", NULL);
	assert_int_equal(stats_of(d).versions_page, 1);
	f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, ".ddict"))
		{
			char		perms[8] = "";

			assert_int_equal(sscanf(line, "%*s %7s", perms), 1);
			assert_string_equal(perms, "r--s");
			found++;
		}
	fclose(f);
	assert_true(found >= 1);
	ddict_close(d);
	ddict_client_close(c);
}

/*
 * Strict: writers commit n and then publish "n is committed"; a read that
 * starts after that must see >= n.  Readers in threads of one process (one
 * shared client, so checks would coalesce) and in other processes.
 */
typedef struct strict_shared
{
	atomic_llong committed;
	atomic_int	stop;
	atomic_long bad;
	atomic_long reads;
} strict_shared;

typedef struct strict_arg
{
	strict_shared *sh;
	ddict	   *d;
} strict_arg;

static void *
strict_reader(void *p)
{
	strict_arg *a = p;

	while (!atomic_load(&a->sh->stop))
	{
		long long	before = atomic_load(&a->sh->committed),
					got = get_ll(a->d, "n");

		if (got < before)
			atomic_fetch_add(&a->sh->bad, 1);
		atomic_fetch_add(&a->sh->reads, 1);
	}
	return NULL;
}

static void
strict_readers(strict_shared *sh, int nthreads)
{
	ddict_client *c = client_with(test_conninfo(), NULL);
	ddict	   *d = open_on(c, "vp_s");
	pthread_t	t[8];
	strict_arg	a = {sh, d};

	for (int i = 0; i < nthreads; i++)
		pthread_create(&t[i], NULL, strict_reader, &a);
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	if (stats_of(d).versions_page != 1)
		atomic_fetch_add(&sh->bad, 1000000);
	ddict_close(d);
	ddict_client_close(c);
}

static void
test_strict(void **state)
{
	strict_shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
							 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t		kids[3];
	PGconn	   *w;

	(void) state;
	assert_true(sh != MAP_FAILED);
	fresh_dict(admin, "vp_s", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_s', 'n', '0')"));
	atomic_init(&sh->committed, 0);
	atomic_init(&sh->stop, 0);
	atomic_init(&sh->bad, 0);
	atomic_init(&sh->reads, 0);
	for (int i = 0; i < 3; i++)
	{
		kids[i] = fork();
		if (kids[i] == 0)
		{
			strict_readers(sh, 2);
			_exit(0);
		}
	}
	w = admin_connect();		/* after the fork: not the children's */
	assert_non_null(w);
	{
		pthread_t	t[3];
		strict_arg	a;
		ddict_client *c = client_with(test_conninfo(), NULL);

		a.sh = sh;
		a.d = open_on(c, "vp_s");
		for (int i = 0; i < 3; i++)
			assert_int_equal(pthread_create(&t[i], NULL, strict_reader, &a), 0);
		sleep_ms(300);
		for (long long n = 1; n <= 300; n++)
		{
			free(sqlf(w, "SELECT ddict_set('vp_s', 'n', '%lld')", n));
			atomic_store(&sh->committed, n);	/* told COMMIT */
			if (n % 50 == 0)
				sleep_ms(20);
		}
		atomic_store(&sh->stop, 1);
		for (int i = 0; i < 3; i++)
			pthread_join(t[i], NULL);
		assert_int_equal(stats_of(a.d).versions_page, 1);
		ddict_close(a.d);
		ddict_client_close(c);
	}
	for (int i = 0; i < 3; i++)
	{
		int			st;

		assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	print_message("# strict: %ld reads, %ld stale\n", atomic_load(&sh->reads), atomic_load(&sh->bad));
	assert_int_equal(atomic_load(&sh->bad), 0);
	assert_true(atomic_load(&sh->reads) > 300);
	PQfinish(w);
	munmap(sh, sizeof(*sh));
}

/*
 * Never stale after an immediate stop and a restart: a client that saw the
 * page before must, after the restart and new writes, see those writes
 * (the new epoch / the restarted page), while another process reads.
 */
static void
test_restart(void **state)
{
	ddict_client *c;
	ddict	   *d;
	PGconn	   *w;
	long long	v = -1;

	(void) state;
	if (getenv("DDICT_TEST_IMMEDIATE_STOP_CMD") == NULL)
		skip();
	fresh_dict(admin, "vp_r", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_r', 'n', '1')"));
	c = client_with(test_conninfo(), NULL);
	d = open_on(c, "vp_r");
	assert_int_equal(get_ll(d, "n"), 1);
	assert_int_equal(get_ll(d, "n"), 1);
	assert_int_equal(stats_of(d).versions_page, 1);
	PQfinish(admin);
	assert_int_equal(run_env_cmd("DDICT_TEST_IMMEDIATE_STOP_CMD"), 0);
	/* while down: reads serve the snapshot, never an error */
	assert_int_equal(get_ll(d, "n"), 1);
	assert_int_equal(run_env_cmd("DDICT_TEST_START_CMD"), 0);
	admin = admin_connect();
	assert_non_null(admin);
	w = admin_connect();
	for (long long n = 2; n <= 50; n++)
	{
		free(sqlf(w, "SELECT ddict_set('vp_r', 'n', '%lld')", n));
		/* told COMMIT: the next read must see it (retry only while the
		 * client's reconnect backoff keeps it from the server) */
		for (int t = 0; t < 100 && (v = get_ll(d, "n")) < n; t++)
			sleep_ms(20);
		assert_int_equal(v, n);
		if (n > 5)
			assert_int_equal(get_ll(d, "n"), n);
	}
	/* the new page is read again (the new epoch's slot) */
	assert_int_equal(get_ll(d, "n"), 50);
	sleep_ms(DD_TEST_REBIND_MS);
	for (int t = 0; t < 100 && !stats_of(d).versions_page; t++)
	{
		assert_int_equal(get_ll(d, "n"), 50);
		sleep_ms(30);
	}
	assert_int_equal(stats_of(d).versions_page, 1);
	PQfinish(w);
	ddict_close(d);
	ddict_client_close(c);
}

/* A dropped dict's slot taken by another; the name re-created: the cached
 * slot is not believed, the new contents are seen. */
static void
test_slot_reuse(void **state)
{
	ddict_client *c;
	ddict	   *d;

	(void) state;
	fresh_dict(admin, "vp_u", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_u', 'k', 'old')"));
	c = client_with(test_conninfo(), NULL);
	d = open_on(c, "vp_u");
	assert_value(d, "k", "old");
	assert_value(d, "k", "old");
	assert_int_equal(stats_of(d).versions_page, 1);
	free(sqlf(admin, "DROP TABLE vp_u"));
	fresh_dict(admin, "vp_u2", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_u2', 'z', 'other')"));
	fresh_dict(admin, "vp_u", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_u', 'k', 'new')"));
	assert_value(d, "k", "new");
	assert_value(d, "k", "new");
	assert_int_equal(stats_of(d).versions_page, 1);
	ddict_close(d);
	ddict_client_close(c);
}

/*
 * A change callback of one dict that reads another dict the page shows as
 * changed: its thread holds the client's lock, so the read must not wait
 * for a check (it would wait for itself) — it serves the snapshot, and the
 * next read outside the callback sees the change.
 */
typedef struct cb_arg
{
	ddict	   *other;
	long long	seen;
	int			calls;
} cb_arg;

static void
read_other_cb(const ddict_change *change, void *arg)
{
	cb_arg	   *a = arg;

	(void) change;
	a->seen = get_ll(a->other, "n");
	a->calls++;
}

static void
test_callback_reads_other(void **state)
{
	ddict_client *c;
	ddict	   *a,
			   *b;
	ddict_options o;
	cb_arg		arg = {NULL, -1, 0};

	(void) state;
	fresh_dict(admin, "vp_cb_a", "text");
	fresh_dict(admin, "vp_cb_b", "text");
	free(sqlf(admin, "SELECT ddict_set('vp_cb_a', 'n', '1')"));
	c = client_with(test_conninfo(), NULL);
	a = open_on(c, "vp_cb_a");
	assert_int_equal(get_ll(a, "n"), 1);
	assert_int_equal(get_ll(a, "n"), 1);
	assert_int_equal(stats_of(a).versions_page, 1);
	ddict_options_init(&o);
	o.on_change = read_other_cb;
	o.on_change_arg = &arg;
	b = ddict_open_on(c, "vp_cb_b", &o);
	assert_non_null(b);
	arg.other = a;
	free(sqlf(admin, "BEGIN; SELECT ddict_set('vp_cb_a', 'n', '2');"
			  " SELECT ddict_set('vp_cb_b', 'k', 'x'); COMMIT"));
	alarm(20);					/* a self-deadlock fails here, not forever */
	assert_value(b, "k", "x");	/* b's check runs the callback */
	alarm(0);
	assert_true(arg.calls >= 1);
	assert_true(arg.seen == 1 || arg.seen == 2);
	assert_int_equal(get_ll(a, "n"), 2);
	ddict_close(b);
	ddict_close(a);
	ddict_client_close(c);
}

int
main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_answers),
		cmocka_unit_test(test_fallback),
		cmocka_unit_test(test_read_only),
		cmocka_unit_test(test_strict),
		cmocka_unit_test(test_slot_reuse),
		cmocka_unit_test(test_restart),
		cmocka_unit_test(test_callback_reads_other),
	};

	signal(SIGPIPE, SIG_IGN);
	return _cmocka_run_group_tests("vpage", tests, select_tests(tests, sizeof(tests) / sizeof(tests[0])),
								   admin_setup, admin_teardown);
}
