import type pg from 'pg'

// The ledger of a group test: one row per handling of a grouped message, with when the handler
// started and finished by the database clock (clock_timestamp), written by the handler itself.
// Two handlings of one group overlap when each started before the other finished; the test of
// "one message of a group in flight at a time" is that no such pair exists.

/** Creates `<schema>.group_ledger` (idempotent). */
export async function createGroupLedger(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`
    CREATE TABLE IF NOT EXISTS "${schema}".group_ledger (
      handling   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      id         bigint NOT NULL,
      group_key  text NOT NULL,
      attempt    integer NOT NULL,
      pid        integer NOT NULL,
      started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
      finished_at timestamptz
    )`)
}

/** The statements a handler runs: `start` before its work (returns the handling), `finish` after. */
export const GROUP_LEDGER_SQL = {
  start: (schema: string) =>
    `INSERT INTO "${schema}".group_ledger (id, group_key, attempt, pid) VALUES ($1, $2, $3, $4) RETURNING handling::text`,
  finish: (schema: string) => `UPDATE "${schema}".group_ledger SET finished_at = clock_timestamp() WHERE handling = $1`,
}

/** Records the start of a handling on `db`; resolves with a function that records its end. */
export async function recordHandling(
  db: Pick<pg.Pool, 'query'>,
  schema: string,
  message: { id: string; groupKey: string | null; attempt: number },
  pid = process.pid,
): Promise<() => Promise<void>> {
  const { rows } = await db.query<{ handling: string }>(GROUP_LEDGER_SQL.start(schema), [message.id, message.groupKey, message.attempt, pid])
  const handling = rows[0]!.handling
  return async () => void (await db.query(GROUP_LEDGER_SQL.finish(schema), [handling]))
}

/** What the group ledger says. */
export interface GroupLedgerReport {
  /** Handlings recorded. */
  handlings: number
  /** Handlings whose handler did not finish (still running, or its process died). */
  unfinished: number
  /** Pairs of handlings of one group that ran at the same time, as "group: id/id". */
  overlaps: string[]
  /** Most handlings of one group running at once, counted at each start. */
  maxConcurrentPerGroup: number
  /** Most handlings of any groups running at once: the run really was concurrent. */
  maxConcurrent: number
}

/** Compares the recorded intervals. */
export async function groupLedgerReport(pool: pg.Pool, schema: string): Promise<GroupLedgerReport> {
  const { rows } = await pool.query<GroupLedgerReport & { max_concurrent_per_group: number; max_concurrent: number }>(
    `WITH l AS (SELECT handling, id, group_key, started_at, coalesce(finished_at, 'infinity') AS finished_at FROM "${schema}".group_ledger)
     SELECT (SELECT count(*)::int FROM l) AS handlings,
            (SELECT count(*)::int FROM "${schema}".group_ledger WHERE finished_at IS NULL) AS unfinished,
            (SELECT coalesce(array_agg(format('%s: %s/%s', a.group_key, a.id, b.id) ORDER BY a.handling), '{}')
             FROM l a JOIN l b ON b.group_key = a.group_key AND b.handling > a.handling
              AND a.started_at < b.finished_at AND b.started_at < a.finished_at) AS overlaps,
            (SELECT coalesce(max(n), 0)::int FROM (
               SELECT count(*) AS n FROM l a JOIN l b ON b.group_key = a.group_key
                AND b.started_at <= a.started_at AND a.started_at < b.finished_at GROUP BY a.handling) s) AS max_concurrent_per_group,
            (SELECT coalesce(max(n), 0)::int FROM (
               SELECT count(*) AS n FROM l a JOIN l b ON b.started_at <= a.started_at AND a.started_at < b.finished_at
               GROUP BY a.handling) s) AS max_concurrent`,
  )
  const row = rows[0]!
  return {
    handlings: row.handlings,
    unfinished: row.unfinished,
    overlaps: row.overlaps,
    maxConcurrentPerGroup: row.max_concurrent_per_group,
    maxConcurrent: row.max_concurrent,
  }
}
