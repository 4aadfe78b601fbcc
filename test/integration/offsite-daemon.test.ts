/**
 * The daemon with a remote configured, through the real CLI: each tick
 * uploads what it archived; a dead remote never stops local archiving (the
 * events wait, unattended ticks back off); once the remote is back, `push`
 * uploads what waits and the daemon's next ticks upload again.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { msg, startCli } from '../helpers/daemon.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { remoteYaml, s3Env, startS3, type S3Server } from '../helpers/s3.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

const WAIT = 60_000; // generous: the machine may be loaded; never a timing assertion

describe('daemon with a remote', () => {
  it('each tick uploads; a dead remote leaves events pending while local archiving goes on; after recovery they all reach the remote', async () => {
    const proxy = await startFaultProxy(s3.port);
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
    env.writeConfig({ extra: `schedule: "* * * * * *"\nmonitor:\n  warn_age: 1000w\n  crit_age: 1000w\n${remoteYaml({ endpoint: proxy.endpoint, prefix: `d-${process.pid}/`, extra: ['timeout: 20s'] })}` });
    const env3 = s3Env();
    const list = async () => jsonOf<{ events: Array<{ ts: string }> }>(await runCli(['list', '--remote', 'offsite', '--json', '-c', env.config], { env: env3 })).events.map((e) => e.ts);

    writeSnapshot(env.source, { seed: 'd1', mtime: new Date('2025-10-01T10:00:00Z') });
    const d = startCli(['daemon', '-c', env.config], env3);
    await d.waitForLog(msg('event uploaded off-site', { ts: '2025-10-01T10-00-00', remote: 'offsite' }), WAIT, 'the first tick uploads');

    // The remote dies: the next snapshot is archived locally all the same, and waits.
    proxy.setRule(() => ({ kind: 'error', status: 500, code: 'InternalError', message: 'We encountered an internal error.' }));
    writeSnapshot(env.source, { seed: 'd2', mtime: new Date('2025-10-01T11:00:00Z') });
    await d.waitForLog(msg('snapshot archived', { ts: '2025-10-01T11-00-00' }), WAIT, 'local archiving while the remote is dead');
    await d.waitForLog(msg('off-site upload failed; the event stays pending', { remote: 'offsite' }), WAIT, 'the failed upload');
    // Later ticks do not hammer the dead remote: they back off, and archive locally.
    await d.waitForLog(msg('off-site upload postponed: the remote failed recently (backoff)', { remote: 'offsite' }), WAIT, 'backoff');
    writeSnapshot(env.source, { seed: 'd3', mtime: new Date('2025-10-01T12:00:00Z') });
    await d.waitForLog(msg('snapshot archived', { ts: '2025-10-01T12-00-00' }), WAIT, 'a second local snapshot while the remote is dead');
    const status = jsonOf<{ remotes: Array<{ pending: number; lastError: { message: string } | null }> }>(await runCli(['status', '--json', '-c', env.config], { env: env3 }));
    expect(status.remotes[0]!.pending).toBe(2);
    expect(status.remotes[0]!.lastError?.message).toMatch(/HTTP 500/);

    // The remote is back: `push` (beside the running daemon) uploads what waits, oldest first,
    // and clears the backoff, so the daemon's next tick uploads its new snapshot itself.
    proxy.setRule(() => ({ kind: 'pass' }));
    const push = await runCli(['push', '--json', '-c', env.config], { env: env3 });
    expect(push.code, push.stdout + push.stderr).toBe(0);
    expect(jsonOf(push)).toMatchObject({ remotes: [{ remote: 'offsite', uploaded: ['2025-10-01T11-00-00', '2025-10-01T12-00-00'], pending: [] }] });
    writeSnapshot(env.source, { seed: 'd4', mtime: new Date('2025-10-01T13:00:00Z') });
    await d.waitForLog(msg('event uploaded off-site', { ts: '2025-10-01T13-00-00', remote: 'offsite' }), WAIT, 'a daemon tick uploads again');

    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    expect(await list()).toEqual(['2025-10-01T13-00-00', '2025-10-01T12-00-00', '2025-10-01T11-00-00', '2025-10-01T10-00-00']);
    const check = await runCli(['check', '-c', env.config], { env: env3 });
    expect(check.code, check.stdout).toBe(0);
    await proxy.close();
  }, 300_000);
});
