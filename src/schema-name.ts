import { InvalidOptionsError } from './errors.js'

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * A schema name checked once against a plain-identifier allowlist. The schema is the only name
 * postbox ever splices into SQL, so it is validated here, before any statement runs, and quoted.
 */
export interface SchemaName {
  /** The bare name, for example `postbox`. */
  readonly name: string
  /** The quoted identifier to splice into SQL, for example `"postbox"`. */
  readonly sql: string
}

/** Validates a schema name; throws {@link InvalidOptionsError} for anything but `[a-z_][a-z0-9_]*` up to 63 bytes. */
export function schemaName(name: unknown): SchemaName {
  if (typeof name !== 'string' || !SCHEMA_NAME.test(name) || name.startsWith('pg_')) {
    throw new InvalidOptionsError(
      `invalid schema name ${JSON.stringify(name)}: use 1-63 characters of a-z, 0-9 and _, starting with a letter or _ (and not pg_)`,
    )
  }
  return { name, sql: `"${name}"` }
}
