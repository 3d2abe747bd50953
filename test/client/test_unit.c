/*
 * test_unit.c — libddict internals without a server: the hash table, the
 * snapshot builder (deltas, tombstones, overlays, compaction) against a
 * reference model, change diffs, the reader guard under threads, and the
 * binary COPY parser against valid, cut, split and garbage streams.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static const uint64_t seed[2] = {1, 2};

static void
rc_ok_or_err(int rc)
{
	assert_true(rc == DDICT_OK || rc == DDICT_ERR);
}

static void
test_hash(void **state)
{
	uint64_t	k2[2] = {3, 4};

	(void) state;
	/* SipHash-1-3 is deterministic per key and differs between keys. */
	assert_true(dd_hash(seed, "abc", 3) == dd_hash(seed, "abc", 3));
	assert_true(dd_hash(seed, "abc", 3) != dd_hash(k2, "abc", 3));
	assert_true(dd_hash(seed, "abc", 3) != dd_hash(seed, "abd", 3));
	assert_true(dd_hash(seed, "", 0) != dd_hash(seed, "\0", 1));
	for (size_t n = 0; n < 40; n++)
	{
		char		buf[40] = {0};

		assert_true(dd_hash(seed, buf, n) != dd_hash(seed, buf, n + 1));
	}
}

static void
test_table(void **state)
{
	dd_table   *t = dd_table_new(0);
	char		k[32];

	(void) state;
	assert_non_null(t);
	for (int i = 0; i < 10000; i++)
	{
		int			n = snprintf(k, sizeof(k), "key%d", i);

		assert_int_equal(dd_table_put(t, dd_hash(seed, k, n), k, n, k, n), DDICT_OK);
	}
	assert_int_equal(t->live, 10000);
	assert_true(t->used * 4 <= dd_table_capacity(t) * 3);
	for (int i = 0; i < 10000; i++)
	{
		int			n = snprintf(k, sizeof(k), "key%d", i);
		const dd_entry *e = dd_table_find(t, dd_hash(seed, k, n), k, n);

		assert_non_null(e);
		assert_int_equal(e->vlen, n);
		assert_memory_equal(dd_entry_value(e), k, n);
		assert_int_equal(dd_entry_value(e)[n], '\0');
	}
	assert_null(dd_table_find(t, dd_hash(seed, "nope", 4), "nope", 4));
	/* replace, tombstone, revive */
	assert_int_equal(dd_table_put(t, dd_hash(seed, "key1", 4), "key1", 4, "X", 1), DDICT_OK);
	assert_int_equal(t->live, 10000);
	assert_int_equal(dd_table_put(t, dd_hash(seed, "key1", 4), "key1", 4, NULL, DD_TOMB), DDICT_OK);
	assert_int_equal(t->live, 9999);
	assert_true(dd_entry_is_tomb(dd_table_find(t, dd_hash(seed, "key1", 4), "key1", 4)));
	assert_int_equal(dd_table_put(t, dd_hash(seed, "key1", 4), "key1", 4, "Y", 1), DDICT_OK);
	assert_int_equal(t->live, 10000);
	/* binary keys */
	assert_int_equal(dd_table_put(t, dd_hash(seed, "a\0b", 3), "a\0b", 3, "\0", 1), DDICT_OK);
	assert_non_null(dd_table_find(t, dd_hash(seed, "a\0b", 3), "a\0b", 3));
	assert_null(dd_table_find(t, dd_hash(seed, "a\0c", 3), "a\0c", 3));
	dd_table_unref(t);
}

/* ---- reference model ---- */

#define NKEYS 400

typedef struct model
{
	int			present[NKEYS];
	int			value[NKEYS];
	int			len;
} model;

static int
key_of(int i, char *buf)
{
	return snprintf(buf, 16, "k%03d", i);
}

static void
check_snapshot(const ddict_snapshot *s, const model *m)
{
	char		k[16],
				v[16];
	size_t		pos = 0,
				n = 0,
				kl,
				vl;
	const char *kp,
			   *vp;

	assert_int_equal(s->len, m->len);
	for (int i = 0; i < NKEYS; i++)
	{
		int			kn = key_of(i, k);
		const dd_entry *e = dd_snap_find(s, dd_hash(seed, k, kn), k, kn);

		if (!m->present[i])
		{
			assert_null(e);
			continue;
		}
		assert_non_null(e);
		assert_int_equal(e->vlen, snprintf(v, sizeof(v), "v%d", m->value[i]));
		assert_memory_equal(dd_entry_value(e), v, e->vlen);
	}
	/* iteration yields exactly the live keys, each once */
	{
		int			seen[NKEYS] = {0};

		while (ddict_snapshot_next(s, &pos, &kp, &kl, &vp, &vl))
		{
			int			i = atoi(kp + 1);

			assert_true(i >= 0 && i < NKEYS);
			assert_true(m->present[i]);
			assert_int_equal(seen[i], 0);
			seen[i] = 1;
			n++;
		}
	}
	assert_int_equal(n, m->len);
}

