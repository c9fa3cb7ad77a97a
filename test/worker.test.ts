import { describe, expect, it } from 'vitest'
import { InvalidOptionsError, NonRetryableError, Postbox, type Message } from '../src/index.js'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()
let queueNumber = 0
/** A fresh queue per test, so tests in this file never share messages. */
async function freshQueue(options: Parameters<typeof t.postbox.createQueue>[1] = {}): Promise<string> {
  const name = `w${++queueNumber}`
  await t.postbox.createQueue(name, options)
  return name
}

async function stats(queue: string) {
  const [row] = await t.postbox.stats(queue)
  if (!row) throw new Error(`no stats for ${queue}`)
  return row
}

describe('work()', () => {
  it('handles 5,000 messages at concurrency 50 exactly once each', async () => {
    const queue = await freshQueue()
    const ids = await t.postbox.sendBatch(queue, Array.from({ length: 5000 }, (_, i) => ({ i })))
    const seen = new Map<string, number>()
    const worker = t.postbox.work(queue, async (m) => {
      seen.set(m.id, (seen.get(m.id) ?? 0) + 1)
    }, { concurrency: 50 })
    try {
      await waitFor('all handled and acked', async () => seen.size === 5000 && (await stats(queue)).total === 0, { timeoutMs: 30_000 })
    } finally {
      await worker.stop()
    }
    expect([...seen.keys()].sort()).toEqual([...ids].sort())
    expect([...seen.values()].every((n) => n === 1)).toBe(true)
  })

  it('acks ride on the next claim, and are written on their own when that statement fails', async () => {
    const queue = await freshQueue()
    await t.postbox.sendBatch(queue, Array.from({ length: 2000 }, (_, i) => ({ i })))
    const statements: string[] = []
    let failNextCombined = 3
    const pool = {
      query: (config: string | { text: string }, values?: unknown[]) => {
        const text = typeof config === 'string' ? config : config.text
        statements.push(text)
        if (text.includes('UNION ALL') && failNextCombined-- > 0) return Promise.reject(new Error('injected: statement failed'))
        return t.pool.query(config as string, values)
      },
      connect: () => t.pool.connect(),
    }
    const postbox = new Postbox({ pool, schema: t.schema, wakeups: 'poll', pollInterval: 50 })
    const handled = new Map<string, number>()
    const lost: string[] = []
    const errors: unknown[] = []
    const worker = postbox.work(queue, (m) => {
      handled.set(m.id, (handled.get(m.id) ?? 0) + 1)
      // A fixed prefetch keeps the claims many (about 18), so that most acks have one to ride on;
      // an auto prefetch reaches claims of 500 within a few, three of which fail here.
    }, { concurrency: 10, prefetch: 100 })
    worker.on('leaseLost', (m) => lost.push(m.id))
    worker.on('error', (e) => errors.push(e))
    try {
      await waitFor('all acked', async () => (await stats(queue)).total === 0, { timeoutMs: 30_000 })
    } finally {
      await worker.stop()
      await postbox.close()
    }
    expect(handled.size).toBe(2000)
    expect([...handled.values()].every((n) => n === 1)).toBe(true)
    expect(lost).toEqual([])
    expect(errors.map((e) => (e as Error).message)).toEqual(Array(3).fill('injected: statement failed'))
    const combined = statements.filter((text) => text.includes('UNION ALL')).length
    const alone = statements.filter((text) => /\.ack\(/.test(text) && !text.includes('UNION ALL')).length
    expect(combined).toBeGreaterThan(alone)
  })

  it('claimLinger gathers a trickle into batches; bad worker options are refused', async () => {
    const queue = await freshQueue()
    for (const options of [{ claimLinger: -1 }, { claimLinger: 'soon' }, { concurrency: 0 }, { linger: 5 }]) {
      expect(() => t.postbox.work(queue, () => {}, options as never)).toThrow(InvalidOptionsError)
    }
    const claims: string[] = []
    const pool = {
      query: async (config: string | { text: string }, values?: unknown[]) => {
        const result = await t.pool.query(config as string, values)
        const text = typeof config === 'string' ? config : config.text
        if (text.includes('.claim(')) claims.push(text) // claims that ran, not one a pooler refused
        return result
      },
      connect: () => t.pool.connect(),
    }
    const postbox = new Postbox({ pool, schema: t.schema, listenConnectionString: t.listenUrl, pollInterval: '1m' })
    await postbox.listen()
    let handled = 0
    const worker = postbox.work(queue, () => void handled++, { concurrency: 10, claimLinger: '50ms' })
    let trickleMs = 0
    try {
      const started = performance.now()
      for (let i = 0; i < 40; i++) {
        await t.postbox.send(queue, { i })
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      await waitFor('all handled', () => handled === 40, { timeoutMs: 10_000 })
      trickleMs = performance.now() - started
    } finally {
      await worker.stop()
      await postbox.close()
    }
    // At most a claim after each wake-up and one after each linger: two per 50 ms window of the
    // trickle (however slow the machine made it), not one per message or two.
    console.log(`claimLinger: ${claims.length} claims for 40 messages over ${Math.round(trickleMs)} ms`)
    expect(claims.length).toBeLessThanOrEqual(2 * Math.ceil(trickleMs / 50) + 2)
    if (trickleMs < 500) expect(claims.length).toBeLessThan(20)
  })

  it('retries a thrown error with attempt 2, and dead-letters a NonRetryableError at once', async () => {
    const queue = await freshQueue({ backoff: { type: 'fixed', base: 0 } })
    const attempts: Record<string, number[]> = {}
    const worker = t.postbox.work(queue, async (m: Message<{ kind: string }>) => {
      ;(attempts[m.payload.kind] ??= []).push(m.attempt)
      if (m.payload.kind === 'flaky' && m.attempt === 1) throw new Error('first try fails')
      if (m.payload.kind === 'poison') throw new NonRetryableError('bad order')
    })
    const events: string[] = []
    worker.on('retried', () => events.push('retried'))
    worker.on('deadLettered', () => events.push('deadLettered'))
    try {
      await t.postbox.send(queue, { kind: 'flaky' })
      await t.postbox.send(queue, { kind: 'poison' })
      await waitFor('flaky done, poison dead', async () => {
        const s = await stats(queue)
        return s.total === 0 && s.dead === 1
      })
    } finally {
      await worker.stop()
    }
    expect(attempts.flaky).toEqual([1, 2])
    expect(attempts.poison).toEqual([1])
    expect(events.sort()).toEqual(['deadLettered', 'retried'])
    const [dead] = await t.sql<{ last_error: string; original_queue: string }>(
      `SELECT last_error, original_queue FROM "${t.schema}".messages WHERE queue = $1`, [`${queue}.dead`])
    expect(dead?.original_queue).toBe(queue)
    expect(dead?.last_error).toContain('bad order')
  })

  it('keeps a long handler\'s message by extending its lease', async () => {
    const queue = await freshQueue()
    const attempts: number[] = []
    const worker = t.postbox.work(queue, async (m) => {
      attempts.push(m.attempt)
      await new Promise((resolve) => setTimeout(resolve, 1_200)) // four times the lease
    }, { visibilityTimeout: 300 })
    const other = t.newPostbox()
    try {
      await t.postbox.send(queue, { long: true })
      await waitFor('handler started', () => attempts.length === 1)
      // While the handler runs, nobody else can claim the message.
      for (let i = 0; i < 5; i++) {
        expect(await other.receive(queue)).toEqual([])
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      await waitFor('acked', async () => (await stats(queue)).total === 0)
    } finally {
      await worker.stop()
      await other.close()
    }
    expect(attempts).toEqual([1])
  })

  it('aborts ctx.signal and retries when a handler times out', async () => {
    const queue = await freshQueue({ backoff: { type: 'fixed', base: 0 } })
    const seen: { attempt: number; aborted: boolean }[] = []
    const worker = t.postbox.work(queue, async (m, ctx) => {
      const entry = { attempt: m.attempt, aborted: false }
      seen.push(entry)
      if (m.attempt === 1) {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()))
        entry.aborted = true
      }
    }, { handlerTimeout: 200 })
    try {
      await t.postbox.send(queue, { slow: true })
      await waitFor('retried and acked', async () => seen.length === 2 && (await stats(queue)).total === 0)
    } finally {
      await worker.stop()
    }
    expect(seen).toEqual([{ attempt: 1, aborted: true }, { attempt: 2, aborted: false }])
  })

  it('serves several queues, and pause() stops claiming until resume()', async () => {
    const a = await freshQueue()
    const b = await freshQueue()
    const handled: string[] = []
    const worker = t.postbox.work([a, b], async (m) => void handled.push(m.queue), { concurrency: 4 })
    try {
      await t.postbox.send(a, 1)
      await t.postbox.send(b, 2)
      await waitFor('both queues served', () => handled.length === 2)
      expect(handled.sort()).toEqual([a, b].sort())
      await worker.pause()
      await t.postbox.send(a, 3)
      await new Promise((resolve) => setTimeout(resolve, 300))
      expect(handled).toHaveLength(2)
      expect((await stats(a)).ready).toBe(1)
      worker.resume()
      await waitFor('served after resume', () => handled.length === 3)
    } finally {
      await worker.stop()
    }
  })

  it('stop() waits for 10 running handlers and leaves nothing leased', async () => {
    const queue = await freshQueue()
    let running = 0
    let finished = 0
    const worker = t.postbox.work(queue, async () => {
      running++
      await new Promise((resolve) => setTimeout(resolve, 400))
      finished++
    }, { concurrency: 10 })
    await t.postbox.sendBatch(queue, Array.from({ length: 10 }, (_, i) => i))
    await waitFor('10 running', () => running === 10)
    await worker.stop()
    expect(finished).toBe(10)
    const s = await stats(queue)
    expect(s).toMatchObject({ total: 0, inFlight: 0 })
    await worker.stop() // idempotent
  })

  it('stop() past its timeout releases running messages at once, attempt kept', async () => {
    const queue = await freshQueue()
    let running = 0
    const worker = t.postbox.work(queue, async (_m, ctx) => {
      running++
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()))
    }, { concurrency: 3 })
    await t.postbox.sendBatch(queue, [1, 2, 3])
    await waitFor('3 running', () => running === 3)
    await worker.stop({ timeout: 100 })
    const s = await stats(queue)
    expect(s).toMatchObject({ ready: 3, inFlight: 0 })
    const again = await t.postbox.receive(queue, { max: 3 })
    expect(again.map((m) => m.attempt)).toEqual([2, 2, 2])
    await t.postbox.ack(again)
  })

  it('transactional mode leaves exactly one effect per message when handlers fail at random', async () => {
    const queue = await freshQueue({ maxAttempts: 50, backoff: { type: 'fixed', base: 0 } })
    await t.sql(`CREATE TABLE "${t.schema}".effects (message_id bigint NOT NULL, attempt int NOT NULL)`)
    const ids = await t.postbox.sendBatch(queue, Array.from({ length: 200 }, (_, i) => i))
    let failures = 0
    const worker = t.postbox.work(queue, async (m, ctx) => {
      await ctx.tx?.query(`INSERT INTO "${t.schema}".effects VALUES ($1, $2)`, [m.id, m.attempt])
      if (Math.random() < 0.3) {
        failures++
        throw new Error('random failure after the write')
      }
    }, { concurrency: 8, transactional: true })
    try {
      await waitFor('all done', async () => (await stats(queue)).total === 0, { timeoutMs: 30_000 })
    } finally {
      await worker.stop()
    }
    const effects = await t.sql<{ message_id: string; n: number }>(
      `SELECT message_id::text, count(*)::int AS n FROM "${t.schema}".effects GROUP BY 1`)
    expect(failures).toBeGreaterThan(0)
    expect(effects.map((e) => e.message_id).sort()).toEqual([...ids].sort())
    expect(effects.every((e) => e.n === 1)).toBe(true)
  })

  it('transactional mode: a failing handler still counts the attempt and reaches the dead letter', async () => {
    const queue = await freshQueue({ maxAttempts: 3, backoff: { type: 'fixed', base: 0 } })
    const attempts: number[] = []
    const worker = t.postbox.work(queue, async (m) => {
      attempts.push(m.attempt)
      throw new Error('always fails')
    }, { transactional: true })
    try {
      await t.postbox.send(queue, { poison: true })
      await waitFor('dead-lettered', async () => (await stats(queue)).dead === 1)
    } finally {
      await worker.stop()
    }
    expect(attempts).toEqual([1, 2, 3])
  })
})
