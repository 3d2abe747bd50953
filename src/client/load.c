/*
 * load.c — a full load by COPY (FORMAT binary), for servers at extension
 * 1.2 (session.c sets copy_full): the first load of a dict, and every
 * reload that a delta cannot do (ddict_changes() then answers 'f' with its
 * header alone, and sync.c comes here).
 *
 * One transaction, three round trips, nothing left on the session (a
 * transaction pooler may hand the server connection to anybody after the
 * COMMIT):
 *
 *   BEGIN ISOLATION LEVEL READ COMMITTED; SELECT ... ddict_full_begin($1)
 *       -- the header (version, epoch, cursor, relation) and the query
 *   COPY (<query>) TO STDOUT (FORMAT binary)
 *       -- the rows, from a snapshot taken after the header was read
 *   SELECT ddict_full_end($relation, $token); COMMIT
 *       -- the query meant the header's relation; "until"
 *
 * The server builds the query from the relation it resolved and locked
 * (src/fullload.c explains why the rows are exactly that relation's, also
 * under a concurrent schema rename, and why ddict_full_end() may answer
 * 40001: we then load again, a few times at most).  COPY (SELECT ...) runs
 * with the caller's privileges and row-level security, as ddict_changes()'s
 * rows do.  Rows go from libpq's CopyData buffers through the parser
 * (copy.c) straight into the new table: no PGresult per row (single-row
 * mode cost about half of the load's time), and a big dict is never held
 * twice.
 *
 * Errors: a server error ends the transaction (ROLLBACK: a failed statement
 * skips the COMMIT), a broken connection is dropped as for any check, and
 * malformed COPY data is an error of the load (the rest of the COPY is read
 * and discarded so that the connection stays usable); the snapshot being
 * served is never touched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LOAD_ATTEMPTS 3

typedef struct header
{
	int64_t		version,
				epoch,
				cursor;
	uint32_t	relid;
	char	   *query;
	char		token[24];
} header;

/* One query's results in a pipeline: the first error, else the first. */
static int
one_result(dd_conn *c, PGresult **out)
{
	PGresult   *r;
	int			rc;

	*out = NULL;
	while ((r = dd_conn_next(c, &rc)) != NULL)
	{
		if (*out == NULL ||
			(PQresultStatus(*out) != PGRES_FATAL_ERROR && PQresultStatus(r) == PGRES_FATAL_ERROR))
		{
			PQclear(*out);
			*out = r;
		}
		else
			PQclear(r);
	}
	return rc;
}

static bool
parse_int8(const PGresult *r, int col, int64_t *v)
{
	char	   *end;
	long long	x;

	if (PQgetisnull(r, 0, col))
		return false;
	errno = 0;
	x = strtoll(PQgetvalue(r, 0, col), &end, 10);
	if (errno != 0 || *end != '\0' || end == PQgetvalue(r, 0, col))
		return false;
	*v = x;
	return true;
}

/*
 * Statements q1 and q2 (q2 may be NULL) and a Sync in pipeline mode; their
 * results in *r1 and *r2.  DDICT_OK, or the failure already reported (the
 * connection is then broken and both results cleared).
 */
