/**
 * A minimal RESP2 client over a Unix socket, for the restore drill's
 * throwaway server (drill.ts): one command at a time, replies parsed as
 * they arrive. Not a general Redis client: no TLS, no AUTH, no pipelining.
 */
import { createConnection, type Socket } from 'node:net';

export type Reply = string | number | null | Reply[] | ReplyError;

export class ReplyError extends Error {}

/** Parses one reply at `pos`; undefined while the buffer does not hold all of it. */
export function parseReply(buf: Buffer, pos: number): { value: Reply; end: number } | undefined {
  const lineEnd = buf.indexOf('\r\n', pos);
  if (pos >= buf.length || lineEnd < 0) return undefined;
  const type = buf[pos];
  const line = buf.toString('utf8', pos + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case 0x2b: return { value: line, end: next }; // +
    case 0x2d: return { value: new ReplyError(line), end: next }; // -
    case 0x3a: return { value: Number(line), end: next }; // :
    case 0x24: { // $
      const len = Number(line);
      if (len < 0) return { value: null, end: next };
      return buf.length < next + len + 2 ? undefined : { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case 0x2a: { // *
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, at);
        if (!item) return undefined;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`unexpected RESP type byte 0x${(type ?? 0).toString(16)}`);
  }
}

function encode(args: readonly string[]): Buffer {
  return Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap((a) => [Buffer.from(`$${Buffer.byteLength(a)}\r\n`), Buffer.from(a), Buffer.from('\r\n')])]);
}

export class UnixRespClient {
  private buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void } | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      const parsed = this.waiting ? parseReply(this.buffer, 0) : undefined;
      if (!parsed || !this.waiting) return;
      this.buffer = this.buffer.subarray(parsed.end);
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve(parsed.value);
    });
    const fail = (err: Error) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static connect(path: string): Promise<UnixRespClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path });
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(new UnixRespClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** One command; an error reply resolves as a ReplyError value. */
  send(...args: string[]): Promise<Reply> {
    if (this.waiting) return Promise.reject(new Error('one command at a time'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket.write(encode(args));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** INFO's "key:value" lines. */
export function parseInfoText(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
