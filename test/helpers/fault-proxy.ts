/**
 * A fault-injecting HTTP proxy between the CLI and the test S3 server. Each
 * request is matched against the current rule, which decides: pass it on,
 * answer with an S3 error, reset the connection part-way through the
 * request body, hold the answer back (a slow server), or change the
 * answer's headers (a wrong ETag). Always closed after
 * the test file.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll } from 'vitest';

export type FaultAction =
  | { kind: 'pass' }
  | { kind: 'error'; status: number; code: string; message?: string }
  /** Reads this many bytes of the request body, then destroys the socket. */
  | { kind: 'reset'; afterBytes: number }
  /** Answers (passes through) only after this delay. */
  | { kind: 'delay'; ms: number }
  /** Passes through, with these response headers replaced (a server that reports another ETag than it should). */
  | { kind: 'rewrite'; headers: Record<string, string> };

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

export type FaultRule = (req: SeenRequest, index: number) => FaultAction;

export interface FaultProxy {
  endpoint: string;
  /** Every request seen, in order. */
  seen: SeenRequest[];
  setRule(rule: FaultRule): void;
  close(): Promise<void>;
}

const open: Server[] = [];

export async function startFaultProxy(upstreamPort: number): Promise<FaultProxy> {
  let rule: FaultRule = () => ({ kind: 'pass' });
  const seen: SeenRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const info: SeenRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    const index = seen.push(info) - 1;
    const action = rule(info, index);
    if (action.kind === 'error') {
      req.resume();
      req.on('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${action.code}</Code><Message>${action.message ?? action.code}</Message><RequestId>fault-proxy</RequestId></Error>`;
        res.writeHead(action.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (action.kind === 'reset') {
      let got = 0;
      req.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= action.afterBytes) req.socket.destroy();
      });
      req.on('end', () => req.socket.destroy());
      return;
    }
    const forward = () => {
      const up = request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        const replaced = action.kind === 'rewrite' ? action.headers : {};
        const headers = { ...upRes.headers };
        for (const [name, value] of Object.entries(replaced)) headers[name.toLowerCase()] = value;
        res.writeHead(upRes.statusCode ?? 502, headers);
        upRes.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (action.kind === 'delay') {
      req.pause();
      const timer = setTimeout(() => {
        req.resume();
        forward();
      }, action.ms);
      res.on('close', () => clearTimeout(timer));
    } else {
      forward();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  open.push(server);
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen,
    setRule(r) {
      rule = r;
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

afterAll(async () => {
  for (const s of open.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});
