/** The rows a statement returned. */
export interface QueryResult<R> {
  rows: R[]
}

/**
 * The one seam between postbox and a database driver: run a statement with parameters. Adapters
 * exist for a pg Pool, a pg client (inside the caller's transaction or not) and Kysely, so the
 * library never needs to know which driver or ORM made the connection.
 */
export interface Executor {
  /**
   * Runs one statement. `name` marks a hot statement that a pg connection may prepare once and
   * reuse (skipping parse and plan on every call); executors that cannot prepare ignore it.
   */
  query<R = Record<string, unknown>>(text: string, values?: readonly unknown[], name?: string): Promise<QueryResult<R>>
}
