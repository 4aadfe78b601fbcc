import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // Two files at a time: most of a test's time is spent waiting for child processes (the CLI,
    // redis-server, s3rver), and vitest's default on a 2-core machine is one worker (cpus - 1).
    // RDB_ARCHIVER_TEST_WORKERS=1 runs the files one after another.
    maxWorkers: Number(process.env.RDB_ARCHIVER_TEST_WORKERS ?? 2),
    // Removes the failure records tests leave in /var/tmp/rdb-archiver-<uid> (see the file).
    globalSetup: ['test/helpers/global-teardown.ts'],
  },
});
