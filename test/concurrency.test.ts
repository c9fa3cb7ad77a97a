import { describe, expect, it } from 'vitest'
import type { Postbox } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

const t = useTestSchema()

describe('concurrent consumers', () => {
  it('2,000 messages drained by 4 concurrent receivers are each delivered exactly once', async () => {
    await t.postbox.createQueue('drain', { visibilityTimeout: '5m' })
    const sent = await t.postbox.sendBatch('drain', Array.from({ length: 2000 }, (_, i) => ({ i })))
    // Four clients with pools of their own, as four processes would be.
    const receivers = Array.from({ length: 4 }, () => t.newPostbox({ poolSize: 2 }))
    try {
      const deliveries = new Map<string, number>()
      const perReceiver = await Promise.all(
        receivers.map(async (postbox: Postbox) => {
          let got = 0
          for (;;) {
            const batch = await postbox.receive('drain', { max: 25 })
            if (batch.length === 0) break
            for (const m of batch) {
              deliveries.set(m.id, (deliveries.get(m.id) ?? 0) + 1)
              expect(m.attempt).toBe(1)
            }
            got += batch.length
            await postbox.ack(batch)
          }
          return got
        }),
      )
      expect(perReceiver.reduce((a, b) => a + b, 0)).toBe(2000)
      // Every receiver took part (the claim does not serialise consumers).
      expect(perReceiver.filter((n) => n > 0).length).toBeGreaterThan(1)
      expect(deliveries.size).toBe(2000)
      expect([...deliveries.values()].every((n) => n === 1)).toBe(true)
      expect(new Set(deliveries.keys())).toEqual(new Set(sent))
      const [left] = await t.sql<{ n: number }>(`SELECT count(*)::int AS n FROM "${t.schema}".messages WHERE queue = 'drain'`)
      expect(left?.n).toBe(0)
    } finally {
      await Promise.all(receivers.map((p) => p.close()))
    }
  })

  it('32 concurrent claimers with max 10 never over-claim, and no message goes to two of them', async () => {
    await t.postbox.createQueue('claimers')
    await t.postbox.sendBatch('claimers', Array.from({ length: 250 }, (_, i) => i))
    const claimers = t.newPostbox({ poolSize: 32 })
    try {
      const results = await Promise.all(Array.from({ length: 32 }, () => claimers.receive('claimers', { max: 10 })))
      const sizes = results.map((r) => r.length)
      expect(Math.max(...sizes)).toBeLessThanOrEqual(10)
      const ids = results.flat().map((m) => m.id)
      expect(new Set(ids).size).toBe(ids.length)
      // Every claimed row is leased to exactly the claimer that got it.
      const [row] = await t.sql<{ leased: number; free: number }>(
        `SELECT count(*) FILTER (WHERE lease IS NOT NULL)::int AS leased, count(*) FILTER (WHERE lease IS NULL)::int AS free
         FROM "${t.schema}".messages WHERE queue = 'claimers'`,
      )
      expect(row).toEqual({ leased: ids.length, free: 250 - ids.length })
      // Demand (320) exceeds supply: a short claimer has passed every row, so none is stranded.
      expect(ids.length).toBe(250)
    } finally {
      await claimers.close()
    }
  })

  it('claimers racing senders: everything sent is delivered once, nothing is claimed twice', async () => {
    await t.postbox.createQueue('race')
    const receivers = Array.from({ length: 3 }, () => t.newPostbox({ poolSize: 2 }))
    try {
      let sending = true
      const seen = new Map<string, number>()
      const consume = async (postbox: Postbox) => {
        for (;;) {
          const batch = await postbox.receive('race', { max: 7 })
          for (const m of batch) seen.set(m.id, (seen.get(m.id) ?? 0) + 1)
          if (batch.length > 0) await postbox.ack(batch)
          else if (!sending) return
          else await new Promise((resolve) => setTimeout(resolve, 5))
        }
      }
      const consumers = receivers.map(consume)
      const sent: string[] = []
      for (let i = 0; i < 20; i++) {
        const [one, batch] = await Promise.all([t.postbox.send('race', { i }), t.postbox.sendBatch('race', [1, 2, 3, 4])])
        sent.push(one.id, ...batch)
      }
      sending = false
      await Promise.all(consumers)
      expect(seen.size).toBe(sent.length)
      expect([...seen.values()].every((n) => n === 1)).toBe(true)
    } finally {
      await Promise.all(receivers.map((p) => p.close()))
    }
  })
})
