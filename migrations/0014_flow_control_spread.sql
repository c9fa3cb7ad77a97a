-- postbox 0014: flow control whose limits are far from reached costs a claim little (issue 15's
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
-- still write nothing here.
--
-- rateLimit. 0008 decided the queue's rate under a lock of its queue_flow row, held to the
-- claim's commit, so claims decided one at a time (0.47-0.59x). Now the queue's window is up to
-- 16 rows of rate_windows (rate_key '', shard 0..15), each allowing its share of the limit (a
-- limit of 10: 10 rows of 1): no window of `per` holds more than a share in a row, so none holds
-- more than the limit in all. A claim locks shards with room (SKIP LOCKED, from a place that
-- depends on its connection) until they have room for its candidates, and waits for one only when
-- every shard with room is held and it holds none. A change of limit spreads the claims of the
-- old rows over the new ones, newest first, each up to its share, so they stay counted.
-- Also: rate_windows_record is PL/pgSQL now (a SQL function's plan was made again at every call:
-- 1.4 ms of a claim of 100), and the gate no longer sums the window's room (it asks whether a
-- shard has any).
--
-- keyRateLimit. 0008 kept one window row per key, locked in key order from the decision to the
-- commit, so 10 claimers sharing 100 keys decided one at a time (0.09-0.16x). Now a key's window
-- is shards too (rate_key, shard 0..least(limit, 16) - 1), and a claim has its own shard of every
-- key: the first free seat of the queue (a transaction-level advisory lock per shard, tried
-- without waiting, from its backend pid modulo the shards); only for keys whose candidates want
-- more than that shard allows does it also lock the key's other shards with room that no claim
-- holds (SKIP LOCKED). The scan skips a key when all its rows are full. Lock order in every
-- claim: the queue's shards, then the keys' own shards (bytewise, waiting), then other shards
-- and slot rows (never waiting). rate_windows_record writes a row that stays far from its limit
-- by slicing its ordered arrays (sorting every row's entries cost 8.6 ms a claim of 100 keys,
-- 1.8 ms now), finding rows by key and writing them by ctid.
--
-- Measured (docs/performance.md, "Flow control": bench ratios in the same run on a shared 2-core
-- machine, medians of 7 rounds; callgrind instructions per message, one connection): maxInFlight
-- 0.90x (1.16x the instructions), rateLimit 0.91-0.92x (1.08x), keyRateLimit over 100 keys 0.40-0.42x
-- (3.2x: a claim still writes a row per key it takes). A queue without limits: 142.3 thousand
-- instructions per message before, 142.6 after. 1,000 keys at 2/s used 0.74-1.00 of the allowed
-- rate, moving with the machine's load as before.

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

-- The queue-wide rate window becomes up to 16 rows (rate_key '', shard 0..15), each allowing its
-- share of the limit; a per-key window stays one row (shard 0).
ALTER TABLE {{schema}}.rate_windows ADD COLUMN shard integer NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.rate_windows DROP CONSTRAINT rate_windows_pkey,
  ADD CONSTRAINT rate_windows_pkey PRIMARY KEY (queue, rate_key, shard);

