/*
 * sync.c — the client half of ddict_changes().
 *
 * One round trip per check: we send the (version, epoch, cursor) of the
 * current snapshot and get a header row — 'u' unchanged (nothing follows),
 * 'd' delta, 'f' full — and then the changed ('s') or deleted ('x') keys.
 * The server reads the version before it takes the snapshot the rows come
 * from, so rows are at least as new as the header's version; we store that
 * version with the snapshot we build.
 *
 * Rows are received in single-row mode: a full reload of a 1M-key dict is
 * copied row by row into the new table and never held as one PGresult.
 *
 * A delta is only applied on top of what it was computed against: if its
 * header names another epoch (server restarted) or a version older than ours
 * (a failover to a server that is behind, a restored backup), we drop it and
 * ask again in full.
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
 * Only the thread holding sync_lock runs this.  Readers keep using the old
 * snapshot throughout and switch at the atomic store in dd_publish().
 */
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local const ddict *tl_callback_handle;

bool
dd_in_callback(const ddict *h)
{
	return tl_callback_handle == h;
}

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
dd_send_changes(ddict *h, bool full)
{
	/* We hold sync_lock, the only writer of current: no guard needed. */
	const ddict_snapshot *cur = atomic_load(&h->current);
	PGconn	   *pg = h->conn.pg;
	char		v[24],
				e[24],
				c[24],
				d[16];
	const char *vals[5] = {h->dict, NULL, NULL, NULL, NULL};
	int			nparams = dd_changes_nparams(&h->conn);

	if (!full && cur->epoch != 0)
	{
		snprintf(v, sizeof(v), "%lld", (long long) cur->version);
		snprintf(e, sizeof(e), "%lld", (long long) cur->epoch);
		snprintf(c, sizeof(c), "%lld", (long long) cur->cursor);
		vals[1] = v;
		vals[2] = e;
		vals[3] = c;
		/* since_dict: the relation our contents came from (1.1 servers) */
		if (cur->relid != 0)
		{
			snprintf(d, sizeof(d), "%lu", (unsigned long) cur->relid);
			vals[4] = d;
		}
	}
	/* Binary results: keys and values arrive as raw bytes. */
	if (!(h->conn.prepared ?
		  PQsendQueryPrepared(pg, DD_PREPARED_CHANGES, nparams, vals, NULL, NULL, 1) :
		  PQsendQueryParams(pg, h->conn.sql[DD_SQL_CHANGES], nparams, NULL, vals, NULL, NULL, 1)))
		return DDICT_ECONN;
	/* Outside a pipeline, single-row mode must be chosen right after the send. */
	if (PQpipelineStatus(pg) == PQ_PIPELINE_OFF)
		(void) PQsetSingleRowMode(pg);
	return DDICT_OK;
}

