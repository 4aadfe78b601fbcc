/**
 * The validation thread (src/rdb/validate-thread.ts): a pass that validates
 * in a worker thread beside the sha256 must give exactly what the
 * single-thread pass gives (same PassResult, same errors with the same
 * offsets), stop at once on a file that is not an RDB, fail cleanly when the
 * thread crashes, stop on abort, and never keep a process alive.
 *
 * Runs the built modules (dist/): the thread's script exists only there.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { setupArchive } from '../helpers/snapshots.js';
import { buildRdb, prng } from '../helpers/rdb-builder.js';

const DIST = resolve(import.meta.dirname, '../../dist');
type Pass = { bytes: number; sha256: string; rdb: unknown };
type CopyPass = (source: { read: (b: Buffer, o: number, l: number, p: number) => Promise<number> }, path: string, out: undefined, signal?: AbortSignal, validation?: 'full' | 'crc', maxRate?: number, expectedBytes?: number) => Promise<Pass>;
let copyPass: CopyPass;
let thread: { THREAD_ENV: string; THREAD_MIN_BYTES: number; terminateValidationThreadForTests: () => Promise<void> };
let COPY_CHUNK_BYTES: number;

let dir: string;
let big: string; // a multi-chunk RDB with many small keys: chunk boundaries fall inside values and opcodes

beforeAll(async () => {
  const worker = (await import(pathToFileURL(join(DIST, 'pipeline/worker.js')).href)) as { copyPass: CopyPass; COPY_CHUNK_BYTES: number };
  copyPass = worker.copyPass;
  COPY_CHUNK_BYTES = worker.COPY_CHUNK_BYTES;
  thread = await import(pathToFileURL(join(DIST, 'rdb/validate-thread.js')).href);
  dir = mkdtempSync(join(tmpdir(), 'validate-thread-')); // shared by every test of the file
  big = join(dir, 'big.rdb');
  const { writeRdb } = (await import(pathToFileURL(resolve(import.meta.dirname, '../../scripts/bench-rdbgen.mjs')).href)) as {
    writeRdb: (out: string, size: number, opts: Record<string, unknown>) => Promise<unknown>;
  };
  await writeRdb(big, 5 * COPY_CHUNK_BYTES + 12345, { crc64Module: pathToFileURL(join(DIST, 'rdb/crc64.js')).href, minValue: 1, maxValue: 3000 });
});

afterEach(() => {
  delete process.env[thread.THREAD_ENV];
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A source over bytes in memory, counting the reads; optionally slow. */
function memorySource(data: Uint8Array, delayMs = 0) {
  const source = {
    reads: 0,
    async read(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
      source.reads += 1;
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      const n = Math.max(0, Math.min(length, data.length - position));
      buffer.set(data.subarray(position, position + n), offset);
      return n;
    },
  };
  return source;
}

async function passOf(data: Uint8Array, mode: 'always' | 'never', validation: 'full' | 'crc' = 'full'): Promise<Pass | string> {
  process.env[thread.THREAD_ENV] = mode;
  try {
    return await copyPass(memorySource(data), '/src/dump.rdb', undefined, undefined, validation, undefined, data.length);
  } catch (err) {
    return `${(err as Error).name}: ${(err as Error).message}`;
  }
}

