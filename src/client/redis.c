/*
 * redis.c — Redis as the source of a dict's version.
 *
 * The server's publisher (ddict.redis_url) keeps the key
 * <prefix><database>:<schema>.<table> SET to the dict's version and PUBLISHes
 * each new version on the channel of the same name.  The handle uses that in
 * two ways:
 *
 *   autosync / interval  a check GETs the key; when it equals the cached
 *                        version the server is not contacted at all,
 *                        otherwise (different, missing, Redis unreachable)
 *                        the check goes on to ddict_changes() as usual.
 *   push                 the handle's thread SUBSCRIBEs to the channel and
 *                        syncs when a message names another version; reads
 *                        never touch the network.  While it cannot subscribe
 *                        it polls the server every interval_ms.
 *
 * Connections are made by the handle's thread, never by a read: a read uses
 * a connection the thread has made, or — while there is none — checks the
 * server instead.  The thread reconnects with the handle's backoff (at once
 * after a healthy connection broke cleanly, then doubling from
 * backoff_min_ms to backoff_max_ms, +-25% jitter).
 *
 * Every reply is type-checked before use (reply_is_*() below), and a
 * connection carries exactly the replies asked for: a reply of the wrong
 * type or shape, an error, garbage, half a reply or one too many — a proxy,
 * a "Redis-compatible" store, a broken server — counts in redis_errors, is
 * noted, and is treated as an outage: the connection is dropped, the reads'
 * checks go to PostgreSQL, and the thread reconnects with backoff (growing
 * while the server keeps misbehaving).  A version is only believed from a
 * well-formed reply.
 *
 * hiredis is used for the protocol only (redisFormatCommandArgv, the reply
 * reader); the sockets are ours: non-blocking, every wait bounded by
 * connect_timeout_ms / timeout_ms and ended at once by ddict_close(), and
 * sends with MSG_NOSIGNAL, so that a closed connection never raises SIGPIPE
 * in the application's threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"

#define DD_DEFAULT_PREFIX "ddict:"

struct dd_rconn
{
	int			fd;
	redisReader *reader;
	char	   *out;			/* formatted commands not yet sent */
	size_t		outlen,
				outpos;
};

/* ---- the URL ---- */

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* The same grammar as the server's ddict.redis_url. */
static int
parse_url(const char *url, dd_redis_target *t, char *err, size_t errsize)
{
	char	   *s,
			   *q;

	memset(t, 0, sizeof(*t));
	t->buf = s = strdup(url);
	if (s == NULL)
		return DDICT_ENOMEM;
	if (strncmp(s, "unix://", 7) == 0)
	{
		t->path = s + 7;
		if ((q = strchr(s + 7, '?')) != NULL)
		{
			*q++ = '\0';
			if (strncmp(q, "db=", 3) != 0 || !all_digits(q + 3) || strlen(q + 3) > 6)
			{
				snprintf(err, errsize, "redis_url: the only parameter of a unix:// URL is db=N");
				return DDICT_EINVAL;
			}
			t->db = atoi(q + 3);
		}
		if (t->path[0] != '/')
		{
			snprintf(err, errsize, "redis_url: the unix socket path must be absolute");
			return DDICT_EINVAL;
		}
		if (strlen(t->path) >= sizeof(((struct sockaddr_un *) 0)->sun_path))
		{
			snprintf(err, errsize, "redis_url: the unix socket path is too long");
			return DDICT_EINVAL;
		}
		snprintf(t->desc, sizeof(t->desc), "%s", t->path);
		return DDICT_OK;
	}
	if (strncmp(s, "redis://", 8) != 0)
	{
		snprintf(err, errsize, "redis_url must start with redis:// or unix://");
		return DDICT_EINVAL;
	}
	s += 8;
	if ((q = strrchr(s, '@')) != NULL)
	{
		char	   *colon;

		*q = '\0';
		colon = strchr(s, ':');
		if (colon)
		{
			*colon = '\0';
			t->user = s[0] ? s : NULL;
			t->password = colon + 1;
		}
		else
			t->password = s;
		s = q + 1;
	}
	if ((q = strchr(s, '/')) != NULL)
	{
		*q++ = '\0';
		if (*q)
		{
			if (!all_digits(q) || strlen(q) > 6)
			{
				snprintf(err, errsize, "redis_url: the database must be a number");
				return DDICT_EINVAL;
			}
			t->db = atoi(q);
		}
	}
	t->port = "6379";
	if (s[0] == '[')
	{
		/* [IPv6 address]:port */
		if ((q = strchr(s, ']')) == NULL)
		{
			snprintf(err, errsize, "redis_url: unterminated [address]");
			return DDICT_EINVAL;
		}
		*q++ = '\0';
		t->host = s + 1;
		if (*q == ':')
			t->port = q + 1;
		else if (*q)
		{
			snprintf(err, errsize, "redis_url: unexpected text after [address]");
			return DDICT_EINVAL;
		}
	}
	else
	{
		if ((q = strrchr(s, ':')) != NULL)
		{
			*q++ = '\0';
			t->port = q;
		}
		t->host = s[0] ? s : "127.0.0.1";
	}
	if (!all_digits(t->port) || strlen(t->port) > 5 || atoi(t->port) < 1 || atoi(t->port) > 65535)
	{
		snprintf(err, errsize, "redis_url: invalid port");
		return DDICT_EINVAL;
	}
	snprintf(t->desc, sizeof(t->desc), "%s:%s", t->host, t->port);
	return DDICT_OK;
}

