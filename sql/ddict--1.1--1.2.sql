/* ddict--1.1--1.2.sql: full loads by COPY, cheaper autosync checks, policies watched, the change ring's status (see README, "Versions of the extension") */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION ddict UPDATE TO '1.2'" to load this file. \quit

-- ddict_changes() with full_rows: false answers a full load ('f') with its
-- header row alone; the client then streams the rows with COPY (below).  An
-- overload, so that the five-argument form (and clients of 1.1) stay as
-- they are.
CREATE FUNCTION @extschema@.ddict_changes(dict regclass, since_version bigint, since_epoch bigint,
                                          since_cursor bigint, since_dict oid, full_rows boolean)
  RETURNS TABLE(kind "char", key text, value bytea, version bigint, epoch bigint, "cursor" bigint,
                dict oid, "until" bigint)
  AS 'MODULE_PATHNAME', 'ddict_changes' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint, oid, boolean) IS
  'ddict: ddict_changes() whose full answer (f) is its header alone when full_rows is false (the rows then come by COPY: ddict_full_begin)';

-- A full load by COPY: ddict_full_begin() (the header, and the query to COPY
-- in the same READ COMMITTED transaction), then ddict_full_end() (checks that
-- the query meant the header's relation; returns "until").  See src/fullload.c.
CREATE FUNCTION @extschema@.ddict_full_begin(dict regclass)
  RETURNS TABLE(version bigint, epoch bigint, "cursor" bigint, relation oid, query text, token bigint)
  AS 'MODULE_PATHNAME', 'ddict_full_begin' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION @extschema@.ddict_full_begin(regclass) IS
  'ddict: start a full load: version, epoch, cursor and relation of the dict, and the query whose rows to COPY (FORMAT binary) in the same READ COMMITTED transaction';
CREATE FUNCTION @extschema@.ddict_full_end(relation oid, token bigint)
  RETURNS bigint
  AS 'MODULE_PATHNAME', 'ddict_full_end' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_full_end(oid, bigint) IS
  'ddict: end a full load: fails (40001) if the query could have meant another relation; returns the dict''s next change number after the rows'' snapshot (until)';
CREATE FUNCTION @extschema@._ddict_bytes(value text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'ddict_bytes' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._ddict_bytes(text) IS
  'ddict internal: a text value''s bytes as bytea, unconverted (the value column of a full load''s COPY)';

-- The check of many dicts in one scalar call (src/probe.c).
CREATE FUNCTION @extschema@.ddict_unchanged_many(dicts text[], since_dicts oid[],
                                                 since_versions bigint[], since_epochs bigint[])
  RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_unchanged_many' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_unchanged_many(text[], oid[], bigint[], bigint[]) IS
  'ddict: the autosync check of many dicts: one character per dict, u (unchanged) or ? (ask ddict_changes())';

-- Policies change what a dict's readers see without a write: CREATE / ALTER
-- POLICY (at their end) make clients of the dict reload in full, as does a
-- dropped policy (sql_drop, also by a cascade) (src/ddl.c).
DROP EVENT TRIGGER ddict_ddl;
CREATE EVENT TRIGGER ddict_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
               'ALTER INDEX', 'ALTER SEQUENCE', 'ALTER TYPE', 'ALTER TRIGGER', 'ALTER SCHEMA',
               'CREATE VIEW', 'CREATE RULE', 'CREATE POLICY', 'ALTER POLICY')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl_end();
ALTER EVENT TRIGGER ddict_ddl ENABLE ALWAYS;

-- The change ring's state, for monitoring (how fast it turns over) and
-- tests.  Its positions move with every dict's writes in the cluster: not
-- for everyone.
CREATE FUNCTION @extschema@.ddict_changelog_status(
    OUT size bigint, OUT head bigint, OUT tail bigint, OUT horizon bigint,
    OUT chains bigint, OUT numbered bigint)
  AS 'MODULE_PATHNAME', 'ddict_changelog_status' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION @extschema@.ddict_changelog_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.ddict_changelog_status() TO pg_read_all_stats;
COMMENT ON FUNCTION @extschema@.ddict_changelog_status() IS
  'ddict: the change ring''s size, head, tail and horizon (byte positions), its chains, and the next chain''s first number';
