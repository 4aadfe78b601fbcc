import { describe, expect, it } from 'vitest';
import type { FileInfo } from '../../src/core/fs.js';
import { COPY_METHOD_ENV, copyMethodsFor } from '../../src/pipeline/copy-methods.js';
import { sharingOf } from '../../src/pipeline/extents.js';

describe('copyMethodsFor', () => {
  it('tries a reflink, then O_DIRECT, then copy_file_range, then read/write by default', () => {
    expect(copyMethodsFor(undefined, {})).toEqual(['reflink', 'direct', 'copy_file_range', 'read-write']);
  });
  it('the test switch forces the fallback, or starts with one method', () => {
    expect(copyMethodsFor(undefined, { [COPY_METHOD_ENV]: 'read-write' })).toEqual(['read-write']);
    expect(copyMethodsFor(undefined, { [COPY_METHOD_ENV]: 'copy_file_range' })).toEqual(['copy_file_range', 'read-write']);
    expect(copyMethodsFor(undefined, { [COPY_METHOD_ENV]: 'direct' })).toEqual(['direct', 'read-write']);
  });
  it('archive.max_rate drops copy_file_range (it cannot be paced) and keeps the reflink (it writes no data) and the paced passes', () => {
    expect(copyMethodsFor(100 * 2 ** 20, {})).toEqual(['reflink', 'direct', 'read-write']);
    expect(copyMethodsFor(100 * 2 ** 20, { [COPY_METHOD_ENV]: 'copy_file_range' })).toEqual(['read-write']);
  });
});

describe('sharingOf', () => {
  const source = { path: '/d/dump.rdb', dev: '2049', ino: '77', mtimeNs: '1000', size: 5 };
  const now = (dev: string, ino: string, mtimeNs = '1000', size = 5) => ({ dev, ino, mtimeNs, size }) as FileInfo;
  it('a reflink shares the data while its source inode exists', () => {
    expect(sharingOf({ copy: 'reflink', source }, now('2049', '77'))).toEqual({ copy: 'reflink', shared: true });
  });
  it('a reflink whose source was replaced (another inode) or removed owns its blocks', () => {
    expect(sharingOf({ copy: 'reflink', source }, now('2049', '78'))).toEqual({ copy: 'reflink', shared: false });
    expect(sharingOf({ copy: 'reflink', source }, undefined)).toEqual({ copy: 'reflink', shared: false });
  });
  it('a source rewritten in place (same inode, new mtime or size) has new blocks: no longer shared', () => {
    expect(sharingOf({ copy: 'reflink', source }, now('2049', '77', '2000'))).toEqual({ copy: 'reflink', shared: false });
    expect(sharingOf({ copy: 'reflink', source }, now('2049', '77', '1000', 6))).toEqual({ copy: 'reflink', shared: false });
  });
  it('a full copy never shares; a record that does not say gives null', () => {
    expect(sharingOf({ copy: 'copy_file_range', source }, now('2049', '77'))).toEqual({ copy: 'copy_file_range', shared: false });
    expect(sharingOf({ source }, now('2049', '77'))).toEqual({ copy: null, shared: false });
    expect(sharingOf(undefined, now('2049', '77'))).toEqual({ copy: null, shared: false });
  });
});
