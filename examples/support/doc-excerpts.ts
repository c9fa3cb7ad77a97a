import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** A TypeScript code block of a Markdown file that does not match the example it names. */
export interface ExcerptProblem {
  readonly file: string
  readonly line: number
  readonly problem: string
}

const SOURCE = /\bexamples\/([\w-]+\.ts)\b/
/** A line of a code block that stands for lines left out. */
const ELISION = '// ...'

/**
 * Checks that TypeScript code blocks in Markdown are excerpts of the runnable examples, so the
 * docs cannot drift from code that CI runs. A block names its source in the paragraph just before
 * it (for example "(from examples/outbox-kysely.ts):"); its lines must then appear in that file
 * in the same order, consecutively (indentation aside), except where the block has a `// ...`
 * line. With `requireSource`, a block that names no source is a problem too.
 */
export function checkExcerpts(root: string, markdownFile: string, requireSource: boolean): ExcerptProblem[] {
  const lines = readFileSync(join(root, markdownFile), 'utf8').split('\n')
  const problems: ExcerptProblem[] = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i] as string)) continue
    const start = i
    const block: string[] = []
    while (++i < lines.length && !(lines[i] as string).startsWith('```')) block.push(lines[i] as string)
    const source = SOURCE.exec(paragraphBefore(lines, start))?.[1]
    const report = (problem: string) => problems.push({ file: markdownFile, line: start + 1, problem })
    if (!source) {
      if (requireSource) report('names no examples/ file in the paragraph before it')
      continue
    }
    let text: string
    try {
      text = readFileSync(join(root, 'examples', source), 'utf8')
    } catch {
      report(`names examples/${source}, which does not exist`)
      continue
    }
    const missing = firstMissing(block, text.split('\n'))
    if (missing !== undefined) report(`is not an excerpt of examples/${source}: no match for "${missing.trim()}"`)
  }
  return problems
}

/** The text of the paragraph that ends just before line `index` (blank lines skipped). */
function paragraphBefore(lines: readonly string[], index: number): string {
  let end = index
  while (end > 0 && (lines[end - 1] as string).trim() === '') end--
  let start = end
  while (start > 0 && (lines[start - 1] as string).trim() !== '') start--
  return lines.slice(start, end).join(' ')
}

/** The first line of the first segment of `block` not found (in order) in `file`, if any. */
function firstMissing(block: readonly string[], file: readonly string[]): string | undefined {
  const target = file.map((line) => line.trim())
  const segments: string[][] = [[]]
  for (const line of block) {
    if (line.trim() === ELISION) segments.push([])
    else (segments[segments.length - 1] as string[]).push(line.trim())
  }
  let from = 0
  for (const segment of segments.filter((s) => s.length > 0)) {
    const at = findRun(target, segment, from)
    if (at < 0) return segment[0]
    from = at + segment.length
  }
  return undefined
}

function findRun(haystack: readonly string[], run: readonly string[], from: number): number {
  for (let i = from; i + run.length <= haystack.length; i++) {
    if (run.every((line, k) => haystack[i + k] === line)) return i
  }
  return -1
}
