/**
 * The fast paths added for `npm run bench` (issue 6) must give exactly the
 * results of the straightforward code they replace:
 *  - event file names and timestamps parsed by hand vs the regex + round trip;
 *  - zonedParts for UTC without Intl vs Intl, and periodKey's UTC labels;
 *  - OSFS.unlinkOwnedFiles (bulk lstat + unlink) vs the per-file check;
 *  - copyPass's background write-back: fsyncs during a long copy, and a
 *    failing one fails the pass;
 *  - copyPass's lent buffers: given back only when no read or write into
 *    them is in flight, also when the pass fails.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { borrowPassBuffers, Crc64 } from '../../src/rdb/crc64.js';
import { OSFS, type FileInfo, type Handle } from '../../src/core/fs.js';
import { periodKey } from '../../src/pipeline/retention.js';
import { EVENT_FILE_PATTERN, parseEventFileName, parseTimestamp, timestampFromMs, timestampToMs, zonedParts } from '../../src/core/timestamp.js';
import { COPY_CHUNK_BYTES, copyPass, WRITEBACK_START_BYTES } from '../../src/pipeline/worker.js';
import { prng } from '../helpers/rdb-builder.js';

// ---------------------------------------------------------------------------
// reference implementations (the code before the fast paths)

const TS = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})$/;
const pad = (n: number, w = 2) => String(n).padStart(w, '0');
function refFromMs(ms: number): string {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}-${pad(d.getUTCMinutes())}-${pad(d.getUTCSeconds())}`;
}
function refParseTimestamp(text: string): string | undefined {
  const m = TS.exec(text);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return refFromMs(Date.UTC(y, mo - 1, d, h, mi, s)) === text ? text : undefined;
}
function refParseEventFileName(name: string): { kind: string; ts: string } | undefined {
  const m = EVENT_FILE_PATTERN.exec(name);
  if (!m) return undefined;
  const [, prefix, tsText, ext] = m as unknown as [string, string, string, string];
  const kind = prefix === 'dump' && ext === 'rdb' ? 'rdb' : prefix === 'nodes' && ext === 'config' ? 'nodes' : prefix === 'dump' && ext === 'sha256' ? 'sha256' : undefined;
  const ts = refParseTimestamp(tsText);
  return kind && ts ? { kind, ts } : undefined;
}

/** Random integers below n from the tests' PRNG, so that a failure is reproducible. */
function prngInt(seed: number): (n: number) => number {
  const next = prng(seed);
  return (n) => Math.floor(next() * n);
}

