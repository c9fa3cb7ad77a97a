import { renderTable } from './text-table.js'

/** Writes a value as indented JSON to stdout, for scripts (`--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
}

/** Writes rows as an aligned text table to stdout (psql style, with a row count). */
export function printTable(columns: readonly string[], rows: readonly (readonly (string | null)[])[]): void {
  process.stdout.write(`${renderTable(columns, rows).join('\n')}\n`)
}
