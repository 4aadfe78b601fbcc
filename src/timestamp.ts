/**
 * The only place that makes or parses snapshot timestamps and event file names.
 *
 * A timestamp is the source file's mtime in UTC, to the second, written so it
 * is safe in a file name and sorts lexically: 2025-02-24T23-59-00.
 */

export type Timestamp = string & { readonly __brand: 'Timestamp' };

export type EventFileKind = 'rdb' | 'nodes' | 'sha256';

const TS_PATTERN = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})$/;
const EVENT_FILE_PATTERN = /^(dump|nodes)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})\.(rdb|config|sha256)$/;

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** The timestamp of an mtime (milliseconds since the epoch), truncated to the second. */
export function timestampFromMs(ms: number): Timestamp {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  if (Number.isNaN(d.getTime())) throw new RangeError(`not a valid time: ${ms}`);
  return (`${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` +
    `T${pad(d.getUTCHours())}-${pad(d.getUTCMinutes())}-${pad(d.getUTCSeconds())}`) as Timestamp;
}

/** Parses a timestamp string; returns undefined when it is not one (or not a real date). */
export function parseTimestamp(text: string): Timestamp | undefined {
  const m = TS_PATTERN.exec(text);
  if (!m) return undefined;
  const y = +m[1]!;
  const mo = +m[2]!;
  const d = +m[3]!;
  // Date.UTC rolls 2025-02-30 over into March (and reads years < 100 as 19xx):
  // such a name is not ours. The same test as formatting Date.UTC(...) back
  // and comparing, without building the string (retention parses every name).
  const valid = y >= 100 && mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth(y, mo) &&
    +m[4]! <= 23 && +m[5]! <= 59 && +m[6]! <= 59;
  return valid ? (text as Timestamp) : undefined;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

export function timestampToMs(ts: Timestamp): number {
  const m = TS_PATTERN.exec(ts)!;
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

/** ISO 8601 rendering for humans and JSON consumers: 2025-02-24T23:59:00Z. */
export function timestampToIso(ts: Timestamp): string {
  return new Date(timestampToMs(ts)).toISOString().replace('.000Z', 'Z');
}

/** Accepts either our file-name form or an ISO 8601 instant (as printed by `list`). */
export function parseUserTimestamp(text: string): Timestamp | undefined {
  const own = parseTimestamp(text);
  if (own) return own;
  const m = /^(\d{4})-(\d{2})-(\d{2})T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$/.exec(text);
  if (!m) return undefined;
  // Date.parse rolls 2025-02-30 over into March: check the calendar date is real.
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : timestampFromMs(ms);
}

export function eventFileName(kind: EventFileKind, ts: Timestamp): string {
  switch (kind) {
    case 'rdb':
      return `dump-${ts}.rdb`;
    case 'nodes':
      return `nodes-${ts}.config`;
    case 'sha256':
      return `dump-${ts}.sha256`;
  }
}

/** Recognises our event file names; anything else (stray files) gives undefined. */
export function parseEventFileName(name: string): { kind: EventFileKind; ts: Timestamp } | undefined {
  const m = EVENT_FILE_PATTERN.exec(name);
  if (!m) return undefined;
  const [, prefix, tsText, ext] = m as unknown as [string, string, string, string];
  const kind: EventFileKind | undefined =
    prefix === 'dump' && ext === 'rdb' ? 'rdb'
    : prefix === 'nodes' && ext === 'config' ? 'nodes'
    : prefix === 'dump' && ext === 'sha256' ? 'sha256'
    : undefined;
  const ts = parseTimestamp(tsText);
  return kind && ts ? { kind, ts } : undefined;
}

// ---------------------------------------------------------------------------
// Wall-clock parts of an instant in an IANA timezone, for calendar periods.

export interface ZonedParts {
  year: number;
  month: number; // 1-12
  day: number;
  hour: number;
  /** Offset from UTC in minutes at that instant (DST aware). */
  offsetMinutes: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

export function isValidTimeZone(timeZone: string): boolean {
  if (timeZone === 'UTC' || timeZone === 'Etc/UTC') return true;
  try {
    formatterFor(timeZone);
    return true;
  } catch {
    return false;
  }
}

const utcZones = new Map<string, boolean>();
/** Whether timeZone resolves to UTC ("UTC", "Etc/UTC", ...): then wall-clock parts need no Intl call. */
function isUtc(timeZone: string): boolean {
  // The default needs no Intl formatter: creating one loads ICU data, ~25 ms of a cron run.
  if (timeZone === 'UTC' || timeZone === 'Etc/UTC') return true;
  let utc = utcZones.get(timeZone);
  if (utc === undefined) {
    utc = formatterFor(timeZone).resolvedOptions().timeZone === 'UTC';
    utcZones.set(timeZone, utc);
  }
  return utc;
}

export function zonedParts(ms: number, timeZone: string): ZonedParts {
  if (isUtc(timeZone)) {
    // Same result as the Intl path below, about 20x cheaper (retention calls this per event).
    const t = new Date(ms);
    return { year: t.getUTCFullYear(), month: t.getUTCMonth() + 1, day: t.getUTCDate(), hour: t.getUTCHours(), offsetMinutes: 0 };
  }
  const parts: Record<string, number> = {};
  for (const p of formatterFor(timeZone).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  const { year, month, day, hour, minute, second } = parts as Record<string, number> & {
    year: number; month: number; day: number; hour: number; minute: number; second: number;
  };
  const asUtc = Date.UTC(year, month - 1, day, hour, minute, second);
  const offsetMinutes = Math.round((asUtc - Math.floor(ms / 1000) * 1000) / 60000);
  return { year, month, day, hour, offsetMinutes };
}
