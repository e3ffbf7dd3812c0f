/**
 * Capture signatures (src/capture/signature.ts) on a capture built from the test fixture,
 * signed exactly as capture create signs (signatureFileText over manifest.sha256): a good
 * signature verifies; a changed byte anywhere in the chain (a part, the manifest, its
 * checksum, the signature), another key, a missing or malformed signature are refused;
 * replay with trusted keys refuses before QEMU starts (VMI_QEMU is a stand-in that leaves
 * a mark when run); key files are checked for type and kind.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyCapture } from '../../src/capture/artifact.js';
import { encodeManifest, MANIFEST, MANIFEST_SUM, decodeManifest } from '../../src/capture/manifest.js';
import {
  checkCaptureSignature,
  CaptureKeyError,
  claimedSigner,
  generateSigningKeyPair,
  keyFingerprint,
  loadSigningKey,
  loadTrustedKey,
  SIGNATURE_FILE,
  signatureFileText,
  writeKeyPair,
} from '../../src/capture/signature.js';
import { openReplay } from '../../src/targets/capture.js';
import { makeCapture, sha } from '../helpers/capture-fixture.js';

const root = mkdtempSync(join(tmpdir(), 'vmi-capsig-'));
const fakeQemu = join(root, 'qemu-system-x86_64');
const ranMarker = join(root, 'qemu-ran');
const saved = { qemu: process.env.VMI_QEMU, rt: process.env.VMI_RUNTIME_ROOT };

beforeAll(() => {
  writeFileSync(fakeQemu, `#!/bin/sh\ntouch ${ranMarker}\nexit 1\n`);
  chmodSync(fakeQemu, 0o755);
  process.env.VMI_QEMU = fakeQemu;
  process.env.VMI_RUNTIME_ROOT = join(root, 'rt');
});

afterAll(() => {
  for (const [k, v] of [
    ['VMI_QEMU', saved.qemu],
    ['VMI_RUNTIME_ROOT', saved.rt],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(root, { recursive: true, force: true });
});

const signer = generateSigningKeyPair();
const other = generateSigningKeyPair();
const priv = createPrivateKey(signer.privatePem);
const pub = createPublicKey(signer.publicPem);
const otherPub = createPublicKey(other.publicPem);

/** A fixture capture signed as capture create signs. */
function signed(name: string): string {
  const dir = makeCapture(root, name);
  const sum = readFileSync(join(dir, MANIFEST_SUM), 'utf8').trim();
  writeFileSync(join(dir, SIGNATURE_FILE), signatureFileText(sum, priv));
  return dir;
}

function flip(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 1;
  writeFileSync(path, b);
}

