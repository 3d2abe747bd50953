/* ddict--1.0--1.1.sql: hardening (see README, "Versions of the extension") */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION ddict UPDATE TO '1.1'" to load this file. \quit


-- ---------------------------------------------------------------------------
-- ddict_changes(): bound to a relation, not only a name (issue 8, item 2).
-- The header row gains the OID of the relation the name means now; a client
-- passes the OID its cache came from as since_dict, and when the name has come
-- to mean another relation the answer is 'f' (full) for the new one.  Called
-- with four arguments it answers as in 1.0 (plus the seventh column).
DROP FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint);
CREATE FUNCTION @extschema@.ddict_changes(dict regclass, since_version bigint DEFAULT NULL,
                                          since_epoch bigint DEFAULT NULL,
                                          since_cursor bigint DEFAULT NULL,
                                          since_dict oid DEFAULT NULL)
  RETURNS TABLE(kind "char", key text, value bytea, version bigint, epoch bigint, "cursor" bigint,
                dict oid)
  AS 'MODULE_PATHNAME', 'ddict_changes' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint, oid) IS
  'ddict: client sync in one round trip: a header row (u/d/f, with the relation the name means) then changed (s) or deleted (x) keys';
-- end of the ddict_changes() section

-- ---------------------------------------------------------------------------
-- DDL guards in C (src/ddl.c): ddict's triggers are recognised by their
-- function, not their name; ALTER TABLE of an inheritance parent or a
-- partitioned table checks and moves every dict among its inheritors; DDL
-- that changes the text of stored values (ALTER TYPE ... RENAME VALUE,
-- composite attributes, row types) moves the dicts that use the type;
-- renaming ddict's triggers, dropping a dict key's last unique index and
-- DROP NOT NULL on its columns are refused.  Tables that are not dicts are
-- told apart without reading the registry.
DROP EVENT TRIGGER ddict_ddl;
DROP FUNCTION @extschema@._ddict_on_ddl();
DROP FUNCTION @extschema@._ddict_ddl_check(oid);
CREATE FUNCTION @extschema@._ddict_on_ddl_end() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'ddict_on_ddl_end' LANGUAGE C;
REVOKE ALL ON FUNCTION @extschema@._ddict_on_ddl_end() FROM PUBLIC;
CREATE EVENT TRIGGER ddict_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
               'ALTER INDEX', 'ALTER SEQUENCE', 'ALTER TYPE', 'ALTER TRIGGER', 'ALTER SCHEMA',
               'CREATE VIEW', 'CREATE RULE')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl_end();
ALTER EVENT TRIGGER ddict_ddl ENABLE ALWAYS;

CREATE FUNCTION @extschema@._ddict_on_ddl_start() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'ddict_on_ddl_start' LANGUAGE C;
REVOKE ALL ON FUNCTION @extschema@._ddict_on_ddl_start() FROM PUBLIC;
CREATE EVENT TRIGGER ddict_drop_index ON ddl_command_start
  WHEN TAG IN ('DROP INDEX')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl_start();
ALTER EVENT TRIGGER ddict_drop_index ENABLE ALWAYS;

DROP EVENT TRIGGER ddict_sql_drop;
DROP FUNCTION @extschema@._ddict_on_sql_drop();
DROP FUNCTION @extschema@._ddict_forget(oid);
CREATE FUNCTION @extschema@._ddict_on_sql_drop() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'ddict_on_sql_drop' LANGUAGE C;
REVOKE ALL ON FUNCTION @extschema@._ddict_on_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER ddict_sql_drop ON sql_drop
  EXECUTE FUNCTION @extschema@._ddict_on_sql_drop();
ALTER EVENT TRIGGER ddict_sql_drop ENABLE ALWAYS;

-- ddict_create() takes the value type as text, so that its modifier survives
-- ('varchar(5)', 'numeric(4,2)'); the regtype form stays, without a default.
DROP FUNCTION @extschema@.ddict_create(text, regtype);
CREATE FUNCTION @extschema@.ddict_create(dict text, value_type regtype)
  RETURNS regclass AS 'MODULE_PATHNAME', 'ddict_create'
  LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION @extschema@.ddict_create(dict text, value_type text DEFAULT 'text')
  RETURNS regclass AS 'MODULE_PATHNAME', 'ddict_create'
  LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_create(text, text) IS
  'ddict: create table dict(key text PRIMARY KEY, value value_type NOT NULL) and attach it; value_type may carry a modifier';
COMMENT ON FUNCTION @extschema@.ddict_create(text, regtype) IS
  'ddict: create table dict(key text PRIMARY KEY, value value_type NOT NULL) and attach it';
-- Dicts attached under 1.0 that 1.1 would not accept keep working; say so.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT g.dict, g.value_column
               FROM @extschema@.ddict_registry g
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = g.dict AND a.attname = g.value_column AND NOT a.attnotnull
    LOOP
        RAISE WARNING 'dict % has a nullable value column "%"', r.dict, r.value_column
            USING HINT = 'ALTER TABLE ... ALTER COLUMN ... SET NOT NULL; ALTER TABLE of the dict is refused until then.';
    END LOOP;
