// `npm run bench`: builds if needed, generates its own test data under .bench/,
// measures rdb-archiver against the commands a cron script would use, and
// writes BENCHMARKS.md.
//
//   BENCH_QUICK=1 npm run bench    smoke variant: smaller sizes, fewer runs
//   BENCH_KEEP=1                   keep the generated data in .bench/ afterwards
//   BENCH_ONLY=archive,prune       run only some rows (names as in the table;
//                                  `upload` = the upload-1g row and the 2 GiB push's peak RSS;
//                                  issue 15: archive-real, archive-xfs, restic)
//
// Every figure is the median of several runs; every ratio is against a
// reference command measured in the same run, with our runs and the
// reference's interleaved. Wall times are taken with process.hrtime around
// child processes (spawnSync): start-up, exit and everything in between.
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync, cpSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeRdb, writeShapedRdb } from './bench-rdbgen.mjs';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
// Our own folder inside the gitignored .bench/ (others keep their scratch files there too).
const BENCH = join(ROOT, '.bench', 'run');
const QUICK = process.env.BENCH_QUICK === '1';
const KEEP = process.env.BENCH_KEEP === '1';
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : undefined;
const want = (row) => !ONLY || ONLY.has(row);

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const RUNS = QUICK ? 3 : 5;
const SHORT_RUNS = QUICK ? 10 : 21; // start-up-sized measurements: cheap, and noisier
const BIG = QUICK ? 256 * MiB : GiB;
const RSS_SIZES = QUICK ? [64 * MiB, 256 * MiB, 512 * MiB] : [256 * MiB, GiB, 2 * GiB];
const PRUNE_SIZES = [1000, 10_000, 100_000];
const PRUNE_BULK_SIZES = [10_000, 100_000];
const PRUNE_BULK_RUNS = QUICK ? 1 : 3; // each run rebuilds 2 x 200k links
const RULES4 = [
  { name: 'hourly', every: 'hour', count: 48 },
  { name: 'daily', every: 'day', count: 30 },
  { name: 'weekly', every: 'week', count: 8 },
  { name: 'monthly', every: 'month', count: 12 },
];

// ---------------------------------------------------------------------------
// helpers

const log = (...a) => console.error('[bench]', ...a);
const fmtSize = (n) => (n >= GiB ? `${+(n / GiB).toFixed(2)} GiB` : `${+(n / MiB).toFixed(1)} MiB`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const ms = (x) => (x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x < 100 ? 1 : 0)} ms`);

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

let logFd;
/** Runs a command to completion; stdout/stderr go to .bench/bench.log. Returns wall ms. */
function run(cmd, args, { cwd = ROOT, allowFail = false, env } = {}) {
  writeFileSync(logFd, `\n$ ${[cmd, ...args].join(' ')}\n`);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd, env: env ?? process.env, stdio: ['ignore', logFd, logFd] });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw r.error;
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal} (see .bench/bench.log)`);
  return wall;
}

/** Like run, but captures stdout. */
function capture(cmd, args, { cwd = ROOT } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', logFd], maxBuffer: 64 * MiB });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}`);
  return { wall, stdout: r.stdout };
}

