// Where the viewer's credentials come from. A bearer token is handed over in the URL fragment
// (never sent to a server, never in logs), kept for this tab only, and removed from the address bar.
const KEY = 'fs-viewer-token';

export function takeToken() {
  const frag = new URLSearchParams(location.hash.slice(1));
  const fromHash = frag.get('token') || frag.get('access_token');
  if (fromHash) {
    sessionStorage.setItem(KEY, fromHash);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY) || '';
}

// Only a path on this server: a link must not point the viewer (and its token) elsewhere.
export function sameOriginPath(raw) {
  if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.includes('\\')) return '';
  return raw.replace(/\/+$/, '');
}
