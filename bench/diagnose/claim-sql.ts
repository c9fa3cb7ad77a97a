// DATABASE_URL=… npx tsx bench/diagnose/claim-sql.ts [--count 20000] [--rounds 3] [--only a,b] [--walk 5000,20000,80000]
//
// Claim + complete at the SQL level, without either library's runtime: each variant is a loop
// of one claim statement and one completion statement per batch on plain pg connections
// (prepared), draining `count` preloaded rows from a vacuumed and checkpointed state. postbox's
// statements are the ones src/queries/messages.ts sends; graphile-worker's are its own,
// captured from a short run of it (its get_jobs and complete_jobs, replayed with the same
// parameters). Per variant: Postgres CPU per message with one connection (no contention: the
// cleanest figure), and rate and Postgres CPU per message with 10 connections (client backends
// only; connections are opened and warmed by an uncounted first round). Variants are
// taken in turn, `rounds` times; medians are printed.
//
// The flow-control variants (issue 15) drain queues whose limit (maxInFlight, rateLimit or
// keyRateLimit, each message with one of 100 rate keys) is far from reached: under callgrind
// their instructions per message, against the plain queue's, are what the limits cost a claim,
// whatever else runs on the machine.
//
// With --walk, each variant instead runs on one connection at each of the given counts: if the
// Postgres CPU per message grows with the count, claims pay for walking the index entries that
// earlier claims left behind (dead until vacuum; in-flight ones too), since every claim starts
// its index scan at the front of the queue.
import pg from 'pg'
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { pgExecutor } from '../../src/db/pg-executor.js'
import * as m from '../../src/queries/messages.js'
import { schemaName } from '../../src/schema-name.js'
import { Postbox } from '../../src/index.js'
import { openBenchDb, type BenchDb } from '../bench-db.js'
import { preloadRaw } from '../baselines.js'
import { sqlPatch } from './sql-patch.js'
import { cpuBetween, cpuReader } from '../cpu.js'
import { settle } from '../end-to-end.js'
import { progress } from '../measure.js'
import { graphileWorker } from '../peers/graphile-worker.js'

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '3' }, only: { type: 'string' }, walk: { type: 'string' },
    connections: { type: 'string', default: '1,10' },
    // Writes { variant: { connections: pids } } here, to match per-backend profiles (callgrind) to variants.
    'pids-file': { type: 'string' },
    // Runs postbox's ack with generic plans (as claim has, SET plan_cache_mode), to measure what
    // re-planning its statements on every call costs: the wake path acks one message per call.
    'generic-ack': { type: 'boolean', default: false },
  },
})
const CONNECTIONS = (args.connections ?? '1,10').split(',').map(Number)
let COUNT = Number(args.count)
const ROUNDS = Number(args.rounds)
const PAYLOAD = JSON.stringify({ to: 'someone@example.com', template: 'welcome', n: 42 })

/** One way to claim and complete: fill the table, then a step that completes what it can (false when the table is drained). */
interface Variant {
  name: string
  fill(): Promise<void>
  /** Tables to vacuum after the fill. */
  tables: string[]
  connect(client: pg.Client): () => Promise<{ completed: number; more: boolean }>
}

const db = await openBenchDb()
const readCpu = await cpuReader(db)
const pb = db.schema
// PATCH_SQL=<file>: SQL run after the migrations ({{schema}} and {{schema_name}} replaced), as in flow-ab.ts.
if (process.env.PATCH_SQL) await db.sql(sqlPatch(process.env.PATCH_SQL, pb))

/** A postbox schema whose `queue` column compares with the C collation (memcmp, no strcoll). */
const pbc = `${pb}_c`
const pbcPostbox = new Postbox({ connectionString: db.url, schema: pbc })
await pbcPostbox.migrate()
await pbcPostbox.createQueue('q')
// A scratch copy: its views go, so the column's type can change.
for (const { name } of await db.sql<{ name: string }>('SELECT table_name AS name FROM information_schema.views WHERE table_schema = $1', [pbc])) {
  await db.sql(`DROP VIEW ${pbc}.${name} CASCADE`)
}
await db.sql(`ALTER TABLE ${pbc}.messages ALTER COLUMN queue TYPE text COLLATE "C"`)
await db.postbox.createQueue('q')
if (args['generic-ack']) await db.sql(`ALTER FUNCTION ${pb}.ack(bigint[], uuid[]) SET plan_cache_mode = force_generic_plan`)
// Flow control (issue 15): queues whose limits are far from reached, each message with one of 100 rate keys.
const FLOW_QUEUES = {
  'q-capped': { maxInFlight: 1_000_000 },
  'q-rated': { rateLimit: { limit: 1_000_000_000, per: '1s' } },
  'q-keyed': { keyRateLimit: { limit: 1_000_000, per: '1s' } },
} as const
for (const [name, options] of Object.entries(FLOW_QUEUES)) await db.postbox.createQueue(name, options)

