import { DEFAULT_LAB_NAME, findLabGuest, labUp, type LabGuest } from '../lab/lab.js';

export class TargetError extends Error {}

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
  const running = await findLabGuest(name);
  if (running) return running;
  if (opts.guest !== undefined && opts.guest !== DEFAULT_LAB_NAME) {
    throw new TargetError(
      `no running lab guest named '${name}': start it with \`vmi lab up --name ${name}\` (see \`vmi lab list\`)`,
    );
  }
  opts.progress?.(`lab guest '${name}' is not running: booting it`);
  return labUp({ name, onProgress: opts.progress });
}
