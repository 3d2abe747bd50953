/*
 * snapfile.c — the optional snapshot file: a copy of the dict on disk, so a
 * process that starts while the database is unreachable can serve the last
 * known contents (marked stale) instead of nothing.
 *
 * Format (integers little-endian):
 *   "DDICTSN1"  u32 format(2)  u32 dictlen  dict  u32 relid
 *   i64 version  i64 epoch  i64 cursor  u64 count
 *   count x { u32 klen  u32 vlen  key  value }
 *   u64 checksum of everything before it (chained SipHash, fixed key)
 *
 * Written to a temporary file in the same directory, fsync'ed, renamed over
 * the old one: readers see the old or the new file, never half of one.  A
 * write never replaces a file that holds a newer version of the dict
 * (versions are microsecond clocks that are never reused, so they compare
 * across server restarts); an exclusive flock on "<path>.lock" makes that
 * check-and-replace atomic between processes sharing the file.
 *
 * The version, epoch and cursor travel with the contents: once the server is
 * reachable again, the first check asks for a delta from exactly there.
 *
 * So does the OID of the relation the contents came from (format 2): a dict
 * is opened by name, and the name may mean another relation by then (a
 * blue/green schema swap).  The file is only read while the server is
 * unreachable, and its contents are served stale until the first check,
 * which sends that OID: another relation behind the name is then reloaded in
 * full, never patched with a delta of the other table (sync.c).  Format 1
 * files (no OID) still load, with the relation unknown, which also makes the
 * first check a full one.  A write replaces a file of another relation
 * whatever its version: versions of two relations do not compare.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAGIC "DDICTSN1"
#define FORMAT 2
#define FORMAT_NO_RELID 1		/* still read */

static const uint64_t ck_key[2] = {UINT64_C(0x6464696374736e31), UINT64_C(0x636865636b73756d)};

typedef struct writer
{
	FILE	   *f;
	uint64_t	ck;
	bool		err;
} writer;

static void
put(writer *w, const void *p, size_t n)
{
	if (n == 0 || w->err)
		return;
	w->ck = (w->ck ^ dd_hash(ck_key, p, n)) * UINT64_C(0x100000001b3) + n;
	if (fwrite(p, 1, n, w->f) != n)
		w->err = true;
}

static void
put32(writer *w, uint32_t v)
{
	v = htole32(v);
	put(w, &v, 4);
}

static void
put64(writer *w, uint64_t v)
{
	v = htole64(v);
	put(w, &v, 8);
}

typedef struct reader
{
	FILE	   *f;
	uint64_t	ck;
	uint64_t	left;			/* bytes left in the file */
	bool		err;
} reader;

static void
get(reader *r, void *p, size_t n)
{
	if (n == 0 || r->err)
		return;
	if (n > r->left || fread(p, 1, n, r->f) != n)
	{
		r->err = true;
		return;
	}
	r->left -= n;
	r->ck = (r->ck ^ dd_hash(ck_key, p, n)) * UINT64_C(0x100000001b3) + n;
}

static uint32_t
get32(reader *r)
{
	uint32_t	v = 0;

	get(r, &v, 4);
	return le32toh(v);
}

static uint64_t
get64(reader *r)
{
	uint64_t	v = 0;

	get(r, &v, 8);
	return le64toh(v);
}

/* Version of the dict (this relation of it) in an existing file; INT64_MIN
 * if none, unreadable, or of another relation. */
static int64_t
file_version(const char *path, const char *dict, uint32_t relid)
{
	FILE	   *f = fopen(path, "rb");
	reader		r = {0};
	char		magic[8];
	uint32_t	dlen;
	char	   *name;
	int64_t		v = INT64_MIN;
	struct stat st;

	if (f == NULL)
		return INT64_MIN;
	r.f = f;
	r.left = fstat(fileno(f), &st) == 0 ? (uint64_t) st.st_size : 0;
	get(&r, magic, 8);
	if (!r.err && memcmp(magic, MAGIC, 8) == 0 && get32(&r) == FORMAT)
	{
		dlen = get32(&r);
		if (!r.err && dlen == strlen(dict) && (name = malloc(dlen + 1)) != NULL)
		{
			get(&r, name, dlen);
			if (!r.err && memcmp(name, dict, dlen) == 0 && get32(&r) == relid)
			{
				int64_t		fv = (int64_t) get64(&r);

				if (!r.err)
					v = fv;
			}
			free(name);
		}
	}
	fclose(f);
	return v;
}

