import { CompiledQuery } from 'kysely'
import type { Executor, QueryResult } from './executor.js'

/**
 * The subset of a Kysely instance or `Transaction` that postbox uses. Passing a Kysely
 * `Transaction` runs postbox's statement inside it; passing a `Kysely` runs it on its own.
 */
export interface KyselyLike {
  executeQuery<R>(query: CompiledQuery<R>): Promise<{ rows: R[] }>
}

/** Wraps a Kysely instance or transaction as an {@link Executor}. */
export function kyselyExecutor(db: KyselyLike): Executor {
  return {
    async query<R>(text: string, values: readonly unknown[] = []): Promise<QueryResult<R>> {
      const result = await db.executeQuery(CompiledQuery.raw(text, [...values]) as CompiledQuery<R>)
      return { rows: result.rows }
    },
  }
}

/** Tells a Kysely instance or transaction from a pg client by the method only Kysely has. */
export function isKyselyLike(value: unknown): value is KyselyLike {
  return typeof value === 'object' && value !== null && typeof (value as KyselyLike).executeQuery === 'function'
}
