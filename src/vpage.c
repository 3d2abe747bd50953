/*
 * vpage.c — the versions page: every dict's version, and the server's
 * epoch, in a small file that clients on the same host map read-only, so
 * that an autosync check costs one atomic load instead of a round trip.
 *
 * Layout (vpage.h, mirrored by src/client/vpage.h): a 64-byte header (magic,
 * layout, sizes, the postmaster's pid, the epoch, a state word whose low bit
 * is ALIVE and whose other bits count starts) and one 32-byte slot per entry
 * of shmem.c's version table (DictEntry.vslot is the index).  A slot holds a
 * generation, the dict's identity (dboid << 32 | relid, 0 = free) and its
 * version.  Only the page reveals is versions: never keys or values.
 *
 * Who writes what, and why a lock-free reader is never fooled:
 *
 *   identity  changes only under shmem.c's lock held exclusively (a slot is
 *             attached when an entry is created, detached when it is
 *             forgotten), inside a seqlock: the generation is odd while the
 *             identity changes and is two higher afterwards.  A reader that
 *             cached (slot, generation) sees any reuse as a new generation.
 *   version   moves under the lock held at least shared, by an atomic
 *             compare-and-swap to the max, right after shmem.c's version
 *             moved: at commit (XACT_EVENT_COMMIT, after the commit is
 *             visible and before the client hears COMMIT), on WAL replay and
 *             when a standby's reader resolves a pending bump.  So a client
 *             told COMMIT finds the new version on the page.
 *   header    is written by the postmaster alone: at every shared memory
 *             (re)initialisation (start, crash restart) the file is reused IN
 *             PLACE (same inode: existing mappings see it), the state loses
 *             ALIVE and counts a start, slots are cleared, the new epoch is
 *             stored and ALIVE comes back; at postmaster exit (smart, fast
 *             and immediate stops alike) ALIVE is cleared.  A reader checks
 *             the state before and after reading a slot and compares the
 *             epoch with the one its cache came from.
 *
 * A postmaster killed outright leaves ALIVE set and the old epoch.  A reader
 * then answers "unchanged", which is true: no server writes the data while
 * none runs (orphaned backends that still commit keep writing the page).
 * The next start of a server on the same path changes the epoch in place
 * before it accepts a connection.  A start with the page disabled (or in
 * single-user mode) still retires an existing page at the default path, so
 * that no reader believes a crashed server's page.
 *
 * Permissions: created by the server (O_NOFOLLOW, refused unless it is a
 * regular file the server owns and empty or a page), mode ddict.versions_page_mode (never
 * writable by group or others) and group ddict.versions_page_group, both
 * applied at every start.
 */
#include "vpage.h"
#include "ddict.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libpq/pqcomm.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include <signal.h>

#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/varlena.h"

typedef struct VPageHeader
{
	uint32		magic;
	uint32		layout;
	uint32		header_size;
	uint32		slot_size;
	uint32		nslots;
	uint32		pid;			/* postmaster's pid */
	pg_atomic_uint64 epoch;		/* ddict_epoch() of the writing server */
	pg_atomic_uint64 state;		/* starts << 1 | VPAGE_ALIVE */
	char		pad[VPAGE_HEADER_SIZE - 40];
} VPageHeader;

typedef struct VPageSlot
{
	pg_atomic_uint64 gen;		/* odd while the identity changes */
	pg_atomic_uint64 ident;		/* dboid << 32 | relid; 0 = free */
	pg_atomic_uint64 version;
	uint64		reserved;
} VPageSlot;

StaticAssertDecl(sizeof(VPageHeader) == VPAGE_HEADER_SIZE, "versions page header size");
StaticAssertDecl(offsetof(VPageHeader, epoch) == 24, "versions page epoch offset");
StaticAssertDecl(offsetof(VPageHeader, state) == 32, "versions page state offset");
StaticAssertDecl(sizeof(VPageSlot) == VPAGE_SLOT_SIZE, "versions page slot size");

char	   *ddict_versions_page = "";
int			ddict_versions_page_mode = 0640;
char	   *ddict_versions_page_group = "";

static VPageHeader *page = NULL;	/* mapped by the postmaster, inherited */
static int	page_slots = 0;		/* slots in the mapped file */

#define SLOT_OF(h, i) (((VPageSlot *) ((char *) (h) + VPAGE_HEADER_SIZE)) + (i))
#define SLOT(i) SLOT_OF(page, i)

