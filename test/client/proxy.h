/*
 * proxy.h — a TCP proxy in a thread, between libddict and the server, to
 * make the network fail without touching the server:
 *   PROXY_PASS       forward bytes both ways
 *   PROXY_DOWN       cut every connection and refuse new ones (network loss)
 *   PROXY_BLACKHOLE  keep connections open but forward nothing (dead link)
 */
#ifndef DDICT_TEST_PROXY_H
#define DDICT_TEST_PROXY_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum
{
	PROXY_PASS, PROXY_DOWN, PROXY_BLACKHOLE
};

#define PROXY_MAX 32

typedef struct proxy
{
	int			lsock;
	int			port;
	int			target_port;
	atomic_int	mode;
	atomic_int	stop;
	pthread_t	thread;
	int			a[PROXY_MAX],
				b[PROXY_MAX];	/* client side, server side; -1 unused */
} proxy;

static void
proxy_close_pair(proxy *p, int i)
{
	if (p->a[i] >= 0)
		close(p->a[i]);
	if (p->b[i] >= 0)
		close(p->b[i]);
	p->a[i] = p->b[i] = -1;
}

static int
proxy_connect_target(int port)
{
	struct sockaddr_in sa;
	int			s = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t) port);
	if (s >= 0 && connect(s, (struct sockaddr *) &sa, sizeof(sa)) != 0)
	{
		close(s);
		s = -1;
	}
	return s;
}

/* Forward what is readable on from to to; false on EOF or error. */
static bool
proxy_pump(int from, int to)
{
	char		buf[65536];
	ssize_t		n = read(from, buf, sizeof(buf));

	if (n <= 0)
		return false;
	for (ssize_t off = 0; off < n;)
	{
		ssize_t		w = write(to, buf + off, (size_t) (n - off));

		if (w <= 0)
			return false;
		off += w;
	}
	return true;
}

static void *
proxy_main(void *arg)
{
	proxy	   *p = arg;

	while (!atomic_load(&p->stop))
	{
		struct pollfd fds[1 + 2 * PROXY_MAX];
		int			idx[1 + 2 * PROXY_MAX],
					n = 0,
					mode = atomic_load(&p->mode);

		if (mode == PROXY_DOWN)
			for (int i = 0; i < PROXY_MAX; i++)
				if (p->a[i] >= 0)
					proxy_close_pair(p, i);
		fds[n] = (struct pollfd) {p->lsock, POLLIN, 0};
		idx[n++] = -1;
		for (int i = 0; i < PROXY_MAX && mode == PROXY_PASS; i++)
			if (p->a[i] >= 0)
			{
				fds[n] = (struct pollfd) {p->a[i], POLLIN, 0};
				idx[n++] = i;
				fds[n] = (struct pollfd) {p->b[i], POLLIN, 0};
				idx[n++] = i;
			}
		if (poll(fds, (nfds_t) n, 20) <= 0)
			continue;
		if (fds[0].revents & POLLIN)
		{
			int			c = accept(p->lsock, NULL, NULL),
						slot = -1;

			for (int i = 0; i < PROXY_MAX && c >= 0; i++)
				if (p->a[i] < 0)
				{
					slot = i;
					break;
				}
			if (c >= 0 && (atomic_load(&p->mode) == PROXY_DOWN || slot < 0))
				close(c);
			else if (c >= 0)
			{
				p->a[slot] = c;
				p->b[slot] = proxy_connect_target(p->target_port);
				if (p->b[slot] < 0)
					proxy_close_pair(p, slot);
			}
		}
		for (int k = 1; k < n; k++)
		{
			int			i = idx[k];

			if (i < 0 || p->a[i] < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (!(fds[k].fd == p->a[i] ? proxy_pump(p->a[i], p->b[i]) : proxy_pump(p->b[i], p->a[i])))
				proxy_close_pair(p, i);
		}
	}
	for (int i = 0; i < PROXY_MAX; i++)
		proxy_close_pair(p, i);
	close(p->lsock);
	return NULL;
}

static int
proxy_start(proxy *p, int target_port)
{
	struct sockaddr_in sa;
	socklen_t	len = sizeof(sa);

	memset(p, 0, sizeof(*p));
	for (int i = 0; i < PROXY_MAX; i++)
		p->a[i] = p->b[i] = -1;
	p->target_port = target_port;
	p->lsock = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (p->lsock < 0 || bind(p->lsock, (struct sockaddr *) &sa, sizeof(sa)) != 0 ||
		listen(p->lsock, 16) != 0 || getsockname(p->lsock, (struct sockaddr *) &sa, &len) != 0)
		return -1;
	p->port = ntohs(sa.sin_port);
	return pthread_create(&p->thread, NULL, proxy_main, p);
}

static void
proxy_stop(proxy *p)
{
	atomic_store(&p->stop, 1);
	pthread_join(p->thread, NULL);
}

#endif							/* DDICT_TEST_PROXY_H */
