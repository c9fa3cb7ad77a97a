import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { schemaName } from '../schema-name.js'

/** A fresh schema name for one demo run, so a shared database is never touched outside it. */
export function uniqueDemoSchema(): string {
  return `postbox_demo_${randomBytes(4).toString('hex')}`
}

/** Drops a demo schema and everything in it. */
export async function dropDemoSchema(connectionString: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString })
  await client.connect()
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schemaName(name).sql} CASCADE`)
  } finally {
    await client.end()
  }
}
