import type { StreamEvent } from '../src/index.js'
import type { BenchDb } from './bench-db.js'
import { CONCURRENCY } from './bench-db.js'
import { percentile, progress, sleep, throughput } from './measure.js'

// Streams against the work queue, in the same run on the same Postgres (DESIGN.md targets):
// append ≥ 0.8x send and appendBatch ≥ 0.8x sendBatch; one group reading 4 partitions ≥ 1.5x the
// work-queue end-to-end; five groups write no row per event per group; an idle group's latency
// p50 ≤ 2x the queue wake-up p50; and what a long open appending transaction does to the others.

const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number

async function clearStreams(db: BenchDb): Promise<void> {
  for (const s of await db.postbox.listStreams()) await db.postbox.deleteStream(s.name)
  await db.sql(`DELETE FROM ${db.schema}.messages`)
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages, ${db.schema}.stream_inbox, ${db.schema}.stream_offsets, ${db.schema}.stream_partitions`)
}

/** Single `append` against single `send`, 10 callers, alternating rounds: medians in events (messages) per second. */
export async function appendVersusSend(db: BenchDb, durationMs: number, rounds: number): Promise<{ append: number; send: number }> {
  const appends: number[] = []
  const sends: number[] = []
  await db.postbox.createQueue('bench-stream-send')
  for (let round = 0; round < rounds; round++) {
    await db.postbox.createStream('bench-append', { partitions: 4 })
    const a = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.append('bench-append', PAYLOAD), 1))
    const s = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.send('bench-stream-send', PAYLOAD), 1))
    appends.push(a)
    sends.push(s)
    progress(`  round ${round + 1}: append ${Math.round(a)}/s, send ${Math.round(s)}/s (${(a / s).toFixed(2)}x)`)
    await clearStreams(db)
  }
  return { append: median(appends), send: median(sends) }
}

/** `appendBatch` of 1,000 against `sendBatch` of 1,000, 10 callers, alternating rounds: medians per second. */
export async function appendBatchVersusSendBatch(db: BenchDb, durationMs: number, rounds: number): Promise<{ appendBatch: number; sendBatch: number }> {
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  const appends: number[] = []
  const sends: number[] = []
  await db.postbox.createQueue('bench-stream-batch')
  for (let round = 0; round < rounds; round++) {
    await db.postbox.createStream('bench-append-batch', { partitions: 4 })
    const a = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.appendBatch('bench-append-batch', batch)).length)
    const s = await throughput(CONCURRENCY, durationMs, async () => (await db.postbox.sendBatch('bench-stream-batch', batch)).length)
    appends.push(a)
    sends.push(s)
    progress(`  round ${round + 1}: appendBatch ${Math.round(a)}/s, sendBatch ${Math.round(s)}/s (${(a / s).toFixed(2)}x)`)
    await clearStreams(db)
  }
  return { appendBatch: median(appends), sendBatch: median(sends) }
}

/** Until `done()` is true, polling every few milliseconds. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await sleep(2)
}

/**
 * `count` events preloaded (appended, not stamped: stamping is part of the read), read by one
 * group of one member over 4 partitions with a no-op handler; against `count` messages preloaded
 * and drained by a worker of concurrency 10. Events (messages) per second, from start to the last;
 * `rounds` rounds that alternate which side goes first, medians of each side.
 */
export async function groupReadVersusQueue(db: BenchDb, count: number, rounds: number): Promise<{ stream: number; queue: number; offsetWrites: number }> {
  const streamRates: number[] = []
  const queueRates: number[] = []
  let offsetWrites = 0
  for (let round = 0; round < rounds; round++) {
    const streamFirst = round % 2 === 0
    if (!streamFirst) queueRates.push(await queueDrain(db, count, round))
    const read = await groupRead(db, count, round)
    streamRates.push(read.rate)
    offsetWrites = read.offsetWrites
    if (streamFirst) queueRates.push(await queueDrain(db, count, round))
    const [s, q] = [streamRates.at(-1) as number, queueRates.at(-1) as number]
    progress(`  round ${round + 1}: group read ${Math.round(s)}/s, queue ${Math.round(q)}/s (${(s / q).toFixed(2)}x)`)
    await clearStreams(db)
  }
  return { stream: median(streamRates), queue: median(queueRates), offsetWrites }
}

async function groupRead(db: BenchDb, count: number, round: number): Promise<{ rate: number; offsetWrites: number }> {
  const stream = `bench-read-${round}`
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  await db.postbox.createStream(stream, { partitions: 4 })
  for (let n = 0; n < count; n += 1000) await db.postbox.appendBatch(stream, batch)
  await db.sql(`VACUUM ANALYZE ${db.schema}.stream_inbox`)
  let read = 0
  let commits = 0
  const started = performance.now()
  const consumer = db.postbox.consume(stream, 'reader', () => void read++, { batchSize: 500 })
  consumer.on('committed', () => void commits++)
  await until(() => read >= count)
  const rate = (count / (performance.now() - started)) * 1000
  await consumer.stop()
  return { rate, offsetWrites: commits / count }
}

async function queueDrain(db: BenchDb, count: number, round: number): Promise<number> {
  const queue = `bench-drain-${round}`
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  await db.postbox.createQueue(queue)
  for (let n = 0; n < count; n += 1000) await db.postbox.sendBatch(queue, batch)
  await db.sql(`VACUUM ANALYZE ${db.schema}.messages`)
  let drained = 0
  const started = performance.now()
  const worker = db.postbox.work(queue, () => void drained++, { concurrency: CONCURRENCY })
  await until(() => drained >= count)
  const rate = (count / (performance.now() - started)) * 1000
  await worker.stop()
  return rate
}

/** Five groups reading the same `count` events at once: offset commits per event per group, and events per second per group. */
export async function fiveGroups(db: BenchDb, count: number): Promise<{ commitsPerEventPerGroup: number; perGroupRate: number }> {
  await db.postbox.createStream('bench-five', { partitions: 4 })
  const batch = Array.from({ length: 1000 }, () => PAYLOAD)
  for (let n = 0; n < count; n += 1000) await db.postbox.appendBatch('bench-five', batch)
  let commits = 0
  const read = [0, 0, 0, 0, 0]
  const started = performance.now()
  const consumers = read.map((_, g) => {
    const c = db.postbox.consume('bench-five', `group-${g}`, () => void read[g]!++, { batchSize: 500 })
    c.on('committed', () => void commits++)
    return c
  })
  await until(() => read.every((n) => n >= count))
  const perGroupRate = (count / (performance.now() - started)) * 1000
  await Promise.all(consumers.map((c) => c.stop()))
  await clearStreams(db)
  return { commitsPerEventPerGroup: commits / (count * 5), perGroupRate }
}

/** Append call to handler start for `sends` appends `gapMs` apart, to an idle group: latencies in ms. */
export async function idleGroupLatency(db: BenchDb, sends: number, gapMs: number, stream = 'bench-latency-stream'): Promise<number[]> {
  await db.postbox.createStream(stream)
  const latencies: number[] = []
  const consumer = db.postbox.consume(stream, 'idle', (event: StreamEvent<{ t: number }>) => {
    latencies.push(performance.now() - event.payload.t)
  }, { pollInterval: '10s', from: 'latest' })
  await db.postbox.listen()
  await consumer.ready()
  await sleep(300)
  for (let i = 0; i < sends; i++) {
    await db.postbox.append(stream, { t: performance.now() })
    await sleep(gapMs)
  }
  while (latencies.length < sends) await sleep(10)
  await consumer.stop()
  return latencies
}

/**
 * The idle group's latency while another transaction has appended to the same stream and stays
 * open for `openMs`: p50 during it and in each fifth of it (the open transaction holds back
 * vacuum, so the inbox's dead rows pile up meanwhile), and whether its own event came after the
 * others once it committed.
 */
export async function latencyWithOpenTransaction(db: BenchDb, openMs: number, gapMs: number): Promise<{ p50: number; p99: number; p50ByFifth: number[]; delivered: number; lateCameLast: boolean }> {
  await db.postbox.createStream('bench-open-tx')
  const client = await db.pool.connect()
  const seen: string[] = []
  const latencies: number[] = []
  const consumer = db.postbox.consume('bench-open-tx', 'idle', (event: StreamEvent<{ t: number; tag: string }>) => {
    seen.push(event.payload.tag)
    if (event.payload.tag !== 'open') latencies.push(performance.now() - event.payload.t)
  }, { pollInterval: '10s' })
  await db.postbox.listen()
  await consumer.ready()
  try {
    await client.query('BEGIN')
    await db.postbox.append('bench-open-tx', { t: performance.now(), tag: 'open' }, { tx: client })
    const deadline = performance.now() + openMs
    let n = 0
    while (performance.now() < deadline) {
      await db.postbox.append('bench-open-tx', { t: performance.now(), tag: `e${n++}` })
      await sleep(gapMs)
    }
    while (latencies.length < n) await sleep(10)
    await client.query('COMMIT')
    while (!seen.includes('open')) await sleep(10)
    const fifth = Math.ceil(latencies.length / 5)
    const p50ByFifth = [0, 1, 2, 3, 4].map((i) => percentile(latencies.slice(i * fifth, (i + 1) * fifth), 50))
    return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), p50ByFifth, delivered: latencies.length, lateCameLast: seen.at(-1) === 'open' }
  } finally {
    client.release()
    await consumer.stop()
    await clearStreams(db)
  }
}
