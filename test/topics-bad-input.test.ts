import { beforeAll, describe, expect, it } from 'vitest'
import {
  InvalidFilterError,
  InvalidOptionsError,
  InvalidPatternError,
  InvalidQueueNameError,
  InvalidRoutingKeyError,
  PostboxError,
  QueueNotFoundError,
} from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

// Bad input to bind, unbind, publish and publishBatch: refused with a typed error, from
// TypeScript and from SQL alike, and nothing written (row counts of every table compared).
const t = useTestSchema()
const s = () => `"${t.schema}"`

beforeAll(async () => {
  await t.postbox.createQueue('target')
  await t.postbox.bind('target', '#')
})

async function rowCounts(): Promise<string> {
  const [row] = await t.sql(
    `SELECT (SELECT count(*) FROM ${s()}.messages) AS messages, (SELECT count(*) FROM ${s()}.bindings) AS bindings,
            (SELECT json_agg(b ORDER BY b.queue, b.pattern) FROM ${s()}.bindings b) AS binding_rows,
            (SELECT count FROM ${s()}.unrouted_stats) AS unrouted`)
  return JSON.stringify(row)
}

/** Runs a call that must be refused with `type`, and checks that nothing was written. */
async function refused(call: () => Promise<unknown>, type: new (...args: never[]) => Error): Promise<Error> {
  const before = await rowCounts()
  const error = await call().then(() => new Error('accepted'), (e: Error) => e)
  expect(error, `${error.name}: ${error.message}`).toBeInstanceOf(type)
  expect(error).toBeInstanceOf(PostboxError)
  expect(await rowCounts()).toBe(before)
  return error
}

/** The SQLSTATE a statement fails with, checking that nothing was written. */
async function sqlState(text: string, values?: unknown[]): Promise<string | undefined> {
  const before = await rowCounts()
  const code = await t.sql(text, values).then(() => 'no error', (e: { code?: string }) => e.code)
  expect(await rowCounts()).toBe(before)
  return code
}

const BAD_KEYS: readonly [unknown, RegExp][] = [
  ['', /must not be empty/],
  ['a..b', /empty word/],
  ['.a', /empty word/],
  ['a.', /empty word/],
  ['.', /empty word/],
  ['a.*', /wildcard/],
  ['a.#.b', /wildcard/],
  ['orders eu', /character other than/],
  ['orders/eu', /character other than/],
  ['ordérs', /character other than/],
  [`${'a.'.repeat(127)}ab`, /at most 255 bytes, got 256/],
  [null, /must be a string/],
  [42, /must be a string/],
]

const BAD_PATTERNS: readonly [unknown, RegExp][] = [
  ['', /must not be empty/],
  ['a..b', /empty word/],
  ['a.', /empty word/],
  ['a*', /wildcard inside a word/],
  ['log*', /wildcard inside a word/],
  ['a.*b.c', /wildcard inside a word/],
  ['#a', /wildcard inside a word/],
  ['a.##', /wildcard inside a word/],
  ['a b', /character other than/],
  [`${'a.'.repeat(127)}#.`, /at most 255 bytes/],
  [undefined, /must be a string/],
]

const BAD_FILTERS: readonly unknown[] = [
  'region=eu',
  ['eu'],
  42,
  { region: 1 },
  { region: ['eu', 2] },
  { region: [] },
  { region: null },
  { region: { eu: true } },
  { '': 'x' },
  { region: 'a\u0000b' },
]

