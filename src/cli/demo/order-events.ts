import type { Message } from '../../queue/message.js'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scenarioResult, stopWorkers } from './scenario.js'
import { Tally } from './tally.js'

/** What an order event carries. */
interface OrderEvent {
  orderId: number
  region: string
}

/** The subscriptions: each consumer's queue, the patterns it is bound to, and its header filter. */
const SUBSCRIPTIONS = [
  { queue: 'reserve-stock', pattern: 'order.*.placed', what: 'every placed order' },
  { queue: 'print-label', pattern: 'order.*.placed', filter: { delivery: 'ship' }, what: 'placed orders to ship' },
  { queue: 'screen-fraud', pattern: 'order.*.placed', filter: { payment: ['card', 'wallet'] }, what: 'placed orders paid by card or wallet' },
  { queue: 'audit-log', pattern: 'order.#', what: 'every order event' },
] as const
const QUEUES = SUBSCRIPTIONS.map((s) => s.queue)

/** The events, in the order they happen; the last one has no subscriber. */
const EVENTS = [
  { key: 'order.eu.placed', orderId: 101, region: 'eu', headers: { payment: 'card', delivery: 'ship' } },
  { key: 'order.us.placed', orderId: 102, region: 'us', headers: { payment: 'invoice', delivery: 'ship' } },
  { key: 'order.eu.placed', orderId: 103, region: 'eu', headers: { payment: 'wallet', delivery: 'pickup' } },
  { key: 'order.eu.cancelled', orderId: 101, region: 'eu', headers: { payment: 'card', delivery: 'ship' } },
  { key: 'invoice.us.paid', orderId: 102, region: 'us', headers: { payment: 'invoice', delivery: 'ship' } },
] as const

/**
 * Scenario 4, order events published once: the shop publishes each order event under a routing
 * key, in the transaction that writes the order, without knowing who listens. Four consumers
 * subscribed with their own queues: stock and the audit log by pattern, label printing and fraud
 * screening by pattern and header filter. Each gets its own copy; an event nobody subscribed to
 * is counted.
 */
export async function orderEventsScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, pool, app, say, signal } = ctx
  say('   Each event is published once; every queue bound to a matching pattern gets its own copy.')
  await pool.query(`CREATE TABLE ${app.sql}.order_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      order_id integer NOT NULL, routing_key text NOT NULL)`)
  for (const s of SUBSCRIPTIONS) {
    await postbox.createQueue(s.queue, { retention: '1h' })
    await postbox.bind(s.queue, s.pattern, 'filter' in s ? { filter: s.filter } : undefined)
    say(`  ${s.queue.padEnd(13)} bound to ${s.pattern}${'filter' in s ? ` if ${JSON.stringify(s.filter)}` : ''}: ${s.what}`)
  }

  const tally = new Tally()
  const lane = (queue: string) => `  ${queue.padEnd(13)} `
  const workers = QUEUES.map((queue) => tally.watch(postbox.work<OrderEvent>(queue, async (m: Message<OrderEvent>) => {
    say(`${lane(queue)}order ${m.payload.orderId}: ${m.routingKey}`)
  }, { concurrency: 2 })))
  try {
    const before = (await postbox.unroutedStats()).count
    let copies = 0
    for (const event of EVENTS) {
      // The event row and the publish commit together, as a business write and its event would.
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query(`INSERT INTO ${app.sql}.order_events (order_id, routing_key) VALUES ($1, $2)`, [event.orderId, event.key])
        const { queues } = await postbox.publish(event.key, { orderId: event.orderId, region: event.region }, { tx: client, headers: event.headers })
        await client.query('COMMIT')
        copies += queues.length
        say(`${lane('shop')}published ${event.key} (order ${event.orderId}, ${event.headers.payment}, ${event.headers.delivery}) -> ${queues.length > 0 ? queues.join(', ') : 'no subscriber'}`)
      } catch (error) {
        await client.query('ROLLBACK')
        throw error
      } finally {
        client.release()
      }
    }
    await tally.until((t) => t.total().completed >= copies, signal, 'the order events to be handled')
    const unrouted = (await postbox.unroutedStats()).count - before
    const note = `${EVENTS.length} events published once -> ${copies} copies in ${QUEUES.length} queues; ${unrouted} unroutable, counted`
    say(`  -> ${note}`)
    return await scenarioResult(ctx, 'order events (topics)', QUEUES, tally, note)
  } finally {
    await stopWorkers(workers)
  }
}
