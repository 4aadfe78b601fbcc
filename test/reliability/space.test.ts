/**
 * Promise 3, disk space: before copying, the worker checks the archive
 * filesystem's free space (statfs) and refuses, with exit 1 and a clear
 * message, when it is below the snapshot size plus archive.min_free (default:
 * 5% of the filesystem or 1 GiB, whichever is smaller). A refused run writes
 * nothing: no copy is ever started that is bound to fail half-way.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { runOnce } from '../../src/pipeline/cycle.js';
import { fsError } from '../../src/core/errors.js';
import { OSFS } from '../../src/core/fs.js';
import { memoryLog } from '../../src/core/log.js';
import { FaultyFS } from '../helpers/faulty-fs.js';
import { listTree, setupArchive, writeSnapshot } from '../helpers/snapshots.js';
import { CLI_JS, Figures, reproduce, runNode, stackTraceLines } from './common.js';

const figures = new Figures('space', 'Disk space: the free-space check before copying');

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** The reserve as documented (README, archive.min_free), computed independently of src/. */
function documentedReserve(minFree: string | number | undefined, total: number): number {
  if (minFree === undefined) return Math.min(Math.ceil(total * 0.05), GiB);
  if (typeof minFree === 'number') return minFree;
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(minFree);
  if (pct) return Math.ceil((total * Number(pct[1])) / 100);
  const size = /^(\d+)(B|KiB|MiB|GiB|TiB)?$/.exec(minFree)!;
  const unit = { B: 1, KiB: 1024, MiB: MiB, GiB: GiB, TiB: 1024 * GiB }[size[2] ?? 'B']!;
  return Number(size[1]) * unit;
}

/** An archive with one event already in it, and a new snapshot waiting. */
async function prepared(minFree?: string | number) {
  const env = setupArchive({ rules: [{ name: 'last', count: 3 }, { name: 'daily', every: 'day', count: 3 }] });
  const yaml = [
    'source:', `  rdb: ${env.source}`, 'archive:', `  dir: ${env.archive}`,
    ...(minFree === undefined ? [] : [`  min_free: ${typeof minFree === 'number' ? minFree : JSON.stringify(minFree)}`]),
    'rules:', '  - name: last', '    count: 3', '  - name: daily', '    every: day', '    count: 3', 'log:', '  level: warn',
  ].join('\n');
  writeFileSync(env.config, yaml + '\n');
  writeSnapshot(env.source, { seed: 'first', mtime: new Date('2025-06-01T10:00:00Z'), size: 64 * 1024 });
  const instance = loadConfig({ config: env.config }).instances[0]!;
  // The first event goes in with plenty of room, whatever the reserve.
  const roomy = new FaultyFS(new OSFS());
  roomy.spaceOverride = () => ({ available: 2 ** 52, total: 2 ** 50 });
  const first = await runOnce({ fs: roomy, log: memoryLog() }, instance, { dryRun: false, force: false });
  expect(first.exitCode, first.error?.message).toBe(0);
  const snap = writeSnapshot(env.source, { seed: 'second', mtime: new Date('2025-06-01T11:00:00Z'), size: 3 * MiB + 17 });
  return { env, instance, snap };
}

