export { openResources, type OpenResource } from './open-resources.js'
export { startEmbeddedPostgres, type LocalPostgres, type EmbeddedPostgresOptions } from './embedded/embedded-postgres.js'
export { EmbeddedPostgresError } from './errors.js'
