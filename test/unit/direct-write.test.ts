/**
 * The O_DIRECT copy path (copy-methods.ts 'direct', fs.ts DirectHandle):
 * every byte written lands in the file in order, whichever descriptor took it
 * (aligned parts O_DIRECT, the tail and unaligned buffers through the page
 * cache); the descriptor really is O_DIRECT; and a filesystem that refuses
 * O_DIRECT makes the copy fall back to the next method, exact.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fsError } from '../../src/core/errors.js';
import { closeAfter, OSFS } from '../../src/core/fs.js';
import { createLog } from '../../src/core/log.js';
import { copyIntoTemp } from '../../src/pipeline/copy-methods.js';
import { copyPass } from '../../src/pipeline/worker.js';
import { borrowPassBuffers } from '../../src/rdb/crc64.js';
import { FaultyFS } from '../helpers/faulty-fs.js';
import { writeSnapshot } from '../helpers/snapshots.js';

const dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-direct-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const O_DIRECT = 0o40000;

/** The open flags (octal, from /proc/self/fdinfo) of every descriptor of this process open on `path`. */
function flagsOfDescriptorsOn(path: string): number[] {
  const flags: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target = '';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== path) continue;
    const line = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n').find((l) => l.startsWith('flags:'))!;
    flags.push(parseInt(line.split(/\s+/)[1]!, 8));
  }
  return flags;
}

describe('create-exclusive-direct', () => {
  it('writes aligned chunks O_DIRECT and the rest through the page cache, every byte in order', async () => {
    const fs = new OSFS();
    const path = join(dir, 'direct.bin');
    const lent = borrowPassBuffers(2, 1024 * 1024);
    const expected: Buffer[] = [];
    try {
      await closeAfter(await fs.open(path, 'create-exclusive-direct', 0o600), async (out) => {
        expect(out.writesThrough).toBe(true);
        const flags = flagsOfDescriptorsOn(path);
        expect(flags.some((f) => (f & O_DIRECT) !== 0), `flags ${flags.map((f) => f.toString(8))}`).toBe(true);
        const [a, b] = lent.buffers as [Buffer, Buffer];
        randomBytes(a.length).copy(a);
        randomBytes(b.length).copy(b);
        // An aligned chunk from a page-aligned pass buffer, then a short one (the file's tail)...
        expect(await out.write(a, 0, a.length)).toBe(a.length);
        expected.push(Buffer.from(a));
        expect(await out.write(b, 0, 100_003)).toBe(100_003);
        expected.push(Buffer.from(b.subarray(0, 100_003)));
        // ...then anything after an unaligned position, and an ordinary (unaligned) Buffer.
        const plain = randomBytes(65_536 + 5);
        expect(await out.write(plain, 0, plain.length)).toBe(plain.length);
        expected.push(plain);
        await out.sync();
      });
    } finally {
      lent.release();
    }
    expect(readFileSync(path).equals(Buffer.concat(expected))).toBe(true);
  });

  it('an ordinary Buffer at an aligned position (not page-aligned in memory) still lands exactly', async () => {
    const fs = new OSFS();
    const path = join(dir, 'unaligned-memory.bin');
    const data = randomBytes(3 * 4096);
    const view = Buffer.from(data.buffer, data.byteOffset, data.length);
    await closeAfter(await fs.open(path, 'create-exclusive-direct', 0o600), async (out) => {
      await out.write(view, 0, view.length);
      await out.write(view, 4096, 4096);
      await out.sync();
    });
    expect(readFileSync(path).equals(Buffer.concat([data, data.subarray(4096, 8192)]))).toBe(true);
  });
});

describe('copyIntoTemp with O_DIRECT', () => {
  const log = createLog('silent');

  async function copyWith(fs: OSFS | FaultyFS, name: string): Promise<{ method: string; sha256: string; temp: string; source: string }> {
    const source = join(dir, `${name}.rdb`);
    const snap = writeSnapshot(source, { seed: name, mtime: new Date('2025-06-01T10:00:00Z'), size: 3 * 1024 * 1024 + 11 });
    const temp = join(dir, `.tmp-${name}`);
    const copied = await closeAfter(await fs.open(source, 'read'), (handle) =>
      copyIntoTemp({
        fs, log, source: handle, sourcePath: source, temp, fileMode: 0o600,
        methods: ['direct', 'copy_file_range', 'read-write'],
        pass: (out) => copyPass(handle, source, out),
        unchanged: async () => undefined,
        warn: () => undefined,
      }));
    expect(copied.result.sha256).toBe(snap.sha256);
    return { method: copied.method, sha256: copied.result.sha256, temp, source };
  }

  it('copies with O_DIRECT where the filesystem takes it: the temp holds exactly what was hashed', async () => {
    const r = await copyWith(new OSFS(), 'direct-ok');
    expect(r.method).toBe('direct');
    expect(createHash('sha256').update(readFileSync(r.temp)).digest('hex')).toBe(r.sha256);
  });

  it('falls back to copy_file_range where O_DIRECT is refused (EINVAL at open), leaving no stray file', async () => {
    const fs = new FaultyFS(new OSFS(), { wrapError: fsError });
    fs.failAt((call) => call.op === 'create', 'EINVAL');
    const r = await copyWith(fs, 'direct-refused');
    expect(fs.injected.map((f) => f.op)).toEqual(['create']);
    expect(r.method).toBe('copy_file_range');
    expect(readFileSync(r.temp).equals(readFileSync(r.source))).toBe(true);
  });
});
