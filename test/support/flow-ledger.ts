import type pg from 'pg'

// The ledgers of the flow-control tests, both written by the database clock:
//   claim_ledger  one row per claim of a message, written by a trigger on messages when a claim
//                 raises its attempt: the claim's time (claimed_at, the time the claim's rate
//                 windows use), its rate key, and the end of its lease. Every process's claims
//                 land here, whoever made them.
//   span_ledger   one row per handling, written by the handler itself (clock_timestamp at its
//                 start and end). A handling runs inside its message's lease (after the claim
//                 committed, before the ack), so at most N overlapping spans is what maxInFlight
//                 promises, measured from outside the claim.

/** Creates both ledgers and the claim trigger on `<schema>.messages` (idempotent). */
export async function createFlowLedgers(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`
    CREATE TABLE IF NOT EXISTS "${schema}".claim_ledger (
      claim bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      id bigint NOT NULL,
      queue text NOT NULL,
      rate_key text,
      attempt integer NOT NULL,
      claimed_at timestamptz NOT NULL,
      lease_until timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS "${schema}".span_ledger (
      span bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      id bigint NOT NULL,
      pid integer NOT NULL,
      started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      finished_at timestamptz
    );
    CREATE OR REPLACE FUNCTION "${schema}".record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO "${schema}".claim_ledger (id, queue, rate_key, attempt, claimed_at, lease_until)
      VALUES (NEW.id, NEW.queue, NEW.headers ->> 'postbox-rate-key', NEW.attempt, NEW.claimed_at, NEW.available_at);
      RETURN NEW;
    END $$;
    CREATE OR REPLACE TRIGGER record_claim AFTER UPDATE OF attempt ON "${schema}".messages
      FOR EACH ROW WHEN (NEW.attempt > OLD.attempt) EXECUTE FUNCTION "${schema}".record_claim();`)
}

/** Records the start of a handling; resolves with a function that records its end. */
export async function recordSpan(db: Pick<pg.Pool, 'query'>, schema: string, id: string): Promise<() => Promise<void>> {
  const { rows } = await db.query<{ span: string }>(
    `INSERT INTO "${schema}".span_ledger (id, pid) VALUES ($1, $2) RETURNING span::text`,
    [id, process.pid],
  )
  const span = rows[0]!.span
  return async () => void (await db.query(`UPDATE "${schema}".span_ledger SET finished_at = clock_timestamp() WHERE span = $1`, [span]))
}

/**
 * The most claims of one key (or of the queue, `byKey` false) in any half-open window of length
 * `perMs` of the claim ledger: the windows that start at a claim are the ones to check.
 */
export async function maxClaimsInWindow(pool: pg.Pool, schema: string, queue: string, perMs: number, byKey: boolean): Promise<number> {
  const { rows } = await pool.query<{ max: number | null }>(
    `SELECT max(n)::int AS max FROM (
       SELECT (SELECT count(*) FROM "${schema}".claim_ledger o
               WHERE o.queue = c.queue AND (NOT $3 OR o.rate_key = c.rate_key)
                 AND o.claimed_at >= c.claimed_at AND o.claimed_at < c.claimed_at + $2 * interval '1 millisecond') AS n
       FROM "${schema}".claim_ledger c WHERE c.queue = $1 AND (NOT $3 OR c.rate_key IS NOT NULL)) w`,
    [queue, perMs, byKey],
  )
  return rows[0]?.max ?? 0
}

/** The most handlings running at once (counted at each start), and how many handlings there were. */
export async function spanReport(pool: pg.Pool, schema: string): Promise<{ spans: number; unfinished: number; maxConcurrent: number }> {
  const { rows } = await pool.query<{ spans: number; unfinished: number; max_concurrent: number | null }>(
    `WITH l AS (SELECT span, started_at, coalesce(finished_at, 'infinity') AS finished_at FROM "${schema}".span_ledger)
     SELECT (SELECT count(*)::int FROM l) AS spans,
            (SELECT count(*)::int FROM "${schema}".span_ledger WHERE finished_at IS NULL) AS unfinished,
            (SELECT max((SELECT count(*) FROM l o WHERE o.started_at <= s.started_at AND o.finished_at > s.started_at))::int FROM l s) AS max_concurrent`,
  )
  const row = rows[0]!
  return { spans: row.spans, unfinished: row.unfinished, maxConcurrent: row.max_concurrent ?? 0 }
}
