/**
 * The TFTP thread (src/boot/tftp/thread.ts starts it): the TftpServer runs here, so per-packet work,
 * retransmission timers and file reads never wait behind the API, consoles or a state write. Each
 * request costs the main thread one question (what does this path mean for this client?); the answer
 * is bytes or a file under a root, opened and streamed here.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { resolvedOpener, type Resolved } from './resolved.js';
import { TftpError, TftpServer, type TftpClient } from './server.js';
import type { FromWorker, ThreadOptions, ToWorker } from './thread-protocol.js';

const port = parentPort!;
const send = (m: FromWorker) => port.postMessage(m);
const pending = new Map<number, { resolve: (r: Resolved | null) => void; reject: (e: Error) => void }>();
let nextId = 1;
const ask = (path: string, client: TftpClient) =>
  new Promise<Resolved | null>((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    send({ t: 'resolve', id, path, client });
  });

const open = resolvedOpener();
const server = new TftpServer({
  ...(workerData as ThreadOptions),
  handler: async (path, client) => {
    const r = await ask(path, client);
    return r && open(r, client);
  },
  onTransfer: (ev) => send({ t: 'transfer', ev }),
});

// Stats for /health, sent when they change (at most every 500 ms).
let lastStats = '';
const statsTimer = setInterval(() => {
  const s = JSON.stringify(server.stats);
  if (s !== lastStats) send({ t: 'stats', stats: JSON.parse((lastStats = s)) });
}, 500);

port.on('message', async (m: ToWorker) => {
  if (m.t === 'stop') {
    clearInterval(statsTimer);
    await server.stop();
    for (const p of pending.values()) p.reject(new Error('TFTP thread stopping'));
    send({ t: 'stats', stats: { ...server.stats } });
    send({ t: 'stopped' });
    port.close();
    return;
  }
  const p = pending.get(m.id);
  if (!p) return;
  pending.delete(m.id);
  if (m.t === 'resolved') p.resolve(m.r);
  else p.reject(m.code === undefined ? new Error(m.message) : new TftpError(m.code, m.message));
});

await server.start();
send({ t: 'listening', address: server.address() });
