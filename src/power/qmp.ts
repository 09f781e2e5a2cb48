import { createConnection } from 'node:net';

/**
 * Run QMP commands over QEMU's monitor socket: one connection per call (QEMU serves one QMP client at a
 * time; holding a connection open would lock out the operator's own tools).
 */
export async function qmp(socketPath: string, commands: Array<{ execute: string; arguments?: object }>, timeoutMs = 5000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    const results: unknown[] = [];
    let buf = '';
    let greeted = false;
    let sent = -1; // -1: qmp_capabilities pending
    const timer = setTimeout(() => fail(new Error(`QMP ${socketPath}: no answer after ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const sendNext = () => {
      const cmd = sent < 0 ? { execute: 'qmp_capabilities' } : commands[sent];
      if (!cmd) {
        clearTimeout(timer);
        sock.end();
        resolve(results);
        return;
      }
      sock.write(JSON.stringify(cmd) + '\n');
    };
    sock.on('error', (err) => fail(new Error(`QMP ${socketPath}: ${err.message}`, { cause: err })));
    sock.on('data', (chunk) => {
      buf += chunk.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.QMP) {
          greeted = true;
          sendNext();
        } else if (msg.event) {
          continue; // asynchronous events are not answers
        } else if (greeted) {
          if (msg.error) return fail(new Error(`QMP ${sent < 0 ? 'qmp_capabilities' : commands[sent]!.execute}: ${msg.error.desc}`));
          if (sent >= 0) results.push(msg.return);
          sent++;
          sendNext();
        }
      }
    });
  });
}
