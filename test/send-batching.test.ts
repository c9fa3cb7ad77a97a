import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { PayloadTooLargeError, Postbox, QueueNotFoundError } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'
import { waitFor } from './support/wait-for.js'
import { countingPostbox as counting } from './support/counting-postbox.js'

// Concurrent sends outside a transaction share statements (batchSends, the default): each caller
// still gets its own id, its own duplicate flag and its own refusal.

const t = useTestSchema()

const countingPostbox = (options: { batchSends?: boolean } = {}) => counting(t, options)

let open: Postbox | undefined
afterEach(async () => {
  await open?.close()
  open = undefined
})

beforeAll(async () => {
  await t.postbox.createQueue('together')
  await t.postbox.createQueue('small', { maxPayloadBytes: 100 })
})

async function stored(ids: readonly string[]): Promise<Map<string, unknown>> {
  const rows = await t.sql<{ id: string; payload: unknown }>(
    `SELECT id, payload FROM "${t.schema}".messages WHERE id = ANY($1::bigint[])`,
    [ids],
  )
  return new Map(rows.map((r) => [r.id, r.payload]))
}

describe('sends outside a transaction', () => {
  it('200 concurrent sends share a few statements, and each gets the id of its own message', async () => {
    const { postbox, statements } = countingPostbox()
    open = postbox
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => postbox.send('together', { i })))
    expect(new Set(results.map((r) => r.id)).size).toBe(200)
    const payloads = await stored(results.map((r) => r.id))
    expect(results.map((r) => payloads.get(r.id))).toEqual(Array.from({ length: 200 }, (_, i) => ({ i })))
    expect(statements.length).toBeLessThan(20)
    expect(statements.length).toBeGreaterThan(1)
  })

  it('a lone send goes at once in one statement', async () => {
    const { postbox, statements } = countingPostbox()
    open = postbox
    await postbox.send('together', { alone: true })
    expect(statements).toHaveLength(1)
    expect(statements[0]).toContain('send_message')
  })

  it('one refused message fails only its own send; the rest are written', async () => {
    const { postbox } = countingPostbox()
    open = postbox
    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => postbox.send('small', i === 7 ? { big: 'x'.repeat(500) } : { i })),
    )
    const rejected = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [[i, o.reason]] : []))
    expect(rejected).toHaveLength(1)
    expect(rejected[0]![0]).toBe(7)
    expect(rejected[0]![1]).toBeInstanceOf(PayloadTooLargeError)
    const ids = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.id] : []))
    expect((await stored(ids)).size).toBe(29)
  })

  it('dedupe keys resolve within the shared statement as they would one by one', async () => {
    const { postbox } = countingPostbox()
    open = postbox
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => postbox.send('together', { i }, { dedupeKey: `k${i % 5}` })),
    )
    expect(results.filter((r) => !r.duplicate)).toHaveLength(5)
    for (let i = 0; i < 20; i++) expect(results[i]!.id).toBe(results[i % 5]!.id)
  })

  it('an unknown queue fails every send with QueueNotFoundError and writes nothing', async () => {
    const { postbox } = countingPostbox()
    open = postbox
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => postbox.send('nowhere', 1)))
    for (const o of outcomes) expect(o.status === 'rejected' && o.reason instanceof QueueNotFoundError).toBe(true)
    const [n] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages WHERE queue = 'nowhere'`)
    expect(n!.n).toBe(0)
  })

  it('close() writes the sends made before it, however many were waiting', async () => {
    const postbox = t.newPostbox()
    const sends = Array.from({ length: 300 }, (_, i) => postbox.send('together', { closing: i }))
    await postbox.close()
    const results = await Promise.all(sends)
    expect((await stored(results.map((r) => r.id))).size).toBe(300)
  })

  it('a shared statement that loses a deadlock to a caller\'s transaction is sent again one by one: no caller sees 40P01', async () => {
    const postbox = t.newPostbox()
    open = postbox
    const [holder, blocker] = await Promise.all([t.pool.connect(), t.pool.connect()])
    try {
      await holder.query('BEGIN')
      // Whichever waiter's deadlock check runs first is the one aborted: make it the shared
      // statement's (1 s, the default) rather than the holder's, also on a loaded machine.
      await holder.query("SET LOCAL deadlock_timeout = '30s'")
      await blocker.query('BEGIN')
      const held = await t.postbox.send('together', 'held', { tx: holder, dedupeKey: 'dl:k2' })
      // Two statements wait for keys the blocker holds, so the next two sends queue up and share one.
      await t.postbox.send('together', 'a', { tx: blocker, dedupeKey: 'dl:a' })
      await t.postbox.send('together', 'b', { tx: blocker, dedupeKey: 'dl:b' })
      const blocked = [postbox.send('together', 'a', { dedupeKey: 'dl:a' }), postbox.send('together', 'b', { dedupeKey: 'dl:b' })]
      const waitingOn = async (what: string, n: number) => waitFor(what, async () => {
        const [row] = await t.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%send_batch%'`, [t.schema])
        const [one] = await t.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%send_message%'`, [t.schema])
        return row!.n + one!.n >= n
      })
      await waitingOn('the two statements blocked', 2)
      const shared = [postbox.send('together', 'k1', { dedupeKey: 'dl:k1' }), postbox.send('together', 'k2', { dedupeKey: 'dl:k2' })]
      await blocker.query('COMMIT')
      // The blocked statements end first (their keys are now the blocker's: duplicates), so the
      // one statement seen waiting below can only be the shared one. (A blocked statement still
      // listed as waiting could pass that check early. CI on PostgreSQL 15 failed here once, a
      // send not a duplicate; not reproduced in 16 loaded runs since, with or without this.)
      await Promise.all(blocked)
      // The shared statement takes dl:k1, then waits for dl:k2, which the holder has...
      await waitFor('the shared statement waiting for dl:k2', async () => {
        const [row] = await t.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%send_batch%'`, [t.schema])
        return row!.n === 1
      })
      // ...and the holder now wants dl:k1: a deadlock, found by the statement that waited first.
      const late = t.postbox.send('together', 'held too', { tx: holder, dedupeKey: 'dl:k1' })
      const first = await late
      await holder.query('COMMIT')
      const results = await Promise.all([...blocked, ...shared])
      expect(results.every((r) => r.duplicate)).toBe(true)
      expect(results.slice(2).map((r) => r.id)).toEqual([first.id, held.id])
    } finally {
      await holder.query('ROLLBACK').catch(() => {})
      await blocker.query('ROLLBACK').catch(() => {})
      holder.release()
      blocker.release()
    }
  })

  it('batchSends: false sends one statement per message', async () => {
    const { postbox, statements } = countingPostbox({ batchSends: false })
    open = postbox
    await Promise.all(Array.from({ length: 20 }, (_, i) => postbox.send('together', { i })))
    expect(statements).toHaveLength(20)
  })
})
