import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { InvalidOptionsError, InvalidPayloadError, InvalidScheduleError, PayloadTooLargeError, QueueNotFoundError, defineQueue } from '../src/index.js'
import { testScheduler } from './support/scheduler-clock.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()
const s = () => `"${t.schema}"`
const at = (iso: string) => new Date(iso)

/** Puts a schedule's next tick at `iso`, as if it had been waiting for it. */
async function nextTickAt(name: string, iso: string): Promise<void> {
  await t.sql(`UPDATE ${s()}.schedules SET next_fire_at = $2 WHERE name = $1`, [name, iso])
}

/** The messages a schedule sent, by tick: [fire-at header, payload, priority, schedule header]. */
async function sent(queue: string): Promise<{ fireAt: string; schedule: string; payload: unknown; priority: number }[]> {
  const rows = await t.sql<{ h: Record<string, string>; payload: unknown; priority: number }>(
    `SELECT headers AS h, payload, priority FROM ${s()}.messages WHERE queue = $1 ORDER BY id`, [queue])
  return rows.map((r) => ({ fireAt: r.h['postbox-fire-at'] as string, schedule: r.h['postbox-schedule'] as string, payload: r.payload, priority: r.priority }))
}

async function counts(): Promise<{ schedules: number; fires: number; messages: number }> {
  const [row] = await t.sql<{ schedules: number; fires: number; messages: number }>(
    `SELECT (SELECT count(*)::int FROM ${s()}.schedules) AS schedules, (SELECT count(*)::int FROM ${s()}.schedule_fires) AS fires,
            (SELECT count(*)::int FROM ${s()}.messages) AS messages`)
  return row!
}

beforeAll(async () => {
  await t.postbox.createQueue('reports')
  await t.postbox.createQueue('small', { maxPayloadBytes: 64 })
})

afterEach(async () => {
  await t.sql(`DELETE FROM ${s()}.schedules; DELETE FROM ${s()}.schedule_fires; DELETE FROM ${s()}.messages`)
})

describe('schedule, listSchedules, unschedule', () => {
  it('stores a schedule with its next tick from the database clock, and lists it', async () => {
    const [{ now }] = (await t.sql<{ now: Date }>('SELECT now()')) as [{ now: Date }]
    const info = await t.postbox.schedule('nightly', { cron: '0 3 * * *', timezone: 'Europe/Paris', queue: 'reports', payload: { kind: 'nightly' } })
    expect(info).toMatchObject({ name: 'nightly', queue: 'reports', cron: '0 3 * * *', timezone: 'Europe/Paris', payload: { kind: 'nightly' }, missed: 'latest', priority: 0, lastFireAt: null })
    // 03:00 in Paris is 01:00 or 02:00 UTC, within a day of now.
    expect([1, 2]).toContain(info.nextFireAt!.getUTCHours())
    expect(info.nextFireAt!.getTime() - now.getTime()).toBeGreaterThan(0)
    expect(info.nextFireAt!.getTime() - now.getTime()).toBeLessThanOrEqual(86_400_000 + 5_000)
    expect(await t.postbox.listSchedules()).toEqual([info])
  })

  it('replacing a schedule with the same expression keeps its next tick; a new expression starts from now', async () => {
    await t.postbox.schedule('job', { cron: '*/5 * * * *', queue: 'reports' })
    await nextTickAt('job', '2030-01-01T00:00:00Z')
    const same = await t.postbox.schedule('job', { cron: '*/5 * * * *', queue: 'reports', payload: { v: 2 }, missed: 'all' })
    expect(same).toMatchObject({ nextFireAt: at('2030-01-01T00:00:00Z'), payload: { v: 2 }, missed: 'all' })
    const changed = await t.postbox.schedule('job', { cron: '*/10 * * * *', queue: 'reports' })
    expect(changed.nextFireAt!.getTime()).toBeLessThan(at('2030-01-01T00:00:00Z').getTime())
    expect(changed.nextFireAt!.getUTCMinutes() % 10).toBe(0)
  })

  it('unschedule deletes it and says whether there was one; deleting the queue deletes its schedules', async () => {
    await t.postbox.schedule('gone', { cron: '@hourly', queue: 'reports' })
    expect(await t.postbox.unschedule('gone')).toBe(true)
    expect(await t.postbox.unschedule('gone')).toBe(false)
    await t.postbox.createQueue('doomed')
    await t.postbox.schedule('with-queue', { cron: '@hourly', queue: 'doomed' })
    await t.postbox.deleteQueue('doomed')
    expect(await t.postbox.listSchedules()).toEqual([])
  })

  it('refuses bad input with typed errors and writes nothing', async () => {
    const bad: [string, Parameters<typeof t.postbox.schedule>[1], new (...args: never[]) => Error][] = [
      ['a', { cron: '61 * * * *', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '* * *', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '* * * * * * *', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '2030-01-01T00:00:00', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '0 0 31 2 *', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '* * * * *', timezone: 'Mars/Olympus', queue: 'reports' }, InvalidScheduleError],
      ['a', { cron: '* * * * *', queue: 'reports', missed: 'never' as 'skip' }, InvalidOptionsError],
      ['a', { cron: '* * * * *', queue: 'reports', every: '1m' } as never, InvalidOptionsError],
      ['a', { cron: '* * * * *', queue: 'reports', priority: 1.5 }, InvalidOptionsError],
      ['a', { cron: '* * * * *', queue: 'reports', headers: { n: 1 as unknown as string } }, InvalidOptionsError],
      ['a', { cron: '* * * * *', queue: 'nope' }, QueueNotFoundError],
      ['a', { cron: '* * * * *', queue: 'small', payload: { text: 'x'.repeat(100) } }, PayloadTooLargeError],
      ['a', { cron: '* * * * *', queue: 'reports', payload: Buffer.from('x') }, InvalidPayloadError],
      ['Bad Name', { cron: '* * * * *', queue: 'reports' }, InvalidScheduleError],
    ]
    for (const [name, options, type] of bad) {
      await expect(t.postbox.schedule(name, options), JSON.stringify(options)).rejects.toBeInstanceOf(type)
    }
    const typed = defineQueue({ name: 'reports', schema: z.object({ day: z.string() }) })
    await expect(t.postbox.schedule('typed', { cron: '@daily', queue: typed, payload: { day: 3 } as never })).rejects.toBeInstanceOf(InvalidPayloadError)
    expect(await counts()).toEqual({ schedules: 0, fires: 0, messages: 0 })
  })
})

