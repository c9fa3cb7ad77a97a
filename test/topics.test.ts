import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidFilterError, PayloadTooLargeError, QueueNotFoundError, UnroutableError, defineQueue } from '../src/index.js'
import { z } from 'zod'
import { waitFor } from './support/wait-for.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()
const s = () => `"${t.schema}"`

async function copies(routingKey: string): Promise<Record<string, number>> {
  const rows = await t.sql<{ queue: string; n: number }>(
    `SELECT queue, count(*)::int AS n FROM ${s()}.messages WHERE routing_key = $1 GROUP BY queue ORDER BY queue`, [routingKey])
  return Object.fromEntries(rows.map((r) => [r.queue, r.n]))
}

async function unrouted(): Promise<number> {
  return (await t.postbox.unroutedStats()).count
}

beforeAll(async () => {
  // RabbitMQ's tutorial five: Q1 wants orange animals, Q2 rabbits and everything lazy.
  await t.postbox.createQueue('q1')
  await t.postbox.createQueue('q2')
  await t.postbox.bind('q1', '*.orange.*')
  await t.postbox.bind('q2', '*.*.rabbit')
  await t.postbox.bind('q2', 'lazy.#')
})

describe('publish', () => {
  it('delivers one copy to each matching queue, however many of its bindings match, and says where', async () => {
    const result = await t.postbox.publish('lazy.orange.rabbit', { animal: 'rabbit' })
    expect(result).toEqual({ queues: ['q1', 'q2'], ids: [expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/)], duplicates: [] })
    expect(await copies('lazy.orange.rabbit')).toEqual({ q1: 1, q2: 1 })
    const [m1] = await t.postbox.receive('q1')
    const [m2] = await t.postbox.receive('q2')
    expect(m1).toMatchObject({ id: result.ids[0], queue: 'q1', payload: { animal: 'rabbit' }, routingKey: 'lazy.orange.rabbit' })
    expect(m2).toMatchObject({ id: result.ids[1], queue: 'q2', payload: { animal: 'rabbit' }, routingKey: 'lazy.orange.rabbit' })
    await t.postbox.ack([m1!, m2!])
  })

  it('a queue that keeps acked messages archives them with their routing key', async () => {
    await t.postbox.createQueue('kept', { retention: '1h' })
    await t.postbox.bind('kept', 'audit.#')
    const { ids } = await t.postbox.publish('audit.user.login', { user: 42 })
    const [m] = await t.postbox.receive('kept')
    await t.postbox.ack(m!)
    const rows = await t.sql<{ id: string; routing_key: string }>(`SELECT id::text, routing_key FROM ${s()}.messages_archive WHERE queue = 'kept'`)
    expect(rows).toEqual([{ id: ids[0], routing_key: 'audit.user.login' }])
  })

  it('a plain send carries no routing key', async () => {
    await t.postbox.send('q1', 'sent')
    const [m] = await t.postbox.receive('q1')
    expect(m).toMatchObject({ payload: 'sent', routingKey: null })
    await t.postbox.ack(m!)
  })

  it('applies the options to every copy: headers, priority, delay, group key, and text and binary payloads', async () => {
    await t.postbox.createQueue('opts-a')
    await t.postbox.createQueue('opts-b')
    await t.postbox.bind('opts-a', 'opts.#')
    await t.postbox.bind('opts-b', 'opts.*')
    const { ids } = await t.postbox.publish('opts.x', { n: 1 }, { headers: { trace: 't1' }, priority: 7, delay: '1h', groupKey: 'g1' })
    const rows = await t.sql(
      `SELECT queue, priority, group_key, headers, round(extract(epoch FROM available_at - now()))::int AS delay_s
       FROM ${s()}.messages WHERE id = ANY ($1::bigint[]) ORDER BY queue`, [ids])
    const copy = { priority: 7, group_key: 'g1', headers: { trace: 't1' }, delay_s: 3600 }
    expect(rows).toEqual([{ queue: 'opts-a', ...copy }, { queue: 'opts-b', ...copy }])
    await t.postbox.publish('opts.y', 'some text')
    await t.postbox.publish('opts.y', Buffer.from([0, 1, 255]))
    const got = await t.postbox.receive('opts-a', { max: 10 })
    expect(got.map((m) => m.payload)).toEqual(['some text', Buffer.from([0, 1, 255])])
    await t.postbox.ack(got)
  })

  it('inside a pg transaction: rolled back -> no copy anywhere; committed -> every copy', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await t.postbox.publish('tx.orange.rabbit', { n: 1 }, { tx: client })
      expect(await copies('tx.orange.rabbit')).toEqual({}) // not visible before commit
      await client.query('ROLLBACK')
      expect(await copies('tx.orange.rabbit')).toEqual({})
      await client.query('BEGIN')
      const { queues } = await t.postbox.publish('tx.orange.rabbit', { n: 2 }, { tx: client })
      expect(queues).toEqual(['q1', 'q2'])
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    expect(await copies('tx.orange.rabbit')).toEqual({ q1: 1, q2: 1 })
  })

  it('inside a Kysely transaction, and a failure later in it takes every copy with it', async () => {
    const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: t.pool }) })
    const boom = new Error('the business write failed')
    await expect(db.transaction().execute(async (trx) => {
      await t.postbox.publish('kysely.orange.rabbit', { n: 1 }, { tx: trx })
      await t.postbox.publishBatch([{ routingKey: 'kysely.orange.rabbit', payload: 2 }], { tx: trx })
      throw boom
    })).rejects.toBe(boom)
    expect(await copies('kysely.orange.rabbit')).toEqual({})
    await db.transaction().execute(async (trx) => {
      await t.postbox.publish('kysely.orange.rabbit', { n: 3 }, { tx: trx })
    })
    expect(await copies('kysely.orange.rabbit')).toEqual({ q1: 1, q2: 1 })
  })

  it("applies each queue's payload limit: one queue refusing refuses the publish, and nothing is written", async () => {
    await t.postbox.createQueue('small', { maxPayloadBytes: 64 })
    await t.postbox.createQueue('large')
    await t.postbox.bind('small', 'sized.#')
    await t.postbox.bind('large', 'sized.#')
    const big = { text: 'x'.repeat(200) }
    const error = await t.postbox.publish('sized.a', big).catch((e: Error) => e)
    expect(error).toBeInstanceOf(PayloadTooLargeError)
    expect((error as Error).message).toMatch(/queue 'small'/)
    await expect(t.postbox.publish('sized.a', big, { dedupeKey: 'd' })).rejects.toThrow(PayloadTooLargeError)
    await expect(t.postbox.publishBatch([{ routingKey: 'sized.b', payload: 1 }, { routingKey: 'sized.c', payload: big }]))
      .rejects.toThrow(/message 2 of the batch/)
    expect(await copies('sized.a')).toEqual({})
    expect(await copies('sized.b')).toEqual({})
    expect((await t.postbox.publish('sized.a', { text: 'fits' })).queues).toEqual(['large', 'small'])
  })

  it('a dedupe key holds per queue, as for send: a queue that still has the message keeps it', async () => {
    await t.postbox.createQueue('dd-a')
    await t.postbox.createQueue('dd-b')
    await t.postbox.bind('dd-a', 'dedupe.#')
    await t.postbox.bind('dd-b', 'dedupe.#')
    const first = await t.postbox.publish('dedupe.x', { n: 1 }, { dedupeKey: 'order:1' })
    expect(first).toMatchObject({ queues: ['dd-a', 'dd-b'], duplicates: [] })
    const again = await t.postbox.publish('dedupe.x', { n: 2 }, { dedupeKey: 'order:1' })
    expect(again).toEqual({ queues: ['dd-a', 'dd-b'], ids: first.ids, duplicates: ['dd-a', 'dd-b'] })
    // Once dd-a has handled its copy, a publish with the key writes there again, not to dd-b.
    const [m] = await t.postbox.receive('dd-a')
    await t.postbox.ack(m!)
    const third = await t.postbox.publish('dedupe.x', { n: 3 }, { dedupeKey: 'order:1' })
    expect(third.duplicates).toEqual(['dd-b'])
    expect(third.ids[1]).toBe(first.ids[1])
    expect(third.ids[0]).not.toBe(first.ids[0])
  })

  it('a publish that matches nothing is counted (and a rolled-back one is not); unrouted: error throws and writes nothing', async () => {
    const before = await t.postbox.unroutedStats()
    expect(await t.postbox.publish('nobody.listens', { n: 1 })).toEqual({ queues: [], ids: [], duplicates: [] })
    const after = await t.postbox.unroutedStats()
    expect(after.count).toBe(before.count + 1)
    expect(after.lastRoutingKey).toBe('nobody.listens')
    expect(after.lastAt).toBeInstanceOf(Date)

    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await t.postbox.publish('nobody.listens', { n: 2 }, { tx: client })
      await client.query('ROLLBACK')
    } finally {
      client.release()
    }
    expect(await unrouted()).toBe(before.count + 1)

    const error = await t.postbox.publish('nobody.listens', { n: 3 }, { unrouted: 'error' }).catch((e: Error) => e)
    expect(error).toBeInstanceOf(UnroutableError)
    expect(error).toMatchObject({ routingKey: 'nobody.listens' })
    expect(await unrouted()).toBe(before.count + 1)
    expect(await copies('nobody.listens')).toEqual({})
    // A header filter that rejects the message makes it unroutable too.
    await t.postbox.createQueue('filtered')
    await t.postbox.bind('filtered', 'filtered.#', { filter: { region: 'eu' } })
    await expect(t.postbox.publish('filtered.x', 1, { headers: { region: 'us' }, unrouted: 'error' })).rejects.toThrow(UnroutableError)
  })

  it('NOTIFY only for the queues where a consumer waits', async () => {
    await t.postbox.createQueue('wake-a')
    await t.postbox.createQueue('wake-b')
    await t.postbox.bind('wake-a', 'wake.#')
    await t.postbox.bind('wake-b', 'wake.#')
    const listener = new pg.Client({ connectionString: t.url })
    await listener.connect()
    const heard: string[] = []
    listener.on('notification', (n) => n.payload && heard.push(n.payload))
    await listener.query(`LISTEN "${t.schema}"`)
    const consumer = t.newPostbox({ pollInterval: '1m' })
    try {
      await t.postbox.publish('wake.1', 1)
      await listener.query('SELECT 1') // a round trip, so a notification would have arrived
      expect(heard).toEqual([])
      await consumer.receive('wake-b', { max: 10 }).then((ms) => consumer.ack(ms))
      const waiting = consumer.receive('wake-b', { wait: '10s' })
      await waitFor('a consumer waiting on wake-b', async () =>
        (await t.sql(`SELECT 1 FROM ${s()}.waiters WHERE queue = 'wake-b' AND expires_at > now()`)).length === 1)
      await t.postbox.publish('wake.2', 2)
      const [m] = await waiting
      expect(m).toMatchObject({ payload: 2, routingKey: 'wake.2' })
      await consumer.ack(m!)
      await listener.query('SELECT 1')
      expect(heard).toEqual(['wake-b'])
    } finally {
      await consumer.close()
      await listener.end()
    }
  })
})

