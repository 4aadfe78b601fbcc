import { mkdtempSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_PATH, DEFAULT_RULES, loadConfig, parseConfigObject, type ConfigOverrides } from '../../src/core/config.js';
import { ConfigError } from '../../src/core/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `text` (or raw bytes) as a config file in this test's temp dir and returns its path. */
function writeConfig(text: string | Buffer, name = 'config.yaml'): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const MINIMAL = 'source:\n  rdb: /var/lib/redis/dump.rdb\narchive:\n  dir: /var/backups/redis\n';

function withRules(rules: string): string {
  return `${MINIMAL}rules:\n${rules}`;
}

/** Runs fn, asserts it throws a ConfigError, and returns the error. */
function configError(fn: () => unknown): ConfigError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected a ConfigError to be thrown').toBeInstanceOf(ConfigError);
  const err = thrown as ConfigError;
  expect(err.exitCode).toBe(2);
  expect(err.kind).toBe('config');
  return err;
}

/** Loads a config file with the given text and expects a ConfigError naming the file and key path. */
function expectFileError(text: string | Buffer, keyPath: string | undefined, detail: string | RegExp, overrides: ConfigOverrides = {}): ConfigError {
  const file = writeConfig(text);
  const err = configError(() => loadConfig({ ...overrides, config: file }, {}));
  expect(err.file).toBe(file);
  expect(err.message).toContain(file);
  expect(err.keyPath).toBe(keyPath);
  if (keyPath !== undefined) expect(err.message).toContain(`${file}: ${keyPath}: `);
  if (typeof detail === 'string') expect(err.message).toContain(detail);
  else expect(err.message).toMatch(detail);
  return err;
}

