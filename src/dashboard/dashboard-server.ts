import { createServer, type Server } from 'node:http'
import { isIP } from 'node:net'
import { InvalidOptionsError, PostboxError } from '../errors.js'
import { createDashboard, type DashboardOptions } from './dashboard.js'
import type { DashboardPostbox } from './routes.js'

/** Options of {@link startDashboardServer}. */
export interface DashboardServerOptions extends Omit<DashboardOptions, 'allowedHosts' | 'basePath'> {
  /** Default 8080; 0 picks a free port. */
  port?: number
  /** The address to listen on. Default `127.0.0.1`: reachable from this machine only. */
  host?: string
}

/** A running dashboard server. */
export interface DashboardServer {
  /** Where it listens, for example `http://127.0.0.1:8080/`. */
  readonly url: string
  readonly port: number
  /** Stops listening and stops the dashboard's sampler. The Postbox stays open. */
  close(): Promise<void>
}

/** Thrown when the dashboard cannot listen: the port is taken, or the address is not this machine's. */
export class DashboardListenError extends PostboxError {
  override name = 'DashboardListenError'
}

/** True for an address that only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'))
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1']

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      server.off('listening', listening)
      if (error.code === 'EADDRINUSE') reject(new DashboardListenError(`port ${port} on ${host} is already in use: choose another with --port`))
      else if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') reject(new DashboardListenError(`cannot listen on ${host}: it is not an address of this machine`))
      else if (error.code === 'EACCES') reject(new DashboardListenError(`not allowed to listen on port ${port}: use a port above 1023`))
      else reject(error)
    }
    const listening = () => {
      server.off('error', failed)
      resolve()
    }
    server.once('error', failed)
    server.once('listening', listening)
    server.listen(port, host)
  })
}

/**
 * Serves the dashboard with node:http (what `postbox dashboard` runs). Bound to loopback unless
 * `host` says otherwise; on loopback the Host header must be a loopback name (no DNS
 * rebinding). Refuses to start with actions on a non-loopback address without a token, since
 * anyone who can reach it could then redrive.
 *
 * @example
 * const server = await startDashboardServer(postbox, { port: 8080 })
 * console.log(server.url)
 */
export async function startDashboardServer(postbox: DashboardPostbox, options: DashboardServerOptions = {}): Promise<DashboardServer> {
  const { port = 8080, host = '127.0.0.1', ...dashboardOptions } = options
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new InvalidOptionsError(`invalid port ${port}: use 0 to 65535`)
  const loopback = isLoopback(host)
  if (dashboardOptions.allowActions && !loopback && !dashboardOptions.token) {
    throw new InvalidOptionsError(`refusing to serve actions on ${host} without a token: anyone who reaches it could redrive; pass --token (or bind to 127.0.0.1)`)
  }
  const dashboard = createDashboard(postbox, { ...dashboardOptions, ...(loopback ? { allowedHosts: LOOPBACK_NAMES } : {}) })
  const server = createServer(dashboard.handle)
  try {
    await listen(server, port, host)
  } catch (error) {
    await dashboard.close()
    throw error
  }
  const address = server.address()
  const actualPort = typeof address === 'object' && address !== null ? address.port : port
  const shownHost = host.includes(':') ? `[${host}]` : host
  let closing: Promise<void> | undefined
  return {
    url: `http://${shownHost}:${actualPort}/`,
    port: actualPort,
    close() {
      closing ??= (async () => {
        server.closeIdleConnections()
        await new Promise<void>((resolve) => server.close(() => resolve()))
        await dashboard.close()
      })()
      return closing
    },
  }
}