describe('publishBatch', () => {
  it('routes each message by its own key, in one statement, and reports per message', async () => {
    const before = await unrouted()
    const results = await t.postbox.publishBatch([
      { routingKey: 'quick.orange.rabbit', payload: { n: 1 } },
      { routingKey: 'nothing.here', payload: { n: 2 } },
      { routingKey: 'lazy.brown.fox', payload: 'text', priority: 3 },
    ])
    expect(results.map((r) => r.queues)).toEqual([['q1', 'q2'], [], ['q2']])
    expect(results[0]?.ids).toHaveLength(2)
    expect(await unrouted()).toBe(before + 1)
    const rows = await t.sql(`SELECT id::text, queue, routing_key, priority FROM ${s()}.messages WHERE id = ANY ($1::bigint[]) ORDER BY id`,
      [results.flatMap((r) => r.ids)])
    expect(rows).toEqual([
      { id: results[0]?.ids[0], queue: 'q1', routing_key: 'quick.orange.rabbit', priority: 0 },
      { id: results[0]?.ids[1], queue: 'q2', routing_key: 'quick.orange.rabbit', priority: 0 },
      { id: results[2]?.ids[0], queue: 'q2', routing_key: 'lazy.brown.fox', priority: 3 },
    ])
  })

  it('with unrouted: error, one message that matches nothing refuses the batch', async () => {
    const before = await unrouted()
    const error = await t.postbox.publishBatch([
      { routingKey: 'batch.orange.x', payload: 1 },
      { routingKey: 'nowhere.at.all', payload: 2 },
    ], { unrouted: 'error' }).catch((e: Error) => e)
    expect(error).toBeInstanceOf(UnroutableError)
    expect((error as Error).message).toMatch(/'nowhere.at.all' \(message 2 of the batch\)/)
    expect(await copies('batch.orange.x')).toEqual({})
    expect(await unrouted()).toBe(before)
  })

  it('with dedupe keys, message by message', async () => {
    const [a, b] = await t.postbox.publishBatch([
      { routingKey: 'dd.orange.rabbit', payload: 1, dedupeKey: 'k' },
      { routingKey: 'dd.orange.rabbit', payload: 2, dedupeKey: 'k' },
    ])
    expect(a).toMatchObject({ queues: ['q1', 'q2'], duplicates: [] })
    expect(b).toEqual({ queues: ['q1', 'q2'], ids: a?.ids, duplicates: ['q1', 'q2'] })
    expect(await t.postbox.publishBatch([])).toEqual([])
  })
})

