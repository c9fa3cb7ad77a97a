import { Kysely, PostgresDialect, type Transaction } from 'kysely'
import pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidOptionsError, InvalidPayloadError, Postbox, type Message } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

beforeAll(async () => {
  for (const name of ['tx', 'kysely', 'delays', 'prio', 'dedupe', 'headers', 'payloads', 'batch', 'batch-dedupe']) {
    await t.postbox.createQueue(name)
  }
})

async function receiveAll(queue: string, max = 100): Promise<Message[]> {
  return t.postbox.receive(queue, { max, visibilityTimeout: '1m' })
}

async function count(queue: string): Promise<number> {
  const [row] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages WHERE queue = $1`, [queue])
  return row?.n ?? -1
}

describe('send on the pool', () => {
  it('commits at once and returns the id as a string', async () => {
    const result = await t.postbox.send('batch', { hello: 'world' })
    expect(result).toEqual({ id: expect.stringMatching(/^\d+$/), duplicate: false })
    const [m] = await receiveAll('batch')
    expect(m).toMatchObject({ id: result.id, queue: 'batch', payload: { hello: 'world' }, attempt: 1, priority: 0, headers: {} })
    await t.postbox.ack(m!)
  })
})

describe('send in a pg transaction', () => {
  it('a rolled-back send is never receivable; a committed one is', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      const rolledBack = await t.postbox.send('tx', { n: 'rolled back' }, { tx: client })
      const batchRolledBack = await t.postbox.sendBatch('tx', [1, 2], { tx: client })
      // Not visible outside the transaction before commit.
      expect(await count('tx')).toBe(0)
      await client.query('ROLLBACK')
      expect(await receiveAll('tx')).toEqual([])
      expect(await t.sql(`SELECT 1 FROM "${t.schema}".messages WHERE id = ANY($1::bigint[])`, [[rolledBack.id, ...batchRolledBack]])).toEqual([])

      await client.query('BEGIN')
      const committed = await t.postbox.send('tx', { n: 'committed' }, { tx: client })
      const batch = await t.postbox.sendBatch('tx', [3, 4], { tx: client })
      expect(await receiveAll('tx')).toEqual([])
      await client.query('COMMIT')
      const got = await receiveAll('tx')
      expect(got.map((m) => m.id).sort()).toEqual([committed.id, ...batch].sort())
      expect(got.map((m) => m.payload)).toEqual(expect.arrayContaining([{ n: 'committed' }, 3, 4]))
      await t.postbox.ack(got)
    } finally {
      client.release()
    }
  })

  it('works with a plain pg Client too', async () => {
    const client = new pg.Client({ connectionString: t.url })
    await client.connect()
    try {
      await client.query('BEGIN')
      const { id } = await t.postbox.send('tx', 'from a Client', { tx: client })
      await client.query('COMMIT')
      const [m] = await receiveAll('tx')
      expect(m).toMatchObject({ id, payload: 'from a Client' })
      await t.postbox.ack(m!)
    } finally {
      await client.end()
    }
  })

  it('the message and the business write commit together', async () => {
    await t.sql(`CREATE TABLE "${t.schema}".orders (id int PRIMARY KEY)`)
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(`INSERT INTO "${t.schema}".orders VALUES (1)`)
      await t.postbox.send('tx', { order: 1 }, { tx: client })
      // The business write then fails: the whole transaction, message included, goes.
      await expect(client.query(`INSERT INTO "${t.schema}".orders VALUES (1)`)).rejects.toThrow(/duplicate key/)
      await client.query('ROLLBACK')
    } finally {
      client.release()
    }
    expect(await count('tx')).toBe(0)
    expect(await t.sql(`SELECT * FROM "${t.schema}".orders`)).toEqual([])
  })
})

describe('send with Kysely', () => {
  it('inside a Kysely Transaction: rolled back -> nothing, committed -> receivable', async () => {
    const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: t.pool }) })
    const rollback = new Error('roll back on purpose')
    let rolledBackId = ''
    await expect(
      db.transaction().execute(async (trx: Transaction<Record<string, never>>) => {
        rolledBackId = (await t.postbox.send('kysely', { k: 'rolled back' }, { tx: trx })).id
        await t.postbox.sendBatch('kysely', ['a', 'b'], { tx: trx })
        throw rollback
      }),
    ).rejects.toBe(rollback)
    expect(rolledBackId).toMatch(/^\d+$/)
    expect(await count('kysely')).toBe(0)

    const ids = await db.transaction().execute(async (trx) => {
      const { id } = await t.postbox.send('kysely', { k: 'committed' }, { tx: trx })
      const batch = await t.postbox.sendBatch('kysely', ['c'], { tx: trx })
      expect(await count('kysely')).toBe(0)
      return [id, ...batch]
    })
    const got = await receiveAll('kysely')
    expect(got.map((m) => m.id).sort()).toEqual(ids.sort())
    await t.postbox.ack(got, { tx: db })
    expect(await count('kysely')).toBe(0)
    // The pool belongs to the test schema; Kysely must not end it.
  })

  it('with a Kysely instance (no transaction) the send commits at once', async () => {
    const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool: t.pool }) })
    const { id } = await t.postbox.send('kysely', 'via kysely', { tx: db })
    expect(await count('kysely')).toBe(1)
    const [m] = await receiveAll('kysely')
    expect(m).toMatchObject({ id, payload: 'via kysely' })
    await t.postbox.ack(m!)
  })
})

describe('delay and availableAt', () => {
  it('a delayed message is not delivered before its time, then is', async () => {
    // An hour, not a moment: a loaded machine must not let the delay pass before the receive below.
    const { id } = await t.postbox.send('delays', 'later', { delay: '1h' })
    const [row] = await t.sql<{ delay_ms: number }>(
      `SELECT extract(epoch FROM available_at - enqueued_at) * 1000 AS delay_ms FROM "${t.schema}".messages WHERE id = $1`,
      [id],
    )
    // The delay counts from the send (clock_timestamp), a moment after the transaction began.
    expect(Number(row?.delay_ms)).toBeGreaterThanOrEqual(3_600_000)
    expect(Number(row?.delay_ms)).toBeLessThan(3_601_000)
    expect(await receiveAll('delays')).toEqual([])
    expect((await t.postbox.stats('delays'))[0]).toMatchObject({ ready: 0, delayed: 1 })
    // Move the message's time instead of sleeping.
    await t.sql(`UPDATE "${t.schema}".messages SET available_at = now() WHERE id = $1`, [id])
    const [m] = await receiveAll('delays')
    expect(m?.id).toBe(id)
    await t.postbox.ack(m!)
  })

  it('availableAt in the future holds the message, in the past releases it at once', async () => {
    const future = await t.postbox.send('delays', 'future', { availableAt: new Date(Date.now() + 3_600_000) })
    const past = await t.postbox.send('delays', 'past', { availableAt: new Date(Date.now() - 60_000) })
    const got = await receiveAll('delays')
    expect(got.map((m) => m.id)).toEqual([past.id])
    const [row] = await t.sql<{ in_future: boolean }>(
      `SELECT available_at > now() + interval '59 minutes' AS in_future FROM "${t.schema}".messages WHERE id = $1`,
      [future.id],
    )
    expect(row?.in_future).toBe(true)
    await t.postbox.ack(got)
    await t.sql(`DELETE FROM "${t.schema}".messages WHERE id = $1`, [future.id])
  })

  it('per-item delays in a batch are honoured in order', async () => {
    const ids = await t.postbox.sendBatch('delays', [
      { payload: 0, delay: '1h' },
      1,
      { payload: 2, delay: '2h' },
      { payload: 3, availableAt: new Date(Date.now() - 1000) },
    ])
    const rows = await t.sql<{ id: string; hours: number }>(
      `SELECT id, round(extract(epoch FROM available_at - now()) / 3600)::int AS hours FROM "${t.schema}".messages WHERE id = ANY($1::bigint[])`,
      [ids],
    )
    const hours = new Map(rows.map((r) => [r.id, r.hours]))
    expect(ids.map((id) => hours.get(id))).toEqual([1, 0, 2, 0])
    const got = await receiveAll('delays')
    expect(got.map((m) => m.payload).sort()).toEqual([1, 3])
    await t.postbox.ack(got)
    await t.sql(`DELETE FROM "${t.schema}".messages WHERE queue = 'delays'`)
  })
})

describe('priority', () => {
  it('higher priority first, then availability, then id', async () => {
    await t.postbox.send('prio', 'low-1', { priority: -5 })
    await t.postbox.send('prio', 'mid-1')
    await t.postbox.send('prio', 'high-1', { priority: 10 })
    await t.postbox.send('prio', 'mid-2')
    await t.postbox.sendBatch('prio', [{ payload: 'high-2', priority: 10 }, { payload: 'mid-0', availableAt: new Date(Date.now() - 60_000) }])
    const order: unknown[] = []
    for (;;) {
      const [m] = await t.postbox.receive('prio')
      if (!m) break
      order.push(m.payload)
      expect(m.priority).toBe(String(m.payload).startsWith('high') ? 10 : String(m.payload).startsWith('low') ? -5 : 0)
      await t.postbox.ack(m)
    }
    expect(order).toEqual(['high-1', 'high-2', 'mid-0', 'mid-1', 'mid-2', 'low-1'])
  })

  it('a batch receive returns messages in delivery order', async () => {
    await t.postbox.sendBatch('prio', [{ payload: 'a', priority: 1 }, { payload: 'b', priority: 3 }, { payload: 'c', priority: 2 }])
    const got = await receiveAll('prio')
    expect(got.map((m) => m.payload)).toEqual(['b', 'c', 'a'])
    await t.postbox.ack(got)
  })
})

describe('dedupe keys', () => {
  it('20 concurrent senders with one key make one message; all get its id', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => t.postbox.send('dedupe', { sender: i }, { dedupeKey: 'order:1' })),
    )
    const ids = new Set(results.map((r) => r.id))
    expect(ids.size).toBe(1)
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
    expect(results.filter((r) => r.duplicate)).toHaveLength(19)
    expect(await count('dedupe')).toBe(1)
  })

  it('20 concurrent senders in open transactions: exactly one commits a message', async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => t.pool.connect()))
    try {
      await Promise.all(clients.map((c) => c.query('BEGIN')))
      const sends = clients.map((c, i) =>
        t.postbox.send('dedupe', { sender: i }, { dedupeKey: 'order:2', tx: c }).then(async (r) => {
          await c.query('COMMIT')
          return r
        }),
      )
      const results = await Promise.all(sends)
      expect(new Set(results.map((r) => r.id)).size).toBe(1)
      expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
    } finally {
      clients.forEach((c) => c.release())
    }
    const rows = await t.sql(`SELECT id FROM "${t.schema}".messages WHERE queue = 'dedupe' AND dedupe_key = 'order:2'`)
    expect(rows).toHaveLength(1)
  })

  it('a rolled-back holder of the key lets a waiting sender insert', async () => {
    const holder = await t.pool.connect()
    try {
      await holder.query('BEGIN')
      const held = await t.postbox.send('dedupe', 'held', { dedupeKey: 'order:3', tx: holder })
      const waiting = t.postbox.send('dedupe', 'waiter', { dedupeKey: 'order:3' })
      await holder.query('ROLLBACK')
      const result = await waiting
      expect(result.duplicate).toBe(false)
      expect(result.id).not.toBe(held.id)
    } finally {
      holder.release()
    }
  })

  it('the key holds while the message waits or is in flight, and is free again after ack', async () => {
    const first = await t.postbox.send('dedupe', 'one', { dedupeKey: 'order:4' })
    expect(await t.postbox.send('dedupe', 'two', { dedupeKey: 'order:4' })).toEqual({ id: first.id, duplicate: true })
    const got = await receiveAll('dedupe')
    const inFlight = got.find((m) => m.id === first.id)!
    expect(inFlight.dedupeKey).toBe('order:4')
    expect(await t.postbox.send('dedupe', 'three', { dedupeKey: 'order:4' })).toEqual({ id: first.id, duplicate: true })
    await t.postbox.ack(got)
    const again = await t.postbox.send('dedupe', 'four', { dedupeKey: 'order:4' })
    expect(again.duplicate).toBe(false)
    expect(again.id).not.toBe(first.id)
    // Keys are per queue.
    expect((await t.postbox.send('batch', 'other queue', { dedupeKey: 'order:4' })).duplicate).toBe(false)
    await t.sql(`DELETE FROM "${t.schema}".messages WHERE queue IN ('dedupe', 'batch')`)
  })

  it('sendBatch resolves keys against stored messages and within the batch', async () => {
    const existing = await t.postbox.send('batch-dedupe', 'existing', { dedupeKey: 'k1' })
    const ids = await t.postbox.sendBatch('batch-dedupe', [
      { payload: 'dup of existing', dedupeKey: 'k1' },
      { payload: 'new', dedupeKey: 'k2' },
      { payload: 'dup within batch', dedupeKey: 'k2' },
      'no key',
    ])
    expect(ids[0]).toBe(existing.id)
    expect(ids[2]).toBe(ids[1])
    expect(new Set(ids).size).toBe(3)
    expect(await count('batch-dedupe')).toBe(3)
  })
})

describe('headers', () => {
  it('round-trip and are stored as a JSON object', async () => {
    const headers = { traceparent: '00-abc-def-01', 'x-tenant': 'acme', empty: '' }
    const { id } = await t.postbox.send('headers', { n: 1 }, { headers })
    const [row] = await t.sql(`SELECT headers FROM "${t.schema}".messages WHERE id = $1`, [id])
    expect(row?.headers).toEqual(headers)
    const [m] = await receiveAll('headers')
    expect(m?.headers).toEqual(headers)
    await t.postbox.ack(m!)
  })

  it('must be a map of strings', async () => {
    const before = await count('headers')
    await expect(t.postbox.send('headers', 1, { headers: { n: 1 } as never })).rejects.toThrow(InvalidOptionsError)
    await expect(t.postbox.sendBatch('headers', [{ payload: 1, headers: { n: null } as never }])).rejects.toThrow(InvalidOptionsError)
    expect(await count('headers')).toBe(before)
  })
})

describe('payloads round-trip exactly', () => {
  const nasty = 'nul \u0000 tab \t quote " backslash \\ emoji 😀👩‍👩‍👧 cjk 漢字 rtl عربى'
  const json = { s: 'héllo 😀', n: 1.5, i: -42, big: 2 ** 53 - 1, b: true, z: null, a: [1, 'two', { three: 3 }], nested: { deep: { er: [] } } }
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const cases: [string, unknown][] = [
    ['a JSON object', json],
    ['a JSON array', [1, 2, 3]],
    ['a JSON number', 42],
    ['a JSON boolean', false],
    ['JSON null', null],
    ['a string with \\u0000, quotes and emoji', nasty],
    ['an empty string', ''],
    ['a string that looks like JSON', '{"a":1}'],
    ['a Buffer of every byte', binary],
    ['an empty Buffer', Buffer.alloc(0)],
  ]

  for (const send of ['send', 'sendBatch'] as const) {
    for (const [what, payload] of cases) {
      it(`${what} (${send})`, async () => {
        const id = send === 'send' ? (await t.postbox.send('payloads', payload)).id : (await t.postbox.sendBatch('payloads', [payload]))[0]
        const [m] = await receiveAll('payloads')
        expect(m?.id).toBe(id)
        if (Buffer.isBuffer(payload)) {
          expect(Buffer.isBuffer(m?.payload)).toBe(true)
          expect((m?.payload as Buffer).equals(payload)).toBe(true)
        } else {
          expect(m?.payload).toStrictEqual(payload)
        }
        await t.postbox.ack(m!)
      })
    }
  }

  it('a Uint8Array view into a larger buffer stores only its own bytes', async () => {
    const backing = new Uint8Array([9, 9, 1, 2, 0, 255, 9, 9])
    const view = backing.subarray(2, 6)
    await t.postbox.send('payloads', view)
    const [m] = await receiveAll('payloads')
    expect([...(m?.payload as Uint8Array)]).toEqual([1, 2, 0, 255])
    const [row] = await t.sql<{ encoding: string; body: Buffer }>(`SELECT encoding, body FROM "${t.schema}".messages WHERE id = $1`, [m!.id])
    expect(row?.encoding).toBe('binary')
    expect([...row!.body]).toEqual([1, 2, 0, 255])
    await t.postbox.ack(m!)
  })

  it('a mixed batch keeps each payload with its own encoding', async () => {
    const payloads: unknown[] = [{ j: 1 }, 'text 😀\u0000', Buffer.from([0, 1, 2]), [null]]
    const ids = await t.postbox.sendBatch('payloads', payloads)
    const got = await receiveAll('payloads')
    expect(got.map((m) => m.id)).toEqual(ids)
    expect(got[0]?.payload).toEqual({ j: 1 })
    expect(got[1]?.payload).toBe('text 😀\u0000')
    expect([...(got[2]?.payload as Buffer)]).toEqual([0, 1, 2])
    expect(got[3]?.payload).toEqual([null])
    await t.postbox.ack(got)
  })

  it('text is stored as UTF-8 bytes, JSON as jsonb readable with SQL', async () => {
    const text = await t.postbox.send('payloads', 'ünïcode 😀')
    const obj = await t.postbox.send('payloads', { to: 'a@b.c' })
    const rows = await t.sql<{ id: string; encoding: string; text: string | null; to: string | null }>(
      `SELECT id, encoding, convert_from(body, 'UTF8') AS text, payload->>'to' AS to FROM "${t.schema}".messages WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [[text.id, obj.id]],
    )
    expect(rows).toEqual([
      { id: text.id, encoding: 'text', text: 'ünïcode 😀', to: null },
      { id: obj.id, encoding: 'json', text: null, to: 'a@b.c' },
    ])
    await t.postbox.ack(await receiveAll('payloads'))
  })

  it('refuses what JSON or UTF-8 cannot hold, writing nothing', async () => {
    const before = await count('payloads')
    const circular: Record<string, unknown> = {}
    circular.self = circular
    await expect(t.postbox.send('payloads', circular)).rejects.toThrow(InvalidPayloadError)
    await expect(t.postbox.send('payloads', undefined)).rejects.toThrow(InvalidPayloadError)
    await expect(t.postbox.send('payloads', () => 1)).rejects.toThrow(InvalidPayloadError)
    await expect(t.postbox.send('payloads', 10n)).rejects.toThrow(InvalidPayloadError)
    await expect(t.postbox.send('payloads', 'lone surrogate \ud800')).rejects.toThrow(InvalidPayloadError)
    // jsonb has no room for U+0000 inside JSON strings: send such text as a string payload instead.
    await expect(t.postbox.send('payloads', { s: 'nul \u0000' })).rejects.toThrow(InvalidPayloadError)
    await expect(t.postbox.sendBatch('payloads', [{ ok: 1 }, { s: '\u0000' }])).rejects.toThrow(InvalidPayloadError)
    expect(await count('payloads')).toBe(before)
  })
})

