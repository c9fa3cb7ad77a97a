import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/guard.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: a few files at once keeps Postgres busy without starving it.
    maxWorkers: 3,
  },
})
