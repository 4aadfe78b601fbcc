import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Crc64, borrowPassBuffers, buildCrc64WasmModule, crc64, crc64Kernel, crc64WithKernel } from '../../src/rdb/crc64.js';
import { ascii, buildRdb, prng, referenceCrc64, tableCrc64 } from '../helpers/rdb-builder.js';

const FIXTURE = resolve(import.meta.dirname, '../fixtures/redis-7.0-small.rdb');

function randomBytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * 256);
  return out;
}

const KERNELS = ['wasm', 'js-slice8', 'js-bytewise'] as const;

describe('crc64', () => {
  it('matches the published check value for "123456789"', () => {
    expect(crc64(ascii('123456789'))).toBe(0xe9c6d914c4b8d9can);
    const c = new Crc64().update(ascii('123456789'));
    expect(c.digest()).toBe(0xe9c6d914c4b8d9can);
    expect(c.hex()).toBe('e9c6d914c4b8d9ca');
    for (const k of KERNELS) expect(crc64WithKernel(k, ascii('123456789')), k).toBe(0xe9c6d914c4b8d9can);
  });

  it('the references used by the tests (bit-at-a-time, and byte-table) also give the check value and agree', () => {
    expect(referenceCrc64(ascii('123456789'))).toBe(0xe9c6d914c4b8d9can);
    expect(tableCrc64(ascii('123456789'))).toBe(0xe9c6d914c4b8d9can);
    const data = randomBytes(5000, 9);
    expect(tableCrc64(data)).toBe(referenceCrc64(data));
  });

  it('is 0 for no input, and hex() keeps leading zeros', () => {
    expect(crc64(new Uint8Array(0))).toBe(0n);
    expect(new Crc64().hex()).toBe('0000000000000000');
    // Find an input whose CRC has a zero top nibble.
    let i = 0;
    while (referenceCrc64(ascii(String(i))) >= 1n << 60n) i++;
    const value = referenceCrc64(ascii(String(i)));
    const hex = new Crc64().update(ascii(String(i))).hex();
    expect(hex).toHaveLength(16);
    expect(hex.startsWith('0')).toBe(true);
    expect(BigInt('0x' + hex)).toBe(value);
  });

  it('gives the trailer of an empty Redis 7.2 dump (88 bytes, CRC 0xa25affc0fe3b6ef0)', () => {
    const file = buildRdb({
      version: 11,
      aux: [
        ['redis-ver', '7.2.0'],
        ['redis-bits', 64],
        ['ctime', 1706821741],
        ['used-mem', 1098928],
        ['aof-base', 0],
      ],
      body: new Uint8Array(0),
    });
    expect(file.length).toBe(88);
    expect(Buffer.from(file.subarray(78)).toString('hex')).toBe('00fff06e3bfec0ff5aa2');
    expect(crc64(file.subarray(0, 80))).toBe(0xa25affc0fe3b6ef0n);
  });

  it('matches the trailer of a dump written by redis-server 7.0.15', () => {
    const file = readFileSync(FIXTURE);
    const stored = file.readBigUInt64LE(file.length - 8);
    expect(stored).not.toBe(0n);
    expect(crc64(file.subarray(0, file.length - 8))).toBe(stored);
  });

  it('uses the WebAssembly kernel here, and its module is valid WebAssembly', () => {
    expect(crc64Kernel()).toBe('wasm');
    const bytes = buildCrc64WasmModule();
    expect(Array.from(bytes.subarray(0, 4))).toEqual([0x00, 0x61, 0x73, 0x6d]);
    const wasm = (globalThis as unknown as { WebAssembly: { validate(b: Uint8Array): boolean } }).WebAssembly;
    expect(wasm.validate(bytes)).toBe(true);
  });

  it('every kernel agrees with the reference for every length 0..300 at every alignment 0..7', () => {
    const data = randomBytes(320, 1);
    for (let offset = 0; offset < 8; offset++) {
      for (let len = 0; len <= 300; len += offset === 0 ? 1 : 7) {
        const slice = data.subarray(offset, offset + len);
        const want = referenceCrc64(slice);
        for (const k of KERNELS) expect(crc64WithKernel(k, slice), `${k} len=${len} offset=${offset}`).toBe(want);
        expect(crc64(slice)).toBe(want);
      }
    }
  });

  it('every kernel agrees on large inputs that span several 64 KiB WebAssembly blocks, unaligned', () => {
    const data = randomBytes(300_003, 2);
    const want = referenceCrc64(data.subarray(0, 4096));
    expect(crc64WithKernel('js-bytewise', data.subarray(0, 4096))).toBe(want);
    for (const [start, end] of [[0, data.length], [3, data.length - 5], [65_535, 65_536 * 3 + 1]] as const) {
      const slice = data.subarray(start, end);
      const byteWise = crc64WithKernel('js-bytewise', slice);
      expect(crc64WithKernel('wasm', slice)).toBe(byteWise);
      expect(crc64WithKernel('js-slice8', slice)).toBe(byteWise);
      expect(new Crc64().update(data, start, end).digest()).toBe(byteWise);
    }
  });

  it('gives the same result for an update split at every point', () => {
    const data = randomBytes(700, 3);
    const want = referenceCrc64(data);
    for (let i = 0; i <= data.length; i++) {
      const c = new Crc64();
      expect(c.update(data, 0, i)).toBe(c);
      c.update(data, i);
      expect(c.digest(), `split at ${i}`).toBe(want);
      expect(new Crc64().update(data.subarray(0, i)).update(data.subarray(i)).digest()).toBe(want);
    }
  });

  it('gives the same result for random multi-way splits, including 1-byte and empty pieces', () => {
    const data = randomBytes(200_000, 4);
    const want = crc64WithKernel('js-bytewise', data);
    const r = prng(5);
    for (let round = 0; round < 20; round++) {
      const c = new Crc64();
      let p = 0;
      while (p < data.length) {
        const kind = r();
        const n = kind < 0.3 ? Math.floor(r() * 3) : kind < 0.6 ? Math.floor(r() * 100) : Math.floor(r() * 90_000);
        const e = Math.min(data.length, p + n);
        c.update(data, p, e);
        p = e;
      }
      expect(c.digest()).toBe(want);
    }
  });

  it('does not depend on the caller keeping the input unchanged after update()', () => {
    const data = randomBytes(100_000, 6);
    const want = crc64(data);
    const copy = data.slice();
    const c = new Crc64().update(copy, 0, 50_000);
    copy.fill(0);
    c.update(data, 50_000);
    expect(c.digest()).toBe(want);
  });

  it('rejects bad ranges', () => {
    const c = new Crc64();
    expect(() => c.update(new Uint8Array(4), 2, 1)).toThrow(RangeError);
    expect(() => c.update(new Uint8Array(4), 0, 5)).toThrow(RangeError);
    expect(() => c.update(new Uint8Array(4), -1)).toThrow(RangeError);
  });

  it('reset() starts over', () => {
    const c = new Crc64().update(ascii('junk'));
    expect(c.reset().update(ascii('123456789')).hex()).toBe('e9c6d914c4b8d9ca');
  });

  it('is not pathologically slow (> 50 MB/s on 16 MiB; the real figure is ~1 GB/s)', () => {
    const data = randomBytes(1 << 20, 7);
    const big = new Uint8Array(16 << 20);
    for (let o = 0; o < big.length; o += data.length) big.set(data, o);
    new Crc64().update(big, 0, 1 << 20); // warm up
    const t = performance.now();
    const c = new Crc64();
    for (let o = 0; o < big.length; o += 1 << 20) c.update(big, o, o + (1 << 20));
    const seconds = (performance.now() - t) / 1000;
    expect(c.digest()).toBe(crc64WithKernel('js-slice8', big));
    expect(big.length / 1e6 / seconds).toBeGreaterThan(50);
  });
});

