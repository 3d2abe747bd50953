/*
 * vpage.c — reader of the server's versions page (see vpage.h for the use,
 * src/vpage.c for the writer).  Self-contained: no libpq, no internal.h, so
 * it sits at the bottom of the client's layers.
 *
 * Layout (little-endian, same host), layout 1:
 *   header, 64 bytes: u32 magic "DDVP", u32 layout, u32 header_size (64),
 *     u32 slot_size (32), u32 nslots, u32 postmaster pid, u64 epoch,
 *     u64 state (starts << 1 | ALIVE), padding;
 *   nslots slots, 32 bytes: u64 gen (odd while the identity changes),
 *     u64 ident (dboid << 32 | relid, 0 = free), u64 version, u64 reserved.
 *
 * Reading a slot is a seqlock read bracketed by the header's state: state,
 * epoch, gen, then ident and version, an acquire fence, gen and state again.
 * A restart of the server (the state counts starts and loses ALIVE while the
 * page is rewritten in place), a stop (ALIVE cleared) and a reuse of the
 * slot (gen moves) all show as a status other than DDICT_VPAGE_OK.
 */
#include "vpage.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VP_MAGIC		0x50564444u
#define VP_LAYOUT		1u
#define VP_HEADER_SIZE	64u
#define VP_SLOT_SIZE	32u
#define VP_ALIVE		UINT64_C(1)
#define VP_FIND_TRIES	4

struct vp_header
{
	_Atomic uint32_t magic;
	_Atomic uint32_t layout;
	_Atomic uint32_t header_size;
	_Atomic uint32_t slot_size;
	_Atomic uint32_t nslots;
	_Atomic uint32_t pid;
	_Atomic uint64_t epoch;
	_Atomic uint64_t state;
	unsigned char pad[VP_HEADER_SIZE - 40];
};

struct vp_slot
{
	_Atomic uint64_t gen;
	_Atomic uint64_t ident;
	_Atomic uint64_t version;
	uint64_t	reserved;
};

static_assert(sizeof(struct vp_header) == VP_HEADER_SIZE, "header size");
static_assert(offsetof(struct vp_header, epoch) == 24, "epoch offset");
static_assert(offsetof(struct vp_header, state) == 32, "state offset");
static_assert(sizeof(struct vp_slot) == VP_SLOT_SIZE, "slot size");
static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "lock-free 64-bit atomics");

struct ddict_vpage
{
	const struct vp_header *h;
	const struct vp_slot *slots;
	size_t		len;
	uint32_t	mapped_slots;
	dev_t		dev;			/* the mapped file, for ddict_vpage_verify() */
	ino_t		ino;
	char		path[];
};

#define LOAD(p, o) atomic_load_explicit((p), memory_order_##o)