int
dd_snapfile_write(ddict *h, const ddict_snapshot *s)
{
	const char *path = h->opts.snapshot_path;
	size_t		plen = strlen(path);
	char	   *tmp = malloc(plen + 32),
			   *lockpath = malloc(plen + 6);
	writer		w = {0};
	int			lockfd = -1,
				fd = -1,
				rc = DDICT_EIO;
	size_t		pos = 0;
	const char *key,
			   *val;
	size_t		klen,
				vlen;

	if (tmp == NULL || lockpath == NULL)
	{
		free(tmp);
		free(lockpath);
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	}
	snprintf(lockpath, plen + 6, "%s.lock", path);
	snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long) getpid());

	lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lockfd < 0 || flock(lockfd, LOCK_EX) != 0)
	{
		rc = dd_fail(h, DDICT_EIO, "snapshot file \"%s\": %s", lockpath, strerror(errno));
		goto out;
	}
	if (file_version(path, h->dict, s->relid) > s->version)
	{
		/* Someone wrote fresher data: keep it; look again next interval. */
		h->snapfile_written_us = dd_now_us();
		rc = DDICT_OK;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (w.f = fdopen(fd, "wb")) == NULL)
	{
		rc = dd_fail(h, DDICT_EIO, "snapshot file \"%s\": %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	put(&w, MAGIC, 8);
	put32(&w, FORMAT);
	put32(&w, (uint32_t) strlen(h->dict));
	put(&w, h->dict, strlen(h->dict));
	put32(&w, s->relid);
	put64(&w, (uint64_t) s->version);
	put64(&w, (uint64_t) s->epoch);
	put64(&w, (uint64_t) s->cursor);
	put64(&w, (uint64_t) s->len);
	while (ddict_snapshot_next(s, &pos, &key, &klen, &val, &vlen))
	{
		put32(&w, (uint32_t) klen);
		put32(&w, (uint32_t) vlen);
		put(&w, key, klen);
		put(&w, val, vlen);
	}
	{
		uint64_t	ck = htole64(w.ck);

		if (!w.err && fwrite(&ck, 1, 8, w.f) != 8)
			w.err = true;
	}
	errno = 0;
	if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)
		w.err = true;
	if (fclose(w.f) != 0)
		w.err = true;
	if (w.err || rename(tmp, path) != 0)
	{
		rc = dd_fail(h, DDICT_EIO, "snapshot file \"%s\": %s", path,
					 errno ? strerror(errno) : "write failed");
		unlink(tmp);
		goto out;
	}
	{
		/* Make the rename itself durable. */
		char	   *dcopy = strdup(path);

		if (dcopy)
		{
			int			dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

			if (dfd >= 0)
			{
				(void) fsync(dfd);
				close(dfd);
			}
			free(dcopy);
		}
	}
	h->snapfile_written_us = dd_now_us();
	h->snapfile_version = s->version;
	rc = DDICT_OK;
out:
	if (lockfd >= 0)
		close(lockfd);			/* releases the flock */
	free(tmp);
	free(lockpath);
	return rc;
}

