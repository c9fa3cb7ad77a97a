import type { TestProject } from 'vitest/node'
import { EmbeddedPostgresError } from '../../src/errors.js'
import { startTestPostgres } from './postgres.js'

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string
    /** Where LISTEN connects: POSTBOX_TEST_LISTEN_URL when the suite runs through a pooler, else databaseUrl. */
    listenUrl: string
    postgresSource: string
  }
}

/**
 * Starts one Postgres for the whole run and hands its URL to every test file. With
 * POSTBOX_TEST_LISTEN_URL set, DATABASE_URL is a pooler in transaction mode (PgBouncer, in
 * .ci/run) and LISTEN connects to Postgres directly at that URL, as docs/pgbouncer.md says.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await startTestPostgres().catch((error: unknown) => {
    if (!(error instanceof EmbeddedPostgresError)) throw error
    // One line that says what to do, rather than vitest's report of an error in the setup.
    console.error(`postbox tests: ${error.message}`)
    process.exit(1)
  })
  project.provide('databaseUrl', postgres.connectionString)
  project.provide('listenUrl', process.env.POSTBOX_TEST_LISTEN_URL || postgres.connectionString)
  project.provide('postgresSource', postgres.source)
  return () => postgres.stop()
}