const syncAll = () => spawnSync('sync');
/** Reads a file once so that both sides of a comparison read it from the page cache. */
function warm(path) {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(8 * MiB);
  try {
    for (let pos = 0; ; ) {
      const n = readSyncAt(fd, buf, pos);
      if (n === 0) break;
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
}
const readSyncAt = (fd, buf, pos) => readSync(fd, buf, 0, buf.length, pos);

/** A config as a user would write it; the log level stays the default (info), logs go to .bench/run/bench.log. */
function yamlConfig(path, { source, archive, rules }) {
  const lines = [
    'source:', `  rdb: ${JSON.stringify(source)}`,
    'archive:', `  dir: ${JSON.stringify(archive)}`, '  create: true',
    'timezone: UTC',
    'rules:',
    ...rules.flatMap((r) => [`  - name: ${r.name}`, ...(r.every ? [`    every: ${r.every}`] : []), `    count: ${r.count}`]),
  ];
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

// ---------------------------------------------------------------------------
// build

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const BIN = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin['rdb-archiver'];
/**
 * What is measured: a snapshot of the build (dist/ and package.json copied to
 * .bench/run/), so that a rebuild in the working tree during the run cannot
 * change or remove the program half-way. Bare imports still resolve to the
 * project's node_modules (a parent folder).
 */
const SNAP = join(BENCH, 'build');
const CLI = join(SNAP, BIN);

function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

const BUILD_OUTPUTS = [BIN, 'dist/cli.bundle.cjs', 'dist/cli.bundle.cache', 'dist/rdb/crc64.js', 'dist/rdb/validate.js'];

function buildIfNeeded() {
  const inputs = Math.max(
    newestMtime(join(ROOT, 'src')),
    ...['package.json', 'tsconfig.json', 'scripts/build.mjs', 'scripts/cli-loader.cjs'].map((f) => statSync(join(ROOT, f)).mtimeMs),
  );
  const stale = () => BUILD_OUTPUTS.map((f) => join(ROOT, f)).some((f) => !existsSync(f) || statSync(f).mtimeMs < inputs);
  if (stale()) {
    log('building (npm run build)');
    const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('build failed');
  }
  rmSync(SNAP, { recursive: true, force: true });
  mkdirSync(SNAP, { recursive: true });
  cpSync(join(ROOT, 'dist'), join(SNAP, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(SNAP, 'package.json'));
  for (const f of BUILD_OUTPUTS) if (!existsSync(join(SNAP, f))) throw new Error(`build output ${f} missing (was dist/ being rebuilt? run again)`);
}

// ---------------------------------------------------------------------------
// peak RSS of a child process

const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** Runs cmd and returns { wall, rssBytes }: /usr/bin/time's maximum resident set size (getrusage ru_maxrss of the child). */
function runWithRss(cmd, args) {
  if (!TIME) throw new Error('/usr/bin/time is needed for the archive-rss row (apt-get install time)');
  const out = join(BENCH, 'rss.txt');
  const wall = run(TIME, ['-f', '%M', '-o', out, cmd, ...args]);
  const kb = Number(readFileSync(out, 'utf8').trim().split('\n').pop());
  if (!Number.isFinite(kb) || kb <= 0) throw new Error(`could not read the peak RSS from ${out}`);
  return { wall, rssBytes: kb * 1024 };
}

// ---------------------------------------------------------------------------
// test data

const DATA = join(BENCH, 'data');
const crc64Module = pathToFileURL(join(SNAP, 'dist', 'rdb', 'crc64.js')).href;
/** Value sizes of the generated dumps: uniform in [512, 8192] bytes, random (incompressible) bytes. */
const VALUES = { minValue: 512, maxValue: 8192 };

async function dump(size, opts = VALUES, tag = 'std') {
  const path = join(DATA, `dump-${tag}-${size}.rdb`);
  if (existsSync(path) && statSync(path).size === size) return path;
  rmSync(path, { force: true });
  const t0 = performance.now();
  const r = await writeRdb(path, size, { crc64Module, ...opts });
  log(`generated ${relative(ROOT, path)} (${fmtSize(size)}, ${r.keys} keys, crc ${r.crc}) in ${ms(performance.now() - t0)}`);
  return path;
}

// ---------------------------------------------------------------------------
// rows

const rows = [];
const notes = [];
const extra = [];

function addRow(row) {
  rows.push(row);
  log(`${row.row}: ours ${row.ours}, reference ${row.ref}, ratio ${row.ratio}, target ${row.target}: ${row.pass ? 'PASS' : 'FAIL'}`);
}

function freshDir(path) {
  rmSync(path, { recursive: true, force: true });
  mkdirSync(path, { recursive: true });
  return path;
}

/** archive-1g: `once` on a new dump into 4 rule folders vs cp + sync. Leaves the last archive for verify-1g. */
function benchArchive(source) {
  const dir = freshDir(join(BENCH, 'archive'));
  const arch = join(dir, 'arch');
  const cfg = yamlConfig(join(dir, 'config.yaml'), { source, archive: arch, rules: RULES4 });
  const refDst = join(dir, 'cp-copy.rdb');
  const ours = [];
  const ref = [];
  const oursRun = () => {
    rmSync(arch, { recursive: true, force: true });
    syncAll();
    warm(source);
    ours.push(run(process.execPath, [CLI, 'once', '-c', cfg]));
  };
  const refRun = () => {
    rmSync(refDst, { force: true });
    syncAll();
    warm(source);
    const t0 = process.hrtime.bigint();
    run('cp', [source, refDst]);
    run('sync', [refDst]);
    ref.push(Number(process.hrtime.bigint() - t0) / 1e6);
  };
  for (let i = 0; i < RUNS; i++) {
    // Alternate which goes first, so that neither always inherits the other's write-back.
    if (i % 2 === 0) { oursRun(); refRun(); } else { refRun(); oursRun(); }
  }
  // The last `once` must have archived into every folder.
  for (const r of RULES4) {
    const files = readdirSync(join(arch, r.name)).filter((f) => f.endsWith('.rdb'));
    if (files.length !== 1) throw new Error(`archive-1g: expected one .rdb in ${r.name}, found ${files.length}`);
  }
  rmSync(refDst, { force: true });
  const o = median(ours);
  const c = median(ref);
  addRow({
    row: `archive-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}`,
    what: `\`once\` on a new ${fmtSize(BIG)} dump into 4 rule folders vs \`cp\` + \`sync\``,
    ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.25×', pass: o / c <= 1.25,
    runs: { ours, ref },
  });
  return { cfg, arch };
}

/**
 * pull-1g: `once` with source.redis (mode replicate) from a loopback
 * redis-server holding the 1 GiB dataset vs `redis-cli --rdb FILE` (+ `sync
 * FILE`) from the same server. Both are the same replication pull (capa eof,
 * rdb-only, a diskless fork); ours also hashes, validates and links into one
 * rule folder. `--force`: the server does not change between runs.
 */
async function benchPull(source) {
  const dir = freshDir(join(BENCH, 'pull'));
  const data = join(dir, 'data');
  mkdirSync(data);
  linkSync(source, join(data, 'dump.rdb'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', data, '--save', '', '--appendonly', 'no',
    '--repl-diskless-sync-delay', '0', '--logfile', join(dir, 'redis.log'), '--daemonize', 'no'], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      const r = spawnSync('redis-cli', ['-p', String(port), 'PING'], { encoding: 'utf8' });
      if (r.stdout.trim() === 'PONG') break;
      if (i > 1200) throw new Error('pull-1g: redis-server did not load the dataset in 10 minutes');
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const arch = join(dir, 'arch');
    const cfg = join(dir, 'config.yaml');
    writeFileSync(cfg, ['source:', '  redis:', `    url: redis://127.0.0.1:${port}`, 'archive:', `  dir: ${JSON.stringify(arch)}`, '  create: true',
      'rules:', '  - name: all', '    count: 1', ''].join('\n'));
    const refDst = join(dir, 'cli.rdb');
    const ours = [];
    const ref = [];
    const oursRun = () => {
      rmSync(arch, { recursive: true, force: true });
      syncAll();
      ours.push(run(process.execPath, [CLI, 'once', '-c', cfg, '--force']));
    };
    const refRun = () => {
      rmSync(refDst, { force: true });
      syncAll();
      const t0 = process.hrtime.bigint();
      run('redis-cli', ['-p', String(port), '--rdb', refDst]);
      run('sync', [refDst]);
      ref.push(Number(process.hrtime.bigint() - t0) / 1e6);
    };
    for (let i = 0; i < RUNS; i++) {
      if (i % 2 === 0) { oursRun(); refRun(); } else { refRun(); oursRun(); }
    }
    const o = median(ours);
    const c = median(ref);
    addRow({
      row: `pull-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}`,
      what: `\`once\` with source.redis (replicate) from a loopback redis-server holding a ${fmtSize(BIG)} dump vs \`redis-cli --rdb FILE\` + \`sync FILE\``,
      ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.1×', pass: o / c <= 1.1,
      runs: { ours, ref },
    });
  } finally {
    server.kill('SIGKILL');
  }
}

/**
 * upload-1g: `push` of a 1 GiB event to a loopback S3 server (s3rver, in its
 * own process) vs `aws s3 cp` of the same file to the same server, each with
 * its peak RSS. The event is archived and queued first (with the remotes'
 * endpoint dead, outside the timed region); each run then pushes it to a
 * fresh remote (its own prefix), so every run uploads the whole file.
 */
async function benchUpload(source, rssSource) {
  const aws = ['/usr/bin/aws', 'aws'].find((c) => spawnSync(c, ['--version']).status === 0);
  if (!aws) throw new Error('upload-1g needs awscli (apt-get install awscli)');
  const dir = freshDir(join(BENCH, 'upload'));
  const s3dir = join(dir, 's3');
  mkdirSync(s3dir);
  const bucket = 'rdb-archiver-bench';
  const server = spawn(process.execPath, [join(ROOT, 'test', 'helpers', 's3rver-child.mjs'), s3dir, bucket], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve, reject) => {
      let buf = '';
      server.stdout.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]).port);
      });
      server.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
    });
    // Credentials for s3rver, through the environment only; nothing from the host's AWS setup.
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', AWS_DEFAULT_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
    });
    const runs = QUICK ? 2 : 3;
    const arch = join(dir, 'arch');
    const cfgPath = join(dir, 'config.yaml');
    const writeCfg = (endpoint) => {
      yamlConfig(cfgPath, { source, archive: arch, rules: [{ name: 'all', count: 3 }] });
      const remotes = Array.from({ length: runs }, (_, i) => `  - { name: r${i}, type: s3, bucket: ${bucket}, prefix: r${i}/, endpoint: "${endpoint}", force_path_style: true, timeout: 1h }`);
      writeFileSync(cfgPath, `${readFileSync(cfgPath, 'utf8')}remotes:\n${remotes.join('\n')}\n`);
    };
    writeCfg('http://127.0.0.1:9');
    mkdirSync(arch);
    run(process.execPath, [CLI, 'once', '-c', cfgPath, '--log-level', 'silent'], { allowFail: true }); // archived and queued; the dead endpoint fails (76)
    writeCfg(`http://127.0.0.1:${port}`);
    const ours = [];
    const ref = [];
    const oursRss = [];
    const refRss = [];
    for (let i = 0; i < runs; i++) {
      syncAll();
      warm(source);
      const o = runWithRss(process.execPath, [CLI, 'push', '--remote', `r${i}`, '-c', cfgPath, '--log-level', 'warn']);
      ours.push(o.wall);
      oursRss.push(o.rssBytes);
      syncAll();
      warm(source);
      const r = runWithRss(aws, ['--endpoint-url', `http://127.0.0.1:${port}`, 's3', 'cp', '--only-show-errors', source, `s3://${bucket}/aws${i}/dump.rdb`]);
      ref.push(r.wall);
      refRss.push(r.rssBytes);
    }
    const o = median(ours);
    const c = median(ref);
    addRow({
      row: `upload-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}`,
      what: `\`push\` of a ${fmtSize(BIG)} event to s3rver on loopback vs \`aws s3 cp\` of the same file to the same server (peak RSS: ours ${fmtSize(median(oursRss))}, aws ${fmtSize(median(refRss))})`,
      ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.0×', pass: o / c <= 1.0,
      runs: { ours, ref },
    });
    extra.push(`upload-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}: peak RSS of \`push\` ${oursRss.map(fmtSize).join(', ')} (default part_size 16 MiB × concurrency 4: at most 4 part buffers, 64 MiB); \`aws s3 cp\` ${refRss.map(fmtSize).join(', ')}. The upload includes the HEAD checks, the manifest and the remote's retention listing.`);
    // The memory bound does not grow with the event: one push of a bigger event (RSS only).
    const rssArch = join(dir, 'arch-rss');
    const rssCfg = join(dir, 'config-rss.yaml');
    const writeRssCfg = (endpoint) => {
      yamlConfig(rssCfg, { source: rssSource.path, archive: rssArch, rules: [{ name: 'all', count: 1 }] });
      writeFileSync(rssCfg, `${readFileSync(rssCfg, 'utf8')}remotes:\n  - { name: rss, type: s3, bucket: ${bucket}, prefix: rss/, endpoint: "${endpoint}", force_path_style: true, timeout: 1h }\n`);
    };
    writeRssCfg('http://127.0.0.1:9');
    mkdirSync(rssArch);
    run(process.execPath, [CLI, 'once', '-c', rssCfg, '--log-level', 'silent'], { allowFail: true });
    writeRssCfg(`http://127.0.0.1:${port}`);
    syncAll();
    const big = runWithRss(process.execPath, [CLI, 'push', '--remote', 'rss', '-c', rssCfg, '--log-level', 'warn']);
    extra.push(`upload-rss: peak RSS of \`push\` of a ${fmtSize(rssSource.size)} event: ${fmtSize(big.rssBytes)} (one run, ${ms(big.wall)}); the ${fmtSize(BIG)} event above: ${fmtSize(median(oursRss))}.`);
    rmSync(rssArch, { recursive: true, force: true });
  } finally {
    server.kill('SIGTERM');
  }
}

