/*
 * stream.c — push dicts that follow their published changes (issue 10).
 *
 * A dict whose changes the server publishes (ddict_published, found at open:
 * sync.c) is followed from Redis: the streamer appends each entry to the
 * dict's Stream and then PUBLISHes it on a channel named as the stream key
 * (a "delivery": "<id>\n" and the entry's fields, or "<id>" alone for a
 * large entry).  The client's subscription (worker.c, one connection for
 * version channels and stream channels) hands each delivery to
 * dd_stream_message(), which applies it in memory, without PostgreSQL,
 * exactly when the README's contiguity rule says it may:
 *
 *   kind = 'd' and dict = cache.dict and epoch = cache.epoch
 *   and from <= cache.cursor and entry.cursor >= cache.floor
 *
 * An entry older than the cache (from <= cursor, cursor < floor) is
 * skipped.  Anything else — a delivery without its fields, one that does
 * not follow the cache (a lost delivery, a marker, another relation or
 * epoch), a dict busy with a check — makes the dict "catch up": this
 * file's step reads the stream after the dict's last id (XREAD without
 * BLOCK, on a connection of its own), where a gap, a trimmed stream or a
 * marker hands the dict to a PostgreSQL check (worker.c, one pipeline for
 * all dicts due); the stream resumes after that entry once the check
 * succeeded (catching up again: deliveries meanwhile were not applied).
 *
 * Why deliveries and not XREAD BLOCK: a follower blocked in XREAD costs
 * Redis a reply, then a command to parse, block and time out, per entry
 * and follower, and the follower a send and a wakeup more; a PUBLISH writes
 * one payload to every subscriber.  At 1,000 processes on two cores that
 * halved commit-to-visible (README, fleet table).  The stream stays the
 * record: catch-ups, positions and restarts read it.
 *
 * Positions: before following a dict the thread records its stream's last
 * id (XREVRANGE key + - COUNT 1) and then checks the dict once on
 * PostgreSQL (its open's load may predate that id); after that each dict
 * keeps the id of the last entry it handled, also across lost connections
 * (it is then polled on PostgreSQL as any push dict, and catches up from
 * its id when Redis is back: a trimmed stream shows a gap, a lost one
 * starts with the server's marker).  A (re)confirmed subscription catches
 * up too: deliveries before it are lost.  Every reply and delivery is
 * type-checked; one that is not what Redis answers is an outage (backoff),
 * never a crash — but an entry with a readable id and fields that are not
 * the server's is a gap of its dict only (apply_stream()).
 *
 * Once per interval the connection also GETs the dicts' version keys,
 * which catches entries that never come (an opted-out dict, a stopped
 * streamer): see check_versions().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "internal.h"

#define XS_MAX 256				/* dicts per XREAD */
#define XS_PAGE 512				/* entries per stream per XREAD */
#define XS_STR(x) XS_STR2(x)
#define XS_STR2(x) #x

static int64_t
block_ms(const dd_client *c)
{
	return c->interval_ms ? c->interval_ms : 1000;
}

static bool
followable(const ddict *d)
{
	return d->opts.mode == DDICT_PUSH && atomic_load(&d->stream_key) != NULL;
}

void
dd_stream_close(dd_client *c)
{
	dd_rconn_free(c->xs);
	c->xs = NULL;
}

/* The two numbers of a stream id "ms-seq" (0 where there are none). */
static void
id_parts(const char *p, unsigned long long *ms, unsigned long long *seq)
{
	char	   *end;

	*ms = strtoull(p, &end, 10);
	*seq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
}

/* Stream ids "ms-seq": a < b? */
static bool
id_less(const char *a, const char *b)
{
	unsigned long long am,
				as,
				bm,
				bs;

	id_parts(a, &am, &as);
	id_parts(b, &bm, &bs);
	return am < bm || (am == bm && as < bs);
}

/* The connection is gone: every followed dict polls PostgreSQL until it is
 * back (worker.c), keeping its position. */
