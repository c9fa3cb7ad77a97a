import type { Command } from 'commander'
import { QueueNotFoundError } from '../../errors.js'
import { formatTime } from '../../inspect/display.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson, printTable } from '../output.js'

/** `postbox bindings [queue] [--json]`: the topic bindings, and how many publishes reached no queue. */
export function registerBindings(program: Command): void {
  addConnectionOptions(program.command('bindings'))
    .description('list the topic bindings (routing-key patterns and header filters) and the unrouted publishes')
    .argument('[queue]', "only this queue's bindings")
    .option('--json', 'print JSON: { bindings, unrouted }')
    .action(async (queue: string | undefined, o: ConnectionOptions & { json?: boolean }) => {
      await withPostbox(o, async (postbox) => {
        if (queue !== undefined && !(await postbox.getQueue(queue))) throw new QueueNotFoundError(queue)
        const [bindings, unrouted] = await Promise.all([postbox.listBindings({ queue }), postbox.unroutedStats()])
        if (o.json) return printJson({ bindings, unrouted })
        printTable(
          ['queue', 'pattern', 'filter'],
          bindings.map((b) => [b.queue, b.pattern, b.filter === null ? '' : JSON.stringify(b.filter)]),
        )
        const last = unrouted.lastRoutingKey === null ? '' : `, the latest ${unrouted.lastRoutingKey} at ${formatTime(unrouted.lastAt)}`
        console.log(`unrouted publishes: ${unrouted.count}${last}`)
      })
    })
}
