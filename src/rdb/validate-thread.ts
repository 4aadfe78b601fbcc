/**
 * The validation thread: the second core's share of a read pass.
 *
 * A pass (src/pipeline/worker.ts copyPass) reads the source chunk by chunk;
 * each chunk is hashed (sha256) and validated (RdbValidator: header, CRC-64
 * and, with validation 'full', the structural walk). On one thread these run
 * one after the other. Here the validator runs in a worker thread while the
 * main thread reads the next chunk and hashes this one: per chunk the pass
 * costs max(sha256, validation) instead of their sum (BENCHMARKS.md, "Two
 * cores" has the measured splits).
 *
 * The chunks are not copied: THREAD_BUFFERS buffers live in one shared
 * WebAssembly memory (shareablePassMemory), page-aligned like the
 * single-thread pass buffers, and the thread's CRC kernel runs over that
 * memory in place. A buffer is read into again only after the thread gave it
 * back and the main thread hashed (and wrote) it, so memory stays bounded:
 * THREAD_BUFFERS x the chunk size, whatever the file's size.
 *
 * Lifetime: the thread starts on the first pass that wants it (a run that
 * copies nothing never starts it), is reused by later passes, and is
 * unref()ed between passes so it never keeps the process alive. Its start
 * (a Node thread boots: about 100 ms of CPU on the bench machine) runs on the
 * other core while the pass already reads and hashes: the chunks wait in the
 * thread's queue. One pass at a time has it; another pass at the same time
 * validates on its own thread, as before.
 *
 * Failures: a bad magic still stops the pass at its first chunk (RdbMagicCheck
 * runs on the main thread too); the validator's verdict comes back as the
 * same InvalidSnapshotError; a thread that crashes or exits fails the pass with
 * ValidationThreadError (exit 70) and is replaced by the next pass. A thread
 * that dies before it started has validated nothing: the chunks it was given
 * are still in their buffers, so the main thread validates them, in order,
 * and the rest of the pass, itself.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { InvalidSnapshotError, ValidationThreadError } from '../core/errors.js';
import { shareablePassMemory, type SharedPassMemory } from './crc64.js';
import { RdbValidator, type RdbInfo, type ValidationMode } from './validate.js';

/** Chunk buffers in rotation: one being read, one being hashed, and up to two more the validator may lag behind by. */
export const THREAD_BUFFERS = 4;

/**
 * Passes over fewer bytes validate on the main thread. Starting the thread
 * costs about 100 ms of CPU (a Node thread's boot), spent on the other core
 * while the pass begins; what it saves is the main thread's share of the
 * check, and the main thread is the one the run waits for (it also starts the
 * process, hashes and publishes). Measured per thread (/proc/self/task CPU
 * times, loaded 2-core machine) on the 179 MiB dump of 5 M keys: the main
 * thread used 0.78 s of CPU with the thread against 0.93 s without, the
 * thread 0.47 s. Below 64 MiB the boot is no longer small against the check.
 */
export const THREAD_MIN_BYTES = 64 * 1024 * 1024;

/**
 * Test switch RDB_ARCHIVER_VALIDATE_THREAD: 'always' validates every pass on
 * the thread (whatever its size), 'never' none; 'crash' is 'always' with a
 * thread that throws on its first chunk, 'crash-at-start' with one that dies
 * before it is ready (the failure tests). Unset: by size.
 */
export const THREAD_ENV = 'RDB_ARCHIVER_VALIDATE_THREAD';

/** workerData of the thread. */
export interface ThreadSetup {
  /** The shared WebAssembly.Memory holding the buffers. */
  memory: object;
  pages: number;
  /** Each buffer's offset in the memory. */
  offsets: number[];
  /**
   * Two Int32s. [0]: the pass the main thread is running (0: none); a chunk
   * of another pass is given back unread. [1]: set to 1 by the thread before
   * it takes its first chunk, so that the main thread knows for certain
   * whether a thread that died had validated anything (its messages and its
   * error travel on different ports, in no fixed order).
   */
  control: SharedArrayBuffer;
  crashForTests: 'first-chunk' | 'start' | null;
}

export type ThreadRequest =
  | { op: 'begin'; pass: number; path: string; validation: ValidationMode }
  | { op: 'chunk'; pass: number; index: number; length: number }
  | { op: 'finish'; pass: number };

export type ThreadReply =
  | { op: 'ready'; crcInPlace: boolean }
  | { op: 'released'; pass: number; index: number; early: string | null }
  | { op: 'result'; pass: number; info: RdbInfo }
  | { op: 'invalid'; pass: number; reason: string };

