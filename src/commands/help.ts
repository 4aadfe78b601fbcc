/**
 * The end of every command's --help: one or two examples and the exit codes
 * the command can return, from one table (COMMAND_HELP) keyed by the
 * command's path ("once", "config check"). buildProgram() applies it to every
 * registered command (addCommandHelp).
 *
 * Adding a command: add its entry here. test/integration/help.test.ts walks
 * every command of the real CLI and fails for one without examples or exit
 * codes, and for a README.md whose block for it differs from --help
 * (`npm run readme:help` rewrites those blocks from the built CLI).
 *
 * Exit codes come from the one table in src/core/errors.ts (EXIT_CODE_MEANINGS):
 * an entry lists codes, not meanings; only a meaning of the command's own
 * (verify's 1, check's plugin codes) is spelled out here.
 */
import type { Command } from 'commander';
import { EXIT_CODE_MEANINGS, ExitCode, type ExitCodeValue } from '../core/errors.js';

export interface CommandHelp {
  /** [command line, what it does]: one or two. */
  examples: ReadonlyArray<readonly [string, string]>;
  /** Codes from the shared table, or [code, meaning] where the command gives a code a meaning of its own. */
  exitCodes: ReadonlyArray<ExitCodeValue | readonly [number, string]>;
  /** A line after the exit codes. */
  note?: string;
}

/** The text withHelp() appends to a command's --help. */
export function helpEpilogue(help: CommandHelp): string {
  const lines = ['Examples:'];
  for (const [line, what] of help.examples) lines.push(`  $ ${line}`, `      ${what}`);
  lines.push('', 'Exit codes:');
  for (const entry of help.exitCodes) {
    const [code, meaning] = typeof entry === 'number' ? [entry, EXIT_CODE_MEANINGS[entry]] : entry;
    lines.push(`  ${String(code).padEnd(3)} ${meaning}`);
  }
  if (help.note) lines.push(help.note);
  return lines.join('\n');
}

const { OK, NO_SPACE, CONFIG, INVALID_SOURCE, NO_SOURCE, SOURCE_NETWORK, NO_ARCHIVE, INTERNAL, SOURCE_SAVE, CONFLICT, IO, TEMPFAIL, IDENTITY, OFFSITE, PERMISSION, SOURCE_AUTH, NEWEST_BAD, DRILL_VERSION, ARCHIVE_BAD } = ExitCode;

