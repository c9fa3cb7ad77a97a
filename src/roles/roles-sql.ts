import { InvalidOptionsError } from '../errors.js'
import type { SchemaName } from '../schema-name.js'

// The SQL that creates postbox's three least-privilege roles for one schema. All of it is here,
// as one script, so `postbox roles` can print it for review or a migration tool, or run it.
//
// Why grants and not SECURITY DEFINER: the hot-path functions (send_message, send_batch, receive,
// ack, wake, ...) are SECURITY INVOKER and do not SET search_path, because that clause alone cost
// about a quarter of the sends per second (see migrations/0001_init.sql). A SECURITY DEFINER
// function must pin its search_path (CVE-2018-1058), so making them definers would bring that
// cost back for everyone. The roles therefore get exactly the table and column privileges the
// invoker functions need, and EXECUTE only on the functions of their part of the API.

const PREFIX = /^[a-z_][a-z0-9_]{0,53}$/

/** The names of the three roles for a prefix. */
export interface RoleNames {
  /** Sends and publishes only: cannot read payloads, receive, ack, bind, delete or change anything. */
  readonly producer: string
  /** Receives and completes (ack, nack, extend, release) and reads messages; cannot send or change queues. */
  readonly consumer: string
  /** Everything an application does: queues, sending, receiving, redrive, pruning. Not migrations. */
  readonly admin: string
}

/**
 * Role names for a prefix (default: the schema name), such as `postbox_producer`. The prefix is
 * 1-54 characters of a-z, 0-9 and _, so every name fits Postgres' 63-byte identifiers.
 */
export function roleNames(prefix: string): RoleNames {
  if (!PREFIX.test(prefix) || prefix.startsWith('pg_')) {
    throw new InvalidOptionsError(
      `invalid role prefix ${JSON.stringify(prefix)}: use 1-54 characters of a-z, 0-9 and _, starting with a letter or _ (and not pg_)`,
    )
  }
  return { producer: `${prefix}_producer`, consumer: `${prefix}_consumer`, admin: `${prefix}_admin` }
}

/** Functions the producer may execute, by name (any signature), with the helpers they call. */
export const PRODUCER_FUNCTIONS = [
  'send', 'send_message', 'send_batch', 'wake', 'wake_key', 'require_queue', 'assert_queue_name', 'message_problem', 'raise_problem',
  // publish (migrations/0006_topics.sql)
  'publish', 'publish_message', 'publish_batch', 'matching_queues', 'routing_key_problem', 'lock_queues', 'deliver',
  'raise_publish_problem', 'raise_payload_limit', 'raise_unrouted_option', 'unroutable', 'count_unrouted',
  // the dedupe window, and firing schedules (migrations/0009_schedules.sql): firing is sending
  'take_dedupe_window', 'prune_dedupe_windows', 'fire_schedule',
  // appending to streams (migrations/0010_streams.sql)
  'append', 'append_events', 'require_stream', 'assert_stream_name', 'key_partition',
] as const

/** Functions the consumer may execute, by name (any signature), with the helpers they call. */
export const CONSUMER_FUNCTIONS = [
  'receive', 'claim', 'claim_groups', 'ack', 'nack', 'extend', 'release', 'dead_letter', 'retry_delay', 'require_queue', 'assert_queue_name',
  'wake_key',
  // flow control (migrations/0008_flow_control.sql); ack wakes the consumers of a capped queue (0011)
  'flow_gate', 'flow_take', 'rate_windows_record', 'rate_window_room', 'wake',
  // the share of a queue's rate that a shard of its window allows (0014)
  'rate_shard_limit',
  // reading streams in consumer groups (0010; the stamp round and pruning run as the owner: 0012)
  'require_stream', 'assert_stream_name', 'stamp_stream', 'ensure_stream_group', 'stream_rebalance', 'stream_release', 'stream_commit',
  'prune_streams',
  // stamping and reading in one statement (0013)
  'stamp_and_read',
] as const

const ident = (name: string) => `"${name}"` // names are validated: plain lower-case identifiers
const literal = (name: string) => `'${name}'`
const array = (names: readonly string[]) => `ARRAY[${names.map(literal).join(', ')}]`

function createRole(name: string): string {
  return `  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = ${literal(name)}) THEN
    CREATE ROLE ${ident(name)} NOLOGIN;
  END IF;`
}

/** Grants EXECUTE on the schema's functions with these names, whatever their signatures. */
function grantFunctions(schema: SchemaName, names: readonly string[], role: string): string {
  return `DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = ${literal(schema.sql)}::regnamespace AND p.proname = ANY (${array(names)}) LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, ${literal(role)});
  END LOOP;
END $$;`
}

/**
 * The script that creates (if missing) the producer, consumer and admin roles for a migrated
 * schema and grants them what they need, in one transaction. Idempotent: run it again after a
 * postbox upgrade so that new functions are covered. The roles are NOLOGIN; grant them to the
 * roles your applications log in with.
 *
 * @example
 * process.stdout.write(rolesSql(schemaName('postbox')))   // postbox_producer, postbox_consumer, postbox_admin
 */
