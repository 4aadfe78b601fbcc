/**
 * --help of every command, through the real CLI: examples, exit codes and the
 * global options, and README.md showing the same text (src/commands/help.ts,
 * scripts/readme-help.mjs).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EXIT_CODE_MEANINGS, ExitCode } from '../../src/core/errors.js';
// @ts-expect-error: a plain .mjs script without types
import { blockFor, commandPaths, epilogueOf, helpOf, README, readmeBlock } from '../../scripts/readme-help.mjs';

const paths = (commandPaths as () => string[][])();
const readme = readFileSync(README as string, 'utf8');

describe('--help', () => {
  it('finds every command, including the ones added later', () => {
    const names = paths.map((p) => p.join(' '));
    for (const name of ['', 'once', 'prune', 'list', 'verify', 'restore', 'daemon', 'status', 'check']) expect(names).toContain(name);
  });

  describe.each(paths.map((p) => [p.join(' ') || '(the program)', p] as const))('%s', (_name, path) => {
    const help = (helpOf as (p: string[]) => string)(path);
    const epilogue = (epilogueOf as (p: string[]) => string | undefined)(path);

    it('ends with one or two examples of this command and its exit codes', () => {
      expect(epilogue, `add "${path.join(' ')}" to COMMAND_HELP in src/commands/help.ts`).toBeDefined();
      const examples = [...epilogue!.matchAll(/^ {2}\$ (.*)$/gm)].map((m) => m[1]!);
      expect(examples.length).toBeGreaterThanOrEqual(1);
      expect(examples.length).toBeLessThanOrEqual(2);
      for (const example of examples) expect(example.startsWith(['rdb-archiver', ...path].join(' '))).toBe(true);
      const codes = [...epilogue!.slice(epilogue!.indexOf('Exit codes:')).matchAll(/^ {2}(\d+) +(.+)$/gm)].map((m) => Number(m[1]));
      expect(codes.length).toBeGreaterThanOrEqual(2);
      expect(codes).toContain(0);
      expect([...codes].sort((a, b) => a - b)).toEqual(codes);
    });

    if (path.length > 0) it('lists the global options under the command\'s own', () => {
      const global = help.slice(help.indexOf('Global Options:'));
      expect(help).toContain('Global Options:');
      for (const flag of ['-c, --config <file>', '--instance <name>', '--log-level <level>', '--log-format <format>']) expect(global).toContain(flag);
    });

    it('README.md shows the same examples and exit codes', () => {
      const key = path.join(' ');
      const block = (readmeBlock as (r: string, k: string) => string | undefined)(readme, key);
      expect(block, `README.md has no <!-- help:${key} --> … <!-- /help:${key} --> block: add the markers to the command's section and run npm run readme:help`).toBeDefined();
      expect(block, 'README.md differs from --help: run npm run build && npm run readme:help').toBe((blockFor as (e: string) => string)(epilogue!));
    });
  });
});

describe('exit codes', () => {
  it('the shared meanings (src/core/errors.ts) cover every ExitCode, and README\'s table documents each one', () => {
    const table = readme.slice(readme.indexOf('## Exit codes'));
    for (const code of Object.values(ExitCode)) {
      expect(EXIT_CODE_MEANINGS[code], `meaning of ${code}`).toBeTruthy();
      expect(table, `README "Exit codes" row for ${code}`).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
    }
  });

  it('a usage error still exits 2 and names the problem once', async () => {
    const { runCli } = await import('../helpers/cli.js');
    const r = await runCli(['once', '--no-such-flag']);
    expect(r.code).toBe(2);
    expect(r.stderr.split("unknown option '--no-such-flag'").length - 1).toBe(1);
  });
});
