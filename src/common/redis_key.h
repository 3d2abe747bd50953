/*
 * redis_key.h — the one mapping from a dict's name to its Redis keys,
 * compiled into both the server (the version publisher via src/stats.c, the
 * change streamers in src/streamer.c) and the client (src/client/session.c),
 * so that both spell every key the same way.
 *
 *     version key    <prefix><db>:<schema>.<table>
 *     change stream  <prefix><db>:<schema>.<table>:changes
 *
 * where each of <db>, <schema> and <table> is escaped: '\' ':' and '.'
 * become "\\", "\:" and "\.".  An unescaped ':' or '.' is thus always a
 * separator, and no two dicts (nor a dict's version key and another's
 * stream) share a key: dict "pub:changes" has the version key
 * "...public.pub\:changes", dict "pub" the stream "...public.pub:changes".
 * Names without those three characters are unchanged.
 *
 * Pure C99: no PostgreSQL, hiredis or libddict headers, no allocation.
 */
#ifndef DDICT_REDIS_KEY_H
#define DDICT_REDIS_KEY_H

#include <stddef.h>

/* The suffix of a dict's change stream key. */
#define DDICT_REDIS_STREAM_SUFFIX ":changes"

/*
 * Write "<db>:<schema>.<table>" (each component escaped) and then suffix
 * (NULL: none; not escaped) into out, NUL-terminated.  Returns the length
 * of the whole name; when that is >= outsize, out holds nothing usable
 * (as with snprintf, call again with a larger buffer).
 */
extern size_t ddict_redis_dict_name(char *out, size_t outsize, const char *db,
									const char *schema, const char *table,
									const char *suffix);

#endif							/* DDICT_REDIS_KEY_H */
