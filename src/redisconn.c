/*
 * redisconn.c — the server's Redis connection code, shared by the version
 * publisher and the change streamers, so that both read ddict.redis_url the
 * same way and wait on Redis the same way.
 *
 * hiredis's blocking calls bound each read() by the socket timeout only: a
 * server that drips its reply a byte at a time, just under the timeout, kept
 * a worker in recv() for ever, deaf to SIGTERM (a fast shutdown timed out) and
 * to a reload of ddict.redis_url.  So the context is non-blocking, and every
 * wait is a WaitLatchOrSocket() bounded by the exchange's deadline
 * (ddict.redis_timeout for the whole reply) and ended by the worker's latch
 * when a shutdown or a reload is pending.
 */
#include "postgres.h"

#include <sys/socket.h>

#include "ddict.h"
#include "redisconn.h"
#include "common/redis_url.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

TimestampTz
ddict_redis_deadline(void)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ddict_redis_timeout_ms);
}

/* Record why the exchange failed (hiredis's errstr is what callers report). */
static int
set_error(redisContext *c, int type, const char *why)
{
	c->err = type;
	strlcpy(c->errstr, why, sizeof(c->errstr));
	return REDIS_ERR;
}

/*
 * Wait for events on c's socket until deadline.  Returns the events that
 * happened, or 0 after recording the timeout or the interruption in c.
 * A latch set for another reason (a commit waking the worker) is set again
 * once the exchange is over, so that the worker's own loop still sees it.
 */
static int
wait_socket(redisContext *c, int events, TimestampTz deadline, bool *relatch)
{
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		int			rv;

		if (ShutdownRequestPending || ConfigReloadPending)
		{
			set_error(c, REDIS_ERR_OTHER, "interrupted (shutdown or reload)");
			return 0;
		}
		if (ms <= 0)
		{
			char		why[64];

			snprintf(why, sizeof(why), "timeout (no complete reply within %d ms)",
					 ddict_redis_timeout_ms);
			set_error(c, REDIS_ERR_IO, why);
			return 0;
		}
		rv = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
							   c->fd, ms, PG_WAIT_EXTENSION);
		if (rv & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			*relatch = true;
		}
		rv &= events;
		if (rv != 0)
			return rv;
	}
}

/* The exchange wait_socket() bounds is over: give back a latch it took. */
static void
relatch_if(bool relatch)
{
	if (relatch)
		SetLatch(MyLatch);
}