/* ---- replies: every one is checked before use ---- */

static bool
reply_is_bulk(const redisReply *rep)
{
	return rep != NULL && rep->type == REDIS_REPLY_STRING && rep->str != NULL;
}

static bool
reply_is_status(const redisReply *rep, const char *text)
{
	return rep != NULL && rep->type == REDIS_REPLY_STATUS && rep->str != NULL &&
		strcmp(rep->str, text) == 0;
}

/* A bulk string equal to text (binary-safe). */
static bool
reply_is_text(const redisReply *rep, const char *text)
{
	return reply_is_bulk(rep) && rep->len == strlen(text) &&
		memcmp(rep->str, text, rep->len) == 0;
}

/* A pub/sub array: exactly n elements, the first kind, the second channel. */
static bool
reply_is_pubsub(const redisReply *rep, size_t n, const char *kind, const char *channel)
{
	return rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == n &&
		reply_is_text(rep->element[0], kind) &&
		(channel == NULL || reply_is_text(rep->element[1], channel));
}

int
dd_redis_init(ddict *h, const char *url, const char *prefix)
{
	dd_redis   *r = &h->redis;
	char		err[200];
	int			rc;

	pthread_mutex_init(&r->lock, NULL);
	r->kick_fd = -1;
	atomic_init(&r->key, NULL);
	atomic_init(&r->bad_replies, 0);
	if (url == NULL || url[0] == '\0')
		return DDICT_OK;
	rc = parse_url(url, &r->target, err, sizeof(err));
	if (rc == DDICT_ENOMEM)
		return dd_seterr(rc, "out of memory");
	if (rc != DDICT_OK)
		return dd_seterr(rc, "ddict_open: %s", err);
	if (h->opts.mode == DDICT_MANUAL)
		return DDICT_OK;		/* checked, but manual syncs always ask the server */
	r->prefix = strdup(prefix ? prefix : DD_DEFAULT_PREFIX);
	if (r->prefix == NULL)
		return dd_seterr(DDICT_ENOMEM, "out of memory");
	r->enabled = true;
	return DDICT_OK;
}

static void
kick(ddict *h)
{
	uint64_t	one = 1;

	if (h->redis.kick_fd >= 0)
		(void) !write(h->redis.kick_fd, &one, sizeof(one));
}

void
dd_redis_set_name(ddict *h, const char *db, const char *schema, const char *table)
{
	dd_redis   *r = &h->redis;
	char	   *key;

	if (!r->enabled || atomic_load(&r->key) != NULL)
		return;
	if (asprintf(&key, "%s%s:%s.%s", r->prefix, db, schema, table) < 0)
		return;					/* no memory: Redis stays unused */
	atomic_store(&r->key, key);
	kick(h);					/* the thread may have been waiting for it */
}

/* ---- one connection ---- */

static void
rconn_free(dd_rconn *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->reader)
		redisReaderFree(c->reader);
	free(c->out);
	free(c);
}

static int64_t
deadline_after(unsigned ms)
{
	return ms ? dd_now_us() + (int64_t) ms * 1000 : INT64_MAX;
}

/* Queue one command (binary-safe arguments). */
static int
rconn_command(dd_rconn *c, int argc, const char **argv)
{
	size_t		lens[4];
	char	   *cmd,
			   *grown;
	int			n;

	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (n < 0)
		return DDICT_ENOMEM;
	if (c->outpos == c->outlen)
		c->outpos = c->outlen = 0;
	grown = realloc(c->out, c->outlen + (size_t) n);
	if (grown == NULL)
	{
		redisFreeCommand(cmd);
		return DDICT_ENOMEM;
	}
	memcpy(grown + c->outlen, cmd, (size_t) n);
	c->out = grown;
	c->outlen += (size_t) n;
	redisFreeCommand(cmd);
	return DDICT_OK;
}

static int
wait_rc(ddict *h, dd_rconn *c, short events, int64_t deadline, const char *what,
		char *err, size_t errsize)
{
	int			rc = dd_wait_fd(c->fd, events, deadline, h->stop_fd);

	if (rc == DD_STOPPED)
		snprintf(err, errsize, "%s: the handle is being closed", what);
	else if (rc == DDICT_ETIMEDOUT)
		snprintf(err, errsize, "%s: no answer within %u ms", what, h->opts.timeout_ms);
	else if (rc != DDICT_OK)
		snprintf(err, errsize, "%s: %s", what, strerror(errno));
	return rc;
}

