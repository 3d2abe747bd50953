/*
 * api.c — opening and closing handles, reads, pins, statistics.
 *
 * A read is: maybe check the server (per the mode, never waiting for another
 * thread's check), hash the key, enter a guard section, look the key up in
 * the current snapshot and copy the value out (or take a pin's reference),
 * leave the section.  The section is what lets a concurrent reload free the
 * old snapshot safely; see guard.c.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

DDICT_API void
ddict_options_init(ddict_options *o)
{
	memset(o, 0, sizeof(*o));
	o->mode = DDICT_AUTOSYNC;
	o->interval_ms = 1000;
	o->timeout_ms = 5000;
	o->connect_timeout_ms = 5000;
	o->backoff_min_ms = 100;
	o->backoff_max_ms = 5000;
	o->snapshot_interval_ms = 10000;
}

DDICT_API const char *
ddict_version_string(void)
{
	return DDICT_VERSION_STRING;
}

DDICT_API void
ddict_free(void *p)
{
	free(p);
}

static void
handle_free(ddict *h)
{
	if (h == NULL)
		return;
	dd_redis_stop(h);
	dd_redis_free(h);
	dd_conn_close(&h->conn);
	dd_guard_drain(&h->guard);
	dd_snap_unref(atomic_load(&h->current));
	pthread_mutex_destroy(&h->sync_lock);
	pthread_mutex_destroy(&h->err_lock);
	free((char *) h->opts.snapshot_path);
	free(h->dict);
	free(h);
}

static ddict *
handle_new(const char *dict, const ddict_options *opts)
{
	ddict	   *h;
	void	   *mem;
	int			rc;

	if (dict == NULL || dict[0] == '\0')
	{
		dd_seterr(DDICT_EINVAL, "ddict_open: a dict name is required");
		return NULL;
	}
	if (opts && opts->mode != DDICT_AUTOSYNC && opts->mode != DDICT_MANUAL &&
		opts->mode != DDICT_INTERVAL && opts->mode != DDICT_PUSH)
	{
		dd_seterr(DDICT_EINVAL, "ddict_open: unknown mode %d", (int) opts->mode);
		return NULL;
	}
	/* The guard's slots are cache-line aligned: so must the handle be. */
	if (posix_memalign(&mem, DD_CACHELINE, sizeof(ddict)) != 0)
	{
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	h = memset(mem, 0, sizeof(ddict));
	if (opts)
		h->opts = *opts;
	else
		ddict_options_init(&h->opts);
	if (h->opts.backoff_max_ms < h->opts.backoff_min_ms)
		h->opts.backoff_max_ms = h->opts.backoff_min_ms;
	h->opts.snapshot_path = NULL;
	/* not kept: parsed into h->redis */
	h->opts.redis_url = NULL;
	h->opts.redis_prefix = NULL;
	h->stop_fd = -1;
	rc = dd_redis_init(h, opts ? opts->redis_url : NULL, opts ? opts->redis_prefix : NULL);
	if (rc != DDICT_OK)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", ddict_errmsg());
		dd_redis_free(h);
		free(h);
		dd_seterr(rc, "%s", msg);
		return NULL;
	}
	pthread_mutex_init(&h->sync_lock, NULL);
	pthread_mutex_init(&h->err_lock, NULL);
	dd_random_key(h->seed);
	h->snapfile_version = INT64_MIN;
	h->dict = strdup(dict);
	if (opts && opts->snapshot_path && opts->snapshot_path[0])
		h->opts.snapshot_path = strdup(opts->snapshot_path);
	atomic_init(&h->current, dd_snap_empty(h->seed));
	if (h->dict == NULL || atomic_load(&h->current) == NULL ||
		(opts && opts->snapshot_path && opts->snapshot_path[0] && h->opts.snapshot_path == NULL))
	{
		handle_free(h);
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	return h;
}

