// wspubsub.js: a browser subscriber for a wspubsub hub that resumes where it
// left off. One ES module, no dependencies, no build step.
//
//   import {subscribe} from './wspubsub.js';
//   const sub = subscribe('wss://hub.example/ws/sub/news/world?rewind=10', {
//     onMessage(data, {epoch, offset, binary}) { ... },
//     onGap({epoch, first, last}) { ... },   // these offsets will never come
//     onReset({epoch}) { ... },              // the topic restarted from nothing
//   });
//   localStorage.pos = sub.position();       // "EPOCH:OFFSET", or null
//   sub.close();
//
// It speaks the `wspubsub.meta` subprotocol: every message carries its
// position (`id: EPOCH:OFFSET`), and the hub sends `gap:` and `reset:`
// notices. What it promises the app:
//
// - No duplicates: a message at or before the last position seen in its
//   epoch is dropped, so replays after a reconnect never repeat a message.
// - Every loss is told: a `gap:` notice becomes onGap, and so does a jump in
//   offsets that no notice announced; a new epoch is announced by onReset.
//   A reset says the topic restarted: what the old epoch had after the last
//   position seen is lost, and the hub cannot say how much.
// - It reconnects after every close the app did not ask for, whatever the
//   close code: network loss (1006), a refused handshake (the browser shows
//   an HTTP 404/503 as 1006 too), 4000 slow consumer, 4003 idle timeout and
//   also 4001 topic closed, since a topic may be started again. Delays are
//   exponential with full jitter: random(0, min(maxDelay, minDelay * 2^n))
//   after the n-th failure in a row; a connection that delivered something
//   starts the count again. Each reconnect asks for `since=EPOCH:OFFSET` of
//   the last position (replacing any `since`, dropping `rewind`, keeping the
//   other query parameters as they were).
// - Before it has a position it reconnects with the URL as given, so what
//   was published while it was away with no position is not replayed
//   (unless the URL asks for `rewind`).
//
// A private domain's topic: pass `token`, the token itself or a function
// that returns one (or a promise of one), e.g. fetched from the app's
// backend. A function is called before every connect, so when the hub
// closes the socket with 4005 (token expired) or 4002 (its verification key
// revoked) the client fetches a fresh token and resumes at once, with no
// loss. The token goes in the `token` query parameter (a browser cannot
// set headers on a WebSocket).
//
// Text messages arrive as strings; binary ones as a Uint8Array view of the
// received ArrayBuffer (the bytes after the header, not copied).

const PROTOCOL = 'wspubsub.meta';
const MAX_HEADER = 512; // bytes searched for the header's end in a binary message
const utf8 = new TextDecoder();

/**
 * @typedef {{epoch: string, offset: number, binary: boolean}} MessageInfo
 * @typedef {{
 *   onMessage?: (data: string|Uint8Array, info: MessageInfo) => void,
 *   onGap?: (gap: {epoch: string, first: number, last: number}) => void,
 *   onReset?: (reset: {epoch: string}) => void,
 *   onOpen?: (open: {url: string}) => void,
 *   onClose?: (close: {code: number, reason: string, reconnect: boolean, delay: number}) => void,
 *   since?: string,
 *   token?: string|(() => (string|Promise<string>)),
 *   minDelay?: number,
 *   maxDelay?: number,
 * }} Options
 */

/**
 * Subscribes to a topic and keeps subscribed until close() is called.
 *
 * onMessage gets each message once, in order; onGap offsets first..last of
 * epoch that will never come; onReset a new epoch (offsets from 1 again);
 * onOpen each socket that opened; onClose each socket that closed, with
 * `reconnect` false only after close() and `delay` the ms until the next try.
 *
 * @param {string} url ws:// or wss:// URL of /ws/sub/DOMAIN/TOPIC, with any query.
 * @param {Options} [options] callbacks; `since` ("EPOCH:OFFSET", e.g. an
 *   earlier position()) resumes after that position; `token` is a private
 *   domain's token, or a function that fetches a fresh one before each
 *   connect; minDelay and maxDelay (ms) bound the reconnect backoff.
 * @returns {{close: () => void, position: () => (string|null)}}
 */
