/**
 * /proc/modules: one loaded module per line, as kernel/module/procfs.c m_show() prints it:
 *
 *     name size refcount deps state offset [taints]
 *     dummy 16384 0 - Live 0xffffffffc0200000 (O)
 *
 * `refcount` is `-` without CONFIG_MODULE_UNLOAD; `deps` is `-` or `a,b,` (the modules
 * that use this one); `offset` is the load address, printed as 0 to readers that
 * kptr_restrict hides kernel pointers from.
 */
import {
  excerpt,
  parseIntStrict,
  parseLines,
  ProcParseError,
  type ParsedLines,
  type ProcInput,
} from './common.js';

export type { ParsedLines } from './common.js';

export interface ProcModule {
  name: string;
  /** Size of the module's memory, bytes. */
  size: number;
  /** Reference count; undefined when the kernel prints `-` (no module unloading). */
  refcount?: number;
  /** Modules that depend on this one. */
  users: string[];
  /** `Live`, `Loading` or `Unloading`. */
  state: string;
  /** Load address; 0n when hidden by kptr_restrict. */
  offset: bigint;
  /** Taint letters without parentheses (`O`, `OE`), '' when none. */
  taints: string;
}

const NAME_RE = /^[\w.-]{1,64}$/;
const HEX_RE = /^0x[0-9a-fA-F]{1,16}$/;
const STATE_RE = /^[A-Za-z]{1,16}$/;

/** Parses /proc/modules line by line; a bad line becomes an error, never an exception. */
export function parseModules(input: ProcInput, file = '/proc/modules'): ParsedLines<ProcModule> {
  return parseLines(input, file, parseModuleLine);
}

function parseModuleLine(line: string, where: string): ProcModule {
  const f = line.trim().split(/\s+/);
  if (f.length < 6) throw new ProcParseError(where, `expected at least 6 fields: ${excerpt(line)}`);
  const [name, size, refcount, deps, state, offset, ...rest] = f;
  if (!NAME_RE.test(name)) throw new ProcParseError(where, `bad module name ${excerpt(name)}`);
  if (!STATE_RE.test(state)) throw new ProcParseError(where, `bad state ${excerpt(state)}`);
  if (!HEX_RE.test(offset)) throw new ProcParseError(where, `bad offset ${excerpt(offset)}`);
  const taints = rest.join('');
  if (taints !== '' && !/^\([A-Z]*\)$/.test(taints)) {
    throw new ProcParseError(where, `bad taint flags ${excerpt(taints)}`);
  }
  const users = deps === '-' ? [] : deps.split(',').filter((u) => u !== '');
  if (!users.every((u) => NAME_RE.test(u))) throw new ProcParseError(where, `bad users ${excerpt(deps)}`);
  return {
    name,
    size: parseIntStrict(size, where, 'size'),
    refcount: refcount === '-' ? undefined : parseIntStrict(refcount, where, 'refcount'),
    users,
    state,
    offset: BigInt(offset),
    taints: taints.slice(1, -1),
  };
}
