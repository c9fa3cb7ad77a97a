import { readFileSync } from 'node:fs'
import { renderMigration } from '../../src/migrate/migration-files.js'
import { schemaName } from '../../src/schema-name.js'

/**
 * The SQL of a patch file (PATCH_SQL in the flow diagnostics: say, the next version of a
 * function, written as a migration is), with the schema placeholders filled in as the migrator
 * does, for trying a change on a bench schema before it becomes a migration.
 */
export function sqlPatch(file: string, schema: string): string {
  return renderMigration({ version: 0, name: file, sql: readFileSync(file, 'utf8'), checksum: '' }, schemaName(schema))
}
