// The documented REST API (docs/protocol.md, "REST API"), and every error put in words.

export class ApiError extends Error {
  // status: the HTTP status (0 for a WebSocket reply or no answer at all);
  // code: the protocol's error code, or "network" / "disconnected" for the console's own.
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.serverMessage = message || '';
  }
}

export async function api(path, { method = 'GET', token = null, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data && typeof data.error === 'string' ? data.error : `http_${response.status}`;
    const message = data && typeof data.message === 'string' ? data.message : '';
    throw new ApiError(response.status, code, message);
  }
  return data;
}

const q = (name) => `“${name}”`;

// One plain sentence for an error. `what` says what was being done, so that one code can
// be explained in the words of that action: {action: "signin" | "register" | "subscribe" |
// "unsubscribe" | "create" | "invite" | "message" | "history" | "direct" | "admin",
// topic, username}.
export function inWords(error, what = {}) {
  const code = error instanceof ApiError ? error.code : 'unknown';
  const server = error instanceof ApiError ? error.serverMessage : '';
  const topic = what.topic ? q(what.topic) : 'that topic';
  const user = what.username ? q(what.username) : 'that user';
  switch (code) {
    case 'network':
      return 'The server cannot be reached. Check that topichub is running; the console keeps trying.';
    case 'disconnected':
      return 'You are disconnected from the server. The console is reconnecting; try again in a moment.';
    case 'unauthorized':
      if (what.action === 'signin') return 'Wrong username or password.';
      return 'Your session has ended. Sign in again.';
    case 'already_exists':
      if (what.action === 'register') {
        return `The name ${user} is already taken. Choose another name.`;
      }
      return `The name ${topic} is already taken by a topic or a user. Choose another name.`;
    case 'forbidden':
      if (what.action === 'admin') return 'Only admins can see the server statistics.';
      if (what.action === 'subscribe' || what.action === 'history') {
        return `${topic} is a private topic: ask one of its members to invite you.`;
      }
      return 'You are not allowed to do that.';
    case 'not_a_member':
      if (what.action === 'invite') return `Only members of ${topic} can invite people to it.`;
      if (what.action === 'unsubscribe') return `You are not a member of ${topic}.`;
      return `You are not a member of ${topic}: join it before writing to it.`;
    case 'not_found':
      if (what.action === 'invite') return `There is no user called ${user}.`;
      if (what.action === 'direct') return `There is no user called ${user}.`;
      if (what.action === 'message' || what.action === 'history') {
        return `There is no topic or user called ${topic} any more.`;
      }
      return `There is no topic called ${topic}.`;
    case 'already_member':
      return `${user} is already a member of ${topic}.`;
    case 'too_large':
      return `That message is too large for the server${server ? ` (${server})` : ''}.`;
    case 'rate_limited':
      return 'You are sending messages too fast. Wait a moment, then try again.';
    case 'unavailable':
      return 'The server cannot reach its database right now. Try again in a moment.';
    case 'internal_error':
      return 'Something went wrong on the server. Try again; if it keeps happening, tell an admin.';
    case 'invalid_request':
      if (what.action === 'register' || what.action === 'create') {
        return 'Names are 1 to 64 characters: letters, digits, “_”, “.” and “-”. ' +
          'Passwords are 8 to 1024 characters.';
      }
      return server ? `The server did not accept that: ${server}.` : 'The server did not accept that.';
    default:
      if (error instanceof ApiError && error.status >= 500) {
        return 'The server had a problem answering. Try again in a moment.';
      }
      return server ? `Something went wrong: ${server}.` : 'Something went wrong. Try again.';
  }
}
