/*
 * api.c — clients and handles: open and close, reads, pins, statistics.
 *
 * A client (dd_client) is refcounted: the application's reference
 * (ddict_client_open) and one per handle; ddict_open() makes a private
 * client whose only reference is its handle's.
 * A read is: maybe check the server (per the mode, never waiting for another
 * thread's check), hash the key, enter a guard section, look the key up in
 * the current snapshot and copy the value out (or take a pin's reference),
 * leave the section.  The section is what lets a concurrent reload free the
 * old snapshot safely; see guard.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

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

DDICT_API void
ddict_client_options_init(ddict_client_options *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->timeout_ms = 5000;
	o->connect_timeout_ms = 5000;
	o->backoff_min_ms = 100;
	o->backoff_max_ms = 5000;
	o->interval_ms = 1000;
}

/* ---- clients ---- */

static void
client_free(dd_client *c)
{
	dd_worker_stop(c);
	dd_conn_close(&c->conn);
	dd_vpage_client_free(c);
	free(c->vp_option);
	dd_rconn_free(c->get);
	dd_rconn_free(c->sub);
	dd_stream_close(c);
	if (c->kick_fd >= 0)
		close(c->kick_fd);
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	free(c->redis_prefix);
	free(c->dicts);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->list_lock);
	pthread_mutex_destroy(&c->start_lock);
	free(c);
}

static void
client_unref(dd_client *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1)
		client_free(c);
}

static int
client_redis(dd_client *c, const char *url, const char *prefix, const char *fn)
{
	char		err[300];

	if (url == NULL || url[0] == '\0')
		return DDICT_OK;
	if (ddict_redis_url_parse(url, &c->rtarget.url, err, sizeof(err)) != 0)
		return dd_seterr(DDICT_EINVAL, "%s: redis_url: %s", fn, err);
	c->redis_prefix = strdup(prefix ? prefix : "ddict:");
	if (c->redis_prefix == NULL)
		return dd_seterr(DDICT_ENOMEM, "out of memory");
	c->redis_enabled = true;
	return DDICT_OK;
}

/* conninfo NULL: borrowed (pg). */
static dd_client *
client_new(const char *conninfo, PGconn *pg, const ddict_client_options *o, const char *fn)
{
	dd_client  *c = calloc(1, sizeof(dd_client));
	const char *vp;
	int			rc;

	if (c == NULL)
	{
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->list_lock, NULL);
	pthread_mutex_init(&c->start_lock, NULL);
	atomic_init(&c->refs, 1);
	c->stop_fd = c->kick_fd = -1;
	c->interval_ms = o->interval_ms;
	c->idle_close_ms = o->idle_close_ms;
	if (pg)
		dd_conn_init_borrowed(&c->conn, pg, o->timeout_ms);
	else if (dd_conn_init_own(&c->conn, conninfo, o->timeout_ms, o->connect_timeout_ms,
							  o->backoff_min_ms, o->backoff_max_ms) != DDICT_OK)
	{
		client_free(c);
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	c->conn.prepare = o->direct != 0;
	/* the option, else the environment's DDICT_VERSIONS_PAGE (libddict.h) */
	vp = o->size >= offsetof(ddict_client_options, versions_page) + sizeof(char *) &&
		o->versions_page && o->versions_page[0] ? o->versions_page : getenv("DDICT_VERSIONS_PAGE");
	if (vp && vp[0] && (c->vp_option = strdup(vp)) == NULL)
	{
		client_free(c);
		dd_seterr(DDICT_ENOMEM, "out of memory");
		return NULL;
	}
	c->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->stop_fd < 0 || c->kick_fd < 0)
	{
		client_free(c);
		dd_seterr(DDICT_ERR, "%s: eventfd: %s", fn, strerror(errno));
		return NULL;
	}
	c->conn.stop_fd = c->stop_fd;
	c->conn.closing = &c->closing;
	dd_backoff_init(&c->rbackoff, o->backoff_min_ms, o->backoff_max_ms);
	dd_backoff_init(&c->xbackoff, o->backoff_min_ms, o->backoff_max_ms);
	c->rtarget.timeout_ms = o->timeout_ms;
	c->rtarget.connect_timeout_ms = o->connect_timeout_ms;
	c->rtarget.stop_fd = c->stop_fd;
	rc = client_redis(c, o->redis_url, o->redis_prefix, fn);
	if (rc != DDICT_OK)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", ddict_errmsg());
		client_free(c);
		dd_seterr(rc, "%s", msg);
		return NULL;
	}
	return c;
}

