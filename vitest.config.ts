import { defineConfig } from 'vitest/config';

/**
 * The files of the slow suite (`npm run test:slow`; CI runs both suites, `npm run test:all`):
 * the ones that install what we ship, start real servers (redis-server, s3rver, moto, with
 * awscli cross-checks), mount XFS images, run the daemon on a real clock, or repeat a scenario
 * at the reliability suites' seeded subset size. Each takes tens of seconds on 2 idle cores,
 * most of it starting programs. Everything else is the fast suite, `npm test`: the unit tests
 * and the CLI on local folders (config-check's remote probe uses s3rver, an npm package), which
 * needs no redis-server, awscli, moto, XFS image or root (README, Development: which suite a
 * test belongs to, and what each costs).
 */
export const SLOW_FILES = [
  // installing what we ship: npm pack + npm install -g, dpkg -i and systemd-nspawn
  'test/integration/package.test.ts',
  'test/integration/deb.test.ts',
  // off-site against real S3 servers (s3rver, moto) with awscli cross-checks
  'test/integration/offsite.test.ts',
  'test/integration/offsite-tamper.test.ts',
  'test/integration/offsite-moto.test.ts',
  'test/integration/offsite-faults.test.ts',
  'test/integration/offsite-encoded.test.ts',
  'test/integration/offsite-redis.test.ts',
  'test/integration/offsite-daemon.test.ts',
  'test/integration/redis-facts.test.ts',
  // real redis-server processes (single, cluster, TLS) and what they save
  'test/integration/redis.test.ts',
  'test/integration/redis-source.test.ts',
  'test/integration/redis-cluster.test.ts',
  'test/integration/redis-payload.test.ts',
  'test/integration/rdb-structure.test.ts',
  'test/integration/drill.test.ts',
  'test/integration/watch.test.ts',
  // loop-mounted XFS images (reflink, FICLONE) and a hostile server
  'test/integration/copy-methods.test.ts',
  'test/integration/copy-attacks.test.ts',
  'test/integration/hostile-redis.test.ts',
  // the daemon on a real clock (seconds schedules, shutdown timeouts)
  'test/integration/daemon.test.ts',
  'test/integration/scheduled-verify.test.ts',
  // the reliability suites at their seeded subset size (full size: npm run test:reliability)
  'test/reliability/*.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // Two files at a time: most of a test's time is spent waiting for child processes (the CLI,
    // redis-server, s3rver), and vitest's default on a 2-core machine is one worker (cpus - 1).
    // RDB_ARCHIVER_TEST_WORKERS=1 runs the files one after another.
    maxWorkers: Number(process.env.RDB_ARCHIVER_TEST_WORKERS ?? 2),
    // Removes the failure records tests leave in /var/tmp/rdb-archiver-<uid> (see the file).
    globalSetup: ['test/helpers/global-teardown.ts'],
    // `vitest run` runs both; `--project fast` (npm test) or `--project slow` (npm run test:slow) one.
    projects: [
      { extends: true, test: { name: 'fast', include: ['test/**/*.test.ts'], exclude: SLOW_FILES } },
      { extends: true, test: { name: 'slow', include: SLOW_FILES } },
    ],
  },
});
