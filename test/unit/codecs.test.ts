import { describe, expect, it } from 'vitest';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { bech32Payload, encodedName, encodingChain, encodingOfName, parseCompression, parseRecipientsFile, recipientProblem } from '../../src/codecs/encoding.js';
import { decodeStream, encodeStream } from '../../src/codecs/stream.js';

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of source) parts.push(c);
  return Buffer.concat(parts);
}
async function* chunks(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

describe('compression settings', () => {
  it('parses algorithms and levels, refusing unknown ones with the reason', () => {
    expect(parseCompression('none')).toEqual({ algorithm: 'none' });
    expect(parseCompression('zstd')).toEqual({ algorithm: 'zstd', level: 3 });
    expect(parseCompression('zstd:19')).toEqual({ algorithm: 'zstd', level: 19 });
    expect(parseCompression('gzip')).toEqual({ algorithm: 'gzip', level: 6 });
    expect(parseCompression('gzip:10')).toEqual({ error: expect.stringMatching(/10 is not a gzip level \(use 1-9\)/) });
    expect(parseCompression('zstd:0')).toEqual({ error: expect.stringMatching(/not a zstd level/) });
    expect(parseCompression('none:3')).toEqual({ error: expect.stringMatching(/takes no level/) });
    expect(parseCompression('lz4')).toEqual({ error: expect.stringMatching(/must be none, gzip or zstd/) });
  });

  it('names objects by their chain, compression before encryption, and reads the chain back from a name', () => {
    const age = { type: 'age' as const, recipients: ['x'], source: 'k' };
    expect(encodingChain({ algorithm: 'zstd', level: 3 }, age)).toEqual(['zstd', 'age']);
    expect(encodingChain({ algorithm: 'none' }, undefined)).toEqual([]);
    expect(encodedName('dump-2025-01-01T00-00-00.rdb', ['zstd', 'age'])).toBe('dump-2025-01-01T00-00-00.rdb.zst.age');
    expect(encodingOfName('.gz.age')).toEqual(['gzip', 'age']);
    expect(encodingOfName('')).toEqual([]);
  });
});

describe('age recipients', () => {
  it('accepts real X25519 recipients and names what is wrong with anything else, never echoing a secret', async () => {
    const id = await generateX25519Identity();
    const recipient = await identityToRecipient(id);
    expect(recipientProblem(recipient)).toBeUndefined();
    expect(bech32Payload(recipient, 'age')?.length).toBe(32);
    const typo = `${recipient.slice(0, 20)}${recipient[20] === 'q' ? 'p' : 'q'}${recipient.slice(21)}`;
    expect(recipientProblem(typo)).toMatch(/not a valid age recipient/);
    expect(recipientProblem(recipient.slice(0, -3))).toMatch(/not a valid age recipient/);
    expect(recipientProblem(recipient.toUpperCase())).toMatch(/not an age recipient|not a valid/);
    expect(recipientProblem('ssh-ed25519 AAAAC3Nza')).toMatch(/SSH key/);
    const secret = recipientProblem(id)!;
    expect(secret).toMatch(/secret key/);
    expect(secret).not.toContain(id.slice(16));
    expect(parseRecipientsFile(`# keys\n\n${recipient}\n  ${recipient}  \n`)).toEqual([{ line: 3, recipient }, { line: 4, recipient }]);
  });
});

describe('encode and decode streams', () => {
  const data = Buffer.concat(Array.from({ length: 3000 }, (_, i) => Buffer.from(`key:${i}:value-${i % 17}\n`)));

  for (const algorithm of ['gzip', 'zstd'] as const) {
    it(`${algorithm} + age: round trip in small chunks; another identity, a flipped byte and a cut stream all fail`, async () => {
      const id = await generateX25519Identity();
      const other = await generateX25519Identity();
      const encryption = { type: 'age' as const, recipients: [await identityToRecipient(id)], source: 'test' };
      const stored = await collect(encodeStream(chunks(data, 1000), { algorithm, level: 3 }, encryption));
      expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
      const chain = [algorithm, 'age'];
      expect((await collect(decodeStream(chunks(stored, 777), chain, [id]))).equals(data)).toBe(true);
      await expect(collect(decodeStream(chunks(stored, 777), chain, [other]))).rejects.toMatchObject({ reason: 'no-identity-matched' });
      const flipped = Buffer.from(stored);
      flipped[flipped.length - 40]! ^= 1;
      await expect(collect(decodeStream(chunks(flipped, 777), chain, [id]))).rejects.toMatchObject({ reason: 'damaged' });
      await expect(collect(decodeStream(chunks(stored.subarray(0, stored.length - 10), 777), chain, [id]))).rejects.toThrow();
    });

    it(`${algorithm} alone: compresses many small keys, and a truncated stream fails instead of ending early`, async () => {
      const stored = await collect(encodeStream(chunks(data, 4096), { algorithm, level: 3 }, undefined));
      expect(stored.length).toBeLessThan(data.length / 3);
      expect((await collect(decodeStream(chunks(stored, 100), [algorithm], undefined))).equals(data)).toBe(true);
      await expect(collect(decodeStream(chunks(stored.subarray(0, Math.floor(stored.length / 2)), 100), [algorithm], undefined))).rejects.toThrow();
    });
  }
});
