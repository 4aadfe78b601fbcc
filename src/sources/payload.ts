/**
 * The replication payload as a sequential reader for the archive pass:
 * exactly `$<len>` bytes, or (diskless, `$EOF:<mark>`) every byte up to the
 * 40-byte mark. An end of the connection before that is an error, never a
 * short snapshot: `redis-cli --rdb` exits 0 with a truncated file on some
 * versions; we do not.
 *
 * Memory is bounded by the connection's high-water mark: the pass asks for the
 * next bytes only once it has written the previous ones, and the connection
 * stops reading the socket while too much waits (see connection.ts).
 */
import type { RedisConnection } from './connection.js';
import { EOF_MARK_BYTES, type PayloadHeader } from './resp.js';

/** The pass reads in chunks of up to 8 MiB; hand it at least this much at a time when it is there, not every small TCP segment. */
const MIN_CHUNK = 1024 * 1024;

export class PayloadReader {
  private remaining: number | undefined;
  /** Diskless: the last bytes received, held back until we know they are not the mark. */
  private tail: Buffer = Buffer.alloc(0);
  private done = false;
  /** Bytes handed to the pass so far. */
  delivered = 0;

  constructor(private readonly conn: RedisConnection, private readonly header: PayloadHeader) {
    if (header.kind === 'length') this.remaining = header.bytes;
  }

  /** The payload's announced length (disk-based sync); undefined for diskless. */
  get expectedBytes(): number | undefined {
    return this.header.kind === 'length' ? this.header.bytes : undefined;
  }

  /** Reads the next bytes into buffer[offset..]; 0 at the end of the payload. Rejects when the connection fails or ends early. */
  async read(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    if (this.done || length === 0) return 0;
    return this.header.kind === 'length' ? this.readCounted(buffer, offset, length) : this.readMarked(buffer, offset, length);
  }

  private async readCounted(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    let n = 0;
    const want = Math.min(length, this.remaining!);
    while (n < Math.min(want, MIN_CHUNK)) {
      const got = await this.conn.readSome(want - n, 'transfer');
      if (got.length === 0) throw this.early();
      buffer.set(got, offset + n);
      n += got.length;
      this.delivered += got.length;
      this.remaining! -= got.length;
    }
    if (this.remaining === 0) this.done = true;
    return n;
  }

  private async readMarked(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    const mark = (this.header as { mark: Buffer }).mark;
    let n = 0;
    while (n < Math.min(length, MIN_CHUNK)) {
      // Never hold more than length + the mark's size, so what is released fits the caller's buffer.
      const got = await this.conn.readSome(length - n, 'transfer');
      if (got.length === 0) throw this.early();
      const joined = this.tail.length === 0 ? got : Buffer.concat([this.tail, got]);
      // The master sends nothing after the mark until the replica acknowledges
      // (and an rdb-only client is closed), so the mark ends what has arrived.
      if (joined.length >= EOF_MARK_BYTES && joined.subarray(joined.length - EOF_MARK_BYTES).equals(mark)) {
        const body = joined.subarray(0, joined.length - EOF_MARK_BYTES);
        buffer.set(body, offset + n);
        n += body.length;
        this.delivered += body.length;
        this.tail = Buffer.alloc(0);
        this.done = true;
        break;
      }
      const release = Math.max(0, joined.length - EOF_MARK_BYTES);
      buffer.set(joined.subarray(0, release), offset + n);
      n += release;
      this.delivered += release;
      this.tail = Buffer.from(joined.subarray(release));
    }
    return n;
  }

  private early(): Error {
    const err = this.conn.endError('transfer');
    const what = this.header.kind === 'length' ? `${this.delivered} of ${this.header.bytes} bytes` : `${this.delivered} bytes, no end mark`;
    err.message = `${err.message} before the whole snapshot arrived (${what}); nothing archived`;
    return err;
  }
}
