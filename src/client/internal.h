/*
 * internal.h — libddict's private declarations.
 *
 * The files form a stack: each calls only files on lower lines (or its
 * own line's data layer), never up — test/client/layers.sh derives the call
 * graph from the object files and fails on any cycle.
 *
 *   error.c     return codes, thread-local messages, a handle's last error
 *   hash.c      SipHash-1-3 (keyed: crafted keys cannot flood a table)
 *   copy.c      parser of binary COPY streams of (key, value) rows (no I/O)
 *   io.c        clocks, bounded waits, event fds, backoff with jitter
 *               (shared by libpq and Redis)
 *   table.c     arena + open-addressing hash table, immutable once published
 *   snapshot.c  a version of the dict: shared base table + small overlay;
 *               building the next snapshot from a delta or a full reload
 *   guard.c     read-side sections that let a reload free the old snapshot
 *               without readers ever taking a lock
 *   snapfile.c  the optional snapshot file
 *   conn.c      libpq transport: connect, flush, results, failures
 *   rconn.c     Redis transport: socket, AUTH/SELECT, type-checked replies;
 *               the URL through ../common/redis_url.c (shared with the server)
 *   session.c   per connection: the extension's schema, statements, the
 *               prepared check (direct connections only); per dict: metadata
 *   redis.c     Redis commands: GET of versions, SUBSCRIBE, messages
 *   load.c      a full load by COPY (FORMAT binary) in one transaction
 *               (1.2 servers: ddict_full_begin, COPY, ddict_full_end)
 *   sync.c      the ddict_changes() protocol: checks of one or many dicts
 *               (a version probe, then one pipeline), full loads, publish;
 *               the reads' checks
 *   write.c     set / delete / pop / setdefault
 *   stream.c    published changes: applies the deliveries worker.c's
 *               subscription hands it, reads dicts' Redis Streams to catch
 *               up (XREAD on a connection of its own), by the README's
 *               contiguity rule, or hands the dict to a PostgreSQL check
 *   worker.c    the client's one thread: Redis connection, push mode,
 *               checks that readers handed over, polling
 *   api.c       clients and handles: open / close / reads / pins / stats
 *   vpage.c     reader of the server's versions page (self-contained: the
 *               bottom layer; sync.c answers autosync checks with it)
 *
 * One client (dd_client, public ddict_client) per process serves any number
 * of dicts (ddict handles): one PostgreSQL connection, at most one Redis
 * connection, one thread.  Lock order: a dict's sync_lock, then the client's
 * lock (the connection), then its list_lock; a dict's sync_lock is only
 * ever trylocked by a thread that holds a later lock.  Readers never wait
 * for the connection: they trylock the dict's sync_lock and the client's
 * lock and serve the snapshot when either is busy (a reader that got both
 * takes list_lock for a moment to collect other dicts that are due).
 */
#ifndef LIBDDICT_INTERNAL_H
#define LIBDDICT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <libpq-fe.h>

#include "libddict.h"
#include "../common/redis_url.h"
#include "vpage.h"

#define DD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define DD_LIKELY(x) __builtin_expect(!!(x), 1)
#define DD_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- hash.c ---- */
uint64_t	dd_hash(const uint64_t key[2], const void *data, size_t len);
void		dd_random_key(uint64_t key[2]);

/* ---- copy.c ---- */

/*
 * A binary COPY stream of (key, value) rows, parsed as it is fed.  Feed a
 * piece, then call dd_copy_next() until it returns DD_COPY_MORE (feed the
 * next piece) or DD_COPY_END; dd_copy_finish() after the last piece.  Errors
 * (DDICT_ERR: malformed, message in err; DDICT_ENOMEM) are final.
 */
typedef struct dd_copy
{
	int			state;
	const char *win;			/* the data being parsed: a fed piece or own */
	size_t		winlen,
				winpos;
	char	   *own;			/* a row cut at a piece's end, until completed */
	size_t		ownlen,
				owncap;
	uint64_t	rows;
	char		err[120];
} dd_copy;

typedef struct dd_copy_row
{
	const char *key,
			   *val;			/* valid until the next call */
	size_t		klen,
				vlen;
} dd_copy_row;

#define DD_COPY_ROW 1
#define DD_COPY_MORE 2
#define DD_COPY_END 3

