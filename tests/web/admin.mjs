// The admin web page in a real browser: Debian's Chromium driven by Playwright, against a
// running `atrest serve` and `atrest kms serve` that crates/atrest/tests/web.rs started.
// Run by that test, in two phases around a restart of the daemon:
//
//   PHASE=1  log in (a wrong password refused first); a file that is no certificate, then
//            a CA that did not sign the server, are refused with the reason beside the
//            field and Encrypt stays unavailable; the right settings pass the test and
//            enable Encrypt; Encrypt (confirmed) converts the volume with visible
//            progress, seen after a reload and from a second browser, to "Encrypted".
//   PHASE=2  (daemon restarted) the volume shows unlocked again; rotate the key and lock
//            and unlock from the page; the audit view; requests without a session, with
//            another session's CSRF token, with a forged cookie or from another origin
//            are refused; then five wrong passwords rate-limit the address.
//
// Environment: ATREST_WEB_URL, ATREST_ADMIN_PASSWORD, ATREST_ARTIFACTS (screenshots and a
// dump of every response, which the Rust side searches for secrets), and for phase 1
// ATREST_CA, ATREST_WRONG_CA, ATREST_NOT_CERT, ATREST_CLIENT_P12, ATREST_PASSPHRASE,
// ATREST_KMIP_USER, ATREST_KMIP_PASSWORD, ATREST_KMIP_SERVER. CHROMIUM overrides the browser.
// Exits 0 when every check holds; otherwise prints the failed check and exits 1.
import { chromium } from 'playwright-core';
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const base = env('ATREST_WEB_URL');
const out = env('ATREST_ARTIFACTS');
const phase = env('PHASE');
const adminPassword = env('ATREST_ADMIN_PASSWORD');
mkdirSync(out, { recursive: true });
const dump = join(out, `responses-phase${phase}.txt`);

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  const file = join(out, `${phase}-${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/// Every response the browser (or a request context) gets goes to the dump, headers
/// and body, so that the Rust side can search all of them for a secret.
function record(page) {
  page.on('response', async (r) => {
    let body = '';
    try {
      body = (await r.body()).toString('latin1');
    } catch (e) {
      body = '';
    }
    const headers = JSON.stringify(await r.allHeaders().catch(() => ({})));
    appendFileSync(dump, `=== ${r.status()} ${r.url()}\n${headers}\n${body}\n`);
  });
}

async function recordApi(r) {
  const body = (await r.body()).toString('latin1');
  appendFileSync(dump, `=== ${r.status()} ${r.url()}\n${JSON.stringify(r.headers())}\n${body}\n`);
  return r;
}

/// Clicks a submit button and waits for the page its form leads to.
async function submit(page, selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}

async function newPage(browser) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20_000);
  record(page);
  return { ctx, page };
}

async function login(page, password = adminPassword) {
  await page.goto(base + '/login');
  await page.fill('#user', 'admin');
  await page.fill('#password', password);
  await submit(page, 'button[type=submit]');
}

async function csrfOf(page) {
  return page.locator('input[name=csrf]').first().inputValue();
}

async function volumeState(page, name) {
  return (await page.locator(`[data-volume="${name}"] .state`).first().textContent()).trim();
}

async function phase1(browser) {
  const { page } = await newPage(browser);
  await page.goto(base + '/');
  check(page.url().endsWith('/login'), 'without a session the page sends the browser to the login form');
  await screenshot(page, 'login');

  await login(page, 'not the password');
  check(page.url().endsWith('/login'), 'a wrong password does not log in');
  check((await page.locator('#login-error').textContent()).includes('Wrong user name or password'), 'a wrong password is refused in words');
  await screenshot(page, 'wrong-password');

  await login(page);
  check(page.url().endsWith('/storage/encryption'), 'the right password opens Storage › Encryption');
  check(await page.locator('#encrypt').isDisabled(), 'Encrypt is unavailable before any test');
  check((await page.locator('#encrypt-why').textContent()).includes('Save and Test'), 'the page says why Encrypt is unavailable');
  await screenshot(page, 'settings');

  // A file that is no certificate: refused before anything is written, beside its field.
  await page.setInputFiles('#ca_cert', env('ATREST_NOT_CERT'));
  await submit(page, '#save');
  const notCert = await page.locator('#ca_cert-error').textContent();
  check(notCert.includes('is not a certificate'), `a file that is no certificate is named beside the CA field: ${notCert}`);
  check(await page.locator('#encrypt').isDisabled(), 'Encrypt stays unavailable after a refused upload');
  await screenshot(page, 'bad-ca-file');

  // Another server with the saved password "unchanged": refused, the password must be
  // typed again (a stolen session must not be able to send it to a server of its own).
  await page.fill('#servers', env('ATREST_KMIP_SERVER'));
  await submit(page, '#save');
  const retype = await page.locator('#password-error').textContent();
  check(retype.includes('type the KMIP password again'), `a new server with the saved password is refused: ${retype}`);
  await screenshot(page, 'password-again');

  // A real certificate, of a CA that did not sign the server's: the test fails at the
  // server certificate, nothing is saved.
  await page.fill('#servers', env('ATREST_KMIP_SERVER'));
  await page.fill('#password', env('ATREST_KMIP_PASSWORD'));
  await page.setInputFiles('#ca_cert', env('ATREST_WRONG_CA'));
  await submit(page, '#save');
  const wrong = await page.locator('#ca_cert-error').textContent();
  check(wrong.length > 0, `a CA that did not sign the server is refused beside the CA field: ${wrong}`);
  check((await page.locator('#test-title').textContent()).includes('Test failed'), 'the test is reported failed');
  check((await page.locator('.test .notice').textContent()).includes('Nothing was saved'), 'the page says nothing was saved');
  check(await page.locator('#encrypt').isDisabled(), 'Encrypt stays unavailable after a failed test');
  await screenshot(page, 'wrong-ca');

  // The right settings.
  await page.setInputFiles('#ca_cert', env('ATREST_CA'));
  await page.setInputFiles('#client_cert', env('ATREST_CLIENT_P12'));
  await page.fill('#passphrase', env('ATREST_PASSPHRASE'));
  await page.fill('#username', env('ATREST_KMIP_USER'));
  await page.fill('#password', env('ATREST_KMIP_PASSWORD'));
  await submit(page, '#save');
  check((await page.locator('#test-title').textContent()).includes('Test passed'), 'the right settings pass the test');
  const steps = await page.locator('ol.steps').textContent();
  for (const word of ['Secure connection', 'TLS', 'Server certificate', 'Client certificate', 'KMIP', 'Round trip']) {
    check(steps.includes(word), `the test shows the step "${word}"`);
  }
  check(await page.locator('#passphrase').inputValue() === '', 'the passphrase field is empty after saving (write-only)');
  check(await page.locator('#password').inputValue() === '', 'the password field is empty after saving (write-only)');
  check(await page.locator('#encrypt').isEnabled(), 'Encrypt is available after a passing test');
  await screenshot(page, 'test-passed');

  await submit(page, '#encrypt');
  check((await page.locator('h1').textContent()).startsWith('Encrypt 1 volume'), 'Encrypt asks for confirmation');
  await screenshot(page, 'confirm-encrypt');
  await submit(page, '#confirm');

  // Progress: a bar strictly between 0 and 100, seen after a reload and by a second browser.
  const bar = page.locator('[data-progress="recordings"] progress');
  await bar.waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => {
    const p = document.querySelector('[data-progress="recordings"] progress');
    return p && p.value > 0 && p.value < 100;
  }, null, { timeout: 30_000 });
  await screenshot(page, 'progress');
  await page.reload();
  check(await page.locator('[data-progress="recordings"]').count() === 1 || (await volumeState(page, 'recordings')).startsWith('Encrypted'), 'the progress survives a reload');
  const second = await newPage(browser);
  await login(second.page);
  const seen = await second.page.locator('[data-volume="recordings"] .state').textContent();
  check(seen.startsWith('Encrypting') || seen.startsWith('Encrypted'), `a second browser sees the conversion: ${seen}`);
  await screenshot(second.page, 'second-browser');
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-volume="recordings"] .state');
    return s && s.textContent.startsWith('Encrypted');
  }, null, { timeout: 300_000 });
  check((await volumeState(page, 'recordings')) === 'Encrypted and unlocked', 'the volume ends "Encrypted and unlocked"');
  await screenshot(page, 'encrypted');
  await page.goto(base + '/volumes');
  const card = await page.locator('section.volume[data-volume="recordings"]').textContent();
  check(card.includes('XTS-AES-128'), 'Volumes shows the cipher');
  await screenshot(page, 'volumes');
}

async function phase2(browser) {
  const { ctx, page } = await newPage(browser);
  await login(page);
  await page.goto(base + '/volumes');
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-volume="recordings"] .state');
    return s && s.textContent === 'Encrypted and unlocked';
  }, null, { timeout: 60_000 });
  check(true, 'after a restart of the daemon the page shows the volume unlocked again');
  await screenshot(page, 'after-restart');
  const keyBefore = await page.locator('section.volume[data-volume="recordings"] dd code').nth(1).textContent();

  // Rotate (rewrap), confirmed.
  await submit(page, 'form[action="/volumes/recordings/rewrap"] button');
  check((await page.locator('h1').textContent()).startsWith('Rotate the key'), 'rotate asks for confirmation');
  await screenshot(page, 'confirm-rotate');
  await submit(page, '#confirm');
  await page.waitForFunction((before) => {
    const codes = document.querySelectorAll('section.volume[data-volume="recordings"] dd code');
    const s = document.querySelector('[data-volume="recordings"] .state');
    return codes.length > 1 && codes[1].textContent !== before && s && s.textContent === 'Encrypted and unlocked';
  }, keyBefore, { timeout: 60_000, polling: 500 }).catch(async () => {
    // The page reloads itself on a state change; a rewrap that is quicker than a poll
    // changes no state: load it again.
    await page.goto(base + '/volumes');
  });
  const keyAfter = await page.locator('section.volume[data-volume="recordings"] dd code').nth(1).textContent();
  check(keyAfter !== keyBefore, `rotate puts the volume under a new key (${keyBefore} → ${keyAfter})`);
  await screenshot(page, 'rotated');

  // Lock, confirmed; then unlock.
  await submit(page, 'form[action="/volumes/recordings/lock"] button');
  await submit(page, '#confirm');
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-volume="recordings"] .state');
    return s && s.textContent.startsWith('Locked');
  }, null, { timeout: 30_000 });
  check(true, 'lock from the page locks the volume');
  await screenshot(page, 'locked');
  await submit(page, 'form[action="/volumes/recordings/unlock"] button');
  await submit(page, '#confirm');
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-volume="recordings"] .state');
    return s && s.textContent === 'Encrypted and unlocked';
  }, null, { timeout: 30_000 });
  check(true, 'unlock from the page unlocks it again');

  // The audit view, filtered.
  await page.goto(base + '/audit?volume=recordings&q=requested');
  const rows = await page.locator('table.audit tbody tr').allTextContents();
  check(rows.some((r) => r.includes('lock_requested')) && rows.some((r) => r.includes('rewrap_requested')), 'the audit view lists the page\'s actions');
  check(rows.every((r) => r.includes('recordings')), 'the audit view filters by volume');
  await screenshot(page, 'audit');

  // Refusals: the volume must stay unlocked through all of them.
  const csrf = await csrfOf(page);
  const anon = await browser.newContext({ ignoreHTTPSErrors: true });
  let r = await recordApi(await anon.request.post(base + '/volumes/recordings/lock', { form: { csrf, confirm: 'yes' }, maxRedirects: 0 }));
  check(r.status() === 403, `a POST without a session is refused (${r.status()})`);

  const other = await newPage(browser);
  await login(other.page);
  const otherCsrf = await csrfOf(other.page);
  check(otherCsrf !== csrf, 'two sessions have two CSRF tokens');
  r = await recordApi(await ctx.request.post(base + '/volumes/recordings/lock', { form: { csrf: otherCsrf, confirm: 'yes' }, maxRedirects: 0 }));
  check(r.status() === 403, `a POST with another session's CSRF token is refused (${r.status()})`);
  r = await recordApi(await ctx.request.post(base + '/volumes/recordings/lock', { form: { confirm: 'yes' }, maxRedirects: 0 }));
  check(r.status() === 403, `a POST without a CSRF token is refused (${r.status()})`);
  r = await recordApi(await ctx.request.post(base + '/volumes/recordings/lock', {
    form: { csrf, confirm: 'yes' }, maxRedirects: 0, headers: { Origin: 'https://attacker.example' },
  }));
  check(r.status() === 403, `a POST from another origin is refused (${r.status()})`);

  const forged = await browser.newContext({ ignoreHTTPSErrors: true });
  const u = new URL(base);
  await forged.addCookies([{ name: '__Host-atrest', value: 'ab'.repeat(32), domain: u.hostname, path: '/', secure: true, httpOnly: true, sameSite: 'Strict' }]);
  r = await recordApi(await forged.request.get(base + '/volumes', { maxRedirects: 0 }));
  check(r.status() === 303 && r.headers()['location'] === '/login', `a forged session cookie gets the login page (${r.status()})`);
  r = await recordApi(await forged.request.post(base + '/volumes/recordings/lock', { form: { csrf, confirm: 'yes' }, maxRedirects: 0 }));
  check(r.status() === 403, `a POST with a forged session cookie is refused (${r.status()})`);
  r = await recordApi(await forged.request.get(base + '/status.json', { maxRedirects: 0 }));
  check(r.status() === 401, `the status feed refuses a forged cookie (${r.status()})`);

  await page.goto(base + '/volumes');
  check((await volumeState(page, 'recordings')) === 'Encrypted and unlocked', 'no refused request changed the volume');

  // Logging out ends the session on the server, not only in the browser.
  const cookies = await other.ctx.cookies();
  await submit(other.page, 'form.logout button');
  const replay = await browser.newContext({ ignoreHTTPSErrors: true });
  await replay.addCookies(cookies.filter((c) => c.name === '__Host-atrest'));
  r = await recordApi(await replay.request.get(base + '/volumes', { maxRedirects: 0 }));
  check(r.status() === 303, `a session cookie is dead after logout (${r.status()})`);

  // Rate limiting: five wrong passwords, then even the right one waits.
  const limited = await newPage(browser);
  for (let i = 0; i < 5; i++) {
    await login(limited.page, `wrong ${i}`);
  }
  check((await limited.page.locator('#login-error').textContent()).includes('Too many failed logins'), 'five wrong passwords rate-limit the address');
  await login(limited.page);
  check(limited.page.url().endsWith('/login'), 'while limited, even the right password does not log in');
  check((await limited.page.locator('#login-error').textContent()).includes('Too many failed logins'), 'and the page says why');
  await screenshot(limited.page, 'rate-limited');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root Chromium needs --no-sandbox; containers often have a tiny /dev/shm.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
  timeout: 60_000,
});
try {
  if (phase === '1') await phase1(browser);
  else if (phase === '2') await phase2(browser);
  else throw new Error(`PHASE must be 1 or 2, not ${phase}`);
  await browser.close();
  console.log(`phase ${phase}: every check held`);
  process.exit(0);
} catch (e) {
  console.error(`phase ${phase}: FAILED: ${e && e.stack ? e.stack : e}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
