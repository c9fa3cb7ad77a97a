-- postbox 0004: strict order per group (DESIGN.md, Semantics: "Strict order exists only per
-- groupKey with one message of a group in flight at a time").
--
-- A message with a group_key is claimable only while no older message of the same queue and
-- group is still in the table: waiting, delayed, in flight, or failed and waiting for its retry.
-- So a group's messages are handled one at a time, in id order, and a message that keeps failing
-- holds its group back until it succeeds or goes to the dead letter (which moves it to another
-- queue). Messages without a group are not affected, and a claim takes at most one message per
-- group. The index answers "is there an older one?" with one probe.

CREATE INDEX messages_group_idx ON {{schema}}.messages (queue, group_key, id) WHERE group_key IS NOT NULL;

-- The claim of 0003, with the group condition.
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
        -- A message of a group waits while an older one of its group is still here (waiting,
        -- delayed or in flight): one per group in flight, in order.
        AND (m.group_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {{schema}}.messages g
          WHERE g.queue = m.queue AND g.group_key = m.group_key AND g.id < m.id))
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