-- The share of a queue-wide rate limit that its shard `shard` allows: the limit split over
-- least(limit, 16) shards, the first ones taking one more when it does not divide. (No pinned
-- search_path: it names no object, and without one the planner inlines it.)
CREATE FUNCTION {{schema}}.rate_shard_limit(lim integer, shard integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT lim / least(lim, 16) + CASE WHEN shard < lim % least(lim, 16) THEN 1 ELSE 0 END
$$;

DROP FUNCTION {{schema}}.rate_windows_record(text, text[], integer[], integer, interval, timestamptz);

-- Records n[i] more claims at `at` in the window rows (keys[i], shards[i]) of a queue, whose
-- limits are lims[i] (rows that exist, locked by the caller), in one statement: entries older
-- than two periods (stamp <= at - 2 per) are dropped, and free_at is set to the first moment the
-- window has room again (when it holds S >= lim claims, the (S - lim + 1)th oldest must leave
-- it), or '-infinity'. Claims are stamped at `at` rounded UP to a 20th of `per`, and claims of
-- one stamp share an entry: a window holds at most 41 entries however many claims write it. A
-- later stamp keeps a claim in the window a little longer, never shorter: the limit stays exact
-- on the safe side. (0014, from 0008: the shard and a limit per row; PL/pgSQL, whose plan is kept, where
-- a SQL function's was made again at every call.)
CREATE FUNCTION {{schema}}.rate_windows_record(queue text, keys text[], shards integer[], n integer[], lims integer[], per interval,
  at timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  stamp timestamptz := to_timestamp(ceil(extract(epoch FROM at) * 20 / extract(epoch FROM per)) * extract(epoch FROM per) / 20);
  written integer;
  written_keys text[];
  written_shards integer[];
BEGIN
  -- Row by row (a lateral subquery per row): one sort of all the rows' entries together, as
  -- 0008 did, cost more than the writes. Each row is found by its key (`cur`, read on this
  -- statement's snapshot: the caller holds its lock, so it is the row being written) and written
  -- by its ctid (joined on the key columns, the planner scanned every row of the queue, dead
  -- versions too). Stamps are kept in order, so a row far from its limit whose claims come at
  -- or after its last stamp (nearly all) is written without a sort: the entries older than two
  -- periods cut off the front, the claims added to the last entry or after it, free_at
  -- '-infinity'. The others take the whole computation, in a second statement. (All rows through
  -- the whole computation: 8.6 ms a claim of 100 keys of 30 entries.)
  WITH fast AS (
  UPDATE {{schema}}.rate_windows w
  SET stamps = CASE WHEN g.n = 0 OR k.last_stamp = stamp THEN k.kept_stamps ELSE k.kept_stamps || stamp END,
      counts = CASE WHEN g.n = 0 THEN k.kept_counts
                    WHEN k.last_stamp = stamp THEN k.kept_counts[1:cardinality(k.kept_counts) - 1] || (k.kept_counts[cardinality(k.kept_counts)] + g.n)
                    ELSE k.kept_counts || g.n END,
      free_at = '-infinity'
  FROM unnest(keys, shards, n, lims) AS g(rate_key, shard, n, lim)
  CROSS JOIN LATERAL (
    SELECT c.ctid AS row_id, c.stamps, c.counts FROM {{schema}}.rate_windows c
    WHERE c.queue = rate_windows_record.queue AND c.rate_key = g.rate_key AND c.shard = g.shard
  ) cur
  CROSS JOIN LATERAL (
    SELECT cur.stamps[coalesce(min(o.i) FILTER (WHERE o.s > at - 2 * per), cardinality(cur.stamps) + 1):] AS kept_stamps,
           cur.counts[coalesce(min(o.i) FILTER (WHERE o.s > at - 2 * per), cardinality(cur.stamps) + 1):] AS kept_counts,
           cur.stamps[cardinality(cur.stamps)] AS last_stamp,
           coalesce(sum(o.c) FILTER (WHERE o.s > at - per), 0) AS total
    FROM unnest(cur.stamps, cur.counts) WITH ORDINALITY AS o(s, c, i)
  ) k
  WHERE w.ctid = cur.row_id AND (g.n = 0 OR k.last_stamp IS NULL OR k.last_stamp <= stamp) AND k.total + g.n < g.lim
  RETURNING w.rate_key, w.shard
  )
  SELECT count(*), array_agg(f.rate_key), array_agg(f.shard) INTO written, written_keys, written_shards FROM fast f;
  IF written < cardinality(keys) THEN
    UPDATE {{schema}}.rate_windows w
    SET stamps = x.stamps, counts = x.counts, free_at = x.free_at
    FROM unnest(keys, shards, n, lims) AS g(rate_key, shard, n, lim)
    CROSS JOIN LATERAL (
      SELECT c.ctid AS row_id, c.stamps, c.counts FROM {{schema}}.rate_windows c
      WHERE c.queue = rate_windows_record.queue AND c.rate_key = g.rate_key AND c.shard = g.shard
    ) cur
    CROSS JOIN LATERAL (
      SELECT coalesce(array_agg(e.s ORDER BY e.s), '{}') AS stamps, coalesce(array_agg(e.c ORDER BY e.s), '{}') AS counts,
             coalesce(min(e.s + per) FILTER (WHERE e.s > at - per AND e.total >= g.lim AND e.cum >= e.total - g.lim + 1), '-infinity') AS free_at
      FROM (
        SELECT e.s, e.c,
               sum(e.c) FILTER (WHERE e.s > at - per) OVER (ORDER BY e.s ROWS UNBOUNDED PRECEDING) AS cum,
               sum(e.c) FILTER (WHERE e.s > at - per) OVER () AS total
        FROM (
          SELECT u.s, sum(u.c)::integer AS c FROM (
            SELECT o.s, o.c FROM unnest(cur.stamps, cur.counts) AS o(s, c) WHERE o.s > at - 2 * per AND o.c > 0
            UNION ALL
            SELECT stamp, g.n WHERE g.n > 0
          ) u GROUP BY u.s
        ) e
      ) e
    ) x
    WHERE w.ctid = cur.row_id
      AND NOT EXISTS (SELECT 1 FROM unnest(written_keys, written_shards) AS d(rate_key, shard) WHERE d.rate_key = g.rate_key AND d.shard = g.shard);
  END IF;
END $$;

-- Makes the rows of a rate window (a key's, or the queue's: rate key '') for a limit (none for
-- NULL), keeping the claims its old rows hold (the last two periods): newest first, each new row
-- takes them up to its share of the limit, the last one what is left over. Since the oldest
-- claims leave a window first, the rows together allow, at any later time, what the limit leaves
-- (0008 kept one row, which a change of limits kept too). Called with the queue_flow row locked.
CREATE FUNCTION {{schema}}.rate_shards_make(queue text, rate_key text, lim integer, per interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  stamps timestamptz[];
  counts integer[];
BEGIN
  WITH old AS (
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key = rate_key RETURNING w.stamps, w.counts
  )
  SELECT array_agg(e.s ORDER BY e.s DESC), array_agg(e.c ORDER BY e.s DESC) INTO stamps, counts
  FROM (SELECT x.s, sum(x.c)::integer AS c FROM old o CROSS JOIN LATERAL unnest(o.stamps, o.counts) AS x(s, c)
        WHERE x.s > now() - 2 * per AND x.c > 0 GROUP BY x.s) e;
  IF lim IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO rate_windows (queue, rate_key, shard, stamps, counts)
  SELECT queue, rate_key, r.shard,
         coalesce((SELECT array_agg(e.s ORDER BY e.s) FROM (
                     SELECT x.s, least(x.hi, r.hi) - greatest(x.hi - x.c, r.lo) AS c
                     FROM (SELECT u.s, u.c, sum(u.c) OVER (ORDER BY u.ord) AS hi
                           FROM unnest(stamps, counts) WITH ORDINALITY AS u(s, c, ord)) x) e WHERE e.c > 0), '{}'),
         coalesce((SELECT array_agg(e.c::integer ORDER BY e.s) FROM (
                     SELECT x.s, least(x.hi, r.hi) - greatest(x.hi - x.c, r.lo) AS c
                     FROM (SELECT u.s, u.c, sum(u.c) OVER (ORDER BY u.ord) AS hi
                           FROM unnest(stamps, counts) WITH ORDINALITY AS u(s, c, ord)) x) e WHERE e.c > 0), '{}')
  FROM (
    -- Shard i takes the claims numbered lo to hi (newest first); the last takes all the rest.
    SELECT g.shard, sum(rate_shard_limit(lim, g.shard)) OVER (ORDER BY g.shard) - rate_shard_limit(lim, g.shard) AS lo,
           CASE WHEN g.shard = least(lim, 16) - 1 THEN 2147483647
                ELSE sum(rate_shard_limit(lim, g.shard)) OVER (ORDER BY g.shard) END AS hi
    FROM generate_series(0, least(lim, 16) - 1) AS g(shard)
  ) r;
  -- free_at of each row, from what it holds.
  PERFORM rate_windows_record(queue, array_fill(rate_key, ARRAY[least(lim, 16)]), ARRAY(SELECT generate_series(0, least(lim, 16) - 1)),
    array_fill(0, ARRAY[least(lim, 16)]), ARRAY(SELECT rate_shard_limit(lim, g) FROM generate_series(0, least(lim, 16) - 1) AS g ORDER BY g),
    per, now());
END $$;

SELECT {{schema}}.rate_shards_make(f.queue, '', f.rate_limit, f.rate_per) FROM {{schema}}.queue_flow f WHERE f.rate_limit IS NOT NULL;
SELECT {{schema}}.rate_shards_make(f.queue, w.rate_key, f.key_rate_limit, f.key_rate_per)
FROM {{schema}}.queue_flow f JOIN {{schema}}.rate_windows w ON w.queue = f.queue AND w.rate_key <> ''
WHERE f.key_rate_limit IS NOT NULL;

-- The claim's gate, before it looks for messages (see 0008's header); it takes no lock. allowance
-- NULL: the queue has nothing to enforce. 0: paused, or no shard of the queue's rate window has
-- room as this snapshot sees it. Otherwise an upper bound for the scan's LIMIT (the batch, or the
-- cap); flow_take decides exactly. keyed: the queue has a per-key rate limit, so the scan skips throttled keys.
CREATE OR REPLACE FUNCTION {{schema}}.flow_gate(queue text, max integer, OUT allowance integer, OUT keyed boolean)
LANGUAGE plpgsql
AS $$
-- 0014 (from 0008): the queue's window is shards: none with room as this snapshot sees it, no claim.
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
  -- 0014: no shard with room, no claim (reading their rooms here cost a claim more than the rest
  -- of the gate: flow_take reads them under its locks).
  IF f.rate_limit IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w
                                              WHERE w.queue = flow_gate.queue AND w.rate_key = '' AND w.free_at <= now()) THEN
    allowance := 0;
  END IF;
  allowance := greatest(allowance, 0);
END $$;

CREATE OR REPLACE FUNCTION {{schema}}.flow_take(queue text, ids bigint[], token uuid)
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
-- 0014 (from 0008): maxInFlight by slot rows of several places each, the queue's rate by shards of
-- its window; the lines marked 0014.
DECLARE
  f {{schema}}.queue_flow;
  kept bigint[] := ids;
  keys text[];
  locked_keys text[];
  cap integer;
  slot_no integer;          -- 0014: the slot row being filled
  visited integer[] := '{}';
  places integer;
  room integer;
  live_ids bigint[];
  live_leases uuid[];
  given bigint[] := '{}';   -- 0014: the candidates given room so far, in claim order
  shard_no integer;         -- 0014: a shard of the queue's rate window
  shard_stamps timestamptz[];
  shard_counts integer[];
  shards integer[] := '{}'; -- 0014: the shards locked, and their room
  shard_rooms integer[] := '{}';
  key_shards integer;       -- 0014: the shards of each key's window, and this connection's
  own_shard integer;
  id_keys text[];           -- 0014: the rate key of each candidate
  locked_shards integer[];  -- 0014: the key rows locked (locked_keys, locked_shards) and their room
  locked_rooms integer[];
  short_keys text[];
  more_keys text[];
  more_shards integer[];
  more_rooms integer[];
BEGIN
  SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_take.queue;
  IF f.rate_limit IS NOT NULL THEN
    -- 0014: the queue's rate is decided per shard of its window, each allowing its share of the
    -- limit; a claim locks shards with room as its snapshot sees them (SKIP LOCKED, from a place
    -- that depends on its connection) until they have room for its candidates, and reads their
    -- room from their newest version, under the lock. When every shard with room is held by
    -- other claims, it waits for one (holding none, it cannot wait in a circle). It never waits
    -- for a second one.
    IF f.paused THEN
      RETURN '{}';
    END IF;
    cap := 0;
    FOR tries IN 1..16 LOOP
      SELECT w.shard, w.stamps, w.counts INTO shard_no, shard_stamps, shard_counts FROM {{schema}}.rate_windows w
      WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.shard <> ALL (shards) AND w.free_at <= now()
      ORDER BY (w.shard + pg_backend_pid()) % 16, w.shard
      LIMIT 1
      FOR NO KEY UPDATE SKIP LOCKED;
      IF NOT FOUND THEN
        EXIT WHEN cardinality(shards) > 0;
        SELECT w.shard, w.stamps, w.counts INTO shard_no, shard_stamps, shard_counts FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.free_at <= now()
        ORDER BY (w.shard + pg_backend_pid()) % 16, w.shard
        LIMIT 1
        FOR NO KEY UPDATE;
        EXIT WHEN NOT FOUND;
      END IF;
      -- rate_window_room, written out (a SQL function is planned at every call).
      SELECT greatest(0, CASE WHEN max(e.s) > now() + f.rate_per THEN 0
                              ELSE {{schema}}.rate_shard_limit(f.rate_limit, shard_no) - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.rate_per), 0) END)
      INTO room FROM unnest(shard_stamps, shard_counts) AS e(s, c);
      shards := shards || shard_no;
      shard_rooms := shard_rooms || room;
      cap := cap + room;
      EXIT WHEN cap >= cardinality(ids);
    END LOOP;
    IF cap <= 0 THEN
      RETURN '{}';
    END IF;
    IF cap < cardinality(ids) THEN
      kept := ids[1:cap];
    END IF;
  END IF;
  IF f.key_rate_limit IS NOT NULL THEN
    -- 0014: a key's window is up to 16 rows too (shard 0..least(limit, 16) - 1, each allowing its
    -- share of the key's limit), and a claim has its own shard of every key: the first of a seat
    -- per shard (a transaction-level advisory lock, tried without waiting) that no other claim
    -- of the queue holds, tried from its backend pid modulo the shards, so a connection mostly
    -- keeps its seat. Claims far from a key's limit then do not meet on one row. (By pid alone,
    -- 10 connections over 16 shards shared some: 0.29x.) A seat only spreads the claims; the row
    -- locks decide. Candidates' keys are read once.
    key_shards := least(f.key_rate_limit, 16);
    own_shard := pg_backend_pid() % key_shards;
    FOR seat IN 0..key_shards - 1 LOOP
      IF pg_try_advisory_xact_lock({{schema}}.wake_key('rate-seat/' || flow_take.queue || '/' || ((own_shard + seat) % key_shards))) THEN
        own_shard := (own_shard + seat) % key_shards;
        EXIT;
      END IF;
    END LOOP;
    SELECT array_agg(m.headers ->> 'postbox-rate-key' ORDER BY p.ord) INTO id_keys
    FROM unnest(ids) WITH ORDINALITY AS p(id, ord) JOIN {{schema}}.messages m ON m.id = p.id;
    SELECT array_agg(DISTINCT k COLLATE "C") INTO keys FROM unnest(id_keys) AS k WHERE k IS NOT NULL;
    IF keys IS NOT NULL THEN
      -- A key seen for the first time (or whose rows went idle and were dropped) gets all its
      -- rows. Inserted in one order (bytewise), so two claims inserting the same new keys wait
      -- for each other one way only.
      INSERT INTO {{schema}}.rate_windows (queue, rate_key, shard)
      SELECT flow_take.queue, k, g FROM unnest(keys) AS k CROSS JOIN generate_series(0, key_shards - 1) AS g
      -- (A scalar look-up per key: as NOT EXISTS, the planner compared every key with every row of the shard.)
      WHERE (SELECT w.shard FROM {{schema}}.rate_windows w WHERE w.queue = flow_take.queue AND w.rate_key = k AND w.shard = own_shard) IS NULL
      ORDER BY k COLLATE "C", g
      ON CONFLICT ON CONSTRAINT rate_windows_pkey DO NOTHING;
      -- The connection's own shard of each key, waiting for it, keys in one order (bytewise). Its
      -- room is read from its newest version, under the lock.
      WITH locked AS (
        SELECT w.rate_key, w.shard, w.stamps, w.counts FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = ANY (keys) AND w.shard = own_shard
        ORDER BY w.rate_key COLLATE "C"
        FOR NO KEY UPDATE
      )
      SELECT array_agg(l.rate_key), array_agg(l.shard), array_agg(l.room) INTO locked_keys, locked_shards, locked_rooms
      FROM (SELECT l.rate_key, l.shard,
                   -- rate_window_room, written out: a function call per key cost more than the rest of this.
                   (SELECT greatest(0, CASE WHEN max(e.s) > now() + f.key_rate_per THEN 0
                                            ELSE {{schema}}.rate_shard_limit(f.key_rate_limit, l.shard)
                                                 - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.key_rate_per), 0) END)
                    FROM unnest(l.stamps, l.counts) AS e(s, c))::integer AS room
            FROM locked l) l;
      -- Keys whose candidates want more than the own shard allows: their other shards with room,
      -- those no other claim holds (SKIP LOCKED: holding rows now, this claim waits for no more).
      SELECT array_agg(n.k) INTO short_keys
      FROM (SELECT k, count(*) AS wanted FROM unnest(id_keys) AS k WHERE k IS NOT NULL GROUP BY k) n
      JOIN unnest(locked_keys, locked_rooms) AS r(k, room) ON r.k = n.k
      WHERE n.wanted > r.room;
      IF short_keys IS NOT NULL AND key_shards > 1 THEN
        WITH more AS (
          SELECT w.rate_key, w.shard, w.stamps, w.counts FROM {{schema}}.rate_windows w
          WHERE w.queue = flow_take.queue AND w.rate_key = ANY (short_keys) AND w.shard <> own_shard AND w.free_at <= now()
          ORDER BY w.rate_key COLLATE "C", w.shard
          FOR NO KEY UPDATE SKIP LOCKED
        )
        SELECT array_agg(l.rate_key), array_agg(l.shard), array_agg(l.room) INTO more_keys, more_shards, more_rooms
        FROM (SELECT l.rate_key, l.shard,
                     (SELECT greatest(0, CASE WHEN max(e.s) > now() + f.key_rate_per THEN 0
                                              ELSE {{schema}}.rate_shard_limit(f.key_rate_limit, l.shard)
                                                   - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.key_rate_per), 0) END)
                      FROM unnest(l.stamps, l.counts) AS e(s, c))::integer AS room
              FROM more l) l;
        IF more_keys IS NOT NULL THEN
          locked_keys := locked_keys || more_keys;
          locked_shards := locked_shards || more_shards;
          locked_rooms := locked_rooms || more_rooms;
        END IF;
      END IF;
      -- Per key, the first candidates in claim order take its room (all its locked shards); then
      -- the queue-wide cap takes the first of those.
      WITH room AS (
        SELECT r.k, sum(r.room) AS room FROM unnest(locked_keys, locked_rooms) AS r(k, room) GROUP BY r.k
      ), ranked AS (
        SELECT p.id, p.ord, p.k, row_number() OVER (PARTITION BY p.k ORDER BY p.ord) AS n
        FROM unnest(ids, id_keys) WITH ORDINALITY AS p(id, k, ord)
      )
      SELECT coalesce(array_agg(c.id ORDER BY c.ord), '{}') INTO kept FROM (
        SELECT r.id, r.ord FROM ranked r LEFT JOIN room ON room.k = r.k
        WHERE r.k IS NULL OR r.n <= room.room
        ORDER BY r.ord LIMIT coalesce(cap, cardinality(ids))) c;
    ELSE
      kept := ids[1:coalesce(cap, cardinality(ids))];
    END IF;
  END IF;
  IF f.max_in_flight IS NOT NULL AND cardinality(kept) > 0 THEN
    -- 0014: room in the queue's slot rows (see the migration's header), one row at a time until
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
    -- Every locked row is written again, with 0 claims when it had no room: that refreshes
    -- free_at, so the next scans skip it. 0014: a key's claims go into its locked shards, each up
    -- to its room, in the order they were locked (its own shard first).
    PERFORM {{schema}}.rate_windows_record(flow_take.queue, x.keys, x.shards, x.n, x.lims, f.key_rate_per, now())
    FROM (SELECT array_agg(r.k ORDER BY r.ord) AS keys, array_agg(r.shard ORDER BY r.ord) AS shards,
                 array_agg(greatest(0, least(r.room, coalesce(c.n, 0) - (r.before - r.room)))::integer ORDER BY r.ord) AS n,
                 array_agg({{schema}}.rate_shard_limit(f.key_rate_limit, r.shard) ORDER BY r.ord) AS lims
          FROM (SELECT u.k, u.shard, u.room, u.ord, sum(u.room) OVER (PARTITION BY u.k ORDER BY u.ord) AS before
                FROM unnest(locked_keys, locked_shards, locked_rooms) WITH ORDINALITY AS u(k, shard, room, ord)) r
          LEFT JOIN (SELECT p.k, count(*) AS n FROM unnest(ids, id_keys) AS p(id, k) WHERE p.id = ANY (kept) GROUP BY p.k) c
            ON c.k = r.k) x;
    -- Now and then, keys whose rows are all idle go: they hold nothing a claim needs. (Not the
    -- keys of this claim: one inserted just now is empty until it is recorded.) A key goes
    -- whole, or not at all: its rows are locked, skipping those a claim holds, and it goes when
    -- all of them were.
    IF random() < 0.01 THEN
      WITH idle AS (
        SELECT x.rate_key FROM {{schema}}.rate_windows x
        -- A minute's margin: a claim whose transaction started that much earlier than this one
        -- would find the rows gone and count nothing before it.
        WHERE x.queue = flow_take.queue AND x.rate_key <> '' AND x.rate_key <> ALL (locked_keys) AND x.free_at < now() - interval '1 minute'
        AND NOT EXISTS (SELECT 1 FROM unnest(x.stamps) s WHERE s > now() - 2 * f.key_rate_per - interval '1 minute')
        LIMIT 4000 FOR UPDATE SKIP LOCKED
      ), whole AS (
        SELECT i.rate_key FROM idle i GROUP BY i.rate_key
        HAVING count(*) = (SELECT count(*) FROM {{schema}}.rate_windows y WHERE y.queue = flow_take.queue AND y.rate_key = i.rate_key)
      )
      DELETE FROM {{schema}}.rate_windows w USING whole
      WHERE w.queue = flow_take.queue AND w.rate_key = whole.rate_key;
    END IF;
  END IF;
  IF cardinality(kept) = 0 THEN
    RETURN kept;
  END IF;
  IF f.rate_limit IS NOT NULL THEN
    -- 0014: the claims go into the locked shards, each up to its room, in the order they were locked.
    PERFORM {{schema}}.rate_windows_record(flow_take.queue, array_fill(''::text, ARRAY[cardinality(x.shards)]), x.shards, x.n, x.lims,
      f.rate_per, now())
    FROM (SELECT array_agg(r.shard ORDER BY r.ord) AS shards, array_agg(r.n ORDER BY r.ord) AS n,
                 array_agg({{schema}}.rate_shard_limit(f.rate_limit, r.shard) ORDER BY r.ord) AS lims
          FROM (SELECT u.shard, u.ord, least(u.room, cardinality(kept) - (sum(u.room) OVER (ORDER BY u.ord) - u.room))::integer AS n
                FROM unnest(shards, shard_rooms) WITH ORDINALITY AS u(shard, room, ord)) r
          WHERE r.n > 0) x
    WHERE x.shards IS NOT NULL;
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
-- 0014 (from 0008): a new cap makes the slot rows again (flight_slots_make), a new rate the shards
-- of the queue's window, a new per-key rate those of every key's (rate_shards_make).
DECLARE
  had_max integer;
  had_rate integer;
  had_per interval;
  had_key_rate integer;
  had_key_per interval;
  key text;
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
  SELECT f.max_in_flight, f.rate_limit, f.rate_per, f.key_rate_limit, f.key_rate_per INTO had_max, had_rate, had_per, had_key_rate, had_key_per
  FROM queue_flow f WHERE f.queue = queue FOR NO KEY UPDATE;
  INSERT INTO queue_flow AS f (queue, max_in_flight, rate_limit, rate_per, key_rate_limit, key_rate_per)
  VALUES (queue, max_in_flight, rate_limit, rate_per, key_rate_limit, key_rate_per)
  ON CONFLICT ON CONSTRAINT queue_flow_pkey DO UPDATE SET max_in_flight = excluded.max_in_flight, rate_limit = excluded.rate_limit,
    rate_per = excluded.rate_per, key_rate_limit = excluded.key_rate_limit, key_rate_per = excluded.key_rate_per, updated_at = now();
  -- 0014: the slot rows are made again when the cap changes, holding what is in flight now.
  IF max_in_flight IS DISTINCT FROM had_max THEN
    PERFORM flight_slots_make(queue, max_in_flight);
  END IF;
  IF rate_limit IS DISTINCT FROM had_rate OR rate_per IS DISTINCT FROM had_per THEN
    PERFORM rate_shards_make(queue, '', rate_limit, coalesce(rate_per, had_per, interval '0'));
  END IF;
  IF key_rate_limit IS NULL THEN
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key <> '';
  ELSIF key_rate_limit IS DISTINCT FROM had_key_rate OR key_rate_per IS DISTINCT FROM had_key_per THEN
    -- Keys in the order claims lock them (bytewise), so that this and a claim never wait for
    -- each other in a circle.
    FOR key IN SELECT DISTINCT w.rate_key COLLATE "C" FROM rate_windows w WHERE w.queue = queue AND w.rate_key <> '' ORDER BY 1 LOOP
      PERFORM rate_shards_make(queue, key, key_rate_limit, key_rate_per);
    END LOOP;
  END IF;
END $$;

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
-- 0014 (from 0008): a key's window is several rows; its messages wait when all of them are full.
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
        -- flow: a rate key whose window is full waits, unlocked and untouched. 0014: full when
        -- every row of its window is; a row with room is usually the first one looked at (the
        -- smallest of the rows' free_at read all 16 rows of every candidate's key).
        AND (NOT flow_keyed OR (EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = m.queue
               AND w.rate_key = m.headers ->> 'postbox-rate-key' AND w.free_at <= now())
             OR NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = m.queue
               AND w.rate_key = m.headers ->> 'postbox-rate-key')) AND m.id <> ALL (flow_refused))
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