describe('publish with bad input', () => {
  it('refuses bad routing keys with InvalidRoutingKeyError, from TypeScript and from SQL (PBR01)', async () => {
    for (const [key, message] of BAD_KEYS) {
      const error = await refused(() => t.postbox.publish(key as string, { n: 1 }), InvalidRoutingKeyError)
      expect(error.message).toMatch(message)
      await refused(() => t.postbox.publishBatch([{ routingKey: 'ok', payload: 1 }, { routingKey: key as string, payload: 2 }]), InvalidRoutingKeyError)
      await refused(() => t.postbox.matchingQueues(key as string), InvalidRoutingKeyError)
      if (typeof key !== 'string') continue
      expect(await sqlState(`SELECT ${s()}.publish($1, '{}')`, [key]), key).toBe('PBR01')
      expect(await sqlState(`SELECT ${s()}.matching_queues($1)`, [key]), key).toBe('PBR01')
    }
    expect(await sqlState(`SELECT ${s()}.publish(NULL, '{}')`)).toBe('PBR01')
  })

  it('the SQL error says what is wrong, as the TypeScript one does', async () => {
    const client = await t.pool.connect()
    try {
      const failed = await client.query(`SELECT * FROM ${s()}.publish_message('a..b', '{}', NULL, 'json', NULL, NULL, 0, NULL, NULL, NULL)`)
        .then(() => undefined, (e: { code: string; message: string }) => e)
      expect(failed).toMatchObject({ code: 'PBR01', message: expect.stringMatching(/'a\.\.b' has an empty word/) })
    } finally {
      client.release()
    }
  })

  it('refuses bad options and payloads, and checks them even when nothing would match', async () => {
    await refused(() => t.postbox.publish('ok', 1, { unrouted: 'drop' } as never), InvalidOptionsError)
    await refused(() => t.postbox.publish('ok', 1, { delay: '-1s' }), InvalidOptionsError)
    await refused(() => t.postbox.publish('ok', 1, { priority: 1.5 }), InvalidOptionsError)
    await refused(() => t.postbox.publish('ok', 1, { headers: { a: 1 } } as never), InvalidOptionsError)
    await refused(() => t.postbox.publish('ok', 1, { queue: 'target' } as never), InvalidOptionsError)
    await refused(() => t.postbox.publishBatch([{ routingKey: 'ok', payload: 1, delay: 'soon' }]), InvalidOptionsError)
    await refused(() => t.postbox.publishBatch([{ payload: 1 } as never]), InvalidRoutingKeyError)
    await refused(() => t.postbox.publishBatch('ok' as never), InvalidOptionsError)
    await refused(() => t.postbox.publishBatch([], { unrouted: 'never' } as never), InvalidOptionsError)
    expect(await sqlState(`SELECT ${s()}.publish('ok', '{}', unrouted => 'drop')`)).toBe('PBV01')
    expect(await sqlState(`SELECT ${s()}.publish('ok', '{}', delay => '-1 second')`)).toBe('PBV01')
    expect(await sqlState(`SELECT ${s()}.publish('ok', '{}', headers => '{"a":1}')`)).toBe('PBV01')
    expect(await sqlState(`SELECT ${s()}.publish('ok', '{}', group_key => '')`)).toBe('PBV01')
    // With no binding at all, a bad message is refused, not counted as unrouted.
    await t.sql(`DELETE FROM ${s()}.bindings`)
    try {
      expect(await sqlState(`SELECT ${s()}.publish('ok', '{}', delay => '-1 second')`)).toBe('PBV01')
      await refused(() => t.postbox.publish('ok', 1, { delay: -5 } as never), InvalidOptionsError)
    } finally {
      await t.postbox.bind('target', '#')
    }
  })
})

describe('bind with bad input', () => {
  it('refuses bad patterns with InvalidPatternError, from TypeScript and from SQL (PBR02)', async () => {
    for (const [pattern, message] of BAD_PATTERNS) {
      const error = await refused(() => t.postbox.bind('target', pattern as string), InvalidPatternError)
      expect(error.message).toMatch(message)
      await refused(() => t.postbox.unbind('target', pattern as string), InvalidPatternError)
      if (typeof pattern !== 'string') continue
      expect(await sqlState(`SELECT ${s()}.bind('target', $1)`, [pattern]), pattern).toBe('PBR02')
      expect(await sqlState(`SELECT ${s()}.unbind('target', $1)`, [pattern]), pattern).toBe('PBR02')
      // A binding written by hand is checked by the table itself.
      expect(await sqlState(`INSERT INTO ${s()}.bindings (queue, pattern) VALUES ('target', $1)`, [pattern]), pattern).toBe('23514')
    }
  })

  it('refuses bad filters with InvalidFilterError, from TypeScript and from SQL (PBR03)', async () => {
    for (const filter of BAD_FILTERS) {
      await refused(() => t.postbox.bind('target', 'f.#', { filter: filter as never }), InvalidFilterError)
      if (JSON.stringify(filter).includes('\\u0000')) continue
      expect(await sqlState(`SELECT ${s()}.bind('target', 'f.#', $1::jsonb)`, [JSON.stringify(filter)]), JSON.stringify(filter)).toBe('PBR03')
    }
    const huge = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`header-${i}`, 'x'.repeat(30)]))
    await refused(() => t.postbox.bind('target', 'f.#', { filter: huge }), InvalidFilterError)
    await refused(() => t.postbox.bind('target', 'f.#', { filters: {} } as never), InvalidOptionsError)
  })

  it('refuses unknown queues and bad queue names', async () => {
    await refused(() => t.postbox.bind('missing', 'a.#'), QueueNotFoundError)
    await refused(() => t.postbox.bind('Not A Queue', 'a.#'), InvalidQueueNameError)
    await refused(() => t.postbox.unbind('missing', 'a.#'), QueueNotFoundError)
    await refused(() => t.postbox.listBindings({ queue: 'Not A Queue' }), InvalidQueueNameError)
    expect(await sqlState(`SELECT ${s()}.bind('missing', 'a.#')`)).toBe('PBQ01')
    expect(await sqlState(`SELECT ${s()}.bind('Bad Name', 'a.#')`)).toBe('PBQ02')
    expect(await sqlState(`INSERT INTO ${s()}.bindings (queue, pattern) VALUES ('missing', 'a.#')`)).toBe('23503')
  })
})
