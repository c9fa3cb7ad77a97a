-- postbox 0003: a leaner hot path (npm run bench; docs/performance.md has the figures).
--
-- A send paid for five statements inside send_message (lock, queue look-up, a nested plpgsql
-- validation call, the insert, a nested wake call), and a batch for one plpgsql call per message
-- to validate it. Now:
--   * message_problem and wake_key are plain SQL expressions, which the planner inlines into the
--     statements that use them: no function call per message, in send and in send_batch alike.
--   * send_message without a dedupe key is one INSERT … SELECT FROM queues that looks the queue
--     up, validates and inserts at once; only when it inserts nothing does the slow path run, to
--     raise the right error. The ON CONFLICT arbiter (a speculative insertion) is paid only by
--     messages that carry a dedupe key.
--   * senders call wake() only when a waiter needs telling (or outside READ COMMITTED).
--   * a claim draws one lease token per claim rather than one per message: the fence is the
--     (id, lease) pair, and a later claim of the same message draws a new token; and it plans
--     its statements once per session (generic plans) instead of on every call.
--   * ack returns whole rows only for queues that keep acked messages in the archive.

CREATE OR REPLACE FUNCTION {{schema}}.wake_key(queue text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended('postbox.wake:{{schema_name}}:' || queue, 0) $$;

-- What is wrong with one message for a queue with this payload limit, as 'SQLSTATE:message', or
-- NULL when nothing is. A single SQL expression, inlined by the planner into the statement that
-- calls it (STABLE, not IMMUTABLE, because format() is STABLE and would otherwise stop inlining).
CREATE OR REPLACE FUNCTION {{schema}}.message_problem(max_payload_bytes integer, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text, headers jsonb)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN encoding IS NULL OR encoding NOT IN ('json', 'text', 'binary')
         OR (encoding = 'json') <> (payload IS NOT NULL) OR (encoding = 'json') = (body IS NOT NULL)
      THEN 'PBP02:a message needs exactly one payload: JSON, text or binary'
    WHEN coalesce(pg_column_size(payload), octet_length(body)) > max_payload_bytes
      THEN format('PBP01:payload of %s bytes is over the limit of %s bytes',
                  coalesce(pg_column_size(payload), octet_length(body)), max_payload_bytes)
    WHEN delay < '0' THEN format('PBV01:delay must not be negative, got %s', delay)
    WHEN delay IS NOT NULL AND available_at IS NOT NULL THEN 'PBV01:give delay or available_at, not both'
    WHEN priority IS NULL OR priority NOT BETWEEN -1000000 AND 1000000
      THEN 'PBV01:priority must be an integer from -1000000 to 1000000'
    WHEN octet_length(dedupe_key) NOT BETWEEN 1 AND 512 OR octet_length(group_key) NOT BETWEEN 1 AND 512
      THEN 'PBV01:dedupe and group keys must be 1 to 512 bytes'
    WHEN jsonb_typeof(headers) <> 'object' OR jsonb_path_exists(headers, '$.* ? (@.type() != "string")')
      THEN 'PBV01:headers must be a JSON object of string values'
    WHEN pg_column_size(headers) > 16384 THEN 'PBV01:headers must be at most 16 KiB'
  END
$$;

CREATE OR REPLACE FUNCTION {{schema}}.send_message(queue text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text,
  headers jsonb, OUT id bigint, OUT duplicate boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  q {{schema}}.queues;
  problem text;
  must_wake boolean;
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
  FOR i IN 1..3 LOOP
    INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key)
    VALUES (queue, priority, coalesce(send_message.available_at, CASE WHEN delay IS NULL THEN now() ELSE clock_timestamp() + delay END),
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
      RETURN;
    END IF;
    -- The duplicate was acked between our insert and our look-up: try the insert again.
  END LOOP;
  RAISE EXCEPTION 'could not send to % with dedupe key %: it kept changing', queue, dedupe_key
    USING ERRCODE = '40001';
END $$;

-- Claims up to max messages of a queue under a lease, counting the attempt (as in 0001, with one
-- lease token per claim).
CREATE OR REPLACE FUNCTION {{schema}}.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS SETOF {{schema}}.messages
LANGUAGE plpgsql
-- With the default plan_cache_mode, the claim's statements kept custom plans, planned again on
-- every call; their generic plans are the same index scans. pgbench, one client: receive(1)
-- 0.61-0.77 ms with the default, 0.44-0.45 ms with this clause.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  q {{schema}}.queues;
  picked bigint[];
  exhausted bigint[];
  taken integer := 0;
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
           array_agg(c.id) FILTER (WHERE c.attempt >= q.max_attempts AND c.lease IS NOT NULL)
    INTO picked, exhausted
    FROM (
      SELECT m.id, m.attempt, m.lease, m.priority, m.available_at FROM {{schema}}.messages m
      WHERE m.queue = receive.queue AND m.available_at <= now()
      ORDER BY m.priority DESC, m.available_at, m.id
      LIMIT max - taken
      FOR UPDATE SKIP LOCKED
    ) c;
    IF picked IS NOT NULL THEN
      -- Claimed rows get a lease expiry in the future, so a later round does not see them again.
      RETURN QUERY
      WITH claimed AS (
        UPDATE {{schema}}.messages m
        SET attempt = m.attempt + 1, lease = token, claimed_at = now(),
            available_at = now() + coalesce(visibility_timeout, q.visibility_timeout)
        WHERE m.id = ANY (picked)
        RETURNING m.*
      )
      SELECT c.* FROM claimed c JOIN unnest(picked) WITH ORDINALITY AS p(id, ord) ON p.id = c.id ORDER BY p.ord;
      taken := taken + cardinality(picked);
    END IF;
    EXIT WHEN exhausted IS NULL;
    -- A message whose last attempt's lease ran out (its consumer died) is dead, not redelivered.
    PERFORM {{schema}}.dead_letter(exhausted, 'lease expired on the last attempt');
    EXIT WHEN taken >= max;
  END LOOP;
END $$;

