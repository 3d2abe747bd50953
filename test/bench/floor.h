/*
 * floor.h — the "hash floor": what a C programmer would write instead of a
 * cache library, a plain in-process open-addressing hash table.
 *
 * Same family as libddict's own table (src/client/table.c, hash.c): keyed
 * SipHash-1-3, linear probing over 16-byte slots {hash, entry *} at most 3/4
 * full, entries {klen, vlen, key, NUL, value, NUL} in a bump arena.  It has
 * none of a shared cache's costs — no reader guard, no counters, no snapshot
 * pointer, no sync check — so it is the floor a cached get is measured
 * against.  Single-threaded, insert-or-replace, no deletion.
 */
#ifndef BENCH_FLOOR_H
#define BENCH_FLOOR_H

#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FL_ROTL(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))
#define FL_SIPROUND do { \
	v0 += v1; v1 = FL_ROTL(v1, 13); v1 ^= v0; v0 = FL_ROTL(v0, 32); \
	v2 += v3; v3 = FL_ROTL(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = FL_ROTL(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = FL_ROTL(v1, 17); v1 ^= v2; v2 = FL_ROTL(v2, 32); } while (0)

/* SipHash-1-3 (one compression round, three finalisation rounds). */
static inline uint64_t
fl_hash(const uint64_t k[2], const void *data, size_t len)
{
	const unsigned char *in = data, *end = in + (len & ~(size_t) 7);
	uint64_t	v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1];
	uint64_t	v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
	uint64_t	b = (uint64_t) len << 56, m;

	for (; in != end; in += 8)
	{
		memcpy(&m, in, 8);
		m = le64toh(m);
		v3 ^= m; FL_SIPROUND; v0 ^= m;
	}
	for (size_t i = 0; i < (len & 7); i++)
		b |= (uint64_t) in[i] << (8 * i);
	v3 ^= b; FL_SIPROUND; v0 ^= b;
	v2 ^= 0xff; FL_SIPROUND; FL_SIPROUND; FL_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

typedef struct fl_entry { uint32_t klen, vlen; char data[]; } fl_entry;
typedef struct fl_slot { uint64_t hash; fl_entry *e; } fl_slot;
typedef struct fl_chunk { struct fl_chunk *next; size_t used; char data[]; } fl_chunk;
#define FL_CHUNK (1024 * 1024)

typedef struct fl_table
{
	fl_slot    *slots;
	size_t		mask, used;
	fl_chunk   *arena;
	uint64_t	seed[2];
} fl_table;

static inline int
fl_init(fl_table *t, size_t cap)		/* cap: a power of two */
{
	memset(t, 0, sizeof(*t));
	t->seed[0] = 0x0123456789abcdefULL;
	t->seed[1] = 0xfedcba9876543210ULL;
	t->mask = cap - 1;
	t->slots = calloc(cap, sizeof(fl_slot));
	return t->slots ? 0 : -1;
}

static inline void
fl_free(fl_table *t)
{
	while (t->arena) { fl_chunk *n = t->arena->next; free(t->arena); t->arena = n; }
	free(t->slots);
	t->slots = NULL;
}

static inline const fl_entry *
fl_find(const fl_table *t, const char *key, size_t klen)
{
	uint64_t	h = fl_hash(t->seed, key, klen);

	for (size_t i = h & t->mask;; i = (i + 1) & t->mask)
	{
		const fl_slot *s = &t->slots[i];

		if (s->e == NULL)
			return NULL;
		if (s->hash == h && s->e->klen == klen && memcmp(s->e->data, key, klen) == 0)
			return s->e;
	}
}

static inline int
fl_grow(fl_table *t)
{
	size_t		cap = (t->mask + 1) * 2;
	fl_slot    *n = calloc(cap, sizeof(fl_slot));

	if (n == NULL)
		return -1;
	for (size_t j = 0; j <= t->mask; j++)
		if (t->slots[j].e)
		{
			size_t		i = t->slots[j].hash & (cap - 1);

			while (n[i].e)
				i = (i + 1) & (cap - 1);
			n[i] = t->slots[j];
		}
	free(t->slots);
	t->slots = n;
	t->mask = cap - 1;
	return 0;
}

/* Insert or replace; copies the bytes.  0 ok, -1 out of memory. */
static inline int
fl_put(fl_table *t, const char *key, size_t klen, const char *val, size_t vlen)
{
	size_t		need = (sizeof(fl_entry) + klen + vlen + 2 + 7) & ~(size_t) 7;
	uint64_t	h = fl_hash(t->seed, key, klen);
	fl_entry   *e;
	size_t		i;

	if (t->used + 1 > (t->mask + 1) - (t->mask + 1) / 4 && fl_grow(t) != 0)
		return -1;
	if (t->arena == NULL || FL_CHUNK - t->arena->used < need)
	{
		fl_chunk   *c = malloc(sizeof(fl_chunk) + (need > FL_CHUNK ? need : FL_CHUNK));

		if (c == NULL)
			return -1;
		c->used = 0;
		c->next = t->arena;
		t->arena = c;
	}
	e = (fl_entry *) (t->arena->data + t->arena->used);
	t->arena->used += need;
	e->klen = (uint32_t) klen;
	e->vlen = (uint32_t) vlen;
	memcpy(e->data, key, klen);
	e->data[klen] = '\0';
	memcpy(e->data + klen + 1, val, vlen);
	e->data[klen + 1 + vlen] = '\0';
	for (i = h & t->mask; t->slots[i].e; i = (i + 1) & t->mask)
		if (t->slots[i].hash == h && t->slots[i].e->klen == klen &&
			memcmp(t->slots[i].e->data, key, klen) == 0)
		{
			t->slots[i].e = e;	/* replaced: old bytes stay in the arena */
			return 0;
		}
	t->slots[i].hash = h;
	t->slots[i].e = e;
	t->used++;
	return 0;
}

#endif							/* BENCH_FLOOR_H */
