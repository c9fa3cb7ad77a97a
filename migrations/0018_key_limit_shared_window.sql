-- postbox 0018: a key limit far from reached costs a claim little (issue 15's target, 0.9x of no
-- limits; docs/performance.md, "Flow control"), and a claim that holds window rows never waits.
--
-- The key limit's shared window. With 0017 a claim of a keyRateLimit queue still looked at every
-- key of its candidates (their messages again, a budget of about a hundred keys, each candidate's
-- key rows in the scan): about 1.3 ms a claim of 100 over 100 keys, 0.55-0.60x of no limits. Now
-- a sixteenth of the limit L (L / 16, rounded down; none below 16) is kept in a window shared by
-- every key: up to sixteen rows of rate key '' with shards -16 to -1 (the queue's own rate keeps
-- shards 0 to 15), each allowing its share, in which a claim counts one number: the most
-- candidates it takes of any one key. So in any period the claims counted there gave no key more
-- than L / 16 between them, whatever the keys, and a key's own rows now allow L - L / 16: no key
-- passes L. A claim tries the shared window first (its budget, or a row no other claim holds,
-- borrowing ahead as 0017 does); when neither has room, its keys' rows decide as before. A key
-- at its rows' limit still gets claims through the shared window while that has room; with every
-- key busy the rows alone allow each 15/16 of its limit. While a row of the shared window has room
-- (as the claim's gate sees it), the scan does not look up each candidate's key rows; and the
-- candidates' keys come from the scan (flow_take reads no message).
--
-- A queue that had a key limit: its keys' rows are made again for L - L / 16, and its shared
-- window starts full for one period, since the rows may hold up to L claims counted before.
--
-- Waiting. A claim skips the key rows another claim holds (0017 waited for them, in key order, in
-- a claim's first round; its candidates of those keys now wait for a next claim). What is left:
-- a claim that holds no window row may wait for one shard of the queue's rate (it is waited for
-- only by claims in line for the same row, holding none either, so no circle passes through
-- it); and a claim inserting a new key's rows may wait for another inserting the same rows
-- further along one order (bytewise), or for one that wrote them, which waits for nothing more.
-- So no circle of waits can form.
-- (0017 left one deadlock, seen once under CI's load, cause not found; of the waits it needed,
-- this leaves none to a claim holding rows but the ordered inserts.)
--
-- Budgets are 32 claims for each claimed (8 before): flow_take alone, one connection, a rateLimit
-- claim 105 -> 65 us, a keyRateLimit claim by its keys' rows 1,340 -> 930 us
-- (bench/diagnose/flow-calls.ts). What is borrowed and not spent counts all the same; a window
-- more than half full lends nothing, so near a limit claims go row by row as before.

-- Three functions are made again below (new arguments): the roles that may execute them now
-- (postbox roles, or grants of your own) may execute the new ones, so that an upgrade does not
-- lock out a consumer whose roles were set up before it.
-- (Kept until then in a setting of this transaction: no temporary table, so no TEMP privilege needed.)
SELECT pg_catalog.set_config('postbox.migration_0018_grants', coalesce(pg_catalog.array_agg(DISTINCT
         pg_catalog.format('GRANT EXECUTE ON FUNCTION %s.%I TO %s', '{{schema}}', p.proname, a.grantee::regrole))::text, '{}'), true)
FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
WHERE p.pronamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = '{{schema_name}}')
  AND p.proname IN ('flow_gate', 'flow_take', 'rate_shards_make')
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;

DROP FUNCTION {{schema}}.rate_shards_make(text, text, integer, interval);

CREATE FUNCTION {{schema}}.rate_shards_make(queue text, rate_key text, lim integer, per interval, first_shard integer DEFAULT 0)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
-- 0018 (from 0014): the rows are shards first_shard and on: 0 for a key's rows and the queue's rate,
-- -16 for the key limit's shared window (rate key '', beside the queue's rate: a row is one or the other by its sign).
DECLARE
  stamps timestamptz[];
  counts integer[];
BEGIN
  WITH old AS (
    DELETE FROM rate_windows w WHERE w.queue = queue AND w.rate_key = rate_key AND (w.shard < 0) = (first_shard < 0) RETURNING w.stamps, w.counts
  )
  SELECT array_agg(e.s ORDER BY e.s DESC), array_agg(e.c ORDER BY e.s DESC) INTO stamps, counts
  FROM (SELECT x.s, sum(x.c)::integer AS c FROM old o CROSS JOIN LATERAL unnest(o.stamps, o.counts) AS x(s, c)
        WHERE x.s > now() - 2 * per AND x.c > 0 GROUP BY x.s) e;
  IF lim IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO rate_windows (queue, rate_key, shard, stamps, counts)
  SELECT queue, rate_key, first_shard + r.shard,
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
  PERFORM rate_windows_record(queue, array_fill(rate_key, ARRAY[least(lim, 16)]), ARRAY(SELECT first_shard + generate_series(0, least(lim, 16) - 1)),
    array_fill(0, ARRAY[least(lim, 16)]), ARRAY(SELECT rate_shard_limit(lim, g) FROM generate_series(0, least(lim, 16) - 1) AS g ORDER BY g),
    per, now());
