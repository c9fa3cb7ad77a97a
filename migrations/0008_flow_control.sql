-- postbox 0008: flow control (DESIGN.md, "Flow control (queue options)"): pause and resume, a
-- global cap on messages in flight, and rate limits for the whole queue and per rate key, all
-- enforced by the claim in the database, so they hold across every consumer and process.
--
-- State lives in three tables of its own, so a queue that uses none of this pays one primary-key
-- probe of queue_flow per claim and nothing else:
--   queue_flow    one row per queue that was ever paused or limited: paused, max_in_flight,
--                 rate_limit/rate_per (whole queue), key_rate_limit/key_rate_per (per rate key).
--   rate_windows  the claims of the last `per` per (queue, rate key); rate key '' is the whole
--                 queue. A sliding log, not a fixed window: claims made at one instant share an
--                 entry (stamps[i], counts[i]), so its size is the number of claim statements in
--                 the window, not the number of messages. A claim at t may take
--                 limit - sum(counts where stamp > t - per): so no window of length `per`
--                 (half open) ever holds more than `limit` claims (BullMQ's fixed window allows
--                 2x at an edge; a GCRA with a burst allows limit + burst - 1). free_at is when
--                 the key has room again ('-infinity': it has room now), which the claim's scan
--                 compares to skip a throttled key's messages without locking them.
--   flight_slots  max_in_flight numbered slots per queue (created up front up to 10,000; above
--                 that, at random numbers as claims need them). A claim takes a free slot per
--                 message, with FOR UPDATE SKIP LOCKED, so claims take slots in parallel. A slot
--                 is busy while the message it names still holds the lease it was claimed with
--                 and that lease has not ended, so an ack, a nack, a release, a dead letter or a
--                 crashed consumer's expired lease frees it with no write on those paths. (A
--                 count of live slots under a queue lock, the first version, ran claims of a
--                 queue one at a time: 0.33x the claim rate of the same queue without limits.)
--
-- The rate key of a message is its header 'postbox-rate-key' (send's rateKey option sets it;
-- SQL and publish callers set the header). It is not a column: no send function changes, and a
-- message's headers are already validated strings. A CHECK caps it at 512 bytes.
--
-- WHAT THIS ADDS TO THE CLAIM (claim(), 0007's lean claim, which receive calls): the places
-- marked "-- flow:", around the existing statements, and two functions that hold the logic:
--   1. flow_gate(queue, max) before the rounds, without a lock. NULL allowance: no row, or
--      nothing set (every other line below is then a no-op). 0: paused, or the queue's rate
--      window is full as this snapshot sees it: return nothing. Otherwise an upper bound.
--   2. The candidate scan's LIMIT becomes the allowance (<= max) - taken.
--   3. One predicate in the candidate scan, when the queue has key_rate_limit: skip messages
--      whose rate key's window row has free_at > now().
--   4. picked := flow_take(queue, picked, token) after the scan and BEFORE claim_groups (so a
--      group lease is never taken for a message a limit refuses). It decides exactly, under
--      locks taken in one order and held to the claim's commit: the queue_flow row (FOR NO KEY
--      UPDATE) when rate_limit is set, so the queue's rate is decided by one claim at a time;
--      then the rate keys' rows, sorted; then free flight slots (SKIP LOCKED). It keeps per key
--      at most its room, then at most the queue's room, then one message per free slot, and
--      records the claims in the windows (key and queue-wide) and the slots. grouped/grouped_keys are then filtered to what is kept. A
--      message refused here is only not claimed: its row lock ends with the statement and
--      nothing is written to it (no claim-and-release churn). Deciding at the end, not before
--      the scan, keeps the serialised stretch of two claims short.
--   5. The rounds go on (at most 4) while the rate limit refused candidates of keys whose
--      window this snapshot still showed open, and stop once the allowance is used.
-- A claim that flow_take recorded but claim_groups then refused (a group taken meanwhile)
-- counts against the limits anyway: the limits err on the safe side.
--
-- New: pause_queue(queue), resume_queue(queue) (resume wakes idle consumers with NOTIFY),
-- set_flow_limits(queue, ...) with PBV01 for a non-positive limit or period; queue_stats gets
-- `paused`.

