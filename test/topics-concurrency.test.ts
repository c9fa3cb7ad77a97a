import type pg from 'pg'
import { describe, expect, it } from 'vitest'
import type { PublishResult } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

// Publishing while bindings and queues change under it. Each publish must be all-or-nothing and
// consistent with one set of bindings; a queue deleted meanwhile must not be left with messages;
// and unroutable publishes must never wait for each other.
const t = useTestSchema()
const s = () => `"${t.schema}"`

/** Runs `fn` on a client of the test pool inside BEGIN … COMMIT (ROLLBACK on error). */
async function inTransaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await t.pool.connect()
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }
}

describe('publishing while bindings change', () => {
  it('every publish reaches exactly one whole set of bindings, never a mix, and what it returns is what it wrote', async () => {
    const S1 = ['race-a', 'race-b', 'race-c']
    const S2 = ['race-c', 'race-d', 'race-e']
    for (const queue of [...S1, ...S2]) await t.postbox.createQueue(queue)
    for (const queue of S1) await t.postbox.bind(queue, 'race.#')

    let stop = false
    let switches = 0
    // The binder moves the subscription from S1 to S2 and back, each move one transaction.
    const binder = (async () => {
      let [from, to] = [S1, S2]
      while (!stop) {
        await inTransaction(async (client) => {
          for (const queue of from.filter((q) => !to.includes(q))) await client.query(`SELECT ${s()}.unbind($1, 'race.#')`, [queue])
          for (const queue of to) await client.query(`SELECT ${s()}.bind($1, 'race.#')`, [queue])
        })
        ;[from, to] = [to, from]
        switches++
      }
    })()
    const results: { tag: string; result: PublishResult }[] = []
    const publishers = Array.from({ length: 4 }, async (_, p) => {
      for (let n = 0; switches < 30 || n < 50; n++) {
        const tag = `${p}:${n}`
        if (n % 3 === 0) {
          // Two publishes in one caller transaction: each consistent on its own.
          await inTransaction(async (client) => {
            results.push({ tag: `${tag}a`, result: await t.postbox.publish('race.x', { tag: `${tag}a` }, { tx: client }) })
            results.push({ tag: `${tag}b`, result: await t.postbox.publish('race.x', { tag: `${tag}b` }, { tx: client }) })
          })
        } else {
          results.push({ tag, result: await t.postbox.publish('race.x', { tag }) })
        }
      }
    })
    await Promise.all(publishers)
    stop = true
    await binder

    const rows = await t.sql<{ tag: string; queues: string[] }>(
      `SELECT payload->>'tag' AS tag, array_agg(queue ORDER BY queue COLLATE "C") AS queues FROM ${s()}.messages
       WHERE routing_key = 'race.x' GROUP BY 1`)
    const written = new Map(rows.map((r) => [r.tag, r.queues]))
    const sets = [S1.join(','), S2.join(',')]
    const seen = new Set<string>()
    for (const { tag, result } of results) {
      expect({ tag, queues: sets.includes(result.queues.join(',')) }).toEqual({ tag, queues: true })
      expect({ tag, written: written.get(tag) }).toEqual({ tag, written: result.queues })
      seen.add(result.queues.join(','))
    }
    expect(written.size).toBe(results.length)
    // Both sets were seen: the publishes really did race the binder.
    expect([...seen].sort()).toEqual([...sets].sort())
  })

  it('a queue deleted while publishers publish to it is left with no message, and no publisher fails', async () => {
    await t.postbox.createQueue('stays')
    await t.postbox.bind('stays', 'churn.#')
    let stop = false
    let published = 0
    const failures: unknown[] = []
    const publishers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          const { queues } = await t.postbox.publish('churn.x', { n: published })
          expect(queues).toContain('stays')
          published++
        } catch (error) {
          failures.push(error)
        }
      }
    })
    for (let round = 0; round < 15; round++) {
      const queue = `gone-${round}`
      await t.postbox.createQueue(queue)
      await t.postbox.bind(queue, 'churn.#')
      await t.postbox.bind(queue, '#')
      const target = published + 20
      while (published < target && failures.length === 0) await new Promise((resolve) => setImmediate(resolve))
      await t.postbox.deleteQueue(queue, { purge: true })
    }
    stop = true
    await Promise.all(publishers)
    expect(failures).toEqual([])
    expect(await t.sql(`SELECT DISTINCT queue FROM ${s()}.messages m WHERE NOT EXISTS (SELECT 1 FROM ${s()}.queues q WHERE q.name = m.queue)`)).toEqual([])
    expect(await t.sql(`SELECT queue FROM ${s()}.bindings WHERE queue LIKE 'gone-%'`)).toEqual([])
    expect(published).toBeGreaterThan(15 * 20)
  })
})

describe('counting unroutable publishes', () => {
  it('never waits for another transaction, even when many that counted stay open', async () => {
    const [before] = await t.sql<{ count: string }>(`SELECT count FROM ${s()}.unrouted_stats`)
    // 17 open transactions that each counted an unroutable publish: more than the 16 shared slots.
    const open = await Promise.all(Array.from({ length: 17 }, async () => {
      const client = await t.pool.connect()
      await client.query('BEGIN')
      await client.query(`SET LOCAL lock_timeout = '200ms'`)
      return client
    }))
    try {
      for (const [i, client] of open.entries()) {
        // Were it to wait for a row another transaction holds, lock_timeout would fail it (55P03).
        expect(await t.postbox.publish('nobody.home', { i }, { tx: client })).toEqual({ queues: [], ids: [], duplicates: [] })
      }
      const late = await t.pool.connect()
      try {
        await late.query('BEGIN')
        await late.query(`SET LOCAL lock_timeout = '200ms'`)
        await t.postbox.publish('nobody.home', { late: true }, { tx: late })
        await late.query('COMMIT')
      } finally {
        late.release()
      }
    } finally {
      for (const client of open) {
        await client.query('COMMIT')
        client.release()
      }
    }
    const [after] = await t.sql<{ count: string; last_routing_key: string }>(`SELECT count, last_routing_key FROM ${s()}.unrouted_stats`)
    expect(Number(after?.count) - Number(before?.count)).toBe(18)
    expect(after?.last_routing_key).toBe('nobody.home')
    // Bounded: 16 shared slots, and a row of its own only for a backend that found all 16 held.
    const [slots] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM ${s()}.unrouted_counts`)
    expect(slots?.n).toBeLessThanOrEqual(16 + 2)
  })

  it('publishers with one dedupe key to the same queues do not deadlock', async () => {
    for (const queue of ['dk-a', 'dk-b', 'dk-c']) {
      await t.postbox.createQueue(queue)
      await t.postbox.bind(queue, 'dk.#')
    }
    for (let round = 0; round < 20; round++) {
      const results = await Promise.all(Array.from({ length: 4 }, (_, i) =>
        inTransaction((client) => t.postbox.publish('dk.x', { round, i }, { tx: client, dedupeKey: `round:${round}` }))))
      // Per queue, one publisher wrote and the others found its message.
      for (const queue of ['dk-a', 'dk-b', 'dk-c']) {
        const ids = new Set(results.map((r) => r.ids[r.queues.indexOf(queue)]))
        expect(ids.size).toBe(1)
        expect(results.filter((r) => !r.duplicates.includes(queue))).toHaveLength(1)
      }
    }
  })
})
