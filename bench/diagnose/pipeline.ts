// npx tsx bench/diagnose/pipeline.ts
// Whether a worker's claims overlap its handlers during a drain: for each claim of a 20,000
// drain, when it was sent, how long it ran, and how many claims were in flight at once.
import { Postbox } from '../../src/index.js'
import { openBenchDb } from '../bench-db.js'
import { recordingPool } from '../statement-log.js'

const db = await openBenchDb()
const { pool, log } = recordingPool(db.url, 10)
const postbox = new Postbox({ pool, schema: db.schema })
const N = 20_000
const batch = Array.from({ length: 1000 }, (_, i) => ({ n: i }))
for (let round = 0; round < 3; round++) {
  const q = `drain-${round}`
  await db.postbox.createQueue(q)
  for (let n = 0; n < N; n += 1000) await db.postbox.sendBatch(q, batch)
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
  let done = 0
  let finished: () => void = () => {}
  const all = new Promise<void>((r) => (finished = r))
  const handled: number[] = []
  log.start()
  const t0 = performance.now()
  const worker = postbox.work(q, () => { handled.push(performance.now()); if (++done === N) finished() }, { concurrency: 10 })
  await all
  const ms = performance.now() - t0
  const stmts = log.stop().filter((s) => /claim/.test(s.name))
  await worker.stop()
  let busyDb = 0
  for (const s of stmts) busyDb += s.ms
  const gaps: number[] = []
  for (let i = 1; i < stmts.length; i++) gaps.push(stmts[i]!.startedMs - (stmts[i - 1]!.startedMs + stmts[i - 1]!.ms))
  gaps.sort((a, b) => a - b)
  console.log(`round ${round}: ${Math.round(N / ms * 1000)} msg/s, ${stmts.length} claims, claim time ${busyDb.toFixed(0)} of ${ms.toFixed(0)} ms; gap claim end -> next claim start p10/p50/p90 ${gaps[Math.floor(gaps.length * 0.1)]?.toFixed(2)}/${gaps[Math.floor(gaps.length / 2)]?.toFixed(2)}/${gaps[Math.floor(gaps.length * 0.9)]?.toFixed(2)} ms`)
  const sample = stmts.slice(20, 30).map((s) => `${(s.startedMs - t0).toFixed(1)}+${s.ms.toFixed(1)}(${s.rows},a${s.arrayLength ?? 0})`)
  console.log('  ' + sample.join(' '))
}
await postbox.close()
await pool.end()
await db.close()
