/**
 * An S3-compatible bucket prefix as an archive target (AWS S3, MinIO, Ceph
 * RGW, R2, B2, GCS interoperability).
 *
 * Why @aws-sdk/client-s3 alone, without @aws-sdk/lib-storage: lib-storage's
 * Upload sends no Content-MD5 per part unless a flexible checksum algorithm
 * is chosen, and those (x-amz-checksum-*, aws-chunked trailers) are what
 * many compatible servers do not speak. The multipart loop below is short,
 * reads each part straight from the archived file at its offset (memory is
 * bounded by part_size x concurrency), sends Content-MD5 with every request,
 * checks each part's returned ETag against our MD5, and keeps the upload id
 * so that a killed run's upload is aborted by the next one.
 *
 * The SDK is loaded on first use only (see loadSdk): a cron run with nothing
 * to upload never pays for it. Credentials come from the SDK's default chain
 * (environment, shared files with `profile`, web identity, ECS/EC2 metadata)
 * and never pass through this module's arguments or messages.
 */
import { createHash } from 'node:crypto';
import type { S3Client as S3ClientType } from '@aws-sdk/client-s3';
import type { BuildMiddleware, MetadataBearer } from '@smithy/types';
import type { RemoteConfig } from '../core/config.js';
import { ArchiverError, RemoteError } from '../core/errors.js';
import type { Handle } from '../core/fs.js';
import { groupListing, type ListedObject, type OpenUpload, type RemoteEvent } from './manifest.js';
import type { ArchiveTarget, TargetCapabilities } from './target.js';

type Sdk = typeof import('@aws-sdk/client-s3');

let sdk: Promise<Sdk> | undefined;

/**
 * Loads the SDK once. The SDK warns on Node 20 that its releases after
 * January 2027 need Node 22 (NodeVersionSupportWarning). The pinned release
 * runs on Node 20 to 26, and that warning is about future releases, not
 * this one: it must not reach stderr of a cron job, so it is switched off
 * with the SDK's documented variable unless the operator set it.
 */
export function loadSdk(): Promise<Sdk> {
  if (process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED === undefined) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  }
  sdk ??= import('@aws-sdk/client-s3');
  return sdk;
}

export const S3_CAPABILITIES: TargetCapabilities = { hardLinks: false, atomicRename: false, serverChecksums: true, consistentListing: false };

/** S3 takes at most 10,000 parts per multipart upload. */
export const MAX_PARTS = 10_000;

/**
 * The part size for an object of (at most) `bytes`: the configured one, or
 * the smallest whole MiB that fits the object into 10,000 parts. With 64 MiB
 * parts a snapshot above 625 GiB would otherwise fail at part 10,001, after
 * everything before it was sent. Memory grows with it (parts × concurrency).
 */
export function partSizeFor(configured: number, bytes: number): number {
  const MiB = 1024 * 1024;
  const needed = Math.ceil(bytes / MAX_PARTS / MiB) * MiB;
  return Math.max(configured, needed);
}

/** Bytes of a small object we read whole (manifests, sidecars, nodes.conf). */
export const SMALL_OBJECT_LIMIT = 16 * 1024 * 1024;

export interface UploadCallbacks {
  /** Called with the upload id before the first part: recorded so a killed run's upload can be aborted. */
  onMultipartStarted?: (key: string, uploadId: string) => Promise<void>;
  onMultipartEnded?: (key: string, uploadId: string) => Promise<void>;
}

/** Values that must never appear in a message, even if a server echoes them. */
function secretsInEnv(): string[] {
  return ['AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'].map((k) => process.env[k]).filter((v): v is string => typeof v === 'string' && v.length >= 4);
}

export function scrubSecrets(text: string): string {
  let out = text;
  for (const secret of secretsInEnv()) out = out.split(secret).join('[redacted]');
  return out;
}

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

