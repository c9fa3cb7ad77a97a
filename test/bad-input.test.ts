import { beforeAll, describe, expect, it } from 'vitest'
import {
  InvalidOptionsError,
  InvalidPayloadError,
  InvalidQueueNameError,
  PayloadTooLargeError,
  PostboxError,
  QueueNotFoundError,
} from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

beforeAll(async () => {
  await t.postbox.createQueue('valid')
  await t.postbox.createQueue('small', { maxPayloadBytes: 100 })
})

/** Every row of every table a send could write to. */
async function rowCounts(): Promise<Record<string, number>> {
  const [row] = await t.sql<Record<string, number>>(
    `SELECT (SELECT count(*)::int FROM "${t.schema}".messages) AS messages,
            (SELECT count(*)::int FROM "${t.schema}".messages_archive) AS archive,
            (SELECT count(*)::int FROM "${t.schema}".queues) AS queues`,
  )
  return row!
}

type ErrorClass = new (...args: never[]) => Error

/** Runs a call that must be refused with `type`, and checks that it wrote nothing. */
async function refused(call: () => Promise<unknown>, type: ErrorClass, message?: RegExp): Promise<Error> {
  const before = await rowCounts()
  const error = await call().then(
    () => new Error('the call was not refused'),
    (e: Error) => e,
  )
  expect(error, error.message).toBeInstanceOf(type)
  expect(error).toBeInstanceOf(PostboxError)
  if (message) expect(error.message).toMatch(message)
  expect(await rowCounts()).toEqual(before)
  return error
}

const badNames: [string, unknown][] = [
  ['spaces', 'my queue'],
  ['single quotes', "it's"],
  ['double quotes', 'a"b'],
  ['SQL', "x'); DROP TABLE messages; --"],
  ['200 characters', 'a'.repeat(200)],
  ['64 characters', 'a'.repeat(64)],
  ['uppercase', 'Emails'],
  ['empty', ''],
  ['a leading dot', '.hidden'],
  ['a slash', 'a/b'],
  ['unicode', 'émails'],
  ['a newline', 'a\nb'],
  ['not a string', 42],
  ['undefined', undefined],
]

describe('invalid queue names', () => {
  for (const [what, name] of badNames) {
    it(`${what}: refused everywhere with InvalidQueueNameError, nothing written`, async () => {
      const q = name as string
      const error = await refused(() => t.postbox.send(q, { a: 1 }), InvalidQueueNameError, /invalid queue name.*a-z, 0-9/)
      expect(error.message.length).toBeLessThan(300) // long names are cut in the message
      await refused(() => t.postbox.send(q, { a: 1 }, { delay: 0 }), InvalidQueueNameError)
      await refused(() => t.postbox.sendBatch(q, [1, 2]), InvalidQueueNameError)
      await refused(() => t.postbox.createQueue(q), InvalidQueueNameError)
      await refused(() => t.postbox.receive(q), InvalidQueueNameError)
      await refused(() => t.postbox.getQueue(q), InvalidQueueNameError)
      await refused(() => t.postbox.deleteQueue(q), InvalidQueueNameError)
      await refused(() => t.postbox.updateQueue(q, {}), InvalidQueueNameError)
      await refused(() => t.postbox.redrive(q), InvalidQueueNameError)
      // A non-string `to` is a wrong option type, and an undefined one means "back where it came from".
      if (typeof name === 'string') await refused(() => t.postbox.redrive('valid.dead', { to: q }), InvalidQueueNameError)
    })
  }

  it('the SQL layer refuses them too (for callers that bypass the TypeScript checks)', async () => {
    for (const [, name] of badNames.filter(([, n]) => typeof n === 'string')) {
      const before = await rowCounts()
      const error = await t.sql(`SELECT "${t.schema}".send($1, '{}')`, [name]).catch((e: { code?: string }) => e)
      expect((error as { code?: string }).code).toBe('PBQ02')
      expect(await rowCounts()).toEqual(before)
    }
    await expect(t.sql(`INSERT INTO "${t.schema}".queues (name) VALUES ('Bad Name')`)).rejects.toThrow(/queues_name_valid/)
  })
})

describe('unknown queues', () => {
  it('send, sendBatch, receive, update, delete and redrive say QueueNotFoundError and name the queue', async () => {
    const error = await refused(() => t.postbox.send('missing', 1), QueueNotFoundError, /'missing' does not exist.*createQueue/)
    expect((error as QueueNotFoundError).queue).toBe('missing')
    await refused(() => t.postbox.sendBatch('missing', [1, 2, 3]), QueueNotFoundError)
    await refused(() => t.postbox.send('missing', 'x', { dedupeKey: 'k' }), QueueNotFoundError)
    await refused(() => t.postbox.receive('missing'), QueueNotFoundError)
    await refused(() => t.postbox.updateQueue('missing', { maxAttempts: 2 }), QueueNotFoundError)
    await refused(() => t.postbox.deleteQueue('missing'), QueueNotFoundError)
    await refused(() => t.postbox.redrive('missing'), QueueNotFoundError)
  })

  it('inside the caller transaction too', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await refused(() => t.postbox.send('missing', 1, { tx: client }), QueueNotFoundError)
    } finally {
      await client.query('ROLLBACK')
      client.release()
    }
  })
})

