/**
 * A minimal RESP2 client over a Unix socket, for the restore drill's
 * throwaway server (drill.ts): one command at a time, replies parsed as
 * they arrive. Not a general Redis client: no TLS, no AUTH, no pipelining.
 * The protocol itself (encoding, parsing) is the sources' (sources/resp.ts).
 */
import { createConnection, type Socket } from 'node:net';
import { encodeCommand, parseReply, type Reply } from '../sources/resp.js';

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
      this.socket.write(encodeCommand(args));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
