// Open OHIF in Debian's headless Chromium, wait until a viewport shows an image, screenshot it.
//
//   node ohif_smoke.mjs --url URL --screenshot viewport.png --page-screenshot page.png \
//        [--chromium /usr/bin/chromium] [--timeout-ms 120000] [--min-stddev 12]
//
// Prints exactly one line starting with "RESULT " followed by JSON (the pytest test parses
// it), whether or not the image rendered; exits non-zero only when the harness itself broke.
//
// "Rendered" means: a cornerstone canvas inside an OHIF viewport, at least 128x128 CSS px,
// whose pixels (read back with getImageData) have a luminance standard deviation above
// --min-stddev on the 0-255 scale, on two polls in a row. A black, a uniform or a
// "loading" viewport stays far below that; a CT slice (air, body, lungs, bone) is far above.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    screenshot: { type: 'string' },
    'page-screenshot': { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '120000' },
    'min-stddev': { type: 'string', default: '12' },
    width: { type: 'string', default: '1280' },
    height: { type: 'string', default: '800' },
  },
});
if (!opt.url || !opt.screenshot) {
  console.error('usage: node ohif_smoke.mjs --url URL --screenshot FILE [--page-screenshot FILE]');
  process.exit(2);
}
const timeoutMs = Number(opt['timeout-ms']);
const minStddev = Number(opt['min-stddev']);
const t0 = Date.now();
const elapsed = () => Date.now() - t0;

const result = {
  url: opt.url,
  rendered: false,
  phase: 'launch',
  milestones: {},
  canvases: [],
  best: null,
  screenshot: null,
  pageScreenshot: null,
  console: [],
  consoleErrors: [],
  pageErrors: [],
  failedRequests: [],
  httpErrors: [],
  bodyText: '',
  viewportText: '',
  error: null,
};
const mark = (name) => {
  result.phase = name;
  result.milestones[name] = elapsed();
};

// Measures every cornerstone canvas in the page. Runs in the browser.
function measureCanvases() {
  const out = [];
  const canvases = document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas');
  const seen = new Set();
  for (const canvas of canvases) {
    if (seen.has(canvas)) continue;
    seen.add(canvas);
    const rect = canvas.getBoundingClientRect();
    const info = {
      index: out.length,
      width: canvas.width,
      height: canvas.height,
      cssWidth: Math.round(rect.width),
      cssHeight: Math.round(rect.height),
      mean: 0,
      stddev: 0,
      nonBlack: 0,
      error: null,
    };
    out.push(info);
    if (!canvas.width || !canvas.height) continue;
    try {
      let ctx = canvas.getContext('2d', { willReadFrequently: true });
      let source = canvas;
      if (!ctx) {
        // A WebGL canvas: copy it onto a 2D scratch canvas first.
        const scratch = document.createElement('canvas');
        scratch.width = canvas.width;
        scratch.height = canvas.height;
        ctx = scratch.getContext('2d', { willReadFrequently: true });
        ctx.drawImage(canvas, 0, 0);
        source = scratch;
      }
      const { data } = ctx.getImageData(0, 0, source.width, source.height);
      // Subsample to at most ~65k pixels: plenty for a variance, cheap on 2 cores.
      const n = data.length / 4;
      const step = Math.max(1, Math.floor(n / 65536));
      let sum = 0;
      let sumSq = 0;
      let count = 0;
      let nonBlack = 0;
      for (let i = 0; i < n; i += step) {
        const o = i * 4;
        const y = 0.299 * data[o] + 0.587 * data[o + 1] + 0.114 * data[o + 2];
        sum += y;
        sumSq += y * y;
        count += 1;
        if (y > 8) nonBlack += 1;
      }
      const mean = sum / count;
      info.mean = Math.round(mean * 100) / 100;
      info.stddev = Math.round(Math.sqrt(Math.max(0, sumSq / count - mean * mean)) * 100) / 100;
      info.nonBlack = Math.round((nonBlack / count) * 1000) / 1000;
    } catch (e) {
      info.error = String(e);
    }
  }
  return out;
}

