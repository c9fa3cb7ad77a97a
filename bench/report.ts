/** One line of the bench report. */
export interface Row {
  name: string
  unit: string
  value: number
  baseline?: number
  baselineName?: string
  target?: { ratioAtLeast?: number; atMost?: number }
}

function format(value: number): string {
  if (!Number.isFinite(value)) return String(value)
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US')
  return value.toFixed(2)
}

/** Whether a row meets its target, or undefined when it has none. */
export function met(row: Row): boolean | undefined {
  const { target } = row
  if (!target) return undefined
  if (target.ratioAtLeast !== undefined && row.baseline) return row.value / row.baseline >= target.ratioAtLeast
  if (target.atMost !== undefined) return row.value <= target.atMost
  return undefined
}

/** Prints the report table to stdout. */
export function printReport(rows: readonly Row[]): void {
  const table = rows.map((row) => {
    const ratio = row.baseline ? row.value / row.baseline : undefined
    const target = row.target?.ratioAtLeast !== undefined ? `>= ${row.target.ratioAtLeast}x` : row.target?.atMost !== undefined ? `<= ${row.target.atMost} ${row.unit}` : ''
    const verdict = met(row)
    return [
      row.name,
      `${format(row.value)} ${row.unit}`.trim(),
      row.baseline ? `${format(row.baseline)} ${row.unit} (${row.baselineName})` : '',
      ratio === undefined ? '' : `${ratio.toFixed(2)}x`,
      target,
      verdict === undefined ? '' : verdict ? 'met' : 'NOT MET',
    ]
  })
  const header = ['figure', 'postbox', 'baseline', 'ratio', 'target', '']
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] as string).length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()
  console.log(line(header))
  console.log(line(widths.map((w) => '-'.repeat(w))))
  for (const r of table) console.log(line(r))
}