CREATE TABLE {{schema}}.queue_flow (
  queue text PRIMARY KEY REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  paused boolean NOT NULL DEFAULT false,
  max_in_flight integer CONSTRAINT queue_flow_max_in_flight_positive CHECK (max_in_flight > 0),
  rate_limit integer CONSTRAINT queue_flow_rate_limit_positive CHECK (rate_limit > 0),
  rate_per interval CONSTRAINT queue_flow_rate_per_positive CHECK (rate_per > '0'),
  key_rate_limit integer CONSTRAINT queue_flow_key_rate_limit_positive CHECK (key_rate_limit > 0),
  key_rate_per interval CONSTRAINT queue_flow_key_rate_per_positive CHECK (key_rate_per > '0'),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT queue_flow_rate_complete CHECK ((rate_limit IS NULL) = (rate_per IS NULL)),
  CONSTRAINT queue_flow_key_rate_complete CHECK ((key_rate_limit IS NULL) = (key_rate_per IS NULL))
);

CREATE TABLE {{schema}}.rate_windows (
  queue text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  rate_key text NOT NULL,
  stamps timestamptz[] NOT NULL DEFAULT '{}',
  counts integer[] NOT NULL DEFAULT '{}',
  free_at timestamptz NOT NULL DEFAULT '-infinity',
  PRIMARY KEY (queue, rate_key)
);
-- Rewritten by every claim that takes one of its keys, never by an indexed column: room for HOT
-- updates, and vacuumed early.
ALTER TABLE {{schema}}.rate_windows SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 1);

CREATE TABLE {{schema}}.flight_slots (
  queue text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  slot integer NOT NULL,
  message_id bigint,
  lease uuid,
  PRIMARY KEY (queue, slot)
);
ALTER TABLE {{schema}}.flight_slots SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_cost_delay = 1);

-- NOT VALID: existing rows are not scanned (none can carry the header yet); new ones are checked.
ALTER TABLE {{schema}}.messages ADD CONSTRAINT messages_rate_key_valid
  CHECK (octet_length(headers ->> 'postbox-rate-key') BETWEEN 1 AND 512) NOT VALID;

-- Records n[i] more claims at `at` in the windows of keys[i] of a queue (rows that exist, locked
-- by the caller), in one statement for all the keys of a claim: entries older than two periods
-- (stamp <= at - 2 per) are dropped, and free_at is set to the first moment the window has room
-- again (when it holds S >= lim claims, the (S - lim + 1)th oldest must leave it), or
-- '-infinity'. The claims are stamped at `at` rounded UP to a 20th of `per`, and claims of one
-- stamp share an entry: a window holds at most 41 entries (two periods) whatever its limit and however many
-- claims write it (exact stamps made an entry per claim statement, hundreds of entries rewritten
-- by every claim of a busy queue; a 50th still cost 15 ms a claim touching 100 keys). A later
-- stamp keeps a claim in the window a little longer, never shorter: the limit stays exact on the
-- safe side, and a key at its limit waits up to a 20th of `per` longer (half that on average).
-- A window of a small limit holds at most `limit` entries anyway (each counts at least one).
-- (One statement for all keys: a function call per key cost 0.5 ms each, 50 ms a claim of 100.)
CREATE FUNCTION {{schema}}.rate_windows_record(queue text, keys text[], n integer[], lim integer, per interval, at timestamptz)
RETURNS void
LANGUAGE sql
AS $$
  WITH given AS MATERIALIZED (
    SELECT g.rate_key, g.n FROM unnest(keys, n) AS g(rate_key, n)
  ), entries AS (
    SELECT w.rate_key, e.s, e.c
    FROM {{schema}}.rate_windows w JOIN given g ON g.rate_key = w.rate_key
    CROSS JOIN LATERAL unnest(w.stamps, w.counts) AS e(s, c)
    WHERE w.queue = rate_windows_record.queue AND e.s > at - 2 * per AND e.c > 0
    UNION ALL
    SELECT g.rate_key, to_timestamp(ceil(extract(epoch FROM at) * 20 / extract(epoch FROM per)) * extract(epoch FROM per) / 20), g.n
    FROM given g WHERE g.n > 0
  ), merged AS (
    SELECT e.rate_key, e.s, sum(e.c)::integer AS c FROM entries e GROUP BY e.rate_key, e.s
  ), running AS (
    SELECT m.rate_key, m.s, m.c,
           sum(m.c) FILTER (WHERE m.s > at - per) OVER (PARTITION BY m.rate_key ORDER BY m.s ROWS UNBOUNDED PRECEDING) AS cum,
           sum(m.c) FILTER (WHERE m.s > at - per) OVER (PARTITION BY m.rate_key) AS total
    FROM merged m
  ), windows AS MATERIALIZED (
    SELECT r.rate_key, array_agg(r.s ORDER BY r.s) AS stamps, array_agg(r.c ORDER BY r.s) AS counts,
           coalesce(min(r.s + per) FILTER (WHERE r.s > at - per AND r.total >= lim AND r.cum >= r.total - lim + 1), '-infinity') AS free_at
    FROM running r GROUP BY r.rate_key
  )
  UPDATE {{schema}}.rate_windows w
  SET stamps = coalesce(x.stamps, '{}'), counts = coalesce(x.counts, '{}'), free_at = coalesce(x.free_at, '-infinity')
  FROM given g LEFT JOIN windows x ON x.rate_key = g.rate_key
  WHERE w.queue = rate_windows_record.queue AND w.rate_key = g.rate_key