void		dd_copy_init(dd_copy *p);
void		dd_copy_free(dd_copy *p);
/* data must stay valid until dd_copy_next() asks for more; DDICT_EINVAL:
 * rows of the previous piece were not all taken. */
int			dd_copy_feed(dd_copy *p, const char *data, size_t n);
int			dd_copy_next(dd_copy *p, dd_copy_row *row);
/* At the end of the data: DDICT_OK when the stream was complete. */
int			dd_copy_finish(dd_copy *p);

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
static inline bool
dd_slot_matches(const dd_slot *s, uint64_t hash, const char *key, size_t klen)
{
	return s->hash == hash && s->e->klen == klen &&
		memcmp(dd_entry_key(s->e), key, klen) == 0;
}

/* Inline: it is most of a read (see guard.c's header on the read path). */
static inline const dd_entry *
dd_table_find(const dd_table *t, uint64_t hash, const char *key, size_t klen)
{
	size_t		i = (size_t) hash & t->mask;

	for (;;)
	{
		const dd_slot *s = &t->slots[i];

		if (s->e == NULL)
			return NULL;
		if (dd_slot_matches(s, hash, key, klen))
			return s->e;
		i = (i + 1) & t->mask;
	}
}
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
	int64_t		floor;			/* published changes (stream.c): a stream entry
								 * applies only when its cursor >= floor; the
								 * last PostgreSQL answer's "until", the
								 * entry's cursor after one; INT64_MAX unknown */
	uint64_t	seed[2];		/* hash key, copied so the snapshot outlives the handle */
};

ddict_snapshot *dd_snap_empty(const uint64_t seed[2]);
void		dd_snap_ref(ddict_snapshot *s);
void		dd_snap_unref(ddict_snapshot *s);
/* NULL when absent (tombstones hidden). */
static inline const dd_entry *
dd_snap_find(const ddict_snapshot *s, uint64_t hash, const char *key, size_t klen)
{
	const dd_entry *e;

	if (s->over && (e = dd_table_find(s->over, hash, key, klen)) != NULL)
		return dd_entry_is_tomb(e) ? NULL : e;
	return dd_table_find(s->base, hash, key, klen);
}

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

/*
 * Reader slots: DD_GUARD_SLOTS owned by one thread each (plain loads and
 * stores: no read-modify-write on the read path), and one more shared by the
 * threads beyond them (atomic adds).  See guard.c.
 */
#define DD_GUARD_SLOTS 64
#define DD_GUARD_SHARED DD_GUARD_SLOTS	/* index of the shared slot */
#define DD_CACHELINE 64

typedef struct dd_reader_slot
{
	_Alignas(DD_CACHELINE) atomic_uint_fast64_t ctr;	/* owned: odd while
														 * inside a section */
	atomic_uint_fast64_t active[2];	/* the shared slot: readers inside, per phase */
	atomic_uint_fast64_t reads;	/* reads other than gets (len, foreach, pin) */
	atomic_uint_fast64_t hits;
	atomic_uint_fast64_t misses;
	atomic_uint_fast64_t coalesced;
} dd_reader_slot;

typedef struct dd_guard
{
	_Alignas(DD_CACHELINE) atomic_uint phase;	/* of the shared slot */
	dd_reader_slot slots[DD_GUARD_SLOTS + 1];
	/* reclaimer state: only the thread holding sync_lock */
	uint64_t	started;		/* grace rounds begun */
	uint64_t	completed;		/* grace rounds observed complete */
	bool		in_round;
	uint64_t	seen[DD_GUARD_SLOTS];	/* owned slots' ctr at the round's start */
	struct dd_retired *limbo;	/* retired objects not yet freed */
	size_t		nlimbo;
} dd_guard;

/* This thread's slot index (DD_GUARD_SHARED when none is free), ~0u until
 * the first section; dd_guard_fence: readers' fence is only a compiler
 * barrier (the reclaimer calls membarrier()). */
extern _Thread_local unsigned dd_tl_slot __attribute__((tls_model("initial-exec")));
extern bool dd_guard_membarrier;
unsigned	dd_guard_thread_slot(void);
dd_reader_slot *dd_guard_enter_shared(dd_guard *g, unsigned *phase);

