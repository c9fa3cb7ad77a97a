import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidOptionsError, Postbox, type Worker } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

// In transactional mode each running handler holds a pool connection until it commits. These
// tests give a pool of 4 the handler that asks the most of it: it holds its transaction past its
// lease (so lease renewals must get a connection meanwhile) and sends a message outside its
// transaction (which needs a connection of its own).
const t = useTestSchema()
const LEASE = '400ms'
const HOLD_MS = 900
const MESSAGES = 8
let queueNumber = 0

beforeAll(async () => {
  await t.sql(`CREATE TABLE "${t.schema}".effects (id bigint NOT NULL, attempt int NOT NULL)`)
})

/** A pg Pool of 4 whose waits for a connection give up after 3 s, so that a starved run ends. */
function smallPool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: t.url, max: 4, connectionTimeoutMillis: 3_000 })
  pool.on('error', () => {})
  return pool
}

async function freshQueues(postbox: Postbox): Promise<{ queue: string; audit: string }> {
  const queue = `conn${++queueNumber}`
  await postbox.createQueue(queue, { visibilityTimeout: LEASE, maxAttempts: 100 })
  await postbox.createQueue(`${queue}-audit`)
  await postbox.sendBatch(queue, Array.from({ length: MESSAGES }, (_, i) => ({ i })))
  return { queue, audit: `${queue}-audit` }
}

/** Starts the greedy transactional worker and records what becomes of its messages. */
function greedyWorker(postbox: Postbox, queues: { queue: string; audit: string }, concurrency: number) {
  const worker = postbox.work(queues.queue, async (message, ctx) => {
    await ctx.tx.query(`INSERT INTO "${t.schema}".effects (id, attempt) VALUES ($1, $2)`, [message.id, message.attempt])
    await postbox.send(queues.audit, { about: message.id }) // outside the transaction: a connection of its own
    await sleep(HOLD_MS) // past the lease: the lease keeper must renew it meanwhile
  }, { transactional: true, concurrency })
  const completed = new Set<string>()
  const trouble: string[] = []
  worker.on('completed', (m) => completed.add(m.id))
  worker.on('failed', (m, error) => trouble.push(`failed ${m.id}: ${(error as Error).message}`))
  worker.on('leaseLost', (m) => trouble.push(`lease lost ${m.id}`))
  worker.on('error', (error) => trouble.push(`worker error: ${(error as Error).message}`))
  return { worker, completed, trouble }
}

describe('transactional concurrency and the pool', () => {
  it('refuses a concurrency that would leave claims and lease renewals no connection, instead of stalling', async () => {
    const pool = smallPool()
    const postbox = new Postbox({ pool, schema: t.schema, pollInterval: '100ms' })
    let refused: unknown
    let stalled = ''
    try {
      const queues = await freshQueues(postbox)
      let run: ReturnType<typeof greedyWorker> | undefined
      try {
        run = greedyWorker(postbox, queues, 4)
      } catch (error) {
        refused = error
      }
      if (run) {
        // Not refused: 4 handlers hold the 4 connections, and each waits for a fifth.
        const { worker, completed, trouble } = run
        await waitFor('every message completed, or trouble', () => completed.size === MESSAGES || trouble.length > 0, { timeoutMs: 15_000 })
          .catch((error: Error) => trouble.push(error.message))
        stalled = `${completed.size} of ${MESSAGES} completed; first trouble: ${trouble[0]}`
        await worker.stop({ timeout: '1s' })
      }
    } finally {
      await postbox.close()
      await pool.end()
    }
    expect(stalled, 'the worker was not refused, and then').toBe('')
    expect(refused).toBeInstanceOf(InvalidOptionsError)
    expect((refused as Error).message).toMatch(/needs 6 pool connections.*plus 2 for claims and lease renewals, and the pool has 4.*at least 6, or lower concurrency to 2/)
  })

  it('the most the pool allows completes every message once, without a lost lease', async () => {
    const pool = smallPool()
    const postbox = new Postbox({ pool, schema: t.schema, pollInterval: '100ms' })
    let worker: Worker<unknown, unknown> | undefined
    try {
      const queues = await freshQueues(postbox)
      const run = greedyWorker(postbox, queues, 2)
      worker = run.worker
      await waitFor('every message completed, or trouble', () => run.completed.size === MESSAGES || run.trouble.length > 0, { timeoutMs: 20_000 })
      expect(run.trouble).toEqual([])
      const effects = await t.sql<{ id: string; n: number }>(
        `SELECT id::text, count(*)::int AS n FROM "${t.schema}".effects WHERE id = ANY($1::bigint[]) GROUP BY id`, [[...run.completed]])
      expect(effects.map((e) => e.n)).toEqual(Array(MESSAGES).fill(1))
      expect((await postbox.stats(queues.audit))[0]?.ready).toBe(MESSAGES)
    } finally {
      await worker?.stop()
      await postbox.close()
      await pool.end()
    }
  })

  it('counts every transactional worker of a Postbox, gives their connections back when they stop, and leaves lease mode alone', async () => {
    const postbox = t.newPostbox({ poolSize: 5 })
    const queue = `conn${++queueNumber}`
    const workers: Worker<unknown, unknown>[] = []
    try {
      await postbox.createQueue(queue) // left empty: these workers only need to exist
      const first = postbox.work(queue, () => {}, { transactional: true, concurrency: 2 })
      workers.push(first)
      expect(() => postbox.work(queue, () => {}, { transactional: true, concurrency: 2 })).toThrow(
        /needs 6 pool connections, with 2 held by the other transactional workers of this Postbox.*or lower concurrency to 1/,
      )
      workers.push(postbox.work(queue, () => {}, { concurrency: 50 })) // lease mode holds no connection per handler
      await first.stop()
      workers.push(postbox.work(queue, () => {}, { transactional: true, concurrency: 3 }))
    } finally {
      await Promise.all(workers.map((w) => w.stop()))
      await postbox.close()
    }
  })
})
