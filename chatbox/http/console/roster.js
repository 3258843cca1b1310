// The roster: every agent with its live FSM state (ASLEEP / WAKING / BUSY), paused and why,
// its last turn (outcome, cause, usage), and pause / resume. `agent` events from the stream
// update the state at once; the row itself is reloaded when a turn ends.

import { get, path, post } from './api.js';
import { button, byId, fill, guard, h, say, when } from './dom.js';
import { announce, on, state } from './state.js';

const STATES = new Set(['ASLEEP', 'WAKING', 'BUSY']);

function usage(t) {
  const parts = [];
  if (t.input_tokens || t.output_tokens) {
    parts.push(`${t.input_tokens || 0} in / ${t.output_tokens || 0} out tokens`);
  }
  if (t.cost_usd !== null && t.cost_usd !== undefined) parts.push(`$${Number(t.cost_usd).toFixed(4)}`);
  return parts.join(', ') || 'not reported';
}

function lastTurn(t) {
  if (!t) return h('p', { class: 'hint' }, 'No turn yet.');
  const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
  return h('dl', { class: 'facts' },
    row('Last turn', `#${t.id}: ${t.outcome || 'running'}`),
    t.cause ? row('Cause', t.cause) : null,
    row('Usage', usage(t)),
    t.ended_at ? row('Ended', when(t.ended_at)) : null,
    t.excerpt ? row('Output', h('pre', {}, t.excerpt)) : null);
}

async function act(name, verb, body) {
  await post(path('agents', name, verb), body);
  say(`${verb === 'pause' ? 'Paused' : 'Resumed'} ${name}.`);
  await loadAgents();
}

function pauseForm(name) {
  const reason = h('input', { name: 'reason', maxlength: 200, 'aria-label': `Why pause ${name}` });
  const form = h('form', { class: 'pause-form' }, h('label', {}, 'Reason ', reason),
    h('button', { type: 'submit' }, `Pause ${name}`));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = reason.value.trim();
    guard(form.querySelector('button'), () => act(name, 'pause', text ? { reason: text } : {}));
  });
  return form;
}

function card(a) {
  const st = STATES.has(a.state) ? a.state : 'ASLEEP';
  const subs = (a.subscriptions || []).map((s) => s.channel).join(' ');
  return h('li', { class: 'card agent', 'data-agent': a.name },
    h('h3', {}, h('span', { class: 'agent-name' }, a.name),
      h('span', { class: `state state-${st}`, 'data-state': st }, st),
      a.paused ? h('span', { class: 'tag status-paused' }, 'paused') : null),
    h('dl', { class: 'facts' },
      a.engine ? [h('dt', {}, 'Engine'), h('dd', {}, a.engine)] : null,
      a.current_turn ? [h('dt', {}, 'Now'), h('dd', {}, `turn #${a.current_turn}`)] : null,
      subs ? [h('dt', {}, 'Channels'), h('dd', {}, subs)] : null,
      a.paused ? [h('dt', {}, 'Paused'), h('dd', {}, a.paused_reason || 'no reason given')] : null),
    lastTurn(a.last_turn),
    h('div', { class: 'actions' }, a.paused
      ? button(`Resume ${a.name}`, () => act(a.name, 'resume'), { class: 'primary' })
      : pauseForm(a.name)));
}

export function renderAgents() {
  const agents = [...state.agents.values()];
  byId('agents-empty').hidden = agents.length > 0;
  fill(byId('agent-list'), agents.map(card));
}

export async function loadAgents() {
  const { agents } = await get('/v1/agents');
  state.agents = new Map(agents.map((a) => [a.name, a]));
  renderAgents();
  announce('agents-loaded');
}

let reload = null;
function refreshAgents() {
  reload = reload || Promise.resolve().then(async () => {
    reload = null;
    await loadAgents().catch((err) => say(`Could not load agents: ${err.message}`, 'error'));
  });
}

/** A live `agent` event `{agent, state, paused, turn, cause}`. */
export function agentSaw(ev) {
  const a = state.agents.get(ev.agent);
  if (!a) {
    refreshAgents();
    return;
  }
  a.state = ev.state;
  if (ev.paused !== undefined) a.paused = ev.paused;
  renderAgents();
  announce('agents-loaded');
  refreshAgents(); // the last turn, its cause and usage come with the row
}

export function setupRoster() {
  on('agents-changed', refreshAgents);
}
