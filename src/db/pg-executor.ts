import type { Executor, QueryResult } from './executor.js'

/**
 * The subset of a pg `Pool`, `PoolClient` or `Client` that postbox uses. Typed structurally so
 * that any pg-compatible driver object fits without a hard dependency on pg's classes.
 */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>
}

/** Wraps a pg Pool or client (including one inside the caller's `BEGIN`) as an {@link Executor}. */
export function pgExecutor(target: PgQueryable): Executor {
  return {
    async query<R>(text: string, values: readonly unknown[] = []): Promise<QueryResult<R>> {
      const result = await target.query(text, values as unknown[])
      return { rows: result.rows as R[] }
    },
  }
}
