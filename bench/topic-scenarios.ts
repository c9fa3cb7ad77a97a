import type { Postbox } from '../src/index.js'
import type { BenchDb } from './bench-db.js'
import { CONCURRENCY } from './bench-db.js'
import { progress, throughput } from './measure.js'
import { costOf, type Cost } from './postbox-scenarios.js'

// publish against sendBatch (DESIGN.md: "publish reaching 10 queues ≥ 0.7x the msg/s of sendBatch
// of 10 to one queue"): both write 10 messages per statement, so the ratio is the price of routing
// (the bindings read, ten queues locked and looked up) over a plain batch.

const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }
const FANOUT = 10
const ROUTING_KEY = 'bench.orders.event'
const TOPIC_QUEUES = Array.from({ length: FANOUT }, (_, i) => `bench-topic-${i}`)
/** The bindings mix the three kinds a publish matches: a literal, a `*` and a `#` pattern. */
const PATTERNS = ['bench.orders.event', 'bench.*.event', 'bench.#']

async function purge(db: BenchDb, queues: readonly string[]): Promise<void> {
  await db.sql(`DELETE FROM ${db.schema}.messages WHERE queue = ANY ($1)`, [queues])
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
}

/** Creates the ten queues a publish reaches, each bound by one of the patterns, and a few bindings that do not match. */
export async function bindTopicQueues(postbox: Postbox): Promise<void> {
  for (const [i, queue] of TOPIC_QUEUES.entries()) {
    await postbox.createQueue(queue)
    await postbox.bind(queue, PATTERNS[i % PATTERNS.length] as string)
    await postbox.bind(queue, `other.${i}.#`)
  }
}

/** `publish` reaching 10 queues, 10 callers: messages delivered per second. */
export async function publishToTen(db: BenchDb, durationMs: number): Promise<number> {
  const rate = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.publish(ROUTING_KEY, PAYLOAD)).ids.length)
  await purge(db, TOPIC_QUEUES)
  return rate
}

/** `sendBatch` of 10 to one queue, 10 callers: messages per second (publish's baseline). */
export async function sendBatchesOfTen(db: BenchDb, durationMs: number): Promise<number> {
  await db.postbox.createQueue('bench-batch-10')
  const batch = Array.from({ length: FANOUT }, () => PAYLOAD)
  const rate = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.sendBatch('bench-batch-10', batch)).length)
  await purge(db, ['bench-batch-10'])
  return rate
}

/** Medians of `rounds` rounds of each, alternating (the machine is shared: alternating spreads its noise over both), with every round's figure. */
export async function publishRounds(db: BenchDb, durationMs: number, rounds: number): Promise<{ publish: number; sendBatch: number; all: { publish: number; sendBatch: number }[] }> {
  const all: { publish: number; sendBatch: number }[] = []
  // A round of each first, not counted: with a warm-up of one second, the first counted round
  // still ran at half speed or less (a fresh pool's connections planning, and the table's first pages).
  await sendBatchesOfTen(db, durationMs)
  await publishToTen(db, durationMs)
  for (let round = 0; round < rounds; round++) {
    // Each goes first in every other round, so neither always runs on the other's leftovers.
    let sendBatch = 0
    let publish = 0
    if (round % 2 === 0) {
      sendBatch = await sendBatchesOfTen(db, durationMs)
      publish = await publishToTen(db, durationMs)
    } else {
      publish = await publishToTen(db, durationMs)
      sendBatch = await sendBatchesOfTen(db, durationMs)
    }
    all.push({ publish, sendBatch })
    progress(`  round ${round + 1}: publish ${Math.round(publish)} msg/s, sendBatch of 10 ${Math.round(sendBatch)} msg/s (${(publish / sendBatch).toFixed(2)}x)`)
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)] as number
  return { publish: median(all.map((r) => r.publish)), sendBatch: median(all.map((r) => r.sendBatch)), all }
}

/**
 * WAL bytes and statements per delivered message of `publish` to 10 queues, and of `sendBatch`
 * of 10, over `count` delivered messages, sequentially, on a Postbox whose pool counts statements.
 */
export async function publishCosts(
  db: BenchDb,
  counting: { postbox: Postbox; statements: () => number },
  count = 2_000,
): Promise<Record<'publish to 10 queues' | 'sendBatch of 10', Cost>> {
  const { postbox, statements } = counting
  await postbox.createQueue('bench-batch-10')
  const batch = Array.from({ length: FANOUT }, () => PAYLOAD)
  const publish = await costOf(db, statements, count, async () => {
    for (let i = 0; i < count / FANOUT; i++) await postbox.publish(ROUTING_KEY, PAYLOAD)
  })
  const sendBatch = await costOf(db, statements, count, async () => {
    for (let i = 0; i < count / FANOUT; i++) await postbox.sendBatch('bench-batch-10', batch)
  })
  await purge(db, [...TOPIC_QUEUES, 'bench-batch-10'])
  return { 'publish to 10 queues': publish, 'sendBatch of 10': sendBatch }
}
