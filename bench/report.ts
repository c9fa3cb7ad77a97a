/** A figure postbox is divided by: a raw-SQL baseline or a peer, measured in the same run. */
export interface Comparison {
  /** Who: 'baseline' (raw SQL or postbox itself, `what` says which), 'graphile-worker', 'pg-boss'. */
  against: string
  what?: string
  value: number
  /** Target on postbox / this: at least (throughput) or at most (latency). */
  ratioAtLeast?: number
  ratioAtMost?: number
}

/** One line of the bench report. */
export interface Row {
  name: string
  unit: string
  value: number
  comparisons?: Comparison[]
  /** Target on the absolute figure. */
  atMost?: number
  atLeast?: number
}

/** The columns of comparisons, in print order. */
export const COLUMNS = ['baseline', 'graphile-worker', 'pg-boss'] as const

function format(value: number): string {
  if (!Number.isFinite(value)) return String(value)
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US')
  return value.toFixed(2)
}

function comparisonMet(row: Row, c: Comparison): boolean | undefined {
  const ratio = row.value / c.value
  if (c.ratioAtLeast !== undefined) return ratio >= c.ratioAtLeast
  if (c.ratioAtMost !== undefined) return ratio <= c.ratioAtMost
  return undefined
}

/** Whether a row meets all of its targets, or undefined when it has none. */
export function met(row: Row): boolean | undefined {
  const verdicts = [
    row.atMost === undefined ? undefined : row.value <= row.atMost,
    row.atLeast === undefined ? undefined : row.value >= row.atLeast,
    ...(row.comparisons ?? []).map((c) => comparisonMet(row, c)),
  ].filter((v): v is boolean => v !== undefined)
  return verdicts.length === 0 ? undefined : verdicts.every(Boolean)
}

function targets(row: Row): string {
  const parts: string[] = []
  if (row.atMost !== undefined) parts.push(`<= ${row.atMost} ${row.unit}`)
  if (row.atLeast !== undefined) parts.push(`>= ${row.atLeast} ${row.unit}`)
  for (const c of row.comparisons ?? []) {
    const who = c.against === 'baseline' ? 'baseline' : c.against === 'graphile-worker' ? 'gw' : c.against
    if (c.ratioAtLeast !== undefined) parts.push(`>= ${c.ratioAtLeast}x ${who}`)
    if (c.ratioAtMost !== undefined) parts.push(`<= ${c.ratioAtMost}x ${who}`)
  }
  return parts.join(', ')
}

/**
 * Prints the report table to stdout: each postbox figure, then per baseline column its figure
 * and postbox's ratio to it (for latencies, postbox / peer: below 1 is better), the targets and
 * the verdict.
 */
export function printReport(rows: readonly Row[]): void {
  const columns = COLUMNS.filter((col) => rows.some((r) => r.comparisons?.some((c) => c.against === col)))
  const table = rows.map((row) => {
    const cells = columns.map((col) => {
      const c = row.comparisons?.find((x) => x.against === col)
      if (!c) return ''
      const what = c.what ? ` (${c.what})` : ''
      return `${format(c.value)}${what} ${(row.value / c.value).toFixed(2)}x`
    })
    const verdict = met(row)
    return [row.name, `${format(row.value)} ${row.unit}`.trim(), ...cells, targets(row), verdict === undefined ? '' : verdict ? 'met' : 'NOT MET']
  })
  const header = ['figure', 'postbox', ...columns, 'target', '']
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] as string).length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()
  console.log(line(header))
  console.log(line(widths.map((w) => '-'.repeat(w))))
  for (const r of table) console.log(line(r))
}
