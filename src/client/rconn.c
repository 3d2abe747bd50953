/*
 * rconn.c — one Redis connection: the socket and the reply reader.
 *
 * hiredis is used for the protocol only (redisFormatCommandArgv, the reply
 * reader); the sockets are ours: non-blocking, every wait bounded by
 * connect_timeout_ms / timeout_ms and ended at once by the client's stop fd,
 * and sends with MSG_NOSIGNAL, so that a closed connection never raises
 * SIGPIPE in the application's threads.
 *
 * Replies are only looked at through the dd_reply_*() checks below, which
 * test the type (and the element types of arrays) before any field is read:
 * a misbehaving server or proxy yields an error, never a crash.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"

struct dd_rconn
{
	int			fd;
	redisReader *reader;
	char	   *out;			/* formatted commands not yet sent */
	size_t		outlen,
				outpos;
};

void
dd_rconn_free(dd_rconn *c)
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

int
dd_rconn_fd(const dd_rconn *c)
{
	return c ? c->fd : -1;
}

void
dd_rconn_reply_free(redisReply *r)
{
	if (r)
		freeReplyObject(r);
}

int
dd_rconn_command(dd_rconn *c, int argc, const char **argv)
{
	size_t	   *lens;
	char	   *cmd,
			   *grown;
	int			n;

	if (argc < 1)
		return DDICT_EINVAL;
	if ((lens = malloc(sizeof(size_t) * (size_t) argc)) == NULL)
		return DDICT_ENOMEM;
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	free(lens);
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
wait_rc(const dd_rtarget *t, dd_rconn *c, short events, int64_t deadline, const char *what,
		char *err, size_t errsize)
{
	int			rc = dd_wait_fd(c->fd, events, deadline, t->stop_fd);

	if (rc == DD_STOPPED)
		snprintf(err, errsize, "%s: the client is being closed", what);
	else if (rc == DDICT_ETIMEDOUT)
		snprintf(err, errsize, "%s: no answer within %u ms", what, t->timeout_ms);
	else if (rc != DDICT_OK)
		snprintf(err, errsize, "%s: %s", what, strerror(errno));
	return rc;
}

int
dd_rconn_flush(const dd_rtarget *t, dd_rconn *c, int64_t deadline, char *err, size_t errsize)
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
			int			rc = wait_rc(t, c, POLLOUT, deadline, "send", err, errsize);

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

int
dd_rconn_fill(dd_rconn *c, char *err, size_t errsize)
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
			/* less than asked: the socket is most likely drained (saves
			 * the recv that would say EAGAIN; poll() tells if not) */
			return (size_t) n < sizeof(buf) ? 2 : 1;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		snprintf(err, errsize, "%s", n == 0 ? "connection closed by Redis" : strerror(errno));
		return DDICT_ECONN;
	}
}

int
dd_rconn_parsed(dd_rconn *c, redisReply **out, char *err, size_t errsize)
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

int
dd_rconn_reply(const dd_rtarget *t, dd_rconn *c, redisReply **out, int64_t deadline,
			   char *err, size_t errsize)
{
	for (;;)
	{
		int			rc = dd_rconn_parsed(c, out, err, errsize);

		if (rc != DDICT_OK || *out != NULL)
			return rc;
		rc = dd_rconn_fill(c, err, errsize);
		if (rc < 0)
			return rc;
		if (rc == 0 && (rc = wait_rc(t, c, POLLIN, deadline, "reply", err, errsize)) != DDICT_OK)
			return rc;
	}
}

bool
dd_rconn_buffered(const dd_rconn *c)
{
	return c != NULL && c->reader != NULL &&
		(c->reader->pos < c->reader->len || c->reader->ridx >= 0);
}

/*
 * Before a command that expects replies: nothing may be waiting, or it
 * would be taken for the answer.  DDICT_OK; DDICT_ERR unsolicited data;
 * DDICT_ECONN closed.
 */
