/*
 * demo_reader.c — the reader of `make demo`: several threads serve reads of
 * a few keys from one shared libddict handle in a loop, while someone else
 * changes the dict with plain SQL.  Every second it prints reads/s and the
 * handle's counters; every change the cache applies is printed as it
 * arrives (from the change callback), with how long after its commit it
 * became visible here (the version is the commit's time in microseconds).
 *
 *   demo_reader [-d CONNINFO] [-t THREADS] [-s SECONDS] [-m auto|manual|interval|push]
 *               [-r REDIS_URL] [-l LABEL] [-q] DICT KEY...
 *
 * -r: Redis as the version source (autosync/interval: GET; push: SUBSCRIBE).
 * -l: prefix of every line; -q: no per-second lines, only changes and a summary.
 *
 * Build: cc -O2 -pthread demo_reader.c $(pkg-config --cflags --libs ddict)
 */
#include <libddict.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ddict *d;
static const char *label = "reader";
static char **keys;
static int	nkeys;
static atomic_int stop;
static atomic_long reads;

/* Changes of one version: the first few are printed, the rest counted. */
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t shown_version;
static long shown,
			hidden;

static void
flush_hidden(void)
{
	if (hidden > 0)
		printf("  %s: change version %lld: ... and %ld more\n", label, (long long) shown_version, hidden);
	hidden = 0;
}

/* Commit to visible here: the version is the commit's wall-clock time in us
 * (same host, or synchronised clocks). */
static double
lag_ms(int64_t version)
{
	struct timespec ts;
	int64_t		now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	return now > version ? (double) (now - version) / 1000.0 : 0.0;
}

static void
on_change(const ddict_change *c, void *arg)
{
	(void) arg;
	pthread_mutex_lock(&print_lock);
	if (c->version != shown_version)
	{
		flush_hidden();
		shown_version = c->version;
		shown = 0;
	}
	if (shown++ >= 5)
		hidden++;
	else if (c->new_value)
		printf("  %s: change version %lld: %.*s = %.*s%s%.*s%s   [%.1f ms after commit]\n", label,
			   (long long) c->version, (int) c->keylen, c->key, (int) c->new_len, c->new_value,
			   c->old_value ? "   (was " : "", c->old_value ? (int) c->old_len : 0,
			   c->old_value ? c->old_value : "", c->old_value ? ")" : "", lag_ms(c->version));
	else
		printf("  %s: change version %lld: %.*s deleted   [%.1f ms after commit]\n", label,
			   (long long) c->version, (int) c->keylen, c->key, lag_ms(c->version));
	fflush(stdout);
	pthread_mutex_unlock(&print_lock);
}

static void *
reader(void *arg)
{
	char		buf[256];
	size_t		len;
	long		n = 0;
	unsigned	i = (unsigned) (uintptr_t) arg;

	while (!atomic_load_explicit(&stop, memory_order_relaxed))
	{
		const char *k = keys[i++ % (unsigned) nkeys];

		(void) ddict_get_buf(d, k, DDICT_NTS, buf, sizeof(buf), &len);
		if (++n == 1000)
		{
			atomic_fetch_add_explicit(&reads, n, memory_order_relaxed);
			n = 0;
		}
	}
	atomic_fetch_add_explicit(&reads, n, memory_order_relaxed);
	return NULL;
}

int
main(int argc, char **argv)
{
	const char *conninfo = "";
	int			threads = 4,
				seconds = 10,
				quiet = 0,
				opt;
	const char *mode_name = "autosync";
	ddict_options o;
	pthread_t  *th;
	long		last = 0;

	ddict_options_init(&o);
	while ((opt = getopt(argc, argv, "d:t:s:m:r:l:q")) != -1)
	{
		if (opt == 'd')
			conninfo = optarg;
		else if (opt == 't')
			threads = atoi(optarg);
		else if (opt == 's')
			seconds = atoi(optarg);
		else if (opt == 'r')
			o.redis_url = optarg;
		else if (opt == 'l')
			label = optarg;
		else if (opt == 'q')
			quiet = 1;
		else if (opt == 'm' && strcmp(optarg, "manual") == 0)
			o.mode = DDICT_MANUAL, mode_name = "manual";
		else if (opt == 'm' && strcmp(optarg, "interval") == 0)
			o.mode = DDICT_INTERVAL, o.interval_ms = 100, mode_name = "interval";
		else if (opt == 'm' && strcmp(optarg, "push") == 0)
			o.mode = DDICT_PUSH, o.interval_ms = 500, mode_name = "push";
		else if (opt != 'm' || strcmp(optarg, "auto") != 0)
		{
			fprintf(stderr, "usage: %s [-d CONNINFO] [-t THREADS] [-s SECONDS] "
					"[-m auto|manual|interval|push] [-r REDIS_URL] [-l LABEL] [-q] DICT KEY...\n",
					argv[0]);
			return 2;
		}
	}
	if (argc - optind < 2 || threads < 1)
	{
		fprintf(stderr, "%s: need a dict and at least one key\n", argv[0]);
		return 2;
	}
	keys = argv + optind + 1;
	nkeys = argc - optind - 1;
	o.on_change = on_change;
	printf("%s: libddict %s, opening \"%s\" (%s mode%s), %d threads\n", label,
		   ddict_version_string(), argv[optind], mode_name,
		   o.redis_url ? ", versions from Redis" : "", threads);
	fflush(stdout);
	d = ddict_open(conninfo, argv[optind], &o);
	if (d == NULL)
	{
		fprintf(stderr, "%s: %s\n", label, ddict_errmsg());
		return 1;
	}
	th = calloc((size_t) threads, sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, reader, (void *) (uintptr_t) i);

	for (int s = 1; s <= seconds; s++)
	{
		ddict_stats st;
		long		now;

		sleep(1);
		if (o.mode == DDICT_MANUAL)
			(void) ddict_sync(d);
		now = atomic_load(&reads);
		ddict_get_stats(d, &st);
		pthread_mutex_lock(&print_lock);
		flush_hidden();
		if (!quiet)
			printf("%s: %2ds  %9ld reads/s  version %lld  keys %llu  checks %llu (unchanged %llu,"
				   " coalesced %llu)  reloads %llu  deltas %llu  rows fetched %llu%s\n",
				   label, s, now - last, (long long) st.version, (unsigned long long) st.len,
				   (unsigned long long) st.checks, (unsigned long long) st.unchanged,
				   (unsigned long long) st.coalesced, (unsigned long long) st.reloads,
				   (unsigned long long) st.deltas, (unsigned long long) st.rows_fetched,
				   st.stale ? "  STALE" : "");
		fflush(stdout);
		pthread_mutex_unlock(&print_lock);
		last = now;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	{
		ddict_stats st;

		ddict_get_stats(d, &st);
		printf("%s: %ld reads in %d s; server checks %llu (%llu deltas, %llu reloads)", label,
			   atomic_load(&reads), seconds, (unsigned long long) st.checks,
			   (unsigned long long) st.deltas, (unsigned long long) st.reloads);
		if (o.redis_url)
			printf("; Redis: %llu GETs, %llu pushes, %llu errors%s", (unsigned long long) st.redis_checks,
				   (unsigned long long) st.pushes, (unsigned long long) st.redis_errors,
				   st.redis ? "" : " (not in use now)");
		printf("\n");
	}
	free(th);
	ddict_close(d);
	return 0;
}
