/*
 * worker.c — the client's one background thread.
 *
 * It runs when a dict of the client needs it (push mode, a redis_url, or
 * more than one dict) and does, in a loop:
 *
 *   Redis      keeps the client's one Redis connection: for GETs (the
 *              checks of autosync/interval dicts use it under the client's
 *              lock) or, when a push dict is open, SUBSCRIBEd to the channel
 *              of every dict that has one — push dicts sync when a message
 *              names another version, the others' checks compare with the
 *              last version heard instead of a GET; push dicts whose changes
 *              are published subscribe to their stream's channel instead,
 *              whose messages carry the changes (stream.c applies them).
 *              PING every interval_ms notices a dead link; reconnects back
 *              off (io.c).
 *   checks     dicts whose readers found the connection busy (want), push
 *              dicts with a sync due, in one pipeline (sync.c).
 *   streams    positions in published dicts' Streams, and reading them
 *              where deliveries may be missing (stream.c, a connection of
 *              its own: a subscribed connection takes no other command).
 *   polling    push dicts while there is no subscription: every interval_ms.
 *
 * Connections are made here, never by a read, and opened off the thread: a
 * short-lived connector thread connects, AUTHs, SELECTs and (for the
 * subscription) GETs the keys, so that a Redis that hangs delays none of
 * the loop — push dicts are polled every interval_ms meanwhile.  The thread
 * takes the
 * client's lock for the list and the checks (blocking: readers never wait
 * for it, they trylock), never while it waits for Redis; it only trylocks
 * dicts' sync locks.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"

static int64_t
min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int64_t
interval_us(const dd_client *c)
{
	return (int64_t) (c->interval_ms ? c->interval_ms : 1000) * 1000;
}

/* The channel a dict listens to: its stream's (deliveries of published
 * changes, stream.c) or its version key's; NULL none. */
static const char *
channel_of(ddict *d)
{
	const char *stream = atomic_load(&d->stream_key);

	return stream ? stream : atomic_load(&d->redis_key);
}

/* A push dict whose published changes come as deliveries (stream.c). */
static bool
delivered(ddict *d)
{
	return d->opts.mode == DDICT_PUSH && atomic_load(&d->stream_key) != NULL;
}

/* ---- what the dicts need (client's lock) ---- */

typedef struct needs
{
	bool		sub;			/* a push dict with a key: subscribe */
	bool		get;			/* an autosync/interval dict with a key: GET */
	bool		push;			/* any push dict (polling when not subscribed) */
	bool		unsubscribed;	/* a dict with a key not yet subscribed */
} needs;

static needs
what_is_needed(dd_client *c)
{
	needs		n = {0};

	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (d->opts.mode == DDICT_PUSH)
			n.push = true;
		if (channel_of(d) == NULL)
			continue;
		if (d->opts.mode == DDICT_PUSH)
			n.sub = true;
		else if (d->opts.mode != DDICT_MANUAL)
			n.get = true;
		if (d->sub == DD_SUB_NONE)
			n.unsubscribed = true;
	}
	if (n.sub)
		n.get = false;
	return n;
}

/* Every dict using Redis learns the outcome of an attempt (lock held). */
static void
redis_outcome(dd_client *c, const char *err)
{
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (atomic_load(&d->redis_key) == NULL || d->opts.mode == DDICT_MANUAL)
			continue;
		if (err)
		{
			atomic_fetch_add_explicit(&d->redis_errors, 1, memory_order_relaxed);
			dd_note(d, "%s", err);
		}
		if (err || d->opts.mode != DDICT_PUSH)
			atomic_store(&d->redis_settled, true);
	}
}

/* The checks' GET connection is up: it answers the autosync and interval
 * dicts opened since it came too (their open waits for that; list lock). */
static void
settle_get_dicts(dd_client *c)
{
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (d->opts.mode != DDICT_PUSH && d->opts.mode != DDICT_MANUAL &&
			!atomic_load(&d->redis_settled) && atomic_load(&d->redis_key) != NULL)
			atomic_store(&d->redis_settled, true);
	}
}

/* ---- the subscription ---- */

/*
 * The subscription is gone.  A healthy one (it delivered a well-formed
 * message or PONG, and broke cleanly) is retried at once; one that
 * misbehaved (a malformed or half reply, no answer), or broke before it
 * proved healthy, with a growing backoff.
 */
