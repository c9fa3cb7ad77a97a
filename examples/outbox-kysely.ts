// The transactional outbox with Kysely: an order row and its `order-placed` message commit in one
// transaction, so the message exists if and only if the order does. A transactional worker then
// confirms the order in the same transaction as its ack: the database effect happens once.
//
//   npx tsx examples/outbox-kysely.ts        (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import { Kysely, PostgresDialect, sql, type Generated, type Transaction } from 'kysely'
import pg from 'pg'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

interface Database {
  orders: { id: Generated<string>; customer: string; total_cents: number; status: Generated<string> }
}

const { connectionString, schema, appSchema, close } = await exampleDatabase('outbox_kysely')
const pool = new pg.Pool({ connectionString, options: `-c search_path=${appSchema}` })
const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
// Given `kysely`, postbox runs transactional handlers in Kysely transactions: ctx.tx is one.
const postbox = new Postbox({ connectionString, schema, kysely: db })
try {
  await postbox.migrate()
  await postbox.createQueue('order-placed')
  await sql`CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL, total_cents integer NOT NULL, status text NOT NULL DEFAULT 'new')`.execute(db)

  const order = await db.transaction().execute(async (trx) => {
    const row = await trx.insertInto('orders').values({ customer: 'ada', total_cents: 4200 }).returning('id').executeTakeFirstOrThrow()
    await postbox.send('order-placed', { orderId: row.id }, { tx: trx })
    return row
  })
  console.log(`order ${order.id} and its message committed together`)

  // A transaction that fails takes its message with it: nobody will ever receive it.
  await db.transaction().execute(async (trx) => {
    const row = await trx.insertInto('orders').values({ customer: 'mallory', total_cents: 1 }).returning('id').executeTakeFirstOrThrow()
    await postbox.send('order-placed', { orderId: row.id }, { tx: trx })
    throw new Error('payment declined')
  }).catch((error: Error) => console.log(`second order rolled back (${error.message}): no order, no message`))

  const worker = postbox.work<{ orderId: string }, Transaction<Database>>('order-placed', async (message, { tx }) => {
    // transactional: true, so this update commits with the ack, or neither does.
    await tx.updateTable('orders').set({ status: 'confirmed' }).where('id', '=', message.payload.orderId).execute()
  }, { transactional: true })
  await new Promise((resolve) => worker.once('completed', resolve))
  await worker.stop({ timeout: '5s' })

  const orders = await db.selectFrom('orders').select(['id', 'customer', 'status']).execute()
  console.log('orders:', orders)
  assert.deepEqual(orders, [{ id: order.id, customer: 'ada', status: 'confirmed' }])
  assert.equal((await postbox.stats('order-placed'))[0]?.total, 0)
} finally {
  await postbox.close()
  await db.destroy() // ends the pool
  await close()
}
