-- The privilege matrix: every SQL function of ddict for the dict's owner, a
-- reader (SELECT), a writer (SELECT, INSERT, UPDATE, DELETE), a role with no
-- privilege on the dict, and a reader under row-level security (it may see
-- keys 'm_rls:%' only).  Each cell is the call's result, or the SQLSTATE of
-- its error.  Hidden rows must answer exactly as absent ones, and a role
-- without SELECT learns nothing but what PostgreSQL tells everyone (that the
-- table exists, its version: ddict_last_updated, like pg_stat_user_tables).
CREATE ROLE m_owner;
CREATE ROLE m_reader;
CREATE ROLE m_writer;
CREATE ROLE m_none;
CREATE ROLE m_rls;
CREATE SCHEMA mx_s AUTHORIZATION m_owner;
GRANT USAGE ON SCHEMA mx_s TO m_reader, m_writer, m_none, m_rls;
SET ROLE m_owner;
SELECT ddict_create('mx_s.mx');
CREATE TABLE mx_s.plain (key text PRIMARY KEY, value text NOT NULL);
ALTER TABLE mx_s.mx ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON mx_s.mx TO m_reader, m_writer, m_none USING (true) WITH CHECK (true);
CREATE POLICY own ON mx_s.mx TO m_rls USING (key LIKE 'm_rls:%') WITH CHECK (key LIKE 'm_rls:%');
GRANT SELECT ON mx_s.mx TO m_reader, m_rls;
GRANT SELECT, INSERT, UPDATE, DELETE ON mx_s.mx TO m_writer;
SELECT ddict_attach('mx_s.plain');
RESET ROLE;
CREATE TABLE mx_state (v bigint, e bigint, c bigint, d oid);
GRANT SELECT ON mx_state TO PUBLIC;
-- before each role: the same rows, and a client state that is current
CREATE FUNCTION mx_reset() RETURNS void LANGUAGE sql AS $f$
  DELETE FROM mx_s.mx;
  INSERT INTO mx_s.mx VALUES ('m_rls:a', '1'), ('other', '2');
$f$;
-- (after the reset committed: its own transaction would not have the version)
CREATE FUNCTION mx_capture() RETURNS void LANGUAGE sql AS $f$
  DELETE FROM mx_state;
  INSERT INTO mx_state SELECT version, epoch, "cursor", dict
    FROM ddict_changes('mx_s.mx') WHERE kind = 'f';
$f$;

CREATE TABLE mx_calls (n int, call text);
INSERT INTO mx_calls VALUES
 (1, $$SELECT ddict_get('mx_s.mx', 'other')$$),
 (2, $$SELECT ddict_get('mx_s.mx', 'm_rls:a')$$),
 (3, $$SELECT ddict_get('mx_s.mx', 'other', 'dflt')$$),
 (4, $$SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM ddict_items('mx_s.mx')$$),
 (5, $$SELECT string_agg(k, ',' ORDER BY k) FROM ddict_keys('mx_s.mx') k$$),
 (6, $$SELECT ddict_len('mx_s.mx')$$),
 (7, $$SELECT ddict_last_updated('mx_s.mx') > 0$$),
 (8, $$SELECT string_agg(kind::text || coalesce(':' || key, ''), ',' ORDER BY kind <> 'f', key) FROM ddict_changes('mx_s.mx')$$),
 (9, $$SELECT string_agg(kind::text, ',') FROM mx_state, ddict_changes('mx_s.mx', v, e, c, d)$$),
 (10, $$SELECT ddict_unchanged('mx_s.mx', v, e, c, d) IS NOT NULL FROM mx_state$$),
 (11, $$SELECT ddict_set('mx_s.mx', 'm_rls:w', 'v')$$),
 (12, $$SELECT ddict_delete('mx_s.mx', 'm_rls:w')$$),
 (13, $$SELECT ddict_delete('mx_s.mx', 'other-absent')$$),
 (14, $$SELECT ddict_setdefault('mx_s.mx', 'm_rls:a', 'z')$$),
 (15, $$SELECT ddict_pop('mx_s.mx', 'absent', 'dflt')$$),
 (16, $$SELECT ddict_pop('mx_s.mx', 'other', 'dflt')$$),
 (17, $$SELECT count(*) FROM _ddict_stats() s WHERE s.dict = 'mx_s.mx'::regclass$$),
 (18, $$SELECT ddict_publish_changes('mx_s.mx', true)$$),
 (19, $$SELECT count(*) FROM ddict_change_streams()$$),
 (20, $$SELECT ddict_create('mx_s.made_by_' || current_user)$$),
 (21, $$SELECT ddict_detach('mx_s.plain')$$),
 (22, $$SELECT ddict_attach('mx_s.plain')$$),
 (23, $$SELECT ddict_unchanged_many(ARRAY['mx_s.mx'], ARRAY[d], ARRAY[v], ARRAY[e]) FROM mx_state$$),
 (24, $$SELECT ddict_unchanged_packed('\x0100000001'::bytea || substr(int8send(d::int8), 5) || int8send(v)
                                      || int8send(e) || '\x0007'::bytea || convert_to('mx_s.mx', 'UTF8')) FROM mx_state$$);

CREATE TABLE mx_out (role text, n int, result text);
GRANT INSERT ON mx_out TO PUBLIC;
CREATE FUNCTION mx_run(r text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  c record;
  res text;
BEGIN
  FOR c IN SELECT * FROM mx_calls ORDER BY n LOOP
    BEGIN
      EXECUTE format('SET LOCAL ROLE %I', r);
      EXECUTE c.call INTO res;
      res := coalesce(res, 'NULL');
      RESET ROLE;
    EXCEPTION WHEN OTHERS THEN
      res := 'ERROR ' || SQLSTATE;
    END;
    INSERT INTO mx_out VALUES (r, c.n, res);
  END LOOP;
END
$f$;
SELECT mx_reset();
SELECT mx_capture();
SELECT mx_run('m_none');
SELECT mx_reset();
SELECT mx_capture();
SELECT mx_run('m_reader');
SELECT mx_reset();
SELECT mx_capture();
SELECT mx_run('m_rls');
SELECT mx_reset();
SELECT mx_capture();
SELECT mx_run('m_writer');
SELECT mx_reset();
SELECT mx_capture();
SELECT mx_run('m_owner');

SELECT n, max(result) FILTER (WHERE role = 'm_owner') AS owner,
       max(result) FILTER (WHERE role = 'm_reader') AS reader,
       max(result) FILTER (WHERE role = 'm_writer') AS writer,
       max(result) FILTER (WHERE role = 'm_none') AS "none",
       max(result) FILTER (WHERE role = 'm_rls') AS rls
  FROM mx_out GROUP BY n ORDER BY n;

DROP FUNCTION mx_run(text), mx_reset(), mx_capture();
DROP TABLE mx_calls, mx_out, mx_state;
DROP SCHEMA mx_s CASCADE;
DROP ROLE m_owner, m_reader, m_writer, m_none, m_rls;
