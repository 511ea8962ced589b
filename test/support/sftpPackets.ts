/** SFTP packets built by hand, for tests that talk to the SFTP guard below any client. */

/** A uint32, big-endian, as SFTP encodes it. */
export function sftpU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** An SFTP string: its length, then its bytes. */
export function sftpString(s: string | Buffer): Buffer {
  const b = Buffer.from(s);
  return Buffer.concat([sftpU32(b.length), b]);
}

/** A whole packet with its length; `id` null for INIT, which has none. */
export function sftpPacket(type: number, id: number | null, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([type]), ...(id === null ? [] : [sftpU32(id)]), ...parts]);
  return Buffer.concat([sftpU32(body.length), body]);
}
