import type { Executor } from '../db/executor.js'
import type { SchemaName } from '../schema-name.js'

/** Deletes expired dedupe windows (prune_dedupe_windows in the migrations); returns how many. */
export async function pruneDedupeWindows(db: Executor, s: SchemaName): Promise<number> {
  const { rows } = await db.query<{ pruned: number }>(`SELECT ${s.sql}.prune_dedupe_windows() AS pruned`)
  return rows[0]?.pruned ?? 0
}
