// The soak run: `npm run soak -- --duration 10m`. Not part of CI.
//
// Producer and consumer processes (bench/soak-roles.ts) run for the duration against their own
// embedded Postgres (or DATABASE_URL), while a chaos loop SIGKILLs a consumer and starts a new
// one, terminates backends (the LISTEN connections, or every client connection), and restarts
// Postgres in immediate mode (embedded only). Half the consumers run in lease mode, half in
// transactional mode, on two queues. Every send and every handling is written to a ledger (see
// test/support/ledger.ts); at the end the producers stop, the backlog drains, and the report
// compares the two: lost (must be 0), duplicated, unexpected (must be 0), throughput, latency,
// redelivery latency after a kill, listener recovery time, and the queue table's size.
//
// Options: --duration 10m  --producers 2  --consumers 4  --rate 400 (messages/s, all producers)
//          --kill-every 30s  --terminate-every 45s  --restart-every 3m
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { toMilliseconds } from '../src/duration.js'
import { Postbox } from '../src/index.js'
import { createLedger, ledgerReport, type LedgerReport } from '../test/support/ledger.js'
import { startRestartablePostgres, type RestartablePostgres } from '../test/support/restartable-postgres.js'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10m' },
    producers: { type: 'string', default: '2' },
    consumers: { type: 'string', default: '4' },
    rate: { type: 'string', default: '400' },
    'kill-every': { type: 'string', default: '30s' },
    'terminate-every': { type: 'string', default: '45s' },
    'restart-every': { type: 'string', default: '3m' },
  },
})
const ms = (value: string, what: string) => {
  const parsed = toMilliseconds(value)
  if (parsed === undefined || parsed <= 0) throw new Error(`--${what}: expected a duration such as 30s or 10m, got ${value}`)
  return parsed
}
const DURATION = ms(args.duration, 'duration')
const KILL_EVERY = ms(args['kill-every'], 'kill-every')
const TERMINATE_EVERY = ms(args['terminate-every'], 'terminate-every')
const RESTART_EVERY = ms(args['restart-every'], 'restart-every')
const PRODUCERS = Number(args.producers)
const CONSUMERS = Number(args.consumers)
const RATE = Number(args.rate)
const QUEUES = { lease: 'soak.lease', tx: 'soak.tx' }
const ROLES = fileURLToPath(new URL('./soak-roles.ts', import.meta.url))
const schema = `soak_${process.pid}`
const log = (line: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
const sleep = (t: number) => new Promise((resolve) => setTimeout(resolve, t))

interface Proc {
  readonly name: string
  readonly child: ChildProcess
  readonly inFlight: Set<string>
  lastListening: number
  /** When it last started a handler, and its longest gap between two starts: a stall. */
  lastStarted: number
  longestGap: { ms: number; atS: number }
  errors: number
  expectedExit: boolean
  stats?: { committed: number; rolledBack: number; failures: number }
}

const server: RestartablePostgres | undefined = process.env.DATABASE_URL ? undefined : await startRestartablePostgres()
const url = process.env.DATABASE_URL ?? (server as RestartablePostgres).connectionString
const pool = new pg.Pool({ connectionString: url, max: 3, application_name: 'soak-orchestrator' })
pool.on('error', () => {})
const sql = async <R>(text: string, values?: unknown[]) => (await pool.query(text, values)).rows as R[]

const setup = new Postbox({ connectionString: url, schema, poolSize: 1 })
await setup.migrate()
for (const queue of Object.values(QUEUES)) {
  await setup.createQueue(queue, { visibilityTimeout: '2s', maxAttempts: 50, backoff: { type: 'fixed', base: '200ms' } })
}
await setup.close()
await createLedger(pool, schema)

// Figures gathered while running.
const redeliveryPending = new Map<string, number>()
const redeliveryMs: number[] = []
const listenerRecoveryMs: { cause: string; ms: number }[] = []
const unexpectedExits: string[] = []
const chaos = { kills: 0, listenTerminations: 0, allTerminations: 0, restarts: 0 }
const events: string[] = []
const note = (line: string) => {
  events.push(`${((Date.now() - startedAt) / 1000).toFixed(1)}s ${line}`)
  log(line)
}
let peakBytes = 0
let peakBacklog = { messages: 0, atS: 0 }

const startedAt = Date.now()
const procs = new Set<Proc>()
const finished: Proc[] = []
let consumerSeq = 0

function spawnRole(name: string, env: Record<string, string>, onExit: (p: Proc) => void): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', ROLES], {
    env: { ...process.env, DATABASE_URL: url, SOAK_SCHEMA: schema, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const proc: Proc = { name, child, inFlight: new Set(), lastListening: 0, lastStarted: 0, longestGap: { ms: 0, atS: 0 }, errors: 0, expectedExit: false }
  procs.add(proc)
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    let e: { event: string; id?: string; committed?: number; rolledBack?: number; failures?: number }
    try {
      e = JSON.parse(line)
    } catch {
      return
    }
    if (e.event === 'started' && e.id) {
      const now = Date.now()
      if (proc.lastStarted > 0 && now - proc.lastStarted > proc.longestGap.ms) {
        proc.longestGap = { ms: now - proc.lastStarted, atS: Math.round((proc.lastStarted - startedAt) / 1000) }
      }
      proc.lastStarted = now
      proc.inFlight.add(e.id)
      const killedAt = redeliveryPending.get(e.id)
      if (killedAt !== undefined) {
        redeliveryMs.push(Date.now() - killedAt)
        redeliveryPending.delete(e.id)
      }
    } else if (e.event === 'done' && e.id) proc.inFlight.delete(e.id)
    else if (e.event === 'listening') proc.lastListening = Date.now()
    else if (e.event === 'workerError') proc.errors++
    else if (e.event === 'stats') proc.stats = { committed: e.committed ?? 0, rolledBack: e.rolledBack ?? 0, failures: e.failures ?? 0 }
  })
  child.once('exit', (code, signal) => {
    procs.delete(proc)
    finished.push(proc)
    if (!proc.expectedExit) {
      unexpectedExits.push(`${name}: ${code ?? signal}`)
      log(`${name} exited unexpectedly (${code ?? signal})`)
    }
    onExit(proc)
  })
  return proc
}

