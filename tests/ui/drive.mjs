// Drives the web UI of the service imgsearch replaces (MacPhobos/image-search-ui) in headless
// Chromium against `imgsearch serve`, the way its users click through it: categories, a training
// session made from two subdirectories, started and followed to the end, search with thumbnails,
// the vectors page with a directory deleted. Fails on any failed request to the API and on any
// console error that is ours (the face and people routes are out of scope: their 404s, and the
// UI's own messages about them, are expected). Writes a screenshot per page to $OUT.
//
// Env: UI (the UI's origin), API (http://localhost:8000, the address that UI calls), PHOTOS (the
// root folder, with reds/ and blues/ directly under it), OUT (screenshots), CHROMIUM, NODE_PATH.

import puppeteer from 'puppeteer-core';

const UI = process.env.UI ?? 'http://localhost:3000';
const API = process.env.API ?? 'http://localhost:8000';
const PHOTOS = process.env.PHOTOS;
const OUT = process.env.OUT ?? '.';
const problems = [];
const findings = [];

// the face and people routes are not served here (404), and the UI says so in its console
const notOurs = (url) => /\/api\/v1\/faces\//.test(url);
const expectedConsole = [/^Failed to load persons:/, /^Failed to load faces for asset:/];

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
const page = await browser.newPage();
await page.setViewport({ width: 1600, height: 2400 });
page.setDefaultTimeout(30_000);
page.on('dialog', (d) => d.accept());
page.on('console', (msg) => {
  if (msg.type() !== 'error') return;
  const text = msg.text();
  const url = msg.location()?.url ?? '';
  if (expectedConsole.some((re) => re.test(text)) || (text.startsWith('Failed to load resource') && notOurs(url))) return;
  problems.push(`console error on ${page.url()}: ${text} ${url}`);
});
page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
page.on('requestfailed', (r) => {
  if (r.url().startsWith(API) && !notOurs(r.url())) problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
});
page.on('response', (r) => {
  const url = r.url();
  if (url.startsWith(API) && r.status() >= 400 && !notOurs(url)) problems.push(`${r.request().method()} ${url} -> ${r.status()}`);
});

const xButton = (text) => `::-p-xpath(.//button[normalize-space()="${text}"])`;
const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());

async function open(path) {
  await page.goto(UI + path, { waitUntil: 'networkidle0' });
  // hydrated: the layout's health check has answered
  await page.waitForFunction(() => document.querySelector('[data-testid="layout__health"] .health-text')?.textContent.includes('Backend connected'));
}

async function shot(name, finding) {
  await page.screenshot({ path: `${OUT}/${name}.png`, fullPage: true });
  findings.push(`${name}: ${finding}`);
}

async function step(name, body) {
  const before = problems.length;
  try {
    await body();
  } catch (e) {
    problems.push(`${name}: ${e.message}`);
    await page.screenshot({ path: `${OUT}/${name}-failed.png`, fullPage: true }).catch(() => {});
  }
  if (problems.length > before) console.error(`FAIL ${name}\n  ${problems.slice(before).join('\n  ')}`);
  else console.log(`ok   ${name}`);
}

await step('categories', async () => {
  await open('/categories');
  await page.click('button.btn-create');
  await page.waitForSelector('#category-name');
  await page.type('#category-name', 'Shapes');
  await page.type('#category-description', 'circles and squares');
  await page.click('[data-testid$="category-create__btn-submit"]');
  await page.waitForFunction(() => document.querySelector('.summary p')?.textContent.includes('Total: 1 category'));
  const row = await page.$$eval('tbody tr', (rows) => rows.map((r) => r.textContent.replace(/\s+/g, ' ').trim()));
  if (!row.some((r) => r.includes('Shapes') && r.includes('circles and squares'))) throw new Error(`no Shapes row: ${row}`);
  await shot('categories', `list shows "Shapes" (${await text('.summary p')}) after create`);
});

let sessionId;
await step('training-create', async () => {
  await open('/training');
  await page.click('button.btn-create');
  await page.waitForSelector('[role="dialog"][data-state="open"] #session-name');
  await page.type('#session-name', 'UI reds and blues');
  await page.$eval('#root-path', (e) => { e.value = ''; e.dispatchEvent(new Event('input', { bubbles: true })); });
  await page.type('#root-path', PHOTOS);
  await page.waitForSelector('#category-select:not([disabled])');
  const shapes = await page.$eval('#category-select', (s) => [...s.options].find((o) => o.textContent.trim() === 'Shapes')?.value);
  await page.select('#category-select', shapes);
  await page.click('[data-testid$="create-session__btn-next"]');
  await page.waitForSelector('label.subdir-item');
  const dirs = await page.$$eval('label.subdir-item', (ls) => ls.map((l) => `${l.querySelector('.subdir-path').textContent.trim()} ${l.querySelector('.image-count')?.textContent.trim()}`));
  for (const name of ['reds', 'blues']) {
    const boxes = await page.$$('label.subdir-item');
    for (const b of boxes) {
      if ((await b.$eval('.subdir-path', (e) => e.textContent.trim())).endsWith(`/${name}`)) await (await b.$('button[role="checkbox"]')).click();
    }
  }
  await page.waitForFunction(() => document.querySelector('.selection-summary')?.textContent.includes('2 subdirector'));
  await shot('training-create', `the directory browser lists ${dirs.join(', ')}; reds and blues selected`);
  await page.click('[data-testid$="create-session__btn-create"]');
  await page.waitForFunction(() => /^\/training\/\d+$/.test(location.pathname));
  sessionId = Number(page.url().split('/').pop());
});

