/**
 * The only place that makes or parses snapshot timestamps and event file names.
 *
 * A timestamp is the source file's mtime in UTC, to the second, written so it
 * is safe in a file name and sorts lexically: 2025-02-24T23-59-00. A second,
 * different snapshot saved within the same second gets an ordinal suffix
 * `_1` ... `_9` (2025-02-24T23-59-00_1): it sorts after the plain name, both
 * as a timestamp and inside a file name ('_' sorts after '.'), and it names
 * the same instant for every calendar purpose.
 *
 * The files of one event:
 *   dump-<ts>.rdb              the snapshot (its presence makes the event complete)
 *   dump-<ts>.sha256           sha256sum -c sidecar
 *   nodes-<ts>.config          the cluster's nodes.conf (Redis Cluster only)
 *   dump-<ts>.seq<N>.json      the archive record: N is the event's archive
 *                              sequence number, in the name so that a readdir
 *                              alone knows the archive order (no file reads)
 */

export type Timestamp = string & { readonly __brand: 'Timestamp' };

export type EventFileKind = 'rdb' | 'nodes' | 'sha256' | 'meta';

/** Highest same-second ordinal: a tenth different snapshot in one second is refused (exit 73). */
export const MAX_ORDINAL = 9;

const TS_PATTERN = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})(?:_[1-9])?$/;
/** The event file names (parseEventFileName matches them without a regex). */
export const EVENT_FILE_PATTERN = /^(dump|nodes)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:_[1-9])?)\.(rdb|config|sha256|seq[1-9]\d{0,14}\.json)$/;

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
  return keyLengthAt(text, 0) === text.length && validTimestampAt(text, 0) ? (text as Timestamp) : undefined;
}

const TS_LENGTH = 19;
const ORDINAL_LENGTH = 2;

/** The length of the timestamp at text[at...]: 19, or 21 with a same-second ordinal `_1`..`_9` (shape not checked). */
function keyLengthAt(text: string, at: number): number {
  if (text.charCodeAt(at + TS_LENGTH) !== 95 /* _ */) return TS_LENGTH;
  const d = text.charCodeAt(at + TS_LENGTH + 1);
  return d >= 49 && d <= 57 ? TS_LENGTH + ORDINAL_LENGTH : -1;
}

/** The same-second ordinal of a timestamp: 0 for the plain name, 1-9 for `_1`..`_9`. */
export function ordinalOf(ts: Timestamp): number {
  return ts.length === TS_LENGTH ? 0 : ts.charCodeAt(TS_LENGTH + 1) - 48;
}

/** The timestamp of the same second with ordinal n (0 = the plain name). */
export function withOrdinal(ts: Timestamp, n: number): Timestamp {
  if (!Number.isInteger(n) || n < 0 || n > MAX_ORDINAL) throw new RangeError(`not a same-second ordinal: ${n}`);
  const base = ts.slice(0, TS_LENGTH);
  return (n === 0 ? base : `${base}_${n}`) as Timestamp;
}
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

/** The instant a timestamp names (its second; a same-second ordinal does not change it). */
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

/** A valid archive sequence number: a positive safe integer. */
export function isSeq(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 1 && n <= MAX_SEQ;
}

/** The file name of one kind of an event's files; the 'meta' record needs the event's sequence number. */
export function eventFileName(kind: EventFileKind, ts: Timestamp, seq?: number): string {
  switch (kind) {
    case 'rdb':
      return `dump-${ts}.rdb`;
    case 'nodes':
      return `nodes-${ts}.config`;
    case 'sha256':
      return `dump-${ts}.sha256`;
    case 'meta':
      if (seq === undefined || !isSeq(seq)) throw new RangeError(`an archive record needs a sequence number >= 1, not ${seq}`);
      return `dump-${ts}.seq${seq}.json`;
  }
}

export interface ParsedEventFileName {
  kind: EventFileKind;
  ts: Timestamp;
  /** For 'meta' only: the archive sequence number in the name. */
  seq?: number;
}

/** Recognises our event file names; anything else (stray files) gives undefined. */
export function parseEventFileName(name: string): ParsedEventFileName | undefined {
  // The names of EVENT_FILE_PATTERN, matched by hand (no regex captures: a scan parses every name).
  let kind: EventFileKind;
  let at: number;
  let seq: number | undefined;
  if (name.startsWith('dump-')) at = 5;
  else if (name.startsWith('nodes-')) at = 6;
  else return undefined;
  const keyLength = keyLengthAt(name, at);
  if (keyLength < 0) return undefined;
  const rest = at + keyLength;
  if (at === 6) {
    if (name.length === rest + 7 && name.endsWith('.config')) kind = 'nodes';
    else return undefined;
  } else if (name.length === rest + 4 && name.endsWith('.rdb')) {
    kind = 'rdb';
  } else if (name.length === rest + 7 && name.endsWith('.sha256')) {
    kind = 'sha256';
  } else {
    seq = seqAt(name, rest);
    if (seq === undefined) return undefined;
    kind = 'meta';
  }
  if (!validTimestampAt(name, at)) return undefined;
  const ts = name.slice(at, rest) as Timestamp;
  return seq === undefined ? { kind, ts } : { kind, ts, seq };
}

/** The highest archive sequence number a record's name can hold (15 digits). */
export const MAX_SEQ = 999_999_999_999_999;

/** The N of ".seq<N>.json" at name[at...] to the end (no leading zero, at most 15 digits), or undefined. */
function seqAt(name: string, at: number): number | undefined {
  if (!name.startsWith('.seq', at) || !name.endsWith('.json')) return undefined;
  const digits = name.length - 5 - (at + 4);
  if (digits < 1 || digits > 15 || name.charCodeAt(at + 4) === 48) return undefined;
  let n = 0;
  for (let i = at + 4; i < name.length - 5; i++) {
    const c = name.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
    n = n * 10 + (c - 48);
  }
  return n;
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