END $$;


CREATE OR REPLACE FUNCTION {{schema}}.set_flow_limits(queue text, max_in_flight integer DEFAULT NULL, rate_limit integer DEFAULT NULL,
  rate_per interval DEFAULT NULL, key_rate_limit integer DEFAULT NULL, key_rate_per interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
-- 0018 (from 0014): a new per-key rate also makes the rows of its shared window, and a key's rows
-- allow the limit less the shared window's (see the migration's header).
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
    DELETE FROM rate_windows w WHERE w.queue = queue AND (w.rate_key <> '' OR w.shard < 0);
  ELSIF key_rate_limit IS DISTINCT FROM had_key_rate OR key_rate_per IS DISTINCT FROM had_key_per THEN
    -- Keys in the order claims lock them (bytewise), so that this and a claim never wait for
    -- each other in a circle.
    FOR key IN SELECT DISTINCT w.rate_key COLLATE "C" FROM rate_windows w WHERE w.queue = queue AND w.rate_key <> '' ORDER BY 1 LOOP
      PERFORM rate_shards_make(queue, key, key_rate_limit - key_rate_limit / 16, key_rate_per);
    END LOOP;
    PERFORM rate_shards_make(queue, '', nullif(key_rate_limit / 16, 0), key_rate_per, -16);
  END IF;
END $$;


-- Queues that had a key limit: their keys' rows made again for what they now allow, and a shared
-- window that allows nothing for one period (see above).
SELECT {{schema}}.rate_shards_make(f.queue, k.rate_key, f.key_rate_limit - f.key_rate_limit / 16, f.key_rate_per)
FROM {{schema}}.queue_flow f
JOIN (SELECT DISTINCT w.queue, w.rate_key FROM {{schema}}.rate_windows w WHERE w.rate_key <> '') k ON k.queue = f.queue
WHERE f.key_rate_limit IS NOT NULL;
SELECT {{schema}}.rate_shards_make(f.queue, '', f.key_rate_limit / 16, f.key_rate_per, -16)
FROM {{schema}}.queue_flow f WHERE f.key_rate_limit >= 16;
UPDATE {{schema}}.rate_windows w
SET stamps = ARRAY[now()], counts = ARRAY[{{schema}}.rate_shard_limit(f.key_rate_limit / 16, w.shard + 16)], free_at = now() + f.key_rate_per
FROM {{schema}}.queue_flow f
WHERE w.queue = f.queue AND w.rate_key = '' AND w.shard < 0;

DROP FUNCTION {{schema}}.flow_gate(text, integer);

CREATE FUNCTION {{schema}}.flow_gate(queue text, max integer, OUT allowance integer, OUT keyed boolean, OUT key_filter boolean)
LANGUAGE plpgsql
AS $$
-- 0018 (from 0014): key_filter: the scan looks up each candidate's key rows only when no row of the
-- key limit's shared window has room (as this snapshot sees it): with one, any key's candidates may be
-- counted there, whatever their own rows hold (see the migration's header).
-- 0014 (from 0008): the queue's window is shards: none with room as this snapshot sees it, no claim.
DECLARE
  f {{schema}}.queue_flow;
BEGIN
  keyed := false;
  key_filter := false;
  SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_gate.queue;
  IF NOT FOUND OR NOT (f.paused OR f.max_in_flight IS NOT NULL OR f.rate_limit IS NOT NULL OR f.key_rate_limit IS NOT NULL) THEN
    RETURN;
  END IF;
  keyed := f.key_rate_limit IS NOT NULL;
  IF keyed THEN
    key_filter := NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w
                              WHERE w.queue = flow_gate.queue AND w.rate_key = '' AND w.shard < 0 AND w.free_at <= now());
  END IF;
  IF f.paused THEN
    allowance := 0;
    RETURN;
  END IF;
  allowance := least(max, f.max_in_flight);
  -- 0014: no shard with room, no claim (reading their rooms here cost a claim more than the rest
  -- of the gate: flow_take reads them under its locks).
  IF f.rate_limit IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w
                                              WHERE w.queue = flow_gate.queue AND w.rate_key = '' AND w.shard >= 0 AND w.free_at <= now()) THEN
    allowance := 0;
  END IF;
  allowance := greatest(allowance, 0);
END $$;

DROP FUNCTION {{schema}}.flow_take(text, bigint[], uuid);

