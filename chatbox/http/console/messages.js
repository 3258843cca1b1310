// One message as a list item: author, seq, kind, tier and status, time, title and body — all
// text nodes. Used by the channel, the thread, search and the alerts.

import { button, h, when } from './dom.js';

const STATUSES = new Set(['pending', 'approved', 'denied', 'closed', 'resolved']);
const KINDS = new Set(['chat', 'post', 'reply', 'decision', 'escalation', 'system']);

function tag(text, cls = '') {
  return h('span', { class: `tag ${cls}`.trim() }, text);
}

/** The head line of a message: who, where, what kind, when. */
function head(m, withChannel) {
  const kind = KINDS.has(m.kind) ? m.kind : 'chat';
  const status = STATUSES.has(m.status) ? m.status : null;
  return h('div', { class: 'msg-head' },
    h('span', { class: 'author' }, m.author),
    withChannel ? h('span', { class: 'in-channel' }, m.channel) : null,
    h('span', { class: 'seq' }, `#${m.seq}`),
    kind !== 'chat' ? tag(kind, `kind-${kind}`) : null,
    m.tier ? tag(`tier ${m.tier}`, `tier-${Number(m.tier)}`) : null,
    status ? tag(status, `status-${status}`) : null,
    m.pinned ? tag('pinned') : null,
    m.hop ? h('span', { class: 'hop', title: `chain #${m.chain}` }, `hop ${m.hop}`) : null,
    h('time', { datetime: m.created_at ? new Date(m.created_at * 1000).toISOString() : null },
      when(m.created_at)));
}

/**
 * `m` as an <li>. `openThread(seq)` (optional) adds a button to its thread; `withChannel`
 * names the channel (search results); `extra` is appended (decision buttons).
 */
export function messageItem(m, { openThread, withChannel = false, extra = null } = {}) {
  const root = m.in_reply_to ?? m.seq;
  return h('li', { class: `msg kind-${KINDS.has(m.kind) ? m.kind : 'chat'}`, 'data-seq': m.seq },
    head(m, withChannel),
    m.in_reply_to ? h('p', { class: 'reply-to' }, `in reply to #${m.in_reply_to}`) : null,
    m.title ? h('p', { class: 'title' }, m.title) : null,
    m.body ? h('p', { class: 'body' }, m.body) : null,
    h('div', { class: 'actions' },
      openThread ? button(m.in_reply_to ? `Thread #${root}` : 'Reply / thread',
        () => openThread(root), { 'aria-label': `Open the thread of #${root}` }) : null,
      extra));
}
