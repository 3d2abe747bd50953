/*
 * libddict.h — the C client of ddict: a dict whose truth is a PostgreSQL
 * table, served from process memory.
 *
 *     #include <libddict.h>          cc app.c $(pkg-config --cflags --libs ddict)
 *
 * A handle (ddict *) caches one dict.  Reads are answered from an immutable
 * in-memory snapshot; depending on the sync mode, a read first asks the
 * server whether the dict changed (ddict_changes(): one round trip, zero rows
 * when nothing changed) and applies the changed keys.  Writes go through the
 * server's ddict_set()/ddict_delete()/... and the cache is brought forward by
 * a delta in the same round trip.
 *
 * Ownership, in one place (every function below repeats what applies to it):
 *   - Strings passed in (conninfo, dict, keys, values, options) are only read
 *     during the call; the library copies what it keeps.
 *   - A value returned through "char **value" is malloc'd for the caller, who
 *     frees it with ddict_free() (or free()); it is NUL-terminated after
 *     *len bytes for convenience, but may itself contain NULs.
 *   - Pointers returned through "const char **" by ddict_snapshot_*() point
 *     into a pinned snapshot and stay valid until ddict_unpin() of it; the
 *     caller must not free or modify them.
 *   - A PGconn given to ddict_open_conn() stays the application's: the
 *     library never closes or resets it.
 *   - ddict_errmsg() and ddict_strerror() return library-owned strings.
 *
 * Errors: functions return DDICT_OK (0) or a positive non-error status
 * (DDICT_NOTFOUND), or a negative DDICT_E* code; ddict_errmsg() then
 * describes the failure.  The library never exits, aborts or prints.
 *
 * Clients (since 1.2): a ddict_client is one connection to the server (at
 * most one to Redis, one background thread) shared by any number of dicts
 * opened on it with ddict_open_on(); ddict_open() makes a private client
 * for its one dict.  See "Clients" below.
 *
 * Threads: a handle may be shared by any number of threads.  Reads never
 * block on each other or on a reload; only one thread at a time talks to the
 * server for a handle.  ddict_close() must not race with other calls on the
 * same handle.  Snapshots may be passed between threads.  A handle in push
 * mode, or with a redis_url, has its client's background thread (signals
 * blocked): ddict_close() of a ddict_open() handle stops and joins it; on a
 * shared client it ends with the client's last dict.
 */
#ifndef LIBDDICT_H
#define LIBDDICT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DDICT_VERSION_MAJOR 1
#define DDICT_VERSION_MINOR 3
#define DDICT_VERSION_PATCH 0
#define DDICT_VERSION_STRING "1.3.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons */
#define DDICT_VERSION_NUM 10300

#if defined(__GNUC__)
#define DDICT_API __attribute__((visibility("default")))
#else
#define DDICT_API
#endif

/* libpq's connection type; declared here so that this header needs no libpq
 * headers (a repeated identical typedef is valid C11). */
typedef struct pg_conn PGconn;

typedef struct ddict ddict;                     /* a cached dict (opaque) */
typedef struct ddict_snapshot ddict_snapshot;   /* a pinned version (opaque) */

/* Return codes. */
enum
{
	DDICT_OK = 0,
	DDICT_NOTFOUND = 1,			/* not an error: the key is absent */
	DDICT_ERR = -1,				/* internal error or unexpected reply from the server */
	DDICT_ENOMEM = -2,			/* out of memory; nothing changed */
	DDICT_EINVAL = -3,			/* bad argument (NULL, a key with a NUL byte, ...) */
	DDICT_ECONN = -4,			/* the server is unreachable or the connection broke */
	DDICT_ESERVER = -5,			/* the server reported an error (message has SQLSTATE) */
	DDICT_ETIMEDOUT = -6,		/* no answer within timeout_ms / connect_timeout_ms */
	DDICT_EBUSY = -7,			/* the call cannot run now (from a change callback of
								 * the same client; borrowed connection not idle) */
	DDICT_ERANGE = -8,			/* ddict_get_buf(): the buffer is too small */
	DDICT_EIO = -9				/* snapshot file could not be read or written */
};

/* Pass as a length to mean "NUL-terminated, use strlen()". */
#define DDICT_NTS ((size_t) -1)

