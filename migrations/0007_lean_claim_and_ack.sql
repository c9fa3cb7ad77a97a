-- postbox 0007: a leaner claim and ack (issue 12, phase 2; docs/performance.md, "Where the
-- end-to-end gap comes from", has the analysis and the figures).
--
-- Counted under valgrind (bench/diagnose/claim-sql.ts and callgrind-summary.ts, thousands of
-- backend instructions per message, one connection), postbox's receive(100) + ack cost 148.9
-- against graphile-worker's get_jobs + complete_jobs at 130.4, and the difference was in the
-- shape of the statements, not in what they write:
--   * receive returned whole rows through `UPDATE … RETURNING m.*`, then a hash join with
--     `unnest(picked) WITH ORDINALITY` and a sort by the ordinal (25.5 beyond the UPDATE), and
--     the caller computed three `extract(epoch …)` per row (numeric since PG 14: about 1.3 µs
--     more per value than date_part, measured on 300,000 rows), two of them the same for every
--     row of a claim (the claim time and the lease expiry).
--   * ack returned whole rows and probed `queues` once per acked row to decide whether to
--     archive it (20.0 over a bare fenced DELETE).
--
-- Now:
--   * claim(queue, max, visibility_timeout) is the claim, in one function: the same candidate
--     selection, group leases and exhausted-message rounds as receive in 0005, but its UPDATE
--     joins the picked ids with their ordinal and returns only the columns a delivery needs,
--     sorted by that ordinal; the claim time, the lease expiry and the token are computed once
--     per call. The worker and `postbox.receive` call it. What changed against 0005's receive:
--     the UPDATE and what it returns (marked "0007" below); the selection is as it was.
--   * receive(queue, max, visibility_timeout), the SQL API, keeps its signature and its whole
--     rows: it calls claim and reads the rows back.
--   * ack looks up once per call which queues keep an archive (a retention period); when none
--     does, its DELETE returns only id, queue and group key.
--
-- Measured (bench/diagnose/claim-sql.ts --connections 1: Postgres CPU per message, one
-- connection, 20,000 messages, median of 3 rounds, as a ratio to graphile-worker's get_jobs(500)
-- + complete_jobs in the same run, since the load of the shared machine moved every absolute
-- figure by half between runs): receive(500) + ack 0.95x before (20.0 vs 21.0 µs), 0.78x after
-- (26.0 vs 33.5); ackAndReceive(100), acks riding, 1.67x before (35.0), 1.12x after (37.5);
-- ackAndReceive(500), as the worker now claims, 0.73x after (24.5).

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
      ORDER BY m.priority DESC, m.available_at, m.id
      LIMIT max - taken
      FOR UPDATE OF m SKIP LOCKED
    ) c;
    -- 2. Grouped candidates need their group's lease.
    picked := candidates;
    IF grouped IS NOT NULL THEN
      granted := {{schema}}.claim_groups(claim.queue, grouped, grouped_keys, lease_until);
      IF cardinality(granted) < cardinality(grouped) THEN
        -- A group another claim took meanwhile: its message stays where it is (its row lock ends with this statement).
        picked := ARRAY(SELECT p.id FROM unnest(candidates) WITH ORDINALITY AS p(id, ord)
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

-- Claims up to max messages of a queue under a lease, counting the attempt: the SQL API, whole
-- rows in claim order. The claim itself is claim(); this reads back what it leased (a statement
-- of its own, so that it sees the claim's updates).
CREATE OR REPLACE FUNCTION {{schema}}.receive(queue text, max integer DEFAULT 1, visibility_timeout interval DEFAULT NULL)
RETURNS SETOF {{schema}}.messages
LANGUAGE plpgsql
AS $$
-- 0007 (from 0005): the claim is claim(); this returns its rows whole.
DECLARE
  claimed bigint[];
BEGIN
  SELECT array_agg(c.id ORDER BY c.ordinality) INTO claimed
  FROM {{schema}}.claim(receive.queue, receive.max, receive.visibility_timeout) WITH ORDINALITY AS c;
  RETURN QUERY
  SELECT m.* FROM unnest(claimed) WITH ORDINALITY AS c(id, ord) JOIN {{schema}}.messages m ON m.id = c.id ORDER BY c.ord;
END $$;

-- Acks deliveries, each fenced by its lease: a delivery whose lease was lost (expired and claimed
-- again) is not acked. Returns the ids that were acked. Queues with a retention period keep the
-- acked message in messages_archive. Messages are deleted first, then group rows, in separate
-- statements, so an ack never holds a group row while it waits for a message row (which a claim
-- could hold while it waits for that group row).
CREATE OR REPLACE FUNCTION {{schema}}.ack(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
-- 0007 (from 0006): which queues archive is looked up once per call; without any, the DELETE returns no rows whole.
DECLARE
  archiving text[];
  acked bigint[];
  freed_ids bigint[];
  freed_queues text[];
  freed_keys text[];
  kept {{schema}}.messages[];
BEGIN
  SELECT array_agg(q.name) INTO archiving FROM {{schema}}.queues q WHERE q.retention IS NOT NULL;
  IF archiving IS NULL THEN
    WITH done AS (
      DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
      WHERE m.id = a.id AND m.lease = a.lease
      RETURNING m.id, m.queue, m.group_key
    )
    SELECT array_agg(d.id), array_agg(d.id) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.queue) FILTER (WHERE d.group_key IS NOT NULL), array_agg(d.group_key) FILTER (WHERE d.group_key IS NOT NULL)
    INTO acked, freed_ids, freed_queues, freed_keys
    FROM done d;
  ELSE
    WITH done AS (
      DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
      WHERE m.id = a.id AND m.lease = a.lease
      RETURNING m.id, m.queue, m.group_key, CASE WHEN m.queue = ANY (archiving) THEN m END AS kept
    )
    SELECT array_agg(d.id), array_agg(d.id) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.queue) FILTER (WHERE d.group_key IS NOT NULL), array_agg(d.group_key) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.kept) FILTER (WHERE (d.kept).id IS NOT NULL)
    INTO acked, freed_ids, freed_queues, freed_keys, kept
    FROM done d;
  END IF;
  IF freed_ids IS NOT NULL THEN
    DELETE FROM {{schema}}.group_leases l USING unnest(freed_ids, freed_queues, freed_keys) AS f(id, queue, group_key)
    WHERE l.queue = f.queue AND l.group_key = f.group_key AND l.message_id = f.id;
  END IF;
  IF kept IS NOT NULL THEN
    INSERT INTO {{schema}}.messages_archive (id, queue, priority, attempt, encoding, payload, body, headers, dedupe_key, group_key,
      enqueued_at, routing_key)
    SELECT k.id, k.queue, k.priority, k.attempt, k.encoding, k.payload, k.body, k.headers, k.dedupe_key, k.group_key,
      k.enqueued_at, k.routing_key
    FROM unnest(kept) k;
  END IF;
  RETURN QUERY SELECT a.id FROM unnest(acked) AS a(id);
END $$;

-- New functions are executable by PUBLIC by default; the schema grants by role (postbox roles).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