static inline dd_reader_slot *
dd_guard_enter(dd_guard *g, unsigned *phase)
{
	unsigned	t = dd_tl_slot;
	dd_reader_slot *s;
	uint_fast64_t c;

	if (DD_UNLIKELY(t >= DD_GUARD_SLOTS))
	{
		if (t == ~0u)
			t = dd_guard_thread_slot();
		if (t == DD_GUARD_SHARED)
			return dd_guard_enter_shared(g, phase);
	}
	s = &g->slots[t];
	c = atomic_load_explicit(&s->ctr, memory_order_relaxed);
	/* the store before the caller's (sequentially consistent) load of the
	 * current pointer: membarrier() orders it, else the store is seq_cst */
	if (DD_LIKELY(dd_guard_membarrier))
	{
		atomic_store_explicit(&s->ctr, c + 1, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
	}
	else
		atomic_store_explicit(&s->ctr, c + 1, memory_order_seq_cst);
	*phase = 2;
	return s;
}

static inline void
dd_guard_exit(dd_reader_slot *slot, unsigned phase)
{
	if (DD_LIKELY(phase == 2))
		atomic_store_explicit(&slot->ctr,
							  atomic_load_explicit(&slot->ctr, memory_order_relaxed) + 1,
							  memory_order_release);
	else
		atomic_fetch_sub(&slot->active[phase], 1);
}

/* Count one event in a reader's slot (its owner's plain add, or an atomic
 * add on the shared slot). */
static inline void
dd_slot_count(atomic_uint_fast64_t *ctr)
{
	if (DD_LIKELY(dd_tl_slot < DD_GUARD_SLOTS))
		atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + 1,
							  memory_order_relaxed);
	else
		atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
}

/* Free obj with free_fn once no reader can still see it (maybe later). */
int			dd_guard_retire(dd_guard *g, void *obj, void (*free_fn) (void *));
/* Free everything retired, waiting for readers if needed. */
void		dd_guard_drain(dd_guard *g);

/* ---- error.c ---- */
int			dd_seterr(int code, const char *fmt, ...) DD_PRINTF(2, 3);
int			dd_fail(ddict *h, int code, const char *fmt, ...) DD_PRINTF(3, 4);
/* The handle's last error only (no counter, no thread-local message): for
 * failures that no call returns (Redis, the client's thread). */
void		dd_note(ddict *h, const char *fmt, ...) DD_PRINTF(2, 3);
void		dd_strlcpy(char *dst, const char *src, size_t size);

/* ---- io.c ---- */
int64_t		dd_now_us(void);		/* CLOCK_MONOTONIC */
int64_t		dd_deadline_ms(unsigned ms);	/* 0: INT64_MAX (none) */
int			dd_poll_timeout(int64_t deadline);
/* Wait until fd is ready for events, or deadline (monotonic us, INT64_MAX:
 * none), or stop_fd (>= 0) is readable: DDICT_OK, DDICT_ETIMEDOUT,
 * DDICT_ECONN (poll failed) or DD_STOPPED. */
#define DD_STOPPED (-100)
int			dd_wait_fd(int fd, short events, int64_t deadline, int stop_fd);
void		dd_event_signal(int fd);
void		dd_event_drain(int fd);

typedef struct dd_backoff
{
	unsigned	ms;				/* delay after the next failure; 0: min_ms */
	int64_t		next_us;		/* no attempt before (monotonic) */
	unsigned	min_ms,
				max_ms;
	uint64_t	seed[2];		/* jitter */
} dd_backoff;

void		dd_backoff_init(dd_backoff *b, unsigned min_ms, unsigned max_ms);
void		dd_backoff_failed(dd_backoff *b);
void		dd_backoff_reset(dd_backoff *b);
bool		dd_backoff_due(const dd_backoff *b, int64_t now);

/* ---- conn.c: the libpq connection (transport) ---- */

enum
{
	DD_SQL_CHANGES, DD_SQL_SET, DD_SQL_DELETE, DD_SQL_POP, DD_SQL_SETDEFAULT, DD_SQL_PROBE,
	/* NULL when the server's extension lacks the function (session.c) */
	DD_SQL_UNCHANGED,			/* ddict_unchanged() (1.1) */
	DD_SQL_FULL_BEGIN,			/* ddict_full_begin() (1.2) */
	DD_SQL_FULL_END,			/* ddict_full_end() (1.2) */
	DD_SQL_PROBE_MANY,			/* ddict_unchanged_many() (1.2; on 1.3 for the
								 * names the packed probe cannot carry) */
	DD_SQL_N
};

