/**
 * Output files hold guest data (environments, shell history, memory): they are created
 * 0600 whatever the umask, unless the user asks for another mode (`--output-mode` of
 * plugins run and capture export).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeOutput } from '../../src/output/index.js';
import { DEFAULT_OUTPUT_MODE, parseFileMode } from '../../src/output/sink.js';
import { sampleTable } from './output-helpers.js';
import { exportCapture } from '../../src/capture/export.js';
import { makeCapture } from '../helpers/capture-fixture.js';

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

describe('output file modes', () => {
  let dir = '';
  let umask = 0;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmi-mode-'));
    // A permissive umask: the mode must not depend on it.
    umask = process.umask(0);
  });
  afterEach(async () => {
    process.umask(umask);
    await rm(dir, { recursive: true, force: true });
  });

  it('one file and one file per table are 0600 by default, even with umask 0', async () => {
    expect(DEFAULT_OUTPUT_MODE).toBe(0o600);
    const file = join(dir, 'envars.json');
    await writeOutput([sampleTable()], { format: 'json', output: file });
    expect((await modeOf(file)).toString(8)).toBe('600');
    const written = await writeOutput([sampleTable(), { ...sampleTable(), plugin: 'other' }], {
      format: 'csv',
      output: join(dir, 'out') + '/',
    });
    expect(written).toHaveLength(2);
    for (const f of written) expect((await modeOf(f)).toString(8), f).toBe('600');
    expect((await modeOf(join(dir, 'out'))).toString(8)).toBe('700');
  });

  it('the mode the user asks for, exactly (also under a restrictive umask)', async () => {
    const file = join(dir, 'ps.arrow');
    await writeOutput([sampleTable()], { format: 'arrow', output: file, mode: parseFileMode('0644') });
    expect((await modeOf(file)).toString(8)).toBe('644');
    process.umask(0o077);
    const file2 = join(dir, 'ps2.csv');
    await writeOutput([sampleTable()], { format: 'csv', output: file2, mode: parseFileMode('640') });
    expect((await modeOf(file2)).toString(8)).toBe('640');
  });

  it('capture export: raw and ELF are 0600 by default under umask 0, or the mode asked for', async () => {
    const cap = makeCapture(dir, 'c.vmicap');
    for (const format of ['raw', 'elf'] as const) {
      const def = join(dir, `ram.${format}`);
      await exportCapture(cap, format, def);
      expect((await modeOf(def)).toString(8), format).toBe('600');
      const asked = join(dir, `ram-640.${format}`);
      await exportCapture(cap, format, asked, parseFileMode('0640'));
      expect((await modeOf(asked)).toString(8), format).toBe('640');
    }
  });

  it('parses octal permission bits and refuses anything else', () => {
    expect(parseFileMode('0600')).toBe(0o600);
    expect(parseFileMode('644')).toBe(0o644);
    expect(parseFileMode('0o640')).toBe(0o640);
    for (const bad of ['4755', '0x1ff', 'rw-r--r--', '', '999', '-1'])
      expect(() => parseFileMode(bad), bad).toThrow(/file mode must be octal permission bits/);
  });
});
