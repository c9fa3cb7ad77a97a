import { describe, expect, it } from 'vitest'
import type { Postbox } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

// Two Postbox instances (two app processes) sending the same new dedupe keys at the same time, in
// opposite orders. Each instance shares statements between concurrent sends (batchSends), so one
// statement carries many keys: unless every statement takes its keys in one order, two of them
// wait for each other (deadlock, 40P01), and every send that shared the losing statement failed.

const t = useTestSchema()
const KEYS = 40
const ROUNDS = 20

/** Per key: how many messages hold it, and the ids the sends were given. */
async function holders(queue: string): Promise<Map<string, number>> {
  const rows = await t.sql<{ dedupe_key: string; n: number }>(
    `SELECT dedupe_key, count(*)::int AS n FROM "${t.schema}".messages WHERE queue = $1 GROUP BY dedupe_key`, [queue])
  return new Map(rows.map((r) => [r.dedupe_key, r.n]))
}

describe('dedupe keys sent from two instances at once', { timeout: 120_000 }, () => {
  it('send: no deadlock reaches a caller, and each key ends as exactly one message', async () => {
    await t.postbox.createQueue('dedupe-send')
    const instances: Postbox[] = [t.newPostbox(), t.newPostbox()]
    const failures: unknown[] = []
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const keys = Array.from({ length: KEYS }, (_, i) => `r${round}:k${String(i).padStart(2, '0')}`)
        const orders = [keys, [...keys].reverse()]
        const results = await Promise.all(instances.flatMap((postbox, i) =>
          (orders[i] as string[]).map((key) =>
            postbox.send('dedupe-send', { key }, { dedupeKey: key }).then(
              (result) => ({ key, ...result }),
              (error: unknown) => {
                failures.push(error)
                return undefined
              }))))
        const byKey = new Map<string, { id: string; duplicate: boolean }[]>()
        for (const r of results) if (r) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r])
        for (const key of keys) {
          const sends = byKey.get(key) ?? []
          // Both sends of a key name the same message, and exactly one of them made it.
          expect(new Set(sends.map((s) => s.id)).size, key).toBeLessThanOrEqual(1)
          if (sends.length === 2) expect(sends.filter((s) => !s.duplicate), key).toHaveLength(1)
        }
      }
      expect(failures.map((e) => `${(e as { code?: string }).code}: ${String(e)}`)).toEqual([])
      const counts = await holders('dedupe-send')
      expect(counts.size).toBe(KEYS * ROUNDS)
      expect([...counts.values()].every((n) => n === 1)).toBe(true)
    } finally {
      await Promise.all(instances.map((p) => p.close()))
    }
  })

  it('sendBatch: two batches of the same keys in opposite orders never deadlock', async () => {
    await t.postbox.createQueue('dedupe-batch')
    const instances: Postbox[] = [t.newPostbox(), t.newPostbox()]
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const keys = Array.from({ length: KEYS }, (_, i) => `r${round}:k${String(i).padStart(2, '0')}`)
        const [a, b] = await Promise.all([
          instances[0]!.sendBatch('dedupe-batch', keys.map((key) => ({ payload: key, dedupeKey: key }))),
          instances[1]!.sendBatch('dedupe-batch', [...keys].reverse().map((key) => ({ payload: key, dedupeKey: key }))),
        ])
        // Ids come back in each caller's input order, and both name the same message per key.
        expect(a).toEqual([...b!].reverse())
      }
      const counts = await holders('dedupe-batch')
      expect(counts.size).toBe(KEYS * ROUNDS)
      expect([...counts.values()].every((n) => n === 1)).toBe(true)
    } finally {
      await Promise.all(instances.map((p) => p.close()))
    }
  })
})
