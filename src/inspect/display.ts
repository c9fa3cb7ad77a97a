import { formatDuration } from '../duration.js'

// How the CLI and the dashboard show times, ages and payloads to people, so both say the same.

/** An age in milliseconds; empty for none. */
export function formatAge(ms: number | null): string {
  return ms === null ? '' : formatDuration(ms)
}

/** A time, UTC, to the second: `2026-01-31 12:00:05Z`; empty for none. */
export function formatTime(at: Date | null): string {
  return at === null ? '' : `${at.toISOString().slice(0, 19).replace('T', ' ')}Z`
}

/** A peeked payload as one line: JSON as JSON, text as it is, binary as base64 (it arrives so). */
export function payloadText(payload: unknown, encoding: 'json' | 'text' | 'binary'): string {
  if (encoding === 'binary') return `(binary, base64) ${String(payload)}`
  return encoding === 'text' ? String(payload) : JSON.stringify(payload)
}
