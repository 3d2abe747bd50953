/*
 * stream.c — push dicts that follow their published changes (issue 10).
 *
 * A dict whose changes the server publishes (ddict_published, found at open:
 * sync.c) is not subscribed to its version channel: the client's thread
 * reads its Redis Stream and applies each entry in memory, without
 * PostgreSQL, exactly when the README's contiguity rule says it may:
 *
 *   kind = 'd' and dict = cache.dict and epoch = cache.epoch
 *   and from <= cache.cursor and entry.cursor >= cache.floor
 *
 * An entry older than the cache (from <= cursor, cursor < floor) is
 * skipped; anything else (a gap, a marker, another relation or epoch) hands
 * the dict to a PostgreSQL check (worker.c, one pipeline for all dicts due)
 * and the stream resumes after that entry once the check succeeded.
 *
 * Why a connection of its own: the channel subscription (RESP2) accepts no
 * other command, and XREAD BLOCK holds its connection until entries come.
 * A client whose push dicts are all published has only this one; a client
 * with both kinds has two.  XREAD BLOCK interval_ms: an answer (nil) at
 * least every interval proves the link alive, no PING needed; no answer
 * within interval + timeout_ms is a lost connection.  Between two XREADs,
 * once per interval, a GET of the dicts' version keys catches entries that
 * never come (an opted-out dict, a stopped streamer): see check_versions().
 *
 * Positions: before following a dict the thread records its stream's last
 * id (XREVRANGE key + - COUNT 1) and then checks the dict once on
 * PostgreSQL (its open's load may predate that id); after that each dict
 * keeps the id of the last entry it handled, also across lost connections
 * (it is then polled on PostgreSQL as any push dict, and reads on from its
 * id when Redis is back: a trimmed stream shows a gap, a lost one starts
 * with the server's marker).  Every reply is type-checked; one that is not
 * what XREAD answers is an outage (backoff), never a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "internal.h"

#define XS_MAX 256				/* dicts per XREAD */
#define XS_COUNT "512"			/* entries per stream per XREAD */

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

int
dd_stream_fd(const dd_client *c)
{
	return c->xs && c->xs_waiting ? dd_rconn_fd(c->xs) : -1;
}

void
dd_stream_close(dd_client *c)
{
	dd_rconn_free(c->xs);
	c->xs = NULL;
	c->xs_waiting = false;
}

/* Stream ids "ms-seq": a < b? */
static bool
id_less(const char *a, const char *b)
{
	unsigned long long am = 0,
				as = 0,
				bm = 0,
				bs = 0;

	(void) sscanf(a, "%llu-%llu", &am, &as);
	(void) sscanf(b, "%llu-%llu", &bm, &bs);
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
				atomic_store(&e->subscribed, true);
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
			atomic_store(&e->subscribed, true);
			atomic_store(&e->redis_settled, true);
		}
		dd_list_unlock(c);
		free(key);
		if (rc != DDICT_OK)
			return rc;
	}
}

/* ---- the version keys: entries that never come ---- */

/*
 * Every interval, between two XREADs: GET the version keys of the followed
 * dicts.  A version newer than the cache's that the stream has not brought
 * within one more interval (the dict was opted out, the streamer is down,
 * Redis' clock went back) hands the dict to PostgreSQL — the staleness
 * bound holds without entries.  One round trip per interval per client.
 */
static int
check_versions(dd_client *c, char *err, size_t errsize)
{
	char	   *keys[64];
	int64_t		versions[64];
	int			rcs[64],
				n = 0,
				rc;
	int64_t		now = dd_now_us();

	if (now < c->xs_next_vcheck)
		return DDICT_OK;
	c->xs_next_vcheck = now + block_ms(c) * 1000;
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && n < 64; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = atomic_load(&d->redis_key);

		if (followable(d) && d->xs_ok && !d->xs_hold && key && (keys[n] = strdup(key)) != NULL)
			n++;
	}
	dd_list_unlock(c);
	rc = n ? dd_redis_get_many(&c->rtarget, c->xs, (const char *const *) keys, n, versions, rcs,
							   err, errsize) : DDICT_OK;
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && rc == DDICT_OK; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = atomic_load(&d->redis_key);

		for (int k = 0; k < n && key && followable(d) && d->xs_ok && !d->xs_hold; k++)
		{
			if (strcmp(keys[k], key) != 0)
				continue;
			int64_t		cur = dd_current_version(d);

			if (d->xs_lag_version != 0 && cur >= d->xs_lag_version)
				d->xs_lag_version = 0;	/* it came */
			if (d->xs_lag_version == 0 && rcs[k] == 1 && versions[k] > cur)
			{
				d->xs_lag_version = versions[k];
				d->xs_lag_since = now;
			}
			else if (d->xs_lag_version != 0 && now - d->xs_lag_since >= block_ms(c) * 1000)
			{
				d->xs_lag_version = 0;
				atomic_fetch_add_explicit(&d->stream_gaps, 1, memory_order_relaxed);
				d->xs_hold = true;
				d->pending = true;
				d->sync_at = now;
			}
			break;
		}
	}
	dd_list_unlock(c);
	for (int k = 0; k < n; k++)
		free(keys[k]);
	return rc;
}

