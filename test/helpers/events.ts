/**
 * Builds archived events by hand, the way the worker lays them out (one
 * physical copy hard-linked into every rule folder, a sha256sum-format
 * sidecar), so catalog and restore tests can set up many events without
 * running `once` for each.
 */
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { snapshotBytes } from './snapshots.js';

export interface BuiltEvent {
  ts: string;
  rdb: Buffer;
  sha256: string;
  nodes?: Buffer;
  /** Paths per rule folder. */
  files: Record<string, { rdb: string; sidecar: string; nodes?: string }>;
}

const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

export function writeEvent(
  archive: string,
  rules: readonly string[],
  ts: string,
  options: { seed?: string; size?: number; rdb?: Buffer; nodes?: string } = {},
): BuiltEvent {
  const rdb = options.rdb ?? snapshotBytes(options.seed ?? ts, options.size);
  const nodes = options.nodes === undefined ? undefined : Buffer.from(options.nodes);
  let sidecar = `${sha(rdb)}  dump-${ts}.rdb\n`;
  if (nodes) sidecar += `${sha(nodes)}  nodes-${ts}.config\n`;
  const files: BuiltEvent['files'] = {};
  let first: BuiltEvent['files'][string] | undefined;
  for (const rule of rules) {
    const dir = join(archive, rule);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const paths = { rdb: join(dir, `dump-${ts}.rdb`), sidecar: join(dir, `dump-${ts}.sha256`), nodes: nodes ? join(dir, `nodes-${ts}.config`) : undefined };
    if (!first) {
      writeFileSync(paths.rdb, rdb, { mode: 0o600 });
      writeFileSync(paths.sidecar, sidecar, { mode: 0o600 });
      if (nodes) writeFileSync(paths.nodes!, nodes, { mode: 0o600 });
      first = paths;
    } else {
      linkSync(first.rdb, paths.rdb);
      linkSync(first.sidecar, paths.sidecar);
      if (nodes) linkSync(first.nodes!, paths.nodes!);
    }
    files[rule] = paths;
  }
  return { ts, rdb, sha256: sha(rdb), nodes, files };
}

export const NODES_CONF =
  'e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch 1 lastVoteEpoch 0\n';
