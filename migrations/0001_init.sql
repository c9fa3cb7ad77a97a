-- postbox 0001: queues, messages, the wake-up registry and the SQL API.
--
-- {{schema}} is replaced by the migrator with the quoted schema name, and {{schema_name}} with the
-- bare name (a validated plain identifier, used only inside string literals). Functions pin their
-- search_path or name every object with its schema, so a table or function that a user creates
-- elsewhere can never shadow ours (CVE-2018-1058), and nothing here is executable by PUBLIC.
--
-- The functions on the hot path (send_message, send_batch, receive, ack, wake, wake_key,
-- message_problem) do not SET search_path: on a send, that clause alone cost about a quarter of
-- the calls per second (pgbench, 10 clients: 6.1k with it, 7.9k without). They name every
-- postbox object with its schema instead, and are SECURITY INVOKER, so a caller's search_path
-- can only ever change what that caller itself runs; built-ins resolve from pg_catalog, which
-- Postgres searches first. Every other function pins search_path.
--
-- Errors raised here use SQLSTATEs of class PB, which the TypeScript client maps to typed errors:
--   PBQ01 queue not found        PBQ02 invalid queue name     PBQ03 queue not empty
--   PBP01 payload too large      PBP02 invalid payload        PBV01 invalid options

CREATE TABLE {{schema}}.queues (
  name               text PRIMARY KEY,
  visibility_timeout interval NOT NULL DEFAULT '30 seconds',
  max_attempts       integer NOT NULL DEFAULT 5,
  backoff_type       text NOT NULL DEFAULT 'exponential',
  backoff_base       interval NOT NULL DEFAULT '1 second',
  backoff_max        interval NOT NULL DEFAULT '1 hour',
  backoff_jitter     boolean NOT NULL DEFAULT true,
  -- Where exhausted messages go; NULL drops them.
  dead_letter        text,
  max_payload_bytes  integer NOT NULL DEFAULT 262144,
  -- How long acked messages stay readable in messages_archive; NULL deletes them on ack.
  retention          interval,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT queues_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,62}$'),
  CONSTRAINT queues_dead_letter_valid CHECK (dead_letter ~ '^[a-z0-9][a-z0-9_.:-]{0,62}$' AND dead_letter <> name),
  CONSTRAINT queues_visibility_timeout_positive CHECK (visibility_timeout > '0'),
  CONSTRAINT queues_max_attempts_positive CHECK (max_attempts >= 1),
  CONSTRAINT queues_backoff_type_valid CHECK (backoff_type IN ('fixed', 'exponential')),
  CONSTRAINT queues_backoff_valid CHECK (backoff_base >= '0' AND backoff_max >= backoff_base),
  CONSTRAINT queues_max_payload_bytes_positive CHECK (max_payload_bytes > 0),
  CONSTRAINT queues_retention_positive CHECK (retention > '0')
);

