/*
 * conn.c — the libpq transport of a client's connection.
 *
 * All waiting is done with io.c's dd_wait_fd() and a deadline, never inside
 * libpq: an autosync read that hits a dead network must come back after
 * timeout_ms, not after the kernel's TCP timeout.  Own connections are put
 * in non-blocking mode; a borrowed connection is never reconfigured (its
 * sends may block, its waits for results still honour the deadline).
 *
 * When an own connection breaks, it is closed and the next attempt may
 * happen at once; failed attempts back off (io.c).  Reads do not attempt
 * before that time; they serve the snapshot.
 *
 * This file knows no dicts: errors are recorded on the handle it is given
 * (or only for the calling thread when that is NULL).  What the session
 * needs on top — the extension's schema, statements — is session.c's.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int
dd_conn_init_own(dd_conn *c, const char *conninfo, unsigned timeout_ms,
				 unsigned connect_timeout_ms, unsigned backoff_min_ms, unsigned backoff_max_ms)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->cancel_lock, NULL);
	c->stop_fd = -1;
	c->timeout_ms = timeout_ms;
	c->connect_timeout_ms = connect_timeout_ms;
	dd_backoff_init(&c->backoff, backoff_min_ms, backoff_max_ms);
	c->conninfo = strdup(conninfo ? conninfo : "");
	return c->conninfo ? DDICT_OK : DDICT_ENOMEM;
}

void
dd_conn_init_borrowed(dd_conn *c, PGconn *pg, unsigned timeout_ms)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->cancel_lock, NULL);
	c->stop_fd = -1;
	c->pg = pg;
	c->borrowed = true;
	c->timeout_ms = timeout_ms;
	dd_backoff_init(&c->backoff, 1, 1);
}

void
dd_conn_free_sql(dd_conn *c)
{
	for (size_t i = 0; i < DD_SQL_N; i++)
	{
		free(c->sql[i]);
		c->sql[i] = NULL;
	}
	free(c->schema);
	c->schema = NULL;
	c->prepared = false;
}

/* Close an own connection (and forget its cancel key). */
void
dd_conn_drop(dd_conn *c)
{
	pthread_mutex_lock(&c->cancel_lock);
	if (c->cancel)
		PQfreeCancel(c->cancel);
	c->cancel = NULL;
	pthread_mutex_unlock(&c->cancel_lock);
	if (c->pg && !c->borrowed)
		PQfinish(c->pg);
	c->pg = NULL;
	c->prepared = false;
	c->session_rc = false;
}

/*
 * Any thread: cancel the statement running on an own connection (closing
 * a dict whose check another thread runs, e.g. waiting for a lock).
 */
void
dd_conn_cancel(dd_conn *c)
{
	char		buf[256];

	pthread_mutex_lock(&c->cancel_lock);
	if (c->cancel)
		(void) PQcancel(c->cancel, buf, sizeof(buf));
	pthread_mutex_unlock(&c->cancel_lock);
}

void
dd_conn_close(dd_conn *c)
{
	dd_conn_drop(c);
	pthread_mutex_destroy(&c->cancel_lock);
	dd_conn_free_sql(c);
	free(c->conninfo);
	c->conninfo = NULL;
	free(c->probe_buf);
	c->probe_buf = NULL;
	c->probe_cap = 0;
}

bool
dd_conn_ok(const dd_conn *c)
{
	return c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK;
}

int64_t
dd_conn_deadline(const dd_conn *c)
{
	return dd_deadline_ms(c->timeout_ms);
}

/* libpq messages end with a newline (sometimes two lines): keep one line. */
static void
one_line(char *dst, size_t size, const char *msg)
{
	size_t		n;

	snprintf(dst, size, "%s", msg && *msg ? msg : "(no message)");
	n = strlen(dst);
	while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
		dst[--n] = '\0';
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
}

/* The client's thread waits here too: closing the client ends its waits at
 * once (the connection is then dropped as broken). */
static int
wait_socket(const dd_conn *c, bool rd, bool wr, int64_t deadline)
{
	int			rc = dd_wait_fd(PQsocket(c->pg), (short) ((rd ? POLLIN : 0) | (wr ? POLLOUT : 0)),
								deadline, c->stop_fd);

	return rc == DD_STOPPED ? DDICT_ECONN : rc;
}

int
dd_conn_flush(dd_conn *c)
{
	int64_t		deadline = dd_conn_deadline(c);

	for (;;)
	{
		int			r = PQflush(c->pg),
					rc;

		if (r == 0)
			return DDICT_OK;
		if (r < 0)
			return DDICT_ECONN;
		/* The server may be sending while we push: read to avoid deadlock. */
		rc = wait_socket(c, true, true, deadline);
		if (rc != DDICT_OK)
			return rc;
		if (!PQconsumeInput(c->pg))
			return DDICT_ECONN;
	}
}

