/**
 * Config: YAML file + command-line overrides -> one validated, resolved
 * Config. Every problem becomes a ConfigError naming the file and key path.
 */
import { closeSync, constants as fsConstants, existsSync, fstatSync, openSync, readFileSync, readSync, statSync, type Stats } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import * as z from 'zod/mini';
import { COMPRESSION_ERROR, parseCompression, parseRecipientsFile, recipientProblem, type Compression, type Encryption } from '../codecs/encoding.js';
import { ConfigError } from './errors.js';
import { LOG_FORMATS, type LogFormat } from './log.js';
import { expandCluster } from './shards.js';
import { isValidTimeZone } from './timestamp.js';
import { effectiveUid, untrustedPathReason } from './trust.js';

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

export interface MonitorConfig {
  /** `check` warns when the newest archived snapshot is older than this. */
  warnAgeMs: number;
  /** `check` is critical when the newest archived snapshot is older than this. */
  critAgeMs: number;
  /**
   * Where a failed run records itself when its state folder cannot take the
   * record (failure-record.ts); undefined: /var/tmp/rdb-archiver-<uid>.
   */
  failureDir?: string;
  /**
   * `check` warns when the recovery point lag (seconds from the source's mtime
   * to its event being durable; or, while the source is not archived yet, to
   * now) exceeds this; undefined: not checked.
   */
  maxLagMs?: number;
  /** `check` warns when an event has waited this long for its upload to a remote. */
  offsiteWarnLagMs: number;
  /** `check` is critical when an event has waited this long for its upload to a remote. */
  offsiteCritLagMs: number;
}

/** An off-site repository (see src/targets/s3.ts). Credentials are never part of it: the AWS chain supplies them. */
export interface RemoteConfig {
  name: string;
  type: 's3';
  bucket: string;
  /** Key prefix, '' or ending in '/'. */
  prefix: string;
  endpoint?: string;
  region?: string;
  /** A named profile of the shared AWS config/credentials files. */
  profile?: string;
  forcePathStyle: boolean;
  storageClass?: string;
  sse?: { type: 'AES256' | 'aws:kms'; kmsKeyId?: string };
  partSize: number;
  concurrency: number;
  /** One upload's limit (and one download's, one listing's). */
  timeoutMs: number;
  /** How long an object without its manifest, or an unfinished multipart upload, is left alone before it is cleaned up. */
  incompleteGraceMs: number;
  rules: Rule[];
  /** Applied to the event's files before upload (src/codecs/); { algorithm: 'none' } by default. */
  compression: Compression;
  /** age encryption to these recipients before upload; undefined: stored unencrypted. */
  encryption?: Encryption;
}

export interface HooksConfig {
  /** argv arrays, run without a shell. */
  afterArchive?: string[];
  afterPrune?: string[];
  onFailure?: string[];
  timeoutMs: number;
}

/** `verify:` scheduled re-reads of archived events (src/pipeline/scheduled-verify.ts). */
export interface VerifyConfig {
  everyMs: number;
  /** Which events each scheduled run re-reads: the newest, all, or the N most recently archived. */
  sample: 'newest' | 'all' | number;
}

/** `drill:` restore drills (src/ops/drill.ts): a throwaway server loads an archived event. */
export interface DrillConfig {
  /** How often `once`/the daemon run a drill of the newest event; undefined: only `rdb-archiver drill`. */
  everyMs?: number;
  /** redis-server or valkey-server binary; undefined: redis-server, else valkey-server, from PATH. */
  server?: string;
  /** Parent folder of the drill's temp folder (it holds a copy of the event); undefined: the system temp folder. */
  dir?: string;
  /** How long the server may take to load the event. */
  timeoutMs: number;
}

export const DEFAULT_DRILL_TIMEOUT_MS = 10 * 60_000;

/** source.redis: the snapshot comes from a running server (src/sources/). Never holds the password itself. */
export interface RedisSourceConfig {
  /** The URL without credentials, for logs and status: redis://host:port or rediss://host:port. */
  url: string;
  host: string;
  port: number;
  username?: string;
  /** Read at run time, never stored in the config object. */
  passwordFile?: string;
  /** TLS (rediss://): file paths; read at run time. */
  tls?: { ca?: string; cert?: string; key?: string; servername?: string };
  mode: 'replicate' | 'bgsave';
  /** The whole pull (connect, fork wait, transfer) or BGSAVE wait must finish within this. */
  timeoutMs: number;
  cluster: boolean;
  /** Pull again although INFO says nothing changed, once this long has passed since the last archived snapshot. */
  minIntervalMs?: number;
  /** Cluster: at most this many shards pulled at a time. */
  maxParallel: number;
}

/** A shard of a cluster instance (src/core/shards.ts): what it archives and where it comes from. */
export interface ShardConfig {
  /** The configured instance's name. */
  cluster: string;
  /** The folder name, from the slot ranges ("slots-0-5460"). */
  name: string;
  /** "0-5460,10923-16383"; "" when not known (a retired shard's hashed long name). */
  slots: string;
  /** Not in the last discovered topology (resharded away): kept and listed, never pulled, not judged by age. */
  retired: boolean;
  /** The master the last discovery announced for these slots. */
  master?: { id: string; host: string; port: number; health: string };
  /** Why this run cannot pull the shard (discovery failed): the shard's run fails with it. */
  failure?: Error;
}

export const DEFAULT_REDIS_TIMEOUT_MS = 10 * 60_000;

