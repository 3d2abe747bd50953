/*
 * test_redis_fake.c — libddict against a Redis that misbehaves
 * (test/fake-redis.pl): replies of the wrong type or shape, nil, errors,
 * random bytes, half a reply then a close or a hang, extra replies, pub/sub
 * messages of the wrong arity.  Whatever the fake answers, a push-mode
 * handle and an autosync handle using Redis as the version source survive
 * (under ASan/UBSan and valgrind too: run.sh), keep serving reads, count the
 * trouble in redis_errors, reconnect with backoff rather than at once, and
 * still converge through PostgreSQL; and a reply left over from one GET is
 * never taken for the answer to the next (a wrong version believed).
 *
 * The fake is started here on a free loopback port; its control file says
 * how to misbehave.  DDICT_TEST_FAKE_REDIS is the script (default
 * test/fake-redis.pl, relative to the repository root where run.sh runs).
 */
#include "common.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/wait.h>

static pid_t fake_pid = -1;
static char dir[] = "/tmp/ddict-fake-redis-XXXXXX";
static char control[128],
			stats_file[128],
			url[64];
static int	value_no = 0;

/* ---- the fake ---- */

static int
free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t	len = sizeof(a);
	int			fd = socket(AF_INET, SOCK_STREAM, 0),
				port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
		getsockname(fd, (struct sockaddr *) &a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static bool
fake_accepts(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port),
	.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int			fd = socket(AF_INET, SOCK_STREAM, 0);
	bool		ok = fd >= 0 && connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* Rewrite the control file (atomically: the fake reads it per command). */
static void
fake_mode(const char *lines)
{
	char		tmp[160];
	FILE	   *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", control);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", lines);
	fclose(f);
	assert_int_equal(rename(tmp, control), 0);
}

