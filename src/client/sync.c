/*
 * sync.c — the client half of ddict_changes(), for one dict or many.
 *
 * One round trip per check that finds nothing new, one statement: the
 * scalar ddict_unchanged() with the (version, epoch, cursor, relation) of
 * the current snapshot, sent alone (it reads no rows, so it is right at any
 * isolation level and needs no transaction block).  Only when it answers
 * NULL — something changed, or the name means another relation — does the
 * check go on to ddict_changes(), which answers with a header row — 'u'
 * unchanged, 'd' delta, 'f' full — and then the changed ('s') or deleted
 * ('x') keys.  The server reads the version before it takes the snapshot
 * the rows come from, so rows are at least as new as the header's version;
 * we store that version with the snapshot we build.  A dict whose change is
 * already known (a newer version from Redis, a push) skips the scalar
 * check.  Rejected: ddict_changes() alone as the common check (its function
 * scan costs about a fifth of a round trip more: README, "Where the
 * server's time goes"), and sending it alone at the session's isolation
 * level with a retry on SQLSTATE 0A000 (a second round trip for every
 * change in a REPEATABLE READ database, for one statement saved elsewhere).
 *
 * ddict_changes() is a pipeline segment of its own transaction:
 *     BEGIN ISOLATION LEVEL READ COMMITTED; ddict_changes(...); COMMIT; Sync
 * (the function needs a snapshot taken after it read the version, whatever
 * the database's default isolation; nothing is set on the session, so a
 * transaction pooler may hand the server connection to anybody after the
 * Sync; a failure inside it is followed by ROLLBACK, dd_conn_end_txn()).  A
 * direct connection (ddict_client_options.direct) is our own session: it is
 * set to READ COMMITTED once, its statements are prepared, and a
 * ddict_changes() is sent with its Sync alone.  The checks of many dicts
 * that fall due together — the dicts that readers found the connection
 * busy for, interval dicts that are due, push mode's pending syncs — are
 * first asked together, ddict_unchanged_packed() (1.3: one bytea),
 * ddict_unchanged_many() (1.2: four binary arrays; before, a statement
 * reading each dict's relation and version), and those that changed get
 * their ddict_changes() in one pipeline: one network round trip, and one
 * failing dict does not abort the others' segments.
 *
 * Full loads (extension 1.2): ddict_changes() is asked with full_rows =>
 * false, so a full answer is its header alone; the rows then come by COPY
 * (FORMAT binary) in a transaction of their own (load.c), as does every
 * first load.  Against 1.1 and 1.0 servers a full answer's rows come in
 * libpq single-row mode, as before.
 *
 * A full load (the first load, or a delta that does not apply) of a dict
 * whose client already serves other dicts runs on a short-lived connection
 * of its own, without the client's lock: streaming a big dict never stalls
 * the other dicts' checks.  Readers never wait for any of this: they serve
 * the current snapshot (api.c) and switch at the atomic store in
 * dd_publish().
 *
 * A cache holds one relation's contents.  The dict is opened by name, and a
 * name can come to mean another relation (a blue/green ALTER SCHEMA ...
 * RENAME, another search_path after a reconnect): we follow the name.  Each
 * snapshot records the OID of the relation it came from and sends it as
 * since_dict; the server answers 'f' for the relation the name means now
 * when it differs, and we also refuse a 'u' or 'd' whose header names
 * another relation than ours (or when ours is unknown) and ask in full.  A
 * server still at extension 1.0 has no such column: we then behave as
 * before, following the name without noticing a swap.
 *
 * Rows of ddict_changes() are received in single-row mode: a full reload
 * of a 1M-key dict from a 1.1 server is copied row by row into the new
 * table and never held as one PGresult.  A delta is only applied on top of
 * what it was computed against: if its header names another epoch (server restarted) or a version older than
 * ours (a failover to a server that is behind, a restored backup), we drop
 * it and ask again in full.
 *
 * The versions page (a client on the server's host, README "The versions
 * page"): an autosync read first compares the page's version of the dict
 * with the version of the snapshot it is about to read.  Equal: nothing was
 * committed since — served from memory, no lock, no round trip.  Different:
 * the read waits for a check (its own, or the one in flight) instead of
 * serving the snapshot, so that a read that starts after any client heard
 * COMMIT sees that commit, whatever the number of threads.  The page is
 * keyed by relation OID and the dict is opened by name: an answer from the
 * page stands DD_VPAGE_REBIND_MS at most, after which one read's round trip
 * confirms which relation the name means (and the client verifies that the
 * page is still its server's) — the bound within which a name that comes to
 * mean another relation is followed.  Each dict's answer is a small record
 * (the page slot, the snapshot's epoch and version) published with a
 * seqlock after the snapshot it describes, and withdrawn before a snapshot
 * of another relation or epoch is published, or when a check fails.
 */
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define DD_BATCH_MAX 256

/*
 * The client whose change callback this thread is running (NULL: none).  The
 * thread that runs a callback holds locks of that client — the dict's
 * sync_lock, and the client's lock or its list_lock — so a call on any dict
 * of the same client that would take one of them deadlocks on the thread
 * itself: writes, syncs and opens refuse (DDICT_EBUSY), reads serve the
 * snapshot without a check.
 */
static _Thread_local const dd_client *tl_callback_client;

bool
dd_in_callback(const dd_client *c)
{
	return tl_callback_client == c;
}

/* ---- locks ---- */

/*
 * The sync lock, with a flag beside it: an autosync reader that finds a
 * check in flight must not even try the mutex (a failed trylock is still a
 * write to the mutex's cache line, which every reading thread would then
 * fight over); it reads the flag and moves on.  The client's lock likewise.
 */
void
dd_lock(ddict *h)
{
	pthread_mutex_lock(&h->sync_lock);
	atomic_store_explicit(&h->busy, true, memory_order_relaxed);
}

bool
dd_trylock(ddict *h)
{
	if (atomic_load_explicit(&h->busy, memory_order_relaxed) ||
		pthread_mutex_trylock(&h->sync_lock) != 0)
		return false;
	atomic_store_explicit(&h->busy, true, memory_order_relaxed);
	return true;
}

void
dd_unlock(ddict *h)
{
	atomic_store_explicit(&h->busy, false, memory_order_relaxed);
	pthread_mutex_unlock(&h->sync_lock);
}

void
dd_client_lock(dd_client *c)
{
	pthread_mutex_lock(&c->lock);
	atomic_store_explicit(&c->busy, true, memory_order_relaxed);
}

bool
dd_client_trylock(dd_client *c)
{
	if (atomic_load_explicit(&c->busy, memory_order_relaxed) ||
		pthread_mutex_trylock(&c->lock) != 0)
		return false;
	atomic_store_explicit(&c->busy, true, memory_order_relaxed);
	return true;
}

void
dd_client_unlock(dd_client *c)
{
	atomic_store_explicit(&c->busy, false, memory_order_relaxed);
	pthread_mutex_unlock(&c->lock);
}

void
dd_list_lock(dd_client *c)
{
	pthread_mutex_lock(&c->list_lock);
}

void
dd_list_unlock(dd_client *c)
{
	pthread_mutex_unlock(&c->list_lock);
}

/* ---- the versions page ---- */

/* A clock for the record's deadline: a few ns (vDSO), ms resolution. */
static int64_t
coarse_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Write h's record (sync_lock held: the only writer). */
static void
vp_write(ddict *h, uint32_t index, uint64_t ident, uint64_t gen, uint64_t epoch,
		 uint64_t version, int64_t until)
{
	uint64_t	seq = atomic_load_explicit(&h->vp_seq, memory_order_relaxed);

	/* (release stores: none may be seen before the odd seq; no fences, which
	 * ThreadSanitizer does not model) */
	atomic_store_explicit(&h->vp_seq, seq + 1, memory_order_relaxed);
	atomic_store_explicit(&h->vp_index, index, memory_order_release);
	atomic_store_explicit(&h->vp_ident, ident, memory_order_release);
	atomic_store_explicit(&h->vp_gen, gen, memory_order_release);
	atomic_store_explicit(&h->vp_epoch, epoch, memory_order_release);
	atomic_store_explicit(&h->vp_version, version, memory_order_release);
	atomic_store_explicit(&h->vp_until_us, until, memory_order_release);
	atomic_store_explicit(&h->vp_seq, seq + 2, memory_order_release);
}