/* The first load; from the snapshot file when the server is unreachable. */
static ddict *
initial_load(ddict *h)
{
	int			rc;

	dd_lock(h);
	rc = dd_sync_locked(h, true);
	if (rc < 0 && (rc == DDICT_ECONN || rc == DDICT_ETIMEDOUT) && h->opts.snapshot_path)
	{
		char		why[512];
		ddict_snapshot *s;
		dd_build	b = {.full = true, .from_file = true};

		snprintf(why, sizeof(why), "%s", ddict_errmsg());
		if (dd_snapfile_read(h->opts.snapshot_path, h->dict, h->seed, &s) == DDICT_OK)
		{
			dd_publish(h, s, &b);
			h->snapfile_version = s->version;
			atomic_store(&h->stale, true);
			rc = DDICT_OK;
		}
		else
		{
			char		fmsg[512];

			snprintf(fmsg, sizeof(fmsg), "%s", ddict_errmsg());
			dd_seterr(rc, "%s; and no snapshot to start from: %s", why, fmsg);
		}
	}
	dd_unlock(h);
	/* Redis (the first connection) and the handle's thread, if any. */
	if (rc >= 0)
		rc = dd_redis_start(h);
	if (rc < 0)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", ddict_errmsg());
		handle_free(h);
		dd_seterr(rc, "%s", msg);
		return NULL;
	}
	return h;
}