/**
 * upload-zstd-age-1g: `push` of a 1 GiB real-shaped event (half many small
 * keys as DEBUG POPULATE writes them, half large incompressible values) to a
 * remote with compression: zstd and age encryption, against `push` of the
 * same event to a plain remote on the same loopback s3rver, interleaved; and
 * the stored size of the encoded object against the plaintext.
 */
async function benchUploadCodec(source) {
  const dir = freshDir(join(BENCH, 'upload-codec'));
  const s3dir = join(dir, 's3');
  mkdirSync(s3dir);
  const keygen = spawnSync('age-keygen', ['-o', join(dir, 'key.txt')], { encoding: 'utf8' });
  if (keygen.status !== 0) throw new Error('upload-zstd-age needs age-keygen (apt-get install age)');
  const recipient = spawnSync('age-keygen', ['-y', join(dir, 'key.txt')], { encoding: 'utf8' }).stdout.trim();
  const bucket = 'rdb-archiver-bench';
  const server = spawn(process.execPath, [join(ROOT, 'test', 'helpers', 's3rver-child.mjs'), s3dir, bucket], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve, reject) => {
      let buf = '';
      server.stdout.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]).port);
      });
      server.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
    });
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', AWS_DEFAULT_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
    });
    const runs = 2;
    const arch = join(dir, 'arch');
    const cfgPath = join(dir, 'config.yaml');
    const writeCfg = (endpoint) => {
      yamlConfig(cfgPath, { source, archive: arch, rules: [{ name: 'all', count: 3 }] });
      const remotes = [];
      for (let i = 0; i < runs; i++) {
        remotes.push(`  - { name: plain${i}, type: s3, bucket: ${bucket}, prefix: plain${i}/, endpoint: "${endpoint}", force_path_style: true, timeout: 1h }`);
        remotes.push(`  - { name: enc${i}, type: s3, bucket: ${bucket}, prefix: enc${i}/, endpoint: "${endpoint}", force_path_style: true, timeout: 1h, compression: zstd, encryption: { type: age, recipients: ["${recipient}"] } }`);
      }
      writeFileSync(cfgPath, `${readFileSync(cfgPath, 'utf8')}remotes:\n${remotes.join('\n')}\n`);
    };
    writeCfg('http://127.0.0.1:9');
    mkdirSync(arch);
    run(process.execPath, [CLI, 'once', '-c', cfgPath, '--log-level', 'silent'], { allowFail: true }); // archived and queued; the dead endpoint fails (76)
    writeCfg(`http://127.0.0.1:${port}`);
    const ours = [];
    const ref = [];
    const oursRss = [];
    const push = (name) => runWithRss(process.execPath, [CLI, 'push', '--remote', name, '-c', cfgPath, '--log-level', 'warn']);
    for (let i = 0; i < runs; i++) {
      // Alternate which goes first.
      const order = i % 2 === 0 ? ['enc', 'plain'] : ['plain', 'enc'];
      for (const kind of order) {
        syncAll();
        warm(source);
        const r = push(`${kind}${i}`);
        if (kind === 'enc') { ours.push(r.wall); oursRss.push(r.rssBytes); } else ref.push(r.wall);
      }
    }
    const stored = readdirSync(join(s3dir, bucket, 'enc0')).find((f) => /\.rdb\.zst\.age\._S3rver_object$/.test(f));
    if (!stored) throw new Error('upload-zstd-age: no dump-<ts>.rdb.zst.age object at the server');
    const storedBytes = statSync(join(s3dir, bucket, 'enc0', stored)).size;
    const plainBytes = statSync(source).size;
    const o = median(ours);
    const c = median(ref);
    const row = `upload-zstd-age-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}`;
    addRow({
      row,
      what: `\`push\` of a ${fmtSize(BIG)} real-shaped event (half small keys as DEBUG POPULATE writes them, half 64 KiB random values) with \`compression: zstd\` + age encryption vs \`push\` of the same event unencoded, same loopback s3rver; stored ${fmtSize(storedBytes)} of ${fmtSize(plainBytes)} (${(storedBytes / plainBytes).toFixed(2)}×), peak RSS ${fmtSize(median(oursRss))}`,
      ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.5×', pass: o / c <= 1.5,
      runs: { ours, ref },
    });
    extra.push(`${row}: stored size ratio (zstd level 3 + age) ${(storedBytes / plainBytes).toFixed(3)} (${storedBytes} of ${plainBytes} bytes); peak RSS of the encoded \`push\` ${oursRss.map(fmtSize).join(', ')}.`);
  } finally {
    server.kill('SIGTERM');
  }
}

function benchRss(sources) {
  const results = [];
  for (const { size, path } of sources) {
    const dir = freshDir(join(BENCH, 'rss'));
    const arch = join(dir, 'arch');
    const cfg = yamlConfig(join(dir, 'config.yaml'), { source: path, archive: arch, rules: RULES4 });
    const rss = [];
    const walls = [];
    for (let i = 0; i < RUNS; i++) {
      rmSync(arch, { recursive: true, force: true });
      syncAll();
      warm(path);
      const r = runWithRss(process.execPath, [CLI, 'once', '-c', cfg]);
      rss.push(r.rssBytes);
      walls.push(r.wall);
    }
    rmSync(dir, { recursive: true, force: true });
    results.push({ size, rss: median(rss), wall: median(walls), all: rss });
    log(`rss ${fmtSize(size)}: ${(median(rss) / 1e6).toFixed(1)} MB (runs ${rss.map((x) => (x / 1e6).toFixed(1)).join(', ')}), wall ${ms(median(walls))}`);
  }
  const mid = results[1];
  const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;
  const within = results.every((r) => Math.abs(r.rss / mid.rss - 1) <= 0.10);
  addRow({
    row: 'archive-rss',
    what: `peak RSS of \`once\` (ru_maxrss via /usr/bin/time) for ${results.map((r) => fmtSize(r.size)).join(' / ')} sources`,
    ours: results.map((r) => mb(r.rss)).join(' / '),
    ref: `${fmtSize(mid.size)} run: ${mb(mid.rss)}`,
    ratio: results.map((r) => `${(r.rss / mid.rss).toFixed(2)}×`).join(' / '),
    target: '≤ 120 MB; others within 10%',
    pass: mid.rss <= 120e6 && within,
  });
  for (const r of results) extra.push(`archive wall time for ${fmtSize(r.size)} (during the RSS runs): ${ms(r.wall)} (${((r.size / 1e6) / (r.wall / 1000)).toFixed(0)} MB/s)`);
}

