import type { StreamStatsRow } from '../queries/streams-groups.js'

/**
 * One row of the `stream_stats` view: a partition of a stream, and one group's place in it
 * (`group` is null for a stream that no group reads). Offsets are strings of integers; `lag` is
 * how many events the group has yet to read (stamped after its committed offset, plus the
 * unstamped), `unstamped` how many committed appends wait for their offset (readers stamp them).
 */
export interface StreamStats {
  stream: string
  partition: number
  group: string | null
  headOffset: string
  logStartOffset: string
  committedOffset: string | null
  lag: number | null
  owner: string | null
  epoch: string | null
  lostToRetention: number | null
  heartbeatAgeMs: number | null
  unstamped: number
}

const count = (text: string | null) => (text === null ? null : Number(text))

/** A {@link StreamStats} from a row of the view. */
export function streamStats(row: StreamStatsRow): StreamStats {
  return {
    stream: row.stream,
    partition: row.partition,
    group: row.group,
    headOffset: row.head_offset,
    logStartOffset: row.log_start_offset,
    committedOffset: row.committed_offset,
    lag: count(row.lag),
    owner: row.owner,
    epoch: row.epoch,
    lostToRetention: count(row.lost_to_retention),
    heartbeatAgeMs: row.heartbeat_age_ms,
    unstamped: Number(row.unstamped),
  }
}
