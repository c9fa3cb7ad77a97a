// npx tsx bench/prepared-statements.ts [-- --rounds 8] [-- --seconds 3]
// Named statements (prepared once per connection: what postbox runs on its own pool by default)
// against unnamed ones (parsed and planned on every call: what it runs inside transactions, and
// after a pooler refused a named one), on the same Postgres in the same run. The machine is
// shared and its load swings within seconds, so the two sides do not take turns per scenario:
// they alternate in 100 ms slices (the same callers, pool size and queue), and each round prints
// the ratio named/unnamed, so the spread shows. The figures are in docs/performance.md. Uses
// DATABASE_URL, else an embedded Postgres.
import { parseArgs } from 'node:util'
import { Postbox } from '../src/index.js'
import { CONCURRENCY, openBenchDb, POOL_SIZE, type BenchDb } from './bench-db.js'
import { progress } from './measure.js'

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '8' }, seconds: { type: 'string', default: '3' } } })
const rounds = Number(args.rounds)
const sideMs = Number(args.seconds) * 1000
const SLICE_MS = 100
const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }

/** One operation of a scenario on one side; resolves with how many messages it moved. */
type Op = (postbox: Postbox) => Promise<number>

interface Scenario {
  callers: number
  /** Runs before each round of the scenario (fills its queue). */
  prepare?: () => Promise<void>
  op: Op
}

/**
 * Runs `op` with `callers` loops, the two sides taking turns in slices, `sideMs` each in all;
 * `namedFirst` says which side starts. Returns messages per second of each side.
 */
async function alternate(sides: { named: Postbox; unnamed: Postbox }, s: Scenario, namedFirst: boolean): Promise<{ named: number; unnamed: number }> {
  const moved = { named: 0, unnamed: 0 }
  const spent = { named: 0, unnamed: 0 }
  for (let slice = 0; slice < (2 * sideMs) / SLICE_MS; slice++) {
    const side = (slice % 2 === 0) === namedFirst ? 'named' : 'unnamed'
    const started = performance.now()
    const deadline = started + SLICE_MS
    await Promise.all(Array.from({ length: s.callers }, async () => {
      while (performance.now() < deadline) {
        const n = await s.op(sides[side])
        moved[side] += n
      }
    }))
    spent[side] += performance.now() - started
  }
  return { named: (moved.named / spent.named) * 1000, unnamed: (moved.unnamed / spent.unnamed) * 1000 }
}

function scenarios(db: BenchDb): Record<string, Scenario> {
  const q = (name: string) => `bench-prepared-${name}`
  const fill = (queue: string, count: number) => async () => {
    await db.sql(`DELETE FROM ${db.schema}.messages WHERE queue = $1`, [queue])
    await db.sql(`INSERT INTO ${db.schema}.messages (queue, payload) SELECT $1, $2::jsonb FROM generate_series(1, $3)`, [queue, JSON.stringify(PAYLOAD), count])
    await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
  }
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  return {
    'send, 1 caller (one statement per send)': { callers: 1, op: async (postbox) => (await postbox.send(q('lone'), PAYLOAD), 1) },
    'send, 10 callers (sends share statements)': { callers: CONCURRENCY, op: async (postbox) => (await postbox.send(q('send'), PAYLOAD), 1) },
    'sendBatch of 1,000, 10 callers': { callers: CONCURRENCY, op: async (postbox) => (await postbox.sendBatch(q('batch'), batch)).length },
    'receive 100 + ack, 10 callers': {
      callers: CONCURRENCY,
      prepare: fill(q('claim'), 300_000),
      op: async (postbox) => {
        const messages = await postbox.receive(q('claim'), { max: 100 })
        if (messages.length > 0) await postbox.ack(messages)
        return messages.length
      },
    },
    'receive 1 + ack, 1 caller': {
      callers: 1,
      prepare: fill(q('claim-one'), 50_000),
      op: async (postbox) => {
        const messages = await postbox.receive(q('claim-one'), { max: 1 })
        if (messages.length > 0) await postbox.ack(messages)
        return messages.length
      },
    },
  }
}

const db = await openBenchDb()
const unnamed = new Postbox({ connectionString: db.url, schema: db.schema, poolSize: POOL_SIZE, preparedStatements: false })
const named = new Postbox({ connectionString: db.url, schema: db.schema, poolSize: POOL_SIZE, preparedStatements: true })
const all = scenarios(db)
const ratios = new Map<string, number[]>(Object.keys(all).map((name) => [name, []]))
try {
  progress(`named vs unnamed statements on ${db.source}, ${rounds} rounds, ${sideMs / 1000} s a side in ${SLICE_MS} ms slices`)
  for (const queue of ['lone', 'send', 'batch', 'claim', 'claim-one']) await named.createQueue(`bench-prepared-${queue}`)
  for (let round = 1; round <= rounds; round++) {
    for (const [name, s] of Object.entries(all)) {
      await s.prepare?.()
      const rates = await alternate({ named, unnamed }, s, round % 2 === 1)
      const ratio = rates.named / rates.unnamed
      ratios.get(name)?.push(ratio)
      progress(`round ${round}: ${name}: named ${Math.round(rates.named)}/s, unnamed ${Math.round(rates.unnamed)}/s, ratio ${ratio.toFixed(2)}`)
    }
    await db.sql(`DELETE FROM ${db.schema}.messages`)
    await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
  }
  console.log('\nnamed / unnamed messages per second (median of the rounds; min-max; each round)')
  for (const [name, values] of ratios) {
    const sorted = [...values].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)] as number
    console.log(`${name}: ${median.toFixed(2)}x (${(sorted[0] as number).toFixed(2)}-${(sorted.at(-1) as number).toFixed(2)}; ${values.map((v) => v.toFixed(2)).join(' ')})`)
  }
} finally {
  await named.close()
  await unnamed.close()
  await db.close()
}