static void
sub_lost(dd_client *c, const char *what, const char *why, bool healthy)
{
	char		msg[400];

	healthy = healthy && c->sub_healthy && !dd_rconn_buffered(c->sub);
	dd_rconn_free(c->sub);
	c->sub = NULL;
	atomic_store(&c->redis_used, false);
	if (healthy)
		dd_backoff_reset(&c->rbackoff);
	else
		dd_backoff_failed(&c->rbackoff);
	c->ping_sent = 0;
	c->next_poll = dd_now_us();	/* messages may be lost from here on: poll now */
	snprintf(msg, sizeof(msg), "Redis %s: %s: %s (polling the server every %lld ms meanwhile)",
			 c->rtarget.url.desc, what, why, (long long) interval_us(c) / 1000);
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		d->sub = DD_SUB_NONE;
		atomic_store(&d->subscribed, false);
		atomic_store(&d->pushed, INT64_MIN);
		if (delivered(d))
			d->xs_catchup = true;	/* deliveries lost: the stream has them */
	}
	redis_outcome(c, msg);
	dd_list_unlock(c);
}

/* SUBSCRIBE every dict's channel not subscribed yet (lock held); a GET
 * first on a new connection tells an operator when nothing is published. */
static int
subscribe_new(dd_client *c, char *err, size_t errsize)
{
	int			rc = DDICT_OK;

	for (size_t i = 0; i < c->ndicts && rc == DDICT_OK; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = channel_of(d);

		if (key == NULL || d->sub != DD_SUB_NONE || d->opts.mode == DDICT_MANUAL)
			continue;
		rc = dd_redis_subscribe(c->sub, key);
		d->sub = DD_SUB_SENT;
	}
	if (rc != DDICT_OK)
	{
		snprintf(err, errsize, "out of memory");
		return rc;
	}
	return dd_rconn_flush(&c->rtarget, c->sub, dd_deadline_ms(c->rtarget.timeout_ms), err, errsize);
}

/* Before subscribing, a GET of each push dict's key tells an operator when
 * nothing is published there (its answer cannot replace the catch-up
 * sync: a version published between the GET and the SUBSCRIBE would be
 * missed).  No lock is held while Redis answers. */
static int
warn_missing(dd_client *c, dd_rconn *r, char *err, size_t errsize)
{
	char	   *keys[64];
	int			present[64];
	int			n = 0,
				rc;

	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && n < 64; i++)
	{
		const char *key = atomic_load(&c->dicts[i]->redis_key);

		if (key && c->dicts[i]->opts.mode == DDICT_PUSH && (keys[n] = strdup(key)) != NULL)
			n++;
	}
	dd_list_unlock(c);
	rc = dd_redis_versions(&c->rtarget, r, (const char *const *) keys, n, present, err, errsize);
	dd_list_lock(c);
	for (size_t i = 0; i < c->ndicts && rc == DDICT_OK; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = atomic_load(&d->redis_key);

		for (int k = 0; k < n && key; k++)
			if (!present[k] && strcmp(keys[k], key) == 0)
				dd_note(d, "Redis %s has no version under \"%.100s\" (yet?): push mode relies on"
						" the server publishing there (its ddict.redis_url and ddict.redis_prefix)",
						c->rtarget.url.desc, key);
	}
	dd_list_unlock(c);
	for (int k = 0; k < n; k++)
		free(keys[k]);
	return rc;
}

/* ---- connections opened off the thread ---- */

typedef struct dd_connector
{
	dd_client  *c;
	bool		sub;			/* for the subscription (warn_missing) */
	pthread_t	thread;
	atomic_bool done;
	int			rc;				/* the outcome, once done */
	dd_rconn   *r;
	char		err[400];
} dd_connector;

/* The connector thread: every wait bounded by the timeouts and ended by the
 * client's stop fd (rconn.c). */
static void *
connector_main(void *arg)
{
	dd_connector *k = arg;
	dd_client  *c = k->c;

	k->rc = dd_rconn_open(&c->rtarget, &k->r, k->err, sizeof(k->err));
	if (k->rc == DDICT_OK && k->sub &&
		(k->rc = warn_missing(c, k->r, k->err, sizeof(k->err))) != DDICT_OK)
	{
		char		msg[sizeof(k->err)];

		snprintf(msg, sizeof(msg), "Redis %.100s: %.280s", c->rtarget.url.desc, k->err);
		memcpy(k->err, msg, sizeof(k->err));
		dd_rconn_free(k->r);
		k->r = NULL;
		k->rc = DDICT_ECONN;
	}
	atomic_store(&k->done, true);
	dd_event_signal(c->kick_fd);
	return NULL;
}

