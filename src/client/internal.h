/*
 * internal.h — libddict's private declarations.
 *
 * Files, by concern:
 *   error.c     return codes, thread-local messages, the handle's last error
 *   hash.c      SipHash-1-3 (keyed: crafted keys cannot flood a table)
 *   table.c     arena + open-addressing hash table, immutable once published
 *   snapshot.c  a version of the dict: shared base table + small overlay;
 *               building the next snapshot from a delta or a full reload
 *   guard.c     read-side sections that let a reload free the old snapshot
 *               without readers ever taking a lock
 *   conn.c      the libpq connection: non-blocking I/O with deadlines,
 *               reconnect with backoff
 *   sync.c      the ddict_changes() protocol: check, delta, full, publish
 *   write.c     set / delete / pop / setdefault
 *   snapfile.c  the optional snapshot file
 *   redis.c     Redis as a version source: GET for reads' checks, the
 *               handle's thread (reconnects; push mode's SUBSCRIBE)
 *   api.c       open / close / reads / pins / stats
 */
#ifndef LIBDDICT_INTERNAL_H
#define LIBDDICT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "libddict.h"

#define DD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define DD_LIKELY(x) __builtin_expect(!!(x), 1)
#define DD_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- hash.c ---- */
uint64_t	dd_hash(const uint64_t key[2], const void *data, size_t len);
void		dd_random_key(uint64_t key[2]);

/* ---- table.c ---- */

/*
 * An entry: key bytes, NUL, value bytes, NUL — both NUL-terminated so that
 * text values can be used as C strings, while lengths keep binary values
 * intact.  vlen == DD_TOMB marks a deleted key (only in overlays).
 */
#define DD_TOMB UINT32_MAX
#define DD_MAX_LEN (UINT32_MAX - 1)

typedef struct dd_entry
{
	uint32_t	klen;
	uint32_t	vlen;
	char		data[];
} dd_entry;

static inline const char *
dd_entry_key(const dd_entry *e)
{
	return e->data;
}

static inline const char *
dd_entry_value(const dd_entry *e)
{
	return e->data + e->klen + 1;
}

static inline bool
dd_entry_is_tomb(const dd_entry *e)
{
	return e->vlen == DD_TOMB;
}

typedef struct dd_chunk dd_chunk;

/* Bump allocator: entries are freed all at once with their table. */
typedef struct dd_arena
{
	dd_chunk   *head;
	size_t		next_size;
	size_t		bytes;			/* allocated, for accounting */
} dd_arena;

typedef struct dd_slot
{
	uint64_t	hash;
	const dd_entry *e;			/* NULL: empty slot */
} dd_slot;

/*
 * Open addressing with linear probing over a power-of-two array, at most 3/4
 * full.  Written by one thread while it is being built, then only read (no
 * deletions: a changed table is a new table), so lookups need no
 * synchronisation beyond the release/acquire of the snapshot pointer.
 */
typedef struct dd_table
{
	atomic_size_t refs;			/* a base table is shared by snapshots */
	dd_slot    *slots;
	size_t		mask;			/* capacity - 1 */
	size_t		used;			/* occupied slots (tombstones included) */
	size_t		live;			/* entries that are not tombstones */
	dd_arena	arena;
} dd_table;

dd_table   *dd_table_new(size_t expect);
void		dd_table_ref(dd_table *t);
void		dd_table_unref(dd_table *t);
const dd_entry *dd_table_find(const dd_table *t, uint64_t hash,
							  const char *key, size_t klen);
/* Insert or replace; copies the bytes.  vlen == DD_TOMB: a tombstone. */
int			dd_table_put(dd_table *t, uint64_t hash, const char *key, size_t klen,
						 const char *val, size_t vlen);

static inline int
dd_table_put_entry(dd_table *t, uint64_t hash, const dd_entry *e)
{
	return dd_table_put(t, hash, dd_entry_key(e), e->klen,
						dd_entry_is_tomb(e) ? NULL : dd_entry_value(e), e->vlen);
}

static inline size_t
dd_table_capacity(const dd_table *t)
{
	return t->mask + 1;
}

/* ---- snapshot.c ---- */

