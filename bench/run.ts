// npm run bench [-- --quick] [-- --churn 10m] [-- --tracing]
// Measures postbox against raw-SQL baselines taken in the same run, with the same pool size and
// concurrency, and prints each figure absolute and as a ratio to its baseline, with the target
// from DESIGN.md. Writes bench/results/latest.json. Uses DATABASE_URL, else an embedded Postgres.
import { mkdirSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { toMilliseconds } from '../src/duration.js'
import { countingPostbox, openBenchDb, POOL_SIZE } from './bench-db.js'
import { preloadRaw, rawDrain, rawInsertLoop, rawMultiInsert } from './baselines.js'
import { percentile, progress } from './measure.js'
import * as scenario from './postbox-scenarios.js'
import * as topics from './topic-scenarios.js'
import { printReport, type Row } from './report.js'
import { withTracing } from './tracing-sdk.js'

const { values: args } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, churn: { type: 'string' }, tracing: { type: 'boolean', default: false } },
})
const quick = args.quick ?? false
const runMs = quick ? 3_000 : 8_000
const churnMs = toMilliseconds(args.churn ?? (quick ? '20s' : '10m')) ?? 600_000
const backlog = quick ? 200_000 : 1_000_000

const db = await openBenchDb()
const rows: Row[] = []
// With --tracing, the whole run is inside an active span of a registered OpenTelemetry SDK.
const run = args.tracing ? withTracing : <T>(fn: () => Promise<T>) => fn()
try {
  await run(measureAll)
} finally {
  await db.close()
}

async function measureAll(): Promise<void> {
  progress(`postbox bench on ${db.source}, pool ${POOL_SIZE}, concurrency 10${quick ? ', quick' : ''}${args.tracing ? ', tracing on' : ''}`)

  progress('baseline: one-row INSERT loop')
  const insertLoop = await rawInsertLoop(db, runMs)
  progress('postbox: send, a worker consuming')
  const send = await scenario.sendWithConsumer(db, runMs)
  rows.push({ name: 'send (10 callers, wake-ups on)', unit: 'msg/s', value: send, baseline: insertLoop, baselineName: 'one-row INSERT loop', target: { ratioAtLeast: 0.6 } })

  progress('baseline: 1,000-row INSERT')
  const multiInsert = await rawMultiInsert(db, runMs)
  progress('postbox: sendBatch of 1,000')
  const batch = await scenario.sendBatches(db, runMs)
  rows.push({ name: 'sendBatch of 1,000', unit: 'msg/s', value: batch, baseline: multiInsert, baselineName: '1,000-row INSERT', target: { ratioAtLeast: 0.8 } })

  progress('postbox: publish reaching 10 queues, against sendBatch of 10 to one queue (3 rounds each, alternating)')
  await topics.bindTopicQueues(db.postbox)
  const rounds = await topics.publishRounds(db, runMs / 2, 3)
  rows.push({ name: 'publish reaching 10 queues (median of 3)', unit: 'msg/s', value: rounds.publish, baseline: rounds.sendBatch, baselineName: 'sendBatch of 10, median of 3', target: { ratioAtLeast: 0.7 } })

  progress('baseline: raw drain of 20,000 (DELETE … LIMIT 100 SKIP LOCKED)')
  await preloadRaw(db, 20_000)
  const drain = await rawDrain(db)
  progress('postbox: end-to-end, 20,000 messages, work() at concurrency 10')
  const e2e = await scenario.endToEnd(db)
  rows.push({ name: 'end-to-end (work, concurrency 10)', unit: 'msg/s', value: e2e, baseline: drain, baselineName: 'raw DELETE drain', target: { ratioAtLeast: 0.6 } })

  progress('postbox: wake-up latency, 200 sends 20 ms apart to an idle worker')
  const latencies = await scenario.wakeUpLatency(db)
  rows.push({ name: 'wake-up latency p50', unit: 'ms', value: percentile(latencies, 50), target: { atMost: 1.5 } })
  rows.push({ name: 'wake-up latency p95', unit: 'ms', value: percentile(latencies, 95) })
  rows.push({ name: 'wake-up latency p99', unit: 'ms', value: percentile(latencies, 99), target: { atMost: 4 } })

  progress('postbox: claim rate, small queue')
  const small = await scenario.claimRate(db, 10_000)
  progress(`postbox: claim rate under a backlog of ${backlog.toLocaleString()}`)
  const big = await scenario.claimRate(db, backlog)
  rows.push({ name: `claim+ack with ${backlog.toLocaleString()} waiting`, unit: 'msg/s', value: big, baseline: small, baselineName: 'same with 10,000 waiting', target: { ratioAtLeast: 0.8 } })

  progress(`postbox: churn for ${Math.round(churnMs / 1000)} s`)
  const samples = await scenario.churn(db, churnMs, quick ? 5_000 : 60_000)
  const first = samples[0]
  const last = samples[samples.length - 1]
  const peak = Math.max(...samples.map((s) => s.tableBytes + s.indexBytes))
  if (first && last) {
    rows.push({ name: 'churn: table+index, first sample', unit: 'MB', value: (first.tableBytes + first.indexBytes) / 1e6 })
    rows.push({ name: 'churn: table+index, peak', unit: 'MB', value: peak / 1e6 })
    rows.push({ name: 'churn: table+index, last sample', unit: 'MB', value: (last.tableBytes + last.indexBytes) / 1e6 })
  }

  progress('postbox: cost per message')
  const counted = countingPostbox(db)
  const cost = { ...(await scenario.costs(db, counted)), ...(await topics.publishCosts(db, counted)) }
  await counted.close()
  for (const [step, c] of Object.entries(cost)) {
    rows.push({ name: `${step}: WAL bytes per message`, unit: 'B', value: c.walBytesPerMessage })
    rows.push({ name: `${step}: statements per message`, unit: '', value: c.statementsPerMessage })
  }

  printReport(rows)
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
  const file = new URL('./results/latest.json', import.meta.url)
  writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), source: db.source, quick, tracing: args.tracing, rows, churn: samples, latencies }, null, 2))
  progress(`wrote ${file.pathname}`)
}
