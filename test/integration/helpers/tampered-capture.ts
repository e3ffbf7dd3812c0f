import { createHash } from 'node:crypto';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeManifest, encodeManifest, MANIFEST, MANIFEST_SUM } from '../../../src/capture/manifest.js';

/** A copy of a capture with its manifest changed and re-hashed (manifest.sha256), as an attacker would. */
export async function tampered(
  src: string,
  dst: string,
  change: (m: ReturnType<typeof decodeManifest>) => void,
): Promise<void> {
  await cp(src, dst, { recursive: true });
  const m = decodeManifest(await readFile(join(dst, MANIFEST)));
  change(m);
  const buf = encodeManifest(m);
  await writeFile(join(dst, MANIFEST), buf);
  await writeFile(join(dst, MANIFEST_SUM), createHash('sha256').update(buf).digest('hex') + '\n');
}