// graphile-worker: its schema, and its claim and completion statements captured from a short run.
const gw = await graphileWorker(db, readCpu)
await gw.endToEnd(1000)
const capturedClaim = [...gw.log.texts].find(([name]) => name.startsWith('get_job'))?.[1]
const capturedComplete = [...gw.log.texts].find(([name]) => name.startsWith('complete_jobs'))?.[1]
if (!capturedClaim || !capturedComplete) throw new Error('graphile-worker statements not captured')
const gwJobs = `${gw.schema}._private_jobs`
const [task] = await db.sql<{ id: number }>(`SELECT id FROM ${gw.schema}._private_tasks LIMIT 1`)

async function fillPostbox(schema: string, queue = 'q'): Promise<void> {
  await db.sql(`DELETE FROM ${schema}.messages`)
  await db.sql(
    `INSERT INTO ${schema}.messages (queue, payload, headers)
     SELECT $3, $1::jsonb, CASE WHEN $3 <> 'q' THEN jsonb_build_object('postbox-rate-key', 'site-' || (g % 100)) END FROM generate_series(1, $2) g`,
    [PAYLOAD, COUNT, queue],
  )
}

const bareDelete = (schema: string) => `DELETE FROM ${schema}.messages m USING unnest($1::bigint[], $2::uuid[]) AS a(id, lease) WHERE m.id = a.id AND m.lease = a.lease`

/**
 * postbox's own statements: receive(n) then ack, or acks riding on the next claim; with
 * `bareAck`, its receive and a bare fenced DELETE instead of the ack function.
 */
function postboxVariant(name: string, schema: string, batch: number, pipelined: boolean, bareAck = false, queue = 'q'): Variant {
  return {
    name,
    tables: [`${schema}.messages`],
    fill: () => fillPostbox(schema, queue),
    connect(client) {
      const ex = pgExecutor(client)
      const s = schemaName(schema)
      let held: { ids: string[]; leases: string[] } = { ids: [], leases: [] }
      return async () => {
        if (pipelined) {
          const { rows } = held.ids.length > 0 ? await m.ackAndReceive(ex, s, held, queue, batch, null) : { rows: await m.receive(ex, s, queue, batch, null) }
          const completed = held.ids.length
          held = { ids: rows.map((r) => r.id), leases: rows.map((r) => r.lease as string) }
          return { completed, more: rows.length > 0 }
        }
        const rows = await m.receive(ex, s, queue, batch, null)
        const ids = rows.map((r) => r.id)
        const leases = rows.map((r) => r.lease as string)
        if (rows.length > 0 && bareAck) await client.query({ name: 'bare_complete', text: bareDelete(schema), values: [ids, leases] })
        else if (rows.length > 0) await m.ack(ex, s, ids, leases)
        return { completed: rows.length, more: rows.length > 0 }
      }
    },
  }
}

/** graphile-worker's captured statements with its limit set to `batch`. */
function graphileVariant(batch: number): Variant {
  const claimText = (capturedClaim as { text: string }).text.replace(/limit \d+/, `limit ${batch}`)
  return {
    name: `graphile-worker get_jobs(${batch}) + complete_jobs`,
    tables: [gwJobs],
    fill: async () => {
      await db.sql(`DELETE FROM ${gwJobs}`)
      const spec = Array.from({ length: 1000 }, () => `('bench', '${PAYLOAD}'::json)`).join(',')
      for (let n = 0; n < COUNT; n += 1000) {
        await db.sql(`SELECT ${gw.schema}.add_jobs(ARRAY(SELECT ROW(i, p, NULL, NULL, NULL, NULL, NULL, NULL)::${gw.schema}.job_spec FROM (VALUES ${spec}) v(i, p)))`)
      }
    },
    connect(client) {
      const [poolId, taskIds] = (capturedClaim as { values: unknown[] }).values
      return async () => {
        const { rows } = await client.query({ name: `gw_claim_${batch}`, text: claimText, values: [poolId, taskIds ?? [task?.id]] })
        if (rows.length > 0) await client.query({ name: 'gw_complete', text: (capturedComplete as { text: string }).text, values: [rows.map((r: { id: string }) => r.id)] })
        return { completed: rows.length, more: rows.length > 0 }
      }
    },
  }
}

