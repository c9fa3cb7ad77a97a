import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { withSessionSettings } from '../support/backends.js'
import { startChildWorker } from '../support/child-worker.js'
import { drainedLedgerReport } from '../support/fault-bounds.js'
import { createLedger, sendRecorded } from '../support/ledger.js'
import { useTestSchema } from '../support/test-schema.js'

// Workers whose sessions run with a low statement_timeout and idle_in_transaction_session_timeout
// (set on every connection through `options` in the connection string). A queue that held the
// claim's transaction open while the handler ran would lose its row locks to the idle timeout and
// hand the message to a second consumer; postbox commits the claim as a lease, so handlers that
// outlive both timeouts are never duplicated. (Transactional handlers hold a transaction by
// design, so the idle timeout must exceed their idle time; one that idles past it is in
// transactional-connection-loss.test.ts.)
const t = useTestSchema()
const TIMEOUTS = { statement_timeout: '500ms', idle_in_transaction_session_timeout: '300ms' }

describe('fault: low statement_timeout and idle_in_transaction_session_timeout', { timeout: 90_000 }, () => {
  it('lease mode: handlers that run longer than both timeouts, in two competing processes, are never duplicated', async () => {
    const url = withSessionSettings(t.url, TIMEOUTS)
    // The settings really reach the server.
    const probe = new pg.Client({ connectionString: url })
    await probe.connect()
    const shown = await probe.query<{ s: string; i: string }>(`SELECT current_setting('statement_timeout') AS s, current_setting('idle_in_transaction_session_timeout') AS i`)
    await probe.end()
    expect(shown.rows[0]).toEqual({ s: '500ms', i: '300ms' })

    await createLedger(t.pool, t.schema)
    // Handlers of 3 s outlive both timeouts many times over and need one lease extension each,
    // due at half the 5 s lease. With 1 s leases (and 0.8 s handlers), then 2 s (and 1.2 s), a
    // lease keeper starved by a loaded machine (load 15-30 on two cores, the suite's files in
    // parallel) was now and then too late, and a lease that runs out is a redelivery by design.
    await t.postbox.createQueue('timeouts', { visibilityTimeout: '5s', maxAttempts: 100 })
    const sent = await sendRecorded(t.postbox, t.pool, t.schema, 'timeouts', Array.from({ length: 40 }, () => ({ sleepMs: 3_000 })))
    const env = {
      DATABASE_URL: url, SCHEMA: t.schema, QUEUE: 'timeouts', HANDLER: 'ledger', CONCURRENCY: '10', VISIBILITY_TIMEOUT: '5s',
    }
    // Two competing worker processes.
    const workers = await Promise.all([startChildWorker(env), startChildWorker(env)])
    try {
      const report = await drainedLedgerReport(t.pool, t.schema, ['timeouts'])
      const [attempts] = await t.sql<{ max: number }>(`SELECT max(attempt) AS max FROM "${t.schema}".ledger_handled WHERE id = ANY ($1)`, [sent])
      const events = workers.flatMap((w) => w.events)
      console.log(`session timeouts: ${JSON.stringify({ ...report, lostIds: undefined, maxAttempt: attempts?.max, leaseLost: events.filter((e) => e.event === 'leaseLost').length, errors: events.filter((e) => e.event === 'error').length })}`)
      expect(report).toMatchObject({ sent: 40, handled: 40, handlings: 40, duplicates: 0, lost: 0, unexpected: 0, dead: 0 })
      // No delivery was ever released or taken over: every message was handled on its first attempt.
      expect(attempts?.max).toBe(1)
      expect(events.filter((e) => e.event === 'leaseLost' || e.event === 'retried')).toEqual([])
      for (const w of workers) expect(w.process.exitCode).toBeNull()
    } finally {
      for (const w of workers) w.kill('SIGKILL')
      await Promise.all(workers.map((w) => w.exited))
    }
  })
})