describe('capture signatures', () => {
  it('a signed capture verifies with its public key, and names it', async () => {
    const dir = signed('ok');
    expect(await checkCaptureSignature(dir, [otherPub, pub])).toEqual({ key: signer.fingerprint });
    expect(await claimedSigner(dir)).toBe(signer.fingerprint);
    expect(await claimedSigner(makeCapture(root, 'nosig'))).toBeUndefined();
    expect(signer.fingerprint).toBe(keyFingerprint(pub));
    expect(signer.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    await verifyCapture(dir);
  });

  it('a part changed and every checksum recomputed to match: the signature refuses it', async () => {
    const dir = signed('resummed');
    flip(join(dir, 'devstate.bin'), 3);
    // The attacker fixes the manifest and its checksum: integrity alone would pass.
    const m = decodeManifest(readFileSync(join(dir, MANIFEST)));
    m.parts['devstate.bin'].sha256 = sha(readFileSync(join(dir, 'devstate.bin')));
    const buf = encodeManifest(m);
    writeFileSync(join(dir, MANIFEST), buf);
    writeFileSync(join(dir, MANIFEST_SUM), `${sha(buf)}\n`);
    await verifyCapture(dir);
    await expect(checkCaptureSignature(dir, [pub])).rejects.toThrow(
      `${SIGNATURE_FILE}: the signature does not verify with key ${signer.fingerprint}: the capture was changed after it was signed`,
    );
  });

  it('a byte of a part flipped: the signature holds, the part check refuses (the chain)', async () => {
    const dir = signed('part');
    flip(join(dir, 'ram.raw'), 100);
    await checkCaptureSignature(dir, [pub]);
    await expect(verifyCapture(dir)).rejects.toThrow(/ram\.raw: sha256 mismatch/);
  });

  it('a flipped byte of the signature, another key, no signature, a malformed one: refused', async () => {
    const sigDir = signed('badsig');
    const text = JSON.parse(readFileSync(join(sigDir, SIGNATURE_FILE), 'utf8')) as { sig: string };
    const raw = Buffer.from(text.sig, 'base64');
    raw[10] ^= 1;
    writeFileSync(join(sigDir, SIGNATURE_FILE), JSON.stringify({ ...text, sig: raw.toString('base64') }));
    await expect(checkCaptureSignature(sigDir, [pub])).rejects.toThrow(/does not verify/);

    const otherDir = signed('otherkey');
    await expect(checkCaptureSignature(otherDir, [otherPub])).rejects.toThrow(
      `${SIGNATURE_FILE}: signed by key ${signer.fingerprint}, which is not among the trusted keys (${other.fingerprint})`,
    );
    // Signed by the other key, claiming to be ours.
    const forged = makeCapture(root, 'forged');
    const sum = readFileSync(join(forged, MANIFEST_SUM), 'utf8').trim();
    const f = JSON.parse(signatureFileText(sum, createPrivateKey(other.privatePem))) as object;
    writeFileSync(join(forged, SIGNATURE_FILE), JSON.stringify({ ...f, key: signer.fingerprint }));
    await expect(checkCaptureSignature(forged, [pub])).rejects.toThrow(/does not verify/);

    const unsigned = makeCapture(root, 'unsigned');
    await expect(checkCaptureSignature(unsigned, [pub])).rejects.toThrow(
      /^manifest\.sig: missing: the capture is not signed/,
    );
    writeFileSync(join(unsigned, SIGNATURE_FILE), 'not json');
    await expect(checkCaptureSignature(unsigned, [pub])).rejects.toThrow(
      'manifest.sig: malformed (not JSON)',
    );
  });

  it('replay with trusted keys refuses an unsigned or badly signed capture before QEMU starts', async () => {
    const unsigned = makeCapture(root, 'replay-unsigned');
    await expect(openReplay(unsigned, { trust: [pub] })).rejects.toThrow(/manifest\.sig: missing/);
    const wrong = signed('replay-wrong');
    await expect(openReplay(wrong, { trust: [otherPub] })).rejects.toThrow(/not among the trusted keys/);
    expect(existsSync(ranMarker)).toBe(false);
    expect(existsSync(join(root, 'rt'))).toBe(false);
  });

  it('keygen: 0600 private and 0644 public PEM files that load back; never overwrites', async () => {
    const prefix = join(root, 'k');
    const k = await writeKeyPair(prefix);
    expect(statSync(`${prefix}.pem`).mode & 0o777).toBe(0o600);
    expect(statSync(`${prefix}.pub.pem`).mode & 0o777).toBe(0o644);
    expect(keyFingerprint(await loadSigningKey(`${prefix}.pem`))).toBe(k.fingerprint);
    expect(keyFingerprint(await loadTrustedKey(`${prefix}.pub.pem`))).toBe(k.fingerprint);
    await expect(writeKeyPair(prefix)).rejects.toThrow(
      `${prefix}.pem: exists; choose another -o or remove it`,
    );
  });

  it('key files of the wrong kind are one clear error each', async () => {
    const prefix = join(root, 'kk');
    await writeKeyPair(prefix);
    await expect(loadTrustedKey(`${prefix}.pem`)).rejects.toThrow(
      /a private key; --trust takes the public key/,
    );
    await expect(loadSigningKey(`${prefix}.pub.pem`)).rejects.toThrow(CaptureKeyError);
    const junk = join(root, 'junk.pem');
    writeFileSync(junk, 'hello');
    await expect(loadSigningKey(junk)).rejects.toThrow(`${junk}: not a PEM private key`);
    await expect(loadTrustedKey(join(root, 'absent.pem'))).rejects.toThrow(/cannot read the key \(ENOENT\)/);
    const { generateKeyPairSync } = await import('node:crypto');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const rsaPath = join(root, 'rsa.pem');
    writeFileSync(rsaPath, rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await expect(loadSigningKey(rsaPath)).rejects.toThrow(/an rsa key, not Ed25519/);
  });
});
