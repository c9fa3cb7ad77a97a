-- postbox 0019: maxInFlight far from reached costs a claim less (issue 15's target, 0.9x of no
-- limits; docs/performance.md, "Flow control").
--
-- A slot row (flight_slots, see 0014) listed each id a claim counted in it with the claim's lease
-- token beside it: 24 bytes an id, compressed again on every claim's write (pglz, about 0.15 ms
-- for a row of a few hundred ids). Now `leases` lists each claim's token once, in the order of
-- the claims: a claim adds its ids and one token. An id is in flight when its message is leased
-- under one of the row's tokens and its lease has not ended; an id listed twice (its message
-- claimed again through the same row) counts once. A message claimed again through another row,
-- by a claim that also counted ids in this one, counts in both rows until it is acked or its new
-- lease ends: fewer places for a while, never more than the cap.
-- A row's messages are looked up when what it lists passes 400 (800 before) or could pass its
-- capacity; short of its capacity, its newest 100 ids are not looked up (200 before) and the
-- tokens of its newest 100 claims are kept for them, which hold every token of those ids since
-- tokens stay in the order of their ids' last places. The ids are looked up in one index scan
-- (id = ANY), not one by one: a look-up of 300 ids, one caller, took 0.2-0.4 ms on Postgres 18
-- (0.9-1.2 ms one by one) and 0.3-0.4 ms on 15 (0.6-0.8 ms).
-- Measured (bench/diagnose/flow-ab.ts, medians of the claim+ack rounds' ratios to no limits):
-- maxInFlight 0.77x and 0.78x with 0018's rows (two runs of 6), 0.85x and 0.86x with tokens once
-- (looked up one by one); in turns with that, 0.77x against 0.90x with the look-up in one scan
-- (10 turns). Under ten callers a claim's write of its row took 0.07 ms (0.9 ms with 0018's rows)
-- (bench/diagnose/flow-statements.ts maxInFlight).

-- The rows made before: each token once, in the order of its last id.
UPDATE {{schema}}.flight_slots s
SET leases = ARRAY(SELECT u.lease FROM unnest(s.leases) WITH ORDINALITY AS u(lease, ord) GROUP BY u.lease ORDER BY max(u.ord))
WHERE cardinality(s.leases) > 0;

-- 0019 (from 0014): each token once, in the order of its last id.
CREATE OR REPLACE FUNCTION {{schema}}.flight_slots_make(queue text, cap integer)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', '{{schema_name}}', 'pg_temp'
AS $function$
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
    SELECT (y.i - 1) % least(cap, 32) + 1 AS n, array_agg(y.id ORDER BY y.i) AS ids,
           ARRAY(SELECT t.lease FROM unnest(array_agg(y.lease), array_agg(y.i)) AS t(lease, i) GROUP BY t.lease ORDER BY max(t.i)) AS leases
    FROM (SELECT m.id, m.lease, row_number() OVER (ORDER BY m.id) AS i FROM messages m
          WHERE m.queue = queue AND m.lease IS NOT NULL AND m.available_at > now()) y
    WHERE y.i <= cap
    GROUP BY 1
  ) x ON x.n = r.n;
END $function$;

CREATE OR REPLACE FUNCTION {{schema}}.flow_take(queue text, ids bigint[], rate_keys text[], token uuid)
 RETURNS bigint[]
 LANGUAGE plpgsql
AS $function$
-- 0019 (from 0018): maxInFlight's slot rows list a claim's token once, not once for each of its
-- ids (see the migration's header); the lines marked 0019.
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
      -- exactly), or pass 400 (0019; 800 before) (then all but its newest 100, whose messages were
      -- acked last: looking up a message deleted moments before cost several times more under
      -- concurrent claims). Until then they count as in flight and the claim's own are added to
      -- them. 0019: with its token, once (the row's tokens are in the order of their claims).
      IF held + wanted <= least(places, 400) THEN
        UPDATE {{schema}}.flight_slots s
        SET message_ids = s.message_ids || kept[cardinality(given) + 1 :], leases = s.leases || token
        WHERE s.queue = flow_take.queue AND s.slot = slot_no;
        given := kept;
        EXIT;
      END IF;
      -- 0019: a listed id is in flight when its message's lease has not ended and is one of the
      -- row's tokens; an id listed twice (claimed again through this row) counts once. The ids
      -- are looked up in one index scan (id = ANY), not one by one. The ids in flight keep their
      -- places in id order, then the ids not looked up theirs; the tokens go in the same order,
      -- those of the row's newest 100 claims (kept for the ids not looked up) last.
      SELECT coalesce(l.ids, '{}') || s.message_ids[n.checked_to + 1 :],
             ARRAY(SELECT t.lease FROM unnest(l.leases, l.ids) AS t(lease, id) WHERE t.lease <> ALL (s.leases[n.unchecked_tokens :])
                   GROUP BY t.lease ORDER BY max(t.id))
             || s.leases[n.unchecked_tokens :]
      INTO live_ids, live_leases
      FROM {{schema}}.flight_slots s
      CROSS JOIN LATERAL (
        SELECT CASE WHEN held + wanted <= places THEN held - 100 ELSE held END AS checked_to,
               CASE WHEN held + wanted <= places THEN greatest(1, cardinality(s.leases) - 99) ELSE cardinality(s.leases) + 1 END AS unchecked_tokens
      ) n
      CROSS JOIN LATERAL (
        SELECT array_agg(g.id ORDER BY g.id) AS ids, array_agg(g.lease ORDER BY g.id) AS leases
        FROM (
          -- The messages in flight, kept when their lease is one of the row's tokens: matched by
          -- grouping on the lease, not by a search of the tokens for each message (a row of many
          -- small claims has as many tokens as ids).
          SELECT u.lease, unnest(array_agg(u.id) FILTER (WHERE u.id IS NOT NULL)) AS id
          FROM (
            SELECT m.lease, m.id FROM {{schema}}.messages m
            WHERE m.id = ANY (s.message_ids[1 : n.checked_to]) AND m.id <> ALL (s.message_ids[n.checked_to + 1 :])
              AND m.available_at > now()
            UNION ALL
            SELECT t.lease, NULL FROM unnest(s.leases) AS t(lease)
          ) u
          GROUP BY u.lease
          HAVING bool_or(u.id IS NULL)
        ) g
      ) l
      WHERE s.queue = flow_take.queue AND s.slot = slot_no;
      room := least(places - cardinality(live_ids), wanted);
      IF room > 0 THEN
        live_ids := live_ids || kept[cardinality(given) + 1 : cardinality(given) + room];
        live_leases := live_leases || token;
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
END $function$;