let stopping = false
function startConsumer(transactional: boolean): Proc {
  const name = `consumer-${++consumerSeq}-${transactional ? 'tx' : 'lease'}`
  return spawnRole(name, {
    SOAK_ROLE: 'consumer', SOAK_QUEUE: transactional ? QUEUES.tx : QUEUES.lease, SOAK_TRANSACTIONAL: transactional ? '1' : '0',
  }, (p) => {
    if (!stopping && !p.expectedExit) startConsumer(transactional) // a supervisor would restart it
  })
}
const consumers = () => [...procs].filter((p) => p.name.startsWith('consumer'))

const producers: Proc[] = []
for (let i = 0; i < PRODUCERS; i++) {
  producers.push(spawnRole(`producer-${i + 1}`, { SOAK_ROLE: 'producer', SOAK_QUEUES: `${QUEUES.lease},${QUEUES.tx}`, SOAK_RATE: String(RATE / PRODUCERS) }, () => {}))
}
for (let i = 0; i < CONSUMERS; i++) startConsumer(i % 2 === 1)

/** Waits until every consumer alive has (re)connected its LISTEN connection after `since`. */
async function listenerRecovery(cause: string, since: number): Promise<void> {
  const deadline = since + 60_000
  while (Date.now() < deadline) {
    const all = consumers()
    if (all.length > 0 && all.every((p) => p.lastListening > since)) {
      const took = Math.max(...all.map((p) => p.lastListening)) - since
      listenerRecoveryMs.push({ cause, ms: took })
      note(`${cause}: all listeners back in ${took} ms`)
      return
    }
    await sleep(20)
  }
  listenerRecoveryMs.push({ cause, ms: Number.POSITIVE_INFINITY })
  log(`${cause}: listeners NOT back within 60 s`)
}

async function killConsumer(): Promise<void> {
  const all = consumers()
  const victim = all[Math.floor(Math.random() * all.length)]
  if (!victim) return
  const now = Date.now()
  victim.expectedExit = true
  const closed = new Promise((resolve) => victim.child.once('close', resolve))
  victim.child.kill('SIGKILL')
  chaos.kills++
  startConsumer(victim.name.endsWith('-tx'))
  // Read what it printed before it died: its in flight are the deliveries started and not done.
  await Promise.race([closed, sleep(1_000)])
  for (const id of victim.inFlight) redeliveryPending.set(id, now)
  note(`SIGKILL ${victim.name} with ${victim.inFlight.size} in flight`)
}

