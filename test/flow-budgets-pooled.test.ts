import { describe, expect, it } from 'vitest'
import { createFlowLedgers, maxClaimsInWindow } from './support/flow-ledger.js'
import { useTestSchema } from './support/test-schema.js'

// Rate budgets (migration 0017, docs/flow-control.md) are a session setting of the server
// connection a claim ran on. This file uses no session feature of its own and no child process,
// so CI runs it through PgBouncer in transaction mode too, where one client's claims land on any
// server connection and spend whatever budget that connection holds: the limits must hold there
// as they do on direct connections.

const t = useTestSchema()

/**
 * Ten callers on a Postbox of their own, each receiving up to `max` and acking, until `total`
 * messages of `queue` were handled; a caller that gets none (a window is full) tries again
 * shortly. A deadlock (40P01, the claim rolled back whole) fails the test: claims that hold
 * window rows never wait (migration 0018, docs/flow-control.md "Waiting without circles").
 */
async function drainWithTenCallers(queue: string, total: number, max: number): Promise<number> {
  const postbox = t.newPostbox()
  let handled = 0
  try {
    await Promise.all(Array.from({ length: 10 }, async () => {
      while (handled < total) {
        const messages = await postbox.receive(queue, { max })
        handled += messages.length
        if (messages.length > 0) await postbox.ack(messages)
        else await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }))
  } finally {
    await postbox.close()
  }
  return handled
}

describe('rate budgets on pooled connections', { timeout: 120_000 }, () => {
  it('ten callers borrowing and spending on whatever connection they get keep every window within the limits', async () => {
    await createFlowLedgers(t.pool, t.schema)
    // A key's own rows hold 23 or 24 (its limit less the sixteenth its shared window keeps:
    // migration 0018) and the queue's 62, so claims of 10 borrow while the windows are less than
    // half full; four keys at 400/s outrun the queue's 1,000/s, which is what holds.
    await t.postbox.createQueue('pooled-budgets', { keyRateLimit: { limit: 400, per: '1s' }, rateLimit: { limit: 1000, per: '1s' } })
    const total = 2500
    await t.postbox.sendBatch('pooled-budgets', Array.from({ length: total }, (_, i) => ({ payload: { n: i }, rateKey: `site-${i % 4}.example` })))
    const handled = await drainWithTenCallers('pooled-budgets', total, 10)
    const perKey = await maxClaimsInWindow(t.pool, t.schema, 'pooled-budgets', 1000, true)
    const perQueue = await maxClaimsInWindow(t.pool, t.schema, 'pooled-budgets', 1000, false)
    console.log(`budgets, 10 callers in one process: ${JSON.stringify({ perKey, perQueue, handled })}`)
    expect(handled).toBe(total)
    expect(perKey).toBeLessThanOrEqual(400)
    expect(perQueue).toBeLessThanOrEqual(1000)
    expect(perQueue).toBeGreaterThan(400) // the claims came near the queue's limit (1,000 when the machine is not busy)
  })

  it('one busy key through its shared window and its own rows at once: never past its limit', async () => {
    await createFlowLedgers(t.pool, t.schema)
    // 800 per 2 s: the shared window allows 50 (rows of 3 or 4), the key's own rows 750 (rows of
    // 46 or 47). Claims of one message fit the shared window while it has room, and then the
    // key's rows take them, borrowing while they are less than half full; ten callers come to
    // more than 400 claims a second, so both ways fill and the limit is what holds.
    await t.postbox.createQueue('busy-key', { keyRateLimit: { limit: 800, per: '2s' } })
    const total = 3000
    await t.postbox.sendBatch('busy-key', Array.from({ length: total }, (_, i) => ({ payload: { n: i }, rateKey: 'busy.example' })))
    const handled = await drainWithTenCallers('busy-key', total, 1)
    const perKey = await maxClaimsInWindow(t.pool, t.schema, 'busy-key', 2000, true)
    const [counted] = await t.sql<{ shared: number; own: number }>(
      `SELECT coalesce(sum(c) FILTER (WHERE w.rate_key = ''), 0)::int AS shared, coalesce(sum(c) FILTER (WHERE w.rate_key <> ''), 0)::int AS own
       FROM "${t.schema}".rate_windows w, unnest(w.counts) AS c WHERE w.queue = 'busy-key'`,
    )
    console.log(`one busy key, 10 callers: ${JSON.stringify({ perKey, handled, ...counted })}`)
    expect(handled).toBe(total)
    expect(perKey).toBeLessThanOrEqual(800)
    expect(counted!.shared).toBeGreaterThan(0) // both ways took claims
    expect(counted!.own).toBeGreaterThan(0)
  })
})
