import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { Server as HttpServer } from 'node:http';
import { join, resolve } from 'node:path';
import { createApp } from './api/app.js';
import { consoleIdOf } from './auth/authz.js';
import { createContainerBackend, watchFailover } from './containers/index.js';
import { ContainerLeasePort, containerRecords, recordFailover } from './containers/lease-port.js';
import { ConsoleSessions, type ConsoleWebSocket } from './console/index.js';
import { attachLeaseConsoles } from './api/console-socket.js';
import { consoleWebRouter } from './web/router.js';
import { storageRoutes } from './api/routes/storage.js';
import { networkRoutes } from './api/routes/network.js';
import { InventoryBootDecider } from './boot/decider.js';
import { DhcpServer, type DhcpEvent } from './boot/dhcp/server.js';
import { bootFilesHandler } from './boot/files.js';
import { BootWindows, fromFirmware } from './boot/boot-window.js';
import { BOOT_SCRIPT_NAME } from './boot/spec.js';
import { TftpServer } from './boot/tftp/server.js';
import type { Config } from './config.js';
import { ImageCatalog } from './images/catalog.js';
import { ImageImporter } from './images/import.js';
import { Inventory } from './inventory/boards.js';
import { BoardEvents } from './inventory/events.js';
import { Lab } from './lab/lab.js';
import { UBOOT_BIN } from './lab/preflight.js';
import { log } from './log.js';
import { powerDriver } from './power/registry.js';
import { BoardNetwork } from './network/board-network.js';
import { networkDriver, type NetworkSpec } from './network/registry.js';
import { Store } from './store/store.js';
import { startIscsiStorage, type RunningStorage } from './storage/index.js';
import { claimStorage, readStorageOwner } from './storage/identity.js';
import { Bus } from './leases/bus.js';
import { LeaseService } from './leases/service.js';
import { leaseConsoleHooks } from './leases/console-hooks.js';
import { LeaseSignals } from './leases/waits.js';
import { metadataApp, metadataKernelArgs } from './leases/metadata.js';

export interface RunningServer {
  config: Config;
  store: Store;
  inventory: Inventory;
  events: BoardEvents;
  leases: LeaseService;
  bus: Bus;
  consoles: ConsoleSessions;
  storage?: RunningStorage;
  images: ImageCatalog;
  lab?: Lab;
  network: BoardNetwork;
  tftp: TftpServer;
  dhcp: DhcpServer;
  http: HttpServer;
  apiUrl: string;
  adminToken: string;
  stop(opts?: { labDown?: boolean }): Promise<void>;
}

/** The admin token: from config/env, else one made on first start and kept (0600) in the data dir. */
async function adminToken(config: Config, dataDir: string): Promise<string> {
  if (config.adminToken) return config.adminToken;
  const file = join(dataDir, 'admin-token');
  const existing = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (existing) return existing;
  const token = randomBytes(24).toString('base64url');
  await writeFile(file, token + '\n', { mode: 0o600 });
  log.info({ file }, 'made a new admin token');
  return token;
}

