// `npm run build`: type-check and emit dist/ with tsc (the modules tests and
// scripts import), then bundle the CLI into dist/cli.bundle.cjs with esbuild,
// install the loader as dist/cli.cjs and save V8's code cache of the bundle.
//
// Why a bundle: a cron run that finds nothing to do is mostly Node start-up,
// and resolving + reading ~100 module files of commander, yaml and zod costs
// more than the work itself. One file starts in a fraction of the time.
//
// Why CommonJS and a code cache: Node 20 has no compile cache for modules,
// but node:vm compiles a script from a V8 code cache, and compiling the
// bundle from source was the largest part of what was left (see
// scripts/cli-loader.cjs). A script cannot contain `import`, hence CommonJS;
// croner (only for `daemon`) is bundled in. The logger is our own
// (src/core/log.ts): pino's start-up was a third of a no-change run's cost.
//
// Packaging follows from this: what is bundled is a devDependency, what stays
// external is a dependency (the tarball carries those, bundleDependencies,
// and the .deb takes them from it),
// and package.json "files" ships dist/cli.cjs (and dist/cli.js), the bundle and its cache only:
// a new file the CLI loads at run time must be added there
// (test/integration/package.test.ts runs the installed tarball).
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

const DIST = resolve('dist');

// Node built-ins that the bundle's top level would load and a no-change `once`
// never uses: commander requires node:child_process for executable subcommands,
// hooks and drills spawn, sources connect with node:net, core/shards hashes
// with node:crypto, core/log asks node:tty about a terminal. Loading them is
// start-up cost (issue 11: about 25 M instructions of ~170 M above `node -e 0`).
// In the bundle each is a stand-in with the same export names, whose getters
// require the real module on first use; the sources keep their plain imports
// (dist/*.js, which the tests import, is unchanged).
const LAZY_BUILTINS = ['child_process', 'crypto', 'net', 'tty'];
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    const filter = new RegExp(`^(node:)?(${LAZY_BUILTINS.join('|')})$`);
    b.onResolve({ filter }, (args) => (args.namespace === 'lazy-builtin'
      ? { path: args.path, external: true } // the stand-in's own require of the real module
      : { path: args.path.replace(/^(node:)?/, 'node:'), namespace: 'lazy-builtin' }));
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => {
      const names = Object.keys(createRequire(import.meta.url)(args.path));
      const getters = names.map((n) => `${JSON.stringify(n)}: { get: () => load()[${JSON.stringify(n)}], enumerable: true }`).join(',\n');
      return {
        loader: 'js',
        contents: `let real;\nconst load = () => real ??= require(${JSON.stringify(args.path)});\nmodule.exports = Object.defineProperties({}, {\n${getters}\n});\n`,
      };
    });
  },
};
rmSync(DIST, { recursive: true, force: true });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });

await build({
  entryPoints: ['src/cli.ts'],
  outfile: join(DIST, 'cli.bundle.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // The S3 SDK stays in node_modules, required on first use only (src/targets/s3.ts
  // loadSdk): a run with nothing to upload neither parses nor loads it.
  // So do the codecs of off-site copies (src/codecs/): age-encryption and
  // zstd-napi are required when an upload or restore encodes, never before.
  external: ['@aws-sdk/*', 'age-encryption', 'zstd-napi'],
  plugins: [lazyBuiltins],
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: true,
  legalComments: 'linked',
  // The bundle is one function expression, the wrapper Node puts around a
  // CommonJS module (in strict mode, like the ES modules of the sources), which
  // the loader compiles as it is: wrapping 800 KB at run time made V8 copy it.
  banner: { js: "(function (exports, require, module, __filename, __dirname) {'use strict';var __rdbImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  footer: { js: '\n})' },
  define: { 'import.meta.url': '__rdbImportMetaUrl' },
  // import() in a vm.Script needs a loader hook that Node 20.0-20.11 lacks:
  // let esbuild turn the lazy imports (node:readline, croner) into require().
  supported: { 'dynamic-import': false },
  logLevel: 'warning',
});
// The validation thread's script (src/rdb/validate-worker.ts), self-contained beside the
// bundle, where src/rdb/validate-thread.ts looks for it; package.json "files" ships it.
await build({
  entryPoints: ['src/rdb/validate-worker.ts'],
  outfile: join(DIST, 'validate-worker.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  banner: { js: "var __rdbImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__rdbImportMetaUrl' },
  logLevel: 'warning',
});
const bundle = readFileSync(join(DIST, 'cli.bundle.cjs'), 'utf8');
if (/\bimport\(/.test(bundle)) throw new Error('build: the bundle contains a dynamic import(), which a vm.Script cannot run');

// The loader is dist/cli.cjs, the package's bin (CommonJS: see
// scripts/cli-loader.cjs). dist/cli.js (tsc's output of src/cli.ts) becomes a
// one-line ES module that runs it: the entry point of old, for scripts and
// links that name it; tsc's map and declarations of it no longer describe it.
copyFileSync('scripts/cli-loader.cjs', join(DIST, 'cli.cjs'));
chmodSync(join(DIST, 'cli.cjs'), 0o755);
writeFileSync(join(DIST, 'cli.js'), "#!/usr/bin/env node\n// The CLI is dist/cli.cjs (the package's bin); this entry point of old runs it.\nimport './cli.cjs';\n");
chmodSync(join(DIST, 'cli.js'), 0o755);
for (const stale of ['cli.js.map', 'cli.d.ts', 'cli.d.ts.map']) rmSync(join(DIST, stale), { force: true });

// Save the code cache after a real run of the no-change path, the one cron
// repeats every minute: first archive the demo dump, then run again.
const scratch = mkdtempSync(join(tmpdir(), 'rdb-archiver-build-'));
try {
  copyFileSync('examples/data/dump.rdb', join(scratch, 'dump.rdb'));
  mkdirSync(join(scratch, 'archive'), { mode: 0o700 }); // the archive root must exist (no archive.create here)
  const rules = ['hour', 'day', 'week', 'month'].map((every) => `  - { name: ${every}ly, every: ${every}, count: 2 }`).join('\n');
  const q = JSON.stringify; // a temp path may hold YAML's special characters
  writeFileSync(join(scratch, 'config.yaml'), `source:\n  rdb: ${q(join(scratch, 'dump.rdb'))}\narchive:\n  dir: ${q(join(scratch, 'archive'))}\nstate: ${q(join(scratch, 'state.json'))}\nrules:\n${rules}\n`);
  // No RDB_ARCHIVER_* settings of the caller, and no NODE_OPTIONS: V8 flags
  // are part of the cache's identity, and the CLI runs without them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RDB_ARCHIVER_') && k !== 'NODE_OPTIONS'));
  const once = (extra = {}) => {
    const r = spawnSync(process.execPath, [join(DIST, 'cli.cjs'), 'once', '-c', join(scratch, 'config.yaml')], { env: { ...env, ...extra }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`build: the run that makes the code cache failed (exit ${r.status ?? r.signal}):\n${r.stderr}`);
  };
  once();
  once({ RDB_ARCHIVER_WRITE_CODE_CACHE: join(DIST, 'cli.bundle.cache') });
  if (statSync(join(DIST, 'cli.bundle.cache')).size < 1024) throw new Error('build: the code cache is empty');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
