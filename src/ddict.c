/*
 * ddict.c — module entry point.
 *
 * ddict must be loaded through shared_preload_libraries: the version table
 * and the change ring live in shared memory sized at postmaster start, the
 * custom WAL resource manager must be registered before recovery, and the
 * transaction callbacks must be present in every backend that can write a
 * dict (a backend that wrote a dict without them would commit without
 * bumping, which is the one thing ddict must never do).  When the library is
 * loaded any other way (CREATE EXTENSION in a server without the setting),
 * every entry point, the trigger included, raises the error below.
 *
 * Shared memory follows contrib/pg_stat_statements: space and the LWLock
 * tranche are requested from shmem_request_hook, and the structures are set
 * up in shmem_startup_hook under AddinShmemInitLock.
 */
#include "ddict.h"
#include "vpage.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

bool		ddict_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

void
ddict_require_preload(void)
{
	if (!ddict_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ddict must be loaded via shared_preload_libraries"),
				 errhint("Add 'ddict' to shared_preload_libraries in postgresql.conf and restart the server.")));
}

void
ddict_require_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
}

uint64
ddict_now_us(void)
{
	TimestampTz now = GetCurrentTimestamp();

	/* TimestampTz counts from 2000-01-01; versions count from 1970-01-01. */
	return (uint64) now +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

static void
ddict_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(add_size(ddict_shmem_size(),
													  ddict_changelog_shmem_size()),
											 ddict_publisher_shmem_size()),
									add_size(ddict_streamer_shmem_size(),
											 ddict_prepared_shmem_size())));
	RequestNamedLWLockTranche("ddict", 2);
	RequestNamedLWLockTranche("ddict streamers", 1);
}

static void
ddict_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	ddict_shmem_init();
	ddict_vpage_startup(ddict_epoch(), ddict_max_dicts);
	ddict_changelog_init();
	ddict_publisher_shmem_init();
	ddict_streamer_shmem_init();
	ddict_prepared_shmem_init();
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	/* each subsystem defines its own settings */
	ddict_shmem_define_gucs();	/* ddict.max_dicts */
	ddict_changelog_define_gucs();	/* ddict.changelog_size */
	ddict_triggers_define_gucs();	/* ddict.max_value_size */
	ddict_xact_define_gucs();	/* ddict.max_delta_keys */
	ddict_publisher_register();	/* its GUCs, and the background worker */
	ddict_vpage_define_gucs();
	ddict_streamer_define_gucs();	/* published changes (Redis Streams) */
	MarkGUCPrefixReserved("ddict");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ddict_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ddict_shmem_startup;

	ddict_wal_register();
	ddict_xact_init();
	ddict_preloaded = true;
}
