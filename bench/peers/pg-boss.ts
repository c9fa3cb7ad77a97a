import { PgBoss } from 'pg-boss'
import type { BenchDb } from '../bench-db.js'
import { CONCURRENCY, POOL_SIZE } from '../bench-db.js'
import type { Contender } from '../contender.js'
import type { CpuReading } from '../cpu.js'
import { settle, timeDrain } from '../end-to-end.js'
import { sleep, throughput } from '../measure.js'

// pg-boss with its documented fast paths switched on (both are off by default): LISTEN/NOTIFY
// wake-ups (`useListenNotify` on the instance, `notify` on the queue) and burst fetching while
// batches come back full (`burstWhenBatchFull`), batches of 50, 10 workers in the process
// (`localConcurrency`), the shortest allowed poll (0.5 s), a pool of 10. A batch handler gets up
// to 50 jobs and their completion is one statement. Its tables live in a schema of their own.

const PAYLOAD = { to: 'someone@example.com', template: 'welcome', n: 42 }

/** The work() options the bench runs pg-boss with, as docs/performance.md states them. */
export const PG_BOSS_WORK_OPTIONS = {
  batchSize: 50,
  localConcurrency: CONCURRENCY,
  burstWhenBatchFull: true,
  pollingIntervalSeconds: 0.5,
} as const

export async function pgBoss(db: BenchDb, readCpu: () => CpuReading): Promise<Contender> {
  const schema = `pgboss_bench_${process.pid}`
  const boss = new PgBoss({ connectionString: db.url, schema, max: POOL_SIZE, useListenNotify: true })
  boss.on('error', (error) => process.stderr.write(`pg-boss: ${String(error)}\n`))
  await boss.start()
  const jobs = `${schema}.job`
  let queues = 0

  /** A fresh queue per scenario, so no scenario sees another's completed jobs. */
  const queue = async () => {
    const name = `bench-${++queues}`
    await boss.createQueue(name, { notify: true })
    return name
  }
  const work = (name: string, onJob: (data: unknown) => void) =>
    boss.work(name, PG_BOSS_WORK_OPTIONS, async (batch) => {
      for (const job of batch) onJob(job.data)
    })
  const purge = async (name: string) => {
    await boss.deleteQueue(name)
    await db.sql(`VACUUM ANALYZE ${jobs}`)
  }

  return {
    name: 'pg-boss',

    async endToEnd(count, observer) {
      const name = await queue()
      const batch = Array.from({ length: 1000 }, () => ({ data: PAYLOAD }))
      for (let sent = 0; sent < count; sent += 1000) await boss.insert(name, batch.slice(0, Math.min(1000, count - sent)))
      await settle(db, [jobs])
      const result = await timeDrain(readCpu, count, async (handled) => {
        await work(name, () => handled())
        return () => boss.offWork(name, { wait: true })
      }, observer)
      const [done] = await db.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${jobs} WHERE name = $1 AND state = 'completed'`, [name])
      if (done?.n !== count) throw new Error(`pg-boss end-to-end completed ${done?.n} of ${count} jobs`)
      await purge(name)
      return result
    },

    async sendWithConsumer(durationMs) {
      const name = await queue()
      await work(name, () => {})
      await sleep(200)
      const rate = await throughput(CONCURRENCY, durationMs, async () => {
        await boss.send(name, PAYLOAD)
        return 1
      })
      await boss.offWork(name, { wait: true })
      await purge(name)
      return rate
    },

    async sendBatches(durationMs) {
      const name = await queue()
      const batch = Array.from({ length: 1000 }, () => ({ data: PAYLOAD }))
      const rate = await throughput(CONCURRENCY, durationMs, async () => (await boss.insert(name, batch))?.length ?? batch.length)
      await purge(name)
      return rate
    },

    async wakeUpLatency(sends, gapMs) {
      const name = await queue()
      const latencies: number[] = []
      await work(name, (data) => latencies.push(performance.now() - (data as { t: number }).t))
      await sleep(300)
      for (let i = 0; i < sends; i++) {
        await boss.send(name, { t: performance.now() })
        await sleep(gapMs)
      }
      while (latencies.length < sends) await sleep(10)
      await boss.offWork(name, { wait: true })
      await purge(name)
      return latencies
    },

    async close() {
      await boss.stop({ graceful: true, close: true })
      await db.sql(`DROP SCHEMA ${schema} CASCADE`).catch(() => {})
    },
  }
}
