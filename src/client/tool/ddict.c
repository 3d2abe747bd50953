/*
 * ddict — command-line access to a dict through libddict.
 *
 *   ddict [-d CONNINFO] get     DICT KEY        value to stdout; exit 1 if absent
 *   ddict [-d CONNINFO] set     DICT KEY VALUE
 *   ddict [-d CONNINFO] del     DICT KEY        exit 1 if absent
 *   ddict [-d CONNINFO] items   DICT            key<TAB>value lines, sorted by key
 *   ddict [-d CONNINFO] version DICT
 *   ddict [-d CONNINFO] watch [-i MS] [-r|--redis URL] DICT
 *                       every applied change, as
 *                       version<TAB>set<TAB>key<TAB>value / version<TAB>del<TAB>key;
 *                       polls every MS, or with a Redis URL follows the
 *                       versions the server publishes there (push mode; MS
 *                       is then the polling period while Redis is away)
 *
 * In items and watch, backslash, tab and newline inside keys and values are
 * written as \\, \t and \n, so that every record is exactly one line.  get
 * writes the value's bytes unchanged, then a newline.  Exit codes: 0 ok, 1 key absent,
 * 2 usage, 3 connection or server error (messages on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libddict.h"

#define EXIT_ABSENT 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

static const char *progname = "ddict";

static void
usage(void)
{
	fprintf(stderr,
			"usage: %s [-d CONNINFO] get|del DICT KEY\n"
			"       %s [-d CONNINFO] set DICT KEY VALUE\n"
			"       %s [-d CONNINFO] items|version DICT\n"
			"       %s [-d CONNINFO] watch [-i MS] [-r|--redis URL] DICT\n"
			"CONNINFO is a libpq connection string; PG* environment variables apply.\n",
			progname, progname, progname, progname);
	exit(EXIT_USAGE);
}

static int
fail(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", progname, what, ddict_errmsg());
	return EXIT_ERROR;
}

/* Write bytes with \\, \t, \n escaped. */
static void
put_escaped(FILE *f, const char *s, size_t n)
{
	size_t		start = 0;

	for (size_t i = 0; i < n; i++)
	{
		const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\t' ? "\\t" : s[i] == '\n' ? "\\n" : NULL;

		if (esc == NULL)
			continue;
		fwrite(s + start, 1, i - start, f);
		fputs(esc, f);
		start = i + 1;
	}
	fwrite(s + start, 1, n - start, f);
}

typedef struct item
{
	const char *key,
			   *value;
	size_t		klen,
				vlen;
} item;

/* Bytewise order (memcmp, shorter first on a tie): stable across locales. */
static int
item_cmp(const void *a, const void *b)
{
	const item *x = a,
			   *y = b;
	size_t		n = x->klen < y->klen ? x->klen : y->klen;
	int			c = memcmp(x->key, y->key, n);

	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static int
cmd_items(ddict *d)
{
	ddict_snapshot *s = ddict_pin(d);
	size_t		n = ddict_snapshot_len(s),
				pos = 0,
				i = 0;
	item	   *items;

	if (s == NULL)
		return fail("items");
	items = malloc((n ? n : 1) * sizeof(item));
	if (items == NULL)
	{
		ddict_unpin(s);
		fprintf(stderr, "%s: out of memory\n", progname);
		return EXIT_ERROR;
	}
	while (i < n && ddict_snapshot_next(s, &pos, &items[i].key, &items[i].klen,
										&items[i].value, &items[i].vlen))
		i++;
	qsort(items, i, sizeof(item), item_cmp);
	for (size_t j = 0; j < i; j++)
	{
		put_escaped(stdout, items[j].key, items[j].klen);
		putchar('\t');
		put_escaped(stdout, items[j].value, items[j].vlen);
		putchar('\n');
	}
	free(items);
	ddict_unpin(s);
	return 0;
}

/* ---- watch ---- */

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void) sig;
	stop = 1;
}

static void
print_change(const ddict_change *c, void *arg)
{
	(void) arg;
	/* one line at a time: in push mode the main thread flushes meanwhile */
	flockfile(stdout);
	printf("%lld\t%s\t", (long long) c->version, c->new_value ? "set" : "del");
	put_escaped(stdout, c->key, c->keylen);
	if (c->new_value)
	{
		putchar('\t');
		put_escaped(stdout, c->new_value, c->new_len);
	}
	putchar('\n');
	funlockfile(stdout);
}

/*
 * Push mode: the handle's thread applies changes (and prints them from the
 * callback); here we flush every 20 ms and report on stderr when the
 * source of versions changes.
 */
static int
watch_push(ddict *d, const char *url, unsigned interval_ms)
{
	int			was_redis = -1,
				was_stale = 0;

	while (!stop)
	{
		struct timespec ts = {0, 20 * 1000000L};
		ddict_stats st;

		if (fflush(stdout) != 0)
			break;				/* reader went away */
		if (ddict_get_stats(d, &st) == 0)
		{
			if (url && st.redis != was_redis)
			{
				if (st.redis)
					fprintf(stderr, "%s: watch: following the versions published in Redis\n",
							progname);
				else
					fprintf(stderr, "%s: watch: Redis unavailable (%s), polling the server every %u ms\n",
							progname, st.last_error, interval_ms);
				was_redis = st.redis;
			}
			if (st.stale != was_stale)
			{
				if (st.stale)
					fprintf(stderr, "%s: watch: %s (serving the last version, retrying)\n",
							progname, st.last_error);
				else
					fprintf(stderr, "%s: watch: connected again\n", progname);
				was_stale = st.stale;
			}
		}
		nanosleep(&ts, NULL);
	}
	return 0;
}

