import { afterEach, beforeEach, expect } from 'vitest'
import { openResources, type OpenResource } from '../../src/open-resources.js'

// Fails any test that leaves a worker or a Postbox (pool, LISTEN connection) open that it opened itself.
// Resources a file opens in beforeAll are older than the test and not counted.
let before = new Set<OpenResource>()

beforeEach(() => {
  before = new Set(openResources())
})

afterEach(() => {
  const leaked = openResources().filter((resource) => !before.has(resource))
  expect(leaked.map((r) => `${r.kind}: ${r.description}`), 'the test left these open').toEqual([])
})
