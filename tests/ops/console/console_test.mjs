// Drives the Anima web console in headless Chromium (puppeteer-core) against a running system;
// started by tests/ops/console_test.sh, which sets the environment read below. Each step prints
// "ok: ..." or "FAIL: ..." and the run stops at the first failure (later steps depend on it).
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync, openSync, mkdtempSync, rmSync }
  from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const require = createRequire(process.env.ANIMA_NODE_MODULES + '/');
const puppeteer = require('puppeteer-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run tests/ops/console_test.sh)`);
  return value;
};
const URL_ = env('ANIMA_URL');
const SHOTS = env('ANIMA_SCREENSHOTS');
const CHROMIUM = env('CHROMIUM');
const LONG = 120000;  // generous: conditions are awaited, never durations asserted

let step = '';
let failures = 0;
const problems = [];  // console errors, page errors, failed requests, HTTP errors
let allowed = [];     // patterns of problems the current step expects

function fail(message) {
  throw new Error(message);
}

async function run(name, fn) {
  step = name;
  const before = problems.length;
  try {
    await fn();
    const fresh = problems.slice(before).filter((p) => !allowed.some((re) => re.test(p)));
    if (fresh.length) fail(`unexpected browser problems:\n    ${fresh.join('\n    ')}`);
    console.log(`ok: ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL: ${name}: ${e.message}`);
    throw e;
  } finally {
    allowed = [];
  }
}

// page.waitForFunction with a message of our own when it times out.
async function waitFor(page, what, fn, ...args) {
  try {
    return await page.waitForFunction(fn, {timeout: LONG, polling: 100}, ...args);
  } catch (e) {
    fail(`timed out waiting for ${what}`);
  }
}

async function shot(page, name, fullPage = true) {
  await page.screenshot({path: join(SHOTS, `${name}.png`), fullPage});
}

// ------------------------------------------------------------------ headers, from node

async function checkHeaders() {
  const expect = {
    '/': 'text/html',
    '/console/console.js': 'text/javascript',
    '/console/console.css': 'text/css',
    '/console/icon.svg': 'image/svg+xml',
    '/console/highlight.js': 'text/javascript',
    '/console/config.json': 'application/json',
  };
  for (const [path, type] of Object.entries(expect)) {
    const res = await fetch(URL_ + path);
    if (res.status !== 200) fail(`GET ${path}: HTTP ${res.status}`);
    const got = res.headers.get('content-type') || '';
    if (!got.startsWith(type)) fail(`GET ${path}: content-type ${got}, expected ${type}`);
    if (path === '/') {
      const csp = res.headers.get('content-security-policy') || '';
      for (const part of ["default-src 'none'", "script-src 'self'", "style-src 'self'",
        "connect-src 'self'", "frame-ancestors 'none'"]) {
        if (!csp.includes(part)) fail(`GET /: Content-Security-Policy lacks ${part}: ${csp}`);
      }
      const body = await res.text();
      if (!body.includes('/console/console.js')) fail('GET /: the page does not load console.js');
      if (/<script>|style="/.test(body)) fail('GET /: inline script or style in the page');
    }
    if (path === '/console/config.json') {
      const config = await res.json();
      if (config.auth_required !== true) fail(`config.json: auth_required is not true`);
    }
  }
}

// ------------------------------------------------------------------ services killed and back

// tests/ops/console_test.sh leaves NAME.pid, NAME.port and NAME.cmdline (NUL-separated) in
// ANIMA_PROCS for the broker and the gateway; a process started again here leaves its pid in
// NAME.restarted.pid, which the script stops at its end.
const procFile = (name, ext) => join(env('ANIMA_PROCS'), `${name}.${ext}`);

function stopService(name, signal) {
  const restarted = procFile(name, 'restarted.pid');
  const file = existsSync(restarted) ? restarted : procFile(name, 'pid');
  const pid = Number(readFileSync(file, 'utf8'));
  process.kill(pid, signal);
  return pid;
}

// Waits until pid has exited: no longer in /proc, or a zombie (system.sh's processes are
// children of the shell, which reaps them only at its end).
async function gone(pid) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    let stat = '';
    try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch (e) { return; }
    if (/^\d+ \(.*\) Z/.test(stat)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`pid ${pid} still running 30 s after it was told to stop`);
}

