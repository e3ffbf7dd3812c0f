/**
 * Optional Ed25519 signatures of captures: who made a capture, not only that it is intact.
 *
 * The chain: every part's sha256 is in manifest.msgpack, the manifest's sha256 is
 * manifest.sha256, and `manifest.sig` signs that checksum. Verifying the signature, then
 * the manifest against its checksum, then each part against the manifest (verifyCapture)
 * proves every byte came from the holder of the private key.
 *
 * manifest.sig is one line of JSON: `{"alg":"ed25519","key":FINGERPRINT,"sig":BASE64}`,
 * where FINGERPRINT is `sha256:` and the hex sha256 of the public key's SPKI DER encoding
 * (what `vmi capture keygen` prints), and the signed message is the ASCII text
 * `vmi-capture-signature-v1 manifest.sha256 HEX\n` (a fixed prefix, so the signature means
 * nothing in any other context). Keys are PEM: PKCS#8 private, SPKI public (`openssl
 * genpkey -algorithm ed25519` makes the same).
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CaptureError, MANIFEST_SUM } from './manifest.js';

/** The signature file in a capture directory. */
export const SIGNATURE_FILE = 'manifest.sig';
const PREFIX = 'vmi-capture-signature-v1 manifest.sha256 ';
/** Largest manifest.sig read (a real one is ~150 bytes). */
const MAX_SIG_FILE = 4096;

/** A key file that cannot be used (unreadable, not PEM, not Ed25519). */
export class CaptureKeyError extends Error {
  override name = 'CaptureKeyError';
}

/** `sha256:HEX` of a public key's SPKI DER: how keys are named in messages and manifest.sig. */
export function keyFingerprint(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return `sha256:${createHash('sha256')
    .update(pub.export({ type: 'spki', format: 'der' }))
    .digest('hex')}`;
}

function checkEd25519(path: string, key: KeyObject): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new CaptureKeyError(
      `${path}: an ${String(key.asymmetricKeyType)} key, not Ed25519 (make one with vmi capture keygen)`,
    );
  }
  return key;
}

