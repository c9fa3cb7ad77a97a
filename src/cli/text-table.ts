const NUMBER = /^-?\d+(\.\d+)?$/

/**
 * Renders rows as an aligned text table in the style of psql: a header, a rule, one line per
 * row, numbers right-aligned, NULL as an empty cell, and a row count.
 *
 * @example
 * renderTable(['queue', 'ready'], [['emails', '0']])
 * // [' queue  | ready', '--------+-------', ' emails |     0', '(1 row)']
 */
export function renderTable(columns: readonly string[], rows: readonly (readonly (string | null)[])[]): string[] {
  const cells = rows.map((row) => columns.map((_, i) => oneLine(row[i] ?? '')))
  const widths = columns.map((name, i) => Math.max(name.length, ...cells.map((row) => (row[i] as string).length)))
  const numeric = columns.map((_, i) => cells.length > 0 && cells.every((row) => row[i] === '' || NUMBER.test(row[i] as string)))
  const line = (values: readonly string[], header: boolean) =>
    values
      .map((value, i) => ` ${!header && numeric[i] ? value.padStart(widths[i] as number) : value.padEnd(widths[i] as number)} `)
      .join('|')
      .trimEnd()
  return [
    line(columns, true),
    widths.map((width) => '-'.repeat(width + 2)).join('+'),
    ...cells.map((row) => line(row, false)),
    `(${rows.length} ${rows.length === 1 ? 'row' : 'rows'})`,
  ]
}

/** A cell on one line, cut to a readable width. */
function oneLine(value: string): string {
  const flat = value.replace(/\s*\n\s*/g, ' ')
  return flat.length > 72 ? `${flat.slice(0, 71)}…` : flat
}