CREATE FUNCTION {{schema}}.flow_take(queue text, ids bigint[], rate_keys text[], token uuid)
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
-- 0018 (from 0017): the candidates' rate keys come from the claim's scan; the key limit's shared
-- window (see the migration's header); key rows held by others are skipped, never waited for;
-- budgets of 32 claims for each claimed; the lines marked 0018.
-- 0017 (from 0014): budgets a connection holds in rate windows far from their limits, and
-- maxInFlight's slot rows checked only when they could be full; the lines marked 0017.
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
  held integer;             -- 0017: how many ids the slot row holds, and how many places the claim still wants
  wanted integer;
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
  budget_name text;         -- 0017: this connection's budgets for the queue (see the migration's header)
  holding boolean := false; -- 0017: this transaction took window rows of the queue before
  budget jsonb;
  gen text;
  rate_ahead interval;      -- 0017: how long a budget lasts (half the period, at most a second)
  key_ahead interval;
  keys_budget jsonb;
  epoch_now float8 := extract(epoch FROM now());
  rate_have integer := 0;   -- 0017: claims of the queue's rate the budget still allows
  rate_used integer := 0;
  rate_extra integer := 0;
  key_have jsonb := '{}';   -- 0017: the same per rate key, for the keys of this claim
  key_extra jsonb := '{}';
  key_used jsonb := '{}';
  key_wanted jsonb := '{}';
  shared_limit integer;     -- 0018: what the key limit's shared window allows, and what a key's own rows allow
  rows_limit integer;
  most integer := 0;        -- 0018: the most candidates of one key in this claim: what it costs the shared window
  shared boolean := false;  -- 0018: the claim's keys were counted in the shared window (or there were none to count)
  shared_no integer;
  shared_lim integer;
  shared_room integer;
  shared_have integer := 0;
  shared_used integer := 0;
  shared_extra integer := 0;
