import { z } from 'zod'
import type { KyselyDatabaseLike, PgPoolLike } from './db/database.js'
import { positiveDurationMs } from './duration.js'
import type { Logger } from './logger.js'

/** Options of `new Postbox()`. Give `connectionString` or `pool` (and optionally `kysely`), or `kysely` alone. */
export interface PostboxOptions {
  /** postgres://… ; postbox then owns its pool and closes it in `close()`. */
  connectionString?: string
  /** Your pg Pool; postbox uses it and leaves it open on `close()`. */
  pool?: PgPoolLike
  /** Your Kysely instance: transactional handlers then get a Kysely `Transaction` as `ctx.tx`. */
  kysely?: KyselyDatabaseLike
  /** The schema postbox lives in; default `postbox`. */
  schema?: string
  /**
   * Size of the pool postbox creates from `connectionString`; default 10. Transactional workers
   * hold one connection per running handler and need 2 more (see `WorkerOptions.transactional`).
   */
  poolSize?: number
  /**
   * A connection string for the one LISTEN connection, when the pool goes through PgBouncer in
   * transaction mode (where LISTEN does not work). Default: `connectionString`.
   */
  listenConnectionString?: string
  /** `'listen'` (default) wakes idle consumers with LISTEN/NOTIFY; `'poll'` only polls. */
  wakeups?: 'listen' | 'poll'
  /** How often idle consumers look for work when no notification comes; default `'2s'`. */
  pollInterval?: number | string
  /** pino, console, or anything with debug/info/warn/error; default silent. */
  logger?: Logger
  /**
   * Prepare the hot statements (send, claim, ack...) once per connection of postbox's pool, so
   * each call skips parse and plan; default true. Measured on Postgres 18 against unnamed
   * statements (docs/performance.md): a lone send and concurrent sends 1.2-1.3x the messages per
   * second, a claim of one and its ack 1.1x; batches of 100 or more about even. Statements
   * inside a transaction (yours, or a transactional handler's) are never prepared: through a
   * pooler that cannot keep them, the error would abort that transaction.
   *
   * Works behind PgBouncer in transaction mode whatever its version: before 1.21 (or with
   * `max_prepared_statements = 0`) the first statement it refuses (42P05 or 26000, raised before
   * the statement runs) runs again unnamed, and the pool prepares nothing from then on (one
   * warning in the log). Set false to never prepare: behind RDS Proxy, where a prepared
   * statement pins the client to its server connection instead of failing.
   */
  preparedStatements?: boolean
  /**
   * Let concurrent `send` (and stream `append`) calls made outside a transaction share
   * statements: a send that arrives while others are under way goes in the next statement with
   * the rest, and each caller still gets its own result; a lone send goes at once. Default true;
   * false sends (and appends) one statement each.
   */
  batchSends?: boolean
  /**
   * A Postbox with a running worker also fires due schedules (see `startScheduler()`); default
   * true. False leaves that to processes that call `startScheduler()`.
   */
  scheduleWithWorkers?: boolean
}

const object = z.custom<object>((v) => typeof v === 'object' && v !== null, 'must be an object')

export const postboxOptionsSchema = z
  .strictObject({
    connectionString: z.string().min(1).optional(),
    pool: object.optional(),
    kysely: object.optional(),
    schema: z.string().optional(),
    poolSize: z.number().int().min(1).max(1000).optional(),
    listenConnectionString: z.string().min(1).optional(),
    wakeups: z.enum(['listen', 'poll']).optional(),
    pollInterval: positiveDurationMs.optional(),
    logger: object.optional(),
    preparedStatements: z.boolean().optional(),
    batchSends: z.boolean().optional(),
    scheduleWithWorkers: z.boolean().optional(),
  })
  .refine((o) => o.connectionString || o.pool || o.kysely, 'give connectionString, pool or kysely')
  .refine((o) => !(o.connectionString && o.pool), 'give connectionString or pool, not both')
