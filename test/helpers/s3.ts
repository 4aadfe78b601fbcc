/**
 * A real S3 protocol server for tests: s3rver (npm) on a free 127.0.0.1
 * port, storing into a temp folder, with one DNS-valid bucket. Always
 * stopped after the test file (stopAllS3).
 *
 * Credentials reach the CLI through the environment only (s3rver accepts
 * S3RVER/S3RVER); the host's ~/.aws files and instance metadata are kept out.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll } from 'vitest';

const CHILD = join(import.meta.dirname, 's3rver-child.mjs');

export const TEST_BUCKET = 'rdb-archiver-test';
export const S3_SECRET = 'S3RVER';

export interface S3Server {
  endpoint: string;
  port: number;
  bucket: string;
  dir: string;
  stop(): Promise<void>;
}

const running: S3Server[] = [];

export async function startS3(buckets: string[] = [TEST_BUCKET]): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-s3-'));
  // Its own process: a test blocked in spawnSync (awscli) must not stall the server.
  const child = spawn(process.execPath, [CHILD, dir, ...buckets], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => resolve((JSON.parse(line) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code}) before listening`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;
  const s3: S3Server = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    bucket: buckets[0]!,
    dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running.push(s3);
  return s3;
}

afterAll(async () => {
  for (const s of running.splice(0)) await s.stop();
});

/** The environment a CLI run (or awscli) needs to talk to the test server, and nothing from the host's AWS setup. */
export function s3Env(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: S3_SECRET,
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_CONFIG_FILE: '/nonexistent/aws-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PROFILE: undefined,
    AWS_SESSION_TOKEN: undefined,
    ...overrides,
  };
}

/** The YAML of one remote pointing at `endpoint` (the server, or a proxy in front of it). */
export function remoteYaml(options: { endpoint: string; name?: string; bucket?: string; prefix?: string; extra?: string[]; rules?: string[] }): string {
  const lines = [
    'remotes:',
    `  - name: ${options.name ?? 'offsite'}`,
    '    type: s3',
    `    bucket: ${options.bucket ?? TEST_BUCKET}`,
    `    prefix: ${JSON.stringify(options.prefix ?? 'prod/cache-01/')}`,
    `    endpoint: ${options.endpoint}`,
    '    region: us-east-1',
    '    force_path_style: true',
    ...(options.extra ?? []).map((l) => `    ${l}`),
  ];
  if (options.rules) lines.push('    rules:', ...options.rules.map((r) => `      - ${r}`));
  return lines.join('\n');
}

let awsFound: { cli: string | undefined } | undefined;
/**
 * Debian's awscli (or any `aws` on PATH) as the independent client; undefined when it does not work.
 * Probed once per test file: every awscli start is a Python start of about 2 s of CPU.
 */
export function awsCli(): string | undefined {
  if (awsFound) return awsFound.cli;
  awsFound = { cli: undefined };
  for (const candidate of ['/usr/bin/aws', 'aws']) {
    const r = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) {
      awsFound.cli = candidate;
      break;
    }
  }
  return awsFound.cli;
}

export function runAws(args: string[], endpoint: string, env: Record<string, string | undefined> = {}): { code: number | null; stdout: string; stderr: string } {
  const cli = awsCli();
  if (!cli) throw new Error('awscli is not installed (apt-get install awscli; .ci/run installs it)');
  const fullEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...s3Env(), ...env })) if (v !== undefined) fullEnv[k] = v;
  const r = spawnSync(cli, ['--endpoint-url', endpoint, ...args], { encoding: 'utf8', env: fullEnv });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface BucketAccess {
  get(key: string): Promise<Buffer>;
  put(key: string, body: Buffer | string): Promise<void>;
  /** The keys under `prefix`, the prefix cut off, sorted. */
  keysUnder(prefix: string): Promise<string[]>;
  createBucket(): Promise<void>;
  /** Starts a multipart upload and leaves it open (another tool's, or a run that died). */
  startMultipartUpload(key: string): Promise<string>;
  close(): void;
}

/**
 * Reads and writes raw objects in a test bucket from the test's own process (the AWS SDK), for
 * tests that tamper with a bucket: someone else writing to it needs no independent client, and
 * an awscli start costs about 2 s of CPU. Cross-checks of what the CLI uploaded use runAws.
 */
export async function bucketAccess(endpoint: string, bucket: string = TEST_BUCKET): Promise<BucketAccess> {
  // The SDK's warning that its later releases need Node 22 is off while the client is made, then
  // the variable is put back: the CLIs the tests start inherit this environment, and
  // offsite.test checks that the CLI switches that warning off itself.
  const WARNING = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
  const before = process.env[WARNING];
  process.env[WARNING] = 'true';
  let sdk: typeof import('@aws-sdk/client-s3');
  let client: import('@aws-sdk/client-s3').S3Client;
  try {
    sdk = await import('@aws-sdk/client-s3');
    client = new sdk.S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: S3_SECRET },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  } finally {
    if (before === undefined) delete process.env[WARNING];
    else process.env[WARNING] = before;
  }
  return {
    async get(key) {
      const r = await client.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    },
    async put(key, body) {
      await client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === 'string' ? Buffer.from(body) : body }));
    },
    async keysUnder(prefix) {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new sdk.ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const c of page.Contents ?? []) keys.push(c.Key!.slice(prefix.length));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return keys.sort();
    },
    async createBucket() {
      await client.send(new sdk.CreateBucketCommand({ Bucket: bucket }));
    },
    async startMultipartUpload(key) {
      return (await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: bucket, Key: key }))).UploadId!;
    },
    close() {
      client.destroy();
    },
  };
}
