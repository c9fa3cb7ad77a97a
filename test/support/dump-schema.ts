// Writes migrations/schema.sql, the installed schema in one readable file (see schema-snapshot.ts),
// from a freshly migrated schema on DATABASE_URL, or on an embedded Postgres started for it.
//
//   npm run db:dump
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { poolDatabase } from '../../src/db/database.js'
import { migrationFiles } from '../../src/migrate/migration-files.js'
import { migrate } from '../../src/migrate/migrator.js'
import { schemaName } from '../../src/schema-name.js'
import { startTestPostgres } from './postgres.js'
import { SNAPSHOT_FILE, schemaSnapshot } from './schema-snapshot.js'
import { uniqueSchemaName } from './test-schema.js'

const server = await startTestPostgres()
const pool = new pg.Pool({ connectionString: server.connectionString, max: 2 })
// The server's shutdown may reach a connection the pool is still closing: not a failure of the dump.
pool.on('error', () => {})
const schema = uniqueSchemaName('pb_snapshot')
try {
  await migrate(poolDatabase(pool), schemaName(schema))
  const snapshot = await schemaSnapshot(pool, schema, migrationFiles().length)
  writeFileSync(fileURLToPath(new URL(`../../${SNAPSHOT_FILE}`, import.meta.url)), snapshot)
  console.log(`wrote ${SNAPSHOT_FILE} (${snapshot.split('\n').length} lines, migrations 1 to ${migrationFiles().length})`)
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
  await pool.end()
  await server.stop()
}
