// Sending from SQL: a trigger calls postbox's SQL `send` when a user row is inserted, so any
// writer (another language, a migration, psql) enqueues in its own transaction. Then the
// message is inspected with plain SQL, received and acked.
//
//   npx tsx examples/sql-trigger.ts         (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import pg from 'pg'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, appSchema, close } = await exampleDatabase('sql_trigger')
const pool = new pg.Pool({ connectionString, options: `-c search_path=${appSchema}` })
const postbox = new Postbox({ connectionString, schema })
try {
  await postbox.migrate()
  await postbox.createQueue('welcome-emails')

  // `schema` is where postbox is installed: `postbox` unless you chose another.
  await pool.query(`
    CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL);

    CREATE FUNCTION send_welcome_email() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM ${schema}.send('welcome-emails', jsonb_build_object('userId', NEW.id, 'email', NEW.email));
      RETURN NEW;
    END $$;

    CREATE TRIGGER users_welcome AFTER INSERT ON users
      FOR EACH ROW EXECUTE FUNCTION send_welcome_email();
  `)

  await pool.query(`INSERT INTO users (email) VALUES ('grace@example.com')`)

  const { rows } = await pool.query(`SELECT id, queue, payload, attempt FROM ${schema}.messages WHERE queue = 'welcome-emails'`)
  console.log('the message, as SQL sees it:', rows)
  const { rows: stats } = await pool.query(`SELECT queue, ready, in_flight, dead FROM ${schema}.queue_stats WHERE queue = 'welcome-emails'`)
  console.log('queue_stats:', stats)

  const [message] = await postbox.receive<{ userId: number; email: string }>('welcome-emails')
  if (!message) throw new Error('the trigger sent nothing')
  await postbox.ack(message)
  console.log(`received and acked message ${message.id}:`, message.payload)
  assert.equal(message.payload.email, 'grace@example.com')
} finally {
  await postbox.close()
  await pool.end()
  await close()
}
