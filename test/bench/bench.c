/*
 * bench.c — the client-side figures of `make bench` (see run.sh).
 *
 *   ddict_bench reads     100k keys: cached gets against a hash table, a
 *                         prepared SELECT, a Redis GET; autosync against
 *                         SELECT 1; a hot key
 *   ddict_bench reloads   full loads of 10k/100k/1M keys against COPY
 *                         (FORMAT binary) into a hash table, memory, and a
 *                         one-key delta against the full reload
 *   ddict_bench threads   reads/s with 1 and 2 reader threads while a
 *                         writer commits 100 times per second
 *   ddict_bench push      commit-to-visible of push mode (if libddict has it)
 *   ddict_bench pool      one client for many dicts: a check of 1/10/50 dicts
 *                         against SELECT 1, gets and checks through pgbouncer
 *                         against direct, server connections of P x D
 *                         (if libddict has ddict_client, 1.2)
 *   ddict_bench load-one KIND DICT   one full load in a fresh process (used
 *                         by "reloads": peak memory needs a fresh process)
 *
 * Environment: BENCH_CONNINFO (libpq), BENCH_REDIS_PORT, REPS, QUICK.
 * Output: CSV rows "section,metric,variant,median,min,max,unit,n" on stdout,
 * each figure the median over REPS repetitions with their min and max;
 * progress on stderr.
 *
 * Timing: fast paths (tens of ns) are timed per batch of 1000 gets with
 * CLOCK_MONOTONIC, so that the clock's own cost (~20 ns) does not distort
 * them; their p50/p99 are quantiles of the per-batch mean.  Round trips are
 * timed one by one.  Variants are interleaved within each repetition so that
 * drift of a shared machine hits them alike.  run.sh runs "reads" pinned to
 * one CPU together with the server's backends and redis-server.
 *
 * Push mode and the Redis version source are compiled in when the installed
 * libddict.h has them (HAVE_DDICT_PUSH, HAVE_REDIS_URL, see the Makefile) and
 * measured when they work at run time; otherwise their rows say NA ("not
 * measured") with the reason on stderr.
 */
#include <libddict.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

#define KLEN 11					/* "key:%07d" */
#define SEQ_LEN 1000000			/* pre-generated random key sequence */
#define BATCH 1000
#define NBATCH (SEQ_LEN / BATCH)
#define MAXREPS 64

static const char *conninfo;
static int	redis_port;
static const char *redis_socket;	/* the GET baseline uses it when set */
static int	reps = 5;
static int	quick;

static char (*keys)[16];		/* keys[i] = "key:%07d" % (i + 1) */
static int	nkeys;
static uint32_t *seq;			/* random indices into keys */
static volatile size_t sink;	/* keeps results alive */

/* ---------------------------------------------------------------- helpers */