static void
xs_lost(dd_client *c, const char *why, bool healthy)
{
	dd_stream_close(c);
	if (healthy)
		dd_backoff_reset(&c->xbackoff);
	else
		dd_backoff_failed(&c->xbackoff);
	dd_list_lock(c);
	c->next_poll = dd_now_us();
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (!followable(d))
			continue;
		d->xs_ok = false;
		atomic_store(&d->subscribed, false);
		atomic_store(&d->redis_settled, true);
		atomic_fetch_add_explicit(&d->redis_errors, 1, memory_order_relaxed);
		dd_note(d, "Redis %s: stream: %s (polling the server every %lld ms meanwhile)",
				c->rtarget.url.desc, why, (long long) block_ms(c));
	}
	dd_list_unlock(c);
}

/* ---- positions ---- */

/* XREVRANGE key + - COUNT 1: the id to read after ("0-0": empty). */
static int
last_id(dd_client *c, const char *key, char *id, size_t idsize, char *err, size_t errsize)
{
	const char *argv[6] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
	int64_t		deadline = dd_deadline_ms(c->rtarget.timeout_ms);
	redisReply *r = NULL;
	int			rc = dd_rconn_command(c->xs, 6, argv);

	if (rc == DDICT_OK)
		rc = dd_rconn_flush(&c->rtarget, c->xs, deadline, err, errsize);
	if (rc == DDICT_OK)
		rc = dd_rconn_reply(&c->rtarget, c->xs, &r, deadline, err, errsize);
	if (rc != DDICT_OK)
		return rc;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 0)
		snprintf(id, idsize, "0-0");
	else if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
			 r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
			 dd_reply_is_bulk(r->element[0]->element[0]) &&
			 r->element[0]->element[0]->len < idsize)
		snprintf(id, idsize, "%s", r->element[0]->element[0]->str);
	else
	{
		snprintf(err, errsize, "XREVRANGE %.100s: malformed reply", key);
		rc = DDICT_ERR;
	}
	dd_rconn_reply_free(r);
	return rc;
}

/* Record the position of every dict that has none; follow the others again.
 * A new position is followed by one check on PostgreSQL. */
static int
take_positions(dd_client *c, char *err, size_t errsize)
{
	for (;;)
	{
		ddict	   *d = NULL;
		char	   *key = NULL;
		char		id[48];
		int			rc;

		dd_list_lock(c);
		for (size_t i = 0; i < c->ndicts; i++)
		{
			ddict	   *e = c->dicts[i];

			if (!followable(e) || e->xs_ok)
				continue;
			if (e->stream_id[0] != '\0')
			{
				e->xs_ok = true;	/* reads on from its id */
				e->xs_catchup = true;
				atomic_store(&e->subscribed, e->sub == DD_SUB_OK);
				continue;
			}
			if (d == NULL)
			{
				d = e;
				key = strdup(atomic_load(&e->stream_key));
			}
		}
		dd_list_unlock(c);
		if (d == NULL)
			return DDICT_OK;
		if (key == NULL)
		{
			snprintf(err, errsize, "out of memory");
			return DDICT_ENOMEM;
		}
		rc = last_id(c, key, id, sizeof(id), err, errsize);
		dd_list_lock(c);
		for (size_t i = 0; i < c->ndicts && rc == DDICT_OK; i++)
		{
			ddict	   *e = c->dicts[i];

			/* every handle of that stream without a position (e may be
			 * closed meanwhile: compare by key) */
			if (!followable(e) || e->xs_ok || e->stream_id[0] != '\0' ||
				strcmp(atomic_load(&e->stream_key), key) != 0)
				continue;
			snprintf(e->stream_id, sizeof(e->stream_id), "%s", id);
			e->xs_ok = true;
			e->pending = true;	/* catch up once from PostgreSQL */
			e->sync_at = dd_now_us();
			atomic_store(&e->subscribed, e->sub == DD_SUB_OK);
			atomic_store(&e->redis_settled, true);
		}
		dd_list_unlock(c);
		free(key);
		if (rc != DDICT_OK)
			return rc;
	}
}

/* ---- the version keys: entries that never come ---- */

/* A followed dict whose version key is watched (list lock held). */
static bool
watched(const ddict *d)
{
	return followable(d) && d->xs_ok && !d->xs_hold && atomic_load(&d->redis_key) != NULL;
}

/* The version keys of every watched dict, with its place in the list then
 * (list lock held): *n of them, malloc'd (free with free_vkeys). */
typedef struct vkeys
{
	int			n;
	char	  **keys;
	size_t	   *at;
	int64_t    *versions;
	int		   *rcs;
} vkeys;

