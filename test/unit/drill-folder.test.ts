/**
 * The drill folder's marker (src/ops/drill-folder.ts): which leftovers a
 * later drill may remove is a pure function of the marker, this process's
 * identity, a probe of the pid and the marker's age. A PID alone never
 * decides: another host, boot or PID namespace waits for the lease.
 */
import { describe, expect, it } from 'vitest';
import { DRILL_LEASE_MS, judgeDrill, markerFor, parseMarker, tiedToUs, type DrillMarker } from '../../src/ops/drill-folder.js';
import type { PidProbe, ProcessIdentity } from '../../src/pipeline/lock.js';

const here: ProcessIdentity = { host: 'h1', bootId: 'boot-1', pidNs: 'pid:[1]' };
const marker = (over: Partial<DrillMarker> = {}): DrillMarker => ({
  tool: 'rdb-archiver-drill', dir: '/tmp/rdb-archiver-drill-abc', pid: 4242, startedAt: '2025-06-01T00:00:00.000Z', command: 'drill',
  host: 'h1', bootId: 'boot-1', pidNs: 'pid:[1]', procStart: '1000', ...over,
});
const dead = (): PidProbe => ({ alive: false });
const alive = (start = '1000') => (): PidProbe => ({ alive: true, start });

describe('drill folder markers', () => {
  it('parseMarker accepts only our marker, and only in the folder it names', () => {
    const m = marker({ server: { pid: 4243, start: '1001' } });
    expect(parseMarker(JSON.stringify(m), m.dir)).toEqual(m);
    expect(parseMarker(JSON.stringify(m), '/tmp/rdb-archiver-drill-other')).toBeUndefined(); // copied elsewhere
    expect(parseMarker(JSON.stringify({ ...m, tool: 'something' }), m.dir)).toBeUndefined();
    expect(parseMarker('{"pid": 1', m.dir)).toBeUndefined();
    expect(parseMarker(JSON.stringify({ ...m, pid: 'x' }), m.dir)).toBeUndefined();
    const own = markerFor('/d');
    expect(own).toMatchObject({ tool: 'rdb-archiver-drill', dir: '/d', pid: process.pid, command: 'drill' });
    expect(parseMarker(JSON.stringify(own), '/d')).toEqual(own);
  });

  it('a drill is dead when provably so here (pid gone or reused), else only when its heartbeat stopped for the lease', () => {
    expect(judgeDrill(marker(), here, dead, 0).stale).toBe(true);
    expect(judgeDrill(marker(), here, alive('2000'), 0).stale).toBe(true); // the pid is another process now
    expect(judgeDrill(marker(), here, alive('1000'), 0).stale).toBe(false); // running
    expect(judgeDrill(marker(), here, alive('1000'), DRILL_LEASE_MS + 1).stale).toBe(true); // hung: lease over
    // Another PID namespace (a container), boot or host: a dead-looking pid means nothing.
    for (const other of [{ pidNs: 'pid:[2]' }, { bootId: 'boot-2' }, { host: 'h2' }]) {
      expect(judgeDrill(marker(other), here, dead, 60_000).stale).toBe(false);
      expect(judgeDrill(marker(other), here, dead, DRILL_LEASE_MS + 1).stale).toBe(true);
    }
    // A marker without its identity: by its lease only.
    expect(judgeDrill(marker({ host: undefined }), here, dead, 0).stale).toBe(false);
    expect(judgeDrill(marker({ host: undefined }), here, dead, DRILL_LEASE_MS + 1).stale).toBe(true);
  });

  it('the server is tied to us through setpriv --pdeathsig KILL when there is one', () => {
    expect(tiedToUs('/usr/bin/redis-server', ['--port', '0'], '/usr/bin/setpriv')).toEqual(['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', '/usr/bin/redis-server', '--port', '0']]);
    expect(tiedToUs('/usr/bin/redis-server', ['--port', '0'], null)).toEqual(['/usr/bin/redis-server', ['--port', '0']]);
  });
});