/** The claim written as one bare statement in the shape of graphile-worker's (a locking CTE, then UPDATE … FROM), on postbox's table, and a bare fenced DELETE. */
function bareVariant(batch: number): Variant {
  const claim = `WITH j AS (
      SELECT id FROM ${pb}.messages WHERE queue = $1 AND available_at <= now()
      ORDER BY priority DESC, available_at, id LIMIT ${batch} FOR UPDATE SKIP LOCKED)
    UPDATE ${pb}.messages m SET attempt = m.attempt + 1, lease = $2, claimed_at = now(), available_at = now() + interval '30 seconds'
    FROM j WHERE m.id = j.id
    RETURNING m.id, m.queue, m.priority, m.attempt, m.lease, m.encoding, m.payload, m.body, m.headers, m.dedupe_key, m.group_key, m.last_error,
      floor(extract(epoch FROM m.enqueued_at) * 1000)::float8 AS enqueued_ms, floor(extract(epoch FROM m.claimed_at) * 1000)::float8 AS claimed_ms,
      floor(extract(epoch FROM m.available_at) * 1000)::float8 AS available_ms`
  const complete = bareDelete(pb)
  return {
    name: `bare claim UPDATE(${batch}) + bare fenced DELETE (postbox table)`,
    tables: [`${pb}.messages`],
    fill: () => fillPostbox(pb),
    connect(client) {
      return async () => {
        const lease = crypto.randomUUID()
        const { rows } = await client.query({ name: `bare_claim_${batch}`, text: claim, values: ['q', lease] })
        if (rows.length > 0) await client.query({ name: 'bare_complete', text: complete, values: [rows.map((r: { id: string }) => r.id), rows.map(() => lease)] })
        return { completed: rows.length, more: rows.length > 0 }
      }
    },
  }
}

function rawVariant(): Variant {
  const text = `DELETE FROM ${pb}.raw_messages WHERE id IN (
    SELECT id FROM ${pb}.raw_messages WHERE queue = 'raw' AND available_at <= now()
    ORDER BY priority DESC, available_at, id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING *`
  return {
    name: 'raw DELETE … LIMIT 100 SKIP LOCKED RETURNING *',
    tables: [],
    fill: () => preloadRaw(db as BenchDb, COUNT),
    connect: (client) => async () => {
      const n = (await client.query({ name: 'raw_drain', text })).rowCount ?? 0
      return { completed: n, more: n > 0 }
    },
  }
}

const variants: Variant[] = [
  rawVariant(),
  postboxVariant('postbox receive(100) + ack', pb, 100, false),
  postboxVariant('postbox ackAndReceive(100), acks riding', pb, 100, true),
  postboxVariant('postbox receive(500) + ack', pb, 500, false),
  postboxVariant('postbox ackAndReceive(500), acks riding', pb, 500, true),
  postboxVariant('postbox receive(100) + ack, queue COLLATE "C"', pbc, 100, false),
  postboxVariant('postbox receive(100) + bare fenced DELETE', pb, 100, false, true),
  ...Object.entries(FLOW_QUEUES).map(([queue, options]) =>
    postboxVariant(`postbox receive(100) + ack, ${Object.keys(options)[0]} not reached`, pb, 100, false, false, queue)),
  bareVariant(100),
  graphileVariant(100),
  graphileVariant(500),
  // The wake path: an idle worker woken for one message claims it alone and acks it alone, so
  // what a claim and an ack cost per call, rather than per row, decides the server's share.
  postboxVariant('postbox receive(1) + ack (wake path)', pb, 1, false),
  graphileVariant(1),
].filter((v) => !args.only || args.only.split(',').some((o) => v.name.includes(o)))

/** Connections per variant and count, kept across rounds: a backend's first claim compiles and plans. */
const pools = new Map<string, pg.Client[]>()
const pids: Record<string, Record<number, number[]>> = {}

