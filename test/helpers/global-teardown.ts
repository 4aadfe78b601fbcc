/**
 * Failure records (src/pipeline/failure-record.ts) that test runs leave in the default
 * fallback folders /var/tmp/rdb-archiver-<uid>: a test whose archive is
 * missing or read-only makes the CLI record its failure there, outside the
 * test's temp folder. After the run, remove the records whose state file
 * lived in a temp folder that is gone (a test still running elsewhere keeps
 * its folder, so its records stay).
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TEST_ROOTS = [tmpdir(), '/tmp', '/dev/shm'];

export default function setup(): () => void {
  return () => {
    let folders: string[];
    try {
      folders = readdirSync('/var/tmp').filter((n) => /^rdb-archiver-\d+$/.test(n)).map((n) => join('/var/tmp', n));
    } catch {
      return;
    }
    for (const folder of folders) {
      let names: string[];
      try {
        names = readdirSync(folder).filter((n) => n.endsWith('.json'));
      } catch {
        continue;
      }
      for (const name of names) {
        const path = join(folder, name);
        try {
          const { statePath } = JSON.parse(readFileSync(path, 'utf8')) as { statePath?: string };
          if (typeof statePath !== 'string') continue;
          // e.g. /tmp/rdb-archiver-test-XXXX/archive/.rdb-archiver/state.json -> /tmp/rdb-archiver-test-XXXX
          const root = TEST_ROOTS.find((r) => statePath.startsWith(`${r}/rdb-archiver-`));
          if (!root) continue;
          const testDir = join(root, statePath.slice(root.length + 1).split('/')[0]!);
          if (!existsSync(testDir)) rmSync(path, { force: true });
        } catch {
          // not a record, or gone already
        }
      }
    }
  };
}
