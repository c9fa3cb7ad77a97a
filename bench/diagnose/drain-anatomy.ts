// DATABASE_URL=… npx tsx bench/diagnose/drain-anatomy.ts [--rounds 2] [--count 20000]
//
// What one end-to-end drain writes and reads in Postgres, per message, for the raw DELETE drain,
// postbox, graphile-worker and pg-boss: WAL records by kind (pg_walinspect), row updates (HOT or
// not) and deletes, index entries read by scans per index, and, with pg_stat_statements loaded
// (track = all, so statements inside SQL functions are listed), where the statement time goes.
// Needs a superuser DATABASE_URL on a server with pg_walinspect (PG 15+) and, for the statement
// table, shared_preload_libraries = pg_stat_statements. Not part of `npm run bench`: the counters
// it reads cost time of their own, and stats are flushed by idle backends only after a pause.
import { parseArgs } from 'node:util'
import { openBenchDb, type BenchDb } from '../bench-db.js'
import { preloadRaw, rawDrain } from '../baselines.js'
import type { Contender, DrainObserver } from '../contender.js'
import { cpuBetween, cpuReader } from '../cpu.js'
import { settle } from '../end-to-end.js'
import { progress, sleep } from '../measure.js'
import { graphileWorker } from '../peers/graphile-worker.js'
import { pgBoss } from '../peers/pg-boss.js'
import { postboxContender } from '../postbox-scenarios.js'

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '1' }, count: { type: 'string', default: '20000' } } })
const COUNT = Number(args.count)
const ROUNDS = Number(args.rounds)
/** Idle backends flush their table and index counters after up to 10 s (PG 15+). */
const STATS_FLUSH_MS = 11_000

interface Snapshot {
  lsn: string
  tables: Record<string, number>
  indexes: Record<string, { scans: number; read: number; fetched: number }>
}

async function snapshot(db: BenchDb, schemas: readonly string[]): Promise<Snapshot> {
  const [lsn] = await db.sql<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
  const [t] = await db.sql<Record<string, string>>(
    `SELECT sum(n_tup_ins) AS ins, sum(n_tup_upd) AS upd, sum(n_tup_hot_upd) AS hot, sum(n_tup_del) AS del
     FROM pg_stat_user_tables WHERE schemaname = ANY($1)`,
    [schemas],
  )
  const idx = await db.sql<{ name: string; scans: string; read: string; fetched: string }>(
    `SELECT relname || '.' || indexrelname AS name, idx_scan AS scans, idx_tup_read AS read, idx_tup_fetch AS fetched
     FROM pg_stat_user_indexes WHERE schemaname = ANY($1)`,
    [schemas],
  )
  return {
    lsn: lsn?.lsn as string,
    tables: Object.fromEntries(Object.entries(t ?? {}).map(([k, v]) => [k, Number(v)])),
    indexes: Object.fromEntries(idx.map((r) => [r.name.replace(/_[0-9a-f]{40,}/, '_<queue>'), { scans: Number(r.scans), read: Number(r.read), fetched: Number(r.fetched) }])),
  }
}