static int
rconn_flush(ddict *h, dd_rconn *c, int64_t deadline, char *err, size_t errsize)
{
	while (c->outpos < c->outlen)
	{
		ssize_t		n = send(c->fd, c->out + c->outpos, c->outlen - c->outpos, MSG_NOSIGNAL);

		if (n > 0)
			c->outpos += (size_t) n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		{
			int			rc = wait_rc(h, c, POLLOUT, deadline, "send", err, errsize);

			if (rc != DDICT_OK)
				return rc;
		}
		else
		{
			snprintf(err, errsize, "send: %s", n < 0 ? strerror(errno) : "connection closed");
			return DDICT_ECONN;
		}
	}
	c->outpos = c->outlen = 0;
	return DDICT_OK;
}

/* Read what the socket has: > 0 bytes read, 0 nothing now, < 0 closed/error. */
static int
rconn_fill(dd_rconn *c, char *err, size_t errsize)
{
	char		buf[16384];

	for (;;)
	{
		ssize_t		n = recv(c->fd, buf, sizeof(buf), 0);

		if (n > 0)
		{
			if (redisReaderFeed(c->reader, buf, (size_t) n) != REDIS_OK)
			{
				snprintf(err, errsize, "out of memory");
				return DDICT_ENOMEM;
			}
			return 1;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		snprintf(err, errsize, "%s", n == 0 ? "connection closed by Redis" : strerror(errno));
		return DDICT_ECONN;
	}
}

/* A reply already read, if any: DDICT_OK with *out (NULL: none yet). */
static int
rconn_parsed(dd_rconn *c, redisReply **out, char *err, size_t errsize)
{
	void	   *r = NULL;

	*out = NULL;
	if (redisReaderGetReply(c->reader, &r) != REDIS_OK)
	{
		snprintf(err, errsize, "protocol error: %s", c->reader->errstr);
		return DDICT_ERR;
	}
	*out = r;
	return DDICT_OK;
}

/* Bytes buffered beyond the replies parsed (part of one, or another one). */
static bool
rconn_buffered(const dd_rconn *c)
{
	return c->reader != NULL && (c->reader->pos < c->reader->len || c->reader->ridx >= 0);
}

/*
 * Before a command that expects one reply: nothing may be waiting, or it
 * would be taken for the answer.  DDICT_OK; DDICT_ERR unsolicited data;
 * DDICT_ECONN closed.
 */
static int
rconn_idle(dd_rconn *c, char *err, size_t errsize)
{
	char		b;
	ssize_t		n;

	if (rconn_buffered(c))
	{
		snprintf(err, errsize, "malformed reply (unexpected extra data)");
		return DDICT_ERR;
	}
	n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
	{
		snprintf(err, errsize, "malformed reply (unexpected extra data)");
		return DDICT_ERR;
	}
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
	{
		snprintf(err, errsize, "%s", n == 0 ? "connection closed by Redis" : strerror(errno));
		return DDICT_ECONN;
	}
	return DDICT_OK;
}

/* The next reply, waiting until deadline. */
static int
rconn_reply(ddict *h, dd_rconn *c, redisReply **out, int64_t deadline,
			char *err, size_t errsize)
{
	for (;;)
	{
		int			rc = rconn_parsed(c, out, err, errsize);

		if (rc != DDICT_OK || *out != NULL)
			return rc;
		rc = rconn_fill(c, err, errsize);
		if (rc < 0)
			return rc;
		if (rc == 0 && (rc = wait_rc(h, c, POLLIN, deadline, "reply", err, errsize)) != DDICT_OK)
			return rc;
	}
}

/* One address: a non-blocking connect, waited for up to deadline. */
static int
connect_addr(ddict *h, int family, const struct sockaddr *sa, socklen_t salen,
			 int64_t deadline, int *fdp, char *err, size_t errsize)
{
	int			fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
				soerr = 0,
				rc;
	socklen_t	len = sizeof(soerr);

	*fdp = -1;
	if (fd < 0)
	{
		snprintf(err, errsize, "socket: %s", strerror(errno));
		return DDICT_ECONN;
	}
	if (connect(fd, sa, salen) != 0)
	{
		if (errno != EINPROGRESS && errno != EAGAIN && errno != EINTR)
		{
			snprintf(err, errsize, "connect: %s", strerror(errno));
			close(fd);
			return DDICT_ECONN;
		}
		rc = dd_wait_fd(fd, POLLOUT, deadline, h->stop_fd);
		if (rc != DDICT_OK)
		{
			snprintf(err, errsize, "connect: %s", rc == DD_STOPPED ? "the handle is being closed" :
					 rc == DDICT_ETIMEDOUT ? "timed out" : strerror(errno));
			close(fd);
			return rc;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
		{
			snprintf(err, errsize, "connect: %s", strerror(soerr ? soerr : errno));
			close(fd);
			return DDICT_ECONN;
		}
	}
	if (family != AF_UNIX)
	{
		int			one = 1;

		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	*fdp = fd;
	return DDICT_OK;
}

/*
 * Connect, authenticate and select the database.  Only the handle's thread
 * and ddict_open() call this: it may wait (resolving a host name, up to
 * connect_timeout_ms connecting, timeout_ms for the replies).
 */
static int
rconn_open(ddict *h, dd_rconn **out, char *err, size_t errsize)
{
	const dd_redis_target *t = &h->redis.target;
	int64_t		deadline = deadline_after(h->opts.connect_timeout_ms);
	dd_rconn   *c;
	char		why[200] = "no address";
	int			rc = DDICT_ECONN;

	*out = NULL;
	c = calloc(1, sizeof(dd_rconn));
	if (c == NULL)
	{
		snprintf(err, errsize, "out of memory");
		return DDICT_ENOMEM;
	}
	c->fd = -1;
	if (t->path)
	{
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, t->path, strlen(t->path) + 1);
		rc = connect_addr(h, AF_UNIX, (struct sockaddr *) &sun, sizeof(sun), deadline,
						  &c->fd, why, sizeof(why));
	}
	else
	{
		struct addrinfo hints,
				   *res = NULL;
		int			gai;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		gai = getaddrinfo(t->host, t->port, &hints, &res);
		if (gai != 0)
			snprintf(why, sizeof(why), "could not resolve \"%s\": %s", t->host, gai_strerror(gai));
		/* every address in turn (localhost: ::1, then 127.0.0.1) */
		for (struct addrinfo *a = res; a && c->fd < 0 && rc != DD_STOPPED; a = a->ai_next)
			rc = connect_addr(h, a->ai_family, a->ai_addr, a->ai_addrlen, deadline,
							  &c->fd, why, sizeof(why));
		if (res)
			freeaddrinfo(res);
	}
	if (c->fd < 0)
	{
		snprintf(err, errsize, "Redis %s: %s", t->desc, why);
		rconn_free(c);
		return rc == DDICT_OK ? DDICT_ECONN : rc;
	}
	c->reader = redisReaderCreate();
	if (c->reader == NULL)
	{
		snprintf(err, errsize, "out of memory");
		rconn_free(c);
		return DDICT_ENOMEM;
	}

	/* AUTH and SELECT, answered before the connection is used. */
	{
		char		db[16];
		const char *auth[3] = {"AUTH", t->user ? t->user : t->password, t->password};
		const char *sel[2] = {"SELECT", db};
		int			nreplies = 0;

		snprintf(db, sizeof(db), "%d", t->db);
		rc = DDICT_OK;
		if (t->password)
		{
			rc = rconn_command(c, t->user ? 3 : 2, auth);
			nreplies++;
		}
		if (rc == DDICT_OK && t->db != 0)
		{
			rc = rconn_command(c, 2, sel);
			nreplies++;
		}
		deadline = deadline_after(h->opts.timeout_ms);
		if (rc == DDICT_ENOMEM)
			snprintf(why, sizeof(why), "out of memory");
		else if (nreplies > 0)
			rc = rconn_flush(h, c, deadline, why, sizeof(why));
		for (int i = 0; i < nreplies && rc == DDICT_OK; i++)
		{
			redisReply *r = NULL;

			rc = rconn_reply(h, c, &r, deadline, why, sizeof(why));
			if (rc == DDICT_OK && !reply_is_status(r, "OK"))
			{
				snprintf(why, sizeof(why), "%s: %.150s", t->password && i == 0 ? "AUTH" : "SELECT",
						 r->type == REDIS_REPLY_ERROR && r->str ? r->str : "malformed reply");
				rc = DDICT_ECONN;
			}
			if (r)
				freeReplyObject(r);
		}
		if (rc == DDICT_OK && rconn_buffered(c))
		{
			snprintf(why, sizeof(why), "malformed reply (unexpected extra data)");
			rc = DDICT_ECONN;
		}
	}
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "Redis %s: %s", t->desc, why);
		rconn_free(c);
		return rc;
	}
	*out = c;
	return DDICT_OK;
}

