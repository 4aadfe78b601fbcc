/**
 * The tool's version, from package.json. The CLI bundle (dist/cli.bundle.cjs)
 * sees import.meta.url as the bundle's own path, one folder below the
 * package; a module run from src/ or from tsc's dist/<layer>/ is two folders
 * below. The first package.json named rdb-archiver wins.
 */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function toolVersion(): string {
  if (cached !== undefined) return cached;
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'rdb-archiver' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch {
      // not there: try the next
    }
  }
  return (cached = 'unknown');
}