async function connections(v: Variant, n: number): Promise<pg.Client[]> {
  const key = `${v.name}/${n}`
  let clients = pools.get(key)
  if (!clients) {
    clients = await Promise.all(Array.from({ length: n }, async () => {
      const c = new pg.Client({ connectionString: db.url })
      await c.connect()
      return c
    }))
    pools.set(key, clients)
    for (const c of clients) (pids[v.name] ??= {})[n] = [...(pids[v.name]?.[n] ?? []), (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid]
  }
  return clients
}

async function measure(v: Variant, n: number): Promise<{ rate: number; pgUs: number; nodeUs: number }> {
  await v.fill()
  await settle(db, v.tables)
  const clients = await connections(v, n)
  const steps = clients.map((c) => v.connect(c))
  const before = readCpu()
  const started = performance.now()
  let done = 0
  await Promise.all(steps.map(async (step) => {
    for (;;) {
      const { completed, more } = await step()
      done += completed
      if (!more) return
    }
  }))
  const elapsed = performance.now() - started
  const cpu = cpuBetween(before, readCpu())
  // The client backends only: autovacuum and the WAL writer also run, differently per table.
  return { rate: (done / elapsed) * 1000, pgUs: (cpu.postgres?.backends ?? Number.NaN) / done, nodeUs: cpu.nodeUs / done }
}

const results = new Map<string, { one: number[]; ten: number[]; tenPg: number[] }>(variants.map((v) => [v.name, { one: [], ten: [], tenPg: [] }]))
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
try {
  if (args.walk) {
    const counts = args.walk.split(',').map(Number)
    const walk = new Map<string, number[][]>(variants.map((v) => [v.name, counts.map(() => [])]))
    for (let round = 0; round <= ROUNDS; round++) {
      for (const [i, count] of counts.entries()) {
        COUNT = count
        for (const v of variants) {
          const one = await measure(v, 1)
          if (round > 0) walk.get(v.name)?.[i]?.push(one.pgUs) // round 0 warms the connections
          progress(`round ${round}: ${v.name}, ${count}: ${one.pgUs.toFixed(1)} µs/msg Postgres, ${Math.round(one.rate)} msg/s`)
        }
      }
    }
    console.log(`\nPostgres CPU per message on one connection, by messages drained (median of ${ROUNDS})`)
    console.log('variant'.padEnd(62), counts.map((c) => String(c).padStart(10)).join(''))
    for (const [name, byCount] of walk) console.log(name.padEnd(62), byCount.map((xs) => med(xs).toFixed(1).padStart(10)).join(''))
  } else {
  for (let round = 0; round <= ROUNDS; round++) {
    for (const v of variants) {
      const r = results.get(v.name) as { one: number[]; ten: number[]; tenPg: number[] }
      const none = { rate: Number.NaN, pgUs: Number.NaN, nodeUs: Number.NaN }
      const one = CONNECTIONS.includes(1) ? await measure(v, 1) : none
      const ten = CONNECTIONS.includes(10) ? await measure(v, 10) : none
      if (round === 0) continue // warms the connections
      r.one.push(one.pgUs)
      r.ten.push(ten.rate)
      r.tenPg.push(ten.pgUs)
      progress(`round ${round}: ${v.name}: 1 conn ${one.pgUs.toFixed(1)} µs/msg Postgres (${Math.round(one.rate)} msg/s); 10 conns ${Math.round(ten.rate)} msg/s, ${ten.pgUs.toFixed(1)} µs/msg Postgres`)
    }
  }
  console.log(`\nclaim + complete at the SQL level, ${COUNT} messages, median of ${ROUNDS} (all rounds in brackets)`)
  console.log('variant'.padEnd(62), 'PG µs/msg, 1 conn'.padEnd(30), '10 conns msg/s'.padEnd(34), 'PG µs/msg, 10 conns')
  for (const [name, r] of results) {
    const all = (xs: number[], d = 1) => `${med(xs).toFixed(d)} [${xs.map((x) => x.toFixed(d)).join(' ')}]`
    console.log(name.padEnd(62), all(r.one).padEnd(30), all(r.ten, 0).padEnd(34), all(r.tenPg))
  }
  }
} finally {
  if (args['pids-file']) writeFileSync(args['pids-file'], JSON.stringify({ count: COUNT, rounds: ROUNDS + 1, pids }, null, 2))
  for (const clients of pools.values()) await Promise.all(clients.map((c) => c.end()))
  await gw.close()
  await pbcPostbox.close()
  await db.sql(`DROP SCHEMA ${pbc} CASCADE`).catch(() => {})
  await db.close()
}
