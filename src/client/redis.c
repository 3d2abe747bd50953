/*
 * redis.c — the Redis commands of the version source.
 *
 * The server's publisher (ddict.redis_url) keeps the key
 * <prefix><database>:<schema>.<table> SET to the dict's version and PUBLISHes
 * each new version on the channel of the same name.  Checks GET the keys of
 * the dicts they cover (one round trip for all); push mode SUBSCRIBEs to
 * the channels (worker.c reads the messages).  Every reply is type-checked
 * (rconn.c) before it is used.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int
dd_redis_get_many(const dd_rtarget *t, dd_rconn *c, const char *const *keys, int n,
				  int64_t *versions, int *rcs, char *err, size_t errsize)
{
	int64_t		deadline = dd_deadline_ms(t->timeout_ms);
	int			rc = dd_rconn_idle(c, err, errsize);

	for (int i = 0; i < n && rc == DDICT_OK; i++)
	{
		const char *argv[2] = {"GET", keys[i]};

		if ((rc = dd_rconn_command(c, 2, argv)) != DDICT_OK)
			snprintf(err, errsize, "out of memory");
	}
	if (rc == DDICT_OK)
		rc = dd_rconn_flush(t, c, deadline, err, errsize);
	for (int i = 0; i < n && rc == DDICT_OK; i++)
	{
		redisReply *rep = NULL;
		const char *msg;

		rc = dd_rconn_reply(t, c, &rep, deadline, err, errsize);
		if (rc != DDICT_OK)
			break;
		if (dd_reply_is_nil(rep))
			rcs[i] = 0;
		else if (dd_reply_version(rep, &versions[i]))
			rcs[i] = 1;
		else
		{
			/* LOADING, WRONGTYPE, another type, garbage: not to be trusted */
			if (dd_reply_is_error(rep, &msg))
				snprintf(err, errsize, "GET %.100s: %.150s", keys[i], msg);
			else
				snprintf(err, errsize, "GET %.100s: malformed reply (not a version)", keys[i]);
			rc = DDICT_ERR;
		}
		dd_rconn_reply_free(rep);
	}
	if (rc == DDICT_OK && dd_rconn_buffered(c))
	{
		snprintf(err, errsize, "malformed reply (unexpected extra data)");
		rc = DDICT_ERR;
	}
	return rc;
}

int
dd_redis_subscribe(dd_rconn *c, const char *key)
{
	const char *argv[2] = {"SUBSCRIBE", key};

	return dd_rconn_command(c, 2, argv);
}

int
dd_redis_versions(const dd_rtarget *t, dd_rconn *c, const char *const *keys, int n,
				  int *present, char *err, size_t errsize)
{
	int64_t		v[64];

	if (n > 64)
		n = 64;
	return dd_redis_get_many(t, c, keys, n, v, present, err, errsize);
}
