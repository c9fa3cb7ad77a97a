import { Postbox } from '../../src/index.js'
import type { PostboxOptions } from '../../src/postbox-options.js'
import type { TestSchema } from './test-schema.js'

/**
 * A Postbox on the test schema whose pool records the text of every statement that ran (behind a
 * pooler that cannot keep prepared statements, the one named statement it refused does not count).
 * The caller closes it.
 */
export function countingPostbox(t: TestSchema, options: Partial<PostboxOptions> = {}): { postbox: Postbox; statements: string[] } {
  const statements: string[] = []
  const pool = {
    query: async (text: string | { text: string }, values?: unknown[]) => {
      const result = await t.pool.query(text as string, values)
      statements.push(typeof text === 'string' ? text : text.text)
      return result
    },
    connect: () => t.pool.connect(),
  }
  return { postbox: new Postbox({ ...options, pool, schema: t.schema } as PostboxOptions), statements }
}
