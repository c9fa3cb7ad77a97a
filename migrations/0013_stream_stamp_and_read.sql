-- postbox 0013: a group member stamps and reads in one statement.
--
-- A member used to run a stamp round (stamp_stream, a statement of its own) and then read the next
-- events of its partitions (another statement): two round trips each time it looked for events,
-- including right after a wake-up, where they made the idle group's wake-up latency 2.26x the
-- queue's (docs/performance.md, "Streams"). stamp_and_read does both in one call. It runs the
-- stamp round first and reads in a later statement of the same function, so the read's snapshot,
-- taken after the round, sees what the round just stamped (a CTE could not: it would share the
-- round's snapshot). The round's try-lock is held until the call commits, as before; the read adds
-- an index range scan to it. When another round holds the stream, the read sees the offsets that
-- committed rounds gave: always a gap-free prefix of each partition, so nothing can be skipped, and
-- the holder's round wakes the waiting groups when it commits. Called alone, not inside another
-- transaction (as stamp_stream).

-- One stamp round of `stream` (see stamp_stream), then the next events of each partition after its
-- own offset, at most `max_events` per partition, in partition and offset order.
CREATE FUNCTION {{schema}}.stamp_and_read(stream text, partitions integer[], after bigint[], max_events integer)
RETURNS TABLE (partition integer, "offset" bigint, id bigint, key text, encoding text, payload jsonb, body bytea,
               headers jsonb, appended_at timestamptz, stamped_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
BEGIN
  PERFORM stamp_stream(stamp_and_read.stream);
  RETURN QUERY
  SELECT e.partition, e."offset", e.id, e.key, e.encoding, e.payload, e.body, e.headers, e.appended_at, e.stamped_at
  FROM streams st
  CROSS JOIN unnest(stamp_and_read.partitions, stamp_and_read.after) AS w(p, a)
  CROSS JOIN LATERAL (
    SELECT x.* FROM stream_events x
    WHERE x.stream_id = st.id AND x.partition = w.p AND x."offset" > w.a
    ORDER BY x."offset" LIMIT stamp_and_read.max_events
  ) e
  WHERE st.name = stamp_and_read.stream
  ORDER BY e.partition, e."offset";
END $$;
REVOKE ALL ON FUNCTION {{schema}}.stamp_and_read(text, integer[], bigint[], integer) FROM PUBLIC;
