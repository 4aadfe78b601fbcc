/**
 * Files another user planted in a rule folder (issue 10 item 5): with
 * dir_mode 0770 a group member can write there. Files not owned by the
 * folder's owner are not events, for retention, list, verify, restore,
 * status and check alike; they are reported as foreign files.
 */
import { createHash } from 'node:crypto';
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { setupArchive, snapshotBytes, writeSnapshot } from '../helpers/snapshots.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

describe.skipIf(!isRoot)('foreign files in a rule folder (needs root to plant files as nobody)', () => {
  it('planted newer "events" are not events: retention keeps every real one, list/verify/restore ignore them, check WARNS naming folder and count', async () => {
    const env = setupArchive();
    writeFileSync(env.config, [
      'source:', `  rdb: ${env.source}`,
      'archive:', `  dir: ${env.archive}`, '  dir_mode: "0770"',
      'rules:', '  - name: last', '    count: 3', '',
    ].join('\n'));
    const real: string[] = [];
    for (const [i, hour] of [8, 9, 10].entries()) {
      const snap = writeSnapshot(env.source, { seed: `real-${i}`, mtime: new Date(Date.now() - (11 - hour) * 3600_000) });
      real.push(snap.sha256);
      expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    }
    const dir = join(env.archive, 'last');
    const realFiles = readdirSync(dir).sort();
    expect(realFiles.filter((f) => f.endsWith('.rdb'))).toHaveLength(3);

    // A group member plants three newer, valid-looking events (with matching sidecars).
    const planted: string[] = [];
    for (const s of [0, 1, 2]) {
      const bytes = snapshotBytes(`planted-${s}`);
      const name = `dump-2027-01-01T00-00-0${s}`;
      writeFileSync(join(dir, `${name}.rdb`), bytes);
      writeFileSync(join(dir, `${name}.sha256`), `${createHash('sha256').update(bytes).digest('hex')}  ${name}.rdb\n`);
      for (const ext of ['rdb', 'sha256']) chownSync(join(dir, `${name}.${ext}`), NOBODY, NOBODY);
      planted.push(`${name}.rdb`, `${name}.sha256`);
    }

    // The next run archives a change; retention keeps the 3 newest REAL events and reports the planted files.
    const next = writeSnapshot(env.source, { seed: 'real-3', mtime: new Date(Date.now() - 60_000) });
    const once = await runCli(['once', '-c', env.config, '--json']);
    expect(once.code, once.stderr).toBe(0);
    const warnings = jsonOf<{ warnings: string[] }>(once).warnings.join('\n');
    expect(warnings).toContain(`rule folder ${dir} holds 6 foreign files`);
    expect(warnings).toContain('not owned by root (uid 0)');
    expect(warnings).toContain(`rule folder ${dir} is writable by its group or by others (mode 0770)`);
    const after = readdirSync(dir);
    for (const f of planted) expect(after, `${f} was deleted`).toContain(f); // never deleted either
    const rdbs = after.filter((f) => f.endsWith('.rdb') && !f.startsWith('dump-2027'));
    expect(rdbs).toHaveLength(3); // the oldest real one rotated out, by real events only
    expect(rdbs).toContain(realFiles.filter((f) => f.endsWith('.rdb'))[2]);

    // list: no planted event (text and JSON), a warning line.
    const listJson = await runCli(['list', '--json', '-c', env.config]);
    expect(listJson.stdout).not.toContain('2027-01-01');
    const list = await runCli(['list', '-c', env.config]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).not.toMatch(/^\s+2027-01-01T00-00-0/m); // no event row (the warning names the files)
    expect(list.stdout).toContain(`warning: rule folder ${dir} holds 6 foreign files`);

    // verify: only real events are checked; the planted files are reported, not "ok".
    const verify = await runCli(['verify', '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    expect(verify.stdout).not.toContain('"2027-01-01T00-00-0');
    expect(verify.stdout).toContain('6 foreign files');

    // restore latest: the newest real snapshot, not a planted one.
    const to = join(env.root, 'restored.rdb');
    const restore = await runCli(['restore', 'latest', '--to', to, '-c', env.config]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(createHash('sha256').update(readFileSync(to)).digest('hex')).toBe(next.sha256);

    // status and check.
    const status = await runCli(['status', '-c', env.config]);
    expect(status.stdout).toContain('6 FOREIGN (not counted)');
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toContain(`rule folder ${dir} holds 6 foreign files`);
    expect(existsSync(join(dir, 'dump-2027-01-01T00-00-00.rdb'))).toBe(true);
  });
});
