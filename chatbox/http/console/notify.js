// Desktop notifications when an approval is waiting. Permission is asked politely: only when
// the person presses the button, never on load.

import { byId } from './dom.js';

const supported = () => 'Notification' in window;

function syncButton() {
  byId('notify-btn').hidden = !supported() || Notification.permission !== 'default';
}

export function setupNotify() {
  syncButton();
  byId('notify-btn').addEventListener('click', async () => {
    await Notification.requestPermission();
    syncButton();
  });
}

/** Show a notification (text only) if allowed; `tag` replaces an earlier one for the same item. */
export function notify(title, body, tag) {
  if (!supported() || Notification.permission !== 'granted') return;
  try {
    new Notification(title, { body, tag });
  } catch {
    // some platforms only allow notifications from a service worker: the badge still shows it
  }
}
