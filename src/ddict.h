/*
 * ddict.h — declarations shared by the ddict extension's translation units.
 *
 * The extension is split by concern:
 *   ddict.c      _PG_init: GUCs, hooks, the "must be preloaded" guard
 *   shmem.c      the per-dict version table in shared memory (hybrid logical clock)
 *   changelog.c  a shared ring of changed keys that lets clients reload by delta
 *   cursor.c     the cursors clients hold: a dict's change number, sealed
 *   xact.c       what the current transaction changed; bumps at commit
 *   prepared.c   dicts changed by prepared transactions, bumped after COMMIT PREPARED
 *   triggers.c   the C trigger attached to every dict table
 *   wal.c        a custom WAL resource manager so hot standbys move versions on replay
 *   registry.c   which tables are dicts; attach / detach / create; SPI plan cache
 *   ddl.c        event triggers that keep a dict whole through DDL (ALTER
 *                TABLE/TYPE/TRIGGER, DROP INDEX, DROP TABLE) and move its
 *                version when DDL changes what clients read
 *   functions.c  the dict API (get, set, delete, pop, setdefault, items, keys, len)
 *   sync.c       ddict_changes(): the client's one-round-trip check + delta
 *   streamer.c   per-database workers that publish each change to a Redis Stream
 *   stats.c      ddict_last_updated() and the statistics SRF
 */
#ifndef DDICT_H
#define DDICT_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* GUCs, each defined by the file that owns it (its XxxDefineGucs, from _PG_init) */
extern int	ddict_max_dicts;
extern int	ddict_changelog_kb;
extern int	ddict_max_delta_keys;
extern int	ddict_max_value_size;

/* True when loaded through shared_preload_libraries (set in _PG_init). */
extern bool ddict_preloaded;
extern void ddict_require_preload(void);
extern void ddict_require_arg(FunctionCallInfo fcinfo, int n, const char *what);

/* Microseconds since the Unix epoch: the unit of versions. */
extern uint64 ddict_now_us(void);

/* shmem.c */
extern void ddict_shmem_define_gucs(void);
extern Size ddict_shmem_size(void);
extern void ddict_shmem_init(void);
extern bool ddict_version_get(Oid dboid, Oid relid, uint64 *version, bool *pending);
extern void ddict_versions_match(Oid dboid, int n, const Oid *relids, const uint64 *versions,
								 bool *unchanged);
extern uint64 ddict_version_ensure(Oid dboid, Oid relid, TransactionId creator);
extern uint64 ddict_version_bump(Oid dboid, Oid relid, TransactionId xid);
extern void ddict_version_release(TransactionId xid);
extern void ddict_version_redo_intent(Oid dboid, Oid relid, TransactionId xid);
extern void ddict_version_redo(Oid dboid, Oid relid, TransactionId xid, uint64 version);
extern void ddict_version_resolve(Oid dboid, Oid relid);
extern void ddict_version_forget(Oid dboid, Oid relid);
extern uint64 ddict_epoch(void);

/*
 * "database:schema.table" of a dict, as the publisher names its Redis key
 * (src/common/redis_key.h: each component escaped, so up to twice as long)
 */
#define DDICT_NAME_LEN (NAMEDATALEN * 6 + 2)

typedef struct PublishItem
{
	Oid			dboid;
	Oid			relid;
	uint64		version;
	TimestampTz changed;
	char		name[DDICT_NAME_LEN];
} PublishItem;

extern void ddict_version_set_name(Oid dboid, Oid relid, const char *name);
extern bool ddict_version_needs_name(Oid dboid, Oid relid);
extern int	ddict_publish_collect(bool all, PublishItem **out);
extern void ddict_publish_done(Oid dboid, Oid relid, uint64 version);
extern void ddict_note_name(Oid relid);

typedef struct DictStat
{
	Oid			relid;
	uint64		version;
	uint64		commits;
	TimestampTz last_changed;
} DictStat;
extern int	ddict_stats_collect(Oid dboid, DictStat **out);

/* changelog.c */
/*
 * What one trigger call did to a key: rows of it that appeared (+1: INSERT,
 * UPDATE to it) or went (-1: DELETE, UPDATE away from it), or 0 (its value
 * changed); and whether the row it changed or removed was there before this
 * transaction (xact.c drops keys that only lived inside their transaction).
 */
typedef struct KeyWrite
{
	int8		rows;
	bool		old;
} KeyWrite;

typedef struct PendingKey
{
	Oid			relid;
	int			level;			/* transaction nest level that wrote it */
	bool		full;			/* whole dict changed (TRUNCATE, overflow) */
	bool		skip;			/* not logged: the key existed only inside */
	KeyWrite	w;
	int			len;
	char	   *data;			/* key bytes, TopTransactionContext */
} PendingKey;

extern void ddict_changelog_define_gucs(void);
extern Size ddict_changelog_shmem_size(void);
extern void ddict_changelog_init(void);
extern void ddict_changelog_append(Oid dboid, PendingKey *keys, int nkeys);
extern void ddict_changelog_finish(void);
extern void ddict_changelog_append_full(Oid dboid, Oid relid);
extern uint64 ddict_changelog_horizon(Oid dboid, Oid relid, bool make);
extern uint64 ddict_changelog_until(Oid dboid, Oid relid, bool make);
extern bool ddict_changelog_collect(Oid dboid, Oid relid, uint64 since,
									List **keys);

