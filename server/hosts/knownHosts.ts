/**
 * Host-key checking against an OpenSSH known_hosts file. Pure: the caller reads the file and hands over the key blob
 * the server presented. An unknown or changed key is refused with its SHA256 fingerprint and the exact line that
 * trusts it; nothing is ever added to the file automatically.
 */
import { createHash, createHmac } from 'node:crypto';

export interface KnownHostsEntry {
  line: number;
  marker: '' | '@revoked' | '@cert-authority';
  patterns: string;
  keyType: string;
  keyBase64: string;
}

export type HostKeyVerdict =
  | { ok: true }
  | { ok: false; kind: 'unknown' | 'changed' | 'revoked'; keyType: string; fingerprint: string; lineToAdd: string; conflictingLines: number[] };

/** `SHA256:…` as `ssh-keygen -lf` prints it (base64 without padding). */
export function fingerprintSha256(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named inside an SSH public key blob (its first string), e.g. `ssh-ed25519`. */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  return n > 0 && n < 64 && blob.length >= 4 + n ? blob.subarray(4, 4 + n).toString('latin1') : 'unknown';
}

/** How a host is named in known_hosts: `addr` on port 22, else `[addr]:port`. */
export function knownHostsName(address: string, port: number): string {
  return port === 22 ? address : `[${address}]:${port}`;
}

export function parseKnownHosts(text: string): KnownHostsEntry[] {
  const out: KnownHostsEntry[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const f = line.split(/\s+/);
    let marker: KnownHostsEntry['marker'] = '';
    if (f[0] === '@revoked' || f[0] === '@cert-authority') marker = f.shift() as KnownHostsEntry['marker'];
    if (f.length < 3) return;
    out.push({ line: i + 1, marker, patterns: f[0], keyType: f[1], keyBase64: f[2] });
  });
  return out;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(name);
}

/** Whether a known_hosts host field (comma list, wildcards, `!negation`, or `|1|salt|hash`) names `name`. */
export function hostMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith('|1|')) {
    const [, , salt, hash] = patterns.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  let matched = false;
  for (const p of patterns.split(',')) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false;
    } else if (globMatch(p, name)) matched = true;
  }
  return matched;
}

/** Key types the file lists for this host, so the SSH client can ask for one of those (as OpenSSH does). */
export function knownKeyTypes(entries: KnownHostsEntry[], name: string): string[] {
  return [...new Set(entries.filter((e) => e.marker === '' && hostMatches(e.patterns, name)).map((e) => e.keyType))];
}

export function checkHostKey(entries: KnownHostsEntry[], name: string, blob: Buffer): HostKeyVerdict {
  const keyType = keyTypeOf(blob);
  const b64 = blob.toString('base64');
  const fingerprint = fingerprintSha256(blob);
  const lineToAdd = `${name} ${keyType} ${b64}`;
  const mine = entries.filter((e) => hostMatches(e.patterns, name));
  if (entries.some((e) => e.marker === '@revoked' && e.keyBase64 === b64)) {
    return { ok: false, kind: 'revoked', keyType, fingerprint, lineToAdd, conflictingLines: [] };
  }
  const plain = mine.filter((e) => e.marker === '');
  if (plain.some((e) => e.keyBase64 === b64)) return { ok: true };
  const sameType = plain.filter((e) => e.keyType === keyType);
  if (sameType.length) return { ok: false, kind: 'changed', keyType, fingerprint, lineToAdd, conflictingLines: sameType.map((e) => e.line) };
  return { ok: false, kind: 'unknown', keyType, fingerprint, lineToAdd, conflictingLines: [] };
}