int
dd_rconn_idle(dd_rconn *c, char *err, size_t errsize)
{
	char		b;
	ssize_t		n;

	if (dd_rconn_buffered(c))
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

int
dd_resp_parse(const char *buf, size_t len, redisReply **out)
{
	redisReader *r = redisReaderCreate();
	void	   *reply = NULL;
	bool		ok;

	*out = NULL;
	if (r == NULL)
		return DDICT_ENOMEM;
	ok = redisReaderFeed(r, buf, len) == REDIS_OK &&
		redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL && r->pos == r->len;
	redisReaderFree(r);
	if (!ok)
	{
		if (reply)
			freeReplyObject(reply);
		return DDICT_ERR;
	}
	*out = reply;
	return DDICT_OK;
}

/* ---- type-checked access to replies ---- */

bool
dd_reply_is_nil(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_NIL;
}

bool
dd_reply_is_error(const redisReply *r, const char **msg)
{
	if (r == NULL || r->type != REDIS_REPLY_ERROR)
		return false;
	*msg = r->str ? r->str : "";
	return true;
}

bool
dd_reply_version(const redisReply *r, int64_t *v)
{
	char		buf[32],
			   *end;
	long long	n;

	if (r == NULL || r->type != REDIS_REPLY_STRING ||
		r->str == NULL || r->len == 0 || r->len >= sizeof(buf))
		return false;
	memcpy(buf, r->str, r->len);
	buf[r->len] = '\0';
	for (const char *p = buf; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	errno = 0;
	n = strtoll(buf, &end, 10);
	if (errno || *end)
		return false;
	*v = n;
	return true;
}

bool
dd_reply_is_bulk(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_STRING && r->str != NULL;
}

bool
dd_reply_is_status(const redisReply *r, const char *text)
{
	return r != NULL && r->type == REDIS_REPLY_STATUS && r->str != NULL &&
		strcmp(r->str, text) == 0;
}

/* A bulk string equal to text (binary-safe). */
static bool
is_text(const redisReply *r, const char *text)
{
	return dd_reply_is_bulk(r) && r->len == strlen(text) && memcmp(r->str, text, r->len) == 0;
}

bool
dd_reply_push(const redisReply *r, size_t n, const char *kind, const char **channel,
			  const redisReply **third)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n || r->element == NULL ||
		!is_text(r->element[0], kind))
		return false;
	for (size_t i = 1; i < n; i++)
		if (r->element[i] == NULL)
			return false;
	if (channel)
	{
		/* a channel is a bulk string without NUL bytes (our keys have none) */
		if (n < 2 || !dd_reply_is_bulk(r->element[1]) ||
			strlen(r->element[1]->str) != r->element[1]->len)
			return false;
		*channel = r->element[1]->str;
	}
	if (third)
	{
		if (n < 3)
			return false;
		*third = r->element[2];
	}
	return true;
}

/* ---- connecting ---- */

