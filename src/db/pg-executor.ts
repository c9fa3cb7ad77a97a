import type { Executor, QueryResult } from './executor.js'

/**
 * The subset of a pg `Pool`, `PoolClient` or `Client` that postbox uses. Typed structurally so
 * that any pg-compatible driver object fits without a hard dependency on pg's classes.
 */
export interface PgQueryable {
  query(textOrConfig: string | { name?: string; text: string; values?: unknown[] }, values?: unknown[]): Promise<{ rows: unknown[] }>
}

/**
 * Wraps a pg Pool or client (including one inside the caller's `BEGIN`) as an {@link Executor}.
 * With `prepared` (the default), named statements are prepared once per connection: measured on a
 * send, that saves the parse and plan of every call. Turn it off behind a PgBouncer older than
 * 1.21 in transaction mode, which cannot keep prepared statements.
 */
export function pgExecutor(target: PgQueryable, { prepared = true }: { prepared?: boolean } = {}): Executor {
  return {
    async query<R>(text: string, values: readonly unknown[] = [], name?: string): Promise<QueryResult<R>> {
      const result = name && prepared
        ? await target.query({ name, text, values: values as unknown[] })
        : await target.query(text, values as unknown[])
      return { rows: result.rows as R[] }
    },
  }
}