void
dd_vpage_forget(ddict *h)
{
	if (atomic_load_explicit(&h->vp_index, memory_order_relaxed) != UINT32_MAX)
		vp_write(h, UINT32_MAX, 0, 0, 0, 0, 0);
}

/*
 * After a check confirmed the current snapshot (sync_lock held, the
 * snapshot already published): its slot on the page, its epoch and version.
 */
static void
vp_refresh(ddict *h)
{
	dd_client  *c = h->client;
	ddict_vpage *pg = atomic_load(&c->vpage);
	const ddict_snapshot *cur = atomic_load(&h->current);
	uint32_t	dboid = atomic_load(&c->vp_dboid);
	ddict_vpage_slot sl;

	if (h->opts.mode != DDICT_AUTOSYNC || pg == NULL || cur->epoch <= 0 || cur->relid == 0 ||
		dboid == 0 || cur->version < 0 ||
		ddict_vpage_find(pg, (uint64_t) cur->epoch, dboid, cur->relid, &sl) != DDICT_VPAGE_OK)
	{
		dd_vpage_forget(h);
		return;
	}
	vp_write(h, sl.index, ((uint64_t) dboid << 32) | cur->relid, sl.gen, (uint64_t) cur->epoch,
			 (uint64_t) cur->version, coarse_now_us() + DD_VPAGE_REBIND_MS * 1000);
}

typedef enum
{
	VP_NONE,					/* no answer from the page: the round trip */
	VP_UNCHANGED,				/* nothing committed since the snapshot */
	VP_REBIND,					/* unchanged, but a round trip is due */
	VP_CHANGED					/* the page has a newer version */
} vp_answer;

/* The page's answer for h, by any thread, without a lock. */
static vp_answer
vp_state(ddict *h)
{
	ddict_vpage *pg = atomic_load_explicit(&h->client->vpage, memory_order_acquire);
	ddict_vpage_slot sl;
	uint64_t	s1,
				ident,
				epoch,
				version,
				v;
	int64_t		until;

	if (pg == NULL)
		return VP_NONE;
	/* (acquire loads: the second load of seq cannot move before them) */
	s1 = atomic_load_explicit(&h->vp_seq, memory_order_acquire);
	sl.index = (uint32_t) atomic_load_explicit(&h->vp_index, memory_order_acquire);
	ident = atomic_load_explicit(&h->vp_ident, memory_order_acquire);
	sl.gen = atomic_load_explicit(&h->vp_gen, memory_order_acquire);
	epoch = atomic_load_explicit(&h->vp_epoch, memory_order_acquire);
	version = atomic_load_explicit(&h->vp_version, memory_order_acquire);
	until = atomic_load_explicit(&h->vp_until_us, memory_order_acquire);
	if ((s1 & 1) || atomic_load_explicit(&h->vp_seq, memory_order_relaxed) != s1 ||
		sl.index == UINT32_MAX)
		return VP_NONE;
	sl.dboid = (uint32_t) (ident >> 32);
	sl.relid = (uint32_t) ident;
	if (ddict_vpage_read(pg, epoch, &sl, &v) != DDICT_VPAGE_OK)
		return VP_NONE;
	if (v != version)
		return VP_CHANGED;
	return coarse_now_us() < until ? VP_UNCHANGED : VP_REBIND;
}

static void
vp_give_up(dd_client *c)
{
	ddict_vpage *pg = atomic_load(&c->vpage);
	ddict_vpage **v;

	if (pg == NULL)
		return;
	atomic_store(&c->vpage, NULL);
	/* a reader may still be reading it: unmapped when the client is freed */
	v = realloc(c->vp_old, (c->vp_nold + 1) * sizeof(*v));
	if (v == NULL)
		return;					/* left mapped */
	c->vp_old = v;
	v[c->vp_nold++] = pg;
}

/* The page to read for the client's connection: "sockdir:port" (auto) or
 * the option's path; "" when there is none. */
static void
vp_target(dd_client *c, char *buf, size_t len)
{
	const char *host = c->conn.pg ? PQhost(c->conn.pg) : NULL;
	const char *port = c->conn.pg ? PQport(c->conn.pg) : NULL;

	buf[0] = '\0';
	if (c->vp_option)
		snprintf(buf, len, "%s", c->vp_option);
	else if (host && host[0] == '/' && port && port[0])
		snprintf(buf, len, "%s:%s", host, port);
}

/*
 * The client's lock held, the session set up: open the page if there is
 * one to read (at most once per DD_VPAGE_REBIND_MS while none could be), or
 * verify now and then that the open one is still our server's.
 */
static void
vp_ensure(dd_client *c)
{
	ddict_vpage *pg = atomic_load(&c->vpage),
			   *np = NULL;
	int64_t		now = dd_now_us();
	char		target[sizeof(c->vp_target)];
	ddict_vpage_status st;

	if (c->vp_option && strcmp(c->vp_option, "off") == 0)
		return;
	if (c->vp_tried && now - c->vp_verified_us < DD_VPAGE_REBIND_MS * 1000)
		return;
	c->vp_tried = true;
	c->vp_verified_us = now;
	vp_target(c, target, sizeof(target));
	if (pg && strcmp(target, c->vp_target) == 0 && c->conn.dboid == atomic_load(&c->vp_dboid) &&
		ddict_vpage_verify(pg) == DDICT_VPAGE_OK)
		return;
	vp_give_up(c);
	c->vp_target[0] = '\0';
	if (target[0] == '\0' || c->conn.dboid == 0 || !c->conn.changes_rel)
		return;
	if (c->vp_option)
		st = ddict_vpage_open(c->vp_option, &np, NULL, 0);
	else
	{
		char	   *colon = strrchr(target, ':');

		*colon = '\0';
		st = ddict_vpage_open_socket(target, atoi(colon + 1), &np, NULL, 0);
		*colon = ':';
	}
	if (st != DDICT_VPAGE_OK)
		return;					/* silently: the round trip */
	snprintf(c->vp_target, sizeof(c->vp_target), "%s", target);
	atomic_store(&c->vp_dboid, c->conn.dboid);
	atomic_store(&c->vpage, np);
}

void
dd_vpage_client_free(dd_client *c)
{
	ddict_vpage_close(atomic_load(&c->vpage));
	for (size_t i = 0; i < c->vp_nold; i++)
		ddict_vpage_close(c->vp_old[i]);
	free(c->vp_old);
}

/* ---- one ddict_changes() ---- */

/* The header's relation (a binary oid); 0 when absent or malformed. */
static uint32_t
get_oid(const PGresult *r, int row, int col)
{
	uint32_t	v;

	if (col >= PQnfields(r) || PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 4)
		return 0;
	memcpy(&v, PQgetvalue(r, row, col), 4);
	return be32toh(v);
}

static int64_t
get_int8(const PGresult *r, int row, int col)
{
	uint64_t	v;

	if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
		return INT64_MIN;
	memcpy(&v, PQgetvalue(r, row, col), 8);
	return (int64_t) be64toh(v);
}

int
dd_send_changes(ddict *h, dd_conn *c, bool full)
{
	/* We hold sync_lock, the only writer of current: no guard needed. */
	const ddict_snapshot *cur = atomic_load(&h->current);
	char		v[24],
				e[24],
				cu[24],
				d[16];
	const char *vals[5] = {h->dict, NULL, NULL, NULL, NULL};
	int			nparams = dd_changes_nparams(c);

	if (!full && cur->epoch != 0)
	{
		snprintf(v, sizeof(v), "%lld", (long long) cur->version);
		snprintf(e, sizeof(e), "%lld", (long long) cur->epoch);
		snprintf(cu, sizeof(cu), "%lld", (long long) cur->cursor);
		vals[1] = v;
		vals[2] = e;
		vals[3] = cu;
		/* since_dict: the relation our contents came from (1.1 servers) */
		if (cur->relid != 0)
		{
			snprintf(d, sizeof(d), "%lu", (unsigned long) cur->relid);
			vals[4] = d;
		}
	}
	/* Binary results: keys and values arrive as raw bytes. */
	if (!(c->prepared ?
		  PQsendQueryPrepared(c->pg, DD_PREPARED_CHANGES, nparams, vals, NULL, NULL, 1) :
		  PQsendQueryParams(c->pg, c->sql[DD_SQL_CHANGES], nparams, NULL, vals, NULL, NULL, 1)))
		return DDICT_ECONN;
	return DDICT_OK;
}

