/**
 * The self-describing archive: an index file in the archive root, and how
 * the read-only commands find every rule folder without the config.
 *
 * `once` and `prune` rewrite <archive>/.rdb-archiver-index.json (atomically,
 * under the run lock, and only when its content changed): the rules with
 * their `every` and `count`, the source paths, the tool version and the
 * layout of an event. Rules that were configured once and are gone now stay
 * in it as `formerRules`, so that a renamed rule's folder is still named.
 *
 * `list`, `verify`, `restore` and `drill` take their folders from
 * discoverFolders(): the config's rules, then the index's (current and
 * former) rules whose folders exist, then any other folder of the archive
 * root that holds event files. A folder the config does not name is marked
 * (origin 'index' or 'found'): it is listed, verified and restorable, and
 * never pruned.
 */
import { join } from 'node:path';
import { RULE_NAME_PATTERN, describeEvery, type InstanceConfig } from '../core/config.js';
import { errorCode, lstatIfExists, replaceFileAtomic, unlinkIfExists, type FileSystem } from '../core/fs.js';
import { toolVersion } from '../core/version.js';
import { scanFolder } from './retention.js';

/** Hidden like the archive's other own files (.rdb-archiver/, .quarantine/): no rule name starts with a dot. */
export const INDEX_FILE = '.rdb-archiver-index.json';
/** A fixed temp name: the index is written under the run lock only, so one writer at a time. */
const INDEX_TEMP = '.rdb-archiver-index.json.tmp';
/** An index larger than this was not written by us: ignored. */
const MAX_INDEX_BYTES = 1024 * 1024;

export interface IndexRule {
  name: string;
  every: string;
  count: number;
}

export interface ArchiveIndex {
  format: 'rdb-archiver-index';
  version: 1;
  tool: { name: 'rdb-archiver'; version: string };
  instance: string;
  source: { rdb: string; nodes: string | null };
  /** The rule folders, one per configured rule (<archive>/<name>). */
  rules: IndexRule[];
  /** Rules configured before and gone now: their folders may still hold events (never pruned any more). */
  formerRules: Array<IndexRule & { until: string }>;
  /** How to read the archive without this tool. */
  layout: Record<string, string>;
  writtenAt: string;
}

const LAYOUT: Record<string, string> = {
  event: '<rule>/dump-<ts>.rdb, <rule>/dump-<ts>.sha256 (sha256sum format: `sha256sum -c` checks it), <rule>/dump-<ts>.seq<N>.json (archive record), <rule>/nodes-<ts>.config (Cluster only)',
  ts: 'the source file\'s mtime in UTC, YYYY-MM-DDTHH-MM-SS (a suffix _1.._9 for more events in one second)',
  latest: 'the event with the highest archive sequence number N, whatever its timestamp (a wrong source clock cannot reorder it)',
  hardLinks: 'one event in several rule folders is one file hard-linked into each',
};

export function indexPath(instance: InstanceConfig): string {
  return join(instance.archiveDir, INDEX_FILE);
}

const isRule = (r: unknown): r is IndexRule => {
  const o = r as IndexRule;
  return !!o && typeof o.name === 'string' && RULE_NAME_PATTERN.test(o.name) && typeof o.every === 'string' && typeof o.count === 'number';
};

/** Parses an index defensively (it lives in the archive, which we do not trust): undefined when unusable. */
export function parseIndex(text: string): ArchiveIndex | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = raw as Partial<ArchiveIndex> | null;
  if (!o || typeof o !== 'object' || o.format !== 'rdb-archiver-index' || o.version !== 1) return undefined;
  const rules = Array.isArray(o.rules) ? o.rules.filter(isRule) : [];
  const former = Array.isArray(o.formerRules) ? o.formerRules.filter((r): r is IndexRule & { until: string } => isRule(r) && typeof (r as { until?: unknown }).until === 'string') : [];
  return {
    format: 'rdb-archiver-index',
    version: 1,
    tool: { name: 'rdb-archiver', version: typeof o.tool?.version === 'string' ? o.tool.version : 'unknown' },
    instance: typeof o.instance === 'string' ? o.instance : '',
    source: { rdb: typeof o.source?.rdb === 'string' ? o.source.rdb : '', nodes: typeof o.source?.nodes === 'string' ? o.source.nodes : null },
    rules: rules.map((r) => ({ name: r.name, every: r.every, count: r.count })),
    formerRules: former.map((r) => ({ name: r.name, every: r.every, count: r.count, until: r.until })),
    layout: LAYOUT,
    writtenAt: typeof o.writtenAt === 'string' ? o.writtenAt : '',
  };
}

/**
 * The index for this instance (pure): its rules and source, and every rule of
 * the previous index that is no longer configured as a former rule (kept
 * with the time it was last seen configured).
 */
