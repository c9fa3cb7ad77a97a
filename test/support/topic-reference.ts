// A reference for topic routing, written from RabbitMQ's documented rules (tutorial five and the
// exchanges guide), word by word, with nothing in common with postbox's regexes: the tests judge
// the SQL by it.

/** True when a RabbitMQ topic pattern matches a routing key: `*` is exactly one word, `#` zero or more. */
export function topicMatches(pattern: string, routingKey: string): boolean {
  const p = pattern.split('.')
  const k = routingKey.split('.')
  const seen = new Map<number, boolean>()
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length
    const at = i * (k.length + 1) + j
    const known = seen.get(at)
    if (known !== undefined) return known
    const word = p[i]
    const result = word === '#'
      ? match(i + 1, j) || (j < k.length && match(i, j + 1))
      : j < k.length && (word === '*' || word === k[j]) && match(i + 1, j + 1)
    seen.set(at, result)
    return result
  }
  return match(0, 0)
}

/** True when headers pass an SNS-style filter: every key present with one of its values. */
export function filterMatches(filter: Readonly<Record<string, string | readonly string[]>> | null, headers: Readonly<Record<string, string>>): boolean {
  if (filter === null) return true
  return Object.entries(filter).every(([name, wanted]) =>
    Object.hasOwn(headers, name) && (typeof wanted === 'string' ? [wanted] : wanted).includes(headers[name] as string))
}