typedef struct diff_log
{
	int			n;
	int			key[NKEYS * 2];
	int			newpresent[NKEYS * 2];
} diff_log;

static void
diff_cb(const ddict_change *c, void *arg)
{
	diff_log   *l = arg;

	l->key[l->n] = atoi(c->key + 1);
	l->newpresent[l->n] = c->new_value != NULL;
	l->n++;
}

static void
test_builder_model(void **state)
{
	model		m = {0},
				prev;
	ddict_snapshot *cur = dd_snap_empty(seed);
	unsigned	rnd = 12345;
	int			compactions = 0,
				fulls = 0;

	(void) state;
	for (int round = 0; round < 3000; round++)
	{
		dd_build	b;
		ddict_snapshot *next;
		bool		full;
		int			nchg;
		char		k[16],
					v[16];
		diff_log	dl = {0};

		rnd = rnd * 1103515245 + 12345;
		full = (rnd >> 16) % 50 == 0 || round == 0;
		prev = m;
		assert_int_equal(dd_build_begin(&b, cur, full, seed), DDICT_OK);
		if (full)
		{
			fulls++;
			memset(&m, 0, sizeof(m));
			for (int i = 0; i < NKEYS; i++)
			{
				rnd = rnd * 1103515245 + 12345;
				if ((rnd >> 16) % 3 == 0)
				{
					m.present[i] = 1;
					m.value[i] = round;
					m.len++;
					assert_int_equal(dd_build_row(&b, k, key_of(i, k), v,
												  snprintf(v, sizeof(v), "v%d", round)), DDICT_OK);
				}
			}
		}
		else
		{
			rnd = rnd * 1103515245 + 12345;
			nchg = 1 + (rnd >> 16) % ((rnd >> 8) % 7 == 0 ? 120 : 6);
			for (int c = 0; c < nchg; c++)
			{
				int			i,
							del;

				rnd = rnd * 1103515245 + 12345;
				i = (rnd >> 16) % NKEYS;
				del = (rnd >> 8) % 3 == 0;
				/* the server may also report keys that did not change */
				if (del)
				{
					m.len -= m.present[i];
					m.present[i] = 0;
					assert_int_equal(dd_build_row(&b, k, key_of(i, k), NULL, 0), DDICT_OK);
				}
				else
				{
					m.len += !m.present[i];
					m.present[i] = 1;
					m.value[i] = round;
					assert_int_equal(dd_build_row(&b, k, key_of(i, k), v,
												  snprintf(v, sizeof(v), "v%d", round)), DDICT_OK);
				}
			}
		}
		assert_int_equal(dd_build_finish(&b, round + 1, 7, round, &next), DDICT_OK);
		compactions += b.compacted;
		check_snapshot(next, &m);
		assert_int_equal(next->version, round + 1);

		dd_snap_diff(cur, next, b.full ? NULL : b.tab, diff_cb, &dl);
		for (int i = 0; i < dl.n; i++)
		{
			int			key = dl.key[i];

			assert_int_equal(dl.newpresent[i], m.present[key]);
			assert_true(prev.present[key] != m.present[key] ||
						(m.present[key] && prev.value[key] != m.value[key]));
		}
		{
			int			changed = 0;

			for (int i = 0; i < NKEYS; i++)
				changed += prev.present[i] != m.present[i] ||
					(m.present[i] && prev.value[i] != m.value[i]);
			assert_int_equal(dl.n, changed);
		}

		/* The old snapshot is untouched by building the new one. */
		check_snapshot(cur, &prev);
		dd_build_free(&b);
		dd_snap_unref(cur);
		cur = next;
	}
	assert_true(compactions > 5);
	assert_true(fulls > 5);
	dd_snap_unref(cur);
}

/* ---- guard ---- */

typedef struct obj
{
	uint64_t	magic;
	int			value;
} obj;

static _Atomic(obj *) shared;
static dd_guard guard;
static atomic_int stop_readers;

