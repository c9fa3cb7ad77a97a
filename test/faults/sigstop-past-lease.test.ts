import { describe, expect, it } from 'vitest'
import { startChildWorker } from '../support/child-worker.js'
import { createLedger, ledgerReport, sendRecorded } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// SIGSTOP a worker process mid-handler until its lease runs out, let another consumer claim the
// message, then SIGCONT. The frozen worker's late ack is refused (fenced by the lease) and the
// newer delivery's ack wins. In lease mode the frozen handler's own effect still lands (one
// duplicate, as at-least-once allows); in transactional mode it is rolled back with the ack.
const t = useTestSchema()

async function freezePastLease(queue: string, transactional: boolean) {
  await t.postbox.createQueue(queue, { visibilityTimeout: '1s', maxAttempts: 100 })
  const [id] = await sendRecorded(t.postbox, t.pool, t.schema, queue, [{ n: 1 }])
  const child = await startChildWorker({
    DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: queue, HANDLER: 'ledger', HANDLER_MS: '400', CONCURRENCY: '1',
    TRANSACTIONAL: transactional ? '1' : '0',
  })
  try {
    await child.next((e) => e.event === 'started' && e.id === id)
    child.kill('SIGSTOP')
    const frozenAt = Date.now()
    // The lease runs out while the process is frozen; a newer delivery takes the message.
    const [newer] = await waitFor('claimed again', async () => {
      const got = await t.postbox.receive(queue, { visibilityTimeout: '30s' })
      return got.length > 0 ? got : undefined
    }, { timeoutMs: 5_000, intervalMs: 50 })
    const reclaimedAfterMs = Date.now() - frozenAt
    expect(newer).toMatchObject({ id, attempt: 2 })
    child.kill('SIGCONT')
    // The frozen delivery resumes, finishes its handler, and its ack is refused.
    await child.next((e) => e.event === 'leaseLost' && e.id === id)
    expect(child.events.some((e) => e.event === 'completed')).toBe(false)
    // The newer delivery still holds the message: its effect and ack go through.
    await t.sql(`INSERT INTO "${t.schema}".ledger_handled (id, attempt, pid, transactional) VALUES ($1, 2, $2, false)`, [id, process.pid])
    await t.postbox.ack(newer!)
    const [left] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages WHERE id = $1`, [id])
    expect(left?.n).toBe(0)
    const report = await ledgerReport(t.pool, t.schema, [queue])
    const attempts = (await t.sql<{ attempt: number }>(`SELECT attempt FROM "${t.schema}".ledger_handled WHERE id = $1 ORDER BY attempt`, [id])).map((r) => r.attempt)
    console.log(`sigstop past lease (${transactional ? 'transactional' : 'lease'} mode): ${JSON.stringify({ ...report, lostIds: undefined, attempts, reclaimedAfterMs })}`)
    return { report, attempts }
  } finally {
    child.kill('SIGKILL')
    await child.exited
  }
}

describe('fault: SIGSTOP past the lease, then SIGCONT', { timeout: 90_000 }, () => {
  it('lease mode: the late ack is refused, the newer delivery acks; the frozen effect is the one allowed duplicate', async () => {
    await createLedger(t.pool, t.schema)
    const { report, attempts } = await freezePastLease('frozen-lease', false)
    expect(report).toMatchObject({ sent: 1, handled: 1, lost: 0, unexpected: 0, dead: 0 })
    expect(report.duplicates).toBeLessThanOrEqual(1)
    expect(attempts.at(-1)).toBe(2)
  })

  it('transactional mode: the late ack is refused and its effect rolled back: no duplicate', async () => {
    await createLedger(t.pool, t.schema)
    const { report, attempts } = await freezePastLease('frozen-tx', true)
    expect(report).toMatchObject({ sent: 1, handled: 1, handlings: 1, duplicates: 0, lost: 0, unexpected: 0, dead: 0 })
    expect(attempts).toEqual([2])
  })
})
