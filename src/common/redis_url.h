/*
 * redis_url.h — the one parser of ddict's Redis URLs, compiled into both the
 * server (ddict.redis_url, src/publisher.c) and the client (redis_url
 * option, src/client/rconn.c), so that both accept exactly the same strings.
 *
 *     redis://[[user]:password@]host[:port][/db]     host may be [IPv6]
 *     unix:///absolute/path[?db=N]
 *
 * Pure C99 + POSIX: no PostgreSQL, hiredis or libddict headers, no
 * allocation.  The parsed pieces point into the struct's own copy of the
 * URL, so a ddict_redis_url must not be copied by value (parse again).
 */
#ifndef DDICT_REDIS_URL_H
#define DDICT_REDIS_URL_H

#include <stddef.h>

#define DDICT_REDIS_URL_MAX 1024	/* longest URL accepted, bytes */
#define DDICT_REDIS_DEFAULT_PORT 6379

typedef struct ddict_redis_url
{
	const char *host;			/* NULL: a unix socket; "127.0.0.1" when empty */
	const char *port;			/* decimal, 1..65535 (for getaddrinfo()) */
	int			port_num;		/* the same as a number */
	const char *path;			/* unix socket path; NULL for TCP */
	const char *user;			/* NULL: AUTH with the password only */
	const char *password;		/* NULL: no AUTH */
	int			db;				/* SELECT this database when not 0 */
	char		desc[300];		/* "host:port", "[v6]:port" or the path: for messages,
								 * never the password */
	char		buf[DDICT_REDIS_URL_MAX];	/* the pieces live here */
} ddict_redis_url;

/*
 * Parse url into *u.  Returns 0, or -1 with a one-line reason (without a
 * "redis_url:" prefix: callers name their setting) in err.
 */
int			ddict_redis_url_parse(const char *url, ddict_redis_url *u,
								  char *err, size_t errsize);

#endif							/* DDICT_REDIS_URL_H */
