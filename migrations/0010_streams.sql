-- postbox 0010: streams, a retained log read by consumer groups (DESIGN.md, "Streams").
--
-- The trap: ids from a sequence become visible out of commit order, so a reader that remembers
-- "the last id I read" silently skips an event whose transaction drew an early id and committed
-- late (research/streams.md §1: Marten, Eventuous, SQLStreamStore and Emmett shipped this bug).
-- postbox never lets a reader see an id order. It splits an event's life in two:
--
--   1. append: one INSERT into stream_inbox, in the caller's transaction. No lock on the stream,
--      no counter: appenders never wait for each other, and an open appending transaction holds
--      nothing back (its rows are simply not there yet).
--   2. stamp: a stamp round, serialised per stream by a try-lock held until it commits, moves the
--      committed inbox rows into the log (stream_events) and gives them offsets head+1, head+2,
--      ... per partition. Rounds are serialised and only see committed rows, so the offsets that
--      are visible are always a gap-free prefix of each partition, growing in the order events
--      became visible. A late committer is stamped by a later round, after events that committed
--      before it; a rolled-back append never reaches the inbox, so it uses no offset and stalls
--      nobody. Readers read `offset > committed`: an index range, no snapshot arithmetic, and a
--      transaction open elsewhere delays only its own events.
--
-- Any reader (a consumer group member, readStream) runs a stamp round before it reads; the
-- try-lock makes the others skip it, and the round that stamped something wakes the waiting
-- groups (wake('stream/<name>'), notifying only when someone waits). The price is a second write
-- per event (insert into the log, delete from the small inbox), and the log is insert-only.
--
-- Retention drops whole time ranges: stream_events is partitioned by stream (LIST), and each
-- stream's log by segment (RANGE), a time bucket of a stream's segment_seconds (an eighth of its
-- retention) at stamp time. prune_streams() drops the segments that ended before now - retention
-- after moving each partition's log_start_offset past them; nothing is deleted row by row.
--
-- Groups: stream_offsets holds one row per (group, partition): the committed offset, the member
-- that owns the partition and an epoch bumped at each change of owner. Members heartbeat
-- (stream_rebalance), reap members whose session ran out and take their share of the free
-- partitions. A commit is a compare-and-set on (owner, epoch); zero rows raises PBS04 (fenced),
-- which rolls back the caller's transaction, the handler's writes with it.
--
-- New SQLSTATEs of class PB:
--   PBS01 stream not found   PBS02 invalid stream or group name
--   PBS03 group not found    PBS04 fenced (the partition has another owner or epoch now)

CREATE TABLE {{schema}}.streams (
  id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name            text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,62}$'),
  partitions      integer NOT NULL CHECK (partitions BETWEEN 1 AND 256),
  retention       interval NOT NULL CHECK (retention > '0'),
  -- The width of a retention segment; an eighth of the retention, at least a second.
  segment_seconds bigint NOT NULL CHECK (segment_seconds > 0),
  max_payload_bytes integer NOT NULL DEFAULT 262144,
  -- The newest segment a stamp round wrote to: segments only grow, so that each drops a prefix.
  last_segment    bigint NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- Per partition: the newest offset given (head) and the oldest still retained (log start).
-- Updated by every stamp round that stamps into the partition: kept small and HOT.
CREATE TABLE {{schema}}.stream_partitions (
  stream_id        integer NOT NULL REFERENCES {{schema}}.streams (id) ON DELETE CASCADE,
  partition        integer NOT NULL,
  head_offset      bigint NOT NULL DEFAULT 0,
  log_start_offset bigint NOT NULL DEFAULT 1,
  stamped_at       timestamptz,
  PRIMARY KEY (stream_id, partition)
) WITH (fillfactor = 50);

