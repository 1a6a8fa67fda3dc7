// Drives Debian's chromium (headless) against a running earshot-console:
// filter by a user, play a recording and seek in it, select two rows and
// download them as a ZIP, save a screenshot. Prints what it saw as JSON.
//
//   node console.mjs <console url> <output dir> <extension>
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const [url, outDir, user] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Offline and as root: no sandbox, no background networking (TESTING-NOTES).
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const ranges = [];
  page.on('request', (r) => { if (r.url().includes('.mp3')) ranges.push(r.headers()['range'] || null); });
  await page.goto(url);
  const before = await page.$$eval('tr[data-id]', (rows) => rows.map((r) => r.dataset.id));

  await page.fill('input[name=user]', user);
  await Promise.all([page.waitForURL(/user=/), page.click('button:has-text("Filter")')]);
  const ids = await page.$$eval('tr[data-id]', (rows) => rows.map((r) => r.dataset.id));

  // Press play on the first row and let it play a little.
  const audio = page.locator(`tr[data-id="${ids[0]}"] audio`);
  await audio.click();
  await audio.evaluate((a) => a.play());
  await page.waitForFunction(
    (id) => { const a = document.querySelector(`tr[data-id="${id}"] audio`); return a.currentTime > 0.3; },
    ids[0], { timeout: 15000 });
  const played = await audio.evaluate((a) => ({ duration: a.duration, currentTime: a.currentTime }));
  // Seek: the browser asks the console for a byte range.
  const target = played.duration * 0.75;
  await audio.evaluate((a, t) => { a.pause(); a.currentTime = t; }, target);
  await page.waitForFunction(
    (id) => { const a = document.querySelector(`tr[data-id="${id}"] audio`); return !a.seeking; },
    ids[0], { timeout: 15000 });
  const seeked = await audio.evaluate((a) => a.currentTime);

  await page.screenshot({ path: join(outDir, 'console.png'), fullPage: true });

  // Select two rows and download them as one ZIP.
  await page.check(`tr[data-id="${ids[0]}"] input[type=checkbox]`);
  await page.check(`tr[data-id="${ids[1]}"] input[type=checkbox]`);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('button:has-text("Download selected (ZIP)")'),
  ]);
  const zip = join(outDir, 'selected.zip');
  await download.saveAs(zip);

  console.log(JSON.stringify({ before, ids, played, seeked, target, ranges, zip, suggested: download.suggestedFilename() }));
} finally {
  await browser.close();
}
