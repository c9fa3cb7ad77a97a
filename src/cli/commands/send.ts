import { Option, type Command } from 'commander'
import { integer, json } from '../arguments.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { printJson } from '../output.js'

interface SendCommandOptions extends ConnectionOptions {
  delay?: string
  priority?: number
  dedupeKey?: string
  groupKey?: string
  headers?: Record<string, string>
  json?: boolean
}

/** `postbox send <queue> <json>`: sends one message with a JSON payload. */
export function registerSend(program: Command): void {
  addConnectionOptions(program.command('send'))
    .description('send one message with a JSON payload')
    .argument('<queue>', 'the queue')
    .argument('<json>', 'the payload, as JSON text', json)
    .option('--delay <duration>', "deliver no earlier than this from now, for example '30s'")
    .addOption(new Option('--priority <n>', 'higher first (default 0)').argParser(integer(-1_000_000, 1_000_000)))
    .option('--dedupe-key <key>', 'while a message with this key waits, return it instead of sending another')
    .option('--group-key <key>', 'deliver messages of this group one at a time, in order')
    .addOption(new Option('--headers <json>', 'headers, as a JSON object of strings').argParser(json as (v: string) => Record<string, string>))
    .option('--json', 'print JSON: { id, duplicate }')
    .action(async (queue: string, payload: unknown, o: SendCommandOptions) => {
      await withPostbox(o, async (postbox) => {
        const result = await postbox.send(queue, payload, {
          delay: o.delay, priority: o.priority, dedupeKey: o.dedupeKey, groupKey: o.groupKey, headers: o.headers,
        })
        if (o.json) return printJson(result)
        console.log(result.duplicate
          ? `not sent: message ${result.id} in ${queue} has the same dedupe key and is still waiting`
          : `sent message ${result.id} to ${queue}`)
      })
    })
}
