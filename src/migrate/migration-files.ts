import { createHash } from 'node:crypto'
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { SchemaName } from '../schema-name.js'

/** One forward-only SQL file from `migrations/`, named `NNNN_description.sql`. */
export interface MigrationFile {
  readonly version: number
  readonly name: string
  /** sha256 of the file as written, before the schema placeholder is filled in. */
  readonly checksum: string
  readonly sql: string
}

// The same relative path works from src/migrate (tsx, tests) and dist/migrate (the package).
const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url))
const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/

let cached: readonly MigrationFile[] | undefined

/** The migration files in version order, read once per process. */
export function migrationFiles(): readonly MigrationFile[] {
  cached ??= readdirSync(MIGRATIONS_DIR)
    .filter((file) => FILE_NAME.test(file))
    .sort()
    .map((file, index) => {
      const [, version, name] = FILE_NAME.exec(file) as RegExpExecArray
      if (Number(version) !== index + 1) throw new Error(`migrations/${file}: expected version ${index + 1}`)
      const sql = readFileSync(MIGRATIONS_DIR + file, 'utf8')
      return { version: index + 1, name: name as string, sql, checksum: createHash('sha256').update(sql).digest('hex') }
    })
  return cached
}

/** A migration's SQL with the schema placeholders filled in. */
export function renderMigration(file: MigrationFile, schema: SchemaName): string {
  return file.sql.replaceAll('{{schema}}', schema.sql).replaceAll('{{schema_name}}', schema.name)
}
