// npx tsx bench/diagnose/flow-statements.ts [variant]
//   PRIME=<variant>: drain a queue of that variant first, on the same pool; CALLERS=<n> (default 10);
//   TAKE=<n>: messages a round (10,000); SAMPLE=<text>: whose waits to sample, statements containing it
//   (default `claim(`); TOP=<n>: how many statements to show (12)
//   PATCH_SQL=<file>: SQL run after the migrations ({{schema}} and {{schema_name}} replaced), as in flow-ab.ts
// Which statements inside claim() and ack() a limited queue's claims spend their time in:
// pg_stat_statements (track = all, so statements inside functions count: calls, ms, blocks) over a
// round of the flow bench's claim+ack (receive 100 + ack) on a queue of one variant (default
// keyRateLimit), and what the claiming backends wait on (pg_stat_activity sampled every 2 ms), on
// DATABASE_URL (pg_stat_statements preloaded) or an embedded Postgres.
import pg from 'pg'
import { startEmbeddedPostgres } from '../../src/embedded/embedded-postgres.js'
import { Postbox } from '../../src/index.js'
import { LIMIT_VARIANTS } from '../flow-scenarios.js'
import { drain } from '../measure.js'
import { sqlPatch } from './sql-patch.js'

const variant = process.argv[2] ?? 'keyRateLimit'
const local = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({
  settings: { synchronous_commit: 'off', shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all' },
})
const url = process.env.DATABASE_URL ?? (local?.connectionString as string)
const schema = `flow_diag_${process.pid}`
const pool = new pg.Pool({ connectionString: url, max: 2 })
pool.on('error', () => {})
const postbox = new Postbox({ connectionString: url, schema, poolSize: 10 })
try {
  await postbox.migrate()
  if (process.env.PATCH_SQL) await pool.query(sqlPatch(process.env.PATCH_SQL, schema))
  await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
  const queue = 'flow-diag'
  await postbox.createQueue(queue, LIMIT_VARIANTS[variant])
  // PRIME=<variant>: first drain a queue of that variant on the same pool (plans cached per connection).
  const prime = process.env.PRIME
  if (prime) {
    await postbox.createQueue('flow-prime', LIMIT_VARIANTS[prime])
    await pool.query(
      `INSERT INTO ${schema}.messages (queue, payload, headers)
       SELECT 'flow-prime', '{}'::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % 100)) FROM generate_series(1, 10000) g`)
    await drain(10, async () => {
      const messages = await postbox.receive('flow-prime', { max: 100 })
      if (messages.length > 0) await postbox.ack(messages)
      return messages.length
    })
  }
  for (let round = 0; round < 2; round++) {
    await pool.query(
      `INSERT INTO ${schema}.messages (queue, payload, headers)
       SELECT $1, '{}'::jsonb, jsonb_build_object('postbox-rate-key', 'site-' || (g % 100)) FROM generate_series(1, $2::integer) g`, [queue, Number(process.env.TAKE ?? 10_000)])
    await pool.query(`VACUUM ANALYZE ${schema}.messages`)
    if (round === 1) await pool.query('SELECT pg_stat_statements_reset()')
    const waits = new Map<string, number>()
    let sampling = round === 1
    const sampler = (async () => {
      while (sampling) {
        const { rows: act } = await pool.query(`SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()`, [`%${process.env.SAMPLE ?? 'claim('}%`])
        for (const a of act) waits.set(a.w, (waits.get(a.w) ?? 0) + 1)
        await new Promise((r) => setTimeout(r, 2))
      }
    })()
    const rate = await drain(Number(process.env.CALLERS ?? 10), async () => {
      const messages = await postbox.receive(queue, { max: 100 })
      if (messages.length > 0) await postbox.ack(messages)
      return messages.length
    })
    sampling = false
    await sampler
    console.log(`round ${round}: ${Math.round(rate)} msg/s`, round === 1 ? Object.fromEntries([...waits].sort((a, b) => b[1] - a[1])) : '')
  }
  const { rows } = await pool.query(
    `SELECT calls, round(total_exec_time::numeric, 1) AS ms, round((total_exec_time / calls)::numeric, 3) AS ms_per_call, rows, shared_blks_hit / calls AS blks_per_call,
            left(regexp_replace(query, '\\s+', ' ', 'g'), 150) AS query
     FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT ${Number(process.env.TOP ?? 12)}`)
  console.table(rows)
} finally {
  await postbox.close()
  await pool.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
  await pool.end()
  await local?.stop()
}
