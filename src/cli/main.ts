#!/usr/bin/env node
import { Command, Option } from 'commander'
import { PostboxError } from '../errors.js'
import { migrationScript } from '../migrate/migrator.js'
import { Postbox } from '../postbox.js'
import { schemaName } from '../schema-name.js'
import { cliDatabase } from './database-url.js'
import { runDemo } from './demo.js'
import { runRoles } from './roles.js'

const program = new Command('postbox').description('A message queue that lives inside PostgreSQL.')
const databaseUrl = () => new Option('--database-url <url>', 'Postgres connection string (default: $DATABASE_URL)')
const schema = () => new Option('--schema <name>', 'schema postbox lives in').default('postbox')

program
  .command('migrate')
  .description('install or upgrade the postbox schema (or, with --print, write its SQL)')
  .addOption(databaseUrl())
  .addOption(schema())
  .option('--print', 'write the SQL to stdout instead of running it, for your own migration tool')
  .action(async (o: { databaseUrl?: string; schema: string; print?: boolean }) => {
    if (o.print) {
      process.stdout.write(migrationScript(schemaName(o.schema)))
      return
    }
    const db = await cliDatabase(o.databaseUrl, false)
    const postbox = new Postbox({ connectionString: db.connectionString, schema: o.schema, poolSize: 1 })
    try {
      const result = await postbox.migrate()
      console.log(result.applied.length > 0
        ? `schema ${o.schema}: applied ${result.applied.join(', ')}; now at version ${result.version}`
        : `schema ${o.schema}: already at version ${result.version}`)
    } finally {
      await postbox.close()
    }
  })

program
  .command('demo')
  .description('run the demo scenarios (on an embedded Postgres unless DATABASE_URL is set)')
  .addOption(databaseUrl())
  .action(async (o: { databaseUrl?: string }) => {
    await runDemo(o.databaseUrl)
  })

program
  .command('roles')
  .description('print (or with --apply, run) the SQL creating the producer, consumer and admin roles of a schema')
  .addOption(databaseUrl())
  .addOption(schema())
  .option('--prefix <prefix>', 'role name prefix (default: the schema name): <prefix>_producer, _consumer, _admin')
  .option('--apply', 'run the SQL (as the schema owner, with CREATEROLE) instead of printing it')
  .action(runRoles)

program.parseAsync().catch((error: unknown) => {
  console.error(error instanceof PostboxError ? `postbox: ${error.message}` : error)
  process.exitCode = 1
})
