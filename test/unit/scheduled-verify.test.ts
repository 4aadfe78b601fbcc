/**
 * planVerify: what scheduled verification reads is a pure function of the
 * listing, the last result, the config and the clock. mergeBad, the manual
 * verify's record and knownBad: which bad events stand after a verification,
 * and when a run exits 81.
 */
import { describe, expect, it } from 'vitest';
import { lastScheduledAt, manualVerifyRecord, mergeBad, pairKey, planVerify, parseVerifyRecord, type VerifyRecord } from '../../src/pipeline/scheduled-verify.js';
import { knownBad, withKnownBad } from '../../src/pipeline/known-bad.js';
import { ExitCode } from '../../src/core/errors.js';
import { worstExitCode } from '../../src/core/context.js';
import type { FolderEvent } from '../../src/pipeline/retention.js';
import type { Timestamp } from '../../src/core/timestamp.js';

const ev = (ts: string, seq?: number, kinds: FolderEvent['kinds'] = ['rdb', 'sha256']): FolderEvent => ({ ts: ts as Timestamp, kinds, ...(seq !== undefined ? { seq } : {}) });
const HOUR = 3_600_000;
const NOW = Date.parse('2025-06-01T12:00:00Z');
const last = (at: string): VerifyRecord => ({ at, durationMs: 1, sample: 'newest', eventsChecked: 1, filesRead: 1, bytesRead: 1, newest: null, bad: [] });

describe('planVerify', () => {
  // A clock stepped back named the newest event (seq 3) before an older one.
  const folders = [
    { rule: 'a', dir: '/x/a', events: [ev('2025-01-01T00-00-00', 3), ev('2025-01-02T00-00-00', 2), ev('2024-12-01T00-00-00', 1)] },
    { rule: 'b', dir: '/x/b', events: [ev('2025-01-01T00-00-00', 3), ev('2025-01-05T00-00-00', undefined, ['sha256'])] },
  ];

  it('newest is the highest archive sequence number, in every folder that holds it; incomplete events are never chosen', () => {
    const plan = planVerify(folders, undefined, { everyMs: HOUR, sample: 'newest' }, NOW);
    expect(plan).toMatchObject({ due: true, reason: 'never verified', newest: '2025-01-01T00-00-00', events: ['2025-01-01T00-00-00'] });
    expect(plan.targets.map((t) => `${t.rule} ${t.event.ts}`)).toEqual(['a 2025-01-01T00-00-00', 'b 2025-01-01T00-00-00']);
  });

  it('N takes the N most recently archived; all takes every complete event', () => {
    expect(planVerify(folders, undefined, { everyMs: HOUR, sample: 2 }, NOW).events).toEqual(['2025-01-01T00-00-00', '2025-01-02T00-00-00']);
    expect(planVerify(folders, undefined, { everyMs: HOUR, sample: 'all' }, NOW).events).toEqual(['2025-01-01T00-00-00', '2025-01-02T00-00-00', '2024-12-01T00-00-00']);
  });

  it('is due after every, not before; a last run in the future (clock moved back) is due at once', () => {
    const cfg = { everyMs: HOUR, sample: 'newest' as const };
    expect(planVerify(folders, last(new Date(NOW - HOUR + 1000).toISOString()), cfg, NOW)).toMatchObject({ due: false, targets: [] });
    expect(planVerify(folders, last(new Date(NOW - HOUR).toISOString()), cfg, NOW).due).toBe(true);
    expect(planVerify(folders, last(new Date(NOW + 2 * HOUR).toISOString()), cfg, NOW)).toMatchObject({ due: true });
    expect(planVerify(folders, last('garbage'), cfg, NOW).due).toBe(true);
  });

  it('an empty archive plans nothing', () => {
    expect(planVerify([], undefined, { everyMs: HOUR, sample: 'all' }, NOW)).toMatchObject({ due: true, targets: [], newest: null, events: [] });
  });

  it('parseVerifyRecord drops what the state file cannot be trusted with', () => {
    expect(parseVerifyRecord({ at: 'x', bad: [{ ts: 't', rules: ['a', 3], problems: ['p'] }, { ts: 5 }], sample: -1 })).toMatchObject({ sample: 'newest', bad: [{ ts: 't', rules: ['a'], problems: ['p'] }] });
    expect(parseVerifyRecord({ at: 5 })).toBeUndefined();
    expect(parseVerifyRecord(null)).toBeUndefined();
  });
});

