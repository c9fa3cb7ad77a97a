import { InvalidArgumentError } from 'commander'
import type { z } from 'zod'

/**
 * An argument parser for commander from a zod schema: a value the schema refuses is a usage
 * error (exit code 2) that says what was expected.
 */
export function parseWith<S extends z.ZodType>(schema: S): (value: string) => z.output<S> {
  return (value) => {
    const result = schema.safeParse(value)
    if (result.success) return result.data
    throw new InvalidArgumentError(result.error.issues.map((i) => i.message).join('; '))
  }
}

/** Parses a whole number from `min` to `max`, as a usage error otherwise. */
export function integer(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value)
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`)
    return n
  }
}

/** Parses JSON text, as a usage error (with the parser's reason) otherwise. */
export function json(value: string): unknown {
  try {
    return JSON.parse(value)
  } catch (error) {
    throw new InvalidArgumentError(`not valid JSON: ${(error as Error).message}`)
  }
}