static bool
check_page(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0' || strcmp(*newval, "off") == 0 ||
		is_absolute_path(*newval))
		return true;
	GUC_check_errdetail("ddict.versions_page must be '' (beside the server's first Unix socket), 'off' or an absolute path.");
	return false;
}

static bool
check_mode(int *newval, void **extra, GucSource source)
{
	if ((*newval & ~0644) == 0)
		return true;
	GUC_check_errdetail("The versions page may be writable by its owner only, and executable by no one (at most 0644).");
	return false;
}

static const char *
show_mode(void)
{
	static char buf[12];

	snprintf(buf, sizeof(buf), "%04o", ddict_versions_page_mode);
	return buf;
}

void
ddict_vpage_define_gucs(void)
{
	DefineCustomStringVariable("ddict.versions_page",
							   "File of the versions page that same-host clients map read-only.",
							   "'' puts it beside the server's first Unix socket (.s.PGSQL.<port>.ddict); 'off' disables it.",
							   &ddict_versions_page, "",
							   PGC_POSTMASTER, 0, check_page, NULL, NULL);
	DefineCustomIntVariable("ddict.versions_page_mode",
							"File mode of the versions page (owner read/write is always added).",
							NULL,
							&ddict_versions_page_mode,
							0640, 0, 0644,
							PGC_POSTMASTER, 0, check_mode, NULL, show_mode);
	DefineCustomStringVariable("ddict.versions_page_group",
							   "Group of the versions page; '' is the server's group.",
							   NULL,
							   &ddict_versions_page_group, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/* <first Unix socket directory>/.s.PGSQL.<port>.ddict, or false when none. */
static bool
default_path(char *buf)
{
	char		sock[MAXPGPATH];
	char	   *raw = pstrdup(Unix_socket_directories ? Unix_socket_directories : "");
	List	   *dirs;
	ListCell   *lc;
	bool		found = false;

	if (!SplitDirectoriesString(raw, ',', &dirs))
		return false;
	foreach(lc, dirs)
	{
		char	   *dir = lfirst(lc);

		if (dir[0] == '\0' || dir[0] == '@')	/* abstract namespace: no file */
			continue;
		UNIXSOCK_PATH(sock, PostPortNumber, dir);
		snprintf(buf, MAXPGPATH, "%s.ddict", sock);
		found = true;
		break;
	}
	list_free_deep(dirs);
	pfree(raw);
	return found;
}

/*
 * Is this file ours to (re)write: empty, a versions page, or a page whose
 * first creation stopped before its magic was written (zeros, page-sized)?
 * A mistyped path never overwrites someone's file.
 */
static bool
looks_like_page(int fd, const struct stat *st)
{
	uint32		magic = 0;

	if (st->st_size == 0)
		return true;
	if (st->st_size < VPAGE_HEADER_SIZE ||
		pread(fd, &magic, sizeof(magic), 0) != sizeof(magic))
		return false;
	return magic == VPAGE_MAGIC ||
		(magic == 0 && (st->st_size - VPAGE_HEADER_SIZE) % VPAGE_SLOT_SIZE == 0);
}

/*
 * Is the page alive and written by another postmaster that still runs (two
 * clusters configured with one ddict.versions_page)?  Taking it over would
 * hand that server's readers our epoch, and our exit would mark their page
 * dead.  A pid reused by an unrelated process only costs us the page.
 */
static bool
in_use_by_another_server(int fd, const struct stat *st)
{
	VPageHeader h;

	if (st->st_size < VPAGE_HEADER_SIZE ||
		pread(fd, &h, sizeof(h), 0) != sizeof(h) ||
		h.magic != VPAGE_MAGIC || h.pid == 0 || h.pid == (uint32) PostmasterPid ||
		(pg_atomic_read_u64(&h.state) & VPAGE_ALIVE) == 0)
		return false;
	if (kill((pid_t) h.pid, 0) != 0 && errno == ESRCH)
		return false;
	ereport(WARNING,
			(errmsg("ddict: versions page is in use by another running server (postmaster PID %u); not using it",
					h.pid),
			 errhint("Give each cluster its own ddict.versions_page.")));
	return true;
}

/* Open an existing or new page file the server owns; -1 with a WARNING. */
static int
open_page(const char *path, bool create, struct stat *st)
{
	int			fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0),
						  S_IRUSR | S_IWUSR);

	if (fd < 0)
	{
		if (create || errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("ddict: could not open versions page \"%s\": %m", path),
					 errdetail("Clients use a round trip for every autosync check.")));
		return -1;
	}
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_uid != geteuid() ||
		st->st_nlink != 1)
	{
		ereport(WARNING,
				(errmsg("ddict: versions page \"%s\" is not a regular file of the server's user; not using it", path)));
		close(fd);
		return -1;
	}
	if (in_use_by_another_server(fd, st))
	{
		close(fd);
		return -1;
	}
	if (!looks_like_page(fd, st))
	{
		ereport(WARNING,
				(errmsg("ddict: \"%s\" exists and is not a ddict versions page; not using it", path),
				 errhint("Remove the file or set ddict.versions_page to another path.")));
		close(fd);
		return -1;
	}
	return fd;
}

