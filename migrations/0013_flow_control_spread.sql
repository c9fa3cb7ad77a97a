-- postbox 0013: flow control whose limits are far from reached costs a claim little (issue 15's
-- target: claim+ack of a limited queue at >= 0.9x the same queue without limits, measured by
-- `npm run bench -- --only flow`; docs/performance.md, "Flow control", has every run).
--
-- maxInFlight. 0008 kept one slot row per message in flight: a claim of 100 locked and rewrote
-- 100 slot rows, and looked up the message of every busy slot it passed over (0.53-0.86x). Now a
-- queue's cap is shared by at most 32 rows (flight_slots, `capacity` places each, the ids and
-- leases of the messages claimed into them). A claim locks one row (SKIP LOCKED, starting from a
-- row that depends on its connection, so that a connection mostly meets its own earlier claims),
-- drops from it the messages no longer in flight, and adds its own: one row lock and one row
-- write per claim, and one look-up per message the row held. A message holds its place by the
-- same rule as 0008's slots (its claim's lease, not ended), so ack, nack, release and expiry
-- still write nothing here. Figures: 0.96x in the first run (bench, PostgreSQL 15).

-- The rows of maxInFlight: each holds `capacity` places, and the ids and leases of the messages
-- claimed into them. A message holds its place while it still has the lease it was claimed
-- with and that lease has not ended (as 0008's slots).
ALTER TABLE {{schema}}.flight_slots
  ADD COLUMN capacity integer NOT NULL DEFAULT 1,
  ADD COLUMN message_ids bigint[] NOT NULL DEFAULT '{}',
  ADD COLUMN leases uuid[] NOT NULL DEFAULT '{}';
-- A row holds up to a few hundred ids and leases (24 bytes each) while that many are in flight:
-- kept in the row (not compressed, not moved to TOAST) up to 8 kB.
ALTER TABLE {{schema}}.flight_slots SET (toast_tuple_target = 8160);
ALTER TABLE {{schema}}.flight_slots ALTER COLUMN message_ids SET STORAGE MAIN, ALTER COLUMN leases SET STORAGE MAIN;

-- Makes the slot rows of a queue for a cap (none for NULL): min(cap, 32) rows sharing the cap,
-- holding the messages in flight now (the first `cap` of them by id), so that messages claimed
-- before the cap was set or changed count against it. Called with the queue_flow row locked.
CREATE FUNCTION {{schema}}.flight_slots_make(queue text, cap integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
  DELETE FROM flight_slots s WHERE s.queue = queue;
  IF cap IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO flight_slots (queue, slot, capacity, message_ids, leases)
  SELECT queue, r.n, cap / least(cap, 32) + CASE WHEN r.n <= cap % least(cap, 32) THEN 1 ELSE 0 END,
         coalesce(x.ids, '{}'), coalesce(x.leases, '{}')
  FROM generate_series(1, least(cap, 32)) AS r(n)
  LEFT JOIN (
    -- The i-th message in flight goes to row (i - 1) % rows + 1: each row gets at most its capacity.
    SELECT (y.i - 1) % least(cap, 32) + 1 AS n, array_agg(y.id) AS ids, array_agg(y.lease) AS leases
    FROM (SELECT m.id, m.lease, row_number() OVER (ORDER BY m.id) AS i FROM messages m
          WHERE m.queue = queue AND m.lease IS NOT NULL AND m.available_at > now()) y
    WHERE y.i <= cap
    GROUP BY 1
  ) x ON x.n = r.n;
END $$;

-- 0008's slots become rows of several places.
DELETE FROM {{schema}}.flight_slots;
ALTER TABLE {{schema}}.flight_slots DROP COLUMN message_id, DROP COLUMN lease;
SELECT {{schema}}.flight_slots_make(f.queue, f.max_in_flight) FROM {{schema}}.queue_flow f WHERE f.max_in_flight IS NOT NULL;

CREATE OR REPLACE FUNCTION {{schema}}.flow_take(queue text, ids bigint[], token uuid)
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
-- 0013 (from 0008): maxInFlight by slot rows of several places each; the lines marked 0013.
DECLARE
  f {{schema}}.queue_flow;
  kept bigint[] := ids;
  keys text[];
  locked_keys text[];
  taken_counts integer[];
  cap integer;
  slot_no integer;          -- 0013: the slot row being filled
  visited integer[] := '{}';
  places integer;
  room integer;
  live_ids bigint[];
  live_leases uuid[];
  given bigint[] := '{}';   -- 0013: the candidates given room so far, in claim order
BEGIN
  SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_take.queue;
  IF f.rate_limit IS NOT NULL THEN
    -- One claim at a time decides the queue's rate; the next one's statements see its commit.
    -- (Read again under the lock: a pause or a change of limits may have committed.)
    SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_take.queue FOR NO KEY UPDATE;
    IF NOT FOUND OR f.paused THEN
      RETURN '{}';
    END IF;
    cap := least(cardinality(ids), coalesce(
      (SELECT {{schema}}.rate_window_room(w.stamps, w.counts, f.rate_limit, f.rate_per, now())
       FROM {{schema}}.rate_windows w WHERE w.queue = flow_take.queue AND w.rate_key = ''), f.rate_limit));
    IF cap <= 0 THEN
      RETURN '{}';
    END IF;
    IF cap < cardinality(ids) THEN
      kept := ids[1:cap];
    END IF;
  END IF;
  IF f.key_rate_limit IS NOT NULL THEN
    SELECT array_agg(DISTINCT m.headers ->> 'postbox-rate-key' COLLATE "C") INTO keys
    FROM {{schema}}.messages m WHERE m.id = ANY (ids) AND m.headers ? 'postbox-rate-key';
    IF keys IS NOT NULL THEN
      -- A key seen for the first time gets its row. Inserted in one order (bytewise), so two
      -- claims inserting the same new keys wait for each other one way only.
      INSERT INTO {{schema}}.rate_windows (queue, rate_key)
      SELECT flow_take.queue, k FROM unnest(keys) AS k
      WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = flow_take.queue AND w.rate_key = k)
      ORDER BY k COLLATE "C"
      ON CONFLICT ON CONSTRAINT rate_windows_pkey DO NOTHING;
      -- The room of each key is read from its newest version, under the lock. Per key, the first
      -- candidates in claim order take it; then the queue-wide cap takes the first of those.
      WITH locked AS (
        SELECT w.rate_key, w.stamps, w.counts FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = ANY (keys)
        ORDER BY w.rate_key COLLATE "C"
        FOR NO KEY UPDATE
      ), room AS (
        -- rate_window_room, written out: a function call per key cost more than the rest of this.
        SELECT l.rate_key,
               (SELECT CASE WHEN max(e.s) > now() + f.key_rate_per THEN 0
                            ELSE f.key_rate_limit - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.key_rate_per), 0) END
                FROM unnest(l.stamps, l.counts) AS e(s, c)) AS room
        FROM locked l
      ), ranked AS (
        SELECT p.id, p.ord, m.headers ->> 'postbox-rate-key' AS rate_key,
               row_number() OVER (PARTITION BY m.headers ->> 'postbox-rate-key' ORDER BY p.ord) AS n
        FROM unnest(ids) WITH ORDINALITY AS p(id, ord) JOIN {{schema}}.messages m ON m.id = p.id
      ), chosen AS (
        SELECT r.id, r.ord, r.rate_key FROM ranked r LEFT JOIN room ON room.rate_key = r.rate_key
        WHERE r.rate_key IS NULL OR r.n <= room.room
        ORDER BY r.ord LIMIT coalesce(cap, cardinality(ids))
      )
      SELECT (SELECT coalesce(array_agg(c.id ORDER BY c.ord), '{}') FROM chosen c), (SELECT array_agg(rm.rate_key) FROM room rm)
      INTO kept, locked_keys;
    END IF;
  END IF;
  IF f.max_in_flight IS NOT NULL AND cardinality(kept) > 0 THEN
    -- 0013: room in the queue's slot rows (see the migration's header), one row at a time until
    -- the candidates have room: the row is locked first (SKIP LOCKED: any row will do), then what
    -- it holds is read in a statement of its own, on a snapshot taken after the lock, so that the
    -- claims of the row's previous holder are seen as in flight. Rows are tried from a place that
    -- depends on the connection, so each connection mostly finds its own row, whose messages it
    -- has acked.
    FOR tries IN 1..32 LOOP
      SELECT s.slot INTO slot_no FROM {{schema}}.flight_slots s
      WHERE s.queue = flow_take.queue AND s.slot <> ALL (visited)
      ORDER BY (s.slot + pg_backend_pid()) % 32, s.slot
      LIMIT 1
      FOR UPDATE SKIP LOCKED;
      EXIT WHEN NOT FOUND;
      visited := visited || slot_no;
      SELECT s.capacity, coalesce(array_agg(e.id) FILTER (WHERE e.id IS NOT NULL), '{}'),
             coalesce(array_agg(e.lease) FILTER (WHERE e.id IS NOT NULL), '{}')
      INTO places, live_ids, live_leases
      FROM {{schema}}.flight_slots s
      LEFT JOIN LATERAL (
        SELECT x.id, x.lease FROM unnest(s.message_ids, s.leases) AS x(id, lease)
        WHERE EXISTS (SELECT 1 FROM {{schema}}.messages m WHERE m.id = x.id AND m.lease = x.lease AND m.available_at > now())
      ) e ON true
      WHERE s.queue = flow_take.queue AND s.slot = slot_no
      GROUP BY s.capacity;
      room := least(places - cardinality(live_ids), cardinality(kept) - cardinality(given));
      IF room > 0 THEN
        live_ids := live_ids || kept[cardinality(given) + 1 : cardinality(given) + room];
        live_leases := live_leases || array_fill(token, ARRAY[room]);
        given := kept[1 : cardinality(given) + room];
      END IF;
      UPDATE {{schema}}.flight_slots s SET message_ids = live_ids, leases = live_leases
      WHERE s.queue = flow_take.queue AND s.slot = slot_no;
      EXIT WHEN cardinality(given) >= cardinality(kept);
    END LOOP;
    kept := given;
  END IF;
  IF locked_keys IS NOT NULL THEN
    -- Every locked key's window is written again, with 0 claims when it had no room: that
    -- refreshes free_at, so the next scans skip it.
    SELECT array_agg(k.rate_key ORDER BY k.ord), array_agg(coalesce(c.n, 0) ORDER BY k.ord) INTO locked_keys, taken_counts
    FROM unnest(locked_keys) WITH ORDINALITY AS k(rate_key, ord)
    LEFT JOIN (SELECT m.headers ->> 'postbox-rate-key' AS rate_key, count(*)::integer AS n FROM {{schema}}.messages m
               WHERE m.id = ANY (kept) GROUP BY 1) c ON c.rate_key = k.rate_key;
    PERFORM {{schema}}.rate_windows_record(flow_take.queue, locked_keys, taken_counts, f.key_rate_limit, f.key_rate_per, now());
    -- Now and then, rows of keys whose window is empty go: they hold nothing a claim needs. (Not
    -- the keys of this claim: one inserted just now is empty until it is recorded.)
    IF random() < 0.01 THEN
      DELETE FROM {{schema}}.rate_windows w
      WHERE w.queue = flow_take.queue AND (w.queue, w.rate_key) IN (
        SELECT x.queue, x.rate_key FROM {{schema}}.rate_windows x
        -- A minute's margin: a claim whose transaction started that much earlier than this one
        -- would find the row gone and count nothing before it.
        WHERE x.queue = flow_take.queue AND x.rate_key <> '' AND x.rate_key <> ALL (locked_keys) AND x.free_at < now() - interval '1 minute'
        AND NOT EXISTS (SELECT 1 FROM unnest(x.stamps) s WHERE s > now() - 2 * f.key_rate_per - interval '1 minute')
        LIMIT 1000 FOR UPDATE SKIP LOCKED);
    END IF;
  END IF;
  IF cardinality(kept) = 0 THEN
    RETURN kept;
  END IF;
  IF f.rate_limit IS NOT NULL THEN
    -- The queue-wide window: this claim holds the queue_flow row, so no other claim writes it now.
    INSERT INTO {{schema}}.rate_windows (queue, rate_key) VALUES (flow_take.queue, '')
    ON CONFLICT ON CONSTRAINT rate_windows_pkey DO NOTHING;
    PERFORM {{schema}}.rate_windows_record(flow_take.queue, ARRAY[''], ARRAY[cardinality(kept)], f.rate_limit, f.rate_per, now());
  END IF;
  -- (A place given to a message that claim_groups then refuses is free again at once: the
  -- message does not hold this token.)
  RETURN kept;
