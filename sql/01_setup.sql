-- ddict regression tests run in order in one database; this file sets it up.
CREATE EXTENSION ddict;
SELECT extname, extversion FROM pg_extension WHERE extname = 'ddict';

-- Every API function is documented and none is SECURITY DEFINER.
SELECT p.proname, pg_catalog.oidvectortypes(p.proargtypes) AS args,
       p.provolatile, p.proparallel, p.prosecdef,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS documented
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ddict'
 WHERE p.proname NOT LIKE '\_%'
 ORDER BY 1, 2;
