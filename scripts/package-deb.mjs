// `npm run package:deb`: builds rdb-archiver_<version>_<arch>.deb with dpkg-deb
// (nothing else from Debian's packaging tools is needed).
//
//   node scripts/package-deb.mjs [--skip-build] [--out DIR]
//
// What goes in is what `npm pack` ships (package.json "files", and the
// runtime dependencies from node_modules through "bundleDependencies": one
// list for both artifacts, with the versions the tests ran against), laid
// out the Debian way:
//
//   /usr/lib/rdb-archiver/       package.json, dist/ (loader, bundle, code cache), node_modules/
//   /usr/bin/rdb-archiver        -> ../lib/rdb-archiver/dist/cli.cjs
//   /lib/systemd/system/         rdb-archiver.service, .timer, rdb-archiver-daemon.service
//   /etc/rdb-archiver/config.yaml  the example config, a conffile, mode 0640 (group rdb-archiver, set in postinst)
//   /usr/share/doc/rdb-archiver/ README.md, copyright, examples/crontab.example
//
// The maintainer scripts (postinst, prerm, postrm) are in scripts/deb/.
// The CLI is JavaScript run by Debian's nodejs (Depends: nodejs (>= 20)),
// but a runtime dependency may carry a native addon (zstd-napi, for zstd on
// Node 20, built by `npm ci` for this machine): then the package is of this
// machine's architecture (dpkg --print-architecture), else Architecture: all.
// Its V8 code cache is made by the build's
// Node; under another Node version V8 refuses it and the CLI compiles from
// source (the same behaviour, ~60 ms slower: README "Performance").
//
// --skip-build packs the dist/ that is there (npm pack --ignore-scripts);
// without it `npm pack` runs the build first (prepack).
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { values: opts } = parseArgs({ options: { 'skip-build': { type: 'boolean' }, out: { type: 'string' } } });
const OUT = resolve(opts.out ?? ROOT);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const NAME = pkg.name;
// Debian versions have no "-" before the revision in a native package; npm prereleases ("1.0.0-rc.1") sort before the release with "~".
const VERSION = pkg.version.replace('-', '~');

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', ...options });
  if (r.error) throw new Error(`package:deb: ${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`package:deb: ${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

/** 'all', or this machine's architecture when a dependency carries a compiled addon (*.node). */
let ARCH = 'all';
function hasNativeAddon(dir) {
  let found = false;
  walk(dir, (path, st) => { if (!found && st.isFile() && path.endsWith('.node')) found = true; });
  return found;
}

const work = mkdtempSync(join(tmpdir(), 'rdb-archiver-deb-'));
try {
  // 1. What npm ships, from npm itself.
  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work, ...(opts['skip-build'] ? ['--ignore-scripts'] : [])], { stdio: ['ignore', 'pipe', 'inherit'] }))[0];
  run('tar', ['-xzf', join(work, packed.filename), '-C', work]);
  const pkgDir = join(work, 'package');

  const root = join(work, 'root');
  const lib = join(root, 'usr/lib', NAME);
  const doc = join(root, 'usr/share/doc', NAME);
  mkdirSync(lib, { recursive: true });
  mkdirSync(join(doc, 'examples'), { recursive: true });
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(join(root, 'lib/systemd/system'), { recursive: true });
  mkdirSync(join(root, 'etc', NAME), { recursive: true });

  // 2. Place the packed files.
  renameSync(join(pkgDir, 'package.json'), join(lib, 'package.json'));
  renameSync(join(pkgDir, 'dist'), join(lib, 'dist'));
  renameSync(join(pkgDir, 'README.md'), join(doc, 'README.md'));
  for (const unit of readdirSync(join(pkgDir, 'systemd'))) renameSync(join(pkgDir, 'systemd', unit), join(root, 'lib/systemd/system', unit));
  renameSync(join(pkgDir, 'examples/config.yaml'), join(root, 'etc', NAME, 'config.yaml'));
  renameSync(join(pkgDir, 'crontab.example'), join(doc, 'examples/crontab.example'));
  symlinkSync(`../lib/${NAME}/dist/cli.cjs`, join(root, 'usr/bin', NAME));
  writeFileSync(join(doc, 'copyright'), copyright());

  // 3. The runtime dependencies: npm pack put them in the tarball
  // (bundleDependencies), as installed and tested here.
  renameSync(join(pkgDir, 'node_modules'), join(lib, 'node_modules'));
  ARCH = hasNativeAddon(join(lib, 'node_modules')) ? run('dpkg', ['--print-architecture']).trim() : 'all';
  for (const dep of Object.keys(pkg.dependencies ?? {})) {
    if (!existsSync(join(lib, 'node_modules', dep, 'package.json'))) throw new Error(`package:deb: dependency ${dep} is not in the packed tarball (run npm ci)`);
  }

  // 4. Modes: root-owned (dpkg-deb --root-owner-group), 0755 folders and
  // executables, 0644 files; the config 0640 (postinst gives it group rdb-archiver).
  normalizeModes(root);
  chmodSync(join(lib, 'dist/cli.cjs'), 0o755);
  chmodSync(join(lib, 'dist/cli.js'), 0o755);
  chmodSync(join(root, 'etc', NAME, 'config.yaml'), 0o640);

  // 5. Control files.
  const debian = join(root, 'DEBIAN');
  mkdirSync(debian);
  writeFileSync(join(debian, 'control'), control(installedSizeKiB(root)));
  writeFileSync(join(debian, 'conffiles'), `/etc/${NAME}/config.yaml\n`);
  writeFileSync(join(debian, 'md5sums'), md5sums(root, new Set([`etc/${NAME}/config.yaml`])));
  for (const script of ['postinst', 'prerm', 'postrm']) {
    cpSync(join(ROOT, 'scripts/deb', script), join(debian, script));
    chmodSync(join(debian, script), 0o755);
  }
  chmodSync(debian, 0o755);
  for (const f of ['control', 'conffiles', 'md5sums']) chmodSync(join(debian, f), 0o644);

  // 6. Build. gzip: quick to make and to install; the package is ~1 MB either way.
  mkdirSync(OUT, { recursive: true });
  const deb = join(OUT, `${NAME}_${VERSION}_${ARCH}.deb`);
  run('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb], { stdio: ['ignore', 'pipe', 'inherit'] });
  console.log(deb);
} finally {
  rmSync(work, { recursive: true, force: true });
}

