/**
 * A burst of N concurrent POSTs from a process of its own, as tenants' requests arrive from elsewhere:
 * the client's own work (undici, JSON) then shares no event loop with the server it measures. Input on
 * stdin as JSON { url, token?, body?, n }; prints { wall, ms: [...], statuses: [...] } on stdout.
 */
let input = '';
for await (const chunk of process.stdin) input += chunk;
const { url, token, body, n } = JSON.parse(input);
const headers = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) };
const now = () => Number(process.hrtime.bigint()) / 1e6;
// One warm-up request's worth of connection set-up is not what we time: open the sockets first.
await Promise.all(Array.from({ length: n }, () => fetch(url, { method: 'HEAD' }).then((r) => r.arrayBuffer()).catch(() => {})));
const start = now();
const out = await Promise.all(
  Array.from({ length: n }, async () => {
    const t = now();
    const res = await fetch(url, { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
    await res.arrayBuffer();
    return { ms: now() - t, status: res.status };
  }),
);
const wall = now() - start;
process.stdout.write(JSON.stringify({ wall, ms: out.map((o) => o.ms), statuses: out.map((o) => o.status) }) + '\n');
