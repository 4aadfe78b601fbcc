import { describe, expect, it } from 'vitest';
import {
  MAX_ORDINAL,
  eventFileName,
  ordinalOf,
  withOrdinal,
  isValidTimeZone,
  parseEventFileName,
  parseTimestamp,
  parseUserTimestamp,
  timestampFromMs,
  timestampToIso,
  timestampToMs,
  zonedParts,
  type Timestamp,
} from '../../src/core/timestamp.js';

const ts = (text: string): Timestamp => {
  const parsed = parseTimestamp(text);
  if (!parsed) throw new Error(`test setup: ${text} is not a timestamp`);
  return parsed;
};

describe('timestampFromMs', () => {
  it('formats an instant in UTC with dashes instead of colons', () => {
    expect(timestampFromMs(Date.UTC(2025, 1, 24, 23, 59, 0))).toBe('2025-02-24T23-59-00');
  });

  it('truncates to the second (never rounds up)', () => {
    const base = Date.UTC(2025, 1, 24, 23, 59, 0);
    expect(timestampFromMs(base + 999)).toBe('2025-02-24T23-59-00');
    expect(timestampFromMs(base + 999.9)).toBe('2025-02-24T23-59-00');
    expect(timestampFromMs(base + 1000)).toBe('2025-02-24T23-59-01');
    // the last millisecond of a year stays in that year
    expect(timestampFromMs(Date.UTC(2025, 0, 1) - 1)).toBe('2024-12-31T23-59-59');
  });

  it('truncates toward the earlier second before the epoch too', () => {
    expect(timestampFromMs(-1)).toBe('1969-12-31T23-59-59');
    expect(timestampFromMs(0)).toBe('1970-01-01T00-00-00');
  });

  it('zero-pads every field', () => {
    expect(timestampFromMs(Date.UTC(2025, 0, 2, 3, 4, 5))).toBe('2025-01-02T03-04-05');
  });

  it('is UTC whatever the process timezone', () => {
    // 2025-07-01T00:30:00+02:00 is June 30 22:30 UTC
    expect(timestampFromMs(Date.parse('2025-07-01T00:30:00+02:00'))).toBe('2025-06-30T22-30-00');
  });

  it('sorts lexically in time order', () => {
    const times = [Date.UTC(2025, 9, 1), Date.UTC(2025, 1, 24, 9), Date.UTC(2024, 11, 31, 23, 59, 59), Date.UTC(2025, 1, 24, 10)];
    const byText = times.map(timestampFromMs).sort();
    const byTime = [...times].sort((a, b) => a - b).map(timestampFromMs);
    expect(byText).toEqual(byTime);
  });

  it('throws RangeError for values that are not a time', () => {
    expect(() => timestampFromMs(Number.NaN)).toThrow(RangeError);
    expect(() => timestampFromMs(Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(() => timestampFromMs(8.64e15 + 1000)).toThrow(RangeError);
  });
});

describe('parseTimestamp', () => {
  it('accepts a well-formed timestamp and round-trips through ms', () => {
    const t = parseTimestamp('2025-02-24T23-59-00');
    expect(t).toBe('2025-02-24T23-59-00');
    expect(timestampToMs(t!)).toBe(Date.UTC(2025, 1, 24, 23, 59, 0));
    expect(timestampFromMs(timestampToMs(t!))).toBe(t);
    expect(timestampToIso(t!)).toBe('2025-02-24T23:59:00Z');
  });

  it('round-trips many instants', () => {
    for (let ms = Date.UTC(2020, 0, 1); ms < Date.UTC(2030, 0, 1); ms += 86_400_000 * 37 + 3_723_000) {
      const t = timestampFromMs(ms);
      expect(parseTimestamp(t)).toBe(t);
      expect(timestampToMs(parseTimestamp(t)!)).toBe(Math.floor(ms / 1000) * 1000);
    }
  });

  it('accepts Feb 29 in a leap year only', () => {
    expect(parseTimestamp('2024-02-29T12-00-00')).toBe('2024-02-29T12-00-00');
    expect(parseTimestamp('2025-02-29T12-00-00')).toBeUndefined();
  });

  it.each([
    ['2025-02-30T00-00-00', 'Feb 30 does not exist'],
    ['2025-04-31T00-00-00', 'April has 30 days'],
    ['2025-13-01T00-00-00', 'month 13'],
    ['2025-00-10T00-00-00', 'month 0'],
    ['2025-01-00T00-00-00', 'day 0'],
    ['2025-02-24T24-00-00', 'hour 24'],
    ['2025-02-24T23-60-00', 'minute 60'],
    ['2025-02-24T23-59-60', 'second 60'],
  ])('rejects %s (%s)', (text) => {
    expect(parseTimestamp(text)).toBeUndefined();
  });

  it.each([
    '2025-02-24T23:59:00',
    '2025-02-24 23-59-00',
    '2025-02-24t23-59-00',
    '2025_02_24T23-59-00',
    '2025-02-24T23-59-00Z',
    '2025-02-24T23-59-00.000',
    '2025-2-24T23-59-00',
    '25-02-24T23-59-00',
    ' 2025-02-24T23-59-00',
    '2025-02-24T23-59-00\n',
    '2025-02-24T23-59',
    '',
  ])('rejects the wrongly formatted %j', (text) => {
    expect(parseTimestamp(text)).toBeUndefined();
  });
});

describe('eventFileName / parseEventFileName', () => {
  const t = ts('2025-02-24T23-59-00');

  it('names the three kinds', () => {
    expect(eventFileName('rdb', t)).toBe('dump-2025-02-24T23-59-00.rdb');
    expect(eventFileName('nodes', t)).toBe('nodes-2025-02-24T23-59-00.config');
    expect(eventFileName('sha256', t)).toBe('dump-2025-02-24T23-59-00.sha256');
  });

  it('parses back every kind it makes', () => {
    for (const kind of ['rdb', 'nodes', 'sha256'] as const) {
      expect(parseEventFileName(eventFileName(kind, t))).toEqual({ kind, ts: '2025-02-24T23-59-00' });
    }
  });

  it.each([
    'dump-2025-02-24T23-59-00.rdb.bak',
    'dump-2025-02-24T23-59-00.rdb~',
    'nodes-2025-02-24T23-59-00.rdb',
    'nodes-2025-02-24T23-59-00.sha256',
    'dump-2025-02-24T23-59-00.config',
    'Dump-2025-02-24T23-59-00.rdb',
    'dump-2025-02-24T23-59-00.RDB',
    'xdump-2025-02-24T23-59-00.rdb',
    'dump-2025-02-24T23-59-00x.rdb',
    'dump-2025-02-24T23-59-00Z.rdb',
    'dump--2025-02-24T23-59-00.rdb',
    'dump-2025-02-24T23:59:00.rdb',
    'dump-2025-02-30T23-59-00.rdb',
    'dump-2025-02-24T24-00-00.rdb',
    'dump-2025-02-24T23-59-00.rdb\n',
    'dump.rdb',
    'temp-1234.rdb',
    'dump-.rdb',
    '.dump-2025-02-24T23-59-00.rdb',
    'dump-2025-02-24T23-59-00',
  ])('does not recognise the near-miss %j', (name) => {
    expect(parseEventFileName(name)).toBeUndefined();
  });
});

describe('same-second ordinals and archive records (issue 10)', () => {
  const t = ts('2025-02-24T23-59-00');

  it('an ordinal _1.._9 names the same instant and sorts after the plain name, as a timestamp and in file names', () => {
    const one = withOrdinal(t, 1);
    expect(one).toBe('2025-02-24T23-59-00_1');
    expect(parseTimestamp(one)).toBe(one);
    expect(ordinalOf(one)).toBe(1);
    expect(ordinalOf(t)).toBe(0);
    expect(withOrdinal(one, 0)).toBe(t);
    expect(timestampToMs(one)).toBe(timestampToMs(t));
    const names = [withOrdinal(t, 2), t, one, ts('2025-02-24T23-59-01')];
    expect([...names].sort()).toEqual([t, one, withOrdinal(t, 2), '2025-02-24T23-59-01']);
    for (const kind of ['rdb', 'sha256', 'nodes'] as const) {
      expect(eventFileName(kind, t) < eventFileName(kind, one)).toBe(true);
      expect(parseEventFileName(eventFileName(kind, one))).toEqual({ kind, ts: one });
    }
    expect(() => withOrdinal(t, MAX_ORDINAL + 1)).toThrow(RangeError);
    expect(parseUserTimestamp('2025-02-24T23-59-00_3')).toBe('2025-02-24T23-59-00_3');
  });

  it('names and parses the archive record with its sequence number', () => {
    expect(eventFileName('meta', t, 42)).toBe('dump-2025-02-24T23-59-00.seq42.json');
    expect(parseEventFileName('dump-2025-02-24T23-59-00.seq42.json')).toEqual({ kind: 'meta', ts: t, seq: 42 });
    expect(parseEventFileName('dump-2025-02-24T23-59-00_1.seq7.json')).toEqual({ kind: 'meta', ts: withOrdinal(t, 1), seq: 7 });
    expect(() => eventFileName('meta', t)).toThrow(RangeError);
    expect(() => eventFileName('meta', t, 0)).toThrow(RangeError);
  });

  it.each([
    'dump-2025-02-24T23-59-00_0.rdb',
    'dump-2025-02-24T23-59-00_10.rdb',
    'dump-2025-02-24T23-59-00_.rdb',
    'dump-2025-02-24T23-59-00-1.rdb',
    'dump-2025-02-24T23-59-00.seq0.json',
    'dump-2025-02-24T23-59-00.seq01.json',
    'dump-2025-02-24T23-59-00.seq.json',
    'dump-2025-02-24T23-59-00.seq1x.json',
    'dump-2025-02-24T23-59-00.seq1234567890123456.json',
    'dump-2025-02-24T23-59-00.json',
    'nodes-2025-02-24T23-59-00.seq1.json',
    'dump-2025-02-30T23-59-00.seq1.json',
  ])('does not recognise the near-miss %j', (name) => {
    expect(parseEventFileName(name)).toBeUndefined();
  });
});

describe('parseUserTimestamp', () => {
  it('accepts our own file-name form', () => {
    expect(parseUserTimestamp('2025-02-24T23-59-00')).toBe('2025-02-24T23-59-00');
  });

  it('accepts ISO 8601 with Z', () => {
    expect(parseUserTimestamp('2025-02-24T23:59:00Z')).toBe('2025-02-24T23-59-00');
  });

  it('converts offsets to UTC', () => {
    expect(parseUserTimestamp('2025-02-25T00:59:00+01:00')).toBe('2025-02-24T23-59-00');
    expect(parseUserTimestamp('2025-02-24T18:29:00-05:30')).toBe('2025-02-24T23-59-00');
    expect(parseUserTimestamp('2025-02-25T00:59:00+0100')).toBe('2025-02-24T23-59-00');
    expect(parseUserTimestamp('2025-01-01T01:00:00+02:00')).toBe('2024-12-31T23-00-00');
  });

  it('truncates fractional seconds', () => {
    expect(parseUserTimestamp('2025-02-24T23:59:00.999Z')).toBe('2025-02-24T23-59-00');
  });

  it('round-trips timestampToIso output', () => {
    const t = ts('2025-10-26T01-30-15');
    expect(parseUserTimestamp(timestampToIso(t))).toBe(t);
  });

  it.each([
    '2025-02-24T23:59:00', // no zone: ambiguous
    '2025-02-24 23:59:00Z',
    '2025-02-24',
    'yesterday',
    '1740441540000',
    '2025-02-24T23:59Z',
    '2025-13-01T00:00:00Z',
    '2025-02-24T23:59:60Z',
    '',
  ])('rejects %j', (text) => {
    expect(parseUserTimestamp(text)).toBeUndefined();
  });

  // impossible calendar dates over instead of rejecting them: "2025-02-30T00:00:00Z" gives
  // 2025-03-02T00-00-00, while parseTimestamp rejects the same date in file-name form.
  it('rejects an impossible calendar date in ISO form, like parseTimestamp does', () => {
    expect(parseTimestamp('2025-02-30T00-00-00')).toBeUndefined();
    expect(parseUserTimestamp('2025-02-30T00:00:00Z')).toBeUndefined();
  });
});

describe('zonedParts', () => {
  it('is the identity in UTC', () => {
    expect(zonedParts(Date.UTC(2025, 1, 24, 23, 59, 30), 'UTC')).toEqual({ year: 2025, month: 2, day: 24, hour: 23, offsetMinutes: 0 });
  });

  it('Europe/Berlin is +01:00 in winter and +02:00 in summer', () => {
    expect(zonedParts(Date.UTC(2025, 0, 15, 12, 0, 0), 'Europe/Berlin')).toEqual({ year: 2025, month: 1, day: 15, hour: 13, offsetMinutes: 60 });
    expect(zonedParts(Date.UTC(2025, 6, 15, 12, 0, 0), 'Europe/Berlin')).toEqual({ year: 2025, month: 7, day: 15, hour: 14, offsetMinutes: 120 });
  });

  it('Europe/Berlin: the local date is the next day late in the UTC evening', () => {
    expect(zonedParts(Date.parse('2025-06-30T22:30:00Z'), 'Europe/Berlin')).toEqual({ year: 2025, month: 7, day: 1, hour: 0, offsetMinutes: 120 });
    expect(zonedParts(Date.parse('2024-12-31T23:30:00Z'), 'Europe/Berlin')).toEqual({ year: 2025, month: 1, day: 1, hour: 0, offsetMinutes: 60 });
  });

  it('Europe/Berlin fall-back: the repeated 02:xx hour has two offsets', () => {
    // 2025-10-26 03:00 CEST -> 02:00 CET at 01:00 UTC
    expect(zonedParts(Date.parse('2025-10-26T00:30:00Z'), 'Europe/Berlin')).toEqual({ year: 2025, month: 10, day: 26, hour: 2, offsetMinutes: 120 });
    expect(zonedParts(Date.parse('2025-10-26T01:30:00Z'), 'Europe/Berlin')).toEqual({ year: 2025, month: 10, day: 26, hour: 2, offsetMinutes: 60 });
  });

  it('America/New_York spring-forward (2025-03-09 02:00 EST -> 03:00 EDT)', () => {
    expect(zonedParts(Date.parse('2025-03-09T06:59:59Z'), 'America/New_York')).toEqual({ year: 2025, month: 3, day: 9, hour: 1, offsetMinutes: -300 });
    expect(zonedParts(Date.parse('2025-03-09T07:00:00Z'), 'America/New_York')).toEqual({ year: 2025, month: 3, day: 9, hour: 3, offsetMinutes: -240 });
  });

  it('America/New_York fall-back (2025-11-02 02:00 EDT -> 01:00 EST)', () => {
    expect(zonedParts(Date.parse('2025-11-02T05:30:00Z'), 'America/New_York')).toEqual({ year: 2025, month: 11, day: 2, hour: 1, offsetMinutes: -240 });
    expect(zonedParts(Date.parse('2025-11-02T06:30:00Z'), 'America/New_York')).toEqual({ year: 2025, month: 11, day: 2, hour: 1, offsetMinutes: -300 });
  });

  it('uses hour 0 at midnight, never 24', () => {
    expect(zonedParts(Date.UTC(2025, 1, 24, 0, 0, 0), 'UTC').hour).toBe(0);
    expect(zonedParts(Date.parse('2025-02-24T23:00:00Z'), 'Europe/Berlin')).toEqual({ year: 2025, month: 2, day: 25, hour: 0, offsetMinutes: 60 });
  });

  it('handles non-whole-hour offsets (Asia/Kolkata +05:30, Asia/Kathmandu +05:45)', () => {
    expect(zonedParts(Date.UTC(2025, 0, 1, 0, 0, 0), 'Asia/Kolkata')).toEqual({ year: 2025, month: 1, day: 1, hour: 5, offsetMinutes: 330 });
    expect(zonedParts(Date.UTC(2025, 0, 1, 0, 0, 0), 'Asia/Kathmandu')).toEqual({ year: 2025, month: 1, day: 1, hour: 5, offsetMinutes: 345 });
  });

  it('gives a whole-minute offset for instants with milliseconds', () => {
    expect(zonedParts(Date.UTC(2025, 6, 1, 12, 0, 0) + 999, 'Europe/Berlin').offsetMinutes).toBe(120);
  });
});

describe('isValidTimeZone', () => {
  it.each(['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata'])('accepts %s', (tz) => {
    expect(isValidTimeZone(tz)).toBe(true);
  });

  it.each(['Mars/Olympus', 'Europe/Berlinn', 'not a zone', ''])('rejects %j', (tz) => {
    expect(isValidTimeZone(tz)).toBe(false);
  });
});
