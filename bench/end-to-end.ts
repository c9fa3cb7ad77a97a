import type { BenchDb } from './bench-db.js'
import type { DrainObserver, EndToEndRun } from './contender.js'
import { cpuBetween, type CpuReading } from './cpu.js'

/** A worker started for a drain: how to stop it once every message was handled. */
export type StartedWorker = () => Promise<void>

/**
 * Vacuums the given tables and checkpoints, so that every contender starts its drain from the
 * same state: no dead rows of the preload, and no full-page images owed to an earlier
 * checkpoint by someone else's writes.
 */
export async function settle(db: BenchDb, tables: readonly string[]): Promise<void> {
  for (const table of tables) await db.sql(`VACUUM ANALYZE ${table}`)
  await db.sql('CHECKPOINT').catch(() => {}) // needs superuser or pg_checkpoint on DATABASE_URL
}

/**
 * Times a drain of `count` preloaded messages: from calling `start` (which starts a worker whose
 * handler calls `handled` once per message) until the worker it returned has stopped, pending
 * completions written. Also reads CPU per message on both sides; `observer` is called around it.
 */
export async function timeDrain(
  readCpu: () => CpuReading,
  count: number,
  start: (handled: () => void) => Promise<StartedWorker>,
  observer?: DrainObserver,
): Promise<EndToEndRun> {
  let done = 0
  let firstHandlerMs = Number.NaN
  let finish = () => {}
  const all = new Promise<void>((resolve) => (finish = resolve))
  await observer?.before()
  const before = readCpu()
  const started = performance.now()
  const stop = await start(() => {
    if (done === 0) firstHandlerMs = performance.now() - started
    if (++done === count) finish()
  })
  await all
  await stop()
  const elapsed = performance.now() - started
  const cpu = cpuBetween(before, readCpu())
  await observer?.after()
  return {
    rate: (count / elapsed) * 1000,
    firstHandlerMs,
    nodeCpuUs: cpu.nodeUs / count,
    postgresCpuUs: cpu.postgresUs === undefined ? undefined : cpu.postgresUs / count,
    postgresBackendsUs: cpu.postgres === undefined ? undefined : cpu.postgres.backends / count,
  }
}
