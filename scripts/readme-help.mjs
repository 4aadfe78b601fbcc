// `npm run readme:help`: rewrites README.md's help blocks from the built CLI
// (run `npm run build` first). Each command's block sits between
//   <!-- help:once -->  and  <!-- /help:once -->
// ("help:" alone for the program itself) and holds the end of its --help:
// the examples and the exit codes (src/commands/help.ts). test/integration/help.test.ts
// fails when a block differs from --help or a command has none.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli.js');
export const README = join(ROOT, 'README.md');

export function helpOf(path) {
  return execFileSync(process.execPath, [CLI, ...path, '--help'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '80' } });
}

/** Every command path of the CLI ([] for the program), found through the Commands: sections of --help; commander's own `help` left out. */
export function commandPaths(path = []) {
  const text = helpOf(path);
  const section = /^Commands:\n([\s\S]*?)(?:\n\n|(?![\s\S]))/m.exec(text)?.[1] ?? '';
  const names = [...section.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]).filter((n) => n !== 'help');
  return [path, ...names.flatMap((name) => commandPaths([...path, name]))];
}

/** The examples and exit codes at the end of a command's --help. */
export function epilogueOf(path) {
  const text = helpOf(path);
  const at = text.indexOf('\nExamples:\n');
  return at === -1 ? undefined : text.slice(at + 1).trimEnd();
}

const markers = (key) => [`<!-- help:${key} -->`, `<!-- /help:${key} -->`];

export function blockFor(epilogue) {
  return `\`\`\`text\n${epilogue}\n\`\`\``;
}

/** README's text between a command's markers, or undefined without markers. */
export function readmeBlock(readme, key) {
  const [open, close] = markers(key);
  const start = readme.indexOf(open);
  const end = readme.indexOf(close);
  if (start === -1 || end === -1 || end < start) return undefined;
  return readme.slice(start + open.length, end).trim();
}

function main() {
  let readme = readFileSync(README, 'utf8');
  const missing = [];
  for (const path of commandPaths()) {
    const key = path.join(' ');
    const epilogue = epilogueOf(path);
    if (epilogue === undefined) throw new Error(`rdb-archiver ${key} --help has no examples: add it to COMMAND_HELP in src/commands/help.ts`);
    const [open, close] = markers(key);
    if (readmeBlock(readme, key) === undefined) {
      missing.push(key);
      continue;
    }
    const start = readme.indexOf(open) + open.length;
    readme = `${readme.slice(0, start)}\n${blockFor(epilogue)}\n${readme.slice(readme.indexOf(close))}`;
  }
  writeFileSync(README, readme);
  if (missing.length > 0) {
    console.error(`readme:help: no markers for ${missing.map((k) => `"${k}"`).join(', ')}: add <!-- help:NAME --> and <!-- /help:NAME --> lines to the command's README section, then run this again`);
    process.exit(1);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
