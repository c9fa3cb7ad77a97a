// A strict parser of the Prometheus text exposition format (0.0.4), for tests. The one parser on
// the npm registry (parse-prometheus-text-format 1.1.1) merges the buckets of every label set
// of a histogram into one and drops their counts, so it cannot check a labelled histogram.

/** One sample line: its full name (with _bucket/_sum/_count), labels and value. */
export interface PrometheusSample {
  name: string
  labels: Record<string, string>
  value: number
}

/** A metric family: its HELP, TYPE and samples. */
export interface PrometheusFamily {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  samples: PrometheusSample[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

function parseValue(text: string, line: string): number {
  if (text === '+Inf') return Infinity
  if (text === '-Inf') return -Infinity
  if (text === 'NaN') return NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value ${JSON.stringify(text)} in: ${line}`)
  return Number(text)
}

/** Parses `{a="x",b="y"}` at `text[start]`; returns the labels and the index after `}`. */
function parseLabels(text: string, start: number, line: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {}
  let i = start + 1
  while (text[i] !== '}') {
    const eq = text.indexOf('=', i)
    const name = text.slice(i, eq)
    if (eq < 0 || !LABEL.test(name) || text[eq + 1] !== '"') throw new Error(`bad label in: ${line}`)
    let value = ''
    let j = eq + 2
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const next = text[++j]
        if (next === 'n') value += '\n'
        else if (next === '\\' || next === '"') value += next
        else throw new Error(`bad escape in: ${line}`)
      } else value += text[j]
    }
    if (j >= text.length) throw new Error(`unterminated label value in: ${line}`)
    if (name in labels) throw new Error(`label ${name} twice in: ${line}`)
    labels[name] = value
    i = j + 1
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new Error(`expected , or } in: ${line}`)
  }
  return [labels, i + 1]
}

/** The family a sample name belongs to, given the declared types. */
function familyOf(name: string, families: Map<string, PrometheusFamily>): PrometheusFamily | undefined {
  if (families.has(name)) return families.get(name)
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.endsWith(suffix) ? name.slice(0, -suffix.length) : undefined
    const family = base === undefined ? undefined : families.get(base)
    if (family && (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket'))) return family
  }
  return undefined
}

/**
 * Parses an exposition strictly: every line must be HELP, TYPE, blank or a well-formed sample of
 * a declared family; a histogram's buckets must be cumulative with `+Inf` equal to `_count`.
 * Throws on anything else.
 */
export function parsePrometheusText(text: string): Map<string, PrometheusFamily> {
  const families = new Map<string, PrometheusFamily>()
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string]
      if (!NAME.test(name)) throw new Error(`bad metric name in: ${line}`)
      const family = families.get(name) ?? { name, help: '', type: 'untyped' as const, samples: [] }
      families.set(name, family)
      if (kind === 'HELP') family.help = rest
      else if (!TYPES.has(rest) || family.samples.length > 0) throw new Error(`bad or late TYPE: ${line}`)
      else family.type = rest as PrometheusFamily['type']
      continue
    }
    if (line.startsWith('#')) continue
    const nameEnd = line.search(/[{ ]/)
    const name = line.slice(0, nameEnd)
    if (nameEnd < 0 || !NAME.test(name)) throw new Error(`bad sample line: ${line}`)
    const [labels, after] = line[nameEnd] === '{' ? parseLabels(line, nameEnd, line) : [{}, nameEnd]
    const fields = line.slice(after).trim().split(/\s+/)
    if (fields.length < 1 || fields.length > 2) throw new Error(`bad sample line: ${line}`)
    const family = familyOf(name, families)
    if (!family) throw new Error(`sample of an undeclared family: ${line}`)
    if (name.endsWith('_bucket') && !('le' in labels)) throw new Error(`bucket without le: ${line}`)
    family.samples.push({ name, labels, value: parseValue(fields[0] as string, line) })
  }
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family)
  return families
}

function seriesKey(labels: Record<string, string>): string {
  return JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort())
}

function checkHistogram(family: PrometheusFamily): void {
  const series = new Map<string, PrometheusSample[]>()
  for (const s of family.samples) {
    if (!s.name.endsWith('_bucket')) continue
    const key = seriesKey(s.labels)
    series.set(key, [...(series.get(key) ?? []), s])
  }
  for (const [key, buckets] of series) {
    for (let i = 1; i < buckets.length; i++) {
      if ((buckets[i] as PrometheusSample).value < (buckets[i - 1] as PrometheusSample).value) throw new Error(`${family.name}${key}: buckets not cumulative`)
    }
    const inf = buckets.find((b) => b.labels.le === '+Inf')
    const count = family.samples.find((s) => s.name === `${family.name}_count` && seriesKey(s.labels) === key)
    if (!inf || !count || inf.value !== count.value) throw new Error(`${family.name}${key}: +Inf bucket does not equal _count`)
  }
}

/** The value of the sample `name` whose labels include `labels`, or undefined. */
export function sampleValue(families: Map<string, PrometheusFamily>, name: string, labels: Record<string, string>): number | undefined {
  const family = familyOf(name, families)
  return family?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}
