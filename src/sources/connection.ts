/**
 * One connection to a Redis server over node:net or node:tls: commands with
 * RESP replies first, then (after PSYNC) the raw replication payload, read in
 * order with backpressure (see PayloadReader).
 *
 * Every failure is a RedisSourceError naming host:port and the step, never a
 * password. A deadline covers the whole connection's life: a server that
 * stops sending (a BGSAVE that never ends, a stalled network) cannot hang a
 * run.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { RedisSourceError } from '../core/errors.js';
import { encodeCommand, parseReply, ProtocolError, ReplyError, type Reply } from './resp.js';

export interface Endpoint {
  host: string;
  port: number;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string };
}

/** The socket buffers at most this much of the payload ahead of the disk before it stops reading. */
export const PAYLOAD_HIGH_WATER = 16 * 1024 * 1024;
const PAYLOAD_LOW_WATER = 4 * 1024 * 1024;

export function endpointLabel(e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

export class RedisConnection {
  /** Bytes received and not consumed yet. */
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failure: RedisSourceError | undefined;
  private ended = false;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  readonly label: string;

  private constructor(private readonly socket: Socket, endpoint: Endpoint, private step: string) {
    this.label = endpointLabel(endpoint);
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      if (this.buffered > PAYLOAD_HIGH_WATER) socket.pause(); // the disk is slower than the network
      this.notify();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => this.fail('source-network', `${err.code ?? 'error'}: ${err.message}`));
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
  }

  /** Connects (TLS when endpoint.tls is set); the deadline then covers everything until close(). */
  static async open(endpoint: Endpoint, deadlineMs: number): Promise<RedisConnection> {
    const label = endpointLabel(endpoint);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(new RedisSourceError('source-network', label, 'connect', 'timed out'));
      }, Math.max(1, deadlineMs - Date.now()));
      const options: ConnectionOptions = { host: endpoint.host, port: endpoint.port };
      let s: Socket;
      if (endpoint.tls) {
        const t = endpoint.tls;
        s = tlsConnect({ ...options, ca: t.ca, cert: t.cert, key: t.key, servername: t.servername ?? (isIp(endpoint.host) ? undefined : endpoint.host) });
        s.once('secureConnect', () => done());
      } else {
        s = netConnect({ host: endpoint.host, port: endpoint.port });
        s.once('connect', () => done());
      }
      const done = () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      };
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        s.destroy();
        const step = endpoint.tls ? 'connect (TLS)' : 'connect';
        reject(new RedisSourceError('source-network', label, step, `${err.code ?? 'error'}: ${err.message}`));
      });
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    const conn = new RedisConnection(socket, endpoint, 'connect');
    conn.timer = setTimeout(() => conn.fail('source-network', `no answer within source.redis.timeout (${Math.round((deadlineMs - Date.now()) / 1000)} s left)`, 'timeout'),
      Math.max(1, deadlineMs - Date.now()));
    conn.timer.unref?.();
    return conn;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private fail(kind: 'source-network' | 'source-auth', detail: string, why?: string): void {
    this.failure ??= new RedisSourceError(kind, this.label, this.step, why ? `${why}: ${detail}` : detail);
    this.socket.destroy();
    this.notify();
  }

  /** Waits for more bytes (or the end, or a failure). */
  private waitForData(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    if (this.buffered < PAYLOAD_LOW_WATER && this.socket.isPaused()) this.socket.resume();
    return out;
  }

  private closedError(): RedisSourceError {
    return this.failure ?? new RedisSourceError('source-network', this.label, this.step, 'the server closed the connection');
  }

  /** Sends a command and reads its reply; an error reply is returned as a ReplyError value. */
  async send(args: ReadonlyArray<string | number>, step = String(args[0])): Promise<Reply> {
    this.step = step;
    if (this.failure) throw this.failure;
    this.socket.write(encodeCommand(args));
    for (;;) {
      if (this.buffered > 0) {
        let parsed;
        try {
          parsed = parseReply(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks));
        } catch (err) {
          if (err instanceof ProtocolError) throw new RedisSourceError('source-network', this.label, step, `protocol error: ${err.message}`);
          throw err;
        }
        if (parsed) {
          this.take(parsed.end);
          return parsed.value;
        }
      }
      if (this.ended) throw this.closedError();
      await this.waitForData();
    }
  }

  /** Like send, but an error reply throws: NOPERM/WRONGPASS/NOAUTH as source-auth (67), anything else as source-network (68). */
  async call(args: ReadonlyArray<string | number>, step = String(args[0])): Promise<Reply> {
    const reply = await this.send(args, step);
    if (reply instanceof ReplyError) throw replyFailure(this.label, step, reply);
    return reply;
  }

  /** Writes raw bytes (the replication commands that are sent without waiting for a reply). */
  write(args: ReadonlyArray<string | number>, step: string): void {
    this.step = step;
    this.socket.write(encodeCommand(args));
  }

  /** Reads one line ending in \n (without it, nor a \r before it); skips the bare "\n" keep-alives a master sends while it saves. */
  async readLine(step: string, maxBytes = 4096): Promise<string> {
    this.step = step;
    for (;;) {
      while (this.buffered > 0 && this.chunks[0]![0] === 0x0a) this.take(1); // keep-alive
      if (this.buffered > 0) {
        const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
        const nl = all.indexOf(0x0a);
        if (nl >= 0) {
          const line = all.toString('latin1', 0, nl > 0 && all[nl - 1] === 0x0d ? nl - 1 : nl);
          this.take(nl + 1);
          return line;
        }
        if (all.length > maxBytes) throw new RedisSourceError('source-network', this.label, step, `protocol error: a line longer than ${maxBytes} bytes`);
      }
      if (this.ended) throw this.closedError();
      await this.waitForData();
    }
  }

  /**
   * Up to `max` bytes of what has arrived, waiting for at least one; an empty
   * buffer at the end of the connection. The caller decides whether an end is
   * early (see payload.ts).
   */
  async readSome(max: number, step: string): Promise<Buffer> {
    this.step = step;
    for (;;) {
      if (this.buffered > 0) return this.take(Math.min(max, this.buffered));
      if (this.failure) throw this.failure;
      if (this.ended) return Buffer.alloc(0);
      await this.waitForData();
    }
  }

  /** The error that ended the connection, or one saying the server closed it. */
  endError(step: string): RedisSourceError {
    this.step = step;
    return this.failure ?? new RedisSourceError('source-network', this.label, step, 'the server closed the connection');
  }

  close(): void {
    clearTimeout(this.timer);
    this.socket.destroy();
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** What an error reply means for the run: credentials and ACL are 67, the rest 68. */
export function replyFailure(label: string, step: string, reply: ReplyError): RedisSourceError {
  const code = reply.code;
  if (code === 'WRONGPASS' || code === 'NOAUTH' || code === 'NOPERM' || /invalid password|invalid username-password/i.test(reply.message)) {
    const hint = code === 'NOPERM' ? ` (the ACL user needs ${step.split(' ')[0]!.toLowerCase()}: see "ACL for a backup user" in the README)` : '';
    return new RedisSourceError('source-auth', label, step, `${reply.message}${hint}`);
  }
  return new RedisSourceError('source-network', label, step, `the server answered: ${reply.message}`);
}