/*
 * timeout_ms bounds each wait for progress, not a whole query: a full reload
 * of a big dict over a slow link keeps going as long as rows keep arriving
 * (in single-row mode every row is a result), and a dead link is still
 * noticed within timeout_ms.
 */
PGresult *
dd_conn_next(dd_conn *c, int *rc)
{
	int64_t		deadline = dd_conn_deadline(c);

	*rc = DDICT_OK;
	while (PQisBusy(c->pg))
	{
		int			r = wait_socket(c, true, false, deadline);

		if (r != DDICT_OK)
		{
			*rc = r;
			return NULL;
		}
		if (!PQconsumeInput(c->pg))
			break;				/* PQgetResult reports it as a result */
	}
	return PQgetResult(c->pg);
}

void
dd_conn_attempt_failed(dd_conn *c)
{
	dd_backoff_failed(&c->backoff);
	atomic_store(&c->retry_at_us, c->backoff.next_us);
}

void
dd_conn_established(dd_conn *c)
{
	if (c->ever_connected)
		atomic_fetch_add_explicit(&c->reconnects, 1, memory_order_relaxed);
	c->ever_connected = true;
	dd_backoff_reset(&c->backoff);
	atomic_store(&c->retry_at_us, 0);
	atomic_store(&c->connected, true);
}

static void
cancel_borrowed(dd_conn *c)
{
	PGcancel   *cancel = PQgetCancel(c->pg);
	char		buf[256];

	if (cancel)
	{
		(void) PQcancel(cancel, buf, sizeof(buf));
		PQfreeCancel(cancel);
	}
}

int
dd_conn_failed(dd_conn *c, ddict *h, int rc, const char *what, const PGresult *res)
{
	char		msg[400];
	bool		broken = rc == DDICT_ECONN || rc == DDICT_ETIMEDOUT || !dd_conn_ok(c);

	if (!broken && res && PQresultStatus(res) == PGRES_FATAL_ERROR)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		one_line(msg, sizeof(msg), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		return dd_fail(h, DDICT_ESERVER, "%s: %s (SQLSTATE %s)", what, msg,
					   state ? state : "?????");
	}
	if (!broken)
		return dd_fail(h, rc < 0 ? rc : DDICT_ERR, "%s failed", what);

	if (c->closing && atomic_load(c->closing))
		snprintf(msg, sizeof(msg), "the client is being closed");
	else if (rc == DDICT_ETIMEDOUT)
		snprintf(msg, sizeof(msg), "no answer within %u ms", c->timeout_ms);
	else
		one_line(msg, sizeof(msg), c->pg ? PQerrorMessage(c->pg) : "not connected");
	if (c->borrowed)
	{
		/* Not ours to close: stop the query if it is still running. */
		if (c->pg && rc == DDICT_ETIMEDOUT)
			cancel_borrowed(c);
	}
	else
	{
		dd_conn_drop(c);
		/* An established connection broke: try again at the next chance. */
		dd_backoff_reset(&c->backoff);
		atomic_store(&c->retry_at_us, 0);
	}
	atomic_store(&c->connected, false);
	return dd_fail(h, rc == DDICT_ETIMEDOUT ? DDICT_ETIMEDOUT : DDICT_ECONN,
				   "%s: %s", what, msg);
}

int
dd_conn_exec(dd_conn *c, ddict *h, const char *sql, int nparams,
			 const char *const *params, PGresult **out, const char *what)
{
	PGresult   *r,
			   *keep = NULL;
	int			rc;

	*out = NULL;
	if (!(nparams < 0 ? PQsendQuery(c->pg, sql)
		  : PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0)))
		return dd_conn_failed(c, h, DDICT_ECONN, what, NULL);
	if ((rc = dd_conn_flush(c)) != DDICT_OK)
		return dd_conn_failed(c, h, rc, what, NULL);
	while ((r = dd_conn_next(c, &rc)) != NULL)
	{
		/* Keep the first error, else the last result. */
		if (keep == NULL || PQresultStatus(keep) != PGRES_FATAL_ERROR)
		{
			PQclear(keep);
			keep = r;
		}
		else
			PQclear(r);
	}
	if (rc == DDICT_OK && keep == NULL)
		rc = DDICT_ECONN;
	else if (rc == DDICT_OK && PQresultStatus(keep) == PGRES_FATAL_ERROR)
		rc = DDICT_ESERVER;
	if (rc != DDICT_OK)
	{
		rc = dd_conn_failed(c, h, rc, what, keep);
		PQclear(keep);
		return rc;
	}
	*out = keep;
	return DDICT_OK;
}