async function terminateBackends(): Promise<void> {
  const everything = (chaos.listenTerminations + chaos.allTerminations) % 2 === 1
  const since = Date.now()
  const rows = await sql<{ n: number }>(
    everything
      ? `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
           AND application_name <> 'soak-orchestrator'`
      : `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1`,
    everything ? [] : [`postbox:${schema}:listen`],
  ).catch(() => [{ n: 0 }])
  if (everything) chaos.allTerminations++
  else chaos.listenTerminations++
  note(`terminated ${rows[0]?.n} ${everything ? 'client backends (all)' : 'LISTEN backends'}`)
  await listenerRecovery(everything ? 'terminate all backends' : 'terminate LISTEN backends', since)
}

async function restartPostgres(): Promise<void> {
  if (!server) return
  const since = Date.now()
  await server.restart()
  chaos.restarts++
  note(`Postgres restarted (immediate mode) in ${Date.now() - since} ms`)
  await listenerRecovery('restart Postgres', since)
}

async function sampleSize(): Promise<void> {
  const [row] = await sql<{ bytes: number; backlog: number }>(
    `SELECT pg_total_relation_size('"${schema}".messages')::float8 AS bytes, (SELECT count(*)::int FROM "${schema}".messages) AS backlog`,
  ).catch(() => [{ bytes: 0, backlog: 0 }])
  peakBytes = Math.max(peakBytes, row?.bytes ?? 0)
  if ((row?.backlog ?? 0) > peakBacklog.messages) peakBacklog = { messages: row?.backlog ?? 0, atS: Math.round((Date.now() - startedAt) / 1000) }
}

// The chaos loop: one fault at a time, each on its own schedule.
const due = { kill: startedAt + KILL_EVERY, terminate: startedAt + TERMINATE_EVERY, restart: startedAt + RESTART_EVERY, sample: startedAt }
log(`running for ${args.duration}: ${PRODUCERS} producers at ${RATE} msg/s, ${CONSUMERS} consumers, ${server ? 'embedded Postgres (restarts on)' : 'DATABASE_URL (no restarts)'}`)
/** After a fault, the other faults wait at least 5 s, so that each one's effect can be told apart. */
const spread = () => {
  const soonest = Date.now() + 5_000
  due.kill = Math.max(due.kill, soonest)
  due.terminate = Math.max(due.terminate, soonest)
  due.restart = Math.max(due.restart, soonest)
}
while (Date.now() - startedAt < DURATION) {
  const now = Date.now()
  if (now >= due.sample) {
    await sampleSize()
    due.sample = now + 5_000
  } else if (now >= due.restart && server) {
    await restartPostgres()
    due.restart = Date.now() + RESTART_EVERY
    spread()
  } else if (now >= due.kill) {
    await killConsumer()
    due.kill = Date.now() + KILL_EVERY
    spread()
  } else if (now >= due.terminate) {
    await terminateBackends()
    due.terminate = Date.now() + TERMINATE_EVERY
    spread()
  } else {
    await sleep(100)
  }
}
const runMs = Date.now() - startedAt

// Stop the producers, let the backlog drain, then stop the consumers.
log('stopping producers')
await Promise.all(producers.map((p) => {
  p.expectedExit = true
  const exited = new Promise((resolve) => p.child.once('exit', resolve))
  p.child.kill('SIGTERM')
  return Promise.race([exited, sleep(30_000)])
}))
const queues = Object.values(QUEUES)
let reports: LedgerReport[] = []
const drainDeadline = Date.now() + 180_000
for (;;) {
  reports = await Promise.all(queues.map((q) => ledgerReport(pool, schema, [q])))
  if (reports.every((r) => r.lost === 0) || Date.now() > drainDeadline) break
  await sampleSize()
  await sleep(500)
}
stopping = true
for (const p of consumers()) {
  p.expectedExit = true
  p.child.kill('SIGTERM')
}
await sleep(3_000)
await sampleSize()

const [latency] = await sql<{ p50: number; p99: number; max: number }>(
  `WITH first AS (SELECT id, min(handled_at) AS t FROM "${schema}".ledger_handled GROUP BY id)
   SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max
   FROM (SELECT extract(epoch FROM f.t - s.sent_at)::float8 * 1000 AS ms FROM "${schema}".ledger_sent s JOIN first f USING (id)) x`)
