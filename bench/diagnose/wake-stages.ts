// DATABASE_URL=… npx tsx bench/diagnose/wake-stages.ts [--sends 1000] [--gap 20] [--who postbox,graphile-worker]
//
// Where a wake-up's time goes, stage by stage, over many wake-ups of an idle worker: the send's
// round trip, the notification reaching Node, the claim starting, the claim's round trip, and the
// handler starting. Timestamps come from a pg Pool that records its statements (bench/
// statement-log.ts) and from pg.Client's 'notification' events, timed by wrapping
// pg.Client.prototype.emit in this process; nothing in src/ changes. Also records the event-loop
// delay and garbage-collection pauses, so that a slow wake-up can be matched to one. Prints each
// stage's p50 / p90 / p99 / max, and for the slowest 2% of wake-ups the stage that took longest.
import { EventEmitter } from 'node:events'
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { Logger, makeWorkerUtils, run } from 'graphile-worker'
import { Postbox, type Message } from '../../src/index.js'
import { openBenchDb, POOL_SIZE } from '../bench-db.js'
import { percentile, progress, sleep } from '../measure.js'
import { GRAPHILE_WORKER_SETTINGS } from '../peers/graphile-worker.js'
import { recordingPool, summarise, type LoggedStatement } from '../statement-log.js'

const { values: args } = parseArgs({ options: { sends: { type: 'string', default: '1000' }, gap: { type: 'string', default: '20' }, who: { type: 'string', default: 'postbox,graphile-worker' } } })
const SENDS = Number(args.sends)
const GAP_MS = Number(args.gap)

// Every notification any pg.Client of this process receives, with the time it was emitted.
const notifications: number[] = []
const emit = pg.Client.prototype.emit
pg.Client.prototype.emit = function (this: pg.Client, event: string | symbol, ...rest: unknown[]) {
  if (event === 'notification') notifications.push(performance.now())
  return emit.call(this, event, ...rest)
} as typeof emit

const gcs: { start: number; ms: number }[] = []
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration })
}).observe({ entryTypes: ['gc'] })

interface WakeUp {
  sent: number
  handled: number
}

/** The first timestamp at or after `t` in a sorted list, or NaN. */
const firstAfter = (list: readonly number[], t: number) => list.find((x) => x >= t) ?? Number.POSITIVE_INFINITY

function stages(wakeUps: readonly WakeUp[], statements: readonly LoggedStatement[], isSend: (n: string) => boolean, isClaim: (n: string) => boolean) {
  const sends = statements.filter((s) => isSend(s.name)).sort((a, b) => a.startedMs - b.startedMs)
  const claims = statements.filter((s) => isClaim(s.name)).sort((a, b) => a.startedMs - b.startedMs)
  const notes = [...notifications].sort((a, b) => a - b)
  return wakeUps.map((w) => {
    const send = sends.find((s) => s.startedMs >= w.sent)
    // A send notifies only when a waiter needs telling: a message found by a claim that was under
    // way anyway (the worker had not gone idle yet) has no notification of its own.
    const candidate = firstAfter(notes, w.sent)
    const note = candidate <= w.handled ? candidate : Number.NaN
    // The claim that found the message: the last one that started before the handler ran.
    const claim = [...claims].reverse().find((c) => c.startedMs <= w.handled && c.startedMs >= w.sent)
    const sendDone = send ? send.startedMs + send.ms : Number.NaN
    const claimStart = claim?.startedMs ?? Number.NaN
    const claimEnd = claim ? claim.startedMs + claim.ms : Number.NaN
    const gc = gcs.filter((g) => g.start < w.handled && g.start + g.ms > w.sent).reduce((s, g) => s + g.ms, 0)
    return {
      total: w.handled - w.sent,
      'send call to send statement start': (send?.startedMs ?? Number.NaN) - w.sent,
      'send statement round trip': send?.ms ?? Number.NaN,
      'send call to notification in Node': note - w.sent,
      'notification to claim start': claimStart - note,
      'claim round trip': claim?.ms ?? Number.NaN,
      'claim end to handler start': w.handled - claimEnd,
      'send done to notification': note - sendDone,
      'gc during the wake-up': gc,
    }
  })
}