END $$;

CREATE OR REPLACE FUNCTION {{schema}}.set_flow_limits(queue text, max_in_flight integer DEFAULT NULL, rate_limit integer DEFAULT NULL,
  rate_per interval DEFAULT NULL, key_rate_limit integer DEFAULT NULL, key_rate_per interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
-- 0013 (from 0008): a new cap makes the slot rows again (flight_slots_make).
DECLARE
  had_max integer;
BEGIN
  PERFORM require_queue(queue);
  IF max_in_flight < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('max_in_flight must be a positive integer, got %s', max_in_flight);
  ELSIF rate_limit < 1 OR key_rate_limit < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01',
      MESSAGE = format('a rate limit must be a positive integer, got %s', CASE WHEN rate_limit < 1 THEN rate_limit ELSE key_rate_limit END);
  ELSIF rate_per <= '0' OR key_rate_per <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01',
      MESSAGE = format('a rate period must be positive, got %s', CASE WHEN rate_per <= '0' THEN rate_per ELSE key_rate_per END);
  ELSIF (rate_limit IS NULL) <> (rate_per IS NULL) OR (key_rate_limit IS NULL) <> (key_rate_per IS NULL) THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'a rate limit needs both a limit and a period';
  END IF;
  SELECT f.max_in_flight INTO had_max FROM queue_flow f WHERE f.queue = queue FOR NO KEY UPDATE;
  INSERT INTO queue_flow AS f (queue, max_in_flight, rate_limit, rate_per, key_rate_limit, key_rate_per)
  VALUES (queue, max_in_flight, rate_limit, rate_per, key_rate_limit, key_rate_per)
  ON CONFLICT ON CONSTRAINT queue_flow_pkey DO UPDATE SET max_in_flight = excluded.max_in_flight, rate_limit = excluded.rate_limit,
    rate_per = excluded.rate_per, key_rate_limit = excluded.key_rate_limit, key_rate_per = excluded.key_rate_per, updated_at = now();
  -- 0013: the slot rows are made again when the cap changes, holding what is in flight now.
  IF max_in_flight IS DISTINCT FROM had_max THEN
    PERFORM flight_slots_make(queue, max_in_flight);
  END IF;
  IF rate_limit IS NULL THEN
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key = '';
  END IF;
  IF key_rate_limit IS NULL THEN
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key <> '';
  END IF;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
