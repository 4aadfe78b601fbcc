/**
 * RESP2, the Redis wire protocol, as much of it as a backup client needs:
 * encode a command, parse one reply from a buffer. Pure functions; the
 * connection (connection.ts) owns the socket.
 *
 * Our own rather than a client library's: the replication payload that
 * follows PSYNC is not RESP (a `$<len>` or `$EOF:<mark>` header, then raw
 * bytes, possibly gigabytes), so the connection must stop parsing and hand
 * the socket's bytes to the archive pass. node-redis, ioredis and iovalkey
 * keep their own read buffers and parsers attached to the socket and offer
 * no supported way to take it over mid-stream; a small reader avoids
 * fighting them (and loads nothing for users of a local file).
 */

export type Reply = string | number | null | Reply[] | ReplyError;

/** An error reply (`-ERR ...`, `-NOPERM ...`): a value, so a caller decides what it means. */
export class ReplyError {
  constructor(readonly message: string) {}
  /** The first word: ERR, WRONGPASS, NOPERM, NOAUTH, LOADING... */
  get code(): string {
    return this.message.split(' ', 1)[0] ?? '';
  }
}

/** A reply larger than this is refused: INFO and CLUSTER NODES are kilobytes; only a broken peer sends more. */
export const MAX_REPLY_BYTES = 64 * 1024 * 1024;

export class ProtocolError extends Error {}

/** Parses one reply starting at `pos`; undefined when the buffer does not hold all of it yet. */
export function parseReply(buf: Buffer, pos = 0): { value: Reply; end: number } | undefined {
  if (pos >= buf.length) return undefined;
  const lineEnd = buf.indexOf('\r\n', pos);
  if (lineEnd < 0) {
    if (buf.length - pos > 64 * 1024) throw new ProtocolError('reply line longer than 64 KiB: not a Redis server?');
    return undefined;
  }
  const type = buf[pos]!;
  const line = buf.toString('latin1', pos + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case 0x2b: // +
      return { value: line, end: next };
    case 0x2d: // -
      return { value: new ReplyError(buf.toString('utf8', pos + 1, lineEnd)), end: next };
    case 0x3a: // :
      return { value: integerOf(line), end: next };
    case 0x24: { // $
      const len = integerOf(line);
      if (len < 0) return { value: null, end: next };
      if (len > MAX_REPLY_BYTES) throw new ProtocolError(`bulk reply of ${len} bytes is larger than ${MAX_REPLY_BYTES}`);
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case 0x2a: { // *
      const count = integerOf(line);
      if (count < 0) return { value: null, end: next };
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, at);
        if (!item) return undefined;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new ProtocolError(`unexpected reply type byte 0x${type.toString(16)}: not a Redis server?`);
  }
}

function integerOf(text: string): number {
  if (!/^-?\d+$/.test(text)) throw new ProtocolError(`"${text.slice(0, 40)}" is not an integer`);
  return Number(text);
}

export function encodeCommand(args: ReadonlyArray<string | number>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** INFO's text as key -> value ("# Section" lines and blank lines skipped). */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** What follows PSYNC/SYNC: `+FULLRESYNC <replid> <offset>`, then `$<len>` or `$EOF:<40-byte mark>`. */
export type PayloadHeader = { kind: 'length'; bytes: number } | { kind: 'eof'; mark: Buffer };

export const EOF_MARK_BYTES = 40;

/** Parses a `$...` payload header line (without its CRLF). */
export function parsePayloadHeader(line: string): PayloadHeader {
  if (line.startsWith('$EOF:')) {
    const mark = line.slice(5);
    if (mark.length !== EOF_MARK_BYTES) throw new ProtocolError(`diskless payload mark has ${mark.length} bytes, not ${EOF_MARK_BYTES}`);
    return { kind: 'eof', mark: Buffer.from(mark, 'latin1') };
  }
  const m = /^\$(\d+)$/.exec(line);
  if (!m) throw new ProtocolError(`expected the payload header $<length> or $EOF:<mark>, got "${line.slice(0, 60)}"`);
  return { kind: 'length', bytes: Number(m[1]) };
}

/** `+FULLRESYNC <replid> <offset>` -> its fields; undefined for any other line. */
export function parseFullResync(line: string): { replid: string; offset: number } | undefined {
  const m = /^\+FULLRESYNC ([0-9a-zA-Z]+) (\d+)$/.exec(line);
  return m ? { replid: m[1]!, offset: Number(m[2]) } : undefined;
}
