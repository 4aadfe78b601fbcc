// Writes a structurally valid RDB of an exact size for the benchmark, streaming:
// memory use is one 8 MiB buffer whatever the size.
//
//   magic REDIS00NN, AUX fields (redis-ver, redis-bits, ctime, used-mem, aof-base),
//   SELECTDB 0, RESIZEDB, N string keys "bench:key:<n>" with incompressible
//   (random) values, EOF 0xFF, CRC-64 trailer (little-endian) computed with
//   dist/rdb/crc64.js over magic..EOF.
//
// Value sizes come from a seeded PRNG, uniformly in [minValue, maxValue]; the
// last value is sized so that the file is exactly `size` bytes.
//
// Usage as a script: node scripts/bench-rdbgen.mjs OUT SIZE_BYTES [minValue maxValue]
import { randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const BUF = 8 << 20;

function lengthBytes(n) {
  if (n < 64) return 1;
  if (n < 16384) return 2;
  if (n <= 0xffffffff) return 5;
  return 9;
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const keyName = (i) => `bench:key:${String(i).padStart(10, '0')}`;

/**
 * @param {string} out path of a new file
 * @param {number} size exact size in bytes
 * @param {{ crc64Module: string, version?: number, minValue?: number, maxValue?: number, seed?: number, fsync?: boolean }} opts
 * @returns {Promise<{ keys: number, crc: string }>}
 */
export async function writeRdb(out, size, opts) {
  const { Crc64 } = await import(opts.crc64Module);
  const version = opts.version ?? 10;
  const minValue = opts.minValue ?? 512;
  const maxValue = opts.maxValue ?? 8192;
  const seed = opts.seed ?? 42;

  const header = [];
  const pushBytes = (...b) => header.push(...b);
  const pushLen = (n) => {
    if (n < 64) pushBytes(n);
    else if (n < 16384) pushBytes(0x40 | (n >> 8), n & 0xff);
    else pushBytes(0x80, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  };
  const pushStr = (s) => {
    const b = Buffer.from(s, 'latin1');
    pushLen(b.length);
    pushBytes(...b);
  };
  const pushAux = (k, v) => {
    pushBytes(0xfa);
    pushStr(k);
    if (typeof v === 'number') {
      // int32 encoding (0xC2) as Redis writes ctime
      pushBytes(0xc2, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
    } else pushStr(v);
  };

  // Dry pass: the value lengths, so that RESIZEDB can carry the key count.
  const fixedTail = 1 + 8; // EOF + CRC
  const magic = `REDIS${String(version).padStart(4, '0')}`;
  const preamble = () => {
    header.length = 0;
    pushBytes(...Buffer.from(magic, 'latin1'));
    pushAux('redis-ver', '7.0.15');
    pushBytes(0xfa); pushStr('redis-bits'); pushBytes(0xc0, 64);
    pushAux('ctime', Math.floor(Date.now() / 1000));
    pushAux('used-mem', String(size));
    pushBytes(0xfa); pushStr('aof-base'); pushBytes(0xc0, 0);
    pushBytes(0xfe, 0x00); // SELECTDB 0
  };
  const recordSize = (i, len) => {
    const k = keyName(i).length;
    return 1 + lengthBytes(k) + k + lengthBytes(len) + len;
  };
  const plan = (keys) => {
    preamble();
    pushBytes(0xfb);
    pushLen(keys);
    pushLen(0);
    return header.length;
  };
  // Two passes converge: the RESIZEDB length encoding depends on the count.
  let keys = 0;
  let lengths = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const rand = mulberry32(seed);
    let left = size - plan(keys) - fixedTail;
    lengths = [];
    let i = 0;
    for (;;) {
      const want = minValue + Math.floor(rand() * (maxValue - minValue + 1));
      const rec = recordSize(i, want);
      if (left - rec < recordSize(i + 1, maxValue) + 16) {
        // Last record takes exactly what is left.
        const k = keyName(i).length;
        const base = 1 + lengthBytes(k) + k;
        let len = left - base - 1;
        for (const enc of [1, 2, 5, 9]) {
          const l = left - base - enc;
          if (l >= 0 && lengthBytes(l) === enc) { len = l; break; }
        }
        if (len < 0 || recordSize(i, len) !== left) throw new Error(`cannot size the last record (${left} bytes left)`);
        lengths.push(len);
        break;
      }
      lengths.push(want);
      left -= rec;
      i++;
    }
    if (lengths.length === keys) break;
    keys = lengths.length;
  }
  if (size < 200) throw new Error('size too small');
  plan(keys);

  const fd = openSync(out, 'wx', 0o600);
  const crc = new Crc64();
  const buf = Buffer.allocUnsafe(BUF);
  let pos = 0;
  let written = 0;
  const flush = () => {
    crc.update(buf, 0, pos);
    let off = 0;
    while (off < pos) off += writeSync(fd, buf, off, pos - off);
    written += pos;
    pos = 0;
    randomFillSync(buf); // value bytes are whatever is in the buffer: random, incompressible
  };
  randomFillSync(buf);
  const put = (bytes) => {
    for (let o = 0; o < bytes.length; ) {
      if (pos === BUF) flush();
      const n = Math.min(bytes.length - o, BUF - pos);
      buf.set(bytes.subarray(o, o + n), pos);
      pos += n;
      o += n;
    }
  };
  const skip = (n) => {
    while (n > 0) {
      if (pos === BUF) flush();
      const m = Math.min(n, BUF - pos);
      pos += m;
      n -= m;
    }
  };
  const lenBytes = (n) => {
    if (n < 64) return Uint8Array.of(n);
    if (n < 16384) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
    return Uint8Array.of(0x80, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  };
  try {
    put(Uint8Array.from(header));
    for (let i = 0; i < keys; i++) {
      const key = Buffer.from(keyName(i), 'latin1');
      put(Uint8Array.of(0x00)); // RDB_TYPE_STRING
      put(lenBytes(key.length));
      put(key);
      put(lenBytes(lengths[i]));
      skip(lengths[i]);
    }
    put(Uint8Array.of(0xff));
    // The CRC covers everything up to and including EOF.
    crc.update(buf, 0, pos);
    const c = crc.digest();
    const trailer = Buffer.alloc(8);
    trailer.writeBigUInt64LE(c);
    let off = 0;
    while (off < pos) off += writeSync(fd, buf, off, pos - off);
    written += pos;
    writeSync(fd, trailer);
    written += 8;
    if (written !== size) throw new Error(`wrote ${written} bytes, wanted ${size}`);
    if (opts.fsync) fsyncSync(fd);
    return { keys, crc: c.toString(16).padStart(16, '0') };
  } finally {
    closeSync(fd);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [out, sizeText, minV, maxV] = process.argv.slice(2);
  if (!out || !sizeText) {
    console.error('usage: node scripts/bench-rdbgen.mjs OUT SIZE_BYTES [minValue maxValue]');
    process.exit(2);
  }
  const crc64Module = new URL('../dist/rdb/crc64.js', import.meta.url).href;
  const r = await writeRdb(out, Number(sizeText), { crc64Module, minValue: minV ? Number(minV) : undefined, maxValue: maxV ? Number(maxV) : undefined });
  console.log(JSON.stringify(r));
}

/**
 * A "real-shaped" RDB for the off-site codec rows: the first `smallShare` of
 * the file is many small string keys as DEBUG POPULATE writes them
 * ("key:<n>" = "value:<n>": too short for Redis's LZF, so they compress well
 * with zstd), the rest large values of random (incompressible) bytes, like
 * serialized blobs or already-compressed payloads. About `size` bytes (the
 * last record ends where it ends); structurally valid, CRC-64 trailer.
 *
 * @param {string} out path of a new file
 * @param {number} size approximate size in bytes
 * @param {{ crc64Module: string, smallShare?: number, bigValue?: number }} opts
 * @returns {Promise<{ smallKeys: number, bigKeys: number, bytes: number }>}
 */
export async function writeShapedRdb(out, size, opts) {
  const { Crc64 } = await import(opts.crc64Module);
  const smallShare = opts.smallShare ?? 0.5;
  const bigValue = opts.bigValue ?? 64 * 1024;
  const fd = openSync(out, 'wx', 0o600);
  const crc = new Crc64();
  const buf = Buffer.allocUnsafe(BUF);
  let pos = 0;
  let written = 0;
  const flush = () => {
    crc.update(buf, 0, pos);
    let off = 0;
    while (off < pos) off += writeSync(fd, buf, off, pos - off);
    written += pos;
    pos = 0;
  };
  const put = (bytes) => {
    for (let o = 0; o < bytes.length; ) {
      if (pos === BUF) flush();
      const n = Math.min(bytes.length - o, BUF - pos);
      buf.set(bytes.subarray(o, o + n), pos);
      pos += n;
      o += n;
    }
  };
  const len = (n) => (n < 64 ? Uint8Array.of(n) : n < 16384 ? Uint8Array.of(0x40 | (n >> 8), n & 0xff) : Uint8Array.of(0x80, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff));
  const str = (s) => { const b = Buffer.from(s, 'latin1'); put(len(b.length)); put(b); };
  const random = Buffer.allocUnsafe(bigValue);
  try {
    put(Buffer.from('REDIS0010', 'latin1'));
    put(Uint8Array.of(0xfa)); str('redis-ver'); str('7.0.15');
    put(Uint8Array.of(0xfa)); str('redis-bits'); put(Uint8Array.of(0xc0, 64));
    put(Uint8Array.of(0xfe, 0x00));
    let smallKeys = 0;
    while (written + pos < size * smallShare) {
      put(Uint8Array.of(0x00)); str(`key:${smallKeys}`); str(`value:${smallKeys}`);
      smallKeys++;
    }
    let bigKeys = 0;
    while (written + pos < size - bigValue) {
      put(Uint8Array.of(0x00)); str(`blob:${bigKeys}`);
      randomFillSync(random);
      put(len(random.length)); put(random);
      bigKeys++;
    }
    put(Uint8Array.of(0xff));
    crc.update(buf, 0, pos);
    const trailer = Buffer.alloc(8);
    trailer.writeBigUInt64LE(crc.digest());
    let off = 0;
    while (off < pos) off += writeSync(fd, buf, off, pos - off);
    written += pos;
    writeSync(fd, trailer);
    return { smallKeys, bigKeys, bytes: written + 8 };
  } finally {
    closeSync(fd);
  }
}
