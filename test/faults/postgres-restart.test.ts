import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Postbox } from '../../src/index.js'
import { startChildWorker, type ChildWorker } from '../support/child-worker.js'
import { createLedger, ledgerReport, startProducer } from '../support/ledger.js'
import { embeddedPostgresAvailable, startRestartablePostgres, type RestartablePostgres } from '../support/restartable-postgres.js'
import { uniqueSchemaName } from '../support/test-schema.js'
import { waitFor } from '../support/wait-for.js'

// Restart Postgres in immediate mode (a crash: no checkpoint, every backend killed, WAL replay on
// start) twice while a producer sends in transactions to two queues: one handled by two worker
// processes in lease mode, one by a worker process in transactional mode. Nobody restarts the
// app. This file runs its own server, with synchronous_commit on, so that "committed" means what
// it says.
const available = await embeddedPostgresAvailable()
const CONCURRENCY = 5
const RESTARTS = 2

let server: RestartablePostgres
let pool: pg.Pool
const schema = uniqueSchemaName('restart')

beforeAll(async () => {
  if (!available) return
  server = await startRestartablePostgres()
  pool = new pg.Pool({ connectionString: server.connectionString, max: 10 })
  pool.on('error', () => {}) // the server goes away on purpose
})

afterAll(async () => {
  await pool?.end()
  await server?.stop()
})

const effects = (child: ChildWorker) => child.events.filter((e) => e.event === 'effect').length
const listening = (child: ChildWorker) => child.events.filter((e) => e.event === 'listening').length

describe.skipIf(!available)('fault: Postgres restarted in immediate mode under load', { timeout: 90_000 }, () => {
  it('no committed message lost, no rolled-back one seen, producers and workers resume by themselves', async () => {
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
    try {
      for (let restart = 0; restart < RESTARTS; restart++) {
        const before = handled()
        await waitFor('load before the restart', () => handled() >= before + 100, { timeoutMs: 15_000 })
        const restartedAt = Date.now()
        await server.restart()
        const after = handled()
        // Both workers reconnect their LISTEN connection and handle new messages, unassisted.
        await waitFor('workers handling again', () =>
          workers.every((child) => listening(child) >= restart + 2) && handled() >= after + 60, { timeoutMs: 20_000 })
        recoveries.push(Date.now() - restartedAt)
      }
      const stats = await producer.stop()
      const [report, tx] = await waitFor('every committed message handled', async () => {
        const reports = await Promise.all([ledgerReport(pool, schema, ['restart']), ledgerReport(pool, schema, ['restart-tx'])])
        return reports.every((r) => r.lost === 0) ? reports : undefined
      }, { timeoutMs: 20_000, intervalMs: 200 })
      console.log(`postgres restart: ${JSON.stringify({ lease: { ...report, lostIds: undefined }, transactional: { ...tx, lostIds: undefined }, producer: { committed: stats.committed.length, rolledBack: stats.rolledBack.length, failures: stats.failures }, recoveryMs: recoveries })}`)

      for (const r of [report!, tx!]) expect(r).toMatchObject({ lost: 0, unexpected: 0, dead: 0 })
      // Lease mode: a crash can duplicate only deliveries whose effect committed and whose ack did
      // not: handlers in flight plus finished ones whose ack was not yet written, in each worker.
      expect(report!.duplicates).toBeLessThanOrEqual(RESTARTS * leaseWorkers * 2 * CONCURRENCY)
      // Transactional mode: the effect commits with the ack or not at all.
      expect(tx!.duplicates).toBe(0)
      // Every send whose COMMIT the producer saw survived the crash (with its ledger row).
      const { rows } = await pool.query<{ missing: number; seen: number }>(
        `SELECT (SELECT count(*)::int FROM unnest($1::bigint[]) c(id) WHERE NOT EXISTS (SELECT 1 FROM "${schema}".ledger_sent s WHERE s.id = c.id)) AS missing,
                (SELECT count(*)::int FROM "${schema}".ledger_handled WHERE id = ANY ($2)) AS seen`,
        [stats.committed, stats.rolledBack])
      expect(rows[0]).toEqual({ missing: 0, seen: 0 })
      expect(stats.rolledBack.length).toBeGreaterThan(0)
      // The apps were never restarted.
      for (const child of workers) expect(child.process.exitCode).toBeNull()
    } finally {
      await producer.stop()
      for (const child of workers) child.kill('SIGKILL')
      await Promise.all(workers.map((child) => child.exited))
      await postbox.close()
    }
  })
})