function benchCrc(source, size, label, primary) {
  const check = which('redis-check-rdb');
  const validator = join(ROOT, 'scripts', 'bench-validate.mjs');
  const ours = [];
  const inproc = [];
  const ref = [];
  warm(source);
  for (let i = 0; i < RUNS; i++) {
    const a = () => {
      const r = capture(process.execPath, [validator, source, join(SNAP, 'dist', 'rdb', 'validate.js'), 'crc']);
      ours.push(r.wall);
      inproc.push(JSON.parse(r.stdout.trim().split('\n').pop()).ms);
    };
    const b = () => { if (check) ref.push(run(check, [source])); };
    if (i % 2 === 0) { a(); b(); } else { b(); a(); }
  }
  const mbps = (t) => (size / 1e6) / (t / 1000);
  const o = mbps(median(ours));
  const c = check ? mbps(median(ref)) : undefined;
  const row = {
    row: primary ? 'crc-throughput' : `crc-throughput (${label})`,
    what: `RDB validation alone (magic, AUX, CRC-64) of a ${fmtSize(size)} dump (${label}) vs \`redis-check-rdb\`, process wall`,
    ours: `${o.toFixed(0)} MB/s`,
    ref: c === undefined ? 'redis-check-rdb not installed' : `${c.toFixed(0)} MB/s`,
    ratio: c === undefined ? 'n/a' : `${(o / c).toFixed(2)}× faster`,
    target: '≥ 5× faster, ≥ 800 MB/s',
    pass: c !== undefined && o / c >= 5 && o >= 800,
  };
  if (primary) addRow(row);
  else {
    row.info = true;
    addRow(row);
  }
  extra.push(`crc-throughput (${label}): in-process validation only (no node start-up): ${mbps(median(inproc)).toFixed(0)} MB/s`);
}

/**
 * walk-*: the whole validation as production runs it (validation: full: header,
 * AUX, CRC-64 and the structural walk of every opcode and value) vs
 * redis-check-rdb, both as whole processes; plus, in-process, the walk's own
 * cost (full minus crc, same file, interleaved).
 */
function benchWalk(source, size, rowName, label) {
  const check = which('redis-check-rdb');
  const validator = join(ROOT, 'scripts', 'bench-validate.mjs');
  const mod = join(SNAP, 'dist', 'rdb', 'validate.js');
  const ours = [];
  const full = [];
  const crcOnly = [];
  const ref = [];
  let keys = 0;
  warm(source);
  for (let i = 0; i < RUNS; i++) {
    const a = () => {
      const r = capture(process.execPath, [validator, source, mod, 'full']);
      ours.push(r.wall);
      const out = JSON.parse(r.stdout.trim().split('\n').pop());
      full.push(out.ms);
      keys = out.keys;
      crcOnly.push(JSON.parse(capture(process.execPath, [validator, source, mod, 'crc']).stdout.trim().split('\n').pop()).ms);
    };
    const b = () => { if (check) ref.push(run(check, [source])); };
    if (i % 2 === 0) { a(); b(); } else { b(); a(); }
  }
  const mbps = (t) => (size / 1e6) / (t / 1000);
  const o = mbps(median(ours));
  const c = check ? mbps(median(ref)) : undefined;
  addRow({
    row: rowName,
    what: `validation as archived (\`validation: full\`: magic, AUX, CRC-64 and the structural walk) of ${label} vs \`redis-check-rdb\`, process wall`,
    ours: `${o.toFixed(0)} MB/s`,
    ref: c === undefined ? 'redis-check-rdb not installed' : `${c.toFixed(0)} MB/s`,
    ratio: c === undefined ? 'n/a' : `${(o / c).toFixed(2)}× faster`,
    target: 'faster than redis-check-rdb',
    pass: c !== undefined && o >= c,
  });
  const walkMs = median(full) - median(crcOnly);
  extra.push(`${rowName}: in-process, full ${ms(median(full))} vs crc ${ms(median(crcOnly))}: the walk adds ${ms(walkMs)} for ${keys} keys (${keys && walkMs > 0 ? `${((walkMs * 1e6) / keys).toFixed(0)} ns/key, ` : ''}${walkMs > 0 ? `${mbps(walkMs).toFixed(0)} MB/s of walk alone` : 'within noise'})`);
}

/** A real dump of `n` small keys (DEBUG POPULATE: "key:<i>" = 16-byte values), written by redis-server. */
function smallKeysDump(n) {
  const path = join(DATA, `dump-populate-${n}.rdb`);
  if (existsSync(path)) return path;
  const dir = join(DATA, `populate-${n}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const sock = join(dir, 'redis.sock');
  const server = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--dir', dir, '--save', '', '--appendonly', 'no', '--enable-debug-command', 'local'], { stdio: 'ignore' });
  try {
    const cli = (...args) => spawnSync('redis-cli', ['-s', sock, ...args], { encoding: 'utf8' });
    for (let i = 0; i < 200 && cli('PING').stdout.trim() !== 'PONG'; i++) spawnSync('sleep', ['0.05']);
    if (cli('DEBUG', 'POPULATE', String(n), 'key', '16').stdout.trim() !== 'OK') throw new Error('DEBUG POPULATE failed');
    if (cli('SAVE').stdout.trim() !== 'OK') throw new Error('SAVE failed');
    renameSync(join(dir, 'dump.rdb'), path);
  } finally {
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  log(`generated ${relative(ROOT, path)} (${n} keys via redis-server DEBUG POPULATE, ${fmtSize(statSync(path).size)})`);
  return path;
}

function benchVerify(cfg, arch) {
  const folder = join(arch, RULES4[0].name);
  const sidecar = readdirSync(folder).find((f) => f.endsWith('.sha256'));
  const rdb = join(folder, readdirSync(folder).find((f) => f.endsWith('.rdb')));
  const size = statSync(rdb).size;
  const ours = [];
  const ref = [];
  warm(rdb);
  for (let i = 0; i < RUNS; i++) {
    const a = () => ours.push(run(process.execPath, [CLI, 'verify', '-c', cfg]));
    const b = () => ref.push(run('sha256sum', ['-c', sidecar], { cwd: folder }));
    if (i % 2 === 0) { a(); b(); } else { b(); a(); }
  }
  const o = median(ours);
  const c = median(ref);
  addRow({
    row: `verify-${QUICK ? fmtSize(size).replace(' ', '') : '1g'}`,
    what: `\`verify\` of that event (all 4 rule folders, one inode) vs \`sha256sum -c\` of its sidecar`,
    ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.0×', pass: o / c <= 1.0,
  });
}

async function benchNochange() {
  const dir = freshDir(join(BENCH, 'nochange'));
  const source = join(dir, 'dump.rdb');
  await writeRdb(source, 4 * MiB, { crc64Module, ...VALUES });
  const arch = join(dir, 'arch');
  const cfg = yamlConfig(join(dir, 'config.yaml'), { source, archive: arch, rules: RULES4 });
  run(process.execPath, [CLI, 'once', '-c', cfg]);
  const ours = [];
  const ref = [];
  // One untimed run of each, so that both start from the same (warm) file cache.
  run(process.execPath, [CLI, 'once', '-c', cfg]);
  run(process.execPath, ['-e', '0']);
  for (let i = 0; i < SHORT_RUNS; i++) {
    const a = () => ours.push(run(process.execPath, [CLI, 'once', '-c', cfg]));
    const b = () => ref.push(run(process.execPath, ['-e', '0']));
    if (i % 2 === 0) { a(); b(); } else { b(); a(); }
  }
  const out = capture(process.execPath, [CLI, 'once', '-c', cfg, '--json']);
  const status = JSON.parse(out.stdout).status;
  if (status !== 'unchanged') throw new Error(`nochange: expected status "unchanged", got ${status}`);
  rmSync(dir, { recursive: true, force: true });
  const o = median(ours);
  const c = median(ref);
  addRow({
    row: 'nochange',
    what: '`once` when nothing changed (4 rule folders) vs `node -e 0`',
    ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.6×', pass: o / c <= 1.6,
  });
}

