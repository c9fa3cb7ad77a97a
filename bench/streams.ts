// npm run bench:streams [-- --quick] [-- --hold <seconds>]
// The stream round of the benchmark: each figure of streams next to its work-queue baseline,
// measured in the same run on the same Postgres, pool and concurrency (DESIGN.md targets).
// Prints a table and writes bench/results/streams-latest.json. --hold sets how long the other
// appending transaction stays open in the last figure (default 60 s, 3 s with --quick).
import { mkdirSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { openBenchDb } from './bench-db.js'
import { percentile, progress } from './measure.js'
import { wakeUpLatency } from './postbox-scenarios.js'
import * as streams from './stream-scenarios.js'

const args = parseArgs({ options: { quick: { type: 'boolean', default: false }, hold: { type: 'string' } } }).values
const quick = args.quick ?? false
const runMs = quick ? 1_500 : 4_000
const rounds = 3
const count = quick ? 10_000 : 20_000
const openMs = args.hold === undefined ? (quick ? 3_000 : 60_000) : Number(args.hold) * 1000
if (!(openMs > 0)) throw new Error(`--hold takes a positive number of seconds, got ${args.hold}`)

const db = await openBenchDb()
const rows: { figure: string; streams: number; baseline: number; ratio: number; target: string }[] = []
const row = (figure: string, value: number, baseline: number, target: string) => rows.push({ figure, streams: value, baseline, ratio: value / baseline, target })
try {
  progress(`streams bench on ${db.source}${quick ? ', quick' : ''}`)
  progress('append against send, 10 callers')
  const single = await streams.appendVersusSend(db, runMs, rounds)
  row('append, 10 callers (events/s) vs send', single.append, single.send, '≥ 0.8x')
  progress('appendBatch of 1,000 against sendBatch of 1,000, 10 callers')
  const batch = await streams.appendBatchVersusSendBatch(db, runMs, rounds)
  row('appendBatch of 1,000 (events/s) vs sendBatch', batch.appendBatch, batch.sendBatch, '≥ 0.8x')
  progress(`one group, 4 partitions, ${count.toLocaleString()} events against a work-queue drain of as many, ${rounds} rounds`)
  const read = await streams.groupReadVersusQueue(db, count, rounds)
  row('group read, 4 partitions, no-op (events/s) vs queue end-to-end', read.stream, read.queue, '≥ 1.5x')
  progress(`five groups on ${(count / 4).toLocaleString()} events`)
  const five = await streams.fiveGroups(db, count / 4)
  progress(`  offset commits per event per group: ${five.commitsPerEventPerGroup.toFixed(4)}; ${Math.round(five.perGroupRate)} events/s per group`)
  progress('idle-group latency against the queue wake-up latency, 100 each, 20 ms apart')
  const queueLatency = await wakeUpLatency(db, 100, 20)
  const streamLatency = await streams.idleGroupLatency(db, 100, 20)
  row('idle group latency p50 (ms) vs queue wake-up p50', percentile(streamLatency, 50), percentile(queueLatency, 50), '≤ 2x')
  row('idle group latency p99 (ms) vs queue wake-up p99', percentile(streamLatency, 99), percentile(queueLatency, 99), '(reported)')
  progress(`idle-group latency while another appending transaction stays open for ${openMs / 1000} s`)
  const open = await streams.latencyWithOpenTransaction(db, openMs, 20)
  row(`latency p50 (ms) during a ${openMs / 1000} s open append vs idle p50`, open.p50, percentile(streamLatency, 50), '(reported)')

  console.log('\n| figure | streams | baseline | ratio | target |\n| --- | --- | --- | --- | --- |')
  for (const r of rows) console.log(`| ${r.figure} | ${r.streams.toFixed(r.streams < 100 ? 2 : 0)} | ${r.baseline.toFixed(r.baseline < 100 ? 2 : 0)} | ${r.ratio.toFixed(2)}x | ${r.target} |`)
  console.log(`\nfive groups: ${five.commitsPerEventPerGroup.toFixed(4)} offset commits per event per group (one per batch of up to 500), ${Math.round(five.perGroupRate)} events/s per group`)
  console.log(`one group: ${read.offsetWrites.toFixed(4)} offset commits per event`)
  console.log(`open transaction: ${open.delivered} events delivered while it was open (p99 ${open.p99.toFixed(2)} ms; p50 by fifth of the hold ${open.p50ByFifth.map((p) => p.toFixed(2)).join(', ')} ms); its own event came ${open.lateCameLast ? 'after all of them' : 'NOT last'} once it committed`)
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
  writeFileSync(new URL('./results/streams-latest.json', import.meta.url), JSON.stringify({ at: new Date().toISOString(), source: db.source, quick, rows, five, open }, null, 2))
} finally {
  await db.close()
}
