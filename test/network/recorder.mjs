// A tiny listener for the network tests, run inside a netns: `node recorder.mjs udp:69 tcp:8775 ...`.
// Prints one line per event on stdout: "ready", "udp <port> <from> <data>", "tcp <port> <from> <data>".
// UDP datagrams are answered with "ack <data>"; TCP connections are greeted with "hello <port>\n".
import dgram from 'node:dgram';
import net from 'node:net';

const say = (line) => process.stdout.write(line + '\n');
let pending = 0;
for (const spec of process.argv.slice(2)) {
  const [proto, p] = spec.split(':');
  const port = Number(p);
  pending++;
  if (proto === 'udp') {
    const s = dgram.createSocket('udp4');
    s.on('message', (msg, r) => {
      const data = msg.toString().trim();
      say(`udp ${port} ${r.address} ${data}`);
      s.send(`ack ${data}\n`, r.port, r.address);
    });
    s.bind(port, () => --pending || say('ready'));
  } else {
    const srv = net.createServer((c) => {
      const from = c.remoteAddress?.replace(/^::ffff:/, '');
      say(`tcp ${port} ${from} connect`);
      c.write(`hello ${port}\n`);
      c.on('data', (d) => say(`tcp ${port} ${from} ${d.toString().trim()}`));
      c.on('error', () => {});
      c.setTimeout(3000, () => c.destroy());
    });
    srv.listen(port, '0.0.0.0', () => --pending || say('ready'));
  }
}
