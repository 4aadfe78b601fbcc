/**
 * planVerify: what scheduled verification reads is a pure function of the
 * listing, the last result, the config and the clock.
 */
import { describe, expect, it } from 'vitest';
import { planVerify, parseVerifyRecord, type VerifyRecord } from '../../src/pipeline/scheduled-verify.js';
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
