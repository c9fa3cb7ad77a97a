import { afterEach, beforeEach, expect } from 'vitest'
import { openResources, type OpenResource } from '../../src/open-resources.js'

// Fails any test that leaves a worker, a notifier or a Postbox open that it opened itself.
// Resources a file opens in beforeAll are older than the test and not counted.
let before = new Set<OpenResource>()

beforeEach(() => {
  before = new Set(openResources())
})

afterEach(() => {
  const leaked = openResources().filter((resource) => !before.has(resource) && resource.kind !== 'postbox')
  const leakedPostboxes = openResources().filter((resource) => !before.has(resource) && resource.kind === 'postbox')
  expect([...leaked, ...leakedPostboxes].map((r) => `${r.kind}: ${r.description}`), 'the test left these open').toEqual([])
})