typedef struct recv_state
{
	ddict	   *h;
	bool		changes_rel;	/* the connection's server names the relation */
	bool		copy_full;		/* 'f' comes alone: the rows by COPY (load.c) */
	const ddict_snapshot *cur;
	dd_build   *b;
	bool		header;
	char		kind;
	bool		refull;
	int64_t		version,
				epoch,
				cursor;
	uint32_t	relid;			/* the header's relation; 0 from a 1.0 server */
	int64_t		until;			/* the header's ring head (1.1); INT64_MAX none */
	uint64_t	rows;
	char		errmsg[200];
} recv_state;

static int
proto_error(recv_state *st, const char *what)
{
	snprintf(st->errmsg, sizeof(st->errmsg), "unexpected reply from ddict_changes(): %s", what);
	return DDICT_ERR;
}

static int
take_header(recv_state *st, const PGresult *r, int i, char kind)
{
	st->header = true;
	st->kind = kind;
	st->version = get_int8(r, i, 3);
	st->epoch = get_int8(r, i, 4);
	st->cursor = get_int8(r, i, 5);
	st->relid = get_oid(r, i, 6);
	st->until = st->changes_rel ? get_int8(r, i, 7) : INT64_MIN;
	if (st->until == INT64_MIN)
		st->until = INT64_MAX;	/* unknown: no stream entry applies */
	if (kind != 'u' && kind != 'd' && kind != 'f')
		return proto_error(st, "no header row");
	if (st->version == INT64_MIN || st->epoch == INT64_MIN || st->cursor == INT64_MIN)
		return proto_error(st, "header without version, epoch or cursor");
	if (st->changes_rel && st->relid == 0)
		return proto_error(st, "header without the dict's relation");
	/* our contents are of another (or an unknown) relation: reload */
	if (kind != 'f' && st->changes_rel && st->cur->epoch != 0 && st->relid != st->cur->relid)
	{
		st->refull = true;
		return DDICT_OK;
	}
	if (kind == 'u')
		return DDICT_OK;
	/* 1.2: a full answer is its header alone; the rows come by COPY */
	if (kind == 'f' && st->copy_full)
	{
		st->refull = true;
		return DDICT_OK;
	}
	if (kind == 'd' && (st->cur->epoch == 0 || st->epoch != st->cur->epoch ||
						st->version < st->cur->version))
	{
		st->refull = true;		/* not a delta of what we have */
		return DDICT_OK;
	}
	return dd_build_begin(st->b, st->cur, kind == 'f', st->h->seed);
}

static int
take_row(recv_state *st, const PGresult *r, int i)
{
	char		kind = PQgetlength(r, i, 0) == 1 ? PQgetvalue(r, i, 0)[0] : '\0';

	if (!st->header)
		return take_header(st, r, i, kind);
	st->rows++;
	if (st->kind == 'u' || st->refull)
		return DDICT_OK;
	if (PQgetisnull(r, i, 1))
		return proto_error(st, "a row without a key");
	if (kind == 's')
	{
		if (PQgetisnull(r, i, 2))
			return proto_error(st, "a set row without a value");
		return dd_build_row(st->b, PQgetvalue(r, i, 1), (size_t) PQgetlength(r, i, 1),
							PQgetvalue(r, i, 2), (size_t) PQgetlength(r, i, 2));
	}
	if (kind == 'x')
		return dd_build_row(st->b, PQgetvalue(r, i, 1), (size_t) PQgetlength(r, i, 1), NULL, 0);
	return proto_error(st, "a row of unknown kind");
}

static int
recv_rows(recv_state *st, dd_conn *c, PGresult **err, int *qrc)
{
	PGresult   *r;
	int			rc = DDICT_OK;

	(void) PQsetSingleRowMode(c->pg);
	/* Always read to the end of the query, even after an error of ours. */
	while ((r = dd_conn_next(c, qrc)) != NULL)
	{
		ExecStatusType s = PQresultStatus(r);

		if (s == PGRES_SINGLE_TUPLE || s == PGRES_TUPLES_OK)
		{
			if (PQnfields(r) != (st->changes_rel ? 8 : 6) && rc == DDICT_OK)
				rc = proto_error(st, "wrong number of columns");
			for (int i = 0; i < PQntuples(r) && rc == DDICT_OK; i++)
				rc = take_row(st, r, i);
			PQclear(r);
		}
		else if (*err == NULL && (s == PGRES_FATAL_ERROR || s == PGRES_PIPELINE_ABORTED))
			*err = r;
		else
			PQclear(r);
	}
	return rc;
}

int
dd_recv_changes(ddict *h, dd_conn *c, ddict_snapshot **out, dd_build *b, bool *refull)
{
	recv_state	st;
	PGresult   *err = NULL;
	int			rc,
				qrc = DDICT_OK;

	memset(b, 0, sizeof(*b));
	memset(&st, 0, sizeof(st));
	st.h = h;
	st.changes_rel = c->changes_rel;
	st.copy_full = c->copy_full;
	st.cur = atomic_load(&h->current);
	st.b = b;
	*out = NULL;
	*refull = false;
	rc = recv_rows(&st, c, &err, &qrc);
	atomic_fetch_add_explicit(&h->rows, st.rows, memory_order_relaxed);
	if (qrc != DDICT_OK || (err && !dd_conn_ok(c)))
		rc = dd_conn_failed(c, h, qrc != DDICT_OK ? qrc : DDICT_ECONN, "ddict_changes", err);
	else if (err)
		rc = dd_conn_failed(c, h, DDICT_ESERVER, "ddict_changes", err);
	else if (rc == DDICT_ENOMEM)
		rc = dd_fail(h, rc, "out of memory while loading the dict");
	else if (rc == DDICT_EINVAL)
		rc = dd_fail(h, DDICT_ERR, "a key or value of the dict is larger than 4 GB");
	else if (rc != DDICT_OK)
		rc = dd_fail(h, rc, "%s", st.errmsg);
	else if (!st.header)
		rc = dd_fail(h, DDICT_ERR, "unexpected reply from ddict_changes(): no rows");
	PQclear(err);
	if (rc != DDICT_OK)
	{
		dd_build_free(b);
		return rc;
	}

	atomic_fetch_add_explicit(&h->checks, 1, memory_order_relaxed);
	if (st.refull)
	{
		*refull = true;
		return DDICT_OK;
	}
	if (st.kind == 'u')
	{
		atomic_fetch_add_explicit(&h->unchanged, 1, memory_order_relaxed);
		return DDICT_OK;
	}
	rc = dd_build_finish(b, st.version, st.epoch, st.cursor, out);
	if (rc != DDICT_OK)
	{
		dd_build_free(b);
		return dd_fail(h, rc, "out of memory while applying changes");
	}
	(*out)->relid = st.relid;	/* not yet published: ours to set */
	(*out)->floor = st.until;
	return DDICT_OK;
}

static void
snap_unref_cb(void *p)
{
	dd_snap_unref(p);
}

