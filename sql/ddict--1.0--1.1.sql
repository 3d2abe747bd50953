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