typedef enum ddict_mode
{
	DDICT_AUTOSYNC = 0,			/* every read first checks the version (default) */
	DDICT_MANUAL = 1,			/* reads never touch the network; ddict_sync() refreshes */
	DDICT_INTERVAL = 2,			/* reads check at most once per interval_ms */
	DDICT_PUSH = 3				/* reads never touch the network; a thread of the handle
								 * syncs when Redis announces a new version (SUBSCRIBE),
								 * and polls the server every interval_ms while it
								 * cannot (Redis unreachable, or no redis_url) */
} ddict_mode;

/*
 * One change applied to the cache, given to the change callback.  old_value
 * is NULL when the key was absent, new_value is NULL when it was deleted.
 * All pointers are valid only during the callback.
 */
typedef struct ddict_change
{
	int64_t		version;		/* the version the cache moved to */
	const char *key;
	size_t		keylen;
	const char *old_value;
	size_t		old_len;
	const char *new_value;
	size_t		new_len;
} ddict_change;

/*
 * Called, in the thread that applies a reload (in push mode, and for checks
 * a reader handed over on a shared client: the client's
 * thread, for the changes it applies), once per key whose value
 * changed, after the new snapshot is published (so reads from the callback
 * see it).  The callback may read from the handle and from the other dicts
 * of its client (they serve their snapshots without a check meanwhile).
 * Calls that need the client's connection — ddict_sync(), ddict_set() and
 * the other writes, ddict_save_snapshot() on ANY dict of the same client,
 * ddict_client_sync() and ddict_open_on() of that client — return
 * DDICT_EBUSY (NULL for ddict_open_on) from it: the thread that runs the
 * callback holds the client's locks.  Hand such work to another thread.
 * Keep it short: other threads' version checks wait while it runs (their
 * reads do not).  Never call ddict_close() of a dict of the same client
 * from it.
 */
typedef void (*ddict_change_fn) (const ddict_change *change, void *arg);

/*
 * Options.  Initialise with ddict_options_init() and then set fields, so that
 * every field has its default.  Strings are copied by ddict_open().  (This
 * struct and ddict_stats only grow at their end; 1.1 appended fields to
 * both, so a program built against the 1.0 header must be rebuilt before it
 * runs with 1.1.)
 */
typedef struct ddict_options
{
	ddict_mode	mode;				/* default DDICT_AUTOSYNC */
	unsigned	interval_ms;		/* DDICT_INTERVAL: at most one check per this;
									 * DDICT_PUSH: polling period while not subscribed
									 * to Redis, and Redis PING period (1000) */
	unsigned	timeout_ms;			/* longest wait for the server to make progress (the
									 * next reply or row); 0 = forever (5000) */
	unsigned	connect_timeout_ms;	/* whole connection attempt; 0 = forever (5000) */
	unsigned	backoff_min_ms;		/* first reconnect delay after a failed attempt (100) */
	unsigned	backoff_max_ms;		/* reconnect delay cap; doubles up to it (5000) */
	const char *snapshot_path;		/* optional snapshot file, see ddict_open() (NULL) */
	unsigned	snapshot_interval_ms;	/* at most one snapshot file write per this (10000) */
	ddict_change_fn on_change;		/* optional change callback (NULL) */
	void	   *on_change_arg;
	/* Since 1.1: Redis as the version source (the server's ddict.redis_url
	 * publishes there).  "redis://[[user]:password@]host[:port][/db]" or
	 * "unix:///path[?db=N]"; NULL or "" = none.  Autosync and interval checks
	 * then GET the version from Redis and reach the server only when it
	 * differs; push mode SUBSCRIBEs to it; manual mode ignores it. */
	const char *redis_url;			/* (NULL) */
	const char *redis_prefix;		/* as the server's ddict.redis_prefix; NULL = "ddict:" */
} ddict_options;

DDICT_API void ddict_options_init(ddict_options *opts);

