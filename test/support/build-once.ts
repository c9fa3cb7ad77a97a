import { execFileSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

const root = new URL('../../', import.meta.url).pathname
const BUILT = join(root, 'dist/cli/main.js')

/** The newest modification time of the .ts files under a folder. */
function newestSource(dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path))
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

/**
 * Builds dist/ (npm run build) once per test run when it is missing or older than src/, so the
 * CLI tests run the built binary as users do. CI builds before testing, so there it does nothing.
 */
export default function buildOnce(): void {
  let built = 0
  try {
    built = statSync(BUILT).mtimeMs
  } catch {
    built = 0
  }
  if (built >= newestSource(join(root, 'src'))) return
  execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' })
}
