/**
 * The archive every crash and fault trial starts from, and the invariants
 * checked after every trial.
 *
 * A template archive is built once, by the real pipeline, from six older
 * snapshots (with nodes.conf) in three rule folders, plus stray files and a
 * state file. Each trial copies it, then runs `once` on a new source with
 * smaller rule counts, so one run does everything: copy, fsync, publish,
 * links into three folders, retention deletes in every folder, state write.
 * A clean reference run of the same trial gives the expected end result.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, type InstanceConfig } from '../../src/core/config.js';
import { runOnce, type RunReport } from '../../src/pipeline/cycle.js';
import { OSFS, TEMP_PREFIX } from '../../src/core/fs.js';
import { memoryLog } from '../../src/core/log.js';
import { writeSnapshot } from '../helpers/snapshots.js';

export type Kind = 'rdb' | 'nodes' | 'sha256' | 'meta';
const KINDS: Kind[] = ['nodes', 'sha256', 'meta', 'rdb'];
const FINAL_NAME = /^(dump|nodes)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:_[1-9])?)\.(rdb|config|sha256|seq[1-9]\d*\.json)$/;

/** The kind and timestamp of a final event file name (this suite's own parser, independent of src/). */
export function finalName(name: string): { kind: Kind; ts: string } | undefined {
  const m = FINAL_NAME.exec(name);
  if (!m) return undefined;
  const kind = m[1] === 'dump' && m[3] === 'rdb' ? 'rdb' : m[1] === 'nodes' && m[3] === 'config' ? 'nodes' : m[1] === 'dump' && m[3] === 'sha256' ? 'sha256'
    : m[1] === 'dump' && m[3]!.startsWith('seq') ? 'meta' : undefined;
  return kind ? { kind, ts: m[2]! } : undefined;
}

/** A file name for messages and the kinds with a fixed name (the archive record's name carries its sequence number). */
export function fileName(kind: Kind, ts: string): string {
  return kind === 'rdb' ? `dump-${ts}.rdb` : kind === 'nodes' ? `nodes-${ts}.config` : kind === 'sha256' ? `dump-${ts}.sha256` : `dump-${ts}.seq*.json`;
}

/**
 * What identifies a final file's content: its sha256; for an archive record (which
 * holds the time it was written) the sequence number and sha256 it names.
 */
export function fingerprint(kind: Kind, path: string): string {
  if (kind !== 'meta') return sha256File(path);
  try {
    const record = JSON.parse(readFileSync(path, 'utf8')) as { seq?: unknown; sha256?: unknown };
    return `record seq ${String(record.seq)} sha256 ${String(record.sha256)}`;
  } catch {
    return 'record: not valid JSON (partial?)';
  }
}

