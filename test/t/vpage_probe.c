/*
 * vpage_probe.c — a client process that holds the server's versions page
 * mapped (through src/client/vpage.c, the reader module) and answers
 * commands on stdin, one line each, so that 040_versions_page.pl can keep
 * mappings across server restarts and ask several processes at once.
 *
 *   open PATH | opensock DIR PORT      -> STATUS [message]
 *   header                             -> ok EPOCH ALIVE PID
 *   find NAME EPOCH DBOID RELID        -> STATUS INDEX GEN
 *   read NAME EPOCH                    -> STATUS VERSION
 *   spin NAME EPOCH MS                 -> ok READS OKREADS BACKWARDS LAST
 *                                         (reads for MS ms; BACKWARDS counts
 *                                         OK reads below an earlier OK read)
 *   verify                             -> STATUS
 *   quit
 *
 * NAME is one letter (a-z): the slot found under that name is kept.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vpage.h"

static ddict_vpage *pg;
static ddict_vpage_slot slots[26];

static int
slot_no(const char *name)
{
	return (name[0] >= 'a' && name[0] <= 'z' && name[1] == '\0') ? name[0] - 'a' : -1;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
spin(int n, uint64_t epoch, double ms)
{
	double		until = now_ms() + ms;
	unsigned long reads = 0,
				oks = 0,
				backwards = 0;
	uint64_t	last = 0,
				v;

	while (now_ms() < until)
		for (int i = 0; i < 1000; i++)
		{
			reads++;
			if (ddict_vpage_read(pg, epoch, &slots[n], &v) != DDICT_VPAGE_OK)
				continue;
			oks++;
			if (v < last)
				backwards++;
			else
				last = v;
		}
	printf("ok %lu %lu %lu %llu\n", reads, oks, backwards, (unsigned long long) last);
}

static void
command(char *line)
{
	char		cmd[16] = "",
				a[4096] = "",
				b[64] = "",
				c[64] = "",
				d[64] = "";
	char		err[256] = "";
	int			nargs = sscanf(line, "%15s %4095s %63s %63s %63s", cmd, a, b, c, d);
	int			n = nargs >= 2 ? slot_no(a) : -1;
	ddict_vpage_status st;
	uint64_t	v;

	if (strcmp(cmd, "open") == 0 || strcmp(cmd, "opensock") == 0)
	{
		ddict_vpage_close(pg);
		pg = NULL;
		st = cmd[4] ? ddict_vpage_open_socket(a, atoi(b), &pg, err, sizeof(err))
			: ddict_vpage_open(a, &pg, err, sizeof(err));
		printf("%s %s\n", ddict_vpage_strstatus(st), err);
	}
	else if (strcmp(cmd, "header") == 0)
	{
		uint64_t	epoch = 0;
		int			alive = 0;
		uint32_t	pid = 0;

		st = ddict_vpage_header(pg, &epoch, &alive, &pid);
		printf("%s %llu %d %u\n", ddict_vpage_strstatus(st),
			   (unsigned long long) epoch, alive, pid);
	}
	else if (strcmp(cmd, "find") == 0 && nargs == 5 && n >= 0)
	{
		st = ddict_vpage_find(pg, strtoull(b, NULL, 10), (uint32_t) strtoul(c, NULL, 10),
							  (uint32_t) strtoul(d, NULL, 10), &slots[n]);
		printf("%s %u %llu\n", ddict_vpage_strstatus(st), slots[n].index,
			   (unsigned long long) slots[n].gen);
	}
	else if (strcmp(cmd, "read") == 0 && nargs == 3 && n >= 0)
	{
		v = 0;
		st = ddict_vpage_read(pg, strtoull(b, NULL, 10), &slots[n], &v);
		printf("%s %llu\n", ddict_vpage_strstatus(st), (unsigned long long) v);
	}
	else if (strcmp(cmd, "spin") == 0 && nargs == 4 && n >= 0)
		spin(n, strtoull(b, NULL, 10), atof(c));
	else if (strcmp(cmd, "verify") == 0)
		printf("%s\n", ddict_vpage_strstatus(ddict_vpage_verify(pg)));
	else
		printf("usage error: %s", line);
	fflush(stdout);
}

int
main(void)
{
	char		line[8192];

	while (fgets(line, sizeof(line), stdin) != NULL)
	{
		if (strncmp(line, "quit", 4) == 0)
			break;
		command(line);
	}
	ddict_vpage_close(pg);
	return 0;
}
