import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api'
import type { Message } from '../queue/message.js'
import { tracerProviderRegistered } from './sdk-registered.js'

/** The instrumentation scope of postbox's spans. */
const TRACER_NAME = 'postbox'

/**
 * Runs `handle` (a message's handler) in a consumer span, when an OpenTelemetry SDK is
 * registered; otherwise calls it directly, at the cost of one check. The span's parent is the
 * trace context the message carries in its headers (put there by `send` inside the sender's
 * span), so a trace follows a message from producer to handler. It is named `process <queue>`
 * (for a stream event, `process <stream>`, attempt 1) and carries the messaging attributes of
 * the OpenTelemetry semantic conventions; a handler error is recorded on it and sets its status
 * to ERROR.
 */
export function inConsumerSpan<T>(message: Pick<Message<unknown>, 'queue' | 'id' | 'headers' | 'attempt'>, handle: () => Promise<T>): Promise<T> {
  if (!tracerProviderRegistered()) return handle()
  const parent = propagation.extract(ROOT_CONTEXT, message.headers)
  const span = trace.getTracer(TRACER_NAME).startSpan(
    `process ${message.queue}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'postbox',
        'messaging.destination.name': message.queue,
        'messaging.message.id': message.id,
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'process',
        'postbox.message.attempt': message.attempt,
      },
    },
    parent,
  )
  return context.with(trace.setSpan(parent, span), () => settle(span, handle))
}

async function settle<T>(span: Span, handle: () => Promise<T>): Promise<T> {
  try {
    return await handle()
  } catch (error) {
    span.recordException(error instanceof Error ? error : String(error))
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) })
    throw error
  } finally {
    span.end()
  }
}
