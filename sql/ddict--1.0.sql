/* ddict--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ddict" to load this file. \quit

-- The registry: which tables are dicts.  Dumped by pg_dump with the data of
-- the database (pg_extension_config_dump), so restored dicts keep working.
CREATE TABLE @extschema@.ddict_registry (
    dict         regclass    PRIMARY KEY,
    key_column   name        NOT NULL,
    value_column name        NOT NULL,
    attached_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ddict_registry', '');
REVOKE ALL ON @extschema@.ddict_registry FROM PUBLIC;
GRANT SELECT ON @extschema@.ddict_registry TO PUBLIC;
COMMENT ON TABLE @extschema@.ddict_registry IS
  'Tables attached as ddict dicts; written only by ddict_attach/ddict_detach/DROP TABLE';

-- The trigger every dict carries (installed by ddict_attach).
CREATE FUNCTION @extschema@.ddict_trigger() RETURNS trigger
  AS 'MODULE_PATHNAME', 'ddict_trigger' LANGUAGE C;
-- Only ddict_attach (as the extension's owner) may install it.
REVOKE ALL ON FUNCTION @extschema@.ddict_trigger() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.ddict_trigger() IS
  'ddict: notes changes of a dict table; versions move when the transaction commits';

-- Making and unmaking dicts.
CREATE FUNCTION @extschema@.ddict_attach(dict regclass, key_column name DEFAULT 'key',
                                         value_column name DEFAULT 'value')
  RETURNS void AS 'MODULE_PATHNAME', 'ddict_attach'
  LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_attach(regclass, name, name) IS
  'ddict: adopt an existing table as a dict; the key column needs a unique index';

CREATE FUNCTION @extschema@.ddict_create(dict text, value_type regtype DEFAULT 'text')
  RETURNS regclass AS 'MODULE_PATHNAME', 'ddict_create'
  LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_create(text, regtype) IS
  'ddict: create table dict(key text PRIMARY KEY, value value_type NOT NULL) and attach it';

CREATE FUNCTION @extschema@.ddict_detach(dict regclass) RETURNS void
  AS 'MODULE_PATHNAME', 'ddict_detach' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_detach(regclass) IS
  'ddict: remove the triggers and the registration of a dict, keeping its data';

CREATE FUNCTION @extschema@._ddict_forget(dict oid) RETURNS void
  AS 'MODULE_PATHNAME', 'ddict_forget' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@._ddict_forget(oid) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@._ddict_forget(oid) IS
  'ddict internal: drop the version slot of a dropped dict at commit';

-- DROP TABLE (or DROP SCHEMA ... CASCADE) of a dict unregisters it; dropping
-- only its triggers is refused (ddict_detach is the way).
CREATE FUNCTION @extschema@._ddict_on_sql_drop() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o record;
    orphan regclass;
BEGIN
    FOR o IN SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects()
             WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND objsubid = 0 AND object_type = 'table'
    LOOP
        DELETE FROM @extschema@.ddict_registry WHERE dict::pg_catalog.oid = o.objid;
        IF FOUND THEN
            PERFORM @extschema@._ddict_forget(o.objid);
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects()
               WHERE object_type = 'trigger') THEN
        SELECT r.dict INTO orphan FROM @extschema@.ddict_registry r
         WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = r.dict)
           AND (SELECT count(*) FROM pg_catalog.pg_trigger t
                 WHERE t.tgrelid = r.dict AND t.tgname IN ('ddict_change', 'ddict_truncate')) < 2
         LIMIT 1;
        IF orphan IS NOT NULL THEN
            RAISE EXCEPTION 'cannot drop the ddict triggers of dict %', orphan
                USING HINT = 'Use ddict_detach() to stop a table being a dict.';
        END IF;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION @extschema@._ddict_on_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER ddict_sql_drop ON sql_drop
  EXECUTE FUNCTION @extschema@._ddict_on_sql_drop();
ALTER EVENT TRIGGER ddict_sql_drop ENABLE ALWAYS;

-- ALTER TABLE of a dict may rewrite its contents or its triggers' state.
CREATE FUNCTION @extschema@._ddict_ddl_check(dict oid) RETURNS void
  AS 'MODULE_PATHNAME', 'ddict_ddl_check' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION @extschema@._ddict_ddl_check(oid) FROM PUBLIC;
CREATE FUNCTION @extschema@._ddict_on_ddl() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT DISTINCT objid FROM pg_catalog.pg_event_trigger_ddl_commands()
             WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        IF EXISTS (SELECT FROM @extschema@.ddict_registry WHERE dict::pg_catalog.oid = o.objid) THEN
            PERFORM @extschema@._ddict_ddl_check(o.objid);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION @extschema@._ddict_on_ddl() FROM PUBLIC;
CREATE EVENT TRIGGER ddict_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION @extschema@._ddict_on_ddl();
ALTER EVENT TRIGGER ddict_ddl ENABLE ALWAYS;

-- Dict semantics.
CREATE FUNCTION @extschema@.ddict_get(dict regclass, key text) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_get' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.ddict_get(regclass, text) IS
  'ddict: the value of key as text, NULL when absent';

CREATE FUNCTION @extschema@.ddict_get(dict regclass, key text, "default" text) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_get' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.ddict_get(regclass, text, text) IS
  'ddict: the value of key as text, default when absent';

CREATE FUNCTION @extschema@.ddict_set(dict regclass, key text, value text) RETURNS void
  AS 'MODULE_PATHNAME', 'ddict_set' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_set(regclass, text, text) IS
  'ddict: insert or update key; value goes through the value type''s input function';

CREATE FUNCTION @extschema@.ddict_delete(dict regclass, key text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'ddict_delete' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_delete(regclass, text) IS
  'ddict: delete key; true when it existed';

CREATE FUNCTION @extschema@.ddict_pop(dict regclass, key text) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_pop' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_pop(regclass, text) IS
  'ddict: delete key and return its value; error (no_data_found) when absent';

CREATE FUNCTION @extschema@.ddict_pop(dict regclass, key text, "default" text) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_pop' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_pop(regclass, text, text) IS
  'ddict: delete key and return its value, default when absent';

CREATE FUNCTION @extschema@.ddict_setdefault(dict regclass, key text, "default" text) RETURNS text
  AS 'MODULE_PATHNAME', 'ddict_setdefault' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_setdefault(regclass, text, text) IS
  'ddict: insert key with default unless present (atomically); returns the value stored';

CREATE FUNCTION @extschema@.ddict_items(dict regclass)
  RETURNS TABLE(key text, value text)
  AS 'MODULE_PATHNAME', 'ddict_items' LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1000;
COMMENT ON FUNCTION @extschema@.ddict_items(regclass) IS
  'ddict: every key and value as text, ordered by key';

CREATE FUNCTION @extschema@.ddict_keys(dict regclass) RETURNS SETOF text
  AS 'MODULE_PATHNAME', 'ddict_keys' LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1000;
COMMENT ON FUNCTION @extschema@.ddict_keys(regclass) IS
  'ddict: every key, ordered';

CREATE FUNCTION @extschema@.ddict_len(dict regclass) RETURNS bigint
  AS 'MODULE_PATHNAME', 'ddict_len' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.ddict_len(regclass) IS
  'ddict: number of keys';

-- Versions.
CREATE FUNCTION @extschema@.ddict_last_updated(dict regclass) RETURNS bigint
  AS 'MODULE_PATHNAME', 'ddict_last_updated' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.ddict_last_updated(regclass) IS
  'ddict: the dict''s version (microseconds since 1970, a hybrid logical clock); moves after every committed change';

CREATE FUNCTION @extschema@.ddict_epoch() RETURNS bigint
  AS 'MODULE_PATHNAME', 'ddict_epoch_sql' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.ddict_epoch() IS
  'ddict: when this server''s shared memory was set up; changes at every restart';

CREATE FUNCTION @extschema@.ddict_changes(dict regclass, since_version bigint DEFAULT NULL,
                                          since_epoch bigint DEFAULT NULL,
                                          since_cursor bigint DEFAULT NULL)
  RETURNS TABLE(kind "char", key text, value bytea, version bigint, epoch bigint, "cursor" bigint)
  AS 'MODULE_PATHNAME', 'ddict_changes' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ddict_changes(regclass, bigint, bigint, bigint) IS
  'ddict: client sync in one round trip: a header row (u/d/f) then changed (s) or deleted (x) keys';

CREATE FUNCTION @extschema@._ddict_stats()
  RETURNS TABLE(dict oid, version bigint, commits bigint, last_changed timestamptz)
  AS 'MODULE_PATHNAME', 'ddict_stats_internal' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.ddict_dicts AS
SELECT r.dict,
       r.key_column,
       r.value_column,
       a.atttypid::pg_catalog.regtype AS value_type,
       @extschema@.ddict_last_updated(r.dict) AS version
  FROM @extschema@.ddict_registry r
  JOIN pg_catalog.pg_class c ON c.oid = r.dict
  LEFT JOIN pg_catalog.pg_attribute a
         ON a.attrelid = r.dict AND a.attname = r.value_column AND NOT a.attisdropped;
COMMENT ON VIEW @extschema@.ddict_dicts IS 'ddict: every dict of this database';
GRANT SELECT ON @extschema@.ddict_dicts TO PUBLIC;

CREATE VIEW @extschema@.ddict_stats AS
SELECT r.dict,
       @extschema@.ddict_last_updated(r.dict) AS version,
       COALESCE(s.commits, 0) AS commits,
       s.last_changed
  FROM @extschema@.ddict_registry r
  JOIN pg_catalog.pg_class c ON c.oid = r.dict
  LEFT JOIN @extschema@._ddict_stats() s ON s.dict = r.dict::pg_catalog.oid;
COMMENT ON VIEW @extschema@.ddict_stats IS
  'ddict: per dict, its version, commits that moved it since the server started, and when it last moved';
GRANT SELECT ON @extschema@.ddict_stats TO PUBLIC;

-- Publishing versions to Redis (ddict.redis_url; see README).
CREATE FUNCTION @extschema@.ddict_redis_status(
    OUT enabled boolean, OUT worker_running boolean, OUT connected boolean,
    OUT target text, OUT last_error text, OUT last_error_at timestamptz,
    OUT published bigint, OUT last_publish_at timestamptz,
    OUT last_lag_ms double precision, OUT max_lag_ms double precision)
  AS 'MODULE_PATHNAME', 'ddict_redis_status' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.ddict_redis_status() IS
  'ddict: the Redis publisher: configured, running, connected, last error, versions published, publish lag';