static int
pipeline2(ddict *h, dd_conn *c, const char *what,
		  const char *q1, int n1, const char *const *p1, const Oid *t1,
		  const char *q2, int n2, const char *const *p2,
		  PGresult **r1, PGresult **r2)
{
	int			rc;

	*r1 = *r2 = NULL;
	if (!PQenterPipelineMode(c->pg))
		return dd_fail(h, DDICT_EBUSY, "%s: could not enter pipeline mode", what);
	if (!PQsendQueryParams(c->pg, q1, n1, t1, p1, NULL, NULL, 0) ||
		(q2 && !PQsendQueryParams(c->pg, q2, n2, NULL, p2, NULL, NULL, 0)) ||
		!PQpipelineSync(c->pg))
		return dd_conn_failed(c, h, DDICT_ECONN, what, NULL);
	rc = dd_conn_flush(c);
	if (rc == DDICT_OK)
		rc = one_result(c, r1);
	if (rc == DDICT_OK && q2)
		rc = one_result(c, r2);
	if (rc == DDICT_OK)
		rc = dd_conn_expect_sync(c);
	if (rc == DDICT_OK && !PQexitPipelineMode(c->pg))
		rc = DDICT_ECONN;
	if (rc != DDICT_OK || !dd_conn_ok(c))
	{
		PQclear(*r1);
		PQclear(*r2);
		*r1 = *r2 = NULL;
		return dd_conn_failed(c, h, rc != DDICT_OK ? rc : DDICT_ECONN, what, NULL);
	}
	return DDICT_OK;
}

/*
 * Send "first" (and "second" when given) and a Sync in pipeline mode; read
 * both results.  *res gets the first's (or the first error); the status is
 * DDICT_OK, or the error already reported (and the transaction ended).
 */
static int
segment(ddict *h, dd_conn *c, const char *what, const char *first, int n1,
		const char *const *p1, const Oid *t1, const char *second, PGresult **res,
		char sqlstate[6])
{
	PGresult   *r1 = NULL,
			   *r2 = NULL;
	int			rc;

	*res = NULL;
	sqlstate[0] = '\0';
	if ((rc = pipeline2(h, c, what, first, n1, p1, t1, second, 0, NULL, &r1, &r2)) != DDICT_OK)
		return rc;
	/* an error in either: report the first error */
	if (r1 == NULL || PQresultStatus(r1) == PGRES_FATAL_ERROR ||
		(second && (r2 == NULL || PQresultStatus(r2) != PGRES_COMMAND_OK)))
	{
		const PGresult *err = r1 && PQresultStatus(r1) == PGRES_FATAL_ERROR ? r1 : r2;
		const char *st = err ? PQresultErrorField(err, PG_DIAG_SQLSTATE) : NULL;

		if (st)
			snprintf(sqlstate, 6, "%s", st);
		rc = dd_conn_failed(c, h, err ? DDICT_ESERVER : DDICT_ERR, what,
							err && PQresultStatus(err) == PGRES_FATAL_ERROR ? err : NULL);
		PQclear(r1);
		PQclear(r2);
		dd_conn_end_txn(c);
		return rc;
	}
	PQclear(r2);
	*res = r1;
	return DDICT_OK;
}

/* BEGIN, then ddict_full_begin(): the header. */
static int
begin(ddict *h, dd_conn *c, header *hd)
{
	const char *params[1] = {h->dict};
	PGresult   *r1 = NULL,
			   *r2 = NULL;
	int			rc;

	if ((rc = pipeline2(h, c, "ddict_full_begin", "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL,
						NULL, c->sql[DD_SQL_FULL_BEGIN], 1, params, &r1, &r2)) != DDICT_OK)
		return rc;
	if (r1 == NULL || PQresultStatus(r1) != PGRES_COMMAND_OK || r2 == NULL ||
		PQresultStatus(r2) != PGRES_TUPLES_OK)
	{
		const PGresult *err = r1 && PQresultStatus(r1) == PGRES_FATAL_ERROR ? r1 :
			r2 && PQresultStatus(r2) == PGRES_FATAL_ERROR ? r2 : NULL;

		rc = err ? dd_conn_failed(c, h, DDICT_ESERVER, "ddict_full_begin", err) :
			dd_fail(h, DDICT_ERR, "unexpected reply from ddict_full_begin()");
		PQclear(r1);
		PQclear(r2);
		dd_conn_end_txn(c);
		return rc;
	}
	PQclear(r1);
	memset(hd, 0, sizeof(*hd));
	if (PQntuples(r2) != 1 || PQnfields(r2) != 6 || !parse_int8(r2, 0, &hd->version) ||
		!parse_int8(r2, 1, &hd->epoch) || !parse_int8(r2, 2, &hd->cursor) ||
		PQgetisnull(r2, 0, 3) || PQgetisnull(r2, 0, 4) || PQgetisnull(r2, 0, 5) ||
		PQgetlength(r2, 0, 5) >= (int) sizeof(hd->token))
	{
		PQclear(r2);
		dd_conn_end_txn(c);
		return dd_fail(h, DDICT_ERR, "unexpected reply from ddict_full_begin(): a malformed header");
	}
	hd->relid = (uint32_t) strtoul(PQgetvalue(r2, 0, 3), NULL, 10);
	snprintf(hd->token, sizeof(hd->token), "%s", PQgetvalue(r2, 0, 5));
	hd->query = malloc(strlen(PQgetvalue(r2, 0, 4)) + 64);
	if (hd->query)
		sprintf(hd->query, "COPY (%s) TO STDOUT (FORMAT binary)", PQgetvalue(r2, 0, 4));
	PQclear(r2);
	if (hd->query == NULL)
	{
		dd_conn_end_txn(c);
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	}
	return DDICT_OK;
}

