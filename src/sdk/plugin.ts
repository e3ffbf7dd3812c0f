/**
 * Plugin definitions: what a plugin declares (name, columns, options) and the context
 * its `run()` receives. Built-in plugins and third-party packs use exactly this API.
 */
import type { HypervisorView } from './hypervisor.js';
import { NOT_AVAILABLE, type ColumnSpec, type RowValue } from '../output/columns.js';
import type { ResultTable } from '../output/table.js';
import { LimitExceededError } from './errors.js';
import { DEFAULT_RUN_LIMITS, type RunLimits } from './limits.js';
import { ProcFs, type ProcHints } from './procfs.js';
import { SyscallApi, type SyscallApiOptions } from './syscall-api.js';
import type { SyscallExecutor } from './syscall-types.js';
import { sysnoOf } from '../abi/linux/syscalls.js';
import type { PluginNeeds } from './policy.js';

/**
 * Version of this plugin API: an integer, bumped on every incompatible change (it is the
 * major version). definePlugin stamps it into each definition; a pack plugin stamped
 * with another value is refused on load with a {@link PluginApiVersionError}.
 */
export const apiVersion = 1;

/** The value type of a plugin option: `--flag`, `--pid 42`, `--name text`. */
export type OptionType = 'boolean' | 'integer' | 'string';

/** Declaration of one plugin option (a CLI flag after the plugin name). */
export interface OptionSpec {
  type: OptionType;
  /** One line for `--help`. */
  description: string;
  /** Accept the option several times; the value is then an array. */
  multiple?: boolean;
  /** Value when not given (booleans default to false, multiples to []). */
  default?: boolean | number | string;
  /** One-letter short flag. */
  char?: string;
}

/** Options keyed by name: `{ pid: { type: 'integer', multiple: true, description: '...' } }` → `--pid`. */
export type OptionSpecs = Record<string, OptionSpec>;

/**
 * The `--pid` filter of plugins that list per-process things (repeatable; not given: every
 * process): `options: { pid: PID_OPTION }`, and `ctx.options.pid` is `number[]`.
 */
export const PID_OPTION = {
  type: 'integer',
  multiple: true,
  description: 'Only these process ids (repeatable)',
} as const satisfies OptionSpec;

type BaseValue<T extends OptionType> = T extends 'boolean' ? boolean : T extends 'integer' ? number : string;

/** The parsed value of one option as `run()` sees it. */
export type OptionValue<S extends OptionSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['multiple'] extends true
    ? BaseValue<S['type']>[]
    : S extends { default: boolean | number | string }
      ? BaseValue<S['type']>
      : BaseValue<S['type']> | undefined;

/** The typed options object `run()` receives as `ctx.options`. */
export type ParsedOptions<O extends OptionSpecs> = { [K in keyof O]: OptionValue<O[K]> };

/**
 * Key under which a row carries its tree depth (pstree-style output): 0 for a root, rows
 * in pre-order so that a row's parent is the nearest earlier row one level up. When any
 * row of a run has it, the table gets `depths` (rows without it count as roots, depth 0).
 * A symbol, so it never collides with a column name and is not a cell.
 *
 *     rows.push({ ...cells, [TREE_DEPTH]: depth });
 */
export const TREE_DEPTH: unique symbol = Symbol('vmi.treeDepth');

/** One row: a value for every declared column, keyed by column name (plus an optional tree depth). */
export type Row<C extends readonly ColumnSpec[] = readonly ColumnSpec[]> = {
  [K in C[number]['name']]: RowValue;
} & { [TREE_DEPTH]?: number };

/**
 * What vmi changed to freeze a replay clone at the captured instant
 * (src/capture/replay-freeze.ts), so that the SDK's readers report the values from before
 * the freeze. Absent on a live guest.
 */
export interface FrozenView {
  /** The cgroup vmi moved the root cgroup's user tasks into to freeze them: reported as '/'. */
  readonly holdingCgroup: string;
  /** Scheduler state letter of each task (by TID) just before the freeze (a runnable task shows S once frozen). */
  readonly stateBefore: Readonly<Record<number, string>>;
}

