/**
 * Something postbox opened that holds connections or timers until it is closed or stopped: a
 * Postbox (with its pool and LISTEN connection) or a worker.
 */
export interface OpenResource {
  readonly kind: 'postbox' | 'worker' | 'dashboard'
  readonly description: string
  readonly openedAt: number
}

const open = new Set<OpenResource>()

/** Records a resource as open; call the returned function when it is closed. */
export function trackOpen(kind: OpenResource['kind'], description: string): () => void {
  const resource: OpenResource = { kind, description, openedAt: Date.now() }
  open.add(resource)
  return () => {
    open.delete(resource)
  }
}

/** Every postbox resource in this process that is still open (for leak checks in tests). */
export function openResources(): readonly OpenResource[] {
  return [...open]
}
