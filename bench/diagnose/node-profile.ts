// DATABASE_URL=… npx tsx bench/diagnose/node-profile.ts [--who postbox|graphile-worker|pg-boss] [--rounds 3]
//
// Where the Node process spends its CPU during end-to-end drains: the V8 sampling profiler
// (node:inspector) runs for the drain only, not the preload. Prints self time by function and by
// area (the pg driver, postbox's worker, its queue code, timers, promises and events inside Node,
// the garbage collector), as microseconds per message, and writes the profile to
// /tmp/postbox-<who>.cpuprofile for Chrome DevTools.
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { parseArgs } from 'node:util'
import { openBenchDb } from '../bench-db.js'
import type { Contender } from '../contender.js'
import { cpuReader } from '../cpu.js'
import { progress } from '../measure.js'
import { postboxContender } from '../postbox-scenarios.js'

const { values: args } = parseArgs({ options: { who: { type: 'string', default: 'postbox' }, rounds: { type: 'string', default: '3' }, count: { type: 'string', default: '20000' } } })
const ROUNDS = Number(args.rounds)
const COUNT = Number(args.count)

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

/** The area a frame belongs to, by its script. */
function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'garbage collector'
  if (fn === '(program)' || fn === '(idle)' || fn === '(root)') return fn
  if (url.includes('/node_modules/pg-protocol/')) return 'pg-protocol (wire parsing)'
  if (url.includes('/node_modules/pg-types/') || url.includes('/node_modules/postgres-')) return 'pg-types (value parsing)'
  if (url.includes('/node_modules/pg/') || url.includes('/node_modules/pg-pool/')) return 'pg (client, result rows)'
  if (url.includes('/node_modules/graphile-worker/')) return 'graphile-worker'
  if (url.includes('/node_modules/pg-boss/')) return 'pg-boss'
  if (url.includes('/src/worker/')) return 'postbox src/worker'
  if (url.includes('/src/queue/') || url.includes('/src/queries/')) return 'postbox src/queue, src/queries'
  if (url.includes('/src/')) return 'postbox src (other)'
  if (url.includes('/bench/')) return 'bench harness'
  if (url.startsWith('node:events') || url.includes('internal/events')) return 'node events'
  if (url.includes('internal/timers') || url.startsWith('node:timers')) return 'node timers'
  if (url.includes('internal/process/task_queues') || url.includes('promise')) return 'node promises/microtasks'
  if (url.startsWith('node:') || url.includes('internal/')) return 'node (other: net, streams, buffers)'
  if (url === '') return `native: ${fn || '(anonymous)'}`
  return 'other'
}

const db = await openBenchDb()
const readCpu = await cpuReader(db)
let contender: Contender
if (args.who === 'graphile-worker') contender = await (await import('../peers/graphile-worker.js')).graphileWorker(db, readCpu)
else if (args.who === 'pg-boss') contender = await (await import('../peers/pg-boss.js')).pgBoss(db, readCpu)
else contender = postboxContender(db, readCpu)

const session = new Session()
session.connect()
await session.post('Profiler.enable')
await session.post('Profiler.setSamplingInterval', { interval: 100 })
const selfUs = new Map<string, number>()
const areaUs = new Map<string, number>()
let messages = 0
let nodeCpuUs = 0
try {
  for (let round = 1; round <= ROUNDS; round++) {
    let profile: Profile | undefined
    const run = await contender.endToEnd(COUNT, {
      before: async () => {
        await session.post('Profiler.start')
      },
      after: async () => {
        profile = (await session.post('Profiler.stop')).profile as unknown as Profile
      },
    })
    messages += COUNT
    nodeCpuUs += run.nodeCpuUs * COUNT
    progress(`${contender.name} round ${round}: ${Math.round(run.rate)} msg/s, Node ${run.nodeCpuUs.toFixed(1)} µs/msg, Postgres ${run.postgresCpuUs?.toFixed(1)} µs/msg`)
    const p = profile as Profile
    if (round === 1) writeFileSync(`/tmp/postbox-${contender.name}.cpuprofile`, JSON.stringify(p))
    const byId = new Map(p.nodes.map((n) => [n.id, n]))
    // Self time per node from the samples and their time deltas (microseconds).
    const nodeUs = new Map<number, number>()
    for (let i = 0; i < p.samples.length; i++) nodeUs.set(p.samples[i] as number, (nodeUs.get(p.samples[i] as number) ?? 0) + (p.timeDeltas[i + 1] ?? 0))
    for (const [id, us] of nodeUs) {
      const n = byId.get(id) as ProfileNode
      const { functionName, url, lineNumber } = n.callFrame
      const key = `${functionName || '(anonymous)'} ${url.replace(/^.*\/(node_modules|src|bench)\//, '$1/')}:${lineNumber + 1}`
      selfUs.set(key, (selfUs.get(key) ?? 0) + us)
      const a = area(url, functionName)
      areaUs.set(a, (areaUs.get(a) ?? 0) + us)
    }
  }
} finally {
  await contender.close()
  session.disconnect()
  await db.close()
}
const per = (us: number) => (us / messages).toFixed(2).padStart(7)
console.log(`\n${contender.name}: ${ROUNDS} drains of ${COUNT}; Node CPU ${(nodeCpuUs / messages).toFixed(1)} µs/msg (process.cpuUsage); profile wall time by area, µs per message:`)
for (const [a, us] of [...areaUs].sort((x, y) => y[1] - x[1])) console.log(`  ${per(us)}  ${a}`)
console.log('top functions by self time, µs per message:')
for (const [k, us] of [...selfUs].sort((x, y) => y[1] - x[1]).slice(0, 40)) console.log(`  ${per(us)}  ${k}`)
