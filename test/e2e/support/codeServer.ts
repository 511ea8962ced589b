/**
 * A real VS Code for end-to-end tests: the one inside the `code-server` npm package (built by
 * test/setup/40-vscode.sh), with the extension installed from a freshly packaged .vsix into its own extensions
 * folder, driven by Playwright in Debian's Chromium. Only loopback traffic.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { ROOT } from '../../support/harness.ts';

export const CODE_SERVER = join(ROOT, 'node_modules', 'code-server');
export const CODE_SERVER_MARKER = join(CODE_SERVER, 'lib', 'vscode', '.gpurun-postinstall-done');
export const NODE24 = join(ROOT, 'node_modules', 'node', 'bin', 'node');
export const CHROMIUM = process.env.GPURUN_CHROMIUM ?? '/usr/bin/chromium';
export const RESULTS = join(ROOT, 'test-results');

/** Why VS Code cannot run here, or undefined when it can. */
export function missingVsCode(): string | undefined {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  if (!existsSync(NODE24)) return 'node_modules/node (Node 24) is missing: run npm ci';
  if (!existsSync(CODE_SERVER_MARKER)) return "code-server's native modules are not built: run bash test/setup/40-vscode.sh";
  return undefined;
}

/** Packages the extension (dist/ is built by npm test) and installs it into `extDir`. */
export function installExtension(dir: string, extDir: string): void {
  const vsix = join(dir, 'gpurun-e2e.vsix');
  execFileSync(process.execPath, [join(ROOT, 'node_modules', '@vscode', 'vsce', 'vsce'), 'package', '--no-dependencies', '--allow-missing-repository', '--no-rewrite-relative-links', '-o', vsix], { cwd: ROOT, stdio: 'pipe' });
  execFileSync(NODE24, [join(CODE_SERVER, 'out', 'node', 'entry.js'), '--extensions-dir', extDir, '--user-data-dir', join(dir, 'user-data'), '--install-extension', vsix, '--force'], {
    cwd: ROOT,
    stdio: 'pipe',
    env: { ...process.env, XDG_CONFIG_HOME: join(dir, 'config'), XDG_DATA_HOME: join(dir, 'data') },
  });
  if (!readdirSync(extDir).some((d) => d.startsWith('gpurun.gpurun-'))) throw new Error(`the extension did not install into ${extDir}`);
}

export interface CodeServer {
  url: string;
  proc: ChildProcess;
  log(): string;
  /** The last `lines` lines of the extension's own log ("GPU Run" output channel), for a failed test's report. */
  extensionLog(lines?: number): string;
  stop(): Promise<void>;
}

/** Starts code-server on a free loopback port with its own user data, settings and extensions. */
export async function startCodeServer(dir: string, opts: { folder: string; extDir: string; settings: Record<string, unknown>; env?: NodeJS.ProcessEnv }): Promise<CodeServer> {
  const userData = join(dir, 'user-data');
  mkdirSync(join(userData, 'User'), { recursive: true });
  // A home of its own: VS Code runs the user's login shell to read its environment each time an extension host
  // starts (a window load or reload), and terminals run it too; a slow ~/.bashrc of the machine's user (one that
  // waits on a lock) would hold the extension host back by up to 10 s and is no part of what is tested.
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  writeFileSync(
    join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        'security.workspace.trust.enabled': false,
        'terminal.integrated.gpuAcceleration': 'off',
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'update.mode': 'none',
        'telemetry.telemetryLevel': 'off',
        'chat.disableAIFeatures': true,
        'editor.minimap.enabled': false,
        'workbench.secondarySideBar.defaultVisibility': 'hidden',
        ...opts.settings,
      },
      null,
      2,
    ),
  );
  // A port the kernel says is free (a random pick collided with ephemeral ports); tried again if taken meanwhile.
  let proc: ChildProcess | undefined;
  let url = '';
  let log = '';
  for (let attempt = 0; !url; attempt++) {
    const port = await freePort();
    const args = [join(CODE_SERVER, 'out', 'node', 'entry.js'), '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--user-data-dir', userData, '--extensions-dir', opts.extDir, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', opts.folder];
    const child = spawn(NODE24, args, {
      cwd: dir,
      env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(dir, 'config'), ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: stop() ends the extension host, the language server and the rest with it, which
      // otherwise go on writing logs into the test's folder after code-server has gone.
      detached: true,
    });
    log = '';
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    const candidate = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null) break;
      try {
        const r = await fetch(`${candidate}/healthz`);
        if (r.ok) {
          url = candidate;
          break;
        }
      } catch {
        /* not yet */
      }
      await sleep(100);
    }
    if (url) proc = child;
    else if (child.exitCode === null || attempt >= 2 || !/EADDRINUSE/.test(log)) {
      await killGroup(child);
      throw new Error(`code-server did not start (exit ${child.exitCode}):\n${log}`);
    }
  }
  const p = proc!;
  return {
    url,
    proc: p,
    log: () => log,
    extensionLog: (lines = 60) => {
      const found = readdirSync(join(userData, 'logs'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith(join('gpurun.gpurun', 'GPU Run.log'))).sort();
      if (!found.length) return '(no extension log yet)';
      return readFileSync(join(userData, 'logs', found[found.length - 1]), 'utf8').split('\n').slice(-lines).join('\n');
    },
    stop: () => killGroup(p),
  };
}

