import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'
import { statement } from './messages.js'

// Consumer groups of streams: membership, fenced offset commits, seek, retention and stats.
// The logic lives in the SQL functions of migrations/0010_streams.sql.

/** A partition a member owns after a heartbeat. */
export interface OwnedRow {
  partition: number
  epoch: string
  committed_offset: string
  share: number
}

/**
 * A member's heartbeat (stream_rebalance): records it alive, frees dead members' partitions,
 * takes its share of the free ones; returns what it owns and its share.
 */
export async function rebalance(
  db: Executor,
  s: SchemaName,
  p: { stream: string; group: string; member: string; sessionTimeoutMs: number; from: string },
): Promise<OwnedRow[]> {
  const { rows } = await db.query<OwnedRow>(
    `SELECT partition, epoch::text, committed_offset::text, share
     FROM ${s.sql}.stream_rebalance(stream => $1, group_name => $2, member => $3,
                                    session_timeout => $4 * interval '1 millisecond', start_from => $5)`,
    [p.stream, p.group, p.member, p.sessionTimeoutMs, p.from],
  )
  return rows
}

/** Gives partitions back (all when `partitions` is null); with `leave`, the member leaves the group. */
export async function release(
  db: Executor,
  s: SchemaName,
  p: { stream: string; group: string; member: string; partitions: readonly number[] | null; leave: boolean },
): Promise<void> {
  await db.query(
    `SELECT ${s.sql}.stream_release(stream => $1, group_name => $2, member => $3, partitions => $4, leave => $5)`,
    [p.stream, p.group, p.member, p.partitions, p.leave],
  )
}

/** Commits a group's offset for a partition, fenced by (member, epoch): raises PBS04 when fenced. */
export async function commitOffset(
  db: Executor,
  s: SchemaName,
  p: { stream: string; group: string; partition: number; member: string; epoch: string; offset: string; lost: number },
): Promise<void> {
  await db.query(
    `SELECT ${s.sql}.stream_commit($1, $2, $3, $4, $5::bigint, $6::bigint, $7)`,
    [p.stream, p.group, p.partition, p.member, p.epoch, p.offset, p.lost],
    statement(s, 'stream_commit'),
  )
}

/** Where `seek` moves a group. */
export type SeekTarget =
  | { kind: 'earliest' | 'latest' }
  | { kind: 'timestamp'; at: Date }
  | { kind: 'offset'; partition: number; offset: string }

/** Moves a group's committed offsets; returns how many partitions moved. */
export async function seekGroup(db: Executor, s: SchemaName, stream: string, group: string, target: SeekTarget): Promise<number> {
  const { rows } = await db.query<{ moved: number }>(
    `SELECT ${s.sql}.stream_seek(stream => $1, group_name => $2, target => $3, at_time => $4,
                                 target_partition => $5, target_offset => $6::bigint) AS moved`,
    [
      stream,
      group,
      target.kind,
      target.kind === 'timestamp' ? target.at : null,
      target.kind === 'offset' ? target.partition : null,
      target.kind === 'offset' ? target.offset : null,
    ],
  )
  return rows[0]?.moved ?? 0
}

/** Drops the retention segments that ended before `now` minus their stream's retention; returns how many. */
export async function pruneStreams(db: Executor, s: SchemaName, now: Date | null): Promise<number> {
  const { rows } = await db.query<{ dropped: number }>(`SELECT ${s.sql}.prune_streams($1) AS dropped`, [now])
  return rows[0]?.dropped ?? 0
}

/** A row of the `stream_stats` view. */
export interface StreamStatsRow {
  stream: string
  partition: number
  group: string | null
  head_offset: string
  log_start_offset: string
  committed_offset: string | null
  lag: string | null
  owner: string | null
  epoch: string | null
  lost_to_retention: string | null
  heartbeat_age_ms: number | null
  unstamped: string
}

/** The `stream_stats` view: every stream's partitions and groups, or one stream's. */
export async function selectStreamStats(db: Executor, s: SchemaName, stream: string | null): Promise<StreamStatsRow[]> {
  const { rows } = await db.query<StreamStatsRow>(
    `SELECT stream, partition, "group", head_offset::text, log_start_offset::text, committed_offset::text, lag::text,
            owner, epoch::text, lost_to_retention::text, heartbeat_age_ms::float8, unstamped::text
     FROM ${s.sql}.stream_stats WHERE $1::text IS NULL OR stream = $1
     ORDER BY stream, "group" NULLS FIRST, partition`,
    [stream],
  )
  return rows
}
