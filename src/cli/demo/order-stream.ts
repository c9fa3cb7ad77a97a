import type { StreamEvent } from '../../streams/stream-event.js'
import type { PgClient } from '../../db/pg-client.js'
import type { Counts } from './tally.js'
import type { DemoContext, ScenarioResult } from './scenario.js'

/** What an order event of the stream carries. */
interface OrderPlaced {
  orderId: number
  customer: string
  cents: number
}

const ORDERS: readonly OrderPlaced[] = [
  { orderId: 201, customer: 'ada', cents: 1999 },
  { orderId: 202, customer: 'bob', cents: 500 },
  { orderId: 203, customer: 'ada', cents: 1250 },
  { orderId: 204, customer: 'cyd', cents: 300 },
  { orderId: 205, customer: 'bob', cents: 4200 },
  { orderId: 206, customer: 'ada', cents: 751 },
]

const counts = (completed: number): Counts => ({ received: completed, completed, failed: 0, retried: 0, deadLettered: 0, leaseLost: 0 })

/**
 * Scenario 5, one stream read by two groups, one of them replayed: the shop appends order
 * events to a retained stream; analytics sums revenue, billing writes invoices in the same
 * transaction as its offset commit. Billing had a bug (cents billed as euros): after the fix its
 * group is moved back to the start and rebuilds every invoice, while analytics is not disturbed.
 */
export async function orderStreamScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, pool, app, say, signal } = ctx
  say('   One stream of order events, kept 7 days, read by two consumer groups at their own offsets.')
  await pool.query(`CREATE TABLE ${app.sql}.invoices (order_id integer PRIMARY KEY, amount_eur numeric NOT NULL)`)
  await postbox.createStream('order-log', { partitions: 2, retention: '7d' })
  await postbox.appendBatch('order-log', ORDERS.map((payload) => ({ payload, key: `customer:${payload.customer}` })))
  say(`  shop          appended ${ORDERS.length} orders, keyed by customer (each customer's orders stay in order)`)

  let analyticsHandled = 0
  let billingHandled = 0
  let revenueCents = 0
  let euros = (cents: number) => cents // the bug
  const bill = async (event: StreamEvent<OrderPlaced>, c: { tx: PgClient | undefined }) => {
    billingHandled++
    await c.tx!.query(
      `INSERT INTO ${app.sql}.invoices (order_id, amount_eur) VALUES ($1, $2) ON CONFLICT (order_id) DO UPDATE SET amount_eur = excluded.amount_eur`,
      [event.payload.orderId, euros(event.payload.cents)],
    )
  }
  const caughtUp = async (group: string) => {
    while (!signal.aborted) {
      const rows = (await postbox.streamStats('order-log')).filter((r) => r.group === group)
      if (rows.length > 0 && rows.every((r) => r.lag === 0)) return
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const invoiced = async () => Number((await pool.query(`SELECT coalesce(sum(amount_eur), 0) AS total FROM ${app.sql}.invoices`)).rows[0].total)

  const analytics = postbox.consume<OrderPlaced>('order-log', 'analytics', async (event) => {
    analyticsHandled++
    revenueCents += event.payload.cents
  })
  let billing = postbox.consume<OrderPlaced>('order-log', 'billing', bill, { transactional: true })
  try {
    await Promise.all([caughtUp('analytics'), caughtUp('billing')])
    say(`  analytics     revenue ${(revenueCents / 100).toFixed(2)} EUR from ${analyticsHandled} events`)
    say(`  billing       invoices total ${await invoiced()} EUR: wrong, cents were billed as euros`)
    await billing.stop()
    euros = (cents) => cents / 100
    await postbox.seek('order-log', 'billing', 'earliest')
    say('  billing       fixed; its group moved back to the earliest event and replays the stream')
    billing = postbox.consume<OrderPlaced>('order-log', 'billing', bill, { transactional: true })
    await caughtUp('billing')
    const fixed = await invoiced()
    say(`  billing       invoices total ${fixed.toFixed(2)} EUR after the replay; analytics untouched (${analyticsHandled} events, read once)`)
    const note = `${ORDERS.length} events read by 2 groups; billing replayed after its fix: ${fixed.toFixed(2)} EUR invoiced, as analytics counted`
    say(`  -> ${note}`)
    return {
      scenario: 'order stream (replay)',
      sent: ORDERS.length,
      handled: analyticsHandled + billingHandled,
      retried: 0,
      deadLettered: 0,
      note,
      byQueue: { analytics: counts(analyticsHandled), billing: counts(billingHandled) },
    }
  } finally {
    await Promise.all([analytics.stop({ timeout: '1s' }), billing.stop({ timeout: '1s' })])
  }
}
