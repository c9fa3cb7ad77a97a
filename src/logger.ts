type LogFn = (objOrMsg: unknown, ...rest: unknown[]) => void

/**
 * The logger postbox writes to: pino, console, or anything with these four methods. postbox never
 * logs payloads or connection strings; it logs ids, queue names and errors.
 */
export interface Logger {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}

const noop = () => {}

/** The default: says nothing. */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop }
