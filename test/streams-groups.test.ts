import { describe, expect, it } from 'vitest'
import { StreamFencedError, GroupNotFoundError, type StreamConsumer, type StreamEvent } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

const t = useTestSchema()
const s = () => `"${t.schema}"`

type Seen = StreamEvent<{ n: number }>

/** Collects what a consumer's handler saw. */
function collector() {
  const seen: Seen[] = []
  return { seen, handler: async (event: Seen) => void seen.push(event) }
}

function byPartitionInOrder(seen: readonly Seen[]): boolean {
  const last = new Map<number, bigint>()
  for (const e of seen) {
    const offset = BigInt(e.offset)
    if ((last.get(e.partition) ?? 0n) >= offset) return false
    last.set(e.partition, offset)
  }
  return true
}

const quick = { sessionTimeout: '1500ms', heartbeatInterval: '200ms', pollInterval: '200ms' }

describe('consumer groups', () => {
  it('every group gets every event, each in offset order per partition', async () => {
    await t.postbox.createStream('fanout', { partitions: 4 })
    await t.postbox.appendBatch('fanout', Array.from({ length: 200 }, (_, n) => ({ payload: { n }, key: `k${n % 13}` })))
    const analytics = collector()
    const billing = collector()
    const a = t.postbox.consume('fanout', 'analytics', analytics.handler, { batchSize: 17 })
    const b = t.postbox.consume('fanout', 'billing', billing.handler)
    try {
      await waitFor('both groups to read everything', () => analytics.seen.length === 200 && billing.seen.length === 200)
      for (const c of [analytics, billing]) {
        expect(c.seen.map((e) => e.payload.n).sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, n) => n))
        expect(byPartitionInOrder(c.seen)).toBe(true)
      }
      await waitFor('the offsets committed', async () => {
        const stats = await t.postbox.streamStats('fanout')
        return stats.filter((r) => r.group !== null).every((r) => r.lag === 0) && stats.filter((r) => r.group !== null).length === 8
      })
    } finally {
      await Promise.all([a.stop(), b.stop()])
    }
  })

  it('an idle group is woken by an append (the poll interval alone would take a minute)', async () => {
    await t.postbox.createStream('wake')
    const c = collector()
    const consumer = t.postbox.consume('wake', 'idle', c.handler, { pollInterval: '60s' })
    try {
      await consumer.ready()
      await waitFor('the member to own the partition', () => consumer.partitions.length === 1)
      await t.postbox.listen()
      // Let it reach its wait (its waiter row), then append.
      await waitFor('the member to wait', async () => (await t.sql(`SELECT 1 FROM "${t.schema}".waiters WHERE queue = 'stream/wake'`)).length > 0)
      await t.postbox.append('wake', { n: 1 })
      await waitFor('the woken handler', () => c.seen.length === 1, { timeoutMs: 10_000 })
    } finally {
      await consumer.stop()
    }
  })

  it('an idle group keeps being woken while another appending transaction stays open, and gets its event last', async () => {
    await t.postbox.createStream('open-tx')
    const c = collector()
    const consumer = t.postbox.consume('open-tx', 'idle', c.handler, { pollInterval: '60s' })
    const client = await t.pool.connect()
    try {
      await t.postbox.listen()
      await waitFor('the member to own the partition', () => consumer.partitions.length === 1)
      await waitFor('the member to wait', async () => (await t.sql(`SELECT 1 FROM "${t.schema}".waiters WHERE queue = 'stream/open-tx'`)).length > 0)
      await client.query('BEGIN')
      // This append wakes the idle member and, until it commits, holds a lock on its waiters row.
      await t.postbox.append('open-tx', { n: -1 }, { tx: client })
      for (let n = 0; n < 5; n++) {
        await t.postbox.append('open-tx', { n })
        await waitFor(`event ${n} while the other transaction is open`, () => c.seen.some((e) => e.payload.n === n), { timeoutMs: 15_000 })
      }
      await client.query('COMMIT')
      await waitFor('the late committer', () => c.seen.length === 6, { timeoutMs: 15_000 })
      expect(c.seen.map((e) => e.payload.n)).toEqual([0, 1, 2, 3, 4, -1])
    } finally {
      await client.query('ROLLBACK').catch(() => {})
      client.release()
      await consumer.stop()
    }
  })

  it('members share the partitions when they join and stop', async () => {
    await t.postbox.createStream('share', { partitions: 4 })
    const c = collector()
    const first = t.postbox.consume('share', 'g', c.handler, quick)
    let second: StreamConsumer | undefined
    let third: StreamConsumer | undefined
    try {
      await waitFor('the first member to own all 4', () => first.partitions.length === 4)
      second = t.postbox.consume('share', 'g', c.handler, quick)
      await waitFor("two members with 2 each", () => first.partitions.length === 2 && second!.partitions.length === 2)
      expect([...first.partitions, ...second!.partitions].sort()).toEqual([0, 1, 2, 3])
      third = t.postbox.consume('share', 'g', c.handler, quick)
      await waitFor('three members sharing 4', () =>
        [first, second!, third!].every((m) => m.partitions.length >= 1) &&
        first.partitions.length + second!.partitions.length + third!.partitions.length === 4)
      await second!.stop()
      await third!.stop()
      await waitFor('the first member to own all 4 again', () => first.partitions.length === 4)
      // Work goes on through all that: nothing appended is left unread.
      await t.postbox.appendBatch('share', Array.from({ length: 40 }, (_, n) => ({ payload: { n }, key: `k${n}` })))
      await waitFor('every event', () => new Set(c.seen.map((e) => e.payload.n)).size === 40)
    } finally {
      await Promise.all([first.stop(), second?.stop(), third?.stop()])
    }
  })

  it('a dead member\'s partitions move within its session timeout, and its late commit is fenced', async () => {
    await t.postbox.createStream('death', { partitions: 2 })
    // A member that joins and then dies: it heartbeats once (with a 1s session) and never again.
    const owned = await t.sql<{ partition: number; epoch: string }>(
      `SELECT partition, epoch::text FROM ${s()}.stream_rebalance('death', 'g', 'ghost', interval '1 second')`)
    expect(owned.map((r) => r.partition)).toEqual([0, 1])
    await t.postbox.appendBatch('death', Array.from({ length: 20 }, (_, n) => ({ payload: { n }, key: `k${n}` })))
    const c = collector()
    const live = t.postbox.consume('death', 'g', c.handler, quick)
    try {
      await waitFor('the live member to take both partitions', () => live.partitions.length === 2, { timeoutMs: 10_000 })
      await waitFor('every event, read by the live member', () => c.seen.length === 20)
      // The ghost comes back and commits with its old epoch, with a business write in the same transaction.
      await t.sql(`CREATE TABLE ${s()}.ghost_sink (n int)`)
      const client = await t.pool.connect()
      try {
        await client.query('BEGIN')
        await client.query(`INSERT INTO ${s()}.ghost_sink VALUES (1)`)
        const error = await client.query(`SELECT ${s()}.stream_commit('death', 'g', 0, 'ghost', $1, 5)`, [owned[0]!.epoch]).catch((e: unknown) => e)
        expect(error).toMatchObject({ code: 'PBS04' })
        await client.query('ROLLBACK')
      } finally {
        client.release()
      }
      expect(await t.sql(`SELECT * FROM ${s()}.ghost_sink`)).toEqual([])
    } finally {
      await live.stop()
    }
  })

  it('transactional mode: the handler\'s writes and the offset commit together, failures roll both back (exactly once)', async () => {
    await t.postbox.createStream('exactly', { partitions: 2 })
    await t.sql(`CREATE TABLE ${s()}.sink (n int PRIMARY KEY)`)
    await t.postbox.appendBatch('exactly', Array.from({ length: 60 }, (_, n) => ({ payload: { n }, key: `k${n}` })))
    const failOnce = new Set([7, 33, 50])
    const failures: unknown[] = []
    const consumer = t.postbox.consume<{ n: number }>('exactly', 'sinker', async (event, ctx) => {
      // A primary key violation would show a second write of the same event.
      await ctx.tx!.query(`INSERT INTO ${s()}.sink VALUES ($1)`, [event.payload.n])
      if (failOnce.delete(event.payload.n)) throw new Error(`flaky on ${event.payload.n}`)
    }, { transactional: true, batchSize: 10, retryDelay: '50ms', ...quick })
    consumer.on('failed', (_event, error) => failures.push(error))
    try {
      await waitFor('every event in the sink', async () => (await t.sql(`SELECT count(*)::int AS n FROM ${s()}.sink`))[0]!.n === 60, { timeoutMs: 15_000 })
      expect(failures).toHaveLength(3)
      const rows = await t.sql<{ n: number }>(`SELECT n FROM ${s()}.sink ORDER BY n`)
      expect(rows.map((r) => r.n)).toEqual(Array.from({ length: 60 }, (_, n) => n))
      await waitFor('the lag to reach 0', async () => (await t.postbox.streamStats('exactly')).every((r) => r.lag === 0))
    } finally {
      await consumer.stop()
    }
  })

  it('a commit by a member that lost its partition throws StreamFencedError and rolls back the handler\'s writes', async () => {
    await t.postbox.createStream('fence')
    await t.sql(`CREATE TABLE ${s()}.fence_sink (n int)`)
    await t.postbox.append('fence', { n: 1 })
    let entered!: () => void
    const inHandler = new Promise<void>((resolve) => (entered = resolve))
    let proceed!: () => void
    const proceeding = new Promise<void>((resolve) => (proceed = resolve))
    const fenced: number[] = []
    const consumer = t.postbox.consume<{ n: number }>('fence', 'g', async (event, ctx) => {
      await ctx.tx!.query(`INSERT INTO ${s()}.fence_sink VALUES ($1)`, [event.payload.n])
      entered()
      await proceeding
    }, { transactional: true, ...quick })
    consumer.on('fenced', (p) => fenced.push(p))
    try {
      await inHandler
      // The group is moved meanwhile: every partition gets a new epoch and no owner.
      expect(await t.postbox.seek('fence', 'g', 'earliest')).toBe(1)
      proceed()
      await waitFor('the fenced commit', () => fenced.length >= 1)
    } finally {
      proceed()
      await consumer.stop()
    }
    expect(fenced[0]).toBe(0)
    // The first run's write rolled back; the member re-took the partition and ran it again.
    const rows = await t.sql<{ n: number }>(`SELECT n FROM ${s()}.fence_sink`)
    expect(rows.length).toBeLessThanOrEqual(1)
  })

  it('replays: seek to earliest, latest, a timestamp and an offset', async () => {
    await t.postbox.createStream('replay', { partitions: 1 })
    await t.postbox.appendBatch('replay', Array.from({ length: 5 }, (_, n) => ({ payload: { n } })))
    await t.postbox.readStream('replay') // stamps the first five
    const [{ midpoint }] = (await t.sql(`SELECT clock_timestamp() AS midpoint`)) as [{ midpoint: Date }]
    await t.postbox.appendBatch('replay', Array.from({ length: 5 }, (_, n) => ({ payload: { n: n + 5 } })))
    const c = collector()
    let consumer = t.postbox.consume('replay', 'g', c.handler, quick)
    await waitFor('the first pass', () => c.seen.length === 10)
    await consumer.stop()
    await expect(t.postbox.seek('replay', 'nobody', 'earliest')).rejects.toBeInstanceOf(GroupNotFoundError)
    for (const [to, expected] of [
      ['earliest', 10],
      [{ partition: 0, offset: '8' }, 3],
      ['latest', 0],
      [{ timestamp: midpoint }, 5],
    ] as const) {
      c.seen.length = 0
      await t.postbox.seek('replay', 'g', to)
      const [stats] = await t.postbox.streamStats('replay').then((rows) => rows.filter((r) => r.group === 'g'))
      expect(stats!.lag).toBe(expected)
      consumer = t.postbox.consume('replay', 'g', c.handler, quick)
      await waitFor(`replay from ${JSON.stringify(to)}`, async () => (await t.postbox.streamStats('replay')).find((r) => r.group === 'g')!.lag === 0)
      await consumer.stop()
      expect(c.seen.length).toBe(expected)
    }
  })

  it('from latest: a new group starts after what is already there', async () => {
    await t.postbox.createStream('late-group')
    await t.postbox.append('late-group', { n: 0 })
    const c = collector()
    const consumer = t.postbox.consume('late-group', 'newcomer', c.handler, { ...quick, from: 'latest' })
    try {
      await consumer.ready()
      await t.postbox.append('late-group', { n: 1 })
      await waitFor('the new event', () => c.seen.length === 1)
      expect(c.seen[0]!.payload.n).toBe(1)
    } finally {
      await consumer.stop()
    }
  })

  it('retention drops whole segments; a group that fell behind continues at the oldest event and counts what it missed', async () => {
    await t.postbox.createStream('retained', { retention: '1h' })
    await t.postbox.appendBatch('retained', Array.from({ length: 5 }, (_, n) => ({ payload: { n } })))
    await t.postbox.readStream('retained') // stamps them
    // Make the group now, at offset 0, without reading anything.
    await t.sql(`SELECT * FROM ${s()}.stream_rebalance('retained', 'slow', 'm', interval '1 second')`)
    await t.sql(`SELECT ${s()}.stream_release('retained', 'slow', 'm', NULL, true)`)
    const dropped = await t.postbox.pruneStreams({ now: new Date(Date.now() + 3 * 3_600_000) })
    expect(dropped).toBeGreaterThanOrEqual(1)
    expect(await t.postbox.readStream('retained')).toEqual([])
    await t.postbox.append('retained', { n: 5 })
    const c = collector()
    const lost: number[] = []
    const consumer = t.postbox.consume('retained', 'slow', c.handler, quick)
    consumer.on('lostToRetention', (info) => lost.push(info.events))
    try {
      await waitFor('the event after the drop', () => c.seen.length === 1)
      expect(c.seen[0]).toMatchObject({ offset: '6', payload: { n: 5 } })
      await waitFor('the loss counted', async () => (await t.postbox.streamStats('retained')).find((r) => r.group === 'slow')!.lostToRetention === 5)
    } finally {
      await consumer.stop()
    }
  })

  it('a handler error retries the event after the backoff; earlier events of the batch stay committed', async () => {
    await t.postbox.createStream('retry')
    await t.postbox.appendBatch('retry', Array.from({ length: 5 }, (_, n) => ({ payload: { n } })))
    const seen: number[] = []
    let failed = false
    const consumer = t.postbox.consume<{ n: number }>('retry', 'g', async (event) => {
      seen.push(event.payload.n)
      if (event.payload.n === 2 && !failed) {
        failed = true
        throw new Error('once')
      }
    }, { ...quick, retryDelay: '50ms' })
    try {
      await waitFor('all five', () => seen.includes(4))
      expect(seen).toEqual([0, 1, 2, 2, 3, 4])
    } finally {
      await consumer.stop()
    }
  })

  it('exports StreamFencedError for the commit', () => {
    expect(new StreamFencedError('x')).toBeInstanceOf(Error)
  })
})