#define DD_PREPARED_CHANGES "libddict_changes"
#define DD_PREPARED_PROBE "libddict_versions"
#define DD_PREPARED_UNCHANGED "libddict_unchanged"

/* Parameter types sent with DD_SQL_UNCHANGED (regclass, int8 x3, oid), the
 * 1.2 DD_SQL_PROBE (text[], oid[], int8[], int8[]) and the 1.3 one (bytea):
 * session.c */
extern const Oid dd_unchanged_types[5];
extern const Oid dd_probe_types[4];
extern const Oid dd_packed_types[1];

typedef struct dd_conn
{
	PGconn	   *pg;
	bool		borrowed;
	char	   *conninfo;		/* own connections: how to reconnect */
	unsigned	timeout_ms,
				connect_timeout_ms;
	int			stop_fd;		/* the client's: ends every wait; -1 */
	atomic_bool *closing;		/* the client's: for messages */
	dd_backoff	backoff;
	bool		ever_connected;
	atomic_bool connected;
	atomic_int_fast64_t retry_at_us;	/* readers: no attempt before */
	atomic_uint_fast64_t reconnects;
	int64_t		last_used_us;	/* last dd_session_ensure() that succeeded */
	/* session.c's, per connection */
	char	   *schema;			/* quoted schema of the extension */
	char	   *sql[DD_SQL_N];	/* statements, schema-qualified */
	bool		prepare;		/* allowed to prepare (talks to PostgreSQL directly) */
	bool		prepared;		/* DD_PREPARED_CHANGES exists on this connection */
	bool		session_rc;		/* direct: the session is READ COMMITTED */
	bool		changes_rel;	/* the server's ddict_changes() takes since_dict
								 * and names the relation (extension 1.1+) */
	bool		copy_full;		/* full loads by COPY (1.2+: load.c); then
								 * ddict_changes() answers 'f' with its header */
	bool		probe_many;		/* DD_SQL_PROBE is ddict_unchanged_many() (1.2+) */
	bool		probe_packed;	/* ... or ddict_unchanged_packed() (1.3+) */
	char	   *probe_buf;		/* the packed probe, kept for the next check */
	size_t		probe_cap;
	uint32_t	dboid;			/* the database's OID (0: unknown) */
	pthread_mutex_t cancel_lock;
	PGcancel   *cancel;			/* cancel_lock: of the own connection */
} dd_conn;

/* Parameters of DD_SQL_CHANGES: dict, version, epoch, cursor [, since_dict]. */
static inline int
dd_changes_nparams(const dd_conn *c)
{
	return c->changes_rel ? 5 : 4;
}

int			dd_conn_init_own(dd_conn *c, const char *conninfo, unsigned timeout_ms,
							 unsigned connect_timeout_ms, unsigned backoff_min_ms,
							 unsigned backoff_max_ms);
void		dd_conn_init_borrowed(dd_conn *c, PGconn *pg, unsigned timeout_ms);
void		dd_conn_close(dd_conn *c);
void		dd_conn_drop(dd_conn *c);
void		dd_conn_cancel(dd_conn *c);
void		dd_conn_free_sql(dd_conn *c);
bool		dd_conn_ok(const dd_conn *c);
int64_t		dd_conn_deadline(const dd_conn *c);
/* Connect an own connection (errors recorded on h, which may be NULL). */
int			dd_conn_connect(dd_conn *c, ddict *h);
/* After a successful connect + session setup / after a failed attempt. */
void		dd_conn_established(dd_conn *c);
void		dd_conn_attempt_failed(dd_conn *c);
int			dd_conn_flush(dd_conn *c);
/* Next result of the current query; NULL at its end or on error (*rc).
 * Waits at most timeout_ms for the server to make progress. */
PGresult   *dd_conn_next(dd_conn *c, int *rc);
/* A failed round trip: classify, drop an own broken connection. */
int			dd_conn_failed(dd_conn *c, ddict *h, int rc, const char *what,
						   const PGresult *res);
/* Run one statement (simple protocol when nparams < 0), keep its last result. */
int			dd_conn_exec(dd_conn *c, ddict *h, const char *sql, int nparams,
						 const char *const *params, PGresult **out, const char *what);
/* Read one query's results to its end (pipeline): 1 ok, or the first error
 * result in *err (caller clears). */