const pad2 = (x, w = 2) => String(x).padStart(w, '0');
// Early enough that 100k hourly events (11.4 years) end before today: retention
// treats events named in the future as a clock error and keeps one per current
// bucket, which is not the steady state this row measures.
const EVENTS_BASE = Date.UTC(2012, 0, 1);
function tsOf(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}T${pad2(d.getUTCHours())}-${pad2(d.getUTCMinutes())}-00`;
}

/**
 * Events i in [from, to) of a folder, `step` ms apart: dump-<ts>.rdb +
 * dump-<ts>.sha256, each a hard link to one tiny file per kind (kept under a
 * name retention ignores). A real archive hard-links every event into each
 * rule folder too. Links, because creating an inode cost about 1 ms of system
 * time on the VM this was written on (200k files = minutes per run), and
 * freeing a data block costs a discard (ext4 mounted with -o discard); both
 * would measure the filesystem, not the tool.
 */
function addEvents(folder, from, to, step) {
  let rdbBase;
  let shaBase;
  for (let i = from; i < to; i++) {
    if (rdbBase === undefined || i % 60_000 === 0) {
      // ext4 allows 65000 links per inode.
      rdbBase = join(folder, `bench-base-${Math.floor(i / 60_000)}-rdb`);
      shaBase = join(folder, `bench-base-${Math.floor(i / 60_000)}-sha256`);
      if (!existsSync(rdbBase)) writeFileSync(rdbBase, 'R');
      if (!existsSync(shaBase)) writeFileSync(shaBase, 'S');
    }
    const ts = tsOf(EVENTS_BASE + i * step);
    linkSync(rdbBase, join(folder, `dump-${ts}.rdb`));
    linkSync(shaBase, join(folder, `dump-${ts}.sha256`));
  }
}
const eventFiles = (folder) => readdirSync(folder).filter((f) => f.startsWith('dump-')).length;

/**
 * prune-scaling: the every-minute cron case. A folder of N hourly events; the
 * rule keeps N - 10 of them, so each run scans and plans N events and deletes
 * 10 (20 files), which are put back (untimed) before the next run.
 */
function benchPruneSteady() {
  const HOUR = 3_600_000;
  const DELETED = 10;
  const dir = freshDir(join(BENCH, 'prune'));
  const arch = join(dir, 'arch');
  const folder = join(arch, 'hourly');
  const results = [];
  for (const n of PRUNE_SIZES) {
    const cfg = yamlConfig(join(dir, `config-${n}.yaml`), { source: join(dir, 'none.rdb'), archive: arch, rules: [{ name: 'hourly', every: 'hour', count: n - DELETED }] });
    freshDir(folder);
    addEvents(folder, 0, n, HOUR);
    syncAll();
    const ours = [];
    for (let i = 0; i < RUNS; i++) {
      ours.push(run(process.execPath, [CLI, 'prune', '-c', cfg]));
      const left = eventFiles(folder);
      if (left !== 2 * (n - DELETED)) throw new Error(`prune ${n}: ${left} event files left, expected ${2 * (n - DELETED)}`);
      addEvents(folder, 0, DELETED, HOUR);
      syncAll();
    }
    results.push({ n, ours: median(ours) });
    log(`prune (steady) ${n}: ${ms(median(ours))} (runs ${ours.map(ms).join(', ')})`);
  }
  rmSync(dir, { recursive: true, force: true });
  const big = results.at(-1);
  const mid = results.at(-2);
  const scale = big.ours / mid.ours;
  addRow({
    row: 'prune-scaling',
    what: `\`prune\` on a folder of ${results.map((r) => r.n / 1000 + 'k').join(' / ')} hourly events (2 files each); the rule (every hour, count N − ${DELETED}) deletes ${DELETED} events a run: the cron steady state`,
    ours: results.map((r) => ms(r.ours)).join(' / '),
    ref: '–',
    ratio: `t(${big.n / 1000}k)/t(${mid.n / 1000}k) = ${scale.toFixed(1)}`,
    target: '100k ≤ 2 s; t(100k)/t(10k) ≤ 12',
    pass: big.ours <= 2000 && scale <= 12,
  });
}

/**
 * prune-bulk: the same folder sizes, every 10 minutes an event, rule "every
 * hour, count 48": all but 48 events are deleted at once (a tightened policy,
 * or the first prune of an old folder). The reference deletes the same number
 * of files with `find DIR -type f -name 'dump-*' -delete` (no per-file stat,
 * no ownership check).
 */
function benchPruneBulk() {
  const dir = freshDir(join(BENCH, 'prune-bulk'));
  const arch = join(dir, 'arch');
  const folder = join(arch, 'hourly');
  const refDir = join(dir, 'ref');
  const cfg = yamlConfig(join(dir, 'config.yaml'), { source: join(dir, 'none.rdb'), archive: arch, rules: [{ name: 'hourly', every: 'hour', count: 48 }] });
  const results = [];
  for (const n of PRUNE_BULK_SIZES) {
    const ours = [];
    const ref = [];
    for (let i = 0; i < PRUNE_BULK_RUNS; i++) {
      freshDir(folder);
      addEvents(folder, 0, n, 600_000);
      syncAll();
      ours.push(run(process.execPath, [CLI, 'prune', '-c', cfg]));
      if (eventFiles(folder) !== 2 * 48) throw new Error(`prune-bulk ${n}: ${eventFiles(folder)} event files left, expected ${2 * 48}`);
      freshDir(refDir);
      addEvents(refDir, 48, n, 600_000); // the files prune deleted
      syncAll();
      ref.push(run('find', [refDir, '-type', 'f', '-name', 'dump-*', '-delete']));
    }
    results.push({ n, ours: median(ours), ref: median(ref) });
    log(`prune (bulk) ${n}: ${ms(median(ours))} (runs ${ours.map(ms).join(', ')}); find -delete ${ms(median(ref))}`);
  }
  rmSync(dir, { recursive: true, force: true });
  const big = results.at(-1);
  const mid = results.at(-2);
  const scale = big.ours / mid.ours;
  addRow({
    row: 'prune-scaling, bulk',
    what: `\`prune\` deleting all but 48 of ${results.map((r) => r.n / 1000 + 'k').join(' / ')} events (2 files each) at once, vs \`find -delete\` of the same files`,
    ours: results.map((r) => ms(r.ours)).join(' / '),
    ref: results.map((r) => ms(r.ref)).join(' / '),
    ratio: `${results.map((r) => (r.ours / r.ref).toFixed(1) + '×').join(' / ')}; t(${big.n / 1000}k)/t(${mid.n / 1000}k) = ${scale.toFixed(1)}`,
    target: '100k ≤ 2 s; t(100k)/t(10k) ≤ 12',
    pass: big.ours <= 2000 && scale <= 12,
  });
}

// ---------------------------------------------------------------------------
// real dumps (issue 15): written by redis-server itself

/**
 * A dump written by redis-server: DEBUG POPULATE `keys` string keys of
 * `valueBytes` ("value:N" padded with zero bytes, as Redis makes them), then
 * SAVE, with rdbcompression on or off. 5 M keys of 200 bytes: about 1.07 GB
 * uncompressed and about 190 MB compressed (LZF squeezes the padding), the
 * two sources of the issue's measurements.
 */
async function realDump(keys, valueBytes, compression) {
  const name = `real-${keys}-${valueBytes}-${compression ? 'lzf' : 'plain'}.rdb`;
  const path = join(DATA, name);
  if (existsSync(path)) return path;
  if (!which('redis-server') || !which('redis-cli')) throw new Error('the real-dump rows need redis-server and redis-cli');
  const port = 20000 + Math.floor(Math.random() * 20000);
  const t0 = performance.now();
  const server = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', DATA, '--dbfilename', name,
    '--rdbcompression', compression ? 'yes' : 'no', '--enable-debug-command', 'yes', '--daemonize', 'no', '--logfile', join(BENCH, 'redis.log'),
  ], { stdio: 'ignore' });
  try {
    const cli = (...args) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
    for (let i = 0; i < 100 && cli('PING').stdout.trim() !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 100));
    const pop = cli('DEBUG', 'POPULATE', String(keys), 'key', String(valueBytes));
    if (pop.stdout.trim() !== 'OK') throw new Error(`DEBUG POPULATE failed: ${pop.stdout}${pop.stderr}`);
    const save = cli('SAVE');
    if (save.stdout.trim() !== 'OK') throw new Error(`SAVE failed: ${save.stdout}${save.stderr}`);
  } finally {
    spawnSync('redis-cli', ['-p', String(port), 'SHUTDOWN', 'NOSAVE']);
    server.kill('SIGKILL');
  }
  log(`redis-server wrote ${relative(ROOT, path)} (${fmtSize(statSync(path).size)}, ${keys} keys of ${valueBytes} B, rdbcompression ${compression ? 'yes' : 'no'}) in ${ms(performance.now() - t0)}`);
  return path;
}

