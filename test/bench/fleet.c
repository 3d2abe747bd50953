/*
 * fleet.c — the fleet benchmark's processes (test/bench/fleet.sh, issue 10).
 *
 *   fleet client CONNINFO REDIS_URL NDICTS PREFIX DIR
 *       one process of the fleet: one ddict_client, NDICTS push dicts
 *       PREFIX0..; writes DIR/ready.<pid> once every dict follows Redis,
 *       records commit-to-visible (wall clock now - the version, which is
 *       the commit's time in us) for every change of key "k", and on
 *       SIGTERM writes DIR/lat.<pid> ("<n seen> <n samples>" then one
 *       latency in us per line) and exits.
 *   fleet writer CONNINFO NDICTS PREFIX RATE COUNT
 *       COUNT commits of key "k" at RATE per second, round robin over the
 *       dicts; prints the number committed.
 *   fleet sub HOST PORT CHANNEL DIR
 *   fleet publish HOST PORT CHANNEL RATE COUNT
 *       the floor: a bare hiredis subscriber per process (no libddict, no
 *       PostgreSQL), and COUNT PUBLISHes at RATE of the wall clock padded
 *       to the size of a one-key delivery; the subscribers record
 *       now - the published clock as the clients do.
 *
 * Clients set idle_close_ms = 1000: with published changes an idle process
 * holds no PostgreSQL connection (fleet.sh's idle column counts them).
 * Both stop by themselves: a client that hears nothing for 10 minutes
 * exits (fleet.sh also kills them by PID).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "libddict.h"

#define MAX_SAMPLES 100000

typedef struct fleet_dict
{
	_Atomic(ddict *) d;
} fleet_dict;

static int64_t samples[MAX_SAMPLES];
static atomic_int nsamples;
static atomic_long seen;

static void write_samples(const char *dir);

/* Sleep until *next + 1/rate s (CLOCK_MONOTONIC), which becomes *next. */
static void
pace(struct timespec *next, double rate)
{
	next->tv_nsec += (long) (1e9 / rate);
	while (next->tv_nsec >= 1000000000L)
	{
		next->tv_nsec -= 1000000000L;
		next->tv_sec++;
	}
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
}

static int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
on_change(const ddict_change *ch, void *arg)
{
	fleet_dict *f = arg;
	ddict	   *d = atomic_load(&f->d);
	int			i;

	if (d == NULL || ch->keylen != 1 || ch->key[0] != 'k')
		return;
	atomic_fetch_add(&seen, 1);
	i = atomic_fetch_add(&nsamples, 1);
	if (i < MAX_SAMPLES)
		samples[i] = wall_us() - ddict_version(d);
}

static int
client_main(int argc, char **argv)
{
	const char *conninfo = argv[2],
			   *rurl = argv[3],
			   *prefix = argv[5],
			   *dir = argv[6];
	int			n = atoi(argv[4]);
	ddict_client_options co;
	ddict_client *cl;
	fleet_dict *f = calloc((size_t) n, sizeof(*f));
	ddict	  **d = calloc((size_t) n, sizeof(*d));
	sigset_t	set;
	char		path[512];
	FILE	   *out;
	int			sig;
	struct timespec tmo = {600, 0};

	(void) argc;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	ddict_client_options_init(&co);
	co.redis_url = rurl;
	co.interval_ms = 1000;
	co.timeout_ms = 10000;
	co.connect_timeout_ms = 30000;
	co.backoff_min_ms = 50;
	co.backoff_max_ms = 2000;
	/* published changes need no server connection while nothing is missed */
	co.idle_close_ms = 1000;
	if ((cl = ddict_client_open(conninfo, &co)) == NULL)
	{
		fprintf(stderr, "fleet: client: %s\n", ddict_errmsg());
		return 1;
	}
	for (int i = 0; i < n; i++)
	{
		ddict_options o;
		char		name[128];

		ddict_options_init(&o);
		o.mode = DDICT_PUSH;
		o.on_change = on_change;
		o.on_change_arg = &f[i];
		snprintf(name, sizeof(name), "%s%d", prefix, i);
		if ((d[i] = ddict_open_on(cl, name, &o)) == NULL)
		{
			fprintf(stderr, "fleet: open %s: %s\n", name, ddict_errmsg());
			return 1;
		}
		atomic_store(&f[i].d, d[i]);
	}
	/* every dict follows Redis (its stream, or its channel) */
	for (int tries = 0;; tries++)
	{
		int			ok = 0;

		for (int i = 0; i < n; i++)
		{
			ddict_stats s;

			ok += ddict_get_stats(d[i], &s) == DDICT_OK && s.redis;
		}
		if (ok == n)
			break;
		if (tries > 6000)
		{
			fprintf(stderr, "fleet: %d of %d dicts not on Redis after 60 s\n", n - ok, n);
			break;
		}
		nanosleep(&(struct timespec) {0, 10000000}, NULL);
	}
	/* from here on SIGTERM means: write the figures and exit (before, it
	 * kills: fleet.sh may stop a process that never got ready) */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	snprintf(path, sizeof(path), "%s/ready.%d", dir, (int) getpid());
	if ((out = fopen(path, "w")) != NULL)
		fclose(out);
	do
		sig = sigtimedwait(&set, NULL, &tmo);
	while (sig < 0 && errno == EINTR);
	write_samples(dir);
	for (int i = 0; i < n && getenv("FLEET_DEBUG"); i++)
	{
		ddict_stats s;

		ddict_get_stats(d[i], &s);
		fprintf(stderr, "dict %d: redis %d pushes %llu checks %llu deltas %llu errors %llu: %s\n", i,
				s.redis, (unsigned long long) s.pushes, (unsigned long long) s.checks,
				(unsigned long long) s.deltas, (unsigned long long) s.errors, s.last_error);
	}
	for (int i = 0; i < n; i++)
		ddict_close(d[i]);
	ddict_client_close(cl);
	free(d);
	free(f);
	return 0;
}

