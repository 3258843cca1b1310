// Search (the broker's full-text index): results name their channel and open their thread.

import { get, query } from './api.js';
import { byId, fill, guard } from './dom.js';
import { messageItem } from './messages.js';
import { showView } from './state.js';
import { openThread } from './thread.js';

async function search(q) {
  const { messages } = await get(query('/v1/search', { q, limit: 50 }));
  byId('search-summary').textContent = messages.length
    ? `${messages.length} result${messages.length === 1 ? '' : 's'} for “${q}”.`
    : `Nothing matches “${q}”.`;
  fill(byId('search-results'), messages.map((m) => messageItem(m, { openThread, withChannel: true })));
  showView('search');
}

export function setupSearch() {
  const form = byId('search-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = form.elements.q.value.trim();
    if (q) guard(form.querySelector('button'), () => search(q));
  });
}