/*
 * Open a dict by connection string (libpq syntax; NULL or "" means libpq's
 * defaults and PG* environment variables) and load it in full.  dict is a
 * table name as regclass spells it: "settings", "app.settings",
 * "\"We\"\"ird\"".  opts may be NULL for defaults.
 *
 * Returns a handle the caller closes with ddict_close(), or NULL with
 * ddict_errmsg() set.  When the server cannot be reached and
 * opts->snapshot_path names a readable snapshot file of this dict, the handle
 * starts from that file instead: reads serve it, ddict_is_stale() is true,
 * and the handle reconnects by itself.  The file is (re)written from fresh
 * data at most every snapshot_interval_ms and at ddict_close(), and never
 * replaced by an older version than it holds.
 *
 * The ddict extension's schema is found through pg_extension; dict names are
 * resolved with the connection's search_path.
 */
DDICT_API ddict *ddict_open(const char *conninfo, const char *dict,
							const ddict_options *opts);

/*
 * Same, on the application's own connection, which stays the application's
 * (never closed, reset or reconfigured; not reconnected either — if it
 * breaks, reads serve the last snapshot until the application resets it).
 * The library uses it only while it is idle (not in a transaction, not in
 * pipeline mode), and returns DDICT_EBUSY otherwise.  The application must not
 * use the connection concurrently with calls on this handle; in autosync and
 * interval modes every read may use it.  Push mode is refused (DDICT_EINVAL):
 * its thread would use the connection at any time.
 */
DDICT_API ddict *ddict_open_conn(PGconn *conn, const char *dict,
								 const ddict_options *opts);

/* Close the handle and its connection (unless borrowed).  Pinned snapshots
 * stay valid until unpinned.  NULL is allowed.  A handle opened on a
 * client leaves the client open for its other dicts. */
DDICT_API void ddict_close(ddict *d);

/* ---- Clients: many dicts on one connection (since 1.2) ---- */

typedef struct ddict_client ddict_client;	/* opaque */

/*
 * Options of a client; initialise with ddict_client_options_init().  The
 * per-dict options of ddict_open_on() that concern the connection
 * (timeout_ms, connect_timeout_ms, backoff_*, redis_url, redis_prefix) are
 * ignored there: the client's apply to all its dicts.  (New fields are only
 * ever appended; size tells the library which of them the caller knows.)
 */
typedef struct ddict_client_options
{
	size_t		size;				/* sizeof(ddict_client_options), set by _init() */
	unsigned	timeout_ms;			/* as ddict_options (5000) */
	unsigned	connect_timeout_ms;	/* (5000) */
	unsigned	backoff_min_ms;		/* (100) */
	unsigned	backoff_max_ms;		/* (5000) */
	unsigned	interval_ms;		/* push mode: polling period while not subscribed
									 * to Redis, and Redis PING period (1000) */
	const char *redis_url;			/* as ddict_options: the client's one Redis
									 * connection (NULL) */
	const char *redis_prefix;		/* (NULL = "ddict:") */
	int			direct;				/* 1: the connection goes straight to PostgreSQL
									 * (no transaction pooler in between): the check
									 * is prepared once per connection.  0 (default):
									 * unnamed statements only, which work through
									 * pgbouncer in any pool mode */
	/* Since 1.2: the server's versions page (README "The versions page"),
	 * which answers autosync checks with a few memory loads while nothing
	 * changed.  NULL or "" (default): the page beside the server's Unix
	 * socket when the connection goes through one; "off": never; else the
	 * page's path.  A page that cannot be read is silently not used.  NULL
	 * or "" take the environment variable DDICT_VERSIONS_PAGE if set (the
	 * same values), which also applies to ddict_open()'s own clients. */
	const char *versions_page;
	/* Since 1.3: when every dict of the client follows published changes
	 * (push mode, README "Published changes") and the PostgreSQL connection
	 * was not used for idle_close_ms, the client's thread closes it; the
	 * next check (a gap in a stream, a marker), write or open reconnects.
	 * For fleets: 1,000 idle processes then hold no server connection.
	 * 0 (default): the connection stays open. */
	unsigned	idle_close_ms;
} ddict_client_options;

DDICT_API void ddict_client_options_init(ddict_client_options *opts);

/*
 * A client for conninfo (as ddict_open()).  Nothing is sent until the first
 * ddict_open_on(); returns NULL only for bad options or no memory.  The
 * client holds one PostgreSQL connection for all its dicts (a full load of a
 * dict opened while others are open runs on a short-lived second one, so
 * that it never stalls their checks), at most one Redis connection, and one
 * background thread once a dict needs it (push mode, redis_url, or more
 * than one dict).  Autosync and interval checks of several dicts that fall
 * due together go in one round trip.  Reads never wait for the connection:
 * a read that finds it busy serves the snapshot and leaves its check to the
 * connection's holder or the client's thread.
 */