/* Switch readers to snap (taking over its reference), notify, free the old. */
int
dd_publish(ddict *h, ddict_snapshot *snap, dd_build *b)
{
	ddict_snapshot *old = atomic_load(&h->current);

	/* Another relation: versions of two relations do not compare (one
	 * transaction can give both the same), so the file must be rewritten. */
	if (old->relid != snap->relid)
		h->snapfile_version = INT64_MIN;
	/* the page's answer was for the old snapshot's relation and epoch */
	if (old->relid != snap->relid || old->epoch != snap->epoch || b->from_file)
		dd_vpage_forget(h);
	atomic_store(&h->current, snap);
	if (!b->from_file)
		vp_refresh(h);
	if (!b->from_file)
		atomic_fetch_add_explicit(b->full ? &h->reloads : &h->deltas, 1, memory_order_relaxed);
	if (b->compacted)
		atomic_fetch_add_explicit(&h->compactions, 1, memory_order_relaxed);
	if (h->opts.on_change)
	{
		const dd_client *outer = tl_callback_client;	/* (a callback's read of
														 * another client's dict) */

		tl_callback_client = h->client;
		dd_snap_diff(old, snap, b->full ? NULL : b->tab, h->opts.on_change,
					 h->opts.on_change_arg);
		tl_callback_client = outer;
	}
	/* Freed once no reader can still be looking at it through h->current. */
	dd_guard_retire(&h->guard, old, snap_unref_cb);

	if (!b->from_file)
		dd_snapfile_maybe_write(h);
	return DDICT_OK;
}

int64_t
dd_current_version(ddict *h)
{
	unsigned	phase;
	dd_reader_slot *slot = dd_guard_enter(&h->guard, &phase);
	int64_t		v = atomic_load(&h->current)->version;

	dd_guard_exit(slot, phase);
	return v;
}

void
dd_mark(ddict *h, bool ok)
{
	if (ok)
	{
		atomic_store(&h->last_ok_us, dd_now_us());
		atomic_store(&h->stale, false);
	}
	else
	{
		dd_vpage_forget(h);		/* reads ask the server again */
		atomic_store(&h->stale, true);
	}
}

/* ---- pipelines of checks ---- */

/*
 * BEGIN ISOLATION LEVEL READ COMMITTED; ddict_changes(); COMMIT; Sync — or,
 * on a direct connection whose session is READ COMMITTED (session.c),
 * ddict_changes(); Sync.
 */
int
dd_send_check(ddict *h, dd_conn *c, bool full)
{
	bool		txn = !c->session_rc;

	if ((txn && !PQsendQueryParams(c->pg, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL,
								   NULL, NULL, 0)) ||
		dd_send_changes(h, c, full) != DDICT_OK ||
		(txn && !PQsendQueryParams(c->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0)) ||
		!PQpipelineSync(c->pg))
		return DDICT_ECONN;
	return DDICT_OK;
}

/* One segment's results.  Returns the check's status; a broken connection
 * shows as !dd_conn_ok(c) afterwards. */
int
dd_recv_check(ddict *h, dd_conn *c, ddict_snapshot **snap, dd_build *b, bool *refull)
{
	PGresult   *berr = NULL,
			   *cerr = NULL;
	int			rc,
				crc,
				src;

	*snap = NULL;
	*refull = false;
	memset(b, 0, sizeof(*b));
	rc = c->session_rc ? DDICT_OK : dd_conn_skip(c, &berr, PGRES_COMMAND_OK);	/* BEGIN */
	if (rc != DDICT_OK)
	{
		PQclear(berr);
		return dd_conn_failed(c, h, rc, "ddict_changes", NULL);
	}
	crc = dd_recv_changes(h, c, snap, b, refull);
	if (!dd_conn_ok(c))
	{
		PQclear(berr);
		return crc;
	}
	rc = c->session_rc ? DDICT_OK : dd_conn_skip(c, &cerr, PGRES_COMMAND_OK);	/* COMMIT */
	src = rc == DDICT_OK ? dd_conn_expect_sync(c) : rc;
	if (src == DDICT_OK && crc == DDICT_OK && (berr || cerr))
		src = dd_conn_failed(c, h, DDICT_ESERVER, "ddict_changes", berr ? berr : cerr);
	else if (src != DDICT_OK)
		src = dd_conn_failed(c, h, src, "ddict_changes", NULL);
	PQclear(berr);
	PQclear(cerr);
	if (src != DDICT_OK || crc != DDICT_OK)
	{
		if (*snap)
			dd_snap_unref(*snap);
		*snap = NULL;
		*refull = false;
		dd_build_free(b);
		return crc != DDICT_OK ? crc : src;
	}
	return DDICT_OK;
}

/* The dict's metadata, once (the first time its client reaches the server). */
int
dd_ensure_meta(ddict *h, dd_conn *c)
{
	dd_dict_meta m;
	dd_client  *cl = h->client;
	int			rc;

	if (h->meta_known)
		return DDICT_OK;
	rc = dd_session_dict(c, h, h->dict, cl->redis_enabled && h->opts.mode != DDICT_MANUAL ?
						 cl->redis_prefix : NULL, &m);
	if (rc != DDICT_OK)
		return rc;
	h->bytea = m.bytea;
	/* only push dicts follow a stream (the others check on reads) */
	if (m.stream_key && h->opts.mode != DDICT_PUSH)
	{
		free(m.stream_key);
		m.stream_key = NULL;
	}
	atomic_store(&h->stream_key, m.stream_key);
	atomic_store(&h->redis_key, m.key);
	h->meta_known = true;
	dd_event_signal(cl->kick_fd);	/* the thread may wait for the key */
	return DDICT_OK;
}

typedef struct check_out
{
	int			rc;				/* 1 changed, 0 unchanged, < 0 error */
	bool		refull;
} check_out;

/* Apply one received segment. */
static void
apply(ddict *h, int rc, ddict_snapshot *snap, dd_build *b, bool refull, check_out *o)
{
	o->refull = false;
	if (rc != DDICT_OK)
	{
		dd_mark(h, false);
		o->rc = rc;
		return;
	}
	if (refull)
	{
		o->refull = true;
		o->rc = 0;
		return;
	}
	dd_mark(h, true);
	if (snap == NULL)
	{
		vp_refresh(h);
		dd_snapfile_maybe_write(h);
		o->rc = 0;
		return;
	}
	dd_publish(h, snap, b);
	dd_build_free(b);
	o->rc = 1;
}

/* A check answered "unchanged" without ddict_changes() (a scalar answer or
 * the probe of many dicts). */
static void
answered_unchanged(ddict *h, check_out *o, int64_t now)
{
	atomic_store(&h->last_check_us, now);
	atomic_fetch_add_explicit(&h->checks, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->unchanged, 1, memory_order_relaxed);
	/* dd_mark(h, true), with the batch's clock reading */
	atomic_store(&h->last_ok_us, now);
	atomic_store(&h->stale, false);
	vp_refresh(h);
	dd_snapfile_maybe_write(h);
	o->rc = 0;
	o->refull = false;
}

/* After a probe: dict j answered unchanged is settled, else it stays to be
 * checked, moved down to position *k of w / wf / idx (compacted in place). */
static void
settle_or_keep(ddict **w, bool *wf, int *idx, check_out *out, int j, int *k,
			   bool unchanged, int64_t now)
{
	if (unchanged)
	{
		answered_unchanged(w[j], &out[idx[j]], now);
		return;
	}
	w[*k] = w[j];
	wf[*k] = wf[j];
	idx[*k] = idx[j];
	(*k)++;
}

/* The first result of the statement just sent (the rest read and dropped),
 * in *r; rc: how sending went.  Returns the outcome. */
static int
first_result(dd_conn *c, int rc, PGresult **r)
{
	PGresult   *x;
	int			qrc = DDICT_OK;

	*r = NULL;
	while (rc == DDICT_OK && (x = dd_conn_next(c, &qrc)) != NULL)
	{
		if (*r == NULL)
			*r = x;
		else
			PQclear(x);
	}
	return rc == DDICT_OK ? qrc : rc;
}

/*
 * One dict's check as one statement: ddict_unchanged() alone, outside any
 * transaction block (it reads no rows: right at any isolation level, and
 * nothing stays on the session).  Prepared on a direct connection, else an
 * unnamed statement whose parameter types come with it.  Returns true when
 * it settled the check (unchanged; or the connection broke: o->rc), false
 * when the dict needs ddict_changes(): NULL (something changed, or the
 * name means another relation), an error of the statement (the
 * ddict_changes() that follows reports it), or no ddict_unchanged().
 */
