// Plain CommonJS: require() of the package (Node 20.19 and newer load its ES modules this way).
const assert = require('node:assert/strict')
const { Postbox, PostboxError, QueueNotFoundError, defineQueue } = require('postbox')

assert.equal(typeof Postbox, 'function')
assert.equal(typeof defineQueue, 'function')
assert.ok(new QueueNotFoundError('signups') instanceof PostboxError)
console.log('require.cjs: postbox loaded with require()')
