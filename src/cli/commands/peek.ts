import { Option, type Command } from 'commander'
import type { PeekedMessage } from '../../inspect/peek.js'
import { integer } from '../arguments.js'
import { addConnectionOptions, withPostbox, type ConnectionOptions } from '../connection.js'
import { formatTime, payloadText } from '../../inspect/display.js'
import { printJson, printTable } from '../output.js'

interface PeekCommandOptions extends ConnectionOptions {
  limit: number
  json?: boolean
  dead?: boolean
  after?: string
}

/** `postbox peek <queue> [--limit N] [--json] [--dead]`: messages read without claiming them. */
export function registerPeek(program: Command): void {
  addConnectionOptions(program.command('peek'))
    .description('show messages of a queue in delivery order without claiming them (no lease or attempt changes)')
    .argument('<queue>', 'the queue')
    .addOption(new Option('--limit <n>', 'at most this many messages').default(20).argParser(integer(1, 1000)))
    .option('--dead', "the queue's dead letters (in its dead-letter queue) instead of its messages")
    .option('--after <cursor>', 'the next page: the cursor printed after the previous one')
    .option('--json', 'print JSON: { messages, next }')
    .action(async (queue: string, o: PeekCommandOptions) => {
      await withPostbox(o, async (postbox) => {
        const page = await postbox.peek(queue, { limit: o.limit, dead: o.dead ?? false, after: o.after })
        if (o.json) return printJson(page)
        // A dead-letter queue's own messages are dead letters too: show where they came from.
        if (o.dead || page.messages.some((m) => m.originalQueue !== null)) printDead(page.messages)
        else printMessages(page.messages)
        if (page.next) console.log(`more: postbox peek ${queue}${o.dead ? ' --dead' : ''} --after ${page.next}`)
      })
    })
}

function printMessages(messages: PeekedMessage[]): void {
  printTable(
    ['id', 'state', 'attempt', 'priority', 'enqueued', 'available', 'group', 'last error', 'payload'],
    messages.map((m) => [
      m.id, m.state, String(m.attempt), String(m.priority), formatTime(m.enqueuedAt), formatTime(m.availableAt), m.groupKey, m.lastError,
      payloadText(m.payload, m.encoding),
    ]),
  )
}

function printDead(messages: PeekedMessage[]): void {
  printTable(
    ['id', 'from', 'attempts', 'dead at', 'error', 'payload'],
    messages.map((m) => [
      m.id, m.originalQueue, m.originalAttempt === null ? '' : String(m.originalAttempt), formatTime(m.deadAt), m.lastError,
      payloadText(m.payload, m.encoding),
    ]),
  )
}
