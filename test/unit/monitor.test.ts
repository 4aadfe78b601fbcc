/**
 * evaluateInstance: the check's verdict is a pure function of the facts
 * inspect.ts gathered, the thresholds and the clock.
 */
import { describe, expect, it } from 'vitest';
import type { InstanceFacts } from '../../src/inspect.js';
import { Nagios, checkLine, evaluateInstance } from '../../src/monitor.js';
import type { Timestamp } from '../../src/timestamp.js';

const NOW = Date.parse('2025-06-01T12:00:00Z');
const THRESHOLDS = { warnAgeMs: 2 * 3600_000, critAgeMs: 6 * 3600_000 };

/** A healthy instance: a snapshot a minute old, the last run ok. */
function healthy(changes: Partial<InstanceFacts> = {}): InstanceFacts {
  return {
    instance: 'default',
    archiveDir: '/a',
    statePath: '/a/.rdb-archiver/state.json',
    state: { version: 1, counters: {}, lastRun: { at: '2025-06-01T11:59:00.000Z', result: 'unchanged', exitCode: 0, durationMs: 5 }, lastSuccessAt: '2025-06-01T11:59:00.000Z' },
    source: { path: '/d/dump.rdb', exists: true, mtimeMs: NOW - 60_000, unarchived: false },
    rules: [{ rule: 'last', dir: '/a/last', events: 1, bytes: 100, incomplete: 0, newest: '2025-06-01T11-59-00' as Timestamp, oldest: '2025-06-01T11-59-00' as Timestamp }],
    newest: { ts: '2025-06-01T11-59-00' as Timestamp, bytes: 100, path: '/a/last/dump-2025-06-01T11-59-00.rdb' },
    snapshots: 1,
    archiveBytes: 100,
    orphans: [],
    ...changes,
  };
}

describe('evaluateInstance', () => {
  it('OK when healthy', () => {
    const c = evaluateInstance(healthy(), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.OK);
    expect(c.problems).toEqual([]);
  });

  it('WARNING for orphan rule folders, naming each with its size; perf data counts them', () => {
    const c = evaluateInstance(healthy({
      orphans: [
        { folder: 'hourly', dir: '/a/hourly', events: 2, bytes: 2048 },
        { folder: 'old', dir: '/a/old', events: 1, bytes: 10 },
      ],
    }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    expect(c.problems.map((p) => p.text)).toEqual(['orphan rule folders hourly (2 events, 2.0 KiB), old (1 event, 10 B) are in no rule: never pruned; delete them or add the rules back']);
    expect(checkLine([c]).line).toMatch(/ orphans=2;;;0 orphan_bytes=2058B;;;0$/);
  });

  it('an orphan never hides a CRITICAL', () => {
    const c = evaluateInstance(healthy({ orphans: [{ folder: 'x', dir: '/a/x', events: 1, bytes: 1 }], newest: undefined }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.CRITICAL);
  });
});
