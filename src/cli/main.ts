#!/usr/bin/env node
import { Command } from 'commander'
import { cliErrorLine, exitCodeOf } from './cli-errors.js'
import { registerBindings } from './commands/bindings.js'
import { registerDashboard } from './commands/dashboard.js'
import { registerDemo } from './commands/demo.js'
import { registerMigrate } from './commands/migrate.js'
import { registerPause } from './commands/pause.js'
import { registerPeek } from './commands/peek.js'
import { registerPurge } from './commands/purge.js'
import { registerQueues } from './commands/queues.js'
import { registerRedrive } from './commands/redrive.js'
import { registerRoles } from './commands/roles.js'
import { registerSchedules } from './commands/schedules.js'
import { registerSend } from './commands/send.js'
import { registerStats } from './commands/stats.js'
import { registerStreams } from './commands/streams.js'

// Each command lives in commands/<name>.ts and registers itself here; a new one is a new file
// and one line below.
const COMMANDS = [
  registerMigrate, registerQueues, registerStats, registerPeek, registerSend, registerRedrive, registerPurge,
  registerBindings, registerPause, registerDashboard, registerDemo, registerRoles, registerSchedules, registerStreams,
]

const program = new Command('postbox')
  .description('A message queue that lives inside PostgreSQL.')
  // Usage errors throw instead of exiting, so that they end with exit code 2 (see exitCodeOf);
  // commands created with program.command() inherit this.
  .exitOverride()
for (const register of COMMANDS) register(program)

// Exit codes: 0 success, 1 an error (one line on stderr), 2 bad usage (commander already said why).
program.parseAsync().catch((error: unknown) => {
  const code = exitCodeOf(error)
  if (code === 1) console.error(cliErrorLine(error))
  process.exitCode = code
})