export interface InstanceConfig {
  name: string;
  /** The local dump.rdb; for source.redis mode replicate, the server's URL (a label, never a file to open). */
  sourceRdb: string;
  /** source.redis: a network source (replicate) or a BGSAVE trigger for the local sourceRdb (bgsave). */
  redis?: RedisSourceConfig;
  /** One shard of a source.redis cluster instance (src/core/shards.ts); absent for every other instance. */
  shard?: ShardConfig;
  /** `state:` (or --state) was given: a cluster's shards keep their state files beside it, not in their folders. */
  explicitState?: boolean;
  sourceNodes?: string;
  archiveDir: string;
  /** archive.create: make a missing archive root (mkdir -p) instead of refusing with exit 69. */
  createArchive: boolean;
  /**
   * With several instances under one top-level archive.dir: that shared
   * folder. It must exist (it is the mount point); the instance's own
   * <dir>/<name> folder inside it is made when missing.
   */
  archiveParent?: string;
  /** --allow-owner-mismatch: write into an archive root owned by another user. */
  allowOwnerMismatch: boolean;
  fileMode: number;
  dirMode: number;
  minFree: MinFree;
  /** archive.max_rate: bytes per second the copy reads and writes at most (copy-methods.ts); unlimited when absent. */
  maxRate?: number;
  statePath: string;
  timezone: string;
  rules: Rule[];
  monitor: MonitorConfig;
  hooks: HooksConfig;
  /** Off-site repositories, in config order; empty when none. */
  remotes: RemoteConfig[];
  /** Scheduled verification; undefined: off (only `rdb-archiver verify`). */
  verify?: VerifyConfig;
  /** Drill settings; absent in an instance built by hand (tests): the defaults apply. */
  drill?: DrillConfig;
  /**
   * Built from --archive alone (no config, no source: a rescue host). Only the
   * read-only commands (list, verify, restore, drill) accept such an instance;
   * its rule folders are discovered (archive-index.ts).
   */
  archiveOnly?: boolean;
  /**
   * How a snapshot is validated (src/rdb/validate.ts): 'full' (default)
   * walks every opcode and value as well as checking the header and the
   * CRC-64; 'crc' checks only those. Absent (an instance built by hand): 'full'.
   */
  validation?: 'full' | 'crc';
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** The file it was read from, or undefined when built from flags alone. */
  file?: string;
  logLevel: LogLevel;
  /** log.format / --log-format; undefined: chosen from where stderr goes (src/core/log.ts chooseLogFormat). */
  logFormat?: LogFormat;
  /** croner expression for `daemon` (5 or 6 fields; 6 = with seconds). */
  schedule: string;
  /** How long `daemon` lets a running job finish after SIGTERM/SIGINT. */
  shutdownTimeoutMs: number;
  /** `daemon` also watches each source's folder (inotify) and runs a cycle soon after a save; the schedule stays as the fallback. */
  watch: boolean;
  /** How long the watch waits after the last event before it starts a cycle (events in between collapse). */
  watchDebounceMs: number;
  /** The top-level `timezone` (default UTC): the daemon reads its schedule in it when instances' timezones differ. */
  timezone: string;
  /** node_exporter textfile-collector file, rewritten atomically after every run. */
  metricsTextfile?: string;
  /**
   * The instances the commands work on. A cluster instance (source.redis
   * cluster: true) stands here as its shards, as the archive knows them
   * (src/core/shards.ts expandCluster).
   */
  instances: InstanceConfig[];
  /** The selected instances as configured (a cluster is one entry): what `once` and the daemon run. */
  configured: InstanceConfig[];
  /** --instance NAME:SHARD: only that shard of the cluster NAME. */
  onlyShard?: string;
}

export interface ConfigOverrides {
  config?: string;
  source?: string;
  nodes?: string;
  archive?: string;
  state?: string;
  logLevel?: string;
  logFormat?: string;
  /** Restrict to one named instance. */
  instance?: string;
  /** Let a writing run proceed although the archive root belongs to another user. */
  allowOwnerMismatch?: boolean;
  /**
   * The command only reads the archive (list, verify, restore, drill): with
   * --archive and neither a config file nor --source, it works on the archive
   * alone (a rescue host) instead of failing for want of a source.
   */
  archiveOnly?: boolean;
}

export const DEFAULT_SCHEDULE = '* * * * *';
export const DEFAULT_MONITOR: MonitorConfig = { warnAgeMs: 2 * 3_600_000, critAgeMs: 6 * 3_600_000, offsiteWarnLagMs: 3_600_000, offsiteCritLagMs: 6 * 3_600_000 };
export const DEFAULT_HOOK_TIMEOUT_MS = 5 * 60_000;
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;
export const DEFAULT_WATCH_DEBOUNCE_MS = 500;
/** A longer debounce would defeat the point of watching: the schedule covers anything slower. */
export const MAX_WATCH_DEBOUNCE_MS = 60_000;

