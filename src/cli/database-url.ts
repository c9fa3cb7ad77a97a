import { startEmbeddedPostgres, type LocalPostgres } from '../embedded/embedded-postgres.js'

/** A database to run against, and how to let go of it. */
export interface CliDatabase {
  readonly connectionString: string
  /** True when this process started the server (an embedded Postgres). */
  readonly embedded: boolean
  close(): Promise<void>
}

/**
 * The database a CLI command uses: `--url` (or `--database-url`), else `DATABASE_URL`, else (when the command
 * allows it) an embedded Postgres started for this run only.
 */
export async function cliDatabase(url: string | undefined, allowEmbedded: boolean): Promise<CliDatabase> {
  const given = url ?? process.env.DATABASE_URL
  if (given) return { connectionString: given, embedded: false, close: async () => {} }
  if (!allowEmbedded) throw new Error('no database: pass --url or set DATABASE_URL')
  const local: LocalPostgres = await startEmbeddedPostgres()
  return { connectionString: local.connectionString, embedded: true, close: () => local.stop() }
}