static bool
apply_permissions(int fd, const char *path)
{
	gid_t		gid = getegid();

	if (ddict_versions_page_group[0] != '\0')
	{
		struct group *gr = getgrnam(ddict_versions_page_group);

		if (gr == NULL)
		{
			ereport(WARNING,
					(errmsg("ddict: group \"%s\" of ddict.versions_page_group does not exist",
							ddict_versions_page_group)));
			return false;
		}
		gid = gr->gr_gid;
	}
	if (fchown(fd, (uid_t) -1, gid) != 0 ||
		fchmod(fd, (mode_t) (ddict_versions_page_mode | S_IRUSR | S_IWUSR)) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("ddict: could not set group or mode of versions page \"%s\": %m", path)));
		return false;
	}
	return true;
}

/* Map fd's first len bytes (at least); NULL with a WARNING. */
static VPageHeader *
map_page(int fd, const char *path, Size len)
{
	void	   *p;

	/* blocks allocated now: a store into the mapping can never SIGBUS */
	if (posix_fallocate(fd, 0, (off_t) len) != 0)
	{
		ereport(WARNING,
				(errmsg("ddict: could not allocate versions page \"%s\"", path)));
		return NULL;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("ddict: could not map versions page \"%s\": %m", path)));
		return NULL;
	}
	return (VPageHeader *) p;
}

/*
 * A new life for the page: not alive, one more start, cleared slots, the new
 * epoch, then (if alive) ALIVE.  Nothing else writes the page meanwhile.
 */
static void
page_restart(VPageHeader *h, int nfile, int nslots, uint64 epoch, bool alive)
{
	uint64		starts = pg_atomic_read_u64(&h->state) >> 1;

	pg_atomic_write_u64(&h->state, (starts + 1) << 1);
	pg_memory_barrier();
	for (int i = 0; i < nfile; i++)
	{
		VPageSlot  *s = SLOT_OF(h, i);
		uint64		gen = pg_atomic_read_u64(&s->gen);

		pg_atomic_write_u64(&s->gen, gen | 1);
		pg_write_barrier();
		pg_atomic_write_u64(&s->ident, 0);
		pg_atomic_write_u64(&s->version, 0);
		s->reserved = 0;
		pg_write_barrier();
		pg_atomic_write_u64(&s->gen, (gen | 1) + 1);
	}
	h->layout = VPAGE_LAYOUT;
	h->header_size = VPAGE_HEADER_SIZE;
	h->slot_size = VPAGE_SLOT_SIZE;
	h->nslots = nslots;
	h->pid = (uint32) PostmasterPid;
	pg_atomic_write_u64(&h->epoch, epoch);
	pg_write_barrier();
	h->magic = VPAGE_MAGIC;
	pg_memory_barrier();
	if (alive)
		pg_atomic_write_u64(&h->state, ((starts + 1) << 1) | VPAGE_ALIVE);
}

static void
mark_dead(int code, Datum arg)
{
	if (page == NULL || MyProcPid != PostmasterPid)
		return;
	pg_memory_barrier();
	pg_atomic_fetch_and_u64(&page->state, ~VPAGE_ALIVE);
}

/*
 * The page is disabled, or cannot be served: a page left at the default
 * path by an earlier run must still tell its readers (it may say ALIVE if
 * that run was killed), and, disabled, it goes away.
 */
