// The status page: follows one auth request over the watch route's
// Server-Sent Events (GET /v1/requests/{id}:watch) and draws it. Everything
// shown comes from the messages of that stream: the AuthRequest snapshot in
// SNAPSHOT and UPDATE messages, and the events that changed it.
//
// EventSource does the reconnecting: each event's id is its revision, so a
// reconnect sends Last-Event-ID and the server resumes after it.
'use strict';

const STEPS = ['sent', 'delivered', 'read', 'clicked'];

const STATUS = {
  REQUEST_STATUS_UNSPECIFIED: 'Waiting',
  REQUEST_STATUS_IN_PROGRESS: 'In progress',
  REQUEST_STATUS_FAILED: 'Failed',
  REQUEST_STATUS_SUCCESS: 'Success',
};

const RETRIABLE = {
  RETRIABLE_YES: 'retriable',
  RETRIABLE_NO: 'not retriable',
  RETRIABLE_AFTER_OPT_IN: 'retriable once the user opts in',
  RETRIABLE_CASE_BY_CASE: 'retriable case by case',
};

// How long to wait before watching again after a refusal that may pass.
const RETRY_SECONDS = 5;
// A stream silent this long (four heartbeats at the server's default of
// 15 s) is taken for dead, closed and opened again: a connection can die
// without a word, and EventSource would wait on it for ever.
const IDLE_SECONDS = 60;

// gRPC codes after which reconnecting cannot help.
const FINAL_CODES = new Set([3, 5, 7, 8, 9, 11, 12, 16]);

// What the stream delivered, for tests and the curious.
window.otplessWatch = { messages: [], eventIds: [], opens: 0, errors: [] };

let source = null;
let watching = null; // [id, token] of the stream in source

const $ = (id) => document.getElementById(id);

// el builds an element; children are nodes or text (never parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.dataset[k.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// Values longer than this many characters are cut.
const CUT = 80;

// The whole value of each cut value's button, and the whole values the
// reader has opened (kept open when the page is drawn again).
const cutValues = new WeakMap();
const opened = new Set();

// val shows a value the webhook's sender chose (a channel, an error code, a
// method) isolated from its neighbours, so that bidi characters in it
// (a right-to-left override) cannot reorder the text around it. A long
// value is cut to CUT characters and an ellipsis, in a button that shows
// the whole value in its place and cuts it again (a title is out of reach
// of a keyboard, a finger and most screen readers).
function val(s) {
  s = String(s);
  const chars = [...s];
  if (chars.length <= CUT) return el('bdi', null, balanced(s));
  const b = el('button', { type: 'button', class: 'cut' });
  cutValues.set(b, s);
  showCut(b, opened.has(s));
  b.addEventListener('click', () => {
    const open = b.getAttribute('aria-expanded') !== 'true';
    if (open) opened.add(s);
    else opened.delete(s);
    showCut(b, open);
  });
  return el('bdi', null, b);
}

// showCut shows a cut value's button whole (open) or cut.
function showCut(b, open) {
  const s = cutValues.get(b);
  const chars = [...s];
  b.setAttribute('aria-expanded', String(open));
  b.title = open ? `Show the first ${CUT} characters only` : `Show all ${chars.length} characters`;
  b.textContent = open ? balanced(s) : `${balanced(chars.slice(0, CUT).join(''))}…`;
}

// keepFocus runs draw, which may replace the cut value that has the focus,
// and gives the focus to its replacement: the same value, as many times
// over in the page.
function keepFocus(draw) {
  const f = document.activeElement;
  const s = f && cutValues.get(f);
  const same = (v) => [...document.querySelectorAll('button.cut')].filter((b) => cutValues.get(b) === v);
  const nth = s === undefined ? -1 : same(s).indexOf(f);
  draw();
  if (nth < 0 || f.isConnected) return;
  const b = same(s)[nth];
  if (b) b.focus();
}

// balanced gives each end of isolate (U+2069) in s without its start one
// (U+2066-U+2068) before s: else it would end the isolate s is shown in.
function balanced(s) {
  let open = 0;
  let stray = 0;
  for (const c of s) {
    if (c >= '\u2066' && c <= '\u2068') open++;
    else if (c === '\u2069') open ? open-- : stray++;
  }
  return '\u2068'.repeat(stray) + s;
}