/* ---- reconnect schedule (the thread's, or open's before the thread) ---- */

/* The next attempt after a failure: the backoff doubles. */
static void
redis_backoff(ddict *h)
{
	dd_redis   *r = &h->redis;
	unsigned	lo = h->opts.backoff_min_ms ? h->opts.backoff_min_ms : 1;
	int64_t		now = dd_now_us();
	uint64_t	jitter;

	if (r->backoff_ms == 0)
		r->backoff_ms = lo;
	else if (r->backoff_ms < h->opts.backoff_max_ms)
		r->backoff_ms = r->backoff_ms * 2 > h->opts.backoff_max_ms ?
			h->opts.backoff_max_ms : r->backoff_ms * 2;
	jitter = dd_hash(h->seed, &now, sizeof(now)) % 501;
	r->next_attempt_us = now + (int64_t) r->backoff_ms * (750 + (int64_t) jitter);
}

static void
redis_failed(ddict *h, const char *msg)
{
	atomic_fetch_add_explicit(&h->redis_errors, 1, memory_order_relaxed);
	dd_note(h, "%s", msg);
	redis_backoff(h);
}

static void
redis_ok(ddict *h)
{
	/* An established connection that breaks is retried at once. */
	h->redis.backoff_ms = 0;
	h->redis.next_attempt_us = 0;
}

