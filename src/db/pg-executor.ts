import type { Executor, QueryResult } from './executor.js'

/**
 * The subset of a pg `Pool`, `PoolClient` or `Client` that postbox uses. Typed structurally so
 * that any pg-compatible driver object fits without a hard dependency on pg's classes.
 */
export interface PgQueryable {
  query(textOrConfig: string | { name?: string; text: string; values?: unknown[] }, values?: unknown[]): Promise<{ rows: unknown[] }>
}

/**
 * Wraps a pg Pool or client (including one inside the caller's `BEGIN`) as an {@link Executor}
 * that runs every statement unnamed: parsed, planned and run in one round trip, which works
 * through any pooler. Inside a transaction postbox never names a statement: the connection may
 * go through a pooler that cannot keep prepared statements, and the error would abort the
 * transaction, the caller's business writes with it. Single statements on postbox's pool are
 * named by `preparingExecutor` instead.
 */
export function pgExecutor(target: PgQueryable): Executor {
  return {
    async query<R>(text: string, values: readonly unknown[] = []): Promise<QueryResult<R>> {
      const result = await target.query(text, values as unknown[])
      return { rows: result.rows as R[] }
    },
  }
}
