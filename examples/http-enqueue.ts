// An HTTP endpoint that enqueues: POST /signups writes the user and its welcome email in one
// transaction and answers 201 at once; a consumer (here, the same program) receives and acks it.
// The example starts a server on 127.0.0.1 (a free port), makes one request to itself, and exits.
//
//   npx tsx examples/http-enqueue.ts        (DATABASE_URL, or an embedded Postgres)
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import pg from 'pg'
import { z } from 'zod'
import { Postbox } from '../src/index.js'
import { exampleDatabase } from './support/example-database.js'

const { connectionString, schema, appSchema, close } = await exampleDatabase('http_enqueue')
const pool = new pg.Pool({ connectionString, options: `-c search_path=${appSchema}` })
const postbox = new Postbox({ connectionString, schema })
await postbox.migrate()
await postbox.createQueue('welcome-emails')
await pool.query('CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE)')

const Signup = z.object({ email: z.string().email() })

async function readJson(req: IncomingMessage): Promise<unknown> {
  let body = ''
  for await (const chunk of req) body += chunk
  return JSON.parse(body)
}

const server = createServer(async (req, res) => {
  if (req.method !== 'POST' || req.url !== '/signups') return res.writeHead(404).end()
  const input = Signup.safeParse(await readJson(req).catch(() => null))
  if (!input.success) return res.writeHead(400).end('expected {"email": "..."}')
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query('INSERT INTO users (email) VALUES ($1) RETURNING id', [input.data.email])
    await postbox.send('welcome-emails', { userId: rows[0].id, email: input.data.email }, { tx: client })
    await client.query('COMMIT')
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ userId: rows[0].id }))
  } catch (error) {
    await client.query('ROLLBACK')
    res.writeHead(500).end(String(error))
  } finally {
    client.release()
  }
})

try {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  const response = await fetch(`http://127.0.0.1:${port}/signups`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'ada@example.com' }),
  })
  console.log(`POST /signups -> ${response.status}`, await response.json())
  assert.equal(response.status, 201)

  // Elsewhere, a consumer pulls the message (SQS style): it is leased, then acked.
  const [message] = await postbox.receive<{ userId: string; email: string }>('welcome-emails', { max: 10, wait: '5s' })
  if (!message) throw new Error('no message')
  console.log(`received message ${message.id} (attempt ${message.attempt}):`, message.payload)
  await postbox.ack(message)
  assert.equal(message.payload.email, 'ada@example.com')
} finally {
  server.close()
  await postbox.close()
  await pool.end()
  await close()
}
