import type { IncomingMessage } from 'node:http'
import { InvalidOptionsError } from '../errors.js'

/** The largest body a dashboard request may have: forms and small JSON objects only. */
const MAX_BODY_BYTES = 64 * 1024

/** The kinds of body the dashboard accepts, by Content-Type. */
export type BodyKind = 'form' | 'json' | 'other'

export function bodyKind(contentType: string | undefined): BodyKind {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase()
  if (type === 'application/x-www-form-urlencoded') return 'form'
  if (type === 'application/json') return 'json'
  return 'other'
}

/** Reads and parses a request body: form fields, or a JSON object. */
export async function readBody(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) throw new InvalidOptionsError(`request body over ${MAX_BODY_BYTES} bytes`)
    chunks.push(chunk as Buffer)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  if (bodyKind(request.headers['content-type']) === 'form') return Object.fromEntries(new URLSearchParams(text))
  if (text.trim() === '') return {}
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new InvalidOptionsError(`request body is not valid JSON: ${(error as Error).message}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidOptionsError('request body must be a JSON object')
  return value as Record<string, unknown>
}