/** Ends a process group started detached: TERM, up to 5 s for it to go, then KILL, and waits until none is left. */
async function killGroup(p: ChildProcess): Promise<void> {
  const alive = (): boolean => {
    try {
      process.kill(-p.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(-p.pid!, s);
    } catch {
      /* gone */
    }
  };
  signal('SIGTERM');
  for (let i = 0; i < 50 && alive(); i++) await sleep(100);
  signal('SIGKILL');
  for (let i = 0; i < 50 && alive(); i++) await sleep(100);
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    // Popups allowed: a job's page opened from the editor (vscode.env.openExternal) is a new browser tab.
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-popup-blocking'],
  });
}

/** Opens the workbench on `folder` and waits until it is up. */
export async function openWorkbench(browser: Browser, cs: CodeServer, folder: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${cs.url}/?folder=${encodeURIComponent(folder)}`);
  await page.waitForSelector('.monaco-workbench', { timeout: 60_000 });
  return page;
}

/** Opens the GPU Run sidebar and makes it wide enough for its descriptions (by dragging its sash). */
export async function openSidebar(page: Page, width = 520): Promise<void> {
  // The activity-bar icon toggles: click it only when the view is not showing (a retried test may find it open).
  if (!(await page.locator('.pane-header', { hasText: 'Jobs' }).first().isVisible())) {
    await page.locator('.activitybar [aria-label^="GPU Run"]').first().click();
  }
  await page.locator('.pane-header', { hasText: 'Jobs' }).first().waitFor();
  const box = await page.locator('.part.sidebar').boundingBox();
  if (box && box.width < width) {
    const y = box.y + box.height / 2;
    await page.mouse.move(box.x + box.width + 1, y);
    await page.mouse.down();
    await page.mouse.move(box.x + width, y, { steps: 5 });
    await page.mouse.up();
  }
}

/** The rows of the sidebar view titled `view` (Jobs, Hosts) that show `text`. */
export function viewRows(page: Page, view: string, text: string | RegExp): Locator {
  return page.locator('.pane', { has: page.locator('.pane-header', { hasText: view }) }).locator('.monaco-list-row', { hasText: text });
}

/** Right-clicks a tree row and picks `item` from its context menu, as a person does. */
export async function pickFromRowMenu(page: Page, row: Locator, item: string): Promise<void> {
  await row.first().click({ button: 'right' });
  const entry = page.locator('.context-view .monaco-menu .action-item', { hasText: item }).first();
  await entry.waitFor({ state: 'visible', timeout: 10_000 });
  await entry.click();
  // A click that lands while the menu is still settling (the tree redrew under it) is dropped: the hovered item
  // has the focus, and Enter picks it.
  const menu = page.locator('.context-view .monaco-menu');
  if (await menu.isVisible().catch(() => false)) {
    await page.waitForTimeout(300);
    if (await menu.isVisible().catch(() => false)) {
      await entry.hover();
      await page.keyboard.press('Enter');
    }
  }
  await menu.waitFor({ state: 'hidden', timeout: 5000 });
}

/** Maximizes the panel (terminal) or restores it: only the terminal's visible rows are in the DOM. */
export async function maximizePanel(page: Page, on: boolean): Promise<void> {
  const tall = async () => ((await page.locator('.part.panel').boundingBox())?.height ?? 0) > 500;
  for (let i = 0; i < 3 && (await tall()) !== on; i++) {
    await runCommand(page, 'View: Toggle Maximized Panel');
    await sleep(500);
  }
  if ((await tall()) !== on) throw new Error(`could not ${on ? 'maximize' : 'restore'} the panel`);
}

/**
 * F1, `text` into the quick input, Enter once a row showing `row` is listed, then `done` (if given) must hold. Tries
 * again (three times in all) if something, such as a terminal opening, takes the focus meanwhile.
 */
async function pickInQuickInput(page: Page, text: string, row: string, done?: () => Promise<unknown>): Promise<void> {
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await page.keyboard.press('F1');
      const input = page.locator('.quick-input-widget input');
      await input.waitFor({ state: 'visible', timeout: 5000 });
      await input.fill(text, { timeout: 5000 });
      await page.locator('.quick-input-list .monaco-list-row', { hasText: row }).first().waitFor({ state: 'visible', timeout: 15_000 });
      await page.keyboard.press('Enter');
      await done?.();
      return;
    } catch (err) {
      last = err;
      await page.keyboard.press('Escape').catch(() => {});
      await sleep(500);
    }
  }
  throw last;
}

/** Runs a command by its title from the command palette. */
export async function runCommand(page: Page, title: string): Promise<void> {
  await pickInQuickInput(page, `>${title}`, title);
}

/**
 * Types into the quick input whose title or prompt shows `step`, and presses Enter. Waiting for the step matters:
 * the widget is reused from one step to the next, so typing too early lands in the previous step.
 */
export async function answerInput(page: Page, step: string, text: string): Promise<void> {
  await page.locator('.quick-input-widget', { hasText: step }).waitFor({ state: 'visible', timeout: 15_000 });
  const input = page.locator('.quick-input-widget input');
  await input.fill(text);
  await page.keyboard.press('Enter');
}

/** Opens a workspace file by Quick Open (F1 without the ">" finds files; Ctrl+P is kept by some views). */
export async function openFile(page: Page, name: string): Promise<void> {
  await pickInQuickInput(page, name, name, () => page.locator(`.tab.active[aria-label*="${name}"]`).waitFor({ timeout: 5000 }));
}

/** The text of the visible terminal (DOM renderer: rows under .xterm-rows). */
export async function terminalText(page: Page): Promise<string> {
  const rows = page.locator('.terminal-wrapper.active .xterm-rows > div');
  const all = await rows.allInnerTexts().catch(() => [] as string[]);
  return all.map((r) => r.replace(/\u00a0/g, ' ').trimEnd()).join('\n');
}

/** Waits until the visible terminal shows `re`; returns its text. */
export async function waitForTerminal(page: Page, re: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = await terminalText(page);
    if (re.test(text)) return text;
    await sleep(200);
  }
  throw new Error(`the terminal did not show ${re} within ${timeoutMs} ms; it shows:\n${text}`);
}

/** A loopback port that was free a moment ago (the kernel picked it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A screenshot of the page in test-results/NAME (the screenshots the README shows, and those of failed tests). */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: join(RESULTS, name) });
}

/** GPU Run: Sign In with the broker's URL and a token; waits until the sidebar is connected. */
export async function signIn(page: Page, url: string, token: string): Promise<void> {
  await runCommand(page, 'GPU Run: Sign In');
  await answerInput(page, 'Sign In (1/2)', url);
  await answerInput(page, 'Sign In (2/2)', token);
  await page.locator('.notifications-toasts', { hasText: 'signed in' }).waitFor({ timeout: 30_000 });
  await page.locator('.monaco-list-row', { hasText: 'Not signed in' }).waitFor({ state: 'detached', timeout: 30_000 });
  await runCommand(page, 'Notifications: Clear All Notifications');
}

/**
 * A window on `folder` with the extension from a fresh .vsix, pointed at a team broker (gpurun.brokerUrl) and signed
 * in there with `token`, its GPU Run sidebar open.
 */
export async function openSignedInWindow(dir: string, opts: { folder: string; brokerUrl: string; token: string; settings?: Record<string, unknown> }): Promise<{ cs: CodeServer; browser: Browser; page: Page }> {
  const extDir = join(dir, 'extensions');
  mkdirSync(extDir);
  installExtension(dir, extDir);
  const cs = await startCodeServer(dir, { folder: opts.folder, extDir, settings: { 'gpurun.brokerUrl': opts.brokerUrl, ...opts.settings }, env: { GPURUN_HOME: join(dir, 'gpurun-home') } });
  const browser = await launchBrowser();
  const page = await openWorkbench(browser, cs, opts.folder);
  await openSidebar(page);
  await page.locator('.monaco-list-row', { hasText: 'Not signed in' }).waitFor({ timeout: 30_000 });
  await signIn(page, opts.brokerUrl, opts.token);
  return { cs, browser, page };
}