let context;
const userDataDir = mkdtempSync(join(tmpdir(), 'ohif-chromium-'));
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opt.chromium,
    headless: true,
    // Without the background-networking flags Chromium phones home at startup
    // (component updates, sync, variations) and, on a closed network, logs errors.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: Number(opt.width), height: Number(opt.height) },
    serviceWorkers: 'block',
    timeout: 60000,
  });
  mark('launched');
  result.browserVersion = context.browser()?.version() ?? null;
  const page = context.pages()[0] ?? (await context.newPage());

  page.on('console', (msg) => {
    const loc = msg.location();
    const entry = {
      t: elapsed(),
      type: msg.type(),
      text: msg.text().slice(0, 2000),
      url: loc && loc.url ? loc.url : '',
    };
    // The whole log is chatty (kept: the last 400); errors are all kept apart.
    result.console.push(entry);
    if (result.console.length > 400) result.console.splice(0, result.console.length - 400);
    if (entry.type === 'error' && result.consoleErrors.length < 1000) result.consoleErrors.push(entry);
  });
  page.on('pageerror', (err) => {
    result.pageErrors.push({ t: elapsed(), text: String(err && err.stack ? err.stack : err).slice(0, 3000) });
  });
  page.on('requestfailed', (req) => {
    const failure = req.failure();
    result.failedRequests.push({
      t: elapsed(),
      method: req.method(),
      url: req.url(),
      error: failure ? failure.errorText : '',
    });
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) {
      result.httpErrors.push({ t: elapsed(), status: resp.status(), url: resp.url() });
    }
  });

  mark('navigate');
  await page.goto(opt.url, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
  mark('domcontentloaded');

  let streak = 0;
  let sawCanvas = false;
  while (elapsed() < timeoutMs) {
    let canvases = [];
    try {
      canvases = await page.evaluate(measureCanvases);
    } catch (e) {
      // A navigation (OHIF's router) can destroy the context between polls.
      result.error = `evaluate: ${e}`;
    }
    result.canvases = canvases;
    // OHIF gives up on a study it could not load (a failed or unusable QIDO answer)
    // by routing to /notfoundstudy: no image will come, so stop waiting.
    if (new URL(page.url()).pathname.startsWith('/notfoundstudy')) {
      mark('notfoundstudy');
      break;
    }
    if (canvases.length && !sawCanvas) {
      sawCanvas = true;
      mark('canvas');
    }
    const good = canvases
      .filter((c) => c.cssWidth >= 128 && c.cssHeight >= 128 && c.stddev >= minStddev)
      .sort((a, b) => b.stddev - a.stddev);
    if (good.length) {
      streak += 1;
      result.best = good[0];
      if (streak >= 2) {
        result.rendered = true;
        result.error = null;
        mark('rendered');
        break;
      }
    } else {
      streak = 0;
    }
    await page.waitForTimeout(500);
  }
  if (!result.rendered && result.phase !== 'notfoundstudy') {
    result.phase = `timeout after ${timeoutMs} ms (last phase: ${result.phase})`;
  }

  // Screenshot the viewport element holding the best canvas (or the first one).
  const index = result.best ? result.best.index : 0;
  const handle = await page.evaluateHandle((i) => {
    const all = [
      ...new Set(document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas')),
    ];
    const canvas = all[i];
    if (!canvas) return null;
    return canvas.closest('.viewport-element') || canvas.parentElement || canvas;
  }, index);
  const element = handle.asElement();
  if (element) {
    await element.screenshot({ path: opt.screenshot, timeout: 30000 });
    result.screenshot = opt.screenshot;
    result.viewportBox = await element.boundingBox();
    // The viewport's overlay text (series description, "I:1 (1/N)", W/L): which image it is.
    result.viewportText = await element.evaluate((el) => {
      // The overlays are siblings of the cornerstone element, inside .viewport-wrapper.
      const vp = el.closest('.viewport-wrapper') || el.closest('[data-viewportid]') || el;
      return vp.innerText;
    });
  }
  if (opt['page-screenshot']) {
    await page.screenshot({ path: opt['page-screenshot'], timeout: 30000 });
    result.pageScreenshot = opt['page-screenshot'];
  }
  result.title = await page.title();
  result.finalUrl = page.url();
  result.bodyText = (await page.evaluate(() => document.body ? document.body.innerText : '')).slice(0, 3000);
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  result.webgl = await page.evaluate(() => {
    const c = document.createElement('canvas');
    const gl = c.getContext('webgl2') || c.getContext('webgl');
    if (!gl) return null;
    const ext = gl.getExtension('WEBGL_debug_renderer_info');
    return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : 'webgl';
  });
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  result.elapsedMs = elapsed();
  try {
    if (context) await context.close();
  } catch (e) {
    result.closeError = String(e);
  }
  rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n');
}
