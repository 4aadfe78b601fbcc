/**
 * age encryption (the age-encryption.org/v1 format) through the
 * `age-encryption` package, the TypeScript implementation by age's authors
 * (typage): no crypto of our own. Its Encrypter and Decrypter take a web
 * ReadableStream and return one that produces the output as it is read: age
 * cuts the payload into 64 KiB chunks, each sealed on its own (STREAM), so
 * memory stays bounded whatever the snapshot size, and a changed byte
 * anywhere fails its chunk's authentication.
 *
 * The package is an ES module; it is loaded on first use only (a cron run
 * that uploads nothing never parses it) with require(), which loads ES modules
 * from Node 20.19 on.
 *
 * Identities (secret keys) are read from a file the operator names; their
 * text never reaches a message, a log line or a hook's environment.
 */
import { createRequire } from 'node:module';
import type { Stats } from 'node:fs';
import { IdentityError } from '../core/errors.js';
import { bech32Payload } from './encoding.js';

type AgeModule = typeof import('age-encryption');

let age: AgeModule | undefined;

function loadAge(): AgeModule {
  if (age) return age;
  try {
    age = createRequire(import.meta.url)('age-encryption') as AgeModule;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ERR_REQUIRE_ESM' ? `Node ${process.version} cannot load it (age needs Node 20.19 or later)` : (err as Error).message.split('\n')[0];
    throw new Error(`the age-encryption module cannot be loaded: ${why}`);
  }
  return age;
}

/** Web ReadableStream over an async iterable; pulled, so the producer never runs ahead of the consumer. */
export function toWebStream(source: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await it.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel(reason) {
      await it.return?.(reason);
    },
  }, { highWaterMark: 0 });
}

export async function* fromWebStream(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** Encrypts `source` to every recipient (public keys, already checked at config load). */
export async function* encryptAge(recipients: readonly string[], source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const { Encrypter } = loadAge();
  const e = new Encrypter();
  for (const r of recipients) e.addRecipient(r);
  yield* fromWebStream(await e.encrypt(toWebStream(source)));
}

/** Why decryption failed: no identity fits (the key), or the bytes are not what was encrypted (damage). */
export class AgeDecryptError extends Error {
  constructor(
    readonly reason: 'no-identity-matched' | 'damaged',
    message: string,
  ) {
    super(message);
    this.name = 'AgeDecryptError';
  }
}

function classify(err: unknown): AgeDecryptError {
  if (err instanceof AgeDecryptError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/no identity matched/.test(message)) {
    return new AgeDecryptError('no-identity-matched', 'none of the identities is a recipient of this object (a wrong key, or a damaged header)');
  }
  return new AgeDecryptError('damaged', `age decryption failed: ${message} (the stored object was changed or damaged)`);
}

/** Decrypts `source`; errors are AgeDecryptErrors (the header is read before the first plaintext byte). */
export async function* decryptAge(identities: readonly string[], source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const { Decrypter } = loadAge();
  const d = new Decrypter();
  for (const id of identities) d.addIdentity(id);
  let out: ReadableStream<Uint8Array>;
  try {
    out = await d.decrypt(toWebStream(source));
  } catch (err) {
    throw classify(err);
  }
  try {
    yield* fromWebStream(out);
  } catch (err) {
    throw classify(err);
  }
}

// --- identities ----------------------------------------------------------------

/** The environment variable that names an identity file when --identity is not given. */
export const IDENTITY_ENV = 'RDB_ARCHIVER_AGE_IDENTITY_FILE';
const MAX_IDENTITY_FILE_BYTES = 64 * 1024;

export interface IdentityFile {
  path: string;
  identities: string[];
  /** Set when the file can be read by group or others: the caller warns. */
  warning?: string;
}

/** The identity file chosen by --identity or the environment, or undefined when neither names one. */
export function identityPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): { path: string; from: string } | undefined {
  if (option !== undefined && option !== '') return { path: option, from: '--identity' };
  const fromEnv = env[IDENTITY_ENV];
  return fromEnv ? { path: fromEnv, from: IDENTITY_ENV } : undefined;
}

/**
 * Reads an age identity file (age-keygen's output: AGE-SECRET-KEY-1… lines,
 * "#" comments). Messages name the file and the line number, never its text.
 */
export async function readIdentityFile(chosen: { path: string; from: string }, readFile: (path: string) => Promise<{ data: Buffer; info: Stats }>): Promise<IdentityFile> {
  const where = `${chosen.from} ${chosen.path}`;
  let read: { data: Buffer; info: Stats };
  try {
    read = await readFile(chosen.path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new IdentityError(where, `cannot read the age identity file (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code ?? 'error'})`);
  }
  if (!read.info.isFile()) throw new IdentityError(where, 'is not a regular file');
  if (read.data.length > MAX_IDENTITY_FILE_BYTES) throw new IdentityError(where, `is ${read.data.length} bytes: not an age identity file`);
  const identities: string[] = [];
  const lines = read.data.toString('utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const key = /^AGE-SECRET-KEY-1[0-9A-Z]+$/.test(line) ? bech32Payload(line.toLowerCase(), 'age-secret-key-') : undefined;
    if (key?.length !== 32) {
      throw new IdentityError(where, `line ${i + 1} is not an age X25519 identity ("AGE-SECRET-KEY-1…"; passphrase-protected or plugin identities are not supported)`);
    }
    identities.push(line);
  }
  if (identities.length === 0) throw new IdentityError(where, 'holds no age identity ("AGE-SECRET-KEY-1…" lines)');
  const mode = read.info.mode & 0o777;
  const warning = (mode & 0o044) !== 0
    ? `the age identity file ${chosen.path} can be read by ${mode & 0o004 ? 'others' : 'its group'} (mode ${mode.toString(8).padStart(4, '0')}): it opens every encrypted off-site backup; chmod 600 it`
    : undefined;
  return { path: chosen.path, identities, ...(warning ? { warning } : {}) };
}

/**
 * Whether one of `identities` opens the age file that `head` starts with (its
 * header; a few hundred bytes per recipient): reads the header only, never
 * the payload. 'damaged' when the header is not a valid age header.
 */
export async function identityOpens(identities: readonly string[], head: AsyncIterable<Uint8Array>): Promise<'yes' | 'no' | 'damaged'> {
  const { Decrypter } = loadAge();
  const d = new Decrypter();
  for (const id of identities) d.addIdentity(id);
  const it = head[Symbol.asyncIterator]();
  try {
    const out = await d.decrypt(toWebStream({ [Symbol.asyncIterator]: () => it }));
    await out.cancel().catch(() => undefined);
    return 'yes';
  } catch (err) {
    return classify(err).reason === 'no-identity-matched' ? 'no' : 'damaged';
  } finally {
    // The header was all we wanted: end the download (a failed decrypt leaves it suspended).
    await it.return?.(undefined)?.catch(() => undefined);
  }
}
