import type { Command } from 'commander'
import { formatDuration } from '../../duration.js'
import { flowSummary } from '../../queue/queue-options.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson, printTable } from '../output.js'

/** `postbox queues [--json]`: every queue with its settings. */
export function registerQueues(program: Command): void {
  addConnectionOptions(program.command('queues'))
    .description('list the queues and their settings')
    .option('--json', 'print JSON (durations in milliseconds)')
    .action(async (o: ConnectionOptions & { json?: boolean }) => {
      await withPostbox(o, async (postbox) => {
        const queues = await postbox.listQueues()
        if (o.json) return printJson(queues)
        printTable(
          ['queue', 'visibility timeout', 'max attempts', 'backoff', 'dead letter', 'retention', 'flow'],
          queues.map((q) => [
            q.name,
            formatDuration(q.visibilityTimeout),
            String(q.maxAttempts),
            `${q.backoff.type} ${formatDuration(q.backoff.base)}..${formatDuration(q.backoff.max)}${q.backoff.jitter ? ' jitter' : ''}`,
            q.deadLetter === false ? '(none)' : q.deadLetter,
            q.retention === false ? '' : formatDuration(q.retention),
            flowSummary(q),
          ]),
        )
      })
    })
}
