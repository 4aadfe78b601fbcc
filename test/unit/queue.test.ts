import { describe, expect, it } from 'vitest';
import { JobQueue } from '../../src/pipeline/queue.js';

interface Job {
  id: number;
  key?: string;
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 0));
const keyOf = (j: Job) => j.key ?? `job-${j.id}`;

describe('JobQueue', () => {
  it('runs jobs in FIFO order and resolves each push with its own result', async () => {
    const order: number[] = [];
    const q = new JobQueue<Job, string>(async (j) => {
      order.push(j.id);
      await tick();
      return `done ${j.id}`;
    }, keyOf);
    const results = await Promise.all([1, 2, 3, 4, 5].map((id) => q.push({ id })));
    expect(order).toEqual([1, 2, 3, 4, 5]);
    expect(results).toEqual(['done 1', 'done 2', 'done 3', 'done 4', 'done 5']);
  });

  it('runs one job at a time', async () => {
    let active = 0;
    let maxActive = 0;
    const q = new JobQueue<Job, number>(async (j) => {
      active += 1;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, j.id % 3));
      await tick();
      active -= 1;
      return j.id;
    }, keyOf);
    const pushes = Array.from({ length: 30 }, (_, id) => q.push({ id }));
    expect(q.size).toBe(30);
    await Promise.all(pushes);
    expect(maxActive).toBe(1);
    expect(active).toBe(0);
    expect(q.size).toBe(0);
  });

  it('does not start the next job before the previous one settled', async () => {
    const events: string[] = [];
    const gate = deferred();
    const q = new JobQueue<Job, void>(async (j) => {
      events.push(`start ${j.id}`);
      if (j.id === 1) await gate.promise;
      events.push(`end ${j.id}`);
    }, keyOf);
    const p1 = q.push({ id: 1 });
    const p2 = q.push({ id: 2 });
    await tick();
    await tick();
    expect(events).toEqual(['start 1']);
    gate.resolve();
    await Promise.all([p1, p2]);
    expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
  });

  it('never drops a job under many pushes', async () => {
    const seen: number[] = [];
    const q = new JobQueue<Job, number>(async (j) => {
      seen.push(j.id);
      if (j.id % 97 === 0) await tick();
      return j.id * 2;
    }, keyOf);
    const n = 2000;
    const results = await Promise.all(Array.from({ length: n }, (_, id) => q.push({ id })));
    expect(seen).toEqual(Array.from({ length: n }, (_, id) => id));
    expect(results).toEqual(Array.from({ length: n }, (_, id) => id * 2));
  });

  it('runs jobs pushed while another is running, and from inside a job', async () => {
    const order: number[] = [];
    let q!: JobQueue<Job, number>;
    const inner: Promise<number>[] = [];
    q = new JobQueue<Job, number>(async (j) => {
      order.push(j.id);
      await tick(); // by now job 2 has been pushed too
      if (j.id === 1) inner.push(q.push({ id: 3 }));
      return j.id;
    }, keyOf);
    const p1 = q.push({ id: 1 });
    const p2 = q.push({ id: 2 });
    expect(await p1).toBe(1);
    expect(await p2).toBe(2);
    expect(await inner[0]).toBe(3);
    expect(order).toEqual([1, 2, 3]);
  });

  it('starts again after it went idle', async () => {
    const order: number[] = [];
    const q = new JobQueue<Job, number>(async (j) => {
      order.push(j.id);
      return j.id;
    }, keyOf);
    expect(await q.push({ id: 1 })).toBe(1);
    await tick();
    expect(q.size).toBe(0);
    expect(await q.push({ id: 2 })).toBe(2);
    expect(order).toEqual([1, 2]);
  });

  it('collapses identical pending jobs into one (same promise, one run)', async () => {
    const gate = deferred();
    const runs: Job[] = [];
    const q = new JobQueue<Job, string>(async (j) => {
      runs.push(j);
      if (j.id === 0) await gate.promise;
      return `ran ${j.id}`;
    }, keyOf);
    const running = q.push({ id: 0, key: 'busy' });
    const a = q.push({ id: 1, key: 'src@mtime1' });
    const b = q.push({ id: 2, key: 'src@mtime1' });
    const c = q.push({ id: 3, key: 'src@mtime1' });
    const other = q.push({ id: 4, key: 'src@mtime2' });
    expect(b).toBe(a);
    expect(c).toBe(a);
    expect(other).not.toBe(a);
    expect(q.size).toBe(3); // running + two distinct pending
    gate.resolve();
    expect(await running).toBe('ran 0');
    expect(await a).toBe('ran 1');
    expect(await b).toBe('ran 1');
    expect(await other).toBe('ran 4');
    // the first of the identical jobs is the one that runs, in its place in the queue
    expect(runs.map((j) => j.id)).toEqual([0, 1, 4]);
  });

  it('does not collapse into the job that is already running (it may have read an older state)', async () => {
    const gate = deferred();
    let runs = 0;
    const q = new JobQueue<Job, number>(async () => {
      runs += 1;
      if (runs === 1) await gate.promise;
      return runs;
    }, keyOf);
    const first = q.push({ id: 1, key: 'same' });
    await tick();
    const second = q.push({ id: 2, key: 'same' });
    expect(second).not.toBe(first);
    gate.resolve();
    expect(await first).toBe(1);
    expect(await second).toBe(2);
    expect(runs).toBe(2);
  });

  it('runs an identical job again once the earlier one has finished', async () => {
    let runs = 0;
    const q = new JobQueue<Job, number>(async () => ++runs, keyOf);
    expect(await q.push({ id: 1, key: 'k' })).toBe(1);
    expect(await q.push({ id: 1, key: 'k' })).toBe(2);
  });

  it('a failing job rejects only its own promise; later jobs still run', async () => {
    const order: number[] = [];
    const q = new JobQueue<Job, number>(async (j) => {
      order.push(j.id);
      await tick();
      if (j.id === 2) throw new Error('job 2 failed');
      return j.id;
    }, keyOf);
    const p1 = q.push({ id: 1 });
    const p2 = q.push({ id: 2 });
    const p3 = q.push({ id: 3 });
    const settled = await Promise.allSettled([p1, p2, p3]);
    expect(settled[0]).toEqual({ status: 'fulfilled', value: 1 });
    expect(settled[1]).toMatchObject({ status: 'rejected', reason: { message: 'job 2 failed' } });
    expect(settled[2]).toEqual({ status: 'fulfilled', value: 3 });
    expect(order).toEqual([1, 2, 3]);
    // and the queue still works afterwards
    expect(await q.push({ id: 4 })).toBe(4);
  });

  it('a job that throws synchronously rejects its promise and does not stop the queue', async () => {
    const q = new JobQueue<Job, number>((j) => {
      if (j.id === 1) throw new Error('sync boom');
      return Promise.resolve(j.id);
    }, keyOf);
    const p1 = q.push({ id: 1 });
    const p2 = q.push({ id: 2 });
    await expect(p1).rejects.toThrow('sync boom');
    expect(await p2).toBe(2);
  });

  it('a rejection with a non-Error value is passed through unchanged', async () => {
    const q = new JobQueue<Job, number>(async () => {
      throw 'plain string';
    }, keyOf);
    await expect(q.push({ id: 1 })).rejects.toBe('plain string');
  });

  it('collapsed pushes all see the failure of their shared job', async () => {
    const gate = deferred();
    const q = new JobQueue<Job, number>(async (j) => {
      if (j.id === 0) await gate.promise;
      if (j.key === 'bad') throw new Error('shared failure');
      return j.id;
    }, keyOf);
    const first = q.push({ id: 0 });
    const a = q.push({ id: 1, key: 'bad' });
    const b = q.push({ id: 2, key: 'bad' });
    const after = q.push({ id: 3 });
    gate.resolve();
    await expect(a).rejects.toThrow('shared failure');
    await expect(b).rejects.toThrow('shared failure');
    expect(await first).toBe(0);
    expect(await after).toBe(3);
  });
});
