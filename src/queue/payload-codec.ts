import { InvalidPayloadError } from '../errors.js'
import type { MessageRow } from '../queries/message-row.js'

const LONE_SURROGATE_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i

/** A payload ready for the send statements. */
export interface EncodedPayload {
  encoding: 'json' | 'text' | 'binary'
  json: string | null
  body: Buffer | null
}

/**
 * Encodes a payload for storage. Strings are stored as UTF-8 text and binary (`Buffer` or
 * `Uint8Array`) as bytes, both exactly; everything else as JSON, readable with SQL.
 */
export function encodePayload(payload: unknown): EncodedPayload {
  if (typeof payload === 'string') {
    if (!payload.isWellFormed()) throw new InvalidPayloadError('a text payload must be well-formed UTF-16 (it has a lone surrogate)')
    return { encoding: 'text', json: null, body: Buffer.from(payload, 'utf8') }
  }
  if (payload instanceof Uint8Array) {
    return { encoding: 'binary', json: null, body: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) }
  }
  let json: string | undefined
  try {
    json = JSON.stringify(payload)
  } catch (error) {
    throw new InvalidPayloadError(`payload is not JSON-serialisable: ${(error as Error).message}`)
  }
  if (json === undefined) throw new InvalidPayloadError(`payload of type ${typeof payload} is not JSON-serialisable`)
  // JSON.stringify writes well-formed pairs as they are and escapes only lone surrogates, which
  // jsonb refuses: an escape \udXXX after an even run of backslashes is one.
  if (LONE_SURROGATE_ESCAPE.test(json)) {
    throw new InvalidPayloadError('a JSON payload must hold well-formed UTF-16 strings (one has a lone surrogate)')
  }
  return { encoding: 'json', json, body: null }
}

/** The payload of a stored message, as it was sent. */
export function decodePayload(row: Pick<MessageRow, 'encoding' | 'payload' | 'body'>): unknown {
  switch (row.encoding) {
    case 'text':
      return (row.body as Buffer).toString('utf8')
    case 'binary':
      return row.body
    default:
      return row.payload
  }
}
