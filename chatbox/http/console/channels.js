// Channels: the list with unread counts, the open channel's messages, the composer (a chat
// message, or a titled post with a type and a tier), and reading: whatever the open channel
// shows is acked, so its unread count is the server's and survives a reload.

import { get, path, post, query } from './api.js';
import { byId, fill, guard, h, say } from './dom.js';
import { messageItem } from './messages.js';
import { showView, state } from './state.js';
import { openThread } from './thread.js';

const PAGE = 200;
let readTo = 0; // the newest seq of the open channel read from the server (so delivered)
const acked = new Map(); // channel -> the seq this page acked it up to

function roomItem(room) {
  const current = room.name === state.channel;
  const unread = room.name === state.channel ? 0 : room.unread || 0;
  const label = unread ? `${room.name}, ${unread} unread` : room.name;
  const b = h('button', { type: 'button', class: 'room', 'aria-label': label,
    'aria-current': current ? 'true' : null },
    h('span', { class: 'room-name' }, room.name),
    unread ? h('span', { class: 'badge' }, String(unread)) : null);
  b.addEventListener('click', () => openChannel(room.name));
  return h('li', {}, b);
}

export function renderRooms() {
  const list = byId('channel-list');
  fill(list, [...state.rooms.values()].map(roomItem));
  const current = list.querySelector('[aria-current="true"]');
  if (current && list.scrollWidth > list.clientWidth) {
    list.scrollLeft = current.offsetLeft - list.offsetLeft - 8; // the strip at a phone's width
  }
}

export async function loadRooms() {
  const { channels } = await get('/v1/rooms');
  state.rooms = new Map(channels.map((c) => [c.name, c]));
  renderRooms();
}

function show(messages) {
  const list = byId('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  for (const m of messages) {
    if (state.shown.has(m.seq)) continue;
    state.shown.set(m.seq, m);
    const later = [...list.children].find((li) => Number(li.dataset.seq) > m.seq);
    list.insertBefore(messageItem(m, { openThread }), later || null);
  }
  if (atEnd && messages.length) list.scrollTop = list.scrollHeight;
}

/** Read what is new in the open channel since the last read, then ack it. */
async function catchUp() {
  const channel = state.channel;
  let more = true;
  while (more && channel === state.channel) {
    const route = query(path('channels', channel, 'messages'), { since: readTo, limit: PAGE });
    const page = await get(route);
    if (channel !== state.channel) return;
    show(page.messages);
    for (const m of page.messages) readTo = Math.max(readTo, m.seq);
    more = !!page.more && page.messages.length > 0;
  }
  if (channel === state.channel) await markRead(channel);
}

/** Ack up to what was read from the server (a message only seen live is not yet delivered). */
async function markRead(channel) {
  if (readTo > (acked.get(channel) || 0)) {
    await post('/v1/ack', { channel, up_to: readTo });
    acked.set(channel, readTo);
  }
  const room = state.rooms.get(channel);
  if (room && room.unread) {
    room.unread = 0;
    renderRooms();
  }
}

export async function openChannel(name, { focus = true } = {}) {
  state.channel = name;
  state.shown = new Map();
  readTo = 0;
  fill(byId('messages'));
  const room = state.rooms.get(name) || {};
  byId('channel-name').textContent = name;
  byId('channel-topic').textContent = room.topic || '';
  showView('channels', { focus });
  renderRooms();
  try {
    await catchUp();
  } catch (err) {
    say(`Could not read ${name}: ${err.message}`, 'error');
  }
}

/** Forget what this page read and acked (a log-out: the next principal has its own). */
export function resetChannels() {
  acked.clear();
  readTo = 0;
}

/** After the stream was down: the counts and the open channel read again from the server. */
export async function resync() {
  const open = state.channel;
  await loadRooms();
  if (open && open === state.channel) await catchUp();
}

let pending = null;

/** A live message: shown at once if its channel is open (then acked), else counted unread. */
export function channelSaw(m) {
  const room = state.rooms.get(m.channel);
  if (!room) {
    loadRooms().catch(() => {});
    return;
  }
  room.last_seq = Math.max(room.last_seq || 0, m.seq);
  if (m.channel === state.channel) {
    show([m]);
    pending = pending || Promise.resolve().then(async () => {
      pending = null;
      await catchUp().catch(() => {});
    });
  } else if (m.author !== state.me.name) {
    room.unread = (room.unread || 0) + 1;
    renderRooms();
  }
}

function composed(form) {
  const f = form.elements;
  const body = f.body.value;
  const title = f.title.value.trim();
  const tier = Number(f.tier.value);
  if (!title && tier > 0) throw new Error('A tier above 0 is for a titled post: give it a title.');
  if (!body.trim()) throw new Error('Write a message first (a titled post has a body too).');
  const out = { body };
  if (title) {
    out.title = title;
    if (f.type.value.trim()) out.type = f.type.value.trim();
    if (tier) out.tier = tier;
  }
  return out;
}

export function setupChannels() {
  const form = byId('composer');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guard(form.querySelector('button[type=submit]'), async () => {
      const channel = state.channel;
      const { message } = await post(path('channels', channel, 'messages'), composed(form));
      form.reset();
      byId('compose-post').open = false;
      if (channel === state.channel) show([message]);
      say(message.status === 'pending'
        ? `Posted #${message.seq}; it waits for a human's approval.` : `Posted #${message.seq}.`);
    });
  });
  byId('compose-body').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
}
