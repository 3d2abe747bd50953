/*
 * cursor.c — the cursors ddict_changes() hands out, sealed so that the
 * server can tell its own from made-up ones.
 *
 * A cursor is a bigint that the client stores and sends back.  It holds a
 * dict's change number (changelog.c: the count of that dict's entries in the
 * change ring, seeded when its chain was made) in the high 40 bits and, in
 * the low 23, the first bits of HMAC-SHA256(key, database || dict || number)
 * under a key drawn from pg_strong_random() when the change ring is set up
 * (so a cursor is good for one server lifetime, like the epoch beside it).
 * Bit 63 stays clear: cursors are positive and order like their numbers,
 * which the stream rule of published changes needs (streamer.c, the
 * client's stream.c compare from/cursor/until).
 *
 * Why sealed: a delta names the keys changed since the cursor, deleted ones
 * included.  A reader who could pick any older cursor would get the names of
 * keys deleted before it was allowed to read the dict.  A made-up cursor is
 * answered in full (and logged), exactly as a cursor that fell out of the
 * ring; guessing a valid one takes about 2^22 tries, each a full answer.
 *
 * Rejected: a cursor that is a ring byte position (what 1.0 and 1.1 did): it
 * moved with every write in the cluster, so its steps measured the keys
 * other dicts were given; a full 64-bit MAC: cursors must stay ordered and
 * fit the bigint of the 1.x protocol; a keyed permutation of the whole 64
 * bits: unforgeable, but unordered.
 */
#include "ddict.h"

#include "common/hmac.h"
#include "common/sha2.h"

#define SEQ_BITS	40
#define MAC_BITS	23
#define MAC_MASK	((UINT64CONST(1) << MAC_BITS) - 1)

/*
 * Seals computed lately, direct-mapped by dict: a backend behind a pooler
 * answers many clients, each asking again and again with the same cursor.
 */
#define SEAL_CACHE	64

typedef struct Seal
{
	const uint8 *key;
	Oid			dboid;
	Oid			relid;
	uint64		seq;
	uint64		mac;
} Seal;

static Seal seals[SEAL_CACHE];

static uint64
mac_of(const uint8 *key, Oid dboid, Oid relid, uint64 seq)
{
	Seal	   *c = &seals[(relid ^ dboid) % SEAL_CACHE];
	uint8		msg[sizeof(Oid) * 2 + sizeof(uint64)];
	uint8		out[PG_SHA256_DIGEST_LENGTH];
	pg_hmac_ctx *ctx;
	uint64		mac = 0;

	if (c->key == key && c->dboid == dboid && c->relid == relid && c->seq == seq)
		return c->mac;
	memcpy(msg, &dboid, sizeof(Oid));
	memcpy(msg + sizeof(Oid), &relid, sizeof(Oid));
	memcpy(msg + 2 * sizeof(Oid), &seq, sizeof(uint64));
	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL ||
		pg_hmac_init(ctx, key, DDICT_CURSOR_KEY_LEN) < 0 ||
		pg_hmac_update(ctx, msg, sizeof(msg)) < 0 ||
		pg_hmac_final(ctx, out, sizeof(out)) < 0)
		/* (the context is the resource owner's to free on error) */
		elog(ERROR, "ddict: could not seal a cursor: %s",
			 ctx ? pg_hmac_error(ctx) : "out of memory");
	pg_hmac_free(ctx);
	memcpy(&mac, out, sizeof(mac));
	c->key = key;
	c->dboid = dboid;
	c->relid = relid;
	c->seq = seq;
	c->mac = mac & MAC_MASK;
	return c->mac;
}

/* The cursor for change number seq of (dboid, relid); 0 when seq does not fit. */
uint64
ddict_cursor_seal(const uint8 *key, Oid dboid, Oid relid, uint64 seq)
{
	if (seq == 0 || seq >= (UINT64CONST(1) << SEQ_BITS))
		return 0;
	return (seq << MAC_BITS) | mac_of(key, dboid, relid, seq);
}

/* The change number a cursor of (dboid, relid) holds; false if we did not seal it. */
bool
ddict_cursor_open(const uint8 *key, Oid dboid, Oid relid, uint64 cursor, uint64 *seq)
{
	uint64		s = cursor >> MAC_BITS;

	if (cursor == 0 || s >= (UINT64CONST(1) << SEQ_BITS) ||
		mac_of(key, dboid, relid, s) != (cursor & MAC_MASK))
		return false;
	*seq = s;
	return true;
}