static int
writer_main(int argc, char **argv)
{
	PGconn	   *c = PQconnectdb(argv[2]);
	int			n = atoi(argv[3]),
				count = atoi(argv[6]);
	double		rate = atof(argv[5]);
	const char *prefix = argv[4];
	struct timespec next;
	int			done = 0;

	(void) argc;
	if (PQstatus(c) != CONNECTION_OK || rate <= 0)
	{
		fprintf(stderr, "fleet: writer: %s", PQerrorMessage(c));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (int i = 0; i < count; i++)
	{
		char		q[256];
		PGresult   *r;

		/* a value never written before: an UPDATE to the same value is no change */
		snprintf(q, sizeof(q), "UPDATE %s%d SET value = '%d-%lld' WHERE key = 'k' /* fleet writer */",
				 prefix, i % n, i, (long long) wall_us());
		r = PQexec(c, q);
		done += PQresultStatus(r) == PGRES_COMMAND_OK;
		PQclear(r);
		pace(&next, rate);
	}
	printf("%d\n", done);
	PQfinish(c);
	return 0;
}

/* The latencies, as client_main writes them. */
static void
write_samples(const char *dir)
{
	char		path[512];
	FILE	   *out;

	snprintf(path, sizeof(path), "%s/lat.%d", dir, (int) getpid());
	if ((out = fopen(path, "w")) != NULL)
	{
		int			m = atomic_load(&nsamples);

		if (m > MAX_SAMPLES)
			m = MAX_SAMPLES;
		fprintf(out, "%ld %d\n", atomic_load(&seen), m);
		for (int i = 0; i < m; i++)
			fprintf(out, "%lld\n", (long long) samples[i]);
		fclose(out);
	}
}

static volatile sig_atomic_t sub_stop;

static void
on_term(int sig)
{
	(void) sig;
	sub_stop = 1;
}

static int
sub_main(char **argv)
{
	struct timeval tv = {30, 0};
	redisContext *c = redisConnectWithTimeout(argv[2], atoi(argv[3]), tv);
	redisReply *r;
	char		path[512];
	FILE	   *out;
	struct sigaction sa = {.sa_handler = on_term};

	sigaction(SIGTERM, &sa, NULL);	/* no SA_RESTART: the read returns */
	if (c == NULL || c->err || (r = redisCommand(c, "SUBSCRIBE %s", argv[4])) == NULL)
	{
		fprintf(stderr, "fleet: sub: %s\n", c ? c->errstr : "out of memory");
		return 1;
	}
	freeReplyObject(r);
	snprintf(path, sizeof(path), "%s/ready.%d", argv[5], (int) getpid());
	if ((out = fopen(path, "w")) != NULL)
		fclose(out);
	while (!sub_stop)
	{
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		void	   *reply = NULL;

		if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
			break;
		if (reply == NULL)
		{
			/* SIGTERM interrupts the wait, not a blocking read (hiredis
			 * retries on EINTR) */
			if (poll(&pfd, 1, 200) > 0 && redisBufferRead(c) != REDIS_OK)
				break;
			continue;
		}
		r = reply;
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			r->element[2]->type == REDIS_REPLY_STRING)
		{
			int			i = atomic_fetch_add(&nsamples, 1);

			atomic_fetch_add(&seen, 1);
			if (i < MAX_SAMPLES)
				samples[i] = wall_us() - atoll(r->element[2]->str);
		}
		freeReplyObject(r);
	}
	write_samples(argv[5]);
	redisFree(c);
	return 0;
}

static int
publish_main(char **argv)
{
	struct timeval tv = {30, 0};
	redisContext *c = redisConnectWithTimeout(argv[2], atoi(argv[3]), tv);
	double		rate = atof(argv[5]);
	int			count = atoi(argv[6]),
				done = 0;
	struct timespec next;

	if (c == NULL || c->err || rate <= 0)
	{
		fprintf(stderr, "fleet: publish: %s\n", c ? c->errstr : "bad rate");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (int i = 0; i < count; i++)
	{
		char		msg[320];
		redisReply *r;

		/* "<us> " + padding: a one-key delivery is about 300 bytes */
		snprintf(msg, sizeof(msg), "%lld %0280d", (long long) wall_us(), 0);
		r = redisCommand(c, "PUBLISH %s %s", argv[4], msg);
		done += r && r->type == REDIS_REPLY_INTEGER;
		if (r)
			freeReplyObject(r);
		pace(&next, rate);
	}
	printf("%d\n", done);
	redisFree(c);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "sub") == 0)
		return sub_main(argv);
	if (argc == 7 && strcmp(argv[1], "publish") == 0)
		return publish_main(argv);
	if (argc == 7 && strcmp(argv[1], "client") == 0)
		return client_main(argc, argv);
	if (argc == 7 && strcmp(argv[1], "writer") == 0)
		return writer_main(argc, argv);
	fprintf(stderr, "usage: fleet client CONNINFO REDIS_URL NDICTS PREFIX DIR\n"
			"       fleet writer CONNINFO NDICTS PREFIX RATE COUNT\n");
	fprintf(stderr, "       fleet sub HOST PORT CHANNEL DIR\n"
			"       fleet publish HOST PORT CHANNEL RATE COUNT\n");
	return 2;
}
