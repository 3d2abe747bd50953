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
	int			rc = DDICT_OK;

	for (int i = 0; i < n && rc == DDICT_OK; i++)
	{
		const char *argv[2] = {"GET", keys[i]};

		rc = dd_rconn_command(c, 2, argv);
	}
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "out of memory");
		return rc;
	}
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
		else if (dd_reply_is_error(rep, &msg))
		{
			/* LOADING, WRONGTYPE, ...: this key has no usable version */
			snprintf(err, errsize, "GET %.100s: %.150s", keys[i], msg);
			rcs[i] = DDICT_ERR;
		}
		else
		{
			snprintf(err, errsize, "GET %.100s: not a version", keys[i]);
			rcs[i] = DDICT_ERR;
		}
		dd_rconn_reply_free(rep);
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
dd_redis_exists(const dd_rtarget *t, dd_rconn *c, const char *key, char *err, size_t errsize)
{
	int64_t		v;
	int			rcs[1] = {0};
	int			rc = dd_redis_get_many(t, c, &key, 1, &v, rcs, err, errsize);

	return rc != DDICT_OK ? rc : rcs[0] != 0;
}