/* One address: a non-blocking connect, waited for up to deadline. */
static int
connect_addr(const dd_rtarget *t, int family, const struct sockaddr *sa, socklen_t salen,
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
		rc = dd_wait_fd(fd, POLLOUT, deadline, t->stop_fd);
		if (rc != DDICT_OK)
		{
			snprintf(err, errsize, "connect: %s", rc == DD_STOPPED ? "the client is being closed" :
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

static int
connect_any(const dd_rtarget *t, dd_rconn *c, int64_t deadline, char *why, size_t whysize)
{
	const ddict_redis_url *u = &t->url;
	int			rc = DDICT_ECONN;

	if (u->path)
	{
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, u->path, strlen(u->path) + 1);
		return connect_addr(t, AF_UNIX, (struct sockaddr *) &sun, sizeof(sun), deadline,
							&c->fd, why, whysize);
	}
	{
		struct addrinfo hints,
				   *res = NULL;
		int			gai;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		gai = getaddrinfo(u->host, u->port, &hints, &res);
		if (gai != 0)
			snprintf(why, whysize, "could not resolve \"%s\": %s", u->host, gai_strerror(gai));
		/* every address in turn (localhost: ::1, then 127.0.0.1) */
		for (struct addrinfo *a = res; a && c->fd < 0 && rc != DD_STOPPED; a = a->ai_next)
			rc = connect_addr(t, a->ai_family, a->ai_addr, a->ai_addrlen, deadline,
							  &c->fd, why, whysize);
		if (res)
			freeaddrinfo(res);
	}
	return c->fd >= 0 ? DDICT_OK : rc == DDICT_OK ? DDICT_ECONN : rc;
}

/* AUTH and SELECT, answered before the connection is used. */
static int
auth_select(const dd_rtarget *t, dd_rconn *c, char *why, size_t whysize)
{
	const ddict_redis_url *u = &t->url;
	char		db[16];
	const char *auth[3] = {"AUTH", u->user ? u->user : u->password, u->password};
	const char *sel[2] = {"SELECT", db};
	int			nreplies = 0,
				rc = DDICT_OK;
	int64_t		deadline = dd_deadline_ms(t->timeout_ms);

	snprintf(db, sizeof(db), "%d", u->db);
	if (u->password)
	{
		rc = dd_rconn_command(c, u->user ? 3 : 2, auth);
		nreplies++;
	}
	if (rc == DDICT_OK && u->db != 0)
	{
		rc = dd_rconn_command(c, 2, sel);
		nreplies++;
	}
	if (rc == DDICT_ENOMEM)
	{
		snprintf(why, whysize, "out of memory");
		return rc;
	}
	if (nreplies > 0)
		rc = dd_rconn_flush(t, c, deadline, why, whysize);
	for (int i = 0; i < nreplies && rc == DDICT_OK; i++)
	{
		redisReply *r = NULL;
		const char *msg;

		rc = dd_rconn_reply(t, c, &r, deadline, why, whysize);
		if (rc == DDICT_OK && dd_reply_is_error(r, &msg))
		{
			snprintf(why, whysize, "%s: %.150s", u->password && i == 0 ? "AUTH" : "SELECT", msg);
			rc = DDICT_ECONN;
		}
		else if (rc == DDICT_OK && !dd_reply_is_status(r, "OK"))
		{
			snprintf(why, whysize, "%s: malformed reply", u->password && i == 0 ? "AUTH" : "SELECT");
			rc = DDICT_ECONN;
		}
		dd_rconn_reply_free(r);
	}
	if (rc == DDICT_OK && dd_rconn_buffered(c))
	{
		snprintf(why, whysize, "malformed reply (unexpected extra data)");
		rc = DDICT_ECONN;
	}
	return rc;
}

/*
 * Connect, authenticate and select the database.  Only the client's thread
 * and ddict_open() call this: it may wait (resolving a host name, up to
 * connect_timeout_ms connecting, timeout_ms for the replies).
 */
int
dd_rconn_open(const dd_rtarget *t, dd_rconn **out, char *err, size_t errsize)
{
	dd_rconn   *c;
	char		why[200] = "no address";
	int			rc;

	*out = NULL;
	c = calloc(1, sizeof(dd_rconn));
	if (c == NULL)
	{
		snprintf(err, errsize, "out of memory");
		return DDICT_ENOMEM;
	}
	c->fd = -1;
	rc = connect_any(t, c, dd_deadline_ms(t->connect_timeout_ms), why, sizeof(why));
	if (rc == DDICT_OK && (c->reader = redisReaderCreate()) == NULL)
	{
		snprintf(why, sizeof(why), "out of memory");
		rc = DDICT_ENOMEM;
	}
	if (rc == DDICT_OK)
		rc = auth_select(t, c, why, sizeof(why));
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "Redis %s: %s", t->url.desc, why);
		dd_rconn_free(c);
		return rc;
	}
	*out = c;
	return DDICT_OK;
}