static void
die(const char *fmt, ...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "ddict_bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

static void
sleep_ns(double ns)
{
	struct timespec ts = {.tv_sec = (time_t) (ns / 1e9), .tv_nsec = (long) ((int64_t) ns % 1000000000)};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

/* Nearest-rank quantile; sorts v. */
static double
quantile(double *v, size_t n, double q)
{
	size_t		i;

	qsort(v, n, sizeof(double), cmp_double);
	i = (size_t) (q * (double) n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return v[i - 1];
}

static const char *
num(char *buf, double x)
{
	double		a = x < 0 ? -x : x;

	if (a >= 1000)
		snprintf(buf, 32, "%.0f", x);
	else if (a >= 100)
		snprintf(buf, 32, "%.1f", x);
	else if (a >= 1)
		snprintf(buf, 32, "%.2f", x);
	else
		snprintf(buf, 32, "%.4f", x);
	return buf;
}

/* One CSV row: median, min, max of v[0..n). */
static void
emit(const char *section, const char *metric, const char *variant,
	 double *v, int n, const char *unit)
{
	char		a[32],
				b[32],
				c[32];
	double		med;

	if (n <= 0)
	{
		printf("%s,%s,%s,NA,NA,NA,%s,0\n", section, metric, variant, unit);
		fflush(stdout);
		return;
	}
	qsort(v, (size_t) n, sizeof(double), cmp_double);
	med = (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	printf("%s,%s,%s,%s,%s,%s,%s,%d\n", section, metric, variant,
		   num(a, med), num(b, v[0]), num(c, v[n - 1]), unit, n);
	fflush(stdout);
}

static long
proc_status_kb(const char *field)
{
	FILE	   *f = fopen("/proc/self/status", "r");
	char		line[256];
	size_t		fl = strlen(field);
	long		kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':')
		{
			kb = strtol(line + fl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

static PGconn *
pg_connect(void)
{
	PGconn	   *c = PQconnectdb(conninfo);

	if (PQstatus(c) != CONNECTION_OK)
		die("connect: %s", PQerrorMessage(c));
	return c;
}

static void
pg_prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
	PGresult   *r = PQprepare(c, name, sql, nparams, NULL);

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("prepare %s: %s", sql, PQerrorMessage(c));
	PQclear(r);
}

static ddict *
open_dict(const char *dict, ddict_mode mode)
{
	ddict_options o;
	ddict	   *d;

	ddict_options_init(&o);
	o.mode = mode;
	o.timeout_ms = 60000;
	d = ddict_open(conninfo, dict, &o);
	if (d == NULL)
		die("ddict_open %s: %s", dict, ddict_errmsg());
	return d;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

/* The dicts hold 'key:' || lpad(i, 7, '0') = md5(i::text), i = 1..n. */
static void
make_keys(int n)
{
	nkeys = n;
	keys = malloc((size_t) n * sizeof(*keys));
	seq = malloc(SEQ_LEN * sizeof(uint32_t));
	if (keys == NULL || seq == NULL)
		die("out of memory");
	for (int i = 0; i < n; i++)
		snprintf(keys[i], sizeof(keys[i]), "key:%07d", i + 1);
	for (int j = 0; j < SEQ_LEN; j++)
		seq[j] = (uint32_t) (rng() % (uint64_t) n);
}

/*
 * COPY (SELECT key, value FROM dict) TO STDOUT (FORMAT binary), parsed into
 * a floor table: what a user would write to load a table by hand.  Returns
 * the number of rows.
 */
static int32_t
be32(const char *p)
{
	uint32_t	v;

	memcpy(&v, p, 4);
	return (int32_t) be32toh(v);
}

static long
copy_load(PGconn *c, const char *dict, fl_table *t)
{
	char		sql[256];
	PGresult   *r;
	char	   *buf;
	int			n;
	long		rows = 0;
	bool		header = true;

	snprintf(sql, sizeof(sql), "COPY (SELECT key, value FROM %s) TO STDOUT (FORMAT binary)", dict);
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COPY_OUT)
		die("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	if (fl_init(t, 16) != 0)
		die("out of memory");
	while ((n = PQgetCopyData(c, &buf, 0)) > 0)
	{
		const char *p = buf,
				   *end = buf + n;

		if (header)
		{
			/* "PGCOPY\n\377\r\n\0", flags, extension length, extension */
			if (n < 19 || memcmp(p, "PGCOPY\n\377\r\n\0", 11) != 0)
				die("COPY binary: bad header");
			p += 19 + be32(p + 15);
			header = false;
		}
		while (p + 2 <= end)
		{
			int16_t		nf = (int16_t) ((unsigned char) p[0] << 8 | (unsigned char) p[1]);
			int32_t		kl,
						vl;

			p += 2;
			if (nf == -1)
				break;
			if (nf != 2 || p + 4 > end)
				die("COPY binary: unexpected tuple");
			kl = be32(p);
			p += 4;
			if (kl < 0 || p + kl + 4 > end)
				die("COPY binary: bad key");
			vl = be32(p + kl);
			if (vl < 0 || p + kl + 4 + vl > end)
				die("COPY binary: bad value");
			if (fl_put(t, p, (size_t) kl, p + kl + 4, (size_t) vl) != 0)
				die("out of memory");
			p += kl + 4 + vl;
			rows++;
		}
		PQfreemem(buf);
	}
	if (n == -2)
		die("COPY: %s", PQerrorMessage(c));
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("COPY: %s", PQerrorMessage(c));
	PQclear(r);
	while ((r = PQgetResult(c)) != NULL)
		PQclear(r);
	return rows;
}

/* -------------------------------------------------------------- reads */

/*
 * Fast paths: NBATCH batches of BATCH gets each, key j of the sequence (or
 * the hot key), timed per batch.  The empty asm makes the key opaque to the
 * compiler, so that the hash of a hot key cannot be hoisted out of the loop.
 */
static double batch_ns[NBATCH];

#define RUN_BATCHES(HOT, STMT) \
	do { \
		size_t		acc_ = 0; \
		for (size_t b_ = 0; b_ < NBATCH; b_++) \
		{ \
			double		t0_ = now_ns(); \
			for (size_t j_ = b_ * BATCH; j_ < (b_ + 1) * BATCH; j_++) \
			{ \
				const char *k = (HOT) ? keys[hot] : keys[seq[j_]]; \
				size_t		len = 0; \
				__asm__ volatile("" : "+r"(k)); \
				STMT; \
				acc_ += len; \
			} \
			batch_ns[b_] = (now_ns() - t0_) / BATCH; \
		} \
		sink += acc_; \
	} while (0)

enum
{
	F_FLOOR, F_GETBUF, F_GET, F_SNAP, F_PUSH, F_VPAGE, F_N
};
static const char *fast_names[] = {
	"hash floor", "ddict_get_buf manual", "ddict_get manual", "ddict_snapshot_get pinned",
	"ddict_get_buf push", "ddict_get_buf autosync (versions page)",
};

typedef struct fast_ctx
{
	fl_table   *fl;
	ddict	   *manual;
	ddict_snapshot *snap;
	ddict	   *push;
	ddict	   *vpage;			/* autosync answered by the versions page */
} fast_ctx;

/* One run of variant v; per-batch ns/get in batch_ns. */
static void
run_fast(const fast_ctx *c, int v, bool is_hot, int hot)
{
	char		buf[256];

	switch (v)
	{
		case F_FLOOR:
			RUN_BATCHES(is_hot, {
				const fl_entry *e = fl_find(c->fl, k, KLEN);
				if (e) { len = e->vlen; memcpy(buf, e->data + e->klen + 1, len); len += (unsigned char) buf[len >> 1]; }
			});
			break;
		case F_GETBUF:
			RUN_BATCHES(is_hot, {
				if (ddict_get_buf(c->manual, k, KLEN, buf, sizeof(buf), &len) == DDICT_OK)
					len += (unsigned char) buf[len >> 1];
			});
			break;
		case F_GET:
			RUN_BATCHES(is_hot, {
				char *v_;
				if (ddict_get(c->manual, k, KLEN, &v_, &len) == DDICT_OK)
				{ len += (unsigned char) v_[len >> 1]; ddict_free(v_); }
			});
			break;
		case F_SNAP:
			RUN_BATCHES(is_hot, {
				const char *v_;
				if (ddict_snapshot_get(c->snap, k, KLEN, &v_, &len) == DDICT_OK)
					len += (unsigned char) v_[len >> 1];
			});
			break;
		case F_PUSH:
			RUN_BATCHES(is_hot, {
				if (ddict_get_buf(c->push, k, KLEN, buf, sizeof(buf), &len) == DDICT_OK)
					len += (unsigned char) buf[len >> 1];
			});
			break;
		case F_VPAGE:
			RUN_BATCHES(is_hot, {
				if (ddict_get_buf(c->vpage, k, KLEN, buf, sizeof(buf), &len) == DDICT_OK)
					len += (unsigned char) buf[len >> 1];
			});
			break;
	}
}

static void
verify_same(const fast_ctx *c)
{
	char		buf[256];
	size_t		len;

	for (int i = 0; i < 1000; i++)
	{
		const char *k = keys[seq[i]];
		const fl_entry *e = fl_find(c->fl, k, KLEN);

		if (e == NULL || ddict_get_buf(c->manual, k, KLEN, buf, sizeof(buf), &len) != DDICT_OK ||
			len != e->vlen || memcmp(buf, e->data + e->klen + 1, len) != 0)
			die("hash floor and ddict disagree on %s", k);
	}
}

/*
 * A handle in push mode, or NULL (with the reason on stderr) when this
 * libddict has no push mode or it cannot start here: the figure is then
 * reported as not measured.
 */
static ddict *
open_redis_mode(const char *dict, int mode, ddict_change_fn cb)
{
#ifdef HAVE_REDIS_URL
	ddict_options o;
	ddict	   *d;
	char		url[64];

	ddict_options_init(&o);
	o.mode = (ddict_mode) mode;
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", redis_port);
	o.redis_url = url;
	o.timeout_ms = 60000;
	o.on_change = cb;
	d = ddict_open(conninfo, dict, &o);
	if (d == NULL)
		fprintf(stderr, "ddict_bench: not measured: ddict_open(mode %d, redis_url) %s: %s\n",
				mode, dict, ddict_errmsg());
	return d;
#else
	(void) dict;
	(void) mode;
	(void) cb;
	fprintf(stderr, "ddict_bench: not measured: this libddict has no redis_url option\n");
	return NULL;
#endif
}

static ddict *
open_push(const char *dict, ddict_change_fn cb)
{
#ifdef HAVE_DDICT_PUSH
	return open_redis_mode(dict, DDICT_PUSH, cb);
#else
	(void) dict;
	(void) cb;
	fprintf(stderr, "ddict_bench: not measured: this libddict has no push mode (DDICT_PUSH)\n");
	return NULL;
#endif
}

/* An autosync handle on a client told it talks to PostgreSQL directly
 * (direct = 1: the check is a prepared statement). */
#ifdef HAVE_DDICT_CLIENT
static ddict_client *direct_client;

static ddict *
open_direct(const char *dict, ddict_client **cl)
{
	ddict_client_options co;
	ddict_options o;
	ddict	   *d;

	ddict_client_options_init(&co);
	co.direct = 1;
	co.timeout_ms = 60000;
	if ((*cl = ddict_client_open(conninfo, &co)) == NULL)
		die("ddict_client_open: %s", ddict_errmsg());
	ddict_options_init(&o);
	o.mode = DDICT_AUTOSYNC;
	if ((d = ddict_open_on(*cl, dict, &o)) == NULL)
		die("ddict_open_on %s: %s", dict, ddict_errmsg());
	return d;
}
#else
static void *direct_client;

static ddict *
open_direct(const char *dict, void **cl)
{
	(void) dict;
	*cl = NULL;
	fprintf(stderr, "ddict_bench: not measured: this libddict has no ddict_client (direct)\n");
	return NULL;
}
#endif

static void
redis_load(redisContext *rc, PGconn *pc, const char *dict)
{
	char		sql[128];
	PGresult   *r;
	int			n;

	snprintf(sql, sizeof(sql), "SELECT key, value FROM %s", dict);
	r = PQexec(pc, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		die("%s: %s", sql, PQerrorMessage(pc));
	n = PQntuples(r);
	for (int i = 0; i < n; i++)
	{
		const char *argv[3] = {"SET", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1)};
		size_t		lens[3] = {3, (size_t) PQgetlength(r, i, 0), (size_t) PQgetlength(r, i, 1)};

		redisAppendCommandArgv(rc, 3, argv, lens);
		if (i % 1000 == 999 || i == n - 1)
			for (int j = i - i % 1000; j <= i; j++)
			{
				redisReply *rep;

				if (redisGetReply(rc, (void **) &rep) != REDIS_OK)
					die("redis SET: %s", rc->errstr);
				freeReplyObject(rep);
			}
	}
	PQclear(r);
}

enum
{
	R_SELECT, R_REDIS, R_SELECT1, R_LASTUPD, R_AUTO, R_AUTO_REDIS, R_AUTO_DIRECT, R_N
};
static const char *rt_names[] = {
	"prepared SELECT value", "Redis GET", "prepared SELECT 1", "prepared SELECT ddict_last_updated()",
	"ddict_get_buf autosync (PG version)", "ddict_get_buf autosync (Redis version)",
	"ddict_get_buf autosync (PG version; direct = 1: prepared)",
};

typedef struct rt_ctx
{
	PGconn	   *pc;
	redisContext *rc;
	ddict	   *autosync;
	ddict	   *autosync_redis;
	ddict	   *autosync_direct;	/* on a client with direct = 1 */
} rt_ctx;

/* ops round trips of variant v, each timed; ns in out[] */
static void
run_rt(const rt_ctx *c, int v, int ops, int offset, double *out)
{
	char		buf[256];

	for (int i = 0; i < ops; i++)
	{
		const char *k = keys[seq[(offset + i) % SEQ_LEN]];
		size_t		len = 0;
		double		t0 = now_ns();

		switch (v)
		{
			case R_SELECT:
				{
					const char *params[1] = {k};
					PGresult   *r = PQexecPrepared(c->pc, "sel", 1, params, NULL, NULL, 0);

					if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
						die("SELECT value: %s", PQerrorMessage(c->pc));
					len = (size_t) PQgetlength(r, 0, 0);
					memcpy(buf, PQgetvalue(r, 0, 0), len);
					PQclear(r);
					break;
				}
			case R_REDIS:
				{
					redisReply *rep = redisCommand(c->rc, "GET %b", k, (size_t) KLEN);

					if (rep == NULL || rep->type != REDIS_REPLY_STRING)
						die("redis GET %s failed", k);
					len = rep->len;
					memcpy(buf, rep->str, len);
					freeReplyObject(rep);
					break;
				}
			case R_SELECT1:
				{
					PGresult   *r = PQexecPrepared(c->pc, "one", 0, NULL, NULL, NULL, 0);

					if (PQresultStatus(r) != PGRES_TUPLES_OK)
						die("SELECT 1: %s", PQerrorMessage(c->pc));
					len = (size_t) PQgetlength(r, 0, 0);
					PQclear(r);
					break;
				}
			case R_LASTUPD:
				{
					PGresult   *r = PQexecPrepared(c->pc, "lu", 0, NULL, NULL, NULL, 0);

					if (PQresultStatus(r) != PGRES_TUPLES_OK)
						die("SELECT ddict_last_updated(): %s", PQerrorMessage(c->pc));
					len = (size_t) PQgetlength(r, 0, 0);
					PQclear(r);
					break;
				}
			case R_AUTO:
				if (ddict_get_buf(c->autosync, k, KLEN, buf, sizeof(buf), &len) != DDICT_OK)
					die("autosync get %s: %s", k, ddict_errmsg());
				break;
			case R_AUTO_REDIS:
				if (ddict_get_buf(c->autosync_redis, k, KLEN, buf, sizeof(buf), &len) != DDICT_OK)
					die("autosync (redis) get %s: %s", k, ddict_errmsg());
				break;
			case R_AUTO_DIRECT:
				if (ddict_get_buf(c->autosync_direct, k, KLEN, buf, sizeof(buf), &len) != DDICT_OK)
					die("autosync (direct) get %s: %s", k, ddict_errmsg());
				break;
		}
		out[i] = now_ns() - t0;
		sink += len;
	}
}

/*
 * An autosync handle whose checks the server's versions page answers (the
 * conninfo names the server's Unix socket), or NULL (the reason on stderr):
 * the figure is then reported as not measured.
 */
static ddict *
open_vpage(const char *dict)
{
#ifdef HAVE_VERSIONS_PAGE
	ddict	   *d = open_dict(dict, DDICT_AUTOSYNC);
	ddict_stats st;
	char		buf[256];
	size_t		len;

	/* the second check finds the page open, the third is answered by it */
	for (int i = 0; i < 3; i++)
		(void) ddict_get_buf(d, keys[0], KLEN, buf, sizeof(buf), &len);
	if (ddict_get_stats(d, &st) != DDICT_OK || !st.versions_page)
	{
		fprintf(stderr, "ddict_bench: not measured: autosync on the versions page "
				"(not reachable from here: connect through the server's Unix socket)\n");
		ddict_close(d);
		return NULL;
	}
	return d;
#else
	(void) dict;
	fprintf(stderr, "ddict_bench: not measured: this libddict has no versions page\n");
	return NULL;
#endif
}

static void
cmd_reads(void)
{
	const char *dict = "d100k";
	fast_ctx	fc = {0};
	rt_ctx		rc = {0};
	fl_table	fl;
	PGconn	   *pc;
	static double fp50[F_N][MAXREPS], fp99[F_N][MAXREPS];
	static double hp50[F_N][MAXREPS], hp99[F_N][MAXREPS];
	static double rp50[R_N][MAXREPS], rp99[R_N][MAXREPS];
	bool		fast_on[F_N], rt_on[R_N];
	int			ops = quick ? 300 : 5000;
	double	   *opns = malloc((size_t) ops * sizeof(double));
	int			hot = 4242;
	ddict_stats st;

	make_keys(100000);
	pc = pg_connect();
	if (copy_load(pc, dict, &fl) != nkeys)
		die("%s does not have %d keys", dict, nkeys);
	fc.fl = &fl;
	fc.manual = open_dict(dict, DDICT_MANUAL);
	fc.snap = ddict_pin(fc.manual);
	fc.push = open_push(dict, NULL);
	fc.vpage = open_vpage(dict);
	verify_same(&fc);
	for (int v = 0; v < F_N; v++)
		fast_on[v] = (v != F_PUSH || fc.push != NULL) && (v != F_VPAGE || fc.vpage != NULL);

	/* fast paths, random keys and the hot key; one warm-up run each */
	fprintf(stderr, "reads: cached gets, %d reps x %d gets per variant\n", reps, SEQ_LEN);
	for (int v = 0; v < F_N; v++)
		if (fast_on[v])
			run_fast(&fc, v, false, hot);
	for (int r = 0; r < reps; r++)
		for (int v = 0; v < F_N; v++)
			if (fast_on[v])
			{
				run_fast(&fc, v, false, hot);
				fp50[v][r] = quantile(batch_ns, NBATCH, 0.50);
				fp99[v][r] = quantile(batch_ns, NBATCH, 0.99);
				run_fast(&fc, v, true, hot);
				hp50[v][r] = quantile(batch_ns, NBATCH, 0.50);
				hp99[v][r] = quantile(batch_ns, NBATCH, 0.99);
			}
	for (int v = 0; v < F_N; v++)
		emit("reads", "get_p50_ns", fast_names[v], fp50[v], fast_on[v] ? reps : 0, "ns");
	for (int v = 0; v < F_N; v++)
		emit("reads", "get_p99_ns", fast_names[v], fp99[v], fast_on[v] ? reps : 0, "ns");
	for (int v = 0; v < F_N; v++)
		if (v == F_FLOOR || v == F_GETBUF || v == F_PUSH || v == F_VPAGE)
		{
			emit("reads", "hot_p50_ns", fast_names[v], hp50[v], fast_on[v] ? reps : 0, "ns");
			emit("reads", "hot_p99_ns", fast_names[v], hp99[v], fast_on[v] ? reps : 0, "ns");
		}

	/* round trips */
	pg_prepare(pc, "sel", "SELECT value FROM d100k WHERE key = $1", 1);
	pg_prepare(pc, "one", "SELECT 1", 0);
	pg_prepare(pc, "lu", "SELECT ddict_last_updated('d100k')", 0);
	rc.pc = pc;
	rc.rc = redis_socket ? redisConnectUnix(redis_socket) : redisConnect("127.0.0.1", redis_port);
	if (rc.rc == NULL || rc.rc->err)
		die("redis connect: %s", rc.rc ? rc.rc->errstr : "?");
	redis_load(rc.rc, pc, dict);
	/* the round-trip checks (the versions page has its own figure above) */
	setenv("DDICT_VERSIONS_PAGE", "off", 1);
	rc.autosync = open_dict(dict, DDICT_AUTOSYNC);
	rc.autosync_redis = open_redis_mode(dict, DDICT_AUTOSYNC, NULL);
	rc.autosync_direct = open_direct(dict, &direct_client);
	unsetenv("DDICT_VERSIONS_PAGE");
	for (int v = 0; v < R_N; v++)
		rt_on[v] = (v != R_AUTO_REDIS || rc.autosync_redis != NULL) &&
			(v != R_AUTO_DIRECT || rc.autosync_direct != NULL);
	fprintf(stderr, "reads: round trips, %d reps x %d ops per variant\n", reps, ops);
	for (int v = 0; v < R_N; v++)
		if (rt_on[v])
			run_rt(&rc, v, ops / 4, 0, opns);
	for (int r = 0; r < reps; r++)
		for (int v = 0; v < R_N; v++)
			if (rt_on[v])
			{
				run_rt(&rc, v, ops, r * ops, opns);
				rp50[v][r] = quantile(opns, (size_t) ops, 0.50) / 1000;
				rp99[v][r] = quantile(opns, (size_t) ops, 0.99) / 1000;
			}
	for (int i = 0; i < 2; i++)
	{
		ddict	   *h = i ? rc.autosync_redis : rc.autosync;
		unsigned long long rchecks = 0;

		if (h == NULL)
			continue;
		memset(&st, 0, sizeof(st));
		ddict_get_stats(h, &st);
#ifdef HAVE_REDIS_URL
		rchecks = st.redis_checks;
#endif
		fprintf(stderr, "reads: autosync handle%s: %llu checks, %llu unchanged, %llu deltas, "
				"%llu reloads, %llu checks answered by Redis\n",
				i ? " (redis_url)" : "", (unsigned long long) st.checks,
				(unsigned long long) st.unchanged, (unsigned long long) st.deltas,
				(unsigned long long) st.reloads, rchecks);
		if (st.deltas != 0 || st.reloads != 1)
			die("autosync: the dict changed during the measurement");
		if (i == 1 && rchecks < (unsigned long long) (ops * reps))
		{
			fprintf(stderr, "ddict_bench: not measured: the redis_url handle did not take its "
					"version from Redis (%llu Redis checks)\n", rchecks);
			rt_on[R_AUTO_REDIS] = false;
		}
	}
	for (int v = 0; v < R_N; v++)
		emit("reads", "rt_p50_us", rt_names[v], rp50[v], rt_on[v] ? reps : 0, "us");
	for (int v = 0; v < R_N; v++)
		emit("reads", "rt_p99_us", rt_names[v], rp99[v], rt_on[v] ? reps : 0, "us");

	ddict_unpin(fc.snap);
	ddict_close(fc.manual);
	ddict_close(fc.push);
	ddict_close(fc.vpage);
	ddict_close(rc.autosync);
	ddict_close(rc.autosync_redis);
	ddict_close(rc.autosync_direct);
#ifdef HAVE_DDICT_CLIENT
	ddict_client_close(direct_client);
#endif
	redisFree(rc.rc);
	PQfinish(pc);
	fl_free(&fl);
	free(opns);
}

/* ------------------------------------------------------------ reloads */

typedef struct load_result
{
	double		ns;
	long		rows,
				rss0_kb,
				rss1_kb,
				hwm_kb;
	double		raw;			/* key+value bytes */
} load_result;

static int
sum_raw(void *arg, const char *key, size_t keylen, const char *value, size_t len)
{
	(void) key;
	(void) value;
	*(double *) arg += (double) (keylen + len);
	return 0;
}

/* In a fresh process: one full load, "ns rows rss0 rss1 hwm raw" on stdout. */
static void
cmd_load_one(const char *kind, const char *dict)
{
	load_result lr = {0};
	double		t0;

	lr.rss0_kb = proc_status_kb("VmRSS");
	if (strcmp(kind, "ddict") == 0)
	{
		ddict	   *d;

		t0 = now_ns();
		d = open_dict(dict, DDICT_MANUAL);
		lr.ns = now_ns() - t0;
		lr.rss1_kb = proc_status_kb("VmRSS");
		lr.hwm_kb = proc_status_kb("VmHWM");
		lr.rows = ddict_len(d);
		ddict_foreach(d, sum_raw, &lr.raw);
		ddict_close(d);
	}
	else
	{
		fl_table	t;
		PGconn	   *c;

		t0 = now_ns();
		c = pg_connect();
		lr.rows = copy_load(c, dict, &t);
		lr.ns = now_ns() - t0;
		lr.rss1_kb = proc_status_kb("VmRSS");
		lr.hwm_kb = proc_status_kb("VmHWM");
		for (size_t i = 0; i <= t.mask; i++)
			if (t.slots[i].e)
				lr.raw += t.slots[i].e->klen + t.slots[i].e->vlen;
		PQfinish(c);
		fl_free(&t);
	}
	printf("%.0f %ld %ld %ld %ld %.0f\n", lr.ns, lr.rows, lr.rss0_kb, lr.rss1_kb, lr.hwm_kb, lr.raw);
}

static load_result
load_in_child(const char *kind, const char *dict)
{
	int			fd[2],
				status;
	pid_t		pid;
	char		out[256];
	ssize_t		n,
				got = 0;
	load_result lr = {0};

	if (pipe(fd) != 0)
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
	{
		char	   *argv[] = {"ddict_bench", "load-one", (char *) kind, (char *) dict, NULL};

		dup2(fd[1], 1);
		close(fd[0]);
		close(fd[1]);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(fd[1]);
	while ((n = read(fd[0], out + got, sizeof(out) - 1 - (size_t) got)) > 0)
		got += n;
	close(fd[0]);
	out[got] = '\0';
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("load-one %s %s failed", kind, dict);
	if (sscanf(out, "%lf %ld %ld %ld %ld %lf", &lr.ns, &lr.rows, &lr.rss0_kb, &lr.rss1_kb,
			   &lr.hwm_kb, &lr.raw) != 6)
		die("load-one %s %s: bad output '%s'", kind, dict, out);
	return lr;
}

static void
cmd_reloads(void)
{
	static const char *dicts[] = {"d10k", "d100k", "d1m"};
	static const char *labels[] = {"10k", "100k", "1M"};
	static const char *kinds[] = {"ddict", "copy"};
	static const char *knames[] = {"ddict_open", "COPY binary + hash"};
	static load_result res[3][2][MAXREPS];
	double		v[MAXREPS];
	char		name[64];
	int			ndelta = quick ? 5 : 40;
	double	   *dns = malloc((size_t) ndelta * sizeof(double));
	ddict	   *d;
	PGconn	   *w;
	ddict_stats st0, st1;

	fprintf(stderr, "reloads: full loads, %d reps\n", reps);
	for (int r = 0; r < reps; r++)
		for (int s = 0; s < 3; s++)
			for (int k = 0; k < 2; k++)
			{
				/* alternate which goes first, so that neither always runs warm */
				int			kk = (r % 2) ? 1 - k : k;

				res[s][kk][r] = load_in_child(kinds[kk], dicts[s]);
			}
	for (int s = 0; s < 3; s++)
		for (int k = 0; k < 2; k++)
		{
			snprintf(name, sizeof(name), "%s %s", knames[k], labels[s]);
			for (int r = 0; r < reps; r++)
				v[r] = res[s][k][r].ns / 1e6;
			emit("reloads", "full_load_ms", name, v, reps, "ms");
			for (int r = 0; r < reps; r++)
				v[r] = (double) res[s][k][r].rows / (res[s][k][r].ns / 1e9);
			emit("reloads", "full_load_rows_per_s", name, v, reps, "rows/s");
			for (int r = 0; r < reps; r++)
				v[r] = (double) (res[s][k][r].hwm_kb - res[s][k][r].rss0_kb) / 1024;
			emit("reloads", "peak_growth_MB", name, v, reps, "MB");
		}
	/* memory of the 1M-key load: RSS kept after it, per entry */
	for (int k = 0; k < 2; k++)
	{
		const char *mn[] = {"ddict 1M", "hash floor 1M"};

		for (int r = 0; r < reps; r++)
			v[r] = (double) (res[2][k][r].rss1_kb - res[2][k][r].rss0_kb) * 1024 / (double) res[2][k][r].rows;
		emit("memory", "rss_bytes_per_entry", mn[k], v, reps, "bytes");
		for (int r = 0; r < reps; r++)
			v[r] = (double) (res[2][k][r].rss1_kb - res[2][k][r].rss0_kb) * 1024 / (double) res[2][k][r].rows -
				res[2][k][r].raw / (double) res[2][k][r].rows;
		emit("memory", "overhead_bytes_per_entry", mn[k], v, reps, "bytes");
		for (int r = 0; r < reps; r++)
			v[r] = (double) (res[2][k][r].hwm_kb - res[2][k][r].rss0_kb) * 1024 / (double) res[2][k][r].rows;
		emit("memory", "peak_bytes_per_entry", mn[k], v, reps, "bytes");
	}
	for (int r = 0; r < reps; r++)
		v[r] = res[2][0][r].raw / (double) res[2][0][r].rows;
	emit("memory", "raw_bytes_per_entry", "key+value 1M", v, reps, "bytes");

	/* one changed key in the 1M-key dict: the delta */
	fprintf(stderr, "reloads: %d one-key deltas on the 1M-key dict\n", ndelta);
	d = open_dict("d1m", DDICT_MANUAL);
	w = pg_connect();
	pg_prepare(w, "upd", "UPDATE d1m SET value = md5(random()::text) WHERE key = $1", 1);
	ddict_get_stats(d, &st0);
	for (int i = 0; i < ndelta; i++)
	{
		char		k[16];
		const char *params[1] = {k};
		PGresult   *r;
		double		t0;
		int			rc;

		snprintf(k, sizeof(k), "key:%07d", (int) (rng() % 1000000) + 1);
		r = PQexecPrepared(w, "upd", 1, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0)
			die("UPDATE d1m: %s", PQerrorMessage(w));
		PQclear(r);
		t0 = now_ns();
		rc = ddict_sync(d);
		dns[i] = (now_ns() - t0) / 1e6;
		if (rc != 1)
			die("ddict_sync after a commit returned %d: %s", rc, ddict_errmsg());
		sleep_ns(5e6);
	}
	ddict_get_stats(d, &st1);
	fprintf(stderr, "reloads: %llu deltas, %llu full reloads, %llu rows fetched, %llu compactions\n",
			(unsigned long long) (st1.deltas - st0.deltas),
			(unsigned long long) (st1.reloads - st0.reloads),
			(unsigned long long) (st1.rows_fetched - st0.rows_fetched),
			(unsigned long long) (st1.compactions - st0.compactions));
	if (st1.deltas - st0.deltas != (uint64_t) ndelta || st1.reloads != st0.reloads)
		die("one-key changes were not applied as deltas");
	emit("reloads", "delta_1key_ms", "ddict_sync 1M", dns, ndelta, "ms");
	PQfinish(w);
	ddict_close(d);
	free(dns);
}

/* ------------------------------------------------------------ threads */

typedef struct thr_shared
{
	ddict	   *d;
	atomic_int	go;
	atomic_int	stop;
	atomic_long	reads;
	atomic_long	commits;
	atomic_long	syncs;
} thr_shared;

typedef struct reader_arg
{
	thr_shared *sh;
	int			id;
} reader_arg;

static void *
reader_thread(void *p)
{
	reader_arg *a = p;
	char		buf[256];
	size_t		len,
				acc = 0;
	long		n = 0;
	size_t		j = (size_t) a->id * (SEQ_LEN / 2);

	while (!atomic_load(&a->sh->go))
		;
	while (!atomic_load_explicit(&a->sh->stop, memory_order_relaxed))
	{
		for (int i = 0; i < 100; i++)
		{
			if (ddict_get_buf(a->sh->d, keys[seq[j]], KLEN, buf, sizeof(buf), &len) == DDICT_OK)
				acc += len;
			j = (j + 1) % SEQ_LEN;
		}
		n += 100;
	}
	sink += acc;
	atomic_fetch_add(&a->sh->reads, n);
	return NULL;
}

/* 100 commits per second, each an UPDATE of a random key, on a ticking clock. */
static void *
writer_thread(void *p)
{
	thr_shared *sh = p;
	PGconn	   *w = pg_connect();
	double		next = now_ns();

	pg_prepare(w, "upd", "UPDATE d100k SET value = md5(random()::text) WHERE key = $1", 1);
	while (!atomic_load(&sh->stop))
	{
		char		k[16];
		const char *params[1] = {k};
		PGresult   *r;
		double		now;

		snprintf(k, sizeof(k), "key:%07d", (int) (rng() % 100000) + 1);
		r = PQexecPrepared(w, "upd", 1, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			die("writer: %s", PQerrorMessage(w));
		PQclear(r);
		atomic_fetch_add(&sh->commits, 1);
		next += 10e6;
		now = now_ns();
		if (next > now)
			sleep_ns(next - now);
		else
			next = now;
	}
	PQfinish(w);
	return NULL;
}

/* Manual mode: the application syncs on its own schedule, here every 10 ms. */
static void *
syncer_thread(void *p)
{
	thr_shared *sh = p;

	while (!atomic_load(&sh->stop))
	{
		if (ddict_sync(sh->d) < 0)
			die("ddict_sync: %s", ddict_errmsg());
		atomic_fetch_add(&sh->syncs, 1);
		sleep_ns(10e6);
	}
	return NULL;
}

static void
cmd_threads(void)
{
	double		secs = quick ? 0.5 : 2.0;
	static double rate[2][2][MAXREPS];
	static double wrate[4 * MAXREPS];
	int			nw = 0;
	static const char *names[2][2] = {{"manual 1 thread", "manual 2 threads"},
	{"autosync 1 thread", "autosync 2 threads"}};

	make_keys(100000);
	fprintf(stderr, "threads: %d reps x 4 configurations x %.1fs, writer at 100 commits/s\n", reps, secs);
	for (int r = 0; r < reps; r++)
		for (int m = 0; m < 2; m++)
			for (int t = 1; t <= 2; t++)
			{
				thr_shared	sh = {0};
				pthread_t	rt[2],
							wt,
							syt;
				reader_arg	ra[2];
				double		t0,
							el;
				ddict_stats st;

				sh.d = open_dict("d100k", m == 0 ? DDICT_MANUAL : DDICT_AUTOSYNC);
				pthread_create(&wt, NULL, writer_thread, &sh);
				if (m == 0)
					pthread_create(&syt, NULL, syncer_thread, &sh);
				for (int i = 0; i < t; i++)
				{
					ra[i].sh = &sh;
					ra[i].id = i;
					pthread_create(&rt[i], NULL, reader_thread, &ra[i]);
				}
				sleep_ns(50e6);	/* the writer is running */
				t0 = now_ns();
				atomic_store(&sh.go, 1);
				sleep_ns(secs * 1e9);
				atomic_store(&sh.stop, 1);
				for (int i = 0; i < t; i++)
					pthread_join(rt[i], NULL);
				el = now_ns() - t0;
				pthread_join(wt, NULL);
				if (m == 0)
					pthread_join(syt, NULL);
				rate[m][t - 1][r] = (double) atomic_load(&sh.reads) / (el / 1e9);
				wrate[nw++] = (double) atomic_load(&sh.commits) / ((el + 50e6) / 1e9);
				ddict_get_stats(sh.d, &st);
				fprintf(stderr, "threads: %-20s %12.0f reads/s  (%llu checks, %llu deltas, %llu coalesced)\n",
						names[m][t - 1], rate[m][t - 1][r], (unsigned long long) st.checks,
						(unsigned long long) st.deltas, (unsigned long long) st.coalesced);
				ddict_close(sh.d);
			}
	for (int m = 0; m < 2; m++)
		for (int t = 0; t < 2; t++)
			emit("threads", "reads_per_s", names[m][t], rate[m][t], reps, "reads/s");
	emit("threads", "writer_commits_per_s", "writer (all runs)", wrate, nw, "commits/s");
}

/* --------------------------------------------------------------- push */

/*
 * Commit to visible: a writer sends an autocommit UPDATE that sets a key to
 * a new token; the time runs from just before that send until the push-mode
 * handle's change callback reports the token (so it includes the writer's
 * own statement and commit).
 */
static atomic_long push_seen;	/* token of the last value seen */
static _Atomic double push_seen_ns;

static void
push_cb(const ddict_change *c, void *arg)
{
	(void) arg;
	if (c->new_value && c->new_len > 5 && memcmp(c->new_value, "push-", 5) == 0)
	{
		long		tok = strtol(c->new_value + 5, NULL, 10);

		atomic_store(&push_seen_ns, now_ns());
		atomic_store(&push_seen, tok);
	}
}

static void
cmd_push(void)
{
	int			n = quick ? 20 : 100;
	static double p50[MAXREPS], p99[MAXREPS];
	double	   *lat = malloc((size_t) n * sizeof(double));
	ddict	   *d = open_push("d100k", push_cb);
	PGconn	   *w;
	long		tok = 0;

	if (d == NULL)
	{
		emit("reloads", "push_visible_p50_ms", "push mode", NULL, 0, "ms");
		emit("reloads", "push_visible_p99_ms", "push mode", NULL, 0, "ms");
		free(lat);
		return;
	}
	make_keys(100000);
	w = pg_connect();
	pg_prepare(w, "upd", "UPDATE d100k SET value = $2 WHERE key = $1", 2);
	fprintf(stderr, "push: %d reps x %d commits\n", reps, n);
	for (int r = 0; r < reps; r++)
	{
		for (int i = 0; i < n; i++)
		{
			char		val[32];
			const char *params[2] = {keys[rng() % 100000], val};
			PGresult   *res;
			double		t0;

			tok++;
			snprintf(val, sizeof(val), "push-%ld", tok);
			t0 = now_ns();
			res = PQexecPrepared(w, "upd", 2, params, NULL, NULL, 0);
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				die("UPDATE: %s", PQerrorMessage(w));
			PQclear(res);
			while (atomic_load(&push_seen) < tok)
			{
				if (now_ns() - t0 > 5e9)
					die("push: the change was not seen within 5 s");
				sleep_ns(20e3);
			}
			lat[i] = (atomic_load(&push_seen_ns) - t0) / 1e6;
			sleep_ns(10e6);
		}
		p50[r] = quantile(lat, (size_t) n, 0.50);
		p99[r] = quantile(lat, (size_t) n, 0.99);
	}
	emit("reloads", "push_visible_p50_ms", "push mode", p50, reps, "ms");
	emit("reloads", "push_visible_p99_ms", "push mode", p99, reps, "ms");
	ddict_close(d);
	PQfinish(w);
	free(lat);
}

/* --------------------------------------------------------------- main */

/* ------------------------------------------------------------ pool (1.2) */

#ifdef HAVE_DDICT_CLIENT
/*
 * ddict_bench pool: many dicts on one client, and pgbouncer.
 *   rt_p50_us   a prepared SELECT 1 against one ddict_client_sync() covering
 *               1, 10 and 50 dicts (unnamed statements; and prepared with
 *               direct = 1), and an autosync get and a 1-dict check through
 *               pgbouncer (transaction pooling) against the same direct
 *   server_conns  PostgreSQL backends held by P processes x D dicts: one
 *               handle per dict (ddict_open), one client per process, one
 *               client per process through pgbouncer with a pool of N
 * Environment: BENCH_PGB_CONNINFO (pgbouncer, transaction pooling, database
 * bench), BENCH_PGB_ADMIN (its console), BENCH_PGB_POOL (its pool size);
 * dicts s0..s49 exist.
 */
enum
{
	P_SELECT1, P_C1, P_C10, P_C50, P_C1P, P_C50P, P_GET, P_GET_PGB, P_C1_PGB, P_C10P, P_N
};
static const char *pool_names[] = {
	"prepared SELECT 1", "client check 1 dict", "client check 10 dicts", "client check 50 dicts",
	"client check 1 dict (direct: prepared)", "client check 50 dicts (direct: prepared)", "autosync get direct", "autosync get pgbouncer",
	"client check 1 dict pgbouncer", "client check 10 dicts (direct: prepared)",
};

static ddict_client *
client_with(const char *ci, int ndicts, int direct, ddict ***out)
{
	ddict_client_options co;
	ddict_client *c;
	ddict	  **d = calloc((size_t) ndicts, sizeof(ddict *));

	ddict_client_options_init(&co);
	co.direct = direct;
	co.timeout_ms = 60000;
	c = ddict_client_open(ci, &co);
	if (c == NULL || d == NULL)
		die("ddict_client_open: %s", ddict_errmsg());
	for (int i = 0; i < ndicts; i++)
	{
		char		name[16];
		ddict_options o;

		ddict_options_init(&o);
		o.mode = DDICT_MANUAL;
		snprintf(name, sizeof(name), "s%d", i);
		if ((d[i] = ddict_open_on(c, name, &o)) == NULL)
			die("ddict_open_on %s: %s", name, ddict_errmsg());
	}
	*out = d;
	return c;
}

static void
close_client(ddict_client *c, ddict **d, int n)
{
	ddict_client_close(c);
	for (int i = 0; i < n; i++)
		ddict_close(d[i]);
	free(d);
}

static void
pool_rt(const char *pgb)
{
	PGconn	   *pc = pg_connect();
	ddict	  **d1,
			  **d10,
			  **d50,
			  **d50p,
			  **d10p,
			  **d1p,
			  **dp = NULL,
			   *get,
			   *getp = NULL;
	ddict_client *c1 = client_with(conninfo, 1, 0, &d1),
			   *c10 = client_with(conninfo, 10, 0, &d10),
			   *c50 = client_with(conninfo, 50, 0, &d50),
			   *c50p = client_with(conninfo, 50, 1, &d50p),
			   *c10p = client_with(conninfo, 10, 1, &d10p),
			   *c1p = client_with(conninfo, 1, 1, &d1p),
			   *cp = pgb ? client_with(pgb, 1, 0, &dp) : NULL;
	ddict_options o;
	int			ops = quick ? 200 : 1000;
	double	   *t = malloc(sizeof(double) * (size_t) ops),
				med[P_N][MAXREPS];
	char		buf[256];

	ddict_options_init(&o);
	o.mode = DDICT_AUTOSYNC;
	get = ddict_open(conninfo, "s0", &o);
	if (pgb)
		getp = ddict_open(pgb, "s0", &o);
	if (get == NULL || (pgb && getp == NULL))
		die("ddict_open s0: %s", ddict_errmsg());
	pg_prepare(pc, "one", "SELECT 1", 0);
	for (int r = 0; r < reps; r++)
		for (int v = 0; v < P_N; v++)
		{
			for (int i = 0; i < ops; i++)
			{
				double		t0 = now_ns();
				int			rc = 0;
				size_t		len;

				switch (v)
				{
					case P_SELECT1:
						PQclear(PQexecPrepared(pc, "one", 0, NULL, NULL, NULL, 0));
						break;
					case P_C1:
						rc = ddict_client_sync(c1);
						break;
					case P_C10:
						rc = ddict_client_sync(c10);
						break;
					case P_C50:
						rc = ddict_client_sync(c50);
						break;
					case P_C50P:
						rc = ddict_client_sync(c50p);
						break;
					case P_C10P:
						rc = ddict_client_sync(c10p);
						break;
					case P_C1P:
						rc = ddict_client_sync(c1p);
						break;
					case P_GET:
						rc = ddict_get_buf(get, "k1", 2, buf, sizeof(buf), &len) < 0 ? -1 : 0;
						break;
					case P_GET_PGB:
						rc = getp ? (ddict_get_buf(getp, "k1", 2, buf, sizeof(buf), &len) < 0 ? -1 : 0) : 0;
						break;
					case P_C1_PGB:
						rc = cp ? ddict_client_sync(cp) : 0;
						break;
				}
				if (rc < 0)
					die("%s: %s", pool_names[v], ddict_errmsg());
				t[i] = now_ns() - t0;
			}
			med[v][r] = quantile(t, (size_t) ops, 0.5) / 1000;
		}
	for (int v = 0; v < P_N; v++)
		emit("pool", "rt_p50_us", pool_names[v], med[v],
			 pgb || (v != P_GET_PGB && v != P_C1_PGB) ? reps : 0, "us");
	free(t);
	ddict_close(get);
	ddict_close(getp);
	close_client(c1, d1, 1);
	close_client(c10, d10, 10);
	close_client(c50, d50, 50);
	close_client(c50p, d50p, 50);
	close_client(c10p, d10p, 10);
	close_client(c1p, d1p, 1);
	if (cp)
		close_client(cp, dp, 1);
	PQfinish(pc);
}

/* One process of the connection count: open D dicts, check, wait. */
static void
conn_child(const char *ci, int dicts, int shared, int ready_fd)
{
	ddict	   *d[64];
	ddict_client *c = NULL;
	ddict_options o;

	ddict_options_init(&o);
	o.mode = DDICT_AUTOSYNC;
	o.timeout_ms = 60000;
	o.connect_timeout_ms = 60000;
	if (shared)
	{
		ddict_client_options co;

		ddict_client_options_init(&co);
		co.timeout_ms = co.connect_timeout_ms = 60000;
		c = ddict_client_open(ci, &co);
	}
	for (int i = 0; i < dicts; i++)
	{
		char		name[16];

		snprintf(name, sizeof(name), "s%d", i);
		d[i] = shared ? ddict_open_on(c, name, &o) : ddict_open(ci, name, &o);
		if (d[i] == NULL)
			_exit(3);
	}
	if (write(ready_fd, "r", 1) != 1)
		_exit(4);
	for (;;)
	{
		for (int i = 0; i < dicts; i++)
			(void) ddict_len(d[i]);
		sleep_ns(20e6);
	}
}

static long
bench_backends(PGconn *pc)
{
	PGresult   *r = PQexec(pc, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench'"
						   " AND backend_type = 'client backend' AND pid <> pg_backend_pid()");
	long		n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;

	PQclear(r);
	return n;
}

/* Server connections pgbouncer holds for the database bench (SHOW SERVERS). */
static long
pgb_servers(const char *admin)
{
	PGconn	   *a = PQconnectdb(admin);
	PGresult   *r;
	long		n = 0;
	int			db;

	if (PQstatus(a) != CONNECTION_OK)
		die("pgbouncer admin: %s", PQerrorMessage(a));
	r = PQexec(a, "SHOW SERVERS");
	db = PQfnumber(r, "database");
	for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
		n += strcmp(PQgetvalue(r, i, db), "bench") == 0;
	PQclear(r);
	PQfinish(a);
	return n;
}

static void
pool_conns(const char *pgb, int pool)
{
	const char *pgb_admin = getenv("BENCH_PGB_ADMIN");
	/* "ddict_open per dict" holds procs x dicts connections: within the
	 * bench cluster's max_connections (50) */
	int			procs = quick ? 4 : 8,
				dicts = 5;
	const char *variants[3] = {"ddict_open per dict", "one client per process", "one client per process through pgbouncer"};
	char		metric[64],
				vname[96];
	PGconn	   *pc = pg_connect();

	snprintf(metric, sizeof(metric), "server_conns_%dx%d", procs, dicts);
	for (int v = 0; v < 3; v++)
	{
		pid_t		pids[64];
		int			fds[2],
					ready = 0;
		char		c;
		double		n = 0;
		long		base = bench_backends(pc);

		if (v == 2 && pgb == NULL)
		{
			emit("pool", metric, variants[v], NULL, 0, "conns");
			continue;
		}
		if (pipe(fds) != 0)
			die("pipe");
		fflush(NULL);
		for (int i = 0; i < procs; i++)
		{
			pids[i] = fork();
			if (pids[i] < 0)
				die("fork: %s", strerror(errno));
			if (pids[i] == 0)
			{
				close(fds[0]);
				conn_child(v == 2 ? pgb : conninfo, dicts, v > 0, fds[1]);
			}
		}
		close(fds[1]);
		while (ready < procs && read(fds[0], &c, 1) == 1)
			ready++;
		close(fds[0]);
		sleep_ns(300e6);		/* loaders' backends gone, checks running */
		for (int k = 0; k < 5; k++)
		{
			long		b = v == 2 && pgb_admin ? pgb_servers(pgb_admin) : bench_backends(pc) - base;

			n = b > n ? b : n;
			sleep_ns(50e6);
		}
		for (int i = 0; i < procs; i++)
		{
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
		if (ready < procs)
			die("%s: %d of %d processes opened their dicts", variants[v], ready, procs);
		if (v == 2)
			snprintf(vname, sizeof(vname), "%s pool %d", variants[v], pool);
		else
			snprintf(vname, sizeof(vname), "%s", variants[v]);
		emit("pool", metric, vname, &n, 1, "conns");
		/* backends of killed processes exit */
		for (int k = 0; k < 100 && bench_backends(pc) > base; k++)
			sleep_ns(50e6);
	}
	PQfinish(pc);
}

static void
cmd_pool(void)
{
	const char *pgb = getenv("BENCH_PGB_CONNINFO");
	const char *e = getenv("BENCH_PGB_POOL");

	if (pgb && *pgb == '\0')
		pgb = NULL;
	pool_rt(pgb);
	pool_conns(pgb, e ? atoi(e) : 0);
}
#else
static void
cmd_pool(void)
{
	fprintf(stderr, "ddict_bench: this libddict has no ddict_client: pool not measured\n");
}
#endif

int
main(int argc, char **argv)
{
	const char *e;

	conninfo = getenv("BENCH_CONNINFO");
	if (conninfo == NULL)
		conninfo = "";
	redis_port = (e = getenv("BENCH_REDIS_PORT")) ? atoi(e) : 6379;
	redis_socket = (e = getenv("BENCH_REDIS_SOCKET")) && *e ? e : NULL;
	quick = (e = getenv("QUICK")) && *e && strcmp(e, "0") != 0;
	reps = (e = getenv("REPS")) ? atoi(e) : (quick ? 1 : 5);
	if (reps < 1 || reps > MAXREPS)
		die("REPS must be 1..%d", MAXREPS);
	if (argc == 4 && strcmp(argv[1], "load-one") == 0)
		cmd_load_one(argv[2], argv[3]);
	else if (argc == 2 && strcmp(argv[1], "reads") == 0)
		cmd_reads();
	else if (argc == 2 && strcmp(argv[1], "reloads") == 0)
		cmd_reloads();
	else if (argc == 2 && strcmp(argv[1], "threads") == 0)
		cmd_threads();
	else if (argc == 2 && strcmp(argv[1], "push") == 0)
		cmd_push();
	else if (argc == 2 && strcmp(argv[1], "pool") == 0)
		cmd_pool();
	else
	{
		fprintf(stderr, "usage: ddict_bench reads|reloads|threads|push|pool|load-one KIND DICT\n");
		return 2;
	}
	return 0;
}
