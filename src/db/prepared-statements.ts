import { createHash } from 'node:crypto'
import type { Executor, QueryResult } from './executor.js'
import type { PgQueryable } from './pg-executor.js'

/**
 * The SQLSTATEs of a named statement that the connection does not hold as this client believes:
 * 42P05 (duplicate_prepared_statement: another client prepared the name on this server
 * connection) and 26000 (invalid_sql_statement_name: it was prepared on another one). Behind a
 * pooler in transaction mode that does not track prepared statements (PgBouncer before 1.21, or
 * later with `max_prepared_statements = 0`), consecutive transactions of one client run on
 * different server connections. Both are raised at Parse or Bind, before anything runs.
 */
const LOST_PREPARED_STATEMENT = new Set(['42P05', '26000'])

/** The longest name Postgres keeps (NAMEDATALEN - 1 bytes); it cuts longer ones there. */
const MAX_NAME_BYTES = 63

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/**
 * The name a statement is prepared under: its postbox name and a hash of its text. With a long
 * schema name that would pass 63 bytes, where Postgres cuts it (with a notice) and two statements
 * could meet in one name, it is `postbox:` and a hash of the whole instead.
 */
export function preparedName(name: string, text: string): string {
  const full = `${name}:${sha256(text).slice(0, 12)}`
  return Buffer.byteLength(full) <= MAX_NAME_BYTES ? full : `postbox:${sha256(full).slice(0, 32)}`
}

/** Options of {@link preparingExecutor}. */
export interface PreparingOptions {
  /** Called once, with the error, when the executor stops naming statements. */
  onUnsupported?: (error: Error) => void
}

/**
 * Runs the hot statements (those given a `name`) on a pg Pool as prepared statements, so each
 * connection parses and plans them once. Measured on Postgres 18 (docs/performance.md): a lone
 * send and concurrent sends (batched into shared statements) 1.2-1.3x, a claim of one and its
 * ack 1.1x the messages per second of unnamed statements; batches of 100 and more about even.
 *
 * The first time the server answers a named statement with 42P05 or 26000, the pool goes
 * through a pooler that cannot keep prepared statements: the executor then runs that statement
 * again unnamed (safe: it failed before it ran) and names nothing from then on. Only
 * single statements on the pool come here, never a statement inside a transaction, where the
 * error would have aborted the transaction (see `pgExecutor`).
 *
 * The name carries a hash of the text, so that behind such a pooler a statement prepared by
 * another version of postbox, on a server connection this client now lands on, is never run
 * in place of this one: a different text has a different name.
 *
 * @example
 * const db = preparingExecutor(pool, { onUnsupported: (e) => logger.warn(e.message) })
 * await db.query('SELECT ...', [1], 'postbox:postbox:send')
 */
export function preparingExecutor(pool: PgQueryable, options: PreparingOptions = {}): Executor {
  let naming = true
  const names = new Map<string, string>()
  const unnamed = async <R>(text: string, values: readonly unknown[]): Promise<QueryResult<R>> =>
    ({ rows: (await pool.query(text, values as unknown[])).rows as R[] })
  return {
    async query<R>(text: string, values: readonly unknown[] = [], name?: string): Promise<QueryResult<R>> {
      if (!name || !naming) return unnamed<R>(text, values)
      let hashed = names.get(name) // one text per name in a process: pg refuses a second one
      if (hashed === undefined) {
        hashed = preparedName(name, text)
        names.set(name, hashed)
      }
      try {
        return { rows: (await pool.query({ name: hashed, text, values: values as unknown[] })).rows as R[] }
      } catch (error) {
        if (!LOST_PREPARED_STATEMENT.has((error as { code?: string }).code ?? '')) throw error
        if (naming) {
          naming = false
          options.onUnsupported?.(error as Error)
        }
        return unnamed<R>(text, values)
      }
    },
  }
}
