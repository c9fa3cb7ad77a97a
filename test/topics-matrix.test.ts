import fc from 'fast-check'
import pg from 'pg'
import { beforeAll, describe, expect, it } from 'vitest'
import { routingKeyProblem, patternProblem } from '../src/routing/topic-syntax.js'
import { withSessionSettings } from './support/backends.js'
import { topicMatches } from './support/topic-reference.js'
import { useTestSchema } from './support/test-schema.js'

// RabbitMQ's topic rules, case by case, through the SQL publish and the TypeScript publish. The
// expected values come from RabbitMQ's documentation (tutorial five, the exchanges guide) and
// from bugs other implementations shipped; the word-by-word reference in support/ judges the
// pairs the table does not name, and the property test below.
const t = useTestSchema()
const s = () => `"${t.schema}"`

/** [pattern, routing key, matches, where the case comes from]. */
const CASES: readonly [string, string, boolean, string][] = [
  // RabbitMQ tutorial five: Q1 binds *.orange.*, Q2 binds *.*.rabbit and lazy.#.
  ['*.orange.*', 'quick.orange.rabbit', true, 'tutorial five'],
  ['*.*.rabbit', 'quick.orange.rabbit', true, 'tutorial five'],
  ['*.orange.*', 'lazy.orange.elephant', true, 'tutorial five'],
  ['lazy.#', 'lazy.orange.elephant', true, 'tutorial five'],
  ['*.orange.*', 'quick.orange.fox', true, 'tutorial five'],
  ['*.*.rabbit', 'quick.orange.fox', false, 'tutorial five'],
  ['lazy.#', 'lazy.brown.fox', true, 'tutorial five'],
  ['*.*.rabbit', 'lazy.pink.rabbit', true, 'tutorial five'],
  ['lazy.#', 'lazy.pink.rabbit', true, 'tutorial five'],
  ['*.orange.*', 'quick.brown.fox', false, 'tutorial five'],
  ['*.orange.*', 'orange', false, 'tutorial five: one word is not three'],
  ['*.orange.*', 'quick.orange.new.rabbit', false, 'tutorial five: four words are not three'],
  ['*.*.rabbit', 'quick.orange.new.rabbit', false, 'tutorial five'],
  ['lazy.#', 'lazy.orange.new.rabbit', true, 'tutorial five'],
  // The exchanges guide.
  ['audit.events.#', 'audit.events', true, 'exchanges guide: # takes zero words'],
  ['audit.events.#', 'audit.events.users.signup', true, 'exchanges guide'],
  ['regions.na.cities.*', 'regions.na.cities', false, 'exchanges guide: * takes exactly one word'],
  ['regions.na.cities.*', 'regions.na.cities.toronto', true, 'exchanges guide'],
  ['#', 'any.routing.key.at.all', true, 'exchanges guide: # alone is fanout'],
  ['#', 'single', true, '# alone is fanout'],
  ['orders.eu.created', 'orders.eu.created', true, 'no wildcard: direct'],
  ['orders.eu.created', 'orders.eu.created.late', false, 'no wildcard: direct'],
  // '#' taking zero words at the start, in the middle and at the end.
  ['audit.#', 'audit', true, 'pgmq divergence: its logs.# misses logs'],
  ['#.error', 'error', true, 'pgmq divergence: its #.error misses error'],
  ['#.error', 'db.disk.error', true, '# takes many words'],
  ['a.#.b', 'a.b', true, '# in the middle takes zero words'],
  ['a.#.b', 'a.x.y.b', true, '# in the middle takes many words'],
  ['a.#.b', 'a.b.c', false, 'anchored at the end'],
  ['a.#.#.b', 'a.b', true, 'several #, all empty'],
  ['#.a.#', 'a', true, '# on both sides, both empty'],
  ['#.a.#', 'x.a.y', true, '# on both sides'],
  ['#.a.#', 'b', false, '# on both sides, no a'],
  ['#.*', 'a', true, '#.* is one or more words'],
  ['*.#.*', 'a', false, '*.#.* is two or more words'],
  ['*.#.*', 'a.b', true, '*.#.* is two or more words'],
  // Bugs of other implementations.
  ['a.*.c.#', 'a.b.c', true, 'LavinMQ #1607: a trailing # after a * takes zero words'],
  ['a.*.c.#', 'a.b.c.d.e', true, 'LavinMQ #1607'],
  ['a.*.c.#', 'a.c', false, 'LavinMQ #1607: * still needs its word'],
  ['*.P1', 'foo.P10', false, 'rxmq.js #16: words, not prefixes'],
  ['*.P1', 'foo.P1', true, 'rxmq.js #16'],
  ['a.*', 'a.b.c', false, 'LavinMQ #1299: * is one word, anchored'],
  ['ab.#', 'abc', false, 'words, not prefixes'],
  ['a.#', 'ab.c', false, 'words, not prefixes'],
  ['#.b', 'a.cb', false, 'words, not suffixes'],
  ['Orders.*', 'orders.x', false, 'case-sensitive, as RabbitMQ'],
  ['order:eu.x-y_z.*', 'order:eu.x-y_z.9', true, 'the other word characters are literal'],
]

const PATTERNS = [...new Set(CASES.map(([pattern]) => pattern))]
const KEYS = [...new Set(CASES.map(([, key]) => key))]
const queueOf = (pattern: string) => `matrix-${PATTERNS.indexOf(pattern)}`

