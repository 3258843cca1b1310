// The console's entry: log in (the token is exchanged for an HttpOnly session cookie and then
// forgotten: nothing is kept in localStorage), load channels, alerts and agents, and keep them
// live over the event stream. Each part lives in its own module; this one wires them.

import { alertsSaw, loadAlerts, refreshAlerts, resetAlerts, setupAlerts } from './alerts.js';
import { api, get, post } from './api.js';
import {
  channelSaw, loadRooms, openChannel, resetChannels, resync, setupChannels,
} from './channels.js';
import { byId, fill, guard, h, say } from './dom.js';
import { connect, disconnect } from './live.js';
import { setupNotify } from './notify.js';
import { agentSaw, loadAgents, setupRoster } from './roster.js';
import { setupSearch } from './search.js';
import { on, showView, state } from './state.js';
import { closeThread, setupThread, threadSaw } from './thread.js';

const SIGNED_IN = ['nav', 'search-form', 'who'];

function signedIn(yes) {
  for (const id of SIGNED_IN) byId(id).hidden = !yes;
}

function onMessage(m) {
  channelSaw(m);
  threadSaw(m);
  alertsSaw(m);
}

const FIRST_OPEN_WAIT_MS = 5000;
let loaded = false; //   the first load is done: an (re)opened stream means reading again
let firstOpen = null; // resolves when the stream first opens

/**
 * The stream is open, so nothing that commits from now on is missed: listen first, then read.
 * After the first load, every opening (a reconnection, or a first one that came late) reads
 * again what the events it could not carry may have changed.
 */
function onOpen() {
  if (firstOpen) firstOpen();
  firstOpen = null;
  if (!loaded) return;
  loadAgents().catch(() => {});
  refreshAlerts();
  resync().catch(() => {});
}

const LIVE = { onMessage, onAgent: agentSaw, onOpen, onClosed: () => onClosed() };

async function onClosed() {
  try {
    await get('/v1/me');
  } catch (err) {
    if (err.status === 401) return loggedOut('Your session ended: log in again.');
  }
  setTimeout(() => state.me && connect(LIVE), 3000);
}

async function start(me) {
  state.me = me;
  fill(byId('me'), me.name, h('span', { class: 'role' }, ` (${me.role})`));
  signedIn(true);
  loaded = false;
  const live = new Promise((resolve) => { firstOpen = resolve; });
  connect(LIVE);
  await Promise.race([live, new Promise((r) => { setTimeout(r, FIRST_OPEN_WAIT_MS); })]);
  await Promise.all([loadRooms(), loadAgents(), loadAlerts()]);
  loaded = true;
  const first = state.rooms.has('#general') ? '#general' : [...state.rooms.keys()][0];
  if (first) await openChannel(first, { focus: false });
  else showView('channels', { focus: false });
  // the login form is gone: focus goes to the content, unless the person already moved it
  if (!document.activeElement || document.activeElement === document.body) byId('main').focus();
}

function loggedOut(message = '') {
  disconnect();
  state.me = null;
  state.channel = null;
  state.rooms = new Map();
  state.agents = new Map();
  resetAlerts();
  resetChannels();
  closeThread();
  for (const id of ['channel-list', 'messages', 'alert-list', 'agent-list', 'search-results']) {
    fill(byId(id));
  }
  signedIn(false);
  byId('login-error').textContent = message;
  showView('login');
  byId('token').focus();
}

function setupLogin() {
  const form = byId('login-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const token = form.elements.token.value.trim();
    byId('login-error').textContent = '';
    guard(form.querySelector('button'), async () => {
      try {
        const me = await post('/v1/session', { token });
        form.reset(); // the token leaves the page: the cookie carries the session from here
        say('');
        await start(me);
      } catch (err) {
        byId('login-error').textContent = err.status === 401
          ? 'That token is not valid (or was revoked).' : err.message;
        byId('token').focus();
      }
    });
  });
  byId('logout').addEventListener('click', () => guard(byId('logout'), async () => {
    state.me = null; // what is still in flight may be refused now: that is no news
    disconnect();
    await api('DELETE', '/v1/session').catch(() => {});
    loggedOut();
  }));
}

/** Any request refused for want of a session, once logged in: the session has ended. */
function setupExpiry() {
  on('unauthorized', () => {
    if (state.me) loggedOut('Your session ended: log in again.');
  });
}

function setupNav() {
  for (const tab of document.querySelectorAll('#nav button[data-view]')) {
    tab.addEventListener('click', () => {
      const view = tab.dataset.view;
      if (view === 'alerts') refreshAlerts();
      if (view === 'agents') loadAgents().catch((err) => say(err.message, 'error'));
      if (view === 'channels' && state.channel) openChannel(state.channel);
      else showView(view);
    });
  }
}

async function boot() {
  setupLogin();
  setupExpiry();
  setupNav();
  setupChannels();
  setupThread();
  setupAlerts();
  setupRoster();
  setupSearch();
  setupNotify();
  try {
    await start(await get('/v1/me'));
  } catch (err) {
    loggedOut(err.status === 401 || err.status === 403 ? '' : err.message);
  }
}

boot();
