import { defineConfig } from 'vitest/config';

/**
 * The files of the slow suite (`npm run test:slow`; CI runs it too, `npm run test:all`): each
 * takes tens of seconds on 2 idle cores, most of it starting programs many times over (the CLI,
 * npm, awscli's Python, moto, redis-server, systemd in a container), or repeating a scenario at
 * the reliability suites' seeded subset size. Everything else is the fast suite, `npm test`
 * (README, Development: which suite a test belongs to, and what each costs).
 */
export const SLOW_FILES = [
  // installing what we ship
  'test/integration/package.test.ts',
  'test/integration/deb.test.ts',
  // off-site against real S3 servers (s3rver, moto) with awscli cross-checks
  'test/integration/offsite.test.ts',
  'test/integration/offsite-tamper.test.ts',
  'test/integration/offsite-moto.test.ts',
  'test/integration/offsite-faults.test.ts',
  'test/integration/offsite-encoded.test.ts',
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
