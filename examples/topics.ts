// Publish/subscribe: an "order placed" event is published once, inside the transaction that saves
// the order, and every queue bound to a matching routing-key pattern gets its own copy. Inventory
// and audit subscribe by pattern, shipping by exact keys, and the fraud check only to card and
// wallet payments (a header filter). Then: what happens to an event nobody subscribed to, and a
// publish from SQL.
//
//   npx tsx examples/topics.ts         (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import pg from 'pg'
import { Postbox, UnroutableError } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, appSchema, close } = await exampleDatabase('topics')
const pool = new pg.Pool({ connectionString, options: `-c search_path=${appSchema}` })
const postbox = new Postbox({ connectionString, schema })
try {
  await postbox.migrate()
  await pool.query(`CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, region text NOT NULL, payment text NOT NULL)`)

  // Each consumer has a queue of its own, bound to the routing keys it wants.
  for (const queue of ['inventory', 'shipping', 'fraud-check', 'audit']) await postbox.createQueue(queue)
  await postbox.bind('inventory', 'order.*.placed') // * is one word: every region
  await postbox.bind('shipping', 'order.eu.placed') // no wildcard: exactly this key
  await postbox.bind('shipping', 'order.us.placed')
  await postbox.bind('fraud-check', 'order.*.placed', { filter: { payment: ['card', 'wallet'] } })
  await postbox.bind('audit', 'order.#') // # is zero or more words: every order event

  // The order row and its event commit together, or neither does.
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query(`INSERT INTO orders (region, payment) VALUES ('eu', 'card') RETURNING id`)
    const { queues } = await postbox.publish('order.eu.placed', { orderId: rows[0].id }, { tx: client, headers: { payment: 'card' } })
    await client.query('COMMIT')
    console.log(`order ${rows[0].id} placed: one publish reached ${queues.join(', ')}`)
    assert.deepEqual(queues, ['audit', 'fraud-check', 'inventory', 'shipping'])
  } catch (error) {
    await client.query('ROLLBACK')
    throw error
  } finally {
    client.release()
  }

  // Paid by invoice: the fraud check's filter leaves it out.
  const invoiced = await postbox.publish('order.us.placed', { orderId: 'inv-7' }, { headers: { payment: 'invoice' } })
  console.log(`invoiced order: reached ${invoiced.queues.join(', ')}`)
  assert.deepEqual(invoiced.queues, ['audit', 'inventory', 'shipping'])

  // Many events in one statement, each routed by its own key.
  const results = await postbox.publishBatch([
    { routingKey: 'order.eu.shipped', payload: { orderId: '1' } },
    { routingKey: 'order.us.placed', payload: { orderId: 'w-8' }, headers: { payment: 'wallet' } },
  ])
  console.log(`a batch of two reached: ${results.map((r) => r.queues.join(', ')).join(' / ')}`)
  assert.deepEqual(results.map((r) => r.queues), [['audit'], ['audit', 'fraud-check', 'inventory', 'shipping']])

  // Every consumer gets its own copy, with the routing key it was published with.
  for (const queue of ['inventory', 'shipping', 'fraud-check', 'audit']) {
    const messages = await postbox.receive<{ orderId: string }>(queue, { max: 10 })
    console.log(`${queue}: ${messages.map((m) => `${m.routingKey} ${m.payload.orderId}`).join('; ')}`)
    await postbox.ack(messages)
  }

  // An event nobody subscribed to is counted, never silently lost from view...
  await postbox.publish('order.eu.refunded.partially', { orderId: 3 }) // audit's order.# takes it
  await postbox.publish('invoice.paid', { invoiceId: 7 }) // no binding matches
  const unrouted = await postbox.unroutedStats()
  console.log(`unrouted publishes: ${unrouted.count}, the last with routing key ${unrouted.lastRoutingKey}`)
  // ...or refused, when it must reach someone.
  await assert.rejects(postbox.publish('invoice.paid', { invoiceId: 8 }, { unrouted: 'error' }), UnroutableError)

  // The same from SQL (a trigger, another language): it returns how many queues it reached.
  const { rows } = await pool.query(`SELECT ${schema}.publish('order.eu.cancelled', '{"orderId": 1}') AS reached`)
  console.log(`SQL publish of order.eu.cancelled reached ${rows[0].reached} queue(s)`)
  assert.equal(rows[0].reached, 1) // audit
  for (const b of await postbox.listBindings()) console.log(`binding: ${b.queue} <- ${b.pattern}${b.filter ? ` if ${JSON.stringify(b.filter)}` : ''}`)
} finally {
  await postbox.close()
  await pool.end()
  await close()
}
