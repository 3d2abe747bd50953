/*
 * redis_url.c — see redis_url.h.  Every number is checked digit by digit
 * (no atoi(): "6379x" or "-1" are errors, not 6379 or a wrap), the port must
 * be 1..65535, the database 0..999999, a unix socket path absolute and short
 * enough for sockaddr_un.
 */
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "redis_url.h"

static int
fail(char *err, size_t errsize, const char *msg)
{
	if (errsize > 0)
		snprintf(err, errsize, "%s", msg);
	return -1;
}

/* s is all decimal digits, at most maxdigits of them: its value, else -1 */
static long
number(const char *s, size_t maxdigits)
{
	long		n = 0;
	size_t		len = strlen(s);

	if (len == 0 || len > maxdigits)
		return -1;
	for (; *s; s++)
	{
		if (*s < '0' || *s > '9')
			return -1;
		n = n * 10 + (*s - '0');
	}
	return n;
}

static int
parse_unix(ddict_redis_url *u, char *s, char *err, size_t errsize)
{
	char	   *q;
	long		db;

	u->path = s;
	if ((q = strchr(s, '?')) != NULL)
	{
		*q++ = '\0';
		if (strncmp(q, "db=", 3) != 0 || (db = number(q + 3, 6)) < 0)
			return fail(err, errsize, "the only parameter of a unix:// URL is db=N (a number)");
		u->db = (int) db;
	}
	if (u->path[0] != '/')
		return fail(err, errsize, "the unix socket path must be absolute (unix:///path)");
	if (strlen(u->path) >= sizeof(((struct sockaddr_un *) 0)->sun_path))
		return fail(err, errsize, "the unix socket path is too long");
	snprintf(u->desc, sizeof(u->desc), "%s", u->path);
	return 0;
}

/* [user:]password@ */
static char *
parse_auth(ddict_redis_url *u, char *s)
{
	char	   *at = strrchr(s, '@'),
			   *colon;

	if (at == NULL)
		return s;
	*at = '\0';
	colon = strchr(s, ':');
	if (colon)
	{
		*colon = '\0';
		u->user = s[0] ? s : NULL;
		u->password = colon + 1;
	}
	else
		u->password = s;
	return at + 1;
}

static int
parse_host_port(ddict_redis_url *u, char *s, char *err, size_t errsize)
{
	char	   *q;
	long		port;

	u->port = "6379";
	if (s[0] == '[')
	{
		if ((q = strchr(s, ']')) == NULL)
			return fail(err, errsize, "unterminated [address]");
		*q++ = '\0';
		u->host = s + 1;
		if (u->host[0] == '\0')
			return fail(err, errsize, "empty [address]");
		if (*q == ':')
			u->port = q + 1;
		else if (*q)
			return fail(err, errsize, "unexpected text after [address]");
	}
	else
	{
		if ((q = strrchr(s, ':')) != NULL)
		{
			*q++ = '\0';
			u->port = q;
		}
		if (strchr(s, ':'))
			return fail(err, errsize, "an IPv6 address must be written [address]:port");
		u->host = s[0] ? s : "127.0.0.1";
	}
	port = number(u->port, 5);
	if (port < 1 || port > 65535)
		return fail(err, errsize, "invalid port (1..65535)");
	u->port_num = (int) port;
	snprintf(u->desc, sizeof(u->desc), strchr(u->host, ':') ? "[%s]:%s" : "%s:%s",
			 u->host, u->port);
	return 0;
}

int
ddict_redis_url_parse(const char *url, ddict_redis_url *u, char *err, size_t errsize)
{
	char	   *s,
			   *q;
	long		db;

	memset(u, 0, sizeof(*u));
	if (url == NULL)
		return fail(err, errsize, "no URL");
	if (strlen(url) >= sizeof(u->buf))
		return fail(err, errsize, "the URL is too long");
	memcpy(u->buf, url, strlen(url) + 1);
	s = u->buf;
	if (strncmp(s, "unix://", 7) == 0)
		return parse_unix(u, s + 7, err, errsize);
	if (strncmp(s, "redis://", 8) != 0)
		return fail(err, errsize, "must start with redis:// or unix://");
	s = parse_auth(u, s + 8);
	if ((q = strchr(s, '/')) != NULL)
	{
		*q++ = '\0';
		if (*q)
		{
			if ((db = number(q, 6)) < 0)
				return fail(err, errsize, "the database must be a number");
			u->db = (int) db;
		}
	}
	return parse_host_port(u, s, err, errsize);
}
