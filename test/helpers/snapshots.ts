/**
 * Fixtures for CLI tests: a source dump.rdb with a chosen mtime and content,
 * an archive folder, a config file, and a listing of a tree to compare.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { crc64 } from '../../src/rdb/crc64.js';
import { buildRdb, concat, encodeString } from './rdb-builder.js';
import { tempDir } from './cli.js';

export interface Snapshot {
  bytes: Buffer;
  length: number;
  sha256: string;
}

/** A valid RDB whose content depends on `seed`, padded to about `size` bytes. */
export function snapshotBytes(seed: string, size = 0): Buffer {
  const pad = Math.max(0, size - 200);
  const padding = Buffer.alloc(pad);
  for (let i = 0; i < pad; i += 1) padding[i] = (i * 31 + seed.length * 7 + (seed.charCodeAt(i % seed.length) || 0)) & 0xff;
  const body = concat([
    Uint8Array.of(0xfe, 0x00, 0xfb, 0x02, 0x00),
    Uint8Array.of(0x00), encodeString('seed'), encodeString(seed),
    Uint8Array.of(0x00), encodeString('padding'), encodeString(padding),
  ]);
  const file = Buffer.from(buildRdb({ body, checksum: 'zero' }));
  file.writeBigUInt64LE(crc64(file.subarray(0, file.length - 8)), file.length - 8);
  return file;
}

export function writeSnapshot(path: string, options: { seed: string; mtime: Date; size?: number }): Snapshot {
  const bytes = snapshotBytes(options.seed, options.size);
  writeFileSync(path, bytes);
  utimesSync(path, options.mtime, options.mtime);
  return { bytes, length: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
}

export interface RuleSpec {
  name: string;
  every?: string;
  count: number;
}

export interface ArchiveEnv {
  root: string;
  source: string;
  nodes?: string;
  archive: string;
  config: string;
  state: string;
  writeConfig(changes: { rules?: RuleSpec[]; extra?: string }): void;
}

/**
 * A temp root with data/dump.rdb (not yet written), an empty archive/ (0700:
 * the archive root must exist unless archive.create is set) and config.yaml.
 */
/**
 * An archive environment in a given folder (a mount of the test's own, such as
 * the XFS loop mount): data/ and archive/ (0700) there, and a config whose
 * lines after `archive: dir:` are `tail` (archive keys, rules).
 */
export function archiveEnvIn(root: string, tail: string[]): ArchiveEnv {
  mkdirSync(join(root, 'data'), { recursive: true });
  mkdirSync(join(root, 'archive'));
  chmodSync(join(root, 'archive'), 0o700);
  const env: ArchiveEnv = {
    root, source: join(root, 'data', 'dump.rdb'), archive: join(root, 'archive'), config: join(root, 'config.yaml'), state: join(root, 'archive', '.rdb-archiver', 'state.json'),
    writeConfig: () => undefined,
  };
  writeFileSync(env.config, ['source:', `  rdb: ${env.source}`, 'archive:', `  dir: ${env.archive}`, ...tail, ''].join('\n'));
  return env;
}

export function setupArchive(options: { rules?: RuleSpec[]; nodes?: boolean; extra?: string } = {}): ArchiveEnv {
  const root = tempDir();
  mkdirSync(join(root, 'data'));
  mkdirSync(join(root, 'archive'));
  chmodSync(join(root, 'archive'), 0o700);
  const env: ArchiveEnv = {
    root,
    source: join(root, 'data', 'dump.rdb'),
    nodes: options.nodes ? join(root, 'data', 'nodes.conf') : undefined,
    archive: join(root, 'archive'),
    config: join(root, 'config.yaml'),
    state: join(root, 'archive', '.rdb-archiver', 'state.json'),
    writeConfig(changes) {
      const rules = changes.rules ?? options.rules;
      const lines = [
        'source:',
        `  rdb: ${env.source}`,
        ...(env.nodes ? [`  nodes: ${env.nodes}`] : []),
        'archive:',
        `  dir: ${env.archive}`,
        'log:',
        '  level: info',
      ];
      if (rules) {
        lines.push('rules:');
        for (const r of rules) {
          lines.push(`  - name: ${r.name}`, `    count: ${r.count}`);
          if (r.every) lines.push(`    every: "${r.every}"`);
        }
      }
      const extra = changes.extra ?? options.extra;
      if (extra) lines.push(extra);
      writeFileSync(env.config, lines.join('\n') + '\n');
    },
  };
  env.writeConfig({});
  return env;
}

/** Every path below dir (hidden ones too) with its size and inode, sorted: equal listings mean nothing changed. */
export function listTree(dir: string, prefix = ''): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of entries.sort()) {
    const path = join(dir, name);
    const info = lstatSync(path);
    const rel = prefix + name;
    if (info.isDirectory()) out.push(`${rel}/`, ...listTree(path, `${rel}/`));
    else out.push(`${rel} ${info.size} ${info.ino} ${info.mtimeMs}`);
  }
  return out;
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}
