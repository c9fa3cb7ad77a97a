-- postbox 0005: two guarantees that broke with two app instances or a late commit, and the SQL
-- create_queue that 0001's error hint promised.
--
-- 1. Dedupe keys are taken in one order. send_batch with dedupe keys sent its messages key by
--    key in input order inside one statement; two statements with the same new keys in opposite
--    orders each held a key the other waited for (deadlock, 40P01), and the coalescer failed
--    every send that shared the losing statement. Now one INSERT takes the keys sorted bytewise,
--    so two statements wait for each other only in that order and never in a circle; the ids are
--    drawn first, in input order, so a batch's messages keep the order they were given in (their
--    group order, and the tie-break of the claim). It is also one statement instead of a
--    send_message call per message.
--
-- 2. One message of a group in flight at a time, always. 0004 claimed a grouped message when no
--    older id of its group was in the table. Ids are not commit order: transaction A sends 1
--    (group k) and stays open, a send that commits at once makes 2, a claim takes 2, A commits,
--    and the next claim took 1 while 2 was still in flight. A check across message rows cannot
--    close that gap, because each claim reads its own snapshot and SKIP LOCKED lets two claims
--    lock two different messages of one group: both saw "nothing of group k in flight".
--
--    So a group is now serialised on one row: group_leases (queue, group_key) names the message
--    that holds the group and until when. A claim takes a grouped message only together with
--    that row, and decides on the row's newest version under its row lock, never on a snapshot:
--      * a row this claim's snapshot sees is locked with FOR UPDATE SKIP LOCKED, and Postgres
--        re-evaluates "free (expired) or already held by this very message" on the newest
--        version of the row (EvalPlanQual) before the claim updates it; a row locked by another
--        claim or an ack under way is skipped, not waited for;
--      * a row the snapshot does not see is inserted with ON CONFLICT DO NOTHING: if another
--        transaction inserted it meanwhile, the unique key makes this insert do nothing (after
--        waiting for that transaction, the only wait a claim can meet: see claim_groups).
--    Whatever two claims see, only one of them can write the row, and the other finds it held.
--    The row is the lock; the message rows keep their own leases as before.
--
--    Its life: the claim writes it (message id, expiry = the delivery's lease expiry); extend
--    moves the expiry with the lease; ack deletes it with the message (so the table holds only
--    groups with a message in flight or waiting for its retry); nack with a retry keeps it until
--    the retry is due, so the group stays blocked while its failed head waits (as before);
--    dead-lettering deletes it (the group goes on without that message); release (a worker
--    stopping) keeps it, and the released message, still its holder, is claimed next. A consumer
--    that crashed frees its group when its lease ends: the row has expired, and whichever of the
--    group's messages is claimable first takes it. deleteQueue deletes the queue's rows.
--
--    Order within a group: the claim still takes the oldest id of the group that its snapshot
--    sees (messages_group_idx), so messages committed by the time of the claim go in id order. A
--    message that commits after younger ones of its group were claimed cannot go back in time:
--    it is handled after them, in commit order, never alongside them.
--
--    Cost: ungrouped messages pay nothing new (the group conditions are skipped for group_key
--    NULL; ack and extend carry a join over the grouped rows only). Sends write nothing extra. A
--    grouped message costs one row written by its claim and deleted by its ack.
--
-- 3. ack returns whole rows only for queues that keep acked messages in the archive. 0003's header
--    promised this, but 0003 did not change ack: it is done here. ack is plpgsql now, so its plan
--    is kept for the session instead of being made again on every call (see ack).
--
-- 4. create_queue(name, ...) in SQL, with named arguments, the defaults and validation of
--    createQueue() (the hint of 0001's require_queue named it before it existed).
--
-- From this migration on, every restated function body starts with a comment line saying what
-- changed from the previous version (docs/migrations.md).

CREATE TABLE {{schema}}.group_leases (
  queue      text NOT NULL,
  group_key  text NOT NULL,
  -- The message that holds the group: in flight, or waiting for its retry.
  message_id bigint NOT NULL,
  -- The group is free from this time on: the holder's lease expiry, or its retry time.
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (queue, group_key)
);
-- Rows are written by claims and deleted by acks, as messages are: vacuum by count, as 0002 does.
ALTER TABLE {{schema}}.group_leases SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 5000,
  autovacuum_vacuum_cost_delay = 1
);

-- Groups in flight when this migration runs keep their holder, so their leases still extend and
-- no second message of the group is claimed beside them. Where 0004 let two run at once, the
-- oldest keeps the group and the other's next extend reports its lease lost.
INSERT INTO {{schema}}.group_leases (queue, group_key, message_id, expires_at)
SELECT DISTINCT ON (m.queue, m.group_key) m.queue, m.group_key, m.id, m.available_at
FROM {{schema}}.messages m
WHERE m.group_key IS NOT NULL AND m.lease IS NOT NULL AND m.available_at > now()
ORDER BY m.queue, m.group_key, m.id;

-- Takes the group leases of grouped messages a claim has locked: keys[i] is the group of ids[i],
-- one message per group. Returns the ids whose group this claim now holds, until lease_until. Called
-- by receive only for grouped messages. On the hot path like receive: no SET search_path (see
-- 0001), every object named with its schema, SECURITY INVOKER.
CREATE FUNCTION {{schema}}.claim_groups(queue text, ids bigint[], keys text[], lease_until timestamptz) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  held bigint[];
  added bigint[];
BEGIN
  -- Rows this snapshot sees: free (expired) or held by the same message (a retry, a release, an
  -- expired lease of its own), and not locked by another transaction right now. The WHERE is
  -- re-checked on the newest version of each row once it is locked.
  WITH free AS (
    SELECT l.group_key, w.id
    FROM {{schema}}.group_leases l
    JOIN unnest(ids, keys) AS w(id, group_key) ON l.group_key = w.group_key
    WHERE l.queue = claim_groups.queue AND (l.expires_at <= now() OR l.message_id = w.id)
    FOR UPDATE OF l SKIP LOCKED
  ), taken AS (
    UPDATE {{schema}}.group_leases l SET message_id = f.id, expires_at = lease_until
    FROM free f
    WHERE l.queue = claim_groups.queue AND l.group_key = f.group_key
    RETURNING l.message_id
  )
  SELECT array_agg(t.message_id) INTO held FROM taken t;
  -- Rows no snapshot so far has seen: insert them, in one order (by key, bytewise). An insert
  -- waits only for another transaction that inserted or deleted the same key and has not
  -- committed yet (another claim, or an ack racing this claim); were two such waits ever to form
  -- a circle, the one that detects it gives up its inserts here and claims those groups later.
  BEGIN
    WITH inserted AS (
      INSERT INTO {{schema}}.group_leases AS l (queue, group_key, message_id, expires_at)
      SELECT claim_groups.queue, w.group_key, w.id, lease_until
      FROM unnest(ids, keys) AS w(id, group_key)
      WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.group_leases x WHERE x.queue = claim_groups.queue AND x.group_key = w.group_key)
      ORDER BY w.group_key COLLATE "C"
      ON CONFLICT (queue, group_key) DO NOTHING
      RETURNING l.message_id
    )
    SELECT array_agg(i.message_id) INTO added FROM inserted i;
  EXCEPTION WHEN deadlock_detected THEN
    added := NULL;
  END;
  RETURN coalesce(held, '{}') || coalesce(added, '{}');