/** What `run()` gets. */
export interface PluginContext<O = Record<string, unknown>> {
  /** The guest's syscalls, batched. */
  sys: SyscallApi;
  /** /proc helpers. */
  proc: ProcFs;
  /** Parsed options. */
  options: O;
  /** A short status line for long runs ("reading 300 processes"). */
  progress(message: string): void;
  /**
   * A non-fatal problem: it goes to the table's error list and the run goes on. Use it
   * with an UNREADABLE cell for "this process's status could not be parsed"; skip rows
   * silently for processes that vanished (isVanished).
   */
  warn(message: string): void;
  /** Set when the user interrupts; the syscall API checks it before each guest entry. */
  signal?: AbortSignal;
  /** On a frozen replay clone: what the freeze changed (readProcesses reports the values from before it). */
  frozen?: FrozenView;
  /**
   * The hypervisor's view (guest RAM read by the host through the kernel's page tables),
   * when the run has one (a live or replayed guest through the shadow engine); absent for
   * isolated packs and fake executors.
   */
  hypervisor?: HypervisorView;
}

/** What a plugin author writes and passes to {@link definePlugin}. */
export interface PluginSpec<C extends readonly ColumnSpec[], O extends OptionSpecs> {
  /** Volatility-style name: `pslist`, `psaux`, `lsof`. Lowercase, [a-z0-9._-]. */
  name: string;
  /**
   * Volatility 3's dotted module name for the same plugin (`linux.pslist`,
   * `linux.malware.malfind`), accepted by `plugins run` beside `name`. Lowercase.
   */
  volatilityName?: string;
  /** One line. */
  description: string;
  /** The plugin's own version (semver). */
  version: string;
  /** The output schema: typed, named columns (Volatility-style names). */
  columns: C;
  /** Options the plugin takes after its name on the command line. */
  options?: O;
  /**
   * What the plugin needs beyond the read-only syscall policy. Leave it out for a normal
   * introspection plugin. A plugin that declares extras changes the guest: it only runs
   * with `--allow-write`, and then only the declared extras are allowed.
   */
  needs?: PluginNeeds;
  /** Produces the rows (an array, or an async iterable for long outputs). */
  run(ctx: PluginContext<ParsedOptions<O>>): Promise<Row<C>[]> | AsyncIterable<Row<C>>;
}

/** A checked, frozen plugin: what definePlugin returns and what a pack exports. */
export interface PluginDefinition<
  C extends readonly ColumnSpec[] = readonly ColumnSpec[],
  O extends OptionSpecs = OptionSpecs,
> extends PluginSpec<C, O> {
  /** The SDK apiVersion the plugin was built against. */
  apiVersion: number;
  options: O;
}

/**
 * A plugin built against another major version of the plugin API than this vmi's.
 * The message names the pack (when known), the plugin and both versions.
 */
export class PluginApiVersionError extends Error {
  override name = 'PluginApiVersionError';
  constructor(
    /** The plugin's name. */
    readonly plugin: string,
    /** The apiVersion it was built against. */
    readonly pluginApi: unknown,
    /** The pack that brought it, when it came from one. */
    readonly pack?: string,
  ) {
    super(
      `plugin '${plugin}'${pack ? ` of pack ${pack}` : ''} was built for vmi plugin API ${String(pluginApi)}, ` +
        `but this vmi provides plugin API ${apiVersion}${pack ? `: update the pack or vmi` : ''}`,
    );
  }
}

/**
 * Throws {@link PluginApiVersionError} unless `def` was built against this vmi's plugin
 * API major version. `pack` names the pack in the message.
 */
export function checkApiVersion(def: { name: string; apiVersion: unknown }, pack?: string): void {
  const v = def.apiVersion;
  const major = typeof v === 'number' ? Math.trunc(v) : typeof v === 'string' ? Number(v.split('.')[0]) : NaN;
  if (major !== apiVersion) throw new PluginApiVersionError(def.name, v, pack);
}

/** A plugin definition or option that is not valid. */
export class PluginDefinitionError extends Error {
  override name = 'PluginDefinitionError';
}

/** An option value that does not fit its spec (`--pid abc`). */
export class PluginOptionError extends Error {
  override name = 'PluginOptionError';
}

const NAME_RE = /^[a-z][a-z0-9._-]*$/;
const OPTION_RE = /^[a-z][a-z0-9-]*$/;

/**
 * Declares a plugin. Checks the declaration (names, duplicate columns, option specs) and
 * stamps the SDK apiVersion. Column names and option types flow into `run()`'s types.
 */
export function definePlugin<
  const C extends readonly ColumnSpec[],
  const O extends OptionSpecs = Record<never, OptionSpec>,