static ddict_vpage_status
fail(ddict_vpage_status st, char *err, size_t errlen, const char *fmt, ...)
{
	va_list		ap;

	if (err != NULL && errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return st;
}

ddict_vpage_status
ddict_vpage_path(const char *sockdir, int port, char *buf, size_t buflen)
{
	int			n;

	if (sockdir == NULL || buf == NULL || port <= 0 || port > 65535)
		return DDICT_VPAGE_ARG;
	n = snprintf(buf, buflen, "%s/.s.PGSQL.%d.ddict", sockdir, port);
	return (n < 0 || (size_t) n >= buflen) ? DDICT_VPAGE_ARG : DDICT_VPAGE_OK;
}

/* The header as the writer left it: magic, layout, sizes within the file. */
static ddict_vpage_status
check_header(const struct vp_header *h, size_t len, char *err, size_t errlen,
			 const char *path)
{
	uint32_t	nslots = LOAD(&h->nslots, relaxed);

	if (LOAD(&h->magic, acquire) != VP_MAGIC)
		return fail(DDICT_VPAGE_INVALID, err, errlen, "%s: not a ddict versions page", path);
	if (LOAD(&h->layout, relaxed) != VP_LAYOUT ||
		LOAD(&h->header_size, relaxed) != VP_HEADER_SIZE ||
		LOAD(&h->slot_size, relaxed) != VP_SLOT_SIZE)
		return fail(DDICT_VPAGE_INVALID, err, errlen,
					"%s: versions page layout %u, expected %u", path,
					(unsigned) LOAD(&h->layout, relaxed), VP_LAYOUT);
	if ((len - VP_HEADER_SIZE) / VP_SLOT_SIZE < nslots)
		return fail(DDICT_VPAGE_INVALID, err, errlen,
					"%s: versions page of %u slots is truncated", path, (unsigned) nslots);
	return DDICT_VPAGE_OK;
}

/* Open and map; owner must be want_uid unless it is (uid_t) -1. */
static ddict_vpage_status
open_mapped(const char *path, uid_t want_uid, ddict_vpage **out,
			char *err, size_t errlen)
{
	struct stat st;
	ddict_vpage_status rc;
	ddict_vpage *pg;
	void	   *p;
	int			fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return fail(DDICT_VPAGE_UNAVAILABLE, err, errlen, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		rc = fail(DDICT_VPAGE_INVALID, err, errlen, "%s: not a regular file", path);
	else if (st.st_mode & (S_IWGRP | S_IWOTH))
		rc = fail(DDICT_VPAGE_INVALID, err, errlen, "%s: writable by group or others, not used", path);
	else if (want_uid != (uid_t) -1 && st.st_uid != want_uid)
		rc = fail(DDICT_VPAGE_INVALID, err, errlen, "%s: not owned by the server's user, not used", path);
	else if ((size_t) st.st_size < VP_HEADER_SIZE)
		rc = fail(DDICT_VPAGE_INVALID, err, errlen, "%s: too short for a versions page", path);
	else
		rc = DDICT_VPAGE_OK;
	if (rc != DDICT_VPAGE_OK)
	{
		close(fd);
		return rc;
	}
	p = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return fail(DDICT_VPAGE_UNAVAILABLE, err, errlen, "%s: mmap: %s", path, strerror(errno));
	rc = check_header(p, (size_t) st.st_size, err, errlen, path);
	pg = rc == DDICT_VPAGE_OK ? malloc(sizeof(*pg) + strlen(path) + 1) : NULL;
	if (pg == NULL)
	{
		munmap(p, (size_t) st.st_size);
		return rc != DDICT_VPAGE_OK ? rc
			: fail(DDICT_VPAGE_UNAVAILABLE, err, errlen, "%s: out of memory", path);
	}
	pg->h = p;
	pg->slots = (const struct vp_slot *) ((const char *) p + VP_HEADER_SIZE);
	pg->len = (size_t) st.st_size;
	pg->mapped_slots = (uint32_t) ((pg->len - VP_HEADER_SIZE) / VP_SLOT_SIZE);
	pg->dev = st.st_dev;
	pg->ino = st.st_ino;
	strcpy(pg->path, path);
	*out = pg;
	return DDICT_VPAGE_OK;
}

ddict_vpage_status
ddict_vpage_open(const char *path, ddict_vpage **out, char *err, size_t errlen)
{
	if (path == NULL || out == NULL)
		return fail(DDICT_VPAGE_ARG, err, errlen, "ddict_vpage_open: NULL argument");
	*out = NULL;
	return open_mapped(path, (uid_t) -1, out, err, errlen);
}

ddict_vpage_status
ddict_vpage_open_socket(const char *sockdir, int port, ddict_vpage **out,
						char *err, size_t errlen)
{
	char		path[4096];
	char		sock[4096];
	struct stat st;

	if (out == NULL)
		return fail(DDICT_VPAGE_ARG, err, errlen, "ddict_vpage_open_socket: NULL argument");
	*out = NULL;
	if (ddict_vpage_path(sockdir, port, path, sizeof(path)) != DDICT_VPAGE_OK)
		return fail(DDICT_VPAGE_ARG, err, errlen, "bad socket directory or port");
	snprintf(sock, sizeof(sock), "%s/.s.PGSQL.%d", sockdir, port);
	if (lstat(sock, &st) != 0 || !S_ISSOCK(st.st_mode))
		return fail(DDICT_VPAGE_UNAVAILABLE, err, errlen, "%s: no server socket", sock);
	return open_mapped(path, st.st_uid, out, err, errlen);
}

void
ddict_vpage_close(ddict_vpage *pg)
{
	if (pg == NULL)
		return;
	munmap((void *) pg->h, pg->len);
	free(pg);
}

ddict_vpage_status
ddict_vpage_header(const ddict_vpage *pg, uint64_t *epoch, int *alive, uint32_t *pid)
{
	uint64_t	s;

	if (pg == NULL)
		return DDICT_VPAGE_ARG;
	s = LOAD(&pg->h->state, acquire);
	if (epoch)
		*epoch = LOAD(&pg->h->epoch, relaxed);
	if (alive)
		*alive = (s & VP_ALIVE) != 0;
	if (pid)
		*pid = LOAD(&pg->h->pid, relaxed);
	return DDICT_VPAGE_OK;
}

/* First half of every read: a live page of this epoch; its state in *state. */
static ddict_vpage_status
begin(const ddict_vpage *pg, uint64_t epoch, uint64_t *state)
{
	*state = LOAD(&pg->h->state, acquire);
	if (!(*state & VP_ALIVE))
		return DDICT_VPAGE_DEAD;
	if (LOAD(&pg->h->epoch, relaxed) != epoch)
		return DDICT_VPAGE_EPOCH;
	return DDICT_VPAGE_OK;
}

/* Second half: nothing restarted or stopped since begin(). */
static ddict_vpage_status
end(const ddict_vpage *pg, uint64_t state)
{
	uint64_t	now = LOAD(&pg->h->state, relaxed);

	if (now == state)
		return DDICT_VPAGE_OK;
	return (now & VP_ALIVE) ? DDICT_VPAGE_EPOCH : DDICT_VPAGE_DEAD;
}

/* One consistent (gen, ident, version) of a slot; false if it moved. */
static int
read_slot(const struct vp_slot *s, uint64_t *gen, uint64_t *ident, uint64_t *version)
{
	uint64_t	g = LOAD(&s->gen, acquire);

	if (g & 1)
		return 0;
	*ident = LOAD(&s->ident, relaxed);
	*version = LOAD(&s->version, relaxed);
	atomic_thread_fence(memory_order_acquire);
	*gen = g;
	return LOAD(&s->gen, relaxed) == g;
}

ddict_vpage_status
ddict_vpage_find(const ddict_vpage *pg, uint64_t epoch, uint32_t dboid,
				 uint32_t relid, ddict_vpage_slot *slot)
{
	uint64_t	want = ((uint64_t) dboid << 32) | relid;
	uint64_t	state;
	uint32_t	n;
	ddict_vpage_status rc;

	if (pg == NULL || slot == NULL || want == 0)
		return DDICT_VPAGE_ARG;
	if ((rc = begin(pg, epoch, &state)) != DDICT_VPAGE_OK)
		return rc;
	n = LOAD(&pg->h->nslots, relaxed);
	if (n > pg->mapped_slots)
		n = pg->mapped_slots;
	rc = DDICT_VPAGE_NOT_FOUND;
	for (uint32_t i = 0; i < n && rc == DDICT_VPAGE_NOT_FOUND; i++)
	{
		uint64_t	gen,
					ident,
					version;

		if (LOAD(&pg->slots[i].ident, relaxed) != want)
			continue;
		for (int t = 0; t < VP_FIND_TRIES; t++)
			if (read_slot(&pg->slots[i], &gen, &ident, &version))
			{
				if (ident == want)
				{
					slot->index = i;
					slot->dboid = dboid;
					slot->relid = relid;
					slot->gen = gen;
					rc = DDICT_VPAGE_OK;
				}
				break;
			}
	}
	if (rc == DDICT_VPAGE_OK || rc == DDICT_VPAGE_NOT_FOUND)
	{
		ddict_vpage_status e = end(pg, state);

		if (e != DDICT_VPAGE_OK)
			rc = e;
	}
	return rc;
}

ddict_vpage_status
ddict_vpage_read(const ddict_vpage *pg, uint64_t epoch,
				 const ddict_vpage_slot *slot, uint64_t *version)
{
	uint64_t	state,
				gen,
				ident,
				v;
	ddict_vpage_status rc;

	if (pg == NULL || slot == NULL || version == NULL || slot->index >= pg->mapped_slots)
		return DDICT_VPAGE_ARG;
	if ((rc = begin(pg, epoch, &state)) != DDICT_VPAGE_OK)
		return rc;
	if (!read_slot(&pg->slots[slot->index], &gen, &ident, &v))
		return DDICT_VPAGE_BUSY;
	if (gen != slot->gen || ident != (((uint64_t) slot->dboid << 32) | slot->relid))
		return DDICT_VPAGE_REUSED;
	if ((rc = end(pg, state)) != DDICT_VPAGE_OK)
		return rc;
	*version = v;
	return DDICT_VPAGE_OK;
}

ddict_vpage_status
ddict_vpage_verify(const ddict_vpage *pg)
{
	struct stat st;
	pid_t		pid;

	if (pg == NULL)
		return DDICT_VPAGE_ARG;
	if (stat(pg->path, &st) != 0 || st.st_dev != pg->dev || st.st_ino != pg->ino)
		return DDICT_VPAGE_DEAD;
	pid = (pid_t) LOAD(&pg->h->pid, relaxed);
	if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH))
		return DDICT_VPAGE_DEAD;
	return DDICT_VPAGE_OK;
}

const char *
ddict_vpage_strstatus(ddict_vpage_status st)
{
	switch (st)
	{
		case DDICT_VPAGE_OK:
			return "ok";
		case DDICT_VPAGE_UNAVAILABLE:
			return "unavailable";
		case DDICT_VPAGE_INVALID:
			return "invalid";
		case DDICT_VPAGE_NOT_FOUND:
			return "not_found";
		case DDICT_VPAGE_DEAD:
			return "dead";
		case DDICT_VPAGE_EPOCH:
			return "epoch_changed";
		case DDICT_VPAGE_REUSED:
			return "slot_reused";
		case DDICT_VPAGE_BUSY:
			return "busy";
		case DDICT_VPAGE_ARG:
			return "bad_argument";
	}
	return "?";
}