int			dd_conn_skip(dd_conn *c, PGresult **err, ExecStatusType want);
/* Expect the Sync that ends a pipeline segment. */
int			dd_conn_expect_sync(dd_conn *c);
/* The next CopyData of a COPY TO in progress: > 0 its length (*buf: free
 * with PQfreemem), 0 the COPY's data ended (collect its result with
 * dd_conn_next), or an error code (DDICT_ECONN, DDICT_ETIMEDOUT). */
int			dd_conn_copy_data(dd_conn *c, char **buf);
/* After an error inside BEGIN ... COMMIT (the COMMIT skipped): ROLLBACK, so
 * that the connection is idle again (a pooler's, an application's). */
void		dd_conn_end_txn(dd_conn *c);
/* After an operation: hand a borrowed connection back idle. */
void		dd_conn_settle(dd_conn *c);

/* ---- rconn.c: one Redis connection (transport) ---- */

typedef struct dd_rtarget
{
	ddict_redis_url url;
	unsigned	timeout_ms,
				connect_timeout_ms;
	int			stop_fd;
} dd_rtarget;

typedef struct dd_rconn dd_rconn;
typedef struct redisReply redisReply;

/* Connect, AUTH, SELECT.  err gets "Redis <where>: <why>". */
int			dd_rconn_open(const dd_rtarget *t, dd_rconn **out, char *err, size_t errsize);
void		dd_rconn_free(dd_rconn *c);
int			dd_rconn_fd(const dd_rconn *c);
/* Queue one command (NUL-terminated arguments, any number). */
int			dd_rconn_command(dd_rconn *c, int argc, const char **argv);
int			dd_rconn_flush(const dd_rtarget *t, dd_rconn *c, int64_t deadline,
						   char *err, size_t errsize);
/* Read what the socket has now: 1 read a full buffer (there may be more),
 * 2 read less (it is most likely drained), 0 nothing, < 0 closed/error. */
int			dd_rconn_fill(dd_rconn *c, char *err, size_t errsize);
/* A reply already read (*out NULL: none yet). */
int			dd_rconn_parsed(dd_rconn *c, redisReply **out, char *err, size_t errsize);
/* The next reply, waiting until deadline. */
int			dd_rconn_reply(const dd_rtarget *t, dd_rconn *c, redisReply **out,
						   int64_t deadline, char *err, size_t errsize);
void		dd_rconn_reply_free(redisReply *r);
/* Bytes buffered beyond the replies parsed (part of one, or another). */
bool		dd_rconn_buffered(const dd_rconn *c);
/* Before a command: nothing may be waiting (DDICT_ERR: unsolicited data,
 * DDICT_ECONN: closed). */
int			dd_rconn_idle(dd_rconn *c, char *err, size_t errsize);
/* Type checks: every reply is checked with these before it is used. */
bool		dd_reply_is_nil(const redisReply *r);
bool		dd_reply_is_error(const redisReply *r, const char **msg);
bool		dd_reply_is_bulk(const redisReply *r);
bool		dd_reply_is_status(const redisReply *r, const char *text);
bool		dd_reply_version(const redisReply *r, int64_t *v);
/* A pub/sub array of exactly n elements, the first the bulk string kind:
 * ["message", channel, payload], ["subscribe", channel, count],
 * ["pong", text].  channel / third (optional) point into it. */
bool		dd_reply_push(const redisReply *r, size_t n, const char *kind, const char **channel,
						  const redisReply **third);
/* Parse one whole RESP value from buf (nothing may follow it): DDICT_OK and
 * *out (free with dd_rconn_reply_free), DDICT_ERR malformed or cut. */
int			dd_resp_parse(const char *buf, size_t len, redisReply **out);

/* ---- session.c ---- */

/* What the server says about a dict (at open). */
typedef struct dd_dict_meta
{
	bool		bytea;
	char	   *key;			/* Redis key: prefix + "db:schema.table" (malloc'd) */
	char	   *stream_key;		/* its published changes' stream (ddict_published),
								 * NULL: not published (malloc'd) */
} dd_dict_meta;

/* Connected with a session set up (schema, statements)?  Connects when the
 * backoff allows (or when force).  Borrowed: checks it is idle. */
int			dd_session_ensure(dd_conn *c, ddict *h, bool force);
/* The dict's metadata: its value type, its Redis key (prefix NULL: none). */
int			dd_session_dict(dd_conn *c, ddict *h, const char *dict,
							const char *redis_prefix, dd_dict_meta *out);