describe('loadConfig: a valid file', () => {
  it('fills every default for the minimal config', () => {
    const file = writeConfig(MINIMAL);
    const config = loadConfig({ config: file }, {});
    // toMatchObject: other settings (added by later features) may sit next to these
    expect(config).toMatchObject({
      file,
      logLevel: 'info',
      instances: [
        {
          name: 'default',
          sourceRdb: '/var/lib/redis/dump.rdb',
          sourceNodes: undefined,
          archiveDir: '/var/backups/redis',
          fileMode: 0o600,
          dirMode: 0o700,
          minFree: { kind: 'default' },
          statePath: '/var/backups/redis/.rdb-archiver/state.json',
          timezone: 'UTC',
          rules: [
            { name: 'hourly', every: { kind: 'calendar', unit: 'hour' }, count: 48 },
            { name: 'daily', every: { kind: 'calendar', unit: 'day' }, count: 30 },
          ],
        },
      ],
    });
    expect(config.instances).toHaveLength(1);
    expect(config.instances[0]!.sourceNodes).toBeUndefined();
    expect(config.instances[0]!.rules).toEqual(DEFAULT_RULES);
  });

  it('reads every documented key', () => {
    const file = writeConfig(
      [
        'source:',
        '  rdb: /data/dump.rdb',
        '  nodes: /data/nodes.conf',
        'archive:',
        '  dir: /backups',
        '  file_mode: "0640"',
        '  dir_mode: "0750"',
        '  min_free: "5%"',
        'state: /var/lib/rdb-archiver/state.json',
        'timezone: Europe/Berlin',
        'rules:',
        '  - name: hourly',
        '    every: hour',
        '    count: 24',
        '  - name: last',
        '    count: 3',
        'log:',
        '  level: debug',
        '',
      ].join('\n'),
    );
    const config = loadConfig({ config: file }, {});
    expect(config.logLevel).toBe('debug');
    expect(config.instances).toHaveLength(1);
    expect(config.instances[0]).toMatchObject({
      name: 'default',
      sourceRdb: '/data/dump.rdb',
      sourceNodes: '/data/nodes.conf',
      archiveDir: '/backups',
      fileMode: 0o640,
      dirMode: 0o750,
      minFree: { kind: 'percent', percent: 5 },
      statePath: '/var/lib/rdb-archiver/state.json',
      timezone: 'Europe/Berlin',
      rules: [
        { name: 'hourly', every: { kind: 'calendar', unit: 'hour' }, count: 24 },
        // `every` defaults to snapshot (keep the last N)
        { name: 'last', every: { kind: 'snapshot' }, count: 3 },
      ],
    });
  });

  it("resolves relative paths against the config file's folder, not the cwd", () => {
    mkdirSync(join(dir, 'etc'));
    const file = writeConfig(
      'source:\n  rdb: data/dump.rdb\n  nodes: ./data/nodes.conf\narchive:\n  dir: ../backups\nstate: st/state.json\n',
      'etc/config.yaml',
    );
    const inst = loadConfig({ config: file }, {}).instances[0]!;
    expect(inst.sourceRdb).toBe(join(dir, 'etc', 'data', 'dump.rdb'));
    expect(inst.sourceNodes).toBe(join(dir, 'etc', 'data', 'nodes.conf'));
    expect(inst.archiveDir).toBe(join(dir, 'backups'));
    expect(inst.statePath).toBe(join(dir, 'etc', 'st', 'state.json'));
  });

  it('resolves relative paths against the file folder even when --config itself is relative', () => {
    const file = writeConfig('source:\n  rdb: dump.rdb\narchive:\n  dir: arch\n');
    const rel = relative(process.cwd(), file);
    const inst = loadConfig({ config: rel }, {}).instances[0]!;
    expect(inst.sourceRdb).toBe(join(dir, 'dump.rdb'));
    expect(inst.archiveDir).toBe(join(dir, 'arch'));
    // the default state path follows the resolved archive dir
    expect(inst.statePath).toBe(join(dir, 'arch', '.rdb-archiver', 'state.json'));
  });

  it('flags override the file values', () => {
    const file = writeConfig(
      'source:\n  rdb: /file/dump.rdb\n  nodes: /file/nodes.conf\narchive:\n  dir: /file/archive\nstate: /file/state.json\ntimezone: Europe/Berlin\nlog:\n  level: warn\n',
    );
    const config = loadConfig(
      { config: file, source: '/flag/dump.rdb', nodes: '/flag/nodes.conf', archive: '/flag/archive', state: '/flag/state.json', logLevel: 'trace' },
      {},
    );
    const inst = config.instances[0]!;
    expect(inst.sourceRdb).toBe('/flag/dump.rdb');
    expect(inst.sourceNodes).toBe('/flag/nodes.conf');
    expect(inst.archiveDir).toBe('/flag/archive');
    expect(inst.statePath).toBe('/flag/state.json');
    expect(config.logLevel).toBe('trace');
    // values without a flag still come from the file
    expect(inst.timezone).toBe('Europe/Berlin');
  });

  it('--archive without --state moves the default state path with it', () => {
    const file = writeConfig(MINIMAL);
    const inst = loadConfig({ config: file, archive: '/elsewhere' }, {}).instances[0]!;
    expect(inst.archiveDir).toBe('/elsewhere');
    expect(inst.statePath).toBe('/elsewhere/.rdb-archiver/state.json');
    expect(inst.sourceRdb).toBe('/var/lib/redis/dump.rdb');
  });

  it('a flag supplies a key the file leaves out', () => {
    const file = writeConfig('archive:\n  dir: /file/archive\n');
    const inst = loadConfig({ config: file, source: '/flag/dump.rdb' }, {}).instances[0]!;
    expect(inst.sourceRdb).toBe('/flag/dump.rdb');
    expect(inst.archiveDir).toBe('/file/archive');
  });
});

