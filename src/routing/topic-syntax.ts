import { InvalidPatternError, InvalidRoutingKeyError } from '../errors.js'

// The syntax of routing keys and binding patterns (RabbitMQ's topic exchange, DESIGN.md "Topics").
// The SQL functions routing_key_problem and pattern_problem (migrations/0006_topics.sql) check
// the same rules with the same messages, for SQL callers; these refuse bad input before a round
// trip, with the typed error.

const WORD = '[A-Za-z0-9_:-]+'
/** A routing key: non-empty words of letters, digits, `_`, `-` and `:`, separated by single dots. */
export const ROUTING_KEY = new RegExp(`^${WORD}(?:\\.${WORD})*$`)
/** A binding pattern: the words of a routing key, where a whole word may also be `*` or `#`. */
export const PATTERN = new RegExp(`^(?:${WORD}|[*#])(?:\\.(?:${WORD}|[*#]))*$`)
/** Routing keys and patterns are at most this many bytes (RabbitMQ's limit). */
export const MAX_TOPIC_BYTES = 255

const EMPTY_WORD = /(?:^|\.)(?:\.|$)/
const WILDCARD = /[*#]/

function shown(value: string): string {
  return `'${value.length > 80 ? value.slice(0, 80) : value}'`
}

/** What is wrong with a routing key, or undefined when nothing is. */
export function routingKeyProblem(key: unknown): string | undefined {
  if (typeof key !== 'string') return `a routing key must be a string, got ${key === null ? 'null' : typeof key}`
  if (key === '') return 'a routing key must not be empty'
  const bytes = Buffer.byteLength(key, 'utf8')
  if (bytes > MAX_TOPIC_BYTES) return `a routing key is at most ${MAX_TOPIC_BYTES} bytes, got ${bytes}`
  if (ROUTING_KEY.test(key)) return undefined
  if (EMPTY_WORD.test(key)) return `routing key ${shown(key)} has an empty word: words are separated by single dots, none at either end`
  if (WILDCARD.test(key)) return `routing key ${shown(key)} holds a wildcard: * and # belong in binding patterns`
  return `routing key ${shown(key)} has a character other than letters, digits, _ - : and the dots between words`
}

/** What is wrong with a binding pattern, or undefined when nothing is. */
export function patternProblem(pattern: unknown): string | undefined {
  if (typeof pattern !== 'string') return `a binding pattern must be a string, got ${pattern === null ? 'null' : typeof pattern}`
  if (pattern === '') return 'a binding pattern must not be empty (# matches every routing key)'
  const bytes = Buffer.byteLength(pattern, 'utf8')
  if (bytes > MAX_TOPIC_BYTES) return `a binding pattern is at most ${MAX_TOPIC_BYTES} bytes, got ${bytes}`
  if (PATTERN.test(pattern)) return undefined
  if (EMPTY_WORD.test(pattern)) return `pattern ${shown(pattern)} has an empty word: words are separated by single dots, none at either end`
  if (WILDCARD.test(pattern)) return `pattern ${shown(pattern)} has a wildcard inside a word: * and # are whole words, as in a.* or a.#`
  return `pattern ${shown(pattern)} has a character other than letters, digits, _ - : * # and the dots between words`
}

/** Returns the routing key if it is valid, else throws {@link InvalidRoutingKeyError}. */
export function assertRoutingKey(key: unknown): string {
  const problem = routingKeyProblem(key)
  if (problem !== undefined) throw new InvalidRoutingKeyError(problem)
  return key as string
}

/** Returns the pattern if it is valid, else throws {@link InvalidPatternError}. */
export function assertPattern(pattern: unknown): string {
  const problem = patternProblem(pattern)
  if (problem !== undefined) throw new InvalidPatternError(problem)
  return pattern as string
}