$$;

-- How many more claims a window allows at `at`, the claim's now(). Claims are decided one at a
-- time per window (under its row lock), but their now() is when their transactions started, and
-- those are not in lock order: a claim may decide after one that started later. So every stamp
-- after at - per counts, those after `at` too (the check errs on the safe side), and the window
-- keeps two periods of entries, so that a claim that started up to a period before the last one
-- to write it still sees every claim it must count. One that started even earlier is given
-- nothing (its candidates wait for the next claim). (Dropping entries a period old, the first
-- version, let 3 claims of a 2/s key into one second under load: a claim that started earlier
-- decided after one that had dropped an entry still inside its window.)
CREATE FUNCTION {{schema}}.rate_window_room(stamps timestamptz[], counts integer[], lim integer, per interval, at timestamptz)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN max(e.s) > at + per THEN 0 ELSE lim - coalesce(sum(e.c) FILTER (WHERE e.s > at - per), 0)::integer END
  FROM unnest(stamps, counts) AS e(s, c)
$$;

-- The claim's gate, before it looks for messages (see the header); it takes no lock. allowance
-- NULL: the queue has nothing to enforce. 0: paused, or the queue's rate window is full as this
-- snapshot sees it. Otherwise an upper bound for the scan's LIMIT; flow_take decides exactly.
-- keyed: the queue has a per-key rate limit, so the scan skips throttled keys.
CREATE FUNCTION {{schema}}.flow_gate(queue text, max integer, OUT allowance integer, OUT keyed boolean)
LANGUAGE plpgsql
AS $$
DECLARE
  f {{schema}}.queue_flow;
BEGIN
  keyed := false;
  SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_gate.queue;
  IF NOT FOUND OR NOT (f.paused OR f.max_in_flight IS NOT NULL OR f.rate_limit IS NOT NULL OR f.key_rate_limit IS NOT NULL) THEN
    RETURN;
  END IF;
  keyed := f.key_rate_limit IS NOT NULL;
  IF f.paused THEN
    allowance := 0;
    RETURN;
  END IF;
  allowance := least(max, f.max_in_flight);
  IF f.rate_limit IS NOT NULL THEN
    allowance := least(allowance, coalesce(
      (SELECT {{schema}}.rate_window_room(w.stamps, w.counts, f.rate_limit, f.rate_per, now())
       FROM {{schema}}.rate_windows w WHERE w.queue = flow_gate.queue AND w.rate_key = ''), f.rate_limit));
  END IF;
  allowance := greatest(allowance, 0);
END $$;

