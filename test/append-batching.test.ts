import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { InvalidOptionsError, PayloadTooLargeError, Postbox, StreamNotFoundError } from '../src/index.js'
import { countingPostbox } from './support/counting-postbox.js'
import { useTestSchema } from './support/test-schema.js'

// Concurrent appends outside a transaction share statements (batchSends, the default), as sends
// do: each caller still gets its own id and partition or its own refusal, and the events of one
// statement keep the order they were handed over in.

const t = useTestSchema()

let open: Postbox | undefined
afterEach(async () => {
  await open?.close()
  open = undefined
})

beforeAll(async () => {
  await t.postbox.createStream('together', { partitions: 4 })
  await t.postbox.createStream('small')
  await t.sql(`UPDATE "${t.schema}".streams SET max_payload_bytes = 100 WHERE name = 'small'`)
})

/** Every event of a one-partition stream, in offset order: id and payload. */
async function readAll(stream: string): Promise<{ id: string; payload: unknown }[]> {
  const events = await t.postbox.readStream(stream, { limit: 1000 })
  return events.map((e) => ({ id: e.id, payload: e.payload }))
}

describe('appends outside a transaction', () => {
  it('200 concurrent appends share a few statements; each gets its own event, a key its own partition', async () => {
    const { postbox, statements } = countingPostbox(t)
    open = postbox
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => postbox.append('together', { i }, { key: `k${i % 7}` })))
    expect(new Set(results.map((r) => r.id)).size).toBe(200)
    for (let i = 7; i < 200; i++) expect(results[i]!.partition).toBe(results[i % 7]!.partition)
    // Each id holds the payload of the caller that got it (ordinality counts from 1).
    const [row] = await t.sql<{ n: number; wrong: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE i.payload <> jsonb_build_object('i', r.o - 1))::int AS wrong
       FROM unnest($1::bigint[]) WITH ORDINALITY AS r(id, o) JOIN "${t.schema}".stream_inbox i ON i.id = r.id`,
      [results.map((r) => r.id)],
    )
    expect(row).toEqual({ n: 200, wrong: 0 })
    expect(statements.length).toBeLessThan(20)
    expect(statements.length).toBeGreaterThan(1)
  })

  it('events that share a statement get ids, and so offsets, in the order they were handed over', async () => {
    await t.postbox.createStream('ordered')
    const { postbox } = countingPostbox(t)
    open = postbox
    // Handed over at once: the first two go alone (two statements in flight), the rest together.
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => postbox.append('ordered', i, { key: 'same' })))
    const shared = results.slice(2).map((r) => BigInt(r.id))
    expect(shared).toEqual([...shared].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
    const log = (await readAll('ordered')).map((e) => e.payload as number).filter((n) => n >= 2)
    expect(log).toEqual(Array.from({ length: 98 }, (_, i) => i + 2))
  })

  it('a lone append goes at once in one statement', async () => {
    const { postbox, statements } = countingPostbox(t)
    open = postbox
    await postbox.append('together', { alone: true })
    expect(statements).toHaveLength(1)
    expect(statements[0]).toContain('append_events')
  })

  it('one refused event fails only its own append; the rest are written, in order', async () => {
    await t.postbox.createStream('small-ordered')
    await t.sql(`UPDATE "${t.schema}".streams SET max_payload_bytes = 100 WHERE name = 'small-ordered'`)
    const { postbox } = countingPostbox(t)
    open = postbox
    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) =>
        i === 7 ? postbox.append('small-ordered', { big: 'x'.repeat(500) })
          : i === 19 ? postbox.append('small-ordered', i, { key: 'k'.repeat(2000) })
            : postbox.append('small-ordered', i)),
    )
    const rejected = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [[i, o.reason]] : []))
    expect(rejected.map(([i]) => i)).toEqual([7, 19])
    expect(rejected[0]![1]).toBeInstanceOf(PayloadTooLargeError)
    expect(rejected[1]![1]).toBeInstanceOf(InvalidOptionsError)
    const log = (await readAll('small-ordered')).map((e) => e.payload as number)
    expect([...log].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => i !== 7 && i !== 19))
    expect(log.filter((n) => n >= 2)).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => i >= 2 && i !== 7 && i !== 19))
  })

  it('an unknown stream fails every append with StreamNotFoundError and writes nothing', async () => {
    const { postbox } = countingPostbox(t)
    open = postbox
    const before = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".stream_inbox`)
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => postbox.append('nowhere', 1)))
    for (const o of outcomes) expect(o.status === 'rejected' && o.reason instanceof StreamNotFoundError).toBe(true)
    expect(await t.sql(`SELECT count(*)::int AS n FROM "${t.schema}".stream_inbox`)).toEqual(before)
  })

  it('an append in the caller\'s transaction stays one statement of that transaction', async () => {
    await t.postbox.createStream('in-tx')
    const { postbox, statements } = countingPostbox(t)
    open = postbox
    const client = await t.pool.connect()
    try {
      await client.query('BEGIN')
      await Promise.all([postbox.append('in-tx', 'a', { tx: client }), postbox.append('in-tx', 'b', { tx: client })])
      await client.query('ROLLBACK')
    } finally {
      client.release()
    }
    expect(statements).toHaveLength(0)
    expect(await readAll('in-tx')).toEqual([])
  })

  it('close() writes the appends made before it, however many were waiting', async () => {
    await t.postbox.createStream('closing')
    const postbox = t.newPostbox()
    const appends = Array.from({ length: 300 }, (_, i) => postbox.append('closing', i))
    await postbox.close()
    await Promise.all(appends)
    expect((await readAll('closing')).length).toBe(300)
  })

  it('batchSends: false appends one statement per event', async () => {
    const { postbox, statements } = countingPostbox(t, { batchSends: false })
    open = postbox
    await Promise.all(Array.from({ length: 20 }, (_, i) => postbox.append('together', { i })))
    expect(statements).toHaveLength(20)
  })
})