describe('oversize payloads', () => {
  const big = 'x'.repeat(300 * 1024)

  it('over the default 256 KiB: JSON, text and binary, send and sendBatch', async () => {
    await refused(() => t.postbox.send('valid', { big }), PayloadTooLargeError, /over the limit of 262144 bytes.*maxPayloadBytes/)
    await refused(() => t.postbox.send('valid', big), PayloadTooLargeError)
    await refused(() => t.postbox.send('valid', Buffer.alloc(300 * 1024)), PayloadTooLargeError)
    await refused(() => t.postbox.sendBatch('valid', ['fine', big]), PayloadTooLargeError)
    await refused(() => t.postbox.sendBatch('valid', [{ payload: 'ok', dedupeKey: 'a' }, { payload: big, dedupeKey: 'b' }]), PayloadTooLargeError)
  })

  it('over a queue limit of its own, counted in bytes not characters', async () => {
    await refused(() => t.postbox.send('small', 'x'.repeat(101)), PayloadTooLargeError, /limit of 100 bytes for queue 'small'/)
    await refused(() => t.postbox.send('small', '😀'.repeat(26)), PayloadTooLargeError) // 104 bytes in UTF-8
    // At the limit it fits.
    const { id } = await t.postbox.send('small', 'x'.repeat(100))
    expect(id).toMatch(/^\d+$/)
    await t.sql(`DELETE FROM "${t.schema}".messages WHERE id = $1`, [id])
  })
})

describe('nonsense options', () => {
  const cases: [string, () => Promise<unknown>][] = [
    ['negative delay', () => t.postbox.send('valid', 1, { delay: -1 })],
    ['negative delay string', () => t.postbox.send('valid', 1, { delay: '-5s' })],
    ['unparseable delay', () => t.postbox.send('valid', 1, { delay: 'tomorrow' })],
    ['NaN delay', () => t.postbox.send('valid', 1, { delay: Number.NaN })],
    ['negative delay in a batch item', () => t.postbox.sendBatch('valid', [1, { payload: 2, delay: -100 }])],
    ['delay and availableAt', () => t.postbox.send('valid', 1, { delay: 10, availableAt: new Date() })],
    ['invalid date', () => t.postbox.send('valid', 1, { availableAt: new Date('nope') })],
    ['fractional priority', () => t.postbox.send('valid', 1, { priority: 1.5 })],
    ['huge priority', () => t.postbox.send('valid', 1, { priority: 10_000_000 })],
    ['empty dedupe key', () => t.postbox.send('valid', 1, { dedupeKey: '' })],
    ['long group key', () => t.postbox.send('valid', 1, { groupKey: 'g'.repeat(513) })],
    ['non-string header', () => t.postbox.send('valid', 1, { headers: { a: 1 } as never })],
    ['U+0000 in a header', () => t.postbox.send('valid', 1, { headers: { a: 'x\u0000' } })],
    ['U+0000 in a dedupe key', () => t.postbox.send('valid', 1, { dedupeKey: 'k\u0000' })],
    ['U+0000 in a batch group key', () => t.postbox.sendBatch('valid', [{ payload: 1, groupKey: '\u0000' }])],
    ['unknown send option', () => t.postbox.send('valid', 1, { dely: '5s' } as never)],
    ['unknown sendBatch option', () => t.postbox.sendBatch('valid', [1], { delay: 5 } as never)],
    ['a tx that is not one', () => t.postbox.send('valid', 1, { tx: 'client' as never })],
    ['sendBatch of a non-array', () => t.postbox.sendBatch('valid', 'abc' as never)],
    ['a batch over 10,000', () => t.postbox.sendBatch('valid', Array.from({ length: 10_001 }, () => 1))],
    ['unknown receive option', () => t.postbox.receive('valid', { limit: 5 } as never)],
    ['receive max 0', () => t.postbox.receive('valid', { max: 0 })],
    ['unknown queue option', () => t.postbox.createQueue('new-queue', { retries: 5 } as never)],
    ['negative visibility timeout', () => t.postbox.createQueue('new-queue', { visibilityTimeout: -1 })],
  ]
  for (const [what, call] of cases) {
    it(`${what}: InvalidOptionsError, nothing written`, async () => {
      await refused(call, InvalidOptionsError)
    })
  }

  it('the error names the option and what is wrong with it', async () => {
    const error = await refused(() => t.postbox.send('valid', 1, { delay: -1, colour: 'red' } as never), InvalidOptionsError)
    expect(error.message).toMatch(/delay/)
    expect(error.message).toMatch(/colour/)
  })

  it('a refused send inside a transaction leaves the transaction usable', async () => {
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await refused(() => t.postbox.send('valid', 1, { tx: client, delay: -1 }), InvalidOptionsError)
      await refused(() => t.postbox.send('Bad Name', 1, { tx: client }), InvalidQueueNameError)
      const { id } = await t.postbox.send('valid', 'after', { tx: client })
      await client.query('COMMIT')
      const [m] = await t.postbox.receive('valid')
      expect(m).toMatchObject({ id, payload: 'after' })
      await t.postbox.ack(m!)
    } finally {
      client.release()
    }
  })
})

describe('unstorable payloads', () => {
  it('refuses with InvalidPayloadError and writes nothing', async () => {
    await refused(() => t.postbox.send('valid', undefined), InvalidPayloadError)
    await refused(() => t.postbox.send('valid', Symbol('s')), InvalidPayloadError)
    await refused(() => t.postbox.send('valid', { s: '\u0000' }), InvalidPayloadError, /JSON/)
    await refused(() => t.postbox.sendBatch('valid', [1, undefined]), InvalidPayloadError)
  })
})