async function restartService(name) {
  const parts = readFileSync(procFile(name, 'cmdline'), 'utf8').split('\0').filter(Boolean);
  const port = readFileSync(procFile(name, 'port'), 'utf8').trim();
  const ready = procFile(name, 'restarted.ready');
  const args = parts.slice(1).map((a) => {
    if (a.startsWith('--port=')) return `--port=${port}`;
    if (a.startsWith('--ready-file=')) return `--ready-file=${ready}`;
    return a;
  });
  const log = openSync(procFile(name, 'restarted.log'), 'a');
  const child = spawn(parts[0], args, {stdio: ['ignore', log, log], detached: true});
  child.unref();
  writeFileSync(procFile(name, 'restarted.pid'), String(child.pid));
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    if (existsSync(ready) && readFileSync(ready, 'utf8').includes(port)) return;
    if (child.exitCode !== null) fail(`the restarted ${name} exited (${child.exitCode})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`the restarted ${name} wrote no ready file in 30 s`);
}

// A job that waits in `generating`: the simulator answers a "Slow task:" after 30 s.
async function submitSlowJob(page) {
  await page.$eval('#job-task', (t) => { t.value = ''; });
  await page.$eval('#job-tests', (t) => { t.value = ''; });
  await page.type('#job-task', 'Slow task: write f() returning 1 in solution.py');
  await page.$eval('#job-attempts', (t) => { t.value = '1'; });
  await page.click('#job-form button[type=submit]');
  await waitFor(page, 'the slow job to be generating', () => {
    const card = document.querySelector('#jobs .job');
    return card && card.querySelector('.stages li[data-stage="generating"]');
  });
}

// ------------------------------------------------------------------ in-page readers

const readTiles = () => [...document.querySelectorAll('#modules .tile')].map((t) => ({
  name: t.dataset.module, status: t.dataset.status, gone: t.classList.contains('gone'),
}));
const harmony = () => Number(document.getElementById('harmony-meter').value);

// ------------------------------------------------------------------ the run

async function main() {
  await run('served headers: CSP and content types', checkHeaders);

  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
    defaultViewport: {width: 1280, height: 900},
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => {
      problems.push(`requestfailed: ${r.url()} ${r.failure() && r.failure().errorText}`);
    });
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    const frames = [];
    cdp.on('Network.webSocketFrameReceived', ({response}) => {
      try { frames.push(JSON.parse(response.payloadData)); } catch (e) { /* not JSON */ }
    });
    const sent = [];
    cdp.on('Network.webSocketFrameSent', ({response}) => {
      try { sent.push(JSON.parse(response.payloadData)); } catch (e) { /* not JSON */ }
    });

    await run('without auth the page connects at once, with no key form', async () => {
      const other = await browser.newPage();
      const errors = [];
      other.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      other.on('pageerror', (e) => errors.push(e.message));
      await other.goto(env('ANIMA_NOAUTH_URL') + '/', {waitUntil: 'networkidle0'});
      await waitFor(other, 'connected without a key', () =>
        document.getElementById('conn-status').dataset.state === 'connected' &&
        document.getElementById('connection').hidden &&
        document.querySelectorAll('#modules .tile').length > 0);
      const session = await other.$eval('#conn-session', (e) => e.textContent);
      if (!/principal local/.test(session)) fail(`session: ${session}`);
      if (errors.length) fail(`browser errors: ${errors.join('; ')}`);
      await other.close();
    });

    await run('the page loads, asks for a key, with no console error or failed request',
      async () => {
        await page.goto(URL_ + '/', {waitUntil: 'networkidle0'});
        await waitFor(page, 'the key form', () => {
          const section = document.getElementById('connection');
          return section && !section.hidden && document.getElementById('key-input');
        });
        const title = await page.title();
        if (!/Anima/.test(title)) fail(`title is ${title}`);
        await shot(page, '01-key-form');
      });

    await run('a wrong key is refused and the form is shown again', async () => {
      // The browser logs the refused upgrade (HTTP 401) itself.
      allowed = [/WebSocket connection to .* failed/];
      await page.type('#key-input', 'wrong-key');
      await page.click('#key-form button[type=submit]');
      await waitFor(page, 'the "key refused" message', () => {
        const m = document.getElementById('key-message');
        return !m.hidden && /refused/i.test(m.textContent) &&
          !document.getElementById('connection').hidden;
      });
      const stored = await page.evaluate(() => sessionStorage.getItem('anima.key'));
      if (stored) fail('the refused key stayed in sessionStorage');
      await shot(page, '02-key-refused');
    });

    await run('the right key connects (welcome: principal ops)', async () => {
      await page.type('#key-input', 'ops-key');
      await page.click('#key-form button[type=submit]');
      await waitFor(page, 'connected status', () =>
        document.getElementById('conn-status').dataset.state === 'connected' &&
        /principal ops/.test(document.getElementById('conn-session').textContent));
      const url = page.url();
      if (url.includes('ops-key')) fail('the key is in the page URL');
      // welcome says ops is an admin: the job list offers every principal's jobs.
      if (await page.$eval('#joblist-all', (e) => e.closest('label').hidden)) {
        fail('"All principals" is hidden from an admin');
      }
    });

    await run('a request refused by the server shows its error next to it (quota)', async () => {
      // "capped" has a budget of one answer a day: its second chat is refused.
      const other = await browser.newPage();
      await other.goto(URL_ + '/', {waitUntil: 'networkidle0'});
      await other.waitForSelector('#key-input', {visible: true});
      await other.type('#key-input', 'capped-key');
      await other.click('#key-form button[type=submit]');
      await waitFor(other, 'connected as capped', () =>
        /principal capped/.test(document.getElementById('conn-session').textContent));
      if (!(await other.$eval('#joblist-all', (e) => e.closest('label').hidden))) {
        fail('"All principals" is offered to a principal who is not an admin');
      }
      for (const text of ['first', 'second']) {
        await other.type('#chat-message', `Hello, ${text} time`);
        await other.click('#chat-form button[type=submit]');
        await waitFor(other, `the ${text} answer or error`, (n) => {
          const turns = document.querySelectorAll('#chat-log .turn');
          return turns.length === n &&
            turns[n - 1].querySelector('.answer .meta, .answer .error');
        }, text === 'first' ? 1 : 2);
      }
      const error = await other.$eval('#chat-log .turn:last-child .answer .error',
        (e) => e.textContent).catch(() => '');
      if (!/quota_exceeded/.test(error) || !/retry after \d/.test(error)) {
        fail(`the refused chat shows: ${error || 'no error'}`);
      }
      await shot(other, '03-quota-error', false);
      await other.close();
    });

    await run('the first state shows at once (consciousness_query on connect)', async () => {
      await waitFor(page, 'module tiles and harmony', () =>
        document.querySelectorAll('#modules .tile').length > 0 &&
        document.getElementById('harmony-value').textContent !== '–');
      const tiles = await page.evaluate(readTiles);
      for (const want of ['gateway', 'llm-broker']) {
        if (!tiles.some((t) => t.name === want)) {
          fail(`no tile ${want}; tiles: ${tiles.map((t) => t.name).join(', ')}`);
        }
      }
    });

    await run('a streamed chat grows from chat_delta and ends with its metadata', async () => {
      await page.evaluate(() => {
        // Record every text the answer shows while it streams.
        window.__seen = [];
        const log = document.getElementById('chat-log');
        new MutationObserver(() => {
          const texts = log.querySelectorAll('.turn:last-child .answer > .answer-text');
          if (texts.length) window.__seen.push(texts[0].textContent);
        }).observe(log, {subtree: true, childList: true, characterData: true});
      });
      const deltasBefore = frames.filter((f) => f.type === 'chat_delta').length;
      await page.type('#chat-message', 'Tell me a story');
      await page.click('#chat-form button[type=submit]');
      await waitFor(page, 'the answer with its metadata', () =>
        document.querySelector('#chat-log .turn:last-child .answer .meta'));
      const result = await page.evaluate(() => {
        const answer = document.querySelector('#chat-log .turn:last-child .answer');
        const meta = {};
        const dts = answer.querySelectorAll('.meta dt');
        for (const dt of dts) meta[dt.textContent] = dt.nextElementSibling.textContent;
        return {final: answer.querySelector('.answer-text').textContent, meta, seen: window.__seen,
          conv: document.getElementById('chat-conv').textContent};
      });
      const deltas = frames.filter((f) => f.type === 'chat_delta').length - deltasBefore;
      if (deltas < 2) fail(`only ${deltas} chat_delta frames`);
      const partial = result.seen.filter((t) => t && t.length < result.final.length &&
        result.final.startsWith(t));
      if (!partial.length) fail(`no partial text seen before the final ${result.final}`);
      for (const key of ['provider', 'model', 'tokens', 'latency', 'finish']) {
        if (!result.meta[key]) fail(`the answer shows no ${key}: ${JSON.stringify(result.meta)}`);
      }
      if (!/^conv-/.test(result.conv)) fail(`conversation id not kept: ${result.conv}`);
      console.log(`  ${deltas} deltas, ${partial.length} partial states, ` +
        `provider ${result.meta.provider}, ${result.meta.tokens}`);
    });

    await run('fanout shows three candidates: openai, venice, gemini', async () => {
      await page.select('#chat-strategy', 'fanout');
      await page.type('#chat-message', 'Hello to every provider');
      await page.click('#chat-form button[type=submit]');
      await waitFor(page, 'three candidates', () =>
        document.querySelectorAll('#chat-log .turn:last-child .candidate').length === 3);
      const providers = await page.$$eval('#chat-log .turn:last-child .candidate',
        (cs) => cs.map((c) => c.dataset.provider).sort());
      if (providers.join(',') !== 'gemini,openai,venice') {
        fail(`candidates: ${providers.join(', ')}`);
      }
      await page.select('#chat-strategy', 'failover');
      await shot(page, '03-chat');
    });

    let demoJob = '';
    await run('the demo job runs from the form: retrying, 100 %, succeeded, files highlighted',
      async () => {
        await page.click('#job-demo');
        const task = await page.$eval('#job-task', (t) => t.value);
        if (!task.startsWith('Demo word_count')) fail(`load demo filled the task with ${task}`);
        await page.click('#job-form button[type=submit]');
        await waitFor(page, 'the job to end', () => {
          const card = document.querySelector('#jobs .job');
          return card && ['succeeded', 'failed', 'cancelled'].includes(card.dataset.status);
        });
        const job = await page.evaluate(() => {
          const card = document.querySelector('#jobs .job');
          return {
            id: card.dataset.jobId, status: card.dataset.status,
            value: card.querySelector('progress').value,
            percent: card.querySelector('.job-percent').textContent,
            stages: [...card.querySelectorAll('.stages li')].map((li) => li.dataset.stage),
            files: [...card.querySelectorAll('.file')].map((f) => ({path: f.dataset.path,
              highlighted: f.dataset.highlighted,
              spans: f.querySelectorAll('code span[class^="hljs-"]').length})),
            result: card.querySelector('.job-result').textContent,
          };
        });
        demoJob = job.id;
        if (job.status !== 'succeeded') fail(`the job ended ${job.status}: ${job.result}`);
        if (job.value !== 100 || job.percent !== '100 %') {
          fail(`the bar ends at ${job.value} (${job.percent})`);
        }
        if (!job.stages.includes('retrying')) fail(`no retrying stage: ${job.stages.join(' ')}`);
        if (job.stages.at(-1) !== 'succeeded') fail(`stages end ${job.stages.at(-1)}`);
        const solution = job.files.find((f) => f.path === 'solution.py');
        if (!solution) fail(`no solution.py shown: ${JSON.stringify(job.files)}`);
        if (solution.highlighted !== 'true' || solution.spans < 3) {
          fail(`solution.py is not highlighted: ${JSON.stringify(solution)}`);
        }
        if (!/tests passed\s*3/.test(job.result)) fail(`result: ${job.result}`);
        console.log(`  ${job.id}: ${job.stages.join(' > ')}`);
        await shot(page, '04-job-succeeded');
      });

    await run('a reload in the middle of a job rebuilds its bar and stage history', async () => {
      await submitSlowJob(page);
      const before = await page.evaluate(() => {
        const card = document.querySelector('#jobs .job');
        return {id: card.dataset.jobId, value: card.querySelector('progress').value,
          seqs: [...card.querySelectorAll('.stages li')].map((li) =>
            `${li.dataset.seq}:${li.dataset.stage}`)};
      });
      await shot(page, '05-job-running');
      await page.reload({waitUntil: 'networkidle0'});
      await waitFor(page, 'the job card after the reload', (id, n) => {
        const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
        return card && card.querySelectorAll('.stages li').length >= n;
      }, before.id, before.seqs.length);
      const after = await page.evaluate((id) => {
        const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
        return {value: card.querySelector('progress').value, status: card.dataset.status,
          seqs: [...card.querySelectorAll('.stages li')].map((li) =>
            `${li.dataset.seq}:${li.dataset.stage}`)};
      }, before.id);
      const lost = before.seqs.filter((s) => !after.seqs.includes(s));
      if (lost.length) fail(`stages lost by the reload: ${lost.join(' ')}`);
      if (after.value < before.value) fail(`the bar went back: ${before.value} → ${after.value}`);
      if (after.status !== 'running') fail(`after the reload the job is ${after.status}`);
      console.log(`  ${before.id}: ${after.seqs.join(' ')} at ${after.value} %`);
      await shot(page, '06-job-resumed');

      // The stream is live: cancelling shows its last stage and result on the resumed card.
      await page.click(`#jobs .job[data-job-id="${before.id}"] .job-head button`);
      await waitFor(page, 'the job cancelled', (id) => {
        const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
        return card.dataset.status === 'cancelled' &&
          card.querySelector('.stages li[data-stage="cancelled"]');
      }, before.id);
      const watching = await page.evaluate(() => sessionStorage.getItem('anima.jobs'));
      if (watching && watching.includes(before.id)) fail('the ended job is still remembered');
    });

    await run('uploaded and typed files become the request\'s files', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'anima-console-'));
      writeFileSync(join(dir, 'helper.py'), 'def helper():\n    return 1\n');
      writeFileSync(join(dir, 'notes.txt'), 'notes\n');
      const input = await page.$('#job-upload');
      await input.uploadFile(join(dir, 'helper.py'), join(dir, 'notes.txt'));
      await waitFor(page, 'two file rows', () =>
        document.querySelectorAll('#job-files .file-row').length === 2);
      await page.click('#job-add-file');
      await page.type('#job-files .file-row:last-child .file-path', 'data/input.txt');
      await page.type('#job-files .file-row:last-child .file-content', 'one two');
      const before = sent.length;
      await submitSlowJob(page);
      const request = sent.slice(before).find((f) => f.type === 'self_coding_request');
      if (!request) fail('no self_coding_request sent');
      const want = {'helper.py': 'def helper():\n    return 1\n', 'notes.txt': 'notes\n',
        'data/input.txt': 'one two'};
      if (JSON.stringify(request.files) !== JSON.stringify(want)) {
        fail(`files sent: ${JSON.stringify(request.files)}`);
      }
      if (request.max_attempts !== 1 || request.language !== 'python') {
        fail(`request: ${JSON.stringify(request)}`);
      }
      await page.click('#jobs .job .job-head button');
      await waitFor(page, 'the job cancelled', () =>
        document.querySelector('#jobs .job').dataset.status === 'cancelled');
      await page.$$eval('#job-files .file-row button', (bs) => bs.forEach((b) => b.click()));
      rmSync(dir, {recursive: true});
    });

    let healthyHarmony = 0;
    await run('killing the broker turns its tiles down and harmony drops', async () => {
      await waitFor(page, 'llm-broker healthy', () => [...document.querySelectorAll(
        '#modules .tile')].some((t) => t.dataset.module === 'llm-broker' &&
        t.dataset.status === 'healthy'));
      healthyHarmony = await page.evaluate(harmony);
      // Tiles are updated in place: the same element before and after.
      await page.$eval('#modules .tile[data-module="llm-broker"]', (t) => { t.__kept = true; });
      await gone(stopService('anima-llm-broker', 'SIGKILL'));
      await waitFor(page, 'an llm-broker tile down and harmony lower', (h) =>
        [...document.querySelectorAll('#modules .tile')].some((t) =>
          t.dataset.module.startsWith('llm-broker') && t.dataset.status === 'down') &&
        Number(document.getElementById('harmony-meter').value) < h, healthyHarmony);
      const kept = await page.$eval('#modules .tile[data-module="llm-broker"]', (t) => t.__kept);
      if (!kept) fail('the llm-broker tile was replaced, not updated in place');
      const tiles = await page.evaluate(readTiles);
      const down = tiles.filter((t) => t.status === 'down').map((t) => t.name);
      const h = await page.evaluate(harmony);
      const goneTiles = tiles.filter((t) => t.gone).map((t) => t.name);
      console.log(`  harmony ${healthyHarmony} → ${h}; down: ${down.join(', ')}; ` +
        `gone: ${goneTiles.join(', ') || 'none'}`);
      await shot(page, '07-broker-down');
    });

    await run('the broker restarted on its port turns its tiles healthy again', async () => {
      await restartService('anima-llm-broker');
      await waitFor(page, 'every llm-broker tile healthy again', () => {
        const tiles = [...document.querySelectorAll('#modules .tile')]
          .filter((t) => t.dataset.module.startsWith('llm-broker') &&
            !t.classList.contains('gone'));
        return tiles.length > 0 && tiles.every((t) => t.dataset.status === 'healthy');
      });
      await waitFor(page, 'harmony back up', (h) =>
        Number(document.getElementById('harmony-meter').value) >= h, healthyHarmony);
      await shot(page, '08-broker-back');
    });

    await run('the gateway shutting down (1001): reconnecting, then back, following a job again',
      async () => {
        await submitSlowJob(page);
        const jobId = await page.$eval('#jobs .job', (c) => c.dataset.jobId);
        // The browser logs its failed attempts while the gateway is away.
        allowed = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/,
          /Failed to load resource/, /requestfailed: .*config\.json/];
        await gone(stopService('anima-gateway', 'SIGTERM'));
        await waitFor(page, 'the reconnecting status', () =>
          document.getElementById('conn-status').dataset.state === 'reconnecting');
        const text = await page.$eval('#conn-text', (e) => e.textContent);
        if (!/reconnecting/.test(text)) fail(`status: ${text}`);
        const stale = await page.$eval('#state-ts', (e) => e.textContent);
        if (!/disconnected/.test(stale)) fail(`the state is not marked old: ${stale}`);
        await shot(page, '09-gateway-away', false);
        await restartService('anima-gateway');
        await waitFor(page, 'connected again', () =>
          document.getElementById('conn-status').dataset.state === 'connected');
        // Followed again: the error of the closed stream is gone and the card goes on (running,
        // or ended with its final stage when the job outran the restart).
        await waitFor(page, 'the job followed again', (id) => {
          const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
          if (!card || !card.querySelector('.error').hidden) return false;
          const s = card.dataset.status;
          return s === 'running' ||
            (['failed', 'cancelled', 'succeeded'].includes(s) &&
             card.querySelector(`.stages li[data-stage="${s}"]`));
        }, jobId);
        const status = await page.$eval(`#jobs .job[data-job-id="${jobId}"]`,
          (c) => c.dataset.status);
        if (status === 'running') {
          // The stream is live: cancelling brings the `cancelled` stage through the watch.
          await page.click(`#jobs .job[data-job-id="${jobId}"] .job-head button`);
          await waitFor(page, 'the job cancelled', (id) => {
            const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
            return card.dataset.status === 'cancelled' &&
              card.querySelector('.stages li[data-stage="cancelled"]');
          }, jobId);
        }
        const seqs = await page.$$eval(`#jobs .job[data-job-id="${jobId}"] .stages li`,
          (lis) => lis.map((li) => Number(li.dataset.seq)));
        if (seqs.some((seq, i) => seq !== i + 1)) fail(`stage history seqs: ${seqs.join(' ')}`);
      });

    await run('the job list shows the demo job, and "watch" shows it again', async () => {
      await page.click('#joblist-refresh');
      await waitFor(page, 'the demo job in the list', (id) => {
        const row = document.querySelector(`#joblist-body tr[data-job-id="${id}"]`);
        return (row && /succeeded/.test(row.textContent)) ||
          !document.getElementById('joblist-error').hidden;
      }, demoJob);
      const error = await page.$eval('#joblist-error', (e) => (e.hidden ? '' : e.textContent));
      if (error) fail(`the page shows: ${error}`);
      // The list is drawn again whenever a job of the page starts or ends: find and press the
      // button in one go.
      await page.$eval(`#joblist-body tr[data-job-id="${demoJob}"] button`, (b) => b.click());
      await waitFor(page, 'the watched demo job with its files', (id) => {
        const card = document.querySelector(`#jobs .job[data-job-id="${id}"]`);
        return card && card.dataset.status === 'succeeded' &&
          card.querySelector('.file[data-highlighted="true"]') &&
          card.querySelector('.stages li[data-stage="retrying"]');
      }, demoJob);
    });

    await run('every control has an accessible name', async () => {
      const tree = await page.accessibility.snapshot({interestingOnly: true});
      const controls = new Set(['button', 'textbox', 'combobox', 'checkbox', 'spinbutton',
        'link', 'progressbar', 'meter', 'slider']);
      const unnamed = [];
      let count = 0;
      (function walk(node) {
        if (controls.has(node.role)) {
          count++;
          if (!node.name || !node.name.trim()) unnamed.push(node.role);
        }
        for (const child of node.children || []) walk(child);
      })(tree);
      if (unnamed.length) fail(`controls without a name: ${unnamed.join(', ')}`);
      console.log(`  ${count} controls, each named`);
    });

    await run('screenshots for the docs: desktop and phone', async () => {
      await page.type('#chat-message', 'Hello, consciousness system!');
      await page.click('#chat-form button[type=submit]');
      await waitFor(page, 'the answer', () =>
        document.querySelector('#chat-log .turn:last-child .answer .meta'));
      await page.select('#chat-strategy', 'fanout');
      await page.type('#chat-message', 'Compare the providers');
      await page.click('#chat-form button[type=submit]');
      await waitFor(page, 'three candidates', () =>
        document.querySelectorAll('#chat-log .turn:last-child .candidate').length === 3);
      await page.select('#chat-strategy', 'failover');
      await page.click('#job-demo');
      await page.$eval('.table-wrap', (t) => { t.scrollLeft = 0; });
      // Only the succeeded demo job stays in the picture.
      await page.$$eval('#jobs .job:not([data-status="succeeded"]) .dismiss',
        (bs) => bs.forEach((b) => b.click()));
      await page.evaluate(() => {
        if (document.activeElement) document.activeElement.blur();
        window.scrollTo(0, 0);
      });
      const wrap = await page.$eval('.table-wrap', (t) => t.scrollWidth - t.clientWidth);
      if (wrap > 0) fail(`the job list is ${wrap} px wider than its panel`);
      await shot(page, 'console-desktop');
      await page.setViewport({width: 390, height: 844});
      await page.evaluate(() => window.scrollTo(0, 0));
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      if (width > 390) fail(`on a 390 px wide screen the page is ${width} px wide`);
      await shot(page, 'console-phone', false);
      await shot(page, 'console-phone-full');
      await page.setViewport({width: 1280, height: 900});
    });
  } finally {
    await browser.close();
  }
}

try {
  await main();
  console.log(`PASS: every step (screenshots in ${SHOTS})`);
} catch (e) {
  if (!failures) console.log(`FAIL: ${step}: ${e.stack || e.message}`);
  process.exit(1);
}
