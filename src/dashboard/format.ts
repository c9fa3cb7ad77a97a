import { payloadText } from '../inspect/display.js'

/** A count with thousands separators. */
export function count(n: number): string {
  return n.toLocaleString('en-US')
}

/** A rate per second, signed when asked; an em dash until it can be measured. */
export function rate(perSecond: number | null, signed = false): string {
  if (perSecond === null) return '—'
  const abs = Math.abs(perSecond)
  const text = abs >= 100 ? abs.toFixed(0) : abs >= 10 ? abs.toFixed(1) : abs.toFixed(2)
  if (!signed) return `${text}/s`
  return `${perSecond > 0.0049 ? '+' : perSecond < -0.0049 ? '−' : ''}${text}/s`
}

/** A payload as one line (see payloadText), cut to `max` characters. */
export function payloadPreview(payload: unknown, encoding: 'json' | 'text' | 'binary', max = 160): string {
  const text = payloadText(payload, encoding)
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}