export function subscribe(url, {onMessage, onGap, onReset, onOpen, onClose, since, token,
                                minDelay = 250, maxDelay = 10000} = {}) {
  let epoch = null;   // position of the last message (or gap) handed over
  let offset = 0;
  let ws = null;
  let timer = null;
  let failures = 0;   // closes in a row of sockets that received nothing
  let closed = false; // the app called close()

  const start = parsePosition(since ?? new URL(url).searchParams.get('since'));
  if (start) ({epoch, offset} = start);

  async function connect() {
    timer = null;
    let target = epoch === null ? url : withSince(url, `${epoch}:${offset}`);
    if (token !== undefined) {
      let t;
      try {
        t = typeof token === 'function' ? await token() : token;
      } catch (e) {
        if (closed) return;
        failures++;
        const delay = backoff();
        timer = setTimeout(connect, delay);
        onClose?.({code: 0, reason: 'token: ' + e, reconnect: true, delay});
        return;
      }
      if (closed) return;
      target = withParam(target, 'token', t);
    }
    const sock = new WebSocket(target, [PROTOCOL]);
    sock.binaryType = 'arraybuffer';
    let received = false; // anything parsed on this socket
    let opened = Infinity;  // when it opened
    sock.onopen = () => {
      opened = Date.now();
      onOpen?.({url: target});
    };
    sock.onmessage = (ev) => {
      if (closed || sock !== ws) return;
      if (handle(ev.data)) received = true;
      else sock.close(4400, 'malformed message'); // and reconnect
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      ws = null;
      if (closed) {
        onClose?.({code: ev.code, reason: ev.reason, reconnect: false, delay: 0});
        return;
      }
      const useful = received || Date.now() - opened >= maxDelay;
      failures = useful ? 0 : failures + 1;
      // A token that expired or whose key was revoked: a fresh one, at once.
      const renew = typeof token === 'function' && (ev.code === 4005 || ev.code === 4002) && useful;
      const delay = renew ? 0 : backoff();
      timer = setTimeout(connect, delay);
      onClose?.({code: ev.code, reason: ev.reason, reconnect: true, delay});
    };
    ws = sock;
  }

  // backoff is the delay before the next try after `failures` in a row.
  function backoff() {
    return Math.random() * Math.min(maxDelay, minDelay * 2 ** failures);
  }

  // handle takes one message or notice; false if it cannot be parsed.
  function handle(data) {
    const binary = typeof data !== 'string';
    let header, payload;
    if (binary) {
      const bytes = new Uint8Array(data);
      const end = headerEnd(bytes);
      if (end < 0) return false;
      header = utf8.decode(bytes.subarray(0, end));
      payload = bytes.subarray(end + 2);
    } else {
      const end = data.indexOf('\n\n');
      if (end < 0) return false;
      header = data.slice(0, end);
      payload = data.slice(end + 2);
    }
    const f = new Map(); // header fields; unknown ones are for later hubs
    for (const line of header.split('\n')) {
      const colon = line.indexOf(': ');
      if (colon > 0) f.set(line.slice(0, colon), line.slice(colon + 2));
    }
    if (f.has('id')) {
      const pos = parsePosition(f.get('id'));
      if (!pos) return false;
      if (!advance(pos.epoch, pos.offset - 1)) return true; // seen already
      offset = pos.offset;
      onMessage?.(payload, {epoch, offset, binary});
    } else if (f.has('gap')) {
      const m = /^([A-Za-z0-9]+):(\d+)-(\d+)$/.exec(f.get('gap'));
      if (!m || +m[2] < 1 || +m[3] < +m[2]) return false;
      advance(m[1], +m[2] - 1);
      if (+m[3] > offset) gap(+m[3]);
    } else if (f.has('reset')) {
      if (!/^[A-Za-z0-9]+$/.test(f.get('reset'))) return false;
      if (f.get('reset') !== epoch) newEpoch(f.get('reset'));
    }
    return true;
  }

  // advance brings the position to just before offset `before + 1` of epoch
  // e, telling the app of any reset or gap on the way; false if that offset
  // was handed over already.
  function advance(e, before) {
    if (epoch === null) {
      epoch = e; // the first message of a subscription without `since`:
      offset = before; // what came before it was not asked for
    } else if (e !== epoch) {
      newEpoch(e); // a new epoch the hub did not announce
    }
    if (before < offset) return false;
    if (before > offset) gap(before);
    return true;
  }

  function newEpoch(e) {
    epoch = e;
    offset = 0;
    onReset?.({epoch});
  }

  function gap(last) {
    const first = offset + 1;
    offset = last;
    onGap?.({epoch, first, last});
  }

  connect();
  return {
    /** Stops the subscription for good; onClose follows if a socket was open. */
    close() {
      closed = true;
      clearTimeout(timer);
      ws?.close(1000);
    },
    /** The last position handed to the app, "EPOCH:OFFSET", or null. */
    position: () => (epoch === null ? null : `${epoch}:${offset}`),
  };
}

// parsePosition reads "EPOCH:OFFSET"; null for anything else.
function parsePosition(s) {
  const m = /^([A-Za-z0-9]+):(\d+)$/.exec(s ?? '');
  if (!m || !Number.isSafeInteger(+m[2])) return null;
  return {epoch: m[1], offset: +m[2]};
}

// headerEnd is the index of the first "\n\n" in the header part of bytes, or -1.
function headerEnd(bytes) {
  const n = Math.min(bytes.length, MAX_HEADER) - 1;
  for (let i = 0; i < n; i++) {
    if (bytes[i] === 10 && bytes[i + 1] === 10) return i;
  }
  return -1;
}

// withParam sets name=value in url's query, keeping the rest as is.
function withParam(url, name, value) {
  const u = new URL(url);
  const keep = u.search.slice(1).split('&')
    .filter((p) => p && !p.startsWith(name + '=') && p !== name);
  u.search = [...keep, `${name}=${encodeURIComponent(value)}`].join('&');
  return u.href;
}

// withSince sets since=POS in url's query, drops rewind, keeps the rest as is.
function withSince(url, pos) {
  const u = new URL(url);
  const keep = u.search.slice(1).split('&')
    .filter((p) => p && !/^(since|rewind)(=|$)/.test(p));
  u.search = [...keep, `since=${pos}`].join('&');
  return u.href;
}
