import { Postbox, type Message } from '../src/index.js'
import type { BenchDb } from './bench-db.js'
import { CONCURRENCY, POOL_SIZE } from './bench-db.js'
import type { Contender } from './contender.js'
import type { CpuReading } from './cpu.js'
import { settle, timeDrain } from './end-to-end.js'
import { recordingPool, type StatementLog } from './statement-log.js'
import { drain, progress, sleep, throughput } from './measure.js'

const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }

async function purge(db: BenchDb, queue: string): Promise<void> {
  await db.sql(`DELETE FROM ${db.schema}.messages WHERE queue = $1`, [queue])
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
}

/** Single `send` from 10 callers while a worker consumes the queue (wake-ups on): messages per second. */
export async function sendWithConsumer(db: BenchDb, durationMs: number): Promise<number> {
  await db.postbox.createQueue('bench-send')
  const worker = db.postbox.work('bench-send', () => {}, { concurrency: CONCURRENCY })
  await db.postbox.listen()
  await sleep(200)
  const rate = await throughput(CONCURRENCY, durationMs, async () => {
    await db.postbox.send('bench-send', PAYLOAD)
    return 1
  })
  await worker.stop()
  await purge(db, 'bench-send')
  return rate
}

/** `sendBatch` of 1,000 from 10 callers: messages per second. */
export async function sendBatches(db: BenchDb, durationMs: number): Promise<number> {
  await db.postbox.createQueue('bench-batch')
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  const rate = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.sendBatch('bench-batch', batch)).length)
  await purge(db, 'bench-batch')
  return rate
}

/** Fills a queue with `count` messages through sendBatch, then vacuums. */
async function preload(db: BenchDb, queue: string, count: number, postbox: Postbox = db.postbox): Promise<void> {
  await postbox.createQueue(queue)
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  for (let sent = 0; sent < count; sent += 1000) await postbox.sendBatch(queue, batch.slice(0, Math.min(1000, count - sent)))
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
}

/**
 * postbox as one contender among the peers. Its end-to-end drains run on a Postbox of their own
 * whose pool records its statements (claim sizes, ack batch sizes) and lives as long as the
 * contender, as a peer's pool does: a new connection costs Postgres about 25 ms of CPU here and
 * the first claim on it another 17 ms (plpgsql compiles receive and plans its statements), which
 * a fresh pool per 20,000-message drain would charge to every round (about 20 µs per message).
 */
export function postboxContender(db: BenchDb, readCpu: () => CpuReading): Contender & { log: StatementLog } {
  const { pool, log } = recordingPool(db.url, POOL_SIZE)
  const postbox = new Postbox({ pool, schema: db.schema })
  return {
    name: 'postbox',
    log,
    async endToEnd(count, observer) {
      await preload(db, 'bench-e2e', count, postbox)
      await settle(db, [`${db.schema}.messages`])
      log.start()
      const result = await timeDrain(readCpu, count, async (handled) => {
        const worker = postbox.work('bench-e2e', () => handled(), { concurrency: CONCURRENCY })
        return () => worker.stop()
      }, observer)
      const statements = log.stop()
      const [left] = await postbox.stats('bench-e2e')
      if (left?.total !== 0) throw new Error(`end-to-end left ${left?.total} messages behind`)
      const claims = statements.filter((st) => /:(ack_and_)?claim(:|$)/.test(st.name)).map((st) => st.rows - (st.name.includes(':ack_and_claim') ? 1 : 0))
      return { ...result, statements, claims }
    },
    sendWithConsumer: (durationMs) => sendWithConsumer(db, durationMs),
    sendBatches: (durationMs) => sendBatches(db, durationMs),
    wakeUpLatency: (sends, gapMs) => wakeUpLatency(db, sends, gapMs),
    close: async () => {
      await postbox.close()
      await pool.end()
    },
  }
}

/** Enqueue call to handler start for `sends` sends `gapMs` apart to an idle worker: latencies in ms. */
export async function wakeUpLatency(db: BenchDb, sends = 200, gapMs = 20): Promise<number[]> {
  await db.postbox.createQueue('bench-latency')
  const latencies: number[] = []
  const worker = db.postbox.work('bench-latency', (m: Message<{ t: number }>) => {
    latencies.push(performance.now() - m.payload.t)
  })
  await db.postbox.listen()
  await sleep(300)
  for (let i = 0; i < sends; i++) {
    await db.postbox.send('bench-latency', { t: performance.now() })
    await sleep(gapMs)
  }
  while (latencies.length < sends) await sleep(10)
  await worker.stop()
  return latencies
}

/**
 * Claim throughput (receive 100 + ack, 10 callers) while `backlog` messages wait: the median of
 * `rounds` rounds, each claiming `take` messages. Every round starts from the same state, vacuumed
 * and checkpointed, so neither side pays for the other's dead rows or WAL: the small queue is
 * refilled to `backlog` each round, the big one is loaded once with enough for every round.
 */