function walk(dir, visit) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    visit(path, st);
    if (st.isDirectory()) walk(path, visit);
  }
}

function normalizeModes(root) {
  chmodSync(root, 0o755);
  walk(root, (path, st) => {
    if (st.isSymbolicLink()) return;
    if (st.isDirectory()) chmodSync(path, 0o755);
    else chmodSync(path, st.mode & 0o111 ? 0o755 : 0o644);
  });
}

function installedSizeKiB(root) {
  let bytes = 0;
  walk(root, (path, st) => {
    if (!st.isDirectory()) bytes += st.size;
  });
  return Math.ceil(bytes / 1024);
}

function md5sums(root, exclude) {
  const lines = [];
  walk(root, (path, st) => {
    const rel = relative(root, path);
    if (!st.isFile() || exclude.has(rel)) return;
    lines.push(`${createHash('md5').update(readFileSync(path)).digest('hex')}  ${rel}`);
  });
  return `${lines.sort((a, b) => a.slice(34).localeCompare(b.slice(34))).join('\n')}\n`;
}

function control(installedSize) {
  return `Package: ${NAME}
Version: ${VERSION}
Architecture: ${ARCH}
Maintainer: rdb-archiver maintainers <root@localhost>
Installed-Size: ${installedSize}
Depends: nodejs (>= 20), passwd
Section: admin
Priority: optional
Description: timestamped, verified, retention-pruned archives of Redis dump.rdb
 rdb-archiver turns a Redis or Valkey server's dump.rdb (and, for Redis
 Cluster, nodes.conf) into a timestamped, verified archive pruned per
 retention rule, from a systemd timer, cron or its own daemon.
 .
 It runs as its own system user, rdb-archiver, which reads dump.rdb through
 the redis group and alone owns the archive, so Redis cannot alter or delete
 a backup. The timer is not enabled on install: edit
 /etc/rdb-archiver/config.yaml, then systemctl enable --now rdb-archiver.timer.
`;
}

function copyright() {
  const deps = Object.keys(pkg.dependencies ?? {}).join(', ');
  return `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ${NAME}

Files: *
Copyright: the ${NAME} authors
License: ${pkg.license}

Files: usr/lib/${NAME}/node_modules/*
Copyright: their authors
License: other
 The runtime dependencies (${deps} and theirs), each under the license in
 its own folder (LICENSE file, package.json "license").
Comment: usr/lib/${NAME}/dist/cli.bundle.cjs also contains commander, yaml,
 zod and croner (MIT).

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
`;
}
