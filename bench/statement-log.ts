import pg from 'pg'

// A pg Pool whose connections write down every statement they run: its prepared-statement name
// (or its first words), how long it took from the call to the result, how many rows came back and
// the length of its first array parameter. The bench hands it to postbox ({ pool }) and to
// graphile-worker ({ pgPool }) to see claim sizes, completion batch sizes and statements per
// message without touching either library. The recording costs one closure per statement.

/** One statement as a connection ran it. */
export interface LoggedStatement {
  /** The prepared-statement name, or the statement's first 40 characters. */
  name: string
  startedMs: number
  ms: number
  rows: number
  /** Length of the first array among the parameters (ids acked, jobs completed), if any. */
  arrayLength: number | undefined
}

type Callback = (error: Error | null, result?: { rowCount?: number | null; rows?: unknown[] }) => void

function describe(config: unknown, values: unknown): { name: string; text: string; params: unknown[]; arrayLength: number | undefined } {
  const c = config as { name?: string; text?: string; values?: unknown[] } | string
  const text = typeof c === 'string' ? c : (c?.text ?? '')
  const name = (typeof c === 'object' && c?.name) || text.replace(/\s+/g, ' ').trim().slice(0, 40)
  const params = (typeof c === 'object' && c?.values) || (Array.isArray(values) ? values : [])
  return { name, text, params, arrayLength: arrayLength(params) }
}

/**
 * The length of a statement's first array parameter: a JavaScript array, or an array literal
 * (`{1,2,3}`, as postbox sends plain ids and leases: src/queries/array-param.ts).
 */
function arrayLength(params: readonly unknown[]): number | undefined {
  for (const p of params) {
    if (Array.isArray(p)) return p.length
    if (typeof p === 'string' && /^\{[0-9a-fA-F,-]*\}$/.test(p)) return p === '{}' ? 0 : p.split(',').length
  }
  return undefined
}

/** A pg Pool of `max` connections that appends every statement to `log` while `log.enabled`. */
export function recordingPool(connectionString: string, max: number): { pool: pg.Pool; log: StatementLog } {
  const log = new StatementLog()
  class RecordingClient extends pg.Client {
    // pg's query has many overloads; all of them pass through here untouched.
    override query(...args: unknown[]): never {
      if (!log.enabled) return (super.query as (...a: unknown[]) => never)(...args)
      const { name, text, params, arrayLength } = describe(args[0], args[1])
      if (!log.texts.has(name)) log.texts.set(name, { text, values: params })
      const startedMs = performance.now()
      const record = (rows: number) => log.add({ name, startedMs, ms: performance.now() - startedMs, rows, arrayLength })
      const last = args.length - 1
      if (typeof args[last] === 'function') {
        const callback = args[last] as Callback
        args[last] = ((error, result) => {
          if (!error) record(result?.rows?.length ?? result?.rowCount ?? 0)
          callback(error, result)
        }) satisfies Callback
        return (super.query as (...a: unknown[]) => never)(...args)
      }
      const result = (super.query as (...a: unknown[]) => unknown)(...args)
      if (result && typeof (result as Promise<unknown>).then === 'function') {
        void (result as Promise<{ rows?: unknown[]; rowCount?: number | null }>).then(
          (r) => record(r?.rows?.length ?? r?.rowCount ?? 0),
          () => {},
        )
      }
      return result as never
    }
  }
  const pool = new pg.Pool({ connectionString, max, Client: RecordingClient })
  // A client that fails while idle is replaced by the pool; graphile-worker checks that both
  // handlers exist and warns otherwise.
  pool.on('error', () => {})
  pool.on('connect', (client) => client.on('error', () => {}))
  return { pool, log }
}

/** The statements recorded while enabled. */
export class StatementLog {
  enabled = false
  statements: LoggedStatement[] = []
  /** The text and parameters of the first statement of each name, to replay a peer's exact SQL. */
  readonly texts = new Map<string, { text: string; values: unknown[] }>()

  add(s: LoggedStatement): void {
    this.statements.push(s)
  }

  /** Starts a fresh recording. */
  start(): void {
    this.statements = []
    this.enabled = true
  }

  stop(): LoggedStatement[] {
    this.enabled = false
    return this.statements
  }
}

/** Statements grouped by name: count, total rows, mean rows and mean array length, mean ms. */
export function summarise(statements: readonly LoggedStatement[]): Record<string, { count: number; rows: number; meanRows: number; meanArray: number | undefined; meanMs: number }> {
  const out: Record<string, { count: number; rows: number; meanRows: number; meanArray: number | undefined; meanMs: number }> = {}
  const arrays: Record<string, number[]> = {}
  for (const s of statements) {
    const entry = (out[s.name] ??= { count: 0, rows: 0, meanRows: 0, meanArray: undefined, meanMs: 0 })
    entry.count++
    entry.rows += s.rows
    entry.meanMs += s.ms
    if (s.arrayLength !== undefined) (arrays[s.name] ??= []).push(s.arrayLength)
  }
  for (const [name, entry] of Object.entries(out)) {
    entry.meanRows = entry.rows / entry.count
    entry.meanMs = entry.meanMs / entry.count
    const a = arrays[name]
    entry.meanArray = a ? a.reduce((x, y) => x + y, 0) / a.length : undefined
  }
  return out
}