describe('the free-space check', () => {
  const cases: Array<{ minFree?: string | number; total: number }> = [
    { total: 10 * GiB }, // default: 5% = 512 MiB
    { total: 100 * GiB }, // default: 5% = 5 GiB, capped at 1 GiB
    { total: 64 * MiB }, // default on a small filesystem: 5% = 3.2 MiB
    { minFree: 0, total: 10 * GiB },
    { minFree: '0', total: 10 * GiB },
    { minFree: '1GiB', total: 100 * GiB },
    { minFree: '512MiB', total: 10 * GiB },
    { minFree: '10%', total: 10 * GiB },
    { minFree: '0.5%', total: 100 * GiB },
    { minFree: '100%', total: 1 * GiB },
    { minFree: 12345, total: 10 * GiB },
  ];

  it.each(cases)('min_free $minFree on a $total-byte filesystem: refuses one byte short (exit 1, nothing written), proceeds at exactly enough', async ({ minFree, total }) => {
    const { env, instance, snap } = await prepared(minFree);
    const needed = snap.length + documentedReserve(minFree, total);

    // One byte short: refused before anything is created.
    const before = listTree(env.archive).filter((l) => !l.startsWith('.rdb-archiver/'));
    const short = new FaultyFS(new OSFS(), { wrapError: fsError });
    short.spaceOverride = () => ({ available: needed - 1, total });
    const refused = await runOnce({ fs: short, log: memoryLog() }, instance, { dryRun: false, force: false });
    figures.input(`min_free ${minFree ?? '(default)'}`);
    figures.outcome(`exit ${refused.exitCode} (refused)`);
    const problems: string[] = [];
    if (refused.exitCode !== 1) problems.push(`exit ${refused.exitCode}, expected 1`);
    const msg = refused.error?.message ?? '';
    if (!/not enough free space/.test(msg) || !msg.includes(join(env.archive, 'last')) || !msg.includes(String(needed)) || !msg.includes(String(needed - 1))) {
      problems.push(`unclear message: ${msg}`);
    }
    const created = short.calls.filter((c) => c.op === 'create' && c.path.startsWith(env.archive) && !c.path.includes('.rdb-archiver'));
    if (created.length > 0) problems.push(`created files although refused: ${created.map((c) => c.path).join(', ')}`);
    const after = listTree(env.archive).filter((l) => !l.startsWith('.rdb-archiver/'));
    if (JSON.stringify(after) !== JSON.stringify(before)) problems.push('the archive changed although the run was refused');

    // Exactly enough: archived.
    const exact = new FaultyFS(new OSFS(), { wrapError: fsError });
    exact.spaceOverride = () => ({ available: needed, total });
    const ok = await runOnce({ fs: exact, log: memoryLog() }, instance, { dryRun: false, force: false });
    figures.outcome(`exit ${ok.exitCode} (enough space)`);
    if (ok.exitCode !== 0 || ok.status !== 'archived') problems.push(`with exactly enough space: exit ${ok.exitCode} ${ok.status} ${ok.error?.message ?? ''}`);
    figures.check(`min_free ${minFree ?? '(default)'} total ${total}`, problems);
    expect(problems, reproduce()).toEqual([]);
  });

  it('the real CLI on the real filesystem: a reserve larger than the disk refuses with exit 1 and one clear line; lowering it archives', async () => {
    const { env } = await prepared('100TiB');
    const before = listTree(env.archive).filter((l) => !l.startsWith('.rdb-archiver/'));
    const r = await runNode(CLI_JS, ['once', '-c', env.config]);
    figures.input('min_free 100TiB (real statfs)');
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^failed: .*\/last: not enough free space: need \d+ bytes \(snapshot \+ reserve\), \d+ available; nothing was written$/m);
    expect(stackTraceLines(r.stderr)).toEqual([]);
    expect(listTree(env.archive).filter((l) => !l.startsWith('.rdb-archiver/'))).toEqual(before);
    for (const rule of ['last', 'daily']) expect(readdirSync(join(env.archive, rule)).some((n) => n.startsWith('.tmp'))).toBe(false);

    writeFileSync(env.config, readFileSync(env.config, 'utf8').replace('"100TiB"', '"1MiB"'));
    const again = await runNode(CLI_JS, ['once', '-c', env.config]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(readdirSync(join(env.archive, 'last'))).toContain('dump-2025-06-01T11-00-00.rdb');
  });

  it('an already archived event needs no space: the check is skipped when nothing is copied', async () => {
    const { instance } = await prepared();
    const faulty = new FaultyFS(new OSFS(), { wrapError: fsError });
    faulty.spaceOverride = () => ({ available: 0, total: 10 * GiB });
    // The state is lost: the run re-detects the source, finds the identical event and copies nothing.
    const first = await runOnce({ fs: new OSFS(), log: memoryLog() }, instance, { dryRun: false, force: false });
    expect(first.exitCode).toBe(0);
    const again = await runOnce({ fs: faulty, log: memoryLog() }, instance, { dryRun: false, force: true });
    expect(again.exitCode, again.error?.message).toBe(0);
    expect(again.snapshot?.outcome).toBe('already-archived');
  });
});
