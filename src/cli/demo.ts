import { Postbox } from '../postbox.js'
import { dropDemoSchema, uniqueDemoSchema } from './demo-schema.js'
import { cliDatabase } from './database-url.js'

/** The demo: migrate, send, receive and ack on an embedded Postgres (or DATABASE_URL), and say what happened. */
export async function runDemo(url: string | undefined): Promise<void> {
  const started = Date.now()
  const db = await cliDatabase(url, true)
  console.log(db.embedded ? 'started an embedded Postgres for this demo' : 'using DATABASE_URL')
  const schema = uniqueDemoSchema()
  const postbox = new Postbox({ connectionString: db.connectionString, schema })
  try {
    const migrated = await postbox.migrate()
    console.log(`migrated schema ${schema} to version ${migrated.version}`)
    await postbox.createQueue('emails', { maxAttempts: 3 })
    const sent = await postbox.send('emails', { to: 'ada@example.com', template: 'welcome' })
    console.log(`sent message ${sent.id} to emails`)
    const [message] = await postbox.receive('emails', { visibilityTimeout: '30s' })
    if (!message) throw new Error('the demo message was not received')
    console.log(`received message ${message.id} (attempt ${message.attempt}): ${JSON.stringify(message.payload)}`)
    await postbox.ack(message)
    console.log(`acked message ${message.id}`)
    const [stats] = await postbox.stats('emails')
    console.log(`queue emails now: ready ${stats?.ready}, in flight ${stats?.inFlight}, dead ${stats?.dead}`)
  } finally {
    await postbox.close()
    if (!db.embedded) await dropDemoSchema(db.connectionString, schema)
    await db.close()
  }
  console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)}s`)
}
