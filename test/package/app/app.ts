// A user's app: compiled with tsc --strict (skipLibCheck off) against the installed tarball, then
// run by ../package-check.ts. It imports only what a user of the package can import.
import assert from 'node:assert/strict'
import { InvalidPayloadError, Postbox, QueueNotFoundError, defineQueue, type Message } from 'postbox'
import { z } from 'zod'

const connectionString = process.env.DATABASE_URL
const schema = process.env.POSTBOX_SCHEMA
const table = process.env.APP_TABLE
if (!connectionString || !schema || !table) throw new Error('set DATABASE_URL, POSTBOX_SCHEMA and APP_TABLE')

const signups = defineQueue({
  name: 'signups',
  schema: z.object({ email: z.string(), plan: z.enum(['free', 'pro']) }),
})
type Signup = z.output<typeof signups.schema>

/** Never called: these lines only have to compile, or fail to compile where marked. */
export function typeChecks(postbox: Postbox): void {
  // @ts-expect-error: the payload must match the queue's schema
  void postbox.send(signups, { email: 'a@example.com', plan: 'enterprise' })
  postbox.work(signups, async (message, ctx) => {
    const plan: 'free' | 'pro' = message.payload.plan
    // @ts-expect-error: outside transactional mode ctx.tx may be undefined
    await ctx.tx.query('SELECT $1', [plan])
  })
}

const postbox = new Postbox({ connectionString, schema })
const handled = new Set<string>()
try {
  await postbox.migrate()
  await postbox.createQueue(signups.name)
  const ids = await postbox.sendBatch(signups, [{ email: 'ada@example.com', plan: 'pro' }, { email: 'bob@example.com', plan: 'free' }])
  const { id } = await postbox.send(signups, { email: 'cy@example.com', plan: 'pro' })
  // Refused input arrives as the exported error classes.
  await assert.rejects(postbox.send('no-such-queue', {}), QueueNotFoundError)
  await assert.rejects(postbox.send(signups, { email: 'dee@example.com' } as unknown as Signup), InvalidPayloadError)

  const worker = postbox.work(signups, async (message, ctx) => {
    const email: string = message.payload.email // inferred from the queue's zod schema
    // transactional: true, so ctx.tx is there (no `!`), and this insert commits with the ack.
    const { rows } = await ctx.tx.query<{ n: number }>(`INSERT INTO ${table} (message_id, email) VALUES ($1, $2) RETURNING 1 AS n`, [message.id, email])
    assert.equal(rows[0]?.n, 1)
  }, { transactional: true, concurrency: 2 })
  worker.on('completed', (message: Message) => handled.add(message.id))
  const deadline = Date.now() + 20_000
  while (handled.size < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  await worker.stop()
  assert.deepEqual([...handled].sort(), [...ids, id].sort())
} finally {
  await postbox.close()
}
console.log(`app: sent and handled ${handled.size} messages in a transactional worker`)
