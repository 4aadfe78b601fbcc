/**
 * Promise 6, clock trouble: the source mtime is in the future, moves
 * backwards, or repeats (same second) with different content. Each case
 * archives or reports clearly; a final name is never overwritten; retention
 * never deletes the newest real snapshot because of a skewed timestamp.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { setupArchive, writeSnapshot, type ArchiveEnv, type RuleSpec } from '../helpers/snapshots.js';
import { CLI_JS, FULL, Figures, cli, family, latestEverywhere, onceJson, runNode, spread, stackTraceLines, type ProcResult } from './common.js';

const figures = new Figures('clock', 'Clock trouble: future, backwards and repeated timestamps');

interface OnceJson {
  status: string;
  snapshot: { ts: string; sha256: string } | null;
  error?: { kind: string; message: string };
}

async function once(env: ArchiveEnv, ...extra: string[]): Promise<ProcResult & { json: OnceJson }> {
  const r = await runNode(CLI_JS, ['once', '--json', ...extra, '-c', env.config]);
  figures.outcome(`exit ${r.code}`);
  expect(stackTraceLines(r.stderr)).toEqual([]);
  return { ...r, json: JSON.parse(r.stdout) as OnceJson };
}

/** A folder for the source on a filesystem that stores any 64-bit mtime (tmpfs; ext4 stops at 2446). */
function wideTimeDir(): string | undefined {
  try {
    const dir = mkdtempSync('/dev/shm/rdb-archiver-rel-clock-');
    made.push(dir);
    const probe = join(dir, 'probe');
    writeFileSync(probe, '');
    utimesSync(probe, new Date('+010000-01-01T00:00:00Z'), new Date('+010000-01-01T00:00:00Z'));
    return statSync(probe).mtime.getUTCFullYear() === 10000 ? dir : undefined;
  } catch {
    return undefined;
  }
}
const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** Moves the source of `env` to a wide-time filesystem when the mtime needs it; false when none is available. */
function sourceFor(env: ArchiveEnv, mtime: Date): boolean {
  if (mtime.getUTCFullYear() <= 2400) return true;
  const dir = wideTimeDir();
  if (!dir) return false;
  (env as { source: string }).source = join(dir, 'dump.rdb');
  env.writeConfig({});
  return true;
}

const rdbs = (env: ArchiveEnv, rule: string) => (existsSync(join(env.archive, rule)) ? readdirSync(join(env.archive, rule)).filter((n) => n.endsWith('.rdb')).sort() : []);
const identity = (path: string) => {
  const s = statSync(path);
  return { ino: s.ino, size: s.size, mtimeMs: s.mtimeMs, sha: readFileSync(path).toString('base64').length + ':' + readFileSync(path).subarray(0, 64).toString('hex') };
};

