/*
 * redis_key.c — a dict's Redis key name, shared by the server and the client
 * (see redis_key.h for the mapping and why it escapes).
 */
#include "redis_key.h"

#include <string.h>

/* Append c to out at *len (when it fits), counting it either way. */
static void
put(char *out, size_t outsize, size_t *len, char c)
{
	if (*len + 1 < outsize)
		out[*len] = c;
	(*len)++;
}

/* Append s escaped: '\' ':' '.' get a backslash before them. */
static void
put_escaped(char *out, size_t outsize, size_t *len, const char *s)
{
	for (; *s; s++)
	{
		if (*s == '\\' || *s == ':' || *s == '.')
			put(out, outsize, len, '\\');
		put(out, outsize, len, *s);
	}
}

size_t
ddict_redis_dict_name(char *out, size_t outsize, const char *db,
					  const char *schema, const char *table, const char *suffix)
{
	size_t		len = 0;

	put_escaped(out, outsize, &len, db);
	put(out, outsize, &len, ':');
	put_escaped(out, outsize, &len, schema);
	put(out, outsize, &len, '.');
	put_escaped(out, outsize, &len, table);
	for (const char *s = suffix ? suffix : ""; *s; s++)
		put(out, outsize, &len, *s);
	if (outsize > 0)
		out[len < outsize ? len : outsize - 1] = '\0';
	return len;
}