/* Start opening a connection off the thread; false: could not (noted). */
static bool
connector_start(dd_client *c, bool sub)
{
	dd_connector *k = calloc(1, sizeof(*k));
	int			rc = k ? 0 : ENOMEM;

	if (k)
	{
		k->c = c;
		k->sub = sub;
		atomic_init(&k->done, false);
		rc = pthread_create(&k->thread, NULL, connector_main, k);
	}
	if (rc != 0)
	{
		char		err[200];

		free(k);
		snprintf(err, sizeof(err), "Redis %.100s: could not start a thread to connect: %s",
				 c->rtarget.url.desc, strerror(rc));
		dd_backoff_failed(&c->rbackoff);
		dd_list_lock(c);
		redis_outcome(c, err);
		dd_list_unlock(c);
		return false;
	}
	c->connector = k;
	return true;
}

/* Wait for the connector (done, or ended by the stop fd) and free it;
 * returns it joined (caller frees) or NULL when none. */
static dd_connector *
connector_join(dd_client *c)
{
	dd_connector *k = c->connector;

	if (k)
		pthread_join(k->thread, NULL);
	c->connector = NULL;
	return k;
}

/* At the thread's end: no connector outlives it. */
static void
connector_discard(dd_client *c)
{
	dd_connector *k = connector_join(c);

	if (k)
		dd_rconn_free(k->r);
	free(k);
}

/* The subscription's connection is open (rc DDICT_OK, r) or not (err). */
static void
connect_sub(dd_client *c, int rc, dd_rconn *r, char *err, size_t errsize)
{
	if (rc == DDICT_OK)
	{
		c->sub_healthy = false;
		dd_list_lock(c);
		c->sub = r;
		for (size_t i = 0; i < c->ndicts; i++)
			c->dicts[i]->sub = DD_SUB_NONE;
		rc = subscribe_new(c, err, errsize);
		dd_list_unlock(c);
		if (rc == DDICT_OK)
		{
			/* the backoff resets once the subscription proved healthy */
			c->ping_sent = 0;
			c->next_ping = dd_now_us() + interval_us(c);
			return;
		}
		dd_rconn_free(c->sub);
		c->sub = NULL;
		dd_list_lock(c);
		for (size_t i = 0; i < c->ndicts; i++)
			c->dicts[i]->sub = DD_SUB_NONE;
		dd_list_unlock(c);
	}
	if (rc == DD_STOPPED || atomic_load(&c->closing))
		return;
	dd_backoff_failed(&c->rbackoff);
	dd_list_lock(c);
	redis_outcome(c, err);
	dd_list_unlock(c);
}

/* The checks' GET connection is open (rc DDICT_OK, r) or not (err). */
static void
connect_get(dd_client *c, int rc, dd_rconn *r, const char *err)
{
	if (rc == DD_STOPPED || atomic_load(&c->closing))
	{
		if (rc == DDICT_OK)
			dd_rconn_free(r);
		return;
	}
	if (rc == DDICT_OK)
	{
		dd_client_lock(c);
		dd_rconn_free(c->get);
		c->get = r;
		atomic_store(&c->has_get, true);
		dd_client_unlock(c);
	}
	dd_list_lock(c);
	if (rc == DDICT_OK)
	{
		/* the backoff resets once a GET went well */
		if (atomic_load(&c->bad_replies) == 0)
			dd_backoff_reset(&c->rbackoff);
		atomic_store(&c->redis_used, true);
		redis_outcome(c, NULL);
	}
	else
	{
		dd_backoff_failed(&c->rbackoff);
		redis_outcome(c, err);
	}
	dd_list_unlock(c);
}

/* The connector is done: the connection takes its role (or the attempt
 * failed).  Whatever the dicts need now, redis_step() sorts out next. */
static void
finish_connect(dd_client *c)
{
	dd_connector *k = connector_join(c);

	if (k->sub)
		connect_sub(c, k->rc, k->r, k->err, sizeof(k->err));
	else
		connect_get(c, k->rc, k->r, k->err);
	free(k);
}

