-- postbox 0006: topics, publish/subscribe with routing (DESIGN.md, "Topics").
--
-- A subscription is a binding from a routing-key pattern to an ordinary queue, so everything a
-- queue does (leases, retries, dead letters, priorities, groups, stats) applies to what a publish
-- delivers. Patterns follow RabbitMQ's topic exchange exactly: words split on '.', '*' is exactly
-- one word, '#' is zero or more words ('audit.#' matches 'audit', '#.error' matches 'error',
-- 'a.#.b' matches 'a.b'), and a wildcard is a whole word ('a*' is refused, never a prefix match).
-- A queue gets one copy of a message however many of its bindings match.
--
-- Matching runs in SQL, so publish works from triggers. Each pattern is compiled once, when it is
-- bound: a literal pattern is compared by equality; a wildcard pattern becomes an anchored regular
-- expression over '.' || routing_key, where a literal word w is '[.]w', '*' is '[.][^.]+' and '#'
-- is '(?:[.][^.]+)*' (the leading dot is what lets '#' take zero words at either end or in the
-- middle). Postgres runs these regexes without backtracking: a pattern of 60 '#' against a key of
-- 120 words took 1-3 ms to compile and match, so the number of '#' is not capped. A regex match
-- costs about 0.7 us when the backend has it compiled, and 11-60 us when it must compile it
-- (each backend caches 32); pattern_words below keeps the candidates of a publish few.
--
-- ack is restated so that an archived message keeps the routing key it was published with.
--
-- New SQLSTATEs of class PB:
--   PBR01 invalid routing key    PBR02 invalid binding pattern
--   PBR03 invalid header filter  PBR04 unroutable (a publish with unrouted => 'error' matched nothing)

-- The routing key a message was published with; NULL for a plain send.
ALTER TABLE {{schema}}.messages ADD COLUMN routing_key text;
ALTER TABLE {{schema}}.messages_archive ADD COLUMN routing_key text;

