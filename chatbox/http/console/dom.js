// DOM helpers of the console. Data only ever becomes text nodes or attribute values: `h` has no
// way to parse HTML, so a name or body such as `<img src=x onerror=...>` shows as those
// characters and runs nothing. No inline style either (the CSP forbids it): classes and
// the `hidden` attribute do the layout.

/** An element `tag` with attributes and children; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'style' || key.startsWith('on')) {
      throw new Error(`refusing the ${key} attribute`);
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const byId = (id) => document.getElementById(id);

/** Show one line in the status bar (errors name what went wrong, in one sentence). */
export function say(text, kind = 'info') {
  const status = byId('status');
  status.textContent = text;
  status.dataset.kind = kind;
}

/** A local time for an epoch-seconds timestamp. */
export function when(seconds) {
  if (!seconds) return '';
  const d = new Date(seconds * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A button that runs `action` (async), disabled while it runs; errors go to the status bar. */
export function button(label, action, attrs = {}) {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', () => guard(b, action));
  return b;
}

/** Run `action` with `control` disabled; a failure is one line in the status bar. */
export async function guard(control, action) {
  if (control.disabled) return; // already running (a second Enter, a double click)
  control.disabled = true;
  try {
    await action();
  } catch (err) {
    say(err.message || String(err), 'error');
  } finally {
    control.disabled = false;
  }
}
