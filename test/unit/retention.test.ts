import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Every, Rule } from '../../src/core/config.js';
import { FsError } from '../../src/core/errors.js';
import { OSFS } from '../../src/core/fs.js';
import { applyPlan, effectiveTimes, periodKey, planRetention, scanFolder, type FolderEvent, type RetentionPlan } from '../../src/pipeline/retention.js';
import { eventFileName, parseTimestamp, timestampFromMs, type EventFileKind, type Timestamp } from '../../src/core/timestamp.js';
import { prng } from '../helpers/rdb-builder.js';

// ---------------------------------------------------------------------------
// helpers

/** A timestamp from an ISO instant, e.g. '2025-02-24T23:59:00Z'. */
function t(iso: string): Timestamp {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new Error(`test setup: bad instant ${iso}`);
  return timestampFromMs(ms);
}

function ev(iso: string, kinds: EventFileKind[] = ['rdb', 'sha256']): FolderEvent {
  return { ts: t(iso), kinds };
}

const snapshot: Every = { kind: 'snapshot' };
const cal = (unit: 'hour' | 'day' | 'week' | 'month' | 'year'): Every => ({ kind: 'calendar', unit });
const dur = (text: string, ms: number): Every => ({ kind: 'duration', ms, text });
const rule = (every: Every, count: number): Pick<Rule, 'every' | 'count'> => ({ every, count });

const keptTs = (plan: RetentionPlan) => plan.keep.map((d) => d.ts).sort();
const deletedTs = (plan: RetentionPlan) => plan.delete.map((d) => d.ts).sort();
const isoSorted = (...isos: string[]) => isos.map(t).sort();