static void
free_vkeys(vkeys *v)
{
	for (int k = 0; k < v->n; k++)
		free(v->keys[k]);
	free(v->keys);
	free(v->at);
	free(v->versions);
	free(v->rcs);
}

static int
collect_vkeys(dd_client *c, vkeys *v)
{
	size_t		cap = c->ndicts ? c->ndicts : 1;

	v->n = 0;
	v->keys = malloc(cap * sizeof(*v->keys));
	v->at = malloc(cap * sizeof(*v->at));
	v->versions = malloc(cap * sizeof(*v->versions));
	v->rcs = malloc(cap * sizeof(*v->rcs));
	if (!v->keys || !v->at || !v->versions || !v->rcs)
		return DDICT_ENOMEM;
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		/* no subscription (worker.c reconnects it): read the stream each
		 * interval instead — PostgreSQL only while this connection fails */
		if (followable(d) && d->xs_ok && d->sub != DD_SUB_OK)
			d->xs_catchup = true;
		if (!watched(d))
			continue;
		if ((v->keys[v->n] = strdup(atomic_load(&d->redis_key))) == NULL)
			return DDICT_ENOMEM;
		v->at[v->n++] = i;
	}
	return DDICT_OK;
}

/* The version key showed v (rc 1) or nothing (0) for d (list lock held). */
static void
version_seen(dd_client *c, ddict *d, int rc, int64_t v, int64_t now)
{
	int64_t		cur = dd_current_version(d);

	/*
	 * The cache ahead of the version key for a whole interval: it applied
	 * something the server never published (a forged delivery or entry:
	 * whoever may PUBLISH on the channel or write the stream), whose
	 * far-off id would also make it skip every real entry.  Start again:
	 * a new position, then a check from its (forged) state, which the
	 * server answers in full (attack round 6).
	 */
	if (rc == 1 && v < cur)
	{
		if (d->xs_ahead_since == 0)
			d->xs_ahead_since = now;
		else if (now - d->xs_ahead_since >= block_ms(c) * 1000)
		{
			d->xs_ahead_since = 0;
			d->xs_lag_version = 0;
			atomic_fetch_add_explicit(&d->stream_gaps, 1, memory_order_relaxed);
			d->stream_id[0] = '\0';
			d->xs_ok = false;
			d->xs_catchup = false;
			atomic_store(&d->subscribed, false);
		}
		return;
	}
	d->xs_ahead_since = 0;
	if (d->xs_lag_version != 0 && cur >= d->xs_lag_version)
		d->xs_lag_version = 0;	/* it came */
	if (d->xs_lag_version == 0 && rc == 1 && v > cur)
	{
		d->xs_lag_version = v;
		d->xs_lag_since = now;
		d->xs_catchup = true;	/* a lost delivery, or a streamer that sends
								 * none (before 1.3) */
	}
	else if (d->xs_lag_version != 0 && now - d->xs_lag_since >= block_ms(c) * 1000)
	{
		d->xs_lag_version = 0;
		atomic_fetch_add_explicit(&d->stream_gaps, 1, memory_order_relaxed);
		d->xs_hold = true;
		d->pending = true;
		d->sync_at = now;
	}
}

/* The dict key k was collected for, if it is still listed (dicts closed
 * meanwhile move others in the list: then look it up by key).  List lock
 * held. */
static ddict *
vkey_dict(dd_client *c, const vkeys *v, int k, bool *seen)
{
	size_t		i = v->at[k];

	if (i < c->ndicts && !seen[i] && watched(c->dicts[i]) &&
		strcmp(atomic_load(&c->dicts[i]->redis_key), v->keys[k]) == 0)
		return seen[i] = true, c->dicts[i];
	for (i = 0; i < c->ndicts; i++)
		if (!seen[i] && watched(c->dicts[i]) &&
			strcmp(atomic_load(&c->dicts[i]->redis_key), v->keys[k]) == 0)
			return seen[i] = true, c->dicts[i];
	return NULL;
}

/*
 * Every interval, between two XREADs: GET the version keys of the followed
 * dicts (all of them, one pipeline).  A version newer than the cache's that
 * the stream has not brought within one more interval (the dict was opted
 * out, the streamer is down, Redis' clock went back) hands the dict to
 * PostgreSQL — the staleness bound holds without entries.  One round trip
 * per interval per client.
 */
