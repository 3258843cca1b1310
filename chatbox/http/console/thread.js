// The thread panel: a post, its replies, a reply composer, and the decision buttons when the
// post is a pending tier-2 post and the principal may decide.

import { get, path, post } from './api.js';
import { decisionControls } from './decide.js';
import { byId, fill, guard, h, say } from './dom.js';
import { messageItem } from './messages.js';
import { canDecide, on, showView, state } from './state.js';

function render(root, replies) {
  const pending = root.tier === 2 && root.status === 'pending' && canDecide();
  byId('thread-h').textContent = `Thread #${root.seq}`;
  fill(byId('thread-root'), h('ol', { class: 'messages' },
    messageItem(root, { withChannel: true, extra: pending ? decisionControls(root.seq) : null })));
  fill(byId('thread-replies'), replies.map((m) => messageItem(m)));
}

async function load(seq) {
  const { post: root, replies } = await get(path('posts', seq));
  if (state.thread !== seq) return;
  render(root, replies || []);
}

/** Open the thread of post `seq` beside the channel (over it at phone width). */
export async function openThread(seq) {
  state.thread = seq;
  if (state.view !== 'channels') showView('channels', { focus: false });
  byId('thread').hidden = false;
  document.body.classList.add('thread-open');
  try {
    await load(seq);
  } catch (err) {
    say(`Could not open thread #${seq}: ${err.message}`, 'error');
  }
  byId('thread-h').focus();
}

export function closeThread() {
  state.thread = null;
  byId('thread').hidden = true;
  document.body.classList.remove('thread-open');
  byId('channel-name').focus();
}

/** A live message: reload the open thread if it belongs to it. */
export function threadSaw(m) {
  if (state.thread === null) return;
  if (m.seq === state.thread || m.in_reply_to === state.thread) {
    load(state.thread).catch(() => {});
  }
}

export function setupThread() {
  byId('thread-close').addEventListener('click', closeThread);
  byId('thread').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') closeThread();
  });
  const form = byId('reply-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = form.elements.body.value;
    if (!body.trim() || state.thread === null) return;
    const seq = state.thread;
    guard(form.querySelector('button'), async () => {
      await post(path('posts', seq, 'replies'), { body });
      form.elements.body.value = '';
      await load(seq);
    });
  });
  on('decided', () => {
    if (state.thread !== null) load(state.thread).catch(() => {});
  });
}
