import { InvalidOptionsError } from '../errors.js'
import type { Executor } from './executor.js'
import { isKyselyLike, kyselyExecutor, type KyselyLike } from './kysely-executor.js'
import { pgExecutor, type PgQueryable } from './pg-executor.js'

/**
 * Where a caller's statement should run: a pg `PoolClient`/`Client` inside `BEGIN`, or a Kysely
 * `Transaction` (or `Kysely` instance). postbox runs its statements on it and never commits or
 * rolls back; the caller's transaction decides.
 */
export type TransactionLike = PgQueryable | KyselyLike

/**
 * The executor for `tx` when the caller gave one, else `fallback` (the postbox pool). Statements
 * on the caller's connection are never named (see `pgExecutor`).
 */
export function executorFor(tx: TransactionLike | undefined, fallback: Executor): Executor {
  if (tx === undefined || tx === null) return fallback
  if (isKyselyLike(tx)) return kyselyExecutor(tx)
  if (typeof (tx as PgQueryable).query === 'function') return pgExecutor(tx as PgQueryable)
  throw new InvalidOptionsError('tx must be a pg client inside BEGIN or a Kysely transaction')
}
