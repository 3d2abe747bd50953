/*
 * redisconn.h — the server's Redis helpers, shared by the version publisher
 * (publisher.c) and the change streamers (streamer.c): one URL parser for
 * ddict.redis_url, and the reply checks every hiredis reply goes through.
 */
#ifndef DDICT_REDISCONN_H
#define DDICT_REDISCONN_H

#include <hiredis/hiredis.h>

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
