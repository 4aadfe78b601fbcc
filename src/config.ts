/**
 * Config: YAML file + command-line overrides -> one validated, resolved
 * Config. Every problem becomes a ConfigError naming the file and key path.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { isValidTimeZone } from './timestamp.js';

export const DEFAULT_CONFIG_PATH = '/etc/rdb-archiver/config.yaml';
export const RULE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]*$/;

export type CalendarUnit = 'hour' | 'day' | 'week' | 'month' | 'year';
export type Every =
  | { kind: 'snapshot' }
  | { kind: 'calendar'; unit: CalendarUnit }
  | { kind: 'duration'; ms: number; text: string };

export interface Rule {
  name: string;
  every: Every;
  count: number;
}

/** Free space to leave in the archive filesystem, beyond the snapshot itself. */
export type MinFree = { kind: 'default' } | { kind: 'bytes'; bytes: number } | { kind: 'percent'; percent: number };

export interface InstanceConfig {
  name: string;
  sourceRdb: string;
  sourceNodes?: string;
  archiveDir: string;
  fileMode: number;
  dirMode: number;
  minFree: MinFree;
  statePath: string;
  timezone: string;
  rules: Rule[];
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** The file it was read from, or undefined when built from flags alone. */
  file?: string;
  logLevel: LogLevel;
  instances: InstanceConfig[];
}

export interface ConfigOverrides {
  config?: string;
  source?: string;
  nodes?: string;
  archive?: string;
  state?: string;
  logLevel?: string;
}

export const DEFAULT_RULES: Rule[] = [
  { name: 'hourly', every: { kind: 'calendar', unit: 'hour' }, count: 48 },
  { name: 'daily', every: { kind: 'calendar', unit: 'day' }, count: 30 },
];

// ---------------------------------------------------------------------------
// Schema. Strict objects: an unknown key is an error, never silently ignored.

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};
const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const CALENDAR_UNITS = new Set<string>(['hour', 'day', 'week', 'month', 'year']);

const pathString = z.string({ error: 'must be a path (string)' }).min(1, { error: 'must not be empty' });

const modeString = z
  .string({ error: 'must be a quoted octal mode such as "0600"' })
  .regex(/^0?[0-7]{3}$/, { error: 'must be a quoted octal mode such as "0600"' })
  .transform((text) => parseInt(text, 8));

const minFreeValue = z
  .union([z.number(), z.string()], { error: 'must be a size such as "1GiB" or a percentage such as "5%"' })
  .transform((value, ctx): MinFree => {
    if (typeof value === 'number') {
      if (Number.isInteger(value) && value >= 0) return { kind: 'bytes', bytes: value };
    } else {
      const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(value.trim());
      if (pct && Number(pct[1]) <= 100) return { kind: 'percent', percent: Number(pct[1]) };
      const size = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
      const unit = size ? SIZE_UNITS[size[2]!.toLowerCase()] : undefined;
      if (size && unit !== undefined) return { kind: 'bytes', bytes: Math.floor(Number(size[1]) * unit) };
    }
    ctx.addIssue({ code: 'custom', message: 'must be a size such as "1GiB" or a percentage such as "5%"' });
    return z.NEVER;
  });

const everyValue = z
  .string({ error: 'must be snapshot, hour, day, week, month, year or a duration such as "15m" or "6h"' })
  .transform((text, ctx): Every => {
    if (text === 'snapshot') return { kind: 'snapshot' };
    if (CALENDAR_UNITS.has(text)) return { kind: 'calendar', unit: text as CalendarUnit };
    const m = /^(\d+)(s|m|h|d|w)$/.exec(text);
    if (m && Number(m[1]) > 0) return { kind: 'duration', ms: Number(m[1]) * DURATION_UNITS[m[2]!]!, text };
    ctx.addIssue({
      code: 'custom',
      message: `"${text}" is not a period: use snapshot, hour, day, week, month, year or a duration such as "15m" or "6h"`,
    });
    return z.NEVER;
  });

const ruleSchema = z.strictObject({
  name: z
    .string({ error: 'must be a string' })
    .regex(RULE_NAME_PATTERN, { error: 'must match ^[a-z0-9][a-z0-9_-]*$ (it is a folder name inside archive.dir)' }),
  every: everyValue.optional(),
  count: z
    .number({ error: 'must be an integer >= 1' })
    .int({ error: 'must be an integer >= 1' })
    .min(1, { error: 'must be an integer >= 1' }),
});

