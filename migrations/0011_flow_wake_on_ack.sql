-- postbox 0011: an ack wakes the idle consumers of a queue with maxInFlight.
--
-- 0008's slots are freed by the ack itself (a slot is busy while its message holds its lease),
-- with no write and no notification. A consumer whose claim found every slot taken goes idle like
-- one that found nothing, and only a send or its poll woke it: with three worker processes on a
-- queue of maxInFlight 4, the processes that were not holding the slots claimed once per poll
-- interval (2 s by default) while the holder acked. Now ack calls wake() for each acked queue
-- that has a cap: it NOTIFYs only when a consumer of that queue waits (the rule senders follow),
-- and costs a queue without a cap one primary-key probe of queue_flow per acked queue per call.

-- Acks deliveries, each fenced by its lease: a delivery whose lease was lost (expired and claimed
-- again) is not acked. Returns the ids that were acked. Queues with a retention period keep the
-- acked message in messages_archive. Messages are deleted first, then group rows, in separate
-- statements, so an ack never holds a group row while it waits for a message row (which a claim
-- could hold while it waits for that group row).
CREATE OR REPLACE FUNCTION {{schema}}.ack(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
-- 0011 (from 0007): idle consumers of the acked queues that have a maxInFlight are woken: an ack frees their slots.
DECLARE
  archiving text[];
  acked bigint[];
  freed_ids bigint[];
  freed_queues text[];
  freed_keys text[];
  kept {{schema}}.messages[];
  acked_queues text[];
BEGIN
  SELECT array_agg(q.name) INTO archiving FROM {{schema}}.queues q WHERE q.retention IS NOT NULL;
  IF archiving IS NULL THEN
    WITH done AS (
      DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
      WHERE m.id = a.id AND m.lease = a.lease
      RETURNING m.id, m.queue, m.group_key
    )
    SELECT array_agg(d.id), array_agg(d.id) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.queue) FILTER (WHERE d.group_key IS NOT NULL), array_agg(d.group_key) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(DISTINCT d.queue)
    INTO acked, freed_ids, freed_queues, freed_keys, acked_queues
    FROM done d;
  ELSE
    WITH done AS (
      DELETE FROM {{schema}}.messages m USING unnest(ids, leases) AS a(id, lease)
      WHERE m.id = a.id AND m.lease = a.lease
      RETURNING m.id, m.queue, m.group_key, CASE WHEN m.queue = ANY (archiving) THEN m END AS kept
    )
    SELECT array_agg(d.id), array_agg(d.id) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.queue) FILTER (WHERE d.group_key IS NOT NULL), array_agg(d.group_key) FILTER (WHERE d.group_key IS NOT NULL),
           array_agg(d.kept) FILTER (WHERE (d.kept).id IS NOT NULL), array_agg(DISTINCT d.queue)
    INTO acked, freed_ids, freed_queues, freed_keys, kept, acked_queues
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
  -- 0011: a freed flight slot is news to consumers that went idle at the cap (no send tells them).
  -- wake() notifies only when one waits; a queue without a cap costs a primary-key probe.
  IF acked_queues IS NOT NULL THEN
    PERFORM {{schema}}.wake(f.queue) FROM {{schema}}.queue_flow f WHERE f.queue = ANY (acked_queues) AND f.max_in_flight IS NOT NULL;
  END IF;
  RETURN QUERY SELECT a.id FROM unnest(acked) AS a(id);
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
