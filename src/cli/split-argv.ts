/**
 * Separates a command's own flags from the Volatility-style plugin arguments that
 * follow plugin names (`pslist --pid 1 -r json`): oclif would reject flags it does not
 * declare. `valued` and `booleans` list the command's flags (long names and short
 * chars); a plugin option with the same name as one of them is taken as the command's.
 */
export function splitArgv(
  argv: readonly string[],
  valued: ReadonlySet<string>,
  booleans: ReadonlySet<string>,
): { own: string[]; rest: string[] } {
  const own: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    const m = /^(--?)([^=]+)(=.*)?$/s.exec(token);
    const name = m ? m[2] : '';
    if (m && (m[1] === '--' ? name.length > 1 : name.length === 1)) {
      if (booleans.has(name)) {
        own.push(token);
        continue;
      }
      if (valued.has(name)) {
        own.push(token);
        if (m[3] === undefined && i + 1 < argv.length) own.push(argv[++i]);
        continue;
      }
    }
    rest.push(token);
  }
  return { own, rest };
}

/** The part of an oclif flag declaration the splitter reads. */
export interface FlagDeclaration {
  type: 'boolean' | 'option';
  char?: string;
}

/**
 * The `valued` and `booleans` sets of {@link splitArgv} from a command's own flag
 * declarations (long names and short chars), plus oclif's implicit --help.
 */
export function flagSets(flags: Readonly<Record<string, FlagDeclaration>>): {
  valued: Set<string>;
  booleans: Set<string>;
} {
  const valued = new Set<string>();
  const booleans = new Set<string>(['help']);
  for (const [name, flag] of Object.entries(flags)) {
    const set = flag.type === 'boolean' ? booleans : valued;
    set.add(name);
    if (flag.char) set.add(flag.char);
  }
  return { valued, booleans };
}