/* ---- redis.c ---- */
/* GET each key in one round trip: rcs[i] 1 (versions[i] set) or 0 (no
 * key).  Returns < 0 when the connection must be dropped (err says why):
 * DDICT_ECONN it closed, DDICT_ETIMEDOUT no answer, DDICT_ERR a reply that
 * is not a version or nil (an error, another type, extra data) — Redis
 * misbehaves. */
int			dd_redis_get_many(const dd_rtarget *t, dd_rconn *c, const char *const *keys,
							  int n, int64_t *versions, int *rcs, char *err, size_t errsize);
/* Queue SUBSCRIBE key (answered later, as a "subscribe" message). */
int			dd_redis_subscribe(dd_rconn *c, const char *key);
/* GET keys (at most 64) to warn when nothing is published there:
 * present[i] 1 or 0; < 0 as dd_redis_get_many(). */
int			dd_redis_versions(const dd_rtarget *t, dd_rconn *c, const char *const *keys, int n,
							  int *present, char *err, size_t errsize);

/* ---- the client and its handles ---- */

typedef struct dd_client dd_client;

/* Push mode / Redis state of one dict (the client's thread's, under the
 * client's lock unless atomic). */
typedef enum
{
	DD_SUB_NONE, DD_SUB_SENT, DD_SUB_OK
} dd_sub_state;

struct ddict
{
	/* Read side: every read touches these. */
	_Atomic(ddict_snapshot *) current;
	dd_guard	guard;

	ddict_options opts;			/* snapshot_path points to our copy */
	char	   *dict;
	uint64_t	seed[2];
	dd_client  *client;
	bool		refull_due;		/* sync_lock: a write's delta did not apply */
	bool		meta_known;		/* sync_lock: bytea and redis_key are known */
	bool		bytea;			/* the dict's value type is bytea (or a domain of it) */
	_Atomic(char *) redis_key;	/* NULL: no Redis for this dict (yet); set
								 * once, freed with the handle */

	/* Sync side: only the thread holding sync_lock (dd_lock/dd_unlock). */
	pthread_mutex_t sync_lock;
	atomic_bool busy;			/* sync_lock is held: readers need not try it */
	int64_t		snapfile_written_us;	/* monotonic; 0 = never */
	int64_t		snapfile_version;	/* version last written; INT64_MIN none */

	/* Read by readers without the lock. */
	atomic_int_fast64_t last_check_us;	/* last check attempt (interval mode) */
	atomic_int_fast64_t last_ok_us;	/* last successful check */
	atomic_bool stale;
	atomic_bool want;			/* a reader found the connection busy: the
								 * client's thread checks this dict */

	/* The client's thread's (under the client's list_lock). */
	bool		listed;			/* in the client's list (both locks to change) */
	bool		pending;		/* push: a sync is due at sync_at */
	int64_t		sync_at;
	dd_sub_state sub;
	atomic_int_fast64_t pushed;	/* push/any mode: last version heard from
								 * Redis while subscribed; INT64_MIN none */
	atomic_bool redis_settled;	/* open waits for the first Redis attempt */
	/* Published changes (stream.c; set once at meta, then the thread's
	 * under the client's list_lock). */
	_Atomic(char *) stream_key;	/* NULL: the dict's changes are not published
								 * (or not a push dict): no stream */
	char		stream_id[48];	/* last entry id handled; "" none yet */
	bool		xs_ok;			/* followed: has a position in its stream */
	bool		xs_catchup;		/* deliveries may be missing: read the stream
								 * after stream_id (stream.c) */
	bool		xs_asked,		/* in the XREAD being answered */
				xs_again,		/* ... and to be read again (busy, full page) */
				xs_read;		/* read in this step's catch-up (its XREADs
								 * of XS_MAX streams each) */
	bool		xs_hold;		/* sent to PostgreSQL by an entry: resume
								 * after that check */
	atomic_uint_fast64_t stream_entries;	/* entries applied from the stream */
	atomic_uint_fast64_t stream_gaps;	/* entries that sent it to PostgreSQL */
	int64_t		xs_lag_version;	/* a version the version key showed and the
								 * stream has not brought yet; 0 none */
	int64_t		xs_lag_since;	/* when it was seen */
	int64_t		xs_ahead_since; /* the cache's version above the version
								 * key's since then; 0 not */
	atomic_bool subscribed;		/* stats.redis in push mode */

