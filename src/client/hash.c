/*
 * hash.c — SipHash-1-3 with a random key per handle.
 *
 * Keys come from a table that other people write; with a fixed, public hash
 * function they could choose keys that all land in one probe chain and make
 * every lookup linear.  A keyed hash (the choice of Python and Rust for the
 * same reason) rules that out, and SipHash-1-3 is fast enough for keys.
 */
#include <endian.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define ROTL(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND \
	do { \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2; \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
	} while (0)

uint64_t
dd_hash(const uint64_t key[2], const void *data, size_t len)
{
	const unsigned char *in = data;
	const unsigned char *end = in + (len & ~(size_t) 7);
	uint64_t	v0 = UINT64_C(0x736f6d6570736575) ^ key[0];
	uint64_t	v1 = UINT64_C(0x646f72616e646f6d) ^ key[1];
	uint64_t	v2 = UINT64_C(0x6c7967656e657261) ^ key[0];
	uint64_t	v3 = UINT64_C(0x7465646279746573) ^ key[1];
	uint64_t	b = ((uint64_t) len) << 56;
	uint64_t	m;

	for (; in != end; in += 8)
	{
		memcpy(&m, in, 8);
		m = le64toh(m);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	switch (len & 7)
	{
		case 7:
			b |= ((uint64_t) in[6]) << 48;
			__attribute__((fallthrough));
		case 6:
			b |= ((uint64_t) in[5]) << 40;
			__attribute__((fallthrough));
		case 5:
			b |= ((uint64_t) in[4]) << 32;
			__attribute__((fallthrough));
		case 4:
			b |= ((uint64_t) in[3]) << 24;
			__attribute__((fallthrough));
		case 3:
			b |= ((uint64_t) in[2]) << 16;
			__attribute__((fallthrough));
		case 2:
			b |= ((uint64_t) in[1]) << 8;
			__attribute__((fallthrough));
		case 1:
			b |= ((uint64_t) in[0]);
			break;
		case 0:
			break;
	}
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

void
dd_random_key(uint64_t key[2])
{
	struct timespec ts;

	if (getrandom(key, 2 * sizeof(uint64_t), GRND_NONBLOCK) == 2 * sizeof(uint64_t))
		return;
	/* No entropy yet (early boot): still unpredictable enough per process. */
	clock_gettime(CLOCK_REALTIME, &ts);
	key[0] = (uint64_t) ts.tv_nsec ^ ((uint64_t) getpid() << 32) ^ (uintptr_t) key;
	key[1] = (uint64_t) ts.tv_sec ^ (uintptr_t) &ts;
}