/**
 * `once` of `source` into 4 rule folders vs `cp` + `sync FILE`, interleaved; a row with `target` (a ratio).
 * With `compareMethod`, a third interleaved side runs `once` with RDB_ARCHIVER_COPY_METHOD set to it
 * (e.g. copy_file_range against the default O_DIRECT pass): the measurement behind the choice of method.
 */
function benchArchiveVs(row, what, source, target, runs = RUNS, compareMethod = undefined) {
  const dir = freshDir(join(BENCH, 'archive-real'));
  const arch = join(dir, 'arch');
  const cfg = yamlConfig(join(dir, 'config.yaml'), { source, archive: arch, rules: RULES4 });
  const refDst = join(dir, 'cp-copy.rdb');
  const ours = [];
  const ref = [];
  const cpu = [];
  const oursRun = () => {
    rmSync(arch, { recursive: true, force: true });
    syncAll();
    warm(source);
    const r = runWithCpu(process.execPath, [CLI, 'once', '-c', cfg]);
    ours.push(r.wall);
    cpu.push(r);
  };
  const other = [];
  let otherMethod = '';
  const otherRun = () => {
    rmSync(arch, { recursive: true, force: true });
    syncAll();
    warm(source);
    other.push(runWithCpu(process.execPath, [CLI, 'once', '-c', cfg], { ...process.env, RDB_ARCHIVER_COPY_METHOD: compareMethod }));
    otherMethod = copyMethodOf(arch);
  };
  const refRun = () => {
    rmSync(refDst, { force: true });
    syncAll();
    warm(source);
    const t0 = process.hrtime.bigint();
    run('cp', [source, refDst]);
    run('sync', [refDst]);
    ref.push(Number(process.hrtime.bigint() - t0) / 1e6);
  };
  for (let i = 0; i < runs; i++) {
    if (compareMethod) otherRun();
    if (i % 2 === 0) { oursRun(); refRun(); } else { refRun(); oursRun(); }
  }
  const method = copyMethodOf(arch);
  rmSync(dir, { recursive: true, force: true });
  const o = median(ours);
  const c = median(ref);
  addRow({ row, what: `${what} (copy: ${method})`, ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: `≤ ${target}×`, pass: o / c <= target, runs: { ours, ref } });
  extra.push(`${row}: CPU time of \`once\`, median: user ${ms(median(cpu.map((x) => x.user)))}, system ${ms(median(cpu.map((x) => x.sys)))} (wall ${ms(o)}; /usr/bin/time)`);
  if (compareMethod) {
    extra.push(`${row}, copy method: the default (${method}) ${ms(o)} wall, user ${ms(median(cpu.map((x) => x.user)))}, system ${ms(median(cpu.map((x) => x.sys)))}; ` +
      `forced ${otherMethod} (RDB_ARCHIVER_COPY_METHOD=${compareMethod}, interleaved in the same runs) ${ms(median(other.map((x) => x.wall)))} wall, ` +
      `user ${ms(median(other.map((x) => x.user)))}, system ${ms(median(other.map((x) => x.sys)))}`);
  }
}

/** How the newest archived event was copied, from its archive record. */
function copyMethodOf(arch) {
  const folder = join(arch, RULES4[0].name);
  const record = readdirSync(folder).find((f) => f.endsWith('.json'));
  return record ? JSON.parse(readFileSync(join(folder, record), 'utf8')).copy ?? 'not recorded' : 'no record';
}

/** Runs cmd under /usr/bin/time: wall, user and system CPU time in ms. */
function runWithCpu(cmd, args, env = undefined) {
  if (!TIME) return { wall: run(cmd, args, { env }), user: NaN, sys: NaN };
  const out = join(BENCH, 'cpu.txt');
  const wall = run(TIME, ['-f', '%U %S', '-o', out, cmd, ...args], { env });
  const [user, sys] = readFileSync(out, 'utf8').trim().split('\n').pop().split(' ').map((x) => Number(x) * 1000);
  return { wall, user, sys };
}

/**
 * archive-xfs: an XFS image with reflink, loop-mounted by the bench, holding
 * both the source and the archive. `once` (a reflink, plus the sha256 and
 * the RDB check of the source) vs `cp` (which reflinks too) + `sha256sum` of
 * the copy; and the filesystem's used space per archived event.
 */