const AUTH_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'AuthorizationHeaderMalformed', 'TokenRefreshRequired']);

/** Turns an SDK or network error into a RemoteError naming the remote, operation and key. */
export function remoteErrorOf(remote: RemoteConfig, op: string, key: string, err: unknown, timedOut: boolean): RemoteError {
  if (err instanceof RemoteError) return err;
  const e = (err ?? {}) as SdkError;
  const name = e.name ?? e.Code ?? e.code ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  const where = `s3://${remote.bucket}/${key}`;
  const detail = scrubSecrets(`${name}${status ? ` (HTTP ${status})` : ''}: ${(e.message ?? String(err)).split('\n')[0]}`);
  if (timedOut || name === 'AbortError' || name === 'TimeoutError') {
    return new RemoteError('remote-timeout', remote.name, op, where, `no answer within the remote's timeout (${Math.round(remote.timeoutMs / 1000)} s): ${detail}`);
  }
  if (name === 'NoSuchBucket') return new RemoteError('remote-no-bucket', remote.name, op, where, `bucket ${remote.bucket} does not exist: ${detail}`);
  if (name === 'CredentialsProviderError' || name === 'ProviderError') {
    // No credentials at all (or not in the named profile): say where they were looked for.
    const from = remote.profile ? `profile "${remote.profile}" of the shared AWS config/credentials files` : 'the standard AWS chain (environment, shared files, web identity, ECS/EC2 metadata)';
    return new RemoteError('remote-auth', remote.name, op, where, `no credentials from ${from}: ${detail}`);
  }
  if (AUTH_NAMES.has(name) || status === 401 || status === 403) {
    return new RemoteError('remote-auth', remote.name, op, where, `the server refused the credentials or the permission: ${detail}`);
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new RemoteError('remote-not-found', remote.name, op, where, detail);
  return new RemoteError('remote', remote.name, op, where, detail);
}

/** Is this a server that simply lacks the operation (s3rver lacks ListMultipartUploads)? */
function isUnsupported(err: unknown): boolean {
  const e = (err ?? {}) as SdkError;
  const status = e.$metadata?.httpStatusCode;
  return e.name === 'NotImplemented' || status === 501 || status === 405 || e.name === 'MethodNotAllowed';
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

function unquote(etag: string | undefined): string | null {
  return etag === undefined ? null : etag.replace(/^"|"$/g, '');
}

/**
 * A request that carries Content-MD5 is signed with an unsigned payload
 * (x-amz-content-sha256: UNSIGNED-PAYLOAD) instead of the SDK's default over
 * plain HTTP: a SHA-256 of every part in the main thread, a third pass over
 * each byte after our sha256 and MD5 (measured: 0.9 s of CPU per GiB here).
 * The body stays covered: Content-MD5 is a signed header, and the server
 * refuses a body that does not match it (and we check the returned ETag).
 * HTTPS endpoints already protect the body in transit as well.
 */
const unsignedPayloadWithMd5: BuildMiddleware<object, MetadataBearer> = (next) => async (args) => {
  const headers = (args.request as { headers?: Record<string, string> } | undefined)?.headers;
  if (headers && Object.keys(headers).some((h) => h.toLowerCase() === 'content-md5')) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
  return next(args);
};

/**
 * An abort signal for one operation under a deadline: it trips when `ms` have
 * passed (timedOut is then true: the error says "timed out", not "aborted")
 * or when `outer` trips (a shutdown). dispose() clears the timer and the
 * listener on `outer`; abort() ends whatever still uses the signal.
 */
export function deadlineController(ms: number, outer?: AbortSignal): { readonly signal: AbortSignal; readonly timedOut: boolean; abort(): void; dispose(): void } {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, ms);
  const onOuter = () => controller.abort();
  outer?.addEventListener('abort', onOuter, { once: true });
  return {
    signal: controller.signal,
    get timedOut() {
      return timedOut;
    },
    abort: () => controller.abort(),
    dispose: () => {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuter);
    },
  };
}