static bool
check_one(dd_conn *c, ddict *h, check_out *o)
{
	const ddict_snapshot *cur = atomic_load(&h->current);
	char		v[24],
				e[24],
				cu[24],
				d[16];
	const char *vals[5] = {h->dict, v, e, cu, d};
	PGresult   *r = NULL;
	int			rc;
	bool		unchanged;

	if (c->sql[DD_SQL_UNCHANGED] == NULL || cur->epoch == 0 || cur->relid == 0)
		return false;
	snprintf(v, sizeof(v), "%lld", (long long) cur->version);
	snprintf(e, sizeof(e), "%lld", (long long) cur->epoch);
	snprintf(cu, sizeof(cu), "%lld", (long long) cur->cursor);
	snprintf(d, sizeof(d), "%lu", (unsigned long) cur->relid);
	atomic_store(&h->last_check_us, dd_now_us());
	rc = (c->prepared ?
		  PQsendQueryPrepared(c->pg, DD_PREPARED_UNCHANGED, 5, vals, NULL, NULL, 0) :
		  PQsendQueryParams(c->pg, c->sql[DD_SQL_UNCHANGED], 5, dd_unchanged_types, vals, NULL,
							NULL, 0)) ? dd_conn_flush(c) : DDICT_ECONN;
	rc = first_result(c, rc, &r);
	if (rc != DDICT_OK || !dd_conn_ok(c))
	{
		PQclear(r);
		o->rc = dd_conn_failed(c, h, rc != DDICT_OK ? rc : DDICT_ECONN, "ddict_unchanged", NULL);
		o->refull = false;
		dd_mark(h, false);
		return true;
	}
	unchanged = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
		PQnfields(r) == 1 && !PQgetisnull(r, 0, 0);
	PQclear(r);
	if (!unchanged)
		return false;
	answered_unchanged(h, o, dd_now_us());
	return true;
}

/* A full load by COPY (1.2 servers, load.c) of h on c, applied. */
static void
load_copy(ddict *h, dd_conn *c, check_out *o)
{
	ddict_snapshot *snap = NULL;
	dd_build	b;
	int			rc;

	atomic_store(&h->last_check_us, dd_now_us());
	rc = dd_load_full(h, c, &snap, &b);
	apply(h, rc, snap, &b, false, o);
}

/*
 * One pipeline on connection c for v[0..n): every dict's segment is sent,
 * then every result read.  The caller holds what guards c and every dict's
 * sync_lock; the session is set up.
 */
static void
pipeline(dd_conn *c, ddict **v, const bool *full, int n, check_out *out)
{
	int			sent = 0,
				rc = DDICT_OK;

	if (!PQenterPipelineMode(c->pg))
	{
		for (int i = 0; i < n; i++)
			out[i].rc = dd_fail(v[i], DDICT_EBUSY, "ddict_changes: could not enter pipeline mode");
		return;
	}
	for (; sent < n && rc == DDICT_OK; sent++)
	{
		atomic_store(&v[sent]->last_check_us, dd_now_us());
		rc = dd_send_check(v[sent], c, full[sent]);
	}
	if (rc == DDICT_OK)
		rc = dd_conn_flush(c);
	if (rc != DDICT_OK)
	{
		rc = dd_conn_failed(c, v[0], rc, "ddict_changes", NULL);
		for (int i = 0; i < n; i++)
		{
			dd_mark(v[i], false);
			out[i].rc = rc;
			out[i].refull = false;
		}
		dd_conn_settle(c);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		ddict_snapshot *snap = NULL;
		dd_build	b;
		bool		refull = false;

		if (!dd_conn_ok(c))
		{
			dd_note(v[i], "ddict_changes: the connection broke during another dict's check");
			apply(v[i], DDICT_ECONN, NULL, NULL, false, &out[i]);
			continue;
		}
		rc = dd_recv_check(v[i], c, &snap, &b, &refull);
		apply(v[i], rc, snap, &b, refull, &out[i]);
	}
	if (dd_conn_ok(c) && !PQexitPipelineMode(c->pg))
		dd_conn_settle(c);
	/* a failed ddict_changes() skipped its COMMIT: end the transaction */
	dd_conn_end_txn(c);
}

/* Full loads on a short-lived connection of their own (see the header). */
static int
load_separately(ddict *h, check_out *o)
{
	dd_client  *cl = h->client;
	dd_conn		tmp;
	bool		full = true;
	int			rc;

	rc = dd_conn_init_own(&tmp, cl->conn.conninfo, cl->conn.timeout_ms,
						  cl->conn.connect_timeout_ms, 1, 1);
	if (rc != DDICT_OK)
		return dd_fail(h, rc, "out of memory");
	tmp.stop_fd = cl->stop_fd;
	tmp.closing = &cl->closing;
	rc = dd_session_ensure(&tmp, h, true);
	if (rc == DDICT_OK)
		rc = dd_ensure_meta(h, &tmp);
	if (rc == DDICT_OK && tmp.copy_full)
		load_copy(h, &tmp, o);
	else if (rc == DDICT_OK)
		pipeline(&tmp, &h, &full, 1, o);
	else
	{
		dd_mark(h, false);
		o->rc = rc;
	}
	dd_conn_close(&tmp);
	return o->rc;
}

/* Connection and metadata for the dicts of a pipeline on the client's
 * connection; drops (marks stale) those whose metadata lookup failed. */
static int
prepare_batch(dd_client *c, ddict **v, int n, check_out *out, bool read, int *idx)
{
	int			m = 0,
				rc = dd_session_ensure(&c->conn, v[0], !read);

	if (rc != DDICT_OK)
	{
		for (int i = 0; i < n; i++)
		{
			dd_mark(v[i], false);
			out[i].rc = rc;
			if (i > 0)
				dd_note(v[i], "%s", ddict_errmsg());
		}
		return 0;
	}
	for (int i = 0; i < n; i++)
	{
		rc = dd_ensure_meta(v[i], &c->conn);
		if (rc != DDICT_OK)
		{
			dd_mark(v[i], false);
			out[i].rc = rc;
			if (!dd_conn_ok(&c->conn))
				return 0;
			continue;
		}
		idx[m++] = i;
	}
	return m;
}

/*
 * Many dicts: first their versions, in one cheap statement (the
 * ddict_changes() segments cost ~50 µs of server time each even when
 * nothing changed).  A dict whose version is the cached one is unchanged —
 * the same reasoning as a Redis GET's — and needs no segment; the others
 * get theirs in a second round trip.  Returns how many of w[] still need a
 * check (compacted), or m when the probe failed (all do).
 */
