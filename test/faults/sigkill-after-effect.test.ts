import { describe, expect, it } from 'vitest'
import { startChildWorker } from '../support/child-worker.js'
import { drainedLedgerReport } from '../support/fault-bounds.js'
import { createLedger, sendRecorded } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'

// SIGKILL a worker process after its handler wrote its effect but before the ack. In lease mode
// the effect is committed and the message is delivered again: at most one duplicate per kill.
// In transactional mode the effect and the ack share one transaction, so the kill rolls the
// effect back and the redelivery is the only handling: no duplicate at all.
const t = useTestSchema()
const KILLS = 3

async function killAfterEffect(queue: string, transactional: boolean) {
  await t.postbox.createQueue(queue, { visibilityTimeout: '1s', maxAttempts: 100 })
  await sendRecorded(t.postbox, t.pool, t.schema, queue, Array.from({ length: 20 }, (_, n) => ({ n })))
  const env = {
    DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: queue, HANDLER: 'ledger', CONCURRENCY: '1', TRANSACTIONAL: transactional ? '1' : '0',
  }
  // KILLS processes at once, one delivery each: each writes its effect, hangs, and is killed.
  const hanging = await Promise.all(Array.from({ length: KILLS }, () => startChildWorker({ ...env, HANG_AFTER_EFFECT: '1' })))
  const killed: string[] = []
  try {
    for (const child of hanging) killed.push((await child.next((e) => e.event === 'effect')).id as string)
  } finally {
    for (const child of hanging) child.kill('SIGKILL')
    await Promise.all(hanging.map((child) => child.exited))
  }
  const drainer = await startChildWorker(env)
  try {
    const report = await drainedLedgerReport(t.pool, t.schema, [queue])
    const { rows } = await t.pool.query<{ id: string; handlings: number; last_attempt: number }>(
      `SELECT id::text, count(*)::int AS handlings, max(attempt) AS last_attempt FROM "${t.schema}".ledger_handled
       WHERE id = ANY ($1) GROUP BY id`, [killed])
    console.log(`sigkill after effect (${transactional ? 'transactional' : 'lease'} mode): ${JSON.stringify({ ...report, lostIds: undefined, kills: KILLS })}`)
    return { report, killed: rows }
  } finally {
    drainer.kill('SIGKILL')
    await drainer.exited
  }
}

describe('fault: SIGKILL after the handler committed, before the ack', { timeout: 90_000 }, () => {
  it('lease mode: nothing lost, at most one duplicate per kill', async () => {
    await createLedger(t.pool, t.schema)
    const { report, killed } = await killAfterEffect('after-lease', false)
    expect(report).toMatchObject({ sent: 20, handled: 20, lost: 0, unexpected: 0, dead: 0 })
    expect(report.duplicates).toBeGreaterThanOrEqual(1) // the fault really hit between effect and ack
    expect(report.duplicates).toBeLessThanOrEqual(KILLS)
    // Each killed delivery's effect stayed, and the message was handled again on a later attempt.
    expect(killed.every((k) => k.handlings >= 2 && k.last_attempt >= 2)).toBe(true)
  })

  it('transactional mode: nothing lost, no duplicate', async () => {
    await createLedger(t.pool, t.schema)
    const { report, killed } = await killAfterEffect('after-tx', true)
    expect(report).toMatchObject({ sent: 20, handled: 20, handlings: 20, duplicates: 0, lost: 0, unexpected: 0, dead: 0 })
    // The killed deliveries' effects were rolled back; the only handling is a later attempt.
    expect(killed.length).toBeGreaterThan(0)
    expect(killed.every((k) => k.handlings === 1 && k.last_attempt >= 2)).toBe(true)
  })
})
