/*
 * write.c — set / delete / pop / setdefault.
 *
 * A write runs the server function in its own (autocommit) transaction and,
 * in the same network round trip, ddict_changes() in the next one: libpq's
 * pipeline mode with a Sync after each statement.  The delta that comes back
 * contains the written key as the server stored it (jsonb normalised, bytea
 * as bytes) plus anything else committed before, so the cache moves forward
 * without a full reload and without guessing the stored form locally.
 *
 * Writes never retry: a connection lost mid-write leaves its outcome
 * unknown, and the caller is told so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum
{
	W_SET = DD_SQL_SET, W_DELETE = DD_SQL_DELETE, W_POP = DD_SQL_POP,
	W_SETDEFAULT = DD_SQL_SETDEFAULT
};

static const char *const wname[] = {
	[W_SET] = "ddict_set", [W_DELETE] = "ddict_delete", [W_POP] = "ddict_pop",
	[W_SETDEFAULT] = "ddict_setdefault"
};

/* A text parameter: bytea values as hex, text values must not hold NULs. */
static int
value_param(ddict *h, const char *fn, const void *val, size_t len, char **out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *v = val;
	char	   *p;

	*out = NULL;
	if (h->bytea)
	{
		if (len > (SIZE_MAX - 3) / 2)
			return dd_seterr(DDICT_EINVAL, "%s: value too large", fn);
		p = malloc(2 * len + 3);
		if (p == NULL)
			return dd_seterr(DDICT_ENOMEM, "out of memory");
		p[0] = '\\';
		p[1] = 'x';
		for (size_t i = 0; i < len; i++)
		{
			p[2 + 2 * i] = hex[v[i] >> 4];
			p[3 + 2 * i] = hex[v[i] & 15];
		}
		p[2 + 2 * len] = '\0';
	}
	else
	{
		if (memchr(val, '\0', len))
			return dd_seterr(DDICT_EINVAL,
							 "%s: a value of a text dict cannot contain NUL bytes (use a bytea dict)", fn);
		p = malloc(len + 1);
		if (p == NULL)
			return dd_seterr(DDICT_ENOMEM, "out of memory");
		memcpy(p, val, len);
		p[len] = '\0';
	}
	*out = p;
	return DDICT_OK;
}

/* The function's text result as the caller's bytes (bytea: decoded). */
static int
result_value(ddict *h, const char *text, char **value, size_t *len)
{
	char	   *copy;
	size_t		n;

	if (h->bytea)
	{
		unsigned char *raw = PQunescapeBytea((const unsigned char *) text, &n);

		if (raw == NULL)
			return dd_seterr(DDICT_ENOMEM, "out of memory");
		copy = malloc(n + 1);
		if (copy)
			memcpy(copy, raw, n);
		PQfreemem(raw);
	}
	else
	{
		n = strlen(text);
		copy = malloc(n + 1);
		if (copy)
			memcpy(copy, text, n);
	}
	if (copy == NULL)
		return dd_seterr(DDICT_ENOMEM, "out of memory");
	copy[n] = '\0';
	if (value)
		*value = copy;
	else
		free(copy);
	if (len)
		*len = n;
	return DDICT_OK;
}

/*
 * The pipeline: write, Sync, then the check's segment (BEGIN ISOLATION LEVEL
 * READ COMMITTED; ddict_changes; COMMIT; Sync).  On success *res holds the
 * write's result (caller clears it).  Caller holds sync_lock and the
 * client's lock.
 */
static int
write_locked(ddict *h, int which, const char *const *params, int nparams, PGresult **res)
{
	dd_conn    *c = &h->client->conn;
	const char *fn = wname[which];
	PGresult   *r,
			   *wres = NULL;
	ddict_snapshot *snap = NULL;
	dd_build	b;
	bool		refull = false;
	int			rc,
				crc;
	char		what[64];

	*res = NULL;
	snprintf(what, sizeof(what), "%s (the write may or may not have been applied)", fn);
	if (!PQenterPipelineMode(c->pg))
		return dd_fail(h, DDICT_EBUSY, "%s: could not enter pipeline mode", fn);
	if (!PQsendQueryParams(c->pg, c->sql[which], nparams, NULL, params, NULL, NULL, 0) ||
		!PQpipelineSync(c->pg) ||
		dd_send_check(h, c, false) != DDICT_OK)
		return dd_conn_failed(c, h, DDICT_ECONN, fn, NULL);
	if ((rc = dd_conn_flush(c)) != DDICT_OK)
		return dd_conn_failed(c, h, rc, what, NULL);

	/*
	 * The write's result, then its Sync.  The row may come as a
	 * PGRES_SINGLE_TUPLE: libpq keeps single-row mode set from an earlier
	 * query when the next one is sent in pipeline mode.  Keep the first error,
	 * else the first result that has the row.
	 */
	while ((r = dd_conn_next(c, &rc)) != NULL)
	{
		ExecStatusType st = PQresultStatus(r);
		bool		better = wres == NULL ||
			(PQresultStatus(wres) != PGRES_FATAL_ERROR &&
			 (st == PGRES_FATAL_ERROR || PQntuples(wres) == 0));

		if (better)
		{
			PQclear(wres);
			wres = r;
		}
		else
			PQclear(r);
	}
	if (rc == DDICT_OK)
		rc = dd_conn_expect_sync(c);
	if (rc != DDICT_OK || !dd_conn_ok(c))
	{
		rc = dd_conn_failed(c, h, rc != DDICT_OK ? rc : DDICT_ECONN, what, wres);
		PQclear(wres);
		return rc;
	}

	/* The delta (applied even when the write failed: it is a valid sync). */
	atomic_store(&h->last_check_us, dd_now_us());
	crc = dd_recv_check(h, c, &snap, &b, &refull);
	if (crc == DDICT_OK && dd_conn_ok(c) && !PQexitPipelineMode(c->pg))
	{
		if (snap)
			dd_snap_unref(snap);
		dd_build_free(&b);
		snap = NULL;
		refull = false;
		crc = dd_conn_failed(c, h, DDICT_ECONN, "ddict_changes after a write", NULL);
	}
	dd_mark(h, crc == DDICT_OK);	/* not OK: the cache may lack this write */
	if (snap)
	{
		dd_publish(h, snap, &b);
		dd_build_free(&b);
	}
	if (refull)
		h->refull_due = true;

	if (wres == NULL || PQntuples(wres) != 1 ||
		(PQresultStatus(wres) != PGRES_TUPLES_OK && PQresultStatus(wres) != PGRES_SINGLE_TUPLE))
	{
		rc = wres && PQresultStatus(wres) == PGRES_FATAL_ERROR ?
			dd_conn_failed(c, h, DDICT_ESERVER, fn, wres) :
			dd_fail(h, DDICT_ERR, "%s: unexpected reply (%s, %d rows)", fn,
					wres ? PQresStatus(PQresultStatus(wres)) : "no result",
					wres ? PQntuples(wres) : 0);
		PQclear(wres);
		return rc;
	}
	atomic_fetch_add_explicit(&h->writes, 1, memory_order_relaxed);
	*res = wres;
	return DDICT_OK;
}

