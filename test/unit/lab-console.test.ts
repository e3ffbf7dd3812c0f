import { describe, expect, it } from 'vitest';
import { ConsoleError, framedCommand, parseFramed } from '../../src/lab/console.js';
import { initramfsEntries, parseBusyboxList } from '../../src/lab/initramfs.js';
import { initScript, shQuote } from '../../src/lab/workload.js';
import { chooseAccel, qemuArgs, QemuError, type LaunchSpec } from '../../src/qemu/launcher.js';

describe('console framing', () => {
  const id = 'abc123';

  it('never types the marker bytes', () => {
    const line = framedCommand('echo hi', id);
    expect(line).not.toContain('\x01');
    expect(line.endsWith('\n')).toBe(true);
    expect(line.split('\n')).toHaveLength(2);
    // Multi-line commands travel base64-encoded on one line.
    expect(framedCommand('a\nb\nc', id).split('\n')).toHaveLength(2);
    expect(() => framedCommand('x'.repeat(5000), id)).toThrow(ConsoleError);
  });

  it('parses output between the markers, ignoring echo and noise', () => {
    const typed = framedCommand('echo hi', id);
    const text = `lab# ${typed}[ 12.3] some kernel line\n\x01B${id}\nhi\n\x01E${id}:0\nlab# `;
    expect(parseFramed(text, id)).toEqual({ output: 'hi\n', status: 0 });
    expect(parseFramed(`\x01B${id}\nhalf`, id)).toBeUndefined();
    expect(parseFramed(`\x01Bother\nx\n\x01Eother:0\n`, id)).toBeUndefined();
    expect(parseFramed(`\x01B${id}\n\x01E${id}:127\n`, id)).toEqual({ output: '', status: 127 });
  });
});

describe('lab guest contents', () => {
  it('parses busybox --list-full', () => {
    expect(parseBusyboxList('bin/busybox\nusr/sbin/httpd\nlinuxrc\n/sbin/init\n../x/y\n')).toEqual([
      'usr/sbin/httpd',
      'sbin/init',
    ]);
  });

  it('lays out the initramfs with parents first', () => {
    const entries = initramfsEntries({
      busybox: Buffer.from('bb'),
      applets: ['bin/sh', 'usr/sbin/httpd', 'sbin/init'],
      programs: { labd: Buffer.from('labd') },
      modules: { dummy: Buffer.from('ko') },
      kernelRelease: '6.1.0-56-amd64',
    });
    const seen = new Set<string>();
    for (const e of entries) {
      const parent = e.path.split('/').slice(0, -1).join('/');
      if (parent) expect(seen.has(parent), `${e.path} before ${parent}`).toBe(true);
      seen.add(e.path);
    }
    for (const p of [
      'init',
      'bin/busybox',
      'usr/sbin/labd',
      'dev/console',
      'dev/ttyS0',
      'etc/inittab',
      'mnt/evidence',
    ]) {
      expect(seen.has(p), p).toBe(true);
    }
    const init = entries.find((e) => e.path === 'init');
    expect(init?.type === 'file' && String(init.data)).toContain('insmod');
    expect(init?.type === 'file' && String(init.data)).toContain('/lib/modules/6.1.0-56-amd64/dummy.ko');
  });

  it('quotes for sh', () => {
    expect(shQuote("it's")).toBe(`'it'\\''s'`);
    expect(initScript([])).toMatch(/exec \/bin\/busybox init\n$/);
  });
});

describe('qemu command line', () => {
  const spec: LaunchSpec = {
    name: 'lab',
    runDir: '/tmp/vmi-0/guests/lab',
    kernel: '/c/vmlinux',
    initrd: '/c/initrd.cpio',
    append: 'console=ttyS0 quiet',
    cpus: 2,
    cpuModel: 'max',
    memMiB: 256,
    ramFile: '/dev/shm/vmi-lab-1.ram',
  };

  it('builds the expected arguments', () => {
    const a = qemuArgs(spec);
    const after = (flag: string): string | undefined => a[a.indexOf(flag) + 1];
    expect(after('-machine')).toBe('q35,memory-backend=m');
    expect(after('-accel')).toBe('tcg');
    expect(after('-smp')).toBe('2');
    expect(after('-object')).toBe(
      'memory-backend-file,id=m,size=256M,mem-path=/dev/shm/vmi-lab-1.ram,share=on',
    );
    expect(after('-qmp')).toBe('unix:/tmp/vmi-0/guests/lab/qmp.sock,server=on,wait=off');
    expect(after('-gdb')).toBe('unix:/tmp/vmi-0/guests/lab/gdb.sock,server=on,wait=off');
    expect(after('-nic')).toBe('none');
    expect(a).toContain('-daemonize');
    expect(after('-append')).toBe('console=ttyS0 quiet');
  });

  it('-runas UID:GID only when asked (replay clones as root), before -daemonize', () => {
    expect(qemuArgs(spec)).not.toContain('-runas');
    const a = qemuArgs({ ...spec, runAs: { uid: 65534, gid: 65533 } });
    expect(a[a.indexOf('-runas') + 1]).toBe('65534:65533');
    expect(a.indexOf('-runas')).toBeLessThan(a.indexOf('-daemonize'));
  });

  it('rejects unusable paths', () => {
    expect(() => qemuArgs({ ...spec, runDir: '/tmp/' + 'x'.repeat(100) })).toThrow(QemuError);
    expect(() => qemuArgs({ ...spec, ramFile: '/dev/shm/a,b' })).toThrow(/','/);
  });

  it('defaults to TCG', () => {
    expect(chooseAccel(undefined)).toBe('tcg');
    expect(chooseAccel('kvm')).toBe('kvm');
    expect(chooseAccel('tcg')).toBe('tcg');
  });
});
