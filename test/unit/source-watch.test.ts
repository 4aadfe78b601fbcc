/**
 * The watch's pure parts (event classification, debounce deadline, fallback
 * kinds, job merging), the one-lane cycle runner, and SourceWatch on a real
 * temp folder: a burst of renames onto the source collapses into one trigger,
 * other files trigger nothing, a removed folder falls back and is re-armed.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CycleRunner, mergeJobs, type CycleJob } from '../../src/pipeline/cycle-runner.js';
import { classifyEvent, debounceDeadline, fallbackKindOf, MAX_WAIT_FACTOR, SourceWatch, unwatchableFilesystem, type FolderMode, type TriggerInfo } from '../../src/pipeline/source-watch.js';
import { parseWatchRecord } from '../../src/pipeline/watch-record.js';
import { memoryLog } from '../../src/core/log.js';
import { tempDir } from '../helpers/cli.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('watch: pure parts', () => {
  it('classifies events: the source name (rename onto it, write to it), the folder itself, the rest ignored', () => {
    const names = new Set(['dump.rdb']);
    expect(classifyEvent('dump.rdb', names, 'data')).toBe('source');
    expect(classifyEvent('temp-123.rdb', names, 'data')).toBe('ignore');
    expect(classifyEvent('appendonly.aof', names, 'data')).toBe('ignore');
    expect(classifyEvent('data', names, 'data')).toBe('folder');
    expect(classifyEvent(null, names, 'data')).toBe('folder');
  });

  it('debounces after the last event, but never longer than MAX_WAIT_FACTOR debounces after the first', () => {
    expect(debounceDeadline(1000, 1000, 500)).toBe(1500);
    expect(debounceDeadline(1000, 1400, 500)).toBe(1900);
    expect(debounceDeadline(1000, 100_000, 500)).toBe(1000 + MAX_WAIT_FACTOR * 500);
    expect(debounceDeadline(1000, 1000, 0)).toBe(1000);
  });

  it('maps watch errors to fallback kinds and knows the filesystems inotify cannot watch', () => {
    expect(fallbackKindOf('ENOSPC')).toBe('limit');
    expect(fallbackKindOf('EMFILE')).toBe('limit');
    expect(fallbackKindOf('ENOENT')).toBe('folder-gone');
    expect(fallbackKindOf('EACCES')).toBe('error');
    expect(unwatchableFilesystem(0x6969)).toBe('nfs');
    expect(unwatchableFilesystem(0x65735546)).toBe('fuse');
    expect(unwatchableFilesystem(0xef53)).toBeUndefined(); // ext4
    expect(unwatchableFilesystem(0x01021994)).toBeUndefined(); // tmpfs
  });

  it('parses watch records defensively', () => {
    expect(parseWatchRecord('nonsense')).toBeUndefined();
    expect(parseWatchRecord(JSON.stringify({ version: 1, pid: 'x' }))).toBeUndefined();
    const ok = { version: 1, pid: 5, host: 'h', dir: '/d', mode: 'fallback', kind: 'limit', reason: 'r', since: 's', startedAt: 't', debounceMs: 500 };
    expect(parseWatchRecord(JSON.stringify(ok))).toMatchObject({ mode: 'fallback', kind: 'limit', pid: 5 });
    expect(parseWatchRecord(JSON.stringify({ ...ok, kind: 'bogus' }))).toBeUndefined();
  });
});

describe('CycleRunner: one lane, one follow-up at most', () => {
  const gate = () => {
    let open!: () => void;
    const p = new Promise<void>((r) => (open = r));
    return { p, open };
  };

  it('merges triggers during a cycle into one follow-up, skips a tick during a tick, defers a tick during a watch cycle', async () => {
    const ran: CycleJob[] = [];
    const gates: Array<ReturnType<typeof gate>> = [];
    let active = 0;
    let maxActive = 0;
    const runner = new CycleRunner(async (job) => {
      ran.push(job);
      active += 1;
      maxActive = Math.max(maxActive, active);
      const g = gate();
      gates.push(g);
      await g.p;
      active -= 1;
    });
    expect(runner.request({ trigger: 'watch', instances: ['a'] })).toBe('started');
    for (let i = 0; i < 10; i++) expect(runner.request({ trigger: 'watch', instances: [i % 2 ? 'a' : 'b'] })).toBe('follow-up');
    expect(runner.request({ trigger: 'schedule', instances: ['a', 'b', 'c'] })).toBe('follow-up');
    expect(runner.pendingFollowUp).toEqual({ trigger: 'schedule', instances: ['b', 'a', 'c'] });
    gates[0]!.open();
    await until(() => ran.length === 2, 'the follow-up');
    // During a scheduled cycle a tick is skipped; a watch trigger is still one follow-up.
    expect(runner.request({ trigger: 'schedule', instances: ['a'] })).toBe('skipped');
    expect(runner.request({ trigger: 'watch', instances: ['a'] })).toBe('follow-up');
    gates[1]!.open();
    await until(() => ran.length === 3, 'the second follow-up');
    gates[2]!.open();
    await runner.running;
    expect(ran).toHaveLength(3);
    expect(maxActive).toBe(1);
  });

  it('stop() drops the follow-up; the running cycle is what shutdown waits for', async () => {
    const ran: string[] = [];
    const g = gate();
    const runner = new CycleRunner(async (job) => {
      ran.push(job.trigger);
      await g.p;
    });
    runner.request({ trigger: 'watch', instances: ['a'] });
    runner.request({ trigger: 'watch', instances: ['a'] });
    const running = runner.running!;
    runner.stop();
    expect(runner.request({ trigger: 'schedule', instances: ['a'] })).toBe('stopped');
    g.open();
    await running;
    await sleep(20);
    expect(ran).toEqual(['watch']);
    expect(runner.running).toBeUndefined();
  });

  it('mergeJobs keeps order and lets a schedule tick win the trigger', () => {
    expect(mergeJobs(undefined, { trigger: 'watch', instances: ['a'] })).toEqual({ trigger: 'watch', instances: ['a'] });
    expect(mergeJobs({ trigger: 'watch', instances: ['b'] }, { trigger: 'watch', instances: ['a', 'b'] })).toEqual({ trigger: 'watch', instances: ['b', 'a'] });
  });
});

describe('SourceWatch on a real folder', () => {
  const start = async (dir: string, debounceMs: number, env: NodeJS.ProcessEnv = {}) => {
    const triggers: Array<{ instances: string[]; info: TriggerInfo }> = [];
    const modes: FolderMode[] = [];
    const watch = new SourceWatch([{ instance: 'a', rdb: join(dir, 'dump.rdb') }, { instance: 'b', rdb: join(dir, 'other.rdb') }], {
      debounceMs, log: memoryLog(), env,
      trigger: (instances, info) => triggers.push({ instances, info }),
      onMode: (_dir, _names, mode) => modes.push(mode),
    });
    await watch.start();
    return { watch, triggers, modes };
  };

  it('collapses a burst of Redis-style saves (temp file renamed over dump.rdb) into one trigger; other files trigger nothing', async () => {
    const dir = tempDir();
    const { watch, triggers, modes } = await start(dir, 300);
    try {
      expect(modes.at(-1)?.mode).toBe('watching');
      writeFileSync(join(dir, 'unrelated.txt'), 'x');
      for (let i = 0; i < 10; i++) {
        writeFileSync(join(dir, `temp-${i}.rdb`), `save ${i}`);
        renameSync(join(dir, `temp-${i}.rdb`), join(dir, 'dump.rdb'));
      }
      await until(() => triggers.length > 0, 'the trigger');
      await sleep(600);
      expect(triggers).toHaveLength(1);
      expect(triggers[0]!.instances).toEqual(['a']);
      expect(triggers[0]!.info.events).toBeGreaterThanOrEqual(1);
      expect(triggers[0]!.info.files).toEqual([join(dir, 'dump.rdb')]);
    } finally {
      watch.close();
    }
  });

  it('falls back when the folder is removed, logs it once, and re-arms (with a trigger) when it is back', async () => {
    const root = tempDir();
    const dir = join(root, 'data');
    mkdirSync(dir);
    const { watch, triggers, modes } = await start(dir, 50);
    try {
      rmSync(dir, { recursive: true });
      await until(() => modes.some((m) => m.mode === 'fallback' && m.kind === 'folder-gone'), 'the fallback');
      await sleep(1500); // retries while it is gone change nothing
      expect(modes.filter((m) => m.mode === 'fallback')).toHaveLength(1);
      mkdirSync(dir);
      await until(() => modes.at(-1)?.mode === 'watching', 'the re-arm');
      await until(() => triggers.some((t) => t.info.rearmed), 'the re-arm trigger');
      expect(triggers.find((t) => t.info.rearmed)!.instances.sort()).toEqual(['a', 'b']);
      // And the new folder is really watched.
      const before = triggers.length;
      writeFileSync(join(dir, 'other.rdb'), 'x');
      await until(() => triggers.length > before, 'a trigger from the new folder');
      expect(triggers.at(-1)!.instances).toEqual(['b']);
    } finally {
      watch.close();
    }
  });

  it('RDB_ARCHIVER_TEST_WATCH_FAIL forces the fallback with that error', async () => {
    const dir = tempDir();
    const { watch, modes } = await start(dir, 50, { RDB_ARCHIVER_TEST_WATCH_FAIL: 'ENOSPC' });
    watch.close();
    expect(modes).toEqual([expect.objectContaining({ mode: 'fallback', kind: 'limit' })]);
  });
});
