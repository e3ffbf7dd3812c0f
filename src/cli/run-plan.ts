/**
 * What a `vmi plugins run` command line asks for, once parsed (PluginsRun.plan in
 * src/commands/plugins/run.ts): the vmi server (src/server/cli-request.ts) gets its plans
 * through the same parser, so a command served there is the command run here.
 */
import type { InspectOptions, InspectTarget } from '../runner/inspect.js';
import type { PluginRequest } from '../runner/run-plugins.js';

/** What a `plugins run` command line asks for (PluginsRun.plan). */
export type RunPlan =
  | { list: string }
  | {
      /** Resolves plugins and target; throws what the command reports as `vmi: error: …`. */
      prepare: (progress: (m: string) => void) => Promise<RunPrepared>;
      format: string;
      output: string | undefined;
      mode: number;
      timing: boolean;
    };

export interface RunPrepared {
  target: InspectTarget;
  requests: PluginRequest[];
  options: InspectOptions;
}