export class S3Target implements ArchiveTarget {
  readonly capabilities = S3_CAPABILITIES;
  readonly location: string;

  private constructor(
    readonly remote: RemoteConfig,
    private readonly s3: Sdk,
    private readonly client: S3ClientType,
  ) {
    this.location = `s3://${remote.bucket}/${remote.prefix}`;
  }

  static async open(remote: RemoteConfig): Promise<S3Target> {
    const s3 = await loadSdk();
    const client = new s3.S3Client({
      region: remote.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      ...(remote.endpoint ? { endpoint: remote.endpoint } : {}),
      ...(remote.profile ? { profile: remote.profile } : {}),
      forcePathStyle: remote.forcePathStyle,
      followRegionRedirects: true,
      // Content-MD5 is our integrity header; the SDK's default CRC trailers
      // (aws-chunked) are not spoken by many compatible servers.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Retries with backoff for 5xx, SlowDown and dropped connections.
      maxAttempts: 4,
      requestHandler: { connectionTimeout: 10_000, requestTimeout: remote.timeoutMs },
    });
    client.middlewareStack.add(unsignedPayloadWithMd5, { step: 'build', name: 'rdbArchiverUnsignedPayloadWithMd5' });
    return new S3Target(remote, s3, client);
  }

  key(name: string): string {
    return `${this.remote.prefix}${name}`;
  }

  close(): void {
    this.client.destroy();
  }

  /** Runs one operation (or a sequence under one deadline) with the remote's timeout; errors become RemoteErrors. */
  async withDeadline<T>(op: string, name: string, body: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal): Promise<T> {
    const deadline = deadlineController(this.remote.timeoutMs, outer);
    try {
      return await body(deadline.signal);
    } catch (err) {
      // A failure of what feeds the upload (the archived file, an encoder) is not the remote's.
      if (err instanceof ArchiverError && !(err instanceof RemoteError)) throw err;
      const wrapped = remoteErrorOf(this.remote, op, this.key(name), err, deadline.timedOut);
      if (wrapped !== err) Object.defineProperty(wrapped, 'cause', { value: err });
      throw wrapped;
    } finally {
      deadline.dispose();
    }
  }

  private sse(): Record<string, string> {
    const sse = this.remote.sse;
    if (!sse) return {};
    return { ServerSideEncryption: sse.type, ...(sse.kmsKeyId ? { SSEKMSKeyId: sse.kmsKeyId } : {}) };
  }

  private putExtras(): Record<string, string> {
    return { ...this.sse(), ...(this.remote.storageClass ? { StorageClass: this.remote.storageClass } : {}) };
  }

  /** With SSE-KMS the ETag is not the MD5 of the body; with any other setting it is, for a single PUT and for each part. */
  private etagIsMd5(): boolean {
    return this.remote.sse?.type !== 'aws:kms';
  }

  /** Every object directly under the prefix (deeper "folders" are not ours), grouped into events. */
  async listEvents(signal?: AbortSignal): Promise<RemoteEvent[]> {
    return groupListing(await this.listObjects(signal));
  }

