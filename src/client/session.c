/*
 * session.c — what a connection needs before checks and writes: the
 * extension's schema (so that statements do not depend on search_path) and
 * the schema-qualified statements; and, per dict, its metadata.
 *
 * Nothing here outlives a transaction on the server, so that the client
 * works through a transaction pooler (pgbouncer pool_mode = transaction):
 * no SET, no session characteristics (checks choose READ COMMITTED per
 * transaction, see sync.c), and no named prepared statement — unless the
 * client was told it talks to PostgreSQL directly
 * (ddict_client_options.direct): then the session is ours alone, and the
 * checks (ddict_unchanged(), ddict_changes(), the probe of many dicts) are
 * prepared and the session set to READ COMMITTED once, which saves a parse
 * and a plan per check.  Unnamed statements send their parameter types
 * (built-in OIDs), so that no type name is looked up at each parse.
 * The database's OID is asked once per connection, with the schema, and
 * which protocol the extension speaks: 1.0 (no relation in the header),
 * 1.1 (ddict_unchanged()), 1.2 (full loads by COPY, ddict_unchanged_many()),
 * 1.3 (ddict_unchanged_packed()); a client talks to each in its own terms.  The versions page keys a dict's
 * slot by the database's OID (sync.c).
 * (A pooler hands a server connection to other clients between
 * transactions: a prepared statement or a SET would be missing there, or
 * leak into someone else's session.)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "../common/redis_key.h"

/* Built-in type OIDs (pg_type.dat; fixed since they were assigned). */
const Oid	dd_unchanged_types[5] = {2205 /* regclass */ , 20 /* int8 */ , 20, 20, 26 /* oid */ };
const Oid	dd_probe_types[4] = {1009 /* text[] */ , 1028 /* oid[] */ , 1016 /* int8[] */ , 1016};
const Oid	dd_packed_types[1] = {17 /* bytea */ };

static char *
dd_asprintf(const char *fmt, ...) DD_PRINTF(1, 2);

