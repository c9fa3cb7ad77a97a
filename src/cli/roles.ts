import pg from 'pg'
import { rolesSql, roleNames } from '../roles/roles-sql.js'
import { schemaName } from '../schema-name.js'
import { cliDatabase } from './database-url.js'

/** Options of `postbox roles`. */
export interface RolesCommandOptions {
  databaseUrl?: string
  schema: string
  /** Role name prefix; default the schema name. */
  prefix?: string
  /** Run the SQL instead of printing it. */
  apply?: boolean
}

/**
 * `postbox roles`: prints the SQL that creates the producer, consumer and admin roles for a
 * schema, or with `--apply` runs it (as the schema owner, with CREATEROLE) in one transaction.
 *
 * @example
 * postbox roles --schema postbox | psql "$DATABASE_URL"
 * postbox roles --schema postbox --apply
 */
export async function runRoles(o: RolesCommandOptions): Promise<void> {
  const schema = schemaName(o.schema)
  const prefix = o.prefix ?? schema.name
  const script = rolesSql(schema, prefix)
  if (!o.apply) {
    process.stdout.write(script)
    return
  }
  const db = await cliDatabase(o.databaseUrl, false)
  const client = new pg.Client({ connectionString: db.connectionString })
  await client.connect()
  try {
    await client.query(script)
  } finally {
    await client.end()
  }
  const r = roleNames(prefix)
  console.log(`schema ${schema.name}: roles ${r.producer}, ${r.consumer} and ${r.admin} are in place; grant them to your login roles`)
}
