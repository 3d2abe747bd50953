/*
 * test_unit.c — libddict internals without a server: the hash table, the
 * snapshot builder (deltas, tombstones, overlays, compaction) against a
 * reference model, change diffs, and the reader guard under threads.
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_builder_model),
		cmocka_unit_test(test_guard),
		cmocka_unit_test(test_guard_many),
		cmocka_unit_test(test_redis_url),
	};

	return cmocka_run_group_tests_name("unit", tests, NULL, NULL);
}
