/**
 * How a failure is written down, as a message's `last_error` or in a log line: an Error's stack
 * (or name and message), or the value as text. U+0000 becomes U+FFFD: Postgres text cannot hold
 * it, and a nack must not fail over the wording of an error.
 */
export function describeError(error: unknown): string | null {
  if (error === undefined || error === null) return null
  const text = error instanceof Error
    ? (error.stack ?? `${error.name}: ${error.message}`)
    : typeof error === 'string' ? error : (safeJson(error) ?? String(error))
  return text.replaceAll('\u0000', '\uFFFD')
}

function safeJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value)
  } catch {
    return undefined // circular, or a BigInt: String() will do
  }
}