/** The examples and exit codes of the program itself ("") and of each command, by path. */
export const COMMAND_HELP: Record<string, CommandHelp> = {
  '': {
    examples: [
      ['rdb-archiver once -c /etc/rdb-archiver/config.yaml', 'archive dump.rdb if it changed, then prune (what cron and the timer run)'],
      ['rdb-archiver status', 'what is archived, and how the last run went'],
    ],
    exitCodes: [OK, NO_SPACE, CONFIG, INVALID_SOURCE, NO_SOURCE, IDENTITY, SOURCE_NETWORK, NO_ARCHIVE, INTERNAL, SOURCE_SAVE, CONFLICT, IO, TEMPFAIL, OFFSITE, PERMISSION, SOURCE_AUTH, NEWEST_BAD, DRILL_VERSION, ARCHIVE_BAD],
    note: 'Some commands give codes a meaning of their own (config check, verify, restore, drill, push, daemon;\ncheck follows the monitoring-plugin convention): see `rdb-archiver <command> --help`.',
  },
  once: {
    examples: [
      ['rdb-archiver once -c /etc/rdb-archiver/config.yaml', 'archive dump.rdb if it changed since the last run, then apply retention'],
      ['rdb-archiver once --dry-run', 'show what would be archived and deleted, and uploaded and deleted off-site; write nothing'],
    ],
    exitCodes: [[OK, 'OK: archived, or nothing to do'], NO_SPACE, CONFIG, INVALID_SOURCE, NO_SOURCE, SOURCE_NETWORK, NO_ARCHIVE, INTERNAL, SOURCE_SAVE, CONFLICT, IO, TEMPFAIL,
      [OFFSITE, 'archived locally, but an off-site copy is still pending (a remote failed or is in backoff), or remote retention failed'], PERMISSION, SOURCE_AUTH,
      [ARCHIVE_BAD, 'archived (or nothing new), but an archived event is known bad: verification found it damaged, or the last restore drill could not load it; every run says so until it is pruned, replaced or found good again (beats 76)']],
    note: 'Several instances, or the shards of a cluster (source.redis cluster: true: one event per shard,\n--dry-run lists the shards and masters): each runs on its own and the worst code wins (a failure\nof a run, then 81, then 76, then 75, then 0). --instance NAME:SHARD runs one shard (e.g. cache:slots-0-5460).',
  },
  push: {
    examples: [
      ['rdb-archiver push', 'upload every event still pending for the remotes now (no backoff), then apply their retention'],
      ['rdb-archiver push --remote offsite --json', 'one remote, as JSON'],
    ],
    exitCodes: [[OK, 'OK: nothing is left pending'], CONFIG, INTERNAL, IO, [OFFSITE, 'events are still pending: the remote failed (unreachable, timeout, missing bucket, server error)'],
      [PERMISSION, 'the remote refused the credentials or the permission (or a local permission error)']],
  },
  prune: {
    examples: [
      ['rdb-archiver prune --dry-run', 'every keep and delete with its reason; delete nothing'],
      ['rdb-archiver prune --remote offsite --dry-run', 'the remote\'s retention plan with reasons; delete nothing'],
    ],
    exitCodes: [OK, NO_SPACE, CONFIG, NO_ARCHIVE, INTERNAL, IO, [TEMPFAIL, 'try again later: another run holds the lock'], [OFFSITE, '--remote: the remote failed; nothing more was deleted'], PERMISSION],
  },
  list: {
    examples: [
      ['rdb-archiver list', 'every archived event per rule, newest first'],
      ['rdb-archiver list --remote offsite --identity /root/restore-key.txt', 'the complete events at an off-site remote, their encoding (e.g. zstd+age), and whether this age identity opens each encrypted one'],
    ],
    exitCodes: [OK, CONFIG, [IDENTITY, '--identity: the identity file is unreadable or holds no age identity'], INTERNAL, IO, [OFFSITE, '--remote: the remote failed'], [PERMISSION, 'permission denied (with --remote: the remote refused the credentials)']],
    note: 'On a rescue host, --archive DIR alone is enough (no config, no source): every rule folder is found from the archive\'s index or by scanning.',
  },
  verify: {
    examples: [
      ['rdb-archiver verify', 're-check every archived event (sha256 sidecar and RDB CRC-64)'],
      ['rdb-archiver verify --remote offsite --read-data --identity /root/restore-key.txt', 'download every remote event, decrypt it, recompute sha256 and the RDB CRC-64 (without --identity: encrypted events are checked as stored bytes only, and it says so)'],
    ],
    exitCodes: [[OK, 'OK: every event checked is intact'], [1, 'an archived event is bad (they are listed, once per file: hard links share a line)'], CONFIG, [NO_SOURCE, 'TS names no archived event'],
      [IDENTITY, '--identity: unreadable, no age identity, or none of its keys opens an encrypted event'], INTERNAL, IO, [OFFSITE, '--remote: the remote failed'], [PERMISSION, 'permission denied (with --remote: the remote refused the credentials)']],
    note: 'With a config, the result is recorded in the state (as the scheduled verification\'s), so check, status, the metrics and once know it.\n'
      + 'On a rescue host, --archive DIR alone is enough (no config, no source): every rule folder is found from the archive\'s index or by scanning,\n'
      + 'and nothing is written.',
  },
  restore: {
    examples: [
      ['rdb-archiver restore latest --to /var/tmp/restore/', 'verify the newest event and write it as /var/tmp/restore/dump.rdb'],
      ['rdb-archiver restore latest --from offsite --identity /root/restore-key.txt --to /var/tmp/restore/', 'download the most recently archived complete remote event, decrypting with this age identity (when encrypted) and verifying while streaming'],
    ],
    exitCodes: [[OK, 'OK: restored and verified'], NO_SPACE, CONFIG, [INVALID_SOURCE, 'the event fails verification (with latest: no event passes; with --from: its stored bytes were changed); nothing is written'],
      [NO_SOURCE, 'no such event; or latest: the event archived last lost its .rdb or archive record (older data is refused without --fallback)'],
      [IDENTITY, '--from: the event is encrypted and no identity was given, or none of its keys opens it; nothing is written'], INTERNAL, [CONFLICT, 'the target exists and --force was not given'], IO, [OFFSITE, '--from: the remote failed; nothing is written'], [PERMISSION, 'permission denied (with --from: the remote refused the credentials)'],
      [NEWEST_BAD, 'latest: the newest event fails verification; the message names the newest that passes (add --fallback); nothing is written']],
    note: 'On a rescue host, --archive DIR alone is enough (no config, no source): every rule folder is found from the archive\'s index or by scanning.',
  },
  drill: {
    examples: [
      ['rdb-archiver drill', 'load the newest event into a throwaway redis-server; report load time, DBSIZE, keyspace and DEBUG DIGEST'],
      ['rdb-archiver drill 2025-02-24T23-59-00 --archive /mnt/backup/redis --json', 'drill one event on a rescue host, from the archive alone'],
    ],
    exitCodes: [[OK, 'OK: the event loaded'], [NO_SPACE, 'not enough space in the drill folder for a copy of the event'], [CONFIG, 'usage or configuration error; also: no redis-server or valkey-server (set drill.server)'],
      [INVALID_SOURCE, 'the event failed verification or the server could not load it'], [NO_SOURCE, 'no such event'], INTERNAL, [IO, 'I/O error, or the server could not be started or did not finish loading in drill.timeout'],
      [TEMPFAIL, 'stopped by SIGTERM/SIGINT (the server was stopped and its folder removed)'], [DRILL_VERSION, 'the event\'s RDB version is newer than the local server can load (not corruption)']],
  },
  daemon: {
    examples: [
      ['rdb-archiver daemon -c /etc/rdb-archiver/config.yaml', 'run the once cycle on the config\'s schedule (default: every minute)'],
      ["rdb-archiver daemon --watch --schedule '*/30 * * * * *'", 'archive each save within watch_debounce of Redis finishing it (inotify), and every 30 seconds as the fallback (6 fields: seconds first)'],
    ],
    exitCodes: [[OK, 'stopped by SIGTERM/SIGINT (a failed tick never stops the daemon)'], [1, 'an aborted job did not stop within 10 s of a second signal or the shutdown timeout'], CONFIG, INTERNAL,
      [PERMISSION, 'at start-up: the archive root belongs to another user (see --allow-owner-mismatch)']],
  },
  status: {
    examples: [
      ['rdb-archiver status', 'last run, last snapshot, source, events and bytes per rule, free space'],
      ['rdb-archiver status --json', 'the same as one JSON object'],
    ],
    exitCodes: [OK, CONFIG, INTERNAL, [IO, 'a rule folder could not be read (I/O error)'], [PERMISSION, 'a rule folder could not be read (permission denied)']],
  },
  check: {
    examples: [
      ['rdb-archiver check --warn-age 2h --crit-age 6h', 'one line with perf data for Nagios, Icinga, Sensu or monit'],
      ['rdb-archiver check --json', 'the same as one JSON object; the exit code is the same'],
    ],
    exitCodes: [[0, 'OK'], [1, 'WARNING'], [2, 'CRITICAL'], [3, 'UNKNOWN (a config or usage error included)']],
  },
  config: {
    examples: [['rdb-archiver config check', 'validate the config and check it can run here, as this user']],
    exitCodes: [[OK, 'OK: no errors (warnings may be listed)'], [1, 'a check found an error (each is listed with its fix)'], CONFIG, INTERNAL],
  },
  'config check': {
    examples: [
      ['rdb-archiver config check -c /etc/rdb-archiver/config.yaml', 'settings, then ok / WARNING / ERROR per check with the fix (run it as the service\'s user)'],
      ['rdb-archiver config check --json', 'the settings and the findings as one JSON object'],
    ],
    exitCodes: [[OK, 'OK: no errors (warnings may be listed)'], [1, 'a check found an error (each is listed with its fix)'], CONFIG, INTERNAL],
  },
};

/** The command's path below the program: "" for the program, "once", "config check". */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Appends each command's examples and exit codes (COMMAND_HELP) to its --help, the program's and every subcommand's. */
export function addCommandHelp(program: Command): void {
  const visit = (cmd: Command) => {
    const help = COMMAND_HELP[commandPath(cmd)];
    // A function: the text is built only when --help is asked for, not on every run.
    if (help) cmd.addHelpText('after', () => `\n${helpEpilogue(help)}`);
    for (const sub of cmd.commands) visit(sub);
  };
  visit(program);
}