const hashCache = new Map<string, string>();
/** sha256 of a file, cached by inode/size/times (hard links across folders are hashed once). */
export function sha256File(path: string): string {
  const s = statSync(path, { bigint: true });
  const key = `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  let sha = hashCache.get(key);
  if (!sha) {
    sha = createHash('sha256').update(readFileSync(path)).digest('hex');
    if (hashCache.size > 10_000) hashCache.clear();
    hashCache.set(key, sha);
  }
  return sha;
}

export const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

export interface RuleSpec {
  name: string;
  every?: string;
  count: number;
}

/** The rules of a trial: one calendar rule by hour, one by day, one "last N". */
export const TRIAL_RULES: RuleSpec[] = [
  { name: 'hourly', every: 'hour', count: 3 },
  { name: 'daily', every: 'day', count: 2 },
  { name: 'last', count: 3 },
];
const TEMPLATE_RULES: RuleSpec[] = TRIAL_RULES.map((r) => ({ ...r, count: 10 }));

const PRE_MTIMES = [
  '2025-05-30T10:00:00.100Z',
  '2025-05-31T09:00:00.200Z',
  '2025-05-31T10:00:00.300Z',
  '2025-06-01T09:00:00.400Z',
  '2025-06-01T10:00:00.500Z',
  '2025-06-01T11:00:00.600Z',
];
export const NEW_MTIME = new Date('2025-06-01T12:00:00.250Z');
export const NEW_TS = '2025-06-01T12-00-00';
const STRAYS = ['notes.txt', 'dump-latest.rdb', 'dump-2025-06-01T08-00-00.rdb.bak'];

export function nodesConf(seed: string): string {
  return `${sha256(seed).slice(0, 40)} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch 1 lastVoteEpoch 0\n`;
}

export interface Scenario {
  root: string;
  /** The archive every trial starts from (copied per trial). */
  template: string;
  /** The new snapshot the trials archive, shared read-only by every trial. */
  source: string;
  nodes: string;
  sourceSha: string;
  sourceSize: number;
  nodesSha: string;
  /** Events in the template: rule -> ts -> kind -> sha256. */
  pre: Record<string, Record<string, Partial<Record<Kind, string>>>>;
  /** Stray files in the template: rule -> name -> sha256. */
  strays: Record<string, Record<string, string>>;
  /** What the template's state file says was archived last. */
  baseline: { ts: string; sha256: string };
  /** Filled in by setReference(): the result of a clean run. */
  ref?: Reference;
}

export interface Reference {
  /** rule -> timestamps of the events after a clean run. */
  after: Record<string, string[]>;
  /** sha256 of each file of the new event (the sidecar as the clean run wrote it). */
  newFiles: Partial<Record<Kind, string>>;
}

export interface Trial {
  dir: string;
  archive: string;
  config: string;
  state: string;
  stateDir: string;
}

export function writeTrialConfig(scn: Scenario, trial: Trial, rules: RuleSpec[] = TRIAL_RULES, extra = ''): void {
  const lines = [
    'source:',
    `  rdb: ${scn.source}`,
    `  nodes: ${scn.nodes}`,
    'archive:',
    `  dir: ${trial.archive}`,
    'log:',
    '  level: warn',
    'rules:',
    ...rules.flatMap((r) => [`  - name: ${r.name}`, `    count: ${r.count}`, ...(r.every ? [`    every: "${r.every}"`] : [])]),
  ];
  writeFileSync(trial.config, lines.join('\n') + '\n' + extra);
}

/** A fresh copy of the template archive in `dir`, with its config. */
export function makeTrial(scn: Scenario, dir: string): Trial {
  mkdirSync(dir, { recursive: true });
  const archive = join(dir, 'archive');
  cpSync(scn.template, archive, { recursive: true, preserveTimestamps: true });
  const trial: Trial = { dir, archive, config: join(dir, 'config.yaml'), state: join(archive, '.rdb-archiver', 'state.json'), stateDir: join(archive, '.rdb-archiver') };
  writeTrialConfig(scn, trial);
  return trial;
}

export function instanceOf(trial: Trial): InstanceConfig {
  return loadConfig({ config: trial.config }).instances[0]!;
}

/** Runs `once` in-process on the real filesystem. */
export async function onceInProcess(trial: Trial, fs = new OSFS()): Promise<RunReport> {
  return runOnce({ fs, log: memoryLog() }, instanceOf(trial), { dryRun: false, force: false });
}

/**
 * Builds the scenario under `root`: the template archive (by the real
 * pipeline, in-process) and the shared new source of `sourceSize` bytes.
 */
export async function buildScenario(root: string, sourceSize: number): Promise<Scenario> {
  const template = join(root, 'template');
  const data = join(root, 'template-data');
  mkdirSync(data, { recursive: true });
  mkdirSync(template, { recursive: true, mode: 0o700 }); // the archive root must exist
  const build: Trial = { dir: root, archive: template, config: join(root, 'template.yaml'), state: join(template, '.rdb-archiver', 'state.json'), stateDir: join(template, '.rdb-archiver') };
  const pseudo = { source: join(data, 'dump.rdb'), nodes: join(data, 'nodes.conf') } as Scenario;
  writeTrialConfig(pseudo, build, TEMPLATE_RULES);
  for (const [i, mtime] of PRE_MTIMES.entries()) {
    const when = new Date(mtime);
    writeSnapshot(pseudo.source, { seed: `pre-${i}`, mtime: when, size: 4096 + i * 512 });
    writeFileSync(pseudo.nodes, nodesConf(`pre-${i}`));
    utimesSync(pseudo.nodes, when, when);
    const report = await onceInProcess(build);
    if (report.exitCode !== 0) throw new Error(`building the template failed: ${JSON.stringify(report.error)}`);
  }
  const pre: Scenario['pre'] = {};
  const strays: Scenario['strays'] = {};
  for (const rule of TRIAL_RULES) {
    const dir = join(template, rule.name);
    pre[rule.name] = {};
    for (const name of readdirSync(dir)) {
      const f = finalName(name);
      if (!f) continue;
      (pre[rule.name]![f.ts] ??= {})[f.kind] = fingerprint(f.kind, join(dir, name));
    }
    strays[rule.name] = {};
    for (const name of STRAYS) {
      const content = `stray ${rule.name}/${name}\n`;
      writeFileSync(join(dir, name), content, { mode: 0o600 });
      strays[rule.name]![name] = sha256(content);
    }
  }
  const state = JSON.parse(readFileSync(build.state, 'utf8')) as { archived: { ts: string; sha256: string } };

  const shared = join(root, 'shared');
  mkdirSync(shared, { recursive: true });
  const source = join(shared, 'dump.rdb');
  const nodes = join(shared, 'nodes.conf');
  const snap = writeSnapshot(source, { seed: 'the-new-snapshot', mtime: NEW_MTIME, size: sourceSize });
  writeFileSync(nodes, nodesConf('new'));
  utimesSync(nodes, NEW_MTIME, NEW_MTIME);
  return {
    root, template, source, nodes, sourceSha: snap.sha256, sourceSize: snap.length, nodesSha: sha256(nodesConf('new')),
    pre, strays, baseline: { ts: state.archived.ts, sha256: state.archived.sha256 },
  };
}

/** Records the result of a clean run of `trial` as the reference every other trial must reach. */
export function setReference(scn: Scenario, trial: Trial): string[] {
  const problems: string[] = [];
  const after: Record<string, string[]> = {};
  const newFiles: Partial<Record<Kind, string>> = {};
  for (const rule of TRIAL_RULES) {
    const dir = join(trial.archive, rule.name);
    const events = new Set<string>();
    for (const name of readdirSync(dir)) {
      const f = finalName(name);
      if (!f) continue;
      events.add(f.ts);
      if (f.ts === NEW_TS) newFiles[f.kind] = fingerprint(f.kind, join(dir, name));
    }
    after[rule.name] = [...events].sort();
  }
  if (newFiles.rdb !== scn.sourceSha) problems.push(`reference run: archived rdb sha ${newFiles.rdb} != source ${scn.sourceSha}`);
  if (newFiles.nodes !== scn.nodesSha) problems.push(`reference run: archived nodes sha ${newFiles.nodes} != source ${scn.nodesSha}`);
  const sidecar = readFileSync(join(trial.archive, TRIAL_RULES[0]!.name, fileName('sha256', NEW_TS)), 'utf8');
  if (!sidecar.includes(`${scn.sourceSha}  ${fileName('rdb', NEW_TS)}`) || !sidecar.includes(`${scn.nodesSha}  ${fileName('nodes', NEW_TS)}`)) {
    problems.push(`reference run: the sidecar does not list the event's files: ${sidecar}`);
  }
  for (const rule of TRIAL_RULES) {
    const deleted = Object.keys(scn.pre[rule.name]!).filter((ts) => !after[rule.name]!.includes(ts));
    if (deleted.length === 0) problems.push(`reference run: retention deleted nothing in ${rule.name}: the trials would not cover retention deletes`);
  }
  scn.ref = { after, newFiles };
  return problems;
}