function print(name: string, rows: ReturnType<typeof stages>, loopDelay: ReturnType<typeof monitorEventLoopDelay>, statements: readonly LoggedStatement[]) {
  console.log(`\n=== ${name}: ${rows.length} wake-ups, ${GAP_MS} ms apart (ms)`)
  const perWakeUp = Object.entries(summarise(statements)).map(([n, e]) => `${n.slice(0, 48)} ${(e.count / rows.length).toFixed(2)}`)
  console.log(`statements per wake-up: ${perWakeUp.join('; ')}`)
  const keys = Object.keys(rows[0] ?? {}) as (keyof (typeof rows)[number])[]
  console.log(`${'stage'.padEnd(40)}${['p50', 'p90', 'p99', 'max'].map((h) => h.padStart(8)).join('')}`)
  for (const k of keys) {
    const v = rows.map((r) => r[k]).filter((x) => Number.isFinite(x))
    console.log(`${k.padEnd(40)}${[50, 90, 99].map((p) => percentile(v, p).toFixed(2).padStart(8)).join('')}${Math.max(...v).toFixed(2).padStart(8)}`)
  }
  console.log(`event-loop delay p50 / p99 / max: ${(loopDelay.percentile(50) / 1e6).toFixed(2)} / ${(loopDelay.percentile(99) / 1e6).toFixed(2)} / ${(loopDelay.max / 1e6).toFixed(2)} ms`)
  console.log(`wake-ups without a notification of their own (found by a claim already under way): ${rows.filter((r) => !Number.isFinite(r['send call to notification in Node'])).length}`)
  const slow = [...rows].sort((a, b) => b.total - a.total).slice(0, Math.max(1, Math.round(rows.length * 0.02)))
  const blame = new Map<string, number>()
  for (const r of slow) {
    const parts = {
      'send round trip': r['send statement round trip'] + Math.max(0, r['send call to send statement start']),
      'notification after the send': r['send done to notification'],
      'notification to claim start': r['notification to claim start'],
      'claim round trip': r['claim round trip'],
      'claim end to handler': r['claim end to handler start'],
    }
    const [worst] = Object.entries(parts).filter(([, v]) => Number.isFinite(v)).sort((a, b) => b[1] - a[1])
    if (worst) blame.set(worst[0], (blame.get(worst[0]) ?? 0) + 1)
  }
  console.log(`slowest ${slow.length} (from ${slow.at(-1)?.total.toFixed(2)} ms): longest stage ${[...blame].map(([k, n]) => `${k} ${n}`).join(', ')}; with a GC in ${slow.filter((r) => r['gc during the wake-up'] > 0).length}`)
}

const db = await openBenchDb()
try {
  for (const who of (args.who ?? '').split(',')) {
    notifications.length = 0
    gcs.length = 0
    const wakeUps: WakeUp[] = []
    const { pool, log } = recordingPool(db.url, POOL_SIZE)
    const loopDelay = monitorEventLoopDelay({ resolution: 1 })
    if (who === 'postbox') {
      const postbox = new Postbox({ pool, schema: db.schema })
      await postbox.createQueue('wake-stages')
      const worker = postbox.work('wake-stages', (message: Message<{ i: number }>) => {
        const w = wakeUps[message.payload.i]
        if (w) w.handled = performance.now()
      })
      await postbox.listen()
      await sleep(300)
      loopDelay.enable()
      log.start()
      for (let i = 0; i < SENDS; i++) {
        wakeUps.push({ sent: performance.now(), handled: Number.NaN })
        await postbox.send('wake-stages', { i })
        await sleep(GAP_MS)
        if (i % 200 === 199) progress(`postbox: ${i + 1} sends`)
      }
      while (wakeUps.some((w) => Number.isNaN(w.handled))) await sleep(10)
      loopDelay.disable()
      const statements = log.stop()
      await worker.stop()
      await postbox.close()
      print('postbox', stages(wakeUps, statements, (n) => /:send(:[0-9a-f]{12})?$/.test(n), (n) => /:(ack_and_)?claim(:[0-9a-f]{12})?$/.test(n)), loopDelay, statements)
    } else if (who === 'graphile-worker') {
      const schema = `gw_stages_${process.pid}`
      const logger = new Logger(() => () => {})
      const utils = await makeWorkerUtils({ pgPool: pool, schema, logger })
      await utils.migrate()
      const runner = await run({
        pgPool: pool, schema, logger, noHandleSignals: true, crontab: '', concurrency: 10, events: new EventEmitter(),
        taskList: { stages: (payload) => {
          const w = wakeUps[(payload as { i: number }).i]
          if (w) w.handled = performance.now()
        } },
        preset: { worker: GRAPHILE_WORKER_SETTINGS },
      })
      await sleep(300)
      loopDelay.enable()
      log.start()
      for (let i = 0; i < SENDS; i++) {
        wakeUps.push({ sent: performance.now(), handled: Number.NaN })
        await utils.addJob('stages', { i })
        await sleep(GAP_MS)
        if (i % 200 === 199) progress(`graphile-worker: ${i + 1} sends`)
      }
      while (wakeUps.some((w) => Number.isNaN(w.handled))) await sleep(10)
      loopDelay.disable()
      const statements = log.stop()
      await runner.stop()
      await utils.release()
      await db.sql(`DROP SCHEMA ${schema} CASCADE`)
      print('graphile-worker', stages(wakeUps, statements, (n) => /add_job/i.test(n), (n) => n.startsWith('get_job')), loopDelay, statements)
    }
    await pool.end()
  }
} finally {
  await db.close()
}