describe('loadConfig: validation', () => {
  it('is full by default, crc when set; a top-level value is every instance\'s default, an instance may override it', () => {
    expect(loadConfig({ config: writeConfig(MINIMAL) }, {}).instances[0]!.validation).toBe('full');
    expect(loadConfig({ config: writeConfig(`${MINIMAL}validation: crc\n`) }, {}).instances[0]!.validation).toBe('crc');
    const multi = writeConfig(
      'validation: crc\narchive:\n  dir: /var/backups/redis\ninstances:\n' +
        '  - name: a\n    source:\n      rdb: /a/dump.rdb\n' +
        '  - name: b\n    source:\n      rdb: /b/dump.rdb\n    validation: full\n',
    );
    expect(loadConfig({ config: multi }, {}).instances.map((i) => [i.name, i.validation])).toEqual([['a', 'crc'], ['b', 'full']]);
  });

  it('refuses any other value, naming the choices', () => {
    expectFileError(`${MINIMAL}validation: none\n`, 'validation', 'must be full (walk every value: the default) or crc (header and CRC-64 only)');
  });
});

describe('loadConfig: which file', () => {
  it('--source and --archive work without any config file', () => {
    const config = loadConfig({ source: '/data/dump.rdb', archive: '/backups' }, {});
    expect(config.file).toBeUndefined();
    expect(config.logLevel).toBe('info');
    expect(config.instances[0]).toMatchObject({
      sourceRdb: '/data/dump.rdb',
      archiveDir: '/backups',
      statePath: '/backups/.rdb-archiver/state.json',
      fileMode: 0o600,
      dirMode: 0o700,
      timezone: 'UTC',
      rules: DEFAULT_RULES,
    });
  });

  it('resolves relative flags against the cwd', () => {
    const inst = loadConfig({ source: 'd/dump.rdb', archive: 'arch', nodes: 'n.conf', state: 's.json' }, {}).instances[0]!;
    expect(inst.sourceRdb).toBe(resolve(process.cwd(), 'd/dump.rdb'));
    expect(inst.archiveDir).toBe(resolve(process.cwd(), 'arch'));
    expect(inst.sourceNodes).toBe(resolve(process.cwd(), 'n.conf'));
    expect(inst.statePath).toBe(resolve(process.cwd(), 's.json'));
  });

  it('uses RDB_ARCHIVER_CONFIG when there is no --config', () => {
    const file = writeConfig('source:\n  rdb: /env/dump.rdb\narchive:\n  dir: /env/archive\n');
    const config = loadConfig({}, { RDB_ARCHIVER_CONFIG: file });
    expect(config.file).toBe(file);
    expect(config.instances[0]!.sourceRdb).toBe('/env/dump.rdb');
  });

  it('--config wins over RDB_ARCHIVER_CONFIG', () => {
    const file = writeConfig(MINIMAL);
    const config = loadConfig({ config: file }, { RDB_ARCHIVER_CONFIG: join(dir, 'does-not-exist.yaml') });
    expect(config.file).toBe(file);
  });

  it('RDB_ARCHIVER_CONFIG is still read when --source and --archive are given', () => {
    const file = writeConfig(`${MINIMAL}timezone: Europe/Berlin\n`);
    const config = loadConfig({ source: '/s/dump.rdb', archive: '/a' }, { RDB_ARCHIVER_CONFIG: file });
    expect(config.file).toBe(file);
    expect(config.instances[0]).toMatchObject({ sourceRdb: '/s/dump.rdb', archiveDir: '/a', timezone: 'Europe/Berlin' });
  });

  it('a missing file is a ConfigError mentioning "not found" and the path', () => {
    const missing = join(dir, 'nope.yaml');
    const err = configError(() => loadConfig({ config: missing }, {}));
    expect(err.message).toContain(missing);
    expect(err.message).toContain('not found');
  });

  it('a missing RDB_ARCHIVER_CONFIG file is a ConfigError', () => {
    const missing = join(dir, 'env-nope.yaml');
    const err = configError(() => loadConfig({}, { RDB_ARCHIVER_CONFIG: missing }));
    expect(err.message).toContain(missing);
    expect(err.message).toContain('not found');
  });

  it.skipIf(existsSync(DEFAULT_CONFIG_PATH))('falls back to /etc/rdb-archiver/config.yaml with only --source', () => {
    const err = configError(() => loadConfig({ source: '/data/dump.rdb' }, {}));
    expect(err.file).toBe(DEFAULT_CONFIG_PATH);
    expect(err.message).toContain(DEFAULT_CONFIG_PATH);
    expect(err.message).toContain('not found');
  });

  it('a file without source and no --source names source.rdb', () => {
    expectFileError('archive:\n  dir: /a\n', 'source.rdb', 'is required');
  });

  it('a file without archive and no --archive names archive.dir', () => {
    expectFileError('source:\n  rdb: /d/dump.rdb\n', 'archive.dir', 'is required');
  });
});

