'use strict';
(function () {
  const status = document.getElementById('connection');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`);
  ws.addEventListener('open', () => { status.textContent = 'connected'; });
  ws.addEventListener('close', () => { status.textContent = 'disconnected'; });
})();
