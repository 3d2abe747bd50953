/*
 * demo_reader.c — the reader of `make demo`: several threads serve reads of
 * a few keys from one shared libddict handle in a loop, while someone else
 * changes the dict with plain SQL.  Every second it prints reads/s and the
 * handle's counters; every change the cache applies is printed as it
 * arrives (from the change callback).
 *
 *   demo_reader [-d CONNINFO] [-t THREADS] [-s SECONDS] [-m auto|manual|interval]
 *               DICT KEY...
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
		printf("  change  version %lld: ... and %ld more\n", (long long) shown_version, hidden);
	hidden = 0;
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
		printf("  change  version %lld: %.*s = %.*s%s%.*s%s\n", (long long) c->version,
			   (int) c->keylen, c->key, (int) c->new_len, c->new_value,
			   c->old_value ? "   (was " : "", c->old_value ? (int) c->old_len : 0,
			   c->old_value ? c->old_value : "", c->old_value ? ")" : "");
	else
		printf("  change  version %lld: %.*s deleted\n", (long long) c->version,
			   (int) c->keylen, c->key);
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
				opt;
	ddict_options o;
	pthread_t  *th;
	long		last = 0;

	ddict_options_init(&o);
	while ((opt = getopt(argc, argv, "d:t:s:m:")) != -1)
	{
		if (opt == 'd')
			conninfo = optarg;
		else if (opt == 't')
			threads = atoi(optarg);
		else if (opt == 's')
			seconds = atoi(optarg);
		else if (opt == 'm' && strcmp(optarg, "manual") == 0)
			o.mode = DDICT_MANUAL;
		else if (opt == 'm' && strcmp(optarg, "interval") == 0)
			o.mode = DDICT_INTERVAL, o.interval_ms = 100;
		else if (opt != 'm' || strcmp(optarg, "auto") != 0)
		{
			fprintf(stderr, "usage: %s [-d CONNINFO] [-t THREADS] [-s SECONDS] "
					"[-m auto|manual|interval] DICT KEY...\n", argv[0]);
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
	printf("reader: libddict %s, opening \"%s\" (%s mode), %d threads\n", ddict_version_string(),
		   argv[optind], o.mode == DDICT_MANUAL ? "manual" : o.mode == DDICT_INTERVAL ?
		   "interval" : "autosync", threads);
	d = ddict_open(conninfo, argv[optind], &o);
	if (d == NULL)
	{
		fprintf(stderr, "reader: %s\n", ddict_errmsg());
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
		printf("reader: %2ds  %9ld reads/s  version %lld  keys %llu  checks %llu (unchanged %llu,"
			   " coalesced %llu)  reloads %llu  deltas %llu  rows fetched %llu%s\n",
			   s, now - last, (long long) st.version, (unsigned long long) st.len,
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
	printf("reader: %ld reads in %d s\n", atomic_load(&reads), seconds);
	free(th);
	ddict_close(d);
	return 0;
}