export async function startServer(config: Config): Promise<RunningServer> {
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true });
  const store = await Store.open(join(dataDir, 'state.json'));
  const cleanups: Array<() => Promise<unknown>> = [() => store.close()];
  let lab: Lab | undefined;
  try {
    // The state and the storage directory must belong to one controller: checked before anything runs.
    if (config.storage.enabled) {
      const owner = await claimStorage(config.storage.dir, store.state.controllerId, { adopt: config.storage.adopt, stateFile: join(dataDir, 'state.json') });
      if (owner.outcome !== 'matched') log.warn(`storage ${config.storage.dir}: controller ${owner.id} (${owner.outcome})`);
    }
    if (!store.state.controllerId) {
      const id = config.storage.enabled ? (await readStorageOwner(config.storage.dir))! : randomUUID();
      await store.update((s) => void (s.controllerId = id));
    }
    const images = new ImageCatalog([
      { dir: join(dataDir, 'images') },
      { dir: config.imagesDir, sub: 'build' },
    ]);
    for (const p of await images.problems()) log.warn(`image manifest ignored: ${p}`);
    const inventory = new Inventory({ store, images, subnet: config.subnet, bootIp: config.bootIp });
    const events = new BoardEvents();
    const bus = new Bus();
    const signals = new LeaseSignals();
    const consoles = new ConsoleSessions({ dataDir });
    cleanups.push(() => consoles.close());
    inventory.onChange((boards) => void consoles.sync(boards).catch((err) => log.warn({ err }, 'console sync failed')));

    if (config.lab.enabled) {
      lab = new Lab({ ...config.lab, bootIp: config.bootIp, subnet: config.subnet, stateDir: join(dataDir, 'lab') });
      const boards = await lab.up();
      await enrollLabBoards(inventory, boards, config.lab.image);
    }
    // Consoles open before anything powers on, so no boot message is missed; live leases keep logging.
    await consoles.sync(inventory.list());
    for (const l of store.state.leases.filter((x) => x.boardId && x.state !== 'released')) await consoles.startLeaseLog(l.boardId!, l.id);

    // iSCSI root disks: our tgtd on the boot IP (which exists now, the lab made it), reconciled with the leases.
    let storage: RunningStorage | undefined;
    if (config.storage.enabled) {
      // Targets admit their board's address alone where the network fences source addresses; with
      // `none` an address proves nothing more than the (predictable) initiator name.
      const acl = (config.network?.driver ?? 'linux-bridge') === 'none' ? 'name' : 'address';
      storage = await startIscsiStorage(config.storage, { portalIp: config.bootIp, leases: () => store.state.leases, controllerId: store.state.controllerId, stateFile: join(dataDir, 'state.json'), acl });
      const running = storage;
      cleanups.push(() => running.stop());
      log.info(`storage: ${storage.driverReason}`);
      for (const line of storage.reconciled) log.info(`reconcile: ${line}`);
      // A lease whose disk is gone says so, instead of reading `active` to its tenant.
      if (storage.missingDisks.length) {
        await store.update((s) => {
          for (const l of s.leases.filter((x) => storage!.missingDisks.includes(x.id))) {
            l.state = 'error';
            l.stateReason = 'its root disk is missing from storage (see GET /v1/storage/quarantine); reimage or release the lease';
          }
        });
      }
    }

    // Container leases: Docker engines on shared boards.
    const ct = createContainerBackend(config.containers, log);
    cleanups.push(async () => ct.stop());
    const containers = config.containers.hosts.length ? new ContainerLeasePort(ct.driver, ct.images) : undefined;
    if (containers) for (const line of await containers.reconcile(store.state.leases)) log.info(`reconcile: ${line}`);

    const leases = new LeaseService({
      store,
      inventory,
      images,
      events,
      bus,
      signals,
      storage: storage?.storage,
      containers,
      console: leaseConsoleHooks(consoles, containers && ((id) => containers.connector(id))),
      // Started below, once the boot services' ports are known; jobs run only after that.
      network: { join: (b, t) => network!.join(b, t), leave: (b) => network!.leave(b) },
      timeouts: { actionMs: config.leases.actionTimeoutMs, bootMs: config.leases.bootTimeoutMs, osMs: config.leases.osTimeoutMs },
      leasesPerTenant: config.limits.leasesPerTenant,
      powerCallsPerMinute: config.limits.powerCallsPerMinute,
      containerQuota: { memoryMb: config.limits.containerMemoryMbPerTenant, cpus: config.limits.containerCpusPerTenant },
    });

    let network: BoardNetwork | undefined;
    const metadataBase = `http://${config.bootIp}:${config.metadata.port}`;
    const decider = new InventoryBootDecider({
      inventory,
      images,
      tftp: config.tftp,
      imageFor: (board) => leases.leaseOnBoard(board.id)?.image ?? board.image,
      // A leased board boots with its iSCSI root (when its image has a root disk) and its metadata URLs.
      extraArgs: (board, image) => {
        const lease = leases.leaseOnBoard(board.id);
        if (!lease) return undefined;
        const iscsi = lease.iscsi && storage ? storage.storage.kernelArgs(lease.iscsi, image) : undefined;
        // No token yet (a lease recorded before tokens existed): the metadata service refuses it until the next boot.
        return [iscsi, metadataKernelArgs(metadataBase, lease.id, lease.bootToken ?? 'none')].filter(Boolean).join(' ');
      },
    });

    // A board's generated boot files close once it has its kernel, until its next power-on (a new boot token).
    const bootWindows = new BootWindows((boardId) => leases.leaseOnBoard(boardId)?.bootToken);
    const closeOnKernel = async (boardId: string, path: string) => {
      const lease = leases.leaseOnBoard(boardId);
      const boot = lease?.bootToken; // the boot this fetch belonged to, read before anything awaits
      const img = lease && (await images.get(lease.image));
      if (img && path.replace(/^\/+/, '') === `images/${img.name}/${img.manifest.kernel}`) bootWindows.close(boardId, boot);
    };

    const tftp = new TftpServer({
      address: config.bootIp,
      port: config.tftp.port,
      maxTransfers: config.tftp.maxTransfers,
      maxPerClient: config.tftp.maxPerClient,
      maxClientTimeoutS: config.tftp.maxClientTimeoutS,
      handler: bootFilesHandler({ inventory, images, decider, closed: (id) => bootWindows.isClosed(id) }),
      onTransfer: (ev) => {
        const board = inventory.byIp(ev.client.address);
        if (!board) return;
        if (ev.ok) void closeOnKernel(board.id, ev.path).catch((err) => log.warn({ err, board: board.id }, 'closing the boot window'));
        const mbps = ev.ms > 0 ? +(ev.bytes / 1e6 / (ev.ms / 1000)).toFixed(2) : undefined;
        events.add(board.id, {
          type: ev.ok ? 'tftp' : 'error',
          message: ev.ok ? `fetched ${ev.path} (${ev.bytes} bytes in ${ev.ms} ms)` : `TFTP ${ev.path} failed: ${ev.error}`,
          details: { path: ev.path, bytes: ev.bytes, ms: ev.ms, mbps, blksize: ev.blksize, windowsize: ev.windowsize },
        });
      },
    });
    await tftp.start();
    cleanups.push(() => tftp.stop());

    const dhcp = new DhcpServer({
      serverAddress: config.bootIp,
      port: config.dhcp.port,
      subnet: config.subnet,
      router: config.router,
      dns: config.dns,
      domain: config.domain,
      leaseSeconds: config.dhcp.leaseSeconds,
      pool: config.dhcp.pool,
      lookup: async (info) => {
        const board = inventory.byMac(info.mac);
        if (!board) {
          // Recorded in batches, never awaited: a flood of unknown MACs must not queue real boards behind the disk.
          inventory.noteUnknown(info.mac, { vendorClass: info.vendorClass, clientArch: info.clientArch }).catch((err) => log.warn({ err }, 'recording an unknown MAC failed'));
          return null;
        }
        if (!(await decider.decide(board.mac))) return null;
        return { ip: board.ip, hostname: board.id, bootFile: BOOT_SCRIPT_NAME, nextServer: config.bootIp };
      },
      onEvent: (ev: DhcpEvent) => {
        const board = ev.mac ? inventory.byMac(ev.mac) : undefined;
        if (board && ev.type === 'offer' && fromFirmware(ev.info)) bootWindows.reopen(board.id);
        if (board && ev.type !== 'unknown') {
          events.add(board.id, { type: 'dhcp', message: `DHCP ${ev.type}${ev.ip ? ` ${ev.ip}` : ''}${ev.reason ? `: ${ev.reason}` : ''}`, details: { kind: ev.type, ip: ev.ip } });
        }
      },
    });
    await dhcp.start();
    cleanups.push(() => dhcp.stop());

    const meta = metadataApp({ store, signals, boardIp: (id) => inventory.list().find((b) => b.id === id)?.ip });
    const metaServer = await listen(meta, config.bootIp, config.metadata.port);
    metaServer.maxConnections = config.limits.metadataConnections;
    metaServer.headersTimeout = config.limits.headersTimeoutMs;
    metaServer.requestTimeout = 60_000;
    cleanups.push(() => new Promise((r) => metaServer.close(() => r(undefined))));

    // Board ports fenced before any board powers on or any job runs: only now are the services' ports known.
    const spec = networkSpec(config, lab, {
      dhcp: config.dhcp.port,
      tftp: tftp.address().port,
      iscsi: config.storage.tgt.portalPort,
      metadata: (metaServer.address() as { port: number }).port,
    });
    network = new BoardNetwork(networkDriver(spec, log), log);
    const net = network;
    const health = await net.start(inventory.list(), liveBoardLeases(store));
    log.info({ driver: health.driver, boardIsolation: health.boardIsolation }, 'network: board ports fenced');
    for (const p of health.problems) log.warn(`network: ${p}`);
    inventory.onChange((boards) => void net.sync(boards).catch((err) => log.error({ err }, 'network sync failed')));

    await mkdir(join(dataDir, 'images'), { recursive: true });
    const importer = new ImageImporter({
      catalog: images,
      dir: join(dataDir, 'images'),
      log,
      inUse: (name) => imageUsers(name, store, storage),
      onDelete: storage ? (name) => storage!.storage.removeImage(name) : undefined,
    });
    for (const s of await importer.recover()) log.warn(`reconcile: removed the leftover of an interrupted image import: ${s}`);

    const token = await adminToken(config, dataDir);
    const app = createApp({
      adminToken: token,
      store,
      inventory,
      events,
      images,
      leases,
      bus,
      log,
      // Public: how boards are isolated and whether anything is wrong with it (the details: GET /v1/network, admins).
      stats: () => {
        const h = net.health();
        return { boardIsolation: h.boardIsolation, network: { driver: h.driver, problems: h.problems.length }, tftp: tftp.stats, dhcp: dhcp.stats, console: consoleWs?.stats() };
      },
      consoles,
      importer,
      routers: [consoleWebRouter()],
      extraRoutes: [...(storage ? storageRoutes({ disks: storage.store }) : []), ...networkRoutes({ network: net })],
      limits: config.limits,
    });
    let consoleWs: ConsoleWebSocket | undefined;
    const [host, port] = splitHostPort(config.api);
    const http = await listen(app, host, port);
    // Headers must come quickly; a whole request may take long (image uploads), but not for ever.
    http.headersTimeout = config.limits.headersTimeoutMs;
    http.requestTimeout = config.limits.requestTimeoutMs;
    const addr = http.address();
    const apiUrl = `http://${host}:${typeof addr === 'object' && addr ? addr.port : port}`;
    cleanups.push(() => new Promise((r) => http.close(() => r(undefined))));
    consoleWs = attachLeaseConsoles(http, { store, adminToken: token, consoles, bus, limits: config.limits });
    const ws = consoleWs;
    cleanups.push(() => ws.close()); // runs before http.close (cleanups run in reverse)

    if (lab && config.lab.powerOn) {
      for (const b of lab.boards()) {
        const board = inventory.byMac(b.mac);
        if (!board) continue;
        const power = powerDriver(board.power, board.id);
        if ((await power.state()) !== 'on') {
          await power.on();
          events.add(board.id, { type: 'power', message: 'powered on (lab start)' });
        }
      }
    }
    for (const line of leases.resumeJobs()) log.info(`reconcile: ${line}`);
    if (containers) {
      for (const l of store.state.leases.filter((x) => x.kind === 'container' && x.state === 'active')) {
        await consoles.attach(consoleIdOf(l), containers.connector(l.id));
        await consoles.startLeaseLog(consoleIdOf(l), l.id);
      }
      // A shared board going down: its leases move to another when failover is on, else are marked.
      watchFailover(ct.driver, {
        records: () => containerRecords(store.state.leases),
        onResult: (r) => void recordFailover(store, r).catch((err) => log.warn({ err }, 'failover bookkeeping')),
      });
    }
    const reaper = setInterval(() => {
      void leases.reap();
      void leases.prune(config.leases.keepReleasedDays * 86_400_000);
    }, config.leases.reapIntervalMs);
    cleanups.push(async () => clearInterval(reaper));

    log.info({ api: apiUrl, bootIp: config.bootIp, lab: lab ? lab.boards().map((b) => b.id) : [] }, 'DozenCloud is serving');

    return {
      config,
      store,
      inventory,
      events,
      leases,
      bus,
      consoles,
      storage,
      images,
      lab,
      network: net,
      tftp,
      dhcp,
      http,
      apiUrl,
      adminToken: token,
      async stop(opts = {}) {
        for (const c of cleanups.reverse()) await c().catch((err) => log.warn({ err }, 'shutdown step failed'));
        if (opts.labDown && lab) {
          await lab.down(); // boards first: no moment with boards running and their ports unfenced
          await net.stop().catch((err) => log.warn({ err }, 'network: removing the lab datapath failed'));
        }
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    if (lab?.created) await lab.down().catch(() => {}); // a lab made by this failed start goes with it
    throw err;
  }
}

/** config.network, or for the lab when none is given: its own bridge, fenced by linux-bridge. */
function networkSpec(config: Config, lab: Lab | undefined, services: { dhcp: number; tftp: number; iscsi: number; metadata: number }): NetworkSpec {
  if (config.network) return config.network as NetworkSpec;
  if (!lab) throw new Error('config.network is required without the lab'); // configSchema says so first
  return { driver: 'linux-bridge', ...lab.networkSpec(), controllerIp: config.bootIp, services };
}

/** Boards whose lease is live: they are in their tenant's network (rejoined at start). */
function liveBoardLeases(store: Store): Array<{ boardId: string; tenantId: string }> {
  // Not `releasing`: a release resumed after its network step would never take the board out again.
  return store.state.leases.filter((l) => l.kind === 'board' && l.boardId && l.state !== 'released' && l.state !== 'releasing').map((l) => ({ boardId: l.boardId!, tenantId: l.tenantId }));
}

/** Why an image cannot be deleted now: leases or boards use it, or lease disks were cloned from it. */
async function imageUsers(name: string, store: Store, storage?: RunningStorage): Promise<string | null> {
  const leases = store.state.leases.filter((l) => l.image === name && l.state !== 'released');
  if (leases.length) return `lease(s) ${leases.map((l) => l.id).join(', ')}`;
  const boards = store.state.boards.filter((b) => b.image === name);
  if (boards.length) return `default image of board(s) ${boards.map((b) => b.id).join(', ')}`;
  const disks = storage ? await storage.storage.imageInUse(name) : [];
  return disks.length ? `lease disks ${disks.join(', ')}` : null;
}

/** Lab boards are enrolled like real ones; their serial path and QMP socket are refreshed on every start. */
async function enrollLabBoards(inventory: Inventory, boards: Awaited<ReturnType<Lab['up']>>, image: string): Promise<void> {
  for (const b of boards) {
    const power = { driver: 'qemu', qmp: b.qmp };
    const firmware = { driver: 'file', path: b.firmware, golden: UBOOT_BIN };
    // By MAC, or by id for a lab board enrolled under an earlier MAC scheme.
    const existing = inventory.byMac(b.mac) ?? inventory.list().find((x) => x.id === b.id && x.model === 'qemu-virt');
    if (existing) {
      await inventory.patch(existing.id, { serial: b.serial, power, firmware, ip: b.ip, port: b.port, ...(existing.mac !== b.mac ? { mac: b.mac } : {}) });
    } else {
      await inventory.create({ id: b.id, mac: b.mac, model: 'qemu-virt', arch: 'armv7', ip: b.ip, serial: b.serial, port: b.port, power, firmware, image });
    }
  }
}

function listen(app: { listen: (port: number, host: string, cb: () => void) => HttpServer }, host: string, port: number): Promise<HttpServer> {
  return new Promise<HttpServer>((res, rej) => {
    const s = app.listen(port, host, () => res(s)).once('error', rej);
  });
}

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
}
