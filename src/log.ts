/**
 * Logging: pino JSON lines on stderr (stdout is for the command's result).
 * Modules take the small Log interface, so tests can pass a recorder.
 */
import { pino } from 'pino';

export interface Log {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  child(bindings: Record<string, unknown>): Log;
}

export function createLog(level: string): Log {
  // Synchronous writes to fd 2: a cron job's last lines must not be lost on exit.
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: true }),
  ) as unknown as Log;
}

/** A Log that records entries in memory (for tests) or drops them. */
export function memoryLog(entries: Array<{ level: string; msg: string } & Record<string, unknown>> = []): Log {
  const at = (level: string) => (obj: object, msg: string) => void entries.push({ level, msg, ...obj });
  const log: Log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}
