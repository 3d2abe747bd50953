/*
 * copy.c — a parser of COPY ... TO STDOUT (FORMAT binary) streams of
 * (key, value) rows: bytes in, rows out, no I/O (hiredis' reader style: the
 * caller feeds what the connection gave it and takes rows while there are
 * some).  The full load by COPY (load.c) feeds it libpq's CopyData buffers.
 *
 * The format (PostgreSQL docs, "COPY", binary format): an 11-byte signature
 * "PGCOPY\n\377\r\n\0", a 32-bit flags field (bit 16: OIDs included; bits
 * 17-31 reserved, a reader must refuse them), a 32-bit header extension
 * length and that many bytes; then per row a 16-bit field count, and per
 * field a 32-bit length (-1: NULL) and the bytes; the trailer is a field
 * count of -1.  All integers are big-endian.
 *
 * What the stream must be here: exactly two fields per row, neither NULL
 * (a dict has text keys and NOT NULL values), no OIDs, the trailer once and
 * nothing after it.  Anything else — a bad signature, a negative length, a
 * row cut short at the end of the data, a third column — is an error with a
 * message; nothing is read beyond what was fed, and lengths are checked
 * before they are used (test_unit feeds truncated and random streams).
 *
 * Rows point into the data: into the caller's buffer when a row lies in one
 * fed piece (libpq sends a row per CopyData message, so that is the rule
 * and nothing is copied), else into the parser's own buffer, which keeps the
 * unconsumed tail of a piece until the next one completes it.  A row is
 * valid until the next call.  Rejected: a parser that copies every byte (a
 * 1M-key load would copy the dict once more), and one that assumes a row
 * per piece (a proxy or a future libpq may split or merge them).
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

/* The header extension PostgreSQL sends is empty; refuse absurd ones. */
#define DD_COPY_MAX_EXT (64 * 1024)

void
dd_copy_init(dd_copy *p)
{
	memset(p, 0, sizeof(*p));
}

void
dd_copy_free(dd_copy *p)
{
	free(p->own);
	memset(p, 0, sizeof(*p));
}

enum
{
	ST_HEADER, ST_ROWS, ST_END, ST_ERROR
};

static int
fail(dd_copy *p, const char *what)
{
	p->state = ST_ERROR;
	snprintf(p->err, sizeof(p->err), "malformed COPY data: %s", what);
	return DDICT_ERR;
}

/* Keep bytes in the parser's own buffer (appended to what it holds). */
static int
keep(dd_copy *p, const char *data, size_t n)
{
	if (p->ownlen + n > p->owncap)
	{
		size_t		cap = p->owncap ? p->owncap : 256;
		char	   *nb;

		while (cap < p->ownlen + n)
		{
			if (cap > SIZE_MAX / 2)
				return DDICT_ENOMEM;
			cap *= 2;
		}
		if ((nb = realloc(p->own, cap)) == NULL)
			return DDICT_ENOMEM;
		p->own = nb;
		p->owncap = cap;
	}
	memcpy(p->own + p->ownlen, data, n);
	p->ownlen += n;
	return DDICT_OK;
}

int
dd_copy_feed(dd_copy *p, const char *data, size_t n)
{
	if (p->state == ST_ERROR)
		return DDICT_OK;		/* next() reports it */
	if (p->win && p->winpos < p->winlen)
		return DDICT_EINVAL;	/* the caller must take rows until more is needed */
	if (p->win && p->win == p->own)
		p->ownlen = 0;			/* all of it was taken */
	if (p->ownlen > 0)
	{
		/* a tail is waiting: the new piece completes it in our buffer */
		if (keep(p, data, n) != DDICT_OK)
			return DDICT_ENOMEM;
		p->win = p->own;
		p->winlen = p->ownlen;
	}
	else
	{
		p->win = data;
		p->winlen = n;
	}
	p->winpos = 0;
	return DDICT_OK;
}

static uint16_t
get16(const char *s)
{
	uint16_t	v;

	memcpy(&v, s, 2);
	return be16toh(v);
}

