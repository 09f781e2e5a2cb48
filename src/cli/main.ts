import { Command } from 'commander';
import { resolve } from 'node:path';
import { loadConfig } from '../config.js';
import { log } from '../log.js';
import { discoveredCommands, tenantCommands } from './admin.js';
import { registerClientCommands } from './commands.js';
import { consoleCommand } from './console.js';
import { sshCommand } from './ssh.js';

const program = new Command('dozen').description('DozenCloud: rent real ARM boards').showHelpAfterError();

interface ServeFlags {
  config?: string;
  dataDir?: string;
  api?: string;
  bootIp?: string;
  subnet?: string;
  /** --lab / --no-lab; neither: the config's lab.enabled (off by default). */
  lab?: boolean;
  labBoards?: string;
  boards?: string;
}

function configFrom(flags: ServeFlags) {
  return loadConfig(flags.config, {
    dataDir: flags.dataDir,
    api: flags.api,
    bootIp: flags.bootIp,
    subnet: flags.subnet,
    adminToken: process.env.DOZEN_ADMIN_TOKEN || undefined,
    lab: { enabled: flags.lab, boards: labBoardsFlag(flags.labBoards ?? flags.boards) },
  });
}

// The server and the lab are loaded only by the commands that run them: client commands start faster.
async function serve(flags: ServeFlags) {
  const config = configFrom(flags);
  const { startServer } = await import('../server.js');
  const server = await startServer(config);
  console.log(`DozenCloud API on ${server.apiUrl}  (admin token: ${config.adminToken ? 'from DOZEN_ADMIN_TOKEN/config' : resolve(config.dataDir, 'admin-token')})`);
  if (server.lab) {
    for (const b of server.lab.boards()) console.log(`  lab board ${b.id}  ${b.model}  mac ${b.mac}  ip ${b.ip}  serial ${b.serial}`);
    console.log(`  watch a board boot:  screen ${server.lab.boards()[0]?.serial ?? ''} 115200   ·   lab stays up after exit; \`dozen lab down\` removes it`);
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await server.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** --lab-boards 3 (that many virt boards) or --boards virt:2,bpim2u:2,arm64:1. */
function labBoardsFlag(v: string | undefined): number | string | undefined {
  return v === undefined ? undefined : /^\d+$/.test(v) ? Number(v) : v;
}

const withServeFlags = (c: Command) =>
  c
    .option('--config <file>', 'JSON configuration file (flags override it)')
    .option('--data-dir <dir>', 'state, tokens and lab files')
    .option('--api <host:port>', 'HTTP API address')
    .option('--boot-ip <ip>', 'address the DHCP/TFTP servers bind to and announce')
    .option('--subnet <cidr>', 'the boot network')
    .option('--lab', 'start the virtual lab of emulated boards (default: the config\'s lab.enabled, off unless set)')
    .option('--no-lab', 'do not start the virtual lab, whatever the config says')
    .option('--lab-boards <n|mix>', 'the lab\'s boards: a number of QEMU virt boards, or a mix like virt:2,bpim2u:2,arm64:1')
    .option('--boards <mix>', 'same as --lab-boards');

withServeFlags(program.command('serve').description('run the provisioning server (DHCP, TFTP, API; the virtual lab only with --lab or lab.enabled)')).action(serve);

const lab = program.command('lab').description('the virtual lab: emulated boards (QEMU virt ARMv7 and arm64, Banana Pi M2 Ultra) with real U-Boot');
withServeFlags(lab.command('up').description('start the lab and the server that boots it (serve --lab)')).action((flags: ServeFlags) => serve({ ...flags, lab: flags.lab ?? true }));
lab
  .command('down')
  .description('stop the lab boards and remove the lab network namespace')
  .option('--config <file>')
  .option('--data-dir <dir>')
  .action(async (flags: ServeFlags) => {
    const config = configFrom({ ...flags, lab: true });
    const { Lab } = await import('../lab/lab.js');
    await new Lab({ ...config.lab, bootIp: config.bootIp, subnet: config.subnet, stateDir: resolve(config.dataDir, 'lab') }).down();
    console.log(`lab ${config.lab.netns} removed`);
  });

registerClientCommands(program);
tenantCommands(program);
discoveredCommands(program);
consoleCommand(program);
sshCommand(program);

program.parseAsync().catch((err: Error) => {
  log.debug({ err }, 'command failed');
  console.error(`dozen: ${err.message}`);
  process.exit(1);
});
