/**
 * The validation thread's entry (see validate-thread.ts): runs an
 * RdbValidator (header, CRC-64, structural walk) over the pass buffers the
 * main thread reads into, while the main thread hashes the same chunks.
 *
 * It reads the chunks where they are, in the shared memory, and its CRC
 * kernel runs over that memory in place (adoptSharedPassMemory). Each chunk
 * is given back ('released') as soon as it was validated; a chunk of a pass
 * the main thread has given up (the control word no longer names it) is
 * given back unread.
 *
 * Built twice: by tsc as dist/rdb/validate-worker.js (for the modules the
 * tests and scripts import), and by esbuild as the self-contained
 * dist/validate-worker.cjs beside the CLI bundle.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { adoptSharedPassMemory } from './crc64.js';
import { InvalidSnapshotError } from '../core/errors.js';
import { RdbValidator } from './validate.js';
import type { ThreadReply, ThreadRequest, ThreadSetup } from './validate-thread.js';

// Inert when imported outside a validation thread (a preload that warms every module of dist/,
// a test importing it): there is no parent to serve.
if (!isMainThread && parentPort && workerData) serve();

function serve(): void {
  const setup = workerData as ThreadSetup;
  if (setup.crashForTests === 'start') throw new Error('died on purpose before it was ready (RDB_ARCHIVER_VALIDATE_THREAD=crash-at-start, a test switch)');
  const port = parentPort!;
  const control = new Int32Array(setup.control);
  const adopted = adoptSharedPassMemory(setup);
  const bytes = adopted ?? new Uint8Array((setup.memory as { buffer: SharedArrayBuffer }).buffer);
  const post = (reply: ThreadReply): void => port.postMessage(reply);

  let current: { pass: number; validator: RdbValidator; early: string | null } | null = null;

  port.on('message', (request: ThreadRequest) => {
    switch (request.op) {
      case 'begin':
        current = { pass: request.pass, validator: new RdbValidator(request.path, { validation: request.validation }), early: null };
        return;
      case 'chunk': {
        const live = current !== null && current.pass === request.pass && Atomics.load(control, 0) === request.pass;
        if (live && current!.early === null) {
          if (setup.crashForTests === 'first-chunk') throw new Error('crashed on purpose (RDB_ARCHIVER_VALIDATE_THREAD=crash, a test switch)');
          const offset = setup.offsets[request.index]!;
          current!.validator.update(bytes.subarray(offset, offset + request.length));
          current!.early = current!.validator.earlyError?.reason ?? null;
        }
        post({ op: 'released', pass: request.pass, index: request.index, early: live ? current!.early : null });
        return;
      }
      case 'finish': {
        if (current === null || current.pass !== request.pass) return; // given up meanwhile: nobody waits
        const validator = current.validator;
        current = null;
        try {
          post({ op: 'result', pass: request.pass, info: validator.finish() });
        } catch (err) {
          if (!(err instanceof InvalidSnapshotError)) throw err; // a bug: the thread fails, and so does the pass
          post({ op: 'invalid', pass: request.pass, reason: err.reason });
        }
        return;
      }
    }
  });

  Atomics.store(control, 1, 1); // from here on a chunk may be validated: a death is a crash, no longer a failed start
  post({ op: 'ready', crcInPlace: adopted !== null });
}