function benchXfs(source) {
  const why = xfsUnavailable();
  if (why) {
    notes.push(`archive-xfs: not run: ${why}`);
    log(`archive-xfs skipped: ${why}`);
    return;
  }
  const dir = freshDir(join(BENCH, 'xfs'));
  const image = join(dir, 'xfs.img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const size = statSync(source).size;
  run('truncate', ['-s', String(Math.max(2 * GiB, 4 * size + GiB)), image]);
  run('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
  run('mount', ['-o', 'loop', image, mnt]);
  try {
    const src = join(mnt, 'dump.rdb');
    run('cp', ['--reflink=never', source, src]);
    syncAll();
    const arch = join(mnt, 'arch');
    const cfg = yamlConfig(join(dir, 'config.yaml'), { source: src, archive: arch, rules: RULES4 });
    const refDst = join(mnt, 'cp-copy.rdb');
    const ours = [];
    const ref = [];
    const growth = [];
    const used = () => {
      spawnSync('sync', ['-f', mnt]);
      return Number(spawnSync('df', ['-B1', '--output=used', mnt], { encoding: 'utf8' }).stdout.trim().split('\n').pop());
    };
    const oursRun = () => {
      rmSync(arch, { recursive: true, force: true });
      syncAll();
      warm(src);
      const before = used();
      ours.push(run(process.execPath, [CLI, 'once', '-c', cfg]));
      growth.push(used() - before);
    };
    const refRun = () => {
      rmSync(refDst, { force: true });
      syncAll();
      warm(src);
      const t0 = process.hrtime.bigint();
      run('cp', [src, refDst]);
      run('sha256sum', [refDst]);
      ref.push(Number(process.hrtime.bigint() - t0) / 1e6);
    };
    for (let i = 0; i < RUNS; i++) {
      if (i % 2 === 0) { oursRun(); refRun(); } else { refRun(); oursRun(); }
    }
    const method = copyMethodOf(arch);
    const o = median(ours);
    const c = median(ref);
    addRow({
      row: 'archive-xfs', what: `\`once\` on a new ${fmtSize(size)} real dump into 4 rule folders on XFS (reflink=1, loop-mounted) vs \`cp\` (a reflink too) + \`sha256sum\` of the copy (copy: ${method})`,
      ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: '≤ 1.2×', pass: o / c <= 1.2, runs: { ours, ref },
    });
    const g = median(growth);
    addRow({
      row: 'archive-xfs space', what: `growth of the XFS filesystem's used space (df, after sync) per archived event, source still present, ${fmtSize(size)} dump`,
      ours: fmtSize(g), ref: `RDB ${fmtSize(size)}`, ratio: `${((100 * g) / size).toFixed(2)} %`, target: '< 5 % of the RDB', pass: g < 0.05 * size,
    });
  } finally {
    spawnSync('umount', [mnt]);
    rmSync(dir, { recursive: true, force: true });
  }
}

function xfsUnavailable() {
  if (!which('mkfs.xfs')) return 'mkfs.xfs is not installed (apt-get install xfsprogs)';
  if (process.getuid?.() !== 0) return 'mounting a loop image needs root';
  const probe = freshDir(join(BENCH, 'xfs-probe'));
  try {
    run('truncate', ['-s', '300M', join(probe, 'p.img')]);
    run('mkfs.xfs', ['-q', join(probe, 'p.img')]);
    mkdirSync(join(probe, 'm'));
    const r = spawnSync('mount', ['-o', 'loop', join(probe, 'p.img'), join(probe, 'm')], { encoding: 'utf8' });
    if (r.status !== 0) return `mount -o loop is not allowed here: ${r.stderr.trim()}`;
    spawnSync('umount', [join(probe, 'm')]);
    return undefined;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/**
 * restic (a peer, not a target): `restic backup` of the same file into a local
 * repository (initialised outside the timed region; a fresh repository per run,
 * so every run stores the whole file) vs our `once` (4 rule folders).
 */
function benchRestic(source) {
  const restic = which('restic');
  if (!restic) {
    notes.push('restic: not run: restic is not installed (Debian: apt-get install restic)');
    return;
  }
  const dir = freshDir(join(BENCH, 'restic'));
  const env = { ...process.env, RESTIC_PASSWORD: 'bench-only', RESTIC_CACHE_DIR: join(dir, 'cache') };
  const arch = join(dir, 'arch');
  const cfg = yamlConfig(join(dir, 'config.yaml'), { source, archive: arch, rules: RULES4 });
  const ours = [];
  const ref = [];
  for (let i = 0; i < RUNS; i++) {
    const repo = join(dir, `repo${i}`);
    run(restic, ['init', '--repo', repo], { env });
    rmSync(arch, { recursive: true, force: true });
    syncAll();
    warm(source);
    ours.push(run(process.execPath, [CLI, 'once', '-c', cfg]));
    syncAll();
    warm(source);
    const t0 = process.hrtime.bigint();
    run(restic, ['backup', '--repo', repo, '--quiet', source], { env });
    run('sync', ['-f', repo]);
    ref.push(Number(process.hrtime.bigint() - t0) / 1e6);
    rmSync(repo, { recursive: true, force: true });
  }
  rmSync(dir, { recursive: true, force: true });
  const o = median(ours);
  const c = median(ref);
  const version = spawnSync(restic, ['version'], { encoding: 'utf8' }).stdout.trim().split(' ').slice(0, 2).join(' ');
  addRow({
    row: 'restic (peer)', what: `\`once\` (4 rule folders) vs \`${version} backup\` of the same ${fmtSize(statSync(source).size)} real dump into a new local repository (+ \`sync -f\`)`,
    ours: ms(o), ref: ms(c), ratio: `${(o / c).toFixed(2)}×`, target: 'peer (no target)', pass: true, info: true, runs: { ours, ref },
  });
}

// ---------------------------------------------------------------------------
// machine

function machine() {
  const fsType = (() => {
    const r = spawnSync('df', ['--output=fstype', BENCH], { encoding: 'utf8' });
    if (r.status === 0) return r.stdout.trim().split('\n').pop().trim();
    const s = spawnSync('stat', ['-f', '-c', '%T', BENCH], { encoding: 'utf8' });
    return s.status === 0 ? s.stdout.trim() : 'unknown';
  })();
  const cpu = cpus()[0]?.model?.trim() ?? 'unknown';
  return {
    cpu,
    cores: availableParallelism(),
    mem: `${(totalmem() / GiB).toFixed(1)} GiB`,
    node: process.version,
    kernel: release(),
    fs: fsType,
    load: loadavg().map((x) => x.toFixed(2)).join(' '),
    redisCheck: (() => {
      const c = which('redis-check-rdb');
      if (!c) return 'not installed';
      const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
      return r.status === 0 ? r.stdout.trim().replace(/\s+sha=.*/, '') : c;
    })(),
  };
}

function writeReport(m, startedAt, elapsed) {
  const lines = [];
  lines.push('# Benchmarks', '');
  lines.push(`Generated by \`${QUICK ? 'BENCH_QUICK=1 ' : ''}npm run bench\` (scripts/bench.mjs) on ${startedAt}; the whole run took ${ms(elapsed)}.`);
  if (QUICK) lines.push('', '**Quick smoke run (BENCH_QUICK=1): smaller sizes and fewer runs than the real benchmark; not the figures of record.**');
  if (ONLY) lines.push('', `Only these rows were run: ${[...ONLY].join(', ')}.`);
  lines.push('', '## Machine', '');
  lines.push(`- CPU: ${m.cpu}, ${m.cores} cores available to Node`);
  lines.push(`- RAM: ${m.mem}; kernel ${m.kernel}`);
  lines.push(`- Node.js ${m.node}`);
  lines.push(`- Filesystem of the bench folder (.bench/): ${m.fs}`);
  lines.push(`- Reference tools: coreutils \`cp\`, \`sync\`, \`sha256sum\`, \`find\`; redis-check-rdb from ${m.redisCheck}`);
  lines.push(`- Load average (1/5/15 min) when the run started: ${m.load}; when it ended: ${loadavg().map((x) => x.toFixed(2)).join(' ')}. The machine has ${m.cores} cores and is shared: other work running at the same time shows up in the figures (both ours and the references'), which is why every comparison is interleaved and taken as a median.`);
  lines.push('', '## Results', '');
  lines.push(`Figures are medians of ${RUNS} runs (${SHORT_RUNS} for nochange, ${PRUNE_BULK_RUNS} for the bulk prune); our runs and the reference's are interleaved, and the ratio is against the reference measured in this same run.`, '');
  lines.push('| row | what | ours | reference | ratio | target | result |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    lines.push(`| ${r.row} | ${r.what} | ${r.ours} | ${r.ref} | ${r.ratio} | ${r.target} | ${r.info ? (r.pass ? 'pass (info)' : 'fail (info)') : r.pass ? '**pass**' : '**FAIL**'} |`);
  }
  if (extra.length) {
    lines.push('', '### Other figures from the same run', '');
    for (const e of extra) lines.push(`- ${e}`);
  }
  lines.push('', '## How it is measured', '');
  lines.push(
    `- Test data: \`scripts/bench-rdbgen.mjs\` streams a structurally valid RDB of an exact size: magic \`REDIS0010\`, AUX fields (redis-ver, redis-bits, ctime, used-mem, aof-base), SELECTDB 0, RESIZEDB, string keys with random (incompressible) values of ${VALUES.minValue}–${VALUES.maxValue} bytes, EOF, and the CRC-64 trailer computed with dist/rdb/crc64.js. Version 10 because the installed redis-check-rdb (Redis 7.0) refuses RDB 11; the layout of string keys is the same. ${notes.filter((n) => n.startsWith('cross-check')).join(' ')}`,
    '- Page cache: the source is read once (in the bench process) right before each timed run of either side, so both `once` and `cp` read it from the page cache; `sync` runs before each timed run so that neither side pays for the other\'s write-back. The copies are made durable inside the timed region (ours written with O_DIRECT where the filesystem takes it, `cp`\'s through the page cache): `once` fsyncs the copy and the folders, the reference runs `cp SRC DST` then `sync DST` (coreutils `sync FILE` = fsync of that file; a bare `sync` would also flush unrelated dirty data of other processes). The archive folder and the reference copy are deleted before each run, outside the timed region.',
    '- archive-rss: `/usr/bin/time -f %M` (the child\'s `ru_maxrss`), in separate runs from archive-1g.',
    '- crc-throughput: `node scripts/bench-validate.mjs FILE DIST crc` (dist/rdb/validate.js `validateRdbFile` with `validation: crc`: magic, AUX fields, CRC-64 over the whole file) and `redis-check-rdb FILE`, each timed as a whole process (start-up included), file in the page cache; MB/s = file size / wall time.',
    '- walk-*: the same with `validation: full` (the default: also the structural walk of every opcode and value, in the same pass) against `redis-check-rdb FILE`, on the 1 GiB bench dump and on a dump of 5 M small keys written by redis-server (`DEBUG POPULATE 5000000 key 16`); the walk\'s own cost is the in-process difference between full and crc on the same file.',
    '- archive-real-*: dumps written by redis-server itself (DEBUG POPULATE, SAVE, rdbcompression no and yes), timed like archive-1g. The 1 GiB row also runs `once` with `RDB_ARCHIVER_COPY_METHOD=copy_file_range` in the same interleaved rounds (listed under Other figures): the O_DIRECT pass is the default on ext4 because it measured faster there (README "Copy methods").',
    '- verify: `rdb-archiver verify -c CONFIG` (sha256 and CRC-64 of the event; the four hard links are one inode, read once) vs `sha256sum -c dump-<ts>.sha256` in one rule folder, file in the page cache.',
    '- nochange: `rdb-archiver once -c CONFIG` on an archive whose source did not change (lock, state, stat, retention scan of 4 folders, state rewrite without fsync: nothing new to make durable) vs `node -e 0`. `dist/cli.cjs` (the bin, CommonJS) compiles the bundle from the V8 code cache that `npm run build` saved (scripts/cli-loader.cjs); Node built-ins a no-change run does not use (child_process, crypto, net, tty) are loaded on first use (scripts/build.mjs lazyBuiltins).',
    '- prune: `rdb-archiver prune -c CONFIG`, stdout and stderr to a log file; the folder is built (outside the timed region) from hard links to one tiny file per kind, with valid event names: creating 200k inodes on the bench VM took minutes (about 1 ms of system time each) and deleting files with data blocks costs an online discard there (ext4 `-o discard`), which would measure the filesystem, not the tool. The retention safety check (lstat each file, delete only regular files owned by the user) runs on every file as in production.',
  );
  for (const n of notes.filter((x) => !x.startsWith('cross-check'))) lines.push(`- ${n}`);
  writeFileSync(join(ROOT, 'BENCHMARKS.md'), lines.join('\n') + '\n');
  log(`wrote ${join(ROOT, 'BENCHMARKS.md')}`);
}

// ---------------------------------------------------------------------------

/** Runs one section of the bench; a failure is reported in BENCHMARKS.md and the other rows still run. */
async function attempt(section, fn) {
  try {
    await fn();
  } catch (err) {
    log(`${section}: FAILED: ${err?.stack ?? err}`);
    notes.push(`${section}: not measured: the bench section failed (${String(err?.message ?? err).split('\n')[0]}); see .bench/run/bench.log.`);
    rows.push({ row: section, what: 'section failed', ours: '–', ref: '–', ratio: '–', target: '–', pass: false });
  }
}

async function main() {
  const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const t0 = performance.now();
  buildIfNeeded();
  mkdirSync(DATA, { recursive: true });
  logFd = openSync(join(BENCH, 'bench.log'), 'w');
  const m = machine();
  log(`machine: ${m.cpu}, ${m.cores} cores, ${m.node}, ${m.fs}, load ${m.load}${QUICK ? ' (QUICK)' : ''}`);

  try {
    // Cross-check the generator with the real thing.
    if (which('redis-check-rdb')) {
      const small = join(DATA, 'crosscheck.rdb');
      rmSync(small, { force: true });
      await writeRdb(small, 3 * MiB + 12345, { crc64Module, ...VALUES });
      const r = spawnSync('redis-check-rdb', [small], { encoding: 'utf8' });
      const ok = r.status === 0 && /RDB looks OK/.test(r.stdout);
      notes.push(`cross-check: a generated ${fmtSize(3 * MiB + 12345)} file ${ok ? 'passes' : 'FAILS'} \`redis-check-rdb\` ("${ok ? 'RDB looks OK' : (r.stdout || r.stderr).trim().split('\n').pop()}").`);
      if (!ok) throw new Error('the generated RDB does not pass redis-check-rdb');
    }

    let archived;
    await attempt('archive', async () => {
      if (want('archive') || want('verify')) {
        const source = await dump(BIG);
        archived = benchArchive(source);
      }
    });
    await attempt('rss', async () => {
      if (want('rss')) {
        const sources = [];
        for (const size of RSS_SIZES) sources.push({ size, path: await dump(size) });
        benchRss(sources);
        for (const s of sources) if (s.size > BIG) rmSync(s.path, { force: true });
      }
    });
    await attempt('crc', async () => {
      if (want('crc')) {
        benchCrc(await dump(BIG), BIG, `values ${VALUES.minValue}–${VALUES.maxValue} B`, true);
        const smallKeys = { minValue: 16, maxValue: 256 };
        const size = QUICK ? 64 * MiB : 256 * MiB;
        const p = await dump(size, smallKeys, 'smallkeys');
        benchCrc(p, size, `values ${smallKeys.minValue}–${smallKeys.maxValue} B`, false);
        rmSync(p, { force: true });
      }
    });
    await attempt('walk', async () => {
      if (want('walk')) {
        benchWalk(await dump(BIG), BIG, `walk-${QUICK ? fmtSize(BIG).replace(' ', '') : '1g'}`, `the ${fmtSize(BIG)} bench dump (values ${VALUES.minValue}–${VALUES.maxValue} B)`);
        if (which('redis-server') && which('redis-cli')) {
          const n = QUICK ? 500_000 : 5_000_000;
          const p = smallKeysDump(n);
          benchWalk(p, statSync(p).size, `walk-${n / 1e6}m-keys`, `a redis-server dump of ${n / 1e6} M small keys (${fmtSize(statSync(p).size)})`);
          rmSync(p, { force: true });
        } else notes.push('walk-5m-keys: not run (redis-server and redis-cli are needed to write the dump)');
      }
    });
    await attempt('archive-real', async () => {
      if (want('archive-real') || want('archive-xfs') || want('restic')) {
        // Issue 15: dumps written by redis-server (DEBUG POPULATE), not only the generator's.
        const keys = QUICK ? 1_000_000 : 5_000_000;
        const plain = await realDump(keys, 200, false);
        if (want('archive-real')) {
          benchArchiveVs(`archive-real-${fmtSize(statSync(plain).size).replace(' ', '')}`,
            `\`once\` on a ${fmtSize(statSync(plain).size)} dump written by redis-server (DEBUG POPULATE ${keys} keys of 200 B, rdbcompression no) into 4 rule folders vs \`cp\` + \`sync FILE\``, plain, 1.15, RUNS, 'copy_file_range');
          const lzf = await realDump(keys, 200, true);
          benchArchiveVs(`archive-real-${fmtSize(statSync(lzf).size).replace(' ', '')}`,
            `\`once\` on a ${fmtSize(statSync(lzf).size)} dump written by redis-server (the same keys, rdbcompression yes) into 4 rule folders vs \`cp\` + \`sync FILE\``, lzf, 2.0, RUNS + 2);
        }
        if (want('archive-xfs')) benchXfs(plain);
        if (want('restic')) benchRestic(plain);
      }
    });
    await attempt('verify', async () => {
      if (want('verify') && archived) benchVerify(archived.cfg, archived.arch);
    });
    await attempt('upload', async () => {
      if (want('upload')) {
        const rssSize = QUICK ? 512 * MiB : 2 * GiB;
        const rssSource = { size: rssSize, path: await dump(rssSize) };
        await benchUpload(await dump(BIG), rssSource);
        rmSync(rssSource.path, { force: true });
      }
    });
    await attempt('upload-codec', async () => {
      if (want('upload-codec')) {
        const shaped = join(DATA, `dump-shaped-${BIG}.rdb`);
        if (!existsSync(shaped)) {
          const r = await writeShapedRdb(shaped, BIG, { crc64Module });
          log(`generated ${relative(ROOT, shaped)} (${fmtSize(r.bytes)}, ${r.smallKeys} small keys, ${r.bigKeys} 64 KiB values)`);
        }
        await benchUploadCodec(shaped);
      }
    });
    await attempt('pull', async () => {
      if (want('pull') && which('redis-server') && which('redis-cli')) await benchPull(await dump(BIG));
    });
    await attempt('nochange', async () => {
      if (want('nochange')) await benchNochange();
    });
    await attempt('prune', async () => {
      if (want('prune')) benchPruneSteady();
    });
    await attempt('prune-bulk', async () => {
      if (want('prune-bulk')) benchPruneBulk();
    });
  } finally {
    if (!KEEP) {
      for (const f of ['data', 'archive', 'rss', 'prune', 'prune-bulk', 'nochange', 'upload', 'upload-codec', 'pull', 'archive-real', 'xfs', 'restic', 'build', 'rss.txt', 'cpu.txt']) rmSync(join(BENCH, f), { recursive: true, force: true });
    }
  }
  writeReport(m, startedAt, performance.now() - t0);
  const failed = rows.filter((r) => !r.pass && !r.info).map((r) => r.row);
  log(failed.length ? `not at target: ${failed.join(', ')}` : 'every row at target');
}

await main();