/* The names of w[0..m) as a text[] literal (elements quoted). */
static char *
names_array(ddict **w, int m)
{
	size_t		len = 3;
	char	   *arr,
			   *p;

	for (int j = 0; j < m; j++)
		len += 2 * strlen(w[j]->dict) + 3;
	if ((p = arr = malloc(len)) == NULL)
		return NULL;
	*p++ = '{';
	for (int j = 0; j < m; j++)
	{
		if (j)
			*p++ = ',';
		*p++ = '"';
		for (const char *q = w[j]->dict; *q; q++)
		{
			if (*q == '"' || *q == '\\')
				*p++ = '\\';
			*p++ = *q;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return arr;
}

/*
 * The answer to the probe of w[0..m) just sent (ddict_unchanged_many() or
 * ddict_unchanged_packed(); rc: how sending went): the dicts it answered
 * 'u' are settled.  Returns how many of w[] still need a check
 * (compacted), or m when the probe failed (all do).
 */
static int
settle_probe(dd_conn *c, ddict **w, bool *wf, int *idx, int m, check_out *out, int rc,
			 const char *fn)
{
	PGresult   *r = NULL;
	const char *ans;
	int64_t		now;
	int			k = 0;

	rc = first_result(c, rc, &r);
	if (rc != DDICT_OK || r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK ||
		PQntuples(r) != 1 || PQnfields(r) != 1 || PQgetisnull(r, 0, 0) ||
		PQgetlength(r, 0, 0) != m)
	{
		PQclear(r);
		if (rc != DDICT_OK && rc != DDICT_ENOMEM)
			(void) dd_conn_failed(c, w[0], rc, fn, NULL);
		return m;				/* each finds out in its check */
	}
	ans = PQgetvalue(r, 0, 0);
	now = dd_now_us();
	for (int j = 0; j < m; j++)
	{
		const ddict_snapshot *cur = atomic_load(&w[j]->current);

		settle_or_keep(w, wf, idx, out, j, &k,
					   !wf[j] && cur->epoch != 0 && cur->relid != 0 && ans[j] == 'u', now);
	}
	PQclear(r);
	return k;
}

/*
 * Many dicts: first the relations their names mean and those relations'
 * versions, in one cheap statement (a ddict_changes() segment costs tens of
 * µs of server time even when nothing changed).  A dict whose name still
 * means the relation of its contents (1.1 servers), at the cached version,
 * is unchanged — the reasoning of a Redis GET — and needs no segment; the
 * others get theirs in a second round trip.  Returns how many of w[] still
 * need a check (compacted), or m when the probe failed (all do).
 */
/* ---- 1.2: ddict_unchanged_many(), parameters as binary arrays ---- */

typedef struct bin
{
	char	   *p;
	size_t		len,
				cap;
	bool		oom;
} bin;

static void
put(bin *b, const void *data, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap)
	{
		size_t		cap = b->cap ? 2 * b->cap : 512;
		char	   *np;

		while (cap < b->len + n)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL)
		{
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void
be32(char *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

static void
be64(char *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

static void
put32(bin *b, uint32_t v)
{
	char		x[4];

	be32(x, v);
	put(b, x, 4);
}

static void
put64(bin *b, uint64_t v)
{
	char		x[8];

	be64(x, v);
	put(b, x, 8);
}

/* A one-dimensional array's header (array_recv's format), no NULLs. */
static void
array_header(bin *b, uint32_t elemtype, int n)
{
	put32(b, 1);
	put32(b, 0);
	put32(b, elemtype);
	put32(b, (uint32_t) n);
	put32(b, 1);
}

/*
 * ddict_unchanged_many(names, relations, versions, epochs): 'u' per dict
 * whose name means the relation of its contents at the cached version.
 * Returns how many of w[] still need a check (compacted), or m when the
 * probe failed (all do).
 */
static int
probe_many(dd_conn *c, ddict **w, bool *wf, int *idx, int m, check_out *out)
{
	bin			a[4] = {{0}};
	const char *params[4];
	int			lens[4],
				fmts[4] = {1, 1, 1, 1},
				rc;
	size_t		names = 0,
				lens_[DD_BATCH_MAX];

	for (int j = 0; j < m; j++)
		names += (lens_[j] = strlen(w[j]->dict));
	/* each buffer at its final size at once */
	for (int i = 0; i < 4; i++)
	{
		a[i].cap = 20 + (size_t) m * (i == 0 ? 4 : i == 1 ? 8 : 12) + (i == 0 ? names : 0);
		if ((a[i].p = malloc(a[i].cap)) == NULL)
			a[i].oom = true;
		array_header(&a[i], i == 0 ? 25 : i == 1 ? 26 : 20, m);
	}
	for (int j = 0; j < m; j++)
	{
		const ddict_snapshot *cur = atomic_load(&w[j]->current);
		size_t		n = lens_[j];

		put32(&a[0], (uint32_t) n);
		put(&a[0], w[j]->dict, n);
		put32(&a[1], 4);
		put32(&a[1], cur->relid);
		put32(&a[2], 8);
		put64(&a[2], (uint64_t) cur->version);
		put32(&a[3], 8);
		put64(&a[3], (uint64_t) cur->epoch);
	}
	rc = DDICT_ENOMEM;
	if (!a[0].oom && !a[1].oom && !a[2].oom && !a[3].oom)
	{
		for (int i = 0; i < 4; i++)
		{
			params[i] = a[i].p;
			lens[i] = (int) a[i].len;
		}
		/* prepared on 1.2; on 1.3 the prepared probe is the packed one */
		rc = (c->prepared && !c->probe_packed ?
			  PQsendQueryPrepared(c->pg, DD_PREPARED_PROBE, 4, params, lens, fmts, 0) :
			  PQsendQueryParams(c->pg, c->sql[DD_SQL_PROBE_MANY], 4, dd_probe_types, params, lens, fmts, 0))
			? dd_conn_flush(c) : DDICT_ECONN;
	}
	for (int i = 0; i < 4; i++)
		free(a[i].p);
	return settle_probe(c, w, wf, idx, m, out, rc, "ddict_unchanged_many");
}

/* ---- 1.3: ddict_unchanged_packed(), one bytea (format: src/probe.c) ---- */


/*
 * The probe's size for w[0..m) into *len, or false when the names cannot
 * go as bytes: one longer than 65535 bytes, or one beyond ASCII while
 * libpq converts text between two encodings (a name sent as text would be
 * converted, bytes are not) — then the 1.2 probe asks.
 */
static bool
packed_size(dd_conn *c, ddict **w, int m, size_t *len)
{
	bool		ascii = true;

	*len = 5 + (size_t) m * 22;
	for (int j = 0; j < m; j++)
	{
		size_t		n = 0;

		for (const unsigned char *q = (const unsigned char *) w[j]->dict; q[n]; n++)
			ascii &= q[n] < 0x80;
		if (n > 0xffff)
			return false;
		*len += n;
	}
	if (!ascii)
	{
		const char *ce = PQparameterStatus(c->pg, "client_encoding"),
				   *se = PQparameterStatus(c->pg, "server_encoding");

		return ce && se && strcmp(ce, se) == 0;
	}
	return true;
}

/*
 * ddict_unchanged_packed(probe): ddict_unchanged_many()'s question in one
 * bytea — format 1, n, then (relation, version, epoch) of each dict, then
 * their names — built in the connection's buffer, which is kept for the
 * next check (no allocation per check once it is big enough).  The names
 * come last and the same each time: the server resolves them once
 * (src/probe.c).
 */
static int
probe_packed(dd_conn *c, ddict **w, bool *wf, int *idx, int m, check_out *out)
{
	const char *params[1];
	int			lens[1],
				fmts[1] = {1},
				rc;
	size_t		len;
	char	   *p,
			   *q;

	if (!packed_size(c, w, m, &len))
		return probe_many(c, w, wf, idx, m, out);
	if (len > c->probe_cap)
	{
		size_t		cap = len < 1024 ? 1024 : 2 * len;

		if ((p = realloc(c->probe_buf, cap)) == NULL)
			return m;			/* each finds out in its check */
		c->probe_buf = p;
		c->probe_cap = cap;
	}
	p = c->probe_buf;
	*p = 1;						/* the format */
	be32(p + 1, (uint32_t) m);
	p += 5;
	q = p + (size_t) m * 20;	/* the names */
	for (int j = 0; j < m; j++, p += 20)
	{
		const ddict_snapshot *cur = atomic_load(&w[j]->current);
		size_t		n = strlen(w[j]->dict);

		be32(p, cur->relid);
		be64(p + 4, (uint64_t) cur->version);
		be64(p + 12, (uint64_t) cur->epoch);
		q[0] = (char) (n >> 8);
		q[1] = (char) (n & 0xff);
		memcpy(q + 2, w[j]->dict, n);
		q += 2 + n;
	}
	params[0] = c->probe_buf;
	lens[0] = (int) len;
	rc = (c->prepared ?
		  PQsendQueryPrepared(c->pg, DD_PREPARED_PROBE, 1, params, lens, fmts, 0) :
		  PQsendQueryParams(c->pg, c->sql[DD_SQL_PROBE], 1, dd_packed_types, params, lens, fmts, 0))
		? dd_conn_flush(c) : DDICT_ECONN;
	return settle_probe(c, w, wf, idx, m, out, rc, "ddict_unchanged_packed");
}

static int
probe(dd_conn *c, ddict **w, bool *wf, int *idx, int m, check_out *out)
{
	int64_t		now;
	char	   *arr;
	const char *params[1];
	PGresult   *r = NULL;
	int			k = 0,
				rc;

	if (c->probe_packed)
		return probe_packed(c, w, wf, idx, m, out);
	if (c->probe_many)
		return probe_many(c, w, wf, idx, m, out);
	if ((arr = names_array(w, m)) == NULL)
		return m;
	params[0] = arr;
	rc = (c->prepared ? PQsendQueryPrepared(c->pg, DD_PREPARED_PROBE, 1, params, NULL, NULL, 0)
		  : PQsendQueryParams(c->pg, c->sql[DD_SQL_PROBE], 1, NULL, params, NULL, NULL, 0))
		? dd_conn_flush(c) : DDICT_ECONN;
	free(arr);
	rc = first_result(c, rc, &r);
	if (rc != DDICT_OK || r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK ||
		PQntuples(r) != m || PQnfields(r) != 2)
	{
		PQclear(r);
		if (rc != DDICT_OK)
			(void) dd_conn_failed(c, w[0], rc, "ddict_last_updated", NULL);
		return m;				/* a dict gone, say: each finds out in its check */
	}
	now = dd_now_us();
	for (int j = 0; j < m; j++)
	{
		const ddict_snapshot *cur = atomic_load(&w[j]->current);
		long long	rel = PQgetisnull(r, j, 0) ? -1 : strtoll(PQgetvalue(r, j, 0), NULL, 10),
					v = PQgetisnull(r, j, 1) ? -1 : strtoll(PQgetvalue(r, j, 1), NULL, 10);
		bool		same_rel = !c->changes_rel || (cur->relid != 0 && rel == (long long) cur->relid);

		settle_or_keep(w, wf, idx, out, j, &k,
					   !wf[j] && cur->epoch != 0 && same_rel && v == cur->version, now);
	}
	PQclear(r);
	return k;
}

/*
 * Checks (and full loads) of v[0..n) on the client's connection; the
 * client's lock and every sync_lock held.  full[i]: load in full; changed
 * (optional): the dict is known to have changed (Redis, a push), so its
 * check goes straight to ddict_changes().  Many dicts: one probe of all,
 * then one pipeline of ddict_changes() for those it did not settle; one
 * dict: ddict_unchanged() alone, then (NULL) the pipeline; full loads by
 * COPY after those (1.2 servers).
 */
static void
pg_checks(dd_client *c, ddict **v, bool *full, int n, check_out *out, bool read,
		  const bool *changed)
{
	int			idx[DD_BATCH_MAX],
				m;
	ddict	   *w[DD_BATCH_MAX];
	bool		wf[DD_BATCH_MAX] = {false};
	check_out	wo[DD_BATCH_MAX];

	int			loads[DD_BATCH_MAX],
				nloads = 0,
				k = 0;

	m = prepare_batch(c, v, n, out, read, idx);
	if (m == 0)
		return;
	vp_ensure(c);
	/* 1.2: full loads by COPY, after the other dicts' checks */
	for (int j = 0; j < m; j++)
	{
		if (full[idx[j]] && c->conn.copy_full)
		{
			loads[nloads++] = idx[j];
			continue;
		}
		w[k] = v[idx[j]];
		wf[k] = full[idx[j]];
		idx[k] = idx[j];
		k++;
	}
	m = k;
	if (m >= 2)
		m = probe(&c->conn, w, wf, idx, m, out);
	else if (m == 1 && !wf[0] && !(changed && changed[idx[0]]) && check_one(&c->conn, w[0], &out[idx[0]]))
		m = 0;
	if (m > 0 && dd_conn_ok(&c->conn))
	{
		pipeline(&c->conn, w, wf, m, wo);
		for (int j = 0; j < m; j++)
			out[idx[j]] = wo[j];
		m = 0;
	}
	for (int j = 0; j < m; j++)
	{
		dd_mark(w[j], false);
		out[idx[j]].rc = DDICT_ECONN;
		out[idx[j]].refull = false;
	}
	for (int j = 0; j < nloads; j++)
	{
		if (dd_conn_ok(&c->conn))
			load_copy(v[loads[j]], &c->conn, &out[loads[j]]);
		else
		{
			dd_mark(v[loads[j]], false);
			out[loads[j]].rc = dd_fail(v[loads[j]], DDICT_ECONN, "not connected to the server");
			out[loads[j]].refull = false;
		}
	}
}

/*
 * Deltas that did not apply (the server restarted or failed over): full
 * loads, on this connection since we hold it anyway — rare, and all dicts
 * of a client usually need one at the same time then.
 */
static void
refull_all(dd_client *c, ddict **v, int n, check_out *out)
{
	for (int attempt = 0; attempt < 2; attempt++)
	{
		ddict	   *w[DD_BATCH_MAX];
		bool		full[DD_BATCH_MAX];
		check_out	o[DD_BATCH_MAX];
		int			idx[DD_BATCH_MAX],
					m = 0;

		for (int i = 0; i < n; i++)
			if (out[i].rc >= 0 && out[i].refull)
			{
				idx[m] = i;
				full[m] = true;
				w[m++] = v[i];
			}
		if (m == 0)
			return;
		pg_checks(c, w, full, m, o, false, NULL);
		for (int j = 0; j < m; j++)
			out[idx[j]] = o[j];
	}
	for (int i = 0; i < n; i++)
		if (out[i].rc >= 0 && out[i].refull)
		{
			dd_mark(v[i], false);
			out[i].rc = dd_fail(v[i], DDICT_ERR,
								"ddict_changes() kept answering a full request with a delta");
		}
}

/* ---- what a check of a read does first: Redis ---- */

/*
 * With Redis, a version the cache already has is the answer and the server
 * is not contacted: from the last message heard on the client's
 * subscription, or else one GET round trip for every dict of the batch.
 * Returns which dicts still need the server (need[i]); newer[i]: Redis knows
 * another version.
 */
static void
redis_checks(dd_client *c, ddict **v, int n, bool *need, bool *newer)
{
	const char *keys[DD_BATCH_MAX];
	int			map[DD_BATCH_MAX],
				rcs[DD_BATCH_MAX],
				k = 0,
				rc;
	int64_t		vers[DD_BATCH_MAX];
	char		err[300];

	for (int i = 0; i < n; i++)
	{
		const ddict_snapshot *cur = atomic_load(&v[i]->current);
		const char *key = atomic_load(&v[i]->redis_key);
		int64_t		pushed = atomic_load(&v[i]->pushed);

		need[i] = true;
		newer[i] = false;
		if (key == NULL || cur->epoch == 0)
			continue;
		if (pushed != INT64_MIN)
		{
			atomic_fetch_add_explicit(&v[i]->redis_checks, 1, memory_order_relaxed);
			need[i] = pushed != cur->version;
			newer[i] = need[i];
			continue;
		}
		if (c->get)
		{
			keys[k] = key;
			map[k++] = i;
		}
	}
	if (k == 0)
		return;
	rc = dd_redis_get_many(&c->rtarget, c->get, keys, k, vers, rcs, err, sizeof(err));
	if (rc != DDICT_OK)
	{
		/*
		 * Give the connection up; the thread makes another — at once after
		 * a plain loss (Redis restarted), with a growing backoff while Redis
		 * misbehaves (a malformed, half or extra reply, no answer).
		 */
		if (rc != DDICT_ECONN || dd_rconn_buffered(c->get))
			atomic_fetch_add(&c->bad_replies, 1);
		for (int j = 0; j < k; j++)
		{
			atomic_fetch_add_explicit(&v[map[j]]->redis_errors, 1, memory_order_relaxed);
			dd_note(v[map[j]], "Redis %s: %s", c->rtarget.url.desc, err);
		}
		dd_rconn_free(c->get);
		c->get = NULL;
		atomic_store(&c->has_get, false);
		atomic_store(&c->redis_used, false);
		dd_event_signal(c->kick_fd);
		return;
	}
	atomic_store(&c->bad_replies, 0);
	for (int j = 0; j < k; j++)
	{
		ddict	   *h = v[map[j]];
		const ddict_snapshot *cur = atomic_load(&h->current);

		atomic_fetch_add_explicit(&h->redis_checks, 1, memory_order_relaxed);
		if (rcs[j] == 1 && vers[j] == cur->version)
			need[map[j]] = false;
		else
			newer[map[j]] = rcs[j] == 1;
	}
}

/*
 * Checks of v[0..n) in one round trip, the client's lock and every dict's
 * sync_lock held.  read: a read's check (Redis first; honour the reconnect
 * backoff), else an explicit sync.  rcs (optional) gets each dict's result.
 */
void
dd_check_many(dd_client *c, ddict **v, int n, bool read, int *rcs)
{
	ddict	   *w[DD_BATCH_MAX];
	bool		need[DD_BATCH_MAX],
				newer[DD_BATCH_MAX],
				full[DD_BATCH_MAX],
				known[DD_BATCH_MAX];
	check_out	out[DD_BATCH_MAX];
	int			m = 0;
	int64_t		now = dd_now_us();

	if (n > DD_BATCH_MAX)
		n = DD_BATCH_MAX;
	for (int i = 0; i < n; i++)
	{
		need[i] = true;
		newer[i] = false;
		if (rcs)
			rcs[i] = 0;
	}
	if (read && c->redis_enabled)
		redis_checks(c, v, n, need, newer);
	for (int i = 0; i < n; i++)
	{
		if (!need[i])
		{
			atomic_store(&v[i]->last_check_us, now);
			dd_mark(v[i], true);
			vp_refresh(v[i]);
			dd_snapfile_maybe_write(v[i]);
			continue;
		}
		w[m] = v[i];
		full[m] = false;
		/* a newer version from Redis, a push: no "unchanged?" first */
		known[m] = newer[i] || v[i]->opts.mode == DDICT_PUSH;
		m++;
	}
	if (m == 0)
		return;
	if (read && !c->conn.borrowed && !dd_conn_ok(&c->conn) &&
		!dd_backoff_due(&c->conn.backoff, now))
	{
		/* Backing off: Redis may know another version we cannot fetch yet. */
		for (int i = 0; i < n; i++)
		{
			if (need[i] && newer[i])
				dd_mark(v[i], false);
			if (need[i] && rcs)
				rcs[i] = DDICT_ECONN;
		}
		return;
	}
	pg_checks(c, w, full, m, out, read, known);
	refull_all(c, w, m, out);
	for (int i = 0, j = 0; i < n && rcs; i++)
		if (need[i])
			rcs[i] = out[j++].rc;
}

/* ---- one dict: open, ddict_sync(), writes' follow-ups ---- */

/* Other dicts of the client may need its connection meanwhile. */
static bool
shared(const ddict *h)
{
	const dd_client *c = h->client;

	return !c->conn.borrowed && atomic_load(&c->nlisted) - (h->listed ? 1 : 0) > 0;
}

static int
sync_once(ddict *h, bool force_full)
{
	dd_client  *c = h->client;

	for (int attempt = 0; attempt < 3; attempt++)
	{
		check_out	o = {0};
		bool		full = force_full || atomic_load(&h->current)->epoch == 0;

		if (full && shared(h))
			load_separately(h, &o);
		else
		{
			dd_client_lock(c);
			pg_checks(c, &h, &full, 1, &o, false, NULL);
			dd_client_unlock(c);
		}
		if (o.rc < 0 || !o.refull)
			return o.rc;
		force_full = true;
	}
	dd_mark(h, false);
	return dd_fail(h, DDICT_ERR, "ddict_changes() kept answering a full request with a delta");
}

int
dd_sync_locked(ddict *h, bool force_full)
{
	return sync_once(h, force_full);
}

/* ---- reads ---- */

static void
coalesce(ddict *h)
{
	unsigned	phase;
	dd_reader_slot *slot = dd_guard_enter(&h->guard, &phase);

	/* the guard section only locates this thread's slot */
	dd_guard_exit(slot, phase);
	dd_slot_count(&slot->coalesced);
}

static bool
interval_due(const ddict *h, int64_t now)
{
	return now - atomic_load_explicit(&h->last_check_us, memory_order_relaxed) >=
		(int64_t) h->opts.interval_ms * 1000;
}

int
dd_collect_wanted(dd_client *c, ddict *skip, ddict **v, int max, int64_t now, bool interval)
{
	int			n = 0;

	for (size_t i = 0; i < c->ndicts && n < max; i++)
	{
		ddict	   *d = c->dicts[i];
		bool		due;

		if (d == skip)
			continue;
		due = atomic_load(&d->want) ||
			(interval && d->opts.mode == DDICT_INTERVAL && interval_due(d, now)) ||
			(d->opts.mode == DDICT_PUSH && d->pending && now >= d->sync_at);
		if (!due || !dd_trylock(d))
			continue;
		atomic_store(&d->want, false);
		v[n++] = d;
	}
	return n;
}

/* h's check and those of other dicts that are due, in one round trip: the
 * caller holds h's sync_lock and the client's lock. */
static void
check_locked(dd_client *c, ddict *h, int64_t now)
{
	ddict	   *v[DD_BATCH_MAX];
	int			n;

	v[0] = h;
	dd_list_lock(c);
	n = 1 + dd_collect_wanted(c, h, v + 1, DD_BATCH_MAX - 1, now, true);
	dd_list_unlock(c);
	dd_check_many(c, v, n, true, NULL);
	for (int i = 1; i < n; i++)
		dd_unlock(v[i]);
}

/*
 * The page has a newer version than our snapshot, or cannot say right now
 * (the dict's record is being rewritten, the page's slot is busy, no record
 * yet): wait for a check (ours, or the one another thread has in flight)
 * instead of serving the snapshot — a read must see every commit
 * acknowledged before it started.  (Serving the snapshot when the answer
 * was only unavailable let reads be stale while another thread refreshed
 * the record: test_strict under TSan.)
 */
static void
strict_check(ddict *h)
{
	dd_client  *c = h->client;

	dd_lock(h);
	if (vp_state(h) == VP_UNCHANGED)
	{
		dd_unlock(h);			/* another thread's check caught up */
		return;
	}
	dd_client_lock(c);
	check_locked(c, h, dd_now_us());
	dd_client_unlock(c);
	dd_unlock(h);
}

void
dd_maybe_sync(ddict *h)
{
	dd_client  *c = h->client;
	int64_t		now;
	vp_answer	vp = VP_NONE;

	if (h->opts.mode == DDICT_MANUAL || h->opts.mode == DDICT_PUSH)
		return;
	/* From a change callback of the same client: its locks are this
	 * thread's (dd_in_callback) — the snapshot, no check. */
	if (DD_UNLIKELY(tl_callback_client == c))
		return;
	if (h->opts.mode == DDICT_AUTOSYNC)
	{
		vp = vp_state(h);
		if (DD_LIKELY(vp == VP_UNCHANGED))
			return;
		/* Not from inside a change callback (of this dict or another): its
		 * thread holds a sync_lock and the client's lock, so it may only
		 * trylock (lock order, internal.h) — it serves the snapshot. */
		if ((vp == VP_CHANGED ||
			 (vp == VP_NONE && atomic_load_explicit(&c->vpage, memory_order_relaxed) != NULL)) &&
			tl_callback_client == NULL)
		{
			strict_check(h);
			return;
		}
	}
	now = dd_now_us();
	if (h->opts.mode == DDICT_INTERVAL && !interval_due(h, now))
		return;
	/* Disconnected and backing off: serve the snapshot without trying
	 * (unless Redis is in use: it may still confirm the snapshot). */
	if (!atomic_load_explicit(&c->redis_used, memory_order_relaxed) &&
		!atomic_load_explicit(&c->conn.connected, memory_order_relaxed) && !c->conn.borrowed &&
		now < atomic_load_explicit(&c->conn.retry_at_us, memory_order_relaxed))
		return;
	/* Another thread is checking this dict (or we are in its change
	 * callback): do not wait — its result is at most a round trip newer. */
	if (!dd_trylock(h))
	{
		if (vp != VP_REBIND)	/* (rebinding: the version is current) */
			coalesce(h);
		return;
	}
	if (h->opts.mode == DDICT_INTERVAL && !interval_due(h, dd_now_us()))
	{
		dd_unlock(h);
		return;
	}
	/* The connection is busy with other dicts: the thread that holds it,
	 * or the client's thread, checks this one next. */
	if (!dd_client_trylock(c))
	{
		atomic_store(&h->want, true);
		dd_event_signal(c->kick_fd);
		dd_unlock(h);
		if (vp != VP_REBIND)
			coalesce(h);
		return;
	}
	check_locked(c, h, now);
	dd_client_unlock(c);
	dd_unlock(h);
}