static int
check_versions(dd_client *c, char *err, size_t errsize)
{
	vkeys		v = {0};
	bool	   *seen = NULL;
	int			rc;
	int64_t		now = dd_now_us();

	if (now < c->xs_next_vcheck)
		return DDICT_OK;
	c->xs_next_vcheck = now + block_ms(c) * 1000;
	dd_list_lock(c);
	rc = collect_vkeys(c, &v);
	dd_list_unlock(c);
	if (rc == DDICT_OK && v.n > 0)
		rc = dd_redis_get_many(&c->rtarget, c->xs, (const char *const *) v.keys, v.n,
							   v.versions, v.rcs, err, errsize);
	else if (rc != DDICT_OK)
		snprintf(err, errsize, "out of memory");
	dd_list_lock(c);
	if (rc == DDICT_OK && v.n > 0 && (seen = calloc(c->ndicts + 1, sizeof(bool))) == NULL)
	{
		snprintf(err, errsize, "out of memory");
		rc = DDICT_ENOMEM;
	}
	for (int k = 0; k < v.n && rc == DDICT_OK; k++)
	{
		ddict	   *d = vkey_dict(c, &v, k, seen);

		if (d)
			version_seen(c, d, v.rcs[k], v.versions[k], now);
	}
	dd_list_unlock(c);
	free(seen);
	free_vkeys(&v);
	return rc;
}

/* ---- catch-up: XREAD without BLOCK ---- */

/* Followed, and its deliveries may have been missed: read the stream. */
static bool
catching_up(const ddict *d)
{
	return followable(d) && d->xs_ok && !d->xs_hold && d->xs_catchup;
}

/* XREAD COUNT n STREAMS k... id...: each stream of a dict catching up (and
 * not read yet in this step) once, from the lowest position of its handles,
 * at most XS_MAX streams (the others: the next XREAD).  List lock held. */
static int
send_xread(dd_client *c, int *nstreams)
{
	const char *keys[XS_MAX],
			   *ids[XS_MAX];
	const char *argv[4 + 2 * XS_MAX];
	int			n = 0,
				argc = 0;

	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key;
		int			k;

		if (!catching_up(d) || d->xs_read)
			continue;
		key = atomic_load(&d->stream_key);
		for (k = 0; k < n && strcmp(keys[k], key) != 0; k++)
			;
		if (k == n && n < XS_MAX)
		{
			keys[n] = key;
			ids[n++] = d->stream_id;
		}
		else if (k < n && id_less(d->stream_id, ids[k]))
			ids[k] = d->stream_id;
		d->xs_asked = k < n;	/* else: the next XREAD */
	}
	*nstreams = n;
	if (n == 0)
		return DDICT_OK;
	argv[argc++] = "XREAD";
	argv[argc++] = "COUNT";
	argv[argc++] = XS_STR(XS_PAGE);
	argv[argc++] = "STREAMS";
	for (int k = 0; k < n; k++)
		argv[argc++] = keys[k];
	for (int k = 0; k < n; k++)
		argv[argc++] = ids[k];
	return dd_rconn_command(c->xs, argc, argv);
}

/* ---- entries ---- */

typedef struct entry
{
	const char *id;
	char		kind;
	int64_t		dict,
				epoch,
				version,
				from,
				cursor,
				until,
				n;
	const redisReply *f;		/* the field array */
} entry;

static bool
field_is(const redisReply *r, const char *name)
{
	return dd_reply_is_bulk(r) && r->len == strlen(name) && memcmp(r->str, name, r->len) == 0;
}

/* An entry's fields [kind, k, dict, d, ...] in the server's order. */
static bool
parse_fields(const redisReply *f, entry *e)
{
	static const char *const names[] = {"dict", "epoch", "version", "from", "cursor", "until", "n"};
	int64_t    *vals[] = {&e->dict, &e->epoch, &e->version, &e->from, &e->cursor, &e->until, &e->n};

	e->f = f;
	if (f->type != REDIS_REPLY_ARRAY || f->elements < 16 || f->elements % 2 != 0 ||
		!field_is(f->element[0], "kind") || !dd_reply_is_bulk(f->element[1]) ||
		f->element[1]->len != 1)
		return false;
	e->kind = f->element[1]->str[0];
	for (int i = 0; i < 7; i++)
		if (!field_is(f->element[2 + 2 * i], names[i]) ||
			!dd_reply_version(f->element[3 + 2 * i], vals[i]))
			return false;
	if ((e->kind != 'd' && e->kind != 'f') || (size_t) e->n != (f->elements - 16) / 2)
		return false;
	for (size_t i = 16; i < f->elements; i += 2)
		if (!dd_reply_is_bulk(f->element[i]) || f->element[i]->len < 1 ||
			(f->element[i]->str[0] != 's' && f->element[i]->str[0] != 'x') ||
			!dd_reply_is_bulk(f->element[i + 1]))
			return false;
	return true;
}