const perMinute = await sql<{ minute: number; sent: number; p50: number; p99: number; max: number }>(
  `WITH first AS (SELECT id, min(handled_at) AS t FROM "${schema}".ledger_handled GROUP BY id),
        x AS (SELECT s.sent_at, extract(epoch FROM f.t - s.sent_at)::float8 * 1000 AS ms FROM "${schema}".ledger_sent s JOIN first f USING (id)),
        start AS (SELECT min(sent_at) AS t0 FROM x)
   SELECT floor(extract(epoch FROM x.sent_at - start.t0) / 60)::int AS minute, count(*)::int AS sent,
          round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS p50,
          round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1)::float8 AS p99, round(max(ms)::numeric, 1)::float8 AS max
   FROM x, start GROUP BY 1 ORDER BY 1`)
const [slow] = await sql<{ over_1s: number; over_5s: number }>(
  `WITH first AS (SELECT id, min(handled_at) AS t FROM "${schema}".ledger_handled GROUP BY id)
   SELECT count(*) FILTER (WHERE f.t - s.sent_at > interval '1 second')::int AS over_1s,
          count(*) FILTER (WHERE f.t - s.sent_at > interval '5 seconds')::int AS over_5s
   FROM "${schema}".ledger_sent s JOIN first f USING (id)`)
const [finalSize] = await sql<{ bytes: number; rows: number }>(
  `SELECT pg_total_relation_size('"${schema}".messages')::float8 AS bytes, (SELECT count(*)::int FROM "${schema}".messages) AS rows`)
const produced = producers.reduce((acc, p) => ({
  committed: acc.committed + (p.stats?.committed ?? 0),
  rolledBack: acc.rolledBack + (p.stats?.rolledBack ?? 0),
  failures: acc.failures + (p.stats?.failures ?? 0),
}), { committed: 0, rolledBack: 0, failures: 0 })

const pct = (xs: number[], q: number) => {
  if (xs.length === 0) return null
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}
const total = reports.reduce((acc, r) => ({
  sent: acc.sent + r.sent, handled: acc.handled + r.handled, lost: acc.lost + r.lost, duplicates: acc.duplicates + r.duplicates,
  unexpected: Math.max(acc.unexpected, r.unexpected), maxPerMessage: Math.max(acc.maxPerMessage, r.maxPerMessage), dead: acc.dead + r.dead,
}), { sent: 0, handled: 0, lost: 0, duplicates: 0, unexpected: 0, maxPerMessage: 0, dead: 0 })
const result = {
  date: new Date().toISOString(),
  durationS: Math.round(runMs / 1000),
  setup: { producers: PRODUCERS, consumers: CONSUMERS, rate: RATE, killEvery: args['kill-every'], terminateEvery: args['terminate-every'], restartEvery: server ? args['restart-every'] : 'off', postgres: server ? 'embedded 18 (fsync off, synchronous_commit on)' : 'DATABASE_URL' },
  chaos,
  unexpectedExits,
  producers: produced,
  total,
  perQueue: Object.fromEntries(queues.map((q, i) => [q, { ...reports[i], lostIds: reports[i]?.lostIds.slice(0, 20) }])),
  duplicatePercent: total.handled ? (100 * total.duplicates) / total.handled : 0,
  throughputPerS: total.handled / (runMs / 1000),
  endToEndMs: { p50: latency?.p50, p99: latency?.p99, max: latency?.max, over1s: slow?.over_1s, over5s: slow?.over_5s },
  endToEndByMinute: perMinute,
  peakBacklog,
  redeliveryAfterKillMs: { count: redeliveryMs.length, p50: pct(redeliveryMs, 0.5), p99: pct(redeliveryMs, 0.99), max: pct(redeliveryMs, 1), neverRedelivered: redeliveryPending.size },
  listenerRecoveryMs: listenerRecoveryMs,
  messagesTableBytes: { peak: peakBytes, final: finalSize?.bytes, finalRows: finalSize?.rows },
  chaosLog: events,
  consumerStalls: [...finished, ...procs].filter((p) => p.name.startsWith('consumer'))
    .map((p) => ({ consumer: p.name, longestGapMs: p.longestGap.ms, atS: p.longestGap.atS, workerErrors: p.errors }))
    .sort((a, b) => b.longestGapMs - a.longestGapMs).slice(0, 8),
}
mkdirSync(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true })
const file = fileURLToPath(new URL(`./results/soak-${result.date.replaceAll(':', '-')}.json`, import.meta.url))
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`)
console.log(JSON.stringify(result, null, 2))
log(`written to ${file}`)
const ok = total.lost === 0 && total.unexpected === 0 && unexpectedExits.length === 0
log(ok ? 'PASS: lost 0, unexpected 0' : 'FAIL: see lost / unexpected / unexpectedExits')

await pool.end()
await server?.stop()
process.exit(ok ? 0 : 1)