END $$;

-- Claims up to max messages of a queue under a lease, counting the attempt.
CREATE OR REPLACE FUNCTION {{schema}}.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS SETOF {{schema}}.messages
LANGUAGE plpgsql
-- With the default plan_cache_mode, the claim's statements kept custom plans, planned again on
-- every call; their generic plans are the same index scans. pgbench, one client: receive(1)
-- 0.61-0.77 ms with the default, 0.44-0.45 ms with this clause.
SET plan_cache_mode = force_generic_plan
AS $$
-- 0005 (from 0004): a grouped message is claimed only with its group's lease (claim_groups); held groups are skipped.
DECLARE
  q {{schema}}.queues;
  candidates bigint[];
  grouped bigint[];
  grouped_keys text[];
  granted bigint[];
  picked bigint[];
  exhausted bigint[];
  taken integer := 0;
  lease_until timestamptz;
  -- One fencing token per claim: ack, nack and extend match (id, lease), and a later claim of the
  -- same message draws a new one. (One per message cost a random draw per row.)
  token uuid := gen_random_uuid();
BEGIN
  SELECT * INTO q FROM {{schema}}.queues WHERE name = queue;
  IF NOT FOUND THEN
    q := {{schema}}.require_queue(queue); -- raises the right error
  END IF;
  IF max IS NULL OR max NOT BETWEEN 1 AND 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('max must be from 1 to 1000, got %s', max);
  END IF;
  IF visibility_timeout <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'visibility timeout must be positive';
  END IF;
  lease_until := now() + coalesce(visibility_timeout, q.visibility_timeout);
  -- Exhausted messages (see below) take places in the LIMIT; without another round a claim could
  -- return nothing while ready messages wait behind them, and a consumer would go idle. Each
  -- round moves at least one exhausted message away, and the rounds are capped so one call's
  -- work stays bounded.
  FOR round IN 1..10 LOOP
    -- The locked ids are collected into an array before anything is updated, so the planner
    -- cannot re-run the locking subquery and claim more than max rows (seen in other queues).
    -- Exhausted means the lease of the last allowed attempt ran out (the lease is still set). A
    -- message given back without a verdict (release, lease NULL) gets its delivery even past
    -- maxAttempts: a worker stopping on a message's last attempt must not kill a healthy message.
    SELECT array_agg(c.id ORDER BY c.priority DESC, c.available_at, c.id)
             FILTER (WHERE c.attempt < q.max_attempts OR c.lease IS NULL),
           array_agg(c.id) FILTER (WHERE (c.attempt < q.max_attempts OR c.lease IS NULL) AND c.group_key IS NOT NULL),
           array_agg(c.group_key) FILTER (WHERE (c.attempt < q.max_attempts OR c.lease IS NULL) AND c.group_key IS NOT NULL),
           array_agg(c.id) FILTER (WHERE c.attempt >= q.max_attempts AND c.lease IS NOT NULL)
    INTO candidates, grouped, grouped_keys, exhausted
    FROM (
      SELECT m.id, m.attempt, m.lease, m.priority, m.available_at, m.group_key FROM {{schema}}.messages m
      WHERE m.queue = receive.queue AND m.available_at <= now()
        -- A grouped message is a candidate when it is the oldest of its group here and its group
        -- is not held by another message (as this snapshot sees it; claim_groups decides on the
        -- newest row). So a claim takes at most one message per group.
        AND (m.group_key IS NULL OR (
          NOT EXISTS (SELECT 1 FROM {{schema}}.messages g
                      WHERE g.queue = m.queue AND g.group_key = m.group_key AND g.id < m.id)
          AND NOT EXISTS (SELECT 1 FROM {{schema}}.group_leases l
                          WHERE l.queue = m.queue AND l.group_key = m.group_key AND l.message_id <> m.id AND l.expires_at > now())))
      ORDER BY m.priority DESC, m.available_at, m.id
      LIMIT max - taken
      FOR UPDATE OF m SKIP LOCKED
    ) c;
    picked := candidates;
    IF grouped IS NOT NULL THEN
      granted := {{schema}}.claim_groups(queue, grouped, grouped_keys, lease_until);
      IF cardinality(granted) < cardinality(grouped) THEN
        -- A group another claim took meanwhile: its message stays where it is (its row lock ends with this statement).
        picked := ARRAY(SELECT p.id FROM unnest(candidates) WITH ORDINALITY AS p(id, ord)
                        WHERE p.id <> ALL (grouped) OR p.id = ANY (granted) ORDER BY p.ord);
      END IF;
    END IF;
    IF cardinality(picked) > 0 THEN
      -- Claimed rows get a lease expiry in the future, so a later round does not see them again.
      RETURN QUERY
      WITH claimed AS (
        UPDATE {{schema}}.messages m
        SET attempt = m.attempt + 1, lease = token, claimed_at = now(), available_at = lease_until
        WHERE m.id = ANY (picked)
        RETURNING m.*
      )
      SELECT c.* FROM claimed c JOIN unnest(picked) WITH ORDINALITY AS p(id, ord) ON p.id = c.id ORDER BY p.ord;
      taken := taken + cardinality(picked);
    END IF;
    EXIT WHEN exhausted IS NULL;
    -- A message whose last attempt's lease ran out (its consumer died) is dead, not redelivered.
    -- Its group lease has expired with it; the row goes too, unless a claim holds it right now.
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

