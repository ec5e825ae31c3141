// The Anima console: one page over the WebSocket client protocol (docs/protocol.md).
// Plain JavaScript, no build step. Server and user data only ever reach the page through
// textContent and DOM nodes; the one innerHTML is highlight.js's escaped output.
'use strict';
(function () {
  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  // el('div', {class: 'x', text: 'y', onclick: f}, child, ...): a DOM element.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key in node && key !== 'list') node[key] = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.setAttribute('class', value);
      else node.setAttribute(key, String(value));
    }
    return node;
  }

  // A definition list from [[term, value], ...], skipping undefined values.
  function dl(pairs, className) {
    const list = el('dl', {class: className || 'kv'});
    for (const [term, value] of pairs) {
      if (value === undefined || value === null || value === '') continue;
      list.append(el('dt', {text: term}), el('dd', {text: value}));
    }
    return list;
  }

  // A status badge: an icon shape and a word, so that status never rests on colour alone.
  const ICONS = {
    healthy: '●', connected: '●', succeeded: '✓', degraded: '▲', reconnecting: '↻',
    connecting: '…', running: '▶', queued: '◷', down: '✕', critical: '✕', failed: '✕',
    refused: '✕', cancelled: '■', gone: '–', unknown: '?', idle: '○', disconnected: '○',
  };
  function badge(state, text) {
    return el('span', {class: 'badge', 'data-state': state},
      el('span', {class: 'badge-icon', 'aria-hidden': 'true', text: ICONS[state] || '•'}),
      el('span', {class: 'badge-text', text: text || state}));
  }
  function setBadge(node, state, text) {
    node.dataset.state = state;
    node.querySelector('.badge-icon').textContent = ICONS[state] || '•';
    (node.querySelector('.badge-text') || node.lastElementChild).textContent = text || state;
  }

  function show(node, visible) { node.hidden = !visible; }

  function fmtNumber(value, digits) {
    if (typeof value !== 'number' || !isFinite(value)) return '–';
    return value.toLocaleString('en', {maximumFractionDigits: digits === undefined ? 2 : digits});
  }
  function fmtBytes(bytes) {
    if (typeof bytes !== 'number') return '–';
    const mib = bytes / 1048576;
    return mib >= 1024 ? `${fmtNumber(mib / 1024, 2)} GiB` : `${fmtNumber(mib, 1)} MiB`;
  }
  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  function fmtWait(ms) {
    if (ms < 1000) return `${ms} ms`;
    const s = Math.ceil(ms / 1000);
    if (s < 120) return `${s} s`;
    const min = Math.ceil(s / 60);
    return min < 120 ? `${min} min` : `${Math.floor(min / 60)} h ${min % 60} min`;
  }
  function fmtTime(ts) {
    if (!ts) return '';
    const d = new Date(ts);
    return isNaN(d) ? String(ts) : d.toLocaleTimeString('en-GB');
  }
  function errorText(err) {
    let text = `${err.code || 'error'}: ${err.message || ''}`.trim();
    if (err.limit) text += ` (limit ${err.limit})`;
    if (typeof err.retry_after_ms === 'number') {
      text += ` · retry after ${fmtWait(err.retry_after_ms)}`;
    }
    if (Array.isArray(err.causes) && err.causes.length) {
      text += ' · ' + err.causes.map((c) =>
        typeof c === 'string' ? c : `${c.provider || ''} ${c.code || ''} ${c.message || ''}`.trim()
      ).join('; ');
    }
    return text;
  }

  // sessionStorage, tolerant of a browser that refuses it.
  const store = {
    get(key, fallback) {
      try {
        const raw = sessionStorage.getItem(key);
        return raw === null ? fallback : JSON.parse(raw);
      } catch (e) { return fallback; }
    },
    set(key, value) {
      try { sessionStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* ignore */ }
    },
    remove(key) {
      try { sessionStorage.removeItem(key); } catch (e) { /* ignore */ }
    },
  };

  // ---------------------------------------------------------------- connection

  const conn = {
    config: null,
    ws: null,
    opened: false,
    attempt: 0,
    timer: null,
    nextId: 1,
    pending: new Map(),  // request id -> handler(frame)
    welcome: null,
    onOpen: [],
  };

  function setConn(state, text) {
    setBadge($('conn-status'), state, text);
    $('conn-text').textContent = text;
  }

  function newId(prefix) { return `${prefix}-${Date.now().toString(36)}-${conn.nextId++}`; }

  // Sends a frame; with a handler, every frame carrying its id goes to the handler.
  function send(frame, handler) {
    if (!frame.id) frame.id = newId(frame.type.split('_')[0]);
    if (handler) conn.pending.set(frame.id, handler);
    if (!conn.ws || conn.ws.readyState !== WebSocket.OPEN) {
      if (handler) {
        conn.pending.delete(frame.id);
        handler({type: 'error', id: frame.id, code: 'not_connected',
          message: 'not connected to the gateway'});
      }
      return frame.id;
    }
    conn.ws.send(JSON.stringify(frame));
    return frame.id;
  }
  function done(id) { conn.pending.delete(id); }

  async function loadConfig() {
    const res = await fetch('/console/config.json', {cache: 'no-store'});
    if (!res.ok) throw new Error(`config.json: HTTP ${res.status}`);
    return res.json();
  }

  async function startConnection() {
    setConn('connecting', 'loading configuration…');
    try {
      conn.config = await loadConfig();
    } catch (e) {
      scheduleReconnect(`cannot load configuration (${e.message})`);
      return;
    }
    if (conn.config.auth_required && !store.get('anima.key', '')) {
      askForKey('');
      return;
    }
    connect();
  }

  function askForKey(message) {
    if (conn.timer) { clearTimeout(conn.timer); conn.timer = null; }
    setConn(message ? 'refused' : 'idle', message ? 'key refused' : 'not connected: key needed');
    show($('connection'), true);
    const note = $('key-message');
    note.textContent = message;
    show(note, Boolean(message));
    show($('conn-forget'), false);
    $('key-input').value = '';
    $('key-input').focus();
  }

  function wsURL() {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
  }

  function connect() {
    if (conn.timer) { clearTimeout(conn.timer); conn.timer = null; }
    const key = conn.config && conn.config.auth_required ? store.get('anima.key', '') : '';
    setConn('connecting', conn.attempt ? `reconnecting (attempt ${conn.attempt + 1})…`
      : 'connecting…');
    let ws;
    try {
      ws = key ? new WebSocket(wsURL(), ['anima.v1', 'anima.bearer.' + key])
        : new WebSocket(wsURL());
    } catch (e) {
      // A key with characters a subprotocol may not hold.
      store.remove('anima.key');
      askForKey('That key cannot be sent (it holds characters a WebSocket subprotocol may not).');
      return;
    }
    conn.ws = ws;
    conn.opened = false;
    ws.addEventListener('open', () => {
      conn.opened = true;
      conn.attempt = 0;
      show($('connection'), false);
      show($('conn-forget'), Boolean(key));
      setConn('connected', 'connected');
    });
    ws.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      dispatch(frame);
    });
    ws.addEventListener('close', (event) => onClose(ws, event));
  }

  async function onClose(ws, event) {
    if (conn.ws !== ws) return;
    conn.ws = null;
    // Every request in flight on this connection is over.
    for (const [id, handler] of conn.pending) {
      handler({type: 'error', id, code: 'disconnected', message: 'the connection closed'});
    }
    conn.pending.clear();
    jobs.onDisconnect();
    state.stale();
    if (!conn.opened && conn.config && conn.config.auth_required) {
      // The upgrade failed. A browser does not say why: if the server answers HTTP, the key
      // was refused (401, or 429 after repeated failures); if not, the server is away.
      let reachable = false;
      try { await loadConfig(); reachable = true; } catch (e) { reachable = false; }
      if (reachable) {
        store.remove('anima.key');
        askForKey('Key refused: the gateway did not accept this key. Check it and try again.');
        return;
      }
    }
    if (event.code === 1008 && conn.config && conn.config.auth_required) {
      store.remove('anima.key');
      askForKey('The gateway closed the connection: the key is no longer accepted.');
      return;
    }
    const why = event.code === 1001 ? 'server shutting down' : `closed (code ${event.code})`;
    scheduleReconnect(why);
  }

  function scheduleReconnect(why) {
    const delay = Math.min(15000, 500 * 2 ** conn.attempt) * (0.8 + Math.random() * 0.4);
    conn.attempt += 1;
    const until = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setConn('reconnecting', `${why}; reconnecting in ${left} s`);
    };
    tick();
    const interval = setInterval(tick, 1000);
    conn.timer = setTimeout(() => {
      clearInterval(interval);
      conn.timer = null;
      startConnection();
    }, delay);
  }

  function onWelcome(frame) {
    conn.welcome = frame;
    // Every principal's jobs are for admins; a gateway that does not say leaves the box shown.
    const allBox = $('joblist-all');
    allBox.closest('label').hidden = frame.role !== undefined && frame.role !== 'admin';
    if (allBox.closest('label').hidden) allBox.checked = false;
    const limits = frame.limits || {};
    $('conn-session').textContent = [
      frame.principal ? `principal ${frame.principal}` : '',
      frame.session_id ? `session ${frame.session_id}` : '',
      limits.max_in_flight ? `${limits.max_in_flight} in flight` : '',
      limits.messages_per_second ? `${limits.messages_per_second} msg/s` : '',
      limits.max_message_bytes ? `${Math.round(limits.max_message_bytes / 1024)} KiB max` : '',
    ].filter(Boolean).join(' · ');
    for (const hook of conn.onOpen) hook();
  }

  function dispatch(frame) {
    if (frame.type === 'welcome') { onWelcome(frame); return; }
    if (frame.type === 'consciousness_state' && !conn.pending.has(frame.id)) {
      state.render(frame);
      return;
    }
    if (typeof frame.type === 'string' && frame.type.startsWith('self_coding_') &&
        jobs.route(frame)) {
      return;
    }
    const handler = frame.id !== undefined && conn.pending.get(frame.id);
    if (handler) { handler(frame); return; }
    if (frame.type === 'error') console.warn('unrouted error frame', frame.code, frame.message);
  }

  function initConnection() {
    $('key-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('key-input').value.trim();
      if (!key) return;
      store.set('anima.key', key);
      $('key-input').value = '';
      show($('key-message'), false);
      conn.attempt = 0;
      connect();
    });
    $('conn-forget').addEventListener('click', () => {
      store.remove('anima.key');
      const ws = conn.ws;
      conn.ws = null;
      if (ws) ws.close(1000);
      askForKey('');
    });
    startConnection();
  }

  // ---------------------------------------------------------------- chat

  const chat = {conversation: store.get('anima.conversation', '')};

  function setConversation(id) {
    chat.conversation = id || '';
    store.set('anima.conversation', chat.conversation);
    $('chat-conv').textContent = chat.conversation || 'new';
  }

  function usageText(usage) {
    if (!usage) return undefined;
    return `${usage.prompt_tokens ?? 0} in · ${usage.completion_tokens ?? 0} out · ` +
      `${usage.total_tokens ?? 0} total`;
  }

  function answerMeta(answer) {
    return dl([
      ['provider', answer.provider],
      ['model', answer.model],
      ['tokens', usageText(answer.usage)],
      ['latency', typeof answer.latency_ms === 'number' ? `${answer.latency_ms} ms` : undefined],
      ['finish', answer.finish_reason],
    ], 'kv inline meta');
  }

  function renderCandidates(candidates) {
    const grid = el('ol', {class: 'candidates', 'aria-label': 'Fanout candidates'});
    for (const c of candidates) {
      const ok = !c.error;
      grid.append(el('li', {class: 'candidate', 'data-provider': c.provider || ''},
        el('div', {class: 'candidate-head'},
          el('strong', {text: c.provider || '?'}),
          badge(ok ? 'succeeded' : 'failed', ok ? 'answered' : 'error')),
        ok ? el('p', {class: 'answer-text', text: c.message || ''})
          : el('p', {class: 'error', text: errorText(c.error)}),
        ok ? answerMeta(c) : null));
    }
    return grid;
  }

  function sendChat(event) {
    event.preventDefault();
    const box = $('chat-message');
    const message = box.value.trim();
    if (!message) return;
    const frame = {type: 'chat', message, stream: $('chat-stream').checked};
    if (chat.conversation) frame.conversation_id = chat.conversation;
    if ($('chat-provider').value) frame.provider = $('chat-provider').value;
    frame.strategy = $('chat-strategy').value;

    const text = el('p', {class: 'answer-text'});
    const status = el('p', {class: 'answer-status muted', text: 'waiting…'});
    const stop = el('button', {type: 'button', class: 'ghost small', text: 'Stop'});
    const answer = el('div', {class: 'answer', 'aria-busy': 'true'}, text, status, stop);
    const turn = el('li', {class: 'turn'},
      el('p', {class: 'user-text'},
        el('span', {class: 'sr', text: 'You: '}), message),
      el('p', {class: 'muted small-print',
        text: `${frame.strategy}${frame.provider ? ' · ' + frame.provider : ''}` +
          `${frame.stream ? ' · streamed' : ''}`}),
      answer);
    $('chat-log').append(turn);
    box.value = '';
    let streamed = '';
    const id = send(frame, (reply) => {
      if (reply.type === 'chat_delta') {
        streamed += reply.delta || '';
        text.textContent = streamed;
        status.textContent = 'streaming…';
        turn.scrollIntoView({block: 'nearest'});
        return;
      }
      done(reply.id);
      stop.remove();
      answer.setAttribute('aria-busy', 'false');
      if (reply.type === 'chat_response') {
        text.textContent = reply.message || '';
        status.remove();
        answer.append(answerMeta(reply));
        if (Array.isArray(reply.candidates)) answer.append(renderCandidates(reply.candidates));
        if (reply.conversation_id) setConversation(reply.conversation_id);
      } else if (reply.type === 'error') {
        status.remove();
        answer.append(el('p', {class: 'error', role: 'alert', text: errorText(reply)}));
      }
      turn.scrollIntoView({block: 'nearest'});
    });
    answer.dataset.requestId = id;
    stop.addEventListener('click', () => send({type: 'cancel', target_id: id}));
  }

  function initChat() {
    setConversation(chat.conversation);
    $('chat-form').addEventListener('submit', sendChat);
    $('chat-message').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $('chat-form').requestSubmit();
      }
    });
    $('chat-new').addEventListener('click', () => {
      setConversation('');
      $('chat-log').replaceChildren();
      $('chat-message').focus();
    });
  }

  // ---------------------------------------------------------------- system state

  const SAMPLES = 60;
  const state = {
    tiles: new Map(),  // module name -> {node, parts}
    charts: {},
    series: {connections: [], high: [], normal: [], low: [], cpu: [], rss: []},
  };

  function makeChart(key, title, lines) {
    const box = el('figure', {class: 'chart'});
    const caption = el('figcaption', {},
      el('span', {text: title}), el('strong', {class: 'chart-value', text: '–'}));
    const plot = svg('svg', {viewBox: '0 0 120 40', preserveAspectRatio: 'none',
      role: 'img', 'aria-label': `${title}, last ${SAMPLES} samples`});
    plot.append(svg('line', {x1: 0, y1: 39.5, x2: 120, y2: 39.5, class: 'axis'}));
    const polylines = {};
    for (const line of lines) {
      polylines[line] = svg('polyline', {class: `series series-${line}`, points: ''});
      plot.append(polylines[line]);
    }
    box.append(caption, plot);
    if (lines.length > 1) {
      box.append(el('p', {class: 'legend'}, lines.map((line) =>
        el('span', {class: `key key-${line}`}, el('span', {class: 'swatch', 'aria-hidden': 'true'}),
          line))));
    }
    state.charts[key] = {box, caption, polylines};
    return box;
  }

  function drawChart(key, seriesByLine, valueText) {
    const chart = state.charts[key];
    let max = 0;
    for (const values of Object.values(seriesByLine)) {
      for (const v of values) max = Math.max(max, v);
    }
    max = max > 0 ? max * 1.15 : 1;
    for (const [line, series] of Object.entries(seriesByLine)) {
      // One sample is drawn as a short level line, not an invisible point.
      const values = series.length === 1 ? [series[0], series[0]] : series;
      const step = 120 / (SAMPLES - 1);
      const offset = (SAMPLES - values.length) * step;
      chart.polylines[line].setAttribute('points', values.map((v, i) =>
        `${(offset + i * step).toFixed(1)},${(38 - (v / max) * 36).toFixed(1)}`).join(' '));
    }
    chart.caption.querySelector('.chart-value').textContent = valueText;
  }

  function push(series, value) {
    series.push(typeof value === 'number' && isFinite(value) ? value : 0);
    if (series.length > SAMPLES) series.shift();
  }

  function renderLoad(load) {
    if (!load) return;
    const s = state.series;
    const q = load.queue_depth || {};
    push(s.connections, load.connections);
    push(s.high, q.high);
    push(s.normal, q.normal);
    push(s.low, q.low);
    push(s.cpu, load.cpu_percent);
    push(s.rss, (load.rss_bytes || 0) / 1048576);
    drawChart('connections', {connections: s.connections}, fmtNumber(load.connections, 0));
    drawChart('queue', {high: s.high, normal: s.normal, low: s.low},
      `${q.high ?? 0} / ${q.normal ?? 0} / ${q.low ?? 0}`);
    drawChart('cpu', {cpu: s.cpu}, `${fmtNumber(load.cpu_percent, 1)} %`);
    drawChart('rss', {rss: s.rss}, fmtBytes(load.rss_bytes));
  }

  function makeTile(name) {
    const parts = {
      status: badge('unknown'),
      kind: el('p', {class: 'tile-kind muted'}),
      detail: el('p', {class: 'tile-detail'}),
      metrics: el('dl', {class: 'kv metrics'}),
      counters: el('details', {class: 'counters'}),
    };
    const node = el('li', {class: 'tile', 'data-module': name},
      el('div', {class: 'tile-head'}, el('h4', {text: name}), parts.status),
      parts.kind, parts.detail, parts.metrics, parts.counters);
    return {node, parts};
  }

  function updateTile(tile, m) {
    const p = tile.parts;
    const status = m.status || 'unknown';
    tile.node.dataset.status = status;
    tile.node.classList.remove('gone');
    setBadge(p.status, status);
    p.kind.textContent = [m.kind, m.service && m.service !== m.name ? m.service : '']
      .filter(Boolean).join(' · ');
    p.detail.textContent = m.detail || '';
    show(p.detail, Boolean(m.detail));
    const metrics = dl([
      ['in flight', fmtNumber(m.in_flight ?? 0, 0)],
      ['req/s', fmtNumber(m.requests_per_second ?? 0, 2)],
      ['errors', `${fmtNumber((m.error_rate ?? 0) * 100, 1)} %`],
      ['p95', `${fmtNumber(m.p95_ms ?? 0, 0)} ms`],
    ], 'kv metrics');
    p.metrics.replaceWith(metrics);
    p.metrics = metrics;
    const counters = m.counters && typeof m.counters === 'object' ? Object.entries(m.counters) : [];
    const open = p.counters.open;
    p.counters.replaceChildren();
    if (counters.length) {
      p.counters.append(el('summary', {text: `${counters.length} counters`}),
        dl(counters.map(([k, v]) => [k, fmtNumber(v, 2)]), 'kv counters-list'));
      p.counters.open = open;
    }
    show(p.counters, counters.length > 0);
  }

  function render(frame) {
    const harmony = typeof frame.harmony === 'number' ? frame.harmony : 0;
    $('harmony-value').textContent = harmony.toFixed(3);
    $('harmony-meter').value = harmony;
    $('harmony-meter').textContent = fmtNumber(harmony, 3);
    setBadge($('harmony-status'), frame.status || 'unknown');
    $('state-ts').textContent = `updated ${fmtTime(frame.ts) || fmtTime(new Date())}`;
    $('state').classList.remove('stale');
    renderLoad(frame.load);

    const seen = new Set();
    const list = $('modules');
    for (const m of frame.modules || []) {
      if (!m || !m.name) continue;
      seen.add(m.name);
      let tile = state.tiles.get(m.name);
      if (!tile) {
        tile = makeTile(m.name);
        state.tiles.set(m.name, tile);
        list.append(tile.node);
      }
      updateTile(tile, m);
    }
    for (const [name, tile] of state.tiles) {
      if (seen.has(name) || tile.node.classList.contains('gone')) continue;
      tile.node.classList.add('gone');
      tile.node.dataset.status = 'gone';
      setBadge(tile.parts.status, 'gone', 'gone');
      tile.parts.detail.textContent = 'not in the latest state';
      show(tile.parts.detail, true);
    }
  }
  state.render = render;

  // While disconnected, the last state stays on screen, marked as old.
  state.stale = function () {
    const ts = $('state-ts');
    if (!ts.textContent.startsWith('updated')) return;
    ts.textContent = `disconnected; last ${ts.textContent}`;
    $('state').classList.add('stale');
  };

  function queryState() {
    send({type: 'consciousness_query'}, (reply) => {
      done(reply.id);
      if (reply.type === 'consciousness_state') render(reply);
      else if (reply.type === 'error') {
        $('state-ts').textContent = `state query failed: ${errorText(reply)}`;
      }
    });
  }

  function initState() {
    const charts = $('load-charts');
    charts.append(
      makeChart('connections', 'Connections', ['connections']),
      makeChart('queue', 'Queue depth (high / normal / low)', ['high', 'normal', 'low']),
      makeChart('cpu', 'Router CPU', ['cpu']),
      makeChart('rss', 'Router RSS', ['rss']));
    conn.onOpen.push(queryState);
  }

  // ---------------------------------------------------------------- self-coding

  // The demo of docs/examples/self-coding-demo.json (the simulator's rules answer it with a
  // first attempt that fails its tests and a retry that passes).
  const DEMO = {
    task: 'Demo word_count: write a Python function word_count(text) in solution.py that ' +
      'returns a dict mapping each word, lower-cased, to the number of times it appears. Words ' +
      'are separated by whitespace; punctuation at the start or end of a word is not part of it.',
    language: 'python',
    tests: 'from solution import word_count\n\n\n' +
      'def test_counts_words_case_insensitively():\n' +
      '    assert word_count("The cat and the hat.") == ' +
      '{"the": 2, "cat": 1, "and": 1, "hat": 1}\n\n\n' +
      'def test_strips_punctuation_at_the_ends():\n' +
      '    assert word_count("Hello, hello! HELLO?") == {"hello": 3}\n\n\n' +
      'def test_empty_text():\n' +
      '    assert word_count("") == {}\n',
    max_attempts: 3,
  };

  const ENDED = new Set(['succeeded', 'failed', 'cancelled']);
  const jobs = {
    cards: new Map(),     // job_id -> card
    byRequest: new Map(), // request id -> card (before the job id is known)
    watching: store.get('anima.jobs', {}),  // running job_id -> last seq seen
  };

  function saveWatching() { store.set('anima.jobs', jobs.watching); }

  function languageOf(path) {
    const ext = (path.split('.').pop() || '').toLowerCase();
    if (ext === 'py') return 'python';
    if (['cpp', 'cc', 'cxx', 'h', 'hpp', 'hh', 'c'].includes(ext)) return 'cpp';
    return '';
  }

  // A <pre><code> of a file, highlighted by highlight.js when it knows the language.
  function codeBlock(path, content) {
    const code = el('code', {class: 'hljs'});
    const lang = languageOf(path);
    const hljs = window.hljs;
    let highlighted = false;
    if (lang && hljs && hljs.getLanguage && hljs.getLanguage(lang)) {
      try {
        const major = parseInt(String(hljs.versionString || '9'), 10);
        const result = major >= 11 ? hljs.highlight(content, {language: lang, ignoreIllegals: true})
          : hljs.highlight(lang, content, true);
        code.innerHTML = result.value;  // highlight.js escapes the code it wraps
        code.classList.add(`language-${lang}`);
        highlighted = true;
      } catch (e) { highlighted = false; }
    }
    if (!highlighted) code.textContent = content;
    return el('figure', {class: 'file', 'data-path': path, 'data-highlighted': String(highlighted)},
      el('figcaption', {text: path}), el('pre', {}, code));
  }

  function makeCard(title) {
    const parts = {
      status: badge('queued', 'submitting'),
      id: el('code', {class: 'job-id', text: 'new job'}),
      progress: el('progress', {max: 100, value: 0}),
      percent: el('span', {class: 'job-percent', text: '0 %'}),
      stage: el('span', {class: 'job-stage', text: '–'}),
      attempt: el('span', {class: 'job-attempt'}),
      elapsed: el('span', {class: 'job-elapsed muted'}),
      message: el('p', {class: 'job-message'}),
      history: el('ol', {class: 'stages', 'aria-label': 'Stage history'}),
      cancel: el('button', {type: 'button', class: 'ghost small', text: 'Cancel'}),
      error: el('p', {class: 'error', role: 'alert', hidden: true}),
      result: el('div', {class: 'job-result'}),
      task: el('p', {class: 'job-task', text: title}),
    };
    const progressId = newId('progress');
    parts.progress.id = progressId;
    parts.progressLabel = el('label', {class: 'sr', for: progressId, text: 'Job progress'});
    const node = el('article', {class: 'job', 'data-status': 'queued'},
      el('div', {class: 'job-head'}, parts.id, parts.status, parts.cancel),
      parts.task,
      parts.progressLabel,
      parts.progress,
      el('p', {class: 'job-line'}, parts.percent, ' · ', parts.stage, parts.attempt, ' · ',
        parts.elapsed),
      parts.message,
      el('details', {class: 'history', open: true},
        el('summary', {text: 'Stage history'}), parts.history),
      parts.error, parts.result);
    const card = {node, parts, jobId: '', seqs: new Set(), lastSeq: 0, percent: 0,
      started: Date.now(), ended: false, status: 'queued', ticker: null};
    card.ticker = setInterval(() => tickElapsed(card), 1000);
    parts.cancel.addEventListener('click', () => cancelJob(card));
    $('jobs').prepend(node);
    return card;
  }

  function tickElapsed(card) {
    // An ended job: from its first event to its last; a running one: until now.
    const end = card.ended && card.lastTs ? card.lastTs : Date.now();
    card.parts.elapsed.textContent = card.ended ? `took ${fmtDuration(end - card.started)}`
      : `${fmtDuration(end - card.started)} elapsed`;
  }

  function bindJob(card, jobId) {
    card.jobId = jobId;
    card.parts.cancel.setAttribute('aria-label', `Cancel job ${jobId}`);
    card.parts.progressLabel.textContent = `Progress of job ${jobId}`;
    card.node.dataset.jobId = jobId;
    card.parts.id.textContent = jobId;
    jobs.cards.set(jobId, card);
  }

  function setCardStatus(card, status, text) {
    card.status = status;
    card.node.dataset.status = status;
    setBadge(card.parts.status, status, text || status);
  }

  function cardError(card, frame) {
    card.parts.error.textContent = errorText(frame);
    show(card.parts.error, true);
  }

  function onProgress(card, f) {
    if (typeof f.seq === 'number') {
      if (card.seqs.has(f.seq)) return;
      card.seqs.add(f.seq);
      card.lastSeq = Math.max(card.lastSeq, f.seq);
      if (!card.ended && jobs.watching[card.jobId] !== undefined) {
        jobs.watching[card.jobId] = card.lastSeq;
        saveWatching();
      }
    }
    const t = f.ts ? Date.parse(f.ts) : NaN;
    if (!isNaN(t)) {
      if (f.seq === 1) card.started = Math.min(card.started, t);
      card.lastTs = Math.max(card.lastTs || 0, t);
    }
    card.percent = Math.max(card.percent, typeof f.percent === 'number' ? f.percent : 0);
    const p = card.parts;
    p.progress.value = card.percent;
    p.progress.textContent = `${card.percent} %`;
    p.percent.textContent = `${card.percent} %`;
    // Replayed events may come after later ones were shown: the line shows the latest seq.
    if (f.seq === card.lastSeq || typeof f.seq !== 'number') {
      p.stage.textContent = f.stage || '–';
      p.attempt.textContent = f.attempt ? ` · attempt ${f.attempt}` : '';
      p.message.textContent = f.message || '';
    }
    if (!card.ended) {
      setCardStatus(card, f.stage === 'queued' ? 'queued' : 'running',
        f.stage === 'queued' ? 'queued' : 'running');
    }
    const item = el('li', {'data-seq': f.seq ?? '', 'data-stage': f.stage || ''},
      el('span', {class: 'stage-name', text: f.stage || '?'}),
      el('span', {class: 'muted', text: [f.attempt ? `attempt ${f.attempt}` : '',
        typeof f.percent === 'number' ? `${f.percent} %` : '', fmtTime(f.ts)]
        .filter(Boolean).join(' · ')}),
      f.message ? el('span', {class: 'stage-message', text: f.message}) : null);
    // Keep the history in seq order whatever order the events come in.
    const after = [...p.history.children].find((li) => Number(li.dataset.seq) > f.seq);
    p.history.insertBefore(item, after || null);
  }

  // An ended job's card: its cancel button becomes a dismiss button.
  function endCard(card) {
    if (!card.parts.cancel.isConnected) return;
    const dismiss = el('button', {type: 'button', class: 'ghost small dismiss', text: 'Dismiss',
      'aria-label': `Dismiss job ${card.jobId || ''}`.trim(),
      onclick: () => {
        card.node.remove();
        if (card.jobId && jobs.cards.get(card.jobId) === card) jobs.cards.delete(card.jobId);
      }});
    card.parts.cancel.replaceWith(dismiss);
  }

  function onResult(card, f) {
    card.ended = true;
    clearInterval(card.ticker);
    tickElapsed(card);
    delete jobs.watching[card.jobId];
    saveWatching();
    const status = f.status || 'failed';
    setCardStatus(card, status);
    endCard(card);
    if (status === 'succeeded') {
      card.percent = 100;
      card.parts.progress.value = 100;
      card.parts.percent.textContent = '100 %';
    }
    const tests = f.tests || {};
    const r = card.parts.result;
    r.replaceChildren(el('h4', {text: 'Result'}), dl([
      ['status', status],
      ['attempts', f.attempts],
      ['tests passed', tests.passed],
      ['tests failed', tests.failed],
      ['tokens', usageText(f.usage)],
    ], 'kv inline'));
    if (f.reason) r.append(el('p', {class: 'error', text: `reason: ${f.reason}`}));
    if (status !== 'succeeded' && tests.output_tail) {
      r.append(el('details', {class: 'output', open: true}, el('summary', {text: 'Output tail'}),
        el('pre', {text: tests.output_tail})));
    }
    const files = f.files && typeof f.files === 'object' ? Object.entries(f.files) : [];
    if (files.length) {
      r.append(el('div', {class: 'files-out'},
        files.map(([path, content]) => codeBlock(path, String(content)))));
    }
    refreshList();
  }

  // Every self_coding_* frame: to the card of its job_id, else of its request id.
  function route(frame) {
    let card = frame.job_id && jobs.cards.get(frame.job_id);
    if (!card && frame.id !== undefined) card = jobs.byRequest.get(frame.id);
    if (!card) return false;
    if (frame.job_id && !card.jobId) bindJob(card, frame.job_id);
    if (frame.type === 'self_coding_accepted') {
      jobs.watching[card.jobId] = card.lastSeq;
      saveWatching();
      setCardStatus(card, 'queued', 'accepted');
      refreshList();
    } else if (frame.type === 'self_coding_progress') {
      onProgress(card, frame);
    } else if (frame.type === 'self_coding_result') {
      if (frame.id !== undefined) { jobs.byRequest.delete(frame.id); done(frame.id); }
      // The watch and a cancel may both bring the result: show it once.
      if (!card.resultShown) {
        card.resultShown = true;
        onResult(card, frame);
      }
    }
    return true;
  }

  function onJobError(card, requestId) {
    return (frame) => {
      if (frame.type !== 'error') return;
      done(requestId);
      jobs.byRequest.delete(requestId);
      if (frame.code === 'disconnected' && !card.ended) return;  // watched again on reconnect
      cardError(card, frame);
      if (!card.jobId) {
        setCardStatus(card, 'failed', 'refused');
        card.ended = true;
        clearInterval(card.ticker);
        endCard(card);
      } else if (frame.code === 'not_found' && !card.ended) {
        delete jobs.watching[card.jobId];
        saveWatching();
        setCardStatus(card, 'unknown', 'not found');
        card.ended = true;
        clearInterval(card.ticker);
        endCard(card);
      }
    };
  }

  function watchJob(jobId, afterSeq, title) {
    let card = jobs.cards.get(jobId);
    if (!card) {
      card = makeCard(title || '');
      bindJob(card, jobId);
      setCardStatus(card, 'queued', 'watching');
    } else if (afterSeq === 0) {
      // Watching from the start again: rebuild the history from the replay.
      card.seqs.clear();
      card.parts.history.replaceChildren();
    }
    if (!card.ended) {
      jobs.watching[jobId] = card.lastSeq;
      saveWatching();
    }
    show(card.parts.error, false);
    const id = newId('watch');
    jobs.byRequest.set(id, card);
    send({type: 'self_coding_watch', id, job_id: jobId, after_seq: afterSeq},
      onJobError(card, id));
    return card;
  }

  function cancelJob(card) {
    if (!card.jobId) return;
    send({type: 'self_coding_cancel', job_id: card.jobId}, (frame) => {
      done(frame.id);
      if (frame.type === 'error') cardError(card, frame);
      else if (frame.type === 'self_coding_result') route(frame);
    });
  }

  function readFileRows() {
    const files = {};
    for (const row of $('job-files').children) {
      const path = row.querySelector('.file-path').value.trim();
      if (path) files[path] = row.querySelector('.file-content').value;
    }
    return files;
  }

  function addFileRow(path, content) {
    const n = newId('file');
    const row = el('li', {class: 'file-row'},
      el('label', {for: `${n}-path`, text: 'Path'}),
      el('input', {id: `${n}-path`, class: 'file-path', type: 'text', value: path || '',
        placeholder: 'helper.py', spellcheck: false}),
      el('label', {for: `${n}-content`, text: 'Content'}),
      el('textarea', {id: `${n}-content`, class: 'file-content code', rows: 4,
        spellcheck: false, value: content || ''}),
      el('button', {type: 'button', class: 'ghost small', text: 'Remove',
        'aria-label': `Remove file ${path || ''}`.trim(), onclick: () => row.remove()}));
    $('job-files').append(row);
    return row;
  }

  async function onUpload(event) {
    for (const file of event.target.files) {
      addFileRow(file.name, await file.text());
    }
    event.target.value = '';
  }

  function submitJob(event) {
    event.preventDefault();
    const formError = $('job-form-error');
    show(formError, false);
    const task = $('job-task').value.trim();
    const attempts = Number($('job-attempts').value);
    if (!task) return;
    if (!Number.isInteger(attempts) || attempts < 1 || attempts > 5) {
      formError.textContent = 'Max attempts must be a whole number from 1 to 5.';
      show(formError, true);
      return;
    }
    const frame = {type: 'self_coding_request', task, language: $('job-language').value,
      max_attempts: attempts};
    const tests = $('job-tests').value;
    if (tests.trim()) frame.tests = tests;
    const files = readFileRows();
    if (Object.keys(files).length) frame.files = files;
    const id = newId('job');
    frame.id = id;
    const max = conn.welcome && conn.welcome.limits && conn.welcome.limits.max_message_bytes;
    const size = new Blob([JSON.stringify(frame)]).size;
    if (max && size > max) {
      formError.textContent = `The request is ${Math.ceil(size / 1024)} KiB, over the ` +
        `gateway's ${Math.floor(max / 1024)} KiB per message: send smaller files.`;
      show(formError, true);
      return;
    }
    const card = makeCard(task);
    jobs.byRequest.set(id, card);
    send(frame, onJobError(card, id));
  }

  function loadDemo() {
    $('job-task').value = DEMO.task;
    $('job-language').value = DEMO.language;
    $('job-tests').value = DEMO.tests;
    $('job-attempts').value = String(DEMO.max_attempts);
    $('job-files').replaceChildren();
    $('job-task').focus();
  }

  // On a reconnect or a reload: follow every job this tab was following.
  function resumeJobs() {
    for (const jobId of Object.keys(jobs.watching)) {
      const card = jobs.cards.get(jobId);
      watchJob(jobId, card ? card.lastSeq : 0, card ? undefined : '');
    }
  }

  function onDisconnect() {
    jobs.byRequest.clear();
  }

  // ---------------------------------------------------------------- job list

  function refreshList() {
    if (!conn.ws || conn.ws.readyState !== WebSocket.OPEN) return;
    const frame = {type: 'self_coding_list', limit: 20};
    if ($('joblist-status').value) frame.status = $('joblist-status').value;
    if ($('joblist-all').checked) frame.all = true;
    const err = $('joblist-error');
    send(frame, (reply) => {
      done(reply.id);
      if (reply.type === 'error') {
        if (reply.code === 'unknown_type') {
          err.textContent = 'This gateway cannot list jobs (self_coding_list is unknown to it).';
        } else if (reply.code === 'invalid_message' && frame.all) {
          $('joblist-all').checked = false;
          err.textContent = `Only admins can list every principal's jobs (${reply.message}).`;
        } else {
          err.textContent = `Job list: ${errorText(reply)}`;
        }
        show(err, true);
        return;
      }
      if (reply.type !== 'self_coding_jobs') return;
      show(err, false);
      renderList(Array.isArray(reply.jobs) ? reply.jobs : []);
    });
  }

  function renderList(list) {
    const body = $('joblist-body');
    // A refresh keeps the keyboard focus on the same row's button.
    const focused = body.contains(document.activeElement)
      ? document.activeElement.closest('tr').dataset.jobId : '';
    body.replaceChildren();
    if (!list.length) {
      body.append(el('tr', {}, el('td', {colSpan: 6, class: 'muted', text: 'no jobs'})));
      return;
    }
    for (const j of list) {
      const status = j.status || 'unknown';
      const card = jobs.cards.get(j.job_id);
      if (card && !card.parts.task.textContent) card.parts.task.textContent = j.task || '';
      // Job: the id cut to its first 8 hex digits (whole in the title); task with its
      // language and principal below it; a failure's reason below its status.
      body.append(el('tr', {'data-job-id': j.job_id},
        el('td', {}, el('code', {text: `${String(j.job_id).slice(0, 12)}…`, title: j.job_id})),
        el('td', {}, badge(status),
          j.reason && status === 'failed'
            ? el('span', {class: 'list-reason', text: j.reason}) : null),
        el('td', {class: 'task-cell'}, el('span', {class: 'task-text', text: j.task || ''}),
          el('span', {class: 'task-meta muted',
            text: [j.language, j.principal].filter(Boolean).join(' · ')})),
        el('td', {text: j.attempts ?? ''}),
        el('td', {text: fmtTime(j.updated_at || j.created_at)}),
        el('td', {}, el('button', {type: 'button', class: 'ghost small', text: 'Watch',
          'aria-label': `Watch job ${j.job_id}`,
          onclick: () => {
            const card = watchJob(j.job_id, 0, j.task || '');
            card.node.scrollIntoView({block: 'nearest'});
          }}))));
    }
    const again = focused && body.querySelector(`tr[data-job-id="${CSS.escape(focused)}"] button`);
    if (again) again.focus();
  }

  function initJobs() {
    $('job-form').addEventListener('submit', submitJob);
    $('job-demo').addEventListener('click', loadDemo);
    $('job-add-file').addEventListener('click', () => {
      addFileRow('', '').querySelector('.file-path').focus();
    });
    $('job-upload').addEventListener('change', onUpload);
    $('joblist-refresh').addEventListener('click', refreshList);
    $('joblist-status').addEventListener('change', refreshList);
    $('joblist-all').addEventListener('change', refreshList);
    conn.onOpen.push(resumeJobs, refreshList);
  }

  jobs.route = route;
  jobs.onDisconnect = onDisconnect;

  // ---------------------------------------------------------------- start

  initChat();
  initState();
  initJobs();
  initConnection();
})();
