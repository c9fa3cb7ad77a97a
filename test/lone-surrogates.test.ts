import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidOptionsError, InvalidPayloadError } from '../src/index.js'
import { useTestSchema } from './support/test-schema.js'

// A JavaScript string can hold a lone UTF-16 surrogate ('\uD800'), which has no UTF-8 form. pg
// would encode it as U+FFFD, so distinct dedupe keys could merge into one message (the second
// send answered "duplicate" and dropped), and jsonb refuses it with a raw driver error. Keys,
// headers and JSON payloads holding one are refused with typed errors instead (found by the
// property tests of hostile-input.test.ts, fixed in 997162c); text payloads already were.
const t = useTestSchema()

beforeAll(async () => {
  await t.postbox.createQueue('lone')
})

describe('lone surrogates', () => {
  it('dedupe keys with different lone surrogates are refused, never merged into one message', async () => {
    await expect(t.postbox.send('lone', 1, { dedupeKey: 'a\uD800' })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.send('lone', 2, { dedupeKey: 'a\uDBFF' })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.send('lone', 3, { groupKey: 'g\uDC00' })).rejects.toBeInstanceOf(InvalidOptionsError)
  })

  it('a lone surrogate in headers or in a JSON payload is refused with a typed error', async () => {
    await expect(t.postbox.send('lone', 1, { headers: { a: '\uD800' } })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.send('lone', 1, { headers: { ['\uD800']: 'a' } })).rejects.toBeInstanceOf(InvalidOptionsError)
    await expect(t.postbox.send('lone', { s: 'x\uDFFF' })).rejects.toBeInstanceOf(InvalidPayloadError)
    await expect(t.postbox.send('lone', { ['\uDC00']: 1 })).rejects.toBeInstanceOf(InvalidPayloadError)
  })
})
