import { EventEmitter } from 'node:events'
import { Logger, makeWorkerUtils, run, type Runner, type RunnerOptions, type Task, type WorkerEvents, type WorkerUtils } from 'graphile-worker'
import type { BenchDb } from '../bench-db.js'
import { CONCURRENCY, POOL_SIZE } from '../bench-db.js'
import type { Contender } from '../contender.js'
import type { CpuReading } from '../cpu.js'
import { settle, timeDrain } from '../end-to-end.js'
import { sleep, throughput } from '../measure.js'
import { recordingPool, type StatementLog } from '../statement-log.js'

// graphile-worker with the settings its performance page documents for throughput
// (worker.graphile.org/docs/performance): a local queue of 500 (jobs fetched and locked 500 at a
// time and handed out in the process) and batched completion and failure (delay 0: the jobs
// finished in the same tick go in one statement). Prepared statements on (its default), a pool
// of 10, 10 concurrent jobs. Its tables live in a schema of their own.

const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }
const TASK = 'bench'

/** The preset the bench runs graphile-worker with, as docs/performance.md states it. */
export const GRAPHILE_WORKER_SETTINGS = {
  concurrentJobs: CONCURRENCY,
  maxPoolSize: POOL_SIZE,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  preparedStatements: true,
}

const silent = new Logger(() => () => {})

/** graphile-worker as a contender; `log` holds its statements (diagnostics replay them), `schema` its schema. */
export async function graphileWorker(db: BenchDb, readCpu: () => CpuReading): Promise<Contender & { log: StatementLog; schema: string }> {
  const schema = `gw_bench_${process.pid}`
  const { pool, log } = recordingPool(db.url, POOL_SIZE)
  const utils: WorkerUtils = await makeWorkerUtils({ pgPool: pool, schema, logger: silent })
  await utils.migrate()
  const jobs = `${schema}._private_jobs`

  const runner = (task: Task, events?: WorkerEvents): Promise<Runner> => {
    const options: RunnerOptions = {
      ...(events ? { events } : {}),
      pgPool: pool,
      schema,
      logger: silent,
      noHandleSignals: true,
      crontab: '',
      concurrency: CONCURRENCY,
      taskList: { [TASK]: task },
      preset: { worker: GRAPHILE_WORKER_SETTINGS },
    }
    return run(options)
  }
  const purge = async () => {
    await db.sql(`DELETE FROM ${jobs}`)
    await db.sql(`VACUUM ANALYZE ${jobs}`)
  }

  return {
    name: 'graphile-worker',
    log,
    schema,

    async endToEnd(count, observer) {
      await purge()
      const batch = Array.from({ length: 1000 }, () => ({ identifier: TASK, payload: PAYLOAD }))
      for (let sent = 0; sent < count; sent += 1000) await utils.addJobs(batch.slice(0, Math.min(1000, count - sent)))
      await settle(db, [jobs])
      const claims: number[] = []
      log.start()
      const events: WorkerEvents = new EventEmitter()
      events.on('localQueue:getJobs:complete', ({ jobs: got }) => claims.push(got.length))
      const result = await timeDrain(readCpu, count, async (handled) => {
        const r = await runner(() => handled(), events)
        return () => r.stop()
      }, observer)
      const statements = log.stop()
      const [left] = await db.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${jobs}`)
      if (left?.n !== 0) throw new Error(`graphile-worker end-to-end left ${left?.n} jobs behind`)
      return { ...result, statements, claims }
    },

    async sendWithConsumer(durationMs) {
      await purge()
      const r = await runner(() => {})
      await sleep(200)
      const rate = await throughput(CONCURRENCY, durationMs, async () => {
        await utils.addJob(TASK, PAYLOAD)
        return 1
      })
      await r.stop()
      await purge()
      return rate
    },

    async sendBatches(durationMs) {
      await purge()
      const batch = Array.from({ length: 1000 }, () => ({ identifier: TASK, payload: PAYLOAD }))
      const rate = await throughput(CONCURRENCY, durationMs, async () => (await utils.addJobs(batch)).length)
      await purge()
      return rate
    },

    async wakeUpLatency(sends, gapMs) {
      await purge()
      const latencies: number[] = []
      const r = await runner((payload) => {
        latencies.push(performance.now() - (payload as { t: number }).t)
      })
      await sleep(300)
      for (let i = 0; i < sends; i++) {
        await utils.addJob(TASK, { t: performance.now() })
        await sleep(gapMs)
      }
      while (latencies.length < sends) await sleep(10)
      await r.stop()
      return latencies
    },

    async close() {
      await utils.release()
      await db.sql(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
      await pool.end()
    },
  }
}
