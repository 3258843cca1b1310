// The console's one way to the server: JSON over fetch with the session cookie (same origin,
// so the browser sends the Origin header the server checks on writes). An error response is RFC
// 9457 problem+json; it becomes an ApiError whose message is the server's one-line detail.

export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem || {};
    super(p.detail || p.title || `the server answered ${status}`);
    this.status = status;
    this.code = p.code;
    this.field = p.field;
  }
}

export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: 'the ChatBox server cannot be reached' });
  }
  const type = res.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await res.json().catch(() => null) : null;
  if (res.status === 401) document.dispatchEvent(new CustomEvent('chatbox:unauthorized'));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);

/** `/v1/...` with each part percent-encoded (a channel name carries its `#`). */
export function path(...parts) {
  return '/v1/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
}

export function query(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `${base}?${s}` : base;
}