describe('timestamp fast paths', () => {
  it('parseTimestamp agrees with the regex + Date.UTC round trip on every field edge', () => {
    let checked = 0;
    for (const y of [0, 1, 99, 100, 999, 1900, 1970, 2000, 2024, 2100, 2400, 9999]) {
      for (let mo = 0; mo <= 13; mo++) {
        for (let d = 0; d <= 32; d++) {
          for (const [h, mi, s] of [[0, 0, 0], [23, 59, 59], [24, 0, 0], [0, 60, 0], [0, 0, 60], [12, 30, 30]] as const) {
            const text = `${pad(y, 4)}-${pad(mo)}-${pad(d)}T${pad(h)}-${pad(mi)}-${pad(s)}`;
            expect(parseTimestamp(text), text).toBe(refParseTimestamp(text));
            if (parseTimestamp(text)) expect(timestampToMs(parseTimestamp(text)!)).toBe(Date.UTC(y, mo - 1, d, h, mi, s));
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(30_000);
  });

  it('parseEventFileName agrees with the regex on mutated names', () => {
    const seeds = [
      'dump-2024-02-29T23-59-59.rdb', 'nodes-2023-02-28T00-00-00.config', 'dump-2024-01-01T00-00-00.sha256',
      'dump-2024-13-01T00-00-00.rdb', 'nodes-2024-01-01T00-00-00.rdb', 'dump-2024-01-01T00-00-00.config',
      'dump-0099-01-01T00-00-00.rdb', 'dump-2024-01-01T00-00-00.rdb\n', 'xdump-2024-01-01T00-00-00.rdb',
    ];
    const alphabet = '0123456789-T.:dumpnoesrbcfigha256 Z\n٣';
    const rnd = prngInt(6);
    for (let i = 0; i < 100_000; i++) {
      let name = seeds[rnd(seeds.length)]!;
      for (let k = rnd(4); k > 0; k--) {
        const p = rnd(name.length + 1);
        const c = alphabet[rnd(alphabet.length)]!;
        const op = rnd(3);
        name = op === 0 ? name.slice(0, p) + c + name.slice(p + 1) : op === 1 ? name.slice(0, p) + c + name.slice(p) : name.slice(0, p) + name.slice(p + 1);
      }
      expect(parseEventFileName(name), JSON.stringify(name)).toEqual(refParseEventFileName(name));
    }
  });

  it('zonedParts for UTC (and Etc/UTC) matches Intl', () => {
    const intl = new Intl.DateTimeFormat('en-US', { timeZone: 'UTC', hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric' });
    const rnd = prngInt(7);
    for (let i = 0; i < 20_000; i++) {
      const ms = Date.UTC(1970, 0, 1) + rnd(2 ** 30) * 4096 + rnd(4096);
      const parts: Record<string, number> = {};
      for (const p of intl.formatToParts(new Date(ms))) if (p.type !== 'literal') parts[p.type] = Number(p.value);
      for (const zone of ['UTC', 'Etc/UTC']) {
        expect(zonedParts(ms, zone)).toEqual({ year: parts['year'], month: parts['month'], day: parts['day'], hour: parts['hour'], offsetMinutes: 0 });
      }
    }
    // A zone with DST still goes through Intl.
    expect(zonedParts(Date.UTC(2025, 6, 1, 12), 'Europe/Berlin')).toEqual({ year: 2025, month: 7, day: 1, hour: 14, offsetMinutes: 120 });
  });

  it('periodKey in UTC (labels cut from the name) matches the Intl path of a zone that is UTC+0 without DST', () => {
    // Africa/Abidjan has been UTC+0, without DST, since 1912: same wall clock, but not resolved to "UTC".
    const units = ['hour', 'day', 'week', 'month', 'year'] as const;
    const rnd = prngInt(8);
    for (let i = 0; i < 20_000; i++) {
      const ms = Date.UTC(1913, 0, 1) + rnd(2 ** 30) * 4096 + rnd(4096) * 1000;
      const ts = timestampFromMs(ms);
      for (const unit of units) {
        const every = { kind: 'calendar', unit } as const;
        expect(periodKey(ts, every, 'UTC'), `${ts} ${unit}`).toBe(periodKey(ts, every, 'Africa/Abidjan'));
      }
    }
    // Years below 1000 are not zero-padded in the labels: they keep the general path.
    const old = parseTimestamp('0999-12-31T23-00-00')!;
    expect(periodKey(old, { kind: 'calendar', unit: 'day' }, 'UTC')).toBe('999-12-31');
  });
});

describe('OSFS.unlinkOwnedFiles', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-unlink-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('unlinks regular files only, leaves symlinks and folders, ignores missing files', async () => {
    writeFileSync(join(dir, 'a'), 'a');
    writeFileSync(join(dir, 'target'), 't');
    symlinkSync(join(dir, 'target'), join(dir, 'link'));
    mkdirSync(join(dir, 'folder'));
    const paths = ['a', 'link', 'folder', 'missing'].map((n) => join(dir, n));
    const skipped = await new OSFS().unlinkOwnedFiles(paths, process.getuid?.());
    expect(skipped).toEqual([join(dir, 'link'), join(dir, 'folder')]);
    expect(existsSync(join(dir, 'a'))).toBe(false);
    expect(existsSync(join(dir, 'link'))).toBe(true);
    expect(existsSync(join(dir, 'target'))).toBe(true);
    expect(existsSync(join(dir, 'folder'))).toBe(true);
  });

  it('leaves files of another owner', async () => {
    writeFileSync(join(dir, 'a'), 'a');
    const other = (process.getuid?.() ?? 0) + 1;
    expect(await new OSFS().unlinkOwnedFiles([join(dir, 'a')], other)).toEqual([join(dir, 'a')]);
    expect(existsSync(join(dir, 'a'))).toBe(true);
  });

  it('goes through a subclass\'s lstat and unlink, one by one, in order', async () => {
    const calls: string[] = [];
    class Recording extends OSFS {
      override async lstat(path: string): Promise<FileInfo> {
        calls.push(`lstat ${path}`);
        return super.lstat(path);
      }
      override async unlink(path: string): Promise<void> {
        calls.push(`unlink ${path}`);
        return super.unlink(path);
      }
    }
    writeFileSync(join(dir, 'a'), 'a');
    writeFileSync(join(dir, 'b'), 'b');
    await new Recording().unlinkOwnedFiles([join(dir, 'a'), join(dir, 'missing'), join(dir, 'b')], undefined);
    expect(calls).toEqual([`lstat ${join(dir, 'a')}`, `unlink ${join(dir, 'a')}`, `lstat ${join(dir, 'missing')}`, `lstat ${join(dir, 'b')}`, `unlink ${join(dir, 'b')}`]);
  });

  it('names the operation and path when a call fails', async () => {
    const inside = join(dir, 'file', 'x'); // ENOTDIR: a path through a regular file
    writeFileSync(join(dir, 'file'), 'f');
    await expect(new OSFS().unlinkOwnedFiles([inside], undefined)).rejects.toMatchObject({ op: 'lstat', code: 'ENOTDIR' });
  });
});

// ---------------------------------------------------------------------------
// copyPass write-back

/**
 * A virtual RDB of `size` bytes, served from memory: magic, one string key
 * whose value is all zeros (a 32-bit length), EOF, CRC-64 trailer.
 */
function virtualRdb(size: number): { read: (buf: Uint8Array, off: number, len: number, pos: number) => number; sha256: string } {
  const head = Buffer.concat([Buffer.from('REDIS0010', 'latin1'), Buffer.from([0x00, 0x00, 0x80, 0, 0, 0, 0])]);
  head.writeUInt32BE(size - head.length - 9, head.length - 4);
  const crc = new Crc64();
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(1 << 20);
  crc.update(head);
  hash.update(head);
  for (let left = size - head.length - 9; left > 0; ) {
    const n = Math.min(left, zeros.length);
    crc.update(zeros, 0, n);
    hash.update(zeros.subarray(0, n));
    left -= n;
  }
  const tail = Buffer.alloc(9);
  tail[0] = 0xff;
  crc.update(tail, 0, 1);
  tail.writeBigUInt64LE(crc.digest(), 1);
  hash.update(tail);
  const byteAt = (p: number) => (p < head.length ? head[p]! : p >= size - 9 ? tail[p - (size - 9)]! : 0);
  return {
    sha256: hash.digest('hex'),
    read(buf, off, len, pos) {
      const n = Math.max(0, Math.min(len, size - pos));
      buf.fill(0, off, off + n);
      // Only the first and the last few bytes are not zero.
      for (let p = pos; p < Math.min(pos + n, head.length); p++) buf[off + p - pos] = byteAt(p);
      for (let p = Math.max(pos, size - 9); p < pos + n; p++) buf[off + p - pos] = byteAt(p);
      return n;
    },
  };
}

function fakeSource(v: ReturnType<typeof virtualRdb>): Handle {
  return {
    read: async (buf, off, len, pos) => v.read(buf, off, len, pos),
    write: async () => { throw new Error('read-only'); },
    sync: async () => undefined,
    stat: async () => { throw new Error('not used'); },
    chmod: async () => undefined,
    close: async () => undefined,
  };
}

function fakeOut(failSyncAt?: number): Handle & { log: string[]; written: number } {
  const out = {
    log: [] as string[],
    written: 0,
    read: async () => 0,
    write: async (_buf: Uint8Array, _off: number, len: number) => {
      out.written += len;
      return len;
    },
    sync: async () => {
      out.log.push(`sync at ${out.written}`);
      await new Promise((r) => setTimeout(r, 5));
      if (failSyncAt !== undefined && out.log.length === failSyncAt) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    },
    stat: async () => { throw new Error('not used'); },
    chmod: async () => undefined,
    close: async () => undefined,
  };
  return out;
}

describe('copyPass write-back', () => {
  const size = WRITEBACK_START_BYTES + 40 * 1024 * 1024 + 4097;

  it('fsyncs in the background during a long copy, and the result is unchanged', async () => {
    const v = virtualRdb(size);
    const out = fakeOut();
    const pass = await copyPass(fakeSource(v), 'virtual.rdb', out);
    expect(pass.bytes).toBe(size);
    expect(pass.sha256).toBe(v.sha256);
    expect(pass.rdb.checksum).toBe('verified');
    expect(out.written).toBe(size);
    expect(out.log.length).toBeGreaterThanOrEqual(1);
    // None before the threshold; all of them before the end of the copy.
    const at = out.log.map((l) => Number(l.split(' ').pop()));
    expect(Math.min(...at)).toBeGreaterThanOrEqual(WRITEBACK_START_BYTES);
    expect(Math.max(...at)).toBeLessThanOrEqual(size);
  });

  it('does not fsync a short copy (the caller\'s final fsync is enough)', async () => {
    const v = virtualRdb(9 * 1024 * 1024 + 123);
    const out = fakeOut();
    await copyPass(fakeSource(v), 'virtual.rdb', out);
    expect(out.log).toEqual([]);
  });

  it('fails the pass when a background fsync fails', async () => {
    const v = virtualRdb(size);
    await expect(copyPass(fakeSource(v), 'virtual.rdb', fakeOut(1))).rejects.toMatchObject({ code: 'EIO' });
  });
});

describe('copyPass and its lent buffers', () => {
  const size = 5 * COPY_CHUNK_BYTES + 321;
  const tick = () => new Promise((r) => setTimeout(r, 10));

  /** A source and an output that count the calls in flight and remember which memory they were given. */
  function tracked(v: ReturnType<typeof virtualRdb>, failReadAt?: number, failWriteAt?: number) {
    const seen = new Set<ArrayBufferLike>();
    const t = { reads: 0, writes: 0, inFlight: 0, seen };
    /** The failing call fails at once, while its partner call is still in flight; the others take a tick, counted. */
    const call = async <T>(buf: Uint8Array, nth: number, failAt: number | undefined, code: string, done: () => T): Promise<T> => {
      seen.add(buf.buffer);
      if (nth === failAt) throw Object.assign(new Error(`${code}: injected fault`), { code });
      t.inFlight += 1;
      await tick();
      t.inFlight -= 1;
      return done();
    };
    const source: Handle = { ...fakeSource(v), read: (buf, off, len, pos) => call(buf, ++t.reads, failReadAt, 'EIO', () => v.read(buf, off, len, pos)) };
    const out: Handle = { ...fakeOut(), write: (buf, _off, len) => call(buf, ++t.writes, failWriteAt, 'ENOSPC', () => len) };
    return { t, source, out };
  }

  const lendsTheSameMemory = (memory: ArrayBufferLike): void => {
    const next = borrowPassBuffers(2, COPY_CHUNK_BYTES);
    try {
      expect(next.buffers[0]!.buffer).toBe(memory);
    } finally {
      next.release();
    }
  };

  it('reads and writes through the two lent buffers, and gives them back after the pass', async () => {
    const v = virtualRdb(size);
    const { t, source, out } = tracked(v);
    const pass = await copyPass(source, 'virtual.rdb', out);
    expect(pass.sha256).toBe(v.sha256);
    expect(pass.rdb.checksum).toBe('verified');
    expect(t.seen.size).toBe(1); // one memory: the kernel's
    lendsTheSameMemory([...t.seen][0]!);
  });

  it.each([
    // (A failing read is only seen after the write beside it finished: the loop awaits the write first.)
    ['a read fails', 3, undefined],
    ['a write fails while a read is in flight', undefined, 2],
  ])('%s: the pass fails with nothing left in flight, and gives the buffers back', async (_what, failReadAt, failWriteAt) => {
    const v = virtualRdb(size);
    const { t, source, out } = tracked(v, failReadAt, failWriteAt);
    await expect(copyPass(source, 'virtual.rdb', out)).rejects.toMatchObject({ code: failReadAt ? 'EIO' : 'ENOSPC' });
    expect(t.inFlight).toBe(0);
    lendsTheSameMemory([...t.seen][0]!);
  });
});