DDICT_API ddict_client *
ddict_client_open(const char *conninfo, const ddict_client_options *opts)
{
	ddict_client_options o;

	ddict_client_options_init(&o);
	if (opts)
	{
		if (opts->size < offsetof(ddict_client_options, direct) + sizeof(int) ||
			opts->size > sizeof(o))
		{
			dd_seterr(DDICT_EINVAL, "ddict_client_open: initialise the options with "
					  "ddict_client_options_init()");
			return NULL;
		}
		memcpy(&o, opts, opts->size);
	}
	return (ddict_client *) client_new(conninfo, NULL, &o, "ddict_client_open");
}

DDICT_API void
ddict_client_close(ddict_client *client)
{
	client_unref((dd_client *) client);
}

/* The private client of ddict_open() / ddict_open_conn(): the dict's options. */
static dd_client *
private_client(const char *conninfo, PGconn *pg, const ddict_options *opts, const char *fn)
{
	ddict_client_options o;
	ddict_options d;
	dd_client  *c;

	if (opts)
		d = *opts;
	else
		ddict_options_init(&d);
	ddict_client_options_init(&o);
	o.timeout_ms = d.timeout_ms;
	o.connect_timeout_ms = d.connect_timeout_ms;
	o.backoff_min_ms = d.backoff_min_ms;
	o.backoff_max_ms = d.backoff_max_ms;
	o.interval_ms = d.interval_ms;
	o.redis_prefix = d.redis_prefix;
	/* manual mode checks a redis_url but never uses Redis */
	o.redis_url = d.mode == DDICT_MANUAL ? NULL : d.redis_url;
	if (d.mode == DDICT_MANUAL && d.redis_url && d.redis_url[0])
	{
		ddict_redis_url u;
		char		err[300];

		if (ddict_redis_url_parse(d.redis_url, &u, err, sizeof(err)) != 0)
		{
			dd_seterr(DDICT_EINVAL, "%s: redis_url: %s", fn, err);
			return NULL;
		}
	}
	c = client_new(conninfo, pg, &o, fn);
	if (c)
		c->private_client = true;
	return c;
}

/* ---- handles ---- */

static void
handle_free(ddict *h)
{
	if (h == NULL)
		return;
	dd_guard_drain(&h->guard);
	dd_snap_unref(atomic_load(&h->current));
	pthread_mutex_destroy(&h->sync_lock);
	pthread_mutex_destroy(&h->err_lock);
	free((char *) h->opts.snapshot_path);
	free(atomic_load(&h->redis_key));
	free(atomic_load(&h->stream_key));
	free(h->dict);
	free(h);
}

static ddict *
handle_new(dd_client *c, const char *dict, const ddict_options *opts)
{
	ddict	   *h;
	void	   *mem;

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
	h->opts.snapshot_path = NULL;
	/* the client's apply: not kept */
	h->opts.redis_url = NULL;
	h->opts.redis_prefix = NULL;
	h->client = c;
	atomic_init(&h->pushed, INT64_MIN);
	atomic_init(&h->redis_key, NULL);
	atomic_init(&h->stream_key, NULL);
	atomic_init(&h->vp_index, UINT32_MAX);
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

/* The first load (sync_lock held); from the snapshot file when the server
 * is unreachable. */
static int
initial_load(ddict *h)
{
	int			rc = dd_sync_locked(h, true);
	char		why[512];
	ddict_snapshot *s;
	dd_build	b = {.full = true, .from_file = true};

	if (rc >= 0 || (rc != DDICT_ECONN && rc != DDICT_ETIMEDOUT) || !h->opts.snapshot_path)
		return rc;
	snprintf(why, sizeof(why), "%s", ddict_errmsg());
	if (dd_snapfile_read(h->opts.snapshot_path, h->dict, h->seed, &s) != DDICT_OK)
	{
		char		fmsg[512];

		snprintf(fmsg, sizeof(fmsg), "%s", ddict_errmsg());
		return dd_seterr(rc, "%s; and no snapshot to start from: %s", why, fmsg);
	}
	dd_publish(h, s, &b);
	h->snapfile_version = s->version;
	atomic_store(&h->stale, true);
	return DDICT_OK;
}

static int
list_add(dd_client *c, ddict *h)
{
	int			rc = DDICT_OK;

	dd_list_lock(c);
	if (c->ndicts == c->cap)
	{
		size_t		cap = c->cap ? c->cap * 2 : 8;
		ddict	  **grown = realloc(c->dicts, cap * sizeof(ddict *));

		if (grown == NULL)
			rc = DDICT_ENOMEM;
		else
		{
			c->dicts = grown;
			c->cap = cap;
		}
	}
	if (rc == DDICT_OK)
	{
		c->dicts[c->ndicts++] = h;
		atomic_store(&c->nlisted, c->ndicts);
		h->listed = true;
	}
	dd_list_unlock(c);
	return rc;
}

static void
list_remove(dd_client *c, ddict *h)
{
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts; i++)
		if (c->dicts[i] == h)
		{
			c->dicts[i] = c->dicts[--c->ndicts];
			break;
		}
	atomic_store(&c->nlisted, c->ndicts);
	h->listed = false;
	dd_list_unlock(c);
}

