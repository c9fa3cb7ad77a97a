import type pg from 'pg'

/**
 * The same connection string with `application_name` set, so every connection a process opens
 * from it can be found in pg_stat_activity (and only those: test files share one server).
 * Connection-string parameters win over a client's own settings in pg, so the notifier's
 * connection carries this name too.
 */
export function withApplicationName(url: string, name: string): string {
  const u = new URL(url)
  u.searchParams.set('application_name', name)
  return u.toString()
}

/** The same connection string with server settings for every session, as `options=-c name=value`. */
export function withSessionSettings(url: string, settings: Record<string, string | number>): string {
  const u = new URL(url)
  u.searchParams.set('options', Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`).join(' '))
  return u.toString()
}

/** Terminates every backend with this application_name; returns how many. */
export async function terminateBackends(pool: pg.Pool, applicationName: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
     WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [applicationName],
  )
  return rows[0]?.n ?? 0
}

/** The backend pids with this application_name. */
export async function backendPids(pool: pg.Pool, applicationName: string): Promise<number[]> {
  const { rows } = await pool.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [applicationName])
  return rows.map((r) => r.pid)
}
