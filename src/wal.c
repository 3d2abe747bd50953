/*
 * wal.c — a custom WAL resource manager (PostgreSQL 15 RegisterCustomRmgr)
 * so that a hot standby moves dict versions as it replays.
 *
 * Triggers never run on a standby, so the version table there is fed from
 * WAL.  The committing backend writes one small record per changed dict in
 * its XACT_EVENT_COMMIT callback, that is after its commit record: a standby
 * that replays the bump has already replayed the commit, so a reader there
 * that sees the new version also sees the new rows (DESIGN §3.1 holds on the
 * standby too).  The record carries the primary's version; replay applies
 * max(current + 1, primary's), which is strictly increasing and equal to the
 * primary's whenever the two clocks agree.
 *
 * The record is not flushed synchronously (that would add an fsync to every
 * commit); XLogSetAsyncXactLSN() lets the WAL writer flush it within
 * wal_writer_delay, as for an asynchronous commit.  A primary crash between
 * a commit and its bump record loses that bump on standbys; the primary
 * itself restarts with fresh clock-seeded versions, and standbys move again
 * at the next write of the dict.
 *
 * The resource manager id is fixed and must be unique among the custom
 * resource managers of a cluster; see README ("Hot standby").
 */
#include "ddict.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "lib/stringinfo.h"

#define RM_DDICT_ID			152
#define XLOG_DDICT_BUMP		0x00
#define XLOG_DDICT_FORGET	0x10

typedef struct xl_ddict
{
	Oid			dboid;
	Oid			relid;
	uint64		version;
} xl_ddict;

static void
ddict_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	xl_ddict   *rec = (xl_ddict *) XLogRecGetData(record);

	switch (info)
	{
		case XLOG_DDICT_BUMP:
			ddict_version_redo(rec->dboid, rec->relid, rec->version);
			break;
		case XLOG_DDICT_FORGET:
			ddict_version_forget(rec->dboid, rec->relid);
			break;
		default:
			elog(PANIC, "ddict_redo: unknown op code %u", info);
	}
}

static void
ddict_desc(StringInfo buf, XLogReaderState *record)
{
	xl_ddict   *rec = (xl_ddict *) XLogRecGetData(record);

	appendStringInfo(buf, "db %u rel %u version " UINT64_FORMAT,
					 rec->dboid, rec->relid, rec->version);
}

static const char *
ddict_identify(uint8 info)
{
	switch (info & ~XLR_INFO_MASK)
	{
		case XLOG_DDICT_BUMP:
			return "BUMP";
		case XLOG_DDICT_FORGET:
			return "FORGET";
	}
	return NULL;
}

static RmgrData ddict_rmgr = {
	.rm_name = "ddict",
	.rm_redo = ddict_redo,
	.rm_desc = ddict_desc,
	.rm_identify = ddict_identify,
};

void
ddict_wal_register(void)
{
	RegisterCustomRmgr(RM_DDICT_ID, &ddict_rmgr);
}

static void
log_record(uint8 info, Oid dboid, Oid relid, uint64 version)
{
	xl_ddict	rec;
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
		return;
	rec.dboid = dboid;
	rec.relid = relid;
	rec.version = version;
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, sizeof(rec));
	lsn = XLogInsert(RM_DDICT_ID, info);
	XLogSetAsyncXactLSN(lsn);
}

void
ddict_wal_log_bump(Oid dboid, Oid relid, uint64 version)
{
	log_record(XLOG_DDICT_BUMP, dboid, relid, version);
}

void
ddict_wal_log_forget(Oid dboid, Oid relid)
{
	log_record(XLOG_DDICT_FORGET, dboid, relid, 0);
}
