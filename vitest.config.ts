import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // Removes the failure records tests leave in /var/tmp/rdb-archiver-<uid> (see the file).
    globalSetup: ['test/helpers/global-teardown.ts'],
  },
});