redisContext *
ddict_redis_connect(const RedisTarget *t, char *err)
{
	TimestampTz deadline = ddict_redis_deadline();
	redisContext *c;
	bool		relatch = false;
	int			soerr = 0;
	socklen_t	len = sizeof(soerr);

	c = t->path ? redisConnectUnixNonBlock(t->path)
		: redisConnectNonBlock(t->host, t->port);
	if (c == NULL || c->err)
	{
		snprintf(err, DDICT_REDIS_ERRLEN, "connect: %s", c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	if (wait_socket(c, WL_SOCKET_WRITEABLE, deadline, &relatch) == 0 ||
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
	{
		snprintf(err, DDICT_REDIS_ERRLEN, "connect: %s",
				 c->err ? c->errstr : strerror(soerr ? soerr : errno));
		redisFree(c);
		c = NULL;
	}
	relatch_if(relatch);
	return c;
}

int
ddict_redis_get_reply(redisContext *c, redisReply **reply, TimestampTz deadline)
{
	void	   *r = NULL;
	int			done = 0;
	bool		relatch = false;
	int			rc = REDIS_OK;

	*reply = NULL;
	if (c->err)
		return REDIS_ERR;
	for (;;)
	{
		int			ev;

		if (!done && redisBufferWrite(c, &done) != REDIS_OK)
		{
			rc = REDIS_ERR;
			break;
		}
		if (redisGetReplyFromReader(c, &r) != REDIS_OK)
		{
			rc = REDIS_ERR;
			break;
		}
		if (r != NULL)
			break;
		ev = wait_socket(c, WL_SOCKET_READABLE | (done ? 0 : WL_SOCKET_WRITEABLE),
						 deadline, &relatch);
		if (ev == 0)
		{
			rc = REDIS_ERR;
			break;
		}
		if ((ev & WL_SOCKET_READABLE) && redisBufferRead(c) != REDIS_OK)
		{
			rc = REDIS_ERR;
			break;
		}
	}
	relatch_if(relatch);
	*reply = r;
	return rc;
}

redisReply *
ddict_redis_command(redisContext *c, const char *fmt,...)
{
	va_list		ap;
	redisReply *r;
	int			rc;

	va_start(ap, fmt);
	rc = redisvAppendCommand(c, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK)
		return NULL;
	(void) ddict_redis_get_reply(c, &r, ddict_redis_deadline());
	return r;
}

/*
 * Parse url into t (palloc'd); on failure return false and say why in err.
 * The grammar is src/common/redis_url.c's, the one the client uses too.
 */
bool
ddict_redis_parse_url(const char *url, RedisTarget *t, char *err)
{
	ddict_redis_url *u = palloc(sizeof(ddict_redis_url));	/* t points into it */
	char		why[200];

	memset(t, 0, sizeof(*t));
	if (ddict_redis_url_parse(url, u, why, sizeof(why)) != 0)
	{
		snprintf(err, DDICT_REDIS_ERRLEN, "ddict.redis_url: %s", why);
		return false;
	}
	t->host = (char *) u->host;
	t->port = u->port_num;
	t->path = (char *) u->path;
	t->user = (char *) u->user;
	t->password = (char *) u->password;
	t->db = u->db;
	return true;
}

/*
 * Say in err (DDICT_REDIS_ERRLEN bytes) why the reply r to "what" is not the
 * one expected: the connection's error (r NULL), Redis's error, or its type.
 */
void
ddict_redis_reply_error(const redisContext *c, const char *what, const redisReply *r, char *err)
{
	if (r == NULL)
		snprintf(err, DDICT_REDIS_ERRLEN, "%s: %s", what,
				 c && c->errstr[0] ? c->errstr : "connection lost");
	else if (r->type == REDIS_REPLY_ERROR && r->str != NULL)
		snprintf(err, DDICT_REDIS_ERRLEN, "%s: %s", what, r->str);
	else
		snprintf(err, DDICT_REDIS_ERRLEN, "%s: malformed reply (type %d)", what, r->type);
}

/*
 * After the replies we expected, nothing else may be buffered: an extra
 * reply would be taken for the answer to our next command.
 */
bool
ddict_redis_no_extra_reply(const redisContext *c, const char *what, char *err)
{
	if (c->reader != NULL && c->reader->pos < c->reader->len)
	{
		snprintf(err, DDICT_REDIS_ERRLEN, "%s: malformed reply (unexpected extra data)", what);
		return false;
	}
	return true;
}

/*
 * Send one command and check that its reply is the status expect ("OK",
 * "PONG"); false (with err) on any failure.
 */
bool
ddict_redis_command_ok(redisContext *c, const char *what, const char *expect, char *err,
					   const char *fmt,...)
{
	va_list		ap;
	redisReply *r;
	bool		ok;

	va_start(ap, fmt);
	if (redisvAppendCommand(c, fmt, ap) == REDIS_OK)
		(void) ddict_redis_get_reply(c, &r, ddict_redis_deadline());
	else
		r = NULL;
	va_end(ap);
	ok = ddict_reply_is_status(r, expect);
	if (!ok)
		ddict_redis_reply_error(c, what, r, err);
	if (r)
		freeReplyObject(r);
	return ok && ddict_redis_no_extra_reply(c, what, err);
}

/* AUTH and SELECT as t says, on a new connection; false with err. */
bool
ddict_redis_login(redisContext *c, const RedisTarget *t, char *err)
{
	if (t->password &&
		!(t->user ? ddict_redis_command_ok(c, "AUTH", "OK", err, "AUTH %s %s", t->user, t->password)
		  : ddict_redis_command_ok(c, "AUTH", "OK", err, "AUTH %s", t->password)))
		return false;
	return t->db == 0 || ddict_redis_command_ok(c, "SELECT", "OK", err, "SELECT %d", t->db);
}
