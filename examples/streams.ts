// Streams: one log of order events, read by two consumer groups at their own offsets. Analytics
// counts revenue; billing writes invoices in the same transaction as its offset commit (exactly
// once). Billing had a bug (it billed in cents as euros), so after the fix its group is replayed
// from the start and rebuilds its invoices, while analytics is untouched. Events are appended in
// the transaction that saves the order, and from SQL by a trigger.
//
//   npx tsx examples/streams.ts        (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import pg from 'pg'
import { Postbox, type StreamEvent } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, appSchema, close } = await exampleDatabase('streams')
const pool = new pg.Pool({ connectionString, options: `-c search_path=${appSchema}` })
const postbox = new Postbox({ connectionString, schema })

type OrderPlaced = { orderId: number; customer: string; cents: number }

/** Waits until a group has read everything appended so far (lag 0 on every partition). */
async function caughtUp(group: string): Promise<void> {
  for (;;) {
    const rows = (await postbox.streamStats('orders')).filter((r) => r.group === group)
    if (rows.length > 0 && rows.every((r) => r.lag === 0)) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

try {
  await postbox.migrate()
  await pool.query(`CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL, cents int NOT NULL)`)
  await pool.query(`CREATE TABLE invoices (order_id bigint PRIMARY KEY, amount_eur numeric NOT NULL)`)

  // Four partitions, events kept for seven days; the customer is the key, so each customer's
  // events stay in order on one partition.
  await postbox.createStream('orders', { partitions: 4, retention: '7d' })

  // An order and its event commit together, or neither does.
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query(`INSERT INTO orders (customer, cents) VALUES ('c42', 1999) RETURNING id`)
    await postbox.append('orders', { orderId: Number(rows[0].id), customer: 'c42', cents: 1999 }, { key: 'customer:c42', tx: client })
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }

  // More orders in one statement, and one from SQL (a trigger could do the same).
  await postbox.appendBatch('orders', [
    { payload: { orderId: 2, customer: 'c7', cents: 500 }, key: 'customer:c7' },
    { payload: { orderId: 3, customer: 'c42', cents: 1250 }, key: 'customer:c42' },
  ])
  await pool.query(`SELECT ${schema}.append('orders', '{"orderId": 4, "customer": "c9", "cents": 300}'::jsonb, key => 'customer:c9')`)

  // Analytics: at-least-once is enough for a running total.
  let revenueCents = 0
  const analytics = postbox.consume<OrderPlaced>('orders', 'analytics', async (event) => {
    revenueCents += event.payload.cents
  })

  // Billing, with the bug: cents taken for euros. Its invoice and its offset commit share a transaction.
  let euros = (event: StreamEvent<OrderPlaced>) => event.payload.cents
  const bill = async (event: StreamEvent<OrderPlaced>, ctx: { tx: pg.PoolClient | undefined }) => {
    await ctx.tx!.query(
      `INSERT INTO ${appSchema}.invoices (order_id, amount_eur) VALUES ($1, $2)
       ON CONFLICT (order_id) DO UPDATE SET amount_eur = excluded.amount_eur`,
      [event.payload.orderId, euros(event)],
    )
  }
  let billing = postbox.consume<OrderPlaced, pg.PoolClient>('orders', 'billing', bill, { transactional: true })

  await Promise.all([caughtUp('analytics'), caughtUp('billing')])
  console.log(`analytics: revenue ${revenueCents / 100} EUR`)
  const wrong = await pool.query(`SELECT sum(amount_eur)::float AS total FROM invoices`)
  console.log(`billing (buggy): invoices total ${wrong.rows[0].total} EUR`)
  assert.equal(revenueCents, 4049)
  assert.equal(wrong.rows[0].total, 4049)

  // The fix ships: stop billing, move its group back to the start, and read everything again.
  await billing.stop()
  euros = (event) => event.payload.cents / 100
  await postbox.seek('orders', 'billing', 'earliest')
  billing = postbox.consume<OrderPlaced, pg.PoolClient>('orders', 'billing', bill, { transactional: true })
  await caughtUp('billing')
  const fixed = await pool.query(`SELECT sum(amount_eur)::float AS total FROM invoices`)
  console.log(`billing (replayed after the fix): invoices total ${fixed.rows[0].total} EUR`)
  assert.equal(fixed.rows[0].total, 40.49)
  assert.equal(revenueCents, 4049) // analytics read each event once; the replay was billing's alone

  // Ad-hoc reads need no group: one partition, after an offset.
  const { partition } = await postbox.append('orders', { orderId: 5, customer: 'c42', cents: 100 }, { key: 'customer:c42' })
  const history = await postbox.readStream<OrderPlaced>('orders', { partition, after: '0', limit: 100 })
  console.log(`partition ${partition} holds: ${history.map((e) => `#${e.offset} order ${e.payload.orderId}`).join(', ')}`)
  assert.deepEqual(history.filter((e) => e.payload.customer === 'c42').map((e) => e.payload.orderId), [1, 3, 5]) // in order

  for (const row of await postbox.streamStats('orders')) {
    if (row.group !== null) console.log(`stream_stats: ${row.group} partition ${row.partition}: head ${row.headOffset}, committed ${row.committedOffset}, lag ${row.lag}`)
  }
  await Promise.all([analytics.stop(), billing.stop()])
} finally {
  await postbox.close()
  await pool.end()
  await close()
}