static void *
guard_reader(void *arg)
{
	long		n = 0;

	(void) arg;
	while (!atomic_load(&stop_readers))
	{
		unsigned	ph;
		dd_reader_slot *s = dd_guard_enter(&guard, &ph);
		obj		   *o = atomic_load(&shared);

		/* Freed objects are poisoned before free(): a broken guard shows.
		 * Look for a while, so that a reclamation can fall inside. */
		for (int k = 0; k < 200; k++)
		{
			if (((volatile obj *) o)->magic != 0x600DF00D)
				abort();
		}
		dd_guard_exit(s, ph);
		n++;
	}
	return (void *) n;
}

static void
poison_free(void *p)
{
	obj		   *o = p;

	o->magic = 0xDEADBEEF;
	free(o);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * nt readers (beyond DD_GUARD_SLOTS some share the shared slot), every
 * reclamation poisoning the freed object; fence_only: readers use
 * sequentially consistent stores instead of relying on membarrier(); at
 * least min_rounds reclamations, then as many as 2 s allow.
 */
static void
run_guard(int nt, bool fence_only, int min_rounds)
{
	int64_t		t0 = mono_ms();
	long		published = 0;
	pthread_t	th[96];
	long		total = 0;
	bool		memb = dd_guard_membarrier;

	assert_true(nt <= 96);
	if (fence_only)
		dd_guard_membarrier = false;
	memset(&guard, 0, sizeof(guard));
	{
		obj		   *o = malloc(sizeof(obj));

		o->magic = 0x600DF00D;
		o->value = 0;
		atomic_store(&shared, o);
	}
	atomic_store(&stop_readers, 0);
	for (int i = 0; i < nt; i++)
		assert_int_equal(pthread_create(&th[i], NULL, guard_reader, NULL), 0);
	/* Bounded in time: a few seconds at most, also under valgrind. */
	for (int i = 1; i <= 200000 && (i < min_rounds || mono_ms() - t0 < 2000); i++)
	{
		obj		   *o = malloc(sizeof(obj)),
				   *old;

		o->magic = 0x600DF00D;
		o->value = i;
		old = atomic_exchange(&shared, o);
		assert_int_equal(dd_guard_retire(&guard, old, poison_free), DDICT_OK);
		assert_true(guard.nlimbo <= 9);
		published++;
	}
	dd_guard_drain(&guard);
	assert_int_equal(guard.nlimbo, 0);
	atomic_store(&stop_readers, 1);
	for (int i = 0; i < nt; i++)
	{
		void	   *r;

		pthread_join(th[i], &r);
		total += (long) r;
	}
	free(atomic_load(&shared));
	print_message("# %d readers%s: %ld guarded reads during %ld reclamations\n", nt,
				  fence_only ? " (fences)" : "", total, published);
	assert_true(total > 0);
	dd_guard_membarrier = memb;
}

static void
test_guard(void **state)
{
	(void) state;
	run_guard(8, false, 200);
}

/* More readers than owned slots (the shared slot too), threads that exit and
 * give their slots back, and readers on full fences. */
static void
test_guard_many(void **state)
{
	(void) state;
	/* (a round waits for every reader preempted inside its section: with 80
	 * spinning threads on few cores, a few rounds take seconds) */
	run_guard(80, false, 10);
	run_guard(8, false, 50);
	run_guard(8, true, 50);
}

/*
 * The shared slot's reader takes two steps (read the phase, count itself
 * in it) and may be preempted between them while a round flips the phase
 * and checks the old one; it then counts itself in that old phase, holding
 * the pointer current after that round.  The object retired next must wait
 * for the round that checks that phase again: two rounds, not one (attack
 * round 6 replayed this interleaving; one round freed what the reader held).
 */
static int	replay_freed[3];

static void
replay_free(void *p)
{
	replay_freed[*(int *) p] = 1;
}

static void
test_guard_shared_preempted(void **state)
{
	static dd_guard g;
	static int	objs[3] = {0, 1, 2};
	_Atomic(int *) current = &objs[0];
	unsigned	p;
	int		   *mine;

	(void) state;
	p = atomic_load(&g.phase) & 1;	/* the reader: step 1, then preempted */
	atomic_store(&current, &objs[1]);	/* a reload publishes B, retires A */
	dd_guard_retire(&g, &objs[0], replay_free);
	atomic_fetch_add(&g.slots[DD_GUARD_SHARED].active[p], 1);	/* step 2 */
	mine = atomic_load(&current);	/* it holds B */
	atomic_store(&current, &objs[2]);	/* the next reload retires B */
	dd_guard_retire(&g, &objs[1], replay_free);
	assert_int_equal(*mine, 1);
	assert_int_equal(replay_freed[1], 0);	/* B is not freed under it */
	atomic_fetch_sub(&g.slots[DD_GUARD_SHARED].active[p], 1);	/* it leaves */
	dd_guard_drain(&g);
	assert_int_equal(replay_freed[0] + replay_freed[1], 2);
}

/* ---- the Redis URL grammar (src/common/redis_url.c, shared with the server) ---- */

static void
url_ok(const char *url, const char *host, const char *port, const char *path,
	   const char *user, const char *password, int db, const char *desc)
{
	ddict_redis_url u;
	char		err[200] = "";

	if (ddict_redis_url_parse(url, &u, err, sizeof(err)) != 0)
		fail_msg("%s: %s", url, err);
#define SAME(a, b) do { if ((a) == NULL || (b) == NULL) assert_ptr_equal(a, b); \
		else assert_string_equal(a, b); } while (0)
	SAME(u.host, host);
	SAME(u.port, port);
	SAME(u.path, path);
	SAME(u.user, user);
	SAME(u.password, password);
#undef SAME
	assert_int_equal(u.db, db);
	if (port)
		assert_int_equal(u.port_num, atoi(port));
	assert_string_equal(u.desc, desc);
	if (password)
		assert_null(strstr(u.desc, password));
}