/* A stream id "<ms>-<seq>" as the server gives it. */
static bool
valid_id(const char *p, size_t len)
{
	const char *dash = memchr(p, '-', len);

	return len > 2 && len < 48 && dash != NULL && dash > p && dash < p + len - 1 &&
		strspn(p, "0123456789-") >= len && memchr(dash + 1, '-', (size_t) (p + len - dash - 1)) == NULL;
}

/* An entry [id, [kind, k, dict, d, ...]] as XREAD answers it: false when
 * even its id cannot be read (e->id NULL), or its fields are malformed. */
static bool
parse_entry(const redisReply *r, entry *e)
{
	e->id = NULL;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !dd_reply_is_bulk(r->element[0]) ||
		!valid_id(r->element[0]->str, r->element[0]->len))
		return false;
	e->id = r->element[0]->str;
	return parse_fields(r->element[1], e);
}

/* Apply a contiguous delta entry (the dict's sync_lock held). */
static int
apply_entry(ddict *h, const ddict_snapshot *cur, const entry *e)
{
	dd_build	b;
	ddict_snapshot *snap;
	int			rc = dd_build_begin(&b, cur, false, h->seed);

	for (size_t i = 16; i < e->f->elements && rc == DDICT_OK; i += 2)
	{
		const redisReply *k = e->f->element[i],
				   *v = e->f->element[i + 1];

		rc = k->str[0] == 's' ?
			dd_build_row(&b, k->str + 1, k->len - 1, v->str, v->len) :
			dd_build_row(&b, k->str + 1, k->len - 1, NULL, 0);
	}
	if (rc == DDICT_OK)
		rc = dd_build_finish(&b, e->version, e->epoch, e->cursor, &snap);
	if (rc != DDICT_OK)
	{
		dd_build_free(&b);
		return rc;
	}
	snap->relid = cur->relid;
	snap->floor = e->cursor;
	dd_publish(h, snap, &b);
	dd_build_free(&b);
	return DDICT_OK;
}

/* Same relation and epoch, a delta, and it starts at or before the cache's
 * cursor: it can be applied (or skipped, when older than the cache). */
static bool
contiguous(const ddict_snapshot *cur, const entry *e)
{
	return e->kind == 'd' && cur->relid != 0 && e->dict == (int64_t) cur->relid &&
		e->epoch == cur->epoch && cur->floor != INT64_MAX && e->from <= cur->cursor;
}

/* The entry id cannot be applied: h goes to PostgreSQL and reads on after
 * it once that check succeeded (sync_lock held). */
static void
hold_at(ddict *h, const char *id)
{
	snprintf(h->stream_id, sizeof(h->stream_id), "%s", id);
	atomic_fetch_add_explicit(&h->stream_gaps, 1, memory_order_relaxed);
	h->xs_hold = true;
	h->pending = true;
	h->sync_at = dd_now_us();
}

/* One entry for dict h (sync_lock held): false when h must go to
 * PostgreSQL first (the entry is then handled). */
static bool
handle_entry(ddict *h, const entry *e)
{
	const ddict_snapshot *cur = atomic_load(&h->current);
	bool		next = contiguous(cur, e);

	snprintf(h->stream_id, sizeof(h->stream_id), "%s", e->id);
	atomic_fetch_add_explicit(&h->pushes, 1, memory_order_relaxed);	/* stats.pushes */
	if (next && e->cursor < cur->floor)
		return true;			/* older than the cache: skip */
	if (next && apply_entry(h, cur, e) == DDICT_OK)
	{
		atomic_fetch_add_explicit(&h->stream_entries, 1, memory_order_relaxed);
		return true;
	}
	/* a gap, a marker, another relation or epoch (or no memory) */
	hold_at(h, e->id);
	return false;
}