describe('bindings', () => {
  it('bind is idempotent; binding again with another filter replaces it; unbind removes it', async () => {
    await t.postbox.createQueue('b1')
    expect(await t.postbox.bind('b1', 'orders.*.created')).toBe(true)
    expect(await t.postbox.bind('b1', 'orders.*.created')).toBe(false)
    expect(await t.postbox.bind('b1', 'orders.*.created', { filter: { region: ['eu', 'us'] } })).toBe(true)
    expect(await t.postbox.bind('b1', 'orders.*.created', { filter: { region: ['eu', 'us'] } })).toBe(false)
    expect(await t.postbox.bind('b1', 'audit.#', { filter: { tier: 'gold' } })).toBe(true)
    expect(await t.postbox.listBindings({ queue: 'b1' })).toEqual([
      { queue: 'b1', pattern: 'audit.#', filter: { tier: 'gold' } },
      { queue: 'b1', pattern: 'orders.*.created', filter: { region: ['eu', 'us'] } },
    ])
    // Binding without a filter (or with {}) removes the filter.
    expect(await t.postbox.bind('b1', 'audit.#', { filter: {} })).toBe(true)
    expect(await t.postbox.listBindings({ queue: 'b1' })).toContainEqual({ queue: 'b1', pattern: 'audit.#', filter: null })
    expect(await t.postbox.unbind('b1', 'audit.#')).toBe(true)
    expect(await t.postbox.unbind('b1', 'audit.#')).toBe(false)
    expect((await t.postbox.listBindings()).filter((b) => b.queue === 'b1').map((b) => b.pattern)).toEqual(['orders.*.created'])
    const rows = await t.sql(`SELECT queue, pattern, filter FROM ${s()}.bindings WHERE queue = 'b1'`)
    expect(rows).toEqual([{ queue: 'b1', pattern: 'orders.*.created', filter: { region: ['eu', 'us'] } }])
  })

  it('header filters: keys AND, listed values OR, a missing header does not match', async () => {
    await t.postbox.createQueue('f1')
    await t.postbox.bind('f1', 'filter.#', { filter: { region: ['eu', 'us'], tier: 'gold' } })
    const reaches = async (headers?: Record<string, string>) =>
      (await t.postbox.publish('filter.x', 1, { headers })).queues.includes('f1')
    expect(await reaches({ region: 'eu', tier: 'gold' })).toBe(true)
    expect(await reaches({ region: 'us', tier: 'gold', other: 'x' })).toBe(true)
    expect(await reaches({ region: 'asia', tier: 'gold' })).toBe(false)
    expect(await reaches({ region: 'eu', tier: 'silver' })).toBe(false)
    expect(await reaches({ region: 'eu' })).toBe(false)
    expect(await reaches({ Region: 'eu', tier: 'gold' })).toBe(false)
    expect(await reaches()).toBe(false)
    expect(await t.postbox.matchingQueues('filter.x', { headers: { region: 'us', tier: 'gold' } })).toEqual(['f1'])
    expect(await t.postbox.matchingQueues('filter.x')).toEqual([])
  })

  it('filter names and values are exact strings, whatever they hold', async () => {
    await t.postbox.createQueue('f2')
    const odd = 'a "quoted" \\ back\\slash, $.x == "y" || true, ünïcødé 😀'
    await t.postbox.bind('f2', 'odd', { filter: { [odd]: odd } })
    expect(await t.postbox.matchingQueues('odd', { headers: { [odd]: odd } })).toEqual(['f2'])
    expect(await t.postbox.matchingQueues('odd', { headers: { [odd]: `${odd} ` } })).toEqual([])
    expect(await t.postbox.matchingQueues('odd', { headers: { x: 'y' } })).toEqual([])
  })

  it('a filter on a header named __proto__ is kept, not dropped into no filter at all', async () => {
    await t.postbox.createQueue('f3')
    const filter = JSON.parse('{"__proto__": "yes"}') as Record<string, string>
    await t.postbox.bind('f3', 'proto', { filter })
    expect((await t.postbox.listBindings({ queue: 'f3' }))[0]?.filter).toEqual(filter)
    expect(await t.postbox.matchingQueues('proto', { headers: JSON.parse('{"__proto__": "yes"}') })).toEqual(['f3'])
    expect(await t.postbox.matchingQueues('proto', { headers: { other: 'yes' } })).toEqual([])
    await expect(t.postbox.bind('f3', 'proto2', { filter: JSON.parse('{"__proto__": 5}') })).rejects.toThrow(InvalidFilterError)
  })

  it('binding an unknown queue fails; deleting a queue removes its bindings', async () => {
    await expect(t.postbox.bind('no-such-queue', 'a.b')).rejects.toThrow(QueueNotFoundError)
    await expect(t.postbox.unbind('no-such-queue', 'a.b')).rejects.toThrow(QueueNotFoundError)
    await t.postbox.createQueue('doomed')
    await t.postbox.bind('doomed', 'doom.#')
    await t.postbox.publish('doom.1', 1)
    await t.postbox.deleteQueue('doomed', { purge: true })
    expect((await t.postbox.listBindings()).filter((b) => b.queue === 'doomed')).toEqual([])
    expect((await t.postbox.publish('doom.2', 2)).queues).toEqual([])
    expect(await t.sql(`SELECT 1 FROM ${s()}.messages WHERE queue = 'doomed'`)).toEqual([])
  })

  it('takes typed queue definitions, whose consumers validate what a publish delivers', async () => {
    const signups = defineQueue({ name: 'typed-signups', schema: z.object({ userId: z.number() }) })
    await t.postbox.createQueue(signups.name)
    await t.postbox.bind(signups, 'user.*.signed-up')
    await t.postbox.publish('user.42.signed-up', { userId: 42 })
    const [m] = await t.postbox.receive(signups)
    expect(m?.payload.userId).toBe(42)
    expect(m?.routingKey).toBe('user.42.signed-up')
    await t.postbox.ack(m!)
  })
})