/** Whether a pass over `expectedBytes` (when known) validates on the thread. */
export function threadWanted(expectedBytes: number | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  const forced = env[THREAD_ENV];
  if (forced === 'never') return false;
  if (forced === 'always' || forced === 'crash' || forced === 'crash-at-start') return true;
  return expectedBytes !== undefined && expectedBytes >= THREAD_MIN_BYTES;
}

/** Where the thread's script is: beside the CLI bundle (dist/validate-worker.cjs), or beside this module (tsc's dist/rdb/). */
function workerScript(): string | null {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const name of ['validate-worker.cjs', 'validate-worker.js']) {
    const path = join(here, name);
    if (existsSync(path)) return path;
  }
  return null; // running from the TypeScript sources (unit tests): the main thread validates
}

/** The running thread, as the passes that borrow it see it. */
export interface Thread {
  worker: Worker;
  shared: SharedPassMemory;
  control: Int32Array;

  /** Why the thread is gone, once it is. */
  failure: string | null;
  /** The pass that has the thread now. */
  pass: ThreadedValidation | null;
}

let thread: Thread | undefined;
let shared: { size: number; memory: SharedPassMemory | null } | undefined;
let lent = false;
let passes = 0;

function startThread(chunkBytes: number, env: NodeJS.ProcessEnv): Thread | undefined {
  const script = workerScript();
  if (!script) return undefined;
  if (!shared || shared.size !== chunkBytes) shared = { size: chunkBytes, memory: shareablePassMemory(THREAD_BUFFERS, chunkBytes) };
  const memory = shared.memory;
  if (!memory) return undefined;
  // Loaded here, not at import: most runs never start the thread.
  const { Worker: WorkerClass } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
  const control = new SharedArrayBuffer(8);
  const forced = env[THREAD_ENV];
  const crashForTests = forced === 'crash' ? 'first-chunk' : forced === 'crash-at-start' ? 'start' : null;
  const setup: ThreadSetup = { memory: memory.memory, pages: memory.pages, offsets: memory.offsets, control, crashForTests };
  const worker = new WorkerClass(script, { workerData: setup });
  const t: Thread = { worker, shared: memory, control: new Int32Array(control), failure: null, pass: null };
  worker.on('message', (reply: ThreadReply) => {
    if (reply.op !== 'ready') t.pass?.onReply(reply);
  });
  worker.on('error', (err: unknown) => {
    t.failure ??= err instanceof Error ? err.message : String(err);
  });
  worker.on('exit', (code: number) => {
    t.failure ??= `the thread exited (code ${code})`;
    if (thread === t) thread = undefined;
    t.pass?.wake();
  });
  worker.unref();
  return t;
}

/**
 * Starts the thread ahead of a pass that will want it (a run that has just
 * found a changed source of `expectedBytes`), so that its boot (about 100 ms
 * of CPU) runs on the other core while this thread prepares the copy, not at
 * the start of the pass, where the chunks would queue for it. Never fails: a
 * thread that cannot start is the pass's business (lendValidationThread).
 */
export function prestartValidationThread(expectedBytes: number, chunkBytes: number, env: NodeJS.ProcessEnv = process.env): void {
  if (thread || lent || !threadWanted(expectedBytes, env)) return;
  try {
    thread = startThread(chunkBytes, env);
  } catch {
    thread = undefined;
  }
}

/**
 * The thread for one pass over `path`, or null when the pass should validate
 * on the main thread (another pass has it, or it cannot run here). Call
 * release() when the pass ends, whichever way.
 */
