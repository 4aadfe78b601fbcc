// `npm run build`: type-check and emit dist/ with tsc (the modules tests and
// scripts import), then bundle the CLI entry into dist/cli.js with esbuild.
//
// Why a bundle: a cron run that finds nothing to do is mostly Node start-up,
// and resolving + reading ~100 module files of commander, yaml and zod costs
// more than the work itself. One file (plus lazily loaded chunks, e.g. croner
// for `daemon`) starts in a fraction of the time. pino stays external: it is
// required on the first log line only (src/log.ts).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });

await build({
  entryPoints: { cli: 'src/cli.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  chunkNames: 'chunks/[name]-[hash]',
  external: ['pino'],
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: true,
  legalComments: 'linked',
  // Bundled CommonJS packages (commander, yaml) call require() for Node built-ins.
  banner: { js: "import { createRequire as __rdbCreateRequire } from 'node:module'; const require = __rdbCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
