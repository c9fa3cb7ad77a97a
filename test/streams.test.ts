import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import {
  InvalidOptionsError,
  InvalidPayloadError,
  InvalidStreamNameError,
  PayloadTooLargeError,
  StreamNotFoundError,
} from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'

const t = useTestSchema()
const s = () => `"${t.schema}"`

async function counts(): Promise<{ inbox: number; log: number; streams: number }> {
  const [row] = await t.sql<{ inbox: number; log: number; streams: number }>(
    `SELECT (SELECT count(*)::int FROM ${s()}.stream_inbox) AS inbox, (SELECT count(*)::int FROM ${s()}.stream_events) AS log,
            (SELECT count(*)::int FROM ${s()}.streams) AS streams`)
  return row!
}

describe('stream admin', () => {
  it('creates, gets, lists and deletes streams; creating again returns the existing one unchanged', async () => {
    const created = await t.postbox.createStream('admin-a', { partitions: 4, retention: '2d' })
    expect(created).toMatchObject({ name: 'admin-a', partitions: 4, retentionMs: 2 * 86_400_000 })
    expect(await t.postbox.createStream('admin-a', { partitions: 8 })).toMatchObject({ partitions: 4 })
    expect(await t.postbox.getStream('admin-a')).toMatchObject({ partitions: 4 })
    expect(await t.postbox.getStream('admin-none')).toBeNull()
    expect((await t.postbox.listStreams()).map((x) => x.name)).toContain('admin-a')
    await t.postbox.append('admin-a', { x: 1 })
    expect(await t.postbox.readStream('admin-a', { partition: (await t.postbox.readStream('admin-a')).length ? 0 : 0 })).toBeDefined()
    expect(await t.postbox.deleteStream('admin-a')).toBe(true)
    expect(await t.postbox.deleteStream('admin-a')).toBe(false)
    expect(await t.postbox.getStream('admin-a')).toBeNull()
  })

  it('defaults to one partition and seven days', async () => {
    expect(await t.postbox.createStream('admin-defaults')).toMatchObject({ partitions: 1, retentionMs: 7 * 86_400_000 })
  })
})

describe('append and readStream', () => {
  it('round-trips JSON, text and binary payloads, keys and headers, with dense offsets from 1', async () => {
    await t.postbox.createStream('payloads')
    const bytes = Buffer.from([0, 1, 2, 255])
    const a = await t.postbox.append('payloads', { n: 1, nested: { ok: true } }, { key: 'k1', headers: { h: 'v' } })
    await t.postbox.append('payloads', 'plain text ✓')
    await t.postbox.append('payloads', bytes)
    expect(a).toEqual({ id: expect.stringMatching(/^\d+$/), partition: 0 })
    const events = await t.postbox.readStream('payloads')
    expect(events.map((e) => e.offset)).toEqual(['1', '2', '3'])
    expect(events[0]).toMatchObject({ stream: 'payloads', partition: 0, id: a.id, key: 'k1', payload: { n: 1, nested: { ok: true } }, headers: { h: 'v' } })
    expect(events[0]!.appendedAt).toBeInstanceOf(Date)
    expect(events[1]!.payload).toBe('plain text ✓')
    expect(Buffer.compare(events[2]!.payload as Buffer, bytes)).toBe(0)
    expect((await t.postbox.readStream('payloads', { after: '1', limit: 1 })).map((e) => e.offset)).toEqual(['2'])
  })

  it('readStream sees an event committed before the call while another reader holds the stamp round', async () => {
    await t.postbox.createStream('own-round')
    const [stream] = await t.sql<{ id: string }>(`SELECT id::text FROM ${s()}.streams WHERE name = 'own-round'`)
    // Another reader's round, held open: the stamp try-lock of this stream.
    const holder = await t.pool.connect()
    try {
      await holder.query('BEGIN')
      await holder.query(`SELECT pg_advisory_xact_lock(hashtextextended('postbox.stamp:' || $1 || ':' || $2, 0))`, [t.schema, stream!.id])
      await t.postbox.append('own-round', { n: 1 }) // committed
      const reading = t.postbox.readStream('own-round')
      // It found the round held and waits for its lock, rather than skip it.
      await waitFor('readStream waiting for the round', async () => (await t.sql(
        `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '%postbox.stamp:%' AND pid <> pg_backend_pid()`)).length > 0)
      await holder.query('COMMIT')
      expect((await reading).map((e) => e.payload)).toEqual([{ n: 1 }])
    } finally {
      await holder.query('ROLLBACK').catch(() => {})
      holder.release()
    }
  })

  it('sends the same key to the same partition, always, and spreads events without a key', async () => {
    await t.postbox.createStream('keys', { partitions: 8 })
    const first = await t.postbox.appendBatch('keys', Array.from({ length: 50 }, (_, i) => ({ payload: i, key: `customer:${i % 10}` })))
    const again = await t.postbox.appendBatch('keys', Array.from({ length: 50 }, (_, i) => ({ payload: i, key: `customer:${i % 10}` })))
    expect(again.map((r) => r.partition)).toEqual(first.map((r) => r.partition))
    // The SQL function agrees with the TS path.
    const [row] = await t.sql<{ id: string }>(`SELECT ${s()}.append('keys', '{"sql":true}'::jsonb, key => 'customer:3') AS id`)
    const events = (await Promise.all(Array.from({ length: 8 }, (_, p) => t.postbox.readStream('keys', { partition: p, limit: 1000 })))).flat()
    expect(events.find((e) => e.id === row!.id)!.partition).toBe(first[3]!.partition)
    const spread = await t.postbox.appendBatch('keys', Array.from({ length: 200 }, (_, i) => i))
    expect(new Set(spread.map((r) => r.partition)).size).toBeGreaterThan(4)
  })

  it('returns appendBatch results in input order, mixed payload kinds included', async () => {
    await t.postbox.createStream('batch')
    const results = await t.postbox.appendBatch('batch', [{ a: 1 }, 'two', Buffer.from('three'), { payload: 4, key: 'k', headers: { x: 'y' } }])
    expect(results).toHaveLength(4)
    const events = await t.postbox.readStream('batch')
    expect(events.map((e) => e.id)).toEqual(results.map((r) => r.id))
    expect(events.map((e) => (Buffer.isBuffer(e.payload) ? e.payload.toString() : e.payload))).toEqual([{ a: 1 }, 'two', 'three', 4])
    expect(events[3]).toMatchObject({ key: 'k', headers: { x: 'y' } })
    expect(await t.postbox.appendBatch('batch', [])).toEqual([])
  })

  it('appends in the caller\'s pg transaction and Kysely transaction: an event exists iff it commits', async () => {
    await t.postbox.createStream('tx')
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await t.postbox.append('tx', 'rolled back', { tx: client })
      await client.query('ROLLBACK')
      await client.query('BEGIN')
      await t.postbox.appendBatch('tx', ['committed 1', 'committed 2'], { tx: client })
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    const kysely = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: t.url, max: 2 }) }) })
    try {
      await kysely.transaction().execute(async (trx) => {
        await t.postbox.append('tx', 'kysely', { tx: trx })
      })
      await kysely.transaction().execute(async (trx) => {
        await t.postbox.append('tx', 'kysely rolled back', { tx: trx })
        throw new Error('roll back')
      }).catch(() => {})
    } finally {
      await kysely.destroy()
    }
    const events = await t.postbox.readStream('tx')
    expect(events.map((e) => [e.offset, e.payload])).toEqual([['1', 'committed 1'], ['2', 'committed 2'], ['3', 'kysely']])
  })
})