DDICT_API ddict *
ddict_open(const char *conninfo, const char *dict, const ddict_options *opts)
{
	ddict	   *h = handle_new(dict, opts);

	if (h == NULL)
		return NULL;
	if (dd_conn_init_own(&h->conn, conninfo) != DDICT_OK)
	{
		handle_free(h);
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	return initial_load(h);
}

DDICT_API ddict *
ddict_open_conn(PGconn *conn, const char *dict, const ddict_options *opts)
{
	ddict	   *h;

	if (conn == NULL)
	{
		dd_seterr(DDICT_EINVAL, "ddict_open_conn: conn must not be NULL");
		return NULL;
	}
	if (opts && opts->mode == DDICT_PUSH)
	{
		/* Its thread would use the connection at any time. */
		dd_seterr(DDICT_EINVAL, "ddict_open_conn: push mode needs a connection of its own"
				  " (use ddict_open())");
		return NULL;
	}
	h = handle_new(dict, opts);
	if (h == NULL)
		return NULL;
	dd_conn_init_borrowed(&h->conn, conn);
	return initial_load(h);
}

DDICT_API void
ddict_close(ddict *d)
{
	ddict_snapshot *s;

	if (d == NULL)
		return;
	/* First the handle's thread: it may be syncing (its waits end at once). */
	dd_redis_stop(d);
	dd_lock(d);
	s = atomic_load(&d->current);
	/* Keep the freshest contents for the next start. */
	if (d->opts.snapshot_path && s->epoch != 0 && s->version != d->snapfile_version)
		(void) dd_snapfile_write(d, s);
	dd_unlock(d);
	handle_free(d);
}

/* ---- reads ---- */

static inline int
check_key(const ddict *d, const char *key, size_t *keylen, const char *fn)
{
	if (d == NULL || key == NULL)
		return dd_seterr(DDICT_EINVAL, "%s: handle and key must not be NULL", fn);
	if (*keylen == DDICT_NTS)
		*keylen = strlen(key);
	return DDICT_OK;
}

DDICT_API int
ddict_get(ddict *d, const char *key, size_t keylen, char **value, size_t *len)
{
	dd_reader_slot *slot;
	const dd_entry *e;
	unsigned	phase;
	uint64_t	hash;
	int			rc = DDICT_NOTFOUND;

	if (value)
		*value = NULL;
	if (len)
		*len = 0;
	if (check_key(d, key, &keylen, "ddict_get") != DDICT_OK)
		return DDICT_EINVAL;
	dd_maybe_sync(d);
	hash = dd_hash(d->seed, key, keylen);

	slot = dd_guard_enter(&d->guard, &phase);
	e = dd_snap_find(atomic_load(&d->current), hash, key, keylen);
	if (e)
	{
		rc = DDICT_OK;
		if (len)
			*len = e->vlen;
		if (value)
		{
			char	   *copy = malloc((size_t) e->vlen + 1);

			if (copy == NULL)
				rc = DDICT_ENOMEM;
			else
			{
				memcpy(copy, dd_entry_value(e), (size_t) e->vlen + 1);
				*value = copy;
			}
		}
	}
	dd_guard_exit(slot, phase);

	atomic_fetch_add_explicit(&slot->reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(rc == DDICT_NOTFOUND ? &slot->misses : &slot->hits, 1,
							  memory_order_relaxed);
	if (rc == DDICT_ENOMEM)
	{
		if (len)
			*len = 0;
		return dd_seterr(rc, "out of memory");
	}
	return rc;
}

DDICT_API int
ddict_get_buf(ddict *d, const char *key, size_t keylen, void *buf, size_t bufsize,
			  size_t *len)
{
	dd_reader_slot *slot;
	const dd_entry *e;
	unsigned	phase;
	uint64_t	hash;
	int			rc = DDICT_NOTFOUND;

	if (len)
		*len = 0;
	if (check_key(d, key, &keylen, "ddict_get_buf") != DDICT_OK)
		return DDICT_EINVAL;
	if (buf == NULL && bufsize > 0)
		return dd_seterr(DDICT_EINVAL, "ddict_get_buf: buf is NULL");
	dd_maybe_sync(d);
	hash = dd_hash(d->seed, key, keylen);

	slot = dd_guard_enter(&d->guard, &phase);
	e = dd_snap_find(atomic_load(&d->current), hash, key, keylen);
	if (e)
	{
		if (len)
			*len = e->vlen;
		if (e->vlen <= bufsize)
		{
			memcpy(buf, dd_entry_value(e), e->vlen);
			rc = DDICT_OK;
		}
		else
			rc = DDICT_ERANGE;
	}
	dd_guard_exit(slot, phase);

	atomic_fetch_add_explicit(&slot->reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(rc == DDICT_NOTFOUND ? &slot->misses : &slot->hits, 1,
							  memory_order_relaxed);
	if (rc == DDICT_ERANGE)
		return dd_seterr(rc, "ddict_get_buf: the value needs %zu bytes, the buffer has %zu",
						 *len, bufsize);
	return rc;
}

DDICT_API int64_t
ddict_len(ddict *d)
{
	dd_reader_slot *slot;
	unsigned	phase;
	int64_t		n;

	if (d == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_len: handle must not be NULL");
	dd_maybe_sync(d);
	slot = dd_guard_enter(&d->guard, &phase);
	n = (int64_t) atomic_load(&d->current)->len;
	dd_guard_exit(slot, phase);
	atomic_fetch_add_explicit(&slot->reads, 1, memory_order_relaxed);
	return n;
}

DDICT_API int64_t
ddict_version(ddict *d)
{
	dd_reader_slot *slot;
	unsigned	phase;
	int64_t		v;

	if (d == NULL)
		return 0;
	slot = dd_guard_enter(&d->guard, &phase);
	v = atomic_load(&d->current)->version;
	dd_guard_exit(slot, phase);
	return v;
}

static ddict_snapshot *
pin_current(ddict *d)
{
	dd_reader_slot *slot;
	unsigned	phase;
	ddict_snapshot *s;

	slot = dd_guard_enter(&d->guard, &phase);
	s = atomic_load(&d->current);
	/* Safe: inside the section the handle's own reference cannot go away. */
	dd_snap_ref(s);
	dd_guard_exit(slot, phase);
	atomic_fetch_add_explicit(&slot->reads, 1, memory_order_relaxed);
	return s;
}

DDICT_API ddict_snapshot *
ddict_pin(ddict *d)
{
	if (d == NULL)
	{
		dd_seterr(DDICT_EINVAL, "ddict_pin: handle must not be NULL");
		return NULL;
	}
	dd_maybe_sync(d);
	return pin_current(d);
}

DDICT_API int
ddict_foreach(ddict *d, ddict_foreach_fn fn, void *arg)
{
	ddict_snapshot *s;
	size_t		pos = 0,
				klen,
				vlen;
	const char *k,
			   *v;
	int			rc = 0;

	if (d == NULL || fn == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_foreach: handle and fn must not be NULL");
	s = ddict_pin(d);
	while (rc == 0 && ddict_snapshot_next(s, &pos, &k, &klen, &v, &vlen))
		rc = fn(arg, k, klen, v, vlen);
	ddict_unpin(s);
	return rc;
}

/* ---- sync, state ---- */

DDICT_API int
ddict_sync(ddict *d)
{
	int			rc;

	if (d == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_sync: handle must not be NULL");
	if (dd_in_callback(d))
		return dd_seterr(DDICT_EBUSY, "ddict_sync: not allowed from a change callback of the same handle");
	dd_lock(d);
	rc = dd_sync_locked(d, false);
	dd_unlock(d);
	return rc;
}

DDICT_API int
ddict_is_stale(ddict *d)
{
	return d ? atomic_load(&d->stale) : 1;
}

DDICT_API int
ddict_get_stats(ddict *d, ddict_stats *out)
{
	dd_reader_slot *slot;
	unsigned	phase;
	const ddict_snapshot *s;
	int64_t		ok;

	if (d == NULL || out == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_get_stats: handle and out must not be NULL");
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < DD_GUARD_SLOTS; i++)
	{
		out->reads += atomic_load_explicit(&d->guard.slots[i].reads, memory_order_relaxed);
		out->hits += atomic_load_explicit(&d->guard.slots[i].hits, memory_order_relaxed);
		out->misses += atomic_load_explicit(&d->guard.slots[i].misses, memory_order_relaxed);
		out->coalesced += atomic_load_explicit(&d->guard.slots[i].coalesced, memory_order_relaxed);
	}
#define LOAD(f) out->f = atomic_load_explicit(&d->f, memory_order_relaxed)
	LOAD(checks);
	LOAD(unchanged);
	LOAD(deltas);
	LOAD(reloads);
	LOAD(writes);
	LOAD(errors);
	LOAD(reconnects);
	LOAD(compactions);
	LOAD(redis_checks);
	LOAD(redis_errors);
	LOAD(pushes);
#undef LOAD
	out->redis = atomic_load(&d->redis.used);
	out->rows_fetched = atomic_load_explicit(&d->rows, memory_order_relaxed);
	slot = dd_guard_enter(&d->guard, &phase);
	s = atomic_load(&d->current);
	out->version = s->version;
	out->epoch = s->epoch;
	out->len = s->len;
	dd_guard_exit(slot, phase);
	out->stale = atomic_load(&d->stale);
	out->connected = atomic_load(&d->connected);
	ok = atomic_load(&d->last_ok_us);
	out->staleness_ms = ok ? (dd_now_us() - ok) / 1000 : -1;
	pthread_mutex_lock(&d->err_lock);
	dd_strlcpy(out->last_error, d->last_error, sizeof(out->last_error));
	pthread_mutex_unlock(&d->err_lock);
	return DDICT_OK;
}

DDICT_API int
ddict_save_snapshot(ddict *d)
{
	int			rc;

	if (d == NULL || d->opts.snapshot_path == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_save_snapshot: no snapshot_path was given");
	if (dd_in_callback(d))
		return dd_seterr(DDICT_EBUSY, "ddict_save_snapshot: not allowed from a change callback");
	dd_lock(d);
	rc = dd_snapfile_write(d, atomic_load(&d->current));
	dd_unlock(d);
	return rc;
}