>(spec: PluginSpec<C, O>): PluginDefinition<C, O> {
  if (!NAME_RE.test(spec.name)) throw new PluginDefinitionError(`bad plugin name '${spec.name}'`);
  if (spec.volatilityName !== undefined && !NAME_RE.test(spec.volatilityName))
    throw new PluginDefinitionError(`plugin ${spec.name}: bad volatilityName '${spec.volatilityName}'`);
  if (spec.columns.length === 0) throw new PluginDefinitionError(`${spec.name}: no columns`);
  const seen = new Set<string>();
  for (const c of spec.columns) {
    if (seen.has(c.name)) throw new PluginDefinitionError(`${spec.name}: duplicate column '${c.name}'`);
    seen.add(c.name);
  }
  const options = (spec.options ?? {}) as O;
  for (const [name, o] of Object.entries(options)) {
    if (!OPTION_RE.test(name)) throw new PluginDefinitionError(`${spec.name}: bad option name '${name}'`);
    if (!['boolean', 'integer', 'string'].includes(o.type)) {
      throw new PluginDefinitionError(`${spec.name}: option '${name}' has bad type '${String(o.type)}'`);
    }
  }
  for (const sc of spec.needs?.syscalls ?? []) {
    if (sysnoOf(sc) === undefined)
      throw new PluginDefinitionError(`${spec.name}: needs unknown syscall '${sc}'`);
  }
  return Object.freeze({ ...spec, options, apiVersion });
}

function coerce(plugin: string, name: string, spec: OptionSpec, v: unknown): boolean | number | string {
  const bad = () =>
    new PluginOptionError(`${plugin}: --${name} expects ${spec.type}, got ${JSON.stringify(v)}`);
  switch (spec.type) {
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (v === 'true') return true;
      if (v === 'false') return false;
      throw bad();
    case 'integer': {
      const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
      if (typeof n === 'number' && Number.isSafeInteger(n)) return n;
      throw bad();
    }
    case 'string':
      if (typeof v === 'string') return v;
      if (typeof v === 'number') return String(v);
      throw bad();
  }
}

/**
 * Turns raw option values (from CLI flags or a JSON object) into the typed options of
 * `run()`: applies defaults, wraps/validates multiples, converts '42' to 42. Unknown
 * keys throw PluginOptionError.
 */
export function resolveOptions<O extends OptionSpecs>(
  def: PluginDefinition<readonly ColumnSpec[], O>,
  raw: Record<string, unknown> = {},
): ParsedOptions<O> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(raw)) {
    if (!(key in def.options) && raw[key] !== undefined) {
      throw new PluginOptionError(`${def.name}: unknown option --${key}`);
    }
  }
  for (const [name, spec] of Object.entries(def.options)) {
    const v = raw[name];
    if (spec.multiple && spec.type !== 'boolean') {
      const list =
        v === undefined ? (spec.default !== undefined ? [spec.default] : []) : Array.isArray(v) ? v : [v];
      out[name] = list.map((x) => coerce(def.name, name, spec, x));
    } else if (v === undefined) {
      out[name] = spec.type === 'boolean' ? (spec.default ?? false) : spec.default;
    } else {
      if (Array.isArray(v)) throw new PluginOptionError(`${def.name}: --${name} given more than once`);
      out[name] = coerce(def.name, name, spec, v);
    }
  }
  return out as ParsedOptions<O>;
}

/** Inputs of {@link createPluginContext}. */
export interface CreateContextOptions<O> {
  /** Runs the batches inside the guest (the shadow engine, a capture replay, or a fake). */
  executor: SyscallExecutor;
  options: O;
  progress?: (message: string) => void;
  warn?: (message: string) => void;
  signal?: AbortSignal;
  limits?: SyscallApiOptions['limits'];
  /** Output-buffer bytes the whole run may ask of the guest. */
  maxReadBytes?: number;
  /** On a frozen replay clone: what the freeze changed. */
  frozen?: FrozenView;
  /** The hypervisor's view of the guest, when the run has one. */
  hypervisor?: HypervisorView;
  /** What the host keeps between runs on this guest (ProcHints). */
  procHints?: ProcHints;
  /** Whether the executor chains batches (SyscallApiOptions.chains; default true). */
  chains?: boolean;
}

/** Builds the context a plugin's `run()` receives. */
export function createPluginContext<O>(opts: CreateContextOptions<O>): PluginContext<O> {
  const sys = new SyscallApi(opts.executor, {
    signal: opts.signal,
    limits: opts.limits,
    maxReadBytes: opts.maxReadBytes,
    chains: opts.chains,
  });
  // Frozen: a plugin cannot swap ctx.sys for something of its own between calls.
  return Object.freeze({
    sys,
    proc: new ProcFs(sys, opts.procHints),
    options: opts.options,
    progress: opts.progress ?? (() => {}),
    warn: opts.warn ?? (() => {}),
    signal: opts.signal,
    ...(opts.frozen ? { frozen: opts.frozen } : {}),
    ...(opts.hypervisor ? { hypervisor: opts.hypervisor } : {}),
  });
}