function pad(n, width) {
  return String(n).padStart(width, '0');
}

// clock formats a proto JSON timestamp as local HH:MM:SS.mmm, after its
// date (YYYY-MM-DD) unless it is today's.
function clock(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const hms = `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  if (d.toDateString() === new Date().toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ${hms}`;
}

// since says how long after start ts is, e.g. "+2.1 s".
function since(ts, start) {
  if (!ts || !start) return '';
  const ms = new Date(ts) - new Date(start);
  if (ms < 0) return '';
  if (ms < 59950) return `+${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `+${Math.floor(s / 60)} min ${s % 60} s`;
}

function time(ts, start) {
  if (!ts) return null;
  return el('time', { datetime: ts, title: new Date(ts).toString() }, clock(ts), el('span', { class: 'since' }, ' ', since(ts, start)));
}

// refreshSince measures the activity list's times again from start: an
// event that arrives late may be the first.
function refreshSince(start) {
  for (const t of $('activity').querySelectorAll('time')) {
    t.querySelector('.since').textContent = ` ${since(t.dateTime, start)}`;
  }
}

function humanize(s) {
  return (s || '').replace(/_/g, ' ').toLowerCase().replace(/^./, (c) => c.toUpperCase());
}

// errorText puts a failure in words: the documented meaning, the code, and
// whether retrying can help. (A watch token never shows OTPLESS's message,
// which may name the user's number.)
function errorText(err) {
  if (!err) return ['unknown failure'];
  const words = err.description || 'unknown failure';
  const parts = [err.code ? ['code ', val(err.code)] : null, RETRIABLE[err.retriable]].filter(Boolean);
  if (!parts.length) return [words];
  return [words, ' (', ...joined(parts).flat(), ')'];
}

// joined puts commas between items (text or nodes).
function joined(items) {
  return items.flatMap((x, i) => (i ? [', ', x] : [x]));
}

// list joins values with commas.
function list(values) {
  return joined(values.map(val));
}

// KIND is the kind of event each of these statuses counts with (see
// server/state): on an event of another kind it moves nothing.
const KIND = {
  SUCCESS: 'EVENT_KIND_AUTH',
  FALLBACK: 'EVENT_KIND_AUTH',
  FAILED: 'EVENT_KIND_DELIVERY',
  UNREACHABLE: 'EVENT_KIND_SYSTEM',
};

// meaning is e's status when it counts as such, else '': a delivery
// report saying SUCCESS is no sign-in.
function meaning(e) {
  return !KIND[e.status] || KIND[e.status] === e.kind ? e.status : '';
}

// describe puts one event in words (an array of text and nodes).
function describe(e) {
  switch (meaning(e)) {
    case 'INITIATED':
      return ['Initiated', e.authMethod ? [' ', val(e.authMethod)] : [],
        e.authChannels && e.authChannels.length ? [' via ', list(e.authChannels)] : []].flat(2);
    case 'FALLBACK':
      return ['Fell back ', e.fromChannel ? ['from ', val(e.fromChannel), ' '] : [],
        'to ', e.toChannel ? val(e.toChannel) : 'another channel'].flat();
    case 'SUCCESS':
      return ['Success', e.authMethod ? [' (', val(e.authMethod), ')'] : []].flat();
    case 'FAILED':
      return [e.channel ? val(e.channel) : 'Delivery', ' failed: ', ...errorText(e.error)];
    case 'UNREACHABLE':
      return ['OTPLESS reported the user unreachable'];
  }
  return e.channel ? [val(e.channel), ' ', val(humanize(e.status).toLowerCase())] : [val(humanize(e.status))];
}

function setConnection(state, text) {
  document.body.dataset.connection = state;
  const c = $('connection');
  c.className = `connection ${state}`;
  c.textContent = text || humanize(state);
}

function showStreamError(text) {
  const p = $('stream-error');
  p.hidden = !text;
  p.textContent = text || '';
}

// reset empties every part of the page that showed the previous request.
function reset(id) {
  window.otplessWatch = { messages: [], eventIds: [], opens: 0, errors: [] };
  opened.clear();
  $('main').hidden = false;
  $('main').classList.remove('refused');
  delete document.body.dataset.access;
  $('summary-id').replaceChildren(val(id));
  $('status-badge').textContent = '';
  $('status-badge').className = 'badge';
  $('outcome').textContent = '';
  $('outcome').className = 'outcome';
  // Nothing is known of the request until its first snapshot (a stream
  // refused or slow to come): no count, no "no report yet".
  for (const f of ['method', 'channel', 'events', 'revision']) $(`fact-${f}`).textContent = '–';
  $('channels').replaceChildren();
  $('no-channels').hidden = true;
  for (const name of ['fallbacks', 'failures']) {
    $(name).replaceChildren();
    $(`${name}-section`).hidden = true;
  }
  $('activity').replaceChildren();
  showStreamError('');
  document.body.dataset.status = '';
  document.body.dataset.revision = '';
  document.title = `\u2068${balanced(id)}\u2069 · OTPLESS request status`; // isolated as val does
}

function watch(id, token) {
  if (source) source.close();
  reset(id);
  setConnection('connecting', 'Connecting…');
  follow(id, token);
}

// follow opens the request's stream, from after the revision the page shows
// when it shows one (a stream opened again after a refusal or a silence), so
// that nothing shown is lost or repeated.
function follow(id, token) {
  const params = new URLSearchParams();
  if (token) params.set('access_token', token);
  const shown = document.body.dataset.revision;
  if (shown) params.set('after_revision', shown);
  const query = params.toString();
  const url = `../v1/requests/${encodeURIComponent(id)}:watch${query ? `?${query}` : ''}`;
  const es = new EventSource(url);
  source = es;
  watching = [id, token];
  const log = window.otplessWatch;
  let idle = null;
  const quiet = () => {
    clearTimeout(idle);
    idle = setTimeout(() => {
      if (es !== source || es.readyState === EventSource.CLOSED) return;
      es.close();
      setConnection('reconnecting', 'Reconnecting…');
      follow(id, token);
    }, IDLE_SECONDS * 1000);
  };
  quiet();

  es.onopen = () => {
    quiet();
    log.opens++;
    setConnection('live', log.opens > 1 ? 'Live (reconnected)' : 'Live');
    showStreamError('');
  };
  const onMessage = (e) => {
    quiet();
    const msg = JSON.parse(e.data);
    log.messages.push({ type: e.type, revision: Number(msg.revision) });
    // A stream opened again may start over with the snapshot the page
    // shows (a request not seen yet, at revision 0): its note is there.
    const again = document.body.dataset.revision === String(msg.revision);
    document.body.dataset.revision = msg.revision;
    $('fact-revision').textContent = msg.revision;
    if (e.type === 'snapshot' || e.type === 'update') {
      for (const ev of msg.events || []) addActivity(ev, msg.request);
      if (e.type === 'snapshot' && !again) addSnapshotNote(msg.request);
      keepFocus(() => render(msg.request));
      if (msg.request.status === 'REQUEST_STATUS_SUCCESS') {
        es.close();
        clearTimeout(idle);
        setConnection('finished', 'Finished');
      }
    } else if (e.type === 'reconnect') {
      setConnection('reconnecting', 'Reconnecting…');
    }
  };
  for (const type of ['snapshot', 'update', 'heartbeat', 'reconnect']) es.addEventListener(type, onMessage);

  // "error" is both the server's event carrying a gRPC status (with data)
  // and EventSource's own connection error (without).
  es.addEventListener('error', (e) => {
    if (es !== source) return;
    if (e.data) {
      const st = JSON.parse(e.data);
      log.errors.push(st);
      showStreamError(`The stream ended with an error: ${st.message} (gRPC code ${st.code}).`);
      if (FINAL_CODES.has(st.code)) {
        es.close();
        clearTimeout(idle);
        setConnection('closed', 'Closed');
      }
      return;
    }
    if (es.readyState === EventSource.CLOSED) {
      clearTimeout(idle);
      setConnection('closed', 'Closed');
      explainRefusal(url).then((transient) => {
        if (!transient || es !== source) return;
        // Too many streams, a replica going away: worth another try,
        // from what the page shows.
        setConnection('reconnecting', `Retrying in ${RETRY_SECONDS} s…`);
        setTimeout(() => { if (es === source) follow(id, token); }, RETRY_SECONDS * 1000);
      });
    } else if (document.body.dataset.connection !== 'finished') {
      setConnection('reconnecting', 'Reconnecting…');
    }
  });
}

// explainRefusal shows why the server refused the stream (EventSource itself
// cannot read the error body), and reports whether the refusal may pass
// (429, 502, 503, 504; or the stream is there again). 204 is no refusal: the
// request is finished and the page shows its last revision.
async function explainRefusal(url) {
  const abort = new AbortController();
  try {
    const resp = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: abort.signal });
    if (resp.status === 204) return false;
    if (resp.ok) return true;
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401 || resp.status === 403) {
      refuseAccess(resp.status, body.message);
      return false;
    }
    showStreamError(`The server refused the stream: ${body.message || resp.statusText} (HTTP ${resp.status}).`);
    return [429, 502, 503, 504].includes(resp.status);
  } catch {
    showStreamError('The server cannot be reached.');
    return true;
  } finally {
    abort.abort();
  }
}

// refuseAccess says plainly that this link cannot show the request and what
// to do. With nothing shown yet, it leaves out what would read as waiting.
function refuseAccess(status, message) {
  document.body.dataset.access = 'refused';
  showStreamError(`Access refused (HTTP ${status}${message ? `: ${message}` : ''}). ` +
    'The watch token in this link is missing, expired or not for this request: ask for a new link, with a new token.');
  if (document.body.dataset.revision) return; // what was shown stays
  $('main').classList.add('refused');
  $('status-badge').textContent = 'Access refused';
  $('status-badge').className = 'badge failed';
}

function addActivity(ev, req) {
  window.otplessWatch.eventIds.push(ev.eventId);
  const st = meaning(ev);
  const cls = st === 'FAILED' || st === 'UNREACHABLE' ? 'bad' : st === 'SUCCESS' ? 'good' : '';
  $('activity').append(
    el('li', { 'data-event-id': ev.eventId, class: cls },
      time(ev.eventTime, req.firstEventTime),
      el('span', { class: 'what' }, describe(ev)),
      el('span', { class: 'rev' }, `rev ${req.revision}`)));
}

function addSnapshotNote(req) {
  const n = req.eventCount || 0;
  const text = n ? `Caught up: ${n} event${n === 1 ? '' : 's'} so far` : 'Watching: nothing received for this request yet';
  $('activity').append(el('li', { class: 'note' }, el('span', { class: 'what' }, text), el('span', { class: 'rev' }, `rev ${req.revision}`)));
}

function render(req) {
  document.body.dataset.status = req.status;
  const badge = $('status-badge');
  badge.textContent = STATUS[req.status] || humanize(req.status);
  badge.className = `badge ${(req.status || '').replace('REQUEST_STATUS_', '').toLowerCase()}`;
  $('fact-method').replaceChildren(req.authMethod ? val(req.authMethod) : '–');
  $('fact-channel').replaceChildren(req.activeChannel ? val(req.activeChannel) : '–');
  $('fact-events').textContent = req.eventCount || 0;
  $('outcome').replaceChildren(...outcome(req));
  $('outcome').className = `outcome ${badge.className.replace('badge ', '')}`;
  renderChannels(req);
  refreshSince(req.firstEventTime);
  renderList('fallbacks', req.fallbacks, (f) =>
    el('li', { 'data-fallback': `${f.fromChannel}/${f.toChannel}` },
      time(f.time, req.firstEventTime), ' ',
      el('span', { class: 'what' }, f.fromChannel ? val(f.fromChannel) : '?', ' → ', f.toChannel ? val(f.toChannel) : '?')));
  renderList('failures', req.failures, (f) =>
    el('li', { 'data-failure': `${f.channel}/${f.error ? f.error.code : ''}` },
      time(f.time, req.firstEventTime), ' ',
      el('span', { class: 'what' }, el('strong', null, val(f.channel)), ' ', errorText(f.error))));
}

function renderList(name, items, row) {
  $(`${name}-section`).hidden = !(items && items.length);
  $(name).replaceChildren(...(items || []).map(row));
}

// outcome says where the request stands in one sentence (an array of text
// and nodes).
function outcome(req) {
  switch (req.status) {
    case 'REQUEST_STATUS_SUCCESS':
      return [`Signed in at ${clock(req.successTime)}`, req.authMethod ? [' with ', val(req.authMethod)] : [],
        req.activeChannel ? [' over ', val(req.activeChannel)] : [], '.'].flat();
    case 'REQUEST_STATUS_FAILED': {
      if (req.unreachableTime) return [`OTPLESS reported the user unreachable at ${clock(req.unreachableTime)}.`];
      const f = (req.failures || []).filter((x) => x.channel === req.activeChannel).pop();
      if (!f) return ['OTPLESS reported the user unreachable.'];
      return [val(f.channel), ' failed: ', ...errorText(f.error), '. OTPLESS may still fall back to another channel.'];
    }
    case 'REQUEST_STATUS_IN_PROGRESS': {
      const ch = (req.channels || []).find((c) => c.channel === req.activeChannel);
      const step = ch && STEPS.filter((s) => ch[s]).pop();
      return step ? [`In progress: ${humanize(step).toLowerCase()} on `, val(ch.channel), ', waiting for the user.'] : ['In progress: waiting for OTPLESS.'];
    }
  }
  return ['Nothing received for this request yet. Waiting for OTPLESS…'];
}

function renderChannels(req) {
  const list = req.channels || [];
  $('no-channels').hidden = list.length > 0;
  $('channels').replaceChildren(...list.map((ch) => {
    const steps = STEPS.map((s) => {
      const st = ch[s];
      const state = st ? (st.implied ? 'implied' : 'reached') : 'pending';
      return el('li', { class: `step ${state}`, 'data-step': `${ch.channel}/${s.toUpperCase()}`, 'data-state': state,
        title: state === 'implied' ? 'No report of its own: a later step implies it' : null },
        el('span', { class: 'dot' }),
        el('span', { class: 'step-name' }, humanize(s)),
        st ? time(st.time, req.firstEventTime) : el('span', { class: 'muted' }, '—'),
        state === 'implied' ? el('span', { class: 'tag' }, 'implied') : null);
    });
    if (ch.failed) {
      steps.push(el('li', { class: 'step failed', 'data-step': `${ch.channel}/FAILED`, 'data-state': 'failed' },
        el('span', { class: 'dot' }),
        el('span', { class: 'step-name' }, 'Failed'),
        time(ch.failed.time, req.firstEventTime),
        el('span', { class: 'step-error' }, errorText(ch.error))));
    }
    const active = ch.channel === req.activeChannel;
    return el('article', { class: `channel${active ? ' active' : ''}`, 'data-channel': ch.channel },
      el('h3', null, val(ch.channel), active ? el('span', { class: 'tag active' }, 'active') : null,
        el('span', { class: 'channel-status' }, humanize((ch.status || '').replace('DELIVERY_STATUS_', '')))),
      el('ol', { class: 'steps' }, steps));
  }));
}

// A page kept in the back/forward cache keeps its connections open, and a
// stream there would hold a watch slot nobody looks at: it is closed on the
// way out, and the page watches afresh when it is shown again.
window.addEventListener('pagehide', () => {
  if (!source || source.readyState === EventSource.CLOSED) return;
  source.close();
  source = null; // watching still names the request
});
window.addEventListener('pageshow', (e) => {
  if (e.persisted && !source && watching) watch(...watching);
});

function start() {
  const params = new URLSearchParams(location.search);
  const form = $('watch-form');
  const input = $('request-id');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = input.value.trim();
    if (!id) return;
    // A watch token is bound to one request: keep it only for that one.
    const token = id === params.get('request_id') ? params.get('access_token') : null;
    const q = new URLSearchParams({ request_id: id });
    if (token) q.set('access_token', token);
    history.replaceState(null, '', `?${q}`);
    watch(id, token);
  });
  const id = params.get('request_id');
  if (id) {
    input.value = id;
    watch(id, params.get('access_token'));
  } else {
    input.focus();
  }
}

start();
