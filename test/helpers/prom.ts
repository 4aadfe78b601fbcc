/**
 * A strict parser for the Prometheus text exposition format (version 0.0.4),
 * for tests: anything node_exporter's textfile collector would reject, or
 * that the format leaves undefined, is an error naming the line.
 *
 * Checked: metric and label name syntax; label value escapes (\\, \", \n)
 * and nothing else; float values (Go syntax, NaN, +Inf, -Inf) and optional
 * integer timestamps; at most one HELP and one TYPE per family, both before
 * its first sample; every family's samples in one contiguous group; no
 * duplicate label sets; a final newline.
 *
 * The npm package parse-prometheus-text-format is used next to it as an
 * independent implementation, but it accepts malformed input silently, so it
 * cannot be the only check.
 */

import { spawnSync } from 'node:child_process';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs?: number;
}

export interface MetricFamily {
  name: string;
  help?: string;
  type: MetricType;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf)$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export class ExpositionError extends Error {
  constructor(line: number, text: string, why: string) {
    super(`line ${line}: ${why}: ${JSON.stringify(text)}`);
  }
}

function parseValue(text: string): number | undefined {
  if (text === 'NaN') return NaN;
  if (!FLOAT.test(text)) return undefined;
  if (/^[+-]?[Ii]nf$/.test(text)) return text.startsWith('-') ? -Infinity : Infinity;
  return Number(text);
}

/** The family a sample name belongs to: itself, or for histograms/summaries the base name. */
function familyOf(name: string, families: Map<string, MetricFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const type = families.get(base)?.type;
      if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
    }
  }
  return name;
}

export function parseExposition(text: string): Map<string, MetricFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, MetricFamily>();
  const closed = new Set<string>(); // families whose sample group has ended
  const sampleKeys = new Set<string>();
  let current: string | undefined; // the family of the previous sample
  const lines = text.split('\n');
  lines.pop(); // after the final newline

  const familyFor = (name: string): MetricFamily => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: 'untyped', samples: [] };
      families.set(name, f);
    }
    return f;
  };

  lines.forEach((raw, index) => {
    const n = index + 1;
    const line = raw;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, keyword, name, rest = ''] = m as unknown as [string, string, string, string | undefined];
      if (!METRIC_NAME.test(name)) throw new ExpositionError(n, line, 'bad metric name');
      const f = familyFor(name);
      if (f.samples.length > 0) throw new ExpositionError(n, line, `${keyword} after samples of ${name}`);
      if (keyword === 'HELP') {
        if (f.help !== undefined) throw new ExpositionError(n, line, `second HELP for ${name}`);
        if (/\\[^\\n]|\\$/.test(rest)) throw new ExpositionError(n, line, 'bad escape in HELP');
        f.help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      } else {
        if ((f as MetricFamily & { typed?: boolean }).typed) throw new ExpositionError(n, line, `second TYPE for ${name}`);
        if (!TYPES.has(rest as MetricType)) throw new ExpositionError(n, line, `unknown type "${rest}"`);
        f.type = rest as MetricType;
        (f as MetricFamily & { typed?: boolean }).typed = true;
      }
      return;
    }

    // name [{labels}] value [timestamp]
    let pos = 0;
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) throw new ExpositionError(n, line, 'bad metric name');
    const name = nameMatch[0];
    pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === '{') {
      pos += 1;
      for (;;) {
        if (line[pos] === '}') {
          pos += 1;
          break;
        }
        const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(pos));
        if (!ln) throw new ExpositionError(n, line, `bad label name at column ${pos + 1}`);
        const labelName = ln[0];
        if (!LABEL_NAME.test(labelName) || labelName.startsWith('__')) throw new ExpositionError(n, line, `reserved or bad label name ${labelName}`);
        if (labelName in labels) throw new ExpositionError(n, line, `label ${labelName} twice`);
        pos += labelName.length;
        if (line[pos] !== '=' || line[pos + 1] !== '"') throw new ExpositionError(n, line, `expected =" after ${labelName}`);
        pos += 2;
        let value = '';
        for (;;) {
          const c = line[pos];
          if (c === undefined) throw new ExpositionError(n, line, 'unterminated label value');
          if (c === '"') {
            pos += 1;
            break;
          }
          if (c === '\\') {
            const e = line[pos + 1];
            if (e === '\\') value += '\\';
            else if (e === '"') value += '"';
            else if (e === 'n') value += '\n';
            else throw new ExpositionError(n, line, `bad escape \\${e ?? ''} in label value`);
            pos += 2;
            continue;
          }
          value += c;
          pos += 1;
        }
        labels[labelName] = value;
        if (line[pos] === ',') {
          pos += 1;
          continue;
        }
        if (line[pos] === '}') {
          pos += 1;
          break;
        }
        throw new ExpositionError(n, line, `expected , or } at column ${pos + 1}`);
      }
    }
    const rest = line.slice(pos);
    const m = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$/.exec(rest);
    if (!m) throw new ExpositionError(n, line, 'expected a value (and an optional integer timestamp) after the name and labels');
    const value = parseValue(m[1]!);
    if (value === undefined) throw new ExpositionError(n, line, `bad value "${m[1]}"`);

    const familyName = familyOf(name, families);
    if (familyName !== current) {
      if (current !== undefined) closed.add(current);
      if (closed.has(familyName)) throw new ExpositionError(n, line, `samples of ${familyName} are not one contiguous group`);
      current = familyName;
    }
    const f = familyFor(familyName);
    const key = `${name}{${Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    if (sampleKeys.has(key)) throw new ExpositionError(n, line, `duplicate sample ${key}`);
    sampleKeys.add(key);
    f.samples.push({ name, labels, value, ...(m[2] ? { timestampMs: Number(m[2]) } : {}) });
  });
  return families;
}

/** The value of the one sample of `family` whose labels include `labels`. */
export function sampleValue(families: Map<string, MetricFamily>, family: string, labels: Record<string, string>): number | undefined {
  const matches = families.get(family)?.samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  if (matches.length > 1) throw new Error(`${family}${JSON.stringify(labels)} matches ${matches.length} samples`);
  return matches[0]?.value;
}

export const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

/**
 * `promtool check metrics` (Debian's prometheus package; .ci/run installs it):
 * the exposition format and Prometheus's naming lint (units, _total,
 * reserved labels…). Undefined when promtool is not installed.
 */
export function promtoolCheck(text: string): { code: number; output: string } | undefined {
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return undefined;
  if (r.error) throw r.error;
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

/** Why promtool tests are skipped here, or undefined when they run (under CI=true they always run, and fail without it). */
export function promtoolSkipReason(): string | undefined {
  if (process.env.CI === 'true') return undefined;
  return spawnSync(PROMTOOL, ['--version']).error ? `${PROMTOOL} is not installed (apt-get install prometheus): promtool checks skipped` : undefined;
}
