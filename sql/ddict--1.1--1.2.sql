/* ddict--1.1--1.2.sql (see README, "Versions of the extension") */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION ddict UPDATE TO '1.2'" to load this file. \quit

-- Policies change what a dict's readers see without a write: CREATE / ALTER
-- POLICY (at their end) and DROP POLICY (before it runs, while its table is
-- still known) make clients of the dict reload in full (src/ddl.c).
DROP EVENT TRIGGER ddict_ddl;
CREATE EVENT TRIGGER ddict_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
               'ALTER INDEX', 'ALTER SEQUENCE', 'ALTER TYPE', 'ALTER TRIGGER', 'ALTER SCHEMA',
               'CREATE VIEW', 'CREATE RULE', 'CREATE POLICY', 'ALTER POLICY')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl_end();
ALTER EVENT TRIGGER ddict_ddl ENABLE ALWAYS;
DROP EVENT TRIGGER ddict_drop_index;
CREATE EVENT TRIGGER ddict_drop_index ON ddl_command_start
  WHEN TAG IN ('DROP INDEX', 'DROP POLICY')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl_start();
ALTER EVENT TRIGGER ddict_drop_index ENABLE ALWAYS;

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
