/**
 * The local rule folder as an archive target: hard links, atomic rename, a
 * consistent readdir, no server checksums (the .sha256 sidecar is ours).
 */
import type { FileSystem } from '../core/fs.js';
import { eventFileNames, scanFolder } from '../pipeline/retention.js';
import type { ArchiveTarget, TargetCapabilities, TargetEvent } from './target.js';

export const LOCAL_CAPABILITIES: TargetCapabilities = { hardLinks: true, atomicRename: true, serverChecksums: false, consistentListing: true };

export class LocalFolderTarget implements ArchiveTarget {
  readonly capabilities = LOCAL_CAPABILITIES;
  constructor(
    private readonly fs: FileSystem,
    readonly location: string,
  ) {}

  /** One readdir (scanFolder); sizes are not read (bytes 0): retention needs names only. */
  async listEvents(): Promise<TargetEvent[]> {
    const scan = await scanFolder(this.fs, this.location);
    return scan.events.map((e) => ({
      ts: e.ts,
      complete: e.kinds.includes('rdb'),
      names: eventFileNames(e), // (an archive record's name carries its sequence number)
      bytes: 0,
      ...(e.seq === undefined ? {} : { seq: e.seq }),
    }));
  }
}