-- What is wrong with a routing key, or NULL: 1 to 255 bytes of non-empty words of letters, digits,
-- '_', '-' and ':', separated by single dots. Plain SQL of immutable parts (hence the ::text
-- casts), which the planner inlines into the statements that call it.
CREATE FUNCTION {{schema}}.routing_key_problem(routing_key text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN routing_key IS NULL OR routing_key = '' THEN 'a routing key must not be empty'
    WHEN octet_length(routing_key) > 255
      THEN 'a routing key is at most 255 bytes, got ' || octet_length(routing_key)::text
    WHEN routing_key ~ '^[A-Za-z0-9_:-]+([.][A-Za-z0-9_:-]+)*$' THEN NULL
    WHEN routing_key ~ '(^|[.])([.]|$)'
      THEN 'routing key ' || quote_literal(left(routing_key, 80)) || ' has an empty word: words are separated by single dots, none at either end'
    WHEN routing_key ~ '[*#]'
      THEN 'routing key ' || quote_literal(left(routing_key, 80)) || ' holds a wildcard: * and # belong in binding patterns'
    ELSE 'routing key ' || quote_literal(left(routing_key, 80)) || ' has a character other than letters, digits, _ - : and the dots between words'
  END
$$;

-- What is wrong with a binding pattern, or NULL: the words of a routing key, where a word may also
-- be '*' or '#' (whole words only).
CREATE FUNCTION {{schema}}.pattern_problem(pattern text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN pattern IS NULL OR pattern = '' THEN 'a binding pattern must not be empty (# matches every routing key)'
    WHEN octet_length(pattern) > 255 THEN 'a binding pattern is at most 255 bytes, got ' || octet_length(pattern)::text
    WHEN pattern ~ '^([A-Za-z0-9_:-]+|[*#])([.]([A-Za-z0-9_:-]+|[*#]))*$' THEN NULL
    WHEN pattern ~ '(^|[.])([.]|$)'
      THEN 'pattern ' || quote_literal(left(pattern, 80)) || ' has an empty word: words are separated by single dots, none at either end'
    WHEN pattern ~ '[*#]'
      THEN 'pattern ' || quote_literal(left(pattern, 80)) || ' has a wildcard inside a word: * and # are whole words, as in a.* or a.#'
    ELSE 'pattern ' || quote_literal(left(pattern, 80)) || ' has a character other than letters, digits, _ - : * # and the dots between words'
  END
$$;

-- The anchored regex of a wildcard pattern, matched against '.' || routing_key; NULL for a
-- literal pattern (compared by equality). Literal words hold no regex metacharacter.
CREATE FUNCTION {{schema}}.pattern_regex(pattern text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN pattern ~ '[*#]' THEN
    '^' || (SELECT string_agg(CASE w WHEN '*' THEN '[.][^.]+' WHEN '#' THEN '(?:[.][^.]+)*' ELSE '[.]' || w END, '' ORDER BY i)
            FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS p(w, i)) || '$'
  END
$$;

-- The literal words of a pattern ('order' and 'placed' for 'order.*.placed'; none for '#'). A
-- pattern can match only a key that holds each of them, so a publish reads only the bindings
-- whose words are all among the key's (words <@ the key's words, through a GIN index). GIN
-- answers <@ by the bindings that share any word with the key, and rechecks the containment, an
-- array test; only the bindings that pass it reach their regex. Measured on this machine (2 cores,
-- loaded): a first-word index made 200 bindings such as '*.x.#' candidates of every publish, at
-- 15-40 ms a publish, mostly compiling their regexes past the backend's cache of 32; and 10,000
-- bindings 'user.<id>.#' would all have been candidates of 'user.42.created', where the words
-- leave one.
CREATE FUNCTION {{schema}}.pattern_words(pattern text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(array_agg(w), '{}') FROM unnest(string_to_array(pattern, '.')) AS w WHERE w NOT IN ('*', '#')
$$;

-- What is wrong with a header filter, or NULL. A filter is a JSON object whose values are strings
-- or non-empty arrays of strings (SNS filter policies: keys AND, the values of a key OR).
CREATE FUNCTION {{schema}}.filter_problem(filter jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN filter IS NULL THEN NULL
    WHEN jsonb_typeof(filter) <> 'object'
      THEN 'a filter must be a JSON object of header names to a string or an array of strings, got a JSON ' || jsonb_typeof(filter)
    WHEN EXISTS (SELECT 1 FROM jsonb_each(filter) f
                 WHERE NOT (jsonb_typeof(f.value) = 'string'
                            OR (jsonb_typeof(f.value) = 'array' AND jsonb_array_length(f.value) > 0
                                AND NOT jsonb_path_exists(f.value, '$[*] ? (@.type() != "string")'))))
      THEN 'filter values must be a string or a non-empty array of strings, as in {"region": ["eu", "us"]}'
    WHEN EXISTS (SELECT 1 FROM jsonb_object_keys(filter) k WHERE k = '')
      THEN 'filter keys must be header names, not empty'
    WHEN pg_column_size(filter) > 16384 THEN 'a filter must be at most 16 KiB'
  END
$$;

-- The filter as a jsonpath predicate over the headers, compiled once when the binding is made:
-- {"region": ["eu", "us"], "tier": "gold"} becomes
--   ($."region" == "eu" || $."region" == "us") && ($."tier" == "gold")
-- A header the message lacks compares as false (lax mode), so a missing key does not match. Names
-- and values are written as JSON string literals (to_jsonb(text)::text), which jsonpath reads as
-- the same strings whatever they hold: quotes, backslashes, any Unicode.
CREATE FUNCTION {{schema}}.filter_path(filter jsonb) RETURNS jsonpath
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT string_agg('(' || (
           SELECT string_agg('$.' || to_jsonb(f.key)::text || ' == ' || v.value::text, ' || ')
           FROM jsonb_array_elements(CASE jsonb_typeof(f.value) WHEN 'array' THEN f.value ELSE jsonb_build_array(f.value) END) AS v
         ) || ')', ' && ' ORDER BY f.key)::jsonpath
  FROM jsonb_each(filter) f
$$;

-- Bindings: which queues a routing key reaches. One binding per (queue, pattern); binding the same
-- pair again with another filter replaces its filter (one SNS subscription has one filter
-- policy), so a deploy that changes a filter never leaves the old one behind. The compiled columns
-- are generated, so a binding written by hand is compiled too.
CREATE TABLE {{schema}}.bindings (
  queue       text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
  pattern     text NOT NULL,
  -- Header filter (NULL: none); see filter_problem.
  filter      jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  regex       text GENERATED ALWAYS AS ({{schema}}.pattern_regex(pattern)) STORED,
  words       text[] GENERATED ALWAYS AS ({{schema}}.pattern_words(pattern)) STORED,
  filter_path jsonpath GENERATED ALWAYS AS ({{schema}}.filter_path(filter)) STORED,
  PRIMARY KEY (queue, pattern),
  CONSTRAINT bindings_pattern_valid CHECK ({{schema}}.pattern_problem(pattern) IS NULL),
  CONSTRAINT bindings_filter_valid CHECK ({{schema}}.filter_problem(filter) IS NULL AND filter <> '{}')
);
-- Bindings change rarely and are read by every publish: no pending list (fastupdate) to scan.
CREATE INDEX bindings_words_idx ON {{schema}}.bindings USING gin (words) WITH (fastupdate = off);

-- Binds a queue to a pattern, with an optional header filter. Idempotent: returns true when the
-- binding was created or its filter changed, false when it was already so. An empty filter ({})
-- is no filter.
CREATE FUNCTION {{schema}}.bind(queue text, pattern text, filter jsonb DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  problem text;
  changed boolean;
BEGIN
  PERFORM require_queue(queue);
  problem := pattern_problem(pattern);
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR02', MESSAGE = problem;
  END IF;
  problem := filter_problem(filter);
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR03', MESSAGE = problem;
  END IF;
  IF filter = '{}' THEN
    filter := NULL;
  END IF;
  INSERT INTO bindings AS b (queue, pattern, filter) VALUES (queue, pattern, filter)
  ON CONFLICT ON CONSTRAINT bindings_pkey DO UPDATE SET filter = excluded.filter, updated_at = now()
    WHERE b.filter IS DISTINCT FROM excluded.filter
  RETURNING true INTO changed;
  RETURN coalesce(changed, false);
EXCEPTION WHEN foreign_key_violation THEN
  -- The queue was deleted between the look-up and the insert.
  RAISE EXCEPTION USING ERRCODE = 'PBQ01', MESSAGE = format('queue %L does not exist', queue),
    HINT = 'Create it first with createQueue() or postbox.create_queue().';
END $$;

-- Removes a binding. Returns true when there was one.
CREATE FUNCTION {{schema}}.unbind(queue text, pattern text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
  removed boolean;
BEGIN
  PERFORM require_queue(queue);
  IF pattern_problem(pattern) IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR02', MESSAGE = pattern_problem(pattern);
  END IF;
  DELETE FROM bindings b WHERE b.queue = queue AND b.pattern = pattern RETURNING true INTO removed;
  RETURN coalesce(removed, false);
END $$;

-- The queues a routing key reaches with these headers, sorted, each once; NULL when none. The
-- words narrow the bindings read to those that can match (see pattern_words). A dry run for
-- operators (SELECT postbox.matching_queues('orders.eu.created')), and the match of publish.
CREATE FUNCTION {{schema}}.matching_queues(routing_key text, headers jsonb DEFAULT NULL) RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  problem text := {{schema}}.routing_key_problem(routing_key);
  -- Computed once here rather than once per binding read: 70 -> 52 us a call with 10 bindings.
  key_words text[] := string_to_array(routing_key, '.');
  dotted text := '.' || routing_key;
  matched text[];
BEGIN
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR01', MESSAGE = problem;
  END IF;
  SELECT array_agg(DISTINCT b.queue COLLATE "C" ORDER BY b.queue COLLATE "C") INTO matched
  FROM {{schema}}.bindings b
  WHERE b.words <@ key_words
    AND CASE WHEN b.regex IS NULL THEN b.pattern = routing_key ELSE dotted ~ b.regex END
    AND (b.filter_path IS NULL OR coalesce(headers, '{}') @@ b.filter_path);
  RETURN matched;
END $$;

-- Unroutable publishes, counted without a hot row. One row per slot: a publisher adds to the
-- slot of its backend (pid % 16), or to the first slot no other open transaction holds, so
-- publishers never wait for each other, even inside long transactions; only when all 16 are held
-- does it use a row of its own backend's (slot 16 + pid), which no other backend can hold.
-- Counts are transactional: a publish rolled back is not counted. Read the unrouted_stats view.
CREATE TABLE {{schema}}.unrouted_counts (
  slot             integer PRIMARY KEY,
  count            bigint NOT NULL DEFAULT 0,
  last_routing_key text,
  last_at          timestamptz
);
INSERT INTO {{schema}}.unrouted_counts (slot) SELECT generate_series(0, 15);

-- Counts n unroutable publishes, the last one with this routing key.
CREATE FUNCTION {{schema}}.count_unrouted(routing_key text, n bigint DEFAULT 1) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
BEGIN
  UPDATE {{schema}}.unrouted_counts u
  SET count = u.count + n, last_routing_key = count_unrouted.routing_key, last_at = now()
  FROM (SELECT s.slot FROM {{schema}}.unrouted_counts s WHERE s.slot < 16
        ORDER BY s.slot = pg_backend_pid() % 16 DESC, s.slot LIMIT 1 FOR UPDATE SKIP LOCKED) free
  WHERE u.slot = free.slot;
  IF NOT FOUND THEN
    INSERT INTO {{schema}}.unrouted_counts AS u (slot, count, last_routing_key, last_at)
    VALUES (16 + pg_backend_pid(), n, count_unrouted.routing_key, now())
    ON CONFLICT (slot) DO UPDATE SET count = u.count + excluded.count, last_routing_key = excluded.last_routing_key, last_at = excluded.last_at;
  END IF;
END $$;

-- Unroutable publishes so far: how many, and the last one's routing key and time.
CREATE VIEW {{schema}}.unrouted_stats AS
SELECT coalesce(sum(c.count), 0)::bigint AS count,
       (SELECT l.last_routing_key FROM {{schema}}.unrouted_counts l WHERE l.last_at IS NOT NULL ORDER BY l.last_at DESC LIMIT 1) AS last_routing_key,
       max(c.last_at) AS last_at
FROM {{schema}}.unrouted_counts c;

-- Takes each queue's wake_key lock shared, in one order (sorted, collation "C"), as a send does for
-- its one queue: deleteQueue takes it exclusively, so a queue is either deleted before a publish
-- looks it up or after the publish commits, and the order keeps publishers from deadlocking with
-- a delete. A statement that starts after this sees a queue deleted before the locks as gone, and
-- no queue locked here can be deleted until this transaction ends.
--
-- One statement, whose plan plpgsql keeps (an SQL function would plan it on every call): the
-- planner evaluates a volatile function of the target list after the sort, so the locks are taken
-- in the sorted order. (Ten PERFORMs in a loop took 27-40 us; one statement, 6-7.)
CREATE FUNCTION {{schema}}.lock_queues(queues text[]) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared({{schema}}.wake_key(x.q))
  FROM (SELECT DISTINCT u.q COLLATE "C" AS q FROM unnest(queues) AS u(q)) x
  ORDER BY x.q;
END $$;

-- Raises a problem found by message_problem for a message of a publish, whatever queue it goes to.
CREATE FUNCTION {{schema}}.raise_publish_problem(problem text, routing_key text, batch_position bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = left(problem, 5),
    MESSAGE = format('%s (routing key %L%s)', substr(problem, 7), routing_key,
                     CASE WHEN batch_position IS NOT NULL THEN format(', message %s of the batch', batch_position) ELSE '' END);
END $$;

-- Raises PBP01 for the first of these queues (by name) whose payload limit the payload is over;
-- nothing when there is none.
CREATE FUNCTION {{schema}}.raise_payload_limit(queues text[], payload jsonb, body bytea, encoding text,
  batch_position bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
DECLARE
  bad_queue text;
  problem text;
BEGIN
  SELECT qs.name, {{schema}}.message_problem(qs.max_payload_bytes, payload, body, encoding, NULL, NULL, 0, NULL, NULL, NULL)
  INTO bad_queue, problem
  FROM {{schema}}.queues qs
  WHERE qs.name = ANY (queues) AND qs.max_payload_bytes < coalesce(pg_column_size(payload), octet_length(body))
  ORDER BY qs.name COLLATE "C" LIMIT 1;
  PERFORM {{schema}}.raise_problem(problem, bad_queue, batch_position);
END $$;

-- Writes one message into each queue of `targets` (whose wake_key locks this transaction holds:
-- see lock_queues), as send_message does for one queue, and wakes the queues with a waiting
-- consumer. Returns (queue, id, duplicate) per queue, by queue name. A queue deleted before the
-- locks were taken is skipped. The caller has checked the message (message_problem) except for
-- the queues' payload limits: a payload over one raises, and nothing is written.
CREATE FUNCTION {{schema}}.deliver(targets text[], routing_key text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text, headers jsonb,
  batch_position bigint DEFAULT NULL)
RETURNS TABLE (queue text, id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
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
  FOR round IN 1..3 LOOP
    IF cardinality(remaining) = 0 THEN
      RETURN;
    END IF;
    WITH inserted AS (
      INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key, routing_key)
      SELECT t.name, deliver.priority,
             coalesce(deliver.available_at, CASE WHEN deliver.delay IS NULL THEN now() ELSE clock_timestamp() + deliver.delay END),
             deliver.encoding, deliver.payload, deliver.body, deliver.headers, deliver.dedupe_key, deliver.group_key, deliver.routing_key
      FROM unnest(remaining) AS t(name)
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
    IF got_queues IS NOT NULL THEN
      RETURN QUERY SELECT g.queue, g.id, true FROM unnest(got_queues, got_ids) AS g(queue, id);
    END IF;
    -- What is left had its duplicate acked between the insert and the look-up: try again.
    remaining := ARRAY(SELECT r FROM unnest(remaining) r WHERE NOT r = ANY (taken || held));
  END LOOP;
  RAISE EXCEPTION 'could not publish to % with dedupe key %: it kept changing', remaining, deliver.dedupe_key
    USING ERRCODE = '40001';
END $$;

-- Counts or refuses an unroutable publish: with unrouted = 'error' raises PBR04 (the statement,
-- and so everything the publish wrote, is undone), else adds to unrouted_stats.
CREATE FUNCTION {{schema}}.unroutable(routing_key text, headers jsonb, unrouted text, n bigint DEFAULT 1,
  batch_position bigint DEFAULT NULL) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
BEGIN
  IF unrouted = 'error' THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR04',
      MESSAGE = format('no binding matches routing key %L%s%s: nothing was published', routing_key,
                       CASE WHEN headers IS NOT NULL THEN ' with its headers' ELSE '' END,
                       CASE WHEN batch_position IS NOT NULL THEN format(' (message %s of the batch)', batch_position) ELSE '' END),
      HINT = 'Bind a queue to a pattern that matches it with bind(), or publish with unrouted ''count'' to count it instead.';
  END IF;
  PERFORM {{schema}}.count_unrouted(routing_key, n);
END $$;

-- Raises PBV01 for an unrouted option other than 'count' and 'error'.
CREATE FUNCTION {{schema}}.raise_unrouted_option(unrouted text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'PBV01',
    MESSAGE = format('unrouted must be ''count'' or ''error'', got %s', coalesce(quote_literal(unrouted), 'NULL'));
END $$;

-- Publishes one message: a copy goes to each queue with a matching binding, once per queue. Runs
-- in the caller's transaction. Returns (queue, id, duplicate) per queue reached, by queue name. A
-- publish that reaches no queue is counted in unrouted_stats, or, with unrouted => 'error',
-- raises PBR04 and writes nothing.
--
-- Consistency: the bindings are read once (matching_queues), then those queues are locked and
-- written. Every copy commits or none does, and the copies are those of one set of bindings: a
-- binding made or removed meanwhile applies from the next publish, and a queue deleted meanwhile
-- gets nothing (its bindings went with it).
CREATE FUNCTION {{schema}}.publish_message(routing_key text, payload jsonb, body bytea, encoding text,
  delay interval, available_at timestamptz, priority integer, dedupe_key text, group_key text, headers jsonb,
  unrouted text DEFAULT 'count')
RETURNS TABLE (queue text, id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  problem text := {{schema}}.routing_key_problem(publish_message.routing_key);
  targets text[];
  reached bigint := 0;
BEGIN
  -- Everything is checked first, whether or not the message reaches a queue: the routing key,
  -- the options, and the message but for the payload limit, which is each queue's own (deliver
  -- applies it; no payload reaches 2147483647 bytes). The checks are inlined expressions; the
  -- functions that raise are called only when there is something to raise.
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR01', MESSAGE = problem;
  END IF;
  IF unrouted IS NULL OR unrouted NOT IN ('count', 'error') THEN
    PERFORM {{schema}}.raise_unrouted_option(unrouted);
  END IF;
  problem := {{schema}}.message_problem(2147483647, publish_message.payload, publish_message.body,
    publish_message.encoding, publish_message.delay, publish_message.available_at, publish_message.priority,
    publish_message.dedupe_key, publish_message.group_key, publish_message.headers);
  IF problem IS NOT NULL THEN
    PERFORM {{schema}}.raise_publish_problem(problem, publish_message.routing_key, NULL);
  END IF;
  targets := {{schema}}.matching_queues(routing_key, headers);
  IF targets IS NOT NULL THEN
    PERFORM {{schema}}.lock_queues(targets);
    RETURN QUERY SELECT d.queue, d.id, d.duplicate FROM {{schema}}.deliver(targets, publish_message.routing_key,
      publish_message.payload, publish_message.body, publish_message.encoding, publish_message.delay, publish_message.available_at,
      publish_message.priority, publish_message.dedupe_key, publish_message.group_key, publish_message.headers) d;
    GET DIAGNOSTICS reached = ROW_COUNT;
  END IF;
  IF reached = 0 THEN
    -- Nothing matched, or every queue matched was deleted before the locks.
    PERFORM {{schema}}.unroutable(routing_key, headers, unrouted);
  END IF;
END $$;

-- Publishes many messages in one statement, each routed by its own key. Arrays are parallel, one
-- element per message, as in send_batch. Returns (batch_position, queue, id, duplicate) per copy,
-- by position then queue name. Messages that reach no queue are counted, or, with unrouted =>
-- 'error', the first raises PBR04 (naming its position) and nothing is written. The queues of the
-- whole batch are locked at once, in one order, before anything is written.
CREATE FUNCTION {{schema}}.publish_batch(routing_keys text[], payloads jsonb[], bodies bytea[], encodings text[],
  delays interval[], available_ats timestamptz[], priorities integer[], dedupe_keys text[], group_keys text[],
  headers jsonb[], unrouted text DEFAULT 'count')
RETURNS TABLE (batch_position bigint, queue text, id bigint, duplicate boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  n integer := coalesce(cardinality(routing_keys), 0);
  problem text;
  bad bigint;
  pair_ords bigint[];
  pair_queues text[];
  live text[];
  first_unroutable bigint;
  unroutable_count bigint;
  ids bigint[];
  to_wake text[];
  q text;
BEGIN
  IF unrouted IS NULL OR unrouted NOT IN ('count', 'error') THEN
    PERFORM {{schema}}.raise_unrouted_option(unrouted);
  END IF;
  IF n = 0 THEN
    RETURN;
  END IF;
  IF n > 10000 THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = format('a batch holds at most 10000 messages, got %s', n);
  END IF;
  IF cardinality(payloads) IS DISTINCT FROM n OR cardinality(bodies) IS DISTINCT FROM n
     OR cardinality(encodings) IS DISTINCT FROM n OR cardinality(delays) IS DISTINCT FROM n
     OR cardinality(available_ats) IS DISTINCT FROM n OR cardinality(priorities) IS DISTINCT FROM n
     OR cardinality(dedupe_keys) IS DISTINCT FROM n OR cardinality(group_keys) IS DISTINCT FROM n
     OR cardinality(headers) IS DISTINCT FROM n THEN
    RAISE EXCEPTION USING ERRCODE = 'PBV01', MESSAGE = 'publish_batch arrays must all have one element per message';
  END IF;
  -- Every message is checked first, in one query each for keys and messages; the first problem
  -- by position is raised and nothing is written.
  SELECT {{schema}}.routing_key_problem(k.key), k.ord INTO problem, bad
  FROM unnest(routing_keys) WITH ORDINALITY AS k(key, ord)
  WHERE {{schema}}.routing_key_problem(k.key) IS NOT NULL ORDER BY k.ord LIMIT 1;
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PBR01', MESSAGE = format('%s (message %s of the batch)', problem, bad);
  END IF;
  SELECT {{schema}}.message_problem(2147483647, t.payload, t.body, t.encoding, t.delay, t.available_at, t.priority,
           t.dedupe_key, t.group_key, t.headers), t.ord
  INTO problem, bad
  FROM unnest(payloads, bodies, encodings, delays, available_ats, priorities, dedupe_keys, group_keys, headers)
         WITH ORDINALITY AS t(payload, body, encoding, delay, available_at, priority, dedupe_key, group_key, headers, ord)
  WHERE {{schema}}.message_problem(2147483647, t.payload, t.body, t.encoding, t.delay, t.available_at, t.priority,
          t.dedupe_key, t.group_key, t.headers) IS NOT NULL
  ORDER BY t.ord LIMIT 1;
  IF problem IS NOT NULL THEN
    PERFORM {{schema}}.raise_publish_problem(problem, routing_keys[bad], bad);
  END IF;
  -- Route every message once, lock every queue reached, then keep the pairs of live queues.
  SELECT array_agg(r.ord ORDER BY r.ord, r.queue COLLATE "C"), array_agg(r.queue ORDER BY r.ord, r.queue COLLATE "C")
  INTO pair_ords, pair_queues
  FROM (SELECT k.ord, unnest({{schema}}.matching_queues(k.key, k.hdrs)) AS queue
        FROM unnest(routing_keys, headers) WITH ORDINALITY AS k(key, hdrs, ord)) r;
  PERFORM {{schema}}.lock_queues(coalesce(pair_queues, '{}'));
  live := ARRAY(SELECT qs.name FROM {{schema}}.queues qs WHERE qs.name = ANY (pair_queues));
  SELECT array_agg(p.ord ORDER BY p.ord, p.queue COLLATE "C"), array_agg(p.queue ORDER BY p.ord, p.queue COLLATE "C")
  INTO pair_ords, pair_queues
  FROM unnest(pair_ords, pair_queues) AS p(ord, queue) WHERE p.queue = ANY (live);
  SELECT min(k.ord), count(*) INTO first_unroutable, unroutable_count
  FROM generate_series(1, n) AS k(ord) WHERE NOT k.ord = ANY (coalesce(pair_ords, '{}'));
  IF unroutable_count > 0 THEN
    PERFORM {{schema}}.unroutable(routing_keys[first_unroutable], headers[first_unroutable], unrouted, unroutable_count, first_unroutable);
  END IF;
  IF pair_ords IS NULL THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(dedupe_keys) d WHERE d IS NOT NULL) THEN
    -- With dedupe keys a copy may resolve to an existing message: deliver message by message.
    FOR i IN 1..n LOOP
      CONTINUE WHEN NOT i = ANY (pair_ords);
      RETURN QUERY SELECT i::bigint, d.queue, d.id, d.duplicate FROM {{schema}}.deliver(
        ARRAY(SELECT p.queue FROM unnest(pair_ords, pair_queues) AS p(ord, queue) WHERE p.ord = i),
        routing_keys[i], payloads[i], bodies[i], encodings[i], delays[i], available_ats[i], priorities[i],
        dedupe_keys[i], group_keys[i], headers[i], i) d;
    END LOOP;
    RETURN;
  END IF;
  SELECT p.ord INTO bad
  FROM unnest(pair_ords, pair_queues) AS p(ord, queue) JOIN {{schema}}.queues qs ON qs.name = p.queue
  WHERE coalesce(pg_column_size(payloads[p.ord]), octet_length(bodies[p.ord])) > qs.max_payload_bytes
  ORDER BY p.ord LIMIT 1;
  IF bad IS NOT NULL THEN
    PERFORM {{schema}}.raise_payload_limit(ARRAY(SELECT p.queue FROM unnest(pair_ords, pair_queues) AS p(ord, queue) WHERE p.ord = bad),
      payloads[bad], bodies[bad], encodings[bad], bad);
  END IF;
  -- One INSERT … SELECT for every copy. Identity values are drawn in the order rows are inserted,
  -- which follows ORDER BY position, queue: so the sorted new ids line up with the sorted pairs.
  WITH inserted AS (
    INSERT INTO {{schema}}.messages AS m (queue, priority, available_at, encoding, payload, body, headers, group_key, routing_key)
    SELECT p.queue, priorities[p.ord],
           coalesce(available_ats[p.ord], CASE WHEN delays[p.ord] IS NULL THEN now() ELSE clock_timestamp() + delays[p.ord] END),
           encodings[p.ord], payloads[p.ord], bodies[p.ord], headers[p.ord], group_keys[p.ord], routing_keys[p.ord]
    FROM unnest(pair_ords, pair_queues) AS p(ord, queue)
    ORDER BY p.ord, p.queue COLLATE "C"
    RETURNING m.id, m.queue
  )
  SELECT array_agg(ins.id ORDER BY ins.id), array_agg(DISTINCT ins.queue) INTO ids, to_wake FROM inserted ins;
  FOREACH q IN ARRAY coalesce(to_wake, '{}') LOOP
    IF current_setting('transaction_isolation') <> 'read committed'
       OR EXISTS (SELECT 1 FROM {{schema}}.waiters w WHERE w.queue = q AND NOT w.notified AND w.expires_at > now()) THEN
      PERFORM {{schema}}.wake(q);
    END IF;
  END LOOP;
  RETURN QUERY SELECT p.ord, p.queue, p.id, false FROM unnest(pair_ords, pair_queues, ids) AS p(ord, queue, id);
END $$;

-- The SQL API for triggers and other languages: publishes a JSON payload, returns how many queues
-- it reached (0 when nothing matched: counted in unrouted_stats; unrouted => 'error' raises).
--   SELECT postbox.publish('orders.eu.created', '{"id":1}', headers => '{"region":"eu"}');
CREATE FUNCTION {{schema}}.publish(routing_key text, payload jsonb, headers jsonb DEFAULT NULL, delay interval DEFAULT NULL,
  available_at timestamptz DEFAULT NULL, priority integer DEFAULT 0, dedupe_key text DEFAULT NULL,
  group_key text DEFAULT NULL, unrouted text DEFAULT 'count')
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, {{schema}}, pg_temp
AS $$
  SELECT count(*)::integer FROM {{schema}}.publish_message(routing_key, payload, NULL, 'json', delay, available_at, priority,
    dedupe_key, group_key, headers, unrouted)
$$;

-- Acks deliveries, each fenced by its lease; returns the ids acked (see 0005).
CREATE OR REPLACE FUNCTION {{schema}}.ack(ids bigint[], leases uuid[]) RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
-- 0006 (from 0005): the archive keeps the routing key.
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
    INSERT INTO {{schema}}.messages_archive (id, queue, priority, attempt, encoding, payload, body, headers, dedupe_key, group_key,
      enqueued_at, routing_key)
    SELECT k.id, k.queue, k.priority, k.attempt, k.encoding, k.payload, k.body, k.headers, k.dedupe_key, k.group_key,
      k.enqueued_at, k.routing_key
    FROM unnest(kept) k;
  END IF;
  RETURN QUERY SELECT a.id FROM unnest(acked) AS a(id);
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