int
dd_conn_skip(dd_conn *c, PGresult **err, ExecStatusType want)
{
	PGresult   *r;
	int			rc;
	bool		seen = false;

	*err = NULL;
	while ((r = dd_conn_next(c, &rc)) != NULL)
	{
		seen = true;
		if (*err == NULL && PQresultStatus(r) != want)
			*err = r;
		else
			PQclear(r);
	}
	if (rc != DDICT_OK)
		return rc;
	return seen ? DDICT_OK : DDICT_ECONN;
}

int
dd_conn_expect_sync(dd_conn *c)
{
	int			rc;
	PGresult   *r = dd_conn_next(c, &rc);
	bool		ok = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;

	PQclear(r);
	if (rc != DDICT_OK)
		return rc;
	return ok ? DDICT_OK : DDICT_ECONN;
}

/* libpq's default prints notices to stderr; a library must not print. */
static void
quiet_notices(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

int
dd_conn_connect(dd_conn *c, ddict *h)
{
	const char *const kw[] = {"fallback_application_name", "dbname", NULL};
	const char *const vals[] = {"libddict", c->conninfo, NULL};
	int64_t		deadline = dd_deadline_ms(c->connect_timeout_ms);
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	char		msg[400];
	PGconn	   *pg;
	int			rc;

	/* dbname with expand_dbname: the whole conninfo string goes there. */
	pg = PQconnectStartParams(kw, vals, 1);
	if (pg == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	PQsetNoticeProcessor(pg, quiet_notices, NULL);
	c->pg = pg;
	while (st != PGRES_POLLING_OK)
	{
		if (st == PGRES_POLLING_FAILED || PQstatus(pg) == CONNECTION_BAD)
		{
			one_line(msg, sizeof(msg), PQerrorMessage(pg));
			rc = dd_fail(h, DDICT_ECONN, "could not connect to the server: %s", msg);
			goto fail;
		}
		rc = wait_socket(c, st == PGRES_POLLING_READING, st == PGRES_POLLING_WRITING, deadline);
		if (rc == DDICT_ETIMEDOUT)
		{
			rc = dd_fail(h, DDICT_ETIMEDOUT,
						 "could not connect to the server: timed out after %u ms",
						 c->connect_timeout_ms);
			goto fail;
		}
		st = PQconnectPoll(pg);
	}
	if (PQsetnonblocking(pg, 1) != 0)
	{
		rc = dd_fail(h, DDICT_ECONN, "could not make the connection non-blocking");
		goto fail;
	}
	c->prepared = false;
	pthread_mutex_lock(&c->cancel_lock);
	c->cancel = PQgetCancel(pg);
	pthread_mutex_unlock(&c->cancel_lock);
	return DDICT_OK;
fail:
	PQfinish(pg);
	c->pg = NULL;
	return rc;
}

/*
 * A borrowed connection goes back to the application idle: whatever a failed
 * operation of ours left behind (a query still running after a timeout and
 * its cancel, pipeline mode after an error) is drained, within one more
 * timeout.  Own connections need none of this: a failure closes them.
 */
void
dd_conn_settle(dd_conn *c)
{
	if (!dd_conn_ok(c))
		return;
	for (int i = 0; i < 10000; i++)
	{
		int			rc;
		PGresult   *r = dd_conn_next(c, &rc);

		if (rc != DDICT_OK || !dd_conn_ok(c))
			return;
		if (r)
		{
			PQclear(r);
			continue;
		}
		if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF || PQexitPipelineMode(c->pg))
		{
			dd_conn_end_txn(c);
			return;
		}
	}
}

/*
 * timeout_ms bounds each wait for data, as for results: a long COPY keeps
 * going as long as rows keep arriving.
 */
int
dd_conn_copy_data(dd_conn *c, char **buf)
{
	int64_t		deadline = dd_conn_deadline(c);

	*buf = NULL;
	for (;;)
	{
		int			n = PQgetCopyData(c->pg, buf, 1),
					rc;

		if (n > 0)
			return n;
		if (n == -1)
			return 0;
		if (n < -1)
			return DDICT_ECONN;
		rc = wait_socket(c, true, false, deadline);
		if (rc != DDICT_OK)
			return rc;
		if (!PQconsumeInput(c->pg))
			return DDICT_ECONN;
	}
}

void
dd_conn_end_txn(dd_conn *c)
{
	PGresult   *r;
	int			rc;

	if (!dd_conn_ok(c) || PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF ||
		PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		return;
	if (!PQsendQuery(c->pg, "ROLLBACK") || dd_conn_flush(c) != DDICT_OK)
		return;
	while ((r = dd_conn_next(c, &rc)) != NULL)
		PQclear(r);
}
