/**
 * The local rule folder as an archive target: hard links, atomic rename, a
 * consistent readdir, no server checksums (the .sha256 sidecar is ours).
 *
 * Local retention goes through it like remote retention goes through
 * S3Target: list (one readdir), plan with the one pure planner
 * (planRetention), then execute the plan here (companions first, the .rdb
 * last, only regular files owned by the archive's user).
 */
import type { FileSystem } from '../core/fs.js';
import { applyPlan, eventFileNames, scanFolder, type ApplyResult, type FolderScan, type RetentionPlan } from '../pipeline/retention.js';
import type { ArchiveTarget, TargetCapabilities, TargetEvent } from './target.js';

export const LOCAL_CAPABILITIES: TargetCapabilities = { hardLinks: true, atomicRename: true, serverChecksums: false, consistentListing: true };

export class LocalFolderTarget implements ArchiveTarget {
  readonly capabilities = LOCAL_CAPABILITIES;
  constructor(
    private readonly fs: FileSystem,
    readonly location: string,
  ) {}

  /** The folder's full listing: events (most recently archived first), our temp files, foreign files. */
  scan(): Promise<FolderScan> {
    return scanFolder(this.fs, this.location);
  }

  /** One readdir; sizes are not read (bytes 0): retention needs names only. */
  async listEvents(): Promise<TargetEvent[]> {
    return LocalFolderTarget.eventsOf(await this.scan());
  }

  static eventsOf(scan: FolderScan): TargetEvent[] {
    return scan.events.map((e) => ({
      ts: e.ts,
      complete: e.kinds.includes('rdb'),
      names: eventFileNames(e), // (an archive record's name carries its sequence number)
      bytes: 0,
      ...(e.seq === undefined ? {} : { seq: e.seq }),
    }));
  }

  /** Executes a retention plan made over `scan` (this folder's listing). */
  applyRetention(scan: FolderScan, plan: RetentionPlan): Promise<ApplyResult> {
    if (scan.dir !== this.location) throw new Error(`retention plan for ${scan.dir} applied to ${this.location}`);
    return applyPlan(this.fs, scan, plan);
  }
}
