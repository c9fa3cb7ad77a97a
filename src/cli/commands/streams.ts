import type { Command } from 'commander'
import { formatDuration } from '../../duration.js'
import { summariseGroups } from '../../streams/group-summary.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson, printTable } from '../output.js'

/** `postbox streams [--json]`: every stream, and per consumer group its lag and live members. */
export function registerStreams(program: Command): void {
  addConnectionOptions(program.command('streams'))
    .description('list the streams and their consumer groups, with lag per group')
    .option('--json', 'print JSON (durations in milliseconds; one row per stream and group)')
    .action(async (o: ConnectionOptions & { json?: boolean }) => {
      await withPostbox(o, async (postbox) => {
        const [streams, stats] = await Promise.all([postbox.listStreams(), postbox.streamStats()])
        const rows = summariseGroups(streams, stats)
        if (o.json) return printJson(rows)
        printTable(
          ['stream', 'partitions', 'retention', 'events', 'group', 'lag', 'lost to retention', 'members'],
          rows.map((r) => [
            r.stream,
            String(r.partitions),
            formatDuration(r.retentionMs),
            String(r.head + r.unstamped),
            r.group,
            r.lag === null ? null : String(r.lag),
            r.lostToRetention === null ? null : String(r.lostToRetention),
            r.group === null ? null : String(r.members),
          ]),
        )
      })
    })
}