/* Rows of one CopyData buffer into b; a parse error is kept in *prc. */
static void
take(dd_copy *p, dd_build *b, const char *buf, int n, int *prc)
{
	dd_copy_row row;
	int			rc;

	if (*prc != DDICT_OK)
		return;					/* reading on to the COPY's end */
	rc = dd_copy_feed(p, buf, (size_t) n);
	while (rc == DDICT_OK)
	{
		rc = dd_copy_next(p, &row);
		if (rc == DD_COPY_ROW)
			rc = dd_build_row(b, row.key, row.klen, row.val, row.vlen);
		else if (rc == DD_COPY_MORE || rc == DD_COPY_END)
			return;
	}
	*prc = rc;
}

/*
 * The COPY: its rows into b (begun).  DDICT_OK; or an error already
 * reported, the transaction ended.
 */
static int
copy_rows(ddict *h, dd_conn *c, const header *hd, dd_build *b, uint64_t *rows)
{
	dd_copy		p;
	PGresult   *r,
			   *err = NULL;
	int			rc,
				prc = DDICT_OK,
				n;
	bool		copying = false;
	char	   *buf;

	if (!PQsendQuery(c->pg, hd->query))
		return dd_conn_failed(c, h, DDICT_ECONN, "COPY", NULL);
	if ((rc = dd_conn_flush(c)) != DDICT_OK)
		return dd_conn_failed(c, h, rc, "COPY", NULL);
	r = dd_conn_next(c, &rc);
	if (r && PQresultStatus(r) == PGRES_COPY_OUT)
		copying = true;
	else if (r && PQresultStatus(r) == PGRES_FATAL_ERROR)
		err = r;
	if (copying || err == NULL)
		PQclear(r);

	dd_copy_init(&p);
	while (copying && (n = dd_conn_copy_data(c, &buf)) != 0)
	{
		if (n < 0)
		{
			rc = n;
			break;
		}
		take(&p, b, buf, n, &prc);
		PQfreemem(buf);
	}
	if (prc == DDICT_OK && copying && rc == DDICT_OK)
		prc = dd_copy_finish(&p);
	*rows = p.rows;
	/* the COPY's own result (an error at its end), then the end of it */
	while (rc == DDICT_OK && (r = dd_conn_next(c, &rc)) != NULL)
	{
		if (err == NULL && PQresultStatus(r) == PGRES_FATAL_ERROR)
			err = r;
		else
			PQclear(r);
	}
	if (rc != DDICT_OK || !dd_conn_ok(c))
	{
		PQclear(err);
		dd_copy_free(&p);
		return dd_conn_failed(c, h, rc != DDICT_OK ? rc : DDICT_ECONN, "COPY", NULL);
	}
	if (err || !copying || prc != DDICT_OK)
	{
		rc = err ? dd_conn_failed(c, h, DDICT_ESERVER, "COPY", err) :
			!copying ? dd_fail(h, DDICT_ERR, "COPY: the server did not start copying") :
			prc == DDICT_ENOMEM ? dd_fail(h, DDICT_ENOMEM, "out of memory while loading the dict") :
			prc == DDICT_EINVAL ? dd_fail(h, DDICT_ERR, "a key or value of the dict is larger than 4 GB") :
			dd_fail(h, DDICT_ERR, "%s", p.err[0] ? p.err : "COPY: malformed data");
		PQclear(err);
		dd_copy_free(&p);
		dd_conn_end_txn(c);
		return rc;
	}
	dd_copy_free(&p);
	return DDICT_OK;
}