/* ---- autosync / interval: GET ---- */

/* The sync side gives its connection up (it failed): the thread makes another. */
static void
drop_get(ddict *h)
{
	dd_redis   *r = &h->redis;

	rconn_free(r->get);
	r->get = NULL;
	pthread_mutex_lock(&r->lock);
	r->taken = false;
	atomic_store(&r->used, r->ready != NULL);
	pthread_mutex_unlock(&r->lock);
	kick(h);
}

static bool
parse_version(const redisReply *rep, int64_t *v)
{
	char		buf[32],
			   *end;
	long long	n;

	if (!reply_is_bulk(rep) || rep->len == 0 || rep->len >= sizeof(buf))
		return false;
	memcpy(buf, rep->str, rep->len);
	buf[rep->len] = '\0';
	if (!all_digits(buf))
		return false;
	errno = 0;
	n = strtoll(buf, &end, 10);
	if (errno || *end)
		return false;
	*v = n;
	return true;
}

/* A GET reply: 1 a version (in *v), 0 nil; DDICT_ERR anything else. */
static int
get_result(const redisReply *rep, int64_t *v, char *err, size_t errsize)
{
	if (rep->type == REDIS_REPLY_NIL)
		return 0;
	if (parse_version(rep, v))
		return 1;
	/* An error reply (LOADING, WRONGTYPE, ...), another type, or garbage */
	if ((rep->type == REDIS_REPLY_ERROR || rep->type == REDIS_REPLY_STRING) && rep->str)
		snprintf(err, errsize, "%s%.*s", rep->type == REDIS_REPLY_ERROR ? "" : "not a version: ",
				 rep->len > 100 ? 100 : (int) rep->len, rep->str);
	else
		snprintf(err, errsize, "malformed reply (type %d)", rep->type);
	return DDICT_ERR;
}

/*
 * A GET failed: give the connection up.  The thread reconnects at once
 * after a plain loss (Redis restarted), with a growing backoff while the
 * server misbehaves (malformed replies, half replies, no answer).
 */
static void
get_failed(ddict *h, int rc, const char *err)
{
	dd_redis   *r = &h->redis;

	if (rc != DDICT_ECONN || rconn_buffered(r->get))
		atomic_fetch_add(&r->bad_replies, 1);
	atomic_fetch_add_explicit(&h->redis_errors, 1, memory_order_relaxed);
	dd_note(h, "Redis %s: GET %s: %s", r->target.desc, atomic_load(&r->key), err);
	drop_get(h);
}

int
dd_redis_get(ddict *h, int64_t *version)
{
	dd_redis   *r = &h->redis;
	const char *key = atomic_load(&r->key);
	const char *argv[2] = {"GET", key};
	redisReply *rep = NULL;
	char		err[300];
	int64_t		deadline;
	int			rc;

	if (!r->enabled || key == NULL)
		return DDICT_ECONN;
	if (r->get == NULL)
	{
		pthread_mutex_lock(&r->lock);
		if (r->ready)
		{
			r->get = r->ready;
			r->ready = NULL;
			r->taken = true;
		}
		pthread_mutex_unlock(&r->lock);
		if (r->get == NULL)
			return DDICT_ECONN;	/* the thread is (re)connecting */
	}
	deadline = deadline_after(h->opts.timeout_ms);
	rc = rconn_idle(r->get, err, sizeof(err));
	if (rc == DDICT_OK)
		rc = rconn_command(r->get, 2, argv);
	if (rc == DDICT_ENOMEM)
		snprintf(err, sizeof(err), "out of memory");
	if (rc == DDICT_OK)
		rc = rconn_flush(h, r->get, deadline, err, sizeof(err));
	if (rc == DDICT_OK)
		rc = rconn_reply(h, r->get, &rep, deadline, err, sizeof(err));
	if (rc == DDICT_OK)
	{
		rc = get_result(rep, version, err, sizeof(err));
		if (rc >= 0 && rconn_buffered(r->get))
		{
			snprintf(err, sizeof(err), "malformed reply (unexpected extra data)");
			rc = DDICT_ERR;
		}
		freeReplyObject(rep);
	}
	if (rc < 0)
	{
		get_failed(h, rc, err);
		return rc;
	}
	atomic_store(&r->bad_replies, 0);
	atomic_fetch_add_explicit(&h->redis_checks, 1, memory_order_relaxed);
	return rc;
}

/* ---- push: SUBSCRIBE ---- */

/*
 * Connect and SUBSCRIBE to the dict's channel.  A GET goes first in the same
 * round trip, only to tell an operator when nothing is published under the
 * key (its answer cannot replace the catch-up sync: a version published
 * between the GET and the SUBSCRIBE would be missed).
 */
