import type { Command } from 'commander'
import { addConnectionOptions, givenUrl, type ConnectionOptions } from '../connection.js'
import { runRoles } from '../roles.js'

/** `postbox roles [--apply]`: the SQL creating the producer, consumer and admin roles. */
export function registerRoles(program: Command): void {
  addConnectionOptions(program.command('roles'))
    .description('print (or with --apply, run) the SQL creating the producer, consumer and admin roles of a schema')
    .option('--prefix <prefix>', 'role name prefix (default: the schema name): <prefix>_producer, _consumer, _admin')
    .option('--apply', 'run the SQL (as the schema owner, with CREATEROLE) instead of printing it')
    .action(async (o: ConnectionOptions & { prefix?: string; apply?: boolean }) => {
      await runRoles({ schema: o.schema, prefix: o.prefix, apply: o.apply, databaseUrl: givenUrl(o) })
    })
}
