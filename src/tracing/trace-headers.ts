import { context, propagation, trace } from '@opentelemetry/api'

/**
 * Headers with the active trace context added, for a message being sent: with the SDK's usual
 * W3C propagator that is `traceparent` (and `tracestate` when there is one); with another
 * propagator, whatever headers it writes. Nothing is added when no span is active (which is
 * always the case without an SDK: the check is then two global look-ups and no allocation), or
 * when the caller already set one of the propagator's headers: a context the caller chose wins.
 *
 * @example
 * withTraceContext({ tenant: 'a' }) // { tenant: 'a', traceparent: '00-…-…-01' } inside a span
 */
export function withTraceContext(headers: Record<string, string> | undefined): Record<string, string> | undefined {
  const active = context.active()
  if (trace.getSpan(active) === undefined) return headers
  if (headers !== undefined && propagation.fields().some((field) => Object.hasOwn(headers, field))) return headers
  const carrier: Record<string, string> = {}
  propagation.inject(active, carrier)
  if (Object.keys(carrier).length === 0) return headers
  return headers === undefined ? carrier : { ...headers, ...carrier }
}
