/*
 * table.c — the hash table a snapshot is made of.
 *
 * Our own open-addressing table rather than a library: lookups are the hot
 * path, the table is immutable once published (so no deletion and no
 * concurrency inside it), and entries live in a bump arena so that a 1M-key
 * dict costs one allocation per megabyte, not per key, and is freed at once.
 * Linear probing over 16-byte slots that carry the full 64-bit hash: a probe
 * compares hashes before touching the entry, so misses rarely leave the slot
 * array.  The load factor stays at or below 3/4.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct dd_chunk
{
	dd_chunk   *next;
	size_t		size;
	size_t		used;
	_Alignas(8) char data[];
};

#define ARENA_FIRST 4096
#define ARENA_MAX (1024 * 1024)

static void *
arena_alloc(dd_arena *a, size_t n)
{
	dd_chunk   *c = a->head;
	void	   *p;

	n = (n + 7) & ~(size_t) 7;
	if (c == NULL || c->size - c->used < n)
	{
		size_t		size = a->next_size ? a->next_size : ARENA_FIRST;

		if (size < n)
			size = n;
		c = malloc(sizeof(dd_chunk) + size);
		if (c == NULL)
			return NULL;
		c->size = size;
		c->used = 0;
		c->next = a->head;
		a->head = c;
		a->bytes += size;
		/* Grow geometrically: small overlays stay small, big loads get 1 MB. */
		a->next_size = size * 2 > ARENA_MAX ? ARENA_MAX : size * 2;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

static void
arena_free(dd_arena *a)
{
	dd_chunk   *c = a->head;

	while (c)
	{
		dd_chunk   *next = c->next;

		free(c);
		c = next;
	}
	a->head = NULL;
}

dd_table *
dd_table_new(size_t expect)
{
	dd_table   *t = calloc(1, sizeof(dd_table));
	size_t		cap = 8;

	if (t == NULL)
		return NULL;
	while (cap - cap / 4 <= expect)
		cap *= 2;
	t->slots = calloc(cap, sizeof(dd_slot));
	if (t->slots == NULL)
	{
		free(t);
		return NULL;
	}
	t->mask = cap - 1;
	atomic_init(&t->refs, 1);
	return t;
}

void
dd_table_ref(dd_table *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void
dd_table_unref(dd_table *t)
{
	if (t == NULL)
		return;
	/* acq_rel: the last owner must see every other owner's reads finished. */
	if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
		return;
	arena_free(&t->arena);
	free(t->slots);
	free(t);
}

static int
grow(dd_table *t)
{
	size_t		cap = (t->mask + 1) * 2;
	dd_slot    *slots = calloc(cap, sizeof(dd_slot));

	if (slots == NULL)
		return DDICT_ENOMEM;
	for (size_t j = 0; j <= t->mask; j++)
	{
		size_t		i;

		if (t->slots[j].e == NULL)
			continue;
		i = (size_t) t->slots[j].hash & (cap - 1);
		while (slots[i].e != NULL)
			i = (i + 1) & (cap - 1);
		slots[i] = t->slots[j];
	}
	free(t->slots);
	t->slots = slots;
	t->mask = cap - 1;
	return DDICT_OK;
}

int
dd_table_put(dd_table *t, uint64_t hash, const char *key, size_t klen,
			 const char *val, size_t vlen)
{
	bool		tomb = (vlen == DD_TOMB);
	size_t		vbytes = tomb ? 0 : vlen;
	dd_entry   *e;
	size_t		i;

	if (klen > DD_MAX_LEN || (!tomb && vlen > DD_MAX_LEN))
		return DDICT_EINVAL;
	if ((t->used + 1) > (t->mask + 1) - (t->mask + 1) / 4 && grow(t) != DDICT_OK)
		return DDICT_ENOMEM;
	e = arena_alloc(&t->arena, sizeof(dd_entry) + klen + 1 + vbytes + 1);
	if (e == NULL)
		return DDICT_ENOMEM;
	e->klen = (uint32_t) klen;
	e->vlen = tomb ? DD_TOMB : (uint32_t) vlen;
	if (klen)
		memcpy(e->data, key, klen);
	e->data[klen] = '\0';
	if (vbytes)
		memcpy(e->data + klen + 1, val, vbytes);
	e->data[klen + 1 + vbytes] = '\0';

	for (i = (size_t) hash & t->mask;; i = (i + 1) & t->mask)
	{
		dd_slot    *s = &t->slots[i];

		if (s->e == NULL)
		{
			s->hash = hash;
			s->e = e;
			t->used++;
			if (!tomb)
				t->live++;
			return DDICT_OK;
		}
		if (dd_slot_matches(s, hash, key, klen))
		{
			/* Replaced: the old bytes stay in the arena until the table goes. */
			if (dd_entry_is_tomb(s->e) && !tomb)
				t->live++;
			else if (!dd_entry_is_tomb(s->e) && tomb)
				t->live--;
			s->e = e;
			return DDICT_OK;
		}
	}
}
