/*
 * io.c — the bottom of the transport stack: clocks, bounded waits, event
 * fds and the reconnect backoff, shared by the libpq connection (conn.c)
 * and the Redis connection (rconn.c), so that both retry the same way.
 *
 * Every wait of the library goes through dd_wait_fd(): poll() with a
 * deadline, never a blocking call inside libpq or the kernel's TCP timeout,
 * and ended at once by the client's stop fd (ddict_client_close()).
 *
 * Backoff: an established connection that broke is retried at once (a
 * restarted server is usually back quickly); each failed attempt then
 * doubles the delay from min_ms up to max_ms, with +-25% jitter so that
 * many processes do not reconnect in lockstep.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int64_t
dd_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
dd_deadline_ms(unsigned ms)
{
	return ms ? dd_now_us() + (int64_t) ms * 1000 : INT64_MAX;
}

/* poll()'s timeout for a deadline: -1 forever, 0 already passed */
int
dd_poll_timeout(int64_t deadline)
{
	int64_t		left;

	if (deadline == INT64_MAX)
		return -1;
	left = deadline - dd_now_us();
	if (left <= 0)
		return 0;
	return left / 1000 >= INT_MAX ? INT_MAX : (int) ((left + 999) / 1000);
}

int
dd_wait_fd(int fd, short events, int64_t deadline, int stop_fd)
{
	struct pollfd pfd[2];

	if (fd < 0)
		return DDICT_ECONN;
	pfd[0].fd = fd;
	pfd[0].events = events;
	pfd[1].fd = stop_fd;
	pfd[1].events = POLLIN;
	for (;;)
	{
		int			timeout = dd_poll_timeout(deadline),
					rc;

		if (timeout == 0 && deadline != INT64_MAX && deadline <= dd_now_us())
			return DDICT_ETIMEDOUT;
		pfd[0].revents = pfd[1].revents = 0;
		rc = poll(pfd, stop_fd >= 0 ? 2 : 1, timeout);
		if (rc > 0 && pfd[1].revents)
			return DD_STOPPED;
		if (rc > 0)
			return DDICT_OK;
		if (rc < 0 && errno != EINTR)
			return DDICT_ECONN;
	}
}

void
dd_event_signal(int fd)
{
	uint64_t	one = 1;

	if (fd >= 0)
		(void) !write(fd, &one, sizeof(one));
}

void
dd_event_drain(int fd)
{
	uint64_t	v;

	if (fd >= 0)
		(void) !read(fd, &v, sizeof(v));
}

void
dd_backoff_init(dd_backoff *b, unsigned min_ms, unsigned max_ms)
{
	b->ms = 0;
	b->next_us = 0;
	b->min_ms = min_ms ? min_ms : 1;
	b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
	dd_random_key(b->seed);
}

void
dd_backoff_failed(dd_backoff *b)
{
	int64_t		now = dd_now_us();
	uint64_t	jitter;

	if (b->ms == 0)
		b->ms = b->min_ms;
	else if (b->ms < b->max_ms)
		b->ms = b->ms * 2 > b->max_ms ? b->max_ms : b->ms * 2;
	jitter = dd_hash(b->seed, &now, sizeof(now)) % 501;	/* 0..500 per mille */
	b->next_us = now + (int64_t) b->ms * (750 + (int64_t) jitter);
}

void
dd_backoff_reset(dd_backoff *b)
{
	b->ms = 0;
	b->next_us = 0;
}

bool
dd_backoff_due(const dd_backoff *b, int64_t now)
{
	return now >= b->next_us;
}
