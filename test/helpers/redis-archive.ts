/**
 * For tests of source.redis through the CLI: a config with a redis source,
 * what the archive holds, and a restore into a fresh redis-server.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { jsonOf, runCli, tempDir } from './cli.js';
import { startRedis } from './redis.js';

/** config.yaml in `dir`: source.redis with these lines (indented for you), the archive in dir/archive, and `extra` top-level YAML. */
export function writeRedisConfig(dir: string, redis: string, extra = ''): string {
  const path = join(dir, 'config.yaml');
  const redisLines = redis.split('\n').filter(Boolean).map((l) => `    ${l}`).join('\n');
  writeFileSync(path, `source:\n  redis:\n${redisLines}\narchive:\n  dir: ${join(dir, 'archive')}\n  create: true\n${extra ? `${extra}\n` : ''}`);
  return path;
}

/** Every file under the rule folders of dir/archive: final names and temps alike. */
export function archivedFiles(dir: string): string[] {
  const root = join(dir, 'archive');
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const rule of readdirSync(root)) {
    if (rule.startsWith('.')) continue;
    for (const name of readdirSync(join(root, rule))) out.push(`${rule}/${name}`);
  }
  return out.sort();
}

export const finalRdbs = (dir: string): string[] => archivedFiles(dir).filter((f) => /\/dump-[^/]+\.rdb$/.test(f));

/** The state file's record of the last archived snapshot. */
export function archivedState(dir: string): { ts: string; identity: { dev: string; ino: string }; server: Record<string, unknown> } {
  return JSON.parse(readFileSync(join(dir, 'archive', '.rdb-archiver', 'state.json'), 'utf8')).archived;
}

/**
 * `restore <which> --to <fresh folder>` through the CLI (args add --from etc.),
 * then a fresh redis-server on that folder: its DEBUG DIGEST, and the restore's JSON.
 */
export async function restoreAndDigest(config: string, args: string[] = [], env?: Record<string, string | undefined>): Promise<{ digest: string; report: Record<string, unknown>; text: string }> {
  const dir = tempDir('rdb-restore-');
  const to = join(dir, 'data');
  mkdirSync(to);
  const json = await runCli(['restore', 'latest', '--to', to, '--json', '-c', config, ...args], { env });
  expect(json.code, json.stdout + json.stderr).toBe(0);
  const report = jsonOf(json);
  // The same restore as a person reads it (into another folder): what it says about the writer.
  const again = join(dir, 'again');
  mkdirSync(again);
  const human = await runCli(['restore', 'latest', '--to', again, '-c', config, ...args], { env });
  expect(human.code, human.stdout + human.stderr).toBe(0);
  const server = await startRedis(to);
  try {
    return { digest: String(await server.call('DEBUG', 'DIGEST')), report, text: human.stdout };
  } finally {
    await server.stop();
  }
}
