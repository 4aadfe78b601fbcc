/**
 * A disk-based transfer (`$<len>`) is a save on the server: the identity the
 * state records is then the one after that save, when INFO proves the
 * snapshot holds everything; otherwise the one from before (the next run
 * pulls again). The round trip with a real server is in
 * test/integration/redis-payload.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { identityAfterDiskSave, provesWholeSnapshot } from '../../src/sources/poll.js';
import { redisIdentity, type ServerInfo } from '../../src/sources/redis.js';
import type { StreamedSnapshot } from '../../src/sources/source.js';

const before: ServerInfo = {
  redisVersion: '7.0.15', runId: 'r1', role: 'master', lastSaveTime: 1000, changesSinceSave: 3, bgsaveInProgress: false,
  lastBgsaveStatus: 'ok', saves: 4, replOffset: 0, clusterEnabled: false,
};
const saved: ServerInfo = { ...before, lastSaveTime: 1010, changesSinceSave: 0, saves: 5 };

describe('identity after a disk-based transfer', () => {
  it('is proven only by exactly our save, finished, ok, on the same server, with no write since', () => {
    expect(provesWholeSnapshot(before, saved)).toBe(true);
    expect(provesWholeSnapshot(before, { ...saved, changesSinceSave: 1 })).toBe(false); // a write after the fork
    expect(provesWholeSnapshot(before, { ...saved, runId: 'r2' })).toBe(false); // restarted
    expect(provesWholeSnapshot(before, { ...saved, saves: 6 })).toBe(false); // another save since ours
    expect(provesWholeSnapshot(before, { ...saved, saves: 4 })).toBe(false); // no save: ours was someone else's, older
    expect(provesWholeSnapshot(before, { ...saved, bgsaveInProgress: true })).toBe(false);
    expect(provesWholeSnapshot(before, { ...saved, lastBgsaveStatus: 'err' })).toBe(false);
    // Before Redis 7 (no rdb_saves): the save time must have moved.
    expect(provesWholeSnapshot({ ...before, saves: null }, { ...saved, saves: null })).toBe(true);
    expect(provesWholeSnapshot({ ...before, saves: null }, { ...saved, saves: null, lastSaveTime: 1000 })).toBe(false);
  });

  it('reads INFO once, after the last byte (the read that returns 0), and keeps the old identity when INFO fails or proves nothing', async () => {
    /** A two-byte payload; `left` goes below 0 once the end has been read. */
    const make = (): StreamedSnapshot & { left: number } => {
      const state = { left: 2 };
      return Object.assign(state, {
        label: 'redis://h:1', takenAtMs: 0, identity: redisIdentity(before), close: () => undefined,
        facts: { url: 'redis://h:1', redisVersion: null, runId: null, replId: null, replOffset: null, transfer: 'disk' as const, takenAt: '' },
        read: async (): Promise<number> => (state.left-- > 0 ? 1 : 0),
      });
    };
    const buf = new Uint8Array(1);
    const drain = async (s: StreamedSnapshot) => {
      while ((await s.read(buf, 0, 1)) > 0) { /* next */ }
      await s.read(buf, 0, 1); // a further read after the end asks nothing more
    };

    let calls = 0;
    const good = make();
    identityAfterDiskSave(good, before, async () => {
      calls++;
      expect(good.left).toBeLessThan(0); // only after the end of the payload
      return saved;
    });
    await drain(good);
    expect(calls).toBe(1);
    expect(good.identity).toEqual(redisIdentity(saved));

    const failing = make();
    identityAfterDiskSave(failing, before, async () => { throw new Error('ECONNREFUSED'); });
    await drain(failing);
    expect(failing.identity).toEqual(redisIdentity(before));

    const written = make();
    identityAfterDiskSave(written, before, async () => ({ ...saved, changesSinceSave: 2 }));
    await drain(written);
    expect(written.identity).toEqual(redisIdentity(before));
  });
});
