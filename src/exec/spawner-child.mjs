// The command helper (src/exec/spawner.ts): runs each command it is sent and answers with its exit and
// output. Plain JavaScript, so it starts without the TypeScript loader and stays small: its forks are
// cheap, and they are not the server's. Each command runs in a process group of its own; a timeout or
// a kill request ends the whole group. When the server goes, so do the commands still running.
import { spawn } from 'node:child_process';

const running = new Map();

function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL'); // the group is gone already, or never was
    } catch {
      /* gone */
    }
  }
}

process.on('message', (m) => {
  if (m.kill !== undefined) {
    const c = running.get(m.kill);
    if (c) killGroup(c);
    return;
  }
  const { id, file, args, timeoutMs, maxOutput, input } = m;
  let stdout = '';
  let stderr = '';
  let done = false;
  let child;
  const finish = (r) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    running.delete(id);
    process.send({ id, stdout, stderr, ...r });
  };
  try {
    child = spawn(file, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], detached: true });
  } catch (err) {
    return process.send({ id, stdout, stderr, error: err.message });
  }
  running.set(id, child);
  // Killed is done: answer at once, not when the last holder of the command's output lets go.
  const timer = setTimeout(() => {
    killGroup(child);
    finish({ code: null, signal: 'SIGKILL', timedOut: true });
  }, timeoutMs);
  child.stdout.on('data', (d) => {
    if (stdout.length < maxOutput) stdout += d.toString();
  });
  child.stderr.on('data', (d) => {
    if (stderr.length < maxOutput) stderr += d.toString();
  });
  child.on('error', (err) => finish({ error: err.message }));
  if (input !== undefined) {
    child.stdin.on('error', () => {}); // a program that exits early closes its stdin: its exit status says why
    child.stdin.end(input);
  }
  child.on('close', (code, signal) => finish({ code, signal }));
});

process.on('disconnect', () => {
  for (const c of running.values()) killGroup(c);
  process.exit(0);
});
