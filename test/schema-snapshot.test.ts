import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { migrationFiles } from '../src/migrate/migration-files.js'
import { SNAPSHOT_FILE, schemaSnapshot, snapshotMajor, viewsByName } from './support/schema-snapshot.js'
import { useTestSchema } from './support/test-schema.js'

// migrations/schema.sql is the installed schema in one readable file. It is generated (npm run
// db:dump, on the embedded PostgreSQL 18), and this test fails as soon as a migration changes the
// schema without it; on another major (15 in CI) it compares all but the bodies of views.

const t = useTestSchema()

describe('the schema snapshot', () => {
  it(`${SNAPSHOT_FILE} is what the migrations install (regenerate it with npm run db:dump)`, async () => {
    const committed = readFileSync(new URL(`../${SNAPSHOT_FILE}`, import.meta.url), 'utf8')
    const installed = await schemaSnapshot(t.pool, t.schema, migrationFiles().length)
    const message = `${SNAPSHOT_FILE} is out of date: run npm run db:dump and commit it`
    // Views are deparsed differently by other majors; everything else must match on every one.
    if (snapshotMajor(installed) === snapshotMajor(committed)) expect(installed, message).toBe(committed)
    else expect(viewsByName(installed), message).toBe(viewsByName(committed))
  })
})
