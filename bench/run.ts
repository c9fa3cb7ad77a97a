// npm run bench [-- --quick] [-- --peers] [-- --churn 10m] [-- --tracing] [-- --only e2e,wake,flow]
// Measures postbox against raw-SQL baselines and against its peers (graphile-worker, pg-boss),
// all taken in the same run on the same Postgres with the same pool size and concurrency, and
// prints each figure absolute and as a ratio to each of them, with the targets from DESIGN.md.
// The peers run in the full run, and in a quick one with --peers. Writes
// bench/results/latest.json. Uses DATABASE_URL, else an embedded Postgres.
import { mkdirSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { toMilliseconds } from '../src/duration.js'
import { countingPostbox, openBenchDb, POOL_SIZE } from './bench-db.js'
import { preloadRaw, rawDrain, rawInsertLoop, rawMultiInsert } from './baselines.js'
import type { Contender, EndToEndRun } from './contender.js'
import { cpuBetween, cpuReader } from './cpu.js'
import { settle } from './end-to-end.js'
import { percentile, progress } from './measure.js'
import * as flow from './flow-scenarios.js'
import * as scenario from './postbox-scenarios.js'
import { printReport, type Comparison, type Row } from './report.js'
import { summarise } from './statement-log.js'
import * as topics from './topic-scenarios.js'
import { withTracing } from './tracing-sdk.js'

const { values: args } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, peers: { type: 'boolean', default: false }, churn: { type: 'string' }, tracing: { type: 'boolean', default: false }, only: { type: 'string' } },
})
const quick = args.quick ?? false
const withPeers = (args.peers ?? false) || !quick
const runMs = quick ? 3_000 : 8_000
const churnMs = toMilliseconds(args.churn ?? (quick ? '20s' : '10m')) ?? 600_000
const backlog = quick ? 200_000 : 1_000_000
const E2E_COUNT = 20_000
const E2E_ROUNDS = 3
const E2E_WARM_UP = 2_000
/** Wake-up latency: blocks of sends per contender, taken in turn so that noise hits all alike. */
const LATENCY_BLOCKS = quick ? 1 : 5
const LATENCY_SENDS = 200
const LATENCY_GAP_MS = 20

/**
 * `--only` runs a subset of the figures, for quicker comparisons while working: a comma-separated
 * list of send, batch, publish, e2e, wake, backlog, churn, cost, flow. Every figure runs without it.
 */
const only = args.only?.split(',').map((part) => part.trim())
const wants = (figure: string) => only === undefined || only.includes(figure)

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number

const db = await openBenchDb()
const readCpu = await cpuReader(db)
const rows: Row[] = []
const contenders: Contender[] = [scenario.postboxContender(db, readCpu)]
// With --tracing, the whole run is inside an active span of a registered OpenTelemetry SDK.
const run = args.tracing ? withTracing : <T>(fn: () => Promise<T>) => fn()
try {
  await run(measureAll)
} finally {
  for (const c of contenders) await c.close().catch(() => {})
  await db.close()
}

/** The flow-control rows: the limits' cost when not reached, and a fleet's use of an allowed rate. */
async function measureFlow(): Promise<void> {
  progress('postbox: claim+ack of queues whose limits are not reached, against the same queue without limits')
  const claim = await flow.limitedClaimRounds(db)
  for (const variant of Object.keys(flow.LIMIT_VARIANTS).filter((v) => v !== 'unlimited')) {
    rows.push({
      name: `claim+ack, ${variant} not reached (median of 5)`, unit: 'msg/s', value: claim[variant] as number,
      comparisons: [{ against: 'baseline', what: 'no limits', value: claim['unlimited'] as number, ratioAtLeast: 0.9 }],
    })
  }
  progress('postbox: 1,000 keys at 2 claims/s each, a worker of concurrency 50')
  const keys = await flow.keyRateUtilisation(db)
  rows.push({ name: '1,000 keys at 2/s: share of the allowed rate used', unit: '', value: keys.used, atLeast: 0.9 })
  rows.push({ name: '1,000 keys at 2/s: most claims of one key in any 1 s (limit 2)', unit: '', value: keys.busiestSecond, atMost: 2 })
}