// ---------------------------------------------------------------------------
// Invariants.

interface StateShape {
  version?: unknown;
  counters?: unknown;
  archived?: { ts?: unknown; sha256?: unknown; missingIn?: unknown };
}

function readState(trial: Trial, problems: string[]): StateShape | undefined | 'absent' {
  if (!existsSync(trial.state)) return 'absent';
  const text = readFileSync(trial.state, 'utf8');
  let parsed: StateShape;
  try {
    parsed = JSON.parse(text) as StateShape;
  } catch {
    problems.push(`state file is not valid JSON (${text.length} bytes: ${JSON.stringify(text.slice(0, 80))})`);
    return undefined;
  }
  if (parsed?.version !== 1 || typeof parsed.counters !== 'object' || parsed.counters === null) {
    problems.push(`state file has an unexpected shape: ${text.slice(0, 120)}`);
    return undefined;
  }
  if (parsed.archived !== undefined && (typeof parsed.archived.ts !== 'string' || typeof parsed.archived.sha256 !== 'string')) {
    problems.push(`state file's "archived" record is malformed: ${JSON.stringify(parsed.archived)}`);
  }
  return parsed;
}

/** What a rule folder holds: events (ts -> kind -> sha256), strays, leftovers (anything else). */
function scanRule(scn: Scenario, trial: Trial, rule: string, problems: string[]) {
  const dir = join(trial.archive, rule);
  const events = new Map<string, Map<Kind, string>>();
  const leftovers: string[] = [];
  const strays = new Map<string, string>();
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch (err) {
    problems.push(`${rule}/ cannot be listed: ${(err as Error).message}`);
  }
  for (const name of names) {
    const path = join(dir, name);
    const f = finalName(name);
    if (f) {
      const info = lstatSync(path);
      if (!info.isFile()) {
        problems.push(`${rule}/${name} is not a regular file`);
        continue;
      }
      const kinds = events.get(f.ts) ?? new Map<Kind, string>();
      kinds.set(f.kind, fingerprint(f.kind, path));
      events.set(f.ts, kinds);
    } else if (scn.strays[rule]?.[name] !== undefined) {
      strays.set(name, sha256File(path));
    } else {
      leftovers.push(name);
    }
  }
  return { events, leftovers, strays };
}

