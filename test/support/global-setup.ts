import type { TestProject } from 'vitest/node'
import { EmbeddedPostgresError } from '../../src/errors.js'
import { startTestPostgres } from './postgres.js'

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string
    postgresSource: string
  }
}

/** Starts one Postgres for the whole run and hands its URL to every test file. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await startTestPostgres().catch((error: unknown) => {
    if (!(error instanceof EmbeddedPostgresError)) throw error
    console.error(`postbox tests: ${error.message}`)
    process.exit(1)
  })
  project.provide('databaseUrl', postgres.connectionString)
  project.provide('postgresSource', postgres.source)
  return () => postgres.stop()
}
