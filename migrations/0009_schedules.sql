-- postbox 0009: schedules (cron) and the dedupe window (DESIGN.md, "Schedules (cron)" and the
-- dedupeWindow option of "Flow control").
--
-- Schedules. A schedule is a row: a cron expression and an IANA time zone, the queue and message
-- it sends, its missed-fire policy, and the instant of its next tick (next_fire_at, always UTC).
-- The expression is evaluated in Node (croner), never here: the database only compares instants,
-- so no cron parser lives in SQL. Every process that takes part (startScheduler(), or a Postbox
-- with a running worker) locks the due rows with FOR UPDATE SKIP LOCKED, works out which ticks to
-- fire from the database clock, and calls fire_schedule() in that same transaction: it records
-- each tick in schedule_fires, sends one message per tick and moves next_fire_at. There is no
-- leader. A tick fires exactly once: the row lock serialises the processes, the UPDATE is
-- conditional on the next_fire_at the caller read, and schedule_fires' primary key (name, tick)
-- refuses a tick already fired by a schedule of the same name (one deleted and created again
-- within a transaction's span). A crash before commit fires nothing; after commit, the tick is
-- recorded with its message.
--
-- Dedupe window. queues.dedupe_window keeps a dedupe key refused for that long after the send,
-- acked or not (SQS FIFO's 5 minutes), besides the existing rule that refuses a key while a
-- message with it waits or is in flight. The window of a key is a row of dedupe_windows, taken by
-- an upsert that only takes an expired row; a sender that finds a live one gets the id of the
-- message that took it. The change to the send functions is on their dedupe path only and only
-- for queues with a window: send_message and send_batch are restated below with one added block
-- each, marked "0009"; a message without a dedupe key, or to a queue without a window, runs the
-- same statements as before. deliver (publish's copies) gets the same block. claim, ack and nack
-- are not touched.

-- How long a dedupe key stays refused after its send; NULL: only while its message is pending.
ALTER TABLE {{schema}}.queues ADD COLUMN dedupe_window interval
  CONSTRAINT queues_dedupe_window_positive CHECK (dedupe_window > '0');

-- The live (and not yet pruned expired) dedupe windows: key -> the message sent with it.
CREATE TABLE {{schema}}.dedupe_windows (
  queue text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  dedupe_key text NOT NULL,
  message_id bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (queue, dedupe_key)
);
CREATE INDEX dedupe_windows_expires_idx ON {{schema}}.dedupe_windows (expires_at);

-- Takes the dedupe window of a key for message_id, a message about to be sent with it; returns
-- NULL when taken, or the id of the message that holds the window (sent within it). Two senders of
-- one key wait for each other on the row, so one takes it and the other sees its message.
CREATE FUNCTION {{schema}}.take_dedupe_window(queue text, dedupe_key text, message_id bigint, dedupe_window interval)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema_name}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  holder bigint;
BEGIN
  FOR i IN 1..3 LOOP
    INSERT INTO dedupe_windows AS w (queue, dedupe_key, message_id, expires_at)
    VALUES (take_dedupe_window.queue, take_dedupe_window.dedupe_key, take_dedupe_window.message_id, now() + dedupe_window)
    ON CONFLICT (queue, dedupe_key) DO UPDATE SET message_id = excluded.message_id, expires_at = excluded.expires_at
      WHERE w.expires_at <= now()
    RETURNING w.message_id INTO holder;
    IF holder IS NOT NULL THEN
      RETURN NULL;
    END IF;
    SELECT w.message_id INTO holder FROM dedupe_windows w
    WHERE w.queue = take_dedupe_window.queue AND w.dedupe_key = take_dedupe_window.dedupe_key;
    IF holder IS NOT NULL THEN
      RETURN holder;
    END IF;
    -- The holder's send rolled back between our upsert and our look-up: try again.
  END LOOP;
  RAISE EXCEPTION 'could not send to % with dedupe key %: its window kept changing', queue, dedupe_key
    USING ERRCODE = '40001';
END $$;

-- Deletes expired dedupe windows; returns how many. Run by the scheduler's loop (a few times a
-- minute at most) and callable from cron jobs of your own.
CREATE FUNCTION {{schema}}.prune_dedupe_windows() RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, {{schema_name}}, pg_temp
AS $$
  WITH gone AS (DELETE FROM dedupe_windows WHERE expires_at <= now() RETURNING 1)
  SELECT count(*)::integer FROM gone
$$;

-- Sends one message. Returns its id, or, when dedupe_key matches a message that is still waiting
-- or in flight (or, on a queue with a dedupe window, one sent within it), that message's id.
CREATE OR REPLACE FUNCTION {{schema}}.send_message(queue text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text,
  headers jsonb, OUT id bigint, OUT duplicate boolean)
LANGUAGE plpgsql
AS $$
-- 0009 (from 0003): on a queue with a dedupe window, the key's window is taken before the insert.
#variable_conflict use_column
DECLARE
  q {{schema}}.queues;
  problem text;
  must_wake boolean;
  window_id bigint;
BEGIN
  -- The lock comes before the queue look-up: deleteQueue takes it exclusively, so a send either
  -- finishes before the delete counts the queue's messages, or looks the queue up after the
  -- delete committed and finds it gone. Looking up first would let a send that waited on the
  -- lock insert into a queue deleted meanwhile.
  PERFORM pg_advisory_xact_lock_shared({{schema}}.wake_key(queue));
  duplicate := false;
  IF dedupe_key IS NULL THEN
    -- The fast path: look-up, validation and insert in one statement. A delay counts from the
    -- send itself (clock_timestamp), not from the start of the caller's transaction (now()), so
    -- a long outbox transaction does not eat into it.
    INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, group_key)
    SELECT q.name, send_message.priority,
           coalesce(send_message.available_at, CASE WHEN send_message.delay IS NULL THEN now() ELSE clock_timestamp() + send_message.delay END),
           send_message.encoding, send_message.payload, send_message.body, send_message.headers, send_message.group_key
    FROM {{schema}}.queues q
    WHERE q.name = send_message.queue
      AND {{schema}}.message_problem(q.max_payload_bytes, send_message.payload, send_message.body, send_message.encoding,
            send_message.delay, send_message.available_at, send_message.priority, NULL, send_message.group_key,
            send_message.headers) IS NULL
    -- The test wake() makes, in the same statement, so that a send nobody waits for makes no
    -- nested call and no further statement. Its snapshot is taken after the lock, as the wake-up
    -- protocol needs (see wake()).
    RETURNING m.id, current_setting('transaction_isolation') <> 'read committed'
      OR EXISTS (SELECT 1 FROM {{schema}}.waiters w WHERE w.queue = m.queue AND NOT w.notified AND w.expires_at > now())
    INTO id, must_wake;
    IF id IS NOT NULL THEN
      IF must_wake THEN
        PERFORM {{schema}}.wake(queue);
      END IF;
      RETURN;
    END IF;
  END IF;
  -- A dedupe key, or a refusal to explain: find the queue and the problem, and raise it.
  SELECT * INTO q FROM {{schema}}.queues WHERE name = queue;
  IF NOT FOUND THEN
    q := {{schema}}.require_queue(queue); -- raises the right error
  END IF;
  problem := {{schema}}.message_problem(q.max_payload_bytes, payload, body, encoding, delay,
    send_message.available_at, priority, dedupe_key, group_key, headers);
  IF problem IS NOT NULL THEN
    PERFORM {{schema}}.raise_problem(problem, queue);
  END IF;
  -- 0009: a key sent within the queue's dedupe window is a duplicate of that send, acked or not.
  IF q.dedupe_window IS NOT NULL THEN
    window_id := nextval('{{schema}}.messages_id_seq');
    id := {{schema}}.take_dedupe_window(queue, dedupe_key, window_id, q.dedupe_window);
    IF id IS NOT NULL THEN
      duplicate := true;
      RETURN;
    END IF;
  END IF;
  FOR i IN 1..3 LOOP
    INSERT INTO {{schema}}.messages AS m (id, queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key)
    OVERRIDING SYSTEM VALUE
    VALUES (coalesce(window_id, nextval('{{schema}}.messages_id_seq')), queue, priority,
            coalesce(send_message.available_at, CASE WHEN delay IS NULL THEN now() ELSE clock_timestamp() + delay END),
            encoding, payload, body, headers, dedupe_key, group_key)
    ON CONFLICT (queue, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING m.id INTO id;
    IF id IS NOT NULL THEN
      PERFORM {{schema}}.wake(queue);
      RETURN;
    END IF;
    SELECT m.id INTO id FROM {{schema}}.messages m WHERE m.queue = send_message.queue AND m.dedupe_key = send_message.dedupe_key;
    IF id IS NOT NULL THEN
      duplicate := true;
      -- 0009: a pending message holds the key (sent before its window, or before the queue had
      -- one): the window taken above was for a send that did not happen.
      IF window_id IS NOT NULL THEN
        DELETE FROM {{schema}}.dedupe_windows w
        WHERE w.queue = send_message.queue AND w.dedupe_key = send_message.dedupe_key AND w.message_id = window_id;
      END IF;
      RETURN;
    END IF;
    -- The duplicate was acked between our insert and our look-up: try the insert again.
  END LOOP;
  RAISE EXCEPTION 'could not send to % with dedupe key %: it kept changing', queue, dedupe_key
    USING ERRCODE = '40001';
END $$;

-- Sends many messages to one queue in one statement. Arrays are parallel, one element per message;
-- returns the ids in input order. Without dedupe keys this is a single multi-row INSERT.
CREATE OR REPLACE FUNCTION {{schema}}.send_batch(queue text, payloads jsonb[], bodies bytea[], encodings text[],
  delays interval[], available_ats timestamptz[], priorities integer[], dedupe_keys text[],
  group_keys text[], headers jsonb[])
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
-- 0009 (from 0005): on a queue with a dedupe window, the keys' windows are taken before the insert.
#variable_conflict use_column
DECLARE
  q {{schema}}.queues;
  n integer := coalesce(cardinality(encodings), 0);
  problem text;
  bad_position bigint;
  new_ids bigint[];
  ids bigint[];
  duplicates boolean[];
  inserted integer := 0;
  taken text[];
BEGIN
  -- Locked before the look-up, as in send_message, so a concurrent deleteQueue cannot be missed.
  PERFORM pg_advisory_xact_lock_shared({{schema}}.wake_key(queue));
  SELECT * INTO q FROM {{schema}}.queues WHERE name = send_batch.queue;
  IF NOT FOUND THEN
    q := {{schema}}.require_queue(queue); -- raises the right error
  END IF;
  IF n = 0 THEN
    RETURN;
  END IF;
  IF n > 10000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('a batch holds at most 10000 messages, got %s', n);
  END IF;
  IF cardinality(payloads) <> n OR cardinality(bodies) <> n OR cardinality(delays) <> n
     OR cardinality(available_ats) <> n OR cardinality(priorities) <> n
     OR cardinality(dedupe_keys) <> n OR cardinality(group_keys) <> n OR cardinality(headers) <> n THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'send_batch arrays must all have one element per message';
  END IF;
  -- The whole batch is checked in one set-based query; the first
  -- problem, by position, is raised and nothing is written.
  SELECT {{schema}}.message_problem(q.max_payload_bytes, t.payload, t.body, t.encoding, t.delay, t.available_at, t.priority,
           t.dedupe_key, t.group_key, t.headers), t.ord
  INTO problem, bad_position
  FROM unnest(payloads, bodies, encodings, delays, available_ats, priorities, dedupe_keys, group_keys, headers)
         WITH ORDINALITY AS t(payload, body, encoding, delay, available_at, priority, dedupe_key, group_key, headers, ord)
  WHERE {{schema}}.message_problem(q.max_payload_bytes, t.payload, t.body, t.encoding, t.delay, t.available_at, t.priority,
          t.dedupe_key, t.group_key, t.headers) IS NOT NULL
  ORDER BY t.ord LIMIT 1;
  PERFORM {{schema}}.raise_problem(problem, queue, bad_position);
  IF NOT EXISTS (SELECT 1 FROM unnest(dedupe_keys) k WHERE k IS NOT NULL) THEN
    -- Identity values are drawn in the order rows are inserted, which follows ORDER BY ord, so
    -- sorting the new ids restores input order.
    RETURN QUERY
    WITH inserted AS (
      INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, group_key)
      SELECT send_batch.queue, t.priority, coalesce(t.available_at, CASE WHEN t.delay IS NULL THEN now() ELSE clock_timestamp() + t.delay END), t.encoding, t.payload,
             t.body, t.headers, t.group_key
      FROM unnest(payloads, bodies, encodings, delays, available_ats, priorities, group_keys, headers)
           WITH ORDINALITY AS t(payload, body, encoding, delay, available_at, priority, group_key, headers, ord)
      ORDER BY t.ord
      RETURNING m.id
    )
    SELECT i.id, false FROM inserted i ORDER BY i.id;
    PERFORM {{schema}}.wake(queue);
    RETURN;
  END IF;
  -- With dedupe keys. Two statements that insert the same new keys wait for each other's
  -- commit, key by key; taking the keys in input order, two batches with the keys in opposite
  -- orders each held what the other waited for (40P01). One INSERT sorted by key (bytewise, the
  -- same in every session) makes every such wait go one way. The ids are drawn first, in input
  -- order, and given to the rows explicitly, so the batch keeps its order (groups are ordered by
  -- id); an id drawn for a duplicate is never used.
  new_ids := ARRAY(SELECT nextval('{{schema}}.messages_id_seq') FROM generate_series(1, n));
  ids := array_fill(NULL::bigint, ARRAY[n]);
  duplicates := array_fill(false, ARRAY[n]);
  -- 0009: on a queue with a dedupe window, the first message of each key takes the key's window
  -- (keys in the same bytewise order, for the same reason); a key whose window another send holds
  -- is a duplicate of that send at every position of the batch.
  IF q.dedupe_window IS NOT NULL THEN
    WITH firsts AS (
      SELECT DISTINCT ON (t.dedupe_key) t.dedupe_key, t.ord
      FROM unnest(dedupe_keys) WITH ORDINALITY AS t(dedupe_key, ord)
      WHERE t.dedupe_key IS NOT NULL
      ORDER BY t.dedupe_key, t.ord
    ), took AS (
      INSERT INTO {{schema}}.dedupe_windows AS w (queue, dedupe_key, message_id, expires_at)
      SELECT send_batch.queue, f.dedupe_key, new_ids[f.ord], now() + q.dedupe_window
      FROM firsts f
      ORDER BY f.dedupe_key COLLATE "C"
      ON CONFLICT (queue, dedupe_key) DO UPDATE SET message_id = excluded.message_id, expires_at = excluded.expires_at
        WHERE w.expires_at <= now()
      RETURNING w.dedupe_key
    )
    SELECT coalesce(array_agg(k.dedupe_key), '{}') INTO taken FROM took k;
    SELECT array_agg(CASE WHEN t.dedupe_key IS NULL OR t.dedupe_key = ANY (taken) THEN NULL ELSE w.message_id END ORDER BY t.ord),
           array_agg(t.dedupe_key IS NOT NULL AND NOT t.dedupe_key = ANY (taken) ORDER BY t.ord)
    INTO ids, duplicates
    FROM unnest(dedupe_keys) WITH ORDINALITY AS t(dedupe_key, ord)
    LEFT JOIN {{schema}}.dedupe_windows w ON w.queue = send_batch.queue AND w.dedupe_key = t.dedupe_key;
    IF EXISTS (SELECT 1 FROM unnest(ids, duplicates) AS d(id, dup) WHERE d.dup AND d.id IS NULL) THEN
      RAISE EXCEPTION 'could not send to % with dedupe keys: their windows kept changing', queue USING ERRCODE = '40001';
    END IF;
  END IF;
  FOR attempt IN 1..3 LOOP
    WITH added AS (
      INSERT INTO {{schema}}.messages AS m (id, queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key)
      OVERRIDING SYSTEM VALUE
      SELECT new_ids[t.ord], send_batch.queue, t.priority,
             coalesce(t.available_at, CASE WHEN t.delay IS NULL THEN now() ELSE clock_timestamp() + t.delay END),
             t.encoding, t.payload, t.body, t.headers, t.dedupe_key, t.group_key
      FROM unnest(payloads, bodies, encodings, delays, available_ats, priorities, dedupe_keys, group_keys, headers)
           WITH ORDINALITY AS t(payload, body, encoding, delay, available_at, priority, dedupe_key, group_key, headers, ord)
      WHERE ids[t.ord] IS NULL
      ORDER BY t.dedupe_key COLLATE "C", t.ord
      ON CONFLICT (queue, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
      RETURNING m.id
    )
    SELECT array_agg(CASE WHEN a.id IS NOT NULL THEN a.id ELSE ids[p.ord] END ORDER BY p.ord), inserted + count(a.id)
    INTO ids, inserted
    FROM unnest(new_ids) WITH ORDINALITY AS p(id, ord) LEFT JOIN added a ON a.id = p.id;
    -- The rest met a message with their key: one already here, or an earlier one of this batch.
    SELECT array_agg(coalesce(ids[t.ord], m.id) ORDER BY t.ord),
           array_agg(duplicates[t.ord] OR (ids[t.ord] IS NULL AND m.id IS NOT NULL) ORDER BY t.ord)
    INTO ids, duplicates
    FROM unnest(dedupe_keys) WITH ORDINALITY AS t(dedupe_key, ord)
    LEFT JOIN {{schema}}.messages m ON ids[t.ord] IS NULL AND m.queue = send_batch.queue AND m.dedupe_key = t.dedupe_key;
    EXIT WHEN array_position(ids, NULL) IS NULL;
    -- A duplicate was acked between our insert and our look-up: insert those again.
  END LOOP;
  IF array_position(ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'could not send to % with dedupe keys: they kept changing', queue USING ERRCODE = '40001';
  END IF;
  -- 0009: windows taken for a send that met a pending message with its key are given back.
  IF q.dedupe_window IS NOT NULL THEN
    DELETE FROM {{schema}}.dedupe_windows w
    USING unnest(dedupe_keys, new_ids, ids) AS p(dedupe_key, new_id, id)
    WHERE p.id <> p.new_id AND w.queue = send_batch.queue AND w.dedupe_key = p.dedupe_key AND w.message_id = p.new_id;
  END IF;
  IF inserted > 0 THEN
    PERFORM {{schema}}.wake(queue);
  END IF;
  RETURN QUERY SELECT r.id, r.duplicate FROM unnest(ids, duplicates) WITH ORDINALITY AS r(id, duplicate, ord) ORDER BY r.ord;
END $$;

-- Writes one message into each queue of `targets` (whose wake_key locks this transaction holds:
-- see lock_queues), as send_message does for one queue, and wakes the queues with a waiting
-- consumer. Returns (queue, id, duplicate) per queue, by queue name. A queue deleted before the
-- locks were taken is skipped. The caller has checked the message (message_problem) except for
-- the queues' payload limits: a payload over one raises, and nothing is written.
CREATE OR REPLACE FUNCTION {{schema}}.deliver(targets text[], routing_key text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text, headers jsonb,
  batch_position bigint DEFAULT NULL)
RETURNS TABLE (queue text, id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
-- 0009 (from 0006): on queues with a dedupe window, the key's window is taken before the insert.
#variable_conflict use_column
DECLARE
  size integer := coalesce(pg_column_size(deliver.payload), octet_length(deliver.body));
  got_queues text[];
  got_ids bigint[];
  to_wake text[];
  taken text[];
  held text[];
  remaining text[];
  q text;
  windowed text[];
  window_ids bigint[];
  holder bigint;
  window_held text[] := '{}';
  window_holders bigint[] := '{}';
BEGIN
  IF deliver.dedupe_key IS NULL THEN
    -- One INSERT … SELECT for every queue, which looks the queues up, applies their payload
    -- limits and inserts at once; its RETURNING makes the waiter test of send_message.
    WITH inserted AS (
      INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, group_key, routing_key)
      SELECT qs.name, deliver.priority,
             coalesce(deliver.available_at, CASE WHEN deliver.delay IS NULL THEN now() ELSE clock_timestamp() + deliver.delay END),
             deliver.encoding, deliver.payload, deliver.body, deliver.headers, deliver.group_key, deliver.routing_key
      FROM {{schema}}.queues qs
      WHERE qs.name = ANY (targets) AND qs.max_payload_bytes >= size
      ORDER BY qs.name COLLATE "C"
      RETURNING m.queue, m.id, current_setting('transaction_isolation') <> 'read committed'
        OR EXISTS (SELECT 1 FROM {{schema}}.waiters w WHERE w.queue = m.queue AND NOT w.notified AND w.expires_at > now()) AS must_wake
    )
    SELECT array_agg(i.queue ORDER BY i.queue COLLATE "C"), array_agg(i.id ORDER BY i.queue COLLATE "C"),
           array_agg(i.queue) FILTER (WHERE i.must_wake)
    INTO got_queues, got_ids, to_wake
    FROM inserted i;
    IF coalesce(cardinality(got_queues), 0) < cardinality(targets) THEN
      -- A queue was deleted before the locks (nothing to do), or the payload is over its limit.
      PERFORM {{schema}}.raise_payload_limit(targets, deliver.payload, deliver.body, deliver.encoding, batch_position);
    END IF;
    IF to_wake IS NOT NULL THEN
      FOREACH q IN ARRAY to_wake LOOP
        PERFORM {{schema}}.wake(q); -- tests the waiters again, and notifies only when one still waits
      END LOOP;
    END IF;
    RETURN QUERY SELECT g.queue, g.id, false FROM unnest(got_queues, got_ids) AS g(queue, id);
    RETURN;
  END IF;
  -- With a dedupe key, as send_message: a queue that holds a waiting or in-flight message with
  -- the key keeps it and returns its id. Rows go in in queue order, so two publishers of one key
  -- never wait for each other's unique-index entries in opposite orders.
  PERFORM {{schema}}.raise_payload_limit(targets, deliver.payload, deliver.body, deliver.encoding, batch_position);
  remaining := ARRAY(SELECT qs.name FROM {{schema}}.queues qs WHERE qs.name = ANY (targets));
  -- 0009: each queue with a dedupe window takes the key's window for an id drawn now, queues in
  -- name order as the inserts below; a queue whose window another send holds returns that send's
  -- message as a duplicate.
  windowed := ARRAY(SELECT qs.name FROM {{schema}}.queues qs
                    WHERE qs.name = ANY (remaining) AND qs.dedupe_window IS NOT NULL ORDER BY qs.name COLLATE "C");
  window_ids := ARRAY(SELECT nextval('{{schema}}.messages_id_seq') FROM unnest(windowed));
  FOR i IN 1..cardinality(windowed) LOOP
    holder := {{schema}}.take_dedupe_window(windowed[i], deliver.dedupe_key, window_ids[i],
      (SELECT qs.dedupe_window FROM {{schema}}.queues qs WHERE qs.name = windowed[i]));
    IF holder IS NOT NULL THEN
      window_held := window_held || windowed[i];
      window_holders := window_holders || holder;
      remaining := array_remove(remaining, windowed[i]);
    END IF;
  END LOOP;
  FOR round IN 1..3 LOOP
    IF cardinality(remaining) = 0 THEN
      -- 0009: the queues whose window another send holds, after the others (as held ones are).
      RETURN QUERY SELECT w.queue, w.id, true FROM unnest(window_held, window_holders) AS w(queue, id);
      RETURN;
    END IF;
    WITH inserted AS (
      INSERT INTO {{schema}}.messages AS m (id, queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key, routing_key)
      OVERRIDING SYSTEM VALUE
      SELECT coalesce(w.id, nextval('{{schema}}.messages_id_seq')), t.name, deliver.priority,
             coalesce(deliver.available_at, CASE WHEN deliver.delay IS NULL THEN now() ELSE clock_timestamp() + deliver.delay END),
             deliver.encoding, deliver.payload, deliver.body, deliver.headers, deliver.dedupe_key, deliver.group_key, deliver.routing_key
      FROM unnest(remaining) AS t(name)
      LEFT JOIN unnest(windowed, window_ids) AS w(name, id) ON w.name = t.name
      ORDER BY t.name COLLATE "C"
      ON CONFLICT (queue, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
      RETURNING m.queue, m.id
    )
    SELECT array_agg(i.queue), array_agg(i.id) INTO got_queues, got_ids FROM inserted i;
    taken := coalesce(got_queues, '{}');
    IF got_queues IS NOT NULL THEN
      RETURN QUERY SELECT g.queue, g.id, false FROM unnest(got_queues, got_ids) AS g(queue, id);
      FOREACH q IN ARRAY got_queues LOOP
        PERFORM {{schema}}.wake(q);
      END LOOP;
    END IF;
    -- The others hold the key: look their messages up (this statement's snapshot sees them).
    SELECT array_agg(m.queue), array_agg(m.id) INTO got_queues, got_ids
    FROM {{schema}}.messages m
    WHERE m.queue = ANY (remaining) AND NOT m.queue = ANY (taken) AND m.dedupe_key = deliver.dedupe_key;
    held := coalesce(got_queues, '{}');
    -- 0009: a window taken for a queue where a pending message holds the key is given back.
    IF cardinality(held) > 0 AND cardinality(windowed) > 0 THEN
      DELETE FROM {{schema}}.dedupe_windows d USING unnest(windowed, window_ids) AS w(name, id)
      WHERE w.name = ANY (held) AND d.queue = w.name AND d.dedupe_key = deliver.dedupe_key AND d.message_id = w.id;
    END IF;
    IF got_queues IS NOT NULL THEN
      RETURN QUERY SELECT g.queue, g.id, true FROM unnest(got_queues, got_ids) AS g(queue, id);
    END IF;
    -- What is left had its duplicate acked between the insert and the look-up: try again.
    remaining := ARRAY(SELECT r FROM unnest(remaining) r WHERE NOT r = ANY (taken || held));
  END LOOP;
  RAISE EXCEPTION 'could not publish to % with dedupe key %: it kept changing', remaining, deliver.dedupe_key
    USING ERRCODE = '40001';
END $$;

-- Schedules: one row per name. next_fire_at is the next tick to fire, an instant; the expression
-- and time zone are read by the scheduler (Node), which sets it.
CREATE TABLE {{schema}}.schedules (
  name text PRIMARY KEY
    CONSTRAINT schedules_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,62}$'),
  queue text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  cron text NOT NULL,
  timezone text NOT NULL DEFAULT 'UTC',
  payload jsonb NOT NULL,
  headers jsonb,
  priority integer NOT NULL DEFAULT 0,
  missed text NOT NULL DEFAULT 'latest'
    CONSTRAINT schedules_missed_valid CHECK (missed IN ('skip', 'latest', 'all')),
  next_fire_at timestamptz NOT NULL,
  last_fire_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_next_fire_idx ON {{schema}}.schedules (next_fire_at);

-- Every tick fired, by schedule name (not by row, so a schedule deleted and made again cannot
-- fire a tick twice), with the message it sent. Kept one day.
CREATE TABLE {{schema}}.schedule_fires (
  schedule text NOT NULL,
  fire_at timestamptz NOT NULL,
  message_id bigint,
  fired_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (schedule, fire_at)
);

-- Fires ticks of a schedule whose row the caller holds (SELECT … FOR UPDATE in this transaction):
-- moves next_fire_at from expected_next to next_fire_at, records each tick not fired before,
-- sends one message for each (one send_batch, with the headers postbox-schedule and
-- postbox-fire-at, the tick in ISO 8601 UTC), and returns the ticks fired with their message ids.
-- Fires nothing when next_fire_at is no longer expected_next (another process fired it).
CREATE FUNCTION {{schema}}.fire_schedule(name text, fire_ats timestamptz[], next_fire_at timestamptz,
  expected_next timestamptz)
RETURNS TABLE (fire_at timestamptz, message_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema_name}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  s schedules;
  fresh timestamptz[];
  ids bigint[];
BEGIN
  UPDATE schedules
  SET next_fire_at = fire_schedule.next_fire_at,
      last_fire_at = greatest(last_fire_at, (SELECT max(f) FROM unnest(fire_ats) f))
  WHERE schedules.name = fire_schedule.name AND schedules.next_fire_at = expected_next
  RETURNING * INTO s;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  WITH recorded AS (
    INSERT INTO schedule_fires AS f (schedule, fire_at)
    SELECT s.name, t.fire_at FROM unnest(fire_ats) AS t(fire_at) ORDER BY t.fire_at
    ON CONFLICT (schedule, fire_at) DO NOTHING
    RETURNING f.fire_at
  )
  SELECT coalesce(array_agg(r.fire_at ORDER BY r.fire_at), '{}') INTO fresh FROM recorded r;
  IF cardinality(fresh) = 0 THEN
    RETURN;
  END IF;
  SELECT array_agg(b.id ORDER BY b.ord) INTO ids
  FROM send_batch(s.queue,
    array_fill(s.payload, ARRAY[cardinality(fresh)]),
    array_fill(NULL::bytea, ARRAY[cardinality(fresh)]),
    array_fill('json'::text, ARRAY[cardinality(fresh)]),
    array_fill(NULL::interval, ARRAY[cardinality(fresh)]),
    array_fill(NULL::timestamptz, ARRAY[cardinality(fresh)]),
    array_fill(s.priority, ARRAY[cardinality(fresh)]),
    array_fill(NULL::text, ARRAY[cardinality(fresh)]),
    array_fill(NULL::text, ARRAY[cardinality(fresh)]),
    ARRAY(SELECT coalesce(s.headers, '{}') || jsonb_build_object('postbox-schedule', s.name,
                   'postbox-fire-at', to_char(t.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
          FROM unnest(fresh) WITH ORDINALITY AS t(fire_at, ord) ORDER BY t.ord)
  ) WITH ORDINALITY AS b(id, duplicate, ord);
  UPDATE schedule_fires f SET message_id = t.id
  FROM unnest(fresh, ids) AS t(fire_at, id)
  WHERE f.schedule = s.name AND f.fire_at = t.fire_at;
  DELETE FROM schedule_fires f WHERE f.schedule = s.name AND f.fire_at < now() - interval '1 day';
  RETURN QUERY SELECT t.fire_at, t.id FROM unnest(fresh, ids) AS t(fire_at, id);
END $$;

-- Schedules as people read them: the next and the last tick, and how late the next one is.
CREATE VIEW {{schema}}.schedule_stats AS
SELECT s.name AS schedule, s.queue, s.cron, s.timezone, s.missed, s.next_fire_at, s.last_fire_at,
       greatest(now() - s.next_fire_at, '0') AS overdue
FROM {{schema}}.schedules s;

-- Nothing for PUBLIC, as for every function before (postbox roles grants what each role needs).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
