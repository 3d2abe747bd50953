/*
 * redisconn.c — the server's parser of ddict.redis_url, shared by the version
 * publisher and the change streamers, so that both read one setting the same
 * way (moved here from publisher.c).
 */
#include "postgres.h"

#include "redisconn.h"

/* Parse url into t (palloc'd); on failure return false and say why in err. */
bool
ddict_redis_parse_url(const char *url, RedisTarget *t, char *err)
{
	char	   *s = pstrdup(url);
	char	   *q;

	memset(t, 0, sizeof(*t));
	t->port = 6379;
	if (strncmp(s, "unix://", 7) == 0)
	{
		t->path = s + 7;
		if ((q = strchr(t->path, '?')) != NULL)
		{
			*q++ = '\0';
			if (strncmp(q, "db=", 3) == 0)
				t->db = atoi(q + 3);
		}
		if (t->path[0] != '/')
		{
			snprintf(err, DDICT_REDIS_ERRLEN, "unix socket path must be absolute");
			return false;
		}
		return true;
	}
	if (strncmp(s, "redis://", 8) != 0)
	{
		snprintf(err, DDICT_REDIS_ERRLEN, "ddict.redis_url must start with redis:// or unix://");
		return false;
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
			t->db = atoi(q);
	}
	if ((q = strrchr(s, ':')) != NULL)
	{
		*q++ = '\0';
		t->port = atoi(q);
		if (t->port <= 0 || t->port > 65535)
		{
			snprintf(err, DDICT_REDIS_ERRLEN, "invalid port in ddict.redis_url");
			return false;
		}
	}
	t->host = s[0] ? s : "127.0.0.1";
	return true;
}
