// What every panel of the dashboard uses: table cells set with textContent (data is never markup), times,
// and the calls to the node's API with the CSRF header, which ask for the token when the session is missing.

export const $ = (selector) => document.querySelector(selector);

export function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '-' : String(text);
  if (className) td.className = className;
  return td;
}

export function row(cells) {
  const tr = document.createElement('tr');
  for (const td of cells) tr.append(td);
  return tr;
}

/** Puts `rows` in the body of `table` (a selector), or one row saying `empty` when there are none. */
export function fill(table, rows, empty) {
  const body = $(`${table} tbody`);
  body.replaceChildren(...rows);
  if (rows.length === 0 && empty) {
    const td = cell(empty, 'muted');
    td.colSpan = $(`${table} thead tr`).children.length;
    body.append(row([td]));
  }
}

export function time(value) {
  if (value === null || value === undefined) return '-';
  const date = typeof value === 'number' ? new Date(value) : new Date(Date.parse(value));
  return Number.isNaN(date.getTime()) ? '-' : date.toLocaleTimeString();
}

/**
 * Sent with every call: the node accepts a state-changing call signed in by the session cookie only with it
 * (or a same-origin Origin), and a page of another origin cannot set it.
 */
export const CSRF = { 'x-baton-csrf': '1' };

/** An answer of the API that is not 2xx: `status` and the error's `code` (e.g. NOT_FOUND) say which. */
export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { ...CSRF, ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers },
  });
  if (response.status === 401) {
    showLogin();
    throw new ApiError('sign-in needed', 401, 'UNAUTHORIZED');
  }
  const body = response.headers.get('content-type')?.includes('json') ? await response.json() : {};
  if (!response.ok) {
    throw new ApiError(body.error ?? `${response.status} ${response.statusText}`, response.status, body.code);
  }
  return body;
}

export function showLogin() {
  const dialog = $('#login');
  if (!dialog.open) dialog.showModal();
}
