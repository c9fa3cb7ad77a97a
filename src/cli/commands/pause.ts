import type { Command } from 'commander'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson } from '../output.js'

/**
 * `postbox pause <queue>` and `postbox resume <queue>`: stop and restart claims from a queue in
 * every process (sends are still accepted). Resuming wakes idle consumers at once.
 */
export function registerPause(program: Command): void {
  for (const action of ['pause', 'resume'] as const) {
    addConnectionOptions(program.command(action))
      .description(action === 'pause'
        ? 'pause a queue: sends are still accepted, nothing is claimed until resume'
        : 'resume a paused queue: its idle consumers are woken at once')
      .argument('<queue>', 'the queue')
      .option('--json', `print JSON: { queue, paused, changed }`)
      .action(async (queue: string, o: ConnectionOptions & { json?: boolean }) => {
        await withPostbox(o, async (postbox) => {
          const changed = action === 'pause' ? await postbox.pauseQueue(queue) : await postbox.resumeQueue(queue)
          if (o.json) return printJson({ queue, paused: action === 'pause', changed })
          const state = action === 'pause' ? 'paused' : 'resumed'
          console.log(changed ? `${state} ${queue}` : `${queue} was already ${action === 'pause' ? 'paused' : 'running'}`)
        })
      })
  }
}
