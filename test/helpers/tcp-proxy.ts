/**
 * A TCP proxy on loopback for network faults: forwards both ways, and once
 * `resetAfter` bytes have gone from the server to the client, resets both
 * connections (RST, as a failing middlebox or a dead NAT entry does).
 *
 * `pauseAfter`: once that many bytes have gone to the client, stop reading
 * from the server (its send buffer fills and it waits, mid-reply) until
 * resume(): a test can then act on the server while it is provably in the
 * middle of sending.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  /** Bytes forwarded from the server to clients so far. */
  forwarded(): number;
  /** Whether pauseAfter has stopped the reading from the server. */
  paused(): boolean;
  /** Reads from the server again (after pauseAfter). */
  resume(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }, options: { resetAfter?: number; pauseAfter?: number } = {}): Promise<TcpProxy> {
  let downstream = 0;
  const sockets = new Set<Socket>();
  const upstreams = new Set<Socket>();
  let pausedNow = false;
  let pauseDone = false;
  const reset = (s: Socket) => (typeof s.resetAndDestroy === 'function' ? s.resetAndDestroy() : s.destroy());
  const server: Server = createServer((client) => {
    const upstream = createConnection(target);
    sockets.add(client).add(upstream);
    upstreams.add(upstream);
    const drop = () => {
      reset(client);
      reset(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('data', (d: Buffer) => upstream.write(d));
    upstream.on('data', (d: Buffer) => {
      downstream += d.length;
      client.write(d);
      if (options.resetAfter !== undefined && downstream >= options.resetAfter) drop();
      if (options.pauseAfter !== undefined && !pauseDone && downstream >= options.pauseAfter) {
        pauseDone = true;
        pausedNow = true;
        upstream.pause();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    forwarded: () => downstream,
    paused: () => pausedNow,
    resume: () => {
      pausedNow = false;
      for (const u of upstreams) u.resume();
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