describe('loadConfig: ${VAR} substitution', () => {
  it('replaces variables in string values, including inside lists', () => {
    const file = writeConfig(
      'source:\n  rdb: ${REDIS_DIR}/dump.rdb\narchive:\n  dir: ${ROOT}/redis/${INSTANCE}\nrules:\n  - name: ${RULE}\n    count: 2\n',
    );
    const inst = loadConfig({ config: file }, { REDIS_DIR: '/var/lib/redis', ROOT: '/srv', INSTANCE: 'main', RULE: 'keep' }).instances[0]!;
    expect(inst.sourceRdb).toBe('/var/lib/redis/dump.rdb');
    expect(inst.archiveDir).toBe('/srv/redis/main');
    expect(inst.rules).toEqual([{ name: 'keep', every: { kind: 'snapshot' }, count: 2 }]);
  });

  it('substituted values are validated like literal ones', () => {
    const file = writeConfig(withRules('  - name: ${RULE}\n    count: 2\n'));
    const err = configError(() => loadConfig({ config: file }, { RULE: '../escape' }));
    expect(err.keyPath).toBe('rules[0].name');
  });

  it('leaves $VAR without braces alone', () => {
    const file = writeConfig('source:\n  rdb: /data/$HOME/dump.rdb\narchive:\n  dir: /a\n');
    expect(loadConfig({ config: file }, { HOME: '/root' }).instances[0]!.sourceRdb).toBe('/data/$HOME/dump.rdb');
  });

  it('an unset variable is an error naming the key and the variable', () => {
    const file = writeConfig('source:\n  rdb: /d/dump.rdb\narchive:\n  dir: ${BACKUP_ROOT}/redis\n');
    const err = configError(() => loadConfig({ config: file }, { OTHER: 'x' }));
    expect(err.file).toBe(file);
    expect(err.keyPath).toBe('archive.dir');
    expect(err.message).toContain(`${file}: archive.dir: `);
    expect(err.message).toContain('${BACKUP_ROOT}');
    expect(err.message).toContain('not set');
  });

  it('an unset variable inside a list names the list index', () => {
    const file = writeConfig(withRules('  - name: ok\n    count: 1\n  - name: ${MISSING}\n    count: 1\n'));
    const err = configError(() => loadConfig({ config: file }, {}));
    expect(err.keyPath).toBe('rules[1].name');
    expect(err.message).toContain('${MISSING}');
  });

  it('uses the env passed in, not process.env', () => {
    const name = 'RDB_ARCHIVER_TEST_ONLY_IN_PROCESS_ENV';
    process.env[name] = '/from-process-env';
    try {
      const file = writeConfig(`source:\n  rdb: \${${name}}/dump.rdb\narchive:\n  dir: /a\n`);
      const err = configError(() => loadConfig({ config: file }, {}));
      expect(err.keyPath).toBe('source.rdb');
    } finally {
      delete process.env[name];
    }
  });
});

