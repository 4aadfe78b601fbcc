/**
 * evaluateInstance: the check's verdict is a pure function of the facts
 * inspect.ts gathered, the thresholds and the clock.
 */
import { describe, expect, it } from 'vitest';
import type { InstanceFacts } from '../../src/ops/inspect.js';
import { Nagios, checkLine, evaluateInstance } from '../../src/ops/monitor.js';
import type { Timestamp } from '../../src/core/timestamp.js';
import type { FailureRecord } from '../../src/pipeline/failure-record.js';
import { absorbFailureRecords, parseFailureRecord } from '../../src/pipeline/failure-record.js';
import { emptyState } from '../../src/pipeline/state.js';

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
    unwritable: [],
    futureEvents: [],
    archiveRoot: { exists: true },
    ...changes,
  };
}

describe('evaluateInstance: the source clock (issue 10, items 1 and 2)', () => {
  it('a source mtime in the future is WARNING naming the file, not OK at age 0', () => {
    const c = evaluateInstance(healthy({ source: { path: '/d/dump.rdb', exists: true, mtimeMs: NOW + 3_600_000, unarchived: false } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    expect(c.problems.map((p) => p.text).join()).toMatch(/\/d\/dump\.rdb has an mtime in the future/);
  });

  it('a few seconds ahead (within the tolerance) is fine', () => {
    const c = evaluateInstance(healthy({ source: { path: '/d/dump.rdb', exists: true, mtimeMs: NOW + 30_000, unarchived: false } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.OK);
  });

  it('archived events named in the future are WARNING, named', () => {
    const c = evaluateInstance(healthy({ futureEvents: ['2030-01-01T00-00-00' as Timestamp] }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    expect(c.problems[0]!.text).toContain('2030-01-01T00-00-00');
  });

  it('a stepped-back clock is WARNING, naming both events', () => {
    const c = evaluateInstance(healthy({ steppedBack: { latest: '2025-05-31T11-00-00' as Timestamp, newerNamed: '2025-06-01T11-00-00' as Timestamp } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    expect(c.problems[0]!.text).toMatch(/stepped back.*2025-05-31T11-00-00.*2025-06-01T11-00-00/);
  });

  it('a clock jump recorded in the state is WARNING for a day, when the archive no longer shows it', () => {
    const clock = { kind: 'backwards' as const, ts: '2025-05-31T11-00-00', previousTs: '2025-06-01T11-00-00', sourceMtime: '2025-05-31T11:00:00.000Z', at: new Date(NOW - 3_600_000).toISOString(), offsetMs: 86_400_000 };
    const recent = evaluateInstance(healthy({ state: { ...healthy().state!, clock } }), THRESHOLDS, NOW);
    expect(recent.state).toBe(Nagios.WARNING);
    expect(recent.problems[0]!.text).toMatch(/stepped back: snapshot 2025-05-31T11-00-00 .* 24\.0 h before 2025-06-01T11-00-00/);
    const old = evaluateInstance(healthy({ state: { ...healthy().state!, clock: { ...clock, at: new Date(NOW - 25 * 3_600_000).toISOString() } } }), THRESHOLDS, NOW);
    expect(old.state).toBe(Nagios.OK);
  });

  it('the age of a future-named newest snapshot comes from when it was archived', () => {
    const facts = healthy({ newest: { ts: '2030-01-01T00-00-00' as Timestamp, bytes: 1, path: '/a/last/x', archivedAt: new Date(NOW - 7 * 3_600_000).toISOString() } });
    const c = evaluateInstance(facts, THRESHOLDS, NOW);
    expect(c.ageSeconds).toBe(7 * 3600);
    expect(c.state).toBe(Nagios.CRITICAL);
  });
});

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
    expect(checkLine([c]).line).toMatch(/ orphans=2;;;0 orphan_bytes=2058B;;;0 lock_age=0s;7200;21600;0$/);
  });

  it('an orphan never hides a CRITICAL', () => {
    const c = evaluateInstance(healthy({ orphans: [{ folder: 'x', dir: '/a/x', events: 1, bytes: 1 }], newest: undefined }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.CRITICAL);
  });
});

const record = (changes: Partial<FailureRecord> = {}): FailureRecord => ({
  version: 1, instance: 'default', statePath: '/a/.rdb-archiver/state.json', command: 'once', at: '2025-06-01T11:59:30.000Z',
  exitCode: 77, kind: 'permission', error: 'create /a/.rdb-archiver/lock: EACCES: permission denied', user: 'redis (uid 107)', pid: 42, count: 1,
  ...changes,
});

describe('evaluateInstance: failures the state does not hold', () => {
  it('a failure record newer than the state\'s last run is CRITICAL (75: WARNING); an older one is history', () => {
    const path = '/var/tmp/rdb-archiver-107/default-0123456789abcdef.json';
    let c = evaluateInstance(healthy({ failure: { record: record(), path } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.CRITICAL);
    expect(c.problems[0]!.text).toBe(`last once at 2025-06-01T11:59:30.000Z failed (exit 77: create /a/.rdb-archiver/lock: EACCES: permission denied); the state file could not record it (recorded in ${path})`);
    c = evaluateInstance(healthy({ failure: { record: record({ exitCode: 75, command: 'daemon tick' }), path } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    c = evaluateInstance(healthy({ failure: { record: record({ at: '2025-06-01T11:00:00.000Z' }), path } }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.OK);
    // Never ran successfully, and the first run could not even write its state.
    c = evaluateInstance(healthy({ state: undefined, failure: { record: record({ command: 'prune' }), path } }), THRESHOLDS, NOW);
    expect(c.problems.map((p) => p.text)).toContain(`last prune at 2025-06-01T11:59:30.000Z failed (exit 77: create /a/.rdb-archiver/lock: EACCES: permission denied); recorded in ${path}`);
  });

  it('folders a run cannot write are CRITICAL, named with the reason', () => {
    const c = evaluateInstance(healthy({ unwritable: [{ path: '/a/last', reason: 'is on a read-only filesystem' }, { path: '/a/.rdb-archiver', reason: 'is not writable by its owner, redis (uid 107): mode 0555' }] }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.CRITICAL);
    expect(c.problems[0]!.text).toBe('the archive cannot be written: /a/last is on a read-only filesystem; /a/.rdb-archiver is not writable by its owner, redis (uid 107): mode 0555');
  });

  it('a lock held past warn-age is WARNING, past crit-age CRITICAL; perf data has its age', () => {
    const lock = (hoursAgo: number) => ({ path: '/a/.rdb-archiver/lock', sinceMs: NOW - hoursAgo * 3600_000, pid: 4711, command: 'once' });
    expect(evaluateInstance(healthy({ lock: lock(1) }), THRESHOLDS, NOW).state).toBe(Nagios.OK);
    const warn = evaluateInstance(healthy({ lock: lock(3) }), THRESHOLDS, NOW);
    expect(warn.state).toBe(Nagios.WARNING);
    expect(warn.problems[0]!.text).toMatch(/^the lock \/a\/.rdb-archiver\/lock has been held for 3h \(> 2h\) by pid 4711 \(once\): no run can archive/);
    expect(checkLine([warn]).line).toMatch(/ lock_age=10800s;7200;21600;0$/);
    expect(evaluateInstance(healthy({ lock: lock(7) }), THRESHOLDS, NOW).state).toBe(Nagios.CRITICAL);
  });

  it('a hook whose last run failed is WARNING until it succeeds again', () => {
    const state = healthy().state!;
    const failing = { ...state, hooks: { after_archive: { lastFailureAt: '2025-06-01T11:00:00.000Z', lastError: 'exited with status 3', lastSuccessAt: '2025-06-01T10:00:00.000Z' } } };
    const c = evaluateInstance(healthy({ state: failing }), THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.WARNING);
    expect(c.problems[0]!.text).toBe('hook after_archive failed at 2025-06-01T11:00:00.000Z (exited with status 3); WARNING until it next succeeds');
    const recovered = { ...state, hooks: { after_archive: { ...failing.hooks.after_archive, lastSuccessAt: '2025-06-01T11:30:00.000Z' } } };
    expect(evaluateInstance(healthy({ state: recovered }), THRESHOLDS, NOW).state).toBe(Nagios.OK);
  });

  it('no permission to read the source is UNKNOWN and names the user; a missing source stays CRITICAL', () => {
    const denied = healthy({ user: 'nagios (uid 1001)', source: { path: '/d/dump.rdb', exists: false, error: { kind: 'permission', message: 'lstat /d/dump.rdb: EACCES: permission denied', exitCode: 77 } } });
    const c = evaluateInstance(denied, THRESHOLDS, NOW);
    expect(c.state).toBe(Nagios.UNKNOWN);
    expect(c.problems[0]!.text).toBe('cannot read the source /d/dump.rdb as user nagios (uid 1001): permission denied (lstat /d/dump.rdb: EACCES: permission denied)');
    const missing = healthy({ source: { path: '/d/dump.rdb', exists: false, error: { kind: 'no-source', message: 'gone', exitCode: 66 } } });
    expect(evaluateInstance(missing, THRESHOLDS, NOW).state).toBe(Nagios.CRITICAL);
  });
});

describe('failure records', () => {
  it('parse only records of the state file they name, and nothing malformed', () => {
    const text = JSON.stringify(record({ count: 3 }));
    expect(parseFailureRecord(text, '/a/.rdb-archiver/state.json')).toEqual(record({ count: 3 }));
    expect(parseFailureRecord(text, '/other/state.json')).toBeUndefined();
    expect(parseFailureRecord('{"version":1', '/a/.rdb-archiver/state.json')).toBeUndefined();
    expect(parseFailureRecord(JSON.stringify({ ...record(), at: 'yesterday' }), '/a/.rdb-archiver/state.json')).toBeUndefined();
    expect(parseFailureRecord(JSON.stringify({ ...record(), command: 'rm -rf' }), '/a/.rdb-archiver/state.json')).toBeUndefined();
  });

  it('absorbing: the newest becomes lastFailure, every failed run it stands for is counted, once', () => {
    const state = emptyState();
    state.lastFailure = { at: '2025-06-01T10:00:00.000Z', command: 'once', exitCode: 74 };
    state.counters.runs_failed = 2;
    const found = [
      { record: record({ count: 5 }), path: '/p' },
      { record: record({ at: '2025-06-01T10:30:00.000Z', command: 'prune', exitCode: 1 }), path: '/q' },
      // older than the state's last failure: taken in before, its removal failed
      { record: record({ at: '2025-06-01T09:00:00.000Z', command: 'prune', exitCode: 1 }), path: '/r' },
    ];
    absorbFailureRecords(state, found);
    expect(state.counters.runs_failed).toBe(8);
    expect(state.lastFailure).toEqual({ at: '2025-06-01T11:59:30.000Z', command: 'once', exitCode: 77, error: record().error });
    absorbFailureRecords(state, found); // the same records again: nothing changes
    expect(state.counters.runs_failed).toBe(8);
  });
});

describe('fallback record names', () => {
  it('FNV-1a 64 (published test vectors) names one file per state path', async () => {
    const { fnv1a64, fallbackFileName } = await import('../../src/pipeline/failure-record.js');
    expect(fnv1a64('')).toBe('cbf29ce484222325');
    expect(fnv1a64('a')).toBe('af63dc4c8601ec8c');
    expect(fnv1a64('foobar')).toBe('85944171f73967e8');
    expect(fallbackFileName({ name: 'cache', statePath: '/a/state.json' })).not.toBe(fallbackFileName({ name: 'cache', statePath: '/b/state.json' }));
    expect(fallbackFileName({ name: 'cache', statePath: '/a/state.json' })).toMatch(/^cache-[0-9a-f]{16}\.json$/);
  });
});