static int
do_write(ddict *h, int which, const char *key, size_t klen, const void *val,
		 size_t vlen, bool has_val, PGresult **res)
{
	const char *fn = wname[which];
	const char *params[3];
	char	   *kcopy = NULL,
			   *vparam = NULL;
	int			rc;

	*res = NULL;
	if (h == NULL || key == NULL || (has_val && val == NULL && vlen != 0))
		return dd_seterr(DDICT_EINVAL, "%s: handle, key and value must not be NULL", fn);
	if (klen == DDICT_NTS)
		klen = strlen(key);
	if (has_val && vlen == DDICT_NTS)
		vlen = strlen(val);
	if (memchr(key, '\0', klen))
		return dd_seterr(DDICT_EINVAL, "%s: keys are text and cannot contain NUL bytes", fn);
	if (dd_in_callback(h->client))
		return dd_seterr(DDICT_EBUSY, "%s: " DD_IN_CALLBACK_MSG, fn);
	kcopy = malloc(klen + 1);
	if (kcopy == NULL)
		return dd_seterr(DDICT_ENOMEM, "out of memory");
	memcpy(kcopy, key, klen);
	kcopy[klen] = '\0';

	dd_lock(h);
	dd_client_lock(h->client);
	rc = dd_session_ensure(&h->client->conn, h, false);
	if (rc == DDICT_OK)
		rc = dd_ensure_meta(h, &h->client->conn);
	if (rc == DDICT_OK && has_val)
		rc = value_param(h, fn, val ? val : "", vlen, &vparam);
	if (rc == DDICT_OK)
	{
		params[0] = h->dict;
		params[1] = kcopy;
		params[2] = vparam;
		rc = write_locked(h, which, params, has_val ? 3 : 2, res);
		if (rc != DDICT_EBUSY)
			dd_conn_settle(&h->client->conn);
	}
	else if (rc == DDICT_ECONN || rc == DDICT_ETIMEDOUT)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "%s", ddict_errmsg());
		rc = dd_seterr(rc, "%s: %s", fn, msg);
	}
	dd_client_unlock(h->client);
	if (h->refull_due)
	{
		h->refull_due = false;
		(void) dd_sync_locked(h, true);
	}
	dd_unlock(h);
	free(kcopy);
	free(vparam);
	return rc;
}

DDICT_API int
ddict_set(ddict *d, const char *key, size_t keylen, const void *value, size_t len)
{
	PGresult   *r;
	int			rc = do_write(d, W_SET, key, keylen, value, len, true, &r);

	PQclear(r);
	return rc;
}

DDICT_API int
ddict_delete(ddict *d, const char *key, size_t keylen)
{
	PGresult   *r;
	int			rc = do_write(d, W_DELETE, key, keylen, NULL, 0, false, &r);

	if (rc == DDICT_OK)
		rc = PQgetvalue(r, 0, 0)[0] == 't' ? DDICT_OK : DDICT_NOTFOUND;
	PQclear(r);
	return rc;
}

DDICT_API int
ddict_pop(ddict *d, const char *key, size_t keylen, char **value, size_t *len)
{
	PGresult   *r;
	int			rc;

	if (value)
		*value = NULL;
	if (len)
		*len = 0;
	rc = do_write(d, W_POP, key, keylen, NULL, 0, false, &r);
	if (rc == DDICT_OK)
		rc = PQgetisnull(r, 0, 0) ? DDICT_NOTFOUND
			: result_value(d, PQgetvalue(r, 0, 0), value, len);
	PQclear(r);
	return rc;
}

DDICT_API int
ddict_setdefault(ddict *d, const char *key, size_t keylen, const void *def,
				 size_t deflen, char **value, size_t *len)
{
	PGresult   *r;
	int			rc;

	if (value)
		*value = NULL;
	if (len)
		*len = 0;
	rc = do_write(d, W_SETDEFAULT, key, keylen, def, deflen, true, &r);
	if (rc == DDICT_OK)
		rc = PQgetisnull(r, 0, 0) ? dd_seterr(DDICT_ERR, "ddict_setdefault returned NULL")
			: result_value(d, PQgetvalue(r, 0, 0), value, len);
	PQclear(r);
	return rc;
}