async function measureAll(): Promise<void> {
  progress(`postbox bench on ${db.source}, pool ${POOL_SIZE}, concurrency 10${quick ? ', quick' : ''}${withPeers ? ', with peers' : ''}${args.tracing ? ', tracing on' : ''}`)
  if (withPeers) {
    const { graphileWorker } = await import('./peers/graphile-worker.js')
    const { pgBoss } = await import('./peers/pg-boss.js')
    contenders.push(await graphileWorker(db, readCpu), await pgBoss(db, readCpu))
  }
  const [postbox, ...peers] = contenders as [Contender, ...Contender[]]
  /** Runs `measure` for every contender; returns postbox's figure and the peers' as comparisons. */
  const each = async (label: string, measure: (c: Contender) => Promise<number>, targets: Record<string, Partial<Comparison>> = {}) => {
    const figures = new Map<string, number>()
    for (const c of contenders) {
      progress(`${c.name}: ${label}`)
      figures.set(c.name, await measure(c))
    }
    const comparisons = peers.map((p) => ({ against: p.name, value: figures.get(p.name) as number, ...targets[p.name] }))
    return { value: figures.get(postbox.name) as number, comparisons }
  }

  const drains: { rate: number; nodeCpuUs: number; postgresCpuUs: number | undefined; postgresBackendsUs: number | undefined }[] = []
  const runs = new Map<string, EndToEndRun[]>(contenders.map((c) => [c.name, []]))
  const latencies = new Map<string, number[]>(contenders.map((c) => [c.name, []]))
  let samples: Awaited<ReturnType<typeof scenario.churn>> = []

  if (wants('send')) {
    progress('baseline: one-row INSERT loop')
    const insertLoop = await rawInsertLoop(db, runMs)
    const send = await each('send, 10 callers, a worker consuming', (c) => c.sendWithConsumer(runMs), { 'graphile-worker': { ratioAtLeast: 5 } })
    rows.push({
      name: 'send (10 callers, wake-ups on)', unit: 'msg/s', value: send.value,
      comparisons: [{ against: 'baseline', what: 'INSERT loop', value: insertLoop, ratioAtLeast: 0.6 }, ...send.comparisons],
    })
  }

  if (wants('batch')) {
    progress('baseline: 1,000-row INSERT')
    const multiInsert = await rawMultiInsert(db, runMs)
    const batch = await each('batches of 1,000', (c) => c.sendBatches(runMs), { 'graphile-worker': { ratioAtLeast: 2 } })
    rows.push({
      name: 'sendBatch of 1,000', unit: 'msg/s', value: batch.value,
      comparisons: [{ against: 'baseline', what: '1,000-row INSERT', value: multiInsert, ratioAtLeast: 0.8 }, ...batch.comparisons],
    })
  }

  if (wants('publish')) {
    progress('postbox: publish reaching 10 queues, against sendBatch of 10 to one queue (3 rounds each, alternating)')
    await topics.bindTopicQueues(db.postbox)
    const rounds = await topics.publishRounds(db, runMs / 2, 3)
    rows.push({
      name: 'publish reaching 10 queues (median of 3)', unit: 'msg/s', value: rounds.publish,
      comparisons: [{ against: 'baseline', what: 'sendBatch of 10, median of 3', value: rounds.sendBatch, ratioAtLeast: 0.7 }],
    })
  }

  if (wants('e2e')) {
    // End-to-end: rounds taken in turn (raw drain, postbox, each peer), each from a vacuumed and
    // checkpointed state; the median round of each counts. A first, shorter drain of each warms its
    // connections (a backend's first statements compile and plan) and Node's JIT, and is not counted.
    for (const c of contenders) {
      progress(`end-to-end warm-up: ${c.name}, ${E2E_WARM_UP.toLocaleString()} messages`)
      await c.endToEnd(E2E_WARM_UP)
    }
    for (let round = 1; round <= E2E_ROUNDS; round++) {
      progress(`end-to-end round ${round} of ${E2E_ROUNDS}: raw DELETE … SKIP LOCKED drain of ${E2E_COUNT.toLocaleString()}`)
      await preloadRaw(db, E2E_COUNT)
      await settle(db, [])
      const before = readCpu()
      const rate = await rawDrain(db)
      const cpu = cpuBetween(before, readCpu())
      drains.push({
        rate,
        nodeCpuUs: cpu.nodeUs / E2E_COUNT,
        postgresCpuUs: cpu.postgresUs === undefined ? undefined : cpu.postgresUs / E2E_COUNT,
        postgresBackendsUs: cpu.postgres === undefined ? undefined : cpu.postgres.backends / E2E_COUNT,
      })
      for (const c of contenders) {
        progress(`end-to-end round ${round} of ${E2E_ROUNDS}: ${c.name}, ${E2E_COUNT.toLocaleString()} preloaded, concurrency 10`)
        const run = await c.endToEnd(E2E_COUNT)
        progress(`  ${Math.round(run.rate).toLocaleString()} msg/s, Node ${run.nodeCpuUs.toFixed(1)} µs/msg, Postgres ${run.postgresCpuUs?.toFixed(1) ?? '?'} µs/msg (backends ${run.postgresBackendsUs?.toFixed(1) ?? '?'})`)
        runs.get(c.name)?.push(run)
      }
    }
    const e2eOf = (name: string) => median((runs.get(name) ?? []).map((r) => r.rate))
    rows.push({
      name: `end-to-end (median of ${E2E_ROUNDS})`, unit: 'msg/s', value: e2eOf(postbox.name),
      comparisons: [
        { against: 'baseline', what: 'DELETE drain', value: median(drains.map((d) => d.rate)), ratioAtLeast: 0.6 },
        ...peers.map((p) => ({ against: p.name, value: e2eOf(p.name), ...(p.name === 'graphile-worker' ? { ratioAtLeast: 1.2 } : {}) })),
      ],
    })
  }

  if (wants('wake')) {
    // Wake-up latency: blocks of sends to each contender's idle worker in turn.
    for (let block = 1; block <= LATENCY_BLOCKS; block++) {
      for (const c of contenders) {
        progress(`wake-up latency block ${block} of ${LATENCY_BLOCKS}: ${c.name}, ${LATENCY_SENDS} sends ${LATENCY_GAP_MS} ms apart to an idle worker`)
        latencies.get(c.name)?.push(...(await c.wakeUpLatency(LATENCY_SENDS, LATENCY_GAP_MS)))
      }
    }
    const latencyRow = (p: number, targets: { atMost?: number; gw?: number }) => {
      const of = (name: string) => percentile(latencies.get(name) ?? [], p)
      const row: Row = {
        name: `wake-up latency p${p}`, unit: 'ms', value: of(postbox.name),
        comparisons: peers.map((peer) => ({ against: peer.name, value: of(peer.name), ...(peer.name === 'graphile-worker' && targets.gw ? { ratioAtMost: targets.gw } : {}) })),
      }
      if (targets.atMost !== undefined) row.atMost = targets.atMost
      return row
    }
    rows.push(latencyRow(50, { atMost: 2 }), latencyRow(95, {}), latencyRow(99, { atMost: 6, gw: 1 }))
  }

  for (const c of contenders.splice(0)) await c.close()

  if (wants('backlog')) {
    progress('postbox: claim rate, small queue')
    const small = await scenario.claimRate(db, 10_000)
    progress(`postbox: claim rate under a backlog of ${backlog.toLocaleString()}`)
    const big = await scenario.claimRate(db, backlog)
    rows.push({
      name: `claim+ack with ${backlog.toLocaleString()} waiting`, unit: 'msg/s', value: big,
      comparisons: [{ against: 'baseline', what: '10,000 waiting', value: small, ratioAtLeast: 0.8 }],
    })
  }

  if (wants('churn')) {
    progress(`postbox: churn for ${Math.round(churnMs / 1000)} s`)
    samples = await scenario.churn(db, churnMs, quick ? 5_000 : 60_000)
    const first = samples[0]
    const last = samples[samples.length - 1]
    const peak = Math.max(...samples.map((s) => s.tableBytes + s.indexBytes))
    if (first && last) {
      rows.push({ name: 'churn: table+index, first sample', unit: 'MB', value: (first.tableBytes + first.indexBytes) / 1e6 })
      rows.push({ name: 'churn: table+index, peak', unit: 'MB', value: peak / 1e6 })
      rows.push({ name: 'churn: table+index, last sample', unit: 'MB', value: (last.tableBytes + last.indexBytes) / 1e6 })
    }
  }

  if (wants('cost')) {
    progress('postbox: cost per message')
    const counted = countingPostbox(db)
    const cost = { ...(await scenario.costs(db, counted)), ...(await topics.publishCosts(db, counted)) }
    await counted.close()
    for (const [step, c] of Object.entries(cost)) {
      rows.push({ name: `${step}: WAL bytes per message`, unit: 'B', value: c.walBytesPerMessage })
      rows.push({ name: `${step}: statements per message`, unit: '', value: c.statementsPerMessage })
    }
  }

  if (wants('flow')) await measureFlow()

  printReport(rows)
  const diagnostics = printEndToEndDiagnostics(drains, runs, latencies)
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
  const file = new URL('./results/latest.json', import.meta.url)
  writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), source: db.source, quick, peers: withPeers, tracing: args.tracing, rows, diagnostics, churn: samples, latencies: Object.fromEntries(latencies) }, null, 2))
  progress(`wrote ${file.pathname}`)
}

