/**
 * Seeded mutations of RDB files for fuzzing the validator and its structural
 * walk (test/unit/rdb-walker.test.ts, test/reliability/walker.test.ts).
 */
import { InvalidSnapshotError } from '../../src/core/errors.js';
import { RdbValidator, type RdbInfo, type RdbValidatorOptions } from '../../src/rdb/validate.js';
import { chunksOf } from './rdb-builder.js';

/** The outcome of feeding data in the given chunk sizes (null: one chunk): the info, or the rejection reason. Any other error is thrown. */
export function validationOutcome(data: Uint8Array, sizes: readonly number[] | null, options: RdbValidatorOptions = {}): RdbInfo | string {
  const v = new RdbValidator('f.rdb', options);
  for (const c of sizes ? chunksOf(data, sizes) : [data.slice()]) {
    v.update(c);
    c.fill(0xa5); // nothing may look at a chunk after update() returns
  }
  try {
    return v.finish();
  } catch (err) {
    if (err instanceof InvalidSnapshotError) return err.reason;
    throw err;
  }
}

/** One seeded mutation: a truncation, random bytes, a run of zeros or a flipped bit; half the time a zeroed trailer too. */
export function mutate(file: Uint8Array, r: () => number): Uint8Array {
  const kind = Math.floor(r() * 4);
  if (kind === 0) return file.slice(0, Math.floor(r() * file.length));
  const out = file.slice();
  const anywhere = () => 9 + Math.floor(r() * (out.length - 17));
  if (kind === 1) {
    for (let i = 0, n = 1 + Math.floor(r() * 3); i < n; i++) out[anywhere()] = Math.floor(r() * 256);
  } else if (kind === 2) {
    const at = anywhere();
    out.fill(0, at, Math.min(out.length - 8, at + 1 + Math.floor(r() * 100)));
  } else {
    out[anywhere()]! ^= 1 << Math.floor(r() * 8);
  }
  // A checksum of 0 (rdbchecksum no): nothing but the walk can catch the damage then.
  if (r() < 0.5) out.fill(0, out.length - 8);
  return out;
}

/**
 * Validates data whole and in random chunks. Returns the outcome and what
 * went wrong: an exception other than InvalidSnapshotError, outcomes that
 * depend on the chunking (which a read past a chunk's end or a bad carry
 * would cause), or an accepted file not walked to its end.
 */
export function fuzzOne(data: Uint8Array, r: () => number): { outcome: RdbInfo | string; violations: string[] } {
  const violations: string[] = [];
  let whole: RdbInfo | string;
  try {
    whole = validationOutcome(data, null);
  } catch (err) {
    return { outcome: String(err), violations: [`threw ${(err as Error).stack ?? String(err)}`] };
  }
  const sizes = Array.from({ length: 8 }, () => 1 + Math.floor(r() * (r() < 0.5 ? 16 : 4096)));
  try {
    const chunked = validationOutcome(data, sizes);
    if (JSON.stringify(chunked) !== JSON.stringify(whole)) {
      violations.push(`chunks ${sizes.join(',')} gave ${JSON.stringify(chunked).slice(0, 200)}, one chunk ${JSON.stringify(whole).slice(0, 200)}`);
    }
  } catch (err) {
    violations.push(`in chunks ${sizes.join(',')}: threw ${(err as Error).stack ?? String(err)}`);
  }
  if (typeof whole !== 'string' && whole.structure && whole.structure.eofOffset !== data.length - (whole.checksum === 'absent' ? 1 : 9)) {
    violations.push(`accepted, but the walk ended at ${whole.structure.eofOffset} of ${data.length} bytes`);
  }
  return { outcome: whole, violations };
}