	/*
	 * The versions page's answer for this dict (sync.c): a seqlock-published
	 * record, written under sync_lock after the snapshot it describes was
	 * published, read by autosync readers without any lock.  vp_seq odd:
	 * being written; vp_index UINT32_MAX: no record.
	 */
	atomic_uint_fast64_t vp_seq;
	atomic_uint_fast32_t vp_index;
	atomic_uint_fast64_t vp_ident;	/* dboid << 32 | relid */
	atomic_uint_fast64_t vp_gen;
	atomic_uint_fast64_t vp_epoch;
	atomic_uint_fast64_t vp_version;
	atomic_int_fast64_t vp_until_us;	/* coarse clock: after it, a round trip
										 * re-checks the name's relation */

	/* Counters (readers' counters live in the guard's slots). */
	atomic_uint_fast64_t checks, unchanged, deltas, reloads, rows, writes,
				errors, compactions, redis_checks, redis_errors, pushes;

	pthread_mutex_t err_lock;
	char		last_error[256];
};

struct dd_client
{
	pthread_mutex_t lock;		/* the connection and the GET connection */
	pthread_mutex_t list_lock;	/* the list and the dicts' thread fields (taken
								 * after lock and sync locks; only trylocks
								 * under it) */
	atomic_bool busy;			/* lock is held: readers need not try it */
	dd_conn		conn;
	atomic_int	refs;			/* the application's + one per handle */
	bool		private_client;	/* made by ddict_open / ddict_open_conn */
	unsigned	interval_ms;	/* push polling / PING period */
	unsigned	idle_close_ms;	/* close an idle connection (worker.c); 0 never */

	ddict	  **dicts;			/* list_lock */
	size_t		ndicts,
				cap;
	atomic_size_t nlisted;		/* ndicts, for readers of no lock */

	/* Redis: at most one connection (GET for checks, or SUBSCRIBE). */
	bool		redis_enabled;
	dd_rtarget	rtarget;
	char	   *redis_prefix;
	dd_rconn   *get;			/* lock: the checks' GET connection */
	atomic_bool has_get;		/* get != NULL, for the thread without the lock */
	dd_rconn   *sub;			/* the thread's: the subscription */
	dd_rconn   *xs;				/* the thread's: published changes' streams
								 * (positions, catch-ups, version GETs) */
	dd_backoff	xbackoff;		/* the thread's, for xs */
	int64_t		xs_next_vcheck;	/* the thread's: next GET of followed dicts'
								 * version keys (stream.c) */
	dd_backoff	rbackoff;		/* the thread's */
	atomic_bool redis_used;		/* stats.redis */
	int64_t		ping_sent,
				next_ping,
				next_poll;		/* the thread's */
	bool		sub_healthy;	/* the thread's: the subscription delivered a
								 * well-formed message or PONG */
	atomic_int	bad_replies;	/* checks' GETs that met a misbehaving Redis in
								 * a row: the thread reconnects with backoff */
	int			seen_bad;		/* the thread's */
	struct dd_connector *connector; /* the thread's: a connection being opened
									 * off it, so that polling goes on (worker.c) */

	/* The versions page (sync.c): opened under lock, read by anyone. */
	char	   *vp_option;		/* NULL: beside the Unix socket; "off"; a path */
	_Atomic(ddict_vpage *) vpage;	/* NULL: round-trip checks */
	atomic_uint vp_dboid;		/* the database the page is read for */
	bool		vp_tried;		/* lock: an open was attempted */
	char		vp_target[300];	/* lock: "sockdir:port" of the open page */
	int64_t		vp_verified_us;	/* lock: last ddict_vpage_verify() */
	ddict_vpage **vp_old;		/* lock: pages given up (unmapped at free:
								 * a reader may still be reading one) */
	size_t		vp_nold;

	/* The thread. */
	pthread_mutex_t start_lock;
	bool		thread_started;
	pthread_t	thread;
	int			stop_fd;		/* written at close, never drained */
	int			kick_fd;
	atomic_bool closing;
};

/* ---- load.c ---- */

/*
 * A full load of h by COPY on c (session set up, c->copy_full), in one
 * transaction: on DDICT_OK *out is the new snapshot (not yet published) and
 * b its build, as dd_recv_check() leaves them; else the error is reported.
 */