export function rolesSql(schema: SchemaName, prefix: string = schema.name): string {
  const r = roleNames(prefix)
  const s = schema.sql
  return `-- postbox roles for schema ${schema.name}: ${r.producer}, ${r.consumer}, ${r.admin}.
-- Give them to the roles your applications log in with, for example:
--   GRANT ${r.producer} TO web_app;  GRANT ${r.consumer} TO worker_app;
-- Run this as the owner of the schema (the role that ran postbox migrate), with CREATEROLE.
BEGIN;

DO $$
BEGIN
${createRole(r.producer)}
${createRole(r.consumer)}
${createRole(r.admin)}
END $$;

-- Nothing for PUBLIC: only these roles (and the owner) reach the schema.
REVOKE ALL ON SCHEMA ${s} FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ${s} FROM PUBLIC;
GRANT USAGE ON SCHEMA ${s} TO ${ident(r.producer)}, ${ident(r.consumer)}, ${ident(r.admin)};

-- Producer: send, send_batch, publish and their SQL forms. It reads queue settings (limits) and
-- bindings (to route), inserts messages, reads back only the id (and queue and dedupe key, for
-- deduplication), never a payload, marks waiting consumers notified, and counts unroutable
-- publishes. No receive, ack, update or delete of messages; no binding changes. A batch with
-- dedupe keys draws its ids first (to keep its order) and inserts them: the id column and the
-- sequence.
GRANT SELECT ON ${s}.queues, ${s}.bindings TO ${ident(r.producer)};
GRANT INSERT (id, queue, priority, available_at, encoding, payload, body, headers, dedupe_key, group_key, routing_key) ON ${s}.messages TO ${ident(r.producer)};
GRANT SELECT, INSERT, UPDATE ON ${s}.unrouted_counts TO ${ident(r.producer)};
GRANT SELECT (id, queue, dedupe_key) ON ${s}.messages TO ${ident(r.producer)};
GRANT USAGE ON SEQUENCE ${s}.messages_id_seq TO ${ident(r.producer)};
GRANT SELECT, UPDATE (notified) ON ${s}.waiters TO ${ident(r.producer)};
-- The dedupe windows of the keys it sends (taken, given back, pruned when expired). And firing
-- schedules, which sends: a process that takes part in scheduling (startScheduler(), or a worker
-- with scheduleWithWorkers) needs this role or admin; it reads schedules, moves their next tick
-- and records the ticks fired, but cannot make, change or delete schedules.
GRANT SELECT, INSERT, UPDATE, DELETE ON ${s}.dedupe_windows TO ${ident(r.producer)};
-- Streams: an append is an insert into the inbox (the stamp round, run by readers as the owner,
-- moves it into the log); the producer reads stream settings, never the log.
GRANT SELECT ON ${s}.streams, ${s}.stream_partitions TO ${ident(r.producer)};
GRANT INSERT, SELECT (id, partition) ON ${s}.stream_inbox TO ${ident(r.producer)};
GRANT SELECT, UPDATE (next_fire_at, last_fire_at) ON ${s}.schedules TO ${ident(r.producer)};
GRANT SELECT, INSERT, UPDATE (message_id), DELETE ON ${s}.schedule_fires TO ${ident(r.producer)};
${grantFunctions(schema, PRODUCER_FUNCTIONS, r.producer)}

-- Consumer: receive, ack, nack, extend, release, the wake-up registry, group leases, and reading
-- messages and queue statistics. It cannot send or publish, and cannot create, change or delete
-- queues or bindings.
GRANT SELECT ON ${s}.queues, ${s}.queue_stats TO ${ident(r.consumer)};
GRANT SELECT, UPDATE, DELETE ON ${s}.messages TO ${ident(r.consumer)};
GRANT INSERT ON ${s}.messages_archive TO ${ident(r.consumer)};
GRANT SELECT, INSERT, UPDATE, DELETE ON ${s}.waiters, ${s}.group_leases TO ${ident(r.consumer)};
-- Flow control: the claim locks the queue's queue_flow row (FOR NO KEY UPDATE needs an UPDATE
-- privilege; only updated_at, which the consumer never writes) and keeps the rate windows and slots.
GRANT SELECT, UPDATE (updated_at) ON ${s}.queue_flow TO ${ident(r.consumer)};
GRANT SELECT, INSERT, UPDATE, DELETE ON ${s}.rate_windows, ${s}.flight_slots TO ${ident(r.consumer)};
-- Streams: consumer groups read the log, keep their membership and commit their offsets; the
-- stamp round and retention's pruning run as the owner (SECURITY DEFINER, migration 0012).
GRANT SELECT ON ${s}.streams, ${s}.stream_partitions, ${s}.stream_events, ${s}.stream_stats TO ${ident(r.consumer)};
GRANT SELECT, INSERT, UPDATE, DELETE ON ${s}.stream_groups, ${s}.stream_members, ${s}.stream_offsets TO ${ident(r.consumer)};
${grantFunctions(schema, CONSUMER_FUNCTIONS, r.consumer)}

-- Admin: every table and function of the schema, but not the migration record (migrations run
-- as the schema owner) and not CREATE on the schema.
GRANT ALL ON ALL TABLES IN SCHEMA ${s} TO ${ident(r.admin)};
GRANT ALL ON ALL SEQUENCES IN SCHEMA ${s} TO ${ident(r.admin)};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${s} TO ${ident(r.admin)};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ${s}.schema_migrations FROM ${ident(r.admin)};

COMMIT;
`
}
