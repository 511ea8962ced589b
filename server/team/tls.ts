/**
 * TLS of a team broker. On a TCP address that is not loopback the broker speaks HTTPS: with the admin's certificate
 * (`"tls": {"cert", "key"}`, e.g. CA-signed), or with a self-signed one it makes on first start in
 * `<dataDir>/tls/` (key 0600) and keeps. Clients pin a self-signed certificate by its SHA-256 fingerprint
 * (GPURUN_BROKER_FINGERPRINT, the extension's gpurun.brokerFingerprint). Plain HTTP is used on loopback addresses and
 * Unix sockets, and on a network address only when the config says `"tls": false`.
 *
 * The certificate is made with `openssl req -x509` (argv, no shell): node:crypto makes keys but not certificates.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { GpurunError } from '../protocol/errors.ts';
import type { Listen } from '../config.ts';
import type { TlsConfig } from '../teamConfig.ts';

export interface TlsMaterial {
  cert: string;
  key: string;
  /** SHA-256 of the certificate (DER), as `AB:CD:…`, what clients pin. */
  fingerprint: string;
  /** Where the certificate is (for the log and the admin). */
  certPath: string;
  selfSigned: boolean;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/** Whether this listen address and config get TLS. */
export function wantsTls(listen: Listen, tls: TlsConfig): boolean {
  if (listen.kind === 'unix' || tls.mode === 'off') return false;
  if (tls.mode === 'auto') return !isLoopbackHost(listen.host);
  return true;
}

/** The certificate and key to listen with, or undefined for plain HTTP. */
export function tlsMaterial(listen: Listen, tls: TlsConfig, dataDir: string): TlsMaterial | undefined {
  if (!wantsTls(listen, tls)) return undefined;
  if (tls.mode === 'files') {
    const read = (p: string, what: string) => {
      try {
        return readFileSync(p, 'utf8');
      } catch (e) {
        throw new GpurunError('E_CONFIG', `tls.${what}: cannot read ${p}: ${(e as Error).message}`, { hint: 'Point tls.cert and tls.key at PEM files the broker can read, or leave "tls" out for a self-signed certificate.' });
      }
    };
    const cert = read(tls.cert, 'cert');
    return { cert, key: read(tls.key, 'key'), fingerprint: fingerprintOf(cert), certPath: tls.cert, selfSigned: false };
  }
  const dir = join(dataDir, 'tls');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (!existsSync(certPath) || !existsSync(keyPath)) makeSelfSigned(dir, certPath, keyPath, listen.kind === 'tcp' ? listen.host : 'localhost');
  const cert = readFileSync(certPath, 'utf8');
  return { cert, key: readFileSync(keyPath, 'utf8'), fingerprint: fingerprintOf(cert), certPath, selfSigned: true };
}

export function fingerprintOf(certPem: string): string {
  try {
    return new X509Certificate(certPem).fingerprint256;
  } catch (e) {
    throw new GpurunError('E_CONFIG', `the TLS certificate is not a PEM X.509 certificate: ${(e as Error).message}`);
  }
}

function makeSelfSigned(dir: string, certPath: string, keyPath: string, host: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const names = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1'];
  if (host !== '0.0.0.0' && host !== '::' && !isLoopbackHost(host)) names.push(isIP(host) ? `IP:${host}` : `DNS:${host}`);
  const tmpCert = `${certPath}.new`;
  const tmpKey = `${keyPath}.new`;
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650', '-subj', '/CN=gpurun-broker', '-addext', `subjectAltName=${names.join(',')}`, '-keyout', tmpKey, '-out', tmpCert], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
    chmodSync(tmpKey, 0o600);
    chmodSync(tmpCert, 0o600);
    renameSync(tmpKey, keyPath);
    renameSync(tmpCert, certPath);
  } catch (e) {
    rmSync(tmpKey, { force: true });
    rmSync(tmpCert, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    const why = err.code === 'ENOENT' ? 'openssl is not installed' : (err.stderr?.toString().trim() || err.message);
    throw new GpurunError('E_CONFIG', `a broker on a network address speaks TLS, and it could not make its self-signed certificate: ${why}`, {
      hint: 'Install openssl, or give a certificate ("tls": {"cert": "…", "key": "…"}), or listen on 127.0.0.1 or a Unix socket. "tls": false allows plain HTTP on the network: tokens then travel in clear text.',
    });
  }
}
