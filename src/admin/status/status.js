// ringway status page: reads this instance's admin API every REFRESH_MS and draws the
// cluster, the pools and their rings. Every name shown is operator input, so text
// only ever enters the page through textContent and setAttribute, never as markup.
"use strict";

(() => {
  /** How often the page reads the API. */
  const REFRESH_MS = 2000;
  /** One read of the API gives up after this long, so a hung instance reads as stale. */
  const FETCH_TIMEOUT_MS = 1500;
  const SVG_NS = "http://www.w3.org/2000/svg";
  /** Colours for the first upstreams of a pool (no red: red marks ejections); later
   * ones get a hue of their own. */
  const PALETTE = [
    "#5eb1ff", "#f5a04a", "#5fd18b", "#b38cff", "#f2d04b", "#46d2d2",
    "#ff7fc3", "#a3c95a", "#d6a77a", "#8fa3ff", "#7fe0b0", "#e6b3ff",
  ];
  /** The ring's geometry, in the SVG's own units. */
  /** Longest pool name and key drawn inside the ring; longer ones are cut with "…". */
  const CENTER_NAME_CHARS = 18;
  const MARKER_CHARS = 14;
  const RING = { outer: 140, inner: 102, rimInner: 145, rimOuter: 152, view: 170 };

  const state = {
    cluster: null,
    pools: null,
    config: null,
    configMissing: false,
    rings: new Map(),
    lastOk: null,
    failingSince: null,
    error: null,
    route: null,
    drawn: new Map(),
  };

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
  }

  function append(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function replace(node, ...children) {
    node.replaceChildren();
    append(node, children);
  }

  const byId = (id) => document.getElementById(id);

  function badge(kind, label) {
    return el("span", { class: "badge", "data-kind": kind }, label);
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  function seconds(ms) {
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  function shorten(text, chars) {
    const t = String(text);
    return t.length > chars ? `${t.slice(0, chars - 1)}…` : t;
  }

  function percent(share) {
    return `${(share * 100).toFixed(share < 0.1 ? 2 : 1)} %`;
  }

  function colour(index) {
    if (index < PALETTE.length) return PALETTE[index];
    const hue = (index * 137.508) % 360;
    return `hsl(${hue.toFixed(1)}, 65%, 62%)`;
  }

  // ---------------------------------------------------------------- reading the API

  async function getJson(path, missingOk) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(path, {
        signal: ctl.signal,
        cache: "no-store",
        headers: { accept: "application/json" },
      });
      if (missingOk && resp.status === 404) return null;
      if (!resp.ok) {
        const why = (await resp.text()).trim();
        throw new Error(`${path}: ${resp.status} ${why}`);
      }
      return await resp.json();
    } catch (e) {
      if (e.name === "AbortError") throw new Error(`${path}: no answer within ${FETCH_TIMEOUT_MS} ms`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  async function refresh() {
    try {
      const [cluster, pools, config] = await Promise.all([
        getJson("/api/cluster"),
        getJson("/api/pools"),
        getJson("/api/config", true),
      ]);
      await loadRings(pools.pools);
      state.cluster = cluster;
      state.pools = pools;
      state.config = config;
      state.configMissing = config === null;
      state.lastOk = new Date();
      state.failingSince = null;
      state.error = null;
    } catch (e) {
      state.error = e && e.message ? e.message : String(e);
      if (!state.failingSince) state.failingSince = new Date();
    }
    try {
      render();
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  /** Reads the rings whose digest changed since they were last read. */
  async function loadRings(pools) {
    const names = new Set(pools.map((p) => p.name));
    for (const name of [...state.rings.keys()]) {
      if (!names.has(name)) state.rings.delete(name);
    }
    await Promise.all(
      pools.map(async (p) => {
        const known = state.rings.get(p.name);
        if (known && known.digest === p.ring_digest) return;
        const ring = await getJson(`/api/pools/${encodeURIComponent(p.name)}/ring`, true);
        if (ring) state.rings.set(p.name, ring);
      }),
    );
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    renderFreshness();
    if (!state.cluster || !state.pools) return;
    renderAlerts();
    renderCluster();
    renderConfig();
    renderPools();
    renderRoutePools();
  }

  function renderFreshness() {
    const node = byId("freshness");
    if (state.error) {
      node.dataset.state = "stale";
      const since = state.lastOk ? `stale since ${clock(state.lastOk)}` : "no answer yet";
      node.textContent = `${since}: ${state.error}`;
      node.title = state.error;
    } else if (state.lastOk) {
      node.dataset.state = "live";
      node.textContent = `live · updated ${clock(state.lastOk)}`;
      node.title = "";
    }
  }

  function renderAlerts() {
    const c = state.cluster;
    const alerts = [];
    if (c.lost_data) {
      alerts.push(["error", "lost-data",
        "This instance lost Raft state it had acknowledged (its data dir was wiped or restored from an older copy). It neither votes nor campaigns until it is removed and added back with an empty data dir."]);
    }
    if (c.storage && c.storage.state === "full") {
      alerts.push(["error", "disk-full",
        "No room to write the Raft log (" + String(c.storage.error || "") + "). This instance acknowledges no entry and takes no change until there is room; it keeps serving with its last applied state."]);
    }
    if (c.storage && c.storage.state === "failed") {
      alerts.push(["error", "disk-failed",
        "Writing the Raft log failed (" + String(c.storage.error || "") + "): this instance is stopping. Start it again to recover from what is on disk."]);
    }
    if (c.removed) {
      alerts.push(["error", "removed", "This instance is no longer a member of the cluster: it takes no part in it."]);
    }
    if (!c.leader) {
      alerts.push(["warn", "no-leader", "No leader is known: the cluster may be electing one, or this instance is cut off. It keeps serving with its last applied state."]);
    }
    const panicking = state.pools.pools.filter((p) => p.panic).map((p) => p.name);
    if (panicking.length) {
      alerts.push(["error", "panic", `Panic mode in ${panicking.join(", ")}: too few healthy upstreams, so requests go to all of them, ejected or not.`]);
    }
    if (state.config && state.config.last_error) {
      alerts.push(["error", "reload", `The last reload of the config file failed: ${state.config.last_error}`]);
    }
    replace(byId("alerts"), alerts.map(([level, id, text]) =>
      el("div", { class: "alert", "data-level": level, "data-alert": id }, text)));
  }

  function renderCluster() {
    const c = state.cluster;
    byId("instance-id").textContent = c.id;
    const role = byId("instance-role");
    // A learner follows and serves but never votes: say so next to its Raft role.
    role.textContent = c.membership === "learner" ? `${c.role} (learner)` : c.role;
    role.dataset.kind = c.role;
    role.dataset.membership = c.membership || "";
    const leader = byId("cluster-leader");
    leader.textContent = c.leader || "none";
    leader.dataset.leader = c.leader || "";
    byId("cluster-term").textContent = c.term;
    byId("cluster-commit").textContent = c.commit;
    byId("cluster-applied").textContent = c.applied;
    byId("cluster-snapshot").textContent = c.snapshot_index;

    const lags = c.members.map((m) => m.lag).filter((l) => typeof l === "number");
    const worst = Math.max(1, ...lags);
    const members = [...c.members].sort((a, b) => String(a.id).localeCompare(String(b.id)));
    replace(byId("members"), members.map((m) => {
      const tags = [];
      if (m.id === c.leader) tags.push(badge("leader", "leader"));
      if (m.id === c.id) tags.push(badge("self", "this instance"));
      return el("tr", { "data-member": m.id, "data-role": m.role, "data-leader": m.id === c.leader },
        el("td", {}, el("span", { class: "mono" }, m.id), " ", tags),
        el("td", {}, badge(m.role === "voter" ? "closed" : "learner", m.role)),
        el("td", { class: "num" }, m.matched ?? "–"),
        el("td", {}, lagCell(m.lag, worst)));
    }));
    const notes = [];
    const learners = c.members.filter((m) => m.role === "learner").length;
    if (learners > 0) {
      notes.push(`${learners} learner${learners === 1 ? "" : "s"}: they receive the log and route from it but never vote.`);
    }
    if (c.role !== "leader") {
      notes.push(`Replication progress is known on the leader${c.leader ? ` (${c.leader})` : ""}: open its admin page to see each member's lag.`);
    } else {
      notes.push("Lag: entries committed that a member has not yet stored.");
    }
    byId("members-note").textContent = notes.join(" ");
  }

  function lagCell(lag, worst) {
    if (typeof lag !== "number") return el("span", { class: "muted" }, "–");
    const width = 100;
    const filled = lag === 0 ? 0 : Math.max(3, Math.round((lag / worst) * width));
    const bar = svg("svg", { width, height: 8, viewBox: `0 0 ${width} 8`, "aria-hidden": "true" },
      svg("rect", { width, height: 8, rx: 4, fill: "#222c37" }),
      svg("rect", { width: filled, height: 8, rx: 4, fill: lag === 0 ? "#3fb970" : "#e3a93b" }));
    return el("span", { class: "lag" }, bar, el("span", { class: "mono" }, lag));
  }

  function renderConfig() {
    const rows = [];
    if (state.configMissing) {
      rows.push(["file", "this instance does not reload its file"]);
    } else if (state.config) {
      const s = state.config;
      rows.push(["file", s.file]);
      rows.push(["loads", `${s.loaded} ok, ${s.failed} refused`]);
      if (s.last_success_unix) rows.push(["last load", new Date(s.last_success_unix * 1000).toLocaleString([], { hour12: false })]);
      if (s.last_applied !== null && s.last_applied !== undefined) rows.push(["applied at", `index ${s.last_applied}`]);
      if (s.pending) rows.push(["waiting", s.pending, "warn"]);
      if (s.last_error) rows.push(["last error", s.last_error, "error"]);
      if (s.restart_required && s.restart_required.length) rows.push(["needs restart", s.restart_required.join(", "), "warn"]);
    }
    replace(byId("config-facts"), rows.map(([k, v, level]) => [
      el("dt", {}, k), el("dd", { "data-level": level }, v),
    ]));
    const drift = state.pools.drift || [];
    replace(byId("drift"), drift.length
      ? drift.map((d) => el("li", { "data-drift": "" }, d))
      : el("li", { "data-none": "" }, "none: the file and the cluster agree"));
  }

  /** Every upstream of a pool: those on this instance's ring and those draining. */
  function upstreamsOf(pool, ring) {
    const onRing = new Map((ring ? ring.upstreams : []).map((u, i) => [u.id, { ...u, ringIndex: i }]));
    const replicated = pool.replicated || [];
    const order = replicated.length ? replicated.map((u) => u.id) : pool.upstreams.map((u) => u.id);
    for (const u of pool.upstreams) if (!order.includes(u.id)) order.push(u.id);
    return order.map((id, i) => {
      const live = pool.upstreams.find((u) => u.id === id);
      const spec = replicated.find((u) => u.id === id);
      const r = onRing.get(id);
      const phase = live && live.breaker ? live.breaker.state : "closed";
      const draining = Boolean(spec && spec.draining);
      return {
        id,
        colour: colour(i),
        address: (live && live.address) || (spec && spec.address) || "",
        weight: spec ? spec.weight : null,
        share: r ? r.share : 0,
        points: r ? r.points : 0,
        ringIndex: r ? r.ringIndex : -1,
        breaker: live ? live.breaker : null,
        local: live ? live.local : null,
        slowStart: live && live.slow_start ? live.slow_start : null,
        phase,
        draining,
        state: draining ? "draining" : phase,
        ejected: phase !== "closed",
      };
    });
  }

  function renderPools() {
    const host = byId("pools");
    const names = new Set(state.pools.pools.map((p) => p.name));
    for (const card of [...host.children]) {
      if (!names.has(card.dataset.pool)) card.remove();
    }
    state.pools.pools.forEach((pool, index) => {
      let card = [...host.children].find((c) => c.dataset.pool === pool.name);
      if (!card) {
        card = el("section", { class: "card pool", "data-pool": pool.name },
          el("div", { class: "pool-head" }),
          el("div", { class: "pool-body" },
            el("div", { class: "ring-host" }),
            el("div", { class: "legend-host" })));
        host.append(card);
      }
      const ring = state.rings.get(pool.name);
      const ups = upstreamsOf(pool, ring);
      renderPoolHead(card.querySelector(".pool-head"), pool, ring, ups);
      renderRing(card.querySelector(".ring-host"), pool, ring, ups, index);
      renderLegend(card.querySelector(".legend-host"), pool, ring, ups);
    });
  }

  function renderPoolHead(node, pool, ring, ups) {
    const ejected = ups.filter((u) => u.ejected).length;
    const draining = ups.filter((u) => u.draining).length;
    const parts = [`${ups.length} upstream${ups.length === 1 ? "" : "s"}`, `${pool.ring_points} ring points`];
    if (ejected) parts.push(`${ejected} ejected`);
    if (draining) parts.push(`${draining} draining`);
    parts.push(pool.replicated ? "membership from the cluster" : "membership from the file (not in the cluster yet)");
    replace(node,
      el("h2", {}, pool.name),
      pool.panic ? badge("panic", "panic mode") : null,
      el("span", { class: "meta" }, parts.join(" · ")),
      el("span", { class: "meta mono", title: "ring digest: the same on every instance that applied the same state" },
        `digest ${String(pool.ring_digest).slice(0, 12)}`));
  }

  // ---------------------------------------------------------------- the ring

  function polar(fraction, radius) {
    const angle = fraction * 2 * Math.PI - Math.PI / 2;
    return [radius * Math.cos(angle), radius * Math.sin(angle)];
  }

  const fmt = (n) => n.toFixed(2);

  /** The path of the band between `from` and `to` (fractions of the ring), between
   * radii `inner` and `outer`. */
  function band(from, to, outer = RING.outer, inner = RING.inner) {
    if (to - from > 0.5) {
      const mid = (from + to) / 2;
      return band(from, mid, outer, inner) + band(mid, to, outer, inner);
    }
    const [ox0, oy0] = polar(from, outer);
    const [ox1, oy1] = polar(to, outer);
    const [ix1, iy1] = polar(to, inner);
    const [ix0, iy0] = polar(from, inner);
    return `M${fmt(ox0)} ${fmt(oy0)}A${outer} ${outer} 0 0 1 ${fmt(ox1)} ${fmt(oy1)}` +
      `L${fmt(ix1)} ${fmt(iy1)}A${inner} ${inner} 0 0 0 ${fmt(ix0)} ${fmt(iy0)}Z`;
  }

  function renderRing(host, pool, ring, ups, index) {
    const route = state.route && state.route.pool === pool.name ? state.route : null;
    const signature = JSON.stringify([
      ring ? ring.digest : null,
      ups.map((u) => [u.id, u.state]),
      route ? [route.key, route.point] : null,
    ]);
    if (state.drawn.get(pool.name) === signature && host.firstChild) return;
    state.drawn.set(pool.name, signature);

    const v = RING.view;
    const hatchId = `hatch-${index}`;
    const root = svg("svg", {
      class: "ring",
      viewBox: `${-v} ${-v} ${2 * v} ${2 * v}`,
      role: "img",
      "aria-label": `ring of pool ${pool.name}`,
      "data-ring": pool.name,
    });
    root.append(svg("defs", {},
      svg("pattern", { id: hatchId, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#0f1419", "stroke-width": 2.5 }))));
    root.append(svg("circle", { class: "track", r: (RING.outer + RING.inner) / 2, "stroke-width": RING.outer - RING.inner }));

    for (let q = 0; q < 4; q++) {
      const [x0, y0] = polar(q / 4, RING.rimOuter + 2);
      const [x1, y1] = polar(q / 4, RING.rimOuter + 8);
      root.append(svg("line", { class: "tick", x1: fmt(x0), y1: fmt(y0), x2: fmt(x1), y2: fmt(y1) }));
    }
    const [lx, ly] = polar(0, RING.rimOuter + 14);
    root.append(svg("text", { class: "tick-label", x: fmt(lx) , y: fmt(ly + 3), "text-anchor": "middle" }, "0"));

    if (!ring || !ring.arcs.length) {
      root.append(svg("text", { class: "empty", "text-anchor": "middle", y: 4 }, "no upstream on the ring"));
    } else {
      const paths = new Map();
      const rims = new Map();
      for (const [start, end, owner] of ring.arcs) {
        const [from, to] = [start / ring.span, end / ring.span];
        paths.set(owner, (paths.get(owner) || "") + band(from, to));
        rims.set(owner, (rims.get(owner) || "") + band(from, to, RING.rimOuter, RING.rimInner));
      }
      for (const u of ups) {
        if (u.ringIndex < 0 || !paths.has(u.ringIndex)) continue;
        const d = paths.get(u.ringIndex);
        root.append(svg("path", { class: "arc", d, fill: u.colour, "data-upstream": u.id, "data-ejected": u.ejected },
          svg("title", {}, `${u.id}: ${percent(u.share)} of the keys${u.ejected ? ` (${u.state.replace("_", "-")}: its keys fail over to the next upstream on the ring)` : ""}`)));
        if (u.ejected) {
          root.append(svg("path", { class: "hatch", d, fill: `url(#${hatchId})`, "data-upstream": u.id, "pointer-events": "none" }));
          root.append(svg("path", { class: "rim", d: rims.get(u.ringIndex), "data-upstream": u.id, "data-phase": u.phase },
            svg("title", {}, `${u.id} is ${u.phase === "open" ? "ejected" : "half-open"}`)));
        }
      }
      if (ring.capped) {
        const shown = ring.arcs.length ? ring.arcs[ring.arcs.length - 1][1] / ring.span : 0;
        root.append(svg("path", { d: band(shown, 1), fill: "#222c37", "data-capped": "true" },
          svg("title", {}, `not drawn: more than ${ring.max_arcs} arcs`)));
      }
    }
    root.append(svg("text", { class: "center-name", "text-anchor": "middle", y: -6 },
      svg("title", {}, pool.name), shorten(pool.name, CENTER_NAME_CHARS)));
    const live = ups.filter((u) => !u.ejected && !u.draining).length;
    root.append(svg("text", { class: "center-meta", "text-anchor": "middle", y: 14 },
      `${live} of ${ups.length} taking traffic`));
    if (route && typeof route.point === "number" && ring) {
      const f = route.point / ring.span;
      const [x0, y0] = polar(f, RING.inner - 14);
      const [x1, y1] = polar(f, RING.rimOuter + 4);
      const [tx, ty] = polar(f, RING.inner - 26);
      root.append(svg("g", { class: "marker", "data-marker": route.key },
        svg("line", { class: "marker-line", x1: fmt(x0), y1: fmt(y0), x2: fmt(x1), y2: fmt(y1) }),
        svg("circle", { class: "marker-dot", cx: fmt(x1), cy: fmt(y1), r: 4 }),
        svg("text", { class: "marker-label", x: fmt(tx), y: fmt(ty + 4), "text-anchor": "middle" },
          shorten(route.key, MARKER_CHARS))));
    }
    host.replaceChildren(root);
  }

  // ---------------------------------------------------------------- the legend

  function renderLegend(host, pool, ring, ups) {
    const now = state.pools.now_ms;
    const widest = Math.max(1e-9, ...ups.map((u) => u.share));
    const rows = ups.map((u) => {
      const swatch = svg("svg", { class: "swatch", width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true" },
        svg("rect", { x: 1, y: 1, width: 12, height: 12, rx: 3, fill: u.draining ? "none" : u.colour, stroke: u.colour, "stroke-width": 2, "stroke-dasharray": u.draining ? "3 2" : null }));
      const shareBar = svg("svg", { class: "share-bar", width: 90, height: 4, viewBox: "0 0 90 4", "aria-hidden": "true" },
        svg("rect", { width: 90, height: 4, rx: 2, fill: "#222c37" }),
        svg("rect", { width: fmt((u.share / widest) * 90), height: 4, rx: 2, fill: u.colour }));
      const row = el("tr", {
        "data-upstream": u.id,
        "data-state": u.state,
        "data-ejected": u.ejected,
        "data-draining": u.draining,
        "data-slow-start": u.slowStart ? `${u.slowStart.step}/${u.slowStart.steps}` : null,
      },
      el("td", {}, swatch),
      el("td", {}, el("div", { class: "id" }, u.id), el("div", { class: "addr" }, u.address)),
      el("td", { class: "share" }, u.draining ? el("span", { class: "muted" }, "off the ring") : [percent(u.share), shareBar]),
      el("td", { class: "num" }, u.points),
      el("td", {}, stateBadges(u)),
      el("td", { class: "detail" }, breakerDetail(u, now)));
      row.addEventListener("mouseenter", () => focusRing(pool.name, u.id));
      row.addEventListener("mouseleave", () => focusRing(pool.name, null));
      return row;
    });
    const table = el("table", { class: "legend" },
      el("thead", {}, el("tr", {},
        el("th", {}, ""), el("th", {}, "upstream"), el("th", { class: "share" }, "share of keys"),
        el("th", { class: "num" }, "points"), el("th", {}, "state"), el("th", {}, "breaker"))),
      el("tbody", {}, rows));
    const extra = [];
    if (ring && ring.capped) {
      extra.push(el("p", { class: "capped" },
        `The ring has ${ring.arcs_total} arcs; the first ${ring.arcs.length} are drawn (at most ${ring.max_arcs} are sent). Shares count the whole ring.`));
    }
    host.replaceChildren(table, ...extra);
  }

  function stateBadges(u) {
    const out = [];
    if (u.draining) out.push(badge("draining", "draining"));
    if (u.phase === "open") out.push(badge("open", "ejected"));
    else if (u.phase === "half_open") out.push(badge("half_open", "half-open"));
    else if (!u.draining) out.push(badge("closed", "healthy"));
    if (u.slowStart) {
      const ramp = badge("slow_start", `warming ${u.slowStart.step}/${u.slowStart.steps}`);
      ramp.title = `slow start: it owns ${u.slowStart.step} of ${u.slowStart.steps} steps of its ring points, and gains the rest step by step`;
      out.push(" ", ramp);
    }
    if (u.local && u.local.suspect) out.push(" ", badge("suspect", "suspect here"));
    return out;
  }

  function breakerDetail(u, now) {
    const b = u.breaker;
    const parts = [];
    if (b && b.state === "open" && typeof b.until_ms === "number") {
      const left = b.until_ms - now;
      parts.push(el("span", { class: "why" }, left > 0 ? `${seconds(left)} left` : "probing soon"));
    } else if (b && b.state === "half_open") {
      parts.push(el("span", { class: "why" }, "the leader is probing it"));
    }
    if (b && b.evidence) {
      const e = b.evidence;
      const signal = String(e.signal).replace(/_/g, " ");
      const counts = e.requests ? `${e.failures} of ${e.requests}` : `${e.failures}`;
      parts.push(`${signal}: ${counts}`);
    }
    if (b && b.reporters && b.reporters.length) parts.push(`reported by ${b.reporters.join(", ")}`);
    if (b && b.ejections) parts.push(`${b.ejections} ejection${b.ejections === 1 ? "" : "s"} in a row`);
    if (b && b.since_ms && b.state !== "closed") parts.push(`since ${clock(new Date(b.since_ms))}`);
    if (u.local && u.local.inflight) parts.push(`${u.local.inflight} in flight`);
    const out = [];
    parts.forEach((p, i) => { if (i) out.push(" · "); out.push(p); });
    return out.length ? out : "–";
  }

  function focusRing(poolName, id) {
    const ring = document.querySelector(`svg.ring[data-ring="${CSS.escape(poolName)}"]`);
    if (!ring) return;
    ring.classList.toggle("focusing", id !== null);
    for (const p of ring.querySelectorAll("[data-upstream]")) {
      p.dataset.focus = String(p.dataset.upstream === id);
    }
  }

  // ---------------------------------------------------------------- where a key goes

  /** The pool named in the page's address, until the question it carries is asked. */
  let pendingPool = null;

  function renderRoutePools() {
    const select = byId("route-pool");
    const names = state.pools.pools.map((p) => p.name);
    const have = [...select.options].map((o) => o.value);
    if (JSON.stringify(names) !== JSON.stringify(have)) {
      const chosen = select.value;
      replace(select, names.map((n) => el("option", { value: n }, n)));
      if (names.includes(chosen)) select.value = chosen;
    }
    if (pendingPool !== null) {
      if (names.includes(pendingPool)) select.value = pendingPool;
      pendingPool = null;
      byId("route-form").requestSubmit();
    }
  }

  async function askRoute(event) {
    event.preventDefault();
    const pool = byId("route-pool").value;
    const key = byId("route-key").value;
    const out = byId("route-result");
    if (!pool) return;
    const query = `pool=${encodeURIComponent(pool)}&key=${encodeURIComponent(key)}`;
    try {
      const answer = await getJson(`/api/route?${query}`);
      state.route = { pool, key, point: answer.point, upstream: answer.upstream };
      out.dataset.level = "";
      out.classList.remove("muted");
      const p = state.pools && state.pools.pools.find((x) => x.name === pool);
      const u = p && p.upstreams.find((x) => x.id === answer.upstream);
      const note = u && u.breaker && u.breaker.state !== "closed"
        ? " (ejected: its keys go to the next healthy upstream on the ring)" : "";
      replace(out,
        el("span", { class: "mono", "data-route-key": "" }, key === "" ? "(empty key)" : key),
        el("span", { class: "arrow" }, "→"),
        el("span", { class: "mono", "data-route-upstream": answer.upstream || "" }, answer.upstream || "no upstream"),
        el("span", { class: "muted" }, ` in pool ${pool}, ring point ${answer.point}${note}`));
    } catch (e) {
      state.route = null;
      out.dataset.level = "error";
      out.textContent = e && e.message ? e.message : String(e);
    }
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("route-form").addEventListener("submit", askRoute);
    // A link may carry a question: /?pool=web&key=/users/42 asks it once the pools are known.
    const asked = new URLSearchParams(window.location.search);
    if (asked.has("key")) byId("route-key").value = asked.get("key");
    pendingPool = asked.has("key") ? asked.get("pool") || "" : null;
    refresh();
  });
})();
