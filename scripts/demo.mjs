// `npm run demo`: archives the bundled example RDB into ./demo-archive and shows the result.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const cli = (...args) => spawnSync(process.execPath, ['dist/cli.js', ...args, '-c', 'examples/demo.yaml'], { stdio: 'inherit' });

console.log('$ rdb-archiver once -c examples/demo.yaml');
const run = cli('once');
if (run.status !== 0) process.exit(run.status ?? 1);

console.log('\n$ ls -R demo-archive');
for (const rule of readdirSync('demo-archive').filter((n) => !n.startsWith('.')).sort()) {
  console.log(`${rule}/`);
  for (const file of readdirSync(join('demo-archive', rule)).sort()) console.log(`  ${file}`);
}
console.log('\nRun `npm run demo` again: the source is unchanged, so nothing new is archived.');
console.log('Check a snapshot yourself: cd demo-archive/daily && sha256sum -c dump-*.sha256');
