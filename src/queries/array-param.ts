/** Digits, hex letters and hyphens: bigint ids and uuids, which an array literal needs neither to quote nor to escape. */
const PLAIN = /^[0-9a-fA-F-]+$/

/**
 * An array parameter of ids or leases as Postgres's array literal text (`{1,2,3}`), which the
 * server parses into the parameter's array type; or the array itself, for pg to quote element by
 * element, when an element is anything else (an id from outside, which `ack()` accepts as any
 * string, must not split into two elements at a comma). pg quotes and escapes every element of a
 * JavaScript array (`escapeElement`: two regular-expression replaces and a concatenation per
 * element): for the worker's batches of about 500 ids and 500 leases that was 1.4 µs of a
 * message's Node CPU in the profile of the bench's end-to-end drain (bench/diagnose/node-profile.ts).
 * No letter outside a-f can appear, so no element reads as `NULL`.
 */
export function arrayParam(values: readonly string[]): string | readonly string[] {
  for (const value of values) if (!PLAIN.test(value)) return values
  return `{${values.join(',')}}`
}