export interface CheckOptions {
  /** After a kill or a fault, temp files of ours may remain (the next run removes them). */
  allowTemps: boolean;
  /** A lock file may remain (a killed run). */
  allowLock: boolean;
  /**
   * In-process trials only: a temp file of this very process in the state
   * folder whose cleanup the injected fault prevented. The lock holder removes
   * temps of dead processes; in real life the next run is a new process.
   */
  allowOwnStateTemps?: boolean;
}

/**
 * The invariants that hold at every instant: after a kill, after a fault,
 * and after recovery (then with nothing left over).
 */
export function checkArchive(scn: Scenario, trial: Trial, options: CheckOptions): string[] {
  const problems: string[] = [];
  const ref = scn.ref!;
  const expectedOf = (rule: string, ts: string, kind: Kind): string | undefined =>
    ts === NEW_TS ? ref.newFiles[kind] : scn.pre[rule]?.[ts]?.[kind];
  const newComplete = new Map<string, boolean>();

  for (const rule of TRIAL_RULES.map((r) => r.name)) {
    const { events, leftovers, strays } = scanRule(scn, trial, rule, problems);
    // 1. No partial or different file under a final name.
    for (const [ts, kinds] of events) {
      for (const [kind, sha] of kinds) {
        const expected = expectedOf(rule, ts, kind);
        if (expected === undefined) problems.push(`${rule}/${fileName(kind, ts)} exists but belongs to no known event`);
        else if (sha !== expected) problems.push(`${rule}/${fileName(kind, ts)} is partial or differs (${kind === 'meta' ? `${sha}, expected ${expected}` : `sha256 ${sha.slice(0, 12)}, expected ${expected.slice(0, 12)}`})`);
      }
    }
    // 2. Events: the ones a clean run keeps are intact; the others may be partly deleted, companions first.
    for (const [ts, files] of Object.entries(scn.pre[rule]!)) {
      const have = events.get(ts);
      if (ref.after[rule]!.includes(ts)) {
        for (const kind of Object.keys(files) as Kind[]) {
          if (!have?.has(kind)) problems.push(`pre-existing event ${rule}/${ts} lost its ${kind} file (retention is not entitled to delete it)`);
        }
      } else if (have && !have.has('rdb')) {
        problems.push(`pre-existing event ${rule}/${ts} has companions (${[...have.keys()].join(',')}) but no .rdb: deleted in the wrong order`);
      }
    }
    // The new event: the .rdb appears only after its companions.
    const fresh = events.get(NEW_TS);
    if (fresh?.has('rdb')) {
      for (const kind of Object.keys(ref.newFiles) as Kind[]) {
        if (!fresh.has(kind)) problems.push(`${rule}/${fileName('rdb', NEW_TS)} is published but its ${kind} file is missing`);
      }
    }
    newComplete.set(rule, !!fresh && (Object.keys(ref.newFiles) as Kind[]).every((k) => fresh.has(k)));
    // Strays are never touched.
    for (const [name, sha] of Object.entries(scn.strays[rule]!)) {
      if (strays.get(name) !== sha) problems.push(`stray file ${rule}/${name} was ${strays.has(name) ? 'changed' : 'removed'}`);
    }
    for (const name of leftovers) {
      if (!(options.allowTemps && name.startsWith(TEMP_PREFIX))) problems.push(`${rule}/${name} is left over`);
    }
  }

  // 3. The state file is valid or absent; it names the new event only once that is durable everywhere.
  const state = readState(trial, problems);
  if (state && state !== 'absent') {
    const a = state.archived;
    if (a?.ts === NEW_TS) {
      if (a.sha256 !== scn.sourceSha) problems.push(`state names ${NEW_TS} with sha256 ${String(a.sha256)}, not the source's`);
      // A folder that failed alone is named in missingIn (the next run links the event in there);
      // every other folder holds the complete event, and at least one does.
      const missing = Array.isArray(a.missingIn) ? (a.missingIn as unknown[]) : [];
      for (const rule of missing) if (!newComplete.has(String(rule))) problems.push(`state's missingIn names ${String(rule)}, not a rule folder`);
      const incomplete = [...newComplete].filter(([rule, complete]) => !complete && !missing.includes(rule)).map(([rule]) => rule);
      if (incomplete.length > 0) problems.push(`state says ${NEW_TS} is archived but the event is not complete in ${incomplete.join(', ')} (not named in missingIn)`);
      if (![...newComplete.values()].some(Boolean)) problems.push(`state says ${NEW_TS} is archived but no rule folder holds it complete`);
    } else if (a && (a.ts !== scn.baseline.ts || a.sha256 !== scn.baseline.sha256)) {
      problems.push(`state names an unknown event ${String(a.ts)}`);
    }
  }
  // The state folder: state.json, and while allowed a lock and temps.
  if (existsSync(trial.stateDir)) {
    for (const name of readdirSync(trial.stateDir)) {
      if (name === 'state.json') continue;
      if (name === 'lock' || name === 'lock.takeover') {
        if (!options.allowLock) problems.push(`stale ${name} left in the state folder`);
      } else if (name.startsWith(TEMP_PREFIX)) {
        const own = name.startsWith(`${TEMP_PREFIX}${process.pid}-`);
        if (!options.allowTemps && !(own && options.allowOwnStateTemps)) problems.push(`temp file ${name} left in the state folder`);
      }
    }
  }
  return problems;
}

