// The alerts inbox: what waits for a human — open escalations in #alerts and pending tier-2
// posts — each with its agent, chain, reason and evidence, and approve / deny (with a reason)
// / resume its agent. Reloaded whenever the event stream says something may have changed.

import { get, path, post } from './api.js';
import { decisionControls } from './decide.js';
import { button, byId, fill, h, say } from './dom.js';
import { messageItem } from './messages.js';
import { notify } from './notify.js';
import { announce, canDecide, on, state } from './state.js';
import { openThread } from './thread.js';

let known = null; // seqs already seen waiting (null until the first load: no notification then)

function evidence(item) {
  const ev = item.evidence;
  if (!ev || (Array.isArray(ev) && !ev.length)) return null;
  const lines = Array.isArray(ev) ? ev : [String(ev)];
  return h('div', { class: 'evidence' }, h('h4', {}, 'Evidence'),
    h('ul', {}, lines.map((line) => h('li', {}, h('pre', {}, String(line))))));
}

function facts(item) {
  const row = (label, value) => (value === null || value === undefined || value === '' ? null
    : [h('dt', {}, label), h('dd', {}, String(value))]);
  return h('dl', { class: 'facts' },
    row('Agent', item.agent), row('Chain', item.chain != null ? `#${item.chain}` : null),
    row('Reason', item.reason));
}

function resumeButton(name) {
  const agent = state.agents.get(name);
  if (!agent || !agent.paused) return null;
  return button(`Resume ${name}`, async () => {
    await post(path('agents', name, 'resume'));
    say(`Resumed ${name}.`);
    announce('agents-changed');
  }, { 'aria-label': `Resume agent ${name}` });
}

/** One waiting item: `message` (the escalation or the pending post), `post` (the seq to
 * approve or deny), `about` (the message an escalation names), agent, chain, reason, evidence. */
function card(item) {
  const m = item.message;
  return h('li', { class: 'card alert', 'data-seq': m.seq },
    h('h3', {}, m.title || `#${m.seq}`),
    facts(item),
    evidence(item),
    h('ol', { class: 'messages' }, messageItem(m, { openThread, withChannel: true })),
    h('div', { class: 'actions' },
      canDecide() && item.post ? decisionControls(item.post) : null,
      item.agent ? resumeButton(item.agent) : null,
      item.about ? button(`Open #${item.about}`, () => openThread(item.about),
        { 'aria-label': `Open the thread of #${item.about}, which this is about` }) : null));
}

export function renderAlerts() {
  const items = state.escalations;
  const list = byId('alert-list');
  // A card being worked on (its deny form open, or the focus in it) is kept as it is: a live
  // update must never throw away a reason being typed.
  const busy = new Map();
  for (const li of list.children) {
    if (li.querySelector('.deny-form:not([hidden])') || li.contains(document.activeElement)) {
      busy.set(li.dataset.seq, li);
    }
  }
  byId('alerts-empty').hidden = items.length > 0;
  fill(list, items.map((item) => busy.get(String(item.message.seq)) || card(item)));
  const count = byId('alerts-count');
  count.hidden = items.length === 0;
  count.textContent = String(items.length);
  count.setAttribute('aria-label', `${items.length} waiting`);
}

export async function loadAlerts() {
  const { escalations } = await get('/v1/escalations');
  state.escalations = escalations || [];
  const seqs = state.escalations.map((e) => e.message.seq);
  if (known !== null) {
    for (const { message: m, reason } of state.escalations) {
      if (!known.has(m.seq)) {
        notify(`Approval waiting: ${m.title || `#${m.seq}`}`,
          `${m.author} in ${m.channel}${reason ? ` — ${reason}` : ''}`, `chatbox-${m.seq}`);
      }
    }
  }
  known = new Set(seqs);
  renderAlerts();
}

let reload = null;
/** Coalesce reloads: many events in one tick cost one request. */
export function refreshAlerts() {
  reload = reload || Promise.resolve().then(async () => {
    reload = null;
    await loadAlerts().catch((err) => say(`Could not load alerts: ${err.message}`, 'error'));
  });
  return reload;
}

/** A live message that may add or settle an alert. */
export function alertsSaw(m) {
  if (m.channel === '#alerts' || m.tier === 2 || m.kind === 'decision' || m.kind === 'escalation') {
    refreshAlerts();
  }
}

export function setupAlerts() {
  on('decided', refreshAlerts);
  on('agents-loaded', renderAlerts);
}

export function resetAlerts() {
  known = null;
  state.escalations = [];
}
