// archgraph report: a slider over the versions of one run. Everything it shows comes from the JSON in
// <script id="report-data">; nothing is fetched.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const VERSIONS = DATA.versions;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHARTS = [
    { title: "accuracy", series: [["train_acc", "train", "#0d6efd"], ["val_acc", "validation", "#fd7e14"]] },
    { title: "loss", series: [["train_loss", "train", "#0d6efd"], ["val_loss", "validation", "#fd7e14"]] },
    { title: "bits per character", optional: true,   // a text run only
      series: [["train_bpc", "train", "#0d6efd"], ["val_bpc", "validation", "#fd7e14"]] },
    { title: "parameters", steps: true,
      series: [["params", "params", "#6f42c1"], ["nonzero_params", "non-zero", "#20c997"]] },
  ];
  const $ = (id) => document.getElementById(id);
  let current = 0;

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") {
      const text = JSON.stringify(value);
      return text.length > 40 ? text.slice(0, 37) + "..." : text;
    }
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
    // small values keep three significant digits (a learning rate of 1.37e-5 is not "0")
    if (value !== 0 && Math.abs(value) < 0.001) return value.toExponential(2).replace(/\.?0+e/, "e");
    return value.toFixed(4).replace(/0+$/, "").replace(/\.$/, "");
  }

  function plural(n, word) {
    return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
  }

  function short(value) {
    const a = Math.abs(value);
    if (a >= 1e6) return (value / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (value / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    if (a === 0) return "0";
    if (a < 0.01) return value.toExponential(0);
    return String(Math.round(value * 1000) / 1000);
  }

  // about five round numbers between lo and hi (1, 2, 2.5 or 5 times a power of ten apart)
  function niceTicks(lo, hi) {
    const range = hi - lo;
    if (!(range > 0)) return [lo];
    const raw = range / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.round(t / step) * step);
    return ticks;
  }

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // x where a version starts (its rewrite) and ends (the next one, or the end of training)
  function allX() {
    const xs = [];
    for (const points of Object.values(DATA.series)) for (const p of points) xs.push(p[0]);
    for (const v of VERSIONS) if (v.x !== null) xs.push(v.x);
    return xs;
  }
  const XS = allX();
  const X_MIN = XS.length ? Math.min(...XS) : 0;
  const X_MAX = XS.length ? Math.max(...XS) : 1;
  function versionSpan(k) {
    const start = k === 0 || VERSIONS[k].x === null ? X_MIN : VERSIONS[k].x;
    const next = VERSIONS[k + 1];
    const end = next && next.x !== null ? next.x : X_MAX;
    return [start, end];
  }
  function versionAt(x) {
    let best = 0;
    for (const v of VERSIONS) if (v.x !== null && v.x <= x) best = v.version;
    return best;
  }

  // ---- charts (inline SVG, redrawn markers on every move) ----------------------------------------------------------
  const W = 420, H = 150, PAD = { l: 46, r: 10, t: 22, b: 22 };
  const charts = [];

  function buildChart(spec) {
    const lines = spec.series.filter(([key]) => (DATA.series[key] || []).length > 0);
    const card = document.createElement("div");
    card.className = "card chart";
    const h = document.createElement("h2");
    h.textContent = spec.title;
    card.appendChild(h);
    const readout = document.createElement("p");
    readout.className = "readout";
    readout.dataset.chart = spec.title;
    card.appendChild(readout);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title });
    card.appendChild(svg);
    $("charts").appendChild(card);
    if (!lines.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "not logged"));
      readout.textContent = "";
      charts.push(null);
      return;
    }
    let yMin = Infinity, yMax = -Infinity;
    for (const [key] of lines) for (const [, y] of DATA.series[key]) { yMin = Math.min(yMin, y); yMax = Math.max(yMax, y); }
    if (spec.title === "parameters") yMin = Math.min(0, yMin);
    if (yMax === yMin) { yMax += 1; yMin -= spec.title === "parameters" ? 0 : 1; }
    const span = X_MAX - X_MIN || 1;
    const sx = (x) => PAD.l + (x - X_MIN) / span * (W - PAD.l - PAD.r);
    const sy = (y) => H - PAD.b - (y - yMin) / (yMax - yMin) * (H - PAD.t - PAD.b);
    for (const y of niceTicks(yMin, yMax)) {
      svg.appendChild(el("line", { class: "grid", x1: PAD.l, x2: W - PAD.r, y1: sy(y), y2: sy(y) }));
      svg.appendChild(el("text", { x: PAD.l - 4, y: sy(y) + 3, "text-anchor": "end" }, short(y)));
    }
    for (const x of niceTicks(X_MIN, X_MAX)) {
      svg.appendChild(el("text", { x: sx(x), y: H - 8, "text-anchor": "middle" }, short(x)));
    }
    svg.appendChild(el("text", { x: W - PAD.r, y: H - PAD.b - 4, "text-anchor": "end" }, DATA.x_axis));
    svg.appendChild(el("line", { class: "axis", x1: PAD.l, x2: PAD.l, y1: PAD.t, y2: H - PAD.b }));
    svg.appendChild(el("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b }));
    const band = el("rect", { class: "span", y: PAD.t, height: H - PAD.t - PAD.b, x: PAD.l, width: 0 });
    svg.appendChild(band);
    for (const e of DATA.events) {
      svg.appendChild(el("line", { class: `event ${e.kind}`, x1: sx(e.x), x2: sx(e.x), y1: PAD.t, y2: H - PAD.b }));
    }
    lines.forEach(([key, label, colour], i) => {
      const pts = DATA.series[key];
      let d = "";
      pts.forEach(([x, y], j) => {
        if (j === 0) d += `M${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        else if (spec.steps) d += `H${sx(x).toFixed(1)}V${sy(y).toFixed(1)}`;
        else d += `L${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      });
      svg.appendChild(el("path", { class: "series", d: d, stroke: colour, "data-key": key }));
      const lx = PAD.l + 8 + i * 90;
      const g = el("g", { class: "legend" });
      g.appendChild(el("line", { x1: lx, x2: lx + 14, y1: 12, y2: 12, stroke: colour, "stroke-width": 2 }));
      g.appendChild(el("text", { x: lx + 18, y: 15 }, label));
      svg.appendChild(g);
    });
    const marker = el("line", { class: "marker", y1: PAD.t, y2: H - PAD.b });
    svg.appendChild(marker);
    svg.addEventListener("click", (ev) => {
      const box = svg.getBoundingClientRect();
      const x = X_MIN + ((ev.clientX - box.left) / box.width * W - PAD.l) / (W - PAD.l - PAD.r) * span;
      show(versionAt(x));
    });
    charts.push({ spec, lines, sx, sy, band, marker, readout });
  }


  function moveMarkers(k) {
    const [start, end] = versionSpan(k);
    for (const c of charts) {
      if (!c) continue;
      const x0 = c.sx(start), x1 = c.sx(end);
      c.band.setAttribute("x", Math.min(x0, x1));
      c.band.setAttribute("width", Math.max(1, Math.abs(x1 - x0)));
      c.marker.setAttribute("x1", x0);
      c.marker.setAttribute("x2", x0);
      const v = VERSIONS[k];
      const values = c.lines.map(([key, label]) => [label, key in v.end ? v.end[key] : v.at[key]])
        .filter(([, value]) => value !== undefined && value !== null);
      c.readout.textContent = `v${k} ended at ` + (values.map(([label, v]) => `${label} ${fmt(v)}`).join(", ") || "–");
    }
  }

  // ---- version panel --------------------------------------------------------------------------------------------
  function setSvg(box, svgText, empty) {
    box.innerHTML = "";
    if (!svgText) {
      const p = document.createElement("p");
      p.textContent = empty;
      box.appendChild(p);
      return;
    }
    const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
    const root = doc.documentElement;
    if (root.nodeName !== "svg") {
      const p = document.createElement("p");
      p.textContent = "(picture could not be read)";
      box.appendChild(p);
      return;
    }
    box.appendChild(document.importNode(root, true));
  }

  // scroll a picture so that the node the rule touched is in view (graphviz puts the node id in <title>)
  function focusNode(box, nodeId) {
    box.scrollTop = 0;
    if (!nodeId) return;
    for (const g of box.querySelectorAll("g.node")) {
      const title = g.querySelector("title");
      if (title && title.textContent === nodeId) {
        const top = g.getBoundingClientRect().top - box.getBoundingClientRect().top;
        box.scrollTop = Math.max(0, top - box.clientHeight / 3);
        return;
      }
    }
  }

  function metricsTable(v) {
    const table = $("metrics");
    table.innerHTML = "";
    const head = table.insertRow();
    for (const t of ["", "when made", "after training"]) {
      const th = document.createElement("th");
      th.textContent = t;
      head.appendChild(th);
    }
    const keys = ["params", "nonzero_params", "macs", "train_acc", "val_acc", "train_loss", "val_loss", "lr"];
    for (const key of Object.keys(Object.assign({}, v.at, v.end))) if (!keys.includes(key)) keys.push(key);
    for (const key of keys) {
      const a = key === "params" || key === "macs" ? v[key] : v.at[key];
      const b = key === "params" || key === "macs" ? v[key] : v.end[key];
      if ((a === undefined || a === null) && (b === undefined || b === null)) continue;
      const row = table.insertRow();
      row.insertCell().textContent = key;
      row.insertCell().textContent = fmt(a);
      row.insertCell().textContent = fmt(b);
    }
  }

  function show(k) {
    k = Math.max(0, Math.min(VERSIONS.length - 1, k | 0));
    current = k;
    const v = VERSIONS[k];
    $("slider").value = String(k);
    $("prev").disabled = k === 0;
    $("next").disabled = k === VERSIONS.length - 1;
    // versions count from 0 (the seed), so say both the version number and its place among all of them
    $("version-title").textContent = `version ${v.version} (${k + 1} of ${VERSIONS.length})`;
    const rule = $("rule");
    rule.innerHTML = "";
    const badge = document.createElement("span");
    badge.className = `kind ${v.kind}`;
    badge.textContent = v.kind;
    rule.appendChild(badge);
    rule.appendChild(document.createTextNode(v.label));
    if (v.exact === false) {   // a rewrite that changed the network's function says so, and why
      const inexact = document.createElement("span");
      inexact.className = "inexact";
      inexact.textContent = ` not exact: ${v.reason || "the function changed"}`;
      rule.appendChild(inexact);
    }
    const when = [];
    if (v.epoch !== null) when.push(`epoch ${v.epoch}`);
    if (v.step !== null) when.push(`step ${v.step}`);
    when.push(`hash ${v.hash ? v.hash.slice(0, 12) : "–"}`);
    $("when").textContent = (k === 0 ? "the seed · " : "made at ") + when.join(" · ");
    const changes = $("changes");
    changes.innerHTML = "";
    for (const line of v.changes) {
      const li = document.createElement("li");
      li.textContent = line;
      changes.appendChild(li);
    }
    metricsTable(v);
    setSvg($("graph"), v.graph_svg, "(no stored graph for this version)");
    $("diff-title").textContent = k === 0 ? "Diff from the previous version" : `Diff from version ${k - 1}`;
    setSvg($("diff"), v.diff_svg, k === 0 ? "The seed has no previous version." : "(no picture)");
    focusNode($("graph"), v.focus);
    focusNode($("diff"), v.focus);
    document.querySelectorAll(".chip").forEach((chip) =>
      chip.classList.toggle("current", Number(chip.dataset.version) === k));
    moveMarkers(k);
    try {
      history.replaceState(null, "", `#v=${k}`); // a link to this version; refused by some file:// setups
    } catch (err) { /* the page works without it */ }
  }

  function init() {
    const s = DATA.summary || {};
    const bits = [plural(VERSIONS.length, "version"),
                  `${DATA.events.filter((e) => e.kind === "growth").length} growth`,
                  `${DATA.events.filter((e) => e.kind === "prune").length} prune`];
    if (typeof s.test_bpc === "number") bits.push(`test_bpc ${fmt(s.test_bpc)}`);   // a text run
    else if (typeof s.test_acc === "number") bits.push(`test_acc ${fmt(s.test_acc)}`);
    if (typeof s.params === "number") bits.push(`${fmt(s.params)} params`);
    if (DATA.config && DATA.config.strategy) bits.push(`strategy ${DATA.config.strategy}`);
    $("run-summary").textContent = bits.join(" · ");
    const slider = $("slider");
    slider.max = String(VERSIONS.length - 1);
    slider.addEventListener("input", () => show(Number(slider.value)));
    $("prev").addEventListener("click", () => show(current - 1));
    $("next").addEventListener("click", () => show(current + 1));
    document.addEventListener("keydown", (ev) => {
      if (ev.target === slider) return; // the slider moves itself
      if (ev.key === "ArrowLeft") show(current - 1);
      if (ev.key === "ArrowRight") show(current + 1);
    });
    for (const v of VERSIONS) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = `chip ${v.kind}`;
      chip.dataset.version = String(v.version);
      chip.textContent = v.version === 0 ? "v0 seed" : `v${v.version} ${v.rule}`;
      chip.title = v.exact === false ? `${v.label} (not exact: ${v.reason || "the function changed"})` : v.label;
      if (v.exact === false) chip.textContent += " ≠";
      chip.addEventListener("click", () => show(v.version));
      $("chips").appendChild(chip);
    }
    for (const spec of CHARTS) if (!spec.optional || spec.series.some(([k]) => (DATA.series[k] || []).length)) buildChart(spec);
    const m = /^#v=(\d+)$/.exec(location.hash);
    show(m ? Number(m[1]) : VERSIONS.length - 1);
  }

  init();
})();