static uint32_t
get32(const char *s)
{
	uint32_t	v;

	memcpy(&v, s, 4);
	return be32toh(v);
}

/*
 * The window holds too little: keep its unconsumed tail (when it is the
 * caller's buffer) and ask for more.
 */
static int
need_more(dd_copy *p)
{
	const char *tail = p->win + p->winpos;
	size_t		n = p->winlen - p->winpos;

	if (p->win == p->own)
	{
		memmove(p->own, tail, n);
		p->ownlen = n;
	}
	else if (n > 0 && keep(p, tail, n) != DDICT_OK)
		return DDICT_ENOMEM;
	p->win = NULL;
	p->winlen = p->winpos = 0;
	return DD_COPY_MORE;
}

static int
header(dd_copy *p)
{
	const char *s = p->win + p->winpos;
	size_t		avail = p->winlen - p->winpos;
	uint32_t	flags,
				ext;

	if (avail >= 1 && memcmp(s, signature, avail < sizeof(signature) ? avail : sizeof(signature)) != 0)
		return fail(p, "not a binary COPY stream (bad signature)");
	if (avail < sizeof(signature) + 8)
		return need_more(p);
	flags = get32(s + 11);
	ext = get32(s + 15);
	if (flags & (1u << 16))
		return fail(p, "rows carry OIDs");
	if (flags & 0xFFFE0000u)
		return fail(p, "unknown critical flags in the header");
	if (ext > DD_COPY_MAX_EXT)
		return fail(p, "header extension too long");
	if (avail < sizeof(signature) + 8 + ext)
		return need_more(p);
	p->winpos += sizeof(signature) + 8 + ext;
	p->state = ST_ROWS;
	return DDICT_OK;
}

int
dd_copy_next(dd_copy *p, dd_copy_row *row)
{
	const char *s;
	size_t		avail,
				off;
	uint32_t	len[2];
	int16_t		nf;

	if (p->state == ST_ERROR)
		return DDICT_ERR;
	if (p->win == NULL)
		return p->state == ST_END ? DD_COPY_END : DD_COPY_MORE;
	if (p->state == ST_HEADER)
	{
		int			rc = header(p);

		if (rc != DDICT_OK)
			return rc;
	}
	s = p->win + p->winpos;
	avail = p->winlen - p->winpos;
	if (p->state == ST_END)
	{
		if (avail > 0)
			return fail(p, "data after the trailer");
		if (p->win == p->own)
			p->ownlen = 0;
		p->win = NULL;
		p->winlen = p->winpos = 0;
		return DD_COPY_END;
	}
	if (avail < 2)
		return need_more(p);
	nf = (int16_t) get16(s);
	if (nf == -1)
	{
		p->winpos += 2;
		p->state = ST_END;
		return dd_copy_next(p, row);
	}
	if (nf != 2)
		return fail(p, "a row without exactly two columns");
	off = 2;
	for (int i = 0; i < 2; i++)
	{
		if (avail - off < 4)
			return need_more(p);
		len[i] = get32(s + off);
		if (len[i] == UINT32_MAX)
			return fail(p, i == 0 ? "a row without a key" : "a row without a value");
		if (len[i] > INT32_MAX)
			return fail(p, "a negative field length");
		off += 4;
		if (avail - off < len[i])
			return need_more(p);
		if (i == 0)
			row->key = s + off;
		else
			row->val = s + off;
		off += len[i];
	}
	row->klen = len[0];
	row->vlen = len[1];
	p->winpos += off;
	p->rows++;
	return DD_COPY_ROW;
}

int
dd_copy_finish(dd_copy *p)
{
	if (p->state == ST_ERROR)
		return DDICT_ERR;
	if (p->state != ST_END)
		return fail(p, p->state == ST_HEADER ? "the stream ended in its header" :
					"the stream ended without its trailer");
	if ((p->win == NULL && p->ownlen > 0) || (p->win && p->winpos < p->winlen))
		return fail(p, "data after the trailer");
	return DDICT_OK;
}
