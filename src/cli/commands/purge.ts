import type { Command } from 'commander'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson } from '../output.js'

/** `postbox purge <queue> --yes`: deletes every message of a queue. Refuses without `--yes`. */
export function registerPurge(program: Command): void {
  const command = addConnectionOptions(program.command('purge'))
    .description('delete every message of a queue (waiting, delayed and in flight); the queue stays')
    .argument('<queue>', 'the queue')
    .option('--yes', 'really delete them')
    .option('--json', 'print JSON: { purged }')
  command.action(async (queue: string, o: ConnectionOptions & { yes?: boolean; json?: boolean }) => {
    if (!o.yes) command.error(`error: purge deletes every message of '${queue}' and cannot be undone: add --yes to do it`, { exitCode: 2 })
    await withPostbox(o, async (postbox) => {
      const purged = await postbox.purgeQueue(queue)
      if (o.json) return printJson({ purged })
      console.log(`purged ${purged} message${purged === 1 ? '' : 's'} from ${queue}`)
    })
  })
}
