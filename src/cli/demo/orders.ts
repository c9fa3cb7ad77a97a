import { Kysely, PostgresDialect, type Generated } from 'kysely'
import type { Message } from '../../queue/message.js'
import type { DemoContext, ScenarioResult } from './scenario.js'
import { scenarioResult, stopWorkers } from './scenario.js'
import { Tally } from './tally.js'
import { renderTable } from '../text-table.js'

/** The app's tables, as Kysely sees them. */
interface AppDatabase {
  orders: { id: Generated<string>; customer: string; sku: string; quantity: number; country: string }
  stock: { sku: string; on_hand: number }
}

/** What each of the three consumers of an order gets. */
interface OrderWork {
  orderId: string
  customer: string
  sku: string
  quantity: number
  country: string
}

const ORDERS = [
  { customer: 'ada', sku: 'kettle', quantity: 2, country: 'DE' },
  { customer: 'grace', sku: 'teapot', quantity: 1, country: 'GB' },
  { customer: 'alan', sku: 'mug', quantity: 3, country: 'GB' }, // its shipping label fails once
  { customer: 'barbara', sku: 'kettle', quantity: 1, country: 'US' },
  { customer: 'linus', sku: 'teapot', quantity: 1, country: 'Atlantis' }, // poison for the fraud check
] as const
const FLAKY_CUSTOMER = 'alan'
const QUEUES = ['inventory', 'shipping-label', 'fraud-check'] as const
const FRAUD_ATTEMPTS = 3
/** Quick, fixed retries, so the demo shows them within a second. */
const RETRY = { type: 'fixed', base: '200ms', jitter: false } as const

/**
 * Scenario 2, order processing: the order row and three messages (inventory, shipping label,
 * fraud check) commit in one Kysely transaction. Inventory runs in transactional mode, so its
 * stock update commits with the ack (exactly once); the shipping label fails once and succeeds
 * on retry; one poison order exhausts the fraud check's attempts and lands in its dead letter.
 */
export async function ordersScenario(ctx: DemoContext): Promise<ScenarioResult> {
  const { postbox, pool, app, say, signal } = ctx
  say('   Each order row and its three messages commit in one Kysely transaction.')
  await pool.query(`CREATE TABLE ${app.sql}.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      customer text NOT NULL, sku text NOT NULL, quantity integer NOT NULL, country text NOT NULL);
    CREATE TABLE ${app.sql}.stock (sku text PRIMARY KEY, on_hand integer NOT NULL);
    INSERT INTO ${app.sql}.stock VALUES ('kettle', 10), ('teapot', 5), ('mug', 20);`)
  await postbox.createQueue('inventory', { retention: '1h' })
  await postbox.createQueue('shipping-label', { retention: '1h', backoff: RETRY })
  await postbox.createQueue('fraud-check', { retention: '1h', backoff: RETRY, maxAttempts: FRAUD_ATTEMPTS })

  const tally = new Tally()
  const who = (m: Message<OrderWork>) => `order ${m.payload.orderId} (${m.payload.customer})`
  const lane = (queue: string) => `  ${queue.padEnd(14)} `
  const workers = [
    postbox.work<OrderWork>('inventory', async (m, c) => {
      // Transactional mode: this update and the ack commit together, or neither does.
      const { rows } = await c.tx.query<{ on_hand: number }>(
        `UPDATE ${app.sql}.stock SET on_hand = on_hand - $2 WHERE sku = $1 RETURNING on_hand`, [m.payload.sku, m.payload.quantity])
      say(`${lane('inventory')}${who(m)}: reserved ${m.payload.quantity} x ${m.payload.sku}, ${rows[0]?.on_hand} left`)
    }, { transactional: true, concurrency: 2 }),
    postbox.work<OrderWork>('shipping-label', async (m) => {
      if (m.payload.customer === FLAKY_CUSTOMER && m.attempt === 1) throw new Error('label printer jammed')
      say(`${lane('shipping-label')}${who(m)}: label printed (attempt ${m.attempt})`)
    }, { concurrency: 2 }),
    postbox.work<OrderWork>('fraud-check', async (m) => {
      if (m.payload.country.length !== 2) throw new Error(`no risk model for country '${m.payload.country}'`)
      say(`${lane('fraud-check')}${who(m)}: approved`)
    }, { concurrency: 2 }),
  ]
  for (const worker of workers) {
    tally.watch(worker)
    worker.on('retried', (m, error) => say(`${lane(m.queue)}${who(m as Message<OrderWork>)}: failed (attempt ${m.attempt}: ${(error as Error).message}), retried`))
    worker.on('deadLettered', (m, error) => say(`${lane(m.queue)}${who(m as Message<OrderWork>)}: failed (attempt ${m.attempt}: ${(error as Error).message}), dead-lettered to ${m.queue}.dead`))
  }
  try {
    // Kysely over the app's pool; not destroyed here, since destroying it would end that pool.
    const db = new Kysely<AppDatabase>({ dialect: new PostgresDialect({ pool }) }).withSchema(app.name)
    for (const order of ORDERS) {
      const orderId = await db.transaction().execute(async (trx) => {
        const { id } = await trx.insertInto('orders').values(order).returning('id').executeTakeFirstOrThrow()
        const work: OrderWork = { orderId: String(id), customer: order.customer, sku: order.sku, quantity: order.quantity, country: order.country }
        for (const queue of QUEUES) await postbox.send(queue, work, { tx: trx })
        return String(id)
      })
      say(`${lane('order')}order ${orderId} (${order.customer}): ${order.quantity} x ${order.sku} to ${order.country}, 3 messages in the same commit`)
    }
    const expected = ORDERS.length * QUEUES.length - 1
    await tally.until((t) => t.total().completed >= expected && t.total().deadLettered >= 1, signal, 'the orders to be processed')
    await showDeadLetter(ctx)
    const poison = tally.of('fraud-check')
    const note = `a label retried once; poison order: ${poison.failed} attempts, dead-lettered`
    return await scenarioResult(ctx, 'order processing', QUEUES, tally, note)
  } finally {
    await stopWorkers(workers)
  }
}

/** Prints the dead-letter queue's contents, as an operator would look at them. */
async function showDeadLetter(ctx: DemoContext): Promise<void> {
  const sql = `SELECT id, original_queue, original_attempt AS attempts, split_part(last_error, E'\\n', 1) AS last_error, payload
FROM ${ctx.postbox.schema.sql}.messages WHERE queue = 'fraud-check.dead'`
  const result = await ctx.pool.query({ text: sql, rowMode: 'array', types: { getTypeParser: () => (value: string) => value } })
  ctx.say('  the dead letter, where an operator finds it:')
  for (const line of renderTable(result.fields.map((f) => f.name), result.rows as (string | null)[][])) ctx.say(`    ${line}`)
}
