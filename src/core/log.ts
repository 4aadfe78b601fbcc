/**
 * Logging on stderr (stdout is for the command's result), in one of three
 * formats:
 *
 *   json     JSON lines in pino's format, for log shippers (the default
 *            when stderr is neither a terminal nor the journal)
 *   pretty   one readable line per entry: time, level word, message, key
 *            fields; coloured on a terminal unless NO_COLOR is set
 *   journal  the same line without time (journald stamps it), prefixed with
 *            the syslog priority `<N>` that journald reads, so that
 *            `journalctl -p err` finds the failures
 *
 * Modules take the small Log interface, so tests can pass a recorder.
 *
 * All three are a few lines below, written synchronously to fd 2: no pino
 * (see jsonEmitter) and no pino-pretty, which cost 50-100 ms more on the
 * first line when measured (README, Logs).
 */
import { fstatSync, writeSync } from 'node:fs';
import { isatty } from 'node:tty';

export interface Log {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  child(bindings: Record<string, unknown>): Log;
}

export const LOG_FORMATS = ['json', 'pretty', 'journal'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

type Method = 'debug' | 'info' | 'warn' | 'error';
const LEVEL_VALUES: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** The numeric threshold of a level name (info when unknown). */
export function levelValue(level: string): number {
  return LEVEL_VALUES[level] ?? LEVEL_VALUES.info!;
}

/** syslog priorities (sd-daemon(3)): what journald files each line under. */
const JOURNAL_PRIORITY: Record<string, number> = { trace: 7, debug: 7, info: 6, warn: 4, error: 3, fatal: 2 };

/** What decides the default format; gathered by stderrFacts(), pure here so it is testable. */
export interface StderrFacts {
  isTTY: boolean;
  /** $JOURNAL_STREAM: "device:inode" of the stream systemd connected to the journal. */
  journalStream?: string;
  /** "device:inode" of fd 2, undefined when fstat fails. */
  stderrId?: string;
}

/**
 * --log-format / log.format when given; otherwise pretty on a terminal, journal
 * when stderr is the stream systemd connected to the journal (JOURNAL_STREAM
 * names it by device and inode: a child that inherited the variable but whose
 * stderr was redirected elsewhere must not get `<N>` prefixes), else JSON.
 */
export function chooseLogFormat(explicit: LogFormat | undefined, facts: StderrFacts): LogFormat {
  if (explicit) return explicit;
  if (facts.isTTY) return 'pretty';
  if (facts.journalStream && facts.stderrId && facts.journalStream === facts.stderrId) return 'journal';
  return 'json';
}

/** "device:inode" of an open descriptor, as systemd formats JOURNAL_STREAM. */
export function descriptorId(fd: number): string | undefined {
  try {
    const st = fstatSync(fd, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * isatty(fd), asked only of a character device: every terminal is one, and
 * a file, pipe or socket is answered by fstat without loading node:tty
 * (start-up cost of a cron run, issue 11; scripts/build.mjs lazyBuiltins).
 */
export function isTerminal(fd: number): boolean {
  try {
    if (!fstatSync(fd).isCharacterDevice()) return false;
  } catch {
    return false;
  }
  return isatty(fd);
}

export function stderrFacts(env: NodeJS.ProcessEnv = process.env): StderrFacts {
  return {
    isTTY: isTerminal(2),
    journalStream: env.JOURNAL_STREAM,
    stderrId: env.JOURNAL_STREAM ? descriptorId(2) : undefined,
  };
}

/** Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or TERM is dumb. */
export function wantsColor(env: NodeJS.ProcessEnv = process.env, isTTY = isTerminal(2)): boolean {
  return isTTY && !env.NO_COLOR && env.TERM !== 'dumb';
}

export interface Entry {
  level: string;
  time: Date;
  msg: string;
  fields: Record<string, unknown>;
}

const COLORS: Record<string, string> = { trace: '90', debug: '34', info: '32', warn: '33', error: '31', fatal: '1;31' };
const paint = (on: boolean, code: string, text: string): string => (on ? `\x1b[${code}m${text}\x1b[0m` : text);

/** A field value on one line: bare when unambiguous, else JSON-quoted (which also escapes newlines). */
function formatValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === 'string') return /^[^\s"=\\\x00-\x1f\x7f]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === null) return 'null';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return JSON.stringify(String(value));
  }
}

/** One line, never more: a newline in the message would be a second journal entry without its priority. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => JSON.stringify(c).slice(1, -1));
}

function clock(time: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(time.getHours())}:${two(time.getMinutes())}:${two(time.getSeconds())}.${String(time.getMilliseconds()).padStart(3, '0')}`;
}

/**
 * The text of one pretty or journal entry (without the newline):
 *   pretty:  `14:03:07.412 ERROR run failed instance=default err="…" kind=no-source`
 *   journal: `<3>run failed instance=default err="…" kind=no-source`
 */
export function formatEntry(format: 'pretty' | 'journal', entry: Entry, colorWanted = false): string {
  const color = colorWanted && format === 'pretty';
  const fields = Object.entries(entry.fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${paint(color, '2', `${k}=`)}${formatValue(v)}`)
    .join(' ');
  const body = `${oneLine(entry.msg)}${fields ? ` ${fields}` : ''}`;
  if (format === 'journal') return `<${JOURNAL_PRIORITY[entry.level] ?? 6}>${body}`;
  const word = paint(color, COLORS[entry.level] ?? '0', entry.level.toUpperCase().padEnd(5));
  return `${paint(color, '2', clock(entry.time))} ${word} ${body}`;
}

/**
 * Text the CLI writes to stderr outside the log (a command that could not
 * run: usage, config, internal error), in the log's format: under journal
 * every line gets `<3>` (err) so `journalctl -p err` finds it too.
 */
export function stderrText(text: string, format: LogFormat): string {
  if (format !== 'journal') return text;
  return text.replace(/^(?=.)/gm, '<3>');
}

/** Writes one whole line to fd 2, synchronously: a cron job's last lines must not be lost on exit. */
export function writeStderrLine(line: string): void {
  let buf = Buffer.from(line.endsWith('\n') ? line : `${line}\n`);
  for (let tries = 0; buf.length > 0 && tries < 1000; tries += 1) {
    try {
      buf = buf.subarray(writeSync(2, buf));
    } catch (err) {
      // A non-blocking pipe or socket that is full: wait a moment; anything else (EPIPE): stderr is gone.
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

export interface LogOptions {
  format?: LogFormat;
  color?: boolean;
  /** Where pretty/journal lines go (default: fd 2). */
  write?: (line: string) => void;
  now?: () => Date;
}

export function createLog(level: string, options: LogOptions = {}): Log {
  const threshold = levelValue(level);
  const format = options.format ?? 'json';
  const emit = format === 'json' ? jsonEmitter(options) : lineEmitter(format, options);
  // Bindings and the entry's own fields are merged into one object, so a key is never written twice.
  const make = (bindings: Record<string, unknown>): Log => {
    const at = (method: Method) => (obj: object, msg: string) => {
      if (LEVEL_VALUES[method]! < threshold) return;
      emit(method, { ...bindings, ...obj }, msg);
    };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (more) => make({ ...bindings, ...more }) };
  };
  return make({});
}

type Emit = (method: Method, fields: Record<string, unknown>, msg: string) => void;

/**
 * JSON lines in pino's format (`{"level":40,"time":"<ISO>","pid":N,...fields,"msg":"..."}`,
 * level numbers as pino's), written by a few lines of our own rather than pino
 * itself: loading pino and its dependencies (fast-redact, sonic-boom,
 * thread-stream and worker_threads) was about a third of a no-change run's own
 * start-up cost, paid by every run that logs a single line (measured with
 * callgrind: 76 M instructions of about 245 M, README "Logs").
 */
function jsonEmitter(options: LogOptions): Emit {
  const write = options.write ?? writeStderrLine;
  const now = options.now ?? (() => new Date());
  return (method, fields, msg) => write(jsonLine(method, now(), process.pid, fields, msg));
}

/** One JSON log line (without the newline). The fixed keys come first and win: a field of the same name is renamed, never written twice. */
export function jsonLine(level: Method | 'fatal' | 'trace', time: Date, pid: number, fields: Record<string, unknown>, msg: string): string {
  let line = `{"level":${LEVEL_VALUES[level]},"time":"${time.toISOString()}","pid":${pid}`;
  for (const key of Object.keys(fields)) {
    const value = fields[key];
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue;
    const name = key === 'level' || key === 'time' || key === 'pid' || key === 'msg' ? `field_${key}` : key;
    line += `,${JSON.stringify(name)}:${jsonValue(value)}`;
  }
  return `${line},"msg":${JSON.stringify(msg)}}`;
}

/** A field value as JSON: errors as {type, message, stack} (as pino's err serializer), bigints as numbers' text, cycles as "[Circular]". */
function jsonValue(value: unknown): string {
  const seen = new WeakSet<object>();
  const text = JSON.stringify(value, function replacer(_key, v: unknown) {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Error) {
      const { name, message, stack, ...own } = v as Error & Record<string, unknown>;
      return { type: v.constructor?.name ?? name, message, stack, ...own };
    }
    if (v !== null && typeof v === 'object') {
      if (seen.has(v)) return '[Circular]';
      seen.add(v);
    }
    return v;
  });
  return text ?? 'null';
}

function lineEmitter(format: 'pretty' | 'journal', options: LogOptions): Emit {
  const write = options.write ?? writeStderrLine;
  const now = options.now ?? (() => new Date());
  const color = format === 'pretty' && options.color === true;
  return (method, fields, msg) => write(formatEntry(format, { level: method, time: now(), msg, fields }, color));
}

/** A Log that records entries in memory (for tests) or drops them. */
export function memoryLog(entries: Array<{ level: string; msg: string } & Record<string, unknown>> = []): Log {
  const at = (level: string) => (obj: object, msg: string) => void entries.push({ level, msg, ...obj });
  const log: Log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}