/* Connect or switch roles as the dicts need; returns when to try again. */
static int64_t
redis_step(dd_client *c)
{
	needs		n;
	bool		have_get;

	if (!c->redis_enabled)
		return INT64_MAX;
	dd_list_lock(c);
	n = what_is_needed(c);
	have_get = atomic_load(&c->has_get);	/* c->get is the client lock's */
	if (have_get && n.get)
		settle_get_dicts(c);
	if (have_get && !n.get)
	{
		dd_list_unlock(c);
		dd_client_lock(c);
		dd_rconn_free(c->get);	/* a push dict came: the connection subscribes */
		c->get = NULL;
		atomic_store(&c->has_get, false);
		atomic_store(&c->redis_used, false);
		dd_client_unlock(c);
		dd_list_lock(c);
		have_get = false;
	}
	if (c->sub && n.unsubscribed)
	{
		char		err[300];

		if (subscribe_new(c, err, sizeof(err)) != DDICT_OK)
		{
			dd_list_unlock(c);
			sub_lost(c, "SUBSCRIBE", err, false);
			return dd_now_us();
		}
	}
	dd_list_unlock(c);
	if (c->sub && !n.sub && !n.get)
	{
		dd_rconn_free(c->sub);
		c->sub = NULL;
		atomic_store(&c->redis_used, false);
	}
	if ((n.sub && c->sub) || (n.get && have_get) || (!n.sub && !n.get))
		return INT64_MAX;
	if (n.get)
	{
		int			bad = atomic_load(&c->bad_replies);

		/* the checks met a misbehaving Redis: back off (noted there) */
		if (bad != c->seen_bad && bad > 0)
			dd_backoff_failed(&c->rbackoff);
		c->seen_bad = bad;
	}
	if (c->connector == NULL)
	{
		if (!dd_backoff_due(&c->rbackoff, dd_now_us()))
			return c->rbackoff.next_us;
		/* the connector kicks the thread when it is done */
		return connector_start(c, n.sub) ? INT64_MAX : dd_now_us();
	}
	if (!atomic_load(&c->connector->done))
		return INT64_MAX;
	finish_connect(c);
	return dd_now_us();
}

/* A message: a delivery of a stream (stream.c), or the version of a
 * channel.  List lock held.  false: not ours, or malformed. */
static bool
on_message(dd_client *c, const char *channel, const redisReply *payload)
{
	int64_t		v;
	bool		ours = false;
	int			rc = dd_stream_message(c, channel, payload);

	if (rc != 0)
		return rc > 0;
	if (!dd_reply_version(payload, &v))
		return false;
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = atomic_load(&d->redis_key);

		if (key == NULL || strcmp(key, channel) != 0 || d->sub == DD_SUB_NONE || delivered(d))
			continue;
		ours = true;
		if (d->opts.mode == DDICT_PUSH)
			atomic_fetch_add_explicit(&d->pushes, 1, memory_order_relaxed);
		if (d->sub != DD_SUB_OK)
			continue;
		atomic_store(&d->pushed, v);
		if (d->opts.mode == DDICT_PUSH && v != dd_current_version(d))
		{
			d->pending = true;
			d->sync_at = dd_now_us();
		}
	}
	return ours;
}

/* A subscription is confirmed: catch up once (messages before it are lost).
 * false: we did not ask for it. */
static bool
on_subscribed(dd_client *c, const char *channel)
{
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];
		const char *key = channel_of(d);

		if (key == NULL || strcmp(key, channel) != 0 || d->sub != DD_SUB_SENT)
			continue;
		d->sub = DD_SUB_OK;
		atomic_store(&d->pushed, INT64_MIN);
		atomic_store(&c->redis_used, true);
		if (delivered(d))
		{
			/* deliveries before this are lost: read the stream (stream.c;
			 * a dict without a position yet gets one there) */
			d->xs_catchup = true;
			atomic_store(&d->subscribed, d->xs_ok);
			return true;
		}
		atomic_store(&d->subscribed, true);
		atomic_store(&d->redis_settled, true);
		if (d->opts.mode == DDICT_PUSH)
		{
			d->pending = true;
			d->sync_at = dd_now_us();
		}
		return true;
	}
	return false;
}