  async listObjects(outer?: AbortSignal): Promise<ListedObject[]> {
    return this.withDeadline('list', '', async (signal) => {
      const out: ListedObject[] = [];
      let token: string | undefined;
      do {
        const page = await this.client.send(new this.s3.ListObjectsV2Command({
          Bucket: this.remote.bucket, Prefix: this.remote.prefix, Delimiter: '/', ContinuationToken: token,
        }), { abortSignal: signal });
        for (const o of page.Contents ?? []) {
          if (!o.Key?.startsWith(this.remote.prefix)) continue;
          const name = o.Key.slice(this.remote.prefix.length);
          if (name === '' || name.includes('/')) continue;
          out.push({ name, bytes: o.Size ?? 0, modifiedMs: o.LastModified?.getTime() ?? 0 });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out;
    }, outer);
  }

  async head(name: string, outer?: AbortSignal): Promise<{ bytes: number; etag: string | null } | undefined> {
    try {
      return await this.withDeadline('head', name, async (signal) => {
        const r = await this.client.send(new this.s3.HeadObjectCommand({ Bucket: this.remote.bucket, Key: this.key(name) }), { abortSignal: signal });
        return { bytes: r.ContentLength ?? 0, etag: unquote(r.ETag) };
      }, outer);
    } catch (err) {
      if (err instanceof RemoteError && err.kind === 'remote-not-found') return undefined;
      throw err;
    }
  }

  /** One PUT with Content-MD5 (`bodyMd5` when the caller hashed the body as it read it); the returned ETag must be that MD5 (unless SSE-KMS). */
  async putSmall(name: string, body: Buffer, contentType: string, outer?: AbortSignal, bodyMd5?: Buffer): Promise<{ etag: string | null }> {
    return this.withDeadline('put', name, async (signal) => {
      const digest = bodyMd5 ?? md5(body);
      const r = await this.client.send(new this.s3.PutObjectCommand({
        Bucket: this.remote.bucket, Key: this.key(name), Body: body, ContentLength: body.length, ContentType: contentType,
        ContentMD5: digest.toString('base64'), ...this.putExtras(),
      }), { abortSignal: signal });
      const etag = unquote(r.ETag);
      if (this.etagIsMd5() && etag !== null && etag !== digest.toString('hex')) {
        throw new RemoteError('remote-integrity', this.remote.name, 'put', this.key(name), `the server stored other bytes than sent (ETag ${etag}, sent MD5 ${digest.toString('hex')})`);
      }
      return { etag };
    }, outer);
  }

  /** Reads a small object whole (bounded by `limit`). */
  async getSmall(name: string, limit = SMALL_OBJECT_LIMIT, outer?: AbortSignal): Promise<Buffer> {
    return this.withDeadline('get', name, async (signal) => {
      const r = await this.client.send(new this.s3.GetObjectCommand({ Bucket: this.remote.bucket, Key: this.key(name) }), { abortSignal: signal });
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of r.Body as AsyncIterable<Uint8Array>) {
        total += chunk.length;
        if (total > limit) throw new RemoteError('remote-integrity', this.remote.name, 'get', this.key(name), `larger than ${limit} bytes: not one of ours`);
        chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      }
      return Buffer.concat(chunks);
    }, outer);
  }

  /** Streams an object to `sink` chunk by chunk (downloads of any size in bounded memory). */
  async download(name: string, sink: (chunk: Uint8Array) => Promise<void> | void, outer?: AbortSignal): Promise<{ bytes: number }> {
    return this.withDeadline('get', name, async (signal) => {
      const r = await this.client.send(new this.s3.GetObjectCommand({ Bucket: this.remote.bucket, Key: this.key(name) }), { abortSignal: signal });
      let bytes = 0;
      for await (const chunk of r.Body as AsyncIterable<Uint8Array>) {
        bytes += chunk.length;
        await sink(chunk);
      }
      return { bytes };
    }, outer);
  }

  /**
   * The object's bytes as a pull stream (the consumer's pace: decoding,
   * writing), under the remote's timeout; `range` reads the first bytes only.
   * A consumer that stops early ends the request.
   */
  async *downloadChunks(name: string, options: { firstBytes?: number; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const deadline = deadlineController(this.remote.timeoutMs, options.signal);
    try {
      let body: AsyncIterable<Uint8Array>;
      try {
        const r = await this.client.send(new this.s3.GetObjectCommand({
          Bucket: this.remote.bucket, Key: this.key(name), ...(options.firstBytes ? { Range: `bytes=0-${options.firstBytes - 1}` } : {}),
        }), { abortSignal: deadline.signal });
        body = r.Body as AsyncIterable<Uint8Array>;
      } catch (err) {
        throw remoteErrorOf(this.remote, 'get', this.key(name), err, deadline.timedOut);
      }
      const it = body[Symbol.asyncIterator]();
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await it.next();
        } catch (err) {
          throw remoteErrorOf(this.remote, 'get', this.key(name), err, deadline.timedOut);
        }
        if (next.done) return;
        yield next.value;
      }
    } finally {
      deadline.dispose();
      deadline.abort(); // ends the response when the consumer stopped early
    }
  }