/**
 * Prints, per contender, what its end-to-end rounds cost: CPU per message on both sides, the
 * statements it sent per message, its mean claim and completion batch, and the time to its first
 * handler. These say where a gap comes from; the rates alone do not.
 */
function printEndToEndDiagnostics(
  drains: readonly { rate: number; nodeCpuUs: number; postgresCpuUs: number | undefined; postgresBackendsUs: number | undefined }[],
  runs: ReadonlyMap<string, readonly EndToEndRun[]>,
  latencies: ReadonlyMap<string, readonly number[]>,
) {
  const fmt = (v: number | undefined, digits = 1) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits))
  const out: Record<string, unknown> = {}
  const lines: string[][] = [['end-to-end', 'msg/s per round', 'Node µs/msg', 'Postgres µs/msg (backends)', 'stmts/msg', 'mean claim', 'mean completion batch', 'first handler ms']]
  lines.push([
    'raw DELETE drain',
    drains.map((d) => Math.round(d.rate).toLocaleString('en-US')).join(' / '),
    fmt(median(drains.map((d) => d.nodeCpuUs))),
    `${fmt(median(drains.map((d) => d.postgresCpuUs ?? Number.NaN)))} (${fmt(median(drains.map((d) => d.postgresBackendsUs ?? Number.NaN)))})`,
    '0.01', '100', '-', '-',
  ])
  for (const [name, list] of runs) {
    const statements = list.flatMap((r) => r.statements ?? [])
    const perName = summarise(statements)
    const messages = list.length * E2E_COUNT
    const claims = list.flatMap((r) => r.claims ?? [])
    const completions = Object.entries(perName).filter(([n]) => /:ack(_and_claim)?(:|$)|complete_jobs?\//.test(n))
    const acked = completions.reduce((sum, [, s]) => sum + (s.meanArray ?? 1) * s.count, 0)
    const ackStatements = completions.reduce((sum, [, s]) => sum + s.count, 0)
    out[name] = { rounds: list.map(({ statements: _s, ...rest }) => rest), statements: perName }
    lines.push([
      name,
      list.map((r) => Math.round(r.rate).toLocaleString('en-US')).join(' / '),
      fmt(median(list.map((r) => r.nodeCpuUs))),
      `${fmt(median(list.map((r) => r.postgresCpuUs ?? Number.NaN)))} (${fmt(median(list.map((r) => r.postgresBackendsUs ?? Number.NaN)))})`,
      statements.length ? fmt(statements.length / messages, 3) : '-',
      claims.length ? fmt(claims.reduce((a, b) => a + b, 0) / claims.length) : '-',
      ackStatements ? fmt(acked / ackStatements) : '-',
      fmt(median(list.map((r) => r.firstHandlerMs))),
    ])
  }
  const widths = (lines[0] as string[]).map((_, i) => Math.max(...lines.map((l) => (l[i] as string).length)))
  console.log('')
  for (const l of lines) console.log(l.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd())
  const q = (v: readonly number[]) => `n=${v.length} p10 ${percentile(v, 10)} p50 ${percentile(v, 50)} p90 ${percentile(v, 90)} max ${Math.max(...v)}`
  for (const [name, list] of runs) {
    const claims = list.flatMap((r) => r.claims ?? [])
    if (claims.length) {
      // Mean claim per tenth of each drain, in claim order: how fast the claims grow to size.
      const tenths = Array.from({ length: 10 }, (_, t) => {
        const parts = list.map((r) => {
          const c = r.claims ?? []
          return c.slice(Math.floor((c.length * t) / 10), Math.floor((c.length * (t + 1)) / 10))
        }).flat()
        return parts.length ? Math.round(parts.reduce((a, b) => a + b, 0) / parts.length) : 0
      })
      console.log(`${name} claim sizes: ${q(claims)}; mean per tenth of the drain: ${tenths.join(' ')}`)
    }
    const byName = new Map<string, number[]>()
    for (const st of list.flatMap((r) => r.statements ?? [])) {
      if (st.arrayLength !== undefined) byName.set(st.name, [...(byName.get(st.name) ?? []), st.arrayLength])
    }
    for (const [statement, sizes] of byName) console.log(`${name} ${statement.replace(/^postbox:[^:]+:/, '')} ids per statement: ${q(sizes)}`)
  }
  const spread = [...latencies].map(([name, v]) => `${name} ${percentile(v, 50).toFixed(2)} / ${percentile(v, 95).toFixed(2)} / ${percentile(v, 99).toFixed(2)} / max ${Math.max(...v).toFixed(2)} ms (n=${v.length})`)
  console.log(`\nwake-up p50 / p95 / p99 / max: ${spread.join('; ')}`)
  return out
}
