/**
 * Loads guest ABI data from the JSON files in `profiles/`. The files sit at the package
 * root; this module is three directories below it both as source (src/abi/linux) and when
 * compiled (dist/abi/linux), so one relative URL serves both.
 */
import { readFileSync } from 'node:fs';

const PROFILES_DIR = new URL('../../../profiles/', import.meta.url);

/** A profile file that is missing or does not have the expected shape. */
export class ProfileError extends Error {
  override name = 'ProfileError';
}

/** Reads and JSON-parses `profiles/<file>`; throws ProfileError with the path on failure. */
export function loadProfileJson(file: string): unknown {
  const url = new URL(file, PROFILES_DIR);
  try {
    return JSON.parse(readFileSync(url, 'utf8')) as unknown;
  } catch (err) {
    throw new ProfileError(`cannot load profile ${url.pathname}: ${(err as Error).message}`);
  }
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