-- The claim's second half (see the header): of the candidates `ids` (locked, in claim order),
-- keeps those the limits have room for, and records them as claimed with `token`. Its locks, in
-- one order in every claim: the queue's queue_flow row when it has a rate_limit, then the rate
-- keys' rows sorted bytewise. It waits for them (they are held only from here to the claim's
-- commit, a short stretch) rather than skip them: skipping a key another claim held made 10
-- claimers sharing 100 keys refuse each other's candidates round after round. Flight slots come
-- last, skipped when locked: any free slot will do.
CREATE FUNCTION {{schema}}.flow_take(queue text, ids bigint[], token uuid)
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
  f {{schema}}.queue_flow;
  kept bigint[] := ids;
  keys text[];
  locked_keys text[];
  taken_counts integer[];
  cap integer;
  slots integer[];
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
    -- A free slot per message. Locked with SKIP LOCKED, then decided again on a fresh snapshot:
    -- a slot another claim filled and committed between this statement's snapshot and its lock
    -- looks free to it (the re-check of a locked row reads other tables with the old snapshot).
    SELECT coalesce(array_agg(x.slot), '{}') INTO slots FROM (
      SELECT s.slot FROM {{schema}}.flight_slots s
      WHERE s.queue = flow_take.queue AND s.slot <= f.max_in_flight
        AND (s.message_id IS NULL OR NOT EXISTS (SELECT 1 FROM {{schema}}.messages m
                                                 WHERE m.id = s.message_id AND m.lease = s.lease AND m.available_at > now()))
      LIMIT cardinality(kept)
      FOR UPDATE SKIP LOCKED) x;
    IF cardinality(slots) > 0 THEN
      slots := ARRAY(SELECT s.slot FROM {{schema}}.flight_slots s
                     WHERE s.queue = flow_take.queue AND s.slot = ANY (slots)
                       AND (s.message_id IS NULL OR NOT EXISTS (SELECT 1 FROM {{schema}}.messages m
                                                                WHERE m.id = s.message_id AND m.lease = s.lease AND m.available_at > now())));
    END IF;
    IF cardinality(slots) < cardinality(kept) AND f.max_in_flight > 10000 THEN
      -- Above 10,000 the slots are not made up front: new ones at random numbers up to the limit
      -- (a number already taken is simply not returned).
      WITH made AS (
        INSERT INTO {{schema}}.flight_slots AS s (queue, slot)
        SELECT DISTINCT flow_take.queue, 1 + floor(random() * f.max_in_flight)::integer
        FROM generate_series(1, cardinality(kept) - cardinality(slots))
        ON CONFLICT ON CONSTRAINT flight_slots_pkey DO NOTHING
        RETURNING s.slot
      )
      SELECT slots || coalesce(array_agg(made.slot), '{}') INTO slots FROM made;
    END IF;
    kept := kept[1:cardinality(slots)];
    UPDATE {{schema}}.flight_slots s SET message_id = a.id, lease = token
    FROM unnest(kept, slots[1:cardinality(kept)]) AS a(id, slot)
    WHERE s.queue = flow_take.queue AND s.slot = a.slot;
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
  -- (A slot given to a message that claim_groups then refuses is free again at once: the message
  -- does not hold this token.)
  RETURN kept;
END $$;

