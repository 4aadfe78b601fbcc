/**
 * The daemon's one lane for cycles: schedule ticks and watch triggers never
 * overlap, and a trigger while a cycle runs becomes one follow-up cycle at
 * most (its instances merged), never a queue of them.
 *
 * - A watch trigger while a cycle runs: merged into the follow-up.
 * - A schedule tick while a tick runs: skipped (the daemon's long-standing
 *   rule); while a watch-triggered cycle runs: merged into the follow-up, so
 *   a busy watch never starves the other instances' scheduled cycles.
 * - stop(): the follow-up is dropped and nothing new starts; `running` is
 *   what shutdown waits for.
 */
export type CycleTrigger = 'schedule' | 'watch';

export interface CycleJob {
  trigger: CycleTrigger;
  /** Instance names, in the order given; a merged job keeps the first's order and appends. */
  instances: string[];
}

export type RequestOutcome = 'started' | 'follow-up' | 'skipped' | 'stopped';

export class CycleRunner {
  private current?: { job: CycleJob; promise: Promise<void> };
  private followUp?: CycleJob;
  private stopped = false;

  constructor(private readonly run: (job: CycleJob) => Promise<void>) {}

  /** The cycle running now, if any (shutdown waits for it). */
  get running(): Promise<void> | undefined {
    return this.current?.promise;
  }

  get runningJob(): CycleJob | undefined {
    return this.current?.job;
  }

  get pendingFollowUp(): CycleJob | undefined {
    return this.followUp;
  }

  request(job: CycleJob): RequestOutcome {
    if (this.stopped) return 'stopped';
    if (!this.current) {
      this.start(job);
      return 'started';
    }
    if (job.trigger === 'schedule' && this.current.job.trigger === 'schedule') return 'skipped';
    this.followUp = mergeJobs(this.followUp, job);
    return 'follow-up';
  }

  stop(): void {
    this.stopped = true;
    this.followUp = undefined;
  }

  private start(job: CycleJob): void {
    const promise = (async () => {
      try {
        await this.run(job);
      } catch {
        // run() logs and records its own failures; the lane must stay usable whatever happens
      } finally {
        this.current = undefined;
        const next = this.followUp;
        this.followUp = undefined;
        if (next && !this.stopped) this.start(next);
      }
    })();
    this.current = { job, promise };
  }
}

/** Pure: one job covering both; a schedule tick in it makes it a scheduled cycle. */
export function mergeJobs(a: CycleJob | undefined, b: CycleJob): CycleJob {
  if (!a) return { trigger: b.trigger, instances: [...b.instances] };
  const instances = [...a.instances];
  for (const name of b.instances) if (!instances.includes(name)) instances.push(name);
  return { trigger: a.trigger === 'schedule' || b.trigger === 'schedule' ? 'schedule' : 'watch', instances };
}
