import {
  GroupNotFoundError,
  InvalidStreamNameError,
  StreamFencedError,
  StreamNotFoundError,
  InvalidFilterError,
  InvalidOptionsError,
  InvalidPatternError,
  InvalidPayloadError,
  InvalidQueueNameError,
  InvalidRoutingKeyError,
  PayloadTooLargeError,
  QueueNotEmptyError,
  QueueNotFoundError,
  UnroutableError,
} from '../errors.js'
import type { Executor } from './executor.js'

interface PgError {
  code?: string
  constraint?: string
  message: string
  hint?: string
}

const QUOTED_NAME = /'([^']*)'/

/** Turns the SQLSTATEs raised by postbox's SQL functions (class PB) into typed errors. */
export function typedError(error: unknown): unknown {
  const e = error as PgError
  if (typeof e?.code !== 'string') return error
  const message = e.hint ? `${e.message}. ${e.hint}` : e.message
  switch (e.code) {
    case 'PBQ01':
      return new QueueNotFoundError(QUOTED_NAME.exec(e.message)?.[1] ?? '', message)
    case 'PBQ02':
      return new InvalidQueueNameError(message)
    case 'PBQ03':
      return new QueueNotEmptyError(message)
    case 'PBP01':
      return new PayloadTooLargeError(message)
    case 'PBP02':
      return new InvalidPayloadError(message)
    case 'PBV01':
      return new InvalidOptionsError(message)
    case 'PBR01':
      return new InvalidRoutingKeyError(message)
    case 'PBR02':
      return new InvalidPatternError(message)
    case 'PBR03':
      return new InvalidFilterError(message)
    case 'PBR04':
      return new UnroutableError(QUOTED_NAME.exec(e.message)?.[1] ?? '', message)
    case '23514': // check_violation: the one a caller's input can reach is the rate key's length
      return e.constraint === 'messages_rate_key_valid'
        ? new InvalidOptionsError('a rate key (the postbox-rate-key header) must be 1 to 512 bytes; nothing was sent')
        : error
    case 'PBS01':
      return new StreamNotFoundError(QUOTED_NAME.exec(e.message)?.[1] ?? '', message)
    case 'PBS02':
      return new InvalidStreamNameError(message)
    case 'PBS03':
      return new GroupNotFoundError(message)
    case 'PBS04':
      return new StreamFencedError(message)
    case '22P05': // untranslatable character, such as \u0000 in a JSON string
      return new InvalidPayloadError(`payload cannot be stored as JSON: ${e.message}`)
    default:
      return error
  }
}

/** An executor whose errors from postbox's SQL come out typed. */
export function withTypedErrors(executor: Executor): Executor {
  return {
    query: <R>(text: string, values?: readonly unknown[], name?: string) =>
      executor.query<R>(text, values, name).catch((error: unknown) => {
        throw typedError(error)
      }),
  }
}