/*
 * Every entry of one stream for dict h after its position (sync_lock held);
 * false: an entry whose id cannot be read (the reply is not what Redis
 * sends).  An entry with a readable id and malformed fields (forged, or
 * written by something else) is this dict's problem only: a gap, after
 * which it reads on — not an outage of every dict of the client that would
 * meet the same entry again at each reconnect.
 */
static bool
apply_stream(ddict *h, const redisReply *entries)
{
	for (size_t j = 0; j < entries->elements; j++)
	{
		entry		e;
		bool		ok = parse_entry(entries->element[j], &e);

		if (e.id == NULL)
			return false;
		if (!id_less(h->stream_id, e.id))
			continue;			/* another handle was further behind */
		if (!ok)
		{
			dd_note(h, "Redis %s: stream entry %s is malformed: the dict checks the server",
					h->client->rtarget.url.desc, e.id);
			hold_at(h, e.id);
			break;
		}
		if (!handle_entry(h, &e))
			break;
	}
	dd_mark(h, true);
	return true;
}

/* A well-formed XREAD answer: nil, or [[key, [entry...]]...].  List lock
 * held.  false: malformed. */
static bool
apply_reply(dd_client *c, const redisReply *r)
{
	if (dd_reply_is_nil(r))
		return true;
	if (r->type != REDIS_REPLY_ARRAY)
		return false;
	for (size_t s = 0; s < r->elements; s++)
	{
		const redisReply *st = r->element[s];

		if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 || !dd_reply_is_bulk(st->element[0]) ||
			st->element[1]->type != REDIS_REPLY_ARRAY)
			return false;
		for (size_t i = 0; i < c->ndicts; i++)
		{
			ddict	   *d = c->dicts[i];

			if (!catching_up(d) || strcmp(atomic_load(&d->stream_key), st->element[0]->str) != 0)
				continue;
			/* busy (a write, a check): it stays catching up, read again */
			if (!dd_trylock(d))
			{
				d->xs_again = true;
				continue;
			}
			if (!apply_stream(d, st->element[1]))
			{
				dd_unlock(d);
				return false;
			}
			/* a full page: there may be more */
			d->xs_again = st->element[1]->elements >= XS_PAGE;
			dd_unlock(d);
		}
	}
	return true;
}

/* One XREAD of up to XS_MAX streams of dicts catching up, and its
 * answer; *n: the streams asked (0: none left). */
static int
catch_up_some(dd_client *c, int *nstreams, char *err, size_t errsize)
{
	redisReply *r = NULL;
	int			n = 0,
				rc;

	dd_list_lock(c);
	rc = send_xread(c, &n);
	dd_list_unlock(c);
	*nstreams = n;
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "out of memory");
		return rc;
	}
	if (n == 0)
		return DDICT_OK;
	rc = dd_rconn_flush(&c->rtarget, c->xs, dd_deadline_ms(c->rtarget.timeout_ms), err, errsize);
	if (rc == DDICT_OK)
		rc = dd_rconn_reply(&c->rtarget, c->xs, &r, dd_deadline_ms(c->rtarget.timeout_ms),
							err, errsize);
	if (rc != DDICT_OK)
		return rc;
	dd_list_lock(c);
	rc = !dd_rconn_buffered(c->xs) && apply_reply(c, r) ? DDICT_OK : DDICT_ERR;
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		/* read up to the stream's end (a stream with nothing new is not in
		 * the answer): caught up, unless busy or a full page */
		if (rc == DDICT_OK && d->xs_asked && !d->xs_again)
			d->xs_catchup = false;
		d->xs_read |= d->xs_asked;
		d->xs_asked = d->xs_again = false;
	}
	dd_list_unlock(c);
	if (rc != DDICT_OK)
	{
		const char *msg;

		if (dd_reply_is_error(r, &msg))
			snprintf(err, errsize, "XREAD: %.200s", msg);
		else
			snprintf(err, errsize, "XREAD: malformed reply");
	}
	dd_rconn_reply_free(r);
	return rc;
}

/* Read every catching-up dict's stream after its position: one round trip
 * per XS_MAX streams (a page of XS_PAGE entries per stream). */
static int
catch_up(dd_client *c, char *err, size_t errsize)
{
	int			n,
				rc;

	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts; i++)
		c->dicts[i]->xs_read = false;
	dd_list_unlock(c);
	do
		rc = catch_up_some(c, &n, err, errsize);
	while (rc == DDICT_OK && n > 0);
	return rc;
}

