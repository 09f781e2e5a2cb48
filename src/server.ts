import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import type { Server as HttpServer } from 'node:http';
import { join, resolve } from 'node:path';
import { adminToken } from './api/admin-token.js';
import { createApp } from './api/app.js';
import { attachLeaseConsoles } from './api/console-socket.js';
import { healthDetailRoutes, healthStats } from './api/health.js';
import { serveApi, splitHostPort } from './api/listen.js';
import { networkRoutes } from './api/routes/network.js';
import { storageRoutes } from './api/routes/storage.js';
import { DhcpServer, type DhcpEvent } from './boot/dhcp/server.js';
import { DHCP_THREAD_ENTRY, DhcpThread } from './boot/dhcp/thread.js';
import { enrollLabBoards, networkSpec, powerOnLabBoards } from './boot/lab-boards.js';
import { BootService } from './boot/service.js';
import { TftpServer, type TransferEvent } from './boot/tftp/server.js';
import { TFTP_THREAD_ENTRY, TftpThread } from './boot/tftp/thread.js';
import { PreloadedThread } from './boot/thread/host.js';
import { HistoryLog } from './store/history.js';
import type { Config } from './config.js';
import { ConsoleSessions, type ConsoleWebSocket } from './console/index.js';
import { createContainerBackend, watchFailover, type ContainerBackend, type FailoverResult } from './containers/index.js';
import { ContainerLeasePort, containerRecords, failoverOutcome } from './containers/lease-port.js';
import { ImageCatalog } from './images/catalog.js';
import { ImageImporter } from './images/import.js';
import { Inventory } from './inventory/boards.js';
import { BoardEvents } from './inventory/events.js';
import { Lab } from './lab/lab.js';
import { LAB_KINDS } from './lab/kinds.js';
import { LabUnwedger } from './lab/unwedge.js';
import { Bus, imageUsers, leaseConsoleHooks, leaseLimits, LeaseService, LeaseSignals, resumeBoardLeaseLogs, resumeContainerConsoles, serveMetadata } from './leases/index.js';
import { log } from './log.js';
import { BoardNetwork } from './network/board-network.js';
import { networkDriver } from './network/registry.js';
import { claimStorage, readStorageOwner } from './storage/identity.js';
import { startIscsiStorage, type RunningStorage } from './storage/index.js';
import { Store } from './store/store.js';
import { consoleWebRouter } from './web/router.js';
import { createMetrics, metricsRouter, serveMetricsAlone } from './metrics/index.js';
import { startSshGateway, type SshGateway } from './gateway/gateway.js';
import { gatewayDeps } from './gateway/lease-view.js';
import { sshGatewayRoute } from './gateway/route.js';
import { EngineCa } from './engine-ca/index.js';
import { BoardDrains, BoardVolumes, BootEngineTls, KeepReady, SharedBoards } from './shared-boards/index.js';
import { sharedBoardRoutes } from './api/routes/shared-boards.js';
import { SYSTEM_TENANT } from './store/schema.js';

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
  tftp: TftpServer | TftpThread;
  dhcp: DhcpServer | DhcpThread;
  http: HttpServer;
  apiUrl: string;
  gateway?: SshGateway;
  adminToken: string;
  /** The container pool and its driver (shared boards' engines among them). */
  containers: ContainerBackend;
  stop(opts?: { labDown?: boolean }): Promise<void>;
}

/**
 * Builds the parts in order, each from the ones before it, and stops them in reverse (`cleanups`). Policy lives
 * with the parts: src/leases (lease state and rules), src/boot/service.ts (what the boot servers answer).
 */