export async function claimRate(db: BenchDb, backlog: number, take = 10_000, rounds = 3): Promise<number> {
  const queue = `bench-backlog-${backlog}`
  await db.postbox.createQueue(queue)
  const fill = async (count: number) => {
    progress(`  preloading ${count.toLocaleString()} messages`)
    // One INSERT … SELECT, the same rows send_batch writes, to keep the run short.
    await db.sql(
      `INSERT INTO ${db.schema}.messages (queue, payload) SELECT $1, $2::jsonb FROM generate_series(1, $3)`,
      [queue, JSON.stringify(PAYLOAD), count],
    )
  }
  const refill = backlog <= take
  if (!refill) await fill(backlog + take * rounds)
  const rates: number[] = []
  for (let round = 0; round < rounds; round++) {
    if (refill) await fill(backlog)
    await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
    await db.sql('CHECKPOINT').catch(() => {}) // needs superuser or pg_checkpoint on DATABASE_URL
    let claimed = 0
    rates.push(await drain(CONCURRENCY, async () => {
      if (claimed >= take) return 0
      const messages = await db.postbox.receive(queue, { max: 100 })
      claimed += messages.length
      if (messages.length > 0) await db.postbox.ack(messages)
      return messages.length
    }))
  }
  await purge(db, queue)
  return median(rates)
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] as number
}

/** Table and index size of the messages table now, in bytes. */
async function sizes(db: BenchDb): Promise<{ table: number; indexes: number }> {
  const [row] = await db.sql<{ table: string; indexes: string }>(
    `SELECT pg_table_size($1::regclass) AS table, pg_indexes_size($1::regclass) AS indexes`,
    [`${db.schema}.messages`],
  )
  return { table: Number(row?.table), indexes: Number(row?.indexes) }
}

export interface ChurnSample {
  atS: number
  tableBytes: number
  indexBytes: number
  backlog: number
}

/**
 * Steady send and consume for `durationMs`: a producer sends batches of 100 at `rate` messages per
 * second while a worker consumes; samples the table and index size every `sampleMs`.
 */
export async function churn(db: BenchDb, durationMs: number, sampleMs: number, rate = 2_000): Promise<ChurnSample[]> {
  await db.postbox.createQueue('bench-churn')
  const worker = db.postbox.work('bench-churn', () => {}, { concurrency: CONCURRENCY })
  const batch = Array.from({ length: 100 }, () => PAYLOAD)
  const started = performance.now()
  const samples: ChurnSample[] = []
  let stop = false
  const producer = (async () => {
    for (let sent = 0; !stop; sent += 100) {
      const due = started + (sent / rate) * 1000
      if (due > performance.now()) await sleep(due - performance.now())
      await db.postbox.sendBatch('bench-churn', batch)
    }
  })()
  while (performance.now() - started < durationMs) {
    await sleep(Math.min(sampleMs, durationMs - (performance.now() - started)))
    const size = await sizes(db)
    const [s] = await db.postbox.stats('bench-churn')
    const sample = { atS: Math.round((performance.now() - started) / 1000), tableBytes: size.table, indexBytes: size.indexes, backlog: s?.total ?? 0 }
    samples.push(sample)
    progress(`  churn ${sample.atS}s: table ${(sample.tableBytes / 1e6).toFixed(1)} MB, indexes ${(sample.indexBytes / 1e6).toFixed(1)} MB, backlog ${sample.backlog}`)
  }
  stop = true
  await producer
  await worker.stop()
  await purge(db, 'bench-churn')
  return samples
}

export interface Cost {
  walBytesPerMessage: number
  statementsPerMessage: number
}

async function walLsn(db: BenchDb): Promise<string> {
  const [row] = await db.sql<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
  return row?.lsn as string
}

async function walSince(db: BenchDb, lsn: string): Promise<number> {
  const [row] = await db.sql<{ bytes: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn) AS bytes', [lsn])
  return Number(row?.bytes)
}

/** WAL bytes and statements per message of `work`, which handles `count` messages. */
export async function costOf(db: BenchDb, statements: () => number, count: number, work: () => Promise<void>): Promise<Cost> {
  const lsn = await walLsn(db)
  const before = statements()
  await work()
  return { walBytesPerMessage: (await walSince(db, lsn)) / count, statementsPerMessage: (statements() - before) / count }
}

/**
 * WAL bytes and statements per message for send (single), claim (receive of 100) and ack (of
 * 100), each measured over `count` messages on a Postbox whose pool counts statements.
 */
export async function costs(db: BenchDb, counting: { postbox: Postbox; statements: () => number }, count = 2_000): Promise<Record<'send' | 'claim' | 'ack', Cost>> {
  const { postbox } = counting
  await postbox.createQueue('bench-cost')
  const measure = (work: () => Promise<void>) => costOf(db, counting.statements, count, work)
  const send = await measure(async () => {
    for (let i = 0; i < count; i++) await postbox.send('bench-cost', PAYLOAD)
  })
  const claimed: Message[] = []
  const claim = await measure(async () => {
    while (claimed.length < count) claimed.push(...(await postbox.receive('bench-cost', { max: 100 })))
  })
  const ack = await measure(async () => {
    for (let i = 0; i < claimed.length; i += 100) await postbox.ack(claimed.slice(i, i + 100))
  })
  await purge(db, 'bench-cost')
  return { send, claim, ack }
}
