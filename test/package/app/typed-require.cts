// A CommonJS TypeScript file (module nodenext): tsc turns this import into require('postbox').
import { Postbox, PostboxError, QueueNotFoundError } from 'postbox'

const error: PostboxError = new QueueNotFoundError('signups')
if (typeof Postbox !== 'function' || !(error instanceof PostboxError)) throw new Error('postbox did not load from CommonJS TypeScript')
console.log('typed-require.cts: postbox loaded with require()')