static void
retire(const char *path, uint64 epoch, bool remove)
{
	struct stat st;
	int			fd = open_page(path, false, &st);
	void	   *p;

	if (fd < 0)
		return;
	if (st.st_size >= VPAGE_HEADER_SIZE)	/* (open_page() checked its magic) */
	{
		int			nfile = (st.st_size - VPAGE_HEADER_SIZE) / VPAGE_SLOT_SIZE;

		p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED)
		{
			page_restart(p, nfile, nfile, epoch, false);
			munmap(p, st.st_size);
		}
	}
	if (remove && unlink(path) != 0)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("ddict: could not remove versions page \"%s\": %m", path)));
	close(fd);
}

void
ddict_vpage_startup(uint64 epoch, int nslots)
{
	char		path[MAXPGPATH];
	struct stat st;
	int			fd;
	Size		len;
	VPageHeader *h;

#ifdef EXEC_BACKEND
	return;						/* children would not inherit the mapping */
#endif
	if (IsUnderPostmaster)
		return;
	if (page != NULL)			/* crash restart: same file, same settings */
	{
		page_restart(page, page_slots, nslots, epoch, true);
		on_shmem_exit(mark_dead, (Datum) 0);
		return;
	}
	if (strcmp(ddict_versions_page, "off") == 0)
	{
		if (default_path(path))
			retire(path, epoch, true);
		return;
	}
	if (ddict_versions_page[0] != '\0')
		strlcpy(path, ddict_versions_page, MAXPGPATH);
	else if (!default_path(path))
		return;
	if (!IsPostmasterEnvironment)
	{
		retire(path, epoch, false);	/* single-user mode: no page, no lie */
		return;
	}

	fd = open_page(path, true, &st);
	if (fd < 0)
		return;
	len = Max((Size) st.st_size,
			  VPAGE_HEADER_SIZE + (Size) nslots * VPAGE_SLOT_SIZE);
	h = map_page(fd, path, len);
	if (h == NULL)
	{
		close(fd);
		retire(path, epoch, false);
		return;
	}
	if (!apply_permissions(fd, path))
	{
		page_restart(h, (len - VPAGE_HEADER_SIZE) / VPAGE_SLOT_SIZE, nslots, epoch, false);
		munmap(h, len);
		close(fd);
		return;
	}
	close(fd);
	page_slots = (len - VPAGE_HEADER_SIZE) / VPAGE_SLOT_SIZE;
	page_restart(h, page_slots, nslots, epoch, true);
	page = h;
	on_shmem_exit(mark_dead, (Datum) 0);
	ereport(LOG, (errmsg("ddict: versions page at \"%s\"", path)));
}

int
ddict_vpage_attach(Oid dboid, Oid relid, uint64 version)
{
	int			n;

	if (page == NULL)
		return -1;
	n = Min((int) page->nslots, page_slots);
	for (int i = 0; i < n; i++)
	{
		VPageSlot  *s = SLOT(i);
		uint64		gen;

		if (pg_atomic_read_u64(&s->ident) != 0)
			continue;
		gen = pg_atomic_read_u64(&s->gen);
		pg_atomic_write_u64(&s->gen, gen + 1);
		pg_write_barrier();
		pg_atomic_write_u64(&s->ident, ((uint64) dboid << 32) | relid);
		pg_atomic_write_u64(&s->version, version);
		pg_write_barrier();
		pg_atomic_write_u64(&s->gen, gen + 2);
		return i;
	}
	return -1;					/* not reached: as many slots as entries */
}

void
ddict_vpage_detach(int slot)
{
	VPageSlot  *s;
	uint64		gen;

	if (page == NULL || slot < 0)
		return;
	s = SLOT(slot);
	gen = pg_atomic_read_u64(&s->gen);
	pg_atomic_write_u64(&s->gen, gen + 1);
	pg_write_barrier();
	pg_atomic_write_u64(&s->ident, 0);
	pg_atomic_write_u64(&s->version, 0);
	pg_write_barrier();
	pg_atomic_write_u64(&s->gen, gen + 2);
}

void
ddict_vpage_set(int slot, uint64 version)
{
	VPageSlot  *s;
	uint64		old;

	if (page == NULL || slot < 0)
		return;
	s = SLOT(slot);
	old = pg_atomic_read_u64(&s->version);
	while (old < version &&
		   !pg_atomic_compare_exchange_u64(&s->version, &old, version))
		;
}
