// dlc graph --format html: draws the graphs that compiler/graph_page/__init__.py laid out.
// Each layer's children come in rows (layout.py); this file only sizes the rows for the
// layers open at the moment, draws SVG, and handles pan, zoom, search and the details.
"use strict";

const CHAR = 7.3, LINE = 15, PAD = 10, GAP_X = 16, GAP_Y = 26, HEAD = 24;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

let D = null;          // the page's data
let V = null;          // the view shown: one of D.views, with what is derived from it
let box = new Map();   // "n12" or "lstage1.0" -> {x, y, w, h} of what is drawn
const camera = {x: 20, y: 20, k: 1};

async function unpack() {
  const text = $("data").textContent.trim();
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function prepare(view) {
  view.byId = new Map(view.nodes.map((n) => [n.id, n]));
  view.open = new Set([""]);
  view.selected = null;
  view.matches = [];
  view.match = -1;
  view.chains = new Map();      // layer -> it and the layers above it, outermost first
  for (const layer of Object.keys(view.layers)) {
    const chain = [];
    for (let l = layer; l; l = l.includes(".") ? l.slice(0, l.lastIndexOf(".")) : "") chain.unshift(l);
    view.chains.set(layer, chain);
  }
}

function kernelsOf(id) {
  return (D.native.kernels || []).map((k, i) => [k, i]).filter(([k]) => k.nodes.includes(id)).map(([, i]) => i);
}

// ---- sizes and places -------------------------------------------------------------------------
function nodeSize(n) {
  const text = Math.max(n.title.length + (n.outputs.length ? 2 + n.outputs.join(", ").length : 0), n.types.length);
  return {w: Math.max(70, text * CHAR + 2 * PAD), h: 2 * LINE + 8};
}

function closedSize(layer) {
  const l = V.layers[layer];
  return {w: Math.max(90, Math.max(l.label.length, String(l.size).length + 6) * CHAR + 2 * PAD), h: 2 * LINE + 10};
}

let sizes = new Map();  // child -> its size, while one drawing lasts

function size(child) {
  if (!sizes.has(child)) {
    sizes.set(child, typeof child === "number" ? nodeSize(V.byId.get(child)) :
      V.open.has(child) ? openSize(child) : closedSize(child));
  }
  return sizes.get(child);
}

function openSize(layer) {
  let w = 0, h = layer ? HEAD + PAD : 0;
  for (const row of V.rows[layer]) {
    const sizes = row.map(size);
    w = Math.max(w, sizes.reduce((s, b) => s + b.w, 0) + GAP_X * (row.length - 1));
    h += Math.max(...sizes.map((b) => b.h)) + GAP_Y;
  }
  return {w: Math.max(w + 2 * PAD, closedSize(layer).w), h: h - GAP_Y + PAD};
}

function place(child, x, y) {
  const s = size(child);
  box.set(typeof child === "number" ? "n" + child : "l" + child, {x, y, w: s.w, h: s.h});
  if (typeof child === "number" || !V.open.has(child)) return;
  let top = y + (child ? HEAD + PAD : 0);
  for (const row of V.rows[child]) {
    const sizes = row.map(size);
    const width = sizes.reduce((s, b) => s + b.w, 0) + GAP_X * (row.length - 1);
    let left = x + (s.w - width) / 2;
    row.forEach((c, i) => {
      place(c, left, top + (Math.max(...sizes.map((b) => b.h)) - sizes[i].h) / 2);
      left += sizes[i].w + GAP_X;
    });
    top += Math.max(...sizes.map((b) => b.h)) + GAP_Y;
  }
}

// the box a node is drawn in: itself, or the outermost closed layer holding it
function shown(id) {
  for (const layer of V.chains.get(V.byId.get(id).layer)) if (!V.open.has(layer)) return "l" + layer;
  return "n" + id;
}

// ---- drawing ------------------------------------------------------------------------------------
function draw() {
  box = new Map();
  sizes = new Map();
  place("", 0, 0);
  const parts = [], edges = [], seen = new Set();
  const matched = new Set(V.matches.map(shown));
  const drawLayer = (layer) => {
    const b = box.get("l" + layer), l = V.layers[layer], open = V.open.has(layer);
    const cls = ["layer", open ? "open" : "", layer.startsWith("∇") ? "gradients" : "",
                 matched.has("l" + layer) ? "match" : ""].join(" ");
    parts.push(`<g class="${cls}" data-layer="${esc(layer)}">`,
               `<rect class="box" x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}"/>`);
    if (open) parts.push(`<rect class="head" x="${b.x + 1}" y="${b.y + 1}" width="${b.w - 2}" height="${HEAD - 2}"/>`);
    parts.push(`<text x="${b.x + PAD}" y="${b.y + LINE + 2}">${open ? "▾" : "▸"} ${esc(l.label)}</text>`);
    if (!open) parts.push(`<text class="count" x="${b.x + PAD}" y="${b.y + 2 * LINE + 2}">${l.size} node${l.size === 1 ? "" : "s"}</text>`);
    parts.push("</g>");
    if (open) for (const row of V.rows[layer]) for (const c of row) drawChild(c);
  };
  const drawChild = (c) => {
    if (typeof c !== "number") return drawLayer(c);
    const n = V.byId.get(c), b = box.get("n" + c);
    const cls = ["node", n.kind, n.grad_of !== null ? "gradient" : "", V.selected === c ? "selected" : "",
                 matched.has("n" + c) ? "match" : ""].join(" ");
    const outs = n.outputs.length ? " ⇒ " + n.outputs.join(", ") : "";
    parts.push(`<g class="${cls}" data-node="${c}"><rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}"/>`,
               `<text x="${b.x + PAD}" y="${b.y + LINE + 1}">${esc(n.title + outs)}</text>`,
               `<text class="type" x="${b.x + PAD}" y="${b.y + 2 * LINE + 1}">${esc(n.types)}</text></g>`);
  };
  for (const row of V.rows[""]) for (const c of row) drawChild(c);
  for (const [u, v] of V.edges) {
    const a = shown(u), b = shown(v), key = a + ">" + b;
    if (a === b || seen.has(key)) continue;
    seen.add(key);
    const p = box.get(a), q = box.get(b);
    const x1 = p.x + p.w / 2, y1 = p.y + p.h, x2 = q.x + q.w / 2, y2 = q.y;
    const bend = Math.max(24, Math.abs(y2 - y1) / 2);
    const hot = V.selected !== null && (a === "n" + V.selected || b === "n" + V.selected) ? " hot" : "";
    edges.push(`<path class="edge${y2 < y1 ? " back" : ""}${hot}" d="M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}"/>`);
  }
  $("scene").innerHTML = edges.join("") + parts.join("");
  move();
}

function move() {
  $("scene").setAttribute("transform", `translate(${camera.x},${camera.y}) scale(${camera.k})`);
}

function fit() {
  const b = box.get("l"), c = $("canvas").getBoundingClientRect();
  camera.k = Math.min(1, (c.width - 40) / b.w, (c.height - 40) / b.h);
  camera.x = (c.width - b.w * camera.k) / 2;
  camera.y = 20;
  move();
}

function centre(key) {
  const b = box.get(key), c = $("canvas").getBoundingClientRect();
  camera.k = Math.max(camera.k, 0.8);
  camera.x = c.width / 2 - (b.x + b.w / 2) * camera.k;
  camera.y = c.height / 2 - (b.y + b.h / 2) * camera.k;
  move();
}

// ---- views, layers, search -----------------------------------------------------------------------
function show(name) {
  V = D.views.find((v) => v.name === name);
  for (const b of $("views").children) b.classList.toggle("on", b.dataset.view === name);
  search();
  draw();
  fit();
}

function reveal(id) {
  for (const layer of V.chains.get(V.byId.get(id).layer)) V.open.add(layer);
}

function search() {
  const q = $("search").value.trim().toLowerCase();
  V.matches = !q ? [] : V.nodes.filter((n) => q.startsWith("%") ? n.title.startsWith(q + " ") :
    (n.title + " " + n.layer + " " + n.outputs.join(" ")).toLowerCase().includes(q)).map((n) => n.id);
  V.match = -1;
  $("matches").textContent = q ? `${V.matches.length} match${V.matches.length === 1 ? "" : "es"}` : "";
}

function nextMatch() {
  if (!V.matches.length) return;
  V.match = (V.match + 1) % V.matches.length;
  select(V.matches[V.match]);
  $("matches").textContent = `${V.match + 1} of ${V.matches.length}`;
}

function select(id) {
  reveal(id);
  V.selected = id;
  draw();
  centre("n" + id);
  details(V.byId.get(id));
}

// ---- the details of a node -------------------------------------------------------------------------
function link(id) {
  const n = V.byId.get(id);
  return n ? `<a data-goto="${id}">${esc(n.title)}</a>` : `%${id}`;
}

function details(n) {
  const rows = [["op", `<code>${esc(n.op)}</code> (${esc(n.kind)})`], ["dtype and shape", `<code>${esc(n.types)}</code>`]];
  if (n.attrs) rows.push(["attributes", `<code>${esc(n.attrs)}</code>`]);
  rows.push(["FLOPs", `<code>${esc(n.flops)}</code>`], ["layer", esc(n.layer ? V.layers[n.layer].label : "(none)")]);
  if (n.outputs.length) rows.push(["graph output", `<code>${esc(n.outputs.join(", "))}</code>`]);
  if (n.grad_of !== null) rows.push(["gradient of", link(n.grad_of)]);
  const ins = V.edges.filter(([, v]) => v === n.id).map(([u]) => link(u));
  const outs = V.edges.filter(([u]) => u === n.id).map(([, v]) => link(v));
  rows.push(["inputs", ins.join(", ") || "none"], ["used by", outs.join(", ") || "none"]);
  $("details").innerHTML = `<h2 id="detail-title">${esc(n.title)}</h2>` +
    `<table>${rows.map(([k, v]) => `<tr><td>${k}</td><td id="detail-${k.split(" ")[0]}">${v}</td></tr>`).join("")}</table>` +
    `<h3>Source</h3>${source(n)}<h3>Native kernel</h3><div id="detail-kernel">${kernels(n)}</div>`;
  const hit = $("details").querySelector("pre.source div.hit");
  if (hit) hit.parentElement.scrollTop = hit.offsetTop - hit.parentElement.offsetTop - 100;
}

function source(n) {
  if (!n.span) return `<p class="hint">no place in the source (made by the compiler)</p>`;
  const at = (p) => `${D.sources[p[0]].name}:${p[1]}:${p[2]}`;
  const line = (p) => D.sources[p[0]].text.split("\n")[p[1] - 1] || "";
  const user = n.call || n.span;       // in the standard library: the program's call that led there
  let html = `<p id="detail-place"><code>${esc(at(user))}</code></p>`;
  if (n.call) html += `<p>inside the standard library, <code>${esc(at(n.span))}</code>: <code>${esc(line(n.span).trim())}</code></p>`;
  const lines = D.sources[user[0]].text.split("\n").map((text, i) => {
    const hit = i + 1 >= user[1] && i + 1 <= user[3];
    return `<div${hit ? ' class="hit"' : ""}><span class="no">${i + 1}</span>${esc(text)}</div>`;
  });
  return html + `<pre class="source">${lines.join("")}</pre>`;
}

function kernels(n) {
  if (D.native.error) return `<p class="error">The native backend cannot compile this model:\n${esc(D.native.error)}</p>`;
  const found = kernelsOf(n.id);
  if (!found.length) {
    if (n.kind === "source") return `<p class="hint">An argument of the native step (a buffer): no kernel computes it.</p>`;
    if (!n.compiled) return `<p class="hint">The train step does not compute this node (only an output needs it).</p>`;
    return `<p class="hint">No kernel of its own: the graph passes folded it, merged it into an equal node or removed it.</p>`;
  }
  return found.map((i) => {
    const k = D.native.kernels[i];
    let html = `<p><b>kernel ${i}</b>: ${esc(k.kind)}, function <code>@${esc(k.function)}</code></p>` +
      `<pre class="kernel">${esc(k.text)}</pre><p>graph nodes fused into it: ${k.nodes.map(link).join(", ")}</p>` + ir(k);
    // a scan's body kernels follow it, deeper: the loop calls their functions
    for (let j = i + 1; j < D.native.kernels.length && D.native.kernels[j].depth > k.depth; j++) {
      html += `<p>kernel ${j}, in the scan's body: ${esc(D.native.kernels[j].kind)}</p>` + ir(D.native.kernels[j]);
    }
    return html;
  }).join("");
}

function ir(k) {
  return (k.gemm ? `<p class="hint">It calls dlc's packed GEMM, compiled once for every model.</p>` : "") +
    `<p>LLVM IR (optimized) of <code>@${esc(k.function)}</code>:</p><pre class="ir">${esc(D.native.ir[k.function] || "")}</pre>`;
}

// ---- input ---------------------------------------------------------------------------------------------
function wire() {
  const canvas = $("canvas");
  let drag = null;
  canvas.addEventListener("mousedown", (e) => {
    drag = {x: e.clientX, y: e.clientY, cx: camera.x, cy: camera.y, moved: false};
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) drag.moved = true;
    if (!drag.moved) return;
    canvas.classList.add("dragging");
    camera.x = drag.cx + e.clientX - drag.x;
    camera.y = drag.cy + e.clientY - drag.y;
    move();
  });
  window.addEventListener("mouseup", () => { canvas.classList.remove("dragging"); setTimeout(() => { drag = null; }); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const k = Math.min(4, Math.max(0.02, camera.k * Math.exp(-e.deltaY * 0.0015)));
    camera.x = px - (px - camera.x) * k / camera.k;
    camera.y = py - (py - camera.y) * k / camera.k;
    camera.k = k;
    move();
  }, {passive: false});
  canvas.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const node = e.target.closest("[data-node]"), layer = e.target.closest("[data-layer]");
    if (node) return select(Number(node.dataset.node));
    if (!layer) return;
    const name = layer.dataset.layer, before = box.get("l" + name);
    if (V.open.has(name)) {      // an open layer closes from its head only
      const r = canvas.getBoundingClientRect();
      if ((e.clientY - r.top - camera.y) / camera.k - before.y > HEAD) return;
      V.open.delete(name);
    } else {
      V.open.add(name);
    }
    draw();
    const after = box.get("l" + name);     // the layer's corner stays where it was on the screen,
    camera.x += (before.x - after.x) * camera.k;
    camera.y += (before.y - after.y) * camera.k;
    const left = camera.x + after.x * camera.k, right = left + after.w * camera.k;
    const width = canvas.getBoundingClientRect().width;
    if (right > width - 20 && left > 20) camera.x -= Math.min(right - width + 20, left - 20);    // or moves into view
    move();
  });
  $("details").addEventListener("click", (e) => {
    const a = e.target.closest("[data-goto]");
    if (a) select(Number(a.dataset.goto));
  });
  $("search").addEventListener("input", () => { search(); draw(); });
  $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") nextMatch(); });
  $("expand").addEventListener("click", () => { Object.keys(V.layers).forEach((l) => V.open.add(l)); draw(); fit(); });
  $("collapse").addEventListener("click", () => { V.open = new Set([""]); draw(); fit(); });
  $("fit").addEventListener("click", fit);
}

async function main() {
  D = await unpack();
  D.views.forEach(prepare);
  $("model").textContent = `${D.model} (${D.mode})`;
  $("views").innerHTML = D.views.map((v) => `<button data-view="${v.name}">${esc(v.title)}</button>`).join(" ");
  for (const b of $("views").children) b.addEventListener("click", () => show(b.dataset.view));
  wire();
  show(D.first);
  $("details").innerHTML = `<p class="hint">Click a layer to open it, a node to see its op, shape, FLOPs, ` +
    `source line and native kernel. Drag to pan, scroll to zoom.</p>` +
    (D.native.error ? `<p class="error">The native backend cannot compile this model:\n${esc(D.native.error)}</p>` : "");
  document.body.dataset.ready = "true";
}

main();
