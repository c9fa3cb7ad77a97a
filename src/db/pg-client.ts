/** The result of a statement run on a {@link PgClient}. */
export interface PgQueryResult<R> {
  rows: R[]
  rowCount: number | null
}

/**
 * A pg client inside `BEGIN`: what a transactional handler gets as `ctx.tx` when the Postbox runs
 * on pg (`connectionString` or `pool`). At run time it is pg's `PoolClient`. It is typed by the
 * part handlers use, as Kysely types its driver, so that postbox's types need no `@types/pg`;
 * name `pg.PoolClient` as `work()`'s second type parameter for all of pg's types.
 *
 * @example
 * postbox.work('orders', async (message, ctx) => {
 *   await ctx.tx.query('UPDATE orders SET status = $2 WHERE id = $1', [message.payload.id, 'paid'])
 * }, { transactional: true })
 */
export interface PgClient {
  // `any` rows by default, as pg has them, so that `rows[0].id` reads without a cast.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R = any>(text: string, values?: readonly unknown[]): Promise<PgQueryResult<R>>
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R = any>(config: { text: string; values?: readonly unknown[]; name?: string }): Promise<PgQueryResult<R>>
}
