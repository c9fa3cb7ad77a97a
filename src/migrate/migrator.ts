import type { Database } from '../db/database.js'
import type { Executor } from '../db/executor.js'
import { MigrationError } from '../errors.js'
import type { SchemaName } from '../schema-name.js'
import { migrationFiles, renderMigration, type MigrationFile } from './migration-files.js'

/** What `migrate()` found and did. */
export interface MigrateResult {
  /** Versions applied by this call, in order (empty when the schema was current). */
  readonly applied: readonly number[]
  /** The schema's version after the call. */
  readonly version: number
}

interface AppliedRow {
  version: number
  name: string
  checksum: string
}

function bootstrapSql(schema: SchemaName): string {
  return `CREATE SCHEMA IF NOT EXISTS ${schema.sql};
CREATE TABLE IF NOT EXISTS ${schema.sql}.schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);`
}

// Serialises migrators of one schema across processes; a transaction-level lock cannot leak.
const LOCK_SQL = `SELECT pg_advisory_xact_lock(hashtextextended('postbox.migrate:' || $1, 0))`

/** Refuses a database that is ahead of this code or whose applied files changed. */
function check(applied: readonly AppliedRow[], files: readonly MigrationFile[], schema: SchemaName): void {
  const latest = files.length
  const newest = applied.reduce((max, row) => Math.max(max, row.version), 0)
  if (newest > latest) {
    throw new MigrationError(
      `schema ${schema.name} is at version ${newest}, newer than this postbox's ${latest}: upgrade postbox before using this database`,
    )
  }
  for (const row of applied) {
    const file = files[row.version - 1] as MigrationFile
    if (file.checksum !== row.checksum) {
      throw new MigrationError(
        `migration ${row.version} (${row.name}) applied to schema ${schema.name} differs from migrations/${String(row.version).padStart(4, '0')}_${file.name}.sql: migrations are forward-only, add a new file instead of editing an applied one`,
      )
    }
  }
}

function recordSql(schema: SchemaName): string {
  return `INSERT INTO ${schema.sql}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`
}

/**
 * Applies pending migrations in order, in one transaction, under an advisory lock, so that any
 * number of processes may call it at once and each file is applied exactly once.
 */
export async function migrate(db: Database, schema: SchemaName, files = migrationFiles()): Promise<MigrateResult> {
  return db.transaction(async (tx: Executor) => {
    await tx.query(LOCK_SQL, [schema.name])
    await tx.query(bootstrapSql(schema))
    const { rows } = await tx.query<AppliedRow>(
      `SELECT version, name, checksum FROM ${schema.sql}.schema_migrations ORDER BY version`,
    )
    check(rows, files, schema)
    const pending = files.slice(rows.length)
    for (const file of pending) {
      await tx.query(renderMigration(file, schema))
      await tx.query(recordSql(schema), [file.version, file.name, file.checksum])
    }
    return { applied: pending.map((file) => file.version), version: files.length }
  })
}

/**
 * The SQL that `migrate()` would run on an empty database, as one script, for teams that apply
 * migrations with their own tool (`postbox migrate --print | psql`). Applying it records the same
 * versions, so a later `migrate()` finds nothing to do.
 */
export function migrationScript(schema: SchemaName, files = migrationFiles()): string {
  const literal = (value: string | number) => `'${String(value).replaceAll("'", "''")}'`
  const parts = [
    `-- postbox schema ${schema.name}, migrations 1 to ${files.length}`,
    'BEGIN;',
    `DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtextextended('postbox.migrate:' || ${literal(schema.name)}, 0)); END $$;`,
    bootstrapSql(schema),
  ]
  for (const file of files) {
    parts.push(
      `-- ${String(file.version).padStart(4, '0')}_${file.name}`,
      renderMigration(file, schema),
      `INSERT INTO ${schema.sql}.schema_migrations (version, name, checksum) VALUES (${file.version}, ${literal(file.name)}, ${literal(file.checksum)});`,
    )
  }
  parts.push('COMMIT;', '')
  return parts.join('\n')
}
