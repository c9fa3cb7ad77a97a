import type { TestProject } from 'vitest/node'
import { startTestPostgres } from './postgres.js'

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string
    postgresSource: string
  }
}

/** Starts one Postgres for the whole run and hands its URL to every test file. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const postgres = await startTestPostgres()
  project.provide('databaseUrl', postgres.connectionString)
  project.provide('postgresSource', postgres.source)
  return () => postgres.stop()
}