static int
subscribe(ddict *h, dd_rconn **out, char *err, size_t errsize)
{
	const char *key = atomic_load(&h->redis.key);
	const char *get[2] = {"GET", key};
	const char *sub[2] = {"SUBSCRIBE", key};
	int64_t		deadline;
	redisReply *rep = NULL;
	dd_rconn   *c;
	char		why[300];
	bool		missing = false;
	int			rc;

	rc = rconn_open(h, &c, err, errsize);
	if (rc != DDICT_OK)
		return rc;
	deadline = deadline_after(h->opts.timeout_ms);
	rc = rconn_command(c, 2, get);
	if (rc == DDICT_OK)
		rc = rconn_command(c, 2, sub);
	if (rc == DDICT_OK)
		rc = rconn_flush(h, c, deadline, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "out of memory");
	if (rc == DDICT_OK)
		rc = rconn_reply(h, c, &rep, deadline, why, sizeof(why));
	if (rc == DDICT_OK)
	{
		int64_t		v;

		rc = get_result(rep, &v, why, sizeof(why));
		missing = rc == 0;
		rc = rc < 0 ? DDICT_ECONN : DDICT_OK;
		freeReplyObject(rep);
		rep = NULL;
	}
	if (rc == DDICT_OK)
		rc = rconn_reply(h, c, &rep, deadline, why, sizeof(why));
	/* ["subscribe", channel, count]; messages may follow at once */
	if (rc == DDICT_OK &&
		!(reply_is_pubsub(rep, 3, "subscribe", key) &&
		  rep->element[2]->type == REDIS_REPLY_INTEGER))
	{
		snprintf(why, sizeof(why), "%.200s", rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str :
				 "malformed reply");
		rc = DDICT_ECONN;
	}
	if (rep)
		freeReplyObject(rep);
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "Redis %s: SUBSCRIBE %.100s: %.150s", h->redis.target.desc, key, why);
		rconn_free(c);
		return rc;
	}
	if (missing)
		dd_note(h, "Redis %s has no version under \"%.100s\" (yet?): push mode relies on the"
				" server publishing there (its ddict.redis_url and ddict.redis_prefix)",
				h->redis.target.desc, key);
	*out = c;
	return DDICT_OK;
}

/* ---- the handle's thread ---- */

static int64_t
min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Wait for stop, a kick, or fd (>= 0) readable, until deadline.  Returns
 * DD_STOPPED, or a bit mask: 1 kicked, 2 fd readable. */
static int
thread_wait(ddict *h, int fd, int64_t deadline)
{
	struct pollfd pfd[3];
	int			n = 0,
				timeout = -1,
				rc;
	int64_t		now = dd_now_us();

	pfd[n++] = (struct pollfd) {.fd = h->stop_fd, .events = POLLIN};
	pfd[n++] = (struct pollfd) {.fd = h->redis.kick_fd, .events = POLLIN};
	if (fd >= 0)
		pfd[n++] = (struct pollfd) {.fd = fd, .events = POLLIN};
	if (deadline != INT64_MAX)
		timeout = deadline <= now ? 0 :
			(deadline - now) / 1000 >= INT_MAX ? INT_MAX : (int) ((deadline - now + 999) / 1000);
	rc = poll(pfd, (nfds_t) n, timeout);
	if (rc <= 0)
		return 0;
	if (pfd[0].revents)
		return DD_STOPPED;
	rc = 0;
	if (pfd[1].revents)
	{
		uint64_t	v;

		(void) !read(h->redis.kick_fd, &v, sizeof(v));
		rc |= 1;
	}
	if (n > 2 && pfd[2].revents)
		rc |= 2;
	return rc;
}

/* Autosync / interval: keep one connection ready for the checks. */
static void
keeper_main(ddict *h)
{
	dd_redis   *r = &h->redis;
	int			seen_bad = 0;

	while (!atomic_load(&h->closing))
	{
		bool		want;
		int64_t		wake = INT64_MAX;
		int			bad = atomic_load(&r->bad_replies);

		pthread_mutex_lock(&r->lock);
		want = r->ready == NULL && !r->taken;
		pthread_mutex_unlock(&r->lock);
		if (want && atomic_load(&r->key) != NULL)
		{
			/* the checks met a misbehaving server: back off (noted there);
			 * once a GET went well again, the backoff starts afresh */
			if (bad != seen_bad && bad > 0)
				redis_backoff(h);
			else if (bad == 0 && seen_bad > 0)
				redis_ok(h);
			seen_bad = bad;
			if (dd_now_us() >= r->next_attempt_us)
			{
				dd_rconn   *c;
				char		err[400];
				int			rc = rconn_open(h, &c, err, sizeof(err));

				if (rc == DD_STOPPED || atomic_load(&h->closing))
				{
					rconn_free(rc == DDICT_OK ? c : NULL);
					break;
				}
				if (rc == DDICT_OK)
				{
					/* the backoff resets once a GET went well */
					if (bad == 0)
						redis_ok(h);
					pthread_mutex_lock(&r->lock);
					r->ready = c;
					atomic_store(&r->used, true);
					pthread_mutex_unlock(&r->lock);
				}
				else
					redis_failed(h, err);
				continue;
			}
			wake = r->next_attempt_us;
		}
		if (thread_wait(h, -1, wake) == DD_STOPPED)
			break;
	}
}