BEGIN
  SELECT * INTO f FROM {{schema}}.queue_flow x WHERE x.queue = flow_take.queue;
  -- 0017: the budgets this connection holds for this queue, if made under its current limits.
  IF f.rate_limit IS NOT NULL OR f.key_rate_limit IS NOT NULL THEN
    budget_name := 'postbox_budget_{{schema_name}}.q' || to_hex(hashtextextended(flow_take.queue, 0));
    -- A transaction that already took this queue's window rows (claim's later rounds, or a caller
    -- claiming twice in one transaction) waits for no more: it could wait for a claim that waits
    -- for a row it holds. Marked for the rest of the transaction (a local setting).
    holding := current_setting(budget_name || 'h', true) IS NOT DISTINCT FROM '1';
    IF NOT holding THEN
      PERFORM set_config(budget_name || 'h', '1', true);
    END IF;
    gen := concat_ws('/', f.rate_limit, f.rate_per, f.key_rate_limit, f.key_rate_per, f.updated_at);
    rate_ahead := least(f.rate_per / 2, interval '1 second');
    key_ahead := least(f.key_rate_per / 2, interval '1 second');
    budget := nullif(current_setting(budget_name, true), '')::jsonb;
    -- (And only once the transaction that last borrowed into it committed: a transaction prepared
    -- for two-phase commit keeps its session settings even when it is rolled back later.)
    IF budget ->> 'queue' IS DISTINCT FROM flow_take.queue OR budget ->> 'gen' IS DISTINCT FROM gen
       OR NOT (budget ->> 'xid' = pg_current_xact_id_if_assigned()::text
               OR pg_xact_status((budget ->> 'xid')::xid8) IS NOT DISTINCT FROM 'committed') THEN
      budget := NULL;
    END IF;
    IF (budget -> 'rate' ->> 1)::float8 >= epoch_now THEN
      rate_have := (budget -> 'rate' ->> 0)::integer;
    END IF;
    IF (budget -> 'shared' ->> 1)::float8 >= epoch_now THEN
      shared_have := (budget -> 'shared' ->> 0)::integer;
    END IF;
  END IF;
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
    -- 0017: what the budget allows first; shards only for the rest.
    cap := least(rate_have, cardinality(ids));
    FOR tries IN 1..16 LOOP
      EXIT WHEN cap >= cardinality(ids);
      -- 0017: rows with room first, by order rather than by filter: a row locked and then found
      -- changed is checked again against the filter, and one that fails it stays locked unseen;
      -- a claim holding such a row and then waiting for another made circles (deadlocks, seen
      -- with ten callers at the limit in test/flow-budgets-pooled.test.ts). Now every row it
      -- locks is one it knows of, and a full one ends the search.
      SELECT w.shard, w.stamps, w.counts INTO shard_no, shard_stamps, shard_counts FROM {{schema}}.rate_windows w
      WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.shard >= 0 AND w.shard <> ALL (shards)
      ORDER BY w.free_at > now(), (w.shard + pg_backend_pid()) % 16, w.shard
      LIMIT 1
      FOR NO KEY UPDATE SKIP LOCKED;
      IF NOT FOUND THEN
        EXIT WHEN cardinality(shards) > 0 OR cap > 0 OR holding; -- 0017: or the budget allows some, or it took rows before
        -- 0017: one shard chosen first, then waited for by its key, so that the claim holds
        -- nothing while it waits (waiting inside an ordered scan, a claim whose shard filled
        -- meanwhile went on to the next one still holding the first). Its room may be none by then.
        SELECT w.shard INTO shard_no FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.shard >= 0 AND w.free_at <= now()
        ORDER BY (w.shard + pg_backend_pid()) % 16, w.shard
        LIMIT 1;
        EXIT WHEN NOT FOUND;
        SELECT w.stamps, w.counts INTO shard_stamps, shard_counts FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.shard = shard_no
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
      EXIT WHEN room = 0; -- 0017: the rest are full too, as far as this claim can tell
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
    -- locks decide. (0018: the candidates' keys come from the claim's scan.)
    id_keys := rate_keys;
    -- 0018: the key limit's shared window first: rows of rate key '' with shards -16 to -1 that
    -- allow a sixteenth of the limit between them, in which a claim counts the most candidates it
    -- takes of any one key. Whatever the keys, no key gets more than that sixteenth through them,
    -- and its own rows allow the rest (see the migration's header). Taken from the budget, or from
    -- a row no other claim holds (never waited for); when neither has room, the keys' own rows decide.
    shared_limit := f.key_rate_limit / 16;
    rows_limit := f.key_rate_limit - shared_limit;
    IF shared_limit > 0 THEN
      SELECT coalesce(max(n.c), 0) INTO most
      FROM (SELECT count(*)::integer AS c FROM unnest(id_keys[1:coalesce(cap, cardinality(ids))]) AS k WHERE k IS NOT NULL GROUP BY k) n;
      IF most <= shared_have THEN
        shared := true;
      ELSE
        SELECT w.shard, w.stamps, w.counts INTO shared_no, shard_stamps, shard_counts FROM {{schema}}.rate_windows w
        WHERE w.queue = flow_take.queue AND w.rate_key = '' AND w.shard < 0
        ORDER BY w.free_at > now(), (w.shard + pg_backend_pid()) % 16, w.shard
        LIMIT 1
        FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
          shared_lim := {{schema}}.rate_shard_limit(shared_limit, shared_no + 16);
          SELECT greatest(0, CASE WHEN max(e.s) > now() + f.key_rate_per THEN 0
                                  ELSE shared_lim - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.key_rate_per), 0) END)
          INTO shared_room FROM unnest(shard_stamps, shard_counts) AS e(s, c);
          shared := shared_have + shared_room >= most;
          IF shared THEN
            -- What it borrows ahead when the row stays at least half empty (as for the queue's rate).
            shared_extra := greatest(0, least(32 * most, shared_room - (most - least(shared_have, most)) - (shared_lim + 1) / 2));
          END IF;
        END IF;
      END IF;
    END IF;
    IF shared THEN
      kept := ids[1:coalesce(cap, cardinality(ids))];
    ELSE
      -- 0017: what the budget allows each key of the claim now; only keys whose candidates want more
      -- go to their rows.
      SELECT coalesce(jsonb_object_agg(n.k, (b.value ->> 0)::integer) FILTER (WHERE b.value IS NOT NULL), '{}'),
             coalesce(jsonb_object_agg(n.k, n.wanted), '{}'),
             array_agg(n.k ORDER BY n.k COLLATE "C") FILTER (WHERE n.wanted > coalesce((b.value ->> 0)::integer, 0))
      INTO key_have, key_wanted, keys
      FROM (SELECT k, count(*)::integer AS wanted FROM unnest(id_keys) AS k WHERE k IS NOT NULL GROUP BY k) n
      LEFT JOIN jsonb_each(budget -> 'keys') AS b ON b.key = n.k AND (b.value ->> 1)::float8 >= epoch_now;
      IF keys IS NOT NULL THEN
        key_shards := least(rows_limit, 16); -- 0018: the rows allow the limit less the shared window's
        own_shard := pg_backend_pid() % key_shards;
        FOR seat IN 0..key_shards - 1 LOOP
          IF pg_try_advisory_xact_lock({{schema}}.wake_key('rate-seat/' || flow_take.queue || '/' || ((own_shard + seat) % key_shards))) THEN
            own_shard := (own_shard + seat) % key_shards;
            EXIT;
          END IF;
        END LOOP;
        -- A key seen for the first time (or whose rows went idle and were dropped) gets all its
        -- rows. Inserted in one order (bytewise), so two claims inserting the same new keys wait
        -- for each other one way only. (0017: not by a transaction holding rows already: an insert
        -- waits for another's insert of the same key; that key's candidates wait for a next claim.)
        INSERT INTO {{schema}}.rate_windows (queue, rate_key, shard)
        SELECT flow_take.queue, k, g FROM unnest(keys) AS k CROSS JOIN generate_series(0, key_shards - 1) AS g
        -- (A scalar look-up per key: as NOT EXISTS, the planner compared every key with every row of the shard.)
        WHERE NOT holding
          AND (SELECT w.shard FROM {{schema}}.rate_windows w WHERE w.queue = flow_take.queue AND w.rate_key = k AND w.shard = own_shard) IS NULL
        ORDER BY k COLLATE "C", g
        ON CONFLICT ON CONSTRAINT rate_windows_pkey DO NOTHING;
        -- The connection's own shard of each key. Its room is read from its newest version, under
        -- the lock. 0018: a row another claim holds is skipped, never waited for (its key's
        -- candidates wait for a next claim): a claim that holds window rows never waits again, which
        -- leaves no circle of claims waiting for each other (see the migration's header).
        WITH locked AS (
          SELECT w.rate_key, w.shard, w.stamps, w.counts FROM {{schema}}.rate_windows w
          WHERE w.queue = flow_take.queue AND w.rate_key = ANY (keys) AND w.shard = own_shard
          FOR NO KEY UPDATE SKIP LOCKED
        )
        SELECT array_agg(l.rate_key), array_agg(l.shard), array_agg(l.room) INTO locked_keys, locked_shards, locked_rooms
        FROM (SELECT l.rate_key, l.shard,
                     -- rate_window_room, written out: a function call per key cost more than the rest of this.
                     (SELECT greatest(0, CASE WHEN max(e.s) > now() + f.key_rate_per THEN 0
                                              ELSE {{schema}}.rate_shard_limit(rows_limit, l.shard)
                                                   - coalesce(sum(e.c) FILTER (WHERE e.s > now() - f.key_rate_per), 0) END)
                      FROM unnest(l.stamps, l.counts) AS e(s, c))::integer AS room
              FROM locked l) l;
        -- Keys whose candidates want more than the own shard allows: their other shards with room,
        -- those no other claim holds (SKIP LOCKED: holding rows now, this claim waits for no more).
        SELECT array_agg(n.k) INTO short_keys
        FROM (SELECT k, count(*) AS wanted FROM unnest(id_keys) AS k WHERE k IS NOT NULL GROUP BY k) n
        JOIN unnest(locked_keys, locked_rooms) AS r(k, room) ON r.k = n.k
        WHERE n.wanted > r.room + coalesce((key_have ->> n.k)::integer, 0); -- 0017: and the budget
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
                                                ELSE {{schema}}.rate_shard_limit(rows_limit, l.shard)
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
          SELECT r.k, sum(r.room) AS room FROM (
            SELECT l.k, l.room FROM unnest(locked_keys, locked_rooms) AS l(k, room)
            UNION ALL
            SELECT b.key, b.value::integer FROM jsonb_each_text(key_have) AS b -- 0017: and the budget
          ) r GROUP BY r.k
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
  END IF;
  IF f.max_in_flight IS NOT NULL AND cardinality(kept) > 0 THEN
    -- 0014: room in the queue's slot rows (see the migration's header), one row at a time until
    -- the candidates have room: the row is locked first (SKIP LOCKED: any row will do), then what
    -- it holds is read in a statement of its own, on a snapshot taken after the lock, so that the
    -- claims of the row's previous holder are seen as in flight. Rows are tried from a place that
    -- depends on the connection, so each connection mostly finds its own row, whose messages it
    -- has acked.
    FOR tries IN 1..32 LOOP
      -- 0017: the connection's own row first, by its key (ordering all rows read every one).
      IF tries = 1 THEN
        SELECT s.slot, s.capacity, cardinality(s.message_ids) INTO slot_no, places, held FROM {{schema}}.flight_slots s
        WHERE s.queue = flow_take.queue AND s.slot = pg_backend_pid() % least(f.max_in_flight, 32) + 1
        FOR UPDATE SKIP LOCKED;
      END IF;
      IF tries > 1 OR NOT FOUND THEN
        SELECT s.slot, s.capacity, cardinality(s.message_ids) INTO slot_no, places, held FROM {{schema}}.flight_slots s
        WHERE s.queue = flow_take.queue AND s.slot <> ALL (visited)
        ORDER BY (s.slot + pg_backend_pid()) % 32, s.slot
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
      END IF;
      visited := visited || slot_no;
      wanted := cardinality(kept) - cardinality(given);
      -- 0017: the row's messages are looked up (which are still in flight) only when it could be
      -- full: when what it holds and what this claim wants pass its capacity (then all of them,
      -- exactly), or pass 800 (then all but its newest 200, whose messages were acked last:
      -- looking up a message deleted moments before cost several times more under concurrent
      -- claims). Until then they count as in flight and the claim's own are added to them.
      IF held + wanted <= least(places, 800) THEN
        UPDATE {{schema}}.flight_slots s
        SET message_ids = s.message_ids || kept[cardinality(given) + 1 :], leases = s.leases || array_fill(token, ARRAY[wanted])
        WHERE s.queue = flow_take.queue AND s.slot = slot_no;
        given := kept;
        EXIT;
      END IF;
      SELECT coalesce(array_agg(e.id ORDER BY e.ord) FILTER (WHERE e.id IS NOT NULL), '{}'),
             coalesce(array_agg(e.lease ORDER BY e.ord) FILTER (WHERE e.id IS NOT NULL), '{}')
      INTO live_ids, live_leases
      FROM {{schema}}.flight_slots s
      LEFT JOIN LATERAL (
        SELECT x.id, x.lease, x.ord FROM unnest(s.message_ids, s.leases) WITH ORDINALITY AS x(id, lease, ord)
        WHERE (held + wanted <= places AND x.ord > held - 200)
           OR EXISTS (SELECT 1 FROM {{schema}}.messages m WHERE m.id = x.id AND m.lease = x.lease AND m.available_at > now())
      ) e ON true
      WHERE s.queue = flow_take.queue AND s.slot = slot_no;
      room := least(places - cardinality(live_ids), wanted);
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
  IF f.key_rate_limit IS NOT NULL AND NOT shared AND cardinality(kept) > 0 THEN
    -- 0017: the claims of each key, taken from the budget first (all its candidates, when none was refused).
    IF cardinality(kept) = cardinality(ids) THEN
      key_used := key_wanted;
    ELSE
      SELECT coalesce(jsonb_object_agg(p.k, p.used), '{}') INTO key_used
      FROM (SELECT p.k, count(*)::integer AS used FROM unnest(ids, id_keys) AS p(id, k) WHERE p.id = ANY (kept) AND p.k IS NOT NULL GROUP BY p.k) p;
    END IF;
  END IF;
  IF locked_keys IS NOT NULL THEN
    -- 0017: a key that got all its candidates wanted, and whose locked rows stay at least half
    -- empty after them, borrows ahead: eight times as many claims again, for this connection's
    -- next claims in the coming half period (at most a second).
    SELECT coalesce(jsonb_object_agg(r.k, e.extra) FILTER (WHERE e.extra > 0), '{}') INTO key_extra
    FROM (SELECT l.k, sum(l.room) AS room, sum({{schema}}.rate_shard_limit(rows_limit, l.shard)) AS lim
          FROM unnest(locked_keys, locked_shards, locked_rooms) AS l(k, shard, room) GROUP BY l.k) r
    JOIN (SELECT k, count(*)::integer AS wanted FROM unnest(id_keys) AS k WHERE k IS NOT NULL GROUP BY k) w ON w.k = r.k
    CROSS JOIN LATERAL (SELECT coalesce((key_used ->> r.k)::integer, 0) AS used, coalesce((key_have ->> r.k)::integer, 0) AS have) u
    CROSS JOIN LATERAL (
      SELECT CASE WHEN u.used < w.wanted THEN 0
                  ELSE greatest(0, least(32 * w.wanted, r.room - (u.used - least(u.have, u.used)) - (r.lim + 1) / 2))::integer END AS extra
    ) e;
    -- Every locked row is written again, with 0 claims when it had no room: that refreshes
    -- free_at, so the next scans skip it. 0014: a key's claims go into its locked shards, each up
    -- to its room, in the order they were locked (its own shard first). 0017: the claims the
    -- budget did not cover, and what the key borrows ahead, stamped at the end of the time it
    -- may be spent in.
    FOR late IN 0..1 LOOP
      PERFORM {{schema}}.rate_windows_record(flow_take.queue, x.keys, x.shards, x.n, x.lims, f.key_rate_per,
                                             CASE WHEN late = 1 THEN now() + key_ahead ELSE now() END)
      FROM (SELECT array_agg(r.k ORDER BY r.ord) AS keys, array_agg(r.shard ORDER BY r.ord) AS shards,
                   array_agg(greatest(0, least(r.room, c.n - (r.before - r.room)))::integer ORDER BY r.ord) AS n,
                   array_agg({{schema}}.rate_shard_limit(rows_limit, r.shard) ORDER BY r.ord) AS lims
            FROM (SELECT u.k, u.shard, u.room, u.ord, sum(u.room) OVER (PARTITION BY u.k ORDER BY u.ord) AS before
                  FROM unnest(locked_keys, locked_shards, locked_rooms) WITH ORDINALITY AS u(k, shard, room, ord)) r
            CROSS JOIN LATERAL (
              SELECT coalesce((key_used ->> r.k)::integer, 0) AS used, coalesce((key_have ->> r.k)::integer, 0) AS have,
                     coalesce((key_extra ->> r.k)::integer, 0) AS extra
            ) u
            CROSS JOIN LATERAL (SELECT u.used - least(u.have, u.used) + u.extra AS n) c
            WHERE (u.extra > 0) = (late = 1)) x
      WHERE x.keys IS NOT NULL;
    END LOOP;
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
  IF shared AND most > 0 THEN
    -- 0018: the shared window counts the most claims of one key this claim made (fewer than it
    -- asked for when the cap refused some), from the budget first; the row takes the rest, and
    -- what the claim borrows ahead, stamped at the end of the time it may be spent in.
    IF f.max_in_flight IS NOT NULL THEN
      SELECT coalesce(max(n.c), 0) INTO most
      FROM (SELECT count(*)::integer AS c FROM unnest(ids, id_keys) AS p(id, k) WHERE p.id = ANY (kept) AND p.k IS NOT NULL GROUP BY p.k) n;
    END IF;
    shared_used := least(shared_have, most);
    IF shared_no IS NOT NULL THEN
      PERFORM {{schema}}.rate_windows_record(flow_take.queue, ARRAY[''], ARRAY[shared_no], ARRAY[most - shared_used + shared_extra],
        ARRAY[shared_lim], f.key_rate_per, CASE WHEN shared_extra > 0 THEN now() + key_ahead ELSE now() END);
    END IF;
  END IF;
  IF cardinality(kept) = 0 THEN
    RETURN kept;
  END IF;
  IF f.rate_limit IS NOT NULL THEN
    -- 0017: from the budget first; the shards take the rest, and what the claim borrows ahead when
    -- it got all it asked for and its shards stay at least half empty (as for keys).
    rate_used := least(rate_have, cardinality(kept));
    IF cardinality(shards) > 0 THEN
      IF cap >= cardinality(ids) THEN
        rate_extra := greatest(0, least(32 * cardinality(ids), (SELECT sum(r) FROM unnest(shard_rooms) AS r) - (cardinality(kept) - rate_used)
                                        - ((SELECT sum({{schema}}.rate_shard_limit(f.rate_limit, s)) FROM unnest(shards) AS s) + 1) / 2));
      END IF;
      -- 0014: the claims go into the locked shards, each up to its room, in the order they were locked.
      PERFORM {{schema}}.rate_windows_record(flow_take.queue, array_fill(''::text, ARRAY[cardinality(x.shards)]), x.shards, x.n, x.lims,
        f.rate_per, CASE WHEN rate_extra > 0 THEN now() + rate_ahead ELSE now() END)
      FROM (SELECT array_agg(r.shard ORDER BY r.ord) AS shards, array_agg(r.n ORDER BY r.ord) AS n,
                   array_agg({{schema}}.rate_shard_limit(f.rate_limit, r.shard) ORDER BY r.ord) AS lims
            FROM (SELECT u.shard, u.ord, least(u.room, (cardinality(kept) - rate_used + rate_extra) - (sum(u.room) OVER (ORDER BY u.ord) - u.room))::integer AS n
                  FROM unnest(shards, shard_rooms) WITH ORDINALITY AS u(shard, room, ord)) r
            WHERE r.n > 0) x
      WHERE x.shards IS NOT NULL;
    END IF;
  END IF;
  -- 0017: what is left of the budgets, and what was borrowed, for this connection's next claims
  -- (rolled back with the claim).
  IF budget_name IS NOT NULL AND (rate_used > 0 OR rate_extra > 0 OR key_have <> '{}' OR key_extra <> '{}' OR shared_used > 0 OR shared_extra > 0) THEN
    IF shared THEN
      -- 0018: the keys' budgets, untouched by a claim the shared window counted (an object
      -- always: the keys' way reads it with jsonb_each, which a JSON null would fail)
      keys_budget := CASE WHEN jsonb_typeof(budget -> 'keys') = 'object' THEN budget -> 'keys' ELSE '{}' END;
    ELSIF f.key_rate_limit IS NOT NULL THEN
      SELECT coalesce(jsonb_object_agg(b.k, b.v), '{}') INTO keys_budget FROM (
        -- other keys' budgets, while they last
        SELECT o.key AS k, o.value AS v FROM jsonb_each(budget -> 'keys') AS o
        WHERE (o.value ->> 1)::float8 >= epoch_now AND NOT key_used ? o.key AND NOT key_extra ? o.key
        UNION ALL
        SELECT u.key, CASE WHEN key_extra ? u.key
                           THEN jsonb_build_array((key_extra ->> u.key)::integer, epoch_now + extract(epoch FROM key_ahead))
                           ELSE jsonb_build_array((key_have ->> u.key)::integer - least((key_have ->> u.key)::integer, u.value::integer), budget -> 'keys' -> u.key -> 1) END
        FROM jsonb_each_text(key_used || key_extra) AS u
        WHERE key_extra ? u.key OR (key_have ->> u.key)::integer > u.value::integer) b;
    END IF;
    PERFORM set_config(budget_name, jsonb_build_object('queue', flow_take.queue, 'gen', gen,
      'xid', CASE WHEN rate_extra > 0 OR key_extra <> '{}' OR shared_extra > 0 THEN pg_current_xact_id()::text ELSE budget ->> 'xid' END,
      'rate', CASE WHEN rate_extra > 0 THEN jsonb_build_array(rate_extra, epoch_now + extract(epoch FROM rate_ahead))
                   WHEN rate_have > rate_used THEN jsonb_build_array(rate_have - rate_used, budget -> 'rate' -> 1) END,
      'shared', CASE WHEN shared_extra > 0 THEN jsonb_build_array(shared_extra, epoch_now + extract(epoch FROM key_ahead))
                     WHEN shared_have > shared_used THEN jsonb_build_array(shared_have - shared_used, budget -> 'shared' -> 1) END,
      'keys', keys_budget)::text, false);
  END IF;
  -- (A place given to a message that claim_groups then refuses is free again at once: the
  -- message does not hold this token.)
  RETURN kept;
END $$;

CREATE OR REPLACE FUNCTION {{schema}}.claim(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS TABLE (id bigint, priority integer, attempt integer, lease uuid, encoding text, payload jsonb, body bytea,
  headers jsonb, dedupe_key text, group_key text, last_error text, routing_key text,
  enqueued_ms float8, claimed_ms float8, available_ms float8)
LANGUAGE plpgsql
-- Generic plans, as receive had since 0003: pgbench, one client, receive(1) 0.61-0.77 ms with
-- custom plans made on every call, 0.44-0.45 ms with this clause.
SET plan_cache_mode = force_generic_plan
AS $$
-- 0018 (from 0014): the scan returns the candidates' rate keys for flow_take, and looks up their key
-- rows only when flow_gate says so (key_filter) or keys refused some candidates; the lines marked 0018.
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
  flow_filter boolean;    -- 0018: the scan skips candidates whose key has no row with room
  candidate_keys text[];  -- 0018: the candidates' rate keys (keyed queues only)
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
  SELECT g.allowance, g.keyed, g.key_filter INTO flow_allowance, flow_keyed, flow_filter FROM {{schema}}.flow_gate(claim.queue, max) g; -- flow:
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
           array_agg(c.id) FILTER (WHERE c.attempt >= q.max_attempts AND c.lease IS NOT NULL),
           -- 0018: the candidates' rate keys, for flow_take (only a keyed queue's: none aggregated otherwise)
           array_agg(c.rate_key ORDER BY c.priority DESC, c.available_at, c.id) FILTER (WHERE flow_keyed AND (c.attempt < q.max_attempts OR c.lease IS NULL))
    INTO candidates, grouped, grouped_keys, exhausted, candidate_keys
    FROM (
      SELECT m.id, m.attempt, m.lease, m.priority, m.available_at, m.group_key,
             CASE WHEN flow_keyed THEN m.headers ->> 'postbox-rate-key' END AS rate_key -- 0018
      FROM {{schema}}.messages m
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
        -- smallest of the rows' free_at read all 16 rows of every candidate's key). 0018: only when
        -- no row of the key limit's shared window has room (flow_gate), or keys refused candidates
        -- in an earlier round: otherwise the shared window may count any key's candidates.
        AND (NOT flow_filter OR EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = m.queue
               AND w.rate_key = m.headers ->> 'postbox-rate-key' AND w.free_at <= now())
             OR NOT EXISTS (SELECT 1 FROM {{schema}}.rate_windows w WHERE w.queue = m.queue
               AND w.rate_key = m.headers ->> 'postbox-rate-key'))
        AND (NOT flow_keyed OR m.id <> ALL (flow_refused))
      ORDER BY m.priority DESC, m.available_at, m.id
      LIMIT coalesce(flow_allowance, max) - taken -- flow: flow_allowance <= max
      FOR UPDATE OF m SKIP LOCKED
    ) c;
    -- 2. Grouped candidates need their group's lease.
    picked := candidates;
    IF flow_allowance IS NOT NULL AND cardinality(candidates) > 0 THEN -- flow: before claim_groups
      picked := {{schema}}.flow_take(claim.queue, candidates, candidate_keys, token);
      IF cardinality(picked) < cardinality(candidates) THEN
        flow_refused := flow_refused || ARRAY(SELECT c FROM unnest(candidates) AS c WHERE c <> ALL (picked));
        flow_filter := flow_keyed; -- 0018: the next round skips throttled keys
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

DO $$
DECLARE
  grant_sql text;
BEGIN
  FOREACH grant_sql IN ARRAY pg_catalog.current_setting('postbox.migration_0018_grants')::text[] LOOP
    EXECUTE grant_sql;
  END LOOP;
END $$;
