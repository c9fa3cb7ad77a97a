import { describe, expect, it } from 'vitest'
import { terminateBackends, withApplicationName, withSessionSettings } from '../support/backends.js'
import { startChildWorker } from '../support/child-worker.js'
import { drainedLedgerReport } from '../support/fault-bounds.js'
import { createLedger, sendRecorded } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'

// A transactional handler's connection lost while the handler runs (its backend terminated, or
// idle_in_transaction_session_timeout firing while the handler idles in its transaction): the
// effect written through ctx.tx is rolled back with the transaction, the worker process survives
// (pg emits 'error' on a checked-out client; an unheard one would end the process), and the
// message is retried: exactly one effect in the end.
const t = useTestSchema()

describe('fault: a transactional handler loses its connection', { timeout: 90_000 }, () => {
  it('the connection of a running transactional handler is terminated: the process survives and the message is handled once', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('tx-terminated', { visibilityTimeout: '1s', maxAttempts: 100, backoff: { type: 'fixed', base: '100ms' } })
    const [id] = await sendRecorded(t.postbox, t.pool, t.schema, 'tx-terminated', [{ firstAttemptSleepMs: 1_500 }])
    const appName = `tx-lost-${t.schema}`
    const child = await startChildWorker({
      DATABASE_URL: withApplicationName(t.url, appName), SCHEMA: t.schema, QUEUE: 'tx-terminated', HANDLER: 'ledger', TRANSACTIONAL: '1', CONCURRENCY: '2',
    })
    try {
      await child.next((e) => e.event === 'started' && e.id === id)
      expect(await terminateBackends(t.pool, appName)).toBeGreaterThan(0)
      await Promise.race([child.exited, new Promise((resolve) => setTimeout(resolve, 1_500))])
      expect(child.process.exitCode, 'the worker process died of an uncaught error event').toBeNull()
      const report = await drainedLedgerReport(t.pool, t.schema, ['tx-terminated'])
      expect(report).toMatchObject({ handled: 1, handlings: 1, duplicates: 0 })
    } finally {
      child.kill('SIGKILL')
      await child.exited
    }
  })

  it('idle_in_transaction_session_timeout ends a transactional handler\'s session: the process survives, the retry is the only effect', async () => {
    await createLedger(t.pool, t.schema)
    await t.postbox.createQueue('tx-idle', { visibilityTimeout: '5s', maxAttempts: 100, backoff: { type: 'fixed', base: '100ms' } })
    const [id] = await sendRecorded(t.postbox, t.pool, t.schema, 'tx-idle', [{ firstAttemptSleepMs: 800 }])
    const child = await startChildWorker({
      DATABASE_URL: withSessionSettings(t.url, { idle_in_transaction_session_timeout: '300ms' }), SCHEMA: t.schema, QUEUE: 'tx-idle',
      HANDLER: 'ledger', TRANSACTIONAL: '1', CONCURRENCY: '2',
    })
    try {
      await child.next((e) => e.event === 'started' && e.id === id)
      await Promise.race([child.exited, new Promise((resolve) => setTimeout(resolve, 1_500))])
      expect(child.process.exitCode, 'the worker process died of an uncaught error event').toBeNull()
      const report = await drainedLedgerReport(t.pool, t.schema, ['tx-idle'])
      expect(report).toMatchObject({ handled: 1, handlings: 1, duplicates: 0 })
      const [row] = await t.sql<{ attempt: number }>(`SELECT attempt FROM "${t.schema}".ledger_handled WHERE id = $1`, [id])
      expect(row?.attempt).toBe(2)
    } finally {
      child.kill('SIGKILL')
      await child.exited
    }
  })
})
