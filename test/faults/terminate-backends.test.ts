import { describe, expect, it } from 'vitest'
import { terminateBackends, withApplicationName } from '../support/backends.js'
import { startChildWorker } from '../support/child-worker.js'
import { deliveriesNotAcked, drainedLedgerReport, unackedAtFault } from '../support/fault-bounds.js'
import { createLedger, ledgerReport, sendRecorded, startProducer } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// Terminate a worker process's backends with pg_terminate_backend: first only its LISTEN
// connection, then every connection it has. The worker polls only once a minute here, so prompt
// handling afterwards proves the notifier came back by itself, and nothing needs a restart.
const t = useTestSchema()
const SLOW_POLL = '60s'

async function maxLatencyMs(queue: string, since: number): Promise<number> {
  const [row] = await t.sql<{ ms: number | null }>(
    `SELECT max(extract(epoch FROM h.handled_at - s.sent_at) * 1000)::float8 AS ms
     FROM "${t.schema}".ledger_sent s JOIN "${t.schema}".ledger_handled h USING (id)
     WHERE s.queue = $1 AND s.id > $2`, [queue, since])
  return row?.ms ?? Number.POSITIVE_INFINITY
}

describe('fault: terminated backends', { timeout: 90_000 }, () => {
  it('the LISTEN backend: the notifier reconnects and wake-ups resume, nothing lost', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('listen', { maxAttempts: 100 })
    const child = await startChildWorker({
      DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'listen', HANDLER: 'ledger', CONCURRENCY: '5', POLL_INTERVAL: SLOW_POLL,
    })
    try {
      await sendRecorded(t.postbox, t.pool, t.schema, 'listen', [1, 2, 3])
      await waitFor('handled before', async () => (await ledgerReport(t.pool, t.schema, ['listen'])).lost === 0, { timeoutMs: 5_000 })
      const killedAt = Date.now()
      expect(await terminateBackends(t.pool, `postbox:${t.schema}:listen`)).toBe(1)
      await child.next(() => child.events.filter((e) => e.event === 'listening').length >= 2, 10_000)
      const recoveryMs = Date.now() - killedAt
      // Sends after the reconnect are handled promptly, by notification (the poll is a minute away).
      const [last] = await t.sql<{ id: string }>(`SELECT coalesce(max(id), 0)::text AS id FROM "${t.schema}".ledger_sent`)
      for (let i = 0; i < 10; i++) {
        await sendRecorded(t.postbox, t.pool, t.schema, 'listen', [{ i }])
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const report = await drainedLedgerReport(t.pool, t.schema, ['listen'], 5_000)
      const latency = await maxLatencyMs('listen', Number(last!.id))
      console.log(`terminate LISTEN backend: ${JSON.stringify({ ...report, lostIds: undefined, recoveryMs, maxLatencyAfterMs: Math.round(latency) })}`)
      expect(report).toMatchObject({ sent: 13, handled: 13, duplicates: 0, lost: 0, unexpected: 0 })
      expect(latency).toBeLessThan(3_000)
      expect(child.process.exitCode).toBeNull()
    } finally {
      child.kill('SIGKILL')
      await child.exited
    }
  })

  it('every backend of a worker, three times under load: it recovers by itself and keeps handling', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('all', { maxAttempts: 100, backoff: { type: 'fixed', base: '100ms' } })
    const appName = `fault-all-${t.schema}`
    const concurrency = 5
    const child = await startChildWorker({
      DATABASE_URL: withApplicationName(t.url, appName), SCHEMA: t.schema, QUEUE: 'all', HANDLER: 'ledger', HANDLER_MS: '20',
      // A delivery whose ack or nack was cut off comes back when its lease (1 s) runs out; no
      // notification announces that, so an idle worker finds it on its next poll.
      CONCURRENCY: String(concurrency), POLL_INTERVAL: '1s',
    })
    const producer = startProducer({ postbox: t.postbox, pool: t.pool, schema: t.schema, queues: ['all'], batch: 3, intervalMs: 30 })
    try {
      const rounds = 3
      const terminated: number[] = []
      // Per round, the deliveries unacked when the backends died (counted under a lock that held
      // claims and acks off until the termination).
      const unacked: string[][] = []
      for (let round = 0; round < rounds; round++) {
        const before = child.events.filter((e) => e.event === 'effect').length
        await child.next(() => child.events.filter((e) => e.event === 'effect').length >= before + 10, 10_000)
        unacked.push(await unackedAtFault(t.pool, t.schema, ['all'], async () => terminated.push(await terminateBackends(t.pool, appName))))
        await child.next(() => child.events.filter((e) => e.event === 'listening').length >= round + 2, 10_000)
      }
      // Still handling after the last round.
      const before = child.events.filter((e) => e.event === 'effect').length
      await child.next(() => child.events.filter((e) => e.event === 'effect').length >= before + 10, 10_000)
      const stats = await producer.stop()
      const report = await drainedLedgerReport(t.pool, t.schema, ['all'])
      expect(child.process.exitCode).toBeNull() // it was never restarted; now its events are read to the end
      child.kill('SIGKILL')
      await child.exited
      const notAcked = deliveriesNotAcked([child])
      console.log(`terminate every backend: ${JSON.stringify({ ...report, lostIds: undefined, terminated, unackedAtFaults: unacked.map((ids) => ids.length), deliveriesNotAcked: notAcked, producerFailures: stats.failures })}`)
      // Each round killed the pool's connections and the LISTEN connection.
      expect(terminated.every((n) => n >= 2)).toBe(true)
      expect(report).toMatchObject({ lost: 0, unexpected: 0, dead: 0 })
      expect(report.sent).toBe(stats.committed.length)
      // A termination can only duplicate deliveries whose effect committed and whose ack was cut
      // off: unacked when it struck, or failing while the pool reconnected. Counted, not guessed.
      expect(report.duplicates).toBeLessThanOrEqual(notAcked)
    } finally {
      await producer.stop()
      child.kill('SIGKILL')
      await child.exited
    }
  })
})