int64_t
dd_stream_step(dd_client *c)
{
	char		err[300];
	bool		any = false,
				more = false;
	int			rc;
	int64_t		now = dd_now_us();

	if (!c->redis_enabled)
		return INT64_MAX;
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && !any; i++)
		any = followable(c->dicts[i]);
	dd_list_unlock(c);
	if (!any)
	{
		dd_stream_close(c);
		return INT64_MAX;
	}
	if (c->xs == NULL)
	{
		if (!dd_backoff_due(&c->xbackoff, now))
			return c->xbackoff.next_us;
		rc = dd_rconn_open(&c->rtarget, &c->xs, err, sizeof(err));
		if (rc != DDICT_OK)
		{
			c->xs = NULL;
			if (rc != DD_STOPPED && !atomic_load(&c->closing))
				xs_lost(c, err, false);
			return dd_now_us();
		}
	}
	rc = take_positions(c, err, sizeof(err));
	if (rc == DDICT_OK)
		rc = check_versions(c, err, sizeof(err));
	if (rc == DDICT_OK)
		rc = catch_up(c, err, sizeof(err));
	if (rc == DD_STOPPED || atomic_load(&c->closing))
		return INT64_MAX;
	if (rc != DDICT_OK)
	{
		xs_lost(c, err, false);
		return dd_now_us();
	}
	dd_backoff_reset(&c->xbackoff);
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && !more; i++)
		more = catching_up(c->dicts[i]);
	dd_list_unlock(c);
	/* a full page, or a dict busy with a check or a write: soon again */
	return more ? dd_now_us() + 5000 : c->xs_next_vcheck;
}

/* ---- deliveries: PUBLISH on the stream's channel ---- */

/* "<id>" or "<id>\n<RESP array of the entry's fields>": false when the id
 * cannot be read; else the id and the parsed fields (*fields NULL: the
 * entry is in the stream only — or its fields are malformed: the stream
 * tells, stream entries are checked there). */
static bool
parse_delivery(const redisReply *payload, char *id, redisReply **fields, entry *e)
{
	const char *nl;
	size_t		idlen;

	*fields = NULL;
	if (!dd_reply_is_bulk(payload))
		return false;
	nl = memchr(payload->str, '\n', payload->len);
	idlen = nl ? (size_t) (nl - payload->str) : payload->len;
	if (!valid_id(payload->str, idlen))
		return false;
	memcpy(id, payload->str, idlen);
	id[idlen] = '\0';
	if (nl != NULL && (dd_resp_parse(nl + 1, payload->len - idlen - 1, fields) != DDICT_OK ||
					   !parse_fields(*fields, e)))
	{
		dd_rconn_reply_free(*fields);
		*fields = NULL;
	}
	return true;
}

int
dd_stream_message(dd_client *c, const char *channel, const redisReply *payload)
{
	char		id[48];
	redisReply *fields = NULL;
	entry		e;
	bool		ours = false,
				parsed = false;

	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];
		const ddict_snapshot *cur;

		if (!followable(d) || strcmp(atomic_load(&d->stream_key), channel) != 0)
			continue;
		if (!ours)
		{
			ours = true;
			if (!parse_delivery(payload, id, &fields, &e))
				return -1;
			parsed = fields != NULL;
			e.id = id;
		}
		/* no position yet, or held, or reading the stream: that covers it */
		if (d->sub != DD_SUB_OK || !d->xs_ok || d->xs_hold || d->xs_catchup ||
			d->stream_id[0] == '\0' || !id_less(d->stream_id, id))
			continue;
		if (!parsed || !dd_trylock(d))
		{
			/* in the stream only, or busy: the stream tells (the catch-up,
			 * this file's next step) */
			d->xs_catchup = true;
			continue;
		}
		/* the snapshot only under the sync lock: a write may replace (and
		 * free) it meanwhile */
		cur = atomic_load(&d->current);
		if (!contiguous(cur, &e))
		{
			d->xs_catchup = true;	/* a gap (lost deliveries?): the same */
			dd_unlock(d);
			continue;
		}
		(void) handle_entry(d, &e);
		dd_mark(d, true);
		dd_unlock(d);
	}
	dd_rconn_reply_free(fields);
	return ours ? 1 : 0;
}