describe('sendBatch', () => {
  it('1,000 messages come back in input order, with one id each', async () => {
    const payloads = Array.from({ length: 1000 }, (_, i) => ({ i }))
    const ids = await t.postbox.sendBatch('batch', payloads)
    expect(ids).toHaveLength(1000)
    expect(new Set(ids).size).toBe(1000)
    const rows = await t.sql<{ id: string; i: number }>(
      `SELECT id, (payload->>'i')::int AS i FROM "${t.schema}".messages WHERE id = ANY($1::bigint[])`,
      [ids],
    )
    const byId = new Map(rows.map((r) => [r.id, r.i]))
    expect(ids.map((id) => byId.get(id))).toEqual(payloads.map((p) => p.i))
    // Atomic: every row was written by the same transaction.
    const [stamp] = await t.sql<{ xids: number }>(
      `SELECT count(DISTINCT xmin::text)::int AS xids FROM "${t.schema}".messages WHERE id = ANY($1::bigint[])`,
      [ids],
    )
    expect(stamp).toEqual({ xids: 1 })
    await t.sql(`DELETE FROM "${t.schema}".messages WHERE queue = 'batch'`)
  })

  it('send, sendBatch, receive of 1,000 and ack of 1,000 are one round trip each', async () => {
    const statements: string[] = []
    const counting = {
      // Statements that ran: a named one a pooler refused (and that ran again unnamed) is not a round trip of the API.
      query: async (text: string, values?: unknown[]) => {
        const result = await t.pool.query(text, values)
        statements.push(text)
        return result
      },
      connect: () => t.pool.connect(),
    }
    const postbox = new Postbox({ pool: counting, schema: t.schema })
    try {
      const rounds = async (fn: () => Promise<unknown>) => {
        statements.length = 0
        await fn()
        return statements.length
      }
      expect(await rounds(() => postbox.send('batch', { one: 1 }, { priority: 1 }))).toBe(1)
      expect(await rounds(() => postbox.sendBatch('batch', Array.from({ length: 999 }, (_, i) => ({ payload: i, delay: 0 }))))).toBe(1)
      let got: Message[] = []
      expect(await rounds(async () => (got = await postbox.receive('batch', { max: 1000 })))).toBe(1)
      expect(got).toHaveLength(1000)
      expect(await rounds(() => postbox.ack(got))).toBe(1)
      expect(await count('batch')).toBe(0)
    } finally {
      await postbox.close()
    }
  })

  it('an empty batch writes nothing and returns no ids', async () => {
    expect(await t.postbox.sendBatch('batch', [])).toEqual([])
  })

  it('an item is an envelope only with payload and known option keys', async () => {
    const items: unknown[] = [{ payload: 'x', priority: 2 }, { payload: 'y', note: 'not an option' }]
    const ids = await t.postbox.sendBatch('batch', items)
    const got = await receiveAll('batch')
    expect(got.map((m) => m.id)).toEqual(ids)
    expect(got[0]).toMatchObject({ payload: 'x', priority: 2 })
    expect(got[1]).toMatchObject({ payload: { payload: 'y', note: 'not an option' }, priority: 0 })
    await t.postbox.ack(got)
  })
})