describe('bad input writes nothing', () => {
  it('refuses unknown streams, invalid names, partitions, retention, payloads, keys and offsets with typed errors', async () => {
    await t.postbox.createStream('strict', { partitions: 2 })
    const before = await counts()
    await expect(t.postbox.append('nope', 1)).rejects.toBeInstanceOf(StreamNotFoundError)
    await expect(t.postbox.appendBatch('nope', [1])).rejects.toBeInstanceOf(StreamNotFoundError)
    await expect(t.postbox.readStream('nope')).rejects.toBeInstanceOf(StreamNotFoundError)
    await expect(t.postbox.append('Bad Name', 1)).rejects.toBeInstanceOf(InvalidStreamNameError)
    await expect(t.postbox.createStream('x'.repeat(64))).rejects.toBeInstanceOf(InvalidStreamNameError)
    await expect(t.postbox.createStream('p0', { partitions: 0 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.createStream('p257', { partitions: 257 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.createStream('p1.5', { partitions: 1.5 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.createStream('r0', { retention: 0 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.createStream('rneg', { retention: -5 })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.append('strict', { big: 'x'.repeat(300_000) })).rejects.toBeInstanceOf(PayloadTooLargeError)
    await expect(t.postbox.appendBatch('strict', [1, { payload: 'x'.repeat(300_000) }])).rejects.toBeInstanceOf(PayloadTooLargeError)
    await expect(t.postbox.append('strict', () => 1)).rejects.toBeInstanceOf(InvalidPayloadError)
    await expect(t.postbox.append('strict', 1, { key: '' })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.append('strict', 1, { headers: { a: 1 as unknown as string } })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.append('strict', 1, { nonsense: true } as never)).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.readStream('strict', { after: '4.5' })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.readStream('strict', { after: -1 as unknown as string })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.seek('strict', 'nobody', 'earliest')).rejects.toThrow(/does not exist/)
    // consume() returns at once; the missing stream comes out of ready() and the 'error' event, and the consumer stops.
    const orphan = t.postbox.consume('nope', 'g', () => {})
    const errors: unknown[] = []
    orphan.on('error', (error) => errors.push(error))
    const stopped = new Promise<void>((resolve) => orphan.once('stopped', resolve))
    await expect(orphan.ready()).rejects.toBeInstanceOf(StreamNotFoundError)
    await stopped
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(StreamNotFoundError)
    await expect(t.postbox.seek('strict', 'g', { partition: 0, offset: 'x' })).rejects.toBeInstanceOf(InvalidOptionsError)
    // SQL API, for triggers: the same checks.
    await expect(t.sql(`SELECT ${s()}.append('nope', '{}'::jsonb)`)).rejects.toMatchObject({ code: 'PBS01' })
    await expect(t.sql(`SELECT ${s()}.create_stream('sqlp', partitions => 300)`)).rejects.toMatchObject({ code: 'PBV01' })
    expect(await counts()).toEqual(before)
  })
})