/* Push mode's polling period (0: 1 s). */
static int64_t
poll_interval_us(const ddict *h)
{
	return (int64_t) (h->opts.interval_ms ? h->opts.interval_ms : 1000) * 1000;
}

/*
 * The subscription is gone.  A healthy one (it delivered a well-formed
 * message or PONG, and broke cleanly) is retried at once; one that
 * misbehaved (malformed or half a reply, no answer), or broke before it
 * proved healthy, with a growing backoff.
 */
static void
sub_lost(ddict *h, const char *what, const char *why, bool healthy)
{
	char		msg[600];

	healthy = healthy && !rconn_buffered(h->redis.sub);
	rconn_free(h->redis.sub);
	h->redis.sub = NULL;
	atomic_store(&h->redis.used, false);
	snprintf(msg, sizeof(msg), "Redis %s: %s: %s (polling the server every %lld ms meanwhile)",
			 h->redis.target.desc, what, why, (long long) poll_interval_us(h) / 1000);
	if (healthy)
	{
		atomic_fetch_add_explicit(&h->redis_errors, 1, memory_order_relaxed);
		redis_ok(h);
		dd_note(h, "%s", msg);
	}
	else
		redis_failed(h, msg);
}

/*
 * One reply on the subscription: 1 a message (its version in *v), 2 a
 * PONG, DDICT_ERR anything else (with why).
 */
static int
sub_reply(const char *key, const redisReply *rep, int64_t *v, char *why, size_t whysize)
{
	if (reply_is_pubsub(rep, 3, "message", key))
	{
		if (parse_version(rep->element[2], v))
			return 1;
		snprintf(why, whysize, "malformed message (not a version)");
	}
	else if (reply_is_pubsub(rep, 2, "pong", NULL) && reply_is_bulk(rep->element[1]))
		return 2;
	else if (rep->type == REDIS_REPLY_ERROR && rep->str)
		snprintf(why, whysize, "%.200s", rep->str);
	else
		snprintf(why, whysize, "malformed reply (type %d, %zu elements)", rep->type,
				 rep->type == REDIS_REPLY_ARRAY ? rep->elements : (size_t) 0);
	return DDICT_ERR;
}

/*
 * Push mode.  Subscribed: sync when a message names a version other than
 * the cached one (messages already waiting are read first; only the last
 * counts), and PING every interval_ms to notice a dead link.  Not
 * subscribed (Redis unreachable, or no redis_url): poll the server every
 * interval_ms, retry Redis with backoff.  After every (re)subscription one
 * sync catches up with what was published meanwhile.
 */