/* One reply on the subscription; false: it is not one we can accept. */
static bool
sub_reply(dd_client *c, const redisReply *rep, char *why, size_t whysize)
{
	const char *channel,
			   *msg;
	const redisReply *third;

	if (dd_reply_push(rep, 3, "message", &channel, &third))
	{
		if (on_message(c, channel, third))
		{
			c->sub_healthy = true;
			return true;
		}
		snprintf(why, whysize, "malformed message (not a version of a channel of ours)");
	}
	else if (dd_reply_push(rep, 3, "subscribe", &channel, &third) &&
			 third->type == REDIS_REPLY_INTEGER)
	{
		if (on_subscribed(c, channel))
			return true;
		snprintf(why, whysize, "malformed reply (a subscription not asked for)");
	}
	else if ((dd_reply_push(rep, 2, "pong", NULL, NULL) && dd_reply_is_bulk(rep->element[1])) ||
			 dd_reply_is_status(rep, "PONG"))
	{
		if (c->ping_sent != 0)
		{
			c->ping_sent = 0;
			c->sub_healthy = true;
			return true;
		}
		snprintf(why, whysize, "malformed reply (a PONG not asked for)");
	}
	else if (dd_reply_is_error(rep, &msg))
		snprintf(why, whysize, "%.200s", msg);
	else
		snprintf(why, whysize, "malformed reply (type %d)", rep->type);
	return false;
}

/* Everything the subscription has; the last version of a channel counts. */
static void
read_sub(dd_client *c)
{
	char		err[300] = "";
	bool		lost = false,
				healthy = true;
	int			rc = 0;

	for (int i = 0; i < 64 && (rc = dd_rconn_fill(c->sub, err, sizeof(err))) == 1; i++)
		;
	if (rc < 0)
		lost = true;
	dd_list_lock(c);
	for (;;)
	{
		redisReply *rep;
		char		why[300];

		if (dd_rconn_parsed(c->sub, &rep, why, sizeof(why)) != DDICT_OK)
		{
			snprintf(err, sizeof(err), "%s", why);
			lost = true;
			healthy = false;
			break;
		}
		if (rep == NULL)
			break;
		if (!sub_reply(c, rep, why, sizeof(why)))
		{
			snprintf(err, sizeof(err), "%s", why);
			lost = true;
			healthy = false;
			dd_rconn_reply_free(rep);
			break;
		}
		dd_rconn_reply_free(rep);
	}
	dd_list_unlock(c);
	if (lost)
		sub_lost(c, "subscription", err[0] ? err : "malformed reply", healthy);
}

/* PING every interval; no answer within timeout_ms: the link is dead. */
static int64_t
ping_step(dd_client *c)
{
	int64_t		now = dd_now_us();
	const char *argv[1] = {"PING"};
	char		err[300];
	int			rc;

	if (c->sub == NULL)
		return INT64_MAX;
	if (c->ping_sent != 0 && c->rtarget.timeout_ms &&
		now - c->ping_sent >= (int64_t) c->rtarget.timeout_ms * 1000)
	{
		sub_lost(c, "subscription", "no answer to PING", false);
		return now;
	}
	if (now < c->next_ping)
		return c->ping_sent ? min64(c->next_ping, c->ping_sent + (int64_t) c->rtarget.timeout_ms * 1000)
			: c->next_ping;
	c->next_ping = now + interval_us(c);
	if (c->ping_sent != 0)
		return c->next_ping;
	rc = dd_rconn_command(c->sub, 1, argv);
	if (rc == DDICT_OK)
		rc = dd_rconn_flush(&c->rtarget, c->sub, dd_deadline_ms(c->rtarget.timeout_ms), err, sizeof(err));
	else
		snprintf(err, sizeof(err), "out of memory");
	if (rc == DD_STOPPED)
		return now;
	if (rc != DDICT_OK)
	{
		sub_lost(c, "PING", err, true);
		return now;
	}
	c->ping_sent = now;
	return c->next_ping;
}

/* ---- the idle connection ---- */

/*
 * idle_close_ms: every dict follows its published changes (subscribed, a
 * position, nothing due) and the connection was not used that long: close
 * it.  dd_session_ensure() reconnects when it is needed again.  The next
 * time to look, INT64_MAX: not now (the loop comes back on any event).
 */