-- Appended, committed or not, and not stamped yet. No foreign key: a key-share lock of the
-- streams row per append would turn concurrent appends into multixacts; appends and
-- delete_stream serialise on the stream's wake_key lock instead, as sends and deleteQueue do.
CREATE TABLE {{schema}}.stream_inbox (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  stream_id   integer NOT NULL,
  partition   integer NOT NULL,
  key         text,
  encoding    text NOT NULL,
  payload     jsonb,
  body        bytea,
  headers     jsonb,
  appended_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_inbox_stream_idx ON {{schema}}.stream_inbox (stream_id, id);
ALTER TABLE {{schema}}.stream_inbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- The log: insert-only, one LIST partition per stream, RANGE partitions by segment under it.
CREATE TABLE {{schema}}.stream_events (
  stream_id   integer NOT NULL,
  segment     bigint NOT NULL,
  partition   integer NOT NULL,
  "offset"    bigint NOT NULL,
  id          bigint NOT NULL,
  key         text,
  encoding    text NOT NULL,
  payload     jsonb,
  body        bytea,
  headers     jsonb,
  appended_at timestamptz NOT NULL,
  stamped_at  timestamptz NOT NULL
) PARTITION BY LIST (stream_id);
CREATE INDEX stream_events_offset_idx ON {{schema}}.stream_events (stream_id, partition, "offset");

CREATE TABLE {{schema}}.stream_groups (
  stream_id  integer NOT NULL REFERENCES {{schema}}.streams (id) ON DELETE CASCADE,
  group_name text NOT NULL CHECK (group_name ~ '^[a-z0-9][a-z0-9_.:-]{0,62}$'),
  start_from text NOT NULL CHECK (start_from IN ('earliest', 'latest')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream_id, group_name)
);

CREATE TABLE {{schema}}.stream_members (
  stream_id       integer NOT NULL,
  group_name      text NOT NULL,
  member          text NOT NULL,
  heartbeat_at    timestamptz NOT NULL,
  session_timeout interval NOT NULL,
  joined_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream_id, group_name, member),
  FOREIGN KEY (stream_id, group_name) REFERENCES {{schema}}.stream_groups (stream_id, group_name) ON DELETE CASCADE
) WITH (fillfactor = 50);

-- One row per (group, partition), written once per committed batch (never per event).
CREATE TABLE {{schema}}.stream_offsets (
  stream_id         integer NOT NULL,
  group_name        text NOT NULL,
  partition         integer NOT NULL,
  committed_offset  bigint NOT NULL DEFAULT 0,
  owner             text,
  epoch             bigint NOT NULL DEFAULT 0,
  -- Events this group never read because retention dropped them first.
  lost_to_retention bigint NOT NULL DEFAULT 0,
  committed_at      timestamptz,
  PRIMARY KEY (stream_id, group_name, partition),
  FOREIGN KEY (stream_id, group_name) REFERENCES {{schema}}.stream_groups (stream_id, group_name) ON DELETE CASCADE
) WITH (fillfactor = 50);

CREATE FUNCTION {{schema}}.assert_stream_name(name text, what text DEFAULT 'stream') RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF name IS NULL OR name !~ '^[a-z0-9][a-z0-9_.:-]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBS02',
      MESSAGE = format('invalid %s name %s', what, coalesce(quote_literal(left(name, 80)), 'NULL')),
      HINT = 'Stream and group names are 1-63 characters of a-z, 0-9, _ . : - and start with a letter or digit.';
  END IF;
END $$;

CREATE FUNCTION {{schema}}.require_stream(stream text) RETURNS {{schema}}.streams
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  s streams;
BEGIN
  PERFORM assert_stream_name(stream);
  SELECT * INTO s FROM streams WHERE name = stream;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PBS01', MESSAGE = format('stream %L does not exist', stream),
      HINT = format('Create it first with createStream(), or in SQL: SELECT {{schema}}.create_stream(%L);', stream);
  END IF;
  RETURN s;
END $$;