int
dd_snapfile_read(const char *path, const char *dict, const uint64_t seed[2],
				 ddict_snapshot **out)
{
	FILE	   *f;
	reader		r = {0};
	char		magic[8];
	uint32_t	format,
				dlen,
				relid = 0;
	char	   *buf = NULL;
	size_t		bufsize = 0;
	dd_table   *tab = NULL;
	ddict_snapshot *s = NULL;
	int64_t		version,
				epoch,
				cursor;
	uint64_t	count,
				ck;
	struct stat st;

	*out = NULL;
	f = fopen(path, "rb");
	if (f == NULL)
		return dd_seterr(DDICT_EIO, "snapshot file \"%s\": %s", path, strerror(errno));
	r.f = f;
	r.left = fstat(fileno(f), &st) == 0 ? (uint64_t) st.st_size : 0;
	get(&r, magic, 8);
	if (r.err || memcmp(magic, MAGIC, 8) != 0)
		goto bad;
	format = get32(&r);
	if (r.err || (format != FORMAT && format != FORMAT_NO_RELID))
		goto bad;
	dlen = get32(&r);
	if (r.err || dlen > r.left || (buf = malloc(dlen + 1)) == NULL)
		goto bad;
	bufsize = dlen + 1;
	get(&r, buf, dlen);
	if (r.err)
		goto bad;
	if (dlen != strlen(dict) || memcmp(buf, dict, dlen) != 0)
	{
		fclose(f);
		free(buf);
		return dd_seterr(DDICT_EIO, "snapshot file \"%s\" holds another dict", path);
	}
	if (format == FORMAT)
		relid = get32(&r);
	version = (int64_t) get64(&r);
	epoch = (int64_t) get64(&r);
	cursor = (int64_t) get64(&r);
	count = get64(&r);
	/* Every entry takes at least 8 bytes: a corrupt count cannot make us
	 * allocate more than the file could hold. */
	if (r.err || count > r.left / 8 || (tab = dd_table_new((size_t) count)) == NULL)
		goto bad;
	for (uint64_t i = 0; i < count; i++)
	{
		uint32_t	klen = get32(&r),
					vlen = get32(&r);
		size_t		need = (size_t) klen + vlen;

		if (r.err || klen > DD_MAX_LEN || vlen > DD_MAX_LEN || need > r.left)
			goto bad;
		if (need + 1 > bufsize)
		{
			char	   *nb = realloc(buf, need + 1);

			if (nb == NULL)
				goto bad;
			buf = nb;
			bufsize = need + 1;
		}
		/* key and value separately: the checksum chains per field written */
		get(&r, buf, klen);
		get(&r, buf + klen, vlen);
		if (r.err ||
			dd_table_put(tab, dd_hash(seed, buf, klen), buf, klen, buf + klen, vlen) != DDICT_OK)
			goto bad;
	}
	ck = r.ck;
	{
		uint64_t	fck = 0;

		if (r.left != 8 || fread(&fck, 1, 8, f) != 8 || le64toh(fck) != ck)
			goto bad;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto bad;
	atomic_init(&s->refs, 1);
	s->base = tab;
	s->len = tab->live;
	s->version = version;
	s->epoch = epoch;
	s->cursor = cursor;
	s->relid = relid;
	s->floor = INT64_MAX;		/* a stream entry needs a server's answer first */
	memcpy(s->seed, seed, sizeof(s->seed));
	fclose(f);
	free(buf);
	*out = s;
	return DDICT_OK;
bad:
	fclose(f);
	free(buf);
	dd_table_unref(tab);
	return dd_seterr(DDICT_EIO, "snapshot file \"%s\" is damaged or not a ddict snapshot", path);
}

/*
 * The snapshot file follows the cache at most every snapshot_interval_ms:
 * called after each publish and each successful check, so a change that
 * came within the interval is written by a later check.  Sync lock held.
 */
void
dd_snapfile_maybe_write(ddict *h)
{
	const ddict_snapshot *cur = atomic_load(&h->current);

	if (h->opts.snapshot_path == NULL || cur->epoch == 0 ||
		cur->version == h->snapfile_version)
		return;
	if (h->snapfile_written_us != 0 &&
		dd_now_us() - h->snapfile_written_us < (int64_t) h->opts.snapshot_interval_ms * 1000)
		return;
	(void) dd_snapfile_write(h, cur);
}