const rulesSchema = z
  .array(ruleSchema, { error: 'must be a list of rules' })
  .min(1, { error: 'must list at least one rule (omit the key for the defaults)' })
  .superRefine((rules, ctx) => {
    const seen = new Set<string>();
    rules.forEach((rule, i) => {
      if (seen.has(rule.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name "${rule.name}"` });
      seen.add(rule.name);
    });
  });

const sourceSchema = z.strictObject({ rdb: pathString, nodes: pathString.optional() });
const archiveSchema = z.strictObject({
  dir: pathString,
  file_mode: modeString.optional(),
  dir_mode: modeString.optional(),
  min_free: minFreeValue.optional(),
});
const timezoneValue = z
  .string({ error: 'must be an IANA timezone name such as "UTC" or "Europe/Berlin"' })
  .refine(isValidTimeZone, { error: 'is not a known IANA timezone (e.g. "UTC", "Europe/Berlin")' });

const fileSchema = z.strictObject({
  source: sourceSchema.optional(),
  archive: archiveSchema.optional(),
  state: pathString.optional(),
  timezone: timezoneValue.optional(),
  rules: rulesSchema.optional(),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
        error: 'must be one of fatal, error, warn, info, debug, trace, silent',
      }).optional(),
    })
    .optional(),
});
type FileConfig = z.infer<typeof fileSchema>;

// ---------------------------------------------------------------------------

function keyPathOf(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

function issueToError(file: string | undefined, issue: z.core.$ZodIssue): ConfigError {
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys;
    const where = keyPathOf(issue.path);
    const first = keys[0]!;
    return new ConfigError(file, where ? `${where}.${first}` : first,
      `unknown key${keys.length > 1 ? `s ${keys.map((k) => `"${k}"`).join(', ')}` : ''} (not a setting of rdb-archiver)`);
  }
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    return new ConfigError(file, keyPathOf(issue.path), 'is required');
  }
  return new ConfigError(file, keyPathOf(issue.path), issue.message);
}

/** Replaces ${VAR} in every string value; an unset variable is an error at that key. */
function substituteEnv(value: unknown, file: string | undefined, path: PropertyKey[], env: NodeJS.ProcessEnv): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const v = env[name];
      if (v === undefined) throw new ConfigError(file, keyPathOf(path), `environment variable \${${name}} is not set`);
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, file, [...path, i], env));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, substituteEnv(v, file, [...path, k], env)]),
    );
  }
  return value;
}

function readYaml(file: string, env: NodeJS.ProcessEnv): unknown {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'config file not found' : code === 'EACCES' ? 'permission denied' : String(err);
    throw new ConfigError(file, undefined, `${why} (give --config FILE, or --source and --archive)`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ConfigError(file, undefined, 'is not valid UTF-8 text');
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw new ConfigError(file, undefined, `invalid YAML: ${problem.message.split('\n')[0]}`);
  let data: unknown;
  try {
    // A low alias budget turns "billion laughs" documents into an error, not an OOM.
    data = doc.toJS({ maxAliasCount: 50 });
  } catch (err) {
    throw new ConfigError(file, undefined, `invalid YAML: ${(err as Error).message}`);
  }
  if (data === null || data === undefined) throw new ConfigError(file, undefined, 'is empty: expected a mapping with at least source and archive');
  if (typeof data !== 'object' || Array.isArray(data)) throw new ConfigError(file, undefined, 'must be a YAML mapping (key: value), not a list or a scalar');
  return substituteEnv(data, file, [], env);
}

export function parseConfigObject(raw: unknown, file: string | undefined): FileConfig {
  const result = fileSchema.safeParse(raw);
  if (!result.success) {
    const errors = result.error.issues.map((issue) => issueToError(file, issue));
    const first = errors[0]!;
    if (errors.length === 1) throw first;
    throw new ConfigError(first.file, first.keyPath,
      `${first.detail}\n${errors.slice(1).map((e) => `  also: ${e.message}`).join('\n')}`);
  }
  return result.data;
}

function resolveAgainst(base: string, path: string): string {
  return isAbsolute(path) ? path : resolve(base, path);
}

/** Loads, validates and resolves the configuration for a command. */
export function loadConfig(overrides: ConfigOverrides, env: NodeJS.ProcessEnv = process.env): Config {
  const explicit = overrides.config ?? env.RDB_ARCHIVER_CONFIG;
  const flagsSuffice = overrides.source !== undefined && overrides.archive !== undefined;
  const file = explicit ?? (flagsSuffice ? undefined : DEFAULT_CONFIG_PATH);
  const raw: FileConfig = file ? parseConfigObject(readYaml(file, env), file) : {};
  const fileBase = file ? dirname(resolve(file)) : process.cwd();
  const cwd = process.cwd();

  const sourceRdb = overrides.source ? resolve(cwd, overrides.source) : raw.source ? resolveAgainst(fileBase, raw.source.rdb) : undefined;
  if (!sourceRdb) throw new ConfigError(file, 'source.rdb', 'is required (or pass --source)');
  const archiveDir = overrides.archive ? resolve(cwd, overrides.archive) : raw.archive ? resolveAgainst(fileBase, raw.archive.dir) : undefined;
  if (!archiveDir) throw new ConfigError(file, 'archive.dir', 'is required (or pass --archive)');
  const sourceNodes = overrides.nodes ? resolve(cwd, overrides.nodes) : raw.source?.nodes ? resolveAgainst(fileBase, raw.source.nodes) : undefined;
  const statePath = overrides.state ? resolve(cwd, overrides.state)
    : raw.state ? resolveAgainst(fileBase, raw.state)
    : join(archiveDir, '.rdb-archiver', 'state.json');

  const logLevel = overrides.logLevel ?? raw.log?.level ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError(undefined, '--log-level', `"${logLevel}" is not one of fatal, error, warn, info, debug, trace, silent`);
  }

  const rules: Rule[] = raw.rules
    ? raw.rules.map((r) => ({ name: r.name, count: r.count, every: r.every ?? { kind: 'snapshot' } }))
    : DEFAULT_RULES;

  return {
    file,
    logLevel: logLevel as LogLevel,
    instances: [
      {
        name: 'default',
        sourceRdb,
        sourceNodes,
        archiveDir,
        fileMode: raw.archive?.file_mode ?? 0o600,
        dirMode: raw.archive?.dir_mode ?? 0o700,
        minFree: raw.archive?.min_free ?? { kind: 'default' },
        statePath,
        timezone: raw.timezone ?? 'UTC',
        rules,
      },
    ],
  };
}

/** The folder that holds one rule's events. The name pattern keeps it inside archiveDir. */
export function ruleDir(instance: InstanceConfig, rule: Rule): string {
  return join(instance.archiveDir, rule.name);
}

export function describeEvery(every: Every): string {
  switch (every.kind) {
    case 'snapshot':
      return 'snapshot';
    case 'calendar':
      return every.unit;
    case 'duration':
      return every.text;
  }
}
