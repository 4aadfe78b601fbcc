import { describe, expect, it } from 'vitest';
import { chooseLogFormat, createLog, formatEntry, jsonLine, stderrText, wantsColor } from '../../src/core/log.js';

const at = new Date(2026, 0, 2, 3, 4, 5, 6); // local time: the pretty clock is local

describe('chooseLogFormat', () => {
  it('an explicit --log-format / log.format wins', () => {
    expect(chooseLogFormat('json', { isTTY: true })).toBe('json');
    expect(chooseLogFormat('journal', { isTTY: false })).toBe('journal');
  });

  it('pretty on a terminal, journal only when stderr is the JOURNAL_STREAM, else json', () => {
    expect(chooseLogFormat(undefined, { isTTY: true })).toBe('pretty');
    expect(chooseLogFormat(undefined, { isTTY: false })).toBe('json');
    expect(chooseLogFormat(undefined, { isTTY: false, journalStream: '8:1234', stderrId: '8:1234' })).toBe('journal');
    // Inherited JOURNAL_STREAM but stderr redirected elsewhere (a hook, `2>file`): not the journal.
    expect(chooseLogFormat(undefined, { isTTY: false, journalStream: '8:1234', stderrId: '8:999' })).toBe('json');
    expect(chooseLogFormat(undefined, { isTTY: false, journalStream: '8:1234' })).toBe('json');
  });
});

describe('formatEntry', () => {
  const entry = { level: 'error', time: at, msg: 'run failed', fields: { instance: 'default', err: 'a b "c"', kind: 'no-source', n: 3, list: ['x'], none: undefined } };

  it('pretty: time, level word, message, key fields, values quoted only when needed', () => {
    expect(formatEntry('pretty', entry)).toBe('03:04:05.006 ERROR run failed instance=default err="a b \\"c\\"" kind=no-source n=3 list=["x"]');
    expect(formatEntry('pretty', { ...entry, level: 'info', fields: {} })).toBe('03:04:05.006 INFO  run failed');
  });

  it('journal: the syslog priority journald reads, no time (journald stamps it)', () => {
    expect(formatEntry('journal', entry)).toBe('<3>run failed instance=default err="a b \\"c\\"" kind=no-source n=3 list=["x"]');
    const priorities = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((level) => formatEntry('journal', { ...entry, level, fields: {} }).slice(0, 3));
    expect(priorities).toEqual(['<2>', '<3>', '<4>', '<6>', '<7>', '<7>']);
  });

  it('one entry is one line: newlines in the message or a value are escaped', () => {
    const text = formatEntry('journal', { ...entry, msg: 'two\nlines', fields: { line: 'a\nb' } });
    expect(text).toBe('<3>two\\nlines line="a\\nb"');
    expect(text).not.toContain('\n');
  });

  it('colour codes only when asked', () => {
    expect(formatEntry('pretty', entry, true)).toContain('\x1b[31mERROR');
    expect(formatEntry('pretty', entry, false)).not.toContain('\x1b');
    expect(formatEntry('journal', entry, true)).not.toContain('\x1b');
  });
});

describe('wantsColor', () => {
  it('on a terminal unless NO_COLOR is set or TERM is dumb', () => {
    expect(wantsColor({}, true)).toBe(true);
    expect(wantsColor({}, false)).toBe(false);
    expect(wantsColor({ NO_COLOR: '1' }, true)).toBe(false);
    expect(wantsColor({ NO_COLOR: '' }, true)).toBe(true); // no-color.org: set and not empty
    expect(wantsColor({ TERM: 'dumb' }, true)).toBe(false);
  });
});

describe('createLog (pretty/journal)', () => {
  it('merges child bindings with the fields: a key is written once, the entry\'s own value wins', () => {
    const lines: string[] = [];
    const log = createLog('info', { format: 'journal', write: (l) => lines.push(l), now: () => at }).child({ instance: 'a', hook: 'h' });
    log.warn({ hook: 'after_archive', hookPid: 7 }, 'stopping hook');
    log.debug({}, 'below the level');
    expect(lines).toEqual(['<4>stopping hook instance=a hook=after_archive hookPid=7']);
  });
});

describe('stderrText', () => {
  it('prefixes every line with <3> under journal only', () => {
    expect(stderrText('rdb-archiver: bad\n(help)\n', 'journal')).toBe('<3>rdb-archiver: bad\n<3>(help)\n');
    expect(stderrText('rdb-archiver: bad\n', 'pretty')).toBe('rdb-archiver: bad\n');
  });
});

describe('json lines (pino format, our own writer)', () => {
  const t = new Date(Date.UTC(2026, 11, 2, 15, 4, 5, 6));

  it('level number, ISO time and pid first, the fields in order, msg last; one parseable line', () => {
    const line = jsonLine('warn', t, 42, { instance: 'default', bytes: 10, nested: { a: [1, 'x'] } }, 'said "hi"\nthen');
    expect(line).toBe('{"level":40,"time":"2026-12-02T15:04:05.006Z","pid":42,"instance":"default","bytes":10,"nested":{"a":[1,"x"]},"msg":"said \\"hi\\"\\nthen"}');
    expect(line).not.toContain('\n');
    expect(JSON.parse(line)).toMatchObject({ level: 40, pid: 42, msg: 'said "hi"\nthen' });
  });

  it('a field named like a fixed key is renamed, never written twice; undefined fields are left out', () => {
    const line = jsonLine('info', t, 1, { pid: 7, msg: 'm', level: 'x', time: 0, gone: undefined }, 'run');
    const keys = [...line.matchAll(/"([a-z_]+)":/g)].map((m) => m[1]);
    expect(new Set(keys).size).toBe(keys.length);
    expect(JSON.parse(line)).toEqual({ level: 30, time: t.toISOString(), pid: 1, field_pid: 7, field_msg: 'm', field_level: 'x', field_time: 0, msg: 'run' });
  });

  it('errors as type, message and stack; bigints as text; cycles do not throw', () => {
    const err = Object.assign(new RangeError('too far'), { code: 'E2BIG' });
    const cyclic: Record<string, unknown> = { name: 'c' };
    cyclic.self = cyclic;
    const parsed = JSON.parse(jsonLine('error', t, 1, { err, big: 2n ** 70n, cyclic }, 'failed'));
    expect(parsed.err).toMatchObject({ type: 'RangeError', message: 'too far', code: 'E2BIG' });
    expect(parsed.err.stack).toContain('too far');
    expect(parsed.big).toBe((2n ** 70n).toString());
    expect(parsed.cyclic).toEqual({ name: 'c', self: '[Circular]' });
  });

  it('createLog json: child bindings merged, below-threshold levels dropped, lines to the writer', () => {
    const lines: string[] = [];
    const log = createLog('info', { format: 'json', write: (l) => lines.push(l), now: () => t });
    log.child({ instance: 'a' }).warn({ path: '/x' }, 'careful');
    log.debug({}, 'hidden');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toEqual({ level: 40, time: t.toISOString(), pid: process.pid, instance: 'a', path: '/x', msg: 'careful' });
  });
});