  async delete(name: string, outer?: AbortSignal): Promise<void> {
    await this.withDeadline('delete', name, async (signal) => {
      await this.client.send(new this.s3.DeleteObjectCommand({ Bucket: this.remote.bucket, Key: this.key(name) }), { abortSignal: signal });
    }, outer);
  }

  /**
   * Uploads `size` bytes of an open file: one PUT up to part_size, multipart
   * above. `onData` sees every byte sent, in order (the caller hashes it).
   */
  async uploadFile(name: string, file: Handle, size: number, onData: (chunk: Uint8Array) => void, callbacks: UploadCallbacks = {}, outer?: AbortSignal): Promise<{ etag: string | null }> {
    const partSize = partSizeFor(this.remote.partSize, size);
    if (size <= partSize) {
      const body = Buffer.allocUnsafe(size);
      const md5 = createHash('md5');
      await readHashed(file, 0, body, [onData, (slice) => md5.update(slice)]);
      return this.putSmall(name, body, 'application/octet-stream', outer, md5.digest());
    }
    const pool = new PartPool(partSize, this.remote.concurrency);
    let offset = 0;
    return this.multipart(name, async () => {
      if (offset >= size) return undefined;
      const length = Math.min(partSize, size - offset);
      const body = pool.take().subarray(0, length);
      const md5 = createHash('md5');
      await readHashed(file, offset, body, [onData, (slice) => md5.update(slice)]);
      offset += length;
      return { body, md5: md5.digest() };
    }, callbacks, outer, pool);
  }

  /**
   * Uploads a stream of unknown length (an encoded snapshot): one PUT when it
   * ends within the first part, multipart otherwise. Memory: `concurrency`
   * part buffers (the one being filled counts as one of them). `maxBytes`:
   * what the stream can at most yield, for the part size (partSizeFor).
   */
  async uploadStream(name: string, source: AsyncIterable<Uint8Array>, maxBytes: number, onData: (chunk: Uint8Array) => void, callbacks: UploadCallbacks = {}, outer?: AbortSignal): Promise<{ etag: string | null; bytes: number }> {
    const partSize = partSizeFor(this.remote.partSize, maxBytes);
    const pool = new PartPool(partSize, this.remote.concurrency);
    const it = source[Symbol.asyncIterator]();
    let pending: Uint8Array | undefined;
    let ended = false;
    let bytes = 0;
    // Fills one part from the stream, hashing each piece as it is copied in; undefined when the stream has ended.
    const fill = async (): Promise<Part | undefined> => {
      if (ended && !pending) return undefined;
      const part = pool.take();
      const md5 = createHash('md5');
      let used = 0;
      while (used < partSize) {
        if (!pending) {
          const next = ended ? { done: true as const, value: undefined } : await it.next();
          if (next.done) {
            ended = true;
            break;
          }
          pending = next.value;
        }
        const n = Math.min(pending.length, partSize - used);
        const piece = pending.subarray(0, n);
        part.set(piece, used);
        md5.update(piece);
        onData(piece);
        used += n;
        pending = n === pending.length ? undefined : pending.subarray(n);
      }
      if (used === 0) {
        pool.give(part);
        return undefined;
      }
      bytes += used;
      return { body: part.subarray(0, used), md5: md5.digest() };
    };
    try {
      const first = await fill();
      if (!first || (ended && !pending)) {
        return { ...(await this.putSmall(name, first?.body ?? Buffer.alloc(0), 'application/octet-stream', outer, first?.md5)), bytes };
      }
      let firstTaken = false;
      const { etag } = await this.multipart(name, async () => {
        if (firstTaken) return fill();
        firstTaken = true;
        return first;
      }, callbacks, outer, pool);
      return { etag, bytes };
    } finally {
      if (!ended) await it.return?.(undefined);
    }
  }

