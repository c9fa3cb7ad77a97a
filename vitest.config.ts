import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // build-once: the CLI tests run the built binary (dist/), rebuilt when src/ is newer.
    globalSetup: ['test/support/global-setup.ts', 'test/support/build-once.ts'],
    setupFiles: ['test/support/guard.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: a few files at once keeps Postgres busy without starving it.
    maxWorkers: 3,
  },
})