static int
cmd_watch(const char *conninfo, const char *dict, unsigned interval_ms, const char *redis_url)
{
	ddict_options o;
	ddict	   *d;
	struct sigaction sa;
	int			was_ok = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	ddict_options_init(&o);
	o.mode = redis_url ? DDICT_PUSH : DDICT_MANUAL;
	o.interval_ms = interval_ms;
	o.redis_url = redis_url;
	o.on_change = print_change;
	o.backoff_max_ms = 2000;
	d = ddict_open(conninfo, dict, &o);	/* prints the initial contents as sets */
	if (d == NULL)
		return fail("watch");
	if (fflush(stdout) != 0)
		stop = 1;
	if (redis_url)
	{
		watch_push(d, redis_url, interval_ms);
		ddict_close(d);
		return 0;
	}
	while (!stop)
	{
		struct timespec ts = {interval_ms / 1000, (long) (interval_ms % 1000) * 1000000L};
		int			rc = ddict_sync(d);

		if (rc < 0 && was_ok)
			fprintf(stderr, "%s: watch: %s (serving the last version, retrying)\n",
					progname, ddict_errmsg());
		else if (rc >= 0 && !was_ok)
			fprintf(stderr, "%s: watch: connected again\n", progname);
		was_ok = rc >= 0;
		if (fflush(stdout) != 0)
			break;				/* reader went away */
		nanosleep(&ts, NULL);
	}
	ddict_close(d);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *conninfo = NULL;
	const char *cmd,
			   *dict;
	unsigned	interval_ms = 200;
	ddict_options o;
	ddict	   *d;
	int			opt,
				rc,
				status = 0;

	if (argc > 0 && argv[0][0])
	{
		const char *slash = strrchr(argv[0], '/');

		progname = slash ? slash + 1 : argv[0];
	}
	/* Options before the command; "+" stops at the first non-option. */
	while ((opt = getopt(argc, argv, "+d:h")) != -1)
	{
		if (opt == 'd')
			conninfo = optarg;
		else
			usage();
	}
	if (optind >= argc)
		usage();
	cmd = argv[optind++];
	if (strcmp(cmd, "watch") == 0)
	{
		static const struct option longopts[] = {
			{"interval", required_argument, NULL, 'i'},
			{"redis", required_argument, NULL, 'r'},
			{NULL, 0, NULL, 0}
		};
		const char *redis_url = NULL;

		while ((opt = getopt_long(argc, argv, "+i:r:", longopts, NULL)) != -1)
		{
			char	   *end;
			long		v;

			if (opt == 'r')
			{
				redis_url = optarg;
				continue;
			}
			if (opt != 'i')
				usage();
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 1 || v > 3600000)
				usage();
			interval_ms = (unsigned) v;
		}
		if (argc - optind != 1)
			usage();
		return cmd_watch(conninfo, argv[optind], interval_ms, redis_url);
	}

	if (optind >= argc)
		usage();
	dict = argv[optind++];
	if ((strcmp(cmd, "get") == 0 || strcmp(cmd, "del") == 0) ? argc - optind != 1 :
		strcmp(cmd, "set") == 0 ? argc - optind != 2 :
		(strcmp(cmd, "items") == 0 || strcmp(cmd, "version") == 0) ? argc - optind != 0 : 1)
		usage();

	ddict_options_init(&o);
	o.mode = DDICT_MANUAL;		/* the load at open is the only read we need */
	d = ddict_open(conninfo, dict, &o);
	if (d == NULL)
		return fail(cmd);

	if (strcmp(cmd, "get") == 0)
	{
		char	   *v;
		size_t		n;

		rc = ddict_get(d, argv[optind], DDICT_NTS, &v, &n);
		if (rc == DDICT_OK)
		{
			fwrite(v, 1, n, stdout);
			putchar('\n');
			ddict_free(v);
		}
		else if (rc == DDICT_NOTFOUND)
			status = EXIT_ABSENT;
		else
			status = fail("get");
	}
	else if (strcmp(cmd, "set") == 0)
	{
		rc = ddict_set(d, argv[optind], DDICT_NTS, argv[optind + 1], strlen(argv[optind + 1]));
		if (rc != DDICT_OK)
			status = fail("set");
	}
	else if (strcmp(cmd, "del") == 0)
	{
		rc = ddict_delete(d, argv[optind], DDICT_NTS);
		if (rc == DDICT_NOTFOUND)
			status = EXIT_ABSENT;
		else if (rc != DDICT_OK)
			status = fail("del");
	}
	else if (strcmp(cmd, "items") == 0)
		status = cmd_items(d);
	else
		printf("%lld\n", (long long) ddict_version(d));

	ddict_close(d);
	if (fflush(stdout) != 0 && status == 0)
	{
		fprintf(stderr, "%s: writing output: %s\n", progname, strerror(errno));
		status = EXIT_ERROR;
	}
	return status;
}