static void
url_bad(const char *url, const char *why)
{
	ddict_redis_url u;
	char		err[200] = "";

	if (ddict_redis_url_parse(url, &u, err, sizeof(err)) == 0)
		fail_msg("%s was accepted", url);
	if (strstr(err, why) == NULL)
		fail_msg("%s: \"%s\" does not say \"%s\"", url, err, why);
}

static void
test_redis_url(void **state)
{
	char		longurl[DDICT_REDIS_URL_MAX + 10];

	(void) state;
	url_ok("redis://", "127.0.0.1", "6379", NULL, NULL, NULL, 0, "127.0.0.1:6379");
	url_ok("redis://h.example:6380/2", "h.example", "6380", NULL, NULL, NULL, 2, "h.example:6380");
	url_ok("redis://[::1]:6390", "::1", "6390", NULL, NULL, NULL, 0, "[::1]:6390");
	url_ok("redis://[fe80::1%lo]/3", "fe80::1%lo", "6379", NULL, NULL, NULL, 3, "[fe80::1%lo]:6379");
	url_ok("redis://:s3cret@127.0.0.1:7000", "127.0.0.1", "7000", NULL, NULL, "s3cret", 0,
		   "127.0.0.1:7000");
	url_ok("redis://secret-only@host", "host", "6379", NULL, NULL, "secret-only", 0, "host:6379");
	url_ok("redis://alice:p:w@d@[::1]:1/9", "::1", "1", NULL, "alice", "p:w@d", 9, "[::1]:1");
	url_ok("unix:///run/redis.sock", NULL, NULL, "/run/redis.sock", NULL, NULL, 0, "/run/redis.sock");
	url_ok("unix:///tmp/r.sock?db=12", NULL, NULL, "/tmp/r.sock", NULL, NULL, 12, "/tmp/r.sock");

	url_bad("http://h", "must start with");
	url_bad("redis://h:63a9", "invalid port");
	url_bad("redis://h:-1", "invalid port");
	url_bad("redis://h:0", "invalid port");
	url_bad("redis://h:65536", "invalid port");
	url_bad("redis://h:", "invalid port");
	url_bad("redis://h/1x", "database must be a number");
	url_bad("redis://h/-1", "database must be a number");
	url_bad("redis://[::1", "unterminated");
	url_bad("redis://[::1]x", "after [address]");
	url_bad("redis://::1:6379", "IPv6");
	url_bad("unix://relative.sock", "absolute");
	url_bad("unix:///s?db=x", "db=N");
	url_bad("unix:///s?timeout=1", "db=N");
	memset(longurl, 'a', sizeof(longurl) - 1);
	longurl[sizeof(longurl) - 1] = '\0';
	memcpy(longurl, "redis://", 8);
	url_bad(longurl, "too long");
	url_bad(NULL, "no URL");
}

/* ---- the binary COPY parser (copy.c) ---- */

static void
put_be16(char **p, uint16_t v)
{
	(*p)[0] = (char) (v >> 8);
	(*p)[1] = (char) v;
	*p += 2;
}

