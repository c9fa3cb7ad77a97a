import { CommanderError } from 'commander'
import { PostboxError } from '../errors.js'

/** SQLSTATEs that mean the schema is not there (or not installed): 42P01 undefined_table, 3F000 invalid_schema_name, 42883 undefined_function. */
const SCHEMA_MISSING = new Set(['42P01', '3F000', '42883'])

/** Node's network error codes that mean the database could not be reached. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET'])

/** The first line of an error's message; an AggregateError's (empty) message is made of its errors'. */
function messageOf(error: unknown): string {
  if (error instanceof AggregateError && !error.message) return error.errors.map(messageOf).join('; ')
  const text = error instanceof Error ? error.message : String(error)
  return text.split('\n')[0] || String(error)
}

/**
 * The one line the CLI prints on stderr for an error that ended a command (exit code 1): what
 * went wrong, with a hint when the cause is common (no database, schema not migrated). No stack
 * trace: an operator needs the cause, not the call path.
 */
export function cliErrorLine(error: unknown): string {
  if (error instanceof PostboxError) return `postbox: ${messageOf(error)}`
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && SCHEMA_MISSING.has(code)) {
    return `postbox: ${messageOf(error)}: is the schema installed? run postbox migrate (with the same --schema)`
  }
  if (typeof code === 'string' && UNREACHABLE.has(code)) return `postbox: cannot reach the database: ${messageOf(error)}`
  if (error instanceof AggregateError && error.errors.some((e) => UNREACHABLE.has((e as { code?: string }).code ?? ''))) {
    return `postbox: cannot reach the database: ${messageOf(error)}`
  }
  return `postbox: ${messageOf(error)}`
}

/** The exit code for an error: 2 for bad usage (commander's own errors), else 1; 0 for help and version. */
export function exitCodeOf(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2
  return 1
}