/* Load, list, start the thread if needed, wait for Redis's first answer. */
static ddict *
open_on(dd_client *c, ddict *h)
{
	int			rc;

	dd_lock(h);
	rc = initial_load(h);
	if (rc >= 0)
		rc = list_add(c, h);
	dd_unlock(h);
	if (rc >= 0 && dd_worker_needed(c, h))
		rc = dd_worker_start(c);
	if (rc < 0)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", rc == DDICT_ENOMEM ? "out of memory" : ddict_errmsg());
		if (h->listed)
			list_remove(c, h);
		handle_free(h);
		client_unref(c);
		dd_seterr(rc, "%s", msg);
		return NULL;
	}
	dd_worker_await_redis(c, h);
	return h;
}

DDICT_API ddict *
ddict_open_on(ddict_client *client, const char *dict, const ddict_options *opts)
{
	dd_client  *c = (dd_client *) client;
	ddict	   *h;

	if (c == NULL)
	{
		dd_seterr(DDICT_EINVAL, "ddict_open_on: client must not be NULL");
		return NULL;
	}
	if (c->conn.borrowed && opts && opts->mode == DDICT_PUSH)
	{
		dd_seterr(DDICT_EINVAL, "ddict_open_on: push mode needs a connection of its own");
		return NULL;
	}
	if (dd_in_callback(c))
	{
		dd_seterr(DDICT_EBUSY, "ddict_open_on: " DD_IN_CALLBACK_MSG);
		return NULL;
	}
	h = handle_new(c, dict, opts);
	if (h == NULL)
		return NULL;
	atomic_fetch_add(&c->refs, 1);
	return open_on(c, h);
}

DDICT_API ddict *
ddict_open(const char *conninfo, const char *dict, const ddict_options *opts)
{
	dd_client  *c;
	ddict	   *h;

	if (dict == NULL || dict[0] == '\0')
	{
		dd_seterr(DDICT_EINVAL, "ddict_open: a dict name is required");
		return NULL;
	}
	c = private_client(conninfo, NULL, opts, "ddict_open");
	if (c == NULL)
		return NULL;
	h = handle_new(c, dict, opts);
	if (h == NULL)
	{
		client_unref(c);
		return NULL;
	}
	return open_on(c, h);		/* the handle holds the only reference */
}

DDICT_API ddict *
ddict_open_conn(PGconn *conn, const char *dict, const ddict_options *opts)
{
	dd_client  *c;
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
	c = private_client(NULL, conn, opts, "ddict_open_conn");
	if (c == NULL)
		return NULL;
	h = handle_new(c, dict, opts);
	if (h == NULL)
	{
		client_unref(c);
		return NULL;
	}
	return open_on(c, h);
}

DDICT_API void
ddict_close(ddict *d)
{
	ddict_snapshot *s;
	dd_client  *c;

	if (d == NULL)
		return;
	c = d->client;
	/* A private client's thread first: it may be syncing (its waits end at
	 * once).  On a shared client, the thread may be checking this dict: a
	 * statement that keeps it waiting (a lock on the server) is cancelled. */
	if (c->private_client)
		dd_worker_stop(c);
	for (int i = 0; !dd_trylock(d); i++)
	{
		struct timespec ts = {0, 1000 * 1000};

		if (i == 20 && !c->conn.borrowed)
			dd_conn_cancel(&c->conn);
		nanosleep(&ts, NULL);
	}
	list_remove(c, d);
	s = atomic_load(&d->current);
	/* Keep the freshest contents for the next start. */
	if (d->opts.snapshot_path && s->epoch != 0 && s->version != d->snapfile_version)
		(void) dd_snapfile_write(d, s);
	dd_unlock(d);
	handle_free(d);
	client_unref(c);
}

