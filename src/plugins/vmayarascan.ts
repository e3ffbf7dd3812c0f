/**
 * vmayarascan: YARA rules over the memory of every process (Volatility's
 * linux.vmayarascan), through YARA-X (VirusTotal's npm package @virustotal/yara-x: YARA-X's Rust
 * engine compiled to WebAssembly, loaded on first use). Rules come from a file (`--yara-file`) or a string
 * (`--yara-string`), Volatility's option names.
 *
 * Every readable mapping is read through /proc/PID/mem in chunks of at most one batch
 * (3 MiB) with a 4 KiB lookahead, and each chunk is scanned on its own: a string match
 * across a chunk boundary is found once; conditions about the whole region (`filesize`,
 * offsets from its start, a string at the end of a 3 MiB chunk far from the others) see
 * one chunk, where Volatility scans a whole VMA at once.
 *
 * Bounded: `--max-scan` MiB per run (default 128, and within `--max-read`), `--max-matches`
 * rows; what was not scanned is named in a warning (metadata `vmi.errors` and stderr).
 *
 * Cost: 1 batch for the process listing (none with --pid), 1 for comm and maps, then
 * ⌈scanned bytes / 3 MiB⌉ batches (a few more where regions end mid-batch).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  bytesToText,
  definePlugin,
  MAX_MATCHES_OPTION,
  MAX_SCAN_OPTION,
  PID_OPTION,
  scanForMatches,
  scanTargets,
  type Row,
} from '../sdk/index.js';

const columns = [
  { name: 'Offset', type: 'hex64', description: 'Virtual address of the match in the process' },
  { name: 'PID', type: 'int32', description: 'Process id' },
  { name: 'Rule', type: 'utf8', description: 'Rule that matched' },
  { name: 'Component', type: 'utf8', description: 'String identifier of the rule that matched ($a…)' },
  { name: 'Value', type: 'utf8', description: 'The matched bytes (at most 256), as byte text' },
  { name: 'Process', type: 'utf8', description: 'Task name (comm)' },
  {
    name: 'Path',
    type: 'utf8',
    description: 'The mapping the match is in: file, [heap], [stack]…; empty if anonymous',
  },
] as const;

/** Bytes of a match shown in Value. */
const MAX_VALUE = 256;
/** Rules source read from --yara-file at most. */
const MAX_RULES_FILE = 16 << 20;

type YaraModule = typeof import('@virustotal/yara-x');
let yaraModule: Promise<YaraModule> | undefined;

/**
 * YARA-X's WebAssembly build, compiled once on first use (synchronously, from the .wasm
 * file beside the module: its default initialiser fetches a URL, which Node cannot do for
 * a file).
 */
function loadYara(): Promise<YaraModule> {
  yaraModule ??= (async () => {
    const m = await import('@virustotal/yara-x');
    const js = createRequire(import.meta.url).resolve('@virustotal/yara-x');
    m.initSync({ module: await readFile(join(dirname(js), 'yara_x_js_bg.wasm')) });
    return m;
  })();
  return yaraModule;
}

/** A rule's match as YARA-X's scan result gives it. */
interface YaraRuleMatch {
  identifier: string;
  patterns: { identifier: string; matches: { offset: number; length: number }[] }[];
}

export const vmayarascan = definePlugin({
  name: 'vmayarascan',
  volatilityName: 'linux.vmayarascan',
  description: "Scans the processes' memory with YARA rules (YARA-X)",
  version: '1.0.0',
  columns,
  options: {
    pid: PID_OPTION,
    'yara-file': { type: 'string', description: 'File of YARA rules' },
    'yara-string': { type: 'string', description: 'YARA rules given inline' },
    'max-scan': MAX_SCAN_OPTION,
    'max-matches': MAX_MATCHES_OPTION,
  },
  async run(ctx) {
    const file = ctx.options['yara-file'];
    const inline = ctx.options['yara-string'];
    if ((file === undefined) === (inline === undefined))
      throw new Error('vmayarascan: give exactly one of --yara-file FILE and --yara-string RULES');
    let source: string;
    if (file !== undefined) {
      const buf = await readFile(file).catch((e: NodeJS.ErrnoException) => {
        throw new Error(`vmayarascan: cannot read --yara-file ${file}: ${e.code ?? e.message}`);
      });
      if (buf.length > MAX_RULES_FILE) throw new Error(`vmayarascan: ${file} is over 16 MiB`);
      source = buf.toString('utf8');
    } else source = inline!;
    const yara = await loadYara();
    const compiler = new yara.Compiler();
    let rules: ReturnType<InstanceType<YaraModule['Compiler']>['build']>;
    try {
      compiler.addSource(source);
      rules = compiler.build();
    } catch (e) {
      const first =
        String((e as Error).message ?? e)
          .split('\n')
          .find((l) => l.trim() !== '') ?? 'compile error';
      throw new Error(`vmayarascan: the YARA rules do not compile: ${first.trim()}`, { cause: e });
    } finally {
      compiler.free();
    }
    const targets = await scanTargets(ctx, ctx.options.pid);
    const opts = {
      maxScanMiB: ctx.options['max-scan'],
      maxMatches: ctx.options['max-matches'],
      label: 'YARA scan',
    };
    return scanForMatches(ctx, targets, opts, function* (chunk): Generator<Row<typeof columns>> {
      const result = rules.scan(chunk.data) as { matches?: YaraRuleMatch[] };
      for (const rule of result.matches ?? [])
        for (const pattern of rule.patterns)
          for (const m of pattern.matches) {
            if (m.offset >= chunk.reportable) continue;
            const bytes = chunk.data.subarray(m.offset, m.offset + Math.min(m.length, MAX_VALUE));
            yield {
              Offset: chunk.address + BigInt(m.offset),
              PID: chunk.target.pid,
              Rule: rule.identifier,
              Component: pattern.identifier,
              Value: bytesToText(bytes),
              Process: chunk.target.comm,
              Path: chunk.target.region.path,
            };
          }
    });
  },
});
