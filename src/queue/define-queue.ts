import type { z } from 'zod'
import { assertQueueName } from '../queue-name.js'

/**
 * A queue with a payload type. Its zod schema validates every payload on send (an invalid one is
 * refused with `InvalidPayloadError`) and on receive (a stored payload that no longer parses goes
 * to the dead letter with the reason instead of reaching a handler).
 */
export interface QueueDefinition<P> {
  readonly name: string
  readonly schema: z.ZodType<P>
}

/**
 * Defines a typed queue, accepted wherever a queue name is.
 *
 * @example
 * const emails = defineQueue({ name: 'emails', schema: z.object({ to: z.string().email() }) })
 * await postbox.send(emails, { to: 'a@b.c' })
 */
export function defineQueue<S extends z.ZodType>(definition: { name: string; schema: S }): QueueDefinition<z.output<S>> {
  assertQueueName(definition.name)
  return Object.freeze({ name: definition.name, schema: definition.schema as z.ZodType<z.output<S>> })
}

/** A queue name or a typed queue definition. */
export type QueueRef<P = unknown> = string | QueueDefinition<P>

export function queueNameOf(ref: QueueRef<unknown>): string {
  return assertQueueName(typeof ref === 'string' ? ref : ref?.name)
}
