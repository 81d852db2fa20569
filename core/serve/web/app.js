// labctl serve: draws every running lab and keeps it live from the server's event
// stream (Server-Sent Events). Elements carry data-lab, data-node, data-link and
// data-state for scripts and browser tests.
'use strict';

const token = document.querySelector('meta[name="labctl-token"]').content;
const labsEl = document.getElementById('labs');
const connectionEl = document.getElementById('connection');
const MAX_EVENTS = 50;

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function badge(state, text) {
  return h('span', { class: 'badge ' + state }, text || state);
}

function labSection(name) {
  return labsEl.querySelector(`section[data-lab="${CSS.escape(name)}"]`);
}

// The SVG made by Graphviz, parsed as SVG (never as HTML) and stripped of anything
// active before it joins the page.
function importSvg(text) {
  const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
  const svg = doc.documentElement;
  if (svg.nodeName !== 'svg') return null;
  for (const bad of svg.querySelectorAll('script, foreignObject')) bad.remove();
  for (const el of svg.querySelectorAll('*')) {
    for (const a of [...el.attributes]) if (/^on/i.test(a.name) || /href/i.test(a.name)) el.removeAttribute(a.name);
  }
  return document.importNode(svg, true);
}

function eventLine(ev) {
  const t = new Date(ev.time * 1000).toLocaleTimeString();
  const where = ev.type === 'lab' ? 'lab ' + ev.lab : ev.node + (ev.interface ? ':' + ev.interface : '');
  let line = `${t} ${where} ${ev.type === 'lab' ? '' : ev.type + ' '}${ev.action}`;
  if (ev.detail) line += ' ' + ev.detail;
  return line;
}

