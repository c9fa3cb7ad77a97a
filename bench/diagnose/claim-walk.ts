// DATABASE_URL=… npx tsx bench/diagnose/claim-walk.ts [--count 20000]
//
// What a claim's index scan walks over as a drain goes on without vacuum: every claim starts at
// the front of the queue's range in the claim index, where the entries of the rows claimed (and
// then acked) before it stay until vacuum removes them, and postbox's in-flight rows have a second
// entry further on (their lease expiry is their available_at). One connection claims and completes
// 100 at a time; every 2,000 messages the claim's locking scan is run under EXPLAIN (ANALYZE,
// BUFFERS) (rolled back), for postbox's claim index and graphile-worker's partial index. Then the
// same with 1,000 claimed rows left in flight, and with the ready rows gone (a claim that finds
// nothing walks every in-flight entry).
import pg from 'pg'
import { parseArgs } from 'node:util'
import { pgExecutor } from '../../src/db/pg-executor.js'
import * as m from '../../src/queries/messages.js'
import { schemaName } from '../../src/schema-name.js'
import { openBenchDb } from '../bench-db.js'
import { cpuReader } from '../cpu.js'
import { graphileWorker } from '../peers/graphile-worker.js'

const { values: args } = parseArgs({ options: { count: { type: 'string', default: '20000' } } })
const COUNT = Number(args.count)
const PAYLOAD = JSON.stringify({ to: 'someone@example.com', template: 'welcome', n: 42 })

const db = await openBenchDb()
const gw = await graphileWorker(db, await cpuReader(db))
await gw.endToEnd(1000)
const capturedClaim = [...gw.log.texts].find(([name]) => name.startsWith('get_job'))?.[1] as { text: string; values: unknown[] }
const capturedComplete = [...gw.log.texts].find(([name]) => name.startsWith('complete_jobs'))?.[1] as { text: string; values: unknown[] }
const gwJobs = `${gw.schema}._private_jobs`
await db.postbox.createQueue('q')
const client = new pg.Client({ connectionString: db.url })
await client.connect()
const ex = pgExecutor(client)
const s = schemaName(db.schema)

/** The locking scan of postbox's receive (as in its migration), alone. */
const postboxScan = `SELECT m.id FROM ${db.schema}.messages m
  WHERE m.queue = 'q' AND m.available_at <= now()
    AND (m.group_key IS NULL OR NOT EXISTS (SELECT 1 FROM ${db.schema}.messages g WHERE g.queue = m.queue AND g.group_key = m.group_key AND g.id < m.id))
  ORDER BY m.priority DESC, m.available_at, m.id LIMIT 100 FOR UPDATE SKIP LOCKED`
/** graphile-worker's locking CTE (j_raw) cut out of its captured claim statement. */
const graphileScan = /with j_raw as \(([\s\S]*?)\n\)/.exec(capturedClaim.text)?.[1] ?? ''

async function explain(text: string, values: unknown[] = []): Promise<{ ms: number; buffers: number }> {
  await client.query('BEGIN')
  try {
    const { rows } = await client.query({ text: `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values })
    const plan = (rows[0] as { 'QUERY PLAN': [{ Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number }; 'Execution Time': number }] })['QUERY PLAN'][0]
    return { ms: plan['Execution Time'], buffers: plan.Plan['Shared Hit Blocks'] + plan.Plan['Shared Read Blocks'] }
  } finally {
    await client.query('ROLLBACK')
  }
}

/** One system: fill, then drain 100 at a time, explaining the scan every 2,000; then in flight and empty. */
async function walk(name: string, fill: () => Promise<void>, table: string, scan: string, scanValues: unknown[], step: () => Promise<{ ids: string[]; complete: () => Promise<void> }>) {
  await fill()
  await db.sql(`VACUUM ANALYZE ${table}`)
  await db.sql(`ALTER TABLE ${table} SET (autovacuum_enabled = false)`)
  console.log(`\n=== ${name}: the claim's locking scan (LIMIT 100) as the drain goes on, no vacuum`)
  console.log('claimed+completed so far   pages touched   ms')
  for (let done = 0; done < COUNT - 2000; ) {
    const e = await explain(scan, scanValues)
    console.log(`${String(done).padStart(24)}   ${String(e.buffers).padStart(13)}   ${e.ms.toFixed(3)}`)
    for (let i = 0; i < 20; i++) {
      const { ids, complete } = await step()
      await complete()
      done += ids.length
    }
  }
  // 1,000 claimed and left in flight, then the rest of the ready rows completed: the scan now
  // finds no ready row and walks what is left.
  const held: (() => Promise<void>)[] = []
  for (let i = 0; i < 10; i++) held.push((await step()).complete)
  let e = await explain(scan, scanValues)
  console.log(`with 1,000 in flight:         ${String(e.buffers).padStart(8)}   ${e.ms.toFixed(3)}`)
  for (;;) {
    const { ids, complete } = await step()
    await complete()
    if (ids.length === 0) break
  }
  e = await explain(scan, scanValues)
  console.log(`no ready row, 1,000 in flight: ${String(e.buffers).padStart(7)}   ${e.ms.toFixed(3)}`)
  for (const complete of held) await complete()
  await db.sql(`VACUUM ${table}`)
  e = await explain(scan, scanValues)
  console.log(`empty, after VACUUM:           ${String(e.buffers).padStart(7)}   ${e.ms.toFixed(3)}`)
  await db.sql(`ALTER TABLE ${table} RESET (autovacuum_enabled)`)
}

try {
  await walk(
    'postbox (messages_claim_idx: queue, priority DESC, available_at, id)',
    async () => {
      await db.sql(`DELETE FROM ${db.schema}.messages`)
      await db.sql(`INSERT INTO ${db.schema}.messages (queue, payload) SELECT 'q', $1::jsonb FROM generate_series(1, $2)`, [PAYLOAD, COUNT])
    },
    `${db.schema}.messages`,
    postboxScan,
    [],
    async () => {
      const rows = await m.receive(ex, s, 'q', 100, null)
      return { ids: rows.map((r) => r.id), complete: async () => void (rows.length && (await m.ack(ex, s, rows.map((r) => r.id), rows.map((r) => r.lease as string)))) }
    },
  )
  await walk(
    'graphile-worker (jobs_main_index: priority, run_at WHERE is_available)',
    async () => {
      await db.sql(`DELETE FROM ${gwJobs}`)
      const spec = Array.from({ length: 1000 }, () => `('bench', '${PAYLOAD}'::json)`).join(',')
      for (let n = 0; n < COUNT; n += 1000) await db.sql(`SELECT ${gw.schema}.add_jobs(ARRAY(SELECT ROW(i, p, NULL, NULL, NULL, NULL, NULL, NULL)::${gw.schema}.job_spec FROM (VALUES ${spec}) v(i, p)))`)
    },
    gwJobs,
    // The CTE refers to $2 (the task ids) only.
    graphileScan.replace(/limit \d+/, 'limit 100').replaceAll('$2', '$1'),
    [capturedClaim.values[1]],
    async () => {
      const { rows } = await client.query({ text: capturedClaim.text.replace(/limit \d+/, 'limit 100'), values: capturedClaim.values })
      const ids = rows.map((r: { id: string }) => r.id)
      return { ids, complete: async () => void (ids.length && (await client.query({ text: capturedComplete.text, values: [ids] }))) }
    },
  )
} finally {
  await client.end()
  await gw.close()
  await db.close()
}