describe('firing', () => {
  it('sends one message per tick with the schedule and tick headers, and moves the next tick', async () => {
    await t.postbox.schedule('report', { cron: '*/5 * * * *', queue: 'reports', payload: { r: 1 }, priority: 7, headers: { team: 'ops' } })
    await nextTickAt('report', '2030-01-01T00:00:00Z')
    const scheduler = testScheduler(t.pool, t.schema)
    expect(await scheduler.tick(at('2029-12-31T23:59:59Z'))).toEqual([]) // not due yet
    const fired = await scheduler.tick(at('2030-01-01T00:00:00.200Z'))
    expect(fired).toEqual([{ schedule: 'report', fireAt: at('2030-01-01T00:00:00Z'), messageId: expect.stringMatching(/^\d+$/) }])
    expect(await scheduler.tick(at('2030-01-01T00:00:00.300Z'))).toEqual([]) // fired once
    const [m] = await t.postbox.receive('reports')
    expect(m).toMatchObject({ id: fired[0]!.messageId, payload: { r: 1 }, priority: 7,
      headers: { team: 'ops', 'postbox-schedule': 'report', 'postbox-fire-at': '2030-01-01T00:00:00.000Z' } })
    await t.postbox.ack(m!)
    const [info] = await t.postbox.listSchedules()
    expect(info).toMatchObject({ nextFireAt: at('2030-01-01T00:05:00Z'), lastFireAt: at('2030-01-01T00:00:00Z') })
  })

  // Down from 00:00 to 00:17:10 with a tick every five minutes: 00:00, 00:05, 00:10 and 00:15 passed.
  it.each([
    ['all', ['2030-01-01T00:00:00.000Z', '2030-01-01T00:05:00.000Z', '2030-01-01T00:10:00.000Z', '2030-01-01T00:15:00.000Z']],
    ['latest', ['2030-01-01T00:15:00.000Z']],
    ['skip', []],
  ] as const)('after downtime, missed: %s fires %j, then waits for the next tick', async (missed, expected) => {
    await t.postbox.schedule('late', { cron: '*/5 * * * *', queue: 'reports', missed })
    await nextTickAt('late', '2030-01-01T00:00:00Z')
    const scheduler = testScheduler(t.pool, t.schema)
    await scheduler.tick(at('2030-01-01T00:17:10Z'))
    expect((await sent('reports')).map((m) => m.fireAt)).toEqual(expected)
    expect((await t.postbox.listSchedules())[0]!.nextFireAt).toEqual(at('2030-01-01T00:20:00Z'))
    await scheduler.tick(at('2030-01-01T00:20:01Z'))
    expect((await sent('reports')).map((m) => m.fireAt)).toEqual([...expected, '2030-01-01T00:20:00.000Z'])
  })

  it('missed: skip still fires a tick a running scheduler reaches a moment late', async () => {
    await t.postbox.schedule('prompt', { cron: '*/5 * * * *', queue: 'reports', missed: 'skip' })
    await nextTickAt('prompt', '2030-01-01T00:00:00Z')
    await testScheduler(t.pool, t.schema).tick(at('2030-01-01T00:00:03Z'))
    expect((await sent('reports')).map((m) => m.fireAt)).toEqual(['2030-01-01T00:00:00.000Z'])
  })

  it('missed: all catches up a long downtime in bounded transactions, every tick once', async () => {
    await t.postbox.schedule('busy', { cron: '* * * * * *', queue: 'reports', missed: 'all' })
    await nextTickAt('busy', '2030-01-01T00:00:00Z')
    const fired = await testScheduler(t.pool, t.schema).tick(at('2030-01-01T00:40:00Z')) // 2401 ticks, three transactions
    expect(fired).toHaveLength(2401)
    const [row] = await t.sql<{ n: number; distinct_ticks: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT headers->>'postbox-fire-at')::int AS distinct_ticks FROM ${s()}.messages`)
    expect(row).toEqual({ n: 2401, distinct_ticks: 2401 })
  })

  it('three schedulers ticking at once fire a tick once', async () => {
    await t.postbox.schedule('shared', { cron: '* * * * * *', queue: 'reports', missed: 'all' })
    await nextTickAt('shared', '2030-01-01T00:00:00Z')
    const schedulers = [1, 2, 3].map(() => testScheduler(t.pool, t.schema))
    for (let second = 0; second < 20; second++) {
      const now = new Date(at('2030-01-01T00:00:00.100Z').getTime() + second * 1000)
      await Promise.all(schedulers.map((scheduler) => scheduler.tick(now)))
    }
    const ticks = (await sent('reports')).map((m) => m.fireAt)
    expect(ticks).toHaveLength(20)
    expect(new Set(ticks).size).toBe(20)
  })

  it('a schedule deleted and made again does not fire a tick it already fired', async () => {
    await t.postbox.schedule('again', { cron: '*/5 * * * *', queue: 'reports' })
    await nextTickAt('again', '2030-01-01T00:00:00Z')
    const scheduler = testScheduler(t.pool, t.schema)
    await scheduler.tick(at('2030-01-01T00:00:01Z'))
    await t.postbox.unschedule('again')
    await t.postbox.schedule('again', { cron: '*/5 * * * *', queue: 'reports' })
    await nextTickAt('again', '2030-01-01T00:00:00Z') // as a concurrent re-creation could have read it
    expect(await scheduler.tick(at('2030-01-01T00:00:02Z'))).toEqual([])
    expect(await sent('reports')).toHaveLength(1)
  })

  it('a schedule whose message its queue now refuses is left alone and does not block the others', async () => {
    await t.postbox.createQueue('shrinking')
    await t.postbox.schedule('big', { cron: '*/5 * * * *', queue: 'shrinking', payload: { text: 'x'.repeat(200) } })
    await t.postbox.schedule('fine', { cron: '*/5 * * * *', queue: 'reports' })
    await t.postbox.updateQueue('shrinking', { maxPayloadBytes: 64 })
    await nextTickAt('big', '2030-01-01T00:00:00Z')
    await nextTickAt('fine', '2030-01-01T00:00:00Z')
    const fired = await testScheduler(t.pool, t.schema).tick(at('2030-01-01T00:00:01Z'))
    expect(fired.map((f) => f.schedule)).toEqual(['fine'])
    expect((await t.postbox.listSchedules()).find((x) => x.name === 'big')!.nextFireAt).toEqual(at('2030-01-01T00:00:00Z'))
  })
})
