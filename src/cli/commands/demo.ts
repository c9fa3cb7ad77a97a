import type { Command } from 'commander'
import { addUrlOption, givenUrl } from '../connection.js'
import { runDemo } from '../demo.js'

/** `postbox demo`: the demo scenarios, on an embedded Postgres unless a database is given. */
export function registerDemo(program: Command): void {
  addUrlOption(program.command('demo'))
    .description('run the demo scenarios (on an embedded Postgres unless --url or DATABASE_URL is set)')
    .action(async (o: { url?: string; databaseUrl?: string }) => {
      await runDemo(givenUrl(o))
    })
}
