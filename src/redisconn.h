/*
 * redisconn.h — the server's Redis helpers, shared by the version publisher
 * (publisher.c) and the change streamers (streamer.c): one URL parser for
 * ddict.redis_url, the connection and its bounded I/O, and the reply checks
 * every hiredis reply goes through.
 *
 * Every exchange with Redis (a connect, a command, a pipeline) has one
 * deadline, ddict.redis_timeout after it starts, that bounds the whole
 * reply however slowly it trickles in, and SIGTERM or SIGHUP end the wait at
 * once: the context is non-blocking and waits go through WaitLatchOrSocket.
 */
#ifndef DDICT_REDISCONN_H
#define DDICT_REDISCONN_H

#include <hiredis/hiredis.h>

#include "datatype/timestamp.h"

#define DDICT_REDIS_ERRLEN 256

typedef struct RedisTarget
{
	char	   *host;			/* NULL for a unix socket */
	int			port;
	char	   *path;
	char	   *user;
	char	   *password;
	int			db;
} RedisTarget;

/* Parse url into t (palloc'd); on failure return false and say why in err. */
extern bool ddict_redis_parse_url(const char *url, RedisTarget *t, char *err);

/* The deadline of an exchange starting now (ddict.redis_timeout). */
extern TimestampTz ddict_redis_deadline(void);

/*
 * Connect (non-blocking) to t within ddict.redis_timeout; NULL with err on
 * failure.  AUTH and SELECT are the caller's (ddict_redis_login()).
 */
extern redisContext *ddict_redis_connect(const RedisTarget *t, char *err);

/*
 * Send what is buffered and read the next reply by deadline.  REDIS_ERR
 * (c->errstr says why: I/O, timeout, interrupted by SIGTERM/SIGHUP) leaves
 * *reply NULL; the caller then drops the connection.
 */
extern int	ddict_redis_get_reply(redisContext *c, redisReply **reply,
								  TimestampTz deadline);

/* One command and its reply (NULL on failure, c->errstr says why). */
extern redisReply *ddict_redis_command(redisContext *c, const char *fmt,...);

/* Why reply r to "what" is not the one expected, in err (DDICT_REDIS_ERRLEN). */
extern void ddict_redis_reply_error(const redisContext *c, const char *what,
									const redisReply *r, char *err);

/* False (with err) if more than the replies we read is buffered. */
extern bool ddict_redis_no_extra_reply(const redisContext *c, const char *what, char *err);

/* AUTH and SELECT as t says, on a new connection; false with err. */
extern bool ddict_redis_login(redisContext *c, const RedisTarget *t, char *err);

/* One command whose reply must be the status expect ("OK", "PONG"). */
extern bool ddict_redis_command_ok(redisContext *c, const char *what, const char *expect,
								   char *err, const char *fmt,...) pg_attribute_printf(5, 6);

static inline bool
ddict_reply_is_bulk(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_STRING && r->str != NULL;
}

static inline bool
ddict_reply_is_status(const redisReply *r, const char *text)
{
	return r != NULL && r->type == REDIS_REPLY_STATUS && r->str != NULL &&
		strcmp(r->str, text) == 0;
}

static inline bool
ddict_reply_is_array(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_ARRAY;
}

#endif							/* DDICT_REDISCONN_H */
