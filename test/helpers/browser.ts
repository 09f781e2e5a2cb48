import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's chromium, headless, with nothing that reaches out of the machine. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** The web UI's embedded terminal's whole buffer (scrollback and screen) as text; '' before the console opened. */
export const terminalText = (page: Page): Promise<string> =>
  page.evaluate(() => {
    const t = (window as unknown as { dozenTerm?: { buffer: { active: { length: number; getLine(i: number): { translateToString(trim: boolean): string } | undefined } } } }).dozenTerm;
    if (!t) return '';
    const b = t.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  });