describe('loadConfig: errors name the file and the key path', () => {
  it.each([
    ['0', '0'],
    ['-1', '-1'],
  ])('rules[1].count: %s (%s) must be an integer >= 1', (value) => {
    expectFileError(withRules(`  - name: hourly\n    count: 2\n  - name: daily\n    count: ${value}\n`), 'rules[1].count', 'must be an integer >= 1');
  });

  // `issue.input` is undefined as a missing key, but zod 4 leaves `input` out of issues unless
  // parsing with { reportInput: true }. So any present value of the wrong type (or a non-integer
  // number, which zod 4 reports as invalid_type) is reported as "is required" instead of the
  // schema's message: `count: 1.5` / `count: "3"` give "rules[1].count: is required".
  it.each([
    ['1.5', '1.5'],
    ['"3"', 'a quoted string'],
    ['null', 'null'],
    ['[1]', 'a list'],
  ])('rules[1].count: %s (%s) must be an integer >= 1', (value) => {
    expectFileError(withRules(`  - name: hourly\n    count: 2\n  - name: daily\n    count: ${value}\n`), 'rules[1].count', 'must be an integer >= 1');
  });

  it('rules[1].count: 1.5 and "3" are rejected at the right key (whatever the wording)', () => {
    expectFileError(withRules('  - name: hourly\n    count: 2\n  - name: daily\n    count: 1.5\n'), 'rules[1].count', /.+/);
    expectFileError(withRules('  - name: hourly\n    count: 2\n  - name: daily\n    count: "3"\n'), 'rules[1].count', /.+/);
  });

  it('a missing count is required', () => {
    expectFileError(withRules('  - name: hourly\n    every: hour\n'), 'rules[0].count', 'is required');
  });

  it('a missing rule name is required', () => {
    expectFileError(withRules('  - count: 1\n'), 'rules[0].name', 'is required');
  });

  it.each(['../x', 'a/b', '.', '..', "''", 'A', 'Hourly', '-x', '_x', 'a b', 'a.b', 'ä'])('rule name %s is rejected', (name) => {
    expectFileError(withRules(`  - name: ${name}\n    count: 1\n`), 'rules[0].name', 'must match ^[a-z0-9][a-z0-9_-]*$');
  });

  it('a numeric rule name is rejected', () => {
    expectFileError(withRules('  - name: 5\n    count: 1\n'), 'rules[0].name', 'must be a string');
  });

  it.each(['a', '0', 'hourly-2', 'x_y', '15m'])('rule name %s is accepted', (name) => {
    const file = writeConfig(withRules(`  - name: "${name}"\n    count: 1\n`));
    expect(loadConfig({ config: file }, {}).instances[0]!.rules[0]!.name).toBe(name);
  });

  it('duplicate rule names are rejected at the second one', () => {
    const err = expectFileError(
      withRules('  - name: daily\n    count: 1\n  - name: hourly\n    count: 1\n  - name: daily\n    every: day\n    count: 2\n'),
      'rules[2].name',
      'duplicate rule name "daily"',
    );
    expect(err.detail).toContain('duplicate');
  });

  it('an empty rules list is rejected', () => {
    expectFileError(`${MINIMAL}rules: []\n`, 'rules', 'at least one rule');
  });

  it('rules must be a list', () => {
    expectFileError(`${MINIMAL}rules:\n  hourly: 48\n`, 'rules', 'must be a list of rules');
  });

  it.each(['2x', '0m', '0h', 'fortnight', 'Hour', 'hours', '15', '1.5h', '-1h', '15 m', ''])('every %j is rejected', (every) => {
    expectFileError(withRules(`  - name: r\n    every: "${every}"\n    count: 1\n`), 'rules[0].every', /is not a period|must be snapshot/);
  });

  it('a numeric every is rejected', () => {
    expectFileError(withRules('  - name: r\n    every: 60\n    count: 1\n'), 'rules[0].every', 'must be snapshot, hour, day, week, month, year or a duration');
  });

  it.each([
    ['snapshot', { kind: 'snapshot' }],
    ['hour', { kind: 'calendar', unit: 'hour' }],
    ['day', { kind: 'calendar', unit: 'day' }],
    ['week', { kind: 'calendar', unit: 'week' }],
    ['month', { kind: 'calendar', unit: 'month' }],
    ['year', { kind: 'calendar', unit: 'year' }],
    ['30s', { kind: 'duration', ms: 30_000, text: '30s' }],
    ['15m', { kind: 'duration', ms: 900_000, text: '15m' }],
    ['6h', { kind: 'duration', ms: 21_600_000, text: '6h' }],
    ['2d', { kind: 'duration', ms: 172_800_000, text: '2d' }],
    ['1w', { kind: 'duration', ms: 604_800_000, text: '1w' }],
  ])('every %s maps to %j', (every, expected) => {
    const file = writeConfig(withRules(`  - name: r\n    every: ${every}\n    count: 4\n`));
    expect(loadConfig({ config: file }, {}).instances[0]!.rules).toEqual([{ name: 'r', every: expected, count: 4 }]);
  });

  it.each(['Mars/Olympus', 'Europe/Berlinn', 'CEST+2'])('timezone %s is rejected', (tz) => {
    expectFileError(`${MINIMAL}timezone: ${tz}\n`, 'timezone', 'is not a known IANA timezone');
  });

  it('file_mode: 0600 unquoted (a YAML number) is rejected', () => {
    expectFileError(`${MINIMAL.replace('  dir: /var/backups/redis\n', '  dir: /var/backups/redis\n  file_mode: 0600\n')}`, 'archive.file_mode', 'must be a quoted octal mode such as "0600"');
  });

  it.each(['"0800"', '"rw-r--r--"', '"600000"', '"06"', '""'])('file_mode %s is rejected', (mode) => {
    expectFileError(`source:\n  rdb: /d\narchive:\n  dir: /a\n  file_mode: ${mode}\n`, 'archive.file_mode', 'quoted octal mode');
  });

  it('dir_mode 750 unquoted (a YAML number) is rejected', () => {
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\n  dir_mode: 750\n', 'archive.dir_mode', 'quoted octal mode');
  });

  it.each([
    ['"0640"', 0o640],
    ['"0600"', 0o600],
    ['"640"', 0o640],
    ["'0444'", 0o444],
  ])('file_mode %s is accepted as %o', (mode, expected) => {
    const file = writeConfig(`source:\n  rdb: /d\narchive:\n  dir: /a\n  file_mode: ${mode}\n  dir_mode: "0750"\n`);
    const inst = loadConfig({ config: file }, {}).instances[0]!;
    expect(inst.fileMode).toBe(expected);
    expect(inst.dirMode).toBe(0o750);
  });

  it.each([
    ['"5%"', { kind: 'percent', percent: 5 }],
    ['"2.5%"', { kind: 'percent', percent: 2.5 }],
    ['"100%"', { kind: 'percent', percent: 100 }],
    ['"1GiB"', { kind: 'bytes', bytes: 1024 ** 3 }],
    ['"1GB"', { kind: 'bytes', bytes: 1e9 }],
    ['"512 MiB"', { kind: 'bytes', bytes: 512 * 1024 ** 2 }],
    ['"1.5k"', { kind: 'bytes', bytes: 1536 }],
    ['1000', { kind: 'bytes', bytes: 1000 }],
    ['0', { kind: 'bytes', bytes: 0 }],
  ])('min_free %s is %j', (value, expected) => {
    const file = writeConfig(`source:\n  rdb: /d\narchive:\n  dir: /a\n  min_free: ${value}\n`);
    expect(loadConfig({ config: file }, {}).instances[0]!.minFree).toEqual(expected);
  });

  it.each(['"101%"', '"lots"', '"5 parsecs"', '-5', '1.5', '"-1GiB"'])('min_free %s is rejected', (value) => {
    expectFileError(`source:\n  rdb: /d\narchive:\n  dir: /a\n  min_free: ${value}\n`, 'archive.min_free', 'must be a size such as "1GiB" or a percentage such as "5%"');
  });

  it.each([
    ['"200MiB"', 200 * 1024 ** 2],
    ['"200MiB/s"', 200 * 1024 ** 2],
    ['"1 GB / s"', 1e9],
    ['1048576', 1024 ** 2],
  ])('max_rate %s is %d bytes per second', (value, expected) => {
    const file = writeConfig(`source:\n  rdb: /d\narchive:\n  dir: /a\n  max_rate: ${value}\n`);
    expect(loadConfig({ config: file }, {}).instances[0]!.maxRate).toBe(expected);
  });

  it('max_rate is unlimited by default', () => {
    const file = writeConfig('source:\n  rdb: /d\narchive:\n  dir: /a\n');
    expect(loadConfig({ config: file }, {}).instances[0]!.maxRate).toBeUndefined();
  });

  it.each(['"fast"', '1000', '"512KiB"', '-5', '"0"'])('max_rate %s is rejected (not a rate, or below 1 MiB/s: a typo, not a plan)', (value) => {
    expectFileError(`source:\n  rdb: /d\narchive:\n  dir: /a\n  max_rate: ${value}\n`, 'archive.max_rate', 'must be a rate in bytes per second of at least 1MiB');
  });

  it('an unknown top-level key is an error naming it', () => {
    const err = expectFileError(`${MINIMAL}retention: 7\n`, 'retention', 'unknown key');
    expect(err.message).toContain('not a setting of rdb-archiver');
  });

  it('an unknown nested key names its full path (archive.foo)', () => {
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\n  foo: 1\n', 'archive.foo', 'unknown key');
  });

  it('an unknown key inside a rule names its index', () => {
    expectFileError(withRules('  - name: r\n    count: 1\n    keep: 5\n'), 'rules[0].keep', 'unknown key');
  });

  it('an unknown key under source and under log', () => {
    expectFileError('source:\n  rdb: /d\n  aof: /x\narchive:\n  dir: /a\n', 'source.aof', 'unknown key');
    expectFileError(`${MINIMAL}log:\n  colour: true\n`, 'log.colour', 'unknown key');
    expectFileError(`${MINIMAL}log:\n  format: xml\n`, 'log.format', 'must be one of json, pretty, journal');
  });

  it('a typo of a real key is not silently ignored', () => {
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\ntimezome: Europe/Berlin\n', 'timezome', 'unknown key');
  });

  it('source.rdb is required when source is given', () => {
    expectFileError('source:\n  nodes: /n\narchive:\n  dir: /a\n', 'source.rdb', 'is required');
  });

  it('an empty path is rejected', () => {
    expectFileError('source:\n  rdb: ""\narchive:\n  dir: /a\n', 'source.rdb', 'must not be empty');
  });

  it('source given as a string instead of a mapping is rejected at source', () => {
    expectFileError('source: /data/dump.rdb\narchive:\n  dir: /a\n', 'source', /.+/);
  });

  // gives "source: is required", which tells the user to add a key they already wrote.
  it('source given as a string is not reported as missing', () => {
    const err = expectFileError('source: /data/dump.rdb\narchive:\n  dir: /a\n', 'source', /.+/);
    expect(err.detail).not.toContain('is required');
  });

  it('wrong-type values are still rejected at the right key', () => {
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\n  file_mode: 0600\n', 'archive.file_mode', /.+/);
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\n  dir_mode: 750\n', 'archive.dir_mode', /.+/);
    expectFileError(withRules('  - name: 5\n    count: 1\n'), 'rules[0].name', /.+/);
    expectFileError(withRules('  - name: r\n    every: 60\n    count: 1\n'), 'rules[0].every', /.+/);
    expectFileError(`${MINIMAL}rules:\n  hourly: 48\n`, 'rules', /.+/);
  });

  it('an invalid log level in the file names log.level', () => {
    expectFileError(`${MINIMAL}log:\n  level: verbose\n`, 'log.level', 'must be one of fatal, error, warn, info, debug, trace, silent');
  });

  it('an invalid --log-level is a ConfigError naming the flag', () => {
    const err = configError(() => loadConfig({ source: '/d', archive: '/a', logLevel: 'loud' }, {}));
    expect(err.keyPath).toBe('--log-level');
    expect(err.message).toContain('"loud"');
  });

  it('several problems are reported together, the first one leading', () => {
    const err = expectFileError(withRules('  - name: ok\n    count: 0\n  - name: Bad\n    count: 1\n'), 'rules[0].count', 'must be an integer >= 1');
    expect(err.message).toContain('also:');
    expect(err.message).toContain('rules[1].name');
  });
});