static void
put_be32(char **p, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		*(*p)++ = (char) (v >> (8 * i));
}

/* A valid stream of n rows "k<i>" -> i copies of 'v' (and one NUL). */
static size_t
copy_stream(char *buf, int n)
{
	static const char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
	char	   *p = buf;

	memcpy(p, sig, 11);
	p += 11;
	put_be32(&p, 0);			/* flags */
	put_be32(&p, 0);			/* header extension */
	for (int i = 0; i < n; i++)
	{
		char		key[16];
		int			kl = snprintf(key, sizeof(key), "k%d", i);

		put_be16(&p, 2);
		put_be32(&p, (uint32_t) kl);
		memcpy(p, key, (size_t) kl);
		p += kl;
		put_be32(&p, (uint32_t) i + 1);
		memset(p, 'v', (size_t) i);
		p[i] = '\0';
		p += i + 1;
	}
	put_be16(&p, 0xFFFF);		/* trailer */
	return (size_t) (p - buf);
}

/*
 * Feed buf in pieces of the given sizes (cycled); returns DDICT_OK and the
 * rows seen (checked against copy_stream's) or the parser's error.
 */
static int
parse_pieces(const char *buf, size_t len, const size_t *sizes, size_t nsizes, int *rows,
			 bool check_rows, char *err, size_t errlen)
{
	dd_copy		p;
	dd_copy_row r;
	size_t		off = 0,
				k = 0;
	int			rc = DDICT_OK;

	*rows = 0;
	dd_copy_init(&p);
	while (off < len && rc == DDICT_OK)
	{
		size_t		n = sizes[k++ % nsizes];
		/* each piece in a buffer of its own, freed after use: a row that
		 * pointed into an old piece would be caught by ASan/valgrind */
		char	   *piece;

		if (n > len - off)
			n = len - off;
		piece = malloc(n ? n : 1);
		memcpy(piece, buf + off, n);
		off += n;
		rc = dd_copy_feed(&p, piece, n);
		while (rc == DDICT_OK)
		{
			int			x = dd_copy_next(&p, &r);

			if (x == DD_COPY_ROW)
			{
				if (check_rows)
				{
					char		key[16];

					snprintf(key, sizeof(key), "k%d", *rows);
					assert_int_equal(r.klen, strlen(key));
					assert_memory_equal(r.key, key, r.klen);
					assert_int_equal(r.vlen, (size_t) *rows + 1);
					for (size_t i = 0; i + 1 < r.vlen; i++)
						assert_int_equal(r.val[i], 'v');
					assert_int_equal(r.val[r.vlen - 1], '\0');
				}
				(*rows)++;
				continue;
			}
			if (x != DD_COPY_MORE && x != DD_COPY_END)
				rc = x;
			break;
		}
		free(piece);
	}
	if (rc == DDICT_OK)
		rc = dd_copy_finish(&p);
	if (err)
		snprintf(err, errlen, "%s", p.err);
	dd_copy_free(&p);
	return rc;
}

static void
test_copy_parser(void **state)
{
	static char buf[64 * 1024];
	size_t		len = copy_stream(buf, 200);
	const size_t whole[] = {SIZE_MAX / 2},
				bytes[] = {1},
				mixed[] = {7, 1, 64, 3, 1000, 2, 19};
	int			rows;
	char		err[160];

	(void) state;
	/* whole, byte by byte, and in odd pieces: the same 200 rows */
	assert_int_equal(parse_pieces(buf, len, whole, 1, &rows, true, err, sizeof(err)), DDICT_OK);
	assert_int_equal(rows, 200);
	assert_int_equal(parse_pieces(buf, len, bytes, 1, &rows, true, err, sizeof(err)), DDICT_OK);
	assert_int_equal(rows, 200);
	assert_int_equal(parse_pieces(buf, len, mixed, 7, &rows, true, err, sizeof(err)), DDICT_OK);
	assert_int_equal(rows, 200);
	/* an empty dict: header and trailer */
	len = copy_stream(buf, 0);
	assert_int_equal(parse_pieces(buf, len, whole, 1, &rows, true, err, sizeof(err)), DDICT_OK);
	assert_int_equal(rows, 0);

	/* cut anywhere: an error at the end, never a crash or a false success */
	len = copy_stream(buf, 20);
	for (size_t cut = 0; cut < len; cut++)
	{
		assert_int_equal(parse_pieces(buf, cut, whole, 1, &rows, true, err, sizeof(err)), DDICT_ERR);
		assert_non_null(strstr(err, "malformed COPY data"));
		assert_int_equal(parse_pieces(buf, cut, bytes, 1, &rows, true, NULL, 0), DDICT_ERR);
	}
}