/* ddict_full_end() and COMMIT; *until (INT64_MAX: unknown, a standby). */
static int
end(ddict *h, dd_conn *c, const header *hd, int64_t *until, bool *again)
{
	char		rel[16];
	const char *params[2] = {rel, hd->token};
	PGresult   *r;
	int			rc;
	char		state[6];

	*again = false;
	snprintf(rel, sizeof(rel), "%lu", (unsigned long) hd->relid);
	rc = segment(h, c, "ddict_full_end", c->sql[DD_SQL_FULL_END], 2, params, NULL, "COMMIT", &r,
				 state);
	if (rc != DDICT_OK)
	{
		/* the schema was renamed during the load: load again */
		*again = rc == DDICT_ESERVER && strcmp(state, "40001") == 0;
		return rc;
	}
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) != 1)
	{
		PQclear(r);
		return dd_fail(h, DDICT_ERR, "unexpected reply from ddict_full_end()");
	}
	if (PQgetisnull(r, 0, 0))
		*until = INT64_MAX;
	else if (!parse_int8(r, 0, until))
	{
		PQclear(r);
		return dd_fail(h, DDICT_ERR, "unexpected reply from ddict_full_end()");
	}
	PQclear(r);
	return DDICT_OK;
}

static int
load_once(ddict *h, dd_conn *c, ddict_snapshot **out, dd_build *b, bool *again)
{
	header		hd;
	int64_t		until = INT64_MAX;
	uint64_t	rows = 0;
	int			rc;

	*again = false;
	rc = begin(h, c, &hd);
	if (rc != DDICT_OK)
		return rc;
	rc = dd_build_begin(b, atomic_load(&h->current), true, h->seed);
	if (rc != DDICT_OK)
	{
		free(hd.query);
		dd_conn_end_txn(c);
		return dd_fail(h, rc, "out of memory while loading the dict");
	}
	rc = copy_rows(h, c, &hd, b, &rows);
	free(hd.query);
	atomic_fetch_add_explicit(&h->rows, rows, memory_order_relaxed);
	if (rc == DDICT_OK)
		rc = end(h, c, &hd, &until, again);
	if (rc == DDICT_OK)
		rc = dd_build_finish(b, hd.version, hd.epoch, hd.cursor, out) == DDICT_OK ? DDICT_OK :
			dd_fail(h, DDICT_ENOMEM, "out of memory while loading the dict");
	if (rc != DDICT_OK)
	{
		dd_build_free(b);
		return rc;
	}
	(*out)->relid = hd.relid;	/* not yet published: ours to set */
	(*out)->floor = until;
	atomic_fetch_add_explicit(&h->checks, 1, memory_order_relaxed);
	return DDICT_OK;
}

int
dd_load_full(ddict *h, dd_conn *c, ddict_snapshot **out, dd_build *b)
{
	int			rc = DDICT_ERR;
	bool		again = true;

	*out = NULL;
	memset(b, 0, sizeof(*b));
	for (int attempt = 0; attempt < LOAD_ATTEMPTS && again; attempt++)
	{
		memset(b, 0, sizeof(*b));
		rc = load_once(h, c, out, b, &again);
	}
	return rc;
}