describe('the pass with the validation thread', () => {
  it('gives the single-thread result, on a multi-chunk dump and on damaged copies of it (truncated, flipped bytes, bad magic)', async () => {
    const data = new Uint8Array(readFileSync(big));
    const rand = prng(15);
    const cases: Array<[string, Uint8Array]> = [['intact', data]];
    for (const cut of [9, 100, COPY_CHUNK_BYTES - 1, COPY_CHUNK_BYTES, 3 * COPY_CHUNK_BYTES + 77, data.length - 9, data.length - 1]) cases.push([`cut at ${cut}`, data.subarray(0, cut)]);
    for (let i = 0; i < 6; i++) {
      const at = Math.floor(rand() * data.length);
      const copy = data.slice();
      copy[at] ^= 1 + Math.floor(rand() * 255);
      cases.push([`flip at ${at}`, copy]);
    }
    const badMagic = data.slice();
    badMagic.set(new TextEncoder().encode('REDIZ'), 0);
    cases.push(['bad magic', badMagic]);
    for (const [name, bytes] of cases) {
      for (const validation of ['full', 'crc'] as const) {
        const single = await passOf(bytes, 'never', validation);
        const threaded = await passOf(bytes, 'always', validation);
        expect(threaded, `${name}, validation ${validation}`).toEqual(single);
      }
    }
    const intact = (await passOf(data, 'always')) as Pass;
    expect(intact.bytes).toBe(data.length);
    expect(intact.sha256).toBe(execFileSync('sha256sum', [big], { encoding: 'utf8' }).split(' ')[0]);
  });

  it('gives the single-thread result on small crafted files, including structure errors with their offsets', async () => {
    const good = buildRdb();
    const cases: Uint8Array[] = [good, new Uint8Array(0), new TextEncoder().encode('HELLO'), good.subarray(0, good.length - 3)];
    const corrupt = good.slice();
    corrupt[20] = 0x22; // inside the AUX fields or the body: either way an error that names an offset
    cases.push(corrupt);
    for (const bytes of cases) expect(await passOf(bytes, 'always')).toEqual(await passOf(bytes, 'never'));
  });

  it('stops at the first chunk on a file that is not an RDB', async () => {
    process.env[thread.THREAD_ENV] = 'always';
    const junk = new Uint8Array(8 * COPY_CHUNK_BYTES).fill(0x41);
    const source = memorySource(junk);
    await expect(copyPass(source, '/src/junk', undefined, undefined, 'full', undefined, junk.length)).rejects.toThrow(/not an RDB file: bad magic "AAAAAAAAA"/);
    expect(source.reads).toBeLessThanOrEqual(2); // the first chunk, and at most the read issued with it
  });

  it('fails with ValidationThreadError when the thread dies mid-pass, and the next pass starts a new thread', async () => {
    process.env[thread.THREAD_ENV] = 'always';
    const data = new Uint8Array(readFileSync(big));
    const pass = copyPass(memorySource(data, 40), big, undefined, undefined, 'full', undefined, data.length);
    await new Promise((r) => setTimeout(r, 100));
    await thread.terminateValidationThreadForTests();
    await expect(pass).rejects.toThrow(/validate .*big\.rdb: the validation thread failed: the thread exited/);
    await expect(pass).rejects.toMatchObject({ name: 'ValidationThreadError', exitCode: 70 });
    const again = (await passOf(data, 'always')) as Pass;
    expect(again.bytes).toBe(data.length);
  });

  it('stops on abort, and the thread serves the next pass', async () => {
    process.env[thread.THREAD_ENV] = 'always';
    const data = new Uint8Array(readFileSync(big));
    const controller = new AbortController();
    const source = memorySource(data, 20);
    const pass = copyPass(source, big, undefined, controller.signal, 'full', undefined, data.length);
    setTimeout(() => controller.abort(), 50);
    await expect(pass).rejects.toMatchObject({ name: 'AbortError' });
    expect(source.reads).toBeLessThan(Math.ceil(data.length / COPY_CHUNK_BYTES) + 1);
    expect(await passOf(data, 'always')).toEqual(await passOf(data, 'never'));
  });

  it('uses the thread only from THREAD_MIN_BYTES, unless forced', async () => {
    expect(thread.THREAD_MIN_BYTES).toBeGreaterThan(COPY_CHUNK_BYTES);
    const { threadWanted } = (await import(pathToFileURL(join(DIST, 'rdb/validate-thread.js')).href)) as { threadWanted: (n: number | undefined, env: NodeJS.ProcessEnv) => boolean };
    expect(threadWanted(thread.THREAD_MIN_BYTES - 1, {})).toBe(false);
    expect(threadWanted(thread.THREAD_MIN_BYTES, {})).toBe(true);
    expect(threadWanted(undefined, {})).toBe(false);
    expect(threadWanted(1, { [thread.THREAD_ENV]: 'always' })).toBe(true);
    expect(threadWanted(10 * thread.THREAD_MIN_BYTES, { [thread.THREAD_ENV]: 'never' })).toBe(false);
  });

  it('does not keep a process alive after its pass', () => {
    const script = `
      const { copyPass } = await import(${JSON.stringify(pathToFileURL(join(DIST, 'pipeline/worker.js')).href)});
      const { open } = await import('node:fs/promises');
      const fh = await open(${JSON.stringify(big)}, 'r');
      const source = { read: (b, o, l, p) => fh.read(b, o, l, p).then((x) => x.bytesRead) };
      const r = await copyPass(source, 'big.rdb', undefined, undefined, 'full', undefined, (await fh.stat()).size);
      await fh.close();
      console.log(r.bytes);`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, [thread.THREAD_ENV]: 'always' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(Number(r.stdout.trim())).toBe(statSync(big).size);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
});

describe('once with the validation thread', () => {
  it('archives a multi-chunk dump on the thread on every copy path, with the sha256 of the file', async () => {
    for (const method of ['read-write', 'direct', 'copy_file_range']) {
      const env = setupArchive();
      writeFileSync(env.source, readFileSync(big));
      const r = await runCli(['once', '-c', env.config, '--json'], { env: { RDB_ARCHIVER_COPY_METHOD: method, RDB_ARCHIVER_VALIDATE_THREAD: 'always' } });
      expect(r.code, r.stderr).toBe(0);
      const report = jsonOf<{ snapshot: { sha256: string } }>(r);
      expect(report.snapshot.sha256).toBe(execFileSync('sha256sum', [big], { encoding: 'utf8' }).split(' ')[0]);
    }
  });

  it('fails with exit 70 when the thread crashes: no final file, no temp left', async () => {
    const env = setupArchive();
    writeFileSync(env.source, readFileSync(big));
    for (const method of ['read-write', 'direct', 'copy_file_range']) {
      const r = await runCli(['once', '-c', env.config], { env: { RDB_ARCHIVER_VALIDATE_THREAD: 'crash', RDB_ARCHIVER_COPY_METHOD: method } });
      expect(r.code, r.stderr).toBe(70);
      expect(r.stdout + r.stderr).toMatch(/validation thread failed/);
      for (const rule of readdirSync(env.archive).filter((name) => !name.startsWith('.'))) {
        const folder = join(env.archive, rule);
        if (!statSync(folder).isDirectory()) continue;
        expect(readdirSync(folder).filter((f) => f.includes('.rdb')), `${folder} after ${method}`).toEqual([]);
      }
    }
  });

  it('validates on the main thread when the thread dies before it started: archived, with the sha256 of the file', async () => {
    const env = setupArchive();
    writeFileSync(env.source, readFileSync(big));
    const r = await runCli(['once', '-c', env.config, '--json'], { env: { RDB_ARCHIVER_VALIDATE_THREAD: 'crash-at-start' } });
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<{ snapshot: { sha256: string } }>(r).snapshot.sha256).toBe(execFileSync('sha256sum', [big], { encoding: 'utf8' }).split(' ')[0]);
  });

  it('refuses a file that is not an RDB with 65, also on the thread', async () => {
    const env = setupArchive();
    writeFileSync(env.source, Buffer.alloc(3 * COPY_CHUNK_BYTES, 0x41));
    const r = await runCli(['once', '-c', env.config], { env: { RDB_ARCHIVER_VALIDATE_THREAD: 'always' } });
    expect(r.code, r.stderr).toBe(65);
    expect(r.stdout + r.stderr).toMatch(/bad magic "AAAAAAAAA"/);
  });
});