END
$$;
-- A value's text through its type's output function, never through a cast
-- that the type's owner may create at any time (CREATE CAST moves no version).
CREATE FUNCTION @extschema@._ddict_text(value anyelement) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_value_text' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._ddict_text(anyelement) IS
  'ddict internal: a value as its type''s output function writes it';
-- end of the DDL guards section

-- ---------------------------------------------------------------------------
-- Published changes (Redis Streams), issue 10 (src/streamer.c; README,
-- "Published changes (Redis Streams)").  A dict that opts in has each change
-- computed once by its database's change streamer and appended to the Redis
-- Stream <ddict.redis_prefix><database>:<schema>.<table>:changes.  Opt-in,
-- because values in Redis escape the table's privileges; refused for tables
-- with row-level security.
ALTER TABLE @extschema@.ddict_registry
  ADD COLUMN publish_changes boolean NOT NULL DEFAULT false;

CREATE FUNCTION @extschema@.ddict_publish_changes(dict regclass, enabled boolean DEFAULT true)
  RETURNS void AS 'MODULE_PATHNAME', 'ddict_publish_changes'
  LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_publish_changes(regclass, boolean) IS
  'ddict: publish (or stop publishing) each change of a dict to a Redis Stream; owner only; refused under row-level security';

-- Each name component escaped as src/common/redis_key.c does ('\', ':' and
-- '.' get a backslash), so that no two dicts share a key.
CREATE FUNCTION @extschema@.ddict_redis_escape(name text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace($1, E'\\', E'\\\\'),
                                               ':', E'\\:'), '.', E'\\.');
COMMENT ON FUNCTION @extschema@.ddict_redis_escape(text) IS
  'ddict: a database, schema or table name as it appears in ddict''s Redis keys';

CREATE VIEW @extschema@.ddict_published AS
  SELECT r.dict,
         pg_catalog.concat(pg_catalog.current_setting('ddict.redis_prefix', true),
                           @extschema@.ddict_redis_escape(pg_catalog.current_database()), ':',
                           @extschema@.ddict_redis_escape(n.nspname), '.',
                           @extschema@.ddict_redis_escape(c.relname),
                           ':changes') AS stream_key
    FROM @extschema@.ddict_registry r
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.dict::pg_catalog.oid
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
   WHERE r.publish_changes;
GRANT SELECT ON @extschema@.ddict_published TO PUBLIC;
COMMENT ON VIEW @extschema@.ddict_published IS
  'ddict: dicts whose changes are published to Redis, and the key of their stream';

CREATE FUNCTION @extschema@.ddict_change_streams()
  RETURNS TABLE(database oid, state text, pid integer, connected boolean, dicts integer,
                entries bigint, markers bigint, statements bigint, batches bigint,
                last_append timestamptz, last_error text, last_error_at timestamptz)
  AS 'MODULE_PATHNAME', 'ddict_change_streams' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION @extschema@.ddict_change_streams() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.ddict_change_streams() TO pg_monitor;
COMMENT ON FUNCTION @extschema@.ddict_change_streams() IS
  'ddict: the change streamers, one per database that publishes changes: state, counters, last error';

-- ddict_changes() gains "until": the change ring's head after the answer's
-- snapshot was taken.  A client joining a dict's stream after an answer from
-- PostgreSQL needs it (an entry applies when from <= cursor and its cursor
-- >= until); clients that do not follow streams ignore it.
DROP FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint, oid);
CREATE FUNCTION @extschema@.ddict_changes(dict regclass, since_version bigint DEFAULT NULL,
                                          since_epoch bigint DEFAULT NULL,
                                          since_cursor bigint DEFAULT NULL,
                                          since_dict oid DEFAULT NULL)
  RETURNS TABLE(kind "char", key text, value bytea, version bigint, epoch bigint, "cursor" bigint,
                dict oid, "until" bigint)
  AS 'MODULE_PATHNAME', 'ddict_changes' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint, oid) IS
  'ddict: client sync in one round trip: a header row (u/d/f, with the relation the name means and the ring head after its snapshot) then changed (s) or deleted (x) keys';
-- end of the published changes section

-- ddict_unchanged(): ddict_changes()'s common answer as a scalar, for the
-- autosync check (issue 11): the cursor to store when ddict_changes() would
-- answer 'u' for this state of this relation, NULL when it would not.  Same
-- parameters as ddict_changes(), so a client can send either with one set.
CREATE FUNCTION @extschema@.ddict_unchanged(dict regclass, since_version bigint,
                                            since_epoch bigint, since_cursor bigint,
                                            since_dict oid)
  RETURNS bigint
  AS 'MODULE_PATHNAME', 'ddict_unchanged' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_unchanged(regclass, bigint, bigint, bigint, oid) IS
  'ddict: the autosync check as a scalar: the next cursor when ddict_changes() would answer unchanged, else NULL';
-- end of the ddict_unchanged() section