DDICT_API ddict_client *ddict_client_open(const char *conninfo,
										  const ddict_client_options *opts);

/* Open a dict on the client (as ddict_open(); push mode included). */
DDICT_API ddict *ddict_open_on(ddict_client *client, const char *dict,
							   const ddict_options *opts);

/*
 * ddict_sync() of every dict of the client: one round trip while nothing
 * changed, a second one for the dicts that did (per 256 dicts; dicts whose
 * check is in flight in another thread are left to it).  Returns the number
 * of dicts that changed, or the first error (all dicts are still checked).
 */
DDICT_API int ddict_client_sync(ddict_client *client);

/*
 * Close the application's reference.  The connection and the thread end
 * when the client's last dict is closed too (so dicts may be closed before
 * or after).  NULL is allowed.
 */
DDICT_API void ddict_client_close(ddict_client *client);

/* ---- Reads (each is one "read" for the sync mode) ---- */

/*
 * Look key up.  Returns DDICT_OK and a copy of the value in *value (malloc'd,
 * the caller frees it with ddict_free(); NUL-terminated after *len bytes), or
 * DDICT_NOTFOUND (*value = NULL, *len = 0), or a negative error.  value may
 * be NULL to test presence only.  keylen may be DDICT_NTS.
 */
DDICT_API int ddict_get(ddict *d, const char *key, size_t keylen,
						char **value, size_t *len);

/*
 * Copy the value into buf.  Returns DDICT_OK, DDICT_NOTFOUND, or DDICT_ERANGE
 * when bufsize is too small (nothing copied); *len is always set to the
 * value's length when the key exists.
 */
DDICT_API int ddict_get_buf(ddict *d, const char *key, size_t keylen,
							void *buf, size_t bufsize, size_t *len);

/* Number of keys; negative error code on failure. */
DDICT_API int64_t ddict_len(ddict *d);

/*
 * Call fn for every key/value of one consistent version, in no particular
 * order, until fn returns non-zero (which is then returned).  Pointers are
 * valid during the call only.
 */
typedef int (*ddict_foreach_fn) (void *arg, const char *key, size_t keylen,
								 const char *value, size_t len);
DDICT_API int ddict_foreach(ddict *d, ddict_foreach_fn fn, void *arg);

/* ---- Pinned snapshots: one consistent version for many reads ---- */

/*
 * Sync according to the mode, then pin the current version.  Never fails for
 * a valid handle (a failed check pins the last good snapshot); NULL only for
 * a NULL handle.  Pinning takes no allocation.  The snapshot is immutable; every pointer obtained from it is valid until
 * ddict_unpin(), which may happen in any thread and after ddict_close().
 * Lookups on it never touch the network and are zero-copy.
 */
DDICT_API ddict_snapshot *ddict_pin(ddict *d);
DDICT_API void ddict_unpin(ddict_snapshot *s);

DDICT_API int ddict_snapshot_get(const ddict_snapshot *s, const char *key,
								 size_t keylen, const char **value, size_t *len);
DDICT_API size_t ddict_snapshot_len(const ddict_snapshot *s);
DDICT_API int64_t ddict_snapshot_version(const ddict_snapshot *s);

/*
 * Iterate: start with *pos = 0; each call that returns 1 yields one item and
 * advances *pos; 0 means the end.  Unordered.
 */
DDICT_API int ddict_snapshot_next(const ddict_snapshot *s, size_t *pos,
								  const char **key, size_t *keylen,
								  const char **value, size_t *len);

/* ---- Sync and state ---- */

/*
 * Ask the server now (any mode).  Returns 1 when a new version was applied, 0
 * when the dict was unchanged, or a negative error (the cache keeps serving
 * the last snapshot).  Blocks while another thread's check of this handle is
 * in flight, then makes its own.
 */
DDICT_API int ddict_sync(ddict *d);

/* Version of the current snapshot (no network). */
DDICT_API int64_t ddict_version(ddict *d);

/* 1 when the last check failed (or the handle started from a snapshot file
 * and has not reached the server yet): reads may be stale. */
