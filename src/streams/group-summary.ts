import type { StreamStats } from './stream-stats.js'

/** One stream and one of its groups, summed over the partitions (the CLI's and the dashboard's stream rows). */
export interface GroupSummary {
  stream: string
  partitions: number
  retentionMs: number
  group: string | null
  head: number
  lag: number | null
  lostToRetention: number | null
  members: number
  unstamped: number
}

function summarise(stream: { name: string; partitions: number; retentionMs: number }, rows: readonly StreamStats[]): GroupSummary[] {
  // The view has a row per partition and group; the head and the unstamped count are the partition's.
  const partitions = new Map(rows.map((r) => [r.partition, r]))
  const head = [...partitions.values()].reduce((sum, r) => sum + Number(r.headOffset), 0)
  const unstamped = [...partitions.values()].reduce((sum, r) => sum + r.unstamped, 0)
  const groups = new Map<string | null, StreamStats[]>()
  for (const row of rows) if (row.group !== null) groups.set(row.group, [...(groups.get(row.group) ?? []), row])
  if (groups.size === 0) groups.set(null, [])
  return [...groups].map(([group, of]) => ({
    stream: stream.name,
    partitions: stream.partitions,
    retentionMs: stream.retentionMs,
    group,
    head,
    lag: group === null ? null : of.reduce((sum, r) => sum + (r.lag ?? 0), 0),
    lostToRetention: group === null ? null : of.reduce((sum, r) => sum + (r.lostToRetention ?? 0), 0),
    members: new Set(of.flatMap((r) => (r.owner === null ? [] : [r.owner]))).size,
    unstamped,
  }))
}

/**
 * One row per stream and consumer group (a stream without groups gets one row with a null
 * group), from `listStreams()` and `streamStats()`.
 */
export function summariseGroups(streams: readonly { name: string; partitions: number; retentionMs: number }[], stats: readonly StreamStats[]): GroupSummary[] {
  return streams.flatMap((stream) => summarise(stream, stats.filter((r) => r.stream === stream.name)))
}
