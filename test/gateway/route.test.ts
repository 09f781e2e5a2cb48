/** GET /v1/ssh-gateway: the port and host key the web UI and `dozen ssh` show, or nulls when the gateway is off. */
import { describe, expect, it } from 'vitest';
import { sshGatewayRoute } from '../../src/gateway/route.js';

const call = (r: ReturnType<typeof sshGatewayRoute>) => r.handler({} as never);

describe('ssh-gateway route', () => {
  it('is public and names the running gateway’s port and host key', () => {
    const r = sshGatewayRoute(() => ({ port: 2299, hostPublicKey: 'ssh-ed25519 AAAAC3Nza' }));
    expect([r.method, r.path, r.access]).toEqual(['get', '/ssh-gateway', 'public']);
    expect(call(r)).toEqual({ port: 2299, hostKey: 'ssh-ed25519 AAAAC3Nza' });
  });

  it('says null for both when the gateway is off', () => {
    expect(call(sshGatewayRoute(() => undefined))).toEqual({ port: null, hostKey: null });
  });
});