-- Acks deliveries, each fenced by its lease: a delivery whose lease was lost (expired and claimed
-- again) is not acked. Returns the ids that were acked. Queues with a retention period keep the
-- acked message in messages_archive.
--
-- plpgsql now, not SQL: Postgres 15 to 17 plan an SQL function's statement again on every call,
-- and that planning was most of an ack's cost; plpgsql keeps its plans for the session. Measured
-- on Postgres 15 (EXPLAIN ANALYZE of ack of 10, one session, 35 alternating runs each, 2 shared
-- cores): median 0.96 ms before, 0.25 ms now. Messages are deleted first, then group rows, in
-- separate statements, so an ack never holds a group row while it waits for a message row (which
-- a claim could hold while it waits for that group row).
CREATE OR REPLACE FUNCTION {{schema}}.ack(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
-- 0005 (from 0001): plpgsql; whole rows only for a queue with an archive (0003's header promised it); an acked message frees its group.
DECLARE
  acked bigint[];
  freed_ids bigint[];
  freed_queues text[];
  freed_keys text[];
  kept {{schema}}.messages[];
BEGIN
  WITH done AS (
    DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
    WHERE m.id = a.id AND m.lease = a.lease
    RETURNING m.id, m.queue, m.group_key,
      CASE WHEN EXISTS (SELECT 1 FROM {{schema}}.queues q WHERE q.name = m.queue AND q.retention IS NOT NULL) THEN m END AS kept
  )
  SELECT array_agg(d.id), array_agg(d.id) FILTER (WHERE d.group_key IS NOT NULL),
         array_agg(d.queue) FILTER (WHERE d.group_key IS NOT NULL), array_agg(d.group_key) FILTER (WHERE d.group_key IS NOT NULL),
         array_agg(d.kept) FILTER (WHERE (d.kept).id IS NOT NULL)
  INTO acked, freed_ids, freed_queues, freed_keys, kept
  FROM done d;
  IF freed_ids IS NOT NULL THEN
    DELETE FROM {{schema}}.group_leases l USING unnest(freed_ids, freed_queues, freed_keys) AS f(id, queue, group_key)
    WHERE l.queue = f.queue AND l.group_key = f.group_key AND l.message_id = f.id;
  END IF;
  IF kept IS NOT NULL THEN
    INSERT INTO {{schema}}.messages_archive (id, queue, priority, attempt, encoding, payload, body, headers, dedupe_key, group_key, enqueued_at)
    SELECT k.id, k.queue, k.priority, k.attempt, k.encoding, k.payload, k.body, k.headers, k.dedupe_key, k.group_key, k.enqueued_at
    FROM unnest(kept) k;
  END IF;
  RETURN QUERY SELECT a.id FROM unnest(acked) AS a(id);
END $$;

-- Extends leases by a duration from now. Returns the ids whose lease is still held.
CREATE OR REPLACE FUNCTION {{schema}}.extend(ids bigint[], leases uuid[], duration interval) RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  -- 0005 (from 0001): a grouped message extends its group lease too, and has lost its turn once another message holds the group.
  WITH extended AS (
    UPDATE {{schema}}.messages m SET available_at = now() + duration
    FROM unnest(ids, leases) AS a(id, lease)
    WHERE m.id = a.id AND m.lease = a.lease AND duration > '0'
      AND (m.group_key IS NULL OR EXISTS (
        SELECT 1 FROM {{schema}}.group_leases l WHERE l.queue = m.queue AND l.group_key = m.group_key AND l.message_id = m.id))
    RETURNING m.id, m.queue, m.group_key, m.available_at
  ), held AS (
    -- Never shortened: a late extend of an older delivery must not cut a newer claim's lease.
    UPDATE {{schema}}.group_leases l SET expires_at = greatest(l.expires_at, e.available_at)
    FROM (SELECT x.id, x.queue, x.group_key, x.available_at FROM extended x WHERE x.group_key IS NOT NULL) e
    WHERE l.queue = e.queue AND l.group_key = e.group_key AND l.message_id = e.id
  )
  SELECT e.id FROM extended e
$$;

-- Fails a delivery: retries it after delay (or the queue's backoff), or moves it to the dead letter
-- when it used its last attempt or dead is true. Returns 'retried', 'dead' or 'dropped'; NULL when
-- the lease was lost.
CREATE OR REPLACE FUNCTION {{schema}}.nack(id bigint, lease uuid, delay interval DEFAULT NULL, error text DEFAULT NULL,
  dead boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
-- 0005 (from 0001): a grouped message keeps its group until its retry is due, and frees it when dead-lettered.
DECLARE
  m messages;
  q queues;
  retry_at timestamptz;
BEGIN
  IF delay < '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('delay must not be negative, got %s', delay);
  END IF;
  SELECT * INTO m FROM messages WHERE messages.id = nack.id AND messages.lease = nack.lease FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  SELECT * INTO q FROM queues WHERE name = m.queue;
  IF dead OR m.attempt >= q.max_attempts THEN
    IF m.group_key IS NOT NULL THEN
      DELETE FROM group_leases l WHERE l.queue = m.queue AND l.group_key = m.group_key AND l.message_id = m.id;
    END IF;
    PERFORM dead_letter(ARRAY[m.id], left(error, 8192));
    RETURN CASE WHEN q.dead_letter IS NULL THEN 'dropped' ELSE 'dead' END;
  END IF;
  UPDATE messages
  SET lease = NULL, last_error = left(error, 8192), available_at = now() + coalesce(delay, retry_delay(q, m.attempt))
  WHERE messages.id = m.id
  RETURNING available_at INTO retry_at;
  IF m.group_key IS NOT NULL THEN
    UPDATE group_leases l SET expires_at = retry_at
    WHERE l.queue = m.queue AND l.group_key = m.group_key AND l.message_id = m.id;
  END IF;
  RETURN 'retried';
END $$;

-- Sends many messages to one queue in one statement. Arrays are parallel, one element per message;
-- returns the ids in input order. Without dedupe keys this is a single multi-row INSERT.
CREATE OR REPLACE FUNCTION {{schema}}.send_batch(queue text, payloads jsonb[], bodies bytea[], encodings text[],
  delays interval[], available_ats timestamptz[], priorities integer[], dedupe_keys text[],
  group_keys text[], headers jsonb[])
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
-- 0005 (from 0001): with dedupe keys, one INSERT takes the keys in sorted order (no deadlock between two batches), ids drawn in input order.
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
  IF inserted > 0 THEN
    PERFORM {{schema}}.wake(queue);
  END IF;
  RETURN QUERY SELECT r.id, r.duplicate FROM unnest(ids, duplicates) WITH ORDINALITY AS r(id, duplicate, ord) ORDER BY r.ord;
END $$;

-- Looks a queue up by name, or raises PBQ02/PBQ01.
CREATE OR REPLACE FUNCTION {{schema}}.require_queue(queue text) RETURNS {{schema}}.queues
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
-- 0005 (from 0001): the hint names create_queue(), which exists now.
DECLARE
  q queues;
BEGIN
  PERFORM assert_queue_name(queue);
  SELECT * INTO q FROM queues WHERE name = queue;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PBQ01',
      MESSAGE = format('queue %L does not exist', queue),
      HINT = format('Create it first with createQueue(), or in SQL: SELECT {{schema}}.create_queue(%L);', queue);
  END IF;
  RETURN q;
END $$;

-- Creates a queue with the defaults and checks of createQueue(), for SQL-first users:
--   SELECT postbox.create_queue('emails', max_attempts => 10, backoff_base => '5 seconds');
-- Every argument but the name is optional; NULL means the default. dead_letter names the queue
-- that takes exhausted messages (created too if missing); by default '<name>.dead', none for a
-- queue whose name ends in '.dead'; '' means none. Idempotent: a queue that exists with the same
-- settings is returned as it is, one with other settings raises PBV01 (change it with
-- updateQueue()). Returns the queue's row.
CREATE FUNCTION {{schema}}.create_queue(name text, visibility_timeout interval DEFAULT NULL,
  max_attempts integer DEFAULT NULL, backoff_type text DEFAULT NULL, backoff_base interval DEFAULT NULL,
  backoff_max interval DEFAULT NULL, backoff_jitter boolean DEFAULT NULL, dead_letter text DEFAULT NULL,
  max_payload_bytes integer DEFAULT NULL, retention interval DEFAULT NULL)
RETURNS {{schema}}.queues
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  wanted queues;
  q queues;
  differing text[];
BEGIN
  PERFORM assert_queue_name(create_queue.name);
  IF create_queue.visibility_timeout <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('visibility_timeout must be positive, got %s', create_queue.visibility_timeout);
  ELSIF create_queue.max_attempts NOT BETWEEN 1 AND 10000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('max_attempts must be from 1 to 10000, got %s', create_queue.max_attempts);
  ELSIF create_queue.backoff_type NOT IN ('fixed', 'exponential') THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('backoff_type must be fixed or exponential, got %L', create_queue.backoff_type);
  ELSIF create_queue.backoff_base < '0' OR create_queue.backoff_max < '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'backoff_base and backoff_max must not be negative';
  ELSIF create_queue.max_payload_bytes NOT BETWEEN 1 AND 67108864 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('max_payload_bytes must be from 1 to 67108864, got %s', create_queue.max_payload_bytes);
  ELSIF create_queue.retention <= '0' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('retention must be positive, got %s', create_queue.retention);
  ELSIF create_queue.dead_letter <> '' THEN
    PERFORM assert_queue_name(create_queue.dead_letter);
    IF create_queue.dead_letter = create_queue.name THEN
      RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('queue %L cannot be its own dead letter', create_queue.name);
    END IF;
  END IF;
  -- The settings asked for, over the column defaults (those of createQueue()).
  wanted := ROW(create_queue.name, coalesce(create_queue.visibility_timeout, '30 seconds'), coalesce(create_queue.max_attempts, 5),
    coalesce(create_queue.backoff_type, 'exponential'), coalesce(create_queue.backoff_base, '1 second'),
    coalesce(create_queue.backoff_max, '1 hour'), coalesce(create_queue.backoff_jitter, true),
    CASE WHEN create_queue.dead_letter = '' THEN NULL
         WHEN create_queue.dead_letter IS NOT NULL THEN create_queue.dead_letter
         WHEN create_queue.name LIKE '%.dead' THEN NULL
         ELSE create_queue.name || '.dead' END,
    coalesce(create_queue.max_payload_bytes, 262144), create_queue.retention, now(), now());
  -- A max below the base would be meaningless; the base wins, as in createQueue().
  wanted.backoff_max := greatest(wanted.backoff_max, wanted.backoff_base);
  IF create_queue.dead_letter IS NULL AND wanted.dead_letter IS NOT NULL AND wanted.dead_letter !~ '^[a-z0-9][a-z0-9_.:-]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBQ02',
      MESSAGE = format('queue name %L is too long to derive its dead letter %L', create_queue.name, wanted.dead_letter),
      HINT = 'Pass dead_letter explicitly, or dead_letter => '''' for none.';
  END IF;
  INSERT INTO queues SELECT wanted.* ON CONFLICT (name) DO NOTHING RETURNING * INTO q;
  IF FOUND THEN
    IF q.dead_letter IS NOT NULL THEN
      INSERT INTO queues (name) VALUES (q.dead_letter) ON CONFLICT (name) DO NOTHING;
    END IF;
    RETURN q;
  END IF;
  -- It exists: fine with the same settings (those not given are taken as they are, as
  -- createQueue() does), a mistake with others.
  SELECT * INTO q FROM queues WHERE name = create_queue.name;
  differing := ARRAY(SELECT s.setting FROM (VALUES
      ('visibility_timeout', coalesce(create_queue.visibility_timeout, q.visibility_timeout) <> q.visibility_timeout),
      ('max_attempts', coalesce(create_queue.max_attempts, q.max_attempts) <> q.max_attempts),
      ('backoff_type', coalesce(create_queue.backoff_type, q.backoff_type) <> q.backoff_type),
      ('backoff_base', coalesce(create_queue.backoff_base, q.backoff_base) <> q.backoff_base),
      ('backoff_max', greatest(coalesce(create_queue.backoff_max, q.backoff_max), coalesce(create_queue.backoff_base, q.backoff_base)) <> q.backoff_max),
      ('backoff_jitter', coalesce(create_queue.backoff_jitter, q.backoff_jitter) <> q.backoff_jitter),
      ('dead_letter', CASE WHEN create_queue.dead_letter IS NULL THEN q.dead_letter WHEN create_queue.dead_letter = '' THEN NULL
                           ELSE create_queue.dead_letter END IS DISTINCT FROM q.dead_letter),
      ('max_payload_bytes', coalesce(create_queue.max_payload_bytes, q.max_payload_bytes) <> q.max_payload_bytes),
      ('retention', coalesce(create_queue.retention, q.retention) IS DISTINCT FROM q.retention)) AS s(setting, differs)
    WHERE s.differs);
  IF cardinality(differing) > 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01',
      MESSAGE = format('queue %L exists with other settings (%s)', create_queue.name, array_to_string(differing, ', ')),
      HINT = 'Change them with updateQueue(), or call create_queue() with the same settings.';
  END IF;
  RETURN q;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
