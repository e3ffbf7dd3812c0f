/**
 * vmaregexscan: a regular expression over the memory of every process (Volatility's
 * linux.vmaregexscan): every readable mapping, read through /proc/PID/mem in chunks of at
 * most one batch (3 MiB) with a 4 KiB lookahead, so a match across a chunk boundary is
 * found once; a match longer than the lookahead may be cut at a boundary.
 *
 * The pattern is a JavaScript regular expression applied to the bytes as Latin-1 (each
 * byte one character, no `u` flag): ASCII text matches itself, `\xNN` matches byte NN, `.`
 * any byte but newline, as Volatility's Python bytes patterns do.
 *
 * Bounded: `--max-scan` MiB per run (default 128, and within `--max-read`), `--max-matches`
 * rows; what was not scanned is named in a warning (metadata `vmi.errors` and stderr).
 * Progress on stderr every 16 MiB (with --timing).
 *
 * Cost: 1 batch for the process listing (none with --pid), 1 for comm and maps, then
 * ⌈scanned bytes / 3 MiB⌉ batches (a few more where regions end mid-batch).
 */
import {
  bytesToText,
  definePlugin,
  hexBytes,
  MAX_MATCHES_OPTION,
  MAX_SCAN_OPTION,
  PID_OPTION,
  scanForMatches,
  scanTargets,
  type Row,
} from '../sdk/index.js';

const columns = [
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  { name: 'Offset', type: 'hex64', description: 'Virtual address of the match in the process' },
  { name: 'Text', type: 'utf8', description: 'The match (at most --maxsize bytes), as byte text' },
  { name: 'Hex', type: 'utf8', description: 'The same bytes in hex' },
  {
    name: 'Path',
    type: 'utf8',
    description: 'The mapping the match is in: file, [heap], [stack]…; empty if anonymous',
  },
] as const;

export const vmaregexscan = definePlugin({
  name: 'vmaregexscan',
  volatilityName: 'linux.vmaregexscan',
  description: "Scans the processes' memory for a regular expression",
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    pattern: {
      type: 'string',
      description: 'The regular expression (JavaScript syntax, over bytes as Latin-1)',
    },
    maxsize: { type: 'integer', default: 128, description: 'Bytes of a match shown at most (default 128)' },
    'max-scan': MAX_SCAN_OPTION,
    'max-matches': MAX_MATCHES_OPTION,
  },
  async run(ctx) {
    const { pattern, maxsize } = ctx.options;
    if (pattern === undefined || pattern === '') throw new Error('vmaregexscan: --pattern is required');
    let re: RegExp;
    try {
      re = new RegExp(pattern, 'g');
    } catch (e) {
      throw new Error(`vmaregexscan: bad --pattern: ${(e as Error).message}`, { cause: e });
    }
    if (!Number.isSafeInteger(maxsize) || maxsize < 1 || maxsize > 65536)
      throw new RangeError(`vmaregexscan: --maxsize must be 1..65536, got ${maxsize}`);
    const targets = await scanTargets(ctx, ctx.options.pid);
    const opts = {
      maxScanMiB: ctx.options['max-scan'],
      maxMatches: ctx.options['max-matches'],
      label: 'regex scan',
    };
    return scanForMatches(ctx, targets, opts, function* (chunk): Generator<Row<typeof columns>> {
      const text = Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength).toString(
        'latin1',
      );
      re.lastIndex = 0;
      let m: RegExpExecArray | null;
      while ((m = re.exec(text)) !== null) {
        if (m[0].length === 0) re.lastIndex++;
        if (m.index >= chunk.reportable) return;
        const bytes = chunk.data.subarray(m.index, m.index + Math.min(m[0].length, maxsize));
        yield {
          PID: chunk.target.pid,
          Process: chunk.target.comm,
          Offset: chunk.address + BigInt(m.index),
          Text: bytesToText(bytes),
          Hex: hexBytes(bytes),
          Path: chunk.target.region.path,
        };
      }
    });
  },
});