async function readKeyFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new CaptureKeyError(
      `${path}: cannot read the key (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
    );
  }
}

/** An Ed25519 private key from a PEM file. Throws CaptureKeyError naming the file. */
export async function loadSigningKey(path: string): Promise<KeyObject> {
  const pem = await readKeyFile(path);
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new CaptureKeyError(`${path}: not a PEM private key (make one with vmi capture keygen)`);
  }
  return checkEd25519(path, key);
}

/** An Ed25519 public key from a PEM file (a private key file is refused: trust is public). */
export async function loadTrustedKey(path: string): Promise<KeyObject> {
  const pem = await readKeyFile(path);
  if (/PRIVATE KEY/.test(pem)) {
    throw new CaptureKeyError(`${path}: a private key; --trust takes the public key (the .pub.pem file)`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new CaptureKeyError(`${path}: not a PEM public key`);
  }
  return checkEd25519(path, key);
}

/** A new Ed25519 key pair as PEM text (PKCS#8 private, SPKI public) and its fingerprint. */
export function generateSigningKeyPair(): { privatePem: string; publicPem: string; fingerprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    fingerprint: keyFingerprint(publicKey),
  };
}

/**
 * Writes a new key pair as `prefix.pem` (0600) and `prefix.pub.pem` (0644), refusing to
 * overwrite either (O_EXCL). Throws CaptureKeyError naming the file.
 */
export async function writeKeyPair(
  prefix: string,
): Promise<{ privatePath: string; publicPath: string; fingerprint: string }> {
  const k = generateSigningKeyPair();
  const privatePath = `${prefix}.pem`;
  const publicPath = `${prefix}.pub.pem`;
  const create = async (path: string, text: string, mode: number) => {
    let fh;
    try {
      fh = await open(path, 'wx', mode);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CaptureKeyError(
        code === 'EEXIST'
          ? `${path}: exists; choose another -o or remove it`
          : `${path}: cannot create (${code ?? String(e)})`,
      );
    }
    try {
      await fh.writeFile(text);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
  };
  await create(privatePath, k.privatePem, 0o600);
  try {
    await create(publicPath, k.publicPem, 0o644);
  } catch (e) {
    await unlink(privatePath).catch(() => undefined);
    throw e;
  }
  return { privatePath, publicPath, fingerprint: k.fingerprint };
}

function message(sum: string): Buffer {
  return Buffer.from(`${PREFIX}${sum}\n`, 'ascii');
}

/** The manifest checksum as written in manifest.sha256 (64 hex digits) or a CaptureError. */
async function readSum(dir: string): Promise<string> {
  let sum: string;
  try {
    sum = (await readFile(join(dir, MANIFEST_SUM), 'utf8')).trim();
  } catch {
    throw new CaptureError(`${MANIFEST_SUM}: missing`);
  }
  if (!/^[0-9a-f]{64}$/.test(sum)) throw new CaptureError(`${MANIFEST_SUM}: malformed`);
  return sum;
}

/** The text of manifest.sig for a capture whose manifest.sha256 holds `sum`. */
export function signatureFileText(sum: string, key: KeyObject): string {
  const sig = sign(null, message(sum), key).toString('base64');
  return `${JSON.stringify({ alg: 'ed25519', key: keyFingerprint(key), sig })}\n`;
}

/**
 * The key manifest.sig names, unchecked (for `capture info`); undefined when the capture
 * has no readable, well-formed manifest.sig. Only checkCaptureSignature says it is true.
 */
export async function claimedSigner(dir: string): Promise<string | undefined> {
  try {
    const buf = await readFile(join(dir, SIGNATURE_FILE));
    if (buf.length > MAX_SIG_FILE) return undefined;
    const key = (JSON.parse(buf.toString('utf8')) as { key?: unknown }).key;
    return typeof key === 'string' && /^sha256:[0-9a-f]{64}$/.test(key) ? key : undefined;
  } catch {
    return undefined;
  }
}

/** What a good signature says. */
export interface SignatureCheck {
  /** Fingerprint of the trusted key that verified it. */
  key: string;
}

/**
 * Checks `dir`'s manifest.sig against the trusted public keys: present, well formed,
 * made by one of `trusted` over this manifest.sha256. Throws CaptureError naming what
 * failed (missing, malformed, unknown key, bad signature). It does not check the
 * manifest or the parts: callers run readManifest/verifyCapture as well.
 */
export async function checkCaptureSignature(
  dir: string,
  trusted: readonly KeyObject[],
): Promise<SignatureCheck> {
  if (trusted.length === 0) throw new CaptureError('no trusted key given');
  const sum = await readSum(dir);
  let text: string;
  try {
    const buf = await readFile(join(dir, SIGNATURE_FILE));
    if (buf.length > MAX_SIG_FILE)
      throw new CaptureError(`${SIGNATURE_FILE}: malformed (${buf.length} bytes)`);
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof CaptureError) throw e;
    throw new CaptureError(
      `${SIGNATURE_FILE}: missing: the capture is not signed (sign captures with capture create --sign-key)`,
    );
  }
  let parsed: { alg?: unknown; key?: unknown; sig?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new CaptureError(`${SIGNATURE_FILE}: malformed (not JSON)`);
  }
  if (parsed.alg !== 'ed25519' || typeof parsed.sig !== 'string' || typeof parsed.key !== 'string') {
    throw new CaptureError(`${SIGNATURE_FILE}: malformed (needs alg "ed25519", key and sig)`);
  }
  const sig = Buffer.from(parsed.sig, 'base64');
  const key = trusted.find((k) => keyFingerprint(k) === parsed.key);
  if (!key) {
    throw new CaptureError(
      `${SIGNATURE_FILE}: signed by key ${parsed.key.slice(0, 80)}, which is not among the trusted keys (${trusted.map(keyFingerprint).join(', ')})`,
    );
  }
  if (sig.length !== 64 || !verify(null, message(sum), key, sig)) {
    throw new CaptureError(
      `${SIGNATURE_FILE}: the signature does not verify with key ${parsed.key}: the capture was changed after it was signed`,
    );
  }
  return { key: parsed.key };
}
