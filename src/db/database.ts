import type { Executor } from './executor.js'
import { kyselyExecutor, type KyselyLike } from './kysely-executor.js'
import { pgExecutor, type PgQueryable } from './pg-executor.js'
import { preparingExecutor, type PreparingOptions } from './prepared-statements.js'

/**
 * The connection postbox owns or was given: it runs statements and transactions. A transaction
 * hands its callback both an {@link Executor} and the driver's own handle (a pg client in `BEGIN`
 * or a Kysely `Transaction`), which transactional handlers receive as `ctx.tx`.
 */
export interface Database extends Executor {
  transaction<T>(fn: (tx: Executor, handle: unknown) => Promise<T>): Promise<T>
}

/** The subset of pg's `Pool` that postbox uses. */
export interface PgPoolLike extends PgQueryable {
  connect(): Promise<PgQueryable & PgClientEvents & { release(err?: Error | boolean): void }>
}

/** The events of a checked-out pg client that postbox listens to. */
interface PgClientEvents {
  on(event: 'error', listener: (error: Error) => void): unknown
  off(event: 'error', listener: (error: Error) => void): unknown
}

/**
 * A {@link Database} over a pg Pool: each transaction checks out one client. With `prepared`,
 * single statements on the pool are named (see {@link preparingExecutor}); statements inside a
 * transaction never are.
 */
export function poolDatabase(pool: PgPoolLike, options: { prepared?: boolean } & PreparingOptions = {}): Database {
  const executor = options.prepared ? preparingExecutor(pool, options) : pgExecutor(pool)
  return {
    query: executor.query,
    async transaction(fn) {
      const client = await pool.connect()
      let broken: Error | undefined
      // A checked-out client that loses its connection (terminated, server restart) emits
      // 'error'; pg's pool listens only on idle clients, and an unheard 'error' ends the process.
      // The statement in flight fails on its own, and the client is discarded below.
      const lost = (error: Error) => {
        broken = error
      }
      client.on('error', lost)
      try {
        await client.query('BEGIN')
        const result = await fn(pgExecutor(client), client)
        await client.query('COMMIT')
        return result
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => {
          broken = rollbackError
        })
        throw error
      } finally {
        // A client whose connection broke or whose ROLLBACK failed is in an unknown state: destroy
        // it rather than reuse it.
        client.off('error', lost)
        client.release(broken ?? false)
      }
    },
  }
}

/** The subset of a Kysely instance that postbox uses to run transactions. */
export interface KyselyDatabaseLike extends KyselyLike {
  transaction(): { execute<T>(fn: (trx: KyselyLike) => Promise<T>): Promise<T> }
}

/** A {@link Database} over a Kysely instance: transactions are Kysely transactions. */
export function kyselyDatabase(db: KyselyDatabaseLike): Database {
  const executor = kyselyExecutor(db)
  return {
    query: executor.query,
    transaction: (fn) => db.transaction().execute((trx) => fn(kyselyExecutor(trx), trx)),
  }
}
