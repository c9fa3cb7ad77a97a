import type { Command } from 'commander'
import { migrationScript } from '../../migrate/migrator.js'
import { schemaName } from '../../schema-name.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'

/** `postbox migrate [--print]`: installs or upgrades the schema, or prints its SQL. */
export function registerMigrate(program: Command): void {
  addConnectionOptions(program.command('migrate'))
    .description('install or upgrade the postbox schema (or, with --print, write its SQL)')
    .option('--print', 'write the SQL to stdout instead of running it, for your own migration tool')
    .action(async (o: ConnectionOptions & { print?: boolean }) => {
      if (o.print) {
        process.stdout.write(migrationScript(schemaName(o.schema)))
        return
      }
      await withPostbox(o, async (postbox) => {
        const result = await postbox.migrate()
        console.log(result.applied.length > 0
          ? `schema ${o.schema}: applied ${result.applied.join(', ')}; now at version ${result.version}`
          : `schema ${o.schema}: already at version ${result.version}`)
      }, 1)
    })
}
