/*
 * snapshot.c — versions of the dict, and how the next one is built.
 *
 * A snapshot is immutable once published: readers look keys up with no
 * synchronisation.  Its contents are a base table shared with earlier and
 * later snapshots plus a small overlay of the keys that deltas changed since
 * that base was built (tombstones for deleted keys).  Applying a delta of k
 * keys therefore copies the overlay and the k keys, not the dict; when the
 * overlay outgrows ~4 sqrt(n) entries, the next delta merges everything into
 * a new base (a compaction).  With that threshold a delta costs O(sqrt n)
 * and each changed key O(sqrt n) amortised, instead of O(n) per delta for a
 * copy-on-write table — 1M keys: ~4K entry copies instead of 1M.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

ddict_snapshot *
dd_snap_empty(const uint64_t seed[2])
{
	ddict_snapshot *s = calloc(1, sizeof(ddict_snapshot));

	if (s == NULL)
		return NULL;
	s->base = dd_table_new(0);
	if (s->base == NULL)
	{
		free(s);
		return NULL;
	}
	atomic_init(&s->refs, 1);
	memcpy(s->seed, seed, sizeof(s->seed));
	s->floor = INT64_MAX;
	/* epoch 0: never loaded from a server; the first check asks in full. */
	return s;
}

void
dd_snap_ref(ddict_snapshot *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void
dd_snap_unref(ddict_snapshot *s)
{
	if (s == NULL)
		return;
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	dd_table_unref(s->base);
	dd_table_unref(s->over);
	free(s);
}

/* Next live slot: the overlay's live entries, then base entries the overlay
 * does not shadow.  *pos runs over both slot arrays. */
static const dd_slot *
snap_next(const ddict_snapshot *s, size_t *pos)
{
	size_t		ocap = s->over ? dd_table_capacity(s->over) : 0;
	size_t		bcap = dd_table_capacity(s->base);

	while (*pos < ocap)
	{
		const dd_slot *sl = &s->over->slots[(*pos)++];

		if (sl->e && !dd_entry_is_tomb(sl->e))
			return sl;
	}
	while (*pos < ocap + bcap)
	{
		const dd_slot *sl = &s->base->slots[(*pos)++ - ocap];

		if (sl->e && !(s->over && dd_table_find(s->over, sl->hash,
												dd_entry_key(sl->e), sl->e->klen)))
			return sl;
	}
	return NULL;
}

/* ---- public, on pinned snapshots ---- */

DDICT_API int
ddict_snapshot_get(const ddict_snapshot *s, const char *key, size_t keylen,
				   const char **value, size_t *len)
{
	const dd_entry *e;

	if (value)
		*value = NULL;
	if (len)
		*len = 0;
	if (s == NULL || key == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_snapshot_get: snapshot and key must not be NULL");
	if (keylen == DDICT_NTS)
		keylen = strlen(key);
	e = dd_snap_find(s, dd_hash(s->seed, key, keylen), key, keylen);
	if (e == NULL)
		return DDICT_NOTFOUND;
	if (value)
		*value = dd_entry_value(e);
	if (len)
		*len = e->vlen;
	return DDICT_OK;
}

DDICT_API size_t
ddict_snapshot_len(const ddict_snapshot *s)
{
	return s ? s->len : 0;
}

DDICT_API int64_t
ddict_snapshot_version(const ddict_snapshot *s)
{
	return s ? s->version : 0;
}

DDICT_API int
ddict_snapshot_next(const ddict_snapshot *s, size_t *pos, const char **key,
					size_t *keylen, const char **value, size_t *len)
{
	const dd_slot *sl;

	if (s == NULL || pos == NULL || (sl = snap_next(s, pos)) == NULL)
		return 0;
	if (key)
		*key = dd_entry_key(sl->e);
	if (keylen)
		*keylen = sl->e->klen;
	if (value)
		*value = dd_entry_value(sl->e);
	if (len)
		*len = sl->e->vlen;
	return 1;
}

DDICT_API void
ddict_unpin(ddict_snapshot *s)
{
	dd_snap_unref(s);
}

/* ---- building the next snapshot ---- */

int
dd_build_begin(dd_build *b, const ddict_snapshot *old, bool full, const uint64_t seed[2])
{
	memset(b, 0, sizeof(*b));
	b->old = old;
	b->full = full || old == NULL;
	memcpy(b->seed, seed, sizeof(b->seed));
	/* A full reload is usually about as big as what we have: size for it. */
	b->tab = dd_table_new(b->full && old ? old->len : 16);
	return b->tab ? DDICT_OK : DDICT_ENOMEM;
}

int
dd_build_row(dd_build *b, const char *key, size_t klen, const char *val, size_t vlen)
{
	uint64_t	h = dd_hash(b->seed, key, klen);

	b->rows++;
	if (val == NULL)
	{
		if (b->full)
			return DDICT_OK;	/* nothing to delete in a fresh table */
		vlen = DD_TOMB;
	}
	return dd_table_put(b->tab, h, key, klen, val, vlen);
}

static size_t
isqrt(size_t n)
{
	size_t		x = n,
				y = (x + 1) / 2;

	while (y < x)
	{
		x = y;
		y = (x + n / x) / 2;
	}
	return x;
}

/* Overlay entries beyond which the next delta compacts. */
static size_t
overlay_limit(size_t base_live)
{
	return 256 + 4 * isqrt(base_live);
}

static bool
in_table(const dd_table *t, const dd_slot *sl)
{
	return t && dd_table_find(t, sl->hash, dd_entry_key(sl->e), sl->e->klen) != NULL;
}

/* Everything in one new base: old base minus what the overlay or the changes
 * shadow, the overlay's live keys the changes do not shadow, the changes. */
static dd_table *
compact(const ddict_snapshot *old, const dd_table *chg, size_t len)
{
	dd_table   *nb = dd_table_new(len);
	const dd_table *ob = old->base,
			   *oo = old->over;

	if (nb == NULL)
		return NULL;
	for (size_t i = 0; i <= ob->mask; i++)
	{
		const dd_slot *sl = &ob->slots[i];

		if (sl->e && !in_table(chg, sl) && !in_table(oo, sl) &&
			dd_table_put_entry(nb, sl->hash, sl->e) != DDICT_OK)
			goto fail;
	}
	for (size_t i = 0; oo && i <= oo->mask; i++)
	{
		const dd_slot *sl = &oo->slots[i];

		if (sl->e && !dd_entry_is_tomb(sl->e) && !in_table(chg, sl) &&
			dd_table_put_entry(nb, sl->hash, sl->e) != DDICT_OK)
			goto fail;
	}
	for (size_t i = 0; i <= chg->mask; i++)
	{
		const dd_slot *sl = &chg->slots[i];

		if (sl->e && !dd_entry_is_tomb(sl->e) &&
			dd_table_put_entry(nb, sl->hash, sl->e) != DDICT_OK)
			goto fail;
	}
	return nb;
fail:
	dd_table_unref(nb);
	return NULL;
}

/* The old overlay minus what the changes replace, plus the changes; a
 * deletion needs a tombstone only when the base has the key. */
static int
new_overlay(const ddict_snapshot *old, const dd_table *chg, size_t est, dd_table **out)
{
	dd_table   *no = dd_table_new(est);
	const dd_table *oo = old->over;

	*out = NULL;
	if (no == NULL)
		return DDICT_ENOMEM;
	for (size_t i = 0; oo && i <= oo->mask; i++)
	{
		const dd_slot *sl = &oo->slots[i];

		if (sl->e && !in_table(chg, sl) &&
			dd_table_put_entry(no, sl->hash, sl->e) != DDICT_OK)
			goto fail;
	}
	for (size_t i = 0; i <= chg->mask; i++)
	{
		const dd_slot *sl = &chg->slots[i];

		if (sl->e == NULL || (dd_entry_is_tomb(sl->e) && !in_table(old->base, sl)))
			continue;
		if (dd_table_put_entry(no, sl->hash, sl->e) != DDICT_OK)
			goto fail;
	}
	if (no->used == 0)
		dd_table_unref(no);
	else
		*out = no;
	return DDICT_OK;
fail:
	dd_table_unref(no);
	return DDICT_ENOMEM;
}

int
dd_build_finish(dd_build *b, int64_t version, int64_t epoch, int64_t cursor,
				ddict_snapshot **out)
{
	ddict_snapshot *s = calloc(1, sizeof(ddict_snapshot));

	*out = NULL;
	if (s == NULL)
		return DDICT_ENOMEM;
	atomic_init(&s->refs, 1);
	memcpy(s->seed, b->seed, sizeof(s->seed));
	s->version = version;
	s->epoch = epoch;
	s->cursor = cursor;
	s->floor = INT64_MAX;		/* the caller sets it when known */

	if (b->full)
	{
		s->base = b->tab;		/* ownership moves to the snapshot */
		b->tab = NULL;
		s->len = s->base->live;
	}
	else
	{
		const ddict_snapshot *old = b->old;
		const dd_table *chg = b->tab;
		size_t		len = old->len;
		size_t		est = (old->over ? old->over->used : 0) + chg->used;

		for (size_t i = 0; i <= chg->mask; i++)
		{
			const dd_slot *sl = &chg->slots[i];
			bool		was,
						now;

			if (sl->e == NULL)
				continue;
			was = dd_snap_find(old, sl->hash, dd_entry_key(sl->e), sl->e->klen) != NULL;
			now = !dd_entry_is_tomb(sl->e);
			if (now && !was)
				len++;
			else if (was && !now)
				len--;
		}
		s->len = len;
		if (est > overlay_limit(old->base->live))
		{
			s->base = compact(old, chg, len);
			if (s->base == NULL)
				goto nomem;
			b->compacted = true;
		}
		else
		{
			if (new_overlay(old, chg, est, &s->over) != DDICT_OK)
				goto nomem;
			s->base = old->base;
			dd_table_ref(s->base);
		}
	}
	*out = s;
	return DDICT_OK;
nomem:
	free(s);
	return DDICT_ENOMEM;
}

void
dd_build_free(dd_build *b)
{
	dd_table_unref(b->tab);
	b->tab = NULL;
}

/* ---- change notifications ---- */

static void
emit(const dd_entry *o, const dd_entry *n, const dd_entry *keyed, int64_t version,
	 ddict_change_fn fn, void *arg)
{
	ddict_change c;

	if (o && n && o->vlen == n->vlen &&
		memcmp(dd_entry_value(o), dd_entry_value(n), o->vlen) == 0)
		return;
	if (!o && !n)
		return;
	c.version = version;
	c.key = dd_entry_key(keyed);
	c.keylen = keyed->klen;
	c.old_value = o ? dd_entry_value(o) : NULL;
	c.old_len = o ? o->vlen : 0;
	c.new_value = n ? dd_entry_value(n) : NULL;
	c.new_len = n ? n->vlen : 0;
	fn(&c, arg);
}

void
dd_snap_diff(const ddict_snapshot *old, const ddict_snapshot *new,
			 const dd_table *changes, ddict_change_fn fn, void *arg)
{
	const dd_slot *sl;
	size_t		pos = 0;

	if (changes)
	{
		for (size_t i = 0; i <= changes->mask; i++)
		{
			sl = &changes->slots[i];
			if (sl->e)
				emit(dd_snap_find(old, sl->hash, dd_entry_key(sl->e), sl->e->klen),
					 dd_snap_find(new, sl->hash, dd_entry_key(sl->e), sl->e->klen),
					 sl->e, new->version, fn, arg);
		}
		return;
	}
	while ((sl = snap_next(new, &pos)) != NULL)
		emit(dd_snap_find(old, sl->hash, dd_entry_key(sl->e), sl->e->klen),
			 sl->e, sl->e, new->version, fn, arg);
	pos = 0;
	while ((sl = snap_next(old, &pos)) != NULL)
		if (dd_snap_find(new, sl->hash, dd_entry_key(sl->e), sl->e->klen) == NULL)
			emit(sl->e, NULL, sl->e, new->version, fn, arg);
}
