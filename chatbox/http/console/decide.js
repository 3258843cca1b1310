// Approve or deny a pending tier-2 post: two buttons; deny asks for its reason first (the
// broker requires one). Only shown to a human or an admin; the server decides who may.

import { path, post } from './api.js';
import { button, guard, h, say } from './dom.js';
import { announce } from './state.js';

async function decide(seq, approve, text) {
  const route = path('posts', seq, approve ? 'approve' : 'deny');
  const { message } = await post(route, approve ? (text ? { comment: text } : {}) : { reason: text });
  say(`${approve ? 'Approved' : 'Denied'} #${seq} (decision #${message ? message.seq : '?'}).`);
  announce('decided', { seq });
}

/** The controls for post `seq`: Approve, and Deny with a reason. */
export function decisionControls(seq) {
  const reason = h('input', { name: 'reason', maxlength: 500, required: true,
    'aria-label': `Reason for denying #${seq}` });
  const denyForm = h('form', { class: 'deny-form', hidden: true },
    h('label', {}, 'Reason ', reason),
    h('button', { type: 'submit' }, 'Confirm deny'));
  denyForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = reason.value.trim();
    if (!text) {
      say('A denial needs a reason.', 'error');
      reason.focus();
      return;
    }
    guard(denyForm.querySelector('button'), () => decide(seq, false, text));
  });
  const deny = button('Deny…', async () => {
    denyForm.hidden = !denyForm.hidden;
    if (!denyForm.hidden) reason.focus();
  }, { class: 'danger', 'aria-label': `Deny #${seq}` });
  const approve = button('Approve', () => decide(seq, true, ''),
    { class: 'primary', 'aria-label': `Approve #${seq}` });
  return h('div', { class: 'decide' }, approve, deny, denyForm);
}