  /**
   * The multipart loop: parts are produced in order (the caller's hash needs
   * the bytes in order, and each part arrives with the MD5 of its bytes) and
   * sent in parallel, each with Content-MD5, each returned ETag checked
   * against it. A part is produced only when fewer than `concurrency` are in
   * flight, and its buffer goes back to `pool` once its request completed:
   * at most `concurrency` part buffers exist.
   */
  private async multipart(name: string, nextPart: () => Promise<Part | undefined>, callbacks: UploadCallbacks, outer: AbortSignal | undefined, pool: PartPool): Promise<{ etag: string | null }> {
    const key = this.key(name);
    return this.withDeadline('upload', name, async (signal) => {
      const created = await this.client.send(new this.s3.CreateMultipartUploadCommand({
        Bucket: this.remote.bucket, Key: key, ContentType: 'application/octet-stream', ...this.putExtras(),
      }), { abortSignal: signal });
      const uploadId = created.UploadId!;
      await callbacks.onMultipartStarted?.(key, uploadId);
      try {
        const parts: Array<{ PartNumber: number; ETag: string }> = [];
        const inFlight = new Set<Promise<void>>();
        let failure: { err: unknown } | undefined;
        for (let partNumber = 1; !failure; partNumber++) {
          if (inFlight.size >= this.remote.concurrency) await Promise.race(inFlight);
          if (failure) break;
          const part = await nextPart();
          if (!part) break;
          const number = partNumber;
          const md5Hex = part.md5.toString('hex');
          const p = this.client.send(new this.s3.UploadPartCommand({
            Bucket: this.remote.bucket, Key: key, UploadId: uploadId, PartNumber: number, Body: part.body,
            ContentLength: part.body.length, ContentMD5: part.md5.toString('base64'),
          }), { abortSignal: signal }).then((r) => {
            const etag = unquote(r.ETag);
            if (etag === null) throw new RemoteError('remote-integrity', this.remote.name, 'upload part', key, `part ${number}: the server returned no ETag`);
            if (this.etagIsMd5() && etag !== md5Hex) {
              throw new RemoteError('remote-integrity', this.remote.name, 'upload part', key, `part ${number}: the server stored other bytes than sent (ETag ${etag}, sent MD5 ${md5Hex})`);
            }
            parts.push({ PartNumber: number, ETag: r.ETag! });
            pool.give(part.body); // acknowledged: the SDK no longer reads it
          }).catch((err: unknown) => {
            failure ??= { err };
          }).finally(() => inFlight.delete(p));
          inFlight.add(p);
        }
        await Promise.all(inFlight);
        if (failure) throw failure.err;
        parts.sort((a, b) => a.PartNumber - b.PartNumber);
        const done = await this.client.send(new this.s3.CompleteMultipartUploadCommand({
          Bucket: this.remote.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts },
        }), { abortSignal: signal });
        await callbacks.onMultipartEnded?.(key, uploadId);
        return { etag: unquote(done.ETag) };
      } catch (err) {
        // Best effort, outside the failed request's deadline; a leftover is aborted by a later run.
        if (await this.abortUpload(key, uploadId).catch(() => false)) await callbacks.onMultipartEnded?.(key, uploadId);
        throw err;
      }
    }, outer);
  }

  /** Aborts a multipart upload; true when it is gone (aborted, or unknown to the server). */
  async abortUpload(key: string, uploadId: string): Promise<boolean> {
    const deadline = deadlineController(Math.min(this.remote.timeoutMs, 30_000));
    try {
      await this.client.send(new this.s3.AbortMultipartUploadCommand({ Bucket: this.remote.bucket, Key: key, UploadId: uploadId }), { abortSignal: deadline.signal });
      return true;
    } catch (err) {
      const e = err as SdkError;
      if (e.name === 'NoSuchUpload' || e.$metadata?.httpStatusCode === 404) return true;
      if (isUnsupported(err)) return true; // the server keeps no uploads we could abort
      return false;
    } finally {
      deadline.dispose();
    }
  }

  /** Unfinished multipart uploads under the prefix, or 'unsupported' when the server cannot list them. */
  async listUploads(outer?: AbortSignal): Promise<OpenUpload[] | 'unsupported'> {
    try {
      return await this.withDeadline('list uploads', '', async (signal) => {
        const out: OpenUpload[] = [];
        let keyMarker: string | undefined;
        let idMarker: string | undefined;
        for (;;) {
          const page = await this.client.send(new this.s3.ListMultipartUploadsCommand({
            Bucket: this.remote.bucket, Prefix: this.remote.prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker,
          }), { abortSignal: signal });
          for (const u of page.Uploads ?? []) {
            if (u.Key && u.UploadId) out.push({ key: u.Key, uploadId: u.UploadId, initiatedMs: u.Initiated?.getTime() ?? 0 });
          }
          if (!page.IsTruncated) break;
          keyMarker = page.NextKeyMarker;
          idMarker = page.NextUploadIdMarker;
        }
        return out;
      }, outer);
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      if (isUnsupported(err) || isUnsupported(cause)) return 'unsupported';
      throw err;
    }
  }
}

