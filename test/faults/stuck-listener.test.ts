import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// A session that LISTENs on postbox's channel and then sits idle in a transaction holds back
// the server's notification queue: it cannot be truncated past what that session has not read,
// and once the queue is full (8 GB) every transaction that NOTIFYs fails at commit, business
// writes included. postbox senders NOTIFY only while a consumer is registered as waiting, so
// with nobody waiting sends never touch the queue; with a worker running they do, and must keep
// committing.
const t = useTestSchema()

/** Sends single messages from `callers` concurrent loops for `ms`; returns how many committed and failed. */
async function sendHard(queue: string, callers: number, ms: number): Promise<{ committed: number; failed: number }> {
  const deadline = Date.now() + ms
  let committed = 0
  let failed = 0
  await Promise.all(Array.from({ length: callers }, async () => {
    while (Date.now() < deadline) {
      try {
        await t.postbox.send(queue, { at: Date.now() })
        committed++
      } catch {
        failed++
      }
    }
  }))
  return { committed, failed }
}

describe('fault: a LISTEN session idle in a transaction', { timeout: 90_000 }, () => {
  it('sends keep committing while it sits there; without a waiting consumer they do not notify at all', async () => {
    await t.postbox.createQueue('hard')
    const stuck = new pg.Client({ connectionString: t.url, application_name: 'stuck-listener' })
    const healthy = new pg.Client({ connectionString: t.url })
    await Promise.all([stuck.connect(), healthy.connect()])
    let heard = 0
    healthy.on('notification', () => heard++)
    // The consumer polls only once a minute: every wake-up below that comes within seconds came
    // by notification (or by its own look after registering), an event, not a timing guess.
    const consumer = t.newPostbox({ pollInterval: '60s' })
    try {
      await healthy.query(`LISTEN "${t.schema}"`)
      await stuck.query(`LISTEN "${t.schema}"`)
      await stuck.query('BEGIN')
      await stuck.query('SELECT 1') // idle in transaction from now on, never reading notifications
      const [state] = await t.sql<{ state: string }>(`SELECT state FROM pg_stat_activity WHERE application_name = 'stuck-listener'`)
      expect(state?.state).toBe('idle in transaction')

      // Nobody waits: not one NOTIFY, so nothing piles up behind the stuck session.
      const quiet = await sendHard('hard', 8, 1_500)
      await healthy.query('SELECT 1') // a round trip: any notification would have arrived
      const heardQuiet = heard

      // A worker runs: consumers going idle register as waiting and senders wake them.
      let handled = 0
      const worker = consumer.work('hard', () => void handled++, { concurrency: 10 })
      const listenStates = new Set<string>()
      let sampled = false
      const sampling = (async () => {
        while (!sampled) {
          const rows = await t.sql<{ state: string }>(`SELECT state FROM pg_stat_activity WHERE application_name = $1`, [`postbox:${t.schema}:listen`])
          for (const r of rows) listenStates.add(r.state)
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      })()
      const loud = await sendHard('hard', 8, 2_000)
      await waitFor('backlog handled', () => handled >= quiet.committed + loud.committed, { timeoutMs: 15_000 })
      // The worker is idle now: single sends wake it by notification, past the stuck session,
      // each well before its next poll (a minute away).
      const wakeMs: number[] = []
      for (let i = 0; i < 10; i++) {
        const target = handled + 1
        const sentAt = performance.now()
        await t.postbox.send('hard', { paced: i })
        await waitFor('woken before the poll', () => handled >= target, { timeoutMs: 10_000, intervalMs: 2 })
        wakeMs.push(Math.round(performance.now() - sentAt))
        await new Promise((resolve) => setTimeout(resolve, 30))
      }
      sampled = true
      await sampling
      await worker.stop()
      await healthy.query('SELECT 1')
      const [usage] = await t.sql<{ u: number }>('SELECT pg_notification_queue_usage()::float8 AS u')
      console.log(`stuck listener: ${JSON.stringify({ withoutConsumer: quiet, withConsumer: loud, notifications: heard, handled, wakeMs, queueUsage: usage?.u, listenStates: [...listenStates] })}`)

      expect(quiet).toMatchObject({ failed: 0 })
      expect(loud).toMatchObject({ failed: 0 })
      expect(quiet.committed).toBeGreaterThan(100)
      expect(loud.committed).toBeGreaterThan(100)
      expect(heardQuiet).toBe(0)
      // Wake-ups went out while the stuck session sat there, and idle workers still woke (each
      // paced send was handled above, with the poll a minute away).
      expect(heard).toBeGreaterThan(0)
      expect(wakeMs).toHaveLength(10)
      // postbox's own LISTEN connection never idles in a transaction.
      expect([...listenStates].filter((s) => s?.startsWith('idle in transaction'))).toEqual([]) // 'starting' (Postgres 17+) is fine
    } finally {
      await stuck.query('ROLLBACK').catch(() => {})
      await Promise.all([stuck.end(), healthy.end()])
      await consumer.close()
    }
  })
})