describe('loadConfig: malformed files', () => {
  it('a YAML syntax error', () => {
    expectFileError('source:\n  rdb: [unclosed\narchive:\n  dir: /a\n', undefined, 'invalid YAML');
  });

  it('a duplicate YAML key', () => {
    expectFileError('source:\n  rdb: /d\narchive:\n  dir: /a\narchive:\n  dir: /b\n', undefined, 'invalid YAML');
  });

  it('a YAML alias bomb (billion laughs) is rejected quickly', () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    const names = 'abcdefghi';
    for (let i = 1; i < names.length; i++) {
      const prev = names[i - 1];
      lines.push(`${names[i]}: &${names[i]} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const started = Date.now();
    const err = expectFileError(lines.join('\n') + '\n', undefined, 'invalid YAML');
    expect(err.message).toMatch(/alias/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('a moderate, legitimate use of aliases still works', () => {
    const file = writeConfig('source:\n  rdb: /d/dump.rdb\narchive:\n  dir: &root /srv/a\nstate: *root\nrules:\n  - {name: one, count: &n 2}\n  - {name: two, count: *n}\n');
    const inst = loadConfig({ config: file }, {}).instances[0]!;
    expect(inst.statePath).toBe('/srv/a');
    expect(inst.rules.map((r) => r.count)).toEqual([2, 2]);
  });

  it('non-UTF-8 bytes are rejected', () => {
    const bytes = Buffer.concat([Buffer.from('source:\n  rdb: /d/'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('.rdb\narchive:\n  dir: /a\n')]);
    expectFileError(bytes, undefined, 'not valid UTF-8');
  });

  it('an empty file', () => {
    expectFileError('', undefined, 'is empty');
  });

  it('a file with only comments is empty too', () => {
    expectFileError('# nothing here\n\n', undefined, 'is empty');
  });

  it('a list at the top level', () => {
    expectFileError('- source: /d\n- archive: /a\n', undefined, 'must be a YAML mapping');
  });

  it('a scalar at the top level', () => {
    expectFileError('just a string\n', undefined, 'must be a YAML mapping');
  });

  it('a config path that is a directory is a ConfigError', () => {
    const err = configError(() => loadConfig({ config: dir }, {}));
    expect(err.message).toContain(dir);
  });
});

describe('parseConfigObject', () => {
  const file = '/etc/rdb-archiver/test.yaml';

  it('returns the validated object with transformed values', () => {
    const parsed = parseConfigObject(
      { source: { rdb: '/d' }, archive: { dir: '/a', file_mode: '0640', min_free: '1GiB' }, rules: [{ name: 'x', every: '15m', count: 3 }] },
      file,
    );
    expect(parsed.archive).toEqual({ dir: '/a', file_mode: 0o640, min_free: { kind: 'bytes', bytes: 1024 ** 3 } });
    expect(parsed.rules).toEqual([{ name: 'x', every: { kind: 'duration', ms: 900_000, text: '15m' }, count: 3 }]);
  });

  it('accepts an empty object (everything comes from flags)', () => {
    expect(parseConfigObject({}, file)).toEqual({});
  });

  it('errors carry the file and key path', () => {
    const err = configError(() => parseConfigObject({ rules: [{ name: 'a', count: 1 }, { name: 'b', count: 0 }] }, file));
    expect(err.file).toBe(file);
    expect(err.keyPath).toBe('rules[1].count');
    expect(err.message).toBe(`${file}: rules[1].count: must be an integer >= 1`);
  });

  it('without a file, the message starts with the key path', () => {
    const err = configError(() => parseConfigObject({ timezone: 'Nowhere/Land' }, undefined));
    expect(err.message).toMatch(/^timezone: is not a known IANA timezone/);
  });

  it('names several unknown keys at once', () => {
    const err = configError(() => parseConfigObject({ archive: { dir: '/a', foo: 1, bar: 2 } }, file));
    expect(err.keyPath).toBe('archive.foo');
    expect(err.message).toContain('"foo"');
    expect(err.message).toContain('"bar"');
  });
});
