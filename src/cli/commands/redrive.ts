import { Option, type Command } from 'commander'
import { integer } from '../arguments.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson } from '../output.js'

/** `postbox redrive <dead-queue> [--to q] [--max n]`: moves dead letters back to work. */
export function registerRedrive(program: Command): void {
  addConnectionOptions(program.command('redrive'))
    .description('move dead letters back to work: to the queues they came from, or --to another')
    .argument('<dead-queue>', 'the dead-letter queue, for example emails.dead')
    .option('--to <queue>', 'send them all to this queue instead')
    .addOption(new Option('--max <n>', 'move at most this many (oldest first)').argParser(integer(1, 2 ** 31 - 1)))
    .option('--json', 'print JSON: { moved }')
    .action(async (deadQueue: string, o: ConnectionOptions & { to?: string; max?: number; json?: boolean }) => {
      await withPostbox(o, async (postbox) => {
        const moved = await postbox.redrive(deadQueue, { to: o.to, max: o.max })
        if (o.json) return printJson({ moved })
        console.log(`moved ${moved} message${moved === 1 ? '' : 's'} from ${deadQueue} to ${o.to ?? 'the queues they came from'}`)
      })
    })
}
