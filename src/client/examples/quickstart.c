/* quickstart.c — cc quickstart.c $(pkg-config --cflags --libs ddict) */
#include <libddict.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    /* "" = libpq defaults and PG* variables; autosync: every read checks the version */
    ddict *d = ddict_open(argc > 1 ? argv[1] : "", "settings", NULL);
    if (d == NULL) { fprintf(stderr, "ddict_open: %s\n", ddict_errmsg()); return 1; }

    if (ddict_set(d, "greeting", DDICT_NTS, "hello", 5) != DDICT_OK)
        fprintf(stderr, "ddict_set: %s\n", ddict_errmsg());

    char *value; size_t len;
    int rc = ddict_get(d, "greeting", DDICT_NTS, &value, &len);   /* value is ours to free */
    if (rc == DDICT_OK) {
        printf("greeting = %.*s (version %lld)\n", (int) len, value, (long long) ddict_version(d));
        ddict_free(value);
    } else if (rc == DDICT_NOTFOUND) printf("greeting is not set\n");
    else fprintf(stderr, "ddict_get: %s\n", ddict_errmsg());
    ddict_close(d);
    return rc < 0;
}
