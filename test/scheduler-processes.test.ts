import { describe, expect, it } from 'vitest'
import { startChildWorker, type ChildWorker } from './support/child-worker.js'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

// Schedules fired by the real loop, in real time, from several processes: each tick fires once
// however many take part, including when one of them is killed, and a scheduler stopped and
// started again follows its missed-tick policy.
const t = useTestSchema()
const s = () => `"${t.schema}"`

interface Fire {
  fireAt: number
  firedAt: number
}

/** The ticks a schedule fired (from schedule_fires) and how many messages carry each tick. */
async function fires(name: string): Promise<Fire[]> {
  const rows = await t.sql<{ fire_at: Date; fired_at: Date; messages: number }>(
    `SELECT f.fire_at, f.fired_at,
            (SELECT count(*)::int FROM ${s()}.messages m WHERE m.headers->>'postbox-schedule' = f.schedule
               AND (m.headers->>'postbox-fire-at')::timestamptz = f.fire_at) AS messages
     FROM ${s()}.schedule_fires f WHERE f.schedule = $1 ORDER BY f.fire_at`, [name])
  for (const row of rows) expect(row.messages, `messages for tick ${row.fire_at.toISOString()}`).toBe(1)
  return rows.map((r) => ({ fireAt: r.fire_at.getTime(), firedAt: r.fired_at.getTime() }))
}

async function dbNow(): Promise<number> {
  return ((await t.sql<{ now: Date }>('SELECT clock_timestamp() AS now'))[0] as { now: Date }).now.getTime()
}

/** Waits until the database clock has passed `ms`. */
async function untilDbClock(ms: number): Promise<void> {
  await waitFor(`the database clock to pass ${new Date(ms).toISOString()}`, async () => (await dbNow()) >= ms, { timeoutMs: 20_000, intervalMs: 50 })
}

/** Asserts that the ticks are every second from the first to the last, none missing or twice. */
function expectEverySecond(ticks: number[]): void {
  for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!, `tick ${i} follows tick ${i - 1}`).toBe(1000)
}

describe('the scheduler loop across processes', { timeout: 180_000 }, () => {
  it('three worker processes fire every tick of a per-second schedule once, also when one is killed', async () => {
    await t.postbox.createQueue('jobs')
    await t.postbox.createQueue('ticks')
    const env = { DATABASE_URL: t.url, SCHEMA: t.schema, QUEUE: 'jobs', HANDLER: 'ok' }
    const children: ChildWorker[] = await Promise.all([1, 2, 3].map(() => startChildWorker(env)))
    try {
      // Each child runs a worker, so each takes part; this process does not (no worker, no startScheduler).
      const made = await t.postbox.schedule('every-second', { cron: '* * * * * *', queue: 'ticks', missed: 'all' })
      const first = made.nextFireAt!.getTime()
      await untilDbClock(first + 3_000)
      children[0]!.kill('SIGKILL')
      await children[0]!.exited
      await untilDbClock(first + 6_000)
      await t.postbox.unschedule('every-second')
    } finally {
      for (const child of children) child.kill('SIGTERM')
      await Promise.all(children.map((child) => child.exited))
    }
    const ticks = (await fires('every-second')).map((f) => f.fireAt)
    expect(ticks.length).toBeGreaterThanOrEqual(6)
    expectEverySecond(ticks)
  })

  it('a scheduler stopped for seconds and started again follows missed: all, latest and skip', async () => {
    await t.postbox.createQueue('restart')
    const scheduler = t.newPostbox()
    try {
      for (const missed of ['all', 'latest', 'skip'] as const) {
        await scheduler.schedule(`restart-${missed}`, { cron: '* * * * * *', queue: 'restart', missed })
      }
      let part = scheduler.startScheduler()
      await waitFor('two fires of each', async () => {
        const rows = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${s()}.schedule_fires WHERE schedule LIKE 'restart-%' GROUP BY schedule`)
        return rows.length === 3 && rows.every((r) => r.n >= 2)
      }, { timeoutMs: 10_000 })
      await part.stop()
      const stoppedAt = await dbNow()
      await untilDbClock(stoppedAt + 4_000)
      const restartedAt = await dbNow()
      part = scheduler.startScheduler()
      await waitFor('a fire after the restart for each', async () =>
        (await t.sql(`SELECT DISTINCT schedule FROM ${s()}.schedule_fires WHERE schedule LIKE 'restart-%' AND fire_at > $1`, [new Date(restartedAt + 1000)])).length === 3,
      { timeoutMs: 10_000 })
      await part.stop()

      const all = await fires('restart-all')
      expectEverySecond(all.map((f) => f.fireAt)) // the ticks of the stop were fired after it
      expect(all.some((f) => f.fireAt > stoppedAt + 1000 && f.fireAt < restartedAt - 1000 && f.firedAt >= restartedAt)).toBe(true)
      for (const missed of ['latest', 'skip']) {
        const got = await fires(`restart-${missed}`)
        // Ticks well inside the stop, which nothing ran for: none fired under latest and skip...
        const lost = got.filter((f) => f.fireAt > stoppedAt + 1000 && f.fireAt < restartedAt - 1000)
        expect(lost, missed).toEqual([])
        // ...and at most one tick from before the restart, the latest, was fired late.
        expect(got.filter((f) => f.fireAt > stoppedAt && f.fireAt <= restartedAt).length, missed).toBeLessThanOrEqual(1)
        expectEverySecond(got.filter((f) => f.fireAt > restartedAt).map((f) => f.fireAt))
      }
    } finally {
      await scheduler.close()
    }
  })
})