export async function lendValidationThread(
  path: string,
  validation: ValidationMode,
  chunkBytes: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ThreadedValidation | null> {
  if (lent) return null;
  lent = true;
  let t: Thread | undefined;
  try {
    t = thread && !thread.failure ? thread : (thread = startThread(chunkBytes, env));
    if (!t || t.shared.buffers[0]!.length !== chunkBytes) {
      lent = false;
      return null;
    }
    t.worker.ref(); // awaited from here on: the thread's replies must keep the process alive
    return new ThreadedValidation(t, ++passes, path, validation);
  } catch {
    if (t) t.worker.unref();
    lent = false;
    return null;
  }
}

/** One pass's use of the thread: hand it chunks, learn which buffers are free, get its verdict. */
export class ThreadedValidation {
  /** The pass buffers, shared with the thread. */
  readonly buffers: Buffer[];
  private readonly held: boolean[];
  /** Chunks handed to the thread and not yet given back, in file order. */
  private readonly queued: Array<{ index: number; length: number }> = [];
  /** The main thread's own validator, once the thread died before it started. */
  private local: RdbValidator | null = null;
  private early: string | null = null;
  private verdict: { info: RdbInfo } | { reason: string } | null = null;
  private waiters: Array<() => void> = [];
  private released = false;

  constructor(
    private readonly t: Thread,
    private readonly pass: number,
    private readonly path: string,
    private readonly validation: ValidationMode,
  ) {
    this.buffers = t.shared.buffers;
    this.held = this.buffers.map(() => false);
    t.pass = this;
    Atomics.store(t.control, 0, pass);
    this.post({ op: 'begin', pass, path, validation });
  }

  /** The thread validates buffers[index][0, length) next; the buffer is its own until it gives it back. */
  validate(index: number, length: number): void {
    this.takeOverIfNeverStarted();
    if (this.local) {
      this.local.update(this.buffers[index]!.subarray(0, length));
      return;
    }
    this.held[index] = true;
    this.queued.push({ index, length });
    this.post({ op: 'chunk', pass: this.pass, index, length });
  }

  /** Throws what is already certain: the validator's early error (not an RDB), or the thread's failure. */
  check(): void {
    this.takeOverIfNeverStarted();
    if (this.local) {
      const early = this.local.earlyError;
      if (early) throw early;
      return;
    }
    if (this.early !== null) throw new InvalidSnapshotError(this.path, this.early);
    if (this.t.failure !== null) throw new ValidationThreadError(this.path, this.t.failure);
  }

  /**
   * The thread died before it was ready: it validated none of the chunks it
   * was given, and they are still in their buffers (none was given back, so
   * none was read into again). The main thread validates them, in order, and
   * every later chunk itself.
   */
  private takeOverIfNeverStarted(): void {
    if (this.local || this.t.failure === null || Atomics.load(this.t.control, 1) === 1) return;
    this.local = new RdbValidator(this.path, { validation: this.validation });
    for (const { index, length } of this.queued.splice(0)) {
      this.local.update(this.buffers[index]!.subarray(0, length));
      this.held[index] = false;
    }
  }

  /** A buffer that neither the thread nor the main thread (`inUse`) uses; waits for one. */
  async freeBuffer(inUse: number, signal?: AbortSignal): Promise<number> {
    for (;;) {
      this.check();
      signal?.throwIfAborted();
      for (let i = 0; i < this.held.length; i++) if (i !== inUse && !this.held[i]) return i;
      await this.change(signal);
    }
  }

  /** Every chunk was handed over: the validator's verdict (RdbValidator.finish), or its InvalidSnapshotError. */
  async finish(signal?: AbortSignal): Promise<RdbInfo> {
    this.post({ op: 'finish', pass: this.pass });
    for (;;) {
      this.takeOverIfNeverStarted();
      if (this.local) return this.local.finish();
      const verdict = this.verdict as { info: RdbInfo } | { reason: string } | null;
      if (verdict) {
        if ('info' in verdict) return verdict.info;
        throw new InvalidSnapshotError(this.path, verdict.reason);
      }
      this.check();
      signal?.throwIfAborted();
      await this.change(signal);
    }
  }

  /** The pass is over: chunks still queued for it are given back unread, and the thread no longer keeps the process alive. */
  release(): void {
    if (this.released) return;
    this.released = true;
    Atomics.store(this.t.control, 0, 0);
    if (this.t.pass === this) this.t.pass = null;
    this.t.worker.unref();
    this.wake();
    lent = false;
  }

  /** @internal The thread's replies, for this pass only. */
  onReply(reply: ThreadReply): void {
    if (!('pass' in reply) || reply.pass !== this.pass) return;
    if (reply.op === 'released') {
      this.held[reply.index] = false;
      this.queued.shift();
      if (reply.early !== null) this.early ??= reply.early;
    } else if (reply.op === 'result') {
      this.verdict = { info: reply.info };
    } else if (reply.op === 'invalid') {
      this.verdict = { reason: reply.reason };
    }
    this.wake();
  }

  /** @internal Something changed: a reply, the thread's exit, the pass's end. */
  wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  private post(request: ThreadRequest): void {
    if (this.t.failure === null) this.t.worker.postMessage(request);
  }

  private change(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

/** For tests: stops the thread as a crash would (the pass using it fails with ValidationThreadError). */
export async function terminateValidationThreadForTests(): Promise<void> {
  const t = thread;
  if (t) await t.worker.terminate();
}