/* One batch of at most 256 dicts from position *pos of the list. */
static int
client_sync_batch(dd_client *c, size_t *pos, int *rc)
{
	ddict	   *v[256];
	int			rcs[256],
				n = 0;
	bool		more;

	dd_client_lock(c);
	dd_list_lock(c);
	for (; *pos < c->ndicts && n < 256; (*pos)++)
		if (dd_trylock(c->dicts[*pos]))
			v[n++] = c->dicts[*pos];
	more = *pos < c->ndicts;
	dd_list_unlock(c);
	if (n > 0)
		dd_check_many(c, v, n, false, rcs);
	dd_client_unlock(c);
	for (int i = 0; i < n; i++)
	{
		if (rcs[i] < 0 && *rc >= 0)
			*rc = rcs[i];
		else if (rcs[i] > 0 && *rc >= 0)
			(*rc)++;
		dd_unlock(v[i]);
	}
	return more;
}

DDICT_API int
ddict_client_sync(ddict_client *client)
{
	dd_client  *c = (dd_client *) client;
	size_t		pos = 0;
	int			rc = 0;

	if (c == NULL)
		return dd_seterr(DDICT_EINVAL, "ddict_client_sync: client must not be NULL");
	if (dd_in_callback(c))
		return dd_seterr(DDICT_EBUSY, "ddict_client_sync: " DD_IN_CALLBACK_MSG);
	while (client_sync_batch(c, &pos, &rc))
		;
	return rc;
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
	if (d->opts.mode != DDICT_MANUAL)
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

	/* one counter per get: stats.reads adds hits and misses */
	dd_slot_count(rc == DDICT_NOTFOUND ? &slot->misses : &slot->hits);
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
	if (d->opts.mode != DDICT_MANUAL)
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

	/* one counter per get: stats.reads adds hits and misses */
	dd_slot_count(rc == DDICT_NOTFOUND ? &slot->misses : &slot->hits);
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
	if (d->opts.mode != DDICT_MANUAL)
		dd_maybe_sync(d);
	slot = dd_guard_enter(&d->guard, &phase);
	n = (int64_t) atomic_load(&d->current)->len;
	dd_guard_exit(slot, phase);
	dd_slot_count(&slot->reads);
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
	dd_slot_count(&slot->reads);
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
	if (d->opts.mode != DDICT_MANUAL)
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
	if (dd_in_callback(d->client))
		return dd_seterr(DDICT_EBUSY, "ddict_sync: " DD_IN_CALLBACK_MSG);
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
	for (int i = 0; i <= DD_GUARD_SLOTS; i++)
	{
		uint64_t	h = atomic_load_explicit(&d->guard.slots[i].hits, memory_order_relaxed),
					m = atomic_load_explicit(&d->guard.slots[i].misses, memory_order_relaxed);

		/* gets count only their hit or miss (one counter on the read path) */
		out->reads += atomic_load_explicit(&d->guard.slots[i].reads, memory_order_relaxed) + h + m;
		out->hits += h;
		out->misses += m;
		out->coalesced += atomic_load_explicit(&d->guard.slots[i].coalesced, memory_order_relaxed);
	}
#define LOAD(f) out->f = atomic_load_explicit(&d->f, memory_order_relaxed)
	LOAD(checks);
	LOAD(unchanged);
	LOAD(deltas);
	LOAD(reloads);
	LOAD(writes);
	LOAD(errors);
	LOAD(compactions);
	LOAD(redis_checks);
	LOAD(redis_errors);
	LOAD(pushes);
#undef LOAD
	out->reconnects = atomic_load(&d->client->conn.reconnects);
	/* a dict following its published changes: its stream (stream.c) */
	out->redis = atomic_load(&d->stream_key) != NULL ? atomic_load(&d->subscribed) :
		atomic_load(&d->client->redis_used) && atomic_load(&d->redis_key) != NULL &&
		(d->opts.mode != DDICT_PUSH || atomic_load(&d->subscribed));
	out->rows_fetched = atomic_load_explicit(&d->rows, memory_order_relaxed);
	out->versions_page = d->opts.mode == DDICT_AUTOSYNC && atomic_load(&d->client->vpage) != NULL &&
		atomic_load(&d->vp_index) != UINT32_MAX;
	slot = dd_guard_enter(&d->guard, &phase);
	s = atomic_load(&d->current);
	out->version = s->version;
	out->epoch = s->epoch;
	out->len = s->len;
	dd_guard_exit(slot, phase);
	out->stale = atomic_load(&d->stale);
	out->connected = atomic_load(&d->client->conn.connected);
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
	if (dd_in_callback(d->client))
		return dd_seterr(DDICT_EBUSY, "ddict_save_snapshot: " DD_IN_CALLBACK_MSG);
	dd_lock(d);
	rc = dd_snapfile_write(d, atomic_load(&d->current));
	dd_unlock(d);
	return rc;
}
