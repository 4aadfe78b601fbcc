/**
 * A TCP proxy on loopback for network faults: forwards both ways, and once
 * `resetAfter` bytes have gone from the server to the client, resets both
 * connections (RST, as a failing middlebox or a dead NAT entry does).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  /** Bytes forwarded from the server to clients so far. */
  forwarded(): number;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }, options: { resetAfter?: number } = {}): Promise<TcpProxy> {
  let downstream = 0;
  const sockets = new Set<Socket>();
  const reset = (s: Socket) => (typeof s.resetAndDestroy === 'function' ? s.resetAndDestroy() : s.destroy());
  const server: Server = createServer((client) => {
    const upstream = createConnection(target);
    sockets.add(client).add(upstream);
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
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    forwarded: () => downstream,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
