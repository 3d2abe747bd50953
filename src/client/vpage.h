/*
 * vpage.h — reader of the server's versions page (plain C11, no libpq): a
 * file the ddict extension keeps beside its first Unix socket
 * (<socketdir>/.s.PGSQL.<port>.ddict, or ddict.versions_page) with every
 * dict's version and the server's epoch.  A client on the same host maps it
 * read-only and answers an autosync check with a few atomic loads:
 *
 *     ddict_vpage *pg;
 *     ddict_vpage_slot slot;
 *     uint64_t v;
 *
 *     if (ddict_vpage_open_socket(sockdir, port, &pg, err, sizeof err) != DDICT_VPAGE_OK)
 *         ... use the round-trip check (silently) ...
 *     ddict_vpage_find(pg, epoch, dboid, relid, &slot);     once per dict/epoch
 *     if (ddict_vpage_read(pg, epoch, &slot, &v) == DDICT_VPAGE_OK &&
 *         v == cached_version)
 *         ... unchanged: serve from memory ...
 *     else
 *         ... the usual round trip (and ddict_vpage_find again afterwards) ...
 *
 * `epoch` and `cached_version` are what the server last answered
 * (ddict_changes()); dboid is the database's OID, relid the dict's.  The
 * server writes a dict's slot after its commit is visible and before the
 * committer hears COMMIT, so "unchanged" is strict.  Any doubt — the server
 * stopped or restarted (the page is dead or has another epoch), the slot was
 * reused by another dict, a concurrent change — is reported as a status
 * other than DDICT_VPAGE_OK, never as "unchanged".
 *
 * Functions return a ddict_vpage_status; the ones that can fail for an
 * outside reason also fill err (if errlen > 0) with a one-line message.
 * Nothing aborts or prints.  Reading is thread-safe (the handle is read-only
 * after open); open and close are not concurrent with reads of one handle.
 */
#ifndef DDICT_CLIENT_VPAGE_H
#define DDICT_CLIENT_VPAGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum ddict_vpage_status
{
	DDICT_VPAGE_OK = 0,			/* read: version valid for this epoch */
	DDICT_VPAGE_UNAVAILABLE,	/* open: missing, no permission, not mappable:
								 * fall back to the round trip silently */
	DDICT_VPAGE_INVALID,		/* open: not a versions page of this layout,
								 * or unsafe (writable by others, wrong owner) */
	DDICT_VPAGE_NOT_FOUND,		/* find: the dict has no slot (yet) */
	DDICT_VPAGE_DEAD,			/* the server stopped, or is restarting */
	DDICT_VPAGE_EPOCH,			/* the page is of another server run */
	DDICT_VPAGE_REUSED,			/* the slot now belongs to another dict */
	DDICT_VPAGE_BUSY,			/* a concurrent change: treat as changed */
	DDICT_VPAGE_ARG				/* bad argument (NULL, bad slot, long path) */
} ddict_vpage_status;

typedef struct ddict_vpage ddict_vpage;

/* A dict's place on the page, as found for one epoch. */
typedef struct ddict_vpage_slot
{
	uint32_t	index;
	uint32_t	dboid;
	uint32_t	relid;
	uint64_t	gen;			/* the slot's generation when found */
} ddict_vpage_slot;

/* "<sockdir>/.s.PGSQL.<port>.ddict" into buf; DDICT_VPAGE_ARG if too long. */
ddict_vpage_status ddict_vpage_path(const char *sockdir, int port,
									char *buf, size_t buflen);

/*
 * Map path read-only.  open_socket() derives the path from a Unix socket
 * directory and port, and also requires the page to belong to the owner of
 * the socket (the server's user), so that no other local user can plant a
 * page for it.
 */
ddict_vpage_status ddict_vpage_open(const char *path, ddict_vpage **out,
									char *err, size_t errlen);
ddict_vpage_status ddict_vpage_open_socket(const char *sockdir, int port,
										   ddict_vpage **out,
										   char *err, size_t errlen);
void		ddict_vpage_close(ddict_vpage *pg);

/* The header now: epoch, and whether a server is writing the page. */
ddict_vpage_status ddict_vpage_header(const ddict_vpage *pg, uint64_t *epoch,
									  int *alive, uint32_t *pid);

/* Find (dboid, relid) on a live page of the given epoch. */
ddict_vpage_status ddict_vpage_find(const ddict_vpage *pg, uint64_t epoch,
									uint32_t dboid, uint32_t relid,
									ddict_vpage_slot *slot);

/*
 * The version in a found slot: DDICT_VPAGE_OK only while the page is alive,
 * of the given epoch, and the slot still holds the dict it was found for.
 */
ddict_vpage_status ddict_vpage_read(const ddict_vpage *pg, uint64_t epoch,
									const ddict_vpage_slot *slot,
									uint64_t *version);

/*
 * Is this mapping still the page of a running server: does the path still
 * name the mapped file, and does the postmaster that last started it still
 * exist?  DDICT_VPAGE_DEAD if not.  A page whose postmaster was killed
 * outright still says alive (truthfully: nothing commits while no server
 * runs) until the next start on the same path rewrites it; a successor that
 * cannot (the file was removed, or the page moved to another path) never
 * does, so a long-lived caller should call this now and then (two system
 * calls: not for every read) and reopen when it fails.
 */
ddict_vpage_status ddict_vpage_verify(const ddict_vpage *pg);

const char *ddict_vpage_strstatus(ddict_vpage_status st);

#endif							/* DDICT_CLIENT_VPAGE_H */
