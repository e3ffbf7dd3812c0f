import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

describe('shadow stub', () => {
  it.runIf(have('as') && have('objcopy') && have('xxd'))('stub-code.ts is what stub.S assembles to', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmi-stub-'));
    try {
      const out = join(dir, 'stub-code.ts');
      execFileSync('bash', ['scripts/build-stub.sh', out]);
      expect(readFileSync(out, 'utf8')).toBe(readFileSync('src/shadow/stub/stub-code.ts', 'utf8'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