/** Cells of a row in column order; a column the row lacks becomes NOT_AVAILABLE. */
export function rowCells(
  columns: readonly ColumnSpec[],
  row: Readonly<Record<string, RowValue>>,
): RowValue[] {
  return columns.map((c) => {
    const v = row[c.name];
    return v === undefined ? NOT_AVAILABLE : v;
  });
}

/** Inputs of {@link runPlugin}. */
export interface RunPluginOptions {
  executor: SyscallExecutor;
  /** Raw option values; resolved with resolveOptions. */
  options?: Record<string, unknown>;
  progress?: (message: string) => void;
  /** Also called for each warning (they are collected into `errors` either way). */
  warn?: (message: string) => void;
  signal?: AbortSignal;
  limits?: SyscallApiOptions['limits'];
  /** Bytes, rows and time this run may take (defaults: DEFAULT_RUN_LIMITS). */
  runLimits?: Partial<RunLimits>;
  /** On a frozen replay clone: what the freeze changed (see FrozenView). */
  frozen?: FrozenView;
  /** The hypervisor's view of the guest, when the run has one. */
  hypervisor?: HypervisorView;
  /** What the host keeps between runs on this guest (ProcHints): a Guest passes its own. */
  procHints?: ProcHints;
  /** Whether the executor chains batches (SyscallApiOptions.chains; default true). */
  chains?: boolean;
}

/** Result of runPlugin: the table plus how many guest entries it cost. */
export interface PluginRun {
  table: ResultTable;
  runs: number;
  calls: number;
}

/**
 * How a plugin is run: {@link runPlugin} in this process, or another function with the
 * same contract (an isolated pack's plugin runs in a child process and only its batches
 * come back through `opts.executor`).
 */
export type PluginRunner = (def: PluginDefinition, opts: RunPluginOptions) => Promise<PluginRun>;

/**
 * Runs a plugin to completion and assembles its ResultTable. Warnings become the table's
 * `errors`; an exception from run() propagates (the command decides how to report it).
 */
export async function runPlugin(def: PluginDefinition, opts: RunPluginOptions): Promise<PluginRun> {
  checkApiVersion(def);
  const limits: RunLimits = { ...DEFAULT_RUN_LIMITS, ...opts.runLimits };
  const errors: string[] = [];
  const options = resolveOptions(def, opts.options);
  // The time limit aborts the signal the SDK checks before every guest entry, and the
  // run's promise is raced against it (a plugin stuck in host code between entries).
  const timeUp = new AbortController();
  const timeError = new LimitExceededError(
    'time',
    `time limit: plugin '${def.name}' ran longer than ${limits.timeoutMs / 1000} s (raise it with --plugin-timeout SECONDS)`,
  );
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeUp.signal]) : timeUp.signal;
  const ctx = createPluginContext({
    executor: opts.executor,
    options,
    progress: opts.progress,
    warn: (m) => {
      errors.push(m);
      opts.warn?.(m);
    },
    signal,
    limits: opts.limits,
    maxReadBytes: limits.maxReadBytes,
    frozen: opts.frozen,
    hypervisor: opts.hypervisor,
    procHints: opts.procHints,
    chains: opts.chains,
  });
  const rows: RowValue[][] = [];
  const depths: number[] = [];
  let tree = false;
  const take = (r: Row) => {
    if (rows.length >= limits.maxRows) {
      throw new LimitExceededError(
        'rows',
        `row limit: plugin '${def.name}' returned more than ${limits.maxRows} rows`,
      );
    }
    rows.push(rowCells(def.columns, r));
    const d = r[TREE_DEPTH];
    if (d !== undefined) tree = true;
    depths.push(d ?? 0);
  };
  const collect = async () => {
    const produced = def.run(ctx);
    if (Symbol.asyncIterator in produced) {
      for await (const r of produced) take(r);
    } else {
      for (const r of await produced) take(r);
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timeUp.abort(timeError);
      reject(timeError);
    }, limits.timeoutMs);
  });
  const running = collect();
  // After the time limit the plugin may still reject on its own: that is not unhandled.
  running.catch(() => {});
  try {
    await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
    expired.catch(() => {});
  }
  return {
    table: {
      plugin: def.name,
      columns: def.columns.map((c) => ({ ...c })),
      rows,
      ...(tree ? { depths } : {}),
      errors,
      metadata: { 'plugin.version': def.version, 'sdk.api_version': String(apiVersion) },
    },
    runs: ctx.sys.stats.runs,
    calls: ctx.sys.stats.calls,
  };
}
