import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

// Every Postbox here polls only once a minute, so anything that arrives in well under that
// came through a notification.
const t = useTestSchema()
const SLOW_POLL = '1m'

async function waiterCount(queue: string): Promise<number> {
  const [row] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".waiters WHERE queue = $1 AND expires_at > now()`, [queue])
  return row?.n ?? 0
}

describe('wake-ups', () => {
  it('an idle worker starts a handler soon after a send, by notification', async () => {
    await t.postbox.createQueue('idle')
    const postbox = t.newPostbox({ pollInterval: SLOW_POLL })
    const started: number[] = []
    const worker = postbox.work('idle', async () => void started.push(performance.now()))
    try {
      await postbox.listen()
      await waitFor('worker registered as waiting', async () => (await waiterCount('idle')) === 1)
      for (let i = 0; i < 5; i++) {
        const sentAt = performance.now()
        await t.postbox.send('idle', { i })
        await waitFor('handler started', () => started.length === i + 1, { timeoutMs: 3_000, intervalMs: 1 })
        expect((started[i] as number) - sentAt).toBeLessThan(1_000)
        await waitFor('idle again', async () => (await waiterCount('idle')) === 1)
      }
    } finally {
      await worker.stop()
      await postbox.close()
    }
  })

  it('senders notify only while a consumer waits', async () => {
    await t.postbox.createQueue('quiet')
    const listener = new pg.Client({ connectionString: t.listenUrl })
    await listener.connect()
    const heard: string[] = []
    listener.on('notification', (n) => n.payload && heard.push(n.payload))
    await listener.query(`LISTEN "${t.schema}"`)
    const postbox = t.newPostbox({ pollInterval: SLOW_POLL })
    try {
      await t.postbox.send('quiet', 1)
      await t.postbox.sendBatch('quiet', [2, 3])
      await listener.query('SELECT 1') // a round trip, so any notification would have arrived
      expect(heard).toEqual([])
      await postbox.receive('quiet', { max: 3 }).then((ms) => postbox.ack(ms))
      const waiting = postbox.receive('quiet', { wait: '10s' })
      await waitFor('consumer waiting', async () => (await waiterCount('quiet')) === 1)
      await t.postbox.send('quiet', 4)
      const [message] = await waiting
      expect(message?.payload).toBe(4)
      await postbox.ack(message!)
      // The consumer may have been woken before the listener read its copy: a round trip first.
      await listener.query('SELECT 1')
      expect(heard).toEqual(['quiet'])
      // One notification per transaction and queue, however many messages it sends.
      const again = postbox.receive('quiet', { wait: '10s', max: 10 })
      await waitFor('consumer waiting again', async () => (await waiterCount('quiet')) === 1)
      const client = await t.pool.connect()
      try {
        await client.query('BEGIN')
        for (let i = 0; i < 5; i++) await t.postbox.send('quiet', i, { tx: client })
        await client.query('COMMIT')
      } finally {
        client.release()
      }
      await postbox.ack(await again)
      await listener.query('SELECT 1')
      expect(heard).toEqual(['quiet', 'quiet'])
    } finally {
      await postbox.close()
      await listener.end()
    }
  })

  it('a sender in REPEATABLE READ whose snapshot predates the waiter still wakes it', async () => {
    await t.postbox.createQueue('snapshot')
    const consumer = t.newPostbox({ pollInterval: SLOW_POLL })
    const client = await t.pool.connect()
    try {
      await consumer.listen()
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ')
      await client.query('SELECT 1') // the snapshot is taken here, before anyone waits
      const received = consumer.receive('snapshot', { wait: '20s' })
      await waitFor('consumer waiting', async () => (await waiterCount('snapshot')) === 1)
      const sentAt = performance.now()
      await t.postbox.send('snapshot', { rr: true }, { tx: client })
      await client.query('COMMIT')
      const [message] = await received
      // Without the notification this would wait for the one-minute poll or the 20 s long poll.
      expect(performance.now() - sentAt).toBeLessThan(3_000)
      expect(message?.payload).toEqual({ rr: true })
      await consumer.ack(message!)
    } finally {
      client.release()
      await consumer.close()
    }
  })

  it('never loses a wake-up when a consumer goes idle just as a message commits (200 rounds)', async () => {
    await t.postbox.createQueue('race')
    const consumer = t.newPostbox({ pollInterval: SLOW_POLL })
    await consumer.listen()
    const slowest: number[] = []
    try {
      for (let round = 0; round < 200; round++) {
        const started = performance.now()
        const received = consumer.receive('race', { wait: '20s' })
        // Send at a random moment around the consumer's going idle, sometimes from a transaction
        // that stays open a little after its send.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 4))
        const client = await t.pool.connect()
        try {
          await client.query('BEGIN')
          await t.postbox.send('race', { round }, { tx: client })
          if (round % 2 === 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * 4))
          await client.query('COMMIT')
        } finally {
          client.release()
        }
        const [message] = await received
        expect(message?.payload).toEqual({ round })
        await consumer.ack(message!)
        slowest.push(performance.now() - started)
      }
    } finally {
      await consumer.close()
    }
    // A lost wake-up would wait for the one-minute poll or the 20 s long poll.
    expect(Math.max(...slowest)).toBeLessThan(3_000)
  })

  it('long poll returns empty after wait, and at once when a message arrives', async () => {
    await t.postbox.createQueue('long')
    const consumer = t.newPostbox({ pollInterval: SLOW_POLL })
    try {
      const before = performance.now()
      expect(await consumer.receive('long', { wait: 300 })).toEqual([])
      expect(performance.now() - before).toBeGreaterThanOrEqual(290)
      const waiting = consumer.receive('long', { wait: '20s' })
      await waitFor('waiting', async () => (await waiterCount('long')) === 1)
      await t.postbox.send('long', 'hello')
      const [message] = await waiting
      expect(message?.payload).toBe('hello')
      await consumer.ack(message!)
    } finally {
      await consumer.close()
    }
  })

  it('keeps handling promptly after the LISTEN connection is terminated', async () => {
    await t.postbox.createQueue('reconnect')
    const postbox = t.newPostbox({ pollInterval: SLOW_POLL })
    const handled: unknown[] = []
    const worker = postbox.work('reconnect', async (m) => void handled.push(m.payload))
    let reconnects = 0
    postbox.on('notifierConnected', () => reconnects++)
    try {
      await postbox.listen()
      const [killed] = await t.sql<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`, [`postbox:${t.schema}:listen`])
      expect(killed?.ok).toBe(true)
      await waitFor('notifier reconnected', () => reconnects >= 2, { timeoutMs: 10_000 })
      await waitFor('worker waiting again', async () => (await waiterCount('reconnect')) === 1)
      await t.postbox.send('reconnect', 'after')
      await waitFor('handled after reconnect', () => handled.length === 1, { timeoutMs: 3_000 })
    } finally {
      await worker.stop()
      await postbox.close()
    }
  })
})