-- The partition of a key: the same key always the same partition of a stream (hashtextextended
-- is what Postgres's own hash partitioning uses, kept stable across versions).
CREATE FUNCTION {{schema}}.key_partition(key text, partitions integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (((hashtextextended(key, 0) % partitions) + partitions) % partitions)::integer $$;

-- The name of a stream's log table, and of one of its segments (identifiers made of numbers only).
CREATE FUNCTION {{schema}}.stream_log_table(stream_id integer, segment bigint DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'stream_events_' || stream_id || coalesce('_' || segment, '') $$;

-- Creates a stream and its partitions. An existing stream is returned unchanged.
CREATE FUNCTION {{schema}}.create_stream(name text, partitions integer DEFAULT 1, retention interval DEFAULT '7 days')
RETURNS {{schema}}.streams
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  s streams;
BEGIN
  PERFORM assert_stream_name(name);
  IF partitions IS NULL OR partitions NOT BETWEEN 1 AND 256 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('partitions must be an integer from 1 to 256, got %s', coalesce(partitions::text, 'NULL'));
  END IF;
  IF retention IS NULL OR retention <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('retention must be positive, got %s', coalesce(retention::text, 'NULL'));
  END IF;
  -- One creator of a name at a time, so that the log table is made once.
  PERFORM pg_advisory_xact_lock(wake_key('stream/' || name));
  SELECT * INTO s FROM streams WHERE streams.name = create_stream.name;
  IF FOUND THEN
    RETURN s;
  END IF;
  INSERT INTO streams (name, partitions, retention, segment_seconds)
  VALUES (name, partitions, retention, greatest(1, ceil(extract(epoch FROM retention) / 8))::bigint)
  RETURNING * INTO s;
  INSERT INTO stream_partitions (stream_id, partition) SELECT s.id, p FROM generate_series(0, partitions - 1) p;
  EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.stream_events FOR VALUES IN (%s) PARTITION BY RANGE (segment)',
                 '{{schema_name}}', stream_log_table(s.id), '{{schema_name}}', s.id);
  RETURN s;
END $$;

-- Deletes a stream, its log, its groups and its offsets. Returns false when there was none.
CREATE FUNCTION {{schema}}.delete_stream(name text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  s streams;
BEGIN
  PERFORM assert_stream_name(name);
  -- Waits for appends in flight (they hold it shared) and keeps new ones out until commit.
  PERFORM pg_advisory_xact_lock(wake_key('stream/' || name));
  DELETE FROM streams WHERE streams.name = delete_stream.name RETURNING * INTO s;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('postbox.stamp:{{schema_name}}:' || s.id, 0));
  DELETE FROM stream_inbox WHERE stream_id = s.id;
  EXECUTE format('DROP TABLE IF EXISTS %I.%I', '{{schema_name}}', stream_log_table(s.id));
  RETURN true;
END $$;

-- Appends events to a stream: one INSERT into the inbox, in the caller's transaction. The arrays
-- run in step; a NULL key spreads events at random. Returns each event's id and partition.
CREATE FUNCTION {{schema}}.append_events(stream text, encodings text[], payloads jsonb[], bodies bytea[], keys text[], headers jsonb[])
RETURNS TABLE (id bigint, partition integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s streams;
  problem text;
  bad_at bigint;
BEGIN
  -- Shared: appends never wait for each other, only for delete_stream, and an idle group's
  -- exclusive try-lock tells it an append is still open (see wake()).
  PERFORM pg_advisory_xact_lock_shared(wake_key('stream/' || append_events.stream));
  s := require_stream(append_events.stream);
  SELECT x.problem, x.ord INTO problem, bad_at
  FROM (SELECT CASE
                 WHEN octet_length(k) NOT BETWEEN 1 AND 1024 THEN 'PBV01:a key must be 1 to 1024 bytes'
                 ELSE message_problem(s.max_payload_bytes, p, b, e, NULL, NULL, 0, NULL, NULL, h)
               END AS problem, ord
        FROM unnest(encodings, payloads, bodies, keys, headers) WITH ORDINALITY AS u(e, p, b, k, h, ord)) x
  WHERE x.problem IS NOT NULL
  ORDER BY x.ord LIMIT 1;
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = left(problem, 5),
      MESSAGE = format('%s for stream %L%s', substr(problem, 7), s.name,
                       CASE WHEN cardinality(encodings) > 1 THEN format(' (event %s of the batch)', bad_at) ELSE '' END);
  END IF;
  RETURN QUERY
  INSERT INTO stream_inbox (stream_id, partition, key, encoding, payload, body, headers)
  SELECT s.id, CASE WHEN u.k IS NULL THEN floor(random() * s.partitions)::integer ELSE key_partition(u.k, s.partitions) END,
         u.k, u.e, u.p, u.b, u.h
  FROM unnest(encodings, payloads, bodies, keys, headers) WITH ORDINALITY AS u(e, p, b, k, h, ord)
  ORDER BY u.ord
  RETURNING stream_inbox.id, stream_inbox.partition;
  IF current_setting('transaction_isolation') <> 'read committed'
     OR EXISTS (SELECT 1 FROM waiters w WHERE w.queue = 'stream/' || s.name AND NOT w.notified AND w.expires_at > now()) THEN
    PERFORM wake('stream/' || s.name);
  END IF;
END $$;

-- The SQL API for triggers and other languages: appends one JSON event; returns its id.
CREATE FUNCTION {{schema}}.append(stream text, payload jsonb, key text DEFAULT NULL, headers jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  SELECT a.id FROM append_events(stream, ARRAY['json'], ARRAY[payload], ARRAY[NULL::bytea], ARRAY[key], ARRAY[headers]) a
$$;

-- One stamp round: gives the committed inbox rows of a stream offsets, in id order, per
-- partition, and moves them into the log. Returns how many it stamped, or NULL when another
-- round holds the stream (it will stamp what is there). Run it in a transaction of its own: the
-- try-lock is held until that transaction commits, which is what keeps visible offsets gap-free.
CREATE FUNCTION {{schema}}.stamp_stream(stream text, max_events integer DEFAULT 5000) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s streams;
  seg bigint;
  stamped integer;
BEGIN
  s := require_stream(stamp_stream.stream);
  IF NOT pg_try_advisory_xact_lock(hashtextextended('postbox.stamp:{{schema_name}}:' || s.id, 0)) THEN
    RETURN NULL;
  END IF;
  -- Statements from here on read a snapshot taken after the lock: they see the previous round.
  IF NOT EXISTS (SELECT 1 FROM stream_inbox i WHERE i.stream_id = s.id) THEN
    RETURN 0;
  END IF;
  -- An idle group that arms now finds this round still open (wake protocol, see wake()).
  PERFORM pg_advisory_xact_lock_shared(wake_key('stream/' || s.name));
  seg := greatest((SELECT last_segment FROM streams WHERE id = s.id),
                  floor(extract(epoch FROM clock_timestamp()) / s.segment_seconds)::bigint);
  IF to_regclass(format('%I.%I', '{{schema_name}}', stream_log_table(s.id, seg))) IS NULL THEN
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%s) TO (%s)',
                   '{{schema_name}}', stream_log_table(s.id, seg), '{{schema_name}}', stream_log_table(s.id), seg, seg + 1);
  END IF;
  UPDATE streams SET last_segment = seg WHERE id = s.id AND last_segment <> seg;
  WITH picked AS MATERIALIZED (
    SELECT i.id FROM stream_inbox i WHERE i.stream_id = s.id ORDER BY i.id LIMIT max_events
  ), taken AS (
    DELETE FROM stream_inbox i USING picked WHERE i.id = picked.id RETURNING i.*
  ), numbered AS (
    SELECT t.*, h.head_offset + row_number() OVER (PARTITION BY t.partition ORDER BY t.id) AS off
    FROM taken t JOIN stream_partitions h ON h.stream_id = s.id AND h.partition = t.partition
  ), logged AS (
    INSERT INTO stream_events (stream_id, segment, partition, "offset", id, key, encoding, payload, body, headers, appended_at, stamped_at)
    SELECT s.id, seg, n.partition, n.off, n.id, n.key, n.encoding, n.payload, n.body, n.headers, n.appended_at, clock_timestamp()
    FROM numbered n
    RETURNING partition, "offset"
  ), heads AS (
    UPDATE stream_partitions h SET head_offset = x.head, stamped_at = clock_timestamp()
    FROM (SELECT l.partition, max(l."offset") AS head, count(*) AS n FROM logged l GROUP BY l.partition) x
    WHERE h.stream_id = s.id AND h.partition = x.partition
    RETURNING x.n
  )
  SELECT coalesce(sum(n), 0) INTO stamped FROM heads;
  IF stamped > 0 THEN
    PERFORM wake('stream/' || s.name);
  END IF;
  RETURN stamped;
END $$;

-- Creates a group if it does not exist, starting at the earliest retained event or after the
-- newest stamped one. Its offsets rows are made at once, one per partition.
CREATE FUNCTION {{schema}}.ensure_stream_group(s {{schema}}.streams, group_name text, start_from text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
  PERFORM assert_stream_name(group_name, 'group');
  IF start_from IS NULL OR start_from NOT IN ('earliest', 'latest') THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('from must be ''earliest'' or ''latest'', got %s', coalesce(quote_literal(start_from), 'NULL'));
  END IF;
  INSERT INTO stream_groups (stream_id, group_name, start_from) VALUES (s.id, group_name, start_from)
  ON CONFLICT DO NOTHING;
  IF FOUND THEN
    INSERT INTO stream_offsets (stream_id, group_name, partition, committed_offset)
    SELECT s.id, group_name, p.partition, CASE WHEN start_from = 'latest' THEN p.head_offset ELSE 0 END
    FROM stream_partitions p WHERE p.stream_id = s.id;
  END IF;
END $$;

-- A member's heartbeat: records it alive, frees the partitions of members whose session ran out,
-- and takes this member's share of the free partitions (partitions / live members, the first
-- members by id taking one more of the remainder), with a new epoch each. Returns the partitions
-- this member owns now, and its share: a member owning more than its share releases the excess
-- (stream_release) once it is done with them, for the newcomers to take.
CREATE FUNCTION {{schema}}.stream_rebalance(stream text, group_name text, member text, session_timeout interval, start_from text DEFAULT 'earliest')
RETURNS TABLE (partition integer, epoch bigint, committed_offset bigint, share integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s streams;
  live integer;
  before_me integer;
  target integer;
  mine integer;
BEGIN
  s := require_stream(stream_rebalance.stream);
  PERFORM ensure_stream_group(s, stream_rebalance.group_name, stream_rebalance.start_from);
  -- One rebalance of a group at a time: each reads the picture the previous one left.
  PERFORM pg_advisory_xact_lock(hashtextextended('postbox.stream_group:{{schema_name}}:' || s.id || ':' || stream_rebalance.group_name, 0));
  INSERT INTO stream_members AS m (stream_id, group_name, member, heartbeat_at, session_timeout)
  VALUES (s.id, stream_rebalance.group_name, stream_rebalance.member, clock_timestamp(), stream_rebalance.session_timeout)
  ON CONFLICT (stream_id, group_name, member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, session_timeout = excluded.session_timeout;
  DELETE FROM stream_members m
  WHERE m.stream_id = s.id AND m.group_name = stream_rebalance.group_name AND m.heartbeat_at < clock_timestamp() - m.session_timeout;
  -- Partitions whose owner is gone (reaped above, or left without releasing) are free.
  UPDATE stream_offsets o SET owner = NULL
  WHERE o.stream_id = s.id AND o.group_name = stream_rebalance.group_name AND o.owner IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM stream_members m WHERE m.stream_id = s.id AND m.group_name = o.group_name AND m.member = o.owner);
  SELECT count(*), count(*) FILTER (WHERE m.member < stream_rebalance.member) INTO live, before_me
  FROM stream_members m WHERE m.stream_id = s.id AND m.group_name = stream_rebalance.group_name;
  target := s.partitions / live + CASE WHEN before_me < s.partitions % live THEN 1 ELSE 0 END;
  SELECT count(*) INTO mine FROM stream_offsets o
  WHERE o.stream_id = s.id AND o.group_name = stream_rebalance.group_name AND o.owner = stream_rebalance.member;
  IF mine < target THEN
    -- A group that fell behind retention continues at the oldest retained event; what it missed is counted.
    UPDATE stream_offsets o
    SET owner = stream_rebalance.member, epoch = o.epoch + 1,
        committed_offset = greatest(o.committed_offset, p.log_start_offset - 1),
        lost_to_retention = o.lost_to_retention + greatest(0, p.log_start_offset - 1 - o.committed_offset)
    FROM (SELECT f.partition FROM stream_offsets f
          WHERE f.stream_id = s.id AND f.group_name = stream_rebalance.group_name AND f.owner IS NULL
          ORDER BY f.partition LIMIT target - mine) free, stream_partitions p
    WHERE o.stream_id = s.id AND o.group_name = stream_rebalance.group_name AND o.partition = free.partition
      AND p.stream_id = s.id AND p.partition = free.partition;
  END IF;
  RETURN QUERY
  SELECT o.partition, o.epoch, o.committed_offset, target FROM stream_offsets o
  WHERE o.stream_id = s.id AND o.group_name = stream_rebalance.group_name AND o.owner = stream_rebalance.member
  ORDER BY o.partition;
END $$;

-- Gives partitions back (a member above its share, or stopping): they are free for the next
-- heartbeat of any member. With leave, the member is also removed from the group.
CREATE FUNCTION {{schema}}.stream_release(stream text, group_name text, member text, partitions integer[] DEFAULT NULL, leave boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s streams;
BEGIN
  SELECT * INTO s FROM streams WHERE name = stream_release.stream;
  IF NOT FOUND THEN
    RETURN; -- deleted meanwhile: nothing to give back
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('postbox.stream_group:{{schema_name}}:' || s.id || ':' || stream_release.group_name, 0));
  UPDATE stream_offsets o SET owner = NULL
  WHERE o.stream_id = s.id AND o.group_name = stream_release.group_name AND o.owner = stream_release.member
    AND (stream_release.partitions IS NULL OR o.partition = ANY (stream_release.partitions));
  IF leave THEN
    DELETE FROM stream_members m
    WHERE m.stream_id = s.id AND m.group_name = stream_release.group_name AND m.member = stream_release.member;
  END IF;
END $$;

-- Commits a group's offset for one partition, fenced: only the member that owns the partition
-- under this epoch may. Anything else raises PBS04, which aborts the caller's transaction.
-- lost adds events the member found dropped by retention before it read them.
CREATE FUNCTION {{schema}}.stream_commit(stream text, group_name text, partition integer, member text, epoch bigint, committed_offset bigint, lost bigint DEFAULT 0)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
BEGIN
  UPDATE stream_offsets o
  SET committed_offset = greatest(o.committed_offset, stream_commit.committed_offset),
      lost_to_retention = o.lost_to_retention + stream_commit.lost, committed_at = clock_timestamp()
  FROM streams s
  WHERE s.name = stream_commit.stream AND o.stream_id = s.id AND o.group_name = stream_commit.group_name
    AND o.partition = stream_commit.partition AND o.owner = stream_commit.member AND o.epoch = stream_commit.epoch;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PBS04',
      MESSAGE = format('partition %s of stream %L is no longer owned by this member of group %L (epoch %s): it was reassigned',
                       stream_commit.partition, stream_commit.stream, stream_commit.group_name, stream_commit.epoch),
      HINT = 'Its events will be read again by the new owner from the last committed offset; heartbeat within the session timeout to keep partitions.';
  END IF;
END $$;

-- Moves a group's committed offsets: to the earliest retained event, after the newest stamped
-- one, to the first event stamped at or after a time, or (one partition) to just before an
-- offset. Every moved partition gets a new epoch and no owner, so members mid-batch are fenced
-- and re-take it from the new offset at their next heartbeat. Returns the partitions moved.
CREATE FUNCTION {{schema}}.stream_seek(stream text, group_name text, target text, at_time timestamptz DEFAULT NULL, target_partition integer DEFAULT NULL, target_offset bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s streams;
  moved integer;
BEGIN
  s := require_stream(stream_seek.stream);
  PERFORM assert_stream_name(stream_seek.group_name, 'group');
  IF NOT EXISTS (SELECT 1 FROM stream_groups g WHERE g.stream_id = s.id AND g.group_name = stream_seek.group_name) THEN
    RAISE EXCEPTION USING ERRCODE = 'PBS03', MESSAGE = format('group %L of stream %L does not exist', stream_seek.group_name, s.name),
      HINT = 'A group is created by its first consume().';
  END IF;
  IF target NOT IN ('earliest', 'latest', 'timestamp', 'offset') OR (target = 'timestamp' AND at_time IS NULL)
     OR (target = 'offset' AND (target_partition IS NULL OR target_offset IS NULL OR target_offset < 0)) THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('invalid seek target %L', target);
  END IF;
  IF target_partition IS NOT NULL AND target_partition NOT BETWEEN 0 AND s.partitions - 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01',
      MESSAGE = format('stream %L has partitions 0 to %s, not %s', s.name, s.partitions - 1, target_partition);
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('postbox.stream_group:{{schema_name}}:' || s.id || ':' || stream_seek.group_name, 0));
  UPDATE stream_offsets o
  SET committed_offset = CASE target
        WHEN 'earliest' THEN p.log_start_offset - 1
        WHEN 'latest' THEN p.head_offset
        WHEN 'offset' THEN target_offset - 1
        ELSE coalesce((SELECT min(e."offset") FROM stream_events e
                       WHERE e.stream_id = s.id AND e.partition = o.partition AND e.stamped_at >= at_time), p.head_offset + 1) - 1
      END,
      owner = NULL, epoch = o.epoch + 1
  FROM stream_partitions p
  WHERE o.stream_id = s.id AND o.group_name = stream_seek.group_name AND p.stream_id = s.id AND p.partition = o.partition
    AND (target_partition IS NULL OR o.partition = target_partition);
  GET DIAGNOSTICS moved = ROW_COUNT;
  RETURN moved;
END $$;

-- Retention: drops each stream's segments that ended before now - retention, whole, after
-- moving log_start_offset past them. The drop waits at most lock_timeout for readers (who hold
-- the log only for one statement) and is retried by the next call. Returns the segments dropped.
-- `now` is injectable for tests.
CREATE FUNCTION {{schema}}.prune_streams(now timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
  s streams;
  seg record;
  dropped integer := 0;
BEGIN
  FOR s IN SELECT * FROM streams ORDER BY id LOOP
    -- Not while a stamp round writes this stream's log.
    CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended('postbox.stamp:{{schema_name}}:' || s.id, 0));
    FOR seg IN
      SELECT c.relname, substring(c.relname FROM '_(\d+)$')::bigint AS segment
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = to_regclass(format('%I.%I', '{{schema_name}}', stream_log_table(s.id)))
    LOOP
      CONTINUE WHEN (seg.segment + 1) * s.segment_seconds > extract(epoch FROM coalesce(prune_streams.now, pg_catalog.now()) - s.retention);
      BEGIN
        EXECUTE format('UPDATE %I.stream_partitions p SET log_start_offset = greatest(p.log_start_offset, x.last + 1)
                        FROM (SELECT partition, max("offset") AS last FROM %I.%I GROUP BY partition) x
                        WHERE p.stream_id = $1 AND p.partition = x.partition',
                       '{{schema_name}}', '{{schema_name}}', seg.relname) USING s.id;
        EXECUTE format('DROP TABLE %I.%I', '{{schema_name}}', seg.relname);
        dropped := dropped + 1;
      EXCEPTION WHEN lock_not_available THEN
        -- A reader held the log past lock_timeout: the next call drops it.
        NULL;
      END;
    END LOOP;
  END LOOP;
  RETURN dropped;
END $$;

-- Per stream, partition and group: the head (newest offset), the log start (oldest retained),
-- the committed offset, unstamped (appended and committed events waiting for their offset:
-- readers stamp them, so a number that stays up means no group is reading), the lag (events
-- the group has yet to read: after its committed offset, or after the log start when it fell
-- behind retention, plus the unstamped ones), who owns the partition and how long ago it
-- heartbeat, and the events the group missed to retention. A stream without groups has one row
-- per partition with a NULL group.
CREATE VIEW {{schema}}.stream_stats AS
SELECT s.name AS stream, p.partition, o.group_name AS "group",
       p.head_offset, p.log_start_offset, o.committed_offset,
       p.head_offset + u.unstamped - greatest(o.committed_offset, p.log_start_offset - 1) AS lag,
       o.owner, o.epoch, o.lost_to_retention,
       extract(epoch FROM clock_timestamp() - m.heartbeat_at) * 1000 AS heartbeat_age_ms,
       u.unstamped
FROM {{schema}}.streams s
JOIN {{schema}}.stream_partitions p ON p.stream_id = s.id
CROSS JOIN LATERAL (SELECT count(*) AS unstamped FROM {{schema}}.stream_inbox i
                    WHERE i.stream_id = s.id AND i.partition = p.partition) u
LEFT JOIN {{schema}}.stream_offsets o ON o.stream_id = s.id AND o.partition = p.partition
LEFT JOIN {{schema}}.stream_members m ON m.stream_id = s.id AND m.group_name = o.group_name AND m.member = o.owner;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