/*
 * A snapshot: one version of the dict, immutable once published.  Contents
 * are base + overlay: the overlay holds keys changed by deltas since the base
 * was built (tombstones for deleted keys), so that a delta of k keys costs
 * O(k + overlay) instead of copying the whole dict.  When the overlay grows
 * past ~4 sqrt(n) entries it is merged into a new base (a compaction), which
 * keeps both the per-delta cost and the amortised cost per changed key low.
 */
struct ddict_snapshot
{
	atomic_size_t refs;			/* the handle's reference + pins */
	dd_table   *base;			/* never NULL; shared */
	dd_table   *over;			/* NULL when empty; owned */
	size_t		len;			/* live keys */
	int64_t		version;
	int64_t		epoch;
	int64_t		cursor;
	uint32_t	relid;			/* OID of the relation the contents came from
								 * (ddict_changes()'s header); 0: unknown (a
								 * 1.0 server, an old snapshot file) */
	uint64_t	seed[2];		/* hash key, copied so the snapshot outlives the handle */
};

ddict_snapshot *dd_snap_empty(const uint64_t seed[2]);
void		dd_snap_ref(ddict_snapshot *s);
void		dd_snap_unref(ddict_snapshot *s);
/* NULL when absent (tombstones hidden). */
const dd_entry *dd_snap_find(const ddict_snapshot *s, uint64_t hash,
							 const char *key, size_t klen);

/* Building the next snapshot from ddict_changes() rows. */
typedef struct dd_build
{
	const ddict_snapshot *old;	/* the snapshot the delta applies to */
	bool		full;
	dd_table   *tab;			/* full: the new base; delta: the changes */
	uint64_t	seed[2];
	size_t		rows;
	bool		compacted;
	bool		from_file;		/* not a reload: do not count it */
} dd_build;

int			dd_build_begin(dd_build *b, const ddict_snapshot *old, bool full,
						   const uint64_t seed[2]);
/* val == NULL: the key was deleted. */
int			dd_build_row(dd_build *b, const char *key, size_t klen,
						 const char *val, size_t vlen);
int			dd_build_finish(dd_build *b, int64_t version, int64_t epoch,
							int64_t cursor, ddict_snapshot **out);
void		dd_build_free(dd_build *b);

/* Calls fn for every key whose value differs between old and new.  When
 * changes is given (a delta), only its keys are compared. */
void		dd_snap_diff(const ddict_snapshot *old, const ddict_snapshot *new,
						 const dd_table *changes, ddict_change_fn fn, void *arg);

/* ---- guard.c ---- */

#define DD_GUARD_SLOTS 64
#define DD_CACHELINE 64

typedef struct dd_reader_slot
{
	_Alignas(DD_CACHELINE) atomic_uint_fast64_t active[2];
	atomic_uint_fast64_t reads;
	atomic_uint_fast64_t hits;
	atomic_uint_fast64_t misses;
	atomic_uint_fast64_t coalesced;
} dd_reader_slot;

typedef struct dd_guard
{
	_Alignas(DD_CACHELINE) atomic_uint phase;
	dd_reader_slot slots[DD_GUARD_SLOTS];
	/* reclaimer state: only the thread holding sync_lock */
	uint64_t	started;		/* grace rounds begun */
	uint64_t	completed;		/* grace rounds observed complete */
	bool		in_round;
	struct dd_retired *limbo;	/* retired objects not yet freed */
	size_t		nlimbo;
} dd_guard;

dd_reader_slot *dd_guard_enter(dd_guard *g, unsigned *phase);
void		dd_guard_exit(dd_reader_slot *slot, unsigned phase);
/* Free obj with free_fn once no reader can still see it (maybe later). */
int			dd_guard_retire(dd_guard *g, void *obj, void (*free_fn) (void *));
/* Free everything retired, waiting for readers if needed. */
void		dd_guard_drain(dd_guard *g);

/* ---- the handle ---- */