typedef struct DdictRingState
{
	uint64		size;			/* bytes */
	uint64		head;			/* next position to write */
	uint64		tail;			/* oldest position kept */
	uint64		horizon;		/* below it, every writer finished */
	long		chains;			/* dicts with a chain */
	uint64		numbered;		/* the next chain's first number */
} DdictRingState;
extern void ddict_changelog_state(DdictRingState *st);

/* cursor.c */
#define DDICT_CURSOR_KEY_LEN 32
extern uint64 ddict_cursor_seal(const uint8 *key, Oid dboid, Oid relid, uint64 seq);
extern bool ddict_cursor_open(const uint8 *key, Oid dboid, Oid relid, uint64 cursor,
							  uint64 *seq);

/* prepared.c */
#define DDICT_PREPARED_MAX_DICTS 64
extern Size ddict_prepared_shmem_size(void);
extern void ddict_prepared_shmem_init(void);
extern void ddict_prepared_register(TransactionId xid, const Oid *relids, int n);
extern void ddict_prepared_unregister(TransactionId xid);
extern void ddict_prepared_settle(void);

/* xact.c */
extern void ddict_xact_init(void);
extern void ddict_xact_define_gucs(void);
extern void ddict_note_change(Oid relid, const char *key, int len, KeyWrite w);
extern void ddict_note_kept(Oid relid, const char *key, int len);
extern bool ddict_xact_changed(Oid relid);
#define DDICT_WRITE_ALL ((KeyWrite) {0, true})	/* the whole dict (TRUNCATE, DDL) */
extern void ddict_note_forget(Oid relid, const char *name);

/* publisher.c */
extern char *ddict_redis_url_guc;
extern char *ddict_redis_prefix;
extern int	ddict_redis_timeout_ms;
extern int	ddict_redis_max_backoff_ms;
extern Size ddict_publisher_shmem_size(void);
extern void ddict_publisher_shmem_init(void);
extern void ddict_publisher_register(void);
extern void ddict_publisher_wake(void);
extern bool ddict_publisher_ready(void);

/* wal.c */
extern void ddict_wal_register(void);
extern void ddict_wal_log_intent(Oid dboid, TransactionId xid, Oid *relids, int n);
extern void ddict_wal_log_bump(Oid dboid, Oid relid, TransactionId xid, uint64 version);
extern void ddict_wal_log_forget(Oid dboid, Oid relid);

/* registry.c */
typedef struct DictInfo
{
	Oid			relid;
	char	   *qualname;		/* quoted, schema-qualified table name */
	char	   *keycol;			/* quoted key column */
	char	   *valcol;			/* quoted value column */
	char	   *valtext;		/* SQL for the value's text (output function) */
	Oid			keytype;
	Oid			valtype;
	int32		valtypmod;
} DictInfo;

extern DictInfo *ddict_lookup(Oid relid);
extern char *ddict_value_text_sql(const char *valcol, Oid valtype);
extern bool ddict_is_registered(Oid relid);
extern bool ddict_registry_row(Oid relid, char **keycol, char **valcol);
extern char *ddict_qualified_name(Oid relid);
extern uint64 ddict_exec_as_registry_owner(const char *sql, int nargs, Oid *argtypes, Datum *args);
extern bool ddict_key_is_unique(Relation rel, AttrNumber keyatt, List *except);
extern SPIPlanPtr ddict_plan(const char *sql, int nargs, Oid *argtypes);
extern char *ddict_ext_schema(void);
extern Oid	ddict_ext_namespace(void);

/* triggers.c */
extern void ddict_triggers_define_gucs(void);

/* ddl.c */
extern Oid	ddict_trigger_fn(void);
extern List *ddict_trigger_names(Oid relid);
extern void ddict_check_value_type(Oid valtype, const char *valcol);
extern void ddict_check_key_collation(Oid relid, AttrNumber katt, const char *keycol);

/* sync.c: the caller may SELECT from relid (the table or a column), or an error */
extern void ddict_require_select(Oid relid);

/* sync.c: the delta computation, shared by ddict_changes() and streamer.c */
typedef struct ChangeHeader
{
	uint64		version;
	uint64		epoch;
	uint64		cursor;			/* the horizon read first: the next cursor */
	uint64		until;			/* ring head after the snapshot; 0: none */
} ChangeHeader;

typedef struct ChangeSink ChangeSink;
struct ChangeSink
{
	void		(*header) (ChangeSink *sink, char kind, const ChangeHeader *h);
	void		(*row) (ChangeSink *sink, char kind, Datum key, bool key_null,
						Datum value, bool value_null);
	bool		full_rows;		/* a full answer carries every row */
};

typedef struct ChangesSince
{
	bool		have;			/* the caller holds a state of this relation */
	uint64		version;
	uint64		epoch;
	uint64		cursor;			/* 0: none */
} ChangesSince;

extern char ddict_changes_compute(DictInfo *d, uint64 horizon, const ChangesSince *since,
								  ChangeSink *sink);

/* streamer.c */
extern Size ddict_streamer_shmem_size(void);
extern void ddict_streamer_shmem_init(void);
extern void ddict_streamer_define_gucs(void);
extern void ddict_streamer_wake(Oid dboid, bool config_changed);
extern void ddict_streamer_note_config(void);
extern bool ddict_publishes_changes(Oid relid);

/* stats.c */
extern uint64 ddict_current_version(Oid relid);

#endif							/* DDICT_H */
