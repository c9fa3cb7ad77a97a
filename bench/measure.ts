/** Small timing tools for the benchmark. Times are wall-clock milliseconds from performance.now(). */

/** Runs `callers` loops of `op` for `durationMs`; returns operations (as counted by op's return) per second. */
export async function throughput(callers: number, durationMs: number, op: () => Promise<number>): Promise<number> {
  const deadline = performance.now() + durationMs
  let done = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (performance.now() < deadline) {
        const n = await op() // not `done += await op()`: that reads done before the await
        done += n
      }
    }),
  )
  return (done / (performance.now() - started)) * 1000
}

/** Runs `callers` loops of `op` until one returns 0; returns items per second. */
export async function drain(callers: number, op: () => Promise<number>): Promise<number> {
  let done = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (;;) {
        const n = await op()
        if (n === 0) return
        done += n
      }
    }),
  )
  return (done / (performance.now() - started)) * 1000
}

/** The p-th percentile (0-100) of values, by nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] as number
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Prints a progress line to stderr, so stdout keeps only the report. */
export function progress(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`)
}
