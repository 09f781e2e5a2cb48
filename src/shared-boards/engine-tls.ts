/**
 * The engine's TLS material as a shared board's boot fetches it from the metadata service
 * (images/docker-host: docker-ca.pem, docker-server.pem, docker-server-key.pem).
 *
 * Why the key is handed out once, and only while the engine lease is provisioning: tenants' containers on
 * that board can read /proc/cmdline (not namespaced), which holds the metadata URL and its boot token,
 * and their traffic may leave from the board's own address, which is all the metadata service checks
 * (the image's fence drops it too). The board fetches the key before dockerd starts and before it phones
 * home, so before any container exists and before the lease is active; after that first fetch, and for
 * good once the controller has reached the engine with it, the key is gone from the service. A later
 * boot of the active engine keeps the key it has. A first boot that lost the key on the way needs the
 * board given back and shared again.
 */
import type { EngineCa, EngineTls } from '../engine-ca/index.js';
import type { Lease } from '../store/schema.js';

export const ENGINE_TLS_FILES = ['docker-ca.pem', 'docker-server.pem', 'docker-server-key.pem'] as const;
export type EngineTlsFile = (typeof ENGINE_TLS_FILES)[number];

export function isEngineTlsFile(name: string): name is EngineTlsFile {
  return (ENGINE_TLS_FILES as readonly string[]).includes(name);
}

interface BootIssue {
  bootToken: string;
  /** Absent once spent before anything was issued in this process (a restart): nothing more is handed out. */
  tls?: Promise<EngineTls>;
  keyServed: boolean;
}

export class BootEngineTls {
  /** Per engine lease, the current boot's certificate (made at its first request). */
  private readonly boots = new Map<string, BootIssue>();

  /** `ca` opens the controller's engine CA (once; it is made on first use). */
  constructor(private readonly ca: () => Promise<EngineCa>) {}

  /**
   * A file for the lease's current boot, or undefined (404): not an engine lease, no boot token, or the
   * key asked for a second time. `ip` is the board's reserved address, the certificate's SAN.
   */
  async file(lease: Lease, name: EngineTlsFile, ip: string): Promise<string | undefined> {
    if (lease.purpose !== 'engine' || !lease.boardId || !lease.bootToken) return undefined;
    if (name === 'docker-ca.pem') return (await this.ca()).caPem;
    let b = this.boots.get(lease.id);
    if (!b || b.bootToken !== lease.bootToken) {
      const boardId = lease.boardId;
      const tls = this.ca().then((ca) => ca.issueServer({ boardId, ip }));
      const mine: BootIssue = { bootToken: lease.bootToken, tls, keyServed: false };
      tls.catch(() => void (this.boots.get(lease.id) === mine && this.boots.delete(lease.id))); // a failed issue is retried
      this.boots.set(lease.id, (b = mine));
    }
    if (!b.tls) return undefined;
    if (name === 'docker-server.pem') return (await b.tls).cert;
    // Only before the lease is active: the image fetches the key before it phones home (which ends the
    // provision job), so a later boot of an active engine (a power cycle) keeps the key it has.
    if (b.keyServed || lease.state !== 'provisioning') return undefined;
    b.keyServed = true; // before the await: two requests at once get it once
    try {
      return (await b.tls).key;
    } catch (err) {
      b.keyServed = false;
      throw err;
    }
  }

  /** The controller reached the engine with this boot's key: nothing more is handed out for it. */
  spend(lease: Pick<Lease, 'id' | 'bootToken'>): void {
    if (!lease.bootToken) return;
    const b = this.boots.get(lease.id);
    if (b && b.bootToken === lease.bootToken) b.keyServed = true;
    else this.boots.set(lease.id, { bootToken: lease.bootToken, keyServed: true });
  }

  /** The lease ended: its boots are forgotten. */
  forget(leaseId: string): void {
    this.boots.delete(leaseId);
  }
}
