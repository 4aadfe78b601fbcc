/**
 * The source goes back to older content with its original mtime (attack
 * review F7: `cp -p` of an old dump over dump.rdb, or `mv` of a kept copy):
 * its current content must be the latest event, so `restore latest` gives
 * back what the server has now. Before, the old event (same name, same
 * sha256) was reused as "already archived" and "latest" stayed on content
 * the server no longer held.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

const HOUR = 3_600_000;
const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

interface OnceJson { status: string; snapshot: { ts: string; sha256: string; outcome: string } | null; warnings: string[] }
const once = async (env: ArchiveEnv) => {
  const r = await runCli(['once', '--json', '-c', env.config]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return jsonOf<OnceJson>(r);
};

async function restoredLatest(env: ArchiveEnv, name: string): Promise<string> {
  const to = join(env.root, name);
  const r = await runCli(['restore', 'latest', '--to', to, '-c', env.config]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return sha(readFileSync(to));
}

describe('the source goes back to older content with its original mtime', () => {
  for (const how of ['cp -p over the file', 'mv of a kept copy'] as const) {
    it(`(${how}) is archived as a new event, the latest, and restore latest gives that content`, async () => {
      const env = setupArchive({ rules: [{ name: 'last', count: 10 }] });
      const older = writeSnapshot(env.source, { seed: 'older', mtime: new Date(Date.now() - 2 * HOUR) });
      const kept = join(env.root, 'kept.rdb');
      execFileSync('cp', ['-p', env.source, kept]);
      const first = await once(env);

      const newer = writeSnapshot(env.source, { seed: 'newer', mtime: new Date(Date.now() - HOUR) });
      const second = await once(env);
      expect(second.snapshot!.sha256).toBe(newer.sha256);
      expect(await restoredLatest(env, 'r1.rdb')).toBe(newer.sha256);

      // The server's data goes back to the older content, with the older mtime.
      if (how === 'cp -p over the file') execFileSync('cp', ['-p', kept, env.source]);
      else renameSync(kept, env.source);
      const back = await once(env);
      expect(back.status).toBe('archived');
      expect(back.snapshot).toMatchObject({ sha256: older.sha256, outcome: 'archived' });
      // Named after its mtime, after the old event of that second (an ordinal): names sort, seq decides.
      expect(back.snapshot!.ts).toBe(`${first.snapshot!.ts}_1`);
      expect(back.warnings.join('\n')).toContain('source went back to older content');

      expect(await restoredLatest(env, 'r2.rdb')).toBe(older.sha256);
      const list = jsonOf<Record<string, Array<{ ts: string }>>>(await runCli(['list', '--json', '-c', env.config]));
      expect(list.last!.map((e) => e.ts)).toEqual([back.snapshot!.ts, second.snapshot!.ts, first.snapshot!.ts]);
      // And nothing more to do until it changes again.
      expect((await once(env)).status).toBe('unchanged');
      // check names it for what it is, not as a wrong clock.
      const check = await runCli(['check', '-c', env.config]);
      expect(check.stdout).toContain('source went back to older content');
      expect(check.stdout).not.toContain('source clock stepped back');
    });
  }

  it('content rewritten in place with the same size and its mtime put back (only the ctime moves) is archived, not "unchanged"', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 10 }] });
    const mtime = new Date(Date.now() - HOUR);
    const a = writeSnapshot(env.source, { seed: 'aaaa', mtime, size: 4096 });
    expect((await once(env)).snapshot!.sha256).toBe(a.sha256);
    await new Promise((r) => setTimeout(r, 20)); // a later ctime even on a coarse clock
    const b = writeSnapshot(env.source, { seed: 'bbbb', mtime, size: 4096 }); // same inode, size and mtime
    expect(b.length).toBe(a.length);
    const r = await once(env);
    expect(r.status).toBe('archived');
    expect(r.snapshot!.sha256).toBe(b.sha256);
    expect(await restoredLatest(env, 'r.rdb')).toBe(b.sha256);
  });
});