static void
push_main(ddict *h)
{
	dd_redis   *r = &h->redis;
	int64_t		interval = poll_interval_us(h);
	int64_t		now = dd_now_us();
	int64_t		next_poll = r->sub ? INT64_MAX : now + interval;
	int64_t		sync_at = now;	/* catch up once at start */
	int64_t		next_ping = now + interval,
				ping_sent = 0;
	/* subscribed by ddict_open(): catch up with commits made since the load */
	bool		pending = r->sub != NULL;
	/* the subscription delivered a well-formed message or PONG */
	bool		healthy = false;

	while (!atomic_load(&h->closing))
	{
		int64_t		wake = INT64_MAX;
		int			ev;

		now = dd_now_us();
		if (r->enabled && r->sub == NULL && atomic_load(&r->key) != NULL &&
			now >= r->next_attempt_us)
		{
			char		err[400];
			int			rc = subscribe(h, &r->sub, err, sizeof(err));

			if (rc == DD_STOPPED || atomic_load(&h->closing))
				break;
			if (rc == DDICT_OK)
			{
				/* the backoff resets once the subscription proves healthy */
				healthy = false;
				atomic_store(&r->used, true);
				pending = true;	/* catch up: messages of the outage are lost */
				sync_at = now;
				next_poll = INT64_MAX;
				next_ping = dd_now_us() + interval;
				ping_sent = 0;
			}
			else
				redis_failed(h, err);
			continue;
		}
		if (r->sub == NULL && now >= next_poll)
		{
			pending = true;
			sync_at = now;
			next_poll = now + interval;
		}
		if (pending && now >= sync_at)
		{
			int			rc = dd_sync_from_thread(h);

			if (rc >= 0)
				pending = false;
			else
			{
				/* retry when the connection's backoff allows it */
				int64_t		retry = atomic_load(&h->retry_at_us);
				int64_t		lo = dd_now_us() + (int64_t) (h->opts.backoff_min_ms ? h->opts.backoff_min_ms : 1) * 1000;

				sync_at = retry > lo ? retry : lo;
			}
			continue;
		}
		if (r->sub && now >= next_ping)
		{
			const char *argv[1] = {"PING"};
			char		err[300];

			if (ping_sent != 0 && h->opts.timeout_ms &&
				now - ping_sent >= (int64_t) h->opts.timeout_ms * 1000)
			{
				sub_lost(h, "subscription", "no answer to PING", false);
				next_poll = now;
				continue;
			}
			if (ping_sent == 0)
			{
				int			rc = rconn_command(r->sub, 1, argv);

				if (rc == DDICT_OK)
					rc = rconn_flush(h, r->sub, deadline_after(h->opts.timeout_ms), err, sizeof(err));
				else
					snprintf(err, sizeof(err), "out of memory");
				if (rc == DD_STOPPED)
					break;
				if (rc != DDICT_OK)
				{
					sub_lost(h, "PING", err, healthy);
					next_poll = now;
					continue;
				}
				ping_sent = now;
			}
			next_ping = now + interval;
		}

		if (r->enabled && r->sub == NULL && atomic_load(&r->key) != NULL)
			wake = min64(wake, r->next_attempt_us);
		if (r->sub == NULL)
			wake = min64(wake, next_poll);
		if (pending)
			wake = min64(wake, sync_at);
		if (r->sub)
			wake = min64(wake, next_ping);
		ev = thread_wait(h, r->sub ? r->sub->fd : -1, wake);
		if (ev == DD_STOPPED)
			break;
		if (ev & 2)
		{
			char		err[300];
			int64_t		latest = 0;
			bool		got = false,
						lost = false,
						bad = false;
			int			rc = 0;

			/* everything that is there; the last version counts */
			for (int i = 0; i < 64 && (rc = rconn_fill(r->sub, err, sizeof(err))) > 0; i++)
				;
			if (rc < 0)
				lost = true;
			for (;;)
			{
				redisReply *rep;
				int64_t		v;
				int			kind;

				if (rconn_parsed(r->sub, &rep, err, sizeof(err)) != DDICT_OK)
				{
					bad = lost = true;
					break;
				}
				if (rep == NULL)
					break;
				kind = sub_reply(atomic_load(&r->key), rep, &v, err, sizeof(err));
				freeReplyObject(rep);
				if (kind < 0)
				{
					bad = lost = true;
					break;
				}
				if (!healthy)
					redis_ok(h);
				healthy = true;
				if (kind == 2)
					ping_sent = 0;
				else
				{
					atomic_fetch_add_explicit(&h->pushes, 1, memory_order_relaxed);
					latest = v;
					got = true;
				}
			}
			if (got && latest != ddict_version(h))
			{
				pending = true;
				sync_at = dd_now_us();
			}
			if (lost)
			{
				sub_lost(h, "subscription", err, healthy && !bad);
				/* messages may be lost from here on: poll now */
				next_poll = dd_now_us();
			}
		}
	}
}

static void *
thread_main(void *arg)
{
	ddict	   *h = arg;

	if (h->opts.mode == DDICT_PUSH)
		push_main(h);
	else
		keeper_main(h);
	return NULL;
}

int
dd_redis_start(ddict *h)
{
	dd_redis   *r = &h->redis;
	sigset_t	all,
				old;
	int			rc;

	if (!r->enabled && h->opts.mode != DDICT_PUSH)
		return DDICT_OK;
	h->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	r->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->stop_fd < 0 || r->kick_fd < 0)
		return dd_seterr(DDICT_ERR, "ddict_open: eventfd: %s", strerror(errno));

	/* The first connection is made here, so that Redis is in use when
	 * ddict_open() returns (if it is reachable). */
	if (r->enabled && atomic_load(&r->key) != NULL)
	{
		char		err[400];

		if (h->opts.mode == DDICT_PUSH)
			rc = subscribe(h, &r->sub, err, sizeof(err));
		else
			rc = rconn_open(h, &r->get, err, sizeof(err));
		if (rc == DDICT_OK)
		{
			r->taken = h->opts.mode != DDICT_PUSH;
			atomic_store(&r->used, true);
		}
		else
			redis_failed(h, err);
	}

	/* The thread takes no signals: they stay the application's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->thread, NULL, thread_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return dd_seterr(DDICT_ERR, "ddict_open: could not start the handle's thread: %s",
						 strerror(rc));
	r->thread_started = true;
	return DDICT_OK;
}

void
dd_redis_stop(ddict *h)
{
	uint64_t	one = 1;

	atomic_store(&h->closing, true);
	if (!h->redis.thread_started)
		return;
	(void) !write(h->stop_fd, &one, sizeof(one));
	pthread_join(h->redis.thread, NULL);
	h->redis.thread_started = false;
}

void
dd_redis_free(ddict *h)
{
	dd_redis   *r = &h->redis;

	rconn_free(r->get);
	rconn_free(r->ready);
	rconn_free(r->sub);
	r->get = r->ready = r->sub = NULL;
	if (r->kick_fd >= 0)
		close(r->kick_fd);
	if (h->stop_fd >= 0)
		close(h->stop_fd);
	r->kick_fd = h->stop_fd = -1;
	free(atomic_load(&r->key));
	free(r->prefix);
	free(r->target.buf);
	pthread_mutex_destroy(&r->lock);
}