await step('training-run', async () => {
  await page.waitForSelector(xButton('Start Training'));
  await page.click(xButton('Start Training'));
  await page.waitForFunction(() => document.querySelector('section.progress-section span.font-semibold')?.textContent.trim() === '100.0%', { timeout: 120_000 });
  await open(`/training/${sessionId}`);
  const badge = await text('.detail-header .header-top span[data-slot="badge"]');
  if (badge !== 'Completed') throw new Error(`status badge ${badge}`);
  await page.waitForSelector('section.jobs-section tbody tr');
  const jobs = await page.$$eval('section.jobs-section tbody tr', (rs) => rs.length);
  const first = await page.$eval('section.jobs-section tbody tr', (r) => r.textContent.replace(/\s+/g, ' ').trim());
  await shot('training-detail', `session ${sessionId} Completed, 100.0%, ${jobs} job rows on page 1 (first: ${first})`);
  // restart the training phase (its failed images): the session goes back to pending, no error
  await page.click(xButton('🎨 Restart Training'));
  await page.click(xButton('Confirm Restart'));
  await page.waitForFunction(() => document.querySelector('.detail-header .header-top span[data-slot="badge"]')?.textContent.trim() === 'Pending');
  if (await page.$('.message.error')) throw new Error(`restart: ${await text('.message.error')}`);
  await page.waitForSelector(xButton('Start Training'));
  await shot('training-restarted', 'Restart Training -> Confirm Restart: the session is Pending again with Start Training offered, no error');
  await open('/training');
  const card = await page.$eval('.session-card', (c) => c.textContent.replace(/\s+/g, ' ').trim());
  await shot('training-list', `the list shows: ${card.slice(0, 160)}`);
});

await step('search', async () => {
  await open('/');
  await page.type('[data-testid="search-bar__input-query"]', 'a red circle');
  await page.keyboard.press('Enter');
  await page.waitForSelector('[data-testid="results-grid__card"]');
  const cards = await page.$$eval('[data-testid="results-grid__card"]', (cs) => cs.length);
  await page.waitForFunction(() => [...document.querySelectorAll('img.result-image')].slice(0, 12).every((i) => i.complete && i.naturalWidth > 0), { timeout: 60_000 });
  const shown = await page.$$eval('img.result-image', (is) => is.filter((i) => i.complete && i.naturalWidth > 0).length);
  const placeholders = await page.$$eval('.result-image-placeholder', (ps) => ps.length);
  if (placeholders > 0) throw new Error(`${placeholders} thumbnails failed to load`);
  const top = await page.$$eval('.result-path', (ps) => ps.slice(0, 5).map((p) => p.textContent.trim().split('/').slice(-2).join('/')));
  if (!top.every((p) => p.startsWith('reds/'))) throw new Error(`the best matches are not the red circles: ${top}`);
  const score = await text('span.score');
  await shot('search', `${cards} results, ${shown} thumbnails loaded, top 5 all in reds/ (${score})`);
  await page.waitForSelector('#categoryFilter:not([disabled])');
  const shapes = await page.$eval('#categoryFilter', (s) => [...s.options].find((o) => o.textContent.trim() === 'Shapes')?.value);
  await page.select('#categoryFilter', shapes);
  await page.waitForFunction(() => document.querySelector('[data-testid="results-grid__header"] .results-count')?.textContent.trim() === '40 results');
  await shot('search-category', `category filter Shapes: ${await text('[data-testid="results-grid__header"] .results-count')} (the session's 40 images)`);
});

await step('vectors', async () => {
  await open('/vectors');
  await page.waitForFunction(() => document.querySelector('.stats-section .total-count')?.textContent.includes('Total Vectors: 40'));
  const reds = `${PHOTOS}/reds`;
  await page.waitForSelector(`.stats-section td[title="${reds}"]`);
  await shot('vectors', `${await text('.stats-section .total-count')}; rows ${await page.$$eval('.stats-section tbody tr', (rs) => rs.map((r) => r.textContent.replace(/\s+/g, ' ').trim()).join(' | '))}`);
  const row = await page.$(`::-p-xpath(//section[contains(@class,"stats-section")]//td[@title="${reds}"]/ancestor::tr)`);
  await (await row.$(xButton('Delete'))).click();
  await page.type('#reason-input', 'checked by the UI test');
  await page.click(xButton('Delete Vectors'));
  await page.waitForFunction(() => document.querySelector('.stats-section .total-count')?.textContent.includes('Total Vectors: 20'));
  await page.waitForSelector('section.logs-section tbody tr');
  const log = await page.$eval('section.logs-section tbody tr', (r) => r.textContent.replace(/\s+/g, ' ').trim());
  if (!log.includes('Directory') || !log.includes(reds) || !log.includes('checked by the UI test')) throw new Error(`deletion log row: ${log}`);
  if (await page.$(`.stats-section td[title="${reds}"]`)) throw new Error('reds/ is still listed');
  await shot('vectors-deleted', `after deleting reds/: ${await text('.stats-section .total-count')}; log: ${log}`);
});

await browser.close();
console.log('\nfindings:\n  ' + findings.join('\n  '));
if (problems.length) {
  console.error(`\n${problems.length} problem(s):\n  ` + problems.join('\n  '));
  process.exit(1);
}
console.log('\nthe UI works against imgsearch serve');