/** A part ready to send: its bytes and their MD5 (Content-MD5, and what the ETag must be). */
interface Part {
  body: Buffer;
  md5: Buffer;
}

/**
 * The part buffers of one upload, reused once a part's request completed: at
 * most `max` (the concurrency) are ever allocated. A fresh 64 MiB buffer per
 * part cost the kernel a page fault per 4 KiB of every part (measured: 6 s
 * of system time per GiB, against 2 s for awscli), and freed ones lingered
 * until a garbage collection, beyond the memory bound.
 */
class PartPool {
  private readonly free: Buffer[] = [];
  private allocated = 0;

  constructor(private readonly partSize: number, private readonly max: number) {}

  take(): Buffer {
    const buffer = this.free.pop();
    if (buffer) return buffer;
    if (this.allocated >= this.max) throw new Error(`internal: more than ${this.max} part buffers requested at once`);
    this.allocated += 1;
    return Buffer.allocUnsafeSlow(this.partSize);
  }

  give(body: Buffer): void {
    this.free.push(Buffer.from(body.buffer, body.byteOffset, this.partSize));
  }
}

/**
 * Slices in which a part is read and hashed: each slice is hashed right
 * after its read, while it is still in the CPU cache, and the event loop
 * runs between slices, so the requests in flight keep being fed instead of
 * stalling for the whole part's hashing (about 130 ms per 64 MiB part).
 */
const READ_SLICE = 1024 * 1024;

/** Fills `into` with the file's bytes at `offset`, handing each slice to every hasher in order. */
async function readHashed(file: Handle, offset: number, into: Buffer, hashers: ReadonlyArray<(slice: Uint8Array) => void>): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const slice = into.subarray(done, Math.min(into.length, done + READ_SLICE));
    let filled = 0;
    while (filled < slice.length) {
      const n = await file.read(slice, filled, slice.length - filled, offset + done + filled);
      if (n === 0) throw new Error(`the file ended at ${offset + done + filled} bytes, before the ${offset + into.length} expected: it changed while uploading`);
      filled += n;
    }
    for (const hash of hashers) hash(slice);
    done += slice.length;
  }
}
