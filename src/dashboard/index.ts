// The `postbox/dashboard` entry: the web dashboard as a request handler to mount in an app's own
// server, and as a standalone server (what `postbox dashboard` runs).
export { createDashboard, type Dashboard, type DashboardOptions } from './dashboard.js'
export { startDashboardServer, DashboardListenError, type DashboardServer, type DashboardServerOptions } from './dashboard-server.js'
export type { DashboardPostbox } from './routes.js'