typedef struct recv_state
{
	ddict	   *h;
	const ddict_snapshot *cur;
	dd_build   *b;
	bool		header;
	char		kind;
	bool		refull;
	int64_t		version,
				epoch,
				cursor;
	uint32_t	relid;			/* the header's relation; 0 from a 1.0 server */
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
take_row(recv_state *st, const PGresult *r, int i)
{
	char		kind = PQgetlength(r, i, 0) == 1 ? PQgetvalue(r, i, 0)[0] : '\0';

	if (!st->header)
	{
		st->header = true;
		st->kind = kind;
		st->version = get_int8(r, i, 3);
		st->epoch = get_int8(r, i, 4);
		st->cursor = get_int8(r, i, 5);
		st->relid = get_oid(r, i, 6);
		if (kind != 'u' && kind != 'd' && kind != 'f')
			return proto_error(st, "no header row");
		if (st->version == INT64_MIN || st->epoch == INT64_MIN || st->cursor == INT64_MIN)
			return proto_error(st, "header without version, epoch or cursor");
		if (st->h->conn.changes_rel && st->relid == 0)
			return proto_error(st, "header without the dict's relation");
		/* our contents are of another (or an unknown) relation: reload */
		if (kind != 'f' && st->h->conn.changes_rel && st->cur->epoch != 0 &&
			st->relid != st->cur->relid)
		{
			st->refull = true;
			return DDICT_OK;
		}
		if (kind == 'u')
			return DDICT_OK;
		if (kind == 'd' && (st->cur->epoch == 0 || st->epoch != st->cur->epoch ||
							st->version < st->cur->version))
		{
			st->refull = true;	/* not a delta of what we have */
			return DDICT_OK;
		}
		return dd_build_begin(st->b, st->cur, kind == 'f', st->h->seed);
	}
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

int
dd_recv_changes(ddict *h, ddict_snapshot **out, dd_build *b,
				bool *refull)
{
	recv_state	st;
	PGresult   *r,
			   *err = NULL;
	int			rc = DDICT_OK,
				qrc;

	memset(b, 0, sizeof(*b));
	memset(&st, 0, sizeof(st));
	st.h = h;
	st.cur = atomic_load(&h->current);
	st.b = b;
	*out = NULL;
	*refull = false;
	if (PQpipelineStatus(h->conn.pg) != PQ_PIPELINE_OFF)
		(void) PQsetSingleRowMode(h->conn.pg);

	/* Always read to the end of the query, even after an error of ours. */
	while ((r = dd_conn_next(h, &qrc)) != NULL)
	{
		ExecStatusType s = PQresultStatus(r);

		if (s == PGRES_SINGLE_TUPLE || s == PGRES_TUPLES_OK)
		{
			if (PQnfields(r) != (h->conn.changes_rel ? 7 : 6) && rc == DDICT_OK)
				rc = proto_error(&st, "wrong number of columns");
			for (int i = 0; i < PQntuples(r) && rc == DDICT_OK; i++)
				rc = take_row(&st, r, i);
			PQclear(r);
		}
		else if (err == NULL && s == PGRES_FATAL_ERROR)
			err = r;
		else
			PQclear(r);
	}
	atomic_fetch_add_explicit(&h->rows, st.rows, memory_order_relaxed);
	if (qrc != DDICT_OK || (err && !dd_conn_ok(&h->conn)))
		rc = dd_conn_failed(h, qrc != DDICT_OK ? qrc : DDICT_ECONN, "ddict_changes", err);
	else if (err)
		rc = dd_conn_failed(h, DDICT_ESERVER, "ddict_changes", err);
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
	atomic_store(&h->current, snap);
	if (!b->from_file)
		atomic_fetch_add_explicit(b->full ? &h->reloads : &h->deltas, 1, memory_order_relaxed);
	if (b->compacted)
		atomic_fetch_add_explicit(&h->compactions, 1, memory_order_relaxed);
	if (h->opts.on_change)
	{
		tl_callback_handle = h;
		dd_snap_diff(old, snap, b->full ? NULL : b->tab, h->opts.on_change,
					 h->opts.on_change_arg);
		tl_callback_handle = NULL;
	}
	/* Freed once no reader can still be looking at it through h->current. */
	dd_guard_retire(&h->guard, old, snap_unref_cb);

	if (!b->from_file)
		dd_snapfile_maybe_write(h);
	return DDICT_OK;
}

/*
 * The snapshot file follows the cache at most every snapshot_interval_ms:
 * called after each publish and each successful check, so a change that
 * came within the interval is written by a later check.  Sync lock held.
 */
void
dd_snapfile_maybe_write(ddict *h)
{
	const ddict_snapshot *cur = atomic_load(&h->current);

	if (h->opts.snapshot_path == NULL || cur->epoch == 0 ||
		cur->version == h->snapfile_version)
		return;
	if (h->snapfile_written_us != 0 &&
		dd_now_us() - h->snapfile_written_us < (int64_t) h->opts.snapshot_interval_ms * 1000)
		return;
	(void) dd_snapfile_write(h, cur);
}

static void
mark(ddict *h, bool ok)
{
	if (ok)
	{
		atomic_store(&h->last_ok_us, dd_now_us());
		atomic_store(&h->stale, false);
	}
	else
		atomic_store(&h->stale, true);
}

static int sync_once(ddict *h, bool force_full);

int
dd_sync_locked(ddict *h, bool force_full)
{
	int			rc = sync_once(h, force_full);

	/* EBUSY: the application's connection was busy and we never touched it */
	if (rc < 0 && rc != DDICT_EBUSY)
		dd_conn_settle(h);
	return rc;
}

static int
sync_once(ddict *h, bool force_full)
{
	for (int attempt = 0; attempt < 3; attempt++)
	{
		ddict_snapshot *snap;
		dd_build	b;
		bool		refull;
		int			rc;

		/* open and explicit syncs may connect at once; reads wait for backoff */
		rc = dd_conn_ensure(h, true);
		if (rc != DDICT_OK)
		{
			mark(h, false);
			return rc;
		}
		atomic_store(&h->last_check_us, dd_now_us());
		rc = dd_send_changes(h, force_full);
		if (rc == DDICT_OK)
			rc = dd_conn_flush(h);
		if (rc != DDICT_OK)
		{
			mark(h, false);
			return dd_conn_failed(h, rc, "ddict_changes", NULL);
		}
		rc = dd_recv_changes(h, &snap, &b, &refull);
		if (rc != DDICT_OK)
		{
			mark(h, false);
			return rc;
		}
		if (refull)
		{
			force_full = true;
			continue;
		}
		mark(h, true);
		if (snap == NULL)
		{
			dd_snapfile_maybe_write(h);
			return 0;
		}
		dd_publish(h, snap, &b);
		dd_build_free(&b);
		return 1;
	}
	mark(h, false);
	return dd_fail(h, DDICT_ERR, "ddict_changes() kept answering a full request with a delta");
}

/*
 * The sync lock, with a flag beside it: an autosync reader that finds a
 * check in flight must not even try the mutex (a failed trylock is still a
 * write to the mutex's cache line, which every reading thread would then
 * fight over); it reads the flag and moves on.
 */
void
dd_lock(ddict *h)
{
	pthread_mutex_lock(&h->sync_lock);
	atomic_store_explicit(&h->busy, true, memory_order_relaxed);
}

void
dd_unlock(ddict *h)
{
	atomic_store_explicit(&h->busy, false, memory_order_relaxed);
	pthread_mutex_unlock(&h->sync_lock);
}

static void
coalesce(ddict *h)
{
	unsigned	phase;
	dd_reader_slot *slot = dd_guard_enter(&h->guard, &phase);

	/* the guard section only locates this thread's slot */
	dd_guard_exit(slot, phase);
	atomic_fetch_add_explicit(&slot->coalesced, 1, memory_order_relaxed);
}

/*
 * A read's check, sync_lock held.  With Redis: GET the version first; when
 * it is the cached one, that is the answer and the server is not contacted.
 * Otherwise — another version, no version in Redis, Redis unreachable — the
 * usual ddict_changes() round trip (which reads honour the reconnect backoff
 * for).
 */
static void
read_check_locked(ddict *h)
{
	bool		newer = false;

	if (h->redis.enabled)
	{
		const ddict_snapshot *cur = atomic_load(&h->current);
		int64_t		v;
		int			rc = dd_redis_get(h, &v);

		atomic_store(&h->last_check_us, dd_now_us());
		if (rc == 1 && cur->epoch != 0 && v == cur->version)
		{
			mark(h, true);
			dd_snapfile_maybe_write(h);
			return;
		}
		newer = rc == 1;
	}
	if (h->conn.borrowed || dd_conn_ok(&h->conn) || dd_now_us() >= h->conn.next_attempt_us)
		(void) dd_sync_locked(h, false);
	else if (newer)
		mark(h, false);			/* Redis knows another version we cannot fetch yet */
}

void
dd_maybe_sync(ddict *h)
{
	int64_t		now;

	if (h->opts.mode == DDICT_MANUAL || h->opts.mode == DDICT_PUSH)
		return;
	now = dd_now_us();
	if (h->opts.mode == DDICT_INTERVAL &&
		now - atomic_load_explicit(&h->last_check_us, memory_order_relaxed) <
		(int64_t) h->opts.interval_ms * 1000)
		return;
	/* Disconnected and backing off: serve the snapshot without trying
	 * (unless Redis is in use: its GET may still confirm the snapshot). */
	if (!atomic_load_explicit(&h->redis.used, memory_order_relaxed) &&
		!atomic_load_explicit(&h->connected, memory_order_relaxed) && !h->conn.borrowed &&
		now < atomic_load_explicit(&h->retry_at_us, memory_order_relaxed))
		return;
	/* Another thread is checking (or we are in its change callback): do not
	 * wait for it — its result will be at most a round trip newer. */
	if (atomic_load_explicit(&h->busy, memory_order_relaxed) ||
		pthread_mutex_trylock(&h->sync_lock) != 0)
	{
		coalesce(h);
		return;
	}
	atomic_store_explicit(&h->busy, true, memory_order_relaxed);
	if (h->opts.mode != DDICT_INTERVAL ||
		dd_now_us() - atomic_load(&h->last_check_us) >= (int64_t) h->opts.interval_ms * 1000)
		read_check_locked(h);
	dd_unlock(h);
}

/* Push mode's thread: a sync when the connection may be used now. */
int
dd_sync_from_thread(ddict *h)
{
	int			rc;

	dd_lock(h);
	if (dd_conn_ok(&h->conn) || dd_now_us() >= h->conn.next_attempt_us)
		rc = dd_sync_locked(h, false);
	else
		rc = DDICT_ECONN;
	dd_unlock(h);
	return rc;
}