/* ---- XREAD ---- */

/* XREAD COUNT n BLOCK ms STREAMS k... id...: each stream once, from the
 * lowest position of its handles.  List lock held. */
static int
send_xread(dd_client *c, int *nstreams)
{
	const char *keys[XS_MAX],
			   *ids[XS_MAX];
	const char *argv[6 + 2 * XS_MAX];
	char		block[24];
	int			n = 0,
				argc = 0;

	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key;
		int			k;

		if (!followable(d) || !d->xs_ok || d->xs_hold)
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
	}
	*nstreams = n;
	if (n == 0)
		return DDICT_OK;
	snprintf(block, sizeof(block), "%lld", (long long) block_ms(c));
	argv[argc++] = "XREAD";
	argv[argc++] = "COUNT";
	argv[argc++] = XS_COUNT;
	argv[argc++] = "BLOCK";
	argv[argc++] = block;
	argv[argc++] = "STREAMS";
	for (int k = 0; k < n; k++)
		argv[argc++] = keys[k];
	for (int k = 0; k < n; k++)
		argv[argc++] = ids[k];
	return dd_rconn_command(c->xs, argc, argv);
}

/* A followable dict without a position yet (its open waits for it)? */
static bool
new_dicts(dd_client *c)
{
	bool		any = false;

	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && !any; i++)
		any = followable(c->dicts[i]) && !c->dicts[i]->xs_ok && c->dicts[i]->stream_id[0] == '\0';
	dd_list_unlock(c);
	return any;
}

