import type { ScenarioResult } from './scenario.js'
import { renderTable } from '../text-table.js'

/**
 * The summary table: per scenario, messages sent (counted in the database), handled, retried and
 * dead-lettered (counted from worker events), and a note with what was measured.
 */
export function summaryLines(results: readonly ScenarioResult[]): string[] {
  const rows = results.map((r) => [r.scenario, String(r.sent), String(r.handled), String(r.retried), String(r.deadLettered), r.note])
  const total = (key: 'sent' | 'handled' | 'retried' | 'deadLettered') => String(results.reduce((sum, r) => sum + r[key], 0))
  rows.push(['total', total('sent'), total('handled'), total('retried'), total('deadLettered'), ''])
  return renderTable(['scenario', 'sent', 'handled', 'retried', 'dead-lettered', 'what it showed'], rows).slice(0, -1)
}
