// Live updates over server-sent events (/v1/events, the session cookie goes with it): `message`
// events carry a message the principal may read, `agent` events an agent's FSM state. The
// browser reconnects by itself and sends Last-Event-ID, so nothing is missed across a drop.

import { byId } from './dom.js';

let source = null;

function parse(e) {
  try {
    return JSON.parse(e.data);
  } catch {
    return null;
  }
}

function mark(text) {
  byId('live').textContent = text;
  byId('live').dataset.state = text;
}

/**
 * Open the stream: `onMessage(message)`, `onAgent(event)`; `onOpen()` on every (re)connection
 * (agent events are not replayed: reload what they would have changed); `onClosed()` when the
 * browser gives up (the session ended, or the server is gone).
 */
export function connect({ onMessage, onAgent, onOpen, onClosed }) {
  disconnect();
  source = new EventSource('/v1/events');
  mark('connecting');
  source.addEventListener('open', () => {
    mark('live');
    onOpen();
  });
  source.addEventListener('message', (e) => {
    const data = parse(e);
    const m = data && (data.message || data);
    if (m && typeof m.seq === 'number') onMessage(m);
  });
  source.addEventListener('agent', (e) => {
    const data = parse(e);
    if (data && data.agent) onAgent(data);
  });
  source.addEventListener('error', () => {
    if (source && source.readyState === EventSource.CLOSED) {
      mark('offline');
      onClosed();
    } else mark('reconnecting');
  });
}

export function disconnect() {
  if (source) source.close();
  source = null;
  mark('offline');
}