int			dd_load_full(ddict *h, dd_conn *c, ddict_snapshot **out, dd_build *b);

/* ---- sync.c ---- */
void		dd_lock(ddict *h);
bool		dd_trylock(ddict *h);
void		dd_unlock(ddict *h);
void		dd_client_lock(dd_client *c);
bool		dd_client_trylock(dd_client *c);
void		dd_client_unlock(dd_client *c);
void		dd_list_lock(dd_client *c);
void		dd_list_unlock(dd_client *c);
/* Caller holds h's sync_lock.  1 changed, 0 unchanged, < 0 error. */
int			dd_sync_locked(ddict *h, bool force_full);
/* Caller holds the client's lock and every dict's sync_lock: one pipeline
 * for all (with Redis: one GET round trip first).  read: honour the backoff
 * and Redis like a read's check; else like ddict_sync(). */
void		dd_check_many(dd_client *c, ddict **v, int n, bool read, int *rcs);
/* Caller holds the client's lock: trylock and collect up to max dicts that
 * want a check (besides skip), clearing their want flags. */
int			dd_collect_wanted(dd_client *c, ddict *skip, ddict **v, int max, int64_t now,
							  bool interval);
/* Send / receive one ddict_changes() (caller handles the pipeline). */
int			dd_send_changes(ddict *h, dd_conn *c, bool full);
int			dd_recv_changes(ddict *h, dd_conn *c, ddict_snapshot **out,
							dd_build *b, bool *refull);
/* One check as a pipeline segment: BEGIN ISOLATION LEVEL READ COMMITTED;
 * ddict_changes(); COMMIT; Sync — and its results. */
int			dd_send_check(ddict *h, dd_conn *c, bool full);
int			dd_recv_check(ddict *h, dd_conn *c, ddict_snapshot **snap, dd_build *b,
						  bool *refull);
/* The dict's metadata (bytea, Redis key), looked up once. */
int			dd_ensure_meta(ddict *h, dd_conn *c);
int			dd_publish(ddict *h, ddict_snapshot *snap, dd_build *b);
/* This thread runs a change callback of a dict of client c: calls that
 * take the client's locks return DDICT_EBUSY with this (after "fn: "). */
bool		dd_in_callback(const dd_client *c);
#define DD_IN_CALLBACK_MSG "not allowed from a change callback of a dict of the same client" \
	" (that thread holds the client's locks: hand the call to another thread)"

int64_t		dd_current_version(ddict *h);
void		dd_mark(ddict *h, bool ok);
/* Reads: check per the mode, never blocking on another thread's check. */
void		dd_maybe_sync(ddict *h);
/* The versions page: forget a dict's record (sync_lock); unmap at free. */
void		dd_vpage_forget(ddict *h);
void		dd_vpage_client_free(dd_client *c);
/* How long a versions-page answer stands without a round trip, which
 * re-checks which relation the dict's name means (and the page itself). */
#define DD_VPAGE_REBIND_MS 1000

/* ---- stream.c (the client's thread) ---- */
/* Connect, record positions, read streams where deliveries may be missing;
 * the next wake-up. */
int64_t		dd_stream_step(dd_client *c);
/* A message on the subscription (list lock held): 1 a delivery of a
 * followed stream (applied, or the dict set to catch up), 0 not a stream
 * channel of ours, -1 malformed (the subscription misbehaves). */
int			dd_stream_message(dd_client *c, const char *channel, const redisReply *payload);
void		dd_stream_close(dd_client *c);

/* ---- worker.c ---- */
/* Start the client's thread if it is not running (any dict needs it). */
int			dd_worker_start(dd_client *c);
void		dd_worker_stop(dd_client *c);
bool		dd_worker_needed(const dd_client *c, const ddict *h);
/* The first Redis attempt that covers h (ddict_open waits for it). */
void		dd_worker_await_redis(dd_client *c, ddict *h);

/* ---- snapfile.c ---- */
int			dd_snapfile_write(ddict *h, const ddict_snapshot *s);
void		dd_snapfile_maybe_write(ddict *h);
int			dd_snapfile_read(const char *path, const char *dict,
							 const uint64_t seed[2], ddict_snapshot **out);

#endif							/* LIBDDICT_INTERNAL_H */