static long
fake_connections(void)
{
	FILE	   *f = fopen(stats_file, "r");
	long		n = 0;

	if (f)
	{
		if (fscanf(f, "%ld", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
}

static int
group_setup(void **state)
{
	const char *script = getenv("DDICT_TEST_FAKE_REDIS");
	int			port = free_port();
	char		portstr[16];

	(void) state;
	admin = admin_connect();
	if (admin == NULL || port < 0 || mkdtemp(dir) == NULL)
		return -1;
	snprintf(control, sizeof(control), "%s/control", dir);
	snprintf(stats_file, sizeof(stats_file), "%s/connections", dir);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
	snprintf(portstr, sizeof(portstr), "%d", port);
	fake_mode("ok");
	fflush(NULL);
	fake_pid = fork();
	if (fake_pid == 0)
	{
		execlp("perl", "perl", script ? script : "test/fake-redis.pl", portstr, control,
			   stats_file, (char *) NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !fake_accepts(port); i++)
		sleep_ms(25);
	return fake_accepts(port) ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void) state;
	if (fake_pid > 0)
	{
		kill(fake_pid, SIGTERM);
		waitpid(fake_pid, NULL, 0);
	}
	unlink(control);
	unlink(stats_file);
	rmdir(dir);
	PQfinish(admin);
	return 0;
}

/* ---- helpers ---- */

static ddict *
open_fake(const char *dict, ddict_mode mode)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = mode;
	o.redis_url = url;
	o.interval_ms = 100;		/* push: ping and poll period */
	o.timeout_ms = 500;			/* a hung Redis is given up soon */
	o.connect_timeout_ms = 2000;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 200;
	d = ddict_open(test_conninfo(), dict, &o);
	if (d == NULL)
		fail_msg("ddict_open(%s): %s", dict, ddict_errmsg());
	return d;
}

/* Commit a new value of key k; returns it (static buffer). */
static const char *
commit_value(const char *dict)
{
	static char v[32];

	snprintf(v, sizeof(v), "v%d", ++value_no);
	free(sqlf(admin, "SELECT ddict_set('%s', 'k', '%s')", dict, v));
	return v;
}

/* Read until k == expect (every read of an autosync handle checks). */
static bool
reads_see(ddict *d, const char *expect, int timeout_ms)
{
	int64_t		deadline = mono_ms() + timeout_ms;

	for (;;)
	{
		char	   *v = NULL;
		size_t		n;
		bool		same = ddict_get(d, "k", DDICT_NTS, &v, &n) == DDICT_OK &&
			strcmp(v, expect) == 0;

		ddict_free(v);
		if (same)
			return true;
		if (mono_ms() > deadline)
			return false;
		sleep_ms(5);
	}
}

static bool
errors_grow(ddict *d, uint64_t from, int timeout_ms)
{
	int64_t		deadline = mono_ms() + timeout_ms;

	while (stats_of(d).redis_errors <= from)
	{
		ddict_free(get_str(d, "k"));	/* an autosync read may GET */
		if (mono_ms() > deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

/* Wait for n connections, reading meanwhile (an autosync read may GET). */
static bool
connections_reach(ddict *d, long n, int timeout_ms)
{
	int64_t		deadline = mono_ms() + timeout_ms;

	while (fake_connections() < n)
	{
		ddict_free(get_str(d, "k"));
		if (mono_ms() > deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

/*
 * One misbehaviour: the handle makes `conns` more connections (so that a
 * mode with variants goes through all of them), counts errors (unless the
 * mode is legal, `errors` false), and commits made meanwhile and after
 * reach its reads through PostgreSQL.
 */
static void
survive(ddict *d, const char *dict, const char *mode, long conns, bool errors)
{
	uint64_t	e0 = stats_of(d).redis_errors;
	long		c0 = fake_connections();
	const char *v;

	print_message("# mode: %.*s\n", (int) strcspn(mode, "\n"), mode);
	fake_mode(mode);
	v = commit_value(dict);
	if (!connections_reach(d, c0 + conns, 30000))
		fail_msg("%s: %ld connections within 30 s, expected %ld", mode,
				 fake_connections() - c0, conns);
	if (errors && !errors_grow(d, e0, 10000))
	{
		ddict_stats st = stats_of(d);

		fail_msg("%s: no redis_errors counted (%llu; %llu checks, %llu by Redis; %ld connections; %s)",
				 mode, (unsigned long long) st.redis_errors, (unsigned long long) st.checks,
				 (unsigned long long) st.redis_checks, fake_connections() - c0, ddict_errmsg());
	}
	if (!reads_see(d, v, 10000))
		fail_msg("%s: the commit made meanwhile is not seen", mode);
	v = commit_value(dict);
	if (!reads_see(d, v, 10000))
		fail_msg("%s: a commit after the trouble is not seen", mode);
}

/* ---- tests ---- */

static void
test_push_survives(void **state)
{
	ddict	   *d;

	(void) state;
	fresh_dict(admin, "fake_push", "text");
	free(sqlf(admin, "SELECT ddict_set('fake_push', 'k', 'v0')"));
	fake_mode("ok");
	d = open_fake("fake_push", DDICT_PUSH);
	assert_value(d, "k", "v0");

	/* "close PING" ends the subscription made in mode ok; from then on
	 * every mode leaves the handle failing, so the next starts afresh */
	survive(d, "fake_push", "wrong SUBSCRIBE\nclose PING", 14, true);
	survive(d, "fake_push", "badmsg SUBSCRIBE", 9, true);
	survive(d, "fake_push", "nil SUBSCRIBE", 2, true);
	survive(d, "fake_push", "error SUBSCRIBE", 2, true);
	survive(d, "fake_push", "random SUBSCRIBE", 4, true);
	survive(d, "fake_push", "truncate SUBSCRIBE", 2, true);
	survive(d, "fake_push", "hang SUBSCRIBE", 2, true);
	survive(d, "fake_push", "extra SUBSCRIBE", 2, true);
	survive(d, "fake_push", "wrong GET", 7, true);
	survive(d, "fake_push", "random GET", 2, true);
	survive(d, "fake_push", "wrong PING", 4, true);
	survive(d, "fake_push", "random PING", 2, true);
	survive(d, "fake_push", "truncate PING", 2, true);
	survive(d, "fake_push", "hang PING", 2, true);
	survive(d, "fake_push", "close", 2, true);
	survive(d, "fake_push", "random", 4, true);
	fake_mode("ok");
	ddict_close(d);
}

/* A subscription that keeps misbehaving is retried with backoff. */
static void
test_push_backoff(void **state)
{
	ddict	   *d;
	long		c0,
				n;

	(void) state;
	fresh_dict(admin, "fake_backoff", "text");
	fake_mode("badmsg SUBSCRIBE");
	d = open_fake("fake_backoff", DDICT_PUSH);
	c0 = fake_connections();
	sleep_ms(2000);
	n = fake_connections() - c0;
	print_message("# %ld subscriptions in 2 s (backoff 20..200 ms)\n", n);
	assert_true(n >= 3);
	assert_true(n <= 30);
	assert_true(stats_of(d).redis_errors + 1 >= (uint64_t) n);
	fake_mode("ok");
	ddict_close(d);
}

static void
test_version_source_survives(void **state)
{
	ddict	   *d;

	(void) state;
	fresh_dict(admin, "fake_get", "text");
	free(sqlf(admin, "SELECT ddict_set('fake_get', 'k', 'v0')"));
	fake_mode("ok");
	d = open_fake("fake_get", DDICT_AUTOSYNC);
	assert_value(d, "k", "v0");

	/* connections are made on demand: each needs a failed GET first */
	survive(d, "fake_get", "wrong GET", 1, true);
	for (int i = 0; i < 7; i++)
		assert_true(reads_see(d, commit_value("fake_get"), 10000));
	survive(d, "fake_get", "nil GET", 0, false);
	survive(d, "fake_get", "error GET", 1, true);
	survive(d, "fake_get", "random GET", 1, true);
	survive(d, "fake_get", "truncate GET", 1, true);
	survive(d, "fake_get", "hang GET", 1, true);
	survive(d, "fake_get", "close GET", 1, false);
	survive(d, "fake_get", "extra GET", 1, true);
	fake_mode("ok");
	ddict_close(d);
}

/* A GET that keeps misbehaving: reads go on, reconnects back off. */
static void
test_version_source_backoff(void **state)
{
	ddict	   *d;
	long		c0,
				n,
				reads = 0;
	int64_t		end;

	(void) state;
	fresh_dict(admin, "fake_getbo", "text");
	free(sqlf(admin, "SELECT ddict_set('fake_getbo', 'k', 'v0')"));
	fake_mode("wrong GET");
	d = open_fake("fake_getbo", DDICT_AUTOSYNC);
	c0 = fake_connections();
	for (end = mono_ms() + 2000; mono_ms() < end; reads++)
		assert_value(d, "k", "v0");
	n = fake_connections() - c0;
	print_message("# %ld reads, %ld connections in 2 s (backoff 20..200 ms)\n", reads, n);
	assert_true(n <= 30);
	assert_true(reads > n);
	fake_mode("ok");
	ddict_close(d);
}

/*
 * A reply left over from one GET is not the answer to the next: the fake
 * answers every GET twice, honestly each time (the control file's value is
 * the current version).  Once the server's version moved on, the next read
 * must see the new value, not believe the stale second answer.
 */
static void
test_extra_reply_not_believed(void **state)
{
	ddict	   *d;
	char		lines[128];
	const char *v;

	(void) state;
	fresh_dict(admin, "fake_extra", "text");
	free(sqlf(admin, "SELECT ddict_set('fake_extra', 'k', 'v0')"));
	fake_mode("ok");
	d = open_fake("fake_extra", DDICT_AUTOSYNC);
	assert_value(d, "k", "v0");
	for (int round = 0; round < 5; round++)
	{
		snprintf(lines, sizeof(lines), "extra GET\nvalue %lld", (long long) ddict_version(d));
		fake_mode(lines);
		sleep_ms(100);			/* the thread's connection is ready */
		ddict_free(get_str(d, "k"));	/* one GET, answered twice */
		v = commit_value("fake_extra");
		snprintf(lines, sizeof(lines), "extra GET\nvalue %lld",
				 sql_ll(admin, "SELECT ddict_last_updated('fake_extra')"));
		fake_mode(lines);
		assert_value(d, "k", v);	/* this very read */
	}
	fake_mode("ok");
	ddict_close(d);
}

/*
 * A Redis that accepts connections and then never answers: each attempt to
 * subscribe waits timeout_ms for a reply.  Those waits happen off the
 * client's thread, so push mode still polls PostgreSQL every interval_ms:
 * every commit is visible within a few intervals, not a timeout later.
 */
static void
test_push_polls_while_redis_hangs(void **state)
{
	ddict_options o;
	ddict	   *d;
	int64_t		worst = 0;
	long		c0 = fake_connections();

	(void) state;
	fresh_dict(admin, "fake_hang", "text");
	free(sqlf(admin, "SELECT ddict_set('fake_hang', 'k', 'v0')"));
	fake_mode("hang");
	ddict_options_init(&o);
	o.mode = DDICT_PUSH;
	o.redis_url = url;
	o.interval_ms = 200;
	o.timeout_ms = 3000;		/* each attempt hangs this long */
	o.connect_timeout_ms = 2000;
	o.backoff_min_ms = 20;
	o.backoff_max_ms = 100;
	d = ddict_open(test_conninfo(), "fake_hang", &o);
	if (d == NULL)
		fail_msg("ddict_open(fake_hang): %s", ddict_errmsg());
	assert_value(d, "k", "v0");
	for (int i = 0; i < 6; i++)
	{
		const char *v = commit_value("fake_hang");
		int64_t		t0 = mono_ms();

		if (!reads_see(d, v, 10000))
			fail_msg("commit %d not seen within 10 s", i);
		if (mono_ms() - t0 > worst)
			worst = mono_ms() - t0;
		sleep_ms(150 + 290 * i % 700);	/* land anywhere in an attempt */
	}
	print_message("# hanging Redis: commits seen within %lld ms (interval 200 ms, timeout 3000 ms)\n",
				  (long long) worst);
	assert_true(worst <= 3 * 200 + 300);
	assert_true(fake_connections() - c0 >= 2);	/* Redis was tried meanwhile */
	fake_mode("ok");
	ddict_close(d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_push_survives),
		cmocka_unit_test(test_push_backoff),
		cmocka_unit_test(test_version_source_survives),
		cmocka_unit_test(test_version_source_backoff),
		cmocka_unit_test(test_extra_reply_not_believed),
		cmocka_unit_test(test_push_polls_while_redis_hangs),
	};

	return cmocka_run_group_tests_name("redis_fake", tests, group_setup, group_teardown);
}