static char *
dd_asprintf(const char *fmt, ...)
{
	va_list		ap;
	char	   *s;
	int			n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static int
build_statements(dd_conn *c, ddict *h, bool unchanged)
{
	const char *s = c->schema;

	/* 1.1: $5 is the relation the cache came from; the header names the
	 * relation the dict's name means now, and "until" is the floor a stream
	 * entry must reach to apply (sync.c, stream.c).  1.2: a full answer is
	 * its header alone, the rows come by COPY (load.c). */
	c->sql[DD_SQL_CHANGES] = c->changes_rel ?
		dd_asprintf("SELECT kind, key, value, version, epoch, cursor, dict, \"until\" FROM %s.ddict_changes("
					"$1::pg_catalog.regclass, $2::pg_catalog.int8, $3::pg_catalog.int8,"
					" $4::pg_catalog.int8, $5::pg_catalog.oid%s)", s, c->copy_full ? ", false" : "") :
		dd_asprintf("SELECT kind, key, value, version, epoch, cursor FROM %s.ddict_changes("
					"$1::pg_catalog.regclass, $2::pg_catalog.int8, $3::pg_catalog.int8,"
					" $4::pg_catalog.int8)", s);
	c->sql[DD_SQL_SET] = dd_asprintf(
		"SELECT %s.ddict_set($1::pg_catalog.regclass, $2::pg_catalog.text, $3::pg_catalog.text)", s);
	c->sql[DD_SQL_DELETE] = dd_asprintf(
		"SELECT %s.ddict_delete($1::pg_catalog.regclass, $2::pg_catalog.text)", s);
	c->sql[DD_SQL_POP] = dd_asprintf(
		"SELECT %s.ddict_pop($1::pg_catalog.regclass, $2::pg_catalog.text, NULL::pg_catalog.text)", s);
	/* The relations and versions of many dicts in one statement (by name:
	 * the relation a name means may change, sync.c); 1.2: the answer for
	 * each as one character of one value.  Parameters are typed by the
	 * client (dd_probe_types, binary arrays): no names to look up.  1.3:
	 * the same question packed in one bytea (sync.c). */
	if (c->probe_many)
		c->sql[DD_SQL_PROBE_MANY] = dd_asprintf("SELECT %s.ddict_unchanged_many($1, $2, $3, $4)", s);
	c->sql[DD_SQL_PROBE] = c->probe_packed ?
		dd_asprintf("SELECT %s.ddict_unchanged_packed($1)", s) :
		c->probe_many ?
		dd_asprintf("SELECT %s.ddict_unchanged_many($1, $2, $3, $4)", s) :
		dd_asprintf(
		"SELECT u.d::pg_catalog.regclass::pg_catalog.oid, %s.ddict_last_updated(u.d::pg_catalog.regclass)"
		" FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(d, i) ORDER BY u.i", s);
	c->sql[DD_SQL_SETDEFAULT] = dd_asprintf(
		"SELECT %s.ddict_setdefault($1::pg_catalog.regclass, $2::pg_catalog.text, $3::pg_catalog.text)", s);
	/* The common autosync check, one statement: the parameter types come
	 * with it (dd_unchanged_types), so the parser looks up no type names. */
	if (unchanged)
		c->sql[DD_SQL_UNCHANGED] = dd_asprintf("SELECT %s.ddict_unchanged($1, $2, $3, $4, $5)", s);
	if (c->copy_full)
	{
		c->sql[DD_SQL_FULL_BEGIN] = dd_asprintf(
			"SELECT version, epoch, cursor, relation, query, token FROM %s.ddict_full_begin($1::pg_catalog.regclass)", s);
		c->sql[DD_SQL_FULL_END] = dd_asprintf(
			"SELECT %s.ddict_full_end($1::pg_catalog.oid, $2::pg_catalog.int8)", s);
	}
	for (size_t i = 0; i < DD_SQL_N; i++)
		if (c->sql[i] == NULL && (i < DD_SQL_UNCHANGED || (i == DD_SQL_UNCHANGED && unchanged) ||
								  c->copy_full))
			return dd_fail(h, DDICT_ENOMEM, "out of memory");
	return DDICT_OK;
}

/*
 * The check runs on every autosync read: on a direct connection, prepare it
 * once, saving the parse and plan of each call.  Never on a borrowed
 * connection (its session, and DISCARD ALL, belong to the application) nor
 * through a pooler.
 */
static int
prepare_check(dd_conn *c, ddict *h)
{
	PGresult   *err;
	int			rc;

	const char *names[3] = {DD_PREPARED_CHANGES, DD_PREPARED_PROBE, DD_PREPARED_UNCHANGED};
	const int	sqls[3] = {DD_SQL_CHANGES, DD_SQL_PROBE, DD_SQL_UNCHANGED};
	const int	nparams[3] = {dd_changes_nparams(c), c->probe_packed || !c->probe_many ? 1 : 4, 5};
	const Oid  *types[3] = {NULL, c->probe_packed ? dd_packed_types : c->probe_many ? dd_probe_types : NULL,
	dd_unchanged_types};

	for (int i = 0; i < 3; i++)
	{
		if (c->sql[sqls[i]] == NULL)
			continue;
		if (!PQsendPrepare(c->pg, names[i], c->sql[sqls[i]], nparams[i], types[i]))
			return dd_conn_failed(c, h, DDICT_ECONN, "preparing ddict_changes", NULL);
		if ((rc = dd_conn_flush(c)) != DDICT_OK)
			return dd_conn_failed(c, h, rc, "preparing ddict_changes", NULL);
		rc = dd_conn_skip(c, &err, PGRES_COMMAND_OK);
		if (rc != DDICT_OK || err)
		{
			rc = dd_conn_failed(c, h, rc != DDICT_OK ? rc : DDICT_ESERVER, "preparing ddict_changes", err);
			PQclear(err);
			return rc;
		}
	}
	c->prepared = true;
	return DDICT_OK;
}

static int
setup(dd_conn *c, ddict *h)
{
	PGresult   *r;
	int			rc;
	bool		unchanged;

	/* the schema, and whether ddict_changes() has the 1.1 shape (since_dict,
	 * the relation in the header): a 1.0 server gets the 1.0 call, and the
	 * cache then follows the name only */
	rc = dd_conn_exec(c, h,
					  "SELECT pg_catalog.quote_ident(n.nspname),"
					  " pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_changes(pg_catalog.regclass,pg_catalog.int8,pg_catalog.int8,pg_catalog.int8,pg_catalog.oid)')"
					  "  IS NOT NULL,"
					  " (SELECT d.oid FROM pg_catalog.pg_database d"
					  "  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),"
					  " pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_unchanged(pg_catalog.regclass,pg_catalog.int8,pg_catalog.int8,pg_catalog.int8,pg_catalog.oid)')"
					  "  IS NOT NULL,"
					  " pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_full_begin(pg_catalog.regclass)') IS NOT NULL"
					  " AND pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_changes(pg_catalog.regclass,pg_catalog.int8,pg_catalog.int8,pg_catalog.int8,pg_catalog.oid,pg_catalog.bool)')"
					  "  IS NOT NULL"
					  " AND pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_unchanged_many(pg_catalog.text[],pg_catalog.oid[],pg_catalog.int8[],pg_catalog.int8[])')"
					  "  IS NOT NULL,"
					  " pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||)"
					  "  '.ddict_unchanged_packed(pg_catalog.bytea)') IS NOT NULL"
					  " FROM pg_catalog.pg_extension e"
					  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					  " WHERE e.extname = 'ddict'",
					  -1, NULL, &r, "looking up the ddict extension");
	if (rc != DDICT_OK)
		return rc;
	if (PQntuples(r) != 1)
	{
		PQclear(r);
		return dd_fail(h, DDICT_ESERVER,
					   "extension \"ddict\" is not installed in database \"%s\"",
					   PQdb(c->pg));
	}
	dd_conn_free_sql(c);
	c->schema = strdup(PQgetvalue(r, 0, 0));
	c->changes_rel = PQnfields(r) == 6 && PQgetvalue(r, 0, 1)[0] == 't';
	/* the database's OID: its dicts' slots on the versions page (sync.c) */
	c->dboid = PQnfields(r) == 6 && !PQgetisnull(r, 0, 2) ?
		(uint32_t) strtoul(PQgetvalue(r, 0, 2), NULL, 10) : 0;
	/* 1.1's scalar check; 1.2's full load by COPY and check of many dicts;
	 * 1.3's packed check of many dicts */
	unchanged = c->changes_rel && PQgetvalue(r, 0, 3)[0] == 't';
	c->copy_full = c->probe_many = c->changes_rel && PQgetvalue(r, 0, 4)[0] == 't';
	c->probe_packed = c->probe_many && PQgetvalue(r, 0, 5)[0] == 't';
	PQclear(r);
	if (c->schema == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	rc = build_statements(c, h, unchanged);
	c->session_rc = false;
	if (rc == DDICT_OK && c->prepare && !c->borrowed)
		rc = prepare_check(c, h);
	if (rc == DDICT_OK && c->prepare && !c->borrowed)
	{
		/* our own session, straight to PostgreSQL: checks need no BEGIN */
		rc = dd_conn_exec(c, h, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
						  -1, NULL, &r, "setting the session's isolation level");
		PQclear(r);
		c->session_rc = rc == DDICT_OK;
	}
	return rc;
}

static int
ensure_borrowed(dd_conn *c, ddict *h)
{
	if (!dd_conn_ok(c))
	{
		atomic_store(&c->connected, false);
		return dd_fail(h, DDICT_ECONN,
					   "the application's connection is broken (reset it with PQreset())");
	}
	atomic_store(&c->connected, true);
	if (PQtransactionStatus(c->pg) != PQTRANS_IDLE ||
		PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF || PQisBusy(c->pg))
		return dd_fail(h, DDICT_EBUSY,
					   "the application's connection is not idle (in a transaction, a "
					   "pipeline or a query); ddict uses it only between transactions");
	return c->schema ? DDICT_OK : setup(c, h);
}

int
dd_session_ensure(dd_conn *c, ddict *h, bool force)
{
	int			rc;

	if (c->borrowed)
		return ensure_borrowed(c, h);
	if (dd_conn_ok(c) && c->schema)
	{
		c->last_used_us = dd_now_us();
		return DDICT_OK;
	}
	if (c->pg)
	{
		dd_conn_drop(c);
		atomic_store(&c->connected, false);
	}
	if (!force && !dd_backoff_due(&c->backoff, dd_now_us()))
		return dd_fail(h, DDICT_ECONN, "not connected to the server (next attempt in %lld ms)",
					   (long long) (c->backoff.next_us - dd_now_us()) / 1000);
	rc = dd_conn_connect(c, h);
	if (rc == DDICT_OK)
		rc = setup(c, h);
	if (rc != DDICT_OK)
	{
		dd_conn_drop(c);
		atomic_store(&c->connected, false);
		dd_conn_attempt_failed(c);
		return rc;
	}
	dd_conn_established(c);
	c->last_used_us = dd_now_us();
	return DDICT_OK;
}

/* <prefix><db>:<schema>.<table>, escaped (malloc'd; NULL: no memory). */
static char *
redis_key(const char *prefix, const char *db, const char *schema, const char *table)
{
	size_t		plen = strlen(prefix);
	size_t		nlen = ddict_redis_dict_name(NULL, 0, db, schema, table, NULL);
	char	   *key = malloc(plen + nlen + 1);

	if (key == NULL)
		return NULL;
	memcpy(key, prefix, plen);
	ddict_redis_dict_name(key + plen, nlen + 1, db, schema, table, NULL);
	return key;
}

/*
 * May a client of this connection apply a published dict's stream entries?
 * Not on a server in recovery: the stream is the primary's, whose epoch the
 * standby never has (every entry would cost a full reload there).  Not when
 * libpq converts text (client_encoding is not the server's): entries carry
 * the server's bytes, loads and checks converted ones, and the two would
 * disagree in the cache.  Such a push dict follows its version channel.
 */
static bool
can_follow(const dd_conn *c, bool in_recovery)
{
	const char *ce = PQparameterStatus(c->pg, "client_encoding"),
			   *se = PQparameterStatus(c->pg, "server_encoding");

	return !in_recovery && ce && se && strcmp(ce, se) == 0;
}

int
dd_session_dict(dd_conn *c, ddict *h, const char *dict, const char *redis_prefix,
				dd_dict_meta *out)
{
	const char *params[1] = {dict};
	PGresult   *r;
	char	   *sql,
			   *pub = NULL;
	int			rc;

	memset(out, 0, sizeof(*out));
	/* 1.1: the key of its published changes' stream, NULL when it is not
	 * published (ddict_published, readable by everyone) */
	if (c->changes_rel &&
		(pub = dd_asprintf(", (SELECT p.stream_key FROM %s.ddict_published p"
						   " WHERE p.dict OPERATOR(pg_catalog.=) d.dict)", c->schema)) == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	/* Also the dict's name, for its Redis key as the server's publisher
	 * spells it (../common/redis_key.h). */
	sql = dd_asprintf("SELECT t.oid OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype"
					  " OR t.typbasetype OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype,"
					  " pg_catalog.current_database(), n.nspname, c.relname%s,"
					  " pg_catalog.pg_is_in_recovery()"
					  " FROM %s.ddict_dicts d JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) d.value_type"
					  " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) d.dict::pg_catalog.oid"
					  " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
					  " WHERE d.dict OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
					  pub ? pub : "", c->schema);
	free(pub);
	if (sql == NULL)
		return dd_fail(h, DDICT_ENOMEM, "out of memory");
	rc = dd_conn_exec(c, h, sql, 1, params, &r, "looking up the dict");
	free(sql);
	if (rc != DDICT_OK)
		return rc;
	if (PQntuples(r) != 1 || PQnfields(r) != (c->changes_rel ? 6 : 5))
	{
		PQclear(r);
		return dd_fail(h, DDICT_ESERVER,
					   "table \"%s\" is not a ddict dict (attach it with ddict_attach())", dict);
	}
	out->bytea = PQgetvalue(r, 0, 0)[0] == 't';
	if (redis_prefix)
		out->key = redis_key(redis_prefix, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
							 PQgetvalue(r, 0, 3));	/* NULL: Redis stays unused for it */
	if (redis_prefix && c->changes_rel && !PQgetisnull(r, 0, 4) &&
		can_follow(c, PQgetvalue(r, 0, 5)[0] == 't'))
		out->stream_key = strdup(PQgetvalue(r, 0, 4));	/* NULL: no stream */
	PQclear(r);
	return DDICT_OK;
}
