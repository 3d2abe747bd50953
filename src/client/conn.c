/*
 * conn.c — the handle's libpq connection.
 *
 * All waiting is done here, with poll() and a deadline, never inside libpq:
 * an autosync read that hits a dead network must come back after
 * timeout_ms, not after the kernel's TCP timeout.  Own connections are put
 * in non-blocking mode; a borrowed connection is never reconfigured (its
 * sends may block, its waits for results still honour the deadline).
 *
 * When an own connection breaks, it is closed and the next attempt may
 * happen at once (a restarted server is usually back quickly); each failed
 * attempt then doubles the delay, from backoff_min_ms up to backoff_max_ms,
 * with +-25% jitter so that many clients do not reconnect in lockstep.
 * Reads do not attempt before that time; they serve the snapshot.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int
dd_conn_init_own(dd_conn *c, const char *conninfo)
{
	memset(c, 0, sizeof(*c));
	c->conninfo = strdup(conninfo ? conninfo : "");
	return c->conninfo ? DDICT_OK : DDICT_ENOMEM;
}

void
dd_conn_init_borrowed(dd_conn *c, PGconn *pg)
{
	memset(c, 0, sizeof(*c));
	c->pg = pg;
	c->borrowed = true;
}

static void
free_sql(dd_conn *c)
{
	for (size_t i = 0; i < sizeof(c->sql) / sizeof(c->sql[0]); i++)
	{
		free(c->sql[i]);
		c->sql[i] = NULL;
	}
	free(c->schema);
	c->schema = NULL;
}

void
dd_conn_close(dd_conn *c)
{
	if (c->pg && !c->borrowed)
		PQfinish(c->pg);
	c->pg = NULL;
	free_sql(c);
	free(c->conninfo);
	c->conninfo = NULL;
}

bool
dd_conn_ok(const dd_conn *c)
{
	return c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK;
}

int64_t
dd_conn_deadline(const ddict *h)
{
	return h->opts.timeout_ms ? dd_now_us() + (int64_t) h->opts.timeout_ms * 1000 : INT64_MAX;
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

int
dd_wait_fd(int fd, short events, int64_t deadline, int stop_fd)
{
	struct pollfd pfd[2];

	if (fd < 0)
		return DDICT_ECONN;
	pfd[0].fd = fd;
	pfd[0].events = events;
	pfd[1].fd = stop_fd;
	pfd[1].events = POLLIN;
	for (;;)
	{
		int			timeout = -1,
					rc;

		if (deadline != INT64_MAX)
		{
			int64_t		left = deadline - dd_now_us();

			if (left <= 0)
				return DDICT_ETIMEDOUT;
			timeout = left / 1000 >= INT_MAX ? INT_MAX : (int) ((left + 999) / 1000);
		}
		pfd[0].revents = pfd[1].revents = 0;
		rc = poll(pfd, stop_fd >= 0 ? 2 : 1, timeout);
		if (rc > 0 && pfd[1].revents)
			return DD_STOPPED;
		if (rc > 0)
			return DDICT_OK;
		if (rc < 0 && errno != EINTR)
			return DDICT_ECONN;
	}
}

/*
 * The handle's thread (push mode) waits here too: ddict_close() ends its
 * waits at once (the connection is then dropped as broken).
 */
static int
wait_socket(const ddict *h, PGconn *pg, bool rd, bool wr, int64_t deadline)
{
	int			rc = dd_wait_fd(PQsocket(pg), (short) ((rd ? POLLIN : 0) | (wr ? POLLOUT : 0)),
								deadline, h->stop_fd);

	return rc == DD_STOPPED ? DDICT_ECONN : rc;
}