function addEvent(sec, ev) {
  const list = sec.querySelector('ol.events');
  list.prepend(h('li', {}, eventLine(ev)));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function runChecks(name, button) {
  button.disabled = true;
  const sec = labSection(name);
  const note = sec.querySelector('.checks-note');
  note.textContent = 'running…';
  try {
    const res = await fetch(`/api/labs/${encodeURIComponent(name)}/checks`, {
      method: 'POST', headers: { 'X-Labctl-Token': token }, credentials: 'same-origin',
    });
    const body = await res.json();
    if (!res.ok) note.textContent = body.error || res.statusText;
    else {
      const failed = body.checks.filter((c) => !c.ok).length;
      note.textContent = `${body.checks.length - failed} passed, ${failed} failed`;
    }
  } catch (e) {
    note.textContent = String(e);
  } finally {
    button.disabled = false;
  }
}

function skeleton(name) {
  const button = h('button', { type: 'button', class: 'run-checks' }, 'Run checks');
  button.addEventListener('click', () => runChecks(name, button));
  const sec = h('section', { class: 'lab', 'data-lab': name, 'data-state': 'up' },
    h('h2', {}, name),
    h('p', { class: 'description' }),
    h('div', { class: 'body' },
      h('div', { class: 'picture' }),
      h('div', { class: 'side' },
        h('h3', {}, 'Links'), h('table', { class: 'links' }),
        h('h3', {}, 'Checks'), h('table', { class: 'checks' }),
        h('p', {}, button, ' ', h('span', { class: 'checks-note' })),
        h('h3', {}, 'Events'), h('ol', { class: 'events' }))));
  const after = [...labsEl.querySelectorAll('section.lab')].find((s) => s.dataset.lab > name);
  labsEl.insertBefore(sec, after || null);
  return sec;
}

function drawPicture(sec, v) {
  const pic = sec.querySelector('.picture');
  pic.replaceChildren();
  const svg = v.svg ? importSvg(v.svg) : null;
  if (svg) {
    pic.append(svg);
    return;
  }
  // Without Graphviz: lists, carrying the same data attributes.
  pic.append(h('ul', { class: 'plain nodes' }), h('ul', { class: 'plain links' }));
}

function nodeElement(sec, v, n) {
  const pic = sec.querySelector('.picture');
  let el = pic.querySelector(`[id="node-${CSS.escape(n.name)}"]`) || pic.querySelector(`li[data-node="${CSS.escape(n.name)}"]`);
  if (!el) {
    const list = pic.querySelector('ul.nodes');
    if (!list) return null;
    el = list.appendChild(h('li'));
  }
  return el;
}

function linkElement(sec, l) {
  const pic = sec.querySelector('.picture');
  let el = pic.querySelector(`[id="${CSS.escape(l.id)}"]`) || pic.querySelector(`li[data-link="${CSS.escape(l.endpoints)}"]`);
  if (!el) {
    const list = pic.querySelector('ul.links');
    if (!list) return null;
    el = list.appendChild(h('li'));
  }
  return el;
}

function setTitle(el, text) {
  if (el.namespaceURI === 'http://www.w3.org/2000/svg') {
    let t = el.querySelector(':scope > title');
    if (!t) t = el.insertBefore(document.createElementNS('http://www.w3.org/2000/svg', 'title'), el.firstChild);
    t.textContent = text;
  } else {
    el.textContent = text;
  }
}

function render(v) {
  const sec = labSection(v.name) || skeleton(v.name);
  sec.querySelector('.description').textContent = v.description || '';
  if (v.svg !== undefined || !sec.querySelector('.picture').firstChild) drawPicture(sec, v);
  if (v.recent) {
    sec.querySelector('ol.events').replaceChildren();
    for (const ev of v.recent) addEvent(sec, ev);
  }

  for (const n of v.nodes) {
    const el = nodeElement(sec, v, n);
    if (!el) continue;
    el.dataset.node = n.name;
    el.dataset.state = n.state;
    setTitle(el, `${n.name} (${n.kind}): ${n.state}`);
  }

  const rows = [h('tr', {}, h('th', {}, 'link'), h('th', {}, 'state'), h('th', {}, 'impairment'))];
  for (const l of v.links) {
    const el = linkElement(sec, l);
    if (el) {
      el.dataset.link = l.endpoints;
      el.dataset.state = l.state;
      setTitle(el, `${l.endpoints.replace(' ', ' ↔ ')}: ${l.state}${l.impair ? ' (' + l.impair + ')' : ''}`);
    }
    const ends = l.ends.map((e) => `${e.end} ${e.state}`).join(', ');
    rows.push(h('tr', { title: ends },
      h('td', {}, l.endpoints.replace(' ', ' ↔ ')), h('td', {}, badge(l.state)), h('td', {}, l.impair || '')));
  }
  sec.querySelector('table.links').replaceChildren(...rows);

  const checkRows = [h('tr', {}, h('th', {}, 'check'), h('th', {}, 'expect'), h('th', {}, 'last result'))];
  for (const c of v.checks) {
    const r = c.result;
    let result = badge('none', 'not run');
    if (r) {
      const detail = r.sent ? ` ${r.received}/${r.sent}` : '';
      result = h('span', {}, badge(r.ok ? 'ok' : 'fail', r.ok ? 'ok' : 'FAIL'), detail,
        r.ok || !r.reason ? '' : ' ' + r.reason);
    }
    checkRows.push(h('tr', { class: 'check', 'data-result': r ? (r.ok ? 'ok' : 'fail') : 'none' },
      h('td', {}, c.label), h('td', {}, c.expect), h('td', {}, result)));
  }
  if (!v.checks.length) checkRows.push(h('tr', {}, h('td', { colspan: '3' }, 'this lab has no checks')));
  sec.querySelector('table.checks').replaceChildren(...checkRows);
  const button = sec.querySelector('button.run-checks');
  button.disabled = v.running || !v.checks.length;
  button.textContent = v.running ? 'Running…' : 'Run checks';
  updateEmpty();
}

function remove(name) {
  const sec = labSection(name);
  if (sec) sec.remove();
  updateEmpty();
}

function updateEmpty() {
  document.getElementById('no-labs').hidden = !!labsEl.querySelector('section.lab');
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => {
    connectionEl.dataset.state = 'live';
    connectionEl.textContent = 'live';
  });
  es.addEventListener('error', () => {
    connectionEl.dataset.state = 'reconnecting';
    connectionEl.textContent = 'reconnecting…';
  });
  es.addEventListener('labs', (m) => {
    const { labs } = JSON.parse(m.data);
    const names = new Set(labs.map((v) => v.name));
    for (const sec of [...labsEl.querySelectorAll('section.lab')]) if (!names.has(sec.dataset.lab)) sec.remove();
    for (const v of labs) render(v);
    updateEmpty();
  });
  es.addEventListener('lab', (m) => render(JSON.parse(m.data)));
  es.addEventListener('remove', (m) => remove(JSON.parse(m.data).name));
  es.addEventListener('event', (m) => {
    const ev = JSON.parse(m.data);
    const sec = labSection(ev.lab);
    if (sec) addEvent(sec, ev);
  });
}

connect();
