/**
 * moto's S3 server (moto_server, Python) on a free 127.0.0.1 port, for the
 * few off-site tests that s3rver cannot serve: it lists and aborts multipart
 * uploads (ListMultipartUploads, AbortMultipartUpload) and reports
 * StorageClass and ServerSideEncryption on HEAD. Everything else runs
 * against s3rver (test/helpers/s3.ts).
 *
 * moto comes with the machine image's Python (pip package moto with Flask);
 * Debian 12 has no python3-moto package, and PyPI is not reachable here, so
 * .ci/run checks for moto_server instead of installing it. Without it, the
 * tests fail under CI=true and are skipped (loudly) elsewhere.
 *
 * Always stopped after the test file (SIGTERM, then SIGKILL).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, describe, it } from 'vitest';
import { bucketAccess } from './s3.js';

export const MOTO_SERVER = process.env.MOTO_SERVER ?? 'moto_server';

function findMoto(): { ok: true } | { ok: false; reason: string } {
  const r = spawnSync(MOTO_SERVER, ['--help'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { ok: false, reason: `${MOTO_SERVER} --help failed: ${r.error?.message ?? r.stderr.trim().split('\n').pop()}` };
  return { ok: true };
}

export const motoAvailability = findMoto();

/** describe() for tests that need moto_server: fails in CI without it, skips loudly elsewhere. */
export function describeWithMoto(name: string, body: () => void): void {
  if (motoAvailability.ok) {
    describe(name, body);
    return;
  }
  const reason = motoAvailability.reason;
  // CI fails without moto unless .ci/run found no way to install it and said so (RDB_ARCHIVER_CI_ALLOW_NO_MOTO).
  if (process.env.CI === 'true' && process.env.RDB_ARCHIVER_CI_ALLOW_NO_MOTO !== '1') {
    describe(name, () => {
      it('needs moto_server, which CI must provide (.ci/run checks for it)', () => {
        throw new Error(`moto_server is not available in CI: ${reason}`);
      });
    });
    return;
  }
  console.warn(`\n${'!'.repeat(78)}\n!! SKIPPING "${name}": moto_server is not installed (${reason}).\n${'!'.repeat(78)}\n`);
  describe.skip(name, body);
}

export interface MotoServer {
  endpoint: string;
  port: number;
  stop(): Promise<void>;
}

const running: MotoServer[] = [];

export async function startMoto(buckets: string[]): Promise<MotoServer> {
  const child = spawn(MOTO_SERVER, ['-H', '127.0.0.1', '-p', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  let port: number;
  try {
    // Werkzeug prints "Running on http://127.0.0.1:PORT" (to stderr) once it listens.
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('moto_server did not say where it listens within 60 s')), 60_000);
      const watch = (stream: NodeJS.ReadableStream) => createInterface({ input: stream }).on('line', (line) => {
        const m = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      watch(child.stdout!);
      watch(child.stderr!);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`moto_server exited (${code}) before listening`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const server: MotoServer = { endpoint: `http://127.0.0.1:${port}`, port, stop };
  running.push(server);
  // From this process, not awscli (a Python start of about 2 s of CPU each).
  for (const bucket of buckets) {
    const access = await bucketAccess(server.endpoint, bucket);
    try {
      await access.createBucket();
    } finally {
      access.close();
    }
  }
  return server;
}

afterAll(async () => {
  for (const s of running.splice(0)) await s.stop();
});
