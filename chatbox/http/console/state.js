// What the console knows, in one place, and which view is showing. The server is the truth:
// this is only what the page last loaded or was told over the event stream.

import { byId } from './dom.js';

export const state = {
  me: null, //            {name, role} of the logged-in principal
  view: 'login',
  rooms: new Map(), //    channel name -> {name, kind, topic, last_seq, unread, subscribed, ...}
  channel: null, //       the open channel's name
  shown: new Map(), //    seq -> message shown in the open channel
  thread: null, //        seq of the open thread's root post
  agents: new Map(), //   name -> agent
  escalations: [], //     what waits for a human
};

export const canDecide = () => !!state.me && ['human', 'admin'].includes(state.me.role);

const VIEWS = ['login', 'channels', 'alerts', 'agents', 'search'];
const HEADINGS = {
  login: 'login-h', channels: 'channel-name', alerts: 'alerts-h', agents: 'agents-h',
  search: 'search-h',
};

/** Show one view, mark its tab current, and (unless told not to) move focus to its heading. */
export function showView(name, { focus = true } = {}) {
  state.view = name;
  for (const v of VIEWS) byId(`${v}-view`).hidden = v !== name;
  for (const tab of document.querySelectorAll('#nav button[data-view]')) {
    if (tab.dataset.view === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  if (focus) byId(HEADINGS[name]).focus();
}

/** Tell the rest of the page something changed (`what`: 'alerts', 'agents', ...). */
export function announce(what, detail = {}) {
  document.dispatchEvent(new CustomEvent(`chatbox:${what}`, { detail }));
}

export function on(what, handler) {
  document.addEventListener(`chatbox:${what}`, (e) => handler(e.detail));
}