export async function startServer(config: Config): Promise<RunningServer> {
  const dataDir = resolve(config.dataDir);
  const stateFile = join(dataDir, 'state.json');
  await mkdir(dataDir, { recursive: true });
  // The boot threads load first, beside the rest of start-up (reading the state, consoles, storage), and
  // bind below, once what they ask about is ready: a restart's boot-network outage is shorter by their load.
  // (A held thread is unref'd: one a failed start forgets cannot keep the process alive.)
  const preloaded = { tftp: config.tftp.thread ? new PreloadedThread(TFTP_THREAD_ENTRY) : undefined, dhcp: config.dhcp.thread ? new PreloadedThread(DHCP_THREAD_ENTRY) : undefined };
  const disposePreloaded = async () => void (await Promise.all([preloaded.tftp?.dispose(), preloaded.dhcp?.dispose()]));
  const store = await Store.open(stateFile).catch(async (err: unknown) => {
    await disposePreloaded();
    throw err;
  });
  const cleanups: Array<() => Promise<unknown>> = [() => store.close(), disposePreloaded];
  let lab: Lab | undefined;
  try {
    await claimController(config, store, stateFile);
    // The controller's own tenant holds shared boards' engine leases; a tenant of that name from before
    // would be able to act on them through the API.
    if (store.state.tenants.some((t) => t.id === SYSTEM_TENANT)) throw new Error(`the state holds a tenant named ${SYSTEM_TENANT}, the controller's own tenant: rename or remove it in ${stateFile} first`);

    // Images, boards, their events and consoles.
    const images = new ImageCatalog([{ dir: join(dataDir, 'images') }, { dir: config.imagesDir, sub: 'build' }]);
    for (const p of await images.problems()) log.warn(`image manifest ignored: ${p}`);
    const inventory = new Inventory({ store, images, subnet: config.subnet, bootIp: config.bootIp });
    const events = new BoardEvents();
    const consoles = new ConsoleSessions({ dataDir });
    cleanups.push(() => consoles.close());
    inventory.onChange((boards) => void consoles.sync(boards).catch((err) => log.warn({ err }, 'console sync failed')));

    // The lab: its boards up and enrolled like real ones.
    if (config.lab.enabled) {
      lab = new Lab({ ...config.lab, bootIp: config.bootIp, subnet: config.subnet, stateDir: join(dataDir, 'lab') });
      await enrollLabBoards(inventory, await lab.up(), config.lab.image);
    }
    // Consoles open before anything powers on, so no boot message is missed; live leases keep logging.
    await consoles.sync(inventory.list());
    await resumeBoardLeaseLogs(consoles, store.state.leases);

    // iSCSI root disks (our tgtd on the boot IP, which exists now: the lab made it); container leases on shared boards.
    const storage = config.storage.enabled ? await startStorage(config, store, stateFile) : undefined;
    if (storage) cleanups.push(() => storage.stop());
    // Shared boards must keep their tenants off the boot network's services (containers/fence.ts).
    const bootServices = [config.metadata.port, ...(storage ? [config.storage.tgt.portalPort] : [])].filter((port) => port > 0).map((port) => ({ ip: config.bootIp, port }));
    const ct = createContainerBackend(config.containers, log, bootServices);
    cleanups.push(async () => ct.stop());
    const containers = new ContainerLeasePort(ct.driver, ct.images);
    const bus = new Bus();
    // Shared boards: engines the controller boots itself join the pool. Those registered before a restart
    // go back in first, so reconcile finds their containers. The engine CA is made on first use.
    let engineCa: Promise<EngineCa> | undefined;
    const openEngineCa = () => (engineCa ??= EngineCa.open(join(dataDir, 'engine-ca'), { controllerId: store.state.controllerId }));
    const engineTls = new BootEngineTls(openEngineCa);
    let leasesRef: LeaseService | undefined; // made below; the shared boards' calls into it come later
    const shared = new SharedBoards({
      store,
      leases: () => leasesRef!,
      pool: ct.pool,
      ca: openEngineCa,
      tls: engineTls,
      bus,
      events,
      log,
      image: config.containers.shared.image,
      readyTimeoutMs: config.containers.shared.readyTimeoutS * 1000,
      warm: (host) => ct.driver.warm(host),
    });
    // Persistent /data of container leases on shared boards: an iSCSI LUN each (shared-boards/board-volumes.ts).
    if (storage) ct.driver.setVolumes(new BoardVolumes({ store, storage: storage.storage, images: ct.images, sizeBytes: config.containers.shared.volumeMb * 2 ** 20, log }));
    const drains = new BoardDrains({ store, pool: ct.pool, mover: () => ct.driver, leases: () => leasesRef!, events, log });
    for (const line of await shared.restore()) log.info(`reconcile: ${line}`);
    for (const line of await containers.reconcile(store.state.leases)) log.info(`reconcile: ${line}`);

    // Leases: the one writer of lease state. Those whose disk storage could not find are marked so first.
    const metrics = createMetrics({
      leases: () => store.state.leases,
      boardStates: () => inventory.list().map((b) => b.state),
      consoleViewers: () => Object.values(consoles.states()).reduce((n, c) => n + c.viewers, 0),
      engines: () => ct.pool.states(),
      sharedBoards: () => store.state.boards.flatMap((b) => shared.status(b.id) ?? []),
    });
    const unsubscribeMetrics = bus.subscribe(metrics.onBus);
    cleanups.push(async () => unsubscribeMetrics());
    const signals = new LeaseSignals();
    const consoleHooks = leaseConsoleHooks(consoles, containers && ((id) => containers.connector(id)));
    let network: BoardNetwork | undefined; // started below, once the boot services' ports are known; jobs run only after that
    const networkHooks = {
      join: (board: string, tenant: string) => network!.join(board, tenant),
      leave: (board: string) => network!.leave(board),
      fenced: (board: string) => network?.fenced(board) ?? false,
    };
    const history = new HistoryLog(join(config.dataDir, 'history'), config.leases.keepReleasedDays);
    const leases = new LeaseService({ store, inventory, images, events, bus, signals, storage: storage?.storage, containers, console: consoleHooks, network: networkHooks, history, engineDataDiskBytes: config.containers.shared.dataDiskMb * 2 ** 20, ...leaseLimits(config) });
    leasesRef = leases;
    shared.start();
    cleanups.push(async () => shared.stop());
    const keepReady = new KeepReady({ shared, store, log, keep: config.containers.shared.keep, idleMs: config.containers.shared.idleS * 1000 });
    await leases.markDisksMissing(storage?.missingDisks ?? []);

    // The boot network's services: TFTP, DHCP, metadata. What they answer comes from the inventory and the leases.
    const boot = new BootService({ config, inventory, images, events, leaseOnBoard: (id) => leases.leaseOnBoard(id), storage: storage?.storage });
    const { tftp: t, dhcp: d, subnet, router, dns, domain } = config;
    const onTransfer = (ev: TransferEvent) => (metrics.onTransfer(ev), boot.onTransfer(ev));
    const bounds = { address: config.bootIp, port: t.port, maxTransfers: t.maxTransfers, maxPerClient: t.maxPerClient, maxClientTimeoutS: t.maxClientTimeoutS, onTransfer };
    const tftp = t.thread ? new TftpThread({ ...bounds, resolve: boot.resolveFile, fileCacheBytes: t.fileCacheMb * 2 ** 20, preloaded: preloaded.tftp }) : new TftpServer({ ...bounds, handler: boot.files });
    // The lab pins each board's neighbour entry on the controller (src/lab/lab.ts): those get unicast replies.
    const pinned = new Set((lab?.boards() ?? []).map((b) => `${b.mac}/${b.ip}`));
    // Emulated boards whose NIC model can wedge are kicked when their DHCP goes unanswered (src/lab/unwedge.ts).
    const wedgy = (lab?.boards() ?? []).filter((b) => LAB_KINDS[b.kind]?.unwedge);
    const unwedger = wedgy.length
      ? new LabUnwedger(new Map(wedgy.map((b) => [b.mac, { id: b.id, qmp: b.qmp }])), (id) => events.add(id, { type: 'power', message: 'lab: DHCP offers unanswered, QMP stop + cont (emulated GMAC receive wedge)' }))
      : undefined;
    const onDhcpEvent = (ev: DhcpEvent) => (metrics.onDhcpEvent(ev), boot.onDhcpEvent(ev), unwedger?.onDhcpEvent(ev));
    const dhcpOptions = { serverAddress: config.bootIp, port: d.port, subnet, router, dns, domain, leaseSeconds: d.leaseSeconds, pool: d.pool, lookup: boot.lookup, onEvent: onDhcpEvent };
    const dhcp = d.thread ? new DhcpThread({ ...dhcpOptions, pinned: [...pinned], preloaded: preloaded.dhcp }) : new DhcpServer({ ...dhcpOptions, pinned: (mac, ip) => pinned.has(`${mac}/${ip}`) });
    // Both bind at once: the boot network is back that much sooner after a restart. A board answered by
    // DHCP in the moment before TFTP listens retransmits its request (U-Boot: after its TFTP timeout).
    const bootStarts = await Promise.allSettled([tftp.start(), dhcp.start()]);
    if (bootStarts[0].status === 'fulfilled') cleanups.push(() => tftp.stop());
    if (bootStarts[1].status === 'fulfilled') cleanups.push(() => dhcp.stop());
    for (const s of bootStarts) if (s.status === 'rejected') throw s.reason;
    const metaServer = await serveMetadata(
      { store, signals, boardIp: (id) => inventory.find(id)?.ip, engineTls: (lease, file, ip) => engineTls.file(lease, file, ip) },
      config.bootIp,
      config.metadata.port,
      config.limits,
    );
    cleanups.push(() => closeHttp(metaServer));

    // Board ports fenced before any board powers on or any job runs: only now are the services' ports known.
    const services = { dhcp: config.dhcp.port, tftp: tftp.address().port, iscsi: config.storage.tgt.portalPort, metadata: (metaServer.address() as { port: number }).port };
    network = new BoardNetwork(networkDriver(networkSpec(config, lab, services), log), log);
    const net = network;
    const health = await net.start(inventory.list(), leases.liveBoardLeases());
    log.info({ driver: health.driver, boardIsolation: health.boardIsolation }, 'network: board ports fenced');
    for (const p of health.problems) log.warn(`network: ${p}`);
    inventory.onChange((boards) => void net.sync(boards).catch((err) => log.error({ err }, 'network sync failed')));

    // Image import and delete.
    await mkdir(join(dataDir, 'images'), { recursive: true });
    const inUse = (name: string) => imageUsers(name, store, storage?.storage);
    const importer = new ImageImporter({ catalog: images, dir: join(dataDir, 'images'), log, inUse, onDelete: storage && ((name) => storage.storage.removeImage(name)) });
    for (const s of await importer.recover()) log.warn(`reconcile: removed the leftover of an interrupted image import: ${s}`);

    // The API, and lease consoles over WebSocket on its server.
    const token = await adminToken(config, dataDir);
    let consoleWs: ConsoleWebSocket | undefined;
    const stats = healthStats({ network: net, tftp, dhcp, console: () => consoleWs });
    const detail = healthDetailRoutes({
      storage: storage && { dir: config.storage.dir, driver: storage.driverReason, tgtdPid: () => storage.daemon.pid },
      // Configured engines and shared boards' registered ones; null while there are none.
      docker: () => (ct.pool.hosts().length ? ct.pool.hosts().map((h) => ct.pool.state(h.id)) : undefined),
      lab: lab && (() => ({ netns: config.lab.netns, boards: lab!.boards().length })),
      network: () => net.health(),
    });
    let gateway: SshGateway | undefined; // started once the API listens, below
    const extraRoutes = [...(storage ? storageRoutes({ disks: storage.store }) : []), ...networkRoutes({ network: net }), ...sharedBoardRoutes({ shared, drains }), ...detail, sshGatewayRoute(() => gateway)];
    const routers = [consoleWebRouter()];
    if (config.metrics.listen) {
      const [host, port] = splitHostPort(config.metrics.listen);
      const alone = await serveMetricsAlone(metrics.registry, host, port);
      cleanups.push(() => closeHttp(alone));
    } else routers.push(metricsRouter(metrics.registry, { store, adminToken: token }));
    const app = createApp({ adminToken: token, store, inventory, events, images, leases, bus, log, stats, consoles, importer, routers, extraRoutes, sharedStatus: (id) => shared.status(id), limits: config.limits, publicOrigin: config.publicOrigin });
    const { http, url: apiUrl } = await serveApi(app, config.api, config.limits);
    cleanups.push(() => closeHttp(http));
    consoleWs = attachLeaseConsoles(http, { store, adminToken: token, consoles, bus, limits: config.limits, publicOrigin: config.publicOrigin });
    const ws = consoleWs;
    cleanups.push(() => ws.close()); // runs before http.close (cleanups run in reverse)

    // The SSH gateway: tenants reach their boards and consoles with their leases' keys.
    if (config.gateway.enabled) {
      const [host, port] = splitHostPort(config.gateway.listen);
      const gw = await startSshGateway({ host, port, hostKeyPath: config.gateway.hostKey ?? join(dataDir, 'ssh-gateway', 'host_ed25519'), deps: gatewayDeps({ store, inventory, consoles, maxViewers: config.limits.viewersPerConsole }), log, maxConnections: config.gateway.maxConnections });
      cleanups.push(() => gw.close());
      const unsubscribe = bus.subscribe((ev) => ev.type === 'lease' && gw.recheck());
      cleanups.push(async () => unsubscribe());
      gateway = gw;
      log.info({ ssh: `${gw.host}:${gw.port}` }, 'SSH gateway');
    }

    // All is listening: lab boards power on, interrupted jobs resume, container leases get their consoles back and fail over.
    if (lab && config.lab.powerOn) await powerOnLabBoards(lab, inventory, events);
    for (const line of await leases.settleEndedJobs()) log.warn(`reconcile: ${line}`);
    for (const line of leases.resumeJobs()) log.info(`reconcile: ${line}`);
    const interrupted = await leases.endInterruptedMigrations();
    if (interrupted) log.warn(`reconcile: ${interrupted} container lease(s) were migrating when the server stopped: marked error`);
    {
      await resumeContainerConsoles(consoles, store.state.leases, (id) => containers.connector(id));
      // A shared board going down: its leases move to another when failover is on, else are marked.
      // A failure to record is thrown back to the watcher, which then reports the leases as not moved.
      const onResult = (r: FailoverResult) => leases.recordFailover(failoverOutcome(r));
      const onStart = (recorded: Array<{ leaseId: string }>, down: { id: string }) => leases.beginFailover(recorded.map((r) => r.leaseId), down.id);
      watchFailover(ct.driver, { records: () => containerRecords(store.state.leases), onStart, onResult });
      // Shared boards may have rebooted while the server was down: their leases' volumes are mounted again.
      for (const b of store.state.boards.filter((x) => x.role === 'shared' && ct.pool.has(x.id))) {
        void ct.driver.reattachVolumes(b.id, containerRecords(store.state.leases)).then(
          (lines) => lines.forEach((line) => log.info(`reconcile: ${line}`)),
          (err: unknown) => log.warn({ err, board: b.id }, 'reconcile: volumes not checked (they are when the board answers again)'),
        );
      }
    }
    keepReady.start(); // after resumed jobs: boards it takes are then really free
    cleanups.push(async () => keepReady.stop());
    const stopReaper = leases.startReaper(config.leases.reapIntervalMs, config.leases.keepReleasedDays * 86_400_000, config.leases.archiveAfterMs);
    cleanups.push(async () => stopReaper());

    log.info({ api: apiUrl, bootIp: config.bootIp, lab: lab ? lab.boards().map((b) => b.id) : [] }, 'DozenCloud is serving');
    const stop = async (opts: { labDown?: boolean } = {}) => {
      for (const c of cleanups.reverse()) await c().catch((err) => log.warn({ err }, 'shutdown step failed'));
      if (opts.labDown && lab) {
        await lab.down(); // boards first: no moment with boards running and their ports unfenced
        await net.stop().catch((err) => log.warn({ err }, 'network: removing the lab datapath failed'));
      }
    };
    return { config, store, inventory, events, leases, bus, consoles, storage, images, lab, network: net, tftp, dhcp, http, apiUrl, gateway, adminToken: token, containers: ct, stop };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    if (lab?.created) await lab.down().catch(() => {}); // a lab made by this failed start goes with it
    throw err;
  }
}

