// Smoke test: Playwright drives Debian's Chromium (no downloaded browser), fills a
// form and screenshots it. Usage: node smoke.mjs OUT.png   (CHROMIUM overrides the binary)
// Prints "ok" and exits 0, or prints why and exits 1.
import { chromium } from 'playwright-core';
import { existsSync } from 'node:fs';

const out = process.argv[2];
if (!out) {
  console.error('usage: node smoke.mjs SCREENSHOT.png');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`smoke: no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(1);
}

const html = `<!doctype html><meta charset="utf-8"><title>atrest smoke</title>
<h1>atrest smoke</h1>
<form id="f"><label>Volume name <input id="name" name="name"></label>
<button type="submit">Create</button></form>`;

let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    // --no-sandbox: Chromium refuses to start as root with its sandbox.
    // --disable-dev-shm-usage: containers often have a 64 MB /dev/shm, and Debian's
    // wrapper's own check for that misfires when /dev/shm is mounted twice.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
    timeout: 30_000,
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  await page.goto('data:text/html,' + encodeURIComponent(html));
  await page.fill('#name', 'vol-smoke');
  const value = await page.inputValue('#name');
  if (value !== 'vol-smoke') throw new Error(`input holds ${JSON.stringify(value)}, expected "vol-smoke"`);
  await page.screenshot({ path: out });
  await browser.close();
  console.log('ok');
  process.exit(0);
} catch (e) {
  console.error(`smoke: FAILED (chromium ${executablePath}): ${e && e.stack ? e.stack : e}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
