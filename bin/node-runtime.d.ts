// Types of node-runtime.js (plain JavaScript: it runs before the build, on old Nodes too).
export declare const MIN_NODE: readonly [number, number];
export declare function isTooOld(version: string): boolean;
export declare function pins(): { package: string; lts: string; integrity: Record<string, string> };
export declare function cacheRoot(env?: NodeJS.ProcessEnv): string;
export declare function nodeDir(version: string, env?: NodeJS.ProcessEnv): string;
export declare function installedNode(version: string, env?: NodeJS.ProcessEnv): string | undefined;
export declare function integrityOf(file: string): string;
export declare function installNode(
  version: string,
  opts?: { env?: NodeJS.ProcessEnv; log?: (message: string) => void },
): string;
export declare function runUnderPrivateNode(script: string | URL): Promise<never>;