static int64_t
idle_step(dd_client *c)
{
	int64_t		now = dd_now_us(),
				due;
	bool		all = true;

	if (c->idle_close_ms == 0 || c->conn.borrowed)
		return INT64_MAX;
	dd_list_lock(c);
	all = c->ndicts > 0;
	for (size_t i = 0; i < c->ndicts && all; i++)
	{
		ddict	   *d = c->dicts[i];

		all = delivered(d) && d->xs_ok && d->sub == DD_SUB_OK && !d->pending &&
			!d->xs_hold && !atomic_load(&d->want);
	}
	dd_list_unlock(c);
	if (!all)
		return INT64_MAX;
	if (!dd_client_trylock(c))
		return now + 100 * 1000;	/* in use: look again soon */
	due = c->conn.pg ? c->conn.last_used_us + (int64_t) c->idle_close_ms * 1000 : INT64_MAX;
	if (now >= due)
	{
		dd_conn_drop(&c->conn);
		atomic_store(&c->conn.connected, false);
		due = INT64_MAX;
	}
	dd_client_unlock(c);
	return due;
}

/* ---- checks ---- */

/* A push dict that hears nothing from Redis: not subscribed, or (published
 * changes) without a position in its stream — while it has one, stream.c
 * reads the stream each interval until the subscription is back. */
static bool
unfollowed(ddict *d)
{
	return d->opts.mode == DDICT_PUSH && (delivered(d) ? !d->xs_ok : d->sub != DD_SUB_OK);
}

/* Push dicts while not subscribed: a sync every interval. */
static void
poll_step(dd_client *c, int64_t now)
{
	if (now < c->next_poll)
		return;
	c->next_poll = now + interval_us(c);
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (unfollowed(d) && !d->pending)
		{
			d->pending = true;
			d->sync_at = now;
		}
	}
}

static bool
anything_due(dd_client *c, int64_t now)
{
	for (size_t i = 0; i < c->ndicts; i++)
	{
		const ddict *d = c->dicts[i];

		if (atomic_load(&d->want) || (d->pending && now >= d->sync_at))
			return true;
	}
	return false;
}

/* A push dict whose check answered an older version than the one Redis
 * announced: a hot standby that has not replayed that commit yet (the
 * primary publishes).  It checks again each interval until it has it. */
static bool
behind_push(ddict *d)
{
	int64_t		pushed = atomic_load(&d->pushed);

	return d->opts.mode == DDICT_PUSH && !delivered(d) && pushed != INT64_MIN &&
		dd_current_version(d) < pushed;
}

/*
 * Never on a borrowed connection: the application uses it whenever it
 * likes between our calls (a reader that finds it busy checks at its next
 * read).  Returns the next time something is due.
 */
static int64_t
check_step(dd_client *c)
{
	ddict	   *v[256];
	int			rcs[256],
				n = 0;
	int64_t		now = dd_now_us(),
				wake = INT64_MAX;

	dd_list_lock(c);
	poll_step(c, now);
	if (!c->conn.borrowed && anything_due(c, now))
	{
		dd_list_unlock(c);
		dd_client_lock(c);
		dd_list_lock(c);
		n = dd_collect_wanted(c, NULL, v, 256, now, false);
		for (int i = 0; i < n; i++)
			v[i]->pending = false;
		dd_list_unlock(c);
		if (n > 0)
			dd_check_many(c, v, n, true, rcs);
		dd_client_unlock(c);
		dd_list_lock(c);
	}
	for (int i = 0; i < n; i++)
	{
		if (rcs[i] < 0 && v[i]->opts.mode == DDICT_PUSH)
		{
			/* retry when the connection's backoff allows it */
			int64_t		retry = atomic_load(&c->conn.retry_at_us);
			int64_t		lo = dd_now_us() + (int64_t) c->conn.backoff.min_ms * 1000;

			v[i]->pending = true;
			v[i]->sync_at = retry > lo ? retry : lo;
		}
		else if (rcs[i] >= 0 && v[i]->xs_hold)
		{
			v[i]->xs_hold = false;	/* the stream goes on (stream.c), from */
			v[i]->xs_catchup = true;	/* the entry that held it */
			dd_event_signal(c->kick_fd);
		}
		else if (rcs[i] >= 0 && behind_push(v[i]))
		{
			v[i]->pending = true;	/* again, until the server has it */
			v[i]->sync_at = dd_now_us() + interval_us(c);
		}
		dd_unlock(v[i]);
	}
	for (size_t i = 0; i < c->ndicts; i++)
	{
		ddict	   *d = c->dicts[i];

		if (c->conn.borrowed)
			atomic_store(&d->want, false);
		if (d->pending)
			wake = min64(wake, d->sync_at);
		if (atomic_load(&d->want))
			wake = min64(wake, now + 1000);	/* its sync lock was busy */
		if (unfollowed(d))
			wake = min64(wake, c->next_poll);
	}
	dd_list_unlock(c);
	return wake;
}

