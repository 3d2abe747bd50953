/*
 * error.c — return codes and messages.
 *
 * Two places hold messages: a thread-local buffer for the call that failed
 * in this thread (ddict_errmsg(), errno-like, so that threads sharing a
 * handle never read each other's half-written message), and the handle's
 * last error for monitoring (ddict_get_stats()), which also records failures
 * that reads absorbed (a failed autosync check still serves the snapshot).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char tl_errmsg[512];

int
dd_seterr(int code, const char *fmt, ...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(tl_errmsg, sizeof(tl_errmsg), fmt, ap);
	va_end(ap);
	return code;
}

/* Record on the handle (and count) as well as for this thread. */
int
dd_fail(ddict *h, int code, const char *fmt, ...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(tl_errmsg, sizeof(tl_errmsg), fmt, ap);
	va_end(ap);
	if (h)
	{
		atomic_fetch_add_explicit(&h->errors, 1, memory_order_relaxed);
		pthread_mutex_lock(&h->err_lock);
		dd_strlcpy(h->last_error, tl_errmsg, sizeof(h->last_error));
		pthread_mutex_unlock(&h->err_lock);
	}
	return code;
}

void
dd_note(ddict *h, const char *fmt, ...)
{
	va_list		ap;
	char		buf[256];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&h->err_lock);
	dd_strlcpy(h->last_error, buf, sizeof(h->last_error));
	pthread_mutex_unlock(&h->err_lock);
}

void
dd_strlcpy(char *dst, const char *src, size_t size)
{
	size_t		n = strlen(src);

	if (size == 0)
		return;
	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

DDICT_API const char *
ddict_errmsg(void)
{
	return tl_errmsg;
}

DDICT_API const char *
ddict_strerror(int code)
{
	switch (code)
	{
		case DDICT_OK:
			return "success";
		case DDICT_NOTFOUND:
			return "key not found";
		case DDICT_ERR:
			return "internal error";
		case DDICT_ENOMEM:
			return "out of memory";
		case DDICT_EINVAL:
			return "invalid argument";
		case DDICT_ECONN:
			return "connection to the server failed";
		case DDICT_ESERVER:
			return "the server reported an error";
		case DDICT_ETIMEDOUT:
			return "timed out";
		case DDICT_EBUSY:
			return "busy";
		case DDICT_ERANGE:
			return "buffer too small";
		case DDICT_EIO:
			return "snapshot file error";
	}
	return "unknown error";
}
