/** Lab guests as targets: the built-in lab guest (booted on demand) or a named running one. */
import { DEFAULT_LAB_NAME, findLabGuest, labUp, listLabGuests, type LabGuest } from '../lab/lab.js';
import type { GuestTarget, OpenedTarget, OpenTargetOptions } from './target.js';

export { DEFAULT_LAB_NAME };

export class TargetError extends Error {
  override name = 'TargetError';
}

export interface LiveTargetOptions {
  /** Lab guest name; the default lab guest is booted when it is not running. */
  guest?: string;
  progress?: (message: string) => void;
}

/**
 * Resolves which live guest a command inspects. Without --guest it is the built-in lab
 * guest, booted on demand; a named guest must already be running.
 */
export async function resolveLiveTarget(opts: LiveTargetOptions): Promise<LabGuest> {
  const name = opts.guest ?? DEFAULT_LAB_NAME;
  if (name !== DEFAULT_LAB_NAME) return requireLabGuest(name);
  const running = await findLabGuest(name);
  if (running) return running;
  opts.progress?.(`lab guest '${name}' is not running: booting it`);
  return labUp({ name, onProgress: opts.progress });
}

/** The running lab guest of that name (never booted here); a TargetError saying how to start it otherwise. */
export async function requireLabGuest(name: string): Promise<LabGuest> {
  const running = await findLabGuest(name);
  if (running) return running;
  throw new TargetError(
    `no running lab guest named '${name}': start it with \`vmi lab up --name ${name}\` (see \`vmi lab list\`)`,
  );
}

export interface LiveTargetsOptions {
  /** Lab guest names (--guest, repeatable). */
  guests?: readonly string[];
  /** Every running lab guest (--all-guests). */
  allGuests?: boolean;
}

/**
 * The guests of a multi-guest run, each resolved on its own so that one guest that is
 * not running fails alone. Named guests must be running (none is booted on demand).
 */
export async function resolveLiveTargets(opts: LiveTargetsOptions): Promise<GuestTarget[]> {
  const names = new Set<string>(opts.guests ?? []);
  if (opts.allGuests) {
    const running = await listLabGuests();
    if (running.length === 0 && names.size === 0) {
      throw new TargetError('no lab guest is running (start one with `vmi lab up`)');
    }
    for (const g of running) names.add(g.name);
  }
  return [...names].map((name) => ({
    name,
    resolve: () => requireLabGuest(name),
  }));
}

/** Which lab guest: `guest` by name, else the default one (booted when not running). */
export interface LabTargetSpec {
  guest?: string;
}

/** A lab guest as a target; close() leaves it running (it is the lab's to stop). */
export async function open(spec: LabTargetSpec, opts: OpenTargetOptions = {}): Promise<OpenedTarget> {
  const guest = await resolveLiveTarget({ guest: spec.guest, progress: opts.progress });
  return { guest, close: async () => {} };
}
