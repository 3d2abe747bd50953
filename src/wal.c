/*
 * wal.c — a custom WAL resource manager (PostgreSQL 15 RegisterCustomRmgr)
 * so that a hot standby moves dict versions as it replays.
 *
 * Triggers never run on a standby, so the version table there is fed from
 * WAL.  A committing writer logs two small records:
 *
 *   INTENT  at PRE_COMMIT, before its commit record (and flushed with it):
 *           its xid and the dicts it changed;
 *   BUMP    in its XACT_EVENT_COMMIT callback, after its commit record, one
 *           per dict, with the primary's new version.
 *
 * Replaying the INTENT makes a pending bump (shmem.c); replaying the BUMP
 * clears it and moves the version to max(current + 1, primary's).  Since the
 * BUMP follows the commit record, a standby that replayed it has replayed the
 * commit, so a reader that sees the new version sees the new rows (DESIGN
 * §3.1 holds on the standby too).  The BUMP is not flushed synchronously
 * (that would add an fsync to every commit): XLogSetAsyncXactLSN() lets the
 * WAL writer flush it within wal_writer_delay.  If the primary crashes before
 * that, the pending INTENT is resolved by the standby's first reader once the
 * commit is visible there, so no committed write goes unbumped.
 *
 * At wal_level minimal there is no standby and no archive to read them, and
 * a crash restart starts a new epoch (shmem.c) whatever WAL holds: nothing
 * is logged then (wal_level changes only with a restart).  That saves a
 * writing transaction two WAL insertions and, often, a wake-up of the WAL
 * writer (XLogSetAsyncXactLSN) on a busy two-core machine.
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
#define XLOG_DDICT_INTENT	0x20

typedef struct xl_ddict
{
	Oid			dboid;
	Oid			relid;
	TransactionId xid;
	uint64		version;
} xl_ddict;

typedef struct xl_ddict_intent
{
	Oid			dboid;
	TransactionId xid;
	int32		nrels;
	Oid			relids[FLEXIBLE_ARRAY_MEMBER];
} xl_ddict_intent;

static void
ddict_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	xl_ddict   *rec = (xl_ddict *) XLogRecGetData(record);

	switch (info)
	{
		case XLOG_DDICT_INTENT:
			{
				xl_ddict_intent *in = (xl_ddict_intent *) XLogRecGetData(record);

				for (int i = 0; i < in->nrels; i++)
					ddict_version_redo_intent(in->dboid, in->relids[i], in->xid);
			}
			break;
		case XLOG_DDICT_BUMP:
			ddict_version_redo(rec->dboid, rec->relid, rec->xid, rec->version);
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
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_DDICT_INTENT)
	{
		xl_ddict_intent *in = (xl_ddict_intent *) XLogRecGetData(record);

		appendStringInfo(buf, "db %u xid %u rels", in->dboid, in->xid);
		for (int i = 0; i < in->nrels; i++)
			appendStringInfo(buf, " %u", in->relids[i]);
	}
	else
	{
		xl_ddict   *rec = (xl_ddict *) XLogRecGetData(record);

		appendStringInfo(buf, "db %u rel %u xid %u version " UINT64_FORMAT,
						 rec->dboid, rec->relid, rec->xid, rec->version);
	}
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
		case XLOG_DDICT_INTENT:
			return "INTENT";
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

/* Does anyone read our records?  Standbys and archives, from replica up. */
static inline bool
records_needed(void)
{
	return XLogIsNeeded();
}

/* Before the commit record, in the same flush: no XLogSetAsyncXactLSN. */
void
ddict_wal_log_intent(Oid dboid, TransactionId xid, Oid *relids, int n)
{
	xl_ddict_intent hdr;

	if (!records_needed())
		return;
	hdr.dboid = dboid;
	hdr.xid = xid;
	hdr.nrels = n;
	XLogBeginInsert();
	XLogRegisterData((char *) &hdr, offsetof(xl_ddict_intent, relids));
	XLogRegisterData((char *) relids, sizeof(Oid) * n);
	(void) XLogInsert(RM_DDICT_ID, XLOG_DDICT_INTENT);
}

static void
log_record(uint8 info, Oid dboid, Oid relid, TransactionId xid, uint64 version)
{
	xl_ddict	rec;
	XLogRecPtr	lsn;

	if (RecoveryInProgress() || !records_needed())
		return;
	rec.dboid = dboid;
	rec.relid = relid;
	rec.xid = xid;
	rec.version = version;
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, sizeof(rec));
	lsn = XLogInsert(RM_DDICT_ID, info);
	XLogSetAsyncXactLSN(lsn);
}

void
ddict_wal_log_bump(Oid dboid, Oid relid, TransactionId xid, uint64 version)
{
	log_record(XLOG_DDICT_BUMP, dboid, relid, xid, version);
}

void
ddict_wal_log_forget(Oid dboid, Oid relid)
{
	log_record(XLOG_DDICT_FORGET, dboid, relid, InvalidTransactionId, 0);
}