-- Pauses a queue: sends are still accepted, and no claim takes anything until resume_queue.
-- Returns false when it was already paused.
CREATE FUNCTION {{schema}}.pause_queue(queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  changed boolean;
BEGIN
  PERFORM require_queue(queue);
  INSERT INTO queue_flow AS f (queue, paused) VALUES (queue, true)
  ON CONFLICT ON CONSTRAINT queue_flow_pkey DO UPDATE SET paused = true, updated_at = now() WHERE NOT f.paused
  RETURNING true INTO changed;
  RETURN coalesce(changed, false);
END $$;

-- Resumes a paused queue and wakes its idle consumers (NOTIFY at commit). Returns false when it
-- was not paused.
CREATE FUNCTION {{schema}}.resume_queue(queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  changed boolean;
BEGIN
  PERFORM require_queue(queue);
  UPDATE queue_flow f SET paused = false, updated_at = now() WHERE f.queue = queue AND f.paused
  RETURNING true INTO changed;
  IF changed THEN
    PERFORM {{schema}}.wake(queue);
  END IF;
  RETURN coalesce(changed, false);
END $$;

-- Sets a queue's limits; NULL removes one. A rate is a limit and its period, both positive.
CREATE FUNCTION {{schema}}.set_flow_limits(queue text, max_in_flight integer DEFAULT NULL, rate_limit integer DEFAULT NULL,
  rate_per interval DEFAULT NULL, key_rate_limit integer DEFAULT NULL, key_rate_per interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
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
  IF max_in_flight IS NOT NULL AND had_max IS NULL THEN
    -- Messages claimed before the limit existed take slots too (up to the limit).
    INSERT INTO flight_slots (queue, slot, message_id, lease)
    SELECT queue, x.n::integer, x.id, x.lease
    FROM (SELECT m.id, m.lease, row_number() OVER (ORDER BY m.id) AS n FROM messages m
          WHERE m.queue = queue AND m.lease IS NOT NULL AND m.available_at > now()) x
    WHERE x.n <= max_in_flight;
  END IF;
  IF max_in_flight IS NOT NULL AND max_in_flight <= 10000 THEN
    -- Up to 10,000 the slots are made up front; a claim only looks for a free one.
    INSERT INTO flight_slots (queue, slot) SELECT queue, g FROM generate_series(1, max_in_flight) AS g
    ON CONFLICT ON CONSTRAINT flight_slots_pkey DO NOTHING;
  ELSIF max_in_flight IS NULL THEN
    DELETE FROM flight_slots s WHERE s.queue = queue;
  END IF;
  IF rate_limit IS NULL THEN
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key = '';
  END IF;
  IF key_rate_limit IS NULL THEN
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key <> '';
  END IF;
END $$;

-- queue_stats, with whether the queue is paused.
CREATE OR REPLACE VIEW {{schema}}.queue_stats AS
SELECT q.name AS queue,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.delayed, 0) AS delayed,
       coalesce(s.in_flight, 0) AS in_flight,
       coalesce(d.dead, 0) AS dead,
       coalesce(s.ready, 0) + coalesce(s.delayed, 0) + coalesce(s.in_flight, 0) AS total,
       s.oldest_ready_age,
       s.max_attempt,
       coalesce(a.retained, 0) AS retained,
       q.dead_letter,
       coalesce(f.paused, false) AS paused
FROM {{schema}}.queues q
LEFT JOIN LATERAL (
  SELECT count(*) FILTER (WHERE m.available_at <= now()) AS ready,
         count(*) FILTER (WHERE m.available_at > now() AND m.lease IS NULL) AS delayed,
         count(*) FILTER (WHERE m.available_at > now() AND m.lease IS NOT NULL) AS in_flight,
         now() - min(m.available_at) FILTER (WHERE m.available_at <= now()) AS oldest_ready_age,
         max(m.attempt) AS max_attempt
  FROM {{schema}}.messages m WHERE m.queue = q.name
) s ON true
-- Only this queue's own dead messages: several queues may share one dead-letter queue.
LEFT JOIN LATERAL (
  SELECT count(*) AS dead FROM {{schema}}.messages m WHERE m.queue = q.dead_letter AND m.original_queue = q.name
) d ON true
LEFT JOIN LATERAL (SELECT count(*) AS retained FROM {{schema}}.messages_archive a WHERE a.queue = q.name) a ON true
LEFT JOIN {{schema}}.queue_flow f ON f.queue = q.name;

-- Claims up to max messages of a queue under a lease, counting the attempt: the rows in claim
-- order (priority, availability, id), with the columns a delivery needs (not the queue, which the
-- caller named) and its times as whole epoch milliseconds.
CREATE OR REPLACE FUNCTION {{schema}}.claim(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS TABLE (id bigint, priority integer, attempt integer, lease uuid, encoding text, payload jsonb, body bytea,
  headers jsonb, dedupe_key text, group_key text, last_error text, routing_key text,
  enqueued_ms float8, claimed_ms float8, available_ms float8)
LANGUAGE plpgsql
-- Generic plans, as receive had since 0003: pgbench, one client, receive(1) 0.61-0.77 ms with
-- custom plans made on every call, 0.44-0.45 ms with this clause.
SET plan_cache_mode = force_generic_plan
AS $$
-- 0008 (from 0007): flow control, the lines marked "flow:" (see the migration's header).
#variable_conflict use_column
DECLARE
  q {{schema}}.queues;
  candidates bigint[];
  grouped bigint[];
  grouped_keys text[];
  granted bigint[];
  picked bigint[];
  exhausted bigint[];
  taken integer := 0;
  claim_time timestamptz := now();
  lease_until timestamptz;
  -- 0007: the claim's times as epoch milliseconds, once per call rather than per row.
  claim_ms float8 := floor(extract(epoch FROM claim_time) * 1000);
  lease_ms float8;
  -- One fencing token per claim: ack, nack and extend match (id, lease), and a later claim of the
  -- same message draws a new one. (One per message cost a random draw per row.)
  token uuid := gen_random_uuid();
  flow_allowance integer; -- flow: how many flow_gate allows; NULL when the queue has no limits
  flow_keyed boolean;     -- flow: the queue has a per-key rate limit
  flow_refused bigint[] := '{}'; -- flow: candidates the rate limit refused, not looked at again
BEGIN
  SELECT * INTO q FROM {{schema}}.queues WHERE name = claim.queue;
  IF NOT FOUND THEN
    q := {{schema}}.require_queue(claim.queue); -- raises the right error
  END IF;
  IF max IS NULL OR max NOT BETWEEN 1 AND 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('max must be from 1 to 1000, got %s', max);
  END IF;
  IF visibility_timeout <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'visibility timeout must be positive';
  END IF;
  lease_until := claim_time + coalesce(visibility_timeout, q.visibility_timeout);
  lease_ms := floor(extract(epoch FROM lease_until) * 1000);
  SELECT g.allowance, g.keyed INTO flow_allowance, flow_keyed FROM {{schema}}.flow_gate(claim.queue, max) g; -- flow:
  IF flow_allowance = 0 THEN RETURN; END IF; -- flow: paused, or the queue's rate window full
  -- Exhausted messages (see below) take places in the LIMIT; without another round a claim could
  -- return nothing while ready messages wait behind them, and a consumer would go idle. Each
  -- round moves at least one exhausted message away, and the rounds are capped so one call's
  -- work stays bounded.
  FOR round IN 1..10 LOOP
    -- 1. Select and lock the candidates. The locked ids are collected into an array before
    -- anything is updated, so the planner cannot re-run the locking subquery and claim more than
    -- max rows (seen in other queues). Exhausted means the lease of the last allowed attempt ran
    -- out (the lease is still set). A message given back without a verdict (release, lease NULL)
    -- gets its delivery even past maxAttempts: a worker stopping on a message's last attempt must
    -- not kill a healthy message.
    SELECT array_agg(c.id ORDER BY c.priority DESC, c.available_at, c.id)
             FILTER (WHERE c.attempt < q.max_attempts OR c.lease IS NULL),
           array_agg(c.id) FILTER (WHERE (c.attempt < q.max_attempts OR c.lease IS NULL) AND c.group_key IS NOT NULL),
           array_agg(c.group_key) FILTER (WHERE (c.attempt < q.max_attempts OR c.lease IS NULL) AND c.group_key IS NOT NULL),
           array_agg(c.id) FILTER (WHERE c.attempt >= q.max_attempts AND c.lease IS NOT NULL)
    INTO candidates, grouped, grouped_keys, exhausted
    FROM (
      SELECT m.id, m.attempt, m.lease, m.priority, m.available_at, m.group_key FROM {{schema}}.messages m
      WHERE m.queue = claim.queue AND m.available_at <= now()
        -- A grouped message is a candidate when it is the oldest of its group here and its group
        -- is not held by another message (as this snapshot sees it; claim_groups decides on the
        -- newest row). So a claim takes at most one message per group.
        AND (m.group_key IS NULL OR (
          NOT EXISTS (SELECT 1 FROM {{schema}}.messages g
                      WHERE g.queue = m.queue AND g.group_key = m.group_key AND g.id < m.id)
          AND NOT EXISTS (SELECT 1 FROM {{schema}}.group_leases l
                          WHERE l.queue = m.queue AND l.group_key = m.group_key AND l.message_id <> m.id AND l.expires_at > now())))
        -- flow: a rate key whose window is full waits, unlocked and untouched.
        AND (NOT flow_keyed OR NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = m.queue
               AND w.rate_key = m.headers ->> 'postbox-rate-key' AND w.free_at > now()) AND m.id <> ALL (flow_refused))
      ORDER BY m.priority DESC, m.available_at, m.id
      LIMIT coalesce(flow_allowance, max) - taken -- flow: flow_allowance <= max
      FOR UPDATE OF m SKIP LOCKED
    ) c;
    -- 2. Grouped candidates need their group's lease.
    picked := candidates;
    IF flow_allowance IS NOT NULL AND cardinality(candidates) > 0 THEN -- flow: before claim_groups
      picked := {{schema}}.flow_take(claim.queue, candidates, token);
      IF cardinality(picked) < cardinality(candidates) THEN
        flow_refused := flow_refused || ARRAY(SELECT c FROM unnest(candidates) AS c WHERE c <> ALL (picked));
        grouped_keys := ARRAY(SELECT g.k FROM unnest(grouped, grouped_keys) AS g(id, k) WHERE g.id = ANY (picked));
        grouped := ARRAY(SELECT g.id FROM unnest(grouped) AS g(id) WHERE g.id = ANY (picked));
        IF cardinality(grouped) = 0 THEN grouped := NULL; END IF;
      END IF;
    END IF;
    IF grouped IS NOT NULL THEN
      granted := {{schema}}.claim_groups(claim.queue, grouped, grouped_keys, lease_until);
      IF cardinality(granted) < cardinality(grouped) THEN
        -- A group another claim took meanwhile: its message stays where it is (its row lock ends with this statement).
        picked := ARRAY(SELECT p.id FROM unnest(picked) WITH ORDINALITY AS p(id, ord) -- flow: picked, not candidates
                        WHERE p.id <> ALL (grouped) OR p.id = ANY (granted) ORDER BY p.ord);
      END IF;
    END IF;
    -- 3. Lease the picked rows. Claimed rows get a lease expiry in the future, so a later round
    -- does not see them again. 0007: the UPDATE joins the ids with their place in the claim order
    -- and returns only what a delivery needs, in that order.
    IF cardinality(picked) > 0 THEN
      RETURN QUERY
      WITH claimed AS (
        UPDATE {{schema}}.messages m
        SET attempt = m.attempt + 1, lease = token, claimed_at = claim_time, available_at = lease_until
        FROM unnest(picked) WITH ORDINALITY AS p(id, ord)
        WHERE m.id = p.id
        RETURNING p.ord, m.id, m.priority, m.attempt, m.encoding, m.payload, m.body, m.headers, m.dedupe_key, m.group_key,
          m.last_error, m.routing_key, m.enqueued_at
      )
      SELECT c.id, c.priority, c.attempt, token, c.encoding, c.payload, c.body, c.headers, c.dedupe_key, c.group_key,
        c.last_error, c.routing_key, floor(extract(epoch FROM c.enqueued_at) * 1000)::float8, claim_ms, lease_ms
      FROM claimed c ORDER BY c.ord;
      taken := taken + cardinality(picked);
    END IF;
    -- flow: the allowance is used up; or keys refused some candidates, so look again past them.
    EXIT WHEN taken >= flow_allowance;
    CONTINUE WHEN exhausted IS NULL AND flow_keyed AND cardinality(flow_refused) > 0 AND taken < max AND round < 4;
    EXIT WHEN exhausted IS NULL;
    -- 4. A message whose last attempt's lease ran out (its consumer died) is dead, not
    -- redelivered. Its group lease has expired with it; the row goes too, unless a claim holds it
    -- right now.
    DELETE FROM {{schema}}.group_leases l
    WHERE (l.queue, l.group_key) IN (
      SELECT x.queue, x.group_key FROM {{schema}}.group_leases x JOIN {{schema}}.messages m
        ON m.queue = x.queue AND m.group_key = x.group_key AND m.id = x.message_id
      WHERE m.id = ANY (exhausted)
      FOR UPDATE OF x SKIP LOCKED);
    PERFORM {{schema}}.dead_letter(exhausted, 'lease expired on the last attempt');
    EXIT WHEN taken >= max;
  END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