function shuffle<T>(items: readonly T[], rand: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Checks the invariants every plan must satisfy. */
function expectWellFormed(events: readonly FolderEvent[], plan: RetentionPlan): void {
  const all = [...plan.keep, ...plan.delete];
  for (const d of all) {
    expect(typeof d.reason).toBe('string');
    expect(d.reason.trim().length).toBeGreaterThan(0);
  }
  // keep + delete is a partition of the input
  expect(all.map((d) => d.ts).sort()).toEqual(events.map((e) => e.ts).sort());
  const keep = new Set(plan.keep.map((d) => d.ts));
  for (const d of plan.delete) expect(keep.has(d.ts)).toBe(false);
  // the newest complete event is kept
  const complete = events.filter((e) => e.kinds.includes('rdb')).map((e) => e.ts).sort();
  if (complete.length > 0) expect(keep.has(complete[complete.length - 1]!)).toBe(true);
  // incomplete events are never kept
  for (const e of events) if (!e.kinds.includes('rdb')) expect(keep.has(e.ts)).toBe(false);
}

// ---------------------------------------------------------------------------
// periodKey

describe('periodKey', () => {
  it('snapshot: every event is its own period', () => {
    expect(periodKey(t('2025-02-24T23:59:00Z'), snapshot, 'UTC')).toBe('2025-02-24T23-59-00');
    expect(periodKey(t('2025-02-24T23:59:01Z'), snapshot, 'UTC')).not.toBe(periodKey(t('2025-02-24T23:59:00Z'), snapshot, 'UTC'));
  });

  it('calendar periods in UTC', () => {
    const ts = t('2025-02-24T23:59:00Z');
    expect(periodKey(ts, cal('hour'), 'UTC')).toBe('2025-02-24 23:00 +00:00');
    expect(periodKey(ts, cal('day'), 'UTC')).toBe('2025-02-24');
    expect(periodKey(ts, cal('week'), 'UTC')).toBe('2025-W09');
    expect(periodKey(ts, cal('month'), 'UTC')).toBe('2025-02');
    expect(periodKey(ts, cal('year'), 'UTC')).toBe('2025');
  });

  it('ISO weeks are keyed by ISO year + week across New Year', () => {
    const week = (iso: string) => periodKey(t(iso), cal('week'), 'UTC');
    // Monday 2024-12-30 belongs to 2025-W01, together with Thursday 2025-01-02
    expect(week('2024-12-30T08:00:00Z')).toBe('2025-W01');
    expect(week('2025-01-02T08:00:00Z')).toBe('2025-W01');
    expect(week('2025-01-05T23:59:59Z')).toBe('2025-W01');
    // Sunday 2024-12-29 is still in 2024-W52
    expect(week('2024-12-29T23:59:59Z')).toBe('2024-W52');
    // Sunday 2021-01-03 belongs to 2020-W53
    expect(week('2021-01-03T12:00:00Z')).toBe('2020-W53');
    expect(week('2020-12-31T12:00:00Z')).toBe('2020-W53');
    expect(week('2021-01-04T00:00:00Z')).toBe('2021-W01');
    // Friday 2027-01-01 is in 2026-W53; Thursday 2026-01-01 is in 2026-W01
    expect(week('2027-01-01T12:00:00Z')).toBe('2026-W53');
    expect(week('2026-01-01T12:00:00Z')).toBe('2026-W01');
    // Monday starts the week
    expect(week('2025-02-23T23:59:59Z')).toBe('2025-W08');
    expect(week('2025-02-24T00:00:00Z')).toBe('2025-W09');
  });

  it('weeks follow the local date in the rule timezone', () => {
    // Sunday 23:30 UTC is Monday 00:30 in Berlin
    expect(periodKey(t('2025-01-05T23:30:00Z'), cal('week'), 'UTC')).toBe('2025-W01');
    expect(periodKey(t('2025-01-05T23:30:00Z'), cal('week'), 'Europe/Berlin')).toBe('2025-W02');
  });

  it('Europe/Berlin fall-back: the two UTC hours mapping to local 02:xx are distinct hour periods', () => {
    const first = periodKey(t('2025-10-26T00:30:00Z'), cal('hour'), 'Europe/Berlin');
    const second = periodKey(t('2025-10-26T01:30:00Z'), cal('hour'), 'Europe/Berlin');
    expect(first).toBe('2025-10-26 02:00 +02:00');
    expect(second).toBe('2025-10-26 02:00 +01:00');
    // inside one of them, events share the period
    expect(periodKey(t('2025-10-26T00:05:00Z'), cal('hour'), 'Europe/Berlin')).toBe(first);
    expect(periodKey(t('2025-10-26T01:55:00Z'), cal('hour'), 'Europe/Berlin')).toBe(second);
    // and the day is the same local day for both
    expect(periodKey(t('2025-10-26T00:30:00Z'), cal('day'), 'Europe/Berlin')).toBe('2025-10-26');
    expect(periodKey(t('2025-10-26T01:30:00Z'), cal('day'), 'Europe/Berlin')).toBe('2025-10-26');
  });

  it('Europe/Berlin spring-forward: 01:xx CET and 03:xx CEST are consecutive hours', () => {
    expect(periodKey(t('2025-03-30T00:30:00Z'), cal('hour'), 'Europe/Berlin')).toBe('2025-03-30 01:00 +01:00');
    expect(periodKey(t('2025-03-30T01:30:00Z'), cal('hour'), 'Europe/Berlin')).toBe('2025-03-30 03:00 +02:00');
  });

  it('days, months and years follow the local date, not the UTC date', () => {
    expect(periodKey(t('2025-06-30T22:30:00Z'), cal('day'), 'Europe/Berlin')).toBe('2025-07-01');
    expect(periodKey(t('2025-06-30T22:30:00Z'), cal('day'), 'UTC')).toBe('2025-06-30');
    expect(periodKey(t('2025-06-30T22:30:00Z'), cal('month'), 'Europe/Berlin')).toBe('2025-07');
    expect(periodKey(t('2024-12-31T23:30:00Z'), cal('year'), 'Europe/Berlin')).toBe('2025');
    expect(periodKey(t('2024-12-31T23:30:00Z'), cal('year'), 'UTC')).toBe('2024');
    expect(periodKey(t('2025-01-01T03:00:00Z'), cal('day'), 'America/New_York')).toBe('2024-12-31');
  });

  it('duration periods are aligned to the epoch, in UTC, whatever the timezone', () => {
    const six = dur('6h', 6 * 3_600_000);
    expect(periodKey(t('2025-02-24T05:59:59Z'), six, 'UTC')).toBe('6h from 2025-02-24T00:00:00Z');
    expect(periodKey(t('2025-02-24T06:00:00Z'), six, 'UTC')).toBe('6h from 2025-02-24T06:00:00Z');
    expect(periodKey(t('2025-02-24T05:59:59Z'), six, 'Europe/Berlin')).toBe('6h from 2025-02-24T00:00:00Z');
    const quarter = dur('15m', 900_000);
    expect(periodKey(t('2025-02-24T10:14:59Z'), quarter, 'UTC')).toBe('15m from 2025-02-24T10:00:00Z');
    expect(periodKey(t('2025-02-24T10:15:00Z'), quarter, 'UTC')).toBe('15m from 2025-02-24T10:15:00Z');
  });
});

// ---------------------------------------------------------------------------
// planRetention

describe('planRetention: every: snapshot', () => {
  const events = [
    ev('2025-02-24T10:00:00Z'),
    ev('2025-02-24T11:00:00Z'),
    ev('2025-02-24T12:00:00Z'),
    ev('2025-02-24T13:00:00Z'),
    ev('2025-02-24T14:00:00Z'),
    ev('2025-02-24T15:00:00Z'),
  ];

  it('keeps exactly the newest N', () => {
    const plan = planRetention(events, rule(snapshot, 3), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-24T13:00:00Z', '2025-02-24T14:00:00Z', '2025-02-24T15:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-24T10:00:00Z', '2025-02-24T11:00:00Z', '2025-02-24T12:00:00Z'));
    expectWellFormed(events, plan);
  });

  it('count 1 keeps only the newest', () => {
    const plan = planRetention(events, rule(snapshot, 1), 'UTC');
    expect(plan.keep).toEqual([{ ts: t('2025-02-24T15:00:00Z'), reason: expect.stringContaining('most recently archived') }]);
    expect(plan.delete).toHaveLength(5);
  });

  it('keeps everything when count exceeds the events', () => {
    const plan = planRetention(events, rule(snapshot, 100), 'UTC');
    expect(plan.keep).toHaveLength(6);
    expect(plan.delete).toEqual([]);
  });

  it('gives a reason that names the count', () => {
    const plan = planRetention(events, rule(snapshot, 3), 'UTC');
    const byTs = new Map([...plan.keep, ...plan.delete].map((d) => [d.ts, d.reason]));
    expect(byTs.get(t('2025-02-24T14:00:00Z'))).toBe('snapshot 2 of 3');
    expect(byTs.get(t('2025-02-24T12:00:00Z'))).toBe('older than the 3 most recently archived snapshots');
  });

  it('plans an empty folder as nothing', () => {
    expect(planRetention([], rule(snapshot, 3), 'UTC')).toEqual({ keep: [], delete: [] });
  });

  it('orders decisions newest first', () => {
    const plan = planRetention(shuffle(events, prng(7)), rule(snapshot, 3), 'UTC');
    expect(plan.keep.map((d) => d.ts)).toEqual([t('2025-02-24T15:00:00Z'), t('2025-02-24T14:00:00Z'), t('2025-02-24T13:00:00Z')]);
    expect(plan.delete.map((d) => d.ts)).toEqual([t('2025-02-24T12:00:00Z'), t('2025-02-24T11:00:00Z'), t('2025-02-24T10:00:00Z')]);
  });
});

describe('planRetention: calendar periods', () => {
  it('hour: keeps the newest event of each of the N most recent hours', () => {
    const events = [
      ev('2025-02-24T08:10:00Z'),
      ev('2025-02-24T08:50:00Z'),
      ev('2025-02-24T09:05:00Z'),
      ev('2025-02-24T09:55:00Z'),
      ev('2025-02-24T10:00:00Z'),
      ev('2025-02-24T10:30:00Z'),
      ev('2025-02-24T11:59:59Z'),
      ev('2025-02-24T11:00:00Z'),
    ];
    const plan = planRetention(events, rule(cal('hour'), 3), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-24T09:55:00Z', '2025-02-24T10:30:00Z', '2025-02-24T11:59:59Z'));
    expect(deletedTs(plan)).toHaveLength(5);
    expectWellFormed(events, plan);
  });

  it('day: keeps the newest per day, not the oldest', () => {
    const events = [
      ev('2025-02-22T01:00:00Z'),
      ev('2025-02-22T23:00:00Z'),
      ev('2025-02-23T00:00:00Z'),
      ev('2025-02-23T12:00:00Z'),
      ev('2025-02-23T23:59:59Z'),
      ev('2025-02-24T00:00:01Z'),
    ];
    const plan = planRetention(events, rule(cal('day'), 5), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-22T23:00:00Z', '2025-02-23T23:59:59Z', '2025-02-24T00:00:01Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-22T01:00:00Z', '2025-02-23T00:00:00Z', '2025-02-23T12:00:00Z'));
    const reason = plan.delete.find((d) => d.ts === t('2025-02-23T00:00:00Z'))!.reason;
    expect(reason).toContain('2025-02-23');
    expect(reason).toContain(t('2025-02-23T23:59:59Z'));
  });

  it('day: count limits the number of days', () => {
    const events = Array.from({ length: 10 }, (_, i) => ev(`2025-03-${String(i + 1).padStart(2, '0')}T12:00:00Z`));
    const plan = planRetention(events, rule(cal('day'), 4), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-03-07T12:00:00Z', '2025-03-08T12:00:00Z', '2025-03-09T12:00:00Z', '2025-03-10T12:00:00Z'));
    expect(plan.delete).toHaveLength(6);
    for (const d of plan.delete) expect(d.reason).toBe('older than the 4 most recent day periods that have events');
  });

  it('periods without events do not use up the count', () => {
    const events = [ev('2025-01-01T12:00:00Z'), ev('2025-03-15T12:00:00Z'), ev('2025-03-16T12:00:00Z')];
    const plan = planRetention(events, rule(cal('day'), 3), 'UTC');
    expect(plan.keep).toHaveLength(3);
    expect(plan.delete).toEqual([]);
  });

  it('week: counts ISO weeks', () => {
    const events = [
      ev('2025-02-03T09:00:00Z'), // W06 Mon
      ev('2025-02-09T20:00:00Z'), // W06 Sun
      ev('2025-02-10T09:00:00Z'), // W07 Mon
      ev('2025-02-12T09:00:00Z'), // W07 Wed
      ev('2025-02-17T09:00:00Z'), // W08 Mon
      ev('2025-02-24T09:00:00Z'), // W09 Mon
    ];
    const plan = planRetention(events, rule(cal('week'), 3), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-12T09:00:00Z', '2025-02-17T09:00:00Z', '2025-02-24T09:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-03T09:00:00Z', '2025-02-09T20:00:00Z', '2025-02-10T09:00:00Z'));
  });

  it('week: 2024-12-30 and 2025-01-02 share ISO week 2025-W01; the newest of them is kept', () => {
    const events = [ev('2024-12-27T12:00:00Z'), ev('2024-12-30T12:00:00Z'), ev('2025-01-02T12:00:00Z')];
    const plan = planRetention(events, rule(cal('week'), 2), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2024-12-27T12:00:00Z', '2025-01-02T12:00:00Z'));
    expect(plan.delete).toEqual([{ ts: t('2024-12-30T12:00:00Z'), reason: expect.stringContaining('2025-W01') }]);
  });

  it('week: 2021-01-03 falls in 2020-W53 with 2020-12-31, not in a week of 2021', () => {
    const events = [ev('2020-12-28T12:00:00Z'), ev('2020-12-31T12:00:00Z'), ev('2021-01-03T12:00:00Z'), ev('2021-01-04T12:00:00Z')];
    const plan = planRetention(events, rule(cal('week'), 5), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2021-01-03T12:00:00Z', '2021-01-04T12:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2020-12-28T12:00:00Z', '2020-12-31T12:00:00Z'));
  });

  it('month: keeps the newest of each month', () => {
    const events = [
      ev('2024-11-30T12:00:00Z'),
      ev('2024-12-01T00:00:00Z'),
      ev('2024-12-31T23:59:59Z'),
      ev('2025-01-01T00:00:00Z'),
      ev('2025-01-15T00:00:00Z'),
      ev('2025-02-01T00:00:00Z'),
    ];
    const plan = planRetention(events, rule(cal('month'), 3), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2024-12-31T23:59:59Z', '2025-01-15T00:00:00Z', '2025-02-01T00:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2024-11-30T12:00:00Z', '2024-12-01T00:00:00Z', '2025-01-01T00:00:00Z'));
  });

  it('year: keeps the newest of each year for count years', () => {
    const events = [
      ev('2021-06-01T00:00:00Z'),
      ev('2022-01-01T00:00:00Z'),
      ev('2022-12-31T23:59:59Z'),
      ev('2023-07-01T00:00:00Z'),
      ev('2024-02-29T00:00:00Z'),
      ev('2024-03-01T00:00:00Z'),
    ];
    const plan = planRetention(events, rule(cal('year'), 2), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2023-07-01T00:00:00Z', '2024-03-01T00:00:00Z'));
    expect(plan.delete).toHaveLength(4);
  });
});

describe('planRetention: timezones and DST (Europe/Berlin)', () => {
  it('fall-back: the two UTC hours that are both local 02:xx are kept as two hours', () => {
    const events = [ev('2025-10-26T00:10:00Z'), ev('2025-10-26T00:40:00Z'), ev('2025-10-26T01:10:00Z'), ev('2025-10-26T01:40:00Z')];
    const plan = planRetention(events, rule(cal('hour'), 10), 'Europe/Berlin');
    expect(keptTs(plan)).toEqual(isoSorted('2025-10-26T00:40:00Z', '2025-10-26T01:40:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-10-26T00:10:00Z', '2025-10-26T01:10:00Z'));
  });

  it('the day follows the local date: 2025-06-30T22:30Z is July 1 in Berlin', () => {
    const events = [ev('2025-06-30T21:30:00Z'), ev('2025-06-30T22:30:00Z')];
    // Berlin: June 30 23:30 and July 1 00:30 are two days
    const berlin = planRetention(events, rule(cal('day'), 10), 'Europe/Berlin');
    expect(berlin.keep).toHaveLength(2);
    expect(berlin.delete).toEqual([]);
    // UTC: both are June 30, so the older one goes
    const utc = planRetention(events, rule(cal('day'), 10), 'UTC');
    expect(keptTs(utc)).toEqual([t('2025-06-30T22:30:00Z')]);
    expect(deletedTs(utc)).toEqual([t('2025-06-30T21:30:00Z')]);
  });

  it('the local day of an event late on the UTC day joins the next local day', () => {
    // 2025-06-30T22:30Z (July 1 local) and 2025-07-01T10:00Z share a Berlin day; the newer wins
    const events = [ev('2025-06-30T22:30:00Z'), ev('2025-07-01T10:00:00Z')];
    const plan = planRetention(events, rule(cal('day'), 10), 'Europe/Berlin');
    expect(keptTs(plan)).toEqual([t('2025-07-01T10:00:00Z')]);
    expect(plan.delete).toEqual([{ ts: t('2025-06-30T22:30:00Z'), reason: expect.stringContaining('2025-07-01') }]);
  });

  it('a day with a DST change (25 local hours) is still one day', () => {
    const events = [ev('2025-10-25T22:30:00Z'), ev('2025-10-26T12:00:00Z'), ev('2025-10-26T22:30:00Z')];
    // 2025-10-25T22:30Z = Oct 26 00:30 CEST; 2025-10-26T22:30Z = Oct 26 23:30 CET
    const plan = planRetention(events, rule(cal('day'), 10), 'Europe/Berlin');
    expect(keptTs(plan)).toEqual([t('2025-10-26T22:30:00Z')]);
    expect(plan.delete).toHaveLength(2);
  });
});

describe('planRetention: duration periods', () => {
  it('15m buckets', () => {
    const events = [
      ev('2025-02-24T10:01:00Z'),
      ev('2025-02-24T10:14:00Z'),
      ev('2025-02-24T10:16:00Z'),
      ev('2025-02-24T10:29:00Z'),
      ev('2025-02-24T10:31:00Z'),
    ];
    const plan = planRetention(events, rule(dur('15m', 900_000), 3), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-24T10:14:00Z', '2025-02-24T10:29:00Z', '2025-02-24T10:31:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-24T10:01:00Z', '2025-02-24T10:16:00Z'));
    const reason = plan.delete.find((d) => d.ts === t('2025-02-24T10:16:00Z'))!.reason;
    expect(reason).toContain('15m');
  });

  it('6h buckets with a count smaller than the periods', () => {
    const events = [
      ev('2025-02-24T01:00:00Z'),
      ev('2025-02-24T05:00:00Z'),
      ev('2025-02-24T07:00:00Z'),
      ev('2025-02-24T11:59:59Z'),
      ev('2025-02-24T12:00:00Z'),
      ev('2025-02-24T19:00:00Z'),
    ];
    const plan = planRetention(events, rule(dur('6h', 21_600_000), 3), 'Europe/Berlin');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-24T11:59:59Z', '2025-02-24T12:00:00Z', '2025-02-24T19:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-24T01:00:00Z', '2025-02-24T05:00:00Z', '2025-02-24T07:00:00Z'));
  });
});

describe('planRetention: newest, protect, incomplete events', () => {
  it('the newest event is kept, with a reason saying so', () => {
    const events = [ev('2025-02-24T10:00:00Z'), ev('2025-02-24T10:30:00Z')];
    const plan = planRetention(events, rule(cal('hour'), 1), 'UTC');
    expect(plan.keep).toEqual([{ ts: t('2025-02-24T10:30:00Z'), reason: expect.stringContaining('most recently archived event in the folder') }]);
  });

  it('protect keeps an event that would otherwise be deleted, without using a count slot', () => {
    const events = [ev('2025-02-20T12:00:00Z'), ev('2025-02-21T12:00:00Z'), ev('2025-02-22T12:00:00Z'), ev('2025-02-23T12:00:00Z'), ev('2025-02-24T12:00:00Z')];
    const protect = t('2025-02-21T12:00:00Z');
    const plan = planRetention(events, rule(snapshot, 2), 'UTC', { protect: new Map([[protect, 'archived by this run']]) });
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-21T12:00:00Z', '2025-02-23T12:00:00Z', '2025-02-24T12:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-20T12:00:00Z', '2025-02-22T12:00:00Z'));
    expect(plan.keep.find((d) => d.ts === protect)!.reason).toContain('archived by this run');
    expectWellFormed(events, plan);
  });

  it('protect keeps an event whose period already kept a newer one', () => {
    const events = [ev('2025-02-24T10:05:00Z'), ev('2025-02-24T10:55:00Z')];
    const plan = planRetention(events, rule(cal('hour'), 5), 'UTC', { protect: new Map([[t('2025-02-24T10:05:00Z'), 'current']]) });
    expect(plan.keep).toHaveLength(2);
    expect(plan.delete).toEqual([]);
  });

  it('protect naming an event that is not there changes nothing', () => {
    const events = [ev('2025-02-23T12:00:00Z'), ev('2025-02-24T12:00:00Z')];
    const without = planRetention(events, rule(snapshot, 1), 'UTC');
    const withMissing = planRetention(events, rule(snapshot, 1), 'UTC', { protect: new Map([[t('2020-01-01T00:00:00Z'), 'gone']]) });
    expect(withMissing).toEqual(without);
  });

  it('incomplete events (no rdb) are deleted and never counted', () => {
    const events = [
      ev('2025-02-24T15:00:00Z', ['nodes', 'sha256']), // newer than everything, but incomplete
      ev('2025-02-24T14:00:00Z', ['rdb']),
      ev('2025-02-24T13:00:00Z', ['sha256']),
      ev('2025-02-24T12:00:00Z', ['rdb', 'nodes', 'sha256']),
      ev('2025-02-24T11:00:00Z', ['rdb', 'sha256']),
    ];
    const plan = planRetention(events, rule(snapshot, 2), 'UTC');
    expect(keptTs(plan)).toEqual(isoSorted('2025-02-24T14:00:00Z', '2025-02-24T12:00:00Z'));
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-24T15:00:00Z', '2025-02-24T13:00:00Z', '2025-02-24T11:00:00Z'));
    expect(plan.keep.find((d) => d.ts === t('2025-02-24T14:00:00Z'))!.reason).toContain('most recently archived event in the folder');
    for (const iso of ['2025-02-24T15:00:00Z', '2025-02-24T13:00:00Z']) {
      expect(plan.delete.find((d) => d.ts === t(iso))!.reason).toContain('incomplete');
    }
    expectWellFormed(events, plan);
  });

  it('an incomplete event does not take its period from a complete one', () => {
    const events = [ev('2025-02-24T10:50:00Z', ['nodes']), ev('2025-02-24T10:10:00Z', ['rdb'])];
    const plan = planRetention(events, rule(cal('hour'), 1), 'UTC');
    expect(keptTs(plan)).toEqual([t('2025-02-24T10:10:00Z')]);
    expect(deletedTs(plan)).toEqual([t('2025-02-24T10:50:00Z')]);
  });

  it('a folder with only incomplete events deletes them all', () => {
    const events = [ev('2025-02-24T10:00:00Z', ['sha256']), ev('2025-02-24T11:00:00Z', ['nodes'])];
    const plan = planRetention(events, rule(snapshot, 5), 'UTC');
    expect(plan.keep).toEqual([]);
    expect(deletedTs(plan)).toEqual(isoSorted('2025-02-24T10:00:00Z', '2025-02-24T11:00:00Z'));
  });

  it('a protected incomplete event is still deleted (it has no snapshot to keep)', () => {
    const events = [ev('2025-02-24T10:00:00Z', ['rdb']), ev('2025-02-24T09:00:00Z', ['nodes'])];
    const plan = planRetention(events, rule(snapshot, 5), 'UTC', { protect: new Map([[t('2025-02-24T09:00:00Z'), 'current']]) });
    expect(deletedTs(plan)).toEqual([t('2025-02-24T09:00:00Z')]);
  });
});

describe('planRetention: archive order and a wrong source clock (issue 10)', () => {
  const NOW = Date.parse('2025-06-01T12:00:00Z');
  /** An event with an archive sequence number: archived as the seq-th event. */
  const seqEv = (iso: string, seq: number): FolderEvent => ({ ts: t(iso), kinds: ['rdb', 'sha256', 'meta'], seq, seqs: [seq] });

  it('"newest" is the most recently archived event, not the latest name', () => {
    const events = [seqEv('2025-06-01T11:00:00Z', 1), seqEv('2030-01-01T00:00:00Z', 2), seqEv('2025-06-01T11:59:00Z', 3)];
    const plan = planRetention(events, rule(snapshot, 1), 'UTC', { nowMs: NOW });
    expect(plan.keep).toEqual([{ ts: t('2025-06-01T11:59:00Z'), reason: expect.stringContaining('most recently archived event') }]);
    expect(deletedTs(plan)).toEqual(isoSorted('2025-06-01T11:00:00Z', '2030-01-01T00:00:00Z'));
  });

  it('a future-stamped event is filed in the period of the next event archived after it, and rotates out', () => {
    const events = [seqEv('2025-06-01T10:00:00Z', 1), seqEv('2030-01-01T00:00:00Z', 2), seqEv('2025-06-01T11:30:00Z', 3)];
    const plan = planRetention(events, rule(cal('hour'), 24), 'UTC', { nowMs: NOW });
    expect(keptTs(plan)).toEqual(isoSorted('2025-06-01T10:00:00Z', '2025-06-01T11:30:00Z'));
    expect(plan.delete).toEqual([{ ts: t('2030-01-01T00:00:00Z'), reason: expect.stringContaining('already kept 2025-06-01T11-30-00, archived after it') }]);
  });

  it('a future-stamped event that is the newest archived is kept, filed under now', () => {
    const events = [seqEv('2025-06-01T10:00:00Z', 1), seqEv('2030-01-01T00:00:00Z', 2)];
    const plan = planRetention(events, rule(cal('day'), 1), 'UTC', { nowMs: NOW });
    expect(plan.keep).toEqual([{ ts: t('2030-01-01T00:00:00Z'), reason: expect.stringContaining('day 2025-06-01') }]);
    expect(deletedTs(plan)).toEqual([t('2025-06-01T10:00:00Z')]);
  });

  it(`a clock stepped back: the ${3} most recently archived events are not deleted for their names`, () => {
    const before = ['2025-06-01T09:00:00Z', '2025-06-01T10:00:00Z', '2025-06-01T11:00:00Z'].map((iso, i) => seqEv(iso, i + 1));
    const after = ['2025-05-31T08:00:00Z', '2025-05-31T09:00:00Z', '2025-05-31T10:00:00Z', '2025-05-31T11:00:00Z'].map((iso, i) => seqEv(iso, i + 4));
    const plan = planRetention([...before, ...after], rule(cal('hour'), 3), 'UTC', { nowMs: NOW });
    // The three pre-jump hours are the 3 most recent periods; the 3 most recently archived stay too; the 4th goes.
    expect(keptTs(plan)).toEqual(isoSorted('2025-06-01T09:00:00Z', '2025-06-01T10:00:00Z', '2025-06-01T11:00:00Z',
      '2025-05-31T09:00:00Z', '2025-05-31T10:00:00Z', '2025-05-31T11:00:00Z'));
    expect(deletedTs(plan)).toEqual([t('2025-05-31T08:00:00Z')]);
    expect(plan.keep.find((d) => d.ts === t('2025-05-31T10:00:00Z'))!.reason).toContain('3 most recently archived');
  });

  it('steady state is unchanged: no extra events kept in the current period', () => {
    const events = ['09:00', '09:20', '09:40', '10:00', '10:20', '10:40', '11:00', '11:20', '11:40'].map((hm, i) => seqEv(`2025-06-01T${hm}:00Z`, i + 1));
    const plan = planRetention(events, rule(cal('hour'), 2), 'UTC', { nowMs: NOW });
    expect(keptTs(plan)).toEqual(isoSorted('2025-06-01T10:40:00Z', '2025-06-01T11:40:00Z'));
    const last = planRetention(events, rule(snapshot, 1), 'UTC', { nowMs: NOW });
    expect(keptTs(last)).toEqual([t('2025-06-01T11:40:00Z')]);
  });

  it('events without an archive record (older versions) come before every event with one', () => {
    const legacy = [ev('2025-06-01T11:50:00Z'), ev('2025-06-01T11:55:00Z')];
    const plan = planRetention([...legacy, seqEv('2025-06-01T08:00:00Z', 1)], rule(snapshot, 2), 'UTC', { nowMs: NOW });
    expect(keptTs(plan)).toEqual(isoSorted('2025-06-01T08:00:00Z', '2025-06-01T11:55:00Z'));
  });

  it('a same-second ordinal sorts after the plain name and is filed in the same period', () => {
    const base = t('2025-06-01T11:00:00Z');
    const events: FolderEvent[] = [{ ts: base, kinds: ['rdb'] }, { ts: `${base}_1` as Timestamp, kinds: ['rdb'] }];
    const plan = planRetention(events, rule(cal('hour'), 5), 'UTC', { nowMs: NOW });
    expect(plan.keep.map((d) => d.ts)).toEqual([`${base}_1`]);
    expect(periodKey(`${base}_1` as Timestamp, cal('hour'), 'UTC')).toBe(periodKey(base, cal('hour'), 'UTC'));
  });

  it('effectiveTimes: names in the past are kept, future names take the next archived event\'s time or now', () => {
    const events = [seqEv('2031-01-01T00:00:00Z', 4), seqEv('2025-06-01T11:00:00Z', 3), seqEv('2030-01-01T00:00:00Z', 2), seqEv('2025-06-01T10:00:00Z', 1)];
    expect(effectiveTimes(events, NOW).map((e) => e.ms)).toEqual([NOW, Date.parse('2025-06-01T11:00:00Z'), Date.parse('2025-06-01T11:00:00Z'), Date.parse('2025-06-01T10:00:00Z')]);
  });
});

describe('planRetention: properties', () => {
  const everies: Every[] = [snapshot, cal('hour'), cal('day'), cal('week'), cal('month'), cal('year'), dur('15m', 900_000), dur('6h', 21_600_000)];
  const zones = ['UTC', 'Europe/Berlin', 'America/New_York'];

  function randomEvents(rand: () => number): FolderEvent[] {
    const n = Math.floor(rand() * 40);
    const base = Date.UTC(2024, 11, 20);
    const seen = new Set<string>();
    const out: FolderEvent[] = [];
    for (let i = 0; i < n; i++) {
      const ts = timestampFromMs(base + Math.floor(rand() * 60 * 86_400_000));
      if (seen.has(ts)) continue;
      seen.add(ts);
      const kinds: EventFileKind[] = rand() < 0.15 ? (rand() < 0.5 ? ['nodes'] : ['sha256', 'nodes']) : ['rdb', 'sha256'];
      out.push({ ts, kinds });
    }
    return out;
  }

  it('keep + delete partition the input, every decision has a reason, newest-per-period and count hold', () => {
    const rand = prng(12345);
    for (let round = 0; round < 300; round++) {
      const events = randomEvents(rand);
      const every = everies[round % everies.length]!;
      const zone = zones[round % zones.length]!;
      const count = 1 + Math.floor(rand() * 6);
      const plan = planRetention(events, rule(every, count), zone);
      expectWellFormed(events, plan);

      // the kept events are exactly the newest of each of the `count` most recent periods
      const complete = events.filter((e) => e.kinds.includes('rdb')).map((e) => e.ts).sort().reverse();
      const newestPerPeriod = new Map<string, Timestamp>();
      for (const ts of complete) {
        const key = periodKey(ts, every, zone);
        if (!newestPerPeriod.has(key)) newestPerPeriod.set(key, ts);
      }
      const expected = [...newestPerPeriod.values()].slice(0, count).sort();
      expect(keptTs(plan)).toEqual(expected);
    }
  });

  it('is deterministic: shuffled input gives the same decisions', () => {
    const rand = prng(999);
    for (let round = 0; round < 200; round++) {
      const events = randomEvents(rand).map((e) => ({ ...e, kinds: e.kinds.includes('rdb') ? e.kinds : (['nodes'] as EventFileKind[]) }));
      const every = everies[round % everies.length]!;
      const zone = zones[round % zones.length]!;
      const r = rule(every, 1 + (round % 5));
      const a = planRetention(events, r, zone);
      const b = planRetention(shuffle(events, rand), r, zone);
      const asMap = (p: RetentionPlan) => ({
        keep: new Map(p.keep.map((d) => [d.ts, d.reason])),
        delete: new Map(p.delete.map((d) => [d.ts, d.reason])),
      });
      expect(asMap(b)).toEqual(asMap(a));
      // complete events come out in the same (newest-first) order
      expect(b.keep).toEqual(a.keep);
    }
  });

  it('is deterministic in order too when all events are complete', () => {
    const events = Array.from({ length: 30 }, (_, i) => ev(new Date(Date.UTC(2025, 0, 1) + i * 7_200_000).toISOString()));
    const r = rule(cal('day'), 2);
    const a = planRetention(events, r, 'Europe/Berlin');
    const b = planRetention(shuffle(events, prng(3)), r, 'Europe/Berlin');
    expect(b).toEqual(a);
  });

  // events to plan.delete in *input* order, so the plan's delete list (and `prune --json` output) is
  // not a function of the event set alone: two incomplete events shuffled give a different plan.
  // Complete events are sorted first; incomplete ones are not. (Low impact today: scanFolder sorts.)
  it('is deterministic in order with several incomplete events', () => {
    const events = [
      ev('2025-02-24T12:00:00Z', ['rdb']),
      ev('2025-02-24T11:00:00Z', ['nodes']),
      ev('2025-02-24T10:00:00Z', ['sha256']),
    ];
    const r = rule(snapshot, 5);
    const a = planRetention(events, r, 'UTC');
    const b = planRetention([...events].reverse(), r, 'UTC');
    expect(b).toEqual(a);
  });

  it('does not mutate its input', () => {
    const events = [ev('2025-02-24T10:00:00Z'), ev('2025-02-24T12:00:00Z', ['nodes']), ev('2025-02-24T11:00:00Z')];
    const copy = JSON.parse(JSON.stringify(events));
    planRetention(events, rule(snapshot, 1), 'UTC');
    expect(events).toEqual(copy);
  });
});

// ---------------------------------------------------------------------------
// scanFolder (real temp dir: mock-fs patches Node internals and fails to load on Node 26)

let deadPid: number;
beforeAll(() => {
  const child = spawnSync(process.execPath, ['-e', '0']);
  deadPid = child.pid!;
  expect(deadPid).toBeGreaterThan(0);
});

const TS1 = '2025-02-24T10-00-00';
const TS2 = '2025-02-24T11-00-00';
const TS3 = '2025-02-24T12-00-00';

/** A symlink in a layout(): its target is a path inside the layout's root. */
class Link {
  constructor(readonly target: string) {}
}
type Layout = { [path: string]: string | Link | Layout };

describe('scanFolder (real temp dir)', () => {
  const fs = new OSFS();
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'rdb-archiver-scan-'));
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
  });
  /** Where a path written from the layout's root ('/archive/hourly') is on disk. */
  const at = (path: string): string => join(root, path);
  /** Creates files (string content), folders (objects) and symlinks (Link) under root. */
  const layout = (spec: Layout, base = root): void => {
    for (const [name, node] of Object.entries(spec)) {
      const path = join(base, name);
      mkdirSync(dirname(path), { recursive: true });
      if (typeof node === 'string') writeFileSync(path, node);
      else if (node instanceof Link) symlinkSync(at(node.target), path);
      else {
        mkdirSync(path, { recursive: true });
        layout(node, path);
      }
    }
  };

  it('groups event files by timestamp, newest first, and ignores everything else', async () => {
    layout({
      '/archive/hourly': {
        [`dump-${TS1}.rdb`]: 'r1',
        [`dump-${TS1}.sha256`]: 's1',
        [`dump-${TS2}.rdb`]: 'r2',
        [`nodes-${TS2}.config`]: 'n2',
        [`dump-${TS2}.sha256`]: 's2',
        [`nodes-${TS3}.config`]: 'n3', // incomplete
        // stray files and near misses
        'README.txt': 'hello',
        'dump.rdb': 'x',
        [`dump-${TS1}.rdb.bak`]: 'x',
        [`nodes-${TS1}.rdb`]: 'x',
        [`dump-${TS1}.config`]: 'x',
        [`Dump-${TS1}.rdb`]: 'x',
        'dump-2025-02-30T10-00-00.rdb': 'x',
        '.tmp-other-tool-dump.rdb': 'x',
      },
    });
    const scan = await scanFolder(fs, at('/archive/hourly'));
    expect(scan.dir).toBe(at('/archive/hourly'));
    expect(scan.temps).toEqual([]);
    expect(scan.events.map((e) => ({ ts: e.ts, kinds: [...e.kinds].sort() }))).toEqual([
      { ts: TS3, kinds: ['nodes'] },
      { ts: TS2, kinds: ['nodes', 'rdb', 'sha256'] },
      { ts: TS1, kinds: ['rdb', 'sha256'] },
    ]);
  });

  it('ignores a symlink named like an event and subdirectories (even ones named like events)', async () => {
    layout({
      '/elsewhere/important.rdb': 'do not touch',
      '/archive/daily': {
        [`dump-${TS1}.rdb`]: 'r1',
        [`dump-${TS2}.rdb`]: new Link('/elsewhere/important.rdb'),
        [`nodes-${TS1}.config`]: new Link('/elsewhere/important.rdb'),
        [`dump-${TS3}.rdb`]: {},
        sub: { [`dump-${TS3}.rdb`]: 'nested' },
      },
    });
    const scan = await scanFolder(fs, at('/archive/daily'));
    expect(scan.events).toEqual([{ ts: TS1, kinds: ['rdb'] }]);
    expect(scan.temps).toEqual([]);
  });

  it('reports temp files of a dead run, but not those of a live process', async () => {
    const dead = `.tmp-rdb-archiver-${deadPid}-1-dump-${TS1}.rdb`;
    const live = `.tmp-rdb-archiver-${process.ppid}-1-dump-${TS2}.rdb`;
    layout({
      '/archive/hourly': {
        [`dump-${TS1}.rdb`]: 'r1',
        [dead]: 'partial',
        [live]: 'in progress elsewhere',
      },
    });
    const scan = await scanFolder(fs, at('/archive/hourly'));
    expect(scan.temps).toEqual([dead]);
    expect(scan.events).toEqual([{ ts: TS1, kinds: ['rdb'] }]);
  });

  it('a missing folder gives no events', async () => {
    layout({ '/archive': {} });
    expect(await scanFolder(fs, at('/archive/never-used'))).toEqual({ dir: at('/archive/never-used'), events: [], temps: [] });
  });

  it('an empty folder gives no events', async () => {
    layout({ '/archive/empty': {} });
    const scan = await scanFolder(fs, at('/archive/empty'));
    expect(scan).toMatchObject({ dir: at('/archive/empty'), events: [], temps: [] });
    expect(scan.foreign).toBeUndefined(); // (ownerUid and openMode describe the folder itself)
  });

  it('a rule folder that is a symlink is rejected', async () => {
    layout({
      '/outside': { [`dump-${TS1}.rdb`]: 'r1' },
      '/archive/hourly': new Link('/outside'),
    });
    const err = await scanFolder(fs, at('/archive/hourly')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FsError);
    expect((err as FsError).code).toBe('ENOTDIR');
    expect((err as FsError).message).toContain(at('/archive/hourly'));
    expect((err as FsError).message).toContain('symlink');
  });

  it('a rule folder that is a regular file is rejected', async () => {
    layout({ '/archive/hourly': 'not a folder' });
    await expect(scanFolder(fs, at('/archive/hourly'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

// ---------------------------------------------------------------------------
// applyPlan (real temp dir)

class RecordingFS extends OSFS {
  readonly unlinked: string[] = [];
  override async unlink(path: string): Promise<void> {
    this.unlinked.push(path);
    return super.unlink(path);
  }
}

describe('applyPlan (real temp dir)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-retention-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function makeEvent(ts: string, kinds: EventFileKind[]): void {
    for (const kind of kinds) writeFileSync(join(dir, eventFileName(kind, parseTimestamp(ts)!)), `${kind} ${ts}`);
  }

  it('deletes the companions and the rdb of deleted events, keeps the rest and stray files', async () => {
    makeEvent(TS1, ['rdb', 'nodes', 'sha256']);
    makeEvent(TS2, ['rdb', 'nodes', 'sha256']);
    makeEvent(TS3, ['rdb', 'nodes', 'sha256']);
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    writeFileSync(join(dir, `dump-${TS1}.rdb.bak`), 'manual copy');
    mkdirSync(join(dir, `dump-${TS1}.rdb.d`));

    const fs = new RecordingFS();
    const scan = await scanFolder(fs, dir);
    const plan = planRetention(scan.events, rule(snapshot, 1), 'UTC');
    const result = await applyPlan(fs, scan, plan);

    expect([...result.deleted].sort()).toEqual([TS1, TS2]);
    expect(result.skipped).toEqual([]);
    expect(result.tempsRemoved).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(
      [`dump-${TS1}.rdb.bak`, `dump-${TS1}.rdb.d`, `dump-${TS3}.rdb`, `dump-${TS3}.sha256`, 'notes.txt', `nodes-${TS3}.config`].sort(),
    );
  });

  it('scans archive records and same-second ordinals; deletes the record with its event, before the .rdb', async () => {
    const x = parseTimestamp(TS1)!;
    const x1 = `${TS1}_1` as Timestamp;
    for (const name of [eventFileName('rdb', x), eventFileName('sha256', x), eventFileName('meta', x, 5), eventFileName('rdb', x1), eventFileName('meta', x1, 6)]) {
      writeFileSync(join(dir, name), name);
    }
    makeEvent(TS3, ['rdb', 'sha256']); // named later, but from an older version (no record): archived before both
    const fs = new RecordingFS();
    const scan = await scanFolder(fs, dir);
    expect(scan.events.map((e) => [e.ts, e.seq])).toEqual([[x1, 6], [x, 5], [TS3, undefined]]);
    const plan = planRetention(scan.events, rule(snapshot, 1), 'UTC');
    expect(plan.keep.map((d) => d.ts)).toEqual([x1]);
    await applyPlan(fs, scan, plan);
    expect(fs.unlinked.map((p) => p.slice(dir.length + 1))).toEqual([
      eventFileName('sha256', x), eventFileName('meta', x, 5), eventFileName('rdb', x),
      eventFileName('sha256', parseTimestamp(TS3)!), eventFileName('rdb', parseTimestamp(TS3)!),
    ]);
    expect(readdirSync(dir).sort()).toEqual([eventFileName('rdb', x1), eventFileName('meta', x1, 6)].sort());
  });

  it('deletes companions first and the .rdb last', async () => {
    makeEvent(TS1, ['rdb', 'nodes', 'sha256']);
    makeEvent(TS2, ['rdb']);
    const fs = new RecordingFS();
    const scan = await scanFolder(fs, dir);
    await applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 1), 'UTC'));
    expect(fs.unlinked).toEqual([
      join(dir, `nodes-${TS1}.config`),
      join(dir, `dump-${TS1}.sha256`),
      join(dir, `dump-${TS1}.rdb`),
    ]);
  });

  it('deletes the leftovers of an incomplete event', async () => {
    makeEvent(TS1, ['nodes', 'sha256']);
    makeEvent(TS2, ['rdb', 'sha256']);
    const fs = new OSFS();
    const scan = await scanFolder(fs, dir);
    const result = await applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 5), 'UTC'));
    expect(result.deleted).toEqual([TS1]);
    expect(readdirSync(dir).sort()).toEqual([`dump-${TS2}.rdb`, `dump-${TS2}.sha256`]);
  });

  it('removes temp files of a dead run', async () => {
    makeEvent(TS1, ['rdb']);
    const temp = `.tmp-rdb-archiver-${deadPid}-7-dump-${TS2}.rdb`;
    writeFileSync(join(dir, temp), 'partial');
    const fs = new OSFS();
    const scan = await scanFolder(fs, dir);
    expect(scan.temps).toEqual([temp]);
    const result = await applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 1), 'UTC'));
    expect(result.tempsRemoved).toEqual([temp]);
    expect(readdirSync(dir)).toEqual([`dump-${TS1}.rdb`]);
  });

  it('refuses a plan that deletes the newest event, and deletes nothing', async () => {
    makeEvent(TS1, ['rdb', 'sha256']);
    makeEvent(TS2, ['rdb', 'sha256']);
    const fs = new RecordingFS();
    const scan = await scanFolder(fs, dir);
    const bad: RetentionPlan = {
      keep: [],
      delete: [
        { ts: parseTimestamp(TS1)!, reason: 'test' },
        { ts: parseTimestamp(TS2)!, reason: 'test' },
      ],
    };
    await expect(applyPlan(fs, scan, bad)).rejects.toThrow(/newest event 2025-02-24T11-00-00/);
    expect(fs.unlinked).toEqual([]);
    expect(readdirSync(dir)).toHaveLength(4);
  });

  it('does not follow or remove a symlink that replaced an event file after the scan', async () => {
    makeEvent(TS1, ['rdb', 'nodes']);
    makeEvent(TS2, ['rdb']);
    const target = join(dir, 'precious.txt');
    writeFileSync(target, 'keep me');
    const fs = new OSFS();
    const scan = await scanFolder(fs, dir);
    const nodesPath = join(dir, `nodes-${TS1}.config`);
    unlinkSync(nodesPath);
    symlinkSync(target, nodesPath);
    const result = await applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 1), 'UTC'));
    expect(result.skipped).toEqual([nodesPath]);
    expect(lstatSync(nodesPath).isSymbolicLink()).toBe(true);
    expect(existsSync(target)).toBe(true);
    expect(existsSync(join(dir, `dump-${TS1}.rdb`))).toBe(false);
  });

  it('tolerates files that vanished between scan and apply', async () => {
    makeEvent(TS1, ['rdb', 'sha256']);
    makeEvent(TS2, ['rdb']);
    const fs = new OSFS();
    const scan = await scanFolder(fs, dir);
    unlinkSync(join(dir, `dump-${TS1}.sha256`));
    const result = await applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 1), 'UTC'));
    expect(result.deleted).toEqual([TS1]);
    expect(readdirSync(dir)).toEqual([`dump-${TS2}.rdb`]);
  });

  it('an empty plan changes nothing', async () => {
    makeEvent(TS1, ['rdb']);
    const fs = new RecordingFS();
    const scan = await scanFolder(fs, dir);
    const result = await applyPlan(fs, scan, { keep: [{ ts: parseTimestamp(TS1)!, reason: 'x' }], delete: [] });
    expect(result).toEqual({ deleted: [], skipped: [], tempsRemoved: [] });
    expect(fs.unlinked).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// applyPlan's parallel deletes: a failure is reported only once every started delete has settled

/**
 * The per-file path (no bulk unlinkOwnedFiles): the first unlink fails at once,
 * the others take a while. Counts the lstat/unlink calls still in flight.
 */
class SlowFailingFS extends OSFS {
  inFlight = 0;
  unlinks = 0;
  constructor(private readonly delayMs: number) {
    super();
    Object.defineProperty(this, 'unlinkOwnedFiles', { value: undefined });
  }
  private async tracked<T>(body: () => Promise<T>): Promise<T> {
    this.inFlight += 1;
    try {
      return await body();
    } finally {
      this.inFlight -= 1;
    }
  }
  override lstat(path: string) {
    return this.tracked(() => super.lstat(path));
  }
  override unlink(path: string): Promise<void> {
    return this.tracked(async () => {
      this.unlinks += 1;
      if (this.unlinks === 1) throw new FsError('unlink', path, 'EIO', 'input/output error');
      await new Promise((r) => setTimeout(r, this.delayMs));
      await super.unlink(path);
    });
  }
}

describe('applyPlan waits for every started delete before it reports a failure', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-pool-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function settledWhenRejected(fs: SlowFailingFS, run: () => Promise<unknown>): Promise<number> {
    let inFlightAtRejection = -1;
    await expect(run().catch((err: unknown) => {
      inFlightAtRejection = fs.inFlight;
      throw err;
    })).rejects.toMatchObject({ code: 'EIO' });
    return inFlightAtRejection;
  }

  it('events: the first delete fails, the slow ones settle before applyPlan rejects with that first error', async () => {
    for (let i = 0; i < 6; i += 1) writeFileSync(join(dir, eventFileName('rdb', timestampFromMs(Date.UTC(2025, 0, 1, i)))), 'x');
    const fs = new SlowFailingFS(150);
    const scan = await scanFolder(fs, dir);
    const plan = planRetention(scan.events, rule(snapshot, 1), 'UTC');
    expect(plan.delete).toHaveLength(5);
    expect(await settledWhenRejected(fs, () => applyPlan(fs, scan, plan))).toBe(0);
    expect(fs.unlinks, 'the other deletes had been started in parallel').toBeGreaterThan(1);
  });

  it('temp files: the same for the cleanup of a dead run\'s temps', async () => {
    writeFileSync(join(dir, eventFileName('rdb', timestampFromMs(Date.UTC(2025, 0, 1)))), 'x');
    for (let i = 0; i < 5; i += 1) writeFileSync(join(dir, `.tmp-rdb-archiver-${deadPid}-${i}-dump-x.rdb`), 'partial');
    const fs = new SlowFailingFS(150);
    const scan = await scanFolder(fs, dir);
    expect(scan.temps).toHaveLength(5);
    expect(await settledWhenRejected(fs, () => applyPlan(fs, scan, planRetention(scan.events, rule(snapshot, 1), 'UTC')))).toBe(0);
    expect(fs.unlinks).toBeGreaterThan(1);
  });
});