/** After recovery: everything checkArchive says, nothing left over, and exactly the reference's events. */
export function checkRecovered(scn: Scenario, trial: Trial, options: { allowOwnStateTemps?: boolean } = {}): string[] {
  const problems = checkArchive(scn, trial, { allowTemps: false, allowLock: false, allowOwnStateTemps: options.allowOwnStateTemps });
  for (const rule of TRIAL_RULES.map((r) => r.name)) {
    const dir = join(trial.archive, rule);
    const present = new Map<string, Set<Kind>>();
    for (const name of readdirSync(dir)) {
      const f = finalName(name);
      if (f) present.set(f.ts, (present.get(f.ts) ?? new Set<Kind>()).add(f.kind));
    }
    const got = [...present.keys()].sort().join(',');
    const want = scn.ref!.after[rule]!.join(',');
    if (got !== want) problems.push(`${rule}/ holds events [${got}], a clean run leaves [${want}]`);
    for (const [ts, kinds] of present) {
      for (const kind of KINDS) {
        const expected = ts === NEW_TS ? scn.ref!.newFiles[kind] : scn.pre[rule]?.[ts]?.[kind];
        if (expected !== undefined && !kinds.has(kind)) problems.push(`${rule}/${fileName(kind, ts)} is missing after recovery`);
      }
    }
  }
  const state = existsSync(trial.state) ? (JSON.parse(readFileSync(trial.state, 'utf8')) as StateShape) : undefined;
  if (state?.archived?.ts !== NEW_TS) problems.push(`after recovery the state names ${String(state?.archived?.ts)}, not ${NEW_TS}`);
  if (state?.archived?.missingIn !== undefined) problems.push(`after recovery the state still names folders without the event: ${JSON.stringify(state.archived.missingIn)}`);
  return problems;
}
