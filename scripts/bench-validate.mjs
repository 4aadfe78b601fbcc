// `npm run bench` helper: RDB validation alone of one file through
// dist/rdb/validate.js validateRdbFile, as its own process, so that the
// benchmark can time it exactly like `redis-check-rdb FILE`. MODE is the
// validation: crc (header, AUX fields, CRC-64) or full (also the structural
// walk of every opcode and value; the default, as in production).
// Prints one JSON line: {"bytes", "ms" (in-process, validation only), "checksum", "keys"}.
//
//   node scripts/bench-validate.mjs FILE.rdb [path/to/dist/rdb/validate.js] [crc|full]
import { pathToFileURL } from 'node:url';

const [path, rdbModule, mode = 'full'] = process.argv.slice(2);
if (!path) {
  console.error('usage: node scripts/bench-validate.mjs FILE.rdb [path/to/dist/rdb/validate.js]');
  process.exit(2);
}
const { validateRdbFile } = await import(rdbModule ? pathToFileURL(rdbModule).href : new URL('../dist/rdb/validate.js', import.meta.url).href);
const t0 = process.hrtime.bigint();
const info = await validateRdbFile(path, { validation: mode });
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
if (info.checksum !== 'verified') {
  console.error(`${path}: checksum ${info.checksum}`);
  process.exit(1);
}
console.log(JSON.stringify({ bytes: info.bytes, ms, checksum: info.storedCrc, keys: info.structure?.keys ?? null }));
