import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { cliDatabase } from '../../src/cli/database-url.js'

/** Where an example runs: a connection string, and two schemas of its own. */
export interface ExampleDatabase {
  readonly connectionString: string
  /** The schema postbox is installed in for this run. */
  readonly schema: string
  /** The schema of the example's own business tables (users, orders...). */
  readonly appSchema: string
  /** Drops both schemas and, when one was started, stops the embedded Postgres. */
  close(): Promise<void>
}

/**
 * The database an example runs against: `DATABASE_URL` when set, else an embedded Postgres
 * started for this run. Each run gets fresh schemas, so an example never touches anything
 * else in a shared database, and `close()` drops them. The embedded server installs no signal
 * handlers, so an example's SIGTERM handling is its own; `close()` (or process exit) stops it.
 */
export async function exampleDatabase(name: string): Promise<ExampleDatabase> {
  const db = await cliDatabase(undefined, true)
  const suffix = randomBytes(4).toString('hex')
  const schema = `example_${name}_${suffix}`
  const appSchema = `${schema}_app`
  const admin = new pg.Client({ connectionString: db.connectionString })
  await admin.connect()
  await admin.query(`CREATE SCHEMA ${appSchema}`)
  await admin.end()
  return {
    connectionString: db.connectionString,
    schema,
    appSchema,
    async close() {
      const client = new pg.Client({ connectionString: db.connectionString })
      await client.connect()
      try {
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; DROP SCHEMA IF EXISTS ${appSchema} CASCADE`)
      } finally {
        await client.end()
      }
      await db.close()
    },
  }
}