describe('bad events across verifications', () => {
  const T1 = '2025-01-01T00-00-00' as Timestamp;
  const T2 = '2025-01-02T00-00-00' as Timestamp;
  const bad = (ts: Timestamp, rules: string[], foundAt?: string) => ({ ts, rules, problems: ['CRC mismatch'], ...(foundAt ? { foundAt } : {}) });
  const keys = (...pairs: Array<[string, string]>) => new Set(pairs.map(([r, t]) => pairKey(r, t)));

  it('mergeBad keeps a finding whose copy was not read again (a newest-only sample), and drops it when read again or gone', () => {
    const previous = [bad(T1, ['a', 'b'], '2025-05-01T00:00:00.000Z')];
    // A newest-only run read T2 in both folders: T1 stays bad.
    const kept = mergeBad(previous, [], keys(['a', T2], ['b', T2]), new Set(['a', 'b']), keys(['a', T1], ['b', T1], ['a', T2], ['b', T2]), 'x');
    expect(kept).toEqual(previous);
    // T1 read again in a (a manual --rule a verify) and found intact: only b's copy remains suspect.
    expect(mergeBad(previous, [], keys(['a', T1]), new Set(['a']), keys(['a', T1]), 'x')).toEqual([{ ...previous[0], rules: ['b'] }]);
    // Read again everywhere and intact: cleared.
    expect(mergeBad(previous, [], keys(['a', T1], ['b', T1]), new Set(['a', 'b']), keys(['a', T1], ['b', T1]), 'x')).toEqual([]);
    // Pruned from both folders: cleared, although not read.
    expect(mergeBad(previous, [], new Set(), new Set(['a', 'b']), new Set(), 'x')).toEqual([]);
    // A folder this run did not scan keeps its finding; a finding of an older version gets the record's time.
    expect(mergeBad([bad(T1, ['c'])], [], new Set(), new Set(['a']), new Set(), '2025-04-01T00:00:00.000Z')).toEqual([bad(T1, ['c'], '2025-04-01T00:00:00.000Z')]);
    // A fresh finding replaces the old one for the copy it read.
    const fresh = [bad(T1, ['a', 'b'], '2025-06-01T00:00:00.000Z')];
    expect(mergeBad(previous, fresh, keys(['a', T1], ['b', T1]), new Set(['a', 'b']), keys(['a', T1], ['b', T1]), 'x')).toEqual(fresh);
  });

  it('a manual verify keeps the schedule\'s time, so it neither postpones nor stands in for the scheduled run', () => {
    const scheduled: VerifyRecord = { ...last('2025-06-01T10:00:00.000Z'), trigger: 'schedule', scheduledAt: '2025-06-01T10:00:00.000Z' };
    const manual = manualVerifyRecord(scheduled, {
      at: '2025-06-01T11:30:00.000Z', durationMs: 5, scope: `event ${T1}`, events: 1, filesRead: 2, bytesRead: 10, newest: T2,
      fresh: [bad(T1, ['a'])], checked: keys(['a', T1]), scannedRules: new Set(['a']), present: keys(['a', T1], ['a', T2]),
    });
    expect(manual).toMatchObject({ at: '2025-06-01T11:30:00.000Z', trigger: 'verify', scheduledAt: '2025-06-01T10:00:00.000Z', scope: `event ${T1}`, sample: 1, eventsChecked: 1 });
    expect(manual.bad).toEqual([bad(T1, ['a'], '2025-06-01T11:30:00.000Z')]);
    expect(lastScheduledAt(manual)).toBe('2025-06-01T10:00:00.000Z');
    // Due by the schedule's time: 2 h after 10:00, not after 11:30.
    const folders = [{ rule: 'a', dir: '/x/a', events: [ev(T1, 1)] }];
    expect(planVerify(folders, manual, { everyMs: 2 * HOUR, sample: 'newest' }, Date.parse('2025-06-01T12:00:00Z')).due).toBe(true);
    // A state of an older version (no trigger) was the schedule's; a manual record without a schedule is due at once.
    expect(lastScheduledAt(last('2025-06-01T09:00:00.000Z'))).toBe('2025-06-01T09:00:00.000Z');
    expect(lastScheduledAt(manualVerifyRecord(undefined, { at: 'x', durationMs: 0, events: 0, filesRead: 0, bytesRead: 0, newest: null, fresh: [], checked: new Set(), scannedRules: new Set(), present: new Set() }))).toBeUndefined();
    expect(parseVerifyRecord(JSON.parse(JSON.stringify(manual)))).toEqual(manual);
  });

  it('knownBad: the findings still archived, fresh or carried over; a failed drill load counts; only an OK run becomes 81', () => {
    const state = {
      verify: { ...last('2025-06-01T10:00:00.000Z'), bad: [bad(T1, ['a'], '2025-05-01T00:00:00.000Z'), bad(T2, ['a'], '2025-06-01T10:00:00.000Z')] },
      drill: { at: '2025-06-01T10:05:00.000Z', ts: T2, rule: 'a', status: 'load-failed' as const, notes: [], durationMs: 1, error: 'Invalid LZF' },
    };
    const found = knownBad(state, new Set([T1, T2]), { verifyAt: '2025-06-01T10:00:00.000Z' });
    expect(found.map((b) => [b.ts, b.by, b.fresh])).toEqual([[T1, 'verify', false], [T2, 'verify', true], [T2, 'drill', false]]);
    expect(knownBad(state, new Set([T1]))).toHaveLength(1); // T2 pruned since
    expect(knownBad({ drill: { ...state.drill, status: 'loaded' } }, new Set([T2]))).toEqual([]);
    expect(withKnownBad(ExitCode.OK, found)).toBe(ExitCode.ARCHIVE_BAD);
    expect(withKnownBad(ExitCode.NO_SOURCE, found)).toBe(ExitCode.NO_SOURCE);
    expect(withKnownBad(ExitCode.OK, [])).toBe(ExitCode.OK);
  });

  it('worstExitCode: a failure of a run, then 81, then 76, then 75, then 0; the first instance\'s among equals', () => {
    expect(worstExitCode([0, 81, 76])).toBe(81);
    expect(worstExitCode([76, 81])).toBe(81);
    expect(worstExitCode([81, 66])).toBe(66);
    expect(worstExitCode([76, 1])).toBe(1);
    expect(worstExitCode([75, 76, 0])).toBe(76);
    expect(worstExitCode([74, 66])).toBe(74);
    expect(worstExitCode([0, 75])).toBe(75);
    expect(worstExitCode([0, 0])).toBe(0);
    expect(worstExitCode([])).toBe(0);
  });
});