typedef struct dd_conn
{
	PGconn	   *pg;
	bool		borrowed;
	char	   *conninfo;		/* own connections: how to reconnect */
	char	   *schema;			/* quoted schema of the extension */
	bool		bytea;			/* the dict's value type is bytea (or a domain of it) */
	bool		ever_connected;
	int64_t		next_attempt_us;	/* own, disconnected: not before (monotonic) */
	unsigned	backoff_ms;		/* delay after the next failed attempt */
	char	   *sql[5];			/* statements, schema-qualified (DD_SQL_*) */
	bool		prepared;		/* DD_PREPARED_CHANGES exists on this connection */
	bool		changes_rel;	/* the server's ddict_changes() takes since_dict
								 * and names the relation (extension 1.1+) */
} dd_conn;

#define DD_PREPARED_CHANGES "libddict_changes"

/* Parameters of DD_SQL_CHANGES: dict, version, epoch, cursor [, since_dict]. */
static inline int
dd_changes_nparams(const dd_conn *c)
{
	return c->changes_rel ? 5 : 4;
}

enum
{
	DD_SQL_CHANGES, DD_SQL_SET, DD_SQL_DELETE, DD_SQL_POP, DD_SQL_SETDEFAULT
};

/* ---- redis.c (types; functions below) ---- */

/* A parsed redis_url.  Pointers point into buf. */
typedef struct dd_redis_target
{
	char	   *buf;
	const char *host;			/* NULL: a unix socket */
	const char *port;			/* decimal, for getaddrinfo() */
	const char *path;			/* unix socket */
	const char *user;			/* NULL: AUTH password (or no AUTH) */
	const char *password;		/* NULL: no AUTH */
	int			db;
	char		desc[128];		/* host:port or the path, for messages (no password) */
} dd_redis_target;

typedef struct dd_rconn dd_rconn;	/* one Redis connection (redis.c) */

typedef struct dd_redis
{
	bool		enabled;		/* redis_url given */
	dd_redis_target target;
	char	   *prefix;
	_Atomic(char *) key;		/* prefix + "db:schema.table"; set once, by the
								 * first session (sync_lock), freed with the handle */

	/* The handle's thread (push mode, or any mode with Redis). */
	bool		thread_started;
	pthread_t	thread;
	int			kick_fd;		/* eventfd: wake the thread (connection lost,
								 * key known) */
	int64_t		next_attempt_us;	/* the thread's: next Redis attempt */
	unsigned	backoff_ms;		/* the thread's: delay after the next failure */
	dd_rconn   *sub;			/* push mode: the subscription (the thread's) */

	/* Autosync/interval: the thread connects, checks use the connection. */
	pthread_mutex_t lock;
	dd_rconn   *ready;			/* lock: made by the thread, not taken yet */
	bool		taken;			/* lock: the sync side holds a connection */
	dd_rconn   *get;			/* sync_lock: the connection checks use */
	atomic_int	bad_replies;	/* checks' GETs that met a misbehaving server in
								 * a row: the thread reconnects with backoff */

	atomic_bool used;			/* stats.redis */
} dd_redis;

struct ddict
{
	/* Read side: every read touches these. */
	_Atomic(ddict_snapshot *) current;
	dd_guard	guard;

	ddict_options opts;			/* snapshot_path points to our copy */
	char	   *dict;
	uint64_t	seed[2];

	/* Sync side: only the thread holding sync_lock (dd_lock/dd_unlock). */
	pthread_mutex_t sync_lock;
	atomic_bool busy;			/* sync_lock is held: readers need not try it */
	dd_conn		conn;
	int64_t		snapfile_written_us;	/* monotonic; 0 = never */
	int64_t		snapfile_version;	/* version last written; INT64_MIN none */

	/* Read by readers without the lock. */
	atomic_int_fast64_t last_check_us;	/* last check attempt (interval mode) */
	atomic_int_fast64_t last_ok_us;	/* last successful check */
	atomic_int_fast64_t retry_at_us;	/* disconnected: no attempt before */
	atomic_bool stale;
	atomic_bool connected;

	/* Counters (readers' counters live in the guard's slots). */
	atomic_uint_fast64_t checks, unchanged, deltas, reloads, rows, writes,
				errors, reconnects, compactions, redis_checks, redis_errors, pushes;

	/* Redis and the handle's thread. */
	dd_redis	redis;
	int			stop_fd;		/* eventfd written by ddict_close() and never
								 * drained: every wait of the thread ends; -1 */
	atomic_bool closing;

	pthread_mutex_t err_lock;
	char		last_error[256];
};

