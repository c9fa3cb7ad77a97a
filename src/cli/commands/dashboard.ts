import { Option, type Command } from 'commander'
import { startDashboardServer } from '../../dashboard/dashboard-server.js'
import { integer } from '../arguments.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { handleInterrupts } from '../interrupts.js'

interface DashboardCommandOptions extends ConnectionOptions {
  port: number
  host: string
  allowActions?: boolean
  token?: string
  sampleInterval: string
}

/** `postbox dashboard [--port 8080] [--host 127.0.0.1] [--allow-actions] [--token T]`: serves the web dashboard until Ctrl-C. */
export function registerDashboard(program: Command): void {
  addConnectionOptions(program.command('dashboard'))
    .description('serve the web dashboard: queues, dead letters, JSON under /api/, Prometheus text at /metrics')
    .addOption(new Option('--port <port>', 'port to listen on (0: any free port)').default(8080).argParser(integer(0, 65_535)))
    .option('--host <address>', 'address to listen on; anything but loopback makes it reachable from other machines', '127.0.0.1')
    .option('--allow-actions', 'allow redrive from the page and POST /api/ (default: read-only)')
    .addOption(new Option('--token <token>', 'require this token (Bearer header, or sign in on the page); needed for actions off loopback').env('POSTBOX_DASHBOARD_TOKEN'))
    .option('--sample-interval <duration>', 'how often to read queue_stats for charts and rates', '5s')
    .action(async (o: DashboardCommandOptions) => {
      await withPostbox(o, async (postbox) => {
        await postbox.stats() // fail now, with a clear line, if the database or the schema is not there
        const server = await startDashboardServer(postbox, {
          port: o.port, host: o.host, allowActions: o.allowActions ?? false, token: o.token, sampleInterval: o.sampleInterval,
        })
        console.log(`postbox dashboard on ${server.url} (schema ${o.schema}, ${o.allowActions ? 'actions allowed' : 'read-only'}${o.token ? ', token required' : ''}); Ctrl-C to stop`)
        let stopHandling = () => {}
        await new Promise<void>((resolve) => (stopHandling = handleInterrupts(() => resolve())))
        await server.close()
        stopHandling()
      }, 3)
    })
}