/* Wait for stop, a kick or the subscription, until deadline: 0
 * timeout/kick, 1: the subscription. */
static int
wait_events(dd_client *c, int64_t deadline)
{
	struct pollfd pfd[3];
	int			n = 0,
				sub = -1,
				rc,
				ev = 0;

	pfd[n++] = (struct pollfd) {.fd = c->stop_fd, .events = POLLIN};
	pfd[n++] = (struct pollfd) {.fd = c->kick_fd, .events = POLLIN};
	if (c->sub)
	{
		sub = n;
		pfd[n++] = (struct pollfd) {.fd = dd_rconn_fd(c->sub), .events = POLLIN};
	}
	rc = poll(pfd, (nfds_t) n, dd_poll_timeout(deadline));
	if (rc <= 0)
		return 0;
	if (pfd[0].revents)
		return DD_STOPPED;
	if (pfd[1].revents)
		dd_event_drain(c->kick_fd);
	if (sub >= 0 && pfd[sub].revents)
		ev |= 1;
	return ev;
}

static void *
worker_main(void *arg)
{
	dd_client  *c = arg;

	c->next_poll = dd_now_us() + interval_us(c);
	while (!atomic_load(&c->closing))
	{
		int64_t		wake = redis_step(c);
		int			ev;

		if (atomic_load(&c->closing))
			break;
		wake = min64(wake, dd_stream_step(c));
		wake = min64(wake, ping_step(c));
		wake = min64(wake, check_step(c));
		wake = min64(wake, idle_step(c));
		ev = wait_events(c, wake);
		if (ev == DD_STOPPED)
			break;
		if ((ev & 1) && c->sub)
			read_sub(c);
	}
	connector_discard(c);
	return NULL;
}

/* ---- start / stop ---- */

bool
dd_worker_needed(const dd_client *c, const ddict *h)
{
	if (c->conn.borrowed)
		return h->opts.mode != DDICT_MANUAL && c->redis_enabled;
	return h->opts.mode == DDICT_PUSH || (c->redis_enabled && h->opts.mode != DDICT_MANUAL) ||
		atomic_load(&c->nlisted) > 1;
}

int
dd_worker_start(dd_client *c)
{
	sigset_t	all,
				old;
	int			rc = 0;

	pthread_mutex_lock(&c->start_lock);
	if (!c->thread_started && !atomic_load(&c->closing))
	{
		/* The thread takes no signals: they stay the application's. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rc = pthread_create(&c->thread, NULL, worker_main, c);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		c->thread_started = rc == 0;
	}
	pthread_mutex_unlock(&c->start_lock);
	if (rc != 0)
		return dd_seterr(DDICT_ERR, "ddict_open: could not start the client's thread: %s",
						 strerror(rc));
	dd_event_signal(c->kick_fd);
	return DDICT_OK;
}

void
dd_worker_stop(dd_client *c)
{
	atomic_store(&c->closing, true);
	dd_event_signal(c->stop_fd);
	pthread_mutex_lock(&c->start_lock);
	if (c->thread_started)
		pthread_join(c->thread, NULL);
	c->thread_started = false;
	pthread_mutex_unlock(&c->start_lock);
}

void
dd_worker_await_redis(dd_client *c, ddict *h)
{
	int64_t		until = dd_now_us() +
		(int64_t) (c->rtarget.connect_timeout_ms + c->rtarget.timeout_ms + 500) * 1000;

	if (!c->redis_enabled || h->opts.mode == DDICT_MANUAL ||
		atomic_load(&h->redis_key) == NULL || !c->thread_started)
		return;
	dd_event_signal(c->kick_fd);
	while (!atomic_load(&h->redis_settled) && dd_now_us() < until)
	{
		struct timespec ts = {0, 2 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
}