int64_t
dd_stream_step(dd_client *c)
{
	char		err[300];
	bool		any = false;
	int			rc,
				n = 0;
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
	if (c->xs_waiting && new_dicts(c))
		dd_stream_close(c);		/* a dict was opened: do not make it wait for
								 * the XREAD in flight (positions are kept) */
	if (c->xs_waiting)
	{
		if (now < c->xs_deadline)
			return c->xs_deadline;
		xs_lost(c, "no answer to XREAD", false);
		return dd_now_us();
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
	{
		dd_list_lock(c);
		rc = send_xread(c, &n);
		dd_list_unlock(c);
		if (rc != DDICT_OK)
			snprintf(err, sizeof(err), "out of memory");
	}
	if (rc == DDICT_OK && n > 0)
		rc = dd_rconn_flush(&c->rtarget, c->xs, dd_deadline_ms(c->rtarget.timeout_ms),
							err, sizeof(err));
	if (rc == DD_STOPPED || atomic_load(&c->closing))
		return INT64_MAX;
	if (rc != DDICT_OK)
	{
		xs_lost(c, err, false);
		return dd_now_us();
	}
	if (n == 0)
		return INT64_MAX;		/* every followed dict waits for a check */
	c->xs_waiting = true;
	c->xs_deadline = dd_now_us() + (block_ms(c) + c->rtarget.timeout_ms) * 1000;
	return c->xs_deadline;
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

/* An entry [id, [kind, k, dict, d, ...]] in the server's field order. */
static bool
parse_entry(const redisReply *r, entry *e)
{
	static const char *const names[] = {"dict", "epoch", "version", "from", "cursor", "until", "n"};
	int64_t    *vals[] = {&e->dict, &e->epoch, &e->version, &e->from, &e->cursor, &e->until, &e->n};
	const redisReply *f;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !dd_reply_is_bulk(r->element[0]) ||
		r->element[0]->len >= 48 || r->element[1]->type != REDIS_REPLY_ARRAY)
		return false;
	e->id = r->element[0]->str;
	f = e->f = r->element[1];
	if (f->elements < 16 || f->elements % 2 != 0 || !field_is(f->element[0], "kind") ||
		!dd_reply_is_bulk(f->element[1]) || f->element[1]->len != 1)
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

/* One entry for dict h (sync_lock held): false when h must go to
 * PostgreSQL first (the entry is then handled). */
static bool
handle_entry(ddict *h, const entry *e)
{
	const ddict_snapshot *cur = atomic_load(&h->current);
	bool		same = e->kind == 'd' && cur->relid != 0 && e->dict == (int64_t) cur->relid &&
		e->epoch == cur->epoch && cur->floor != INT64_MAX;

	snprintf(h->stream_id, sizeof(h->stream_id), "%s", e->id);
	atomic_fetch_add_explicit(&h->pushes, 1, memory_order_relaxed);	/* stats.pushes */
	if (same && e->from <= cur->cursor && e->cursor < cur->floor)
		return true;			/* older than the cache: skip */
	if (same && e->from <= cur->cursor && apply_entry(h, cur, e) == DDICT_OK)
	{
		atomic_fetch_add_explicit(&h->stream_entries, 1, memory_order_relaxed);
		return true;
	}
	/* a gap, a marker, another relation or epoch (or no memory) */
	atomic_fetch_add_explicit(&h->stream_gaps, 1, memory_order_relaxed);
	h->xs_hold = true;
	h->pending = true;
	h->sync_at = dd_now_us();
	return false;
}

/* Every entry of one stream for dict h after its position (sync_lock
 * held); false: a malformed entry. */
static bool
apply_stream(ddict *h, const redisReply *entries)
{
	for (size_t j = 0; j < entries->elements; j++)
	{
		entry		e;

		if (!parse_entry(entries->element[j], &e))
			return false;
		if (!id_less(h->stream_id, e.id))
			continue;			/* another handle was further behind */
		if (!handle_entry(h, &e))
			break;
	}
	dd_mark(h, true);
	return true;
}

/* A well-formed XREAD answer: nil, or [[key, [entry...]]...].  Client lock
 * and list lock held (change callbacks run under them, as for the thread's
 * checks: they must not open or close dicts).  false: malformed. */
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

			if (!followable(d) || !d->xs_ok || d->xs_hold ||
				strcmp(atomic_load(&d->stream_key), st->element[0]->str) != 0)
				continue;
			/* busy (a write, a check): its position stays, read again */
			if (!dd_trylock(d))
				continue;
			if (!apply_stream(d, st->element[1]))
			{
				dd_unlock(d);
				return false;
			}
			dd_unlock(d);
		}
	}
	return true;
}

void
dd_stream_read(dd_client *c)
{
	char		err[300] = "";
	redisReply *r = NULL;
	int			rc;
	bool		ok;

	if (c->xs == NULL || !c->xs_waiting)
		return;
	while ((rc = dd_rconn_fill(c->xs, err, sizeof(err))) > 0)
		;
	if (dd_rconn_parsed(c->xs, &r, err, sizeof(err)) != DDICT_OK)
	{
		xs_lost(c, err, false);
		return;
	}
	if (r == NULL)
	{
		if (rc < 0)
			xs_lost(c, err[0] ? err : "connection closed", true);
		return;					/* more to come */
	}
	c->xs_waiting = false;
	dd_client_lock(c);
	dd_list_lock(c);
	ok = !dd_rconn_buffered(c->xs) && apply_reply(c, r);
	for (size_t i = 0; i < c->ndicts && ok && dd_reply_is_nil(r); i++)
		if (followable(c->dicts[i]) && c->dicts[i]->xs_ok && !c->dicts[i]->xs_hold)
			dd_mark(c->dicts[i], true);
	dd_list_unlock(c);
	dd_client_unlock(c);
	if (!ok)
	{
		const char *msg;

		if (dd_reply_is_error(r, &msg))
			snprintf(err, sizeof(err), "XREAD: %.200s", msg);
		else
			snprintf(err, sizeof(err), "XREAD: malformed reply");
		dd_rconn_reply_free(r);
		xs_lost(c, err, false);
		return;
	}
	dd_rconn_reply_free(r);
	dd_backoff_reset(&c->xbackoff);
}