/** The state and the storage directory must belong to one controller: checked before anything runs. */
async function claimController(config: Config, store: Store, stateFile: string): Promise<void> {
  if (config.storage.enabled) {
    const owner = await claimStorage(config.storage.dir, store.state.controllerId, { adopt: config.storage.adopt, stateFile });
    if (owner.outcome !== 'matched') log.warn(`storage ${config.storage.dir}: controller ${owner.id} (${owner.outcome})`);
  }
  if (!store.state.controllerId) {
    const id = config.storage.enabled ? (await readStorageOwner(config.storage.dir))! : randomUUID();
    await store.update((s) => void (s.controllerId = id));
  }
}

/** iSCSI root disks: our tgtd on the boot IP, reconciled with the leases. */
async function startStorage(config: Config, store: Store, stateFile: string): Promise<RunningStorage> {
  // Targets admit their board's address alone where the network fences source addresses; with
  // `none` an address proves nothing more than the (predictable) initiator name.
  const acl = (config.network?.driver ?? 'linux-bridge') === 'none' ? 'name' : 'address';
  const dataDiskBytes = config.containers.shared.dataDiskMb * 2 ** 20; // shared boards' Docker data disks
  const storage = await startIscsiStorage(config.storage, { portalIp: config.bootIp, leases: () => store.state.leases, controllerId: store.state.controllerId, stateFile, acl, dataDiskBytes });
  log.info(`storage: ${storage.driverReason}`);
  for (const line of storage.reconciled) log.info(`reconcile: ${line}`);
  return storage;
}

/**
 * Stops a listener and ends its connections. close() alone waits for requests in flight, and stops the
 * timer that enforces requestTimeout: a board powered off in the middle of a metadata request would
 * hold the shutdown for ever.
 */
function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
}
