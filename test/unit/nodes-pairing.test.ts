import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/core/sha256.js';
import { pairNodes, type NodesRead } from '../../src/pipeline/worker.js';

const read = (text: string, mtimeMs: number, complete = true): NodesRead => ({ data: Buffer.from(text), sha256: sha256Hex(Buffer.from(text)), mtimeMs, complete });
const A = read('a\nvars currentEpoch 1 lastVoteEpoch 0\n', 1_000);
const B = read('b\nvars currentEpoch 2 lastVoteEpoch 0\n', 2_000);
const TORN = read('a 127.0.0.1', 1_500, false);

describe('pairNodes: which nodes.conf goes with the RDB', () => {
  it('the same content before and after: kept, no change, no warning', () => {
    expect(pairNodes('/n', A, { ...A, mtimeMs: 5_000 })).toEqual({ kept: A, change: undefined, warnings: [] });
  });
  it('changed: the version read before the copy is kept, and both are described', () => {
    const r = pairNodes('/n', A, B);
    expect(r.kept).toBe(A);
    expect(r.change).toEqual({
      kept: 'before',
      before: { sha256: A.sha256, mtime: '1970-01-01T00:00:01.000Z', bytes: A.data.length },
      after: { sha256: B.sha256, mtime: '1970-01-01T00:00:02.000Z', bytes: B.data.length },
    });
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toMatch(/changed during the copy of the RDB: archived the version read before the copy/);
  });
  it('a torn first read and a whole second one: the second is kept', () => {
    const r = pairNodes('/n', TORN, B);
    expect(r.kept).toBe(B);
    expect(r.change?.kept).toBe('after');
  });
  it('torn both times: the first is kept, and called incomplete', () => {
    const r = pairNodes('/n', TORN, { ...TORN, data: Buffer.from('x'), sha256: sha256Hex(Buffer.from('x')) });
    expect(r.kept).toBe(TORN);
    expect(r.warnings.join('\n')).toMatch(/looks incomplete/);
  });
  it('missing before, present after: the later one is kept (better than none); gone after: the earlier one', () => {
    expect(pairNodes('/n', undefined, B)).toMatchObject({ kept: B, change: { kept: 'after', before: null } });
    expect(pairNodes('/n', A, undefined)).toMatchObject({ kept: A, change: { kept: 'before', after: null } });
  });
  it('missing both times: nothing kept, one warning, no change', () => {
    expect(pairNodes('/n', undefined, undefined)).toEqual({ warnings: ['nodes.conf /n is configured but missing: archiving the RDB alone'] });
  });
});