DDICT_API int ddict_is_stale(ddict *d);

typedef struct ddict_stats
{
	uint64_t	reads;			/* ddict_get/get_buf/len/foreach/pin calls */
	uint64_t	hits;			/* get/get_buf that found the key */
	uint64_t	misses;			/* get/get_buf that did not */
	uint64_t	checks;			/* ddict_changes round trips */
	uint64_t	unchanged;		/* checks that found the version unchanged */
	uint64_t	deltas;			/* delta reloads applied */
	uint64_t	reloads;		/* full reloads applied (the initial load included) */
	uint64_t	rows_fetched;	/* key rows received (header rows not counted) */
	uint64_t	writes;			/* writes the server executed */
	uint64_t	errors;			/* failed connects, checks and writes */
	uint64_t	reconnects;		/* connections made after the first */
	uint64_t	coalesced;		/* autosync reads served without their own check
								 * because another thread's check was in flight */
	uint64_t	compactions;	/* delta overlays merged into a new base table */
	int64_t		version;		/* of the current snapshot */
	int64_t		epoch;			/* the server's epoch it came from */
	uint64_t	len;			/* keys in the current snapshot */
	int			stale;			/* as ddict_is_stale() */
	int			connected;		/* a connection is established */
	int64_t		staleness_ms;	/* ms since the cache was last known current */
	char		last_error[256];	/* message of the handle's last error, "" if none */
	/* Since 1.1 (redis_url / push mode): */
	uint64_t	redis_checks;	/* version checks answered by Redis (GET) */
	uint64_t	redis_errors;	/* failed Redis connects, GETs and subscriptions */
	uint64_t	pushes;			/* version messages received from Redis (push mode) */
	int			redis;			/* 1 while Redis is the version source (connected;
								 * push mode: subscribed), 0 while falling back to
								 * the server */
	/* Since 1.2: */
	int			versions_page;	/* 1 while autosync checks are answered by the
								 * server's versions page (same host), 0 while
								 * they are round trips */
} ddict_stats;

/* Fill *out; counters are monotonic since ddict_open(). */
DDICT_API int ddict_get_stats(ddict *d, ddict_stats *out);

/* Write the snapshot file now (opts.snapshot_path must be set). */
DDICT_API int ddict_save_snapshot(ddict *d);

/* ---- Writes: through the server, then the cache moves forward ---- */

/*
 * Writes run the server functions in their own transaction (autocommit) and,
 * in the same round trip, fetch the delta that includes them, so the cache
 * reflects the write (and every change committed before it) when the call
 * returns.  A connection lost during a write returns DDICT_ECONN and the
 * write may or may not have been applied.  Writes never retry on their own.
 *
 * Values are bytes.  For a bytea dict they are sent hex-encoded, so any bytes
 * work; for text/jsonb dicts they are text (no NUL bytes; jsonb must parse).
 */
DDICT_API int ddict_set(ddict *d, const char *key, size_t keylen,
						const void *value, size_t len);

/* DDICT_OK when the key existed and was deleted, DDICT_NOTFOUND otherwise. */
DDICT_API int ddict_delete(ddict *d, const char *key, size_t keylen);

/* Delete and return the old value (malloc'd, caller frees with ddict_free()),
 * or DDICT_NOTFOUND. value may be NULL. */
DDICT_API int ddict_pop(ddict *d, const char *key, size_t keylen,
						char **value, size_t *len);

/* Insert key with def unless present (atomically on the server); return the
 * value now stored (malloc'd, caller frees; value may be NULL). */
DDICT_API int ddict_setdefault(ddict *d, const char *key, size_t keylen,
							   const void *def, size_t deflen,
							   char **value, size_t *len);

/* ---- Misc ---- */

/* Free a value returned by the library.  NULL is allowed. */
DDICT_API void ddict_free(void *p);

/* Message of the last call that failed in the calling thread (thread-local;
 * valid until this thread's next failing ddict call); "" if none. */
DDICT_API const char *ddict_errmsg(void);

/* Static description of a return code. */
DDICT_API const char *ddict_strerror(int code);

/* The library's version at run time, e.g. "1.0.0". */
DDICT_API const char *ddict_version_string(void);

#ifdef __cplusplus
}
#endif

#endif							/* LIBDDICT_H */
