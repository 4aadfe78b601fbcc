/**
 * nodes.conf that changes while the RDB is being copied (issue 10 item 17):
 * the CLI is paused at its second read of dump.rdb (mid-copy) and the test
 * rewrites nodes.conf the way Redis >= 7.2 does (temp file + rename).
 */
import { readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCliPausedAt } from '../helpers/cli.js';
import { NODES_CONF } from '../helpers/events.js';
import { readJson, setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const RDB_MTIME = new Date('2025-03-01T12:00:00Z');
const TS = '2025-03-01T12-00-00';
const NODES_V2 = NODES_CONF.replace('0-16383', '0-8191').replace('currentEpoch 1', 'currentEpoch 2');

interface OnceJson {
  status: string;
  snapshot: { ts: string; nodes: boolean; nodesChanged?: { kept: string; before: { sha256: string; mtime: string } | null; after: { sha256: string; mtime: string } | null } } | null;
  warnings: string[];
  exitCode: number;
}

function rewriteNodes(path: string, text: string, mtime: Date): void {
  writeFileSync(`${path}.tmp`, text);
  utimesSync(`${path}.tmp`, mtime, mtime);
  renameSync(`${path}.tmp`, path);
}

describe('nodes.conf changes during the RDB copy', () => {
  it('keeps the version read before the copy (nearest to the RDB save), warns, and records the change in the report and the state', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }], nodes: true });
    rewriteNodes(env.nodes!, NODES_CONF, new Date('2025-03-01T11:00:00Z'));
    writeSnapshot(env.source, { seed: 'cluster', mtime: RDB_MTIME });

    const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 2 }, () => {
      rewriteNodes(env.nodes!, NODES_V2, new Date()); // a failover while the copy runs
    });
    expect(r.paused, r.stderr).toBe(true);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(readFileSync(join(env.archive, 'all', `nodes-${TS}.config`), 'utf8')).toBe(NODES_CONF);

    const out = jsonOf<OnceJson>(r);
    expect(out.snapshot!.nodes).toBe(true);
    expect(out.snapshot!.nodesChanged).toMatchObject({ kept: 'before' });
    expect(out.snapshot!.nodesChanged!.before!.mtime).toBe('2025-03-01T11:00:00.000Z');
    expect(out.snapshot!.nodesChanged!.after).not.toBeNull();
    expect(out.warnings.join('\n')).toMatch(/nodes\.conf .* changed during the copy of the RDB: archived the version read before the copy/);
    expect(r.stderr).toMatch(/changed during the copy of the RDB/);

    const state = readJson<{ archived: { ts: string; nodesChanged?: { kept: string } } }>(env.state);
    expect(state.archived.ts).toBe(TS);
    expect(state.archived.nodesChanged).toMatchObject({ kept: 'before' });
  });

  it('an unchanged nodes.conf (only read twice) gives no warning and no record', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }], nodes: true });
    rewriteNodes(env.nodes!, NODES_CONF, new Date('2025-03-01T11:00:00Z'));
    writeSnapshot(env.source, { seed: 'cluster', mtime: RDB_MTIME });
    const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 2 }, () => undefined);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = jsonOf<OnceJson>(r);
    expect(out.warnings).toEqual([]);
    expect(out.snapshot!.nodesChanged).toBeUndefined();
    expect(readFileSync(join(env.archive, 'all', `nodes-${TS}.config`), 'utf8')).toBe(NODES_CONF);
  });

  it('nodes.conf that appears during the copy: archived (later than the RDB, said in a warning)', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }], nodes: true });
    writeSnapshot(env.source, { seed: 'cluster', mtime: RDB_MTIME });
    const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 2 }, () => {
      rewriteNodes(env.nodes!, NODES_V2, new Date());
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = jsonOf<OnceJson>(r);
    expect(out.snapshot!.nodesChanged).toMatchObject({ kept: 'after', before: null });
    expect(out.warnings.join('\n')).toMatch(/nodes\.conf .* appeared during the copy of the RDB/);
    expect(readFileSync(join(env.archive, 'all', `nodes-${TS}.config`), 'utf8')).toBe(NODES_V2);
  });
});