describe('RabbitMQ topic rules, through publish', () => {
  beforeAll(async () => {
    for (const pattern of PATTERNS) {
      await t.postbox.createQueue(queueOf(pattern), { deadLetter: false })
      await t.postbox.bind(queueOf(pattern), pattern)
    }
  })

  it(`agrees with RabbitMQ's documented rules on ${CASES.length} cases, from SQL and from TypeScript`, async () => {
    expect(CASES.length).toBeGreaterThanOrEqual(30)
    for (const key of KEYS) {
      await t.sql(`SELECT ${s()}.publish($1, '{"via":"sql"}')`, [key])
      await t.postbox.publish(key, { via: 'ts' })
    }
    const rows = await t.sql<{ queue: string; routing_key: string; via: string; n: number }>(
      `SELECT queue, routing_key, payload->>'via' AS via, count(*)::int AS n FROM ${s()}.messages GROUP BY 1, 2, 3`)
    const copies = (queue: string, key: string, via: string) =>
      rows.find((r) => r.queue === queue && r.routing_key === key && r.via === via)?.n ?? 0
    for (const [pattern, key, matches, source] of CASES) {
      for (const via of ['sql', 'ts']) {
        expect({ pattern, key, via, source, copies: copies(queueOf(pattern), key, via) }).toEqual({ pattern, key, via, source, copies: matches ? 1 : 0 })
      }
      // The reference agrees with the table, so it can judge the pairs the table does not name.
      expect({ pattern, key, reference: topicMatches(pattern, key) }).toEqual({ pattern, key, reference: matches })
    }
    for (const pattern of PATTERNS) {
      for (const key of KEYS) {
        expect({ pattern, key, copies: copies(queueOf(pattern), key, 'sql') }).toEqual({ pattern, key, copies: topicMatches(pattern, key) ? 1 : 0 })
      }
    }
  })

  it('the dry run (matching_queues) agrees with what publish delivered', async () => {
    for (const key of KEYS) {
      const expected = PATTERNS.filter((p) => topicMatches(p, key)).map(queueOf).sort()
      expect({ key, queues: await t.postbox.matchingQueues(key) }).toEqual({ key, queues: expected })
    }
  })
})

describe('property: SQL routing equals the word-by-word reference', () => {
  // Small alphabets make matches likely; words of one letter make wildcards do the work.
  const word = fc.constantFrom('a', 'b', 'c')
  const patternWord = fc.oneof(word, fc.constantFrom('*', '#'))
  const key = fc.array(word, { minLength: 1, maxLength: 6 }).map((w) => w.join('.'))
  const pattern = fc.array(patternWord, { minLength: 1, maxLength: 6 }).map((w) => w.join('.'))

  // Two sessions: one as the planner likes (a few bindings: a sequential scan), one where only the
  // index on the bindings' literal words can find them, so that both paths are judged.
  it.each([['the planner\'s choice', {}], ['the words index', { enable_seqscan: 'off' }]] as const)('for generated patterns and keys, through %s', async (_, settings) => {
    const client = new pg.Client({ connectionString: withSessionSettings(t.url, settings) })
    await client.connect()
    if ('enable_seqscan' in settings) {
      const { rows } = await client.query(`EXPLAIN SELECT queue FROM ${s()}.bindings WHERE words <@ string_to_array('a.b', '.')`)
      expect(rows.map((r: Record<string, string>) => Object.values(r)[0]).join('\n')).toContain('bindings_words_idx')
    }
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(pattern, { minLength: 1, maxLength: 6 }), fc.array(key, { minLength: 1, maxLength: 8 }), async (patterns, keys) => {
        try {
          // Bindings made and rolled back in one transaction: each run starts from none.
          await client.query('BEGIN')
          await client.query(`DELETE FROM ${s()}.bindings`)
          for (const [i, p] of patterns.entries()) {
            await client.query(`INSERT INTO ${s()}.queues (name, dead_letter) VALUES ($1, NULL) ON CONFLICT DO NOTHING`, [`prop-${i}`])
            await client.query(`SELECT ${s()}.bind($1, $2)`, [`prop-${i}`, p])
          }
          for (const k of keys) {
            const { rows } = await client.query<{ queues: string[] | null }>(`SELECT ${s()}.matching_queues($1) AS queues`, [k])
            const expected = patterns.flatMap((p, i) => (topicMatches(p, k) ? [`prop-${i}`] : [])).sort()
            expect({ patterns, key: k, queues: rows[0]?.queues ?? [] }).toEqual({ patterns, key: k, queues: expected })
          }
        } finally {
          await client.query('ROLLBACK')
        }
      }),
      { numRuns: 60 },
    ).finally(() => client.end())
  })

  /** What a problem says, without the value it quotes (SQL and JSON quote differently). */
  const kind = (problem: string | null | undefined) => problem?.replace(/^(routing key|pattern) .* (has|holds) /, '$1 … $2 ') ?? 'valid'

  it('the TypeScript and SQL syntax checks accept and refuse the same keys and patterns, for the same reason', async () => {
    const text = fc.oneof(
      fc.string({ unit: fc.constantFrom('a', 'Z', '9', '_', '-', ':', '.', '*', '#', ' ', '/', 'é'), maxLength: 12 }),
      fc.string({ maxLength: 8 }),
    )
    await fc.assert(
      fc.asyncProperty(fc.array(text, { minLength: 1, maxLength: 20 }), async (values) => {
        const rows = await t.sql<{ key: string | null; pattern: string | null }>(
          `SELECT ${s()}.routing_key_problem(v) AS key, ${s()}.pattern_problem(v) AS pattern FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i`,
          [values.map((v) => v.replaceAll('\u0000', ''))])
        values.forEach((raw, i) => {
          const v = raw.replaceAll('\u0000', '')
          if (!v.isWellFormed()) return
          expect({ v, key: kind(rows[i]?.key) }).toEqual({ v, key: kind(routingKeyProblem(v)) })
          expect({ v, pattern: kind(rows[i]?.pattern) }).toEqual({ v, pattern: kind(patternProblem(v)) })
        })
      }),
      { numRuns: 60 },
    )
  })
})