/** Parses a short duration for watch_debounce: "500ms", "2s", "0ms"; undefined when not one (or over a minute). */
export function parseShortDuration(text: string): number | undefined {
  const m = /^(\d+)(ms|s)$/.exec(text.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  return ms <= MAX_WATCH_DEBOUNCE_MS ? ms : undefined;
}
export const DEFAULT_INSTANCE_NAME = 'default';

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

// zod/mini: the tree-shakable form of zod. The classic API costs ~40 ms of
// start-up on every cron run (see BENCHMARKS.md); this one about nothing.

/** A string turned into a value by `parse`, which returns an error message instead when it cannot. */
function parsedString<T>(typeError: string, parse: (text: string) => T | { error: string }) {
  return z.pipe(
    z.string({ error: typeError }),
    z.transform((text: string, ctx) => {
      const value = parse(text);
      if (value !== null && typeof value === 'object' && 'error' in value) {
        ctx.issues.push({ code: 'custom', message: value.error, input: text });
        return z.NEVER;
      }
      return value as T;
    }),
  );
}

/** A list whose entries' `name` must be unique. */
function uniqueNames<T extends { name: string }>(what: string) {
  return z.superRefine((list: T[], ctx) => {
    const seen = new Set<string>();
    list.forEach((entry, i) => {
      if (seen.has(entry.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate ${what} name "${entry.name}"`, input: entry.name });
      seen.add(entry.name);
    });
  });
}

const pathString = z.string({ error: 'must be a path (string)' }).check(z.minLength(1, { error: 'must not be empty' }));

const MODE_ERROR = 'must be a quoted octal mode such as "0600"';
const modeString = parsedString(MODE_ERROR, (text) => (/^0?[0-7]{3}$/.test(text) ? parseInt(text, 8) : { error: MODE_ERROR }));

const MIN_FREE_ERROR = 'must be a size such as "1GiB" or a percentage such as "5%"';
function parseMinFree(value: number | string): MinFree | { error: string } {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return { kind: 'bytes', bytes: value };
  } else {
    const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(value.trim());
    if (pct && Number(pct[1]) <= 100) return { kind: 'percent', percent: Number(pct[1]) };
    const size = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
    const unit = size ? SIZE_UNITS[size[2]!.toLowerCase()] : undefined;
    if (size && unit !== undefined) return { kind: 'bytes', bytes: Math.floor(Number(size[1]) * unit) };
  }
  return { error: MIN_FREE_ERROR };
}
const minFreeValue = z.pipe(
  z.union([z.number(), z.string()], { error: MIN_FREE_ERROR }),
  z.transform((value: number | string, ctx): MinFree => {
    const parsed = parseMinFree(value);
    if ('error' in parsed) {
      ctx.issues.push({ code: 'custom', message: parsed.error, input: value });
      return z.NEVER;
    }
    return parsed;
  }),
);

/** Parses "90s", "15m", "6h", "2d", "1w"; undefined when it is not a positive duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)(s|m|h|d|w)$/.exec(text.trim());
  return m && Number(m[1]) > 0 ? Number(m[1]) * DURATION_UNITS[m[2]!]! : undefined;
}

const durationValue = parsedString('must be a duration such as "90s", "15m" or "6h"', (text) =>
  parseDuration(text) ?? { error: `"${text}" is not a duration: use a number and s, m, h, d or w, such as "90s", "15m" or "6h"` });

const everyValue = parsedString<Every>('must be snapshot, hour, day, week, month, year or a duration such as "15m" or "6h"', (text) => {
  if (text === 'snapshot') return { kind: 'snapshot' };
  if (CALENDAR_UNITS.has(text)) return { kind: 'calendar', unit: text as CalendarUnit };
  const ms = parseDuration(text);
  if (ms !== undefined) return { kind: 'duration', ms, text };
  return { error: `"${text}" is not a period: use snapshot, hour, day, week, month, year or a duration such as "15m" or "6h"` };
});

const COUNT_ERROR = 'must be an integer >= 1';
const ruleSchema = z.strictObject({
  name: z
    .string({ error: 'must be a string' })
    .check(z.regex(RULE_NAME_PATTERN, { error: 'must match ^[a-z0-9][a-z0-9_-]*$ (it is a folder name inside archive.dir)' })),
  every: z.optional(everyValue),
  count: z.int({ error: COUNT_ERROR }).check(z.minimum(1, { error: COUNT_ERROR })),
});

const rulesSchema = z
  .array(ruleSchema, { error: 'must be a list of rules' })
  .check(z.minLength(1, { error: 'must list at least one rule (omit the key for the defaults)' }), uniqueNames('rule'));

const REDIS_URL_ERROR = 'must be a URL such as "redis://backup@10.0.0.5:6379" or "rediss://..." (TLS), without a password in it (use password_file)';
const PARALLEL_ERROR = 'must be an integer from 1 to 16';
const redisSchema = z.strictObject({
  url: z.string({ error: REDIS_URL_ERROR }),
  password_file: z.optional(pathString),
  tls: z.optional(z.strictObject({
    ca: z.optional(pathString),
    cert: z.optional(pathString),
    key: z.optional(pathString),
    servername: z.optional(z.string({ error: 'must be a host name' }).check(z.minLength(1))),
  })),
  mode: z.optional(z.enum(['replicate', 'bgsave'], { error: 'must be replicate or bgsave' })),
  timeout: z.optional(durationValue),
  cluster: z.optional(z.boolean({ error: 'must be true or false' })),
  min_interval: z.optional(durationValue),
  max_parallel: z.optional(z.int({ error: PARALLEL_ERROR }).check(z.minimum(1, { error: PARALLEL_ERROR }), z.maximum(16, { error: PARALLEL_ERROR }))),
});
type RedisInput = z.output<typeof redisSchema>;
const sourceSchema = z.strictObject({ rdb: z.optional(pathString), nodes: z.optional(pathString), redis: z.optional(redisSchema) });

/** Parses source.redis.url; throws a ConfigError at that key. A password in the URL is refused: config files get shown and copied. */
function parseRedisUrl(text: string, file: string | undefined, keyPath: string): { host: string; port: number; tls: boolean; username?: string; url: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(file, keyPath, REDIS_URL_ERROR);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new ConfigError(file, keyPath, REDIS_URL_ERROR);
  if (url.password !== '') throw new ConfigError(file, keyPath, 'must not carry a password (it would show wherever the config does): put it in source.redis.password_file');
  if (url.hostname === '') throw new ConfigError(file, keyPath, 'has no host');
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
    throw new ConfigError(file, keyPath, 'must be only scheme://[user@]host[:port]: a snapshot holds every database, so no database number or options');
  }
  const port = url.port === '' ? 6379 : Number(url.port);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const username = url.username === '' ? undefined : decodeURIComponent(url.username);
  return { host, port, tls: url.protocol === 'rediss:', ...(username ? { username } : {}), url: `${url.protocol}//${url.hostname}:${port}` };
}

function resolveRedis(r: RedisInput, base: string, file: string | undefined, keyPath: string): RedisSourceConfig {
  const parsed = parseRedisUrl(r.url, file, `${keyPath}.url`);
  if (r.tls && !parsed.tls) throw new ConfigError(file, `${keyPath}.tls`, 'needs a rediss:// url (TLS)');
  if ((r.tls?.cert === undefined) !== (r.tls?.key === undefined)) throw new ConfigError(file, `${keyPath}.tls`, 'cert and key go together (a client certificate needs its key)');
  const tlsFiles = r.tls && {
    ...(r.tls.ca ? { ca: resolveAgainst(base, r.tls.ca) } : {}),
    ...(r.tls.cert ? { cert: resolveAgainst(base, r.tls.cert) } : {}),
    ...(r.tls.key ? { key: resolveAgainst(base, r.tls.key) } : {}),
    ...(r.tls.servername ? { servername: r.tls.servername } : {}),
  };
  return {
    url: parsed.url,
    host: parsed.host,
    port: parsed.port,
    ...(parsed.username ? { username: parsed.username } : {}),
    ...(r.password_file ? { passwordFile: resolveAgainst(base, r.password_file) } : {}),
    ...(parsed.tls ? { tls: tlsFiles ?? {} } : {}),
    mode: r.mode ?? 'replicate',
    timeoutMs: r.timeout ?? DEFAULT_REDIS_TIMEOUT_MS,
    cluster: r.cluster ?? false,
    ...(r.min_interval ? { minIntervalMs: r.min_interval } : {}),
    maxParallel: r.max_parallel ?? 1,
  };
}

/** archive.max_rate below this is a typo (a byte count meant as MiB), not a plan: 1 MiB/s copies 1 GiB in 17 minutes. */
export const MIN_MAX_RATE = 1024 ** 2;
const MAX_RATE_ERROR = 'must be a rate in bytes per second of at least 1MiB, such as "100MiB" (per second)';
const maxRateValue = z.pipe(
  z.union([z.number(), z.string()], { error: MAX_RATE_ERROR }),
  z.transform((value: number | string, ctx): number => {
    const bytes = parseSize(typeof value === 'string' ? value.replace(/\s*\/\s*s$/i, '') : value);
    if (bytes === undefined || bytes < MIN_MAX_RATE) {
      ctx.issues.push({ code: 'custom', message: MAX_RATE_ERROR, input: value });
      return z.NEVER;
    }
    return bytes;
  }),
);

const archiveSchema = z.strictObject({
  dir: z.optional(pathString),
  create: z.optional(z.boolean({ error: 'must be true or false' })),
  file_mode: z.optional(modeString),
  dir_mode: z.optional(modeString),
  min_free: z.optional(minFreeValue),
  max_rate: z.optional(maxRateValue),
});
const timezoneValue = z
  .string({ error: 'must be an IANA timezone name such as "UTC" or "Europe/Berlin"' })
  .check(z.refine(isValidTimeZone, { error: 'is not a known IANA timezone (e.g. "UTC", "Europe/Berlin")' }));

const argvValue = z
  .array(z.string({ error: 'must be a list of strings (an argv array)' }), { error: 'must be a command as a list of strings, e.g. ["/usr/local/bin/ship", "--to", "s3://bucket"]' })
  .check(z.minLength(1, { error: 'must not be empty' }));

const monitorSchema = z.strictObject({
  warn_age: z.optional(durationValue),
  crit_age: z.optional(durationValue),
  failure_dir: z.optional(pathString),
  offsite_warn_lag: z.optional(durationValue),
  offsite_crit_lag: z.optional(durationValue),
  max_lag: z.optional(durationValue),
});

// --- remotes (off-site repositories) ----------------------------------------

export const MIN_PART_SIZE = 5 * 1024 ** 2;
export const MAX_PART_SIZE = 5 * 1024 ** 3;
/**
 * 16 MiB parts, 4 in flight: 64 MiB of part buffers. Measured against 64 MiB
 * parts (push of 1 GiB to the loopback s3rver, interleaved with aws s3 cp): peak RSS 320 ->
 * 135 MiB, CPU time (user + sys) 7.2 -> 5.3 s, and the first bytes leave sooner.
 * Objects above 156 GiB get larger parts (src/targets/s3.ts partSizeFor).
 */
export const DEFAULT_PART_SIZE = 16 * 1024 ** 2;
export const DEFAULT_REMOTE_CONCURRENCY = 4;
export const DEFAULT_REMOTE_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_INCOMPLETE_GRACE_MS = 24 * 3_600_000;

/** "64MiB", "5MB", 1048576 -> bytes; undefined when it is not a size. */
export function parseSize(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const size = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = size ? SIZE_UNITS[size[2]!.toLowerCase()] : undefined;
  return size && unit !== undefined ? Math.floor(Number(size[1]) * unit) : undefined;
}

const PART_SIZE_ERROR = 'must be a size between 5MiB and 5GiB, such as "16MiB" (S3 multipart limits)';
const partSizeValue = z.pipe(
  z.union([z.number(), z.string()], { error: PART_SIZE_ERROR }),
  z.transform((value: number | string, ctx): number => {
    const bytes = parseSize(value);
    if (bytes === undefined || bytes < MIN_PART_SIZE || bytes > MAX_PART_SIZE) {
      ctx.issues.push({ code: 'custom', message: PART_SIZE_ERROR, input: value });
      return z.NEVER;
    }
    return bytes;
  }),
);

/** S3's rules for bucket names (DNS-compatible), which every compatible server accepts. */
const BUCKET_PATTERN = /^(?!\d+\.\d+\.\d+\.\d+$)(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX_ERROR = 'must be a key prefix such as "prod/cache-01/": no leading "/", no "//", no "." or ".." segment';
const prefixValue = z.string({ error: PREFIX_ERROR }).check(z.refine((p: string) =>
  p === '' || (!p.startsWith('/') && !p.includes('//') && !p.split('/').some((seg) => seg === '.' || seg === '..') && !/[\u0000-\u001f\u007f]/.test(p)), { error: PREFIX_ERROR }));
const CONCURRENCY_ERROR = 'must be an integer from 1 to 64';
const remoteSchema = z.strictObject({
  name: z.string({ error: 'must be a string' }).check(z.regex(RULE_NAME_PATTERN, { error: 'must match ^[a-z0-9][a-z0-9_-]*$' })),
  type: z.literal('s3', { error: 'must be "s3" (the only remote type)' }),
  bucket: z.string({ error: 'must be a bucket name' }).check(z.regex(BUCKET_PATTERN, { error: 'is not a valid bucket name: 3-63 characters of a-z, 0-9, "." and "-", starting and ending with a letter or digit' })),
  prefix: z.optional(prefixValue),
  endpoint: z.optional(z.string({ error: 'must be a URL' }).check(z.refine((u: string) => {
    try {
      const url = new URL(u);
      return (url.protocol === 'https:' || url.protocol === 'http:') && url.username === '' && url.password === '';
    } catch {
      return false;
    }
  }, { error: 'must be an http(s) URL such as "https://s3.eu-central-1.amazonaws.com", without credentials in it' }))),
  region: z.optional(z.string({ error: 'must be a region name' }).check(z.regex(/^[a-z0-9-]+$/, { error: 'must be a region name such as "eu-central-1"' }))),
  profile: z.optional(z.string({ error: 'must be a profile name' }).check(z.minLength(1))),
  force_path_style: z.optional(z.boolean({ error: 'must be true or false' })),
  storage_class: z.optional(z.string({ error: 'must be a storage class such as "STANDARD_IA"' }).check(z.regex(/^[A-Z_]+$/, { error: 'must be a storage class such as "STANDARD_IA"' }))),
  sse: z.optional(z.strictObject({
    type: z.enum(['AES256', 'aws:kms'], { error: 'must be AES256 or aws:kms' }),
    kms_key_id: z.optional(z.string({ error: 'must be a KMS key id, ARN or alias' }).check(z.minLength(1))),
  })),
  part_size: z.optional(partSizeValue),
  concurrency: z.optional(z.int({ error: CONCURRENCY_ERROR }).check(z.minimum(1, { error: CONCURRENCY_ERROR }), z.maximum(64, { error: CONCURRENCY_ERROR }))),
  timeout: z.optional(durationValue),
  incomplete_grace: z.optional(durationValue),
  rules: z.optional(rulesSchema),
  compression: z.optional(parsedString<Compression>(COMPRESSION_ERROR, parseCompression)),
  encryption: z.optional(z.strictObject({
    type: z.literal('age', { error: 'must be "age" (the only encryption type)' }),
    recipients: z.optional(z.array(z.string({ error: 'must be an age recipient ("age1…")' }), { error: 'must be a list of age recipients ("age1…")' })),
    recipients_file: z.optional(pathString),
  }, { error: 'must be a mapping such as {type: age, recipients: ["age1…"]}' })),
});
const remotesSchema = z.array(remoteSchema, { error: 'must be a list of remotes' }).check(uniqueNames('remote'));
type RemoteInput = z.output<typeof remoteSchema>;

/** A recipients file larger than this is not one (a recipient is 62 characters). */
const MAX_RECIPIENTS_FILE_BYTES = 64 * 1024;

/**
 * The remote's age recipients, checked one by one: a typo in a public key
 * would otherwise make every upload unreadable, or fail only at upload time.
 */
function resolveEncryption(e: NonNullable<RemoteInput['encryption']>, file: string | undefined, base: string, keyPath: string): Encryption {
  const key = `${keyPath}.encryption`;
  if (e.recipients !== undefined && e.recipients_file !== undefined) throw new ConfigError(file, `${key}.recipients_file`, 'give recipients or recipients_file, not both');
  if (e.recipients !== undefined) {
    if (e.recipients.length === 0) throw new ConfigError(file, `${key}.recipients`, 'is empty: list at least one age recipient ("age1…"); without one nobody could decrypt the uploads');
    e.recipients.forEach((r, i) => {
      const problem = recipientProblem(r.trim());
      if (problem) throw new ConfigError(file, `${key}.recipients[${i}]`, problem);
    });
    return { type: 'age', recipients: e.recipients.map((r) => r.trim()), source: `${key}.recipients` };
  }
  if (e.recipients_file === undefined) throw new ConfigError(file, `${key}.recipients`, 'is required: list age recipients ("age1…"), or give recipients_file');
  const path = resolveAgainst(base, e.recipients_file);
  let text: string;
  try {
    // Who can write this file chooses who can read the backups: the same trust rule as the config file.
    const untrusted = untrustedPathReason(path, 'the recipients file', effectiveUid(), statSync(path));
    if (untrusted) throw new ConfigError(file, `${key}.recipients_file`, `refused: ${untrusted}`);
    const bytes = readFileSync(path);
    if (bytes.length > MAX_RECIPIENTS_FILE_BYTES) throw new ConfigError(file, `${key}.recipients_file`, `${path} is ${bytes.length} bytes: not a recipients file`);
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(file, `${key}.recipients_file`, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const listed = parseRecipientsFile(text);
  if (listed.length === 0) throw new ConfigError(file, `${key}.recipients_file`, `${path} lists no recipients: add at least one age recipient ("age1…"), one per line`);
  for (const { line, recipient } of listed) {
    const problem = recipientProblem(recipient);
    if (problem) throw new ConfigError(file, `${key}.recipients_file`, `${path} line ${line}: ${problem}`);
  }
  return { type: 'age', recipients: listed.map((l) => l.recipient), source: path };
}

function resolveRemote(r: RemoteInput, instanceName: string, rules: Rule[], file: string | undefined, base: string, keyPath: string): RemoteConfig {
  if (r.sse?.kms_key_id !== undefined && r.sse.type !== 'aws:kms') throw new ConfigError(file, `${keyPath}.sse.kms_key_id`, 'only applies to sse type aws:kms');
  let prefix = r.prefix ?? `${sanitizedHostname()}/${instanceName}/`;
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  return {
    name: r.name,
    type: 's3',
    bucket: r.bucket,
    prefix,
    endpoint: r.endpoint,
    region: r.region,
    profile: r.profile,
    forcePathStyle: r.force_path_style ?? false,
    storageClass: r.storage_class,
    sse: r.sse && { type: r.sse.type, kmsKeyId: r.sse.kms_key_id },
    partSize: r.part_size ?? DEFAULT_PART_SIZE,
    concurrency: r.concurrency ?? DEFAULT_REMOTE_CONCURRENCY,
    timeoutMs: r.timeout ?? DEFAULT_REMOTE_TIMEOUT_MS,
    incompleteGraceMs: r.incomplete_grace ?? DEFAULT_INCOMPLETE_GRACE_MS,
    rules: r.rules ? r.rules.map((x) => ({ name: x.name, count: x.count, every: x.every ?? { kind: 'snapshot' } })) : rules,
    compression: r.compression ?? { algorithm: 'none' },
    ...(r.encryption ? { encryption: resolveEncryption(r.encryption, file, base, keyPath) } : {}),
  };
}

/** The host name as a key segment: lower case, only characters that are safe in a key and a URL. */
function sanitizedHostname(): string {
  return hostname().toLowerCase().replace(/[^a-z0-9._-]/g, '-') || 'localhost';
}

const SAMPLE_ERROR = 'must be newest, all, or a number N >= 1 (the N most recently archived events)';
const sampleValue = z.pipe(
  z.union([z.number(), z.string()], { error: SAMPLE_ERROR }),
  z.transform((value: number | string, ctx): 'newest' | 'all' | number => {
    if (value === 'newest' || value === 'all') return value;
    const n = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : NaN;
    if (Number.isSafeInteger(n) && n >= 1) return n;
    ctx.issues.push({ code: 'custom', message: SAMPLE_ERROR, input: value });
    return z.NEVER;
  }),
);
const verifySchema = z.strictObject({
  every: durationValue,
  sample: z.optional(sampleValue),
});
const drillSchema = z.strictObject({
  every: z.optional(durationValue),
  server: z.optional(pathString),
  dir: z.optional(pathString),
  timeout: z.optional(durationValue),
});

// ------------------------------------------------------------------------------
const hooksSchema = z.strictObject({
  after_archive: z.optional(argvValue),
  after_prune: z.optional(argvValue),
  on_failure: z.optional(argvValue),
  timeout: z.optional(durationValue),
});

/** What an instance can set; at the top level the same keys are defaults for every instance. */
const instanceKeys = {
  source: z.optional(sourceSchema),
  archive: z.optional(archiveSchema),
  state: z.optional(pathString),
  timezone: z.optional(timezoneValue),
  rules: z.optional(rulesSchema),
  monitor: z.optional(monitorSchema),
  hooks: z.optional(hooksSchema),
  remotes: z.optional(remotesSchema),
  validation: z.optional(z.enum(['full', 'crc'], { error: 'must be full (walk every value: the default) or crc (header and CRC-64 only)' })),
  verify: z.optional(verifySchema),
  drill: z.optional(drillSchema),
};

const instanceName = z.string({ error: 'must be a string' }).check(z.regex(RULE_NAME_PATTERN, { error: 'must match ^[a-z0-9][a-z0-9_-]*$' }));
const instanceSchema = z.strictObject({ name: instanceName, ...instanceKeys });

const fileSchema = z.strictObject({
  name: z.optional(instanceName),
  ...instanceKeys,
  log: z.optional(
    z.strictObject({
      level: z.optional(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
        error: 'must be one of fatal, error, warn, info, debug, trace, silent',
      })),
      format: z.optional(z.enum(LOG_FORMATS, { error: `must be one of ${LOG_FORMATS.join(', ')}` })),
    }),
  ),
  schedule: z.optional(z.string({ error: 'must be a cron expression such as "*/30 * * * * *"' }).check(z.minLength(1))),
  shutdown_timeout: z.optional(durationValue),
  watch: z.optional(z.boolean({ error: 'must be true or false' })),
  watch_debounce: z.optional(parsedString('must be a short duration such as "500ms" or "2s"', (text) =>
    parseShortDuration(text) ?? { error: `"${text}" is not a debounce: use milliseconds or seconds up to a minute, such as "500ms" or "2s"` })),
  metrics: z.optional(z.strictObject({ textfile: z.optional(pathString) })),
  instances: z.optional(
    z
      .array(instanceSchema, { error: 'must be a list of instances' })
      .check(z.minLength(1, { error: 'must list at least one instance' }), uniqueNames('instance')),
  ),
});
type FileConfig = z.output<typeof fileSchema>;

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

/** A config file larger than this is refused: a config is a few KiB; /dev/zero must not run us out of memory. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

function describeNonRegular(s: Stats): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO (named pipe)';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Reads the config file: a regular file (never a FIFO, which would block, or a
 * device such as /dev/zero, which never ends) of at most MAX_CONFIG_BYTES, that
 * passes the StrictModes check (src/core/trust.ts) on the very file descriptor read.
 */
function readConfigBytes(file: string): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat below refuses it.
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'config file not found' : code === 'EACCES' ? 'permission denied' : String(err);
    throw new ConfigError(file, undefined, `${why} (give --config FILE, or --source and --archive)`);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new ConfigError(file, undefined, `is ${describeNonRegular(info)}: the config must be a regular file`);
    if (info.size > MAX_CONFIG_BYTES) {
      throw new ConfigError(file, undefined, `is ${info.size} bytes: a config file must not be larger than ${MAX_CONFIG_BYTES} bytes (1 MiB)`);
    }
    const untrusted = untrustedPathReason(file, 'the config file', effectiveUid(), info);
    if (untrusted) throw new ConfigError(file, undefined, `refused: ${untrusted}`);
    // One byte more than the limit tells a file that grew since the fstat.
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > MAX_CONFIG_BYTES) throw new ConfigError(file, undefined, `is larger than ${MAX_CONFIG_BYTES} bytes (1 MiB): refused`);
    }
    return buffer.subarray(0, length);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(file, undefined, `cannot read: ${(err as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

function readYaml(file: string, env: NodeJS.ProcessEnv): unknown {
  const bytes = readConfigBytes(file);
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
  const result = fileSchema.safeParse(raw, { reportInput: true });
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

type InstanceInput = Omit<z.output<typeof instanceSchema>, 'name'> & { name?: string };

function resolveInstance(
  entry: InstanceInput,
  defaults: InstanceInput,
  where: { file: string | undefined; base: string; keyPrefix: string; multi: boolean },
  overrides: ConfigOverrides,
): InstanceConfig {
  const { file, base, keyPrefix } = where;
  const cwd = process.cwd();
  const key = (k: string) => `${keyPrefix}${k}`;
  const name = entry.name ?? defaults.name ?? DEFAULT_INSTANCE_NAME;

  // --source replaces the whole source: a local file again.
  const redisInput = overrides.source ? undefined : entry.source?.redis;
  const redis = redisInput ? resolveRedis(redisInput, base, file, key('source.redis')) : undefined;
  if (redis?.mode === 'replicate' && (entry.source?.rdb || entry.source?.nodes)) {
    throw new ConfigError(file, key(entry.source?.rdb ? 'source.rdb' : 'source.nodes'), 'cannot stand beside source.redis in mode replicate: the snapshot (and, with cluster, the nodes file) comes from the server');
  }
  if (redis?.mode === 'bgsave' && redis.cluster) {
    throw new ConfigError(file, key('source.redis.cluster'), 'needs mode replicate (the default): a cluster\'s masters keep their dumps on their own hosts, which one source.rdb cannot name');
  }
  if (redis && !redis.cluster && redisInput?.max_parallel !== undefined) {
    throw new ConfigError(file, key('source.redis.max_parallel'), 'only applies with cluster: true (how many shards are pulled at a time)');
  }
  if (redis?.mode === 'bgsave' && !entry.source?.rdb) throw new ConfigError(file, key('source.rdb'), 'is required with source.redis mode bgsave: the dump.rdb the server writes (the archiver copies it once BGSAVE is done)');
  const sourceRdb = overrides.source ? resolve(cwd, overrides.source)
    : entry.source?.rdb ? resolveAgainst(base, entry.source.rdb)
    : redis ? redis.url
    : undefined;
  if (!sourceRdb) throw new ConfigError(file, key('source.rdb'), entry.source ? 'or source.redis is required (or pass --source)' : 'is required (or pass --source)');
  const sourceNodes = overrides.nodes ? resolve(cwd, overrides.nodes) : entry.source?.nodes ? resolveAgainst(base, entry.source.nodes) : undefined;

  // With several instances a shared top-level archive.dir is a parent: each instance gets <dir>/<name>.
  const ownDir = entry.archive?.dir;
  const sharedDir = where.multi ? defaults.archive?.dir : undefined;
  const archiveDir = overrides.archive ? resolve(cwd, overrides.archive)
    : ownDir ? resolveAgainst(base, ownDir)
    : sharedDir ? join(resolveAgainst(base, sharedDir), name)
    : undefined;
  if (!archiveDir) throw new ConfigError(file, key('archive.dir'), 'is required (or pass --archive)');
  const statePath = overrides.state ? resolve(cwd, overrides.state)
    : entry.state ? resolveAgainst(base, entry.state)
    : join(archiveDir, '.rdb-archiver', 'state.json');

  const archive = { ...defaults.archive, ...entry.archive };
  const rules = entry.rules ?? defaults.rules;
  const monitor = { ...defaults.monitor, ...entry.monitor };
  const hooks = { ...defaults.hooks, ...entry.hooks };
  const warnAgeMs = monitor.warn_age ?? DEFAULT_MONITOR.warnAgeMs;
  const critAgeMs = monitor.crit_age ?? Math.max(DEFAULT_MONITOR.critAgeMs, warnAgeMs);
  if (critAgeMs < warnAgeMs) throw new ConfigError(file, key('monitor.crit_age'), 'must not be shorter than monitor.warn_age');
  const offsiteWarnLagMs = monitor.offsite_warn_lag ?? DEFAULT_MONITOR.offsiteWarnLagMs;
  const offsiteCritLagMs = monitor.offsite_crit_lag ?? Math.max(DEFAULT_MONITOR.offsiteCritLagMs, offsiteWarnLagMs);
  if (offsiteCritLagMs < offsiteWarnLagMs) throw new ConfigError(file, key('monitor.offsite_crit_lag'), 'must not be shorter than monitor.offsite_warn_lag');
  const resolvedRules = rules ? rules.map((r) => ({ name: r.name, count: r.count, every: r.every ?? { kind: 'snapshot' as const } })) : DEFAULT_RULES;
  // An instance's own remotes replace the top-level list (like rules); the key path names where each came from.
  const remotesKey = entry.remotes ? key('remotes') : 'remotes';
  const remotes = (entry.remotes ?? defaults.remotes ?? []).map((r, i) => resolveRemote(r, name, resolvedRules, file, base, `${remotesKey}[${i}]`));
  const verify = entry.verify ?? defaults.verify;
  const drill = { ...defaults.drill, ...entry.drill };

  return {
    name,
    sourceRdb,
    sourceNodes,
    ...(redis ? { redis } : {}),
    ...(overrides.state || entry.state ? { explicitState: true } : {}),
    archiveDir,
    createArchive: archive.create ?? false,
    ...(!overrides.archive && !ownDir && sharedDir ? { archiveParent: resolveAgainst(base, sharedDir) } : {}),
    allowOwnerMismatch: overrides.allowOwnerMismatch === true,
    fileMode: archive.file_mode ?? 0o600,
    dirMode: archive.dir_mode ?? 0o700,
    minFree: archive.min_free ?? { kind: 'default' },
    ...(archive.max_rate !== undefined ? { maxRate: archive.max_rate } : {}),
    statePath,
    timezone: entry.timezone ?? defaults.timezone ?? 'UTC',
    rules: resolvedRules,
    monitor: { warnAgeMs, critAgeMs, offsiteWarnLagMs, offsiteCritLagMs, ...(monitor.max_lag ? { maxLagMs: monitor.max_lag } : {}), ...(monitor.failure_dir ? { failureDir: resolveAgainst(base, monitor.failure_dir) } : {}) },
    hooks: {
      afterArchive: hooks.after_archive,
      afterPrune: hooks.after_prune,
      onFailure: hooks.on_failure,
      timeoutMs: hooks.timeout ?? DEFAULT_HOOK_TIMEOUT_MS,
    },
    remotes,
    ...(verify ? { verify: { everyMs: verify.every, sample: verify.sample ?? 'newest' } } : {}),
    drill: {
      ...(drill.every !== undefined ? { everyMs: drill.every } : {}),
      // A bare name ("valkey-server") is looked up in PATH; a path is read against the config's folder.
      ...(drill.server !== undefined ? { server: drill.server.includes('/') ? resolveAgainst(base, drill.server) : drill.server } : {}),
      ...(drill.dir !== undefined ? { dir: resolveAgainst(base, drill.dir) } : {}),
      timeoutMs: drill.timeout ?? DEFAULT_DRILL_TIMEOUT_MS,
    },
    validation: entry.validation ?? defaults.validation ?? 'full',
  };
}

/** Instances must never share a folder: one would prune or lock the other's files. */
function checkIsolation(file: string | undefined, instances: InstanceConfig[]): void {
  const claims: Array<{ path: string; what: string; owner: string }> = [];
  for (const inst of instances) {
    claims.push({ path: inst.archiveDir, what: 'archive.dir', owner: inst.name });
    claims.push({ path: dirname(inst.statePath), what: 'state', owner: inst.name });
  }
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith('/') ? b : `${b}/`);
  // Nor an off-site prefix: one instance's remote retention would delete the other's events.
  const remoteClaims = instances.flatMap((inst) => inst.remotes.map((r) => ({ where: `${r.endpoint ?? 'aws'} ${r.bucket}/${r.prefix}`, owner: inst.name, remote: r.name })));
  for (let i = 0; i < remoteClaims.length; i += 1) {
    for (let j = i + 1; j < remoteClaims.length; j += 1) {
      const a = remoteClaims[i]!;
      const b = remoteClaims[j]!;
      if (a.owner !== b.owner && (a.where.startsWith(b.where) || b.where.startsWith(a.where))) {
        throw new ConfigError(file, `instances (${a.owner}, ${b.owner})`,
          `${a.owner}'s remote ${a.remote} and ${b.owner}'s remote ${b.remote} share a bucket prefix (${a.where}): give each instance its own prefix`);
      }
    }
  }
  for (let i = 0; i < claims.length; i += 1) {
    for (let j = i + 1; j < claims.length; j += 1) {
      const a = claims[i]!;
      const b = claims[j]!;
      if (a.owner === b.owner) continue;
      if (inside(a.path, b.path) || inside(b.path, a.path)) {
        throw new ConfigError(file, `instances (${a.owner}, ${b.owner})`,
          `${a.owner}'s ${a.what} (${a.path}) and ${b.owner}'s ${b.what} (${b.path}) overlap: instances can never share an archive folder or a state file`);
      }
    }
  }
}

/** Loads, validates and resolves the configuration for a command. */
export function loadConfig(overrides: ConfigOverrides, env: NodeJS.ProcessEnv = process.env): Config {
  const explicit = overrides.config ?? env.RDB_ARCHIVER_CONFIG;
  if (explicit === undefined && overrides.archiveOnly && overrides.archive !== undefined && overrides.source === undefined && !existsSync(DEFAULT_CONFIG_PATH)) {
    return archiveOnlyConfig(overrides);
  }
  const flagsSuffice = overrides.source !== undefined && overrides.archive !== undefined;
  const file = explicit ?? (flagsSuffice ? undefined : DEFAULT_CONFIG_PATH);
  const raw: FileConfig = file ? parseConfigObject(readYaml(file, env), file) : {};
  const base = file ? dirname(resolve(file)) : process.cwd();

  const logLevel = overrides.logLevel ?? raw.log?.level ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError(undefined, '--log-level', `"${logLevel}" is not one of fatal, error, warn, info, debug, trace, silent`);
  }

  const logFormat = overrides.logFormat ?? raw.log?.format;
  if (logFormat !== undefined && !(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    throw new ConfigError(undefined, '--log-format', `"${logFormat}" is not one of ${LOG_FORMATS.join(', ')}`);
  }

  const { instances: listed, log: _log, schedule, shutdown_timeout, watch, watch_debounce, metrics, ...defaults } = raw;
  // --instance NAME:SHARD picks one shard of a cluster instance (its folder name, "slots-0-5460").
  const shardSplit = overrides.instance?.indexOf(':') ?? -1;
  const onlyShard = shardSplit >= 0 ? overrides.instance!.slice(shardSplit + 1) : undefined;
  if (shardSplit >= 0) overrides = { ...overrides, instance: overrides.instance!.slice(0, shardSplit) };
  let instances: InstanceConfig[];
  if (listed) {
    if (raw.source) throw new ConfigError(file, 'source', 'cannot stand beside instances: give each instance its own source');
    if (raw.state) throw new ConfigError(file, 'state', 'cannot stand beside instances: each instance has its own state file');
    if (raw.name) throw new ConfigError(file, 'name', 'cannot stand beside instances: name each instance instead');
    const selected = overrides.instance ? listed.filter((i) => i.name === overrides.instance) : listed;
    if (selected.length === 0) {
      throw new ConfigError(file, '--instance', `no instance named "${overrides.instance}" (instances: ${listed.map((i) => i.name).join(', ')})`);
    }
    const pathFlags = overrides.source ?? overrides.nodes ?? overrides.archive ?? overrides.state;
    if (pathFlags !== undefined && selected.length > 1) {
      throw new ConfigError(file, '--source/--nodes/--archive/--state', 'apply to one instance: add --instance NAME');
    }
    // Resolve every instance (so isolation is checked across all of them), then keep the selected ones.
    const all = listed.map((entry) => {
      const index = listed.indexOf(entry);
      return resolveInstance(entry, defaults, { file, base, keyPrefix: `instances[${index}].`, multi: true },
        selected.length === 1 && entry === selected[0] ? overrides : { allowOwnerMismatch: overrides.allowOwnerMismatch });
    });
    checkIsolation(file, all);
    instances = all.filter((inst) => selected.some((s) => s.name === inst.name));
  } else {
    const only = resolveInstance(defaults, {}, { file, base, keyPrefix: '', multi: false }, overrides);
    if (overrides.instance && overrides.instance !== only.name) {
      throw new ConfigError(file, '--instance', `no instance named "${overrides.instance}" (this config has one instance, "${only.name}")`);
    }
    instances = [only];
  }
  if (onlyShard !== undefined && !instances[0]!.redis?.cluster) {
    throw new ConfigError(file, '--instance', `"${overrides.instance}:${onlyShard}": instance "${overrides.instance}" is not a cluster (source.redis.cluster: true), so it has no shards`);
  }
  const expanded = expandInstances(instances, onlyShard && overrides.instance ? `${overrides.instance}:${onlyShard}` : undefined);
  if (onlyShard !== undefined && expanded.length === 0) {
    const known = expandInstances(instances).map((i) => i.name);
    throw new ConfigError(file, '--instance', `no shard "${onlyShard}" in instance "${overrides.instance}" (known: ${known.join(', ')}; shards are named after their slots, see \`rdb-archiver status\`)`);
  }

  return {
    file,
    logLevel: logLevel as LogLevel,
    ...(logFormat ? { logFormat: logFormat as LogFormat } : {}),
    schedule: schedule ?? DEFAULT_SCHEDULE,
    shutdownTimeoutMs: shutdown_timeout ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    watch: watch ?? false,
    watchDebounceMs: watch_debounce ?? DEFAULT_WATCH_DEBOUNCE_MS,
    timezone: defaults.timezone ?? 'UTC',
    metricsTextfile: metrics?.textfile ? resolveAgainst(base, metrics.textfile) : undefined,
    instances: expanded,
    configured: instances,
    ...(onlyShard !== undefined ? { onlyShard: `${overrides.instance}:${onlyShard}` } : {}),
  };
}

/** The instances as the commands see them: each cluster instance as its shards (src/core/shards.ts); `only`: one shard by name. */
export function expandInstances(configured: readonly InstanceConfig[], only?: string): InstanceConfig[] {
  const out = configured.flatMap((inst) => (inst.redis?.cluster && !inst.shard ? expandCluster(inst) : [inst]));
  return only ? out.filter((inst) => inst.name === only) : out;
}

/**
 * The config of a rescue host: only --archive (and --state, --log-*). No
 * source, no rules: the read-only commands discover the rule folders from the
 * archive's index and by scanning (src/pipeline/archive-index.ts).
 */
function archiveOnlyConfig(overrides: ConfigOverrides): Config {
  const logLevel = overrides.logLevel ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError(undefined, '--log-level', `"${logLevel}" is not one of fatal, error, warn, info, debug, trace, silent`);
  }
  const logFormat = overrides.logFormat;
  if (logFormat !== undefined && !(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    throw new ConfigError(undefined, '--log-format', `"${logFormat}" is not one of ${LOG_FORMATS.join(', ')}`);
  }
  const archiveDir = resolve(process.cwd(), overrides.archive!);
  const instance: InstanceConfig = {
    name: overrides.instance ?? DEFAULT_INSTANCE_NAME,
    sourceRdb: '',
    archiveDir,
    createArchive: false,
    allowOwnerMismatch: false,
    fileMode: 0o600,
    dirMode: 0o700,
    minFree: { kind: 'default' },
    statePath: overrides.state ? resolve(process.cwd(), overrides.state) : join(archiveDir, '.rdb-archiver', 'state.json'),
    timezone: 'UTC',
    rules: [],
    monitor: DEFAULT_MONITOR,
    hooks: { timeoutMs: DEFAULT_HOOK_TIMEOUT_MS },
    remotes: [],
    drill: { timeoutMs: DEFAULT_DRILL_TIMEOUT_MS },
    archiveOnly: true,
  };
  return {
    logLevel: logLevel as LogLevel,
    ...(logFormat ? { logFormat: logFormat as LogFormat } : {}),
    schedule: DEFAULT_SCHEDULE,
    shutdownTimeoutMs: DEFAULT_SHUTDOWN_TIMEOUT_MS,
    watch: false,
    watchDebounceMs: DEFAULT_WATCH_DEBOUNCE_MS,
    timezone: 'UTC',
    instances: [instance],
    configured: [instance],
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
