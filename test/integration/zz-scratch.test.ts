import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { it } from 'vitest';
import { GdbClient } from '../../src/qemu/gdb.js';
import { QmpClient } from '../../src/qemu/qmp.js';
it('dump', async () => {
  const d = '/tmp/scr';
  const q = spawn('qemu-system-x86_64', ['-machine','q35','-accel','tcg','-nodefaults','-nographic','-S','-m','64M','-qmp',`unix:${d}/q.sock,server=on,wait=off`,'-gdb',`unix:${d}/g.sock,server=on,wait=off`], {stdio:'ignore'});
  while (!existsSync(`${d}/g.sock`)) await new Promise(r=>setTimeout(r,20));
  await new Promise(r=>setTimeout(r,100));
  const qmp = await QmpClient.connect(`${d}/q.sock`);
  const g = await GdbClient.connect(`${d}/g.sock`);
  console.log(JSON.stringify(g.supported));
  const raw = await g.readRegisters();
  console.log('len', raw.length);
  for (let o = 0; o < raw.length; o += 32) console.log(o, raw.subarray(o, o+32).toString('hex'));
  console.log(await qmp.hmp('info registers'));
  // write back unmodified
  await g.writeRegisters(raw);
  const raw2 = await g.readRegisters();
  for (let o = 0; o < raw2.length; o++) if (raw[o] !== raw2[o]) console.log('diff at', o, raw[o], raw2[o]);
  q.kill('SIGKILL');
});
