import { describe, expect, it } from 'vitest'
import { startChildWorker, type ChildWorker } from '../support/child-worker.js'
import { deliveriesNotAcked, drainedLedgerReport, duplicatesAmong, unackedIds } from '../support/fault-bounds.js'
import { createLedger, startProducer } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'

// SIGKILL a worker process while its handlers run, twice, with a producer sending all along.
// The killed deliveries come back after their lease (1 s) with attempt + 1; nothing is lost.
// A kill can duplicate only a delivery whose effect had committed and whose ack had not: at most
// the deliveries still unacked when the process died, counted in the database between the kill
// and the next process's start (nothing else claims meanwhile).
const t = useTestSchema()
const CONCURRENCY = 5

/** Deliveries started and not yet past `until`: 'finished' (handler done) or 'completed' (acked). */
function open(child: ChildWorker, until: 'finished' | 'completed'): string[] {
  const count = new Map<string, number>()
  for (const e of child.events) {
    if (e.event === 'started' && e.id) count.set(e.id, (count.get(e.id) ?? 0) + 1)
    if (e.event === until && e.id) count.set(e.id, (count.get(e.id) ?? 1) - 1)
  }
  return [...count].filter(([, n]) => n > 0).map(([id]) => id)
}
const running = (child: ChildWorker) => open(child, 'finished')

describe('fault: SIGKILL mid-handler', { timeout: 90_000 }, () => {
  it('loses nothing: killed deliveries return after the lease with a higher attempt, duplicates at most the unacked ones', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('mid', { visibilityTimeout: '1s', maxAttempts: 100 })
    const env = { DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'mid', HANDLER: 'ledger', HANDLER_MS: '50', CONCURRENCY: String(CONCURRENCY) }
    const producer = startProducer({ postbox: t.postbox, pool: t.pool, schema: t.schema, queues: ['mid'], batch: 5, intervalMs: 100 })
    // Per kill, the deliveries the dead process left unacked (a message may appear under both kills).
    const unacked: string[][] = []
    let runningAtKill = 0
    let child = await startChildWorker(env)
    const children = [child]
    try {
      for (let kill = 0; kill < 2; kill++) {
        const current = child
        await current.next(() => current.events.filter((e) => e.event === 'effect').length >= 15 && running(current).length > 0)
        current.kill('SIGKILL')
        await current.exited
        runningAtKill += running(current).length
        unacked.push(await unackedIds(t.pool, t.schema, ['mid']))
        child = await startChildWorker(env)
        children.push(child)
      }
      const stats = await producer.stop()
      const report = await drainedLedgerReport(t.pool, t.schema, ['mid'])
      child.kill('SIGKILL') // its events read to the end
      await child.exited
      const notAcked = deliveriesNotAcked(children)
      console.log(`sigkill mid-handler: ${JSON.stringify({ ...report, lostIds: undefined, killed: 2, runningAtKill, unackedAtKills: unacked.map((ids) => ids.length), deliveriesNotAcked: notAcked })}`)
      expect(report.sent).toBe(stats.committed.length)
      expect(report.sent).toBeGreaterThan(50)
      expect(report).toMatchObject({ lost: 0, unexpected: 0, dead: 0 })
      expect(unacked.every((ids) => ids.length > 0)).toBe(true) // each kill really cut deliveries off
      // Duplicates come from deliveries not acked: those the kills cut off (counted in the database
      // at each kill, every one handled again below), and any whose 1 s lease ran out on a loaded
      // machine; the workers' events count them all.
      expect(report.duplicates).toBeLessThanOrEqual(notAcked)
      // Those of the messages the kills cut off: at most one per kill that cut it off.
      expect(await duplicatesAmong(t.pool, t.schema, unacked.flat())).toBeLessThanOrEqual(unacked.flat().length)
      // Every delivery the kills left unacked was delivered again and handled, on a later attempt.
      const again = new Set(unacked.flat())
      const { rows } = await t.pool.query<{ id: string }>(
        `SELECT DISTINCT id::text FROM "${t.schema}".ledger_handled WHERE id = ANY ($1) AND attempt >= 2`, [[...again]])
      expect(rows).toHaveLength(again.size)
      // Rolled-back sends were never handled.
      const [seen] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".ledger_handled WHERE id = ANY ($1)`, [stats.rolledBack])
      expect(seen?.n).toBe(0)
      expect(stats.rolledBack.length).toBeGreaterThan(0)
    } finally {
      await producer.stop()
      child.kill('SIGKILL')
      await child.exited
    }
  })
})
