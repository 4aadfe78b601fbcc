/**
 * An in-process FIFO between the watcher and the worker.
 *
 * Jobs run one at a time, in order, and none is dropped. Pushing a job equal
 * (by key) to one still waiting collapses into it, so repeated detections of
 * the same change become one job. Each push returns that job's outcome.
 */
interface Pending<J, R> {
  job: J;
  key: string;
  resolve: (value: R) => void;
  reject: (reason: unknown) => void;
  promise: Promise<R>;
}

export class JobQueue<J, R> {
  private readonly waiting: Pending<J, R>[] = [];
  private running = false;

  constructor(
    private readonly work: (job: J) => Promise<R>,
    private readonly keyOf: (job: J) => string,
  ) {}

  get size(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  push(job: J): Promise<R> {
    const key = this.keyOf(job);
    const same = this.waiting.find((p) => p.key === key);
    if (same) return same.promise;
    let resolve!: (value: R) => void;
    let reject!: (reason: unknown) => void;
    const promise = new Promise<R>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.waiting.push({ job, key, resolve, reject, promise });
    if (!this.running) void this.drain();
    return promise;
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      for (let next = this.waiting.shift(); next; next = this.waiting.shift()) {
        try {
          next.resolve(await this.work(next.job));
        } catch (err) {
          next.reject(err);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
