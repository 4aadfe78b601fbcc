/**
 * The `once` run of every selected instance, in config order: a cluster
 * instance (source.redis cluster: true) as its discovered shards
 * (cluster-run.ts), every other instance as one cycle. One instance's (or
 * shard's) failure never stops the others; the caller combines the exit
 * codes (the worst one wins: core/context.ts worstExitCode).
 */
import type { Config } from '../core/config.js';
import { runOnce, type CycleDeps, type RunReport } from './cycle.js';

export async function runConfigured(
  deps: CycleDeps,
  config: Pick<Config, 'configured' | 'onlyShard'>,
  options: { dryRun: boolean; force: boolean },
  /** Only these configured instances (the daemon's job); default: all. */
  names?: readonly string[],
): Promise<Array<{ instance: string; report: RunReport }>> {
  const results: Array<{ instance: string; report: RunReport }> = [];
  for (const instance of config.configured) {
    if (names && !names.includes(instance.name)) continue;
    if (instance.redis?.cluster) {
      const { runClusterOnce } = await import('./cluster-run.js');
      results.push(...await runClusterOnce(deps, instance, { ...options, ...(config.onlyShard ? { only: config.onlyShard } : {}) }));
    } else {
      results.push({ instance: instance.name, report: await runOnce(deps, instance, options) });
    }
  }
  return results;
}