async function report(db: BenchDb, name: string, schemas: readonly string[], run: (observer: DrainObserver) => Promise<void>): Promise<void> {
  let before: Snapshot | undefined
  const readCpu = await cpuReader(db)
  let cpuBefore = readCpu()
  await run({
    before: async () => {
      await db.sql('SELECT pg_stat_statements_reset()').catch(() => {})
      before = await snapshot(db, schemas)
      cpuBefore = readCpu()
    },
    after: async () => {},
  })
  const cpu = cpuBetween(cpuBefore, readCpu())
  const statements = await db
    .sql<{ query: string; calls: string; ms: string; rows: string; hit: string; toplevel: boolean }>(
      `SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time AS ms, rows, shared_blks_hit AS hit, toplevel
       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
       ORDER BY total_exec_time DESC LIMIT 12`,
    )
    .catch(() => [])
  await sleep(STATS_FLUSH_MS)
  const after = await snapshot(db, schemas)
  const b = before as Snapshot
  const wal = await db.sql<{ rec: string; count: string; rec_bytes: string; fpi_bytes: string }>(
    `SELECT "resource_manager/record_type" AS rec, count, record_size AS rec_bytes, fpi_size AS fpi_bytes
     FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true) WHERE count > 0 ORDER BY record_size + fpi_size DESC`,
    [b.lsn, after.lsn],
  )
  const per = (n: number) => (n / COUNT).toFixed(3)
  console.log(`\n=== ${name}: ${COUNT} messages`)
  console.log(`CPU per message: Node ${(cpu.nodeUs / COUNT).toFixed(1)} µs, Postgres ${cpu.postgresUs === undefined ? '?' : (cpu.postgresUs / COUNT).toFixed(1)} µs (includes the ${STATS_FLUSH_MS / 1000} s pause? no: read before it)`)
  const totalWal = wal.reduce((s, r) => s + Number(r.rec_bytes) + Number(r.fpi_bytes), 0)
  console.log(`WAL per message: ${(totalWal / COUNT).toFixed(0)} B; records per message by kind (record bytes + full-page images):`)
  for (const r of wal) console.log(`  ${r.rec.padEnd(28)} ${per(Number(r.count)).padStart(7)}  ${(Number(r.rec_bytes) / COUNT).toFixed(0).padStart(5)} B + ${(Number(r.fpi_bytes) / COUNT).toFixed(0)} B FPI`)
  const dt = Object.fromEntries(Object.keys(after.tables).map((k) => [k, per((after.tables[k] ?? 0) - (b.tables[k] ?? 0))]))
  console.log(`rows per message: inserted ${dt.ins}, updated ${dt.upd} (HOT ${dt.hot}), deleted ${dt.del}`)
  console.log('index scans per message: scans, entries read, heap rows fetched')
  for (const [index, a] of Object.entries(after.indexes)) {
    const was = b.indexes[index] ?? { scans: 0, read: 0, fetched: 0 }
    if (a.scans === was.scans) continue
    console.log(`  ${index.padEnd(60)} ${per(a.scans - was.scans).padStart(7)} ${per(a.read - was.read).padStart(8)} ${per(a.fetched - was.fetched).padStart(8)}`)
  }
  if (statements.length > 0) {
    console.log('statements by total time (pg_stat_statements, track = all: nested ones too):')
    for (const s of statements) {
      console.log(`  ${(Number(s.ms) / COUNT * 1000).toFixed(1).padStart(6)} µs/msg  calls ${s.calls.padStart(6)}  rows/call ${(Number(s.rows) / Number(s.calls)).toFixed(1).padStart(6)}  buffers/call ${(Number(s.hit) / Number(s.calls)).toFixed(0).padStart(5)}  ${s.toplevel ? 'top' : 'nested'}  ${s.query.slice(0, 110)}`)
    }
  }
}

const db = await openBenchDb()
const readCpu = await cpuReader(db)
const contenders: Contender[] = [postboxContender(db, readCpu), await graphileWorker(db, readCpu), await pgBoss(db, readCpu)]
const schemaOf: Record<string, string> = {
  postbox: db.schema,
  'graphile-worker': `gw_bench_${process.pid}`,
  'pg-boss': `pgboss_bench_${process.pid}`,
}
try {
  for (let round = 1; round <= ROUNDS; round++) {
    progress(`round ${round}: raw drain`)
    await report(db, 'raw DELETE … LIMIT 100 SKIP LOCKED drain', [db.schema], async (observer) => {
      await preloadRaw(db, COUNT)
      await settle(db, [])
      await observer.before()
      await rawDrain(db)
    })
    for (const c of contenders) {
      progress(`round ${round}: ${c.name}`)
      await report(db, c.name, [schemaOf[c.name] as string], async (observer) => {
        await c.endToEnd(COUNT, observer)
      })
    }
  }
} finally {
  for (const c of contenders) await c.close().catch(() => {})
  await db.close()
}
