/* ddict--1.2--1.3.sql: the check of many dicts packed in one bytea (see README, "Versions of the extension") */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION ddict UPDATE TO '1.3'" to load this file. \quit

-- ddict_unchanged_many()'s question and answer, the question packed in one
-- binary value (its format: src/probe.c): the server reads it in place
-- instead of receiving four arrays element by element.
CREATE FUNCTION @extschema@.ddict_unchanged_packed(probe bytea)
  RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_unchanged_packed' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_unchanged_packed(bytea) IS
  'ddict: the autosync check of many dicts, packed: one character per dict, u (unchanged) or ? (ask ddict_changes())';