/* ---- error.c ---- */
int			dd_seterr(int code, const char *fmt, ...) DD_PRINTF(2, 3);
int			dd_fail(ddict *h, int code, const char *fmt, ...) DD_PRINTF(3, 4);
/* The handle's last error only (no counter, no thread-local message): for
 * failures that no call returns (Redis, the handle's thread). */
void		dd_note(ddict *h, const char *fmt, ...) DD_PRINTF(2, 3);
void		dd_strlcpy(char *dst, const char *src, size_t size);

/* ---- time ---- */
int64_t		dd_now_us(void);		/* CLOCK_MONOTONIC */

/* ---- conn.c ---- */
/* Wait until fd is ready for events, or deadline (monotonic us, INT64_MAX:
 * none), or stop_fd (>= 0) is readable: DDICT_OK, DDICT_ETIMEDOUT,
 * DDICT_ECONN (poll failed) or DD_STOPPED. */
#define DD_STOPPED (-100)
int			dd_wait_fd(int fd, short events, int64_t deadline, int stop_fd);
int			dd_conn_init_own(dd_conn *c, const char *conninfo);
void		dd_conn_init_borrowed(dd_conn *c, PGconn *pg);
void		dd_conn_close(dd_conn *c);
/* Connected and usable now?  Connects when the backoff allows (or when
 * force: an explicit ddict_sync() or ddict_open()). */
int			dd_conn_ensure(ddict *h, bool force);
int			dd_conn_flush(ddict *h);
/* Next result of the current query; NULL at its end or on error (*rc).
 * Waits at most timeout_ms for the server to make progress. */
PGresult   *dd_conn_next(ddict *h, int *rc);
/* A failed round trip: classify, drop an own broken connection. */
int			dd_conn_failed(ddict *h, int rc, const char *what, const PGresult *res);
int64_t		dd_conn_deadline(const ddict *h);
/* After an operation: hand a borrowed connection back idle. */
void		dd_conn_settle(ddict *h);
bool		dd_conn_ok(const dd_conn *c);

/* ---- sync.c ---- */
void		dd_lock(ddict *h);
void		dd_unlock(ddict *h);
/* Caller holds sync_lock.  Returns 1 changed, 0 unchanged, < 0 error. */
int			dd_sync_locked(ddict *h, bool force_full);
/* Send ddict_changes() for the current snapshot (or in full). */
int			dd_send_changes(ddict *h, bool full);
/* Receive its rows; builds *out (NULL when unchanged).  *refull: the
 * header asks for a full reload (version went backwards). */
int			dd_recv_changes(ddict *h, ddict_snapshot **out,
							dd_build *b, bool *refull);
int			dd_publish(ddict *h, ddict_snapshot *snap, dd_build *b);
bool		dd_in_callback(const ddict *h);
/* Reads: check per the mode, never blocking on another thread's check. */
void		dd_maybe_sync(ddict *h);

/* Push mode: one sync by the handle's thread, honouring the reconnect
 * backoff.  Takes sync_lock. */
int			dd_sync_from_thread(ddict *h);

/* ---- redis.c ---- */
/* Parse opts->redis_url / redis_prefix into h->redis (at open). */
int			dd_redis_init(ddict *h, const char *url, const char *prefix);
/* The first session learnt the dict's name: set the key (once). */
void		dd_redis_set_name(ddict *h, const char *db, const char *schema,
							  const char *table);
/* After the first load: first connection (or subscription), then the thread. */
int			dd_redis_start(ddict *h);
/* Stop and join the thread (close). */
void		dd_redis_stop(ddict *h);
/* Free connections, fds, strings (the thread is stopped). */
void		dd_redis_free(ddict *h);
/* A check's GET (sync_lock held): 1 and *version, 0 when Redis has no
 * version (key missing), or < 0 when Redis cannot answer now. */
int			dd_redis_get(ddict *h, int64_t *version);

/* ---- snapfile.c ---- */
int			dd_snapfile_write(ddict *h, const ddict_snapshot *s);
void		dd_snapfile_maybe_write(ddict *h);
int			dd_snapfile_read(const char *path, const char *dict,
							 const uint64_t seed[2], ddict_snapshot **out);

#endif							/* LIBDDICT_INTERNAL_H */
