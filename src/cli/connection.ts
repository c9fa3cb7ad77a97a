import { Option, type Command } from 'commander'
import { Postbox } from '../postbox.js'
import { cliDatabase } from './database-url.js'

/** The connection options every database command takes. */
export interface ConnectionOptions {
  url?: string
  /** The older spelling of `--url`, still accepted. */
  databaseUrl?: string
  schema: string
}

/** Adds `--url` (and its older spelling `--database-url`, hidden from help) to a command. */
export function addUrlOption(command: Command): Command {
  return command
    .addOption(new Option('--url <url>', 'Postgres connection string (default: $DATABASE_URL)'))
    .addOption(new Option('--database-url <url>', 'the same as --url').hideHelp())
}

/** Adds `--url`, `--database-url` and `--schema` (default `postbox`) to a command. */
export function addConnectionOptions(command: Command): Command {
  return addUrlOption(command).addOption(new Option('--schema <name>', 'schema postbox lives in').default('postbox'))
}

/** The URL given on the command line, by either spelling. */
export function givenUrl(o: { url?: string; databaseUrl?: string }): string | undefined {
  return o.url ?? o.databaseUrl
}

/**
 * Runs `fn` with a Postbox on the command's database and schema, and closes it afterwards,
 * whatever happens. The pool is small: a CLI command runs one statement at a time.
 */
export async function withPostbox<T>(o: ConnectionOptions, fn: (postbox: Postbox) => Promise<T>, poolSize = 2): Promise<T> {
  const db = await cliDatabase(givenUrl(o), false)
  const postbox = new Postbox({ connectionString: db.connectionString, schema: o.schema, poolSize })
  try {
    return await fn(postbox)
  } finally {
    await postbox.close()
  }
}
