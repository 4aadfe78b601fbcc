/**
 * How `prune` reads its rule folders: one listing per folder and run, also
 * when the state file is missing and the protection of the source's content
 * is found in the archive itself (that search and the plan share the scan);
 * and OSFS.fileNames, the listing the scan uses.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { OSFS, type DirEntry } from '../../src/core/fs.js';
import { memoryLog } from '../../src/core/log.js';
import { runPrune } from '../../src/pipeline/cycle.js';
import { eventFileName, type Timestamp } from '../../src/core/timestamp.js';

/** OSFS that counts the listings of each folder (fileNames goes through a subclass's readdir). */
class ListingCountFS extends OSFS {
  readonly listings = new Map<string, number>();
  override async readdir(path: string): Promise<DirEntry[]> {
    this.listings.set(path, (this.listings.get(path) ?? 0) + 1);
    return super.readdir(path);
  }
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-prune-scan-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

/** An event as the archive holds it: the .rdb and its sha256sum sidecar. */
function writeEvent(folder: string, ts: Timestamp, content: string): void {
  mkdirSync(folder, { recursive: true, mode: 0o755 });
  writeFileSync(join(folder, eventFileName('rdb', ts)), content);
  writeFileSync(join(folder, eventFileName('sha256', ts)), `${sha(content)}  ${eventFileName('rdb', ts)}\n`);
}

describe('prune without a state file', () => {
  it('lists each rule folder once, and still keeps the event holding the source\'s content', async () => {
    const archive = join(dir, 'arch');
    const source = join(dir, 'dump.rdb');
    const older = '2020-01-01T00-00-00' as Timestamp;
    const middle = '2020-01-01T01-00-00' as Timestamp;
    const newest = '2020-01-01T02-00-00' as Timestamp;
    for (const rule of ['hourly', 'daily']) {
      writeEvent(join(archive, rule), older, 'content A');
      writeEvent(join(archive, rule), middle, 'content B');
      writeEvent(join(archive, rule), newest, 'content C');
    }
    writeFileSync(source, 'content A'); // the source went back to the oldest event's content
    const config = join(dir, 'config.yaml');
    writeFileSync(config, [
      'source:', `  rdb: ${JSON.stringify(source)}`,
      'archive:', `  dir: ${JSON.stringify(archive)}`, '  create: true',
      'timezone: UTC',
      'rules:',
      '  - name: hourly', '    every: hour', '    count: 1',
      '  - name: daily', '    every: day', '    count: 1',
    ].join('\n') + '\n');
    const instance = loadConfig({ config }).instances[0]!;
    const fs = new ListingCountFS();

    const report = await runPrune({ fs, log: memoryLog() }, instance, { dryRun: false });

    expect(report.exitCode).toBe(0);
    expect(report.warnings.join('\n')).toMatch(/state file .* is missing/);
    for (const rule of ['hourly', 'daily']) {
      expect(fs.listings.get(join(archive, rule)), rule).toBe(1);
      const plan = report.retention[rule]!;
      expect(plan.keep.map((d) => d.ts).sort(), rule).toEqual([older, newest]);
      expect(plan.keep.find((d) => d.ts === older)!.reason).toMatch(/holds the source's current content/);
      expect(plan.delete.map((d) => d.ts), rule).toEqual([middle]);
      expect(readdirSync(join(archive, rule)).sort()).toEqual(
        [eventFileName('rdb', older), eventFileName('sha256', older), eventFileName('rdb', newest), eventFileName('sha256', newest)].sort(),
      );
    }
  });

  it('reports a rule folder that cannot be scanned once, and prunes the others', async () => {
    const archive = join(dir, 'arch');
    const newest = '2020-01-01T02-00-00' as Timestamp;
    const older = '2020-01-01T00-00-00' as Timestamp;
    writeEvent(join(archive, 'hourly'), older, 'A');
    writeEvent(join(archive, 'hourly'), newest, 'B');
    mkdirSync(join(dir, 'elsewhere'));
    symlinkSync(join(dir, 'elsewhere'), join(archive, 'daily')); // a rule folder that is a symlink is refused
    const config = join(dir, 'config.yaml');
    writeFileSync(config, [
      'source:', `  rdb: ${JSON.stringify(join(dir, 'none.rdb'))}`,
      'archive:', `  dir: ${JSON.stringify(archive)}`, '  create: true',
      'timezone: UTC',
      'rules:',
      '  - name: hourly', '    every: hour', '    count: 1',
      '  - name: daily', '    every: day', '    count: 1',
    ].join('\n') + '\n');
    const fs = new ListingCountFS();

    const report = await runPrune({ fs, log: memoryLog() }, loadConfig({ config }).instances[0]!, { dryRun: false });

    expect(report.errors).toHaveLength(1);
    expect(report.errors[0]).toMatchObject({ rule: 'daily', stage: 'retention' });
    expect(report.errors[0]!.message).toMatch(/symlink/);
    expect(report.exitCode).not.toBe(0);
    expect(report.retention['hourly']!.delete.map((d) => d.ts)).toEqual([older]);
    expect(existsSync(join(archive, 'hourly', eventFileName('rdb', older)))).toBe(false);
    expect(fs.listings.get(join(archive, 'hourly'))).toBe(1);
  });
});

describe('OSFS.fileNames', () => {
  it('lists the regular files only: no symlink (even to a file), folder or socket-like entry', async () => {
    writeFileSync(join(dir, 'a'), 'a');
    writeFileSync(join(dir, 'b'), 'b');
    symlinkSync(join(dir, 'a'), join(dir, 'link-to-a'));
    symlinkSync(join(dir, 'missing'), join(dir, 'dangling'));
    mkdirSync(join(dir, 'folder'));
    expect((await new OSFS().fileNames(dir)).sort()).toEqual(['a', 'b']);
  });

  it('goes through a subclass\'s readdir (fault injection, counting)', async () => {
    writeFileSync(join(dir, 'a'), 'a');
    mkdirSync(join(dir, 'folder'));
    const calls: string[] = [];
    class Recording extends OSFS {
      override async readdir(path: string): Promise<DirEntry[]> {
        calls.push(path);
        return super.readdir(path);
      }
    }
    expect(await new Recording().fileNames(dir)).toEqual(['a']);
    expect(calls).toEqual([dir]);
  });

  it('names the operation and path when the listing fails', async () => {
    await expect(new OSFS().fileNames(join(dir, 'missing'))).rejects.toMatchObject({ op: 'readdir', code: 'ENOENT' });
  });
});
