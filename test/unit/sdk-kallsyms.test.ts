import { describe, expect, it } from 'vitest';
import { checkIdt } from '../../src/plugins/check-idt.js';
import { checkSyscall } from '../../src/plugins/check-syscall.js';
import { runPlugin } from '../../src/sdk/index.js';
import { FakeGuest } from './helpers/fake-guest.js';

/** kallsyms as a guest with kptr_restrict shows it to a reader without CAP_SYSLOG. */
function hiddenGuest(): FakeGuest {
  const g = new FakeGuest();
  g.addFile('/proc/modules', '');
  g.addFile(
    '/proc/kallsyms',
    '0000000000000000 T _stext\n0000000000000000 D sys_call_table\n0000000000000000 T _etext\n',
  );
  return g;
}

describe('readKallsyms (src/sdk/kallsyms.ts)', () => {
  it('the plugins that need kernel addresses refuse a kallsyms that hides them, in one line', async () => {
    for (const plugin of [checkSyscall, checkIdt])
      await expect(runPlugin(plugin, { executor: hiddenGuest(), options: {} })).rejects.toThrow(
        /^\/proc\/kallsyms shows no addresses to the shadow \(kptr_restrict or no CAP_SYSLOG\)$/,
      );
  });
});