describe('pass buffers (borrowPassBuffers)', () => {
  const MiB = 1024 * 1024;
  const fill = (buf: Uint8Array, seed: number): void => buf.set(randomBytes(buf.length, seed));

  it('a CRC over a lent buffer runs in place and equals the CRC of the same bytes anywhere else, for any range', () => {
    const lent = borrowPassBuffers(2, MiB + 13);
    try {
      expect(lent.buffers).toHaveLength(2);
      for (const [i, buf] of lent.buffers.entries()) {
        expect(buf.length).toBe(MiB + 13);
        fill(buf, 100 + i);
        const copy = Uint8Array.from(buf);
        for (const [start, end] of [[0, buf.length], [1, buf.length - 3], [7, 107], [65_530, 200_001], [MiB, MiB + 13], [5, 69]]) {
          const inPlace = new Crc64().update(buf, start!, end!).digest();
          expect(inPlace, `[${start}, ${end})`).toBe(new Crc64().update(copy, start!, end!).digest());
          expect(new Crc64().update(buf.subarray(start!, end!)).digest()).toBe(inPlace);
        }
        expect(crc64(buf)).toBe(tableCrc64(copy));
      }
    } finally {
      lent.release();
    }
  });

  it('lends one set at a time: a second borrower gets ordinary buffers; after release the same memory is lent again', () => {
    const first = borrowPassBuffers(2, 2 * MiB);
    const second = borrowPassBuffers(2, 2 * MiB);
    try {
      expect(first.buffers[0]!.buffer).toBe(first.buffers[1]!.buffer); // both in the kernel's memory
      expect(second.buffers[0]!.buffer).not.toBe(first.buffers[0]!.buffer);
      expect(second.buffers[0]!.buffer).not.toBe(second.buffers[1]!.buffer);
      // Both sets are usable at once and do not overlap.
      fill(first.buffers[0]!, 1);
      fill(second.buffers[0]!, 2);
      fill(first.buffers[1]!, 3);
      expect(crc64(first.buffers[0]!)).toBe(tableCrc64(randomBytes(2 * MiB, 1)));
      expect(crc64(second.buffers[0]!)).toBe(tableCrc64(randomBytes(2 * MiB, 2)));
    } finally {
      first.release();
      first.release(); // twice is harmless
      second.release();
    }
    const again = borrowPassBuffers(2, 2 * MiB);
    try {
      expect(again.buffers[0]!.buffer).toBe(first.buffers[0]!.buffer);
    } finally {
      again.release();
    }
  });

  it('growing the memory for bigger buffers keeps every CRC right (the kernel makes its views of the memory again)', () => {
    const small = borrowPassBuffers(1, MiB);
    small.release();
    const ordinary = randomBytes(300_000, 77);
    const expected = tableCrc64(ordinary);
    const big = borrowPassBuffers(2, 24 * MiB); // more than any earlier test: the memory grows
    try {
      // What was lent before the growth is detached: why only one set is lent at a time.
      expect(small.buffers[0]!.length).toBe(0);
      expect(crc64(ordinary)).toBe(expected); // copied into the kernel's memory through the new views
      fill(big.buffers[1]!.subarray(0, 300_000), 77);
      expect(crc64(big.buffers[1]!.subarray(0, 300_000))).toBe(expected);
    } finally {
      big.release();
    }
  });
});
