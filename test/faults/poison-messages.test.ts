import { describe, expect, it } from 'vitest'
import { startChildWorker } from '../support/child-worker.js'
import { deliveriesNotAcked, drainedLedgerReport, duplicatesAmong, unackedIds } from '../support/fault-bounds.js'
import { createLedger, sendRecorded, startProducer } from '../support/ledger.js'
import { superviseChildWorker } from '../support/supervisor.js'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// A poison message, one that always throws or one that kills its worker process, reaches its
// dead letter after maxAttempts (3 here) while the other messages keep flowing.
const t = useTestSchema()
const MAX_ATTEMPTS = 3

async function deadRows(deadQueue: string) {
  return t.sql<{ id: string; original_attempt: number; last_error: string }>(
    `SELECT id::text, original_attempt, last_error FROM "${t.schema}".messages WHERE queue = $1 ORDER BY id`, [deadQueue])
}

// Each crash starts a new Node process: seconds apiece on a loaded 2-core machine, so the waits are long.
describe('fault: poison messages', { timeout: 180_000 }, () => {
  it('one that always throws is dead-lettered after maxAttempts; the rest are handled once each', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('throws', { maxAttempts: MAX_ATTEMPTS, backoff: { type: 'fixed', base: '50ms' } })
    const poison = await sendRecorded(t.postbox, t.pool, t.schema, 'throws', [{ poison: 'throw' }, { poison: 'throw' }])
    const child = await startChildWorker({ DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'throws', HANDLER: 'ledger', HANDLER_MS: '5', CONCURRENCY: '4' })
    const producer = startProducer({ postbox: t.postbox, pool: t.pool, schema: t.schema, queues: ['throws'], batch: 5, intervalMs: 30 })
    try {
      const dead = await waitFor('poison dead-lettered', async () => {
        const rows = await deadRows('throws.dead')
        return rows.length === poison.length ? rows : undefined
      }, { timeoutMs: 10_000, intervalMs: 50 })
      // Good messages kept flowing meanwhile, and keep flowing after.
      const before = child.events.filter((e) => e.event === 'effect').length
      await child.next(() => child.events.filter((e) => e.event === 'effect').length >= before + 20)
      const stats = await producer.stop()
      const report = await drainedLedgerReport(t.pool, t.schema, ['throws'])
      console.log(`poison (throws): ${JSON.stringify({ ...report, lostIds: undefined, good: stats.committed.length })}`)
      expect(dead.map((d) => d.id)).toEqual(poison)
      expect(dead.every((d) => d.original_attempt === MAX_ATTEMPTS && d.last_error.includes('poison message'))).toBe(true)
      expect(report).toMatchObject({ sent: poison.length + stats.committed.length, handled: stats.committed.length, dead: poison.length })
      expect(report).toMatchObject({ lost: 0, duplicates: 0, unexpected: 0 })
      expect(child.events.filter((e) => e.event === 'started' && poison.includes(e.id as string))).toHaveLength(poison.length * MAX_ATTEMPTS)
    } finally {
      await producer.stop()
      child.kill('SIGKILL')
      await child.exited
    }
  })

  it('one that crashes its worker process is dead-lettered after maxAttempts crashes; the rest are handled', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('crashes', { maxAttempts: MAX_ATTEMPTS, visibilityTimeout: '1s', backoff: { type: 'fixed', base: '50ms' } })
    const concurrency = 3
    // Per crash, the deliveries the dead process left unacked, counted before its replacement starts.
    const unacked: string[][] = []
    const workers = await superviseChildWorker({
      DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'crashes', HANDLER: 'ledger', HANDLER_MS: '5', CONCURRENCY: String(concurrency),
    }, async () => void unacked.push(await unackedIds(t.pool, t.schema, ['crashes'])))
    const producer = startProducer({ postbox: t.postbox, pool: t.pool, schema: t.schema, queues: ['crashes'], batch: 3, intervalMs: 50 })
    try {
      const [poison] = await sendRecorded(t.postbox, t.pool, t.schema, 'crashes', [{ poison: 'crash' }])
      const dead = await waitFor('poison dead-lettered', async () => {
        const rows = await deadRows('crashes.dead')
        return rows.some((r) => r.id === poison) ? rows : undefined
      }, { timeoutMs: 120_000, intervalMs: 100 })
      const crashes = workers.events().filter((e) => e.event === 'crashing')
      // Good messages flow again after the last crash.
      const current = workers.children.at(-1)!
      await current.next(() => current.events.filter((e) => e.event === 'effect').length >= 10)
      const stats = await producer.stop()
      const report = await drainedLedgerReport(t.pool, t.schema, ['crashes'])
      await workers.stop() // every process's events read to the end
      const notAcked = deliveriesNotAcked(workers.children)
      // Collateral: good messages leased by the process the poison kills come back with it when
      // their leases run out together, are claimed together again, and can share its fate. Each
      // was unacked at the crash that ended its last attempt, and they are dead-lettered, not lost.
      const collateral = (await deadRows('crashes.dead')).filter((r) => r.id !== poison)
      const cutOff = unacked.map((ids) => ids.filter((id) => id !== poison))
      console.log(`poison (crashes): ${JSON.stringify({ ...report, lostIds: undefined, crashes: crashes.length, processes: workers.children.length, good: stats.committed.length, collateral: collateral.length, unackedAtCrashes: cutOff.map((ids) => ids.length), deliveriesNotAcked: notAcked })}`)
      expect(dead.find((r) => r.id === poison)).toMatchObject({ original_attempt: MAX_ATTEMPTS, last_error: 'lease expired on the last attempt' })
      expect(crashes.map((e) => e.attempt)).toEqual([1, 2, 3])
      expect(unacked).toHaveLength(crashes.length)
      expect(unacked.every((ids) => ids.includes(poison!))).toBe(true)
      expect(collateral.map((r) => r.id).every((id) => cutOff.at(-1)!.includes(id))).toBe(true)
      expect(collateral.every((r) => r.original_attempt === MAX_ATTEMPTS && r.last_error === 'lease expired on the last attempt')).toBe(true)
      expect(report).toMatchObject({ dead: 1 + collateral.length, lost: 0, unexpected: 0 })
      // A collateral message may also have been handled once before its ack was lost to a crash.
      expect(report.handled).toBeGreaterThanOrEqual(stats.committed.length - collateral.length)
      expect(report.handled).toBeLessThanOrEqual(stats.committed.length)
      // A crash can duplicate only the good deliveries the crashed process left unacked (and, on a
      // loaded machine, a delivery whose 1 s lease ran out before its ack): counted, not guessed.
      expect(report.duplicates).toBeLessThanOrEqual(notAcked)
      expect(await duplicatesAmong(t.pool, t.schema, cutOff.flat())).toBeLessThanOrEqual(cutOff.flat().length)
    } finally {
      await producer.stop()
      await workers.stop()
    }
  })
})