/* One malformed stream: built from a valid one of 3 rows, patched. */
static void
expect_malformed(const char *what, size_t at, const char *patch, size_t plen, bool append)
{
	static char buf[4096];
	size_t		len = copy_stream(buf, 3);
	const size_t whole[] = {SIZE_MAX / 2},
				bytes[] = {1};
	int			rows;
	char		err[160];

	if (append)
	{
		memcpy(buf + len, patch, plen);
		len += plen;
	}
	else
		memcpy(buf + at, patch, plen);
	assert_int_equal(parse_pieces(buf, len, whole, 1, &rows, false, err, sizeof(err)), DDICT_ERR);
	if (strstr(err, what) == NULL)
		fail_msg("%s: got \"%s\"", what, err);
	assert_int_equal(parse_pieces(buf, len, bytes, 1, &rows, false, err, sizeof(err)), DDICT_ERR);
	if (strstr(err, what) == NULL)
		fail_msg("%s (byte by byte): got \"%s\"", what, err);
}

static void
test_copy_malformed(void **state)
{
	/* offsets in copy_stream's output: header 19 bytes, then row 0 =
	 * count(2) klen(4) "k0"(2) vlen(4) "\0"(1) */
	const size_t row0 = 19;

	(void) state;
	expect_malformed("bad signature", 0, "PGCOPX", 6, false);
	expect_malformed("bad signature", 6, "\r", 1, false);
	expect_malformed("OIDs", 11, "\0\1\0\0", 4, false);
	expect_malformed("critical flags", 11, "\x80\0\0\0", 4, false);
	expect_malformed("header extension too long", 15, "\x7f\xff\xff\xff", 4, false);
	expect_malformed("exactly two columns", row0, "\0\3", 2, false);
	expect_malformed("exactly two columns", row0, "\0\0", 2, false);
	expect_malformed("exactly two columns", row0, "\x80\0", 2, false);
	expect_malformed("without a key", row0 + 2, "\xff\xff\xff\xff", 4, false);
	expect_malformed("without a value", row0 + 8, "\xff\xff\xff\xff", 4, false);
	expect_malformed("negative field length", row0 + 2, "\xff\xff\xff\xfe", 4, false);
	expect_malformed("negative field length", row0 + 8, "\x80\0\0\0", 4, false);
	/* a length past the data: the stream ends inside the row */
	expect_malformed("without its trailer", row0 + 8, "\x7f\0\0\0", 4, false);
	expect_malformed("data after the trailer", 0, "x", 1, true);
	expect_malformed("data after the trailer", 0, "\xff\xff", 2, true);
}

/* Random bytes and random mutations of a valid stream: an answer, no crash. */
static void
test_copy_garbage(void **state)
{
	static char good[8192],
				buf[8192];
	size_t		len = copy_stream(good, 30);
	const size_t sizes[] = {5, 1, 17, 300, 2};
	unsigned	r = 12345;
	int			rows;

	(void) state;
	for (int iter = 0; iter < 20000; iter++)
	{
		size_t		n;

		if (iter % 2 == 0)
		{
			n = (size_t) (rand_r(&r) % 300);
			for (size_t i = 0; i < n; i++)
				buf[i] = (char) rand_r(&r);
			if (n >= 11 && iter % 4 == 0)
				memcpy(buf, good, 19);	/* a valid header, then garbage */
		}
		else
		{
			n = len;
			memcpy(buf, good, len);
			for (int m = rand_r(&r) % 4 + 1; m > 0; m--)
				buf[(size_t) rand_r(&r) % len] = (char) rand_r(&r);
			if (rand_r(&r) % 3 == 0)
				n = (size_t) rand_r(&r) % len;
		}
		rc_ok_or_err(parse_pieces(buf, n, sizes, 5, &rows, false, NULL, 0));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_builder_model),
		cmocka_unit_test(test_guard),
		cmocka_unit_test(test_guard_many),
		cmocka_unit_test(test_guard_shared_preempted),
		cmocka_unit_test(test_redis_url),
		cmocka_unit_test(test_copy_parser),
		cmocka_unit_test(test_copy_malformed),
		cmocka_unit_test(test_copy_garbage),
	};

	return cmocka_run_group_tests_name("unit", tests, NULL, NULL);
}