-- One row per message that is waiting, delayed, in flight or dead. Acked messages are deleted
-- (or moved to messages_archive when the queue keeps them), so this table stays as small as the
-- backlog. There is deliberately no foreign key to queues: a key check would row-lock the queue
-- row on every send and serialise senders behind a multixact.
CREATE TABLE {{schema}}.messages (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue          text NOT NULL,
  priority       integer NOT NULL DEFAULT 0,
  -- When the message can next be claimed: its delay while waiting, its lease expiry while in flight.
  -- An expired lease therefore makes a message claimable again without any rescuer process.
  available_at   timestamptz NOT NULL DEFAULT now(),
  -- Deliveries so far in this queue; the claim counts an attempt in the same statement that
  -- leases it. Dead-lettering and redrive start it again at 0, because the queue a message moves
  -- to judges it by its own maxAttempts (a dead letter of a 5-attempt queue would otherwise be
  -- dropped by its dead-letter queue's first claim, unseen).
  attempt        integer NOT NULL DEFAULT 0,
  -- The fencing token of the current delivery: ack, nack and extend must present it.
  lease          uuid,
  -- JSON payloads live in payload; text (UTF-8) and binary payloads live in body.
  encoding       text NOT NULL DEFAULT 'json',
  payload        jsonb,
  body           bytea,
  headers        jsonb,
  dedupe_key     text,
  group_key      text,
  enqueued_at    timestamptz NOT NULL DEFAULT now(),
  claimed_at     timestamptz,
  last_error     text,
  -- Set when the message was dead-lettered: where it came from, how many deliveries it had
  -- there, and when.
  original_queue   text,
  original_attempt integer,
  dead_at          timestamptz,
  CONSTRAINT messages_encoding_valid CHECK (
    (encoding = 'json' AND payload IS NOT NULL AND body IS NULL) OR
    (encoding IN ('text', 'binary') AND body IS NOT NULL AND payload IS NULL))
);

-- Serves the claim: equality on queue, then the delivery order. In-flight and delayed rows sort
-- after the ready ones of their priority, so a claim reads ready rows first.
CREATE INDEX messages_claim_idx ON {{schema}}.messages (queue, priority DESC, available_at, id);
-- Deduplication holds while a message with the key is waiting or in flight (acked rows are gone).
CREATE UNIQUE INDEX messages_dedupe_idx ON {{schema}}.messages (queue, dedupe_key) WHERE dedupe_key IS NOT NULL;

-- Acked messages of queues with a retention period, for audit and SQL inspection.
CREATE TABLE {{schema}}.messages_archive (
  id          bigint PRIMARY KEY,
  queue       text NOT NULL,
  priority    integer NOT NULL,
  attempt     integer NOT NULL,
  encoding    text NOT NULL,
  payload     jsonb,
  body        bytea,
  headers     jsonb,
  dedupe_key  text,
  group_key   text,
  enqueued_at timestamptz NOT NULL,
  acked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_archive_acked_idx ON {{schema}}.messages_archive (queue, acked_at);

-- Consumers that are idle and listening, per queue. A sender NOTIFYs only when a row here says
-- someone waits and was not told yet, so senders do not pay NOTIFY's commit-time global lock
-- otherwise: at most one notification per queue each time a consumer goes idle.
CREATE TABLE {{schema}}.waiters (
  queue      text NOT NULL,
  listener   text NOT NULL,
  expires_at timestamptz NOT NULL,
  -- Set by the first sender after the consumer registered; the consumer clears it when it waits again.
  notified   boolean NOT NULL DEFAULT false,
  PRIMARY KEY (queue, listener)
);

-- The advisory-lock key that orders senders against a consumer going idle on a queue (see send).
CREATE FUNCTION {{schema}}.wake_key(queue text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$ BEGIN RETURN hashtextextended('postbox.wake:{{schema_name}}:' || queue, 0); END $$;

CREATE FUNCTION {{schema}}.assert_queue_name(queue text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF queue IS NULL OR queue !~ '^[a-z0-9][a-z0-9_.:-]{0,62}$' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBQ02',
      MESSAGE = format('invalid queue name %s', coalesce(quote_literal(left(queue, 80)), 'NULL')),
      HINT = 'Queue names are 1-63 characters of a-z, 0-9, _ . : - and start with a letter or digit.';
  END IF;
END $$;

-- Looks a queue up by name, or raises PBQ02/PBQ01.
CREATE FUNCTION {{schema}}.require_queue(queue text) RETURNS {{schema}}.queues
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  q queues;
BEGIN
  PERFORM assert_queue_name(queue);
  SELECT * INTO q FROM queues WHERE name = queue;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PBQ01',
      MESSAGE = format('queue %L does not exist', queue),
      HINT = 'Create it first with createQueue() or postbox.create_queue().';
  END IF;
  RETURN q;
END $$;

-- Wakes idle consumers of a queue that were not told yet. Called by every send after its insert.
--
-- Why it cannot lose a wake-up: a consumer going idle first commits its waiters row (notified
-- false), then takes this queue's wake_key lock exclusively (try-lock), then looks for messages
-- once more. Every sender holds the same lock shared from before its insert until it commits. A
-- sender whose check below missed the waiters row was therefore still holding the lock when the
-- consumer tried it: the consumer's try-lock fails and it keeps polling quickly until it
-- succeeds, by which time that sender has committed and its message is visible.
--
-- Why it costs little: the first sender after a consumer went idle marks the row notified and
-- NOTIFYs; later senders see it marked and skip NOTIFY (and its commit-time global lock) until
-- the consumer waits again. A row another sender is marking right now is skipped, not waited
-- for, and we notify anyway: a notification too many is cheap, blocking on another sender's
-- transaction is not. Outside READ COMMITTED the check reads an old snapshot, so it always
-- notifies there.
CREATE FUNCTION {{schema}}.wake(queue text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    PERFORM pg_notify('{{schema_name}}', queue);
  ELSIF EXISTS (SELECT 1 FROM {{schema}}.waiters w WHERE w.queue = wake.queue AND NOT w.notified AND w.expires_at > now()) THEN
    UPDATE {{schema}}.waiters w SET notified = true
    FROM (SELECT x.listener FROM {{schema}}.waiters x
          WHERE x.queue = wake.queue AND NOT x.notified AND x.expires_at > now()
          FOR UPDATE SKIP LOCKED) fresh
    WHERE w.queue = wake.queue AND w.listener = fresh.listener;
    -- Identical notifications in one transaction are collapsed by Postgres: one per queue per commit.
    PERFORM pg_notify('{{schema_name}}', queue);
  END IF;
END $$;

-- What is wrong with one message for a queue with this payload limit, as 'SQLSTATE:message', or
-- NULL when nothing is. One plpgsql expression (its plan is cached per session, which an SQL
-- function with a SET clause would not get), so send_batch checks a whole batch in one query.
CREATE FUNCTION {{schema}}.message_problem(max_payload_bytes integer, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text, headers jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
  RETURN CASE
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
  END;
END $$;

-- Raises a problem found by message_problem with its SQLSTATE; position names a batch member.
CREATE FUNCTION {{schema}}.raise_problem(problem text, queue text, batch_position bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  message text := format('%s for queue %L%s', substr(problem, 7), queue,
                         CASE WHEN batch_position IS NOT NULL THEN format(' (message %s of the batch)', batch_position) ELSE '' END);
BEGIN
  IF problem IS NULL THEN
    RETURN;
  ELSIF left(problem, 5) = 'PBP01' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBP01', MESSAGE = message,
      HINT = 'Store large data elsewhere and send a reference, or raise the queue''s maxPayloadBytes.';
  ELSE
    RAISE EXCEPTION USING ERRCODE = left(problem, 5), MESSAGE = message;
  END IF;
END $$;

-- Sends one message. Returns its id, or, when dedupe_key matches a message that is still waiting
-- or in flight, that message's id with duplicate = true. Runs in the caller's transaction.
CREATE FUNCTION {{schema}}.send_message(queue text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text,
  headers jsonb, OUT id bigint, OUT duplicate boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  q {{schema}}.queues;
  problem text;
BEGIN
  -- The lock comes before the queue look-up: deleteQueue takes it exclusively, so a send either
  -- finishes before the delete counts the queue's messages, or looks the queue up after the
  -- delete committed and finds it gone. Looking up first would let a send that waited on the
  -- lock insert into a queue deleted meanwhile.
  PERFORM pg_advisory_xact_lock_shared({{schema}}.wake_key(queue));
  SELECT * INTO q FROM {{schema}}.queues WHERE name = queue;
  IF NOT FOUND THEN
    q := {{schema}}.require_queue(queue); -- raises the right error
  END IF;
  problem := {{schema}}.message_problem(q.max_payload_bytes, payload, body, encoding, delay,
    send_message.available_at, priority, dedupe_key, group_key, headers);
  IF problem IS NOT NULL THEN
    PERFORM {{schema}}.raise_problem(problem, queue);
  END IF;
  duplicate := false;
  FOR i IN 1..3 LOOP
    INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key)
    -- A delay counts from the send itself (clock_timestamp), not from the start of the caller's
    -- transaction (now()), so a long outbox transaction does not eat into it.
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

-- Sends many messages to one queue in one statement. Arrays are parallel, one element per message;
-- returns the ids in input order. Without dedupe keys this is a single multi-row INSERT.
CREATE FUNCTION {{schema}}.send_batch(queue text, payloads jsonb[], bodies bytea[], encodings text[],
  delays interval[], available_ats timestamptz[], priorities integer[], dedupe_keys text[],
  group_keys text[], headers jsonb[])
RETURNS TABLE (id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
DECLARE
  q {{schema}}.queues;
  n integer := coalesce(cardinality(encodings), 0);
  problem text;
  bad_position bigint;
BEGIN
  -- Locked before the look-up, as in send_message, so a concurrent deleteQueue cannot be missed.
  PERFORM pg_advisory_xact_lock_shared({{schema}}.wake_key(queue));
  SELECT * INTO q FROM {{schema}}.queues WHERE name = queue;
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
      SELECT queue, t.priority, coalesce(t.available_at, CASE WHEN t.delay IS NULL THEN now() ELSE clock_timestamp() + t.delay END), t.encoding, t.payload,
             t.body, t.headers, t.group_key
      FROM unnest(payloads, bodies, encodings, delays, available_ats, priorities, group_keys, headers)
           WITH ORDINALITY AS t(payload, body, encoding, delay, available_at, priority, group_key, headers, ord)
      ORDER BY t.ord
      RETURNING m.id
    )
    SELECT i.id, false FROM inserted i ORDER BY i.id;
    PERFORM {{schema}}.wake(queue);
  ELSE
    -- With dedupe keys each message may resolve to an existing one: send them one by one.
    FOR i IN 1..n LOOP
      RETURN QUERY SELECT s.id, s.duplicate FROM {{schema}}.send_message(queue, payloads[i], bodies[i], encodings[i],
        delays[i], available_ats[i], priorities[i], dedupe_keys[i], group_keys[i], headers[i]) s;
    END LOOP;
  END IF;
END $$;

-- The SQL API for triggers and other languages: sends a JSON payload, returns the message id.
--   SELECT postbox.send('emails', '{"to":"a@b.c"}', delay => '10 seconds', priority => 5);
CREATE FUNCTION {{schema}}.send(queue text, payload jsonb, delay interval DEFAULT NULL,
  available_at timestamptz DEFAULT NULL, priority integer DEFAULT 0, dedupe_key text DEFAULT NULL,
  group_key text DEFAULT NULL, headers jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  SELECT ({{schema}}.send_message(queue, payload, NULL, 'json', delay, available_at, priority, dedupe_key, group_key, headers)).id
$$;

-- Moves messages to their queue's dead letter (or deletes them when it has none), keeping the
-- history: attempts, last error, original queue.
CREATE FUNCTION {{schema}}.dead_letter(ids bigint[], reason text) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  moved integer;
  dropped integer;
BEGIN
  WITH target AS (
    SELECT m.id, q.dead_letter FROM messages m JOIN queues q ON q.name = m.queue WHERE m.id = ANY (ids)
  ), gone AS (
    DELETE FROM messages m USING target t WHERE m.id = t.id AND t.dead_letter IS NULL RETURNING m.id
  )
  SELECT count(*) INTO dropped FROM gone;
  -- The dedupe key is freed (the work can be sent again) and the attempt count starts again for
  -- the dead-letter queue, with the count it had here kept in original_attempt.
  UPDATE messages m
  SET queue = q.dead_letter, original_queue = m.queue, original_attempt = m.attempt, attempt = 0,
      lease = NULL, available_at = now(), dead_at = now(), dedupe_key = NULL,
      last_error = coalesce(reason, m.last_error)
  FROM queues q
  WHERE m.id = ANY (ids) AND q.name = m.queue AND q.dead_letter IS NOT NULL;
  GET DIAGNOSTICS moved = ROW_COUNT;
  RETURN moved + dropped;
END $$;

-- Claims up to max messages of a queue under a lease, counting the attempt. Never holds a lock
-- past the statement: the lease is the claim. A message whose last allowed attempt's lease ran
-- out goes to the dead letter instead of back to a consumer.
CREATE FUNCTION {{schema}}.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS SETOF {{schema}}.messages
LANGUAGE plpgsql
AS $$
DECLARE
  q {{schema}}.queues;
  picked bigint[];
  exhausted bigint[];
  taken integer := 0;
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
        SET attempt = m.attempt + 1, lease = gen_random_uuid(), claimed_at = now(),
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

-- Acks deliveries, each fenced by its lease: a delivery whose lease was lost (expired and claimed
-- again) is not acked. Returns the ids that were acked. Queues with a retention period keep the
-- acked message in messages_archive.
CREATE FUNCTION {{schema}}.ack(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE sql
AS $$
  WITH done AS (
    DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
    WHERE m.id = a.id AND m.lease = a.lease
    RETURNING m.*
  ), kept AS (
    INSERT INTO {{schema}}.messages_archive (id, queue, priority, attempt, encoding, payload, body, headers, dedupe_key, group_key, enqueued_at)
    SELECT d.id, d.queue, d.priority, d.attempt, d.encoding, d.payload, d.body, d.headers, d.dedupe_key, d.group_key, d.enqueued_at
    FROM done d JOIN {{schema}}.queues q ON q.name = d.queue
    WHERE q.retention IS NOT NULL
  )
  SELECT d.id FROM done d
$$;

-- The retry delay after a failed attempt, from the queue's backoff.
CREATE FUNCTION {{schema}}.retry_delay(q {{schema}}.queues, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN q.backoff_jitter THEN d * (0.5 + random() / 2) ELSE d END
  FROM (SELECT CASE q.backoff_type
                 WHEN 'fixed' THEN q.backoff_base
                 -- In seconds as float8: base * 2^40 as an interval overflows for a base of a few years.
                 ELSE least(extract(epoch FROM q.backoff_max)::float8,
                            extract(epoch FROM q.backoff_base)::float8 * power(2, least(greatest(attempt - 1, 0), 40)))
                      * interval '1 second'
               END AS d) s
$$;

-- Fails a delivery: retries it after delay (or the queue's backoff), or moves it to the dead letter
-- when it used its last attempt or dead is true. Returns 'retried', 'dead' or 'dropped'; NULL when
-- the lease was lost.
CREATE FUNCTION {{schema}}.nack(id bigint, lease uuid, delay interval DEFAULT NULL, error text DEFAULT NULL,
  dead boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  m messages;
  q queues;
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
    PERFORM dead_letter(ARRAY[m.id], left(error, 8192));
    RETURN CASE WHEN q.dead_letter IS NULL THEN 'dropped' ELSE 'dead' END;
  END IF;
  UPDATE messages
  SET lease = NULL, last_error = left(error, 8192), available_at = now() + coalesce(delay, retry_delay(q, m.attempt))
  WHERE messages.id = m.id;
  RETURN 'retried';
END $$;

-- Extends leases by a duration from now. Returns the ids whose lease is still held.
CREATE FUNCTION {{schema}}.extend(ids bigint[], leases uuid[], duration interval) RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  UPDATE {{schema}}.messages m SET available_at = now() + duration
  FROM unnest(ids, leases) AS a(id, lease)
  WHERE m.id = a.id AND m.lease = a.lease AND duration > '0'
  RETURNING m.id
$$;

-- Gives deliveries back without a verdict (a worker stopping): visible again at once, the attempt
-- already counted stays counted. A released message is delivered again even when that attempt was
-- its last (see receive); a failure on that delivery dead-letters it. Returns the ids released.
CREATE FUNCTION {{schema}}.release(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  UPDATE {{schema}}.messages m SET available_at = now(), lease = NULL
  FROM unnest(ids, leases) AS a(id, lease)
  WHERE m.id = a.id AND m.lease = a.lease
  RETURNING m.id
$$;

-- Moves dead messages back to work: to their original queue, or to target. Returns how many.
CREATE FUNCTION {{schema}}.redrive(dead_queue text, target text DEFAULT NULL, max integer DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  moved integer;
BEGIN
  PERFORM require_queue(dead_queue);
  IF target IS NOT NULL THEN
    PERFORM require_queue(target);
  END IF;
  IF max < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'max must be positive';
  END IF;
  WITH picked AS (
    SELECT m.id FROM messages m
    -- Without a target, a message goes back only if its original queue still exists; the rest
    -- stay here (redrive them with a target) rather than land in a queue nobody can see.
    WHERE m.queue = dead_queue
      AND (target IS NOT NULL OR EXISTS (SELECT 1 FROM queues oq WHERE oq.name = m.original_queue))
    ORDER BY m.id LIMIT max FOR UPDATE SKIP LOCKED
  )
  UPDATE messages m
  SET queue = coalesce(target, m.original_queue), original_queue = NULL, original_attempt = NULL,
      dead_at = NULL, attempt = 0, lease = NULL, available_at = now()
  FROM picked p WHERE m.id = p.id;
  GET DIAGNOSTICS moved = ROW_COUNT;
  RETURN moved;
END $$;

-- Deletes archived messages older than their queue's retention. Returns how many.
CREATE FUNCTION {{schema}}.prune_archive() RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  WITH gone AS (
    DELETE FROM {{schema}}.messages_archive a USING {{schema}}.queues q
    WHERE q.name = a.queue AND a.acked_at < now() - q.retention
    RETURNING 1
  )
  SELECT count(*)::integer FROM gone
$$;

-- Per queue: what an operator asks first. Ready includes messages whose lease ran out.
CREATE VIEW {{schema}}.queue_stats AS
SELECT q.name AS queue,
       coalesce(s.ready, 0) AS ready,
       coalesce(s.delayed, 0) AS delayed,
       coalesce(s.in_flight, 0) AS in_flight,
       coalesce(d.dead, 0) AS dead,
       coalesce(s.ready, 0) + coalesce(s.delayed, 0) + coalesce(s.in_flight, 0) AS total,
       s.oldest_ready_age,
       s.max_attempt,
       coalesce(a.retained, 0) AS retained,
       q.dead_letter
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
LEFT JOIN LATERAL (SELECT count(*) AS retained FROM {{schema}}.messages_archive a WHERE a.queue = q.name) a ON true;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