int
dd_conn_flush(ddict *h)
{
	PGconn	   *pg = h->conn.pg;
	int64_t		deadline = dd_conn_deadline(h);

	for (;;)
	{
		int			r = PQflush(pg),
					rc;

		if (r == 0)
			return DDICT_OK;
		if (r < 0)
			return DDICT_ECONN;
		/* The server may be sending while we push: read to avoid deadlock. */
		rc = wait_socket(h, pg, true, true, deadline);
		if (rc != DDICT_OK)
			return rc;
		if (!PQconsumeInput(pg))
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
dd_conn_next(ddict *h, int *rc)
{
	PGconn	   *pg = h->conn.pg;
	int64_t		deadline = dd_conn_deadline(h);

	*rc = DDICT_OK;
	while (PQisBusy(pg))
	{
		int			r = wait_socket(h, pg, true, false, deadline);

		if (r != DDICT_OK)
		{
			*rc = r;
			return NULL;
		}
		if (!PQconsumeInput(pg))
		{
			/* PQgetResult now reports the broken connection as a result. */
			break;
		}
	}
	return PQgetResult(pg);
}

static void
schedule_retry(ddict *h)
{
	dd_conn    *c = &h->conn;
	int64_t		now = dd_now_us();
	uint64_t	jitter;
	int64_t		delay;

	if (c->backoff_ms == 0)
		c->backoff_ms = h->opts.backoff_min_ms ? h->opts.backoff_min_ms : 1;
	else if (c->backoff_ms < h->opts.backoff_max_ms)
		c->backoff_ms = c->backoff_ms * 2 > h->opts.backoff_max_ms ?
			h->opts.backoff_max_ms : c->backoff_ms * 2;
	jitter = dd_hash(h->seed, &now, sizeof(now)) % 501;	/* 0..500 per mille */
	delay = (int64_t) c->backoff_ms * (750 + (int64_t) jitter) / 1000 * 1000;
	c->next_attempt_us = now + delay;
	atomic_store(&h->retry_at_us, c->next_attempt_us);
}

int
dd_conn_failed(ddict *h, int rc, const char *what, const PGresult *res)
{
	dd_conn    *c = &h->conn;
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

	if (atomic_load(&h->closing))
		snprintf(msg, sizeof(msg), "the handle is being closed");
	else if (rc == DDICT_ETIMEDOUT)
		snprintf(msg, sizeof(msg), "no answer within %u ms", h->opts.timeout_ms);
	else
		one_line(msg, sizeof(msg), c->pg ? PQerrorMessage(c->pg) : "not connected");
	if (c->borrowed)
	{
		/* Not ours to close: stop the query if it is still running. */
		if (c->pg && rc == DDICT_ETIMEDOUT)
		{
			PGcancel   *cancel = PQgetCancel(c->pg);
			char		buf[256];

			if (cancel)
			{
				(void) PQcancel(cancel, buf, sizeof(buf));
				PQfreeCancel(cancel);
			}
		}
	}
	else
	{
		if (c->pg)
			PQfinish(c->pg);
		c->pg = NULL;
		/* An established connection broke: try again at the next chance. */
		c->backoff_ms = 0;
		c->next_attempt_us = 0;
		atomic_store(&h->retry_at_us, 0);
	}
	atomic_store(&h->connected, false);
	return dd_fail(h, rc == DDICT_ETIMEDOUT ? DDICT_ETIMEDOUT : DDICT_ECONN,
				   "%s: %s", what, msg);
}

/* Run one statement (simple protocol when nparams < 0), keep its last result. */
static int
exec_one(ddict *h, const char *sql, int nparams, const char *const *params,
		 PGresult **out, const char *what)
{
	PGconn	   *pg = h->conn.pg;
	PGresult   *r,
			   *keep = NULL;
	int			rc;

	*out = NULL;
	if (!(nparams < 0 ? PQsendQuery(pg, sql)
		  : PQsendQueryParams(pg, sql, nparams, NULL, params, NULL, NULL, 0)))
		return dd_conn_failed(h, DDICT_ECONN, what, NULL);
	if ((rc = dd_conn_flush(h)) != DDICT_OK)
		return dd_conn_failed(h, rc, what, NULL);
	while ((r = dd_conn_next(h, &rc)) != NULL)
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
		rc = dd_conn_failed(h, rc, what, keep);
		PQclear(keep);
		return rc;
	}
	*out = keep;
	return DDICT_OK;
}

static char *
dd_asprintf(const char *fmt, ...) DD_PRINTF(1, 2);

static char *
dd_asprintf(const char *fmt, ...)
{
	va_list		ap;
	char	   *s;
	int			n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

/*
 * The extension's schema, and whether its ddict_changes() has the 1.1 shape
 * (since_dict argument, the relation's OID in the header): a server still at
 * 1.0 is served the 1.0 call, and the cache then follows the name only.
 */
#define DD_FIND_EXTENSION \
	"SELECT pg_catalog.quote_ident(n.nspname)," \
	" pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)" \
	"  '.ddict_changes(pg_catalog.regclass,pg_catalog.int8,pg_catalog.int8,pg_catalog.int8,pg_catalog.oid)')" \
	"  IS NOT NULL" \
	" FROM pg_catalog.pg_extension e" \
	" JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace" \
	" WHERE e.extname = 'ddict'"

/*
 * Per connection: own sessions run READ COMMITTED (ddict_changes() needs its
 * rows from a snapshot taken after the version was read); find the
 * extension's schema so that statements do not depend on search_path; learn
 * whether values are bytea (writes then send hex).
 */
static int
setup_session(ddict *h)
{
	dd_conn    *c = &h->conn;
	PGresult   *r;
	const char *params[1] = {h->dict};
	const char *s;
	char	   *sql;
	int			rc;

	rc = exec_one(h, c->borrowed ? DD_FIND_EXTENSION :
				  "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED;"
				  DD_FIND_EXTENSION,
				  -1, NULL, &r, "looking up the ddict extension");
	if (rc != DDICT_OK)
		return rc;
	if (PQntuples(r) != 1)
	{
		PQclear(r);
		return dd_fail(h, DDICT_ESERVER,
					   "extension \"ddict\" is not installed in database \"%s\"",
					   PQdb(c->pg));
	}
	free_sql(c);
	c->schema = strdup(PQgetvalue(r, 0, 0));
	c->changes_rel = PQgetvalue(r, 0, 1)[0] == 't';
	PQclear(r);
	if (c->schema == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	s = c->schema;

	/* Also the dict's name as the server's Redis publisher spells it
	 * ("database:schema.table", unquoted). */
	sql = dd_asprintf("SELECT t.oid OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype"
					  " OR t.typbasetype OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype,"
					  " pg_catalog.current_database(), n.nspname, c.relname"
					  " FROM %s.ddict_dicts d JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) d.value_type"
					  " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) d.dict::pg_catalog.oid"
					  " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
					  " WHERE d.dict OPERATOR(pg_catalog.=) $1::pg_catalog.regclass", s);
	if (sql == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	rc = exec_one(h, sql, 1, params, &r, "looking up the dict");
	free(sql);
	if (rc != DDICT_OK)
		return rc;
	if (PQntuples(r) != 1)
	{
		PQclear(r);
		return dd_fail(h, DDICT_ESERVER,
					   "table \"%s\" is not a ddict dict (attach it with ddict_attach())",
					   h->dict);
	}
	c->bytea = PQgetvalue(r, 0, 0)[0] == 't';
	if (h->redis.enabled)
		dd_redis_set_name(h, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
	PQclear(r);

	/* 1.1: $5 is the relation the cache came from; the header names the
	 * relation the dict's name means now (sync.c) */
	c->sql[DD_SQL_CHANGES] = c->changes_rel ?
		dd_asprintf("SELECT kind, key, value, version, epoch, cursor, dict FROM %s.ddict_changes("
					"$1::pg_catalog.regclass, $2::pg_catalog.int8, $3::pg_catalog.int8,"
					" $4::pg_catalog.int8, $5::pg_catalog.oid)", s) :
		dd_asprintf("SELECT kind, key, value, version, epoch, cursor FROM %s.ddict_changes("
					"$1::pg_catalog.regclass, $2::pg_catalog.int8, $3::pg_catalog.int8,"
					" $4::pg_catalog.int8)", s);
	c->sql[DD_SQL_SET] = dd_asprintf(
		"SELECT %s.ddict_set($1::pg_catalog.regclass, $2::pg_catalog.text, $3::pg_catalog.text)", s);
	c->sql[DD_SQL_DELETE] = dd_asprintf(
		"SELECT %s.ddict_delete($1::pg_catalog.regclass, $2::pg_catalog.text)", s);
	c->sql[DD_SQL_POP] = dd_asprintf(
		"SELECT %s.ddict_pop($1::pg_catalog.regclass, $2::pg_catalog.text, NULL::pg_catalog.text)", s);
	c->sql[DD_SQL_SETDEFAULT] = dd_asprintf(
		"SELECT %s.ddict_setdefault($1::pg_catalog.regclass, $2::pg_catalog.text, $3::pg_catalog.text)", s);
	for (size_t i = 0; i < sizeof(c->sql) / sizeof(c->sql[0]); i++)
		if (c->sql[i] == NULL)
			return dd_fail(h, DDICT_ENOMEM, "out of memory");

	/*
	 * The check runs on every autosync read: prepare it once per own
	 * connection, saving the parse and plan of each call.  Not on a borrowed
	 * connection, whose session (and DISCARD ALL) belongs to the application.
	 */
	c->prepared = false;
	if (!c->borrowed)
	{
		int			qrc;

		if (!PQsendPrepare(c->pg, DD_PREPARED_CHANGES, c->sql[DD_SQL_CHANGES],
						   dd_changes_nparams(c), NULL))
			return dd_conn_failed(h, DDICT_ECONN, "preparing ddict_changes", NULL);
		if ((rc = dd_conn_flush(h)) != DDICT_OK)
			return dd_conn_failed(h, rc, "preparing ddict_changes", NULL);
		rc = DDICT_OK;
		while ((r = dd_conn_next(h, &qrc)) != NULL)
		{
			if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == DDICT_OK)
				rc = dd_conn_failed(h, DDICT_ESERVER, "preparing ddict_changes", r);
			PQclear(r);
		}
		if (qrc != DDICT_OK)
			return dd_conn_failed(h, qrc, "preparing ddict_changes", NULL);
		if (rc != DDICT_OK)
			return rc;
		c->prepared = true;
	}
	return DDICT_OK;
}

/* libpq's default prints notices to stderr; a library must not print. */
static void
quiet_notices(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

static int
connect_own(ddict *h)
{
	dd_conn    *c = &h->conn;
	const char *const kw[] = {"fallback_application_name", "dbname", NULL};
	const char *const vals[] = {"libddict", c->conninfo, NULL};
	int64_t		deadline = h->opts.connect_timeout_ms ?
		dd_now_us() + (int64_t) h->opts.connect_timeout_ms * 1000 : INT64_MAX;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	char		msg[400];
	PGconn	   *pg;
	int			rc;

	/* dbname with expand_dbname: the whole conninfo string goes there. */
	pg = PQconnectStartParams(kw, vals, 1);
	if (pg == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	PQsetNoticeProcessor(pg, quiet_notices, NULL);
	while (st != PGRES_POLLING_OK)
	{
		if (st == PGRES_POLLING_FAILED || PQstatus(pg) == CONNECTION_BAD)
		{
			one_line(msg, sizeof(msg), PQerrorMessage(pg));
			PQfinish(pg);
			return dd_fail(h, DDICT_ECONN, "could not connect to the server: %s", msg);
		}
		rc = wait_socket(h, pg, st == PGRES_POLLING_READING, st == PGRES_POLLING_WRITING, deadline);
		if (rc == DDICT_ETIMEDOUT)
		{
			PQfinish(pg);
			return dd_fail(h, DDICT_ETIMEDOUT,
						   "could not connect to the server: timed out after %u ms",
						   h->opts.connect_timeout_ms);
		}
		st = PQconnectPoll(pg);
	}
	if (PQsetnonblocking(pg, 1) != 0)
	{
		PQfinish(pg);
		return dd_fail(h, DDICT_ECONN, "could not make the connection non-blocking");
	}
	c->pg = pg;
	rc = setup_session(h);
	if (rc != DDICT_OK)
	{
		if (c->pg)
			PQfinish(c->pg);
		c->pg = NULL;
		return rc;
	}
	if (c->ever_connected)
		atomic_fetch_add_explicit(&h->reconnects, 1, memory_order_relaxed);
	c->ever_connected = true;
	c->backoff_ms = 0;
	c->next_attempt_us = 0;
	atomic_store(&h->retry_at_us, 0);
	atomic_store(&h->connected, true);
	return DDICT_OK;
}

int
dd_conn_ensure(ddict *h, bool force)
{
	dd_conn    *c = &h->conn;
	int			rc;

	if (c->borrowed)
	{
		if (!dd_conn_ok(c))
		{
			atomic_store(&h->connected, false);
			return dd_fail(h, DDICT_ECONN,
						   "the application's connection is broken (reset it with PQreset())");
		}
		atomic_store(&h->connected, true);
		if (PQtransactionStatus(c->pg) != PQTRANS_IDLE ||
			PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF || PQisBusy(c->pg))
			return dd_fail(h, DDICT_EBUSY,
						   "the application's connection is not idle (in a transaction, a "
						   "pipeline or a query); ddict uses it only between transactions");
		return c->schema ? DDICT_OK : setup_session(h);
	}
	if (dd_conn_ok(c))
		return DDICT_OK;
	if (c->pg)
	{
		PQfinish(c->pg);
		c->pg = NULL;
		atomic_store(&h->connected, false);
	}
	if (!force && dd_now_us() < c->next_attempt_us)
		return dd_fail(h, DDICT_ECONN, "not connected to the server (next attempt in %lld ms)",
					   (long long) (c->next_attempt_us - dd_now_us()) / 1000);
	rc = connect_own(h);
	if (rc != DDICT_OK)
		schedule_retry(h);
	return rc;
}

/*
 * A borrowed connection goes back to the application idle: whatever a failed
 * operation of ours left behind (a query still running after a timeout and
 * its cancel, pipeline mode after an error) is drained, within one more
 * timeout.  Own connections need none of this: a failure closes them.
 */
void
dd_conn_settle(ddict *h)
{
	dd_conn    *c = &h->conn;

	if (!c->borrowed || !dd_conn_ok(c))
		return;
	for (int i = 0; i < 10000; i++)
	{
		int			rc;
		PGresult   *r = dd_conn_next(h, &rc);

		if (rc != DDICT_OK || !dd_conn_ok(c))
			return;
		if (r)
		{
			PQclear(r);
			continue;
		}
		if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF || PQexitPipelineMode(c->pg))
			return;
	}
}
