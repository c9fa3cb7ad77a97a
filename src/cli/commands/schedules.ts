import type { Command } from 'commander'
import { formatTime } from '../../inspect/display.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson, printTable } from '../output.js'

/** `postbox schedules [--json]`: every schedule with its next and last tick. */
export function registerSchedules(program: Command): void {
  addConnectionOptions(program.command('schedules'))
    .description('list the schedules (cron) with their next and last tick')
    .option('--json', 'print JSON')
    .action(async (o: ConnectionOptions & { json?: boolean }) => {
      await withPostbox(o, async (postbox) => {
        const schedules = await postbox.listSchedules()
        if (o.json) return printJson(schedules)
        printTable(
          ['schedule', 'queue', 'cron', 'time zone', 'missed', 'next fire', 'last fire'],
          schedules.map((s) => [s.name, s.queue, s.cron, s.timezone, s.missed, s.nextFireAt === null ? '(never)' : formatTime(s.nextFireAt), formatTime(s.lastFireAt)]),
        )
      })
    })
}