export function buildIndex(instance: InstanceConfig, previous: ArchiveIndex | undefined, nowIso: string): ArchiveIndex {
  const rules = instance.rules.map((r) => ({ name: r.name, every: describeEvery(r.every), count: r.count }));
  const current = new Set(rules.map((r) => r.name));
  const former = new Map<string, IndexRule & { until: string }>();
  for (const r of previous?.formerRules ?? []) if (!current.has(r.name)) former.set(r.name, r);
  for (const r of previous?.rules ?? []) if (!current.has(r.name)) former.set(r.name, { ...r, until: previous!.writtenAt || nowIso });
  return {
    format: 'rdb-archiver-index',
    version: 1,
    tool: { name: 'rdb-archiver', version: toolVersion() },
    instance: instance.name,
    source: { rdb: instance.sourceRdb, nodes: instance.sourceNodes ?? null },
    rules,
    formerRules: [...former.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    layout: LAYOUT,
    writtenAt: nowIso,
  };
}

/** Whether two indexes say the same (writtenAt aside). */
export function sameIndex(a: ArchiveIndex | undefined, b: ArchiveIndex): boolean {
  return !!a && JSON.stringify({ ...a, writtenAt: '' }) === JSON.stringify({ ...b, writtenAt: '' });
}

export async function readIndex(fs: FileSystem, instance: InstanceConfig): Promise<{ index?: ArchiveIndex; problem?: string }> {
  const path = indexPath(instance);
  const info = await lstatIfExists(fs, path).catch(() => undefined);
  if (!info) return {};
  if (info.kind !== 'file') return { problem: `${path} is not a regular file: ignored` };
  if (info.size > MAX_INDEX_BYTES) return { problem: `${path} is ${info.size} bytes, larger than an index can be: ignored` };
  try {
    const index = parseIndex((await fs.readFile(path)).toString('utf8'));
    return index ? { index } : { problem: `${path} is not a valid rdb-archiver index: ignored (the folders are found by scanning)` };
  } catch (err) {
    return { problem: `${path}: cannot read: ${(err as Error).message}` };
  }
}

/**
 * Rewrites the index when what it says changed. An I/O error throws, and the
 * run reports it with its exit code: the index is a convenience, but a disk
 * that fails here is failing, and a run must not report OK while it fails.
 * An index that is not valid (or not a file) is replaced.
 */
export async function writeArchiveIndex(fs: FileSystem, instance: InstanceConfig, now = new Date()): Promise<void> {
  const path = indexPath(instance);
  const info = await lstatIfExists(fs, path);
  const previous = info?.kind === 'file' && info.size <= MAX_INDEX_BYTES ? parseIndex((await fs.readFile(path)).toString('utf8')) : undefined;
  const next = buildIndex(instance, previous, now.toISOString());
  if (sameIndex(previous, next)) return;
  const tmp = join(instance.archiveDir, INDEX_TEMP);
  await unlinkIfExists(fs, tmp); // left by a killed run
  await replaceFileAtomic(fs, path, Buffer.from(JSON.stringify(next, null, 2) + '\n'), instance.fileMode, { tmp });
}

/** Where a folder's name came from: the config, the archive's index, or a scan of the archive root. */
export type FolderOrigin = 'config' | 'index' | 'found';

export interface DiscoveredFolder {
  name: string;
  dir: string;
  origin: FolderOrigin;
  /** For origin 'index': its rule as the index describes it ("former" when it was configured once and is gone). */
  described?: IndexRule & { former: boolean };
}

/**
 * Every rule folder of the archive: the config's rules (in config order),
 * then the index's rules and former rules that exist, then every other
 * folder of the archive root holding event files (by name). Symlinks and
 * names no rule could have (hidden, upper case) are never followed.
 */
export async function discoverFolders(fs: FileSystem, instance: InstanceConfig): Promise<{ folders: DiscoveredFolder[]; warnings: string[] }> {
  const warnings: string[] = [];
  const folders: DiscoveredFolder[] = instance.rules.map((r) => ({ name: r.name, dir: join(instance.archiveDir, r.name), origin: 'config' as const }));
  const named = new Set(folders.map((f) => f.name));
  const { index, problem } = await readIndex(fs, instance);
  if (problem) warnings.push(problem);
  const described = [...(index?.rules ?? []).map((r) => ({ ...r, former: false })), ...(index?.formerRules ?? []).map((r) => ({ ...r, former: true }))];
  for (const rule of described) {
    if (named.has(rule.name)) continue;
    const dir = join(instance.archiveDir, rule.name);
    const info = await lstatIfExists(fs, dir).catch(() => undefined);
    if (info?.kind !== 'dir') continue;
    named.add(rule.name);
    folders.push({ name: rule.name, dir, origin: 'index', described: rule });
  }
  let entries;
  try {
    entries = await fs.readdir(instance.archiveDir);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return { folders, warnings };
    throw err;
  }
  const found: DiscoveredFolder[] = [];
  for (const entry of entries) {
    if (entry.kind !== 'dir' || named.has(entry.name) || !RULE_NAME_PATTERN.test(entry.name)) continue;
    const dir = join(instance.archiveDir, entry.name);
    const scan = await scanFolder(fs, dir).catch(() => undefined);
    if (!scan || scan.events.length === 0) continue;
    found.push({ name: entry.name, dir, origin: 'found' });
  }
  found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { folders: [...folders, ...found], warnings };
}

/** One line about a folder the config does not name, for list/verify/restore/drill. */
export function folderNote(folder: DiscoveredFolder, archiveOnly: boolean): string | undefined {
  if (folder.origin === 'config') return undefined;
  const what = folder.origin === 'index'
    ? folder.described?.former
      ? `a former rule (every ${folder.described.every}, count ${folder.described.count}; configured until ${(folder.described as { until?: string }).until ?? '?'}) by the archive index`
      : `rule (every ${folder.described?.every}, count ${folder.described?.count}) by the archive index`
    : 'found by scanning the archive root (named in no index)';
  return archiveOnly
    ? `folder ${folder.name}: ${what}`
    : `folder ${folder.name} is not a rule of the config: ${what}; listed, never pruned`;
}
