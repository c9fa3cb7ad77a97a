import { Option, type Command } from 'commander'
import { sleep } from '../../background-loop.js'
import { positiveDurationMs } from '../../duration.js'
import { QueueNotFoundError } from '../../errors.js'
import type { Postbox, QueueStats } from '../../postbox.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { handleInterrupts } from '../interrupts.js'
import { formatAge, formatTime } from '../../inspect/display.js'
import { printJson, printTable } from '../output.js'
import { parseWith } from '../arguments.js'

interface StatsOptions extends ConnectionOptions {
  json?: boolean
  watch?: boolean
  interval: number
}

/** `postbox stats [queue] [--json] [--watch]`: counts per queue from `queue_stats`. */
export function registerStats(program: Command): void {
  addConnectionOptions(program.command('stats'))
    .description('counts per queue: ready, delayed, in flight, dead, oldest ready age')
    .argument('[queue]', 'one queue (default: all)')
    .option('--json', 'print JSON (with --watch: one JSON line per reading)')
    .option('--watch', 'print again every --interval until Ctrl-C')
    .addOption(new Option('--interval <duration>', 'time between readings with --watch').default(2000, '2s').argParser(parseWith(positiveDurationMs)))
    .action(async (queue: string | undefined, o: StatsOptions) => {
      await withPostbox(o, async (postbox) => {
        if (!o.watch) return show(await read(postbox, queue), o.json ? 'json' : 'table')
        const stop = new AbortController()
        const stopHandling = handleInterrupts(() => stop.abort())
        try {
          while (!stop.signal.aborted) {
            const stats = await read(postbox, queue)
            if (!o.json && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H')
            if (!o.json) console.log(`${formatTime(new Date())} (every ${o.interval / 1000}s; Ctrl-C to stop)`)
            show(stats, o.json ? 'json-line' : 'table')
            await sleep(o.interval, stop.signal)
          }
        } finally {
          stopHandling()
        }
      })
    })
}

async function read(postbox: Postbox, queue: string | undefined): Promise<QueueStats[]> {
  const stats = await postbox.stats(queue)
  if (queue !== undefined && stats.length === 0) throw new QueueNotFoundError(queue)
  return stats
}

function show(stats: QueueStats[], format: 'json' | 'json-line' | 'table'): void {
  if (format === 'json') return printJson(stats)
  if (format === 'json-line') return void process.stdout.write(`${JSON.stringify({ at: new Date(), queues: stats })}\n`)
  printTable(
    ['queue', 'ready', 'delayed', 'in flight', 'dead', 'oldest ready', 'retained'],
    stats.map((s) => [s.queue, String(s.ready), String(s.delayed), String(s.inFlight), String(s.dead), formatAge(s.oldestReadyAgeMs), String(s.retained)]),
  )
}
