-- postbox 0012: streams under the least-privilege roles (postbox roles).
--
-- A stamp round creates the stream's next time segment as a partition of its log when it needs
-- one, create_stream makes a stream's log table, and delete_stream and prune_streams drop
-- segments: DDL that only the owner of stream_events (the role that ran the migrations) may run.
-- These four now run as that owner (SECURITY DEFINER), so that the consumer role can read and
-- stamp and the admin role can create, delete and prune, without CREATE on the schema or
-- ownership of any table. Each already pins its search_path (pg_catalog, the schema, pg_temp:
-- 0010), which a SECURITY DEFINER function must, and none is executable by PUBLIC; the grants
-- are in `postbox roles` (src/roles/roles-sql.ts).

ALTER FUNCTION {{schema}}.stamp_stream(text, integer) SECURITY DEFINER;
ALTER FUNCTION {{schema}}.create_stream(text, integer, interval) SECURITY DEFINER;
ALTER FUNCTION {{schema}}.delete_stream(text) SECURITY DEFINER;
ALTER FUNCTION {{schema}}.prune_streams(timestamptz) SECURITY DEFINER;
