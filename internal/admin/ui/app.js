// tollgate's operators' page. Hand-written, no framework and nothing from
// the internet: everything shown comes from the documented admin API,
// called with the admin token the operator signs in with. The token lives
// in this tab's sessionStorage only: never in a URL, a cookie,
// local storage or a log (this file has no console calls).
'use strict';

(() => {
  const TOKEN_KEY = 'tollgate.admin.token';
  // The admin API's root: the page is served at <root>/ui/.
  const apiRoot = new URL('../', location.href);
  const SVGNS = 'http://www.w3.org/2000/svg';
  const SCOPES = ['CREATE', 'READ', 'UPDATE', 'DELETE'];

  // ---- DOM helpers: elements are built, never parsed from strings. ----

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : String(k));
    }
  }

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  const $ = (sel, el = document) => el.querySelector(sel);
  let uid = 0;
  const nextID = (p) => `${p}-${++uid}`;

  // ---- Formatting. ----

  const numberFmt = new Intl.NumberFormat('en');
  const fmt = (n) => numberFmt.format(n);
  const limitText = (n) => (n > 0 ? fmt(n) : 'unlimited');

  function time(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return h('time', { datetime: iso, title: iso }, d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }));
  }

  function addons(a) {
    const e = Object.entries(a || {});
    return e.length ? e.map(([k, v]) => `${k} × ${v}`).join(', ') : '—';
  }

  const list = (l) => (l && l.length ? l.join(', ') : null);

  // ---- Messages (an aria-live region). ----

  function say(text, isError) {
    const st = $('#status');
    st.replaceChildren(h('p', { class: isError ? 'error' : 'notice' }, text));
  }
  const clearStatus = () => $('#status').replaceChildren();

  // ---- The session. ----

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    cachedConfig = null;
    render();
    if (message) say(message, true);
  }

  // ---- The admin API. ----

  class APIError extends Error {
    constructor(status, body) {
      super(problemText(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function problemText(status, body) {
    const ps = body && Array.isArray(body.problems) ? body.problems : [];
    if (!ps.length) return `the admin API answered ${status}`;
    return ps.map((p) => (p.field ? `${p.field}: ` : '') + (p.message || p.code)).join('; ');
  }

  function apiURL(path) {
    return new URL(path, apiRoot);
  }

  async function api(method, path, body) {
    const init = {
      method,
      headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(apiURL(path), init);
    let data = null;
    const text = r.status === 204 ? '' : await r.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (r.status === 401) {
      signOut('The admin token was refused: sign in again.');
    }
    if (!r.ok) throw new APIError(r.status, data);
    return data;
  }

  const enc = encodeURIComponent;
  const q = (params) => new URLSearchParams(params).toString();

  // The configuration (plans, modules, time zones) for forms and periods;
  // read once per sign-in and view, and optional: the page works without.
  let cachedConfig = null;
  async function config() {
    if (cachedConfig) return cachedConfig;
    try {
      cachedConfig = await api('GET', 'v1/config');
    } catch (e) {
      if (e.status === 401) throw e;
      return null;
    }
    return cachedConfig;
  }

  // ---- Dialogs: confirmation, with optional fields. ----

  function ask({ title, text, fields = [], confirm, danger }) {
    return new Promise((resolve) => {
      const tid = nextID('dlg');
      const form = h('form', { method: 'post' },
        h('h2', { id: tid }, title),
        text ? h('p', {}, text) : null,
        fields,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close('cancel') }, 'Cancel'),
          h('button', { type: 'submit', class: danger ? 'danger' : null }, confirm)));
      const dlg = h('dialog', { 'aria-labelledby': tid }, form);
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        dlg.close('ok');
      });
      dlg.addEventListener('close', () => {
        const out = dlg.returnValue === 'ok' ? new FormData(form) : null;
        dlg.remove();
        resolve(out);
      });
      document.body.append(dlg);
      dlg.showModal();
    });
  }

  // ---- A secret, shown once. ----

  function secretPanel(what, secret, onDone) {
    const code = h('code', { id: 'new-secret' }, secret);
    const panel = h('div', { class: 'secret', role: 'alert', 'aria-label': `New ${what}` },
      h('p', {}, h('strong', {}, 'Copy it now: '),
        `this ${what} is shown once and will not be shown again. Only its digest is stored.`),
      code,
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'copy-secret', onclick: () => copy(code, secret) }, 'Copy'),
        h('button', { type: 'button', class: 'secondary', onclick: () => { panel.remove(); if (onDone) onDone(); } }, 'Done, I have copied it')));
    return panel;
  }

  async function copy(node, text) {
    try {
      await navigator.clipboard.writeText(text);
      say('Copied to the clipboard.');
      return;
    } catch (_) {
      // No clipboard API (not a secure context): select it for Ctrl+C.
    }
    const range = document.createRange();
    range.selectNodeContents(node);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    say('Selected: press Ctrl+C (⌘C) to copy.');
  }

  // ---- Pieces. ----

  function card(title, ...kids) {
    const id = nextID('sec');
    return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), kids);
  }

  function field(label, input) {
    const id = input.id || nextID('f');
    input.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input);
  }

  function errorLine(e) {
    return h('p', { class: 'error', role: 'alert' }, e instanceof Error ? e.message : String(e));
  }

  // usageBar draws used/limit as a bar; the numbers are its attributes
  // and its accessible name.
  function usageBar(used, limit, id) {
    const frac = limit > 0 ? Math.min(used / limit, 1) : 0;
    const label = limit > 0
      ? `${fmt(used)} of ${fmt(limit)} requests used (${((used / limit) * 100).toFixed(1)}%)`
      : `${fmt(used)} requests used, no limit`;
    const level = frac >= 1 ? ' over' : frac >= 0.8 ? ' warn' : '';
    return s('svg', {
      class: 'bar', id, viewBox: '0 0 100 8', preserveAspectRatio: 'none', width: '100%', height: 12,
      role: 'img', 'aria-label': label, 'data-used': used, 'data-limit': limit,
    },
    s('title', {}, label),
    s('rect', { class: 'track', x: 0, y: 0, width: 100, height: 8, rx: 2 }),
    s('rect', { class: `fill${level}`, x: 0, y: 0, width: (frac * 100).toFixed(2), height: 8, rx: 2 }));
  }

  function scopesFieldset(prefix) {
    return h('fieldset', {},
      h('legend', {}, 'Scopes'),
      SCOPES.map((sc) => {
        const id = `${prefix}-scope-${sc}`;
        return [h('input', { type: 'checkbox', id, name: 'scope', value: sc, checked: true }), ' ', h('label', { for: id }, sc), ' '];
      }));
  }

  function modulesFieldset(prefix, cfg) {
    const mods = Object.keys((cfg && cfg.config && cfg.config.modules) || {}).sort();
    if (!mods.length) return null;
    return h('fieldset', {},
      h('legend', {}, 'Modules (none ticked: every module)'),
      mods.map((m) => {
        const id = `${prefix}-module-${m}`;
        return [h('input', { type: 'checkbox', id, name: 'module', value: m }), ' ', h('label', { for: id }, m), ' '];
      }));
  }

  // limits reads the scopes and modules ticked in form into body.
  function limits(form, body) {
    const scopes = [...form.querySelectorAll('input[name=scope]:checked')].map((i) => i.value);
    if (scopes.length === 0) throw new Error('Tick at least one scope.');
    if (scopes.length < SCOPES.length) body.scopes = scopes;
    const mods = [...form.querySelectorAll('input[name=module]:checked')].map((i) => i.value);
    if (mods.length) body.modules = mods;
    return body;
  }

  // ---- Sign in. ----

  function viewSignIn(main) {
    main.replaceChildren($('#sign-in-template').content.cloneNode(true));
    const form = $('#sign-in-form');
    const input = $('#token-input');
    const err = $('#sign-in-error');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      err.textContent = '';
      if (!t) {
        err.textContent = 'Enter the admin token.';
        return;
      }
      const button = form.querySelector('button');
      button.disabled = true;
      try {
        const r = await fetch(apiURL('v1/tenants?size=1'), {
          headers: { Authorization: `Bearer ${t}` }, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
        });
        if (r.status === 401) {
          err.textContent = 'That is not the admin token.';
          input.select();
          return;
        }
        if (!r.ok) {
          err.textContent = `The admin API answered ${r.status}.`;
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, t);
        input.value = '';
        clearStatus();
        if (!location.hash.startsWith('#/')) location.hash = '#/tenants';
        render();
      } catch (e) {
        err.textContent = `The admin API cannot be reached: ${e.message}`;
      } finally {
        button.disabled = false;
      }
    });
    input.focus();
  }

  // ---- Tenants. ----

  const tenantColumns = [
    { key: 'id', label: 'Tenant', sort: 'id' },
    { key: 'plan', label: 'Plan', sort: 'plan' },
    { key: 'addons', label: 'Add-ons' },
    { key: 'limit', label: 'Limit', sort: 'limit', num: true },
    { key: 'used', label: 'Used', num: true },
    { key: 'remaining', label: 'Remaining', num: true },
    { key: 'reset', label: 'Resets' },
    { key: 'bar', label: 'Usage' },
    { key: 'created', label: 'Created', sort: 'created' },
  ];

  async function viewTenants(_, query) {
    const page = {
      position: Math.max(0, parseInt(query.get('position') || '0', 10) || 0),
      size: Math.min(1000, Math.max(1, parseInt(query.get('size') || '20', 10) || 20)),
      orderBy: query.get('orderBy') || 'id',
      desc: query.get('desc') === 'true',
    };
    const [l, cfg] = await Promise.all([api('GET', `v1/tenants?${q(page)}`), config()]);
    const usages = await Promise.allSettled(l.items.map((t) => api('GET', `v1/tenants/${enc(t.id)}/usage`)));

    const go = (change) => {
      location.hash = `#/tenants?${q({ ...page, ...change })}`;
    };
    const head = h('tr', {}, tenantColumns.map((c) => {
      const attrs = { scope: 'col', class: c.num ? 'num' : null };
      if (!c.sort) return h('th', attrs, c.label);
      const active = page.orderBy === c.sort;
      attrs['aria-sort'] = active ? (page.desc ? 'descending' : 'ascending') : 'none';
      return h('th', attrs, h('button', {
        type: 'button', class: 'sort', 'data-sort': c.sort,
        onclick: () => go({ orderBy: c.sort, desc: active ? !page.desc : false, position: 0 }),
      }, c.label));
    }));
    const rows = l.items.map((t, i) => {
      const u = usages[i].status === 'fulfilled' ? usages[i].value : null;
      return h('tr', { 'data-tenant': t.id },
        h('th', { scope: 'row' }, h('a', { href: `#/tenants/${enc(t.id)}` }, t.id)),
        h('td', {}, t.plan),
        h('td', {}, addons(t.addons)),
        h('td', { class: 'num' }, limitText(t.limit)),
        h('td', { class: 'num', 'data-field': 'used' }, u ? fmt(u.used) : '—'),
        h('td', { class: 'num' }, u ? (u.limit > 0 ? fmt(u.remaining) : '—') : '—'),
        h('td', {}, u ? time(u.reset) : '—'),
        h('td', { class: 'bar-cell' }, u ? usageBar(u.used, u.limit) : h('span', { class: 'hint' }, 'usage unavailable')),
        h('td', {}, time(t.created)));
    });
    const first = l.total ? l.position + 1 : 0;
    const last = l.position + l.items.length;
    const sizeSel = h('select', { id: 'page-size', onchange: (ev) => go({ size: ev.target.value, position: 0 }) },
      [10, 20, 50, 100].map((n) => h('option', { value: n, selected: n === page.size }, n)));
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', class: 'secondary', disabled: page.position === 0, onclick: () => go({ position: Math.max(0, page.position - page.size) }) }, 'Previous'),
      h('span', {}, `${first}–${last} of ${l.total}`),
      h('button', { type: 'button', class: 'secondary', disabled: last >= l.total, onclick: () => go({ position: page.position + page.size }) }, 'Next'),
      h('label', { for: 'page-size' }, 'Per page'), sizeSel);

    return h('div', {},
      h('h1', {}, 'Tenants'),
      card('All tenants',
        h('table', {}, h('caption', {}, 'Usage in each tenant’s current period'),
          h('thead', {}, head),
          h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: tenantColumns.length, class: 'empty' }, 'No tenants yet.')))),
        pager),
      createTenantCard(cfg));
  }

  function createTenantCard(cfg) {
    const plans = Object.keys((cfg && cfg.config && cfg.config.plans) || {}).sort();
    const id = h('input', { id: 'tenant-id', required: true, pattern: '[A-Za-z0-9_\\-]{1,64}', autocomplete: 'off' });
    const plan = plans.length
      ? h('select', { id: 'tenant-plan' }, plans.map((p) => h('option', { value: p }, p)))
      : h('input', { id: 'tenant-plan', required: true });
    const ad = h('input', { id: 'tenant-addons', placeholder: 'mcal=1', autocomplete: 'off' });
    const err = h('div');
    const form = h('form', { class: 'inline', method: 'post' },
      field('ID (letters, digits, _ and -)', id), field('Plan', plan), field('Add-ons (name=units, …)', ad),
      h('button', { type: 'submit', id: 'tenant-create' }, 'Create tenant'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const body = { id: id.value.trim(), plan: plan.value.trim() };
        const units = ad.value.split(',').map((x) => x.trim()).filter(Boolean);
        if (units.length) {
          body.addons = {};
          for (const u of units) {
            const [k, v] = u.split('=').map((x) => x.trim());
            const n = Number(v);
            if (!k || !Number.isInteger(n)) throw new Error(`add-on "${u}": want name=units`);
            body.addons[k] = n;
          }
        }
        const t = await api('POST', 'v1/tenants', body);
        say(`Tenant ${t.id} created.`);
        location.hash = `#/tenants/${enc(t.id)}`;
      } catch (e) {
        err.replaceChildren(errorLine(e));
      }
    });
    return card('New tenant', form, err);
  }

  // ---- One tenant. ----

  async function viewTenant([id]) {
    const [t, cfg] = await Promise.all([api('GET', `v1/tenants/${enc(id)}`), config()]);
    const tz = (cfg && cfg.config && ((cfg.config.plans[t.plan] || {}).timezone || (cfg.config.quota || {}).timezone)) || 'UTC';
    return h('div', {},
      h('p', {}, h('a', { href: '#/tenants' }, '← Tenants')),
      h('h1', {}, `Tenant ${t.id}`),
      card('Subscription', h('dl', { class: 'facts' },
        h('dt', {}, 'Plan'), h('dd', { id: 'tenant-plan-value' }, t.plan),
        h('dt', {}, 'Add-ons'), h('dd', {}, addons(t.addons)),
        h('dt', {}, 'Monthly limit'), h('dd', { id: 'tenant-limit' }, limitText(t.limit)),
        t.granted ? [h('dt', {}, 'Granted'), h('dd', {}, `${fmt(t.granted)} (replaces the plan’s limit and add-ons)`)] : null,
        h('dt', {}, 'Period'), h('dd', {}, t.anchor_day ? `from day ${t.anchor_day} of each month` : 'calendar months', `, ${tz}`),
        h('dt', {}, 'Created'), h('dd', {}, time(t.created)))),
      usageCard(t, tz),
      credCard(t, cfg, KEYS),
      credCard(t, cfg, CLIENTS),
      usersCard(t, cfg),
      requestsCard(t.id));
  }

  // usageCard shows the usage bar and the daily plot, refreshed on demand.
  function usageCard(t, tz) {
    const body = h('div', {}, h('p', { class: 'hint' }, 'Loading…'));
    const plot = h('div');
    const refresh = h('button', { type: 'button', id: 'refresh-usage', class: 'secondary' }, 'Refresh');
    const load = async () => {
      refresh.disabled = true;
      try {
        const u = await api('GET', `v1/tenants/${enc(t.id)}/usage`);
        body.replaceChildren(
          usageBar(u.used, u.limit, 'usage-bar'),
          h('div', { class: 'usage-line' },
            h('span', {}, h('span', { class: 'big', id: 'usage-used' }, fmt(u.used)), ' used'),
            h('span', {}, 'of ', h('span', { id: 'usage-limit' }, limitText(u.limit))),
            h('span', {}, h('span', { id: 'usage-remaining' }, u.limit > 0 ? fmt(u.remaining) : '—'), ' remaining'),
            h('span', {}, `period ${u.period}, resets `, time(u.reset))));
        plot.replaceChildren(await dailyPlot(t, u, tz));
      } catch (e) {
        body.replaceChildren(errorLine(e));
      } finally {
        refresh.disabled = false;
      }
    };
    refresh.addEventListener('click', load);
    load();
    return card('Usage', body, plot, h('div', { class: 'actions' }, refresh));
  }

  // ---- Periods and the daily plot. ----

  const DAY = 86400000;
  const ymd = (d) => d.toISOString().slice(0, 10);
  const parseDay = (s) => new Date(`${s}T00:00:00Z`);

  // anchorDate is day anchor of month m (0-based, may overflow) of year y,
  // clamped to the month's last day, as limiter.PeriodAt computes it.
  function anchorDate(y, m, anchor) {
    const first = new Date(Date.UTC(y, m, 1));
    const Y = first.getUTCFullYear();
    const M = first.getUTCMonth();
    const last = new Date(Date.UTC(Y, M + 1, 0)).getUTCDate();
    return new Date(Date.UTC(Y, M, Math.min(anchor, last)));
  }

  // periods returns the current and the previous period of a usage's
  // period key ("2026-11", or "2026-11-15" for an anchor day) as days.
  function periods(key, anchorDay) {
    const [y, m] = key.split('-').map(Number);
    const anchor = Math.max(anchorDay || 1, 1);
    const cur = { start: anchorDate(y, m - 1, anchor), end: anchorDate(y, m, anchor) };
    const prev = { start: anchorDate(y, m - 2, anchor), end: cur.start };
    for (const p of [cur, prev]) p.days = Math.round((p.end - p.start) / DAY);
    return { cur, prev };
  }

  // today is the date in time zone tz.
  function today(tz) {
    try {
      const parts = new Intl.DateTimeFormat('en-US', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(new Date());
      const get = (t) => parts.find((p) => p.type === t).value;
      return `${get('year')}-${get('month')}-${get('day')}`;
    } catch (_) {
      return ymd(new Date());
    }
  }

  async function dailyPlot(t, u, tz) {
    const { cur, prev } = periods(u.period, t.anchor_day);
    const from = ymd(prev.start);
    const to = ymd(new Date(cur.end - DAY));
    let d;
    try {
      d = await api('GET', `v1/tenants/${enc(t.id)}/usage/daily?${q({ from, to })}`);
    } catch (e) {
      if (e.status === 404) return h('p', { class: 'hint', id: 'daily-none' }, 'No daily history.');
      return errorLine(e);
    }
    const byDate = new Map((d.days || []).map((x) => [x.date, x.used]));
    const now = today(tz);
    const daysOf = (p, upTo) => {
      const out = [];
      for (let i = 0; i < p.days; i++) {
        const date = ymd(new Date(p.start.getTime() + i * DAY));
        if (upTo && date > upTo) break;
        out.push({ date, used: byDate.get(date) || 0 });
      }
      return out;
    };
    const curDays = daysOf(cur, now);
    const prevDays = daysOf(prev);
    const sum = (ds) => ds.reduce((a, x) => a + x.used, 0);
    const curTotal = sum(curDays);
    const prevTotal = sum(prevDays);
    const limit = u.limit;
    const span = Math.max(cur.days, prev.days);

    // Geometry.
    const W = 720;
    const H = 260;
    const L = 64;
    const R = 14;
    const T = 14;
    const B = 30;
    const yMax = niceCeil(Math.max(limit, curTotal, prevTotal, 10) * 1.05);
    const x = (i) => L + (i / span) * (W - L - R);
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    const cumulative = (ds) => {
      let c = 0;
      return [[x(0), y(0)], ...ds.map((dd, i) => { c += dd.used; return [x(i + 1), y(c)]; })];
    };
    const pts = (ps) => ps.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ');

    const tid = nextID('plot');
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${tid}-t ${tid}-d` },
      s('title', { id: `${tid}-t` }, 'Requests this period and the previous one, cumulative'),
      s('desc', { id: `${tid}-d` },
        `${fmt(curTotal)} requests from ${ymd(cur.start)} to ${now}; ${fmt(prevTotal)} in the whole previous period` +
        (limit > 0 ? `; the limit is ${fmt(limit)}` : '')));
    // Grid and y ticks.
    for (let i = 0; i <= 4; i++) {
      const v = (yMax / 4) * i;
      svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        s('text', { class: 'tick', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(Math.round(v))));
    }
    // x ticks: the current period's dates, about weekly.
    for (let i = 0; i <= cur.days; i += 7) {
      const date = ymd(new Date(cur.start.getTime() + i * DAY)).slice(5);
      svg.append(s('line', { class: 'axis', x1: x(i), x2: x(i), y1: H - B, y2: H - B + 4 }),
        s('text', { class: 'tick', x: x(i), y: H - B + 16, 'text-anchor': 'middle' }, date));
    }
    svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
      s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    if (curDays.length && curDays.length < cur.days) {
      svg.append(s('line', { class: 'today', x1: x(curDays.length), x2: x(curDays.length), y1: T, y2: H - B }));
    }
    if (limit > 0) {
      svg.append(s('polyline', { class: 'pace', points: pts([[x(0), y(0)], [x(cur.days), y(limit)]]) }));
    }
    svg.append(s('polyline', { class: 'previous', points: pts(cumulative(prevDays)) }));
    const curPts = cumulative(curDays);
    svg.append(s('polyline', { class: 'current', points: pts(curPts) }));
    const [lx, ly] = curPts[curPts.length - 1];
    svg.append(s('circle', { class: 'current-dot', cx: lx, cy: ly, r: 3.5 }));

    const pace = limit > 0 ? Math.round((limit / cur.days) * curDays.length) : null;
    const rows = [];
    for (let i = 0; i < span; i++) {
      const c = i < cur.days ? ymd(new Date(cur.start.getTime() + i * DAY)) : null;
      const p = prevDays[i];
      rows.push(h('tr', {},
        h('td', { class: 'num' }, i + 1),
        h('td', {}, c || ''),
        h('td', { class: 'num', 'data-date': c || null }, c && c <= now ? fmt(byDate.get(c) || 0) : ''),
        h('td', {}, p ? p.date : ''),
        h('td', { class: 'num' }, p ? fmt(p.used) : '')));
    }
    return h('figure', {
      class: 'plot', id: 'daily-plot', 'data-current-total': curTotal, 'data-previous-total': prevTotal, 'data-today': now,
    },
    svg,
    h('figcaption', {},
      h('div', { class: 'legend' },
        h('span', {}, h('span', { class: 'key' }), 'This period: ', h('strong', { id: 'daily-current-total' }, fmt(curTotal)), ` requests to ${now}`),
        h('span', {}, h('span', { class: 'key previous' }), 'Previous period: ', h('strong', { id: 'daily-previous-total' }, fmt(prevTotal))),
        limit > 0 ? h('span', {}, h('span', { class: 'key pace' }), `Even pace to the limit of ${fmt(limit)}: ${fmt(pace)} by today`) : null),
      h('details', {},
        h('summary', {}, 'Requests per day'),
        h('table', { id: 'daily-table' },
          h('thead', {}, h('tr', {},
            h('th', { scope: 'col', class: 'num' }, 'Day'), h('th', { scope: 'col' }, 'This period'), h('th', { scope: 'col', class: 'num' }, 'Requests'),
            h('th', { scope: 'col' }, 'Previous period'), h('th', { scope: 'col', class: 'num' }, 'Requests'))),
          h('tbody', {}, rows)))));
  }

  // niceCeil rounds v up to a round number: 1, 1.2, 1.6, 2, 2.4, 3, 4, 5,
  // 6 or 8 times a power of ten, so that quarters are round too.
  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // ---- Credentials: API keys and OAuth clients. ----

  const KEYS = { path: 'keys', title: 'API keys', noun: 'API key', secret: 'key', id: 'keys' };
  const CLIENTS = { path: 'clients', title: 'OAuth clients', noun: 'client secret', secret: 'client_secret', id: 'clients' };

  function credCard(t, cfg, kind) {
    const base = `v1/tenants/${enc(t.id)}/${kind.path}`;
    const table = h('div');
    const secretSlot = h('div', { id: `${kind.id}-secret` });
    const showSecret = (c) => {
      secretSlot.replaceChildren(secretPanel(`${kind.noun} of ${c.name || c.id}`, c[kind.secret], () => secretSlot.replaceChildren()));
      $('#copy-secret', secretSlot).focus();
    };
    const load = async () => {
      try {
        const l = await api('GET', `${base}?${q({ size: 1000 })}`);
        table.replaceChildren(credTable(kind, l.items, {
          regenerate: async (c) => {
            const sel = h('select', { id: nextID('grace'), name: 'grace' },
              h('option', { value: '' }, 'none: the old one stops now'),
              h('option', { value: '1h' }, '1 hour'), h('option', { value: '24h' }, '24 hours'), h('option', { value: '7d' }, '7 days'));
            const fd = await ask({
              title: `Regenerate ${kind.noun.replace('client secret', 'the client secret')} ${c.name || c.id}?`,
              text: 'A new secret is made and shown once. Access tokens issued to it are revoked.',
              fields: [field('Keep the old one working for', sel)], confirm: 'Regenerate',
            });
            if (!fd) return;
            const grace = fd.get('grace');
            const r = await api('POST', `${base}/${enc(c.id)}/regenerate`, grace ? { grace } : undefined);
            showSecret(r);
            await load();
          },
          remove: async (c) => {
            const fd = await ask({
              title: `Delete ${kind.noun === 'API key' ? 'API key' : 'client'} ${c.name || c.id}?`,
              text: 'Requests with it are refused at once, and the access tokens issued to it are revoked. This cannot be undone.',
              confirm: 'Delete', danger: true,
            });
            if (!fd) return;
            await api('DELETE', `${base}/${enc(c.id)}`);
            say(`Deleted ${c.name || c.id}.`);
            await load();
          },
        }));
      } catch (e) {
        table.replaceChildren(errorLine(e));
      }
    };

    const name = h('input', { id: `${kind.id}-name`, required: true, maxlength: 128, autocomplete: 'off' });
    const expires = h('input', { id: `${kind.id}-expires`, type: 'date' });
    const err = h('div');
    const form = h('form', { class: 'inline', method: 'post', id: `${kind.id}-form` },
      field('Name', name), scopesFieldset(kind.id), modulesFieldset(kind.id, cfg), field('Expires (optional)', expires),
      h('button', { type: 'submit', id: `${kind.id}-create` }, `Create ${kind.noun === 'API key' ? 'API key' : 'client'}`));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const body = limits(form, { name: name.value.trim() });
        if (expires.value) body.expires = `${expires.value}T00:00:00Z`;
        const c = await api('POST', base, body);
        form.reset();
        showSecret(c);
        await load();
      } catch (e) {
        err.replaceChildren(errorLine(e));
      }
    });
    load();
    return card(kind.title, secretSlot, table, form, err);
  }

  function credTable(kind, items, act) {
    if (!items.length) return h('p', { class: 'empty' }, `No ${kind.title} yet.`);
    const guard = (f, c) => async () => {
      try {
        await f(c);
      } catch (e) {
        say(e.message, true);
      }
    };
    return h('table', { id: `${kind.id}-table` },
      h('thead', {}, h('tr', {}, ['Name', 'ID', 'Scopes', 'Modules', 'Grants', 'Created', 'Expires', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((c) => h('tr', { 'data-id': c.id },
        h('th', { scope: 'row' }, c.name || '—'),
        h('td', { class: 'mono' }, c.prefix ? `${c.prefix}…` : c.id),
        h('td', {}, list(c.scopes) || 'none'),
        h('td', {}, list(c.modules) || 'all'),
        h('td', {}, list(c.grants) || '—'),
        h('td', {}, time(c.created)),
        h('td', {}, c.expires ? time(c.expires) : 'never',
          c.previous ? h('div', { class: 'hint' }, 'old secret works until ', time(c.previous.expires)) : null),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: guard(act.regenerate, c) }, 'Regenerate…'),
          h('button', { type: 'button', class: 'danger', onclick: guard(act.remove, c) }, 'Delete…')))))));
  }

  // ---- Users of the tenant. ----

  function usersCard(t, cfg) {
    const table = h('div');
    const load = async () => {
      try {
        const l = await api('GET', `v1/users?${q({ tenant: t.id, size: 1000 })}`);
        if (!l.items.length) {
          table.replaceChildren(h('p', { class: 'empty' }, 'No users of this tenant yet.'));
          return;
        }
        table.replaceChildren(h('table', { id: 'users-table' },
          h('thead', {}, h('tr', {}, ['User', 'Type', 'Tenants', 'Scopes', 'Modules', 'Created', 'Expires', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, l.items.map((u) => h('tr', { 'data-id': u.id },
            h('th', { scope: 'row' }, u.id),
            h('td', {}, u.type || '—'),
            h('td', {}, list(u.tenants) || u.tenant),
            h('td', {}, list(u.scopes) || 'none'),
            h('td', {}, list(u.modules) || 'all'),
            h('td', {}, time(u.created)),
            h('td', {}, u.expires ? time(u.expires) : 'never'),
            h('td', {}, h('button', {
              type: 'button', class: 'danger',
              onclick: async () => {
                const others = (u.tenants || []).filter((x) => x !== t.id);
                const fd = await ask({
                  title: `Delete user ${u.id}?`,
                  text: (others.length ? `This user also acts for ${others.join(', ')}: deleting removes it there too. ` : '') +
                    'Its password stops working at once and its access tokens are revoked.',
                  confirm: 'Delete', danger: true,
                });
                if (!fd) return;
                try {
                  await api('DELETE', `v1/users/${enc(u.id)}`);
                  say(`Deleted user ${u.id}.`);
                  await load();
                } catch (e) {
                  say(e.message, true);
                }
              },
            }, 'Delete…')))))));
      } catch (e) {
        table.replaceChildren(errorLine(e));
      }
    };
    const username = h('input', { id: 'user-name', required: true, autocomplete: 'off', spellcheck: 'false' });
    const password = h('input', { id: 'user-password', type: 'password', required: true, minlength: 8, maxlength: 128, autocomplete: 'new-password' });
    const type = h('select', { id: 'user-type' }, h('option', { value: 'standard' }, 'standard (a person)'), h('option', { value: 'api_only' }, 'api_only (software)'));
    const err = h('div');
    const form = h('form', { class: 'inline', method: 'post', id: 'users-form' },
      field('User name', username), field('Password (8–128 characters)', password), field('Type', type),
      scopesFieldset('users'), modulesFieldset('users', cfg),
      h('button', { type: 'submit' }, 'Create user'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const body = limits(form, { username: username.value.trim(), password: password.value, type: type.value, tenants: [t.id] });
        await api('POST', 'v1/users', body);
        form.reset();
        say(`User ${body.username} created.`);
        await load();
      } catch (e) {
        err.replaceChildren(errorLine(e));
      } finally {
        password.value = '';
      }
    });
    load();
    return card('Users', table, form, err);
  }

  // ---- Limit increase requests. ----

  // requestsCard lists the requests of tenant (of all tenants when
  // tenant is empty): pending first, each with approve and deny.
  function requestsCard(tenant) {
    const base = tenant ? `v1/tenants/${enc(tenant)}/limit-requests` : 'v1/limit-requests';
    const pending = h('div');
    const decided = h('div');
    let position = 0;
    const size = 20;
    const load = async () => {
      try {
        const [p, all] = await Promise.all([
          api('GET', `${base}?${q({ status: 'pending', orderBy: 'created', size: 1000 })}`),
          api('GET', `${base}?${q({ orderBy: 'created', desc: true, size, position })}`),
        ]);
        pending.replaceChildren(pendingTable(p.items, !tenant, load));
        decided.replaceChildren(decidedTable(all, !tenant, (pos) => { position = pos; load(); }));
      } catch (e) {
        pending.replaceChildren(errorLine(e));
      }
    };
    load();
    const kids = [h('h3', {}, 'Pending'), pending, h('h3', {}, 'All requests, newest first'), decided];
    if (tenant) kids.push(fileRequestForm(tenant, load));
    return card(tenant ? 'Limit increase requests' : 'Of every tenant', kids);
  }

  function pendingTable(items, showTenant, reload) {
    if (!items.length) return h('p', { class: 'empty', id: 'no-pending' }, 'No pending requests.');
    return h('table', { id: 'pending-table' },
      h('thead', {}, h('tr', {},
        showTenant ? h('th', { scope: 'col' }, 'Tenant') : null,
        h('th', { scope: 'col', class: 'num' }, 'Requested'), h('th', { scope: 'col' }, 'Reason'), h('th', { scope: 'col' }, 'Filed'),
        h('th', { scope: 'col' }, 'Decision'))),
      h('tbody', {}, items.map((r) => {
        const granted = h('input', { type: 'number', min: 1, max: r.requested, value: r.requested, id: `grant-${r.id}`, required: true });
        const decide = async (approve) => {
          try {
            if (approve) {
              const n = Number(granted.value);
              if (!Number.isInteger(n) || n < 1 || n > r.requested) throw new Error(`Grant a whole number from 1 to ${fmt(r.requested)}.`);
              const out = await api('POST', `v1/limit-requests/${enc(r.id)}/approve`, { granted: n });
              say(`Granted ${fmt(out.granted)} a month to ${out.tenant}.`);
            } else {
              const fd = await ask({ title: `Deny the request of ${r.tenant}?`, text: `${fmt(r.requested)} a month was asked for.`, confirm: 'Deny', danger: true });
              if (!fd) return;
              await api('POST', `v1/limit-requests/${enc(r.id)}/deny`);
              say(`Denied the request of ${r.tenant}.`);
            }
            await reload();
          } catch (e) {
            say(e.message, true);
          }
        };
        return h('tr', { 'data-id': r.id },
          showTenant ? h('td', {}, h('a', { href: `#/tenants/${enc(r.tenant)}` }, r.tenant)) : null,
          h('td', { class: 'num' }, fmt(r.requested)),
          h('td', {}, r.reason || '—'),
          h('td', {}, time(r.created)),
          h('td', {}, h('div', { class: 'actions' },
            h('label', { for: granted.id }, 'Grant'), granted,
            h('button', { type: 'button', class: 'approve', onclick: () => decide(true) }, 'Approve'),
            h('button', { type: 'button', class: 'danger', onclick: () => decide(false) }, 'Deny…'))));
      })));
  }

  function decidedTable(l, showTenant, goTo) {
    if (!l.items.length) return h('p', { class: 'empty' }, 'No requests.');
    return h('div', {},
      h('table', {},
        h('thead', {}, h('tr', {},
          showTenant ? h('th', { scope: 'col' }, 'Tenant') : null,
          ['Requested', 'Granted'].map((c) => h('th', { scope: 'col', class: 'num' }, c)),
          ['Status', 'Decided by', 'Decided', 'Filed', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, l.items.map((r) => h('tr', { 'data-id': r.id, 'data-status': r.status },
          showTenant ? h('td', {}, h('a', { href: `#/tenants/${enc(r.tenant)}` }, r.tenant)) : null,
          h('td', { class: 'num' }, fmt(r.requested)),
          h('td', { class: 'num' }, r.status === 'granted' ? fmt(r.granted) : '—'),
          h('td', {}, h('span', { class: `badge ${r.status}` }, r.status)),
          h('td', {}, r.decided_by || '—'),
          h('td', {}, r.decided_at ? time(r.decided_at) : '—'),
          h('td', {}, time(r.created)),
          h('td', {}, r.reason || '—'))))),
      h('div', { class: 'pager' },
        h('button', { type: 'button', class: 'secondary', disabled: l.position === 0, onclick: () => goTo(Math.max(0, l.position - l.size)) }, 'Newer'),
        h('span', {}, `${l.position + 1}–${l.position + l.items.length} of ${l.total}`),
        h('button', { type: 'button', class: 'secondary', disabled: l.position + l.items.length >= l.total, onclick: () => goTo(l.position + l.size) }, 'Older')));
  }

  function fileRequestForm(tenant, reload) {
    const requested = h('input', { type: 'number', min: 1, id: 'request-requested', required: true });
    const reason = h('input', { id: 'request-reason', maxlength: 1000 });
    const err = h('div');
    const form = h('form', { class: 'inline', method: 'post' },
      field('New monthly limit', requested), field('Reason (optional)', reason),
      h('button', { type: 'submit', class: 'secondary' }, 'File a request for the tenant'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const r = await api('POST', `v1/tenants/${enc(tenant)}/limit-requests`, { requested: Number(requested.value), reason: reason.value });
        form.reset();
        say(r.status === 'granted' ? `Granted at once (the plan approves up to this): ${fmt(r.granted)}.` : 'Filed; it waits for a decision.');
        await reload();
      } catch (e) {
        err.replaceChildren(errorLine(e));
      }
    });
    return h('div', {}, form, err);
  }

  async function viewRequests() {
    return h('div', {}, h('h1', {}, 'Limit increase requests'), requestsCard(''));
  }

  // ---- The configuration. ----

  async function viewConfig() {
    const c = await api('GET', 'v1/config');
    cachedConfig = c;
    const r = c.last_reload;
    const reload = r
      ? h('div', { id: 'last-reload', 'data-ok': r.ok },
        h('p', {}, r.ok ? h('span', { class: 'badge granted' }, 'applied') : h('span', { class: 'badge denied' }, 'refused'),
          ' ', time(r.at), r.trigger ? ` (${r.trigger})` : '',
          r.ok ? '' : ': the previous configuration kept serving.'),
        r.problems && r.problems.length ? h('ul', { class: 'error' }, r.problems.map((p) => h('li', {}, p))) : null)
      : h('p', { id: 'last-reload', class: 'hint' }, 'No reload since the start.');
    return h('div', {},
      h('h1', {}, 'Configuration'),
      card('Last reload', reload,
        h('p', { class: 'hint' }, 'The file is reloaded on SIGHUP, when it changes on disk, and on POST /v1/reload.')),
      card('In force',
        h('p', {}, 'Read from ', c.file ? h('code', {}, c.file) : 'the defaults (no file)', '. Secrets are shown as ', h('code', {}, '[redacted]'), '.'),
        h('pre', { class: 'config', id: 'config-json', tabindex: 0 }, JSON.stringify(c.config, null, 2))));
  }

  // ---- The router. ----

  const routes = [
    [/^#\/tenants\/?$/, viewTenants],
    [/^#\/tenants\/([A-Za-z0-9_-]+)$/, viewTenant],
    [/^#\/requests$/, viewRequests],
    [/^#\/config$/, viewConfig],
  ];

  let renderSeq = 0;
  async function render() {
    const seq = ++renderSeq;
    const main = $('#view');
    const signed = token() !== '';
    $('#nav').hidden = !signed;
    $('#sign-out').hidden = !signed;
    if (!signed) {
      viewSignIn(main);
      return;
    }
    const [path, query] = (location.hash || '#/tenants').split('?');
    for (const a of document.querySelectorAll('#nav a')) {
      if (path.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const route = routes.find(([re]) => re.test(path));
    if (!route) {
      location.replace('#/tenants');
      return;
    }
    const params = path.match(route[0]).slice(1).map(decodeURIComponent);
    main.replaceChildren(h('p', { class: 'hint' }, 'Loading…'));
    let node;
    try {
      node = await route[1](params, new URLSearchParams(query || ''));
    } catch (e) {
      if (token() === '') return; // signed out meanwhile (a 401)
      node = errorLine(e);
    }
    if (seq !== renderSeq) return; // a newer view is on its way
    main.replaceChildren(node);
  }

  window.addEventListener('hashchange', () => {
    if (location.hash.startsWith('#/')) {
      clearStatus();
      render();
    }
  });
  document.addEventListener('DOMContentLoaded', () => {
    $('#sign-out').addEventListener('click', () => {
      signOut();
      say('Signed out.');
    });
    $('.skip').addEventListener('click', (ev) => {
      ev.preventDefault();
      $('#view').focus();
    });
    render();
  });
})();