describe('clock trouble', () => {
  it('a source mtime far in the future is archived under that timestamp; later normal snapshots are archived and never pruned because of it', async () => {
    const rules: RuleSpec[] = [{ name: 'last', count: 1 }, { name: 'hourly', every: 'hour', count: 1 }, { name: 'daily', every: 'day', count: 2 }];
    const env = setupArchive({ rules });
    figures.input('mtime in the future (2099)');
    writeSnapshot(env.source, { seed: 'future', mtime: new Date('2099-01-01T00:00:00Z') });
    const a = await once(env);
    expect(a.code, a.stdout).toBe(0);
    expect(a.json.snapshot?.ts).toBe('2099-01-01T00-00-00');

    // The clock is fixed: the next snapshots have today's mtime, older than the future event.
    const now = writeSnapshot(env.source, { seed: 'now', mtime: new Date('2025-06-01T12:00:00Z') });
    const b = await once(env);
    expect(b.code, b.stdout).toBe(0);
    expect(b.json.snapshot?.ts).toBe('2025-06-01T12-00-00');
    for (const rule of rules) expect(rdbs(env, rule.name), rule.name).toContain('dump-2025-06-01T12-00-00.rdb');

    // Nothing changed: a later once and a prune must not delete the snapshot that is the source's current content.
    const c = await once(env);
    expect(c.code).toBe(0);
    expect(c.json.status).toBe('unchanged');
    const p = await runNode(CLI_JS, ['prune', '-c', env.config]);
    expect(p.code, p.stdout + p.stderr).toBe(0);
    for (const rule of rules) {
      expect(rdbs(env, rule.name), `${rule.name}: the current snapshot was pruned because of the future event`).toContain('dump-2025-06-01T12-00-00.rdb');
      expect(readFileSync(join(env.archive, rule.name, 'dump-2025-06-01T12-00-00.rdb')).equals(now.bytes)).toBe(true);
    }

    // A newer real snapshot: the previous one may now go, the newest real one stays.
    writeSnapshot(env.source, { seed: 'later', mtime: new Date('2025-06-01T13:00:00Z') });
    const d = await once(env);
    expect(d.code).toBe(0);
    await runNode(CLI_JS, ['prune', '-c', env.config]);
    for (const rule of rules) expect(rdbs(env, rule.name)).toContain('dump-2025-06-01T13-00-00.rdb');
  });

  it('an mtime moving backwards is archived (changed, not newer), including a step back into an hour that already has an event', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }, { name: 'hourly', every: 'hour', count: 5 }] });
    figures.input('mtime moving backwards');
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T12:30:00Z') });
    expect((await once(env)).code).toBe(0);
    writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-06-01T11:00:00Z') });
    const back = await once(env);
    expect(back.code, back.stdout).toBe(0);
    expect(back.json.snapshot?.ts).toBe('2025-06-01T11-00-00');
    writeSnapshot(env.source, { seed: 'c', mtime: new Date('2025-06-01T12:10:00Z') });
    const again = await once(env);
    expect(again.code, again.stdout).toBe(0);
    expect(again.json.snapshot?.ts).toBe('2025-06-01T12-10-00');
    expect(rdbs(env, 'last')).toEqual(['dump-2025-06-01T11-00-00.rdb', 'dump-2025-06-01T12-10-00.rdb', 'dump-2025-06-01T12-30-00.rdb']);
    // The hourly rule keeps, per hour, the snapshot archived last in it: 12:10 (the newest data of
    // the 12:00 hour, taken after 12:30 by a clock stepped back), and 11:00.
    expect(rdbs(env, 'hourly')).toEqual(['dump-2025-06-01T11-00-00.rdb', 'dump-2025-06-01T12-10-00.rdb']);
  });

  it('the same second with different content: archived under <ts>_1, the existing event kept byte for byte; later runs are fine', async () => {
    // (Issue 10, item 15: this was exit 73 on every run until the source changed: the newest data was never archived.)
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }, { name: 'all', count: 5 }] });
    figures.input('same second, different content');
    const first = writeSnapshot(env.source, { seed: 'first', mtime: new Date('2025-06-01T12:00:00.100Z') });
    expect((await once(env)).code).toBe(0);
    const before = ['last', 'all'].map((r) => identity(join(env.archive, r, 'dump-2025-06-01T12-00-00.rdb')));
    const sidecar = readFileSync(join(env.archive, 'last', 'dump-2025-06-01T12-00-00.sha256'), 'utf8');

    const second = writeSnapshot(env.source, { seed: 'second', mtime: new Date('2025-06-01T12:00:00.900Z') });
    const r = await once(env);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.snapshot?.ts).toBe('2025-06-01T12-00-00_1');
    for (let i = 0; i < 2; i += 1) {
      expect(['last', 'all'].map((rule) => identity(join(env.archive, rule, 'dump-2025-06-01T12-00-00.rdb')))).toEqual(before);
      expect(readFileSync(join(env.archive, 'last', 'dump-2025-06-01T12-00-00.sha256'), 'utf8')).toBe(sidecar);
      expect(readFileSync(join(env.archive, 'last', 'dump-2025-06-01T12-00-00.rdb')).equals(first.bytes)).toBe(true);
      expect(readFileSync(join(env.archive, 'last', 'dump-2025-06-01T12-00-00_1.rdb')).equals(second.bytes)).toBe(true);
      for (const rule of ['last', 'all']) expect(readdirSync(join(env.archive, rule)).filter((n) => n.startsWith('.tmp'))).toEqual([]);
      const idle = await once(env);
      expect(idle.code, idle.stdout).toBe(0);
      expect(idle.json.status).toBe('unchanged');
    }
    writeSnapshot(env.source, { seed: 'third', mtime: new Date('2025-06-01T12:00:01Z') });
    const ok = await once(env);
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.json.snapshot?.ts).toBe('2025-06-01T12-00-01');
  });

  it('a final name taken by a different file in another rule folder is never overwritten: the snapshot takes the next same-second name', async () => {
    // (Before issue 10 item 15 this was exit 73 on every run; both snapshot rules keep the squatter, so it can be checked.)
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }, { name: 'daily', count: 5 }] });
    figures.input('final name taken by a different file');
    writeSnapshot(env.source, { seed: 'mine', mtime: new Date('2025-06-01T12:00:00Z') });
    mkdirSync(join(env.archive, 'daily'), { recursive: true, mode: 0o700 });
    const squatter = join(env.archive, 'daily', 'dump-2025-06-01T12-00-00.rdb');
    writeFileSync(squatter, 'somebody else\'s file', { mode: 0o600 });
    const before = identity(squatter);
    const r = await once(env);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.snapshot?.ts).toBe('2025-06-01T12-00-00_1');
    expect(identity(squatter)).toEqual(before);
    expect(readFileSync(squatter, 'utf8')).toBe('somebody else\'s file');
    expect(rdbs(env, 'last')).toEqual(['dump-2025-06-01T12-00-00_1.rdb']);
    expect(rdbs(env, 'daily')).toEqual(['dump-2025-06-01T12-00-00.rdb', 'dump-2025-06-01T12-00-00_1.rdb']);
  });

  it('--force on an already archived source rewrites nothing (same inode, same bytes)', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    figures.input('forced re-run of an archived source');
    writeSnapshot(env.source, { seed: 'x', mtime: new Date('2025-06-01T12:00:00Z') });
    expect((await once(env)).code).toBe(0);
    const before = identity(join(env.archive, 'last', 'dump-2025-06-01T12-00-00.rdb'));
    const r = await once(env, '--force');
    expect(r.code).toBe(0);
    expect(identity(join(env.archive, 'last', 'dump-2025-06-01T12-00-00.rdb'))).toEqual(before);
  });

  it.for([
    ['the epoch', new Date(0), '1970-01-01T00-00-00'],
    ['before the epoch', new Date('1969-07-20T20:17:40Z'), '1969-07-20T20-17-40'],
    ['the last second of year 9999', new Date('9999-12-31T23:59:59Z'), '9999-12-31T23-59-59'],
  ] as const)('an mtime at %s is archived under a name retention understands', async ([label, mtime, ts], ctx) => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    if (!sourceFor(env, mtime)) {
      figures.note(`mtime at ${label}: skipped (no filesystem here stores it)`);
      return ctx.skip();
    }
    figures.input(`mtime at ${label}`);
    writeSnapshot(env.source, { seed: 'edge', mtime });
    const r = await once(env);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.snapshot?.ts).toBe(ts);
    // A later normal snapshot: the edge event is an ordinary event to retention (pruned by count 1).
    writeSnapshot(env.source, { seed: 'normal', mtime: new Date('2025-06-01T12:00:00Z') });
    expect((await once(env)).code).toBe(0);
    // Count 1 keeps the snapshot archived last, wherever the edge name sorts: a name in the far future
    // is not "the newest" forever (issue 10, item 1).
    expect(rdbs(env, 'last')).toEqual(['dump-2025-06-01T12-00-00.rdb']);
  });

  it('an mtime beyond year 9999 is refused with a clear error, not archived under a name nothing can read back', async (ctx) => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    const mtime = new Date('+010000-01-01T00:00:00Z');
    if (!sourceFor(env, mtime)) {
      figures.note('mtime beyond year 9999: skipped (no filesystem here stores it)');
      return ctx.skip();
    }
    figures.input('mtime beyond year 9999');
    writeSnapshot(env.source, { seed: 'far', mtime });
    const r = await once(env);
    expect(r.code, r.stdout).not.toBe(0);
    expect(r.code).not.toBe(70);
    expect(r.json.error?.message).toContain(env.source);
    expect(rdbs(env, 'last')).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// Issue 10, items 1, 2 and 15, as families of trials (test/integration/ordering.test.ts has one case of each):
// "latest" is the snapshot taken last, whatever its mtime; a clock stepping back never costs the recent
// snapshots; several saves in one second are all archived.

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const ago = (ms: number) => new Date(Date.now() - ms);
/** Full run: every parameter of a family; npm run test:slow: the ones picked (a typical one, an edge). */
const sizes = <T>(all: readonly T[], picked: readonly T[] = spread(all, 2)): T[] => (FULL ? [...all] : [...picked]);

describe('clock trouble, as families of trials (issue 10 items 1, 2, 15)', () => {
  const FUTURE: Array<[string, number]> = [
    ['2 minutes', 2 * MIN], ['3 hours', 3 * HOUR], ['2 days', 2 * DAY], ['200 days', 200 * DAY], ['5 years', 5 * 365 * DAY],
  ];
  it(`a snapshot stamped in the future (${sizes(FUTURE, [FUTURE[1]!]).length} offsets) never becomes "latest" for restore, list or status; check warns naming it; it rotates out`, async () => {
    await family(figures, sizes(FUTURE, [FUTURE[1]!]), ([label]) => `future by ${label}`, async ([label, offset], v) => {
      figures.input(`source mtime in the future by ${label}`);
      const rules = ['hourly', 'daily', 'last'];
      const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 24 }, { name: 'daily', every: 'day', count: 7 }, { name: 'last', count: 2 }] });
      writeSnapshot(env.source, { seed: 'v1', mtime: ago(2 * HOUR) });
      await onceJson(env, v);
      writeSnapshot(env.source, { seed: 'v2', mtime: new Date(Date.now() + offset) });
      const future = (await onceJson(env, v)).snapshot?.ts ?? '?';
      // While the source itself is in the future: a WARNING naming it.
      const checkSource = await cli(env, v, ['check', '--warn-age', '1d', '--crit-age', '2d'], [1]);
      if (!/future/.test(checkSource.stdout) || !checkSource.stdout.includes(env.source)) v.push(`check does not name the source's future mtime: ${checkSource.stdout.trim()}`);
      const v3 = writeSnapshot(env.source, { seed: 'v3', mtime: ago(MIN) });
      const ts3 = (await onceJson(env, v)).snapshot?.ts ?? '?';
      await latestEverywhere(env, v, rules, { ts: ts3, bytes: v3.bytes });
      // The future-named event: a WARNING naming it, and the newest snapshot's age is its real one (a minute: critical past 2 s).
      const checkEvent = await cli(env, v, ['check', '--warn-age', '1d', '--crit-age', '2d'], [1]);
      if (!checkEvent.stdout.includes(future)) v.push(`check does not name the future-stamped event ${future}: ${checkEvent.stdout.trim()}`);
      await cli(env, v, ['check', '--warn-age', '1s', '--crit-age', '2s'], [2]);
      // The next snapshots push it out of every folder: it is not "the newest of its folder" for ever.
      const v4 = writeSnapshot(env.source, { seed: 'v4', mtime: ago(30_000) });
      const ts4 = (await onceJson(env, v)).snapshot?.ts ?? '?';
      for (const rule of rules) if (rdbs(env, rule).includes(`dump-${future}.rdb`)) v.push(`${rule}: the future-stamped event ${future} was not rotated out`);
      await latestEverywhere(env, v, rules, { ts: ts4, bytes: v4.bytes });
      rmSync(env.root, { recursive: true, force: true });
    });
  }, 300_000);

  const STEPS: Array<[string, number]> = [['90 minutes (into hours that hold events)', 90 * MIN], ['1 day', DAY], ['30 days', 30 * DAY], ['1 year', 365 * DAY]];
  it(`after the source clock steps back (${sizes(STEPS, [STEPS[1]!]).length} sizes), none of the 3 most recently archived snapshots is deleted for its timestamp, in any folder, after any run; check says the clock stepped back`, async () => {
    await family(figures, sizes(STEPS, [STEPS[1]!]), ([label]) => `clock stepped back by ${label}`, async ([label, step], v) => {
      figures.input(`source clock stepped back by ${label}`);
      const rules = ['hourly', 'daily', 'last'];
      // The calendar period of an event (UTC, the default timezone); 'last' has none.
      const period: Record<string, (ts: string) => string> = { hourly: (ts) => ts.slice(0, 13), daily: (ts) => ts.slice(0, 10), last: (ts) => ts };
      const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 3 }, { name: 'daily', every: 'day', count: 3 }, { name: 'last', count: 3 }] });
      const archived: string[] = [];
      let last: { ts: string; bytes: Buffer } | undefined;
      const save = async (seed: string, mtime: Date) => {
        const snap = writeSnapshot(env.source, { seed, mtime });
        const ts = (await onceJson(env, v)).snapshot?.ts ?? '?';
        archived.push(ts);
        last = { ts, bytes: snap.bytes };
        // After every run, in every folder: one of the 3 most recently archived events may be gone only if a
        // snapshot archived after it holds its period (it was superseded, as any snapshot of an hour is by the
        // hour's next one), never because older-archived content outranks it by name.
        for (const rule of rules) {
          const present = rdbs(env, rule).map((n) => n.slice(5, -4));
          archived.slice(-3).forEach((recent) => {
            if (present.includes(recent)) return;
            const later = archived.slice(archived.lastIndexOf(recent) + 1);
            if (!later.some((ts) => present.includes(ts) && period[rule]!(ts) === period[rule]!(recent))) {
              v.push(`${rule}: ${recent}, one of the 3 most recently archived, was deleted although nothing archived after it holds its period (after ${archived.length} saves; left: ${present.join(', ')})`);
            }
          });
        }
      };
      for (const h of [3, 2, 1]) await save(`before-${h}`, ago(h * HOUR));
      for (const m of [30, 20, 10]) await save(`after-${m}`, ago(step + HOUR + m * MIN));
      await latestEverywhere(env, v, rules, last!);
      const check = await cli(env, v, ['check', '--warn-age', '1000d', '--crit-age', '2000d'], [1]);
      if (!/stepped back/.test(check.stdout)) v.push(`check does not say the clock stepped back: ${check.stdout.trim()}`);
      rmSync(env.root, { recursive: true, force: true });
    });
  }, 300_000);

  const SAME_SECOND = [2, 3, 5, 10, 11];
  it(`${sizes(SAME_SECOND, [3, 11]).join(', ')} saves within one second: each of the first ten is archived under its own name, the last is "latest", an idle server is fine; an eleventh is refused (73) and changes nothing`, async () => {
    await family(figures, sizes(SAME_SECOND, [3, 11]), (k) => `${k} saves in one second`, async (k, v) => {
      figures.input(`${k} saves in one second`);
      const env = setupArchive({ rules: [{ name: 'last', count: 20 }, { name: 'hourly', every: 'hour', count: 5 }] });
      const second = Math.floor((Date.now() - HOUR) / 1000) * 1000;
      const kept: Array<{ ts: string; bytes: Buffer }> = [];
      for (let i = 0; i < k; i += 1) {
        const snap = writeSnapshot(env.source, { seed: `save-${i}`, mtime: new Date(second + 10 + Math.floor((i * 980) / k)) });
        if (i < 10) {
          const r = await onceJson(env, v);
          kept.push({ ts: r.snapshot?.ts ?? '?', bytes: snap.bytes });
        } else {
          // All ten names of the second are taken: refused, and nothing changes.
          const before = rdbs(env, 'last').join(',');
          const r = await onceJson(env, v, [], [73]);
          if (r.status !== 'failed') v.push(`the eleventh save: status ${r.status}, expected failed`);
          if (rdbs(env, 'last').join(',') !== before) v.push('the eleventh save changed the archive');
        }
      }
      const names = kept.map((e) => e.ts);
      const base = names[0]!;
      const expected = names.map((_, i) => (i === 0 ? base : `${base}_${i}`));
      if (names.join(',') !== expected.join(',')) v.push(`names [${names.join(', ')}], expected [${expected.join(', ')}]`);
      for (const rule of ['last', 'hourly']) {
        for (const e of kept) {
          const path = join(env.archive, rule, `dump-${e.ts}.rdb`);
          if (rule === 'last' && (!existsSync(path) || !readFileSync(path).equals(e.bytes))) v.push(`${rule}/dump-${e.ts}.rdb is missing or differs`);
        }
      }
      await latestEverywhere(env, v, ['last', 'hourly'], kept[kept.length - 1]!);
      // An idle server: every later run is fine ("unchanged"), not 73 for ever.
      if (k <= 10) for (let i = 0; i < 2; i += 1) if ((await onceJson(env, v)).status !== 'unchanged') v.push('an idle run did not say unchanged');
      await cli(env, v, ['verify']);
      rmSync(env.root, { recursive: true, force: true });
    });
  }, 300_000);
});
