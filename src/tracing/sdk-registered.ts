import { ProxyTracerProvider, trace } from '@opentelemetry/api'

/**
 * The no-op tracer provider of this copy of `@opentelemetry/api`: what a proxy provider hands
 * out as its delegate while no SDK registered one. Taken from a fresh proxy, because the API
 * does not export its no-op singleton.
 */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate()

/**
 * True when an OpenTelemetry SDK registered a tracer provider, so consumer spans are worth
 * making. Without one, the global provider is the API's proxy whose delegate is the no-op; the
 * check is a global look-up and a comparison, and postbox then skips every tracing step. A
 * provider from another copy of the API (a different version in node_modules) is not a proxy
 * of this copy and counts as registered: tracing then runs, which is correct, just not free.
 */
export function tracerProviderRegistered(): boolean {
  const provider = trace.getTracerProvider()
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NOOP_PROVIDER
}
