import { run } from './exec.js';
import { controllerTable, renderControllerRuleset, type Services } from './nft-ruleset.js';

/**
 * The controller's side of the boot segment, whatever fences the board ports (a Linux bridge here, a
 * managed switch or a ToR elsewhere): an `inet` input filter on the boot interface that lets boards reach
 * the boot services only. One table per interface, replaced atomically on start, kept on stop (the
 * server down leaves the controller closed, not open) unless `remove()` is asked.
 */
export class ControllerFilter {
  readonly table: string;

  constructor(
    private readonly iface: string,
    private readonly services: Services,
    private readonly netns?: string,
  ) {
    this.table = controllerTable(iface);
  }

  async install(): Promise<void> {
    const rules = renderControllerRuleset({ iface: this.iface, services: this.services });
    await this.nft(`table inet ${this.table}\ndelete table inet ${this.table}\n${rules}`);
  }

  async remove(): Promise<void> {
    await this.nft(`table inet ${this.table}\ndelete table inet ${this.table}\n`).catch(() => {});
  }

  /** Problems for state(): the table is gone (flushed by hand, another firewall tool). */
  async problems(): Promise<string[]> {
    return run('nft', ['list', 'table', 'inet', this.table], { netns: this.netns }).then(
      () => [],
      () => [`nft table inet ${this.table} is missing`],
    );
  }

  private nft(input: string): Promise<string> {
    return run('nft', ['-f', '-'], { input, netns: this.netns });
  }
}
