/*
 * vpage.h — the versions page: every dict's version and the server's epoch
 * in a small file-backed shared mapping that clients on the same host map
 * read-only (see vpage.c for the protocol, README "The versions page").
 *
 * The layout below is the contract with readers (src/client/vpage.h mirrors
 * it without PostgreSQL headers); change VPAGE_LAYOUT when it changes.
 */
#ifndef DDICT_VPAGE_H
#define DDICT_VPAGE_H

#include "postgres.h"

#define VPAGE_MAGIC			0x50564444	/* "DDVP" read as little-endian */
#define VPAGE_LAYOUT		1
#define VPAGE_HEADER_SIZE	64
#define VPAGE_SLOT_SIZE		32
#define VPAGE_ALIVE			UINT64CONST(1)	/* low bit of the header's state */

/* GUCs (vpage.c) */
extern char *ddict_versions_page;
extern int	ddict_versions_page_mode;
extern char *ddict_versions_page_group;

extern void ddict_vpage_define_gucs(void);

/* Postmaster, at each shared memory (re)initialisation: map, new epoch. */
extern void ddict_vpage_startup(uint64 epoch, int nslots);

/*
 * Slots, called by shmem.c under its lock: attach/detach with the lock held
 * exclusively (identity changes), set with it held at least shared.  Slot
 * -1 means "no page" and makes every call a no-op.
 */
extern int	ddict_vpage_attach(Oid dboid, Oid relid, uint64 version);
extern void ddict_vpage_detach(int slot);
extern void ddict_vpage_set(int slot, uint64 version);

#endif							/* DDICT_VPAGE_H */
