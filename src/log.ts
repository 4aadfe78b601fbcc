/**
 * Logging: pino JSON lines on stderr (stdout is for the command's result).
 * Modules take the small Log interface, so tests can pass a recorder.
 *
 * pino is loaded on the first line actually written: a cron run that finds
 * nothing to do (and so logs nothing at info) never pays its start-up cost.
 */
import { createRequire } from 'node:module';
import type { Logger } from 'pino';

export interface Log {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  child(bindings: Record<string, unknown>): Log;
}

type Method = 'debug' | 'info' | 'warn' | 'error';
const LEVEL_VALUES: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

export function createLog(level: string): Log {
  const threshold = LEVEL_VALUES[level] ?? LEVEL_VALUES.info!;
  let root: Logger | undefined;
  const rootLogger = (): Logger => {
    if (!root) {
      const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
      // Synchronous writes to fd 2: a cron job's last lines must not be lost on exit.
      root = pino(
        { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
        pino.destination({ fd: 2, sync: true }),
      );
    }
    return root;
  };
  const make = (chain: Array<Record<string, unknown>>): Log => {
    let logger: Logger | undefined;
    const at = (method: Method) => (obj: object, msg: string) => {
      if (LEVEL_VALUES[method]! < threshold) return;
      logger ??= chain.reduce((l, bindings) => l.child(bindings), rootLogger());
      logger[method](obj, msg);
    };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (bindings) => make([...chain, bindings]) };
  };
  return make([]);
}

/** A Log that records entries in memory (for tests) or drops them. */
export function memoryLog(entries: Array<{ level: string; msg: string } & Record<string, unknown>> = []): Log {
  const at = (level: string) => (obj: object, msg: string) => void entries.push({ level, msg, ...obj });
  const log: Log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}
