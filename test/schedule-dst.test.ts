import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { testScheduler } from './support/scheduler-clock.js'
import { useTestSchema } from './support/test-schema.js'

// The ticks a schedule fires across daylight-saving days, computed by croner (pinned) and fired
// through the scheduler with an injected clock. Each case starts at a tick before the transition
// and catches up with missed: 'all', so every tick in between is fired and listed.
const t = useTestSchema()
const s = () => `"${t.schema}"`

async function ticks(cron: string, timezone: string, firstTick: string, until: string): Promise<string[]> {
  await t.postbox.schedule('dst', { cron, timezone, queue: 'dst', missed: 'all' })
  await t.sql(`UPDATE ${s()}.schedules SET next_fire_at = $1`, [firstTick])
  await testScheduler(t.pool, t.schema).tick(new Date(until))
  const rows = await t.sql<{ fire_at: string }>(`SELECT headers->>'postbox-fire-at' AS fire_at FROM ${s()}.messages ORDER BY id`)
  return rows.map((r) => r.fire_at.replace('.000Z', 'Z'))
}

beforeAll(async () => {
  await t.postbox.createQueue('dst')
})

afterEach(async () => {
  await t.sql(`DELETE FROM ${s()}.schedules; DELETE FROM ${s()}.schedule_fires; DELETE FROM ${s()}.messages`)
})

describe('America/New_York (clocks go 02:00 -> 03:00 on 2026-03-08 and 02:00 -> 01:00 on 2026-11-01)', () => {
  it('a fixed time inside the spring gap fires once, at the first instant after it (03:00 EDT)', async () => {
    expect(await ticks('30 2 * * *', 'America/New_York', '2026-03-07T07:30:00Z', '2026-03-09T12:00:00Z')).toEqual([
      '2026-03-07T07:30:00Z', // 02:30 EST
      '2026-03-08T07:00:00Z', // 02:30 does not exist: 03:00 EDT
      '2026-03-09T06:30:00Z', // 02:30 EDT
    ])
  })

  it('a fixed time inside the autumn overlap fires once, at its first occurrence', async () => {
    expect(await ticks('30 1 * * *', 'America/New_York', '2026-10-31T05:30:00Z', '2026-11-02T12:00:00Z')).toEqual([
      '2026-10-31T05:30:00Z', // 01:30 EDT
      '2026-11-01T05:30:00Z', // 01:30 EDT; not again at 01:30 EST (06:30Z)
      '2026-11-02T06:30:00Z', // 01:30 EST
    ])
  })

  it('a wildcard keeps its spacing in absolute time through the overlap: the repeated hour fires twice', async () => {
    expect(await ticks('*/30 * * * *', 'America/New_York', '2026-11-01T04:30:00Z', '2026-11-01T07:10:00Z')).toEqual([
      '2026-11-01T04:30:00Z', // 00:30 EDT
      '2026-11-01T05:00:00Z', // 01:00 EDT
      '2026-11-01T05:30:00Z', // 01:30 EDT
      '2026-11-01T06:00:00Z', // 01:00 EST
      '2026-11-01T06:30:00Z', // 01:30 EST
      '2026-11-01T07:00:00Z', // 02:00 EST
    ])
  })

  it('a wildcard skips the times the spring gap removes', async () => {
    expect(await ticks('0,30 2 * * *', 'America/New_York', '2026-03-07T07:00:00Z', '2026-03-09T12:00:00Z')).toEqual([
      '2026-03-07T07:00:00Z', // 02:00 EST
      '2026-03-07T07:30:00Z', // 02:30 EST
      // 2026-03-08: 02:00 and 02:30 do not exist
      '2026-03-09T06:00:00Z', // 02:00 EDT
      '2026-03-09T06:30:00Z', // 02:30 EDT
    ])
  })
})

describe('other zones', () => {
  it('Europe/Paris: 02:00 daily on the spring day fires at 03:00 CEST', async () => {
    expect(await ticks('0 2 * * *', 'Europe/Paris', '2026-03-28T01:00:00Z', '2026-03-30T12:00:00Z')).toEqual([
      '2026-03-28T01:00:00Z', // 02:00 CET
      '2026-03-29T01:00:00Z', // 02:00 does not exist: 03:00 CEST
      '2026-03-30T00:00:00Z', // 02:00 CEST
    ])
  })

  it('Australia/Lord_Howe (a 30-minute shift, 02:00 -> 02:30 on 2026-10-04): 02:15 fires at 02:30', async () => {
    expect(await ticks('15 2 * * *', 'Australia/Lord_Howe', '2026-10-02T15:45:00Z', '2026-10-05T00:00:00Z')).toEqual([
      '2026-10-02T15:45:00Z', // 02:15 +10:30
      '2026-10-03T15:30:00Z', // 02:15 does not exist: 02:30 +11:00
      '2026-10-04T15:15:00Z', // 02:15 +11:00
    ])
  })

  it('a seconds field fires on the second in a zone whose offset is not whole hours (Asia/Kathmandu, +05:45)', async () => {
    expect(await ticks('10 0 6 * * *', 'Asia/Kathmandu', '2026-06-01T00:15:10Z', '2026-06-02T12:00:00Z')).toEqual([
      '2026-06-01T00:15:10Z', // 06:00:10 +05:45
      '2026-06-02T00:15:10Z',
    ])
  })
})
