/**
 * The only place that makes or parses snapshot timestamps and event file names.
 *
 * A timestamp is the source file's mtime in UTC, to the second, written so it
 * is safe in a file name and sorts lexically: 2025-02-24T23-59-00.
 */

export type Timestamp = string & { readonly __brand: 'Timestamp' };

export type EventFileKind = 'rdb' | 'nodes' | 'sha256';

const TS_PATTERN = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})$/;
/** The event file names (parseEventFileName matches them without a regex). */
export const EVENT_FILE_PATTERN = /^(dump|nodes)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})\.(rdb|config|sha256)$/;

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
  return text.length === TS_LENGTH && validTimestampAt(text, 0) ? (text as Timestamp) : undefined;
}

const TS_LENGTH = 19;
/** Separator of each position of YYYY-MM-DDTHH-MM-SS; 0 = a digit. */
const TS_SHAPE = [0, 0, 0, 0, 45, 0, 0, 45, 0, 0, 84, 0, 0, 45, 0, 0, 45, 0, 0];

/** The two (or four) decimal digits at text[at...], which must be ASCII digits. */
const digits2 = (text: string, at: number) => (text.charCodeAt(at) - 48) * 10 + text.charCodeAt(at + 1) - 48;
const digits4 = (text: string, at: number) => digits2(text, at) * 100 + digits2(text, at + 2);

/**
 * Whether text[at, at + 19) is a timestamp of a real instant: the shape of
 * TS_PATTERN, and the fields Date.UTC would not roll over (2025-02-30 is March;
 * years < 100 read as 19xx): such a name is not ours. Exactly the test "format
 * Date.UTC(fields) back and compare", without regex captures or the string
 * (retention parses every file name of a folder).
 */
function validTimestampAt(text: string, at: number): boolean {
  for (let i = 0; i < TS_LENGTH; i++) {
    const c = text.charCodeAt(at + i);
    const shape = TS_SHAPE[i]!;
    if (shape === 0 ? c < 48 || c > 57 : c !== shape) return false;
  }
  const y = digits4(text, at);
  const mo = digits2(text, at + 5);
  const d = digits2(text, at + 8);
  return y >= 100 && mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth(y, mo) &&
    digits2(text, at + 11) <= 23 && digits2(text, at + 14) <= 59 && digits2(text, at + 17) <= 59;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

export function timestampToMs(ts: Timestamp): number {
  if (!TS_PATTERN.test(ts)) throw new RangeError(`not a timestamp: ${ts}`);
  return Date.UTC(digits4(ts, 0), digits2(ts, 5) - 1, digits2(ts, 8), digits2(ts, 11), digits2(ts, 14), digits2(ts, 17));
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
  // The names of EVENT_FILE_PATTERN, matched by hand (no regex captures: a scan parses every name).
  let kind: EventFileKind;
  let at: number;
  if (name.startsWith('dump-')) {
    at = 5;
    if (name.length === at + TS_LENGTH + 4 && name.endsWith('.rdb')) kind = 'rdb';
    else if (name.length === at + TS_LENGTH + 7 && name.endsWith('.sha256')) kind = 'sha256';
    else return undefined;
  } else if (name.startsWith('nodes-')) {
    at = 6;
    if (name.length === at + TS_LENGTH + 7 && name.endsWith('.config')) kind = 'nodes';
    else return undefined;
  } else {
    return undefined;
  }
  return validTimestampAt(name, at) ? { kind, ts: name.slice(at, at + TS_LENGTH) as Timestamp } : undefined;
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
export function isUtc(timeZone: string): boolean {
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
