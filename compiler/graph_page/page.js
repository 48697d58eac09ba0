// dlc graph --format html: draws the graphs that compiler/graph_page/__init__.py laid out.
// A "layer" here is a box of the page: a call of a def or a model statement (boxes.py).
// Each box's children come in rows (layout.py); this file only sizes the rows for the
// boxes open at the moment, draws SVG, and handles pan, zoom, search and the details.
"use strict";

const LINE = 15, PAD = 10, GAP_X = 16, GAP_Y = 26, HEAD = 24, CHIP = 15;
const FONT = "12px ui-monospace, monospace", SMALL = "11px ui-monospace, monospace";   // as page.css
const LEGIBLE = 0.8;      // the smallest zoom at which labels can be read: "expand all" stops there
const WRAP = 1400;        // the widest row of a layer, in pixels
const FILL = 1.75, MARGIN = 20;     // the largest zoom that fit draws at; the room it leaves at the edges
const GRADIENTS = "∇";    // the box of the gradients, ∇.B the gradients of box B (graph.GRADIENTS)
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

let D = null;          // the page's data
let V = null;          // the view shown: one of D.views, with what is derived from it
let box = new Map();   // "n12" or "lstage1.0" -> {x, y, w, h} of what is drawn
const camera = {x: 20, y: 20, k: 1};
let fitted = false;    // the camera is where fit put it: a new size of the window fits again
const ruler = document.createElement("canvas").getContext("2d");

// the width of a text as drawn in `font`, so that every label fits its box
function textWidth(text, font = FONT) {
  ruler.font = font;
  return ruler.measureText(text).width;
}

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
    for (let l = layer; l; l = view.layers[l].parent) chain.unshift(l);
    view.chains.set(layer, chain);
  }
}

// node -> the kernels computing it; "u>v" -> why the fusion pass did not fuse u into v
function prepareNative() {
  D.kernelsOf = new Map();
  (D.native.kernels || []).forEach((k, i) => k.nodes.forEach((n) => {
    if (!D.kernelsOf.has(n)) D.kernelsOf.set(n, []);
    D.kernelsOf.get(n).push(i);
  }));
  D.boundary = new Map((D.native.boundaries || []).map(([u, v, why]) => [u + ">" + v, why]));
}

function kernelsOf(id) {
  return D.kernelsOf.get(id) || [];
}

// how the edge u -> v between two nodes crosses the kernels: "boundary" (with the fusion
// pass's reason), "fused" (u is computed in a kernel of v), or "" (an argument of the step, ...);
// an edge drawn between boxes is a boundary when one of the edges it stands for is
function crossing(u, v) {
  const why = D.boundary.get(u + ">" + v);
  if (why) return {kind: "boundary", why};
  const ks = kernelsOf(v);
  return {kind: ks.length && kernelsOf(u).some((k) => ks.includes(k)) ? "fused" : "", why: ""};
}

// ---- sizes and places -------------------------------------------------------------------------
// a node's first line: its number and op, a constant's value, the graph outputs it is
function nodeLabel(n) {
  return n.title + (n.value !== undefined ? " " + n.value : "") + (n.outputs.length ? " ⇒ " + n.outputs.join(", ") : "");
}

// its second line: its dtype and shape, and what a constant the compiler made is
function nodeNote(n) {
  return n.types + (n.note ? " · " + n.note : "");
}

function nodeSize(n) {
  return {w: Math.ceil(Math.max(70, textWidth(nodeLabel(n)), textWidth(nodeNote(n), SMALL)) + 2 * PAD), h: 2 * LINE + 8};
}

// the shapes of the values leaving a box: `f32[B, 16, 32, 32]`, `2 × f32[64]`, `f32[10] +46 more`;
// a box none leaves (a softmax the train step does not need) says its size
function shapes(layer) {
  const l = V.layers[layer], types = l.outputs.map((id) => V.byId.get(id).types);
  if (!types.length) return `${l.size} node${l.size === 1 ? "" : "s"}`;
  if (types.every((t) => t === types[0])) return (types.length > 1 ? `${types.length} × ` : "") + types[0];
  return `${types[0]} +${types.length - 1} more`;
}

// a closed box's second line: its layer's name when the label does not say it, and its shapes
function layerNote(layer) {
  const l = V.layers[layer];
  return l.name && l.name !== l.label ? `${l.name} · ${shapes(layer)}` : shapes(layer);
}

function closedSize(layer) {
  const text = Math.max(textWidth("▸ " + V.layers[layer].label), textWidth(layerNote(layer), SMALL));
  return {w: Math.ceil(Math.max(90, text) + 2 * PAD), h: 2 * LINE + 10};
}

let sizes = new Map();  // child -> its size, while one drawing lasts

function size(child) {
  if (!sizes.has(child)) {
    sizes.set(child, typeof child === "number" ? nodeSize(V.byId.get(child)) :
      V.open.has(child) ? openSize(child) : closedSize(child));
  }
  return sizes.get(child);
}

// a layer's rows as drawn: a row wider than WRAP goes on in the lines below it (the
// gradients of a hundred parameters side by side would make the page 11,000 px wide)
function lines(layer) {
  const out = [];
  for (const row of V.rows[layer]) {
    let line = [], width = 0;
    for (const c of row) {
      const w = size(c).w;
      if (line.length && width + GAP_X + w > WRAP) {
        out.push(line);
        line = [];
        width = 0;
      }
      width += (line.length ? GAP_X : 0) + w;
      line.push(c);
    }
    out.push(line);
  }
  return out;
}

function headWidth(layer) {
  const l = V.layers[layer];
  return textWidth("▾ " + l.label + (l.name && l.name !== l.label ? "  " + l.name : "")) + 2 * PAD;
}

function openSize(layer) {
  let w = 0, h = layer ? HEAD + PAD : 0;
  for (const row of lines(layer)) {
    const sizes = row.map(size);
    w = Math.max(w, sizes.reduce((s, b) => s + b.w, 0) + GAP_X * (row.length - 1));
    h += Math.max(...sizes.map((b) => b.h)) + GAP_Y;
  }
  return {w: Math.ceil(Math.max(w + 2 * PAD, closedSize(layer).w, headWidth(layer))), h: h - GAP_Y + PAD};
}

function place(child, x, y) {
  const s = size(child);
  box.set(typeof child === "number" ? "n" + child : "l" + child, {x, y, w: s.w, h: s.h});
  if (typeof child === "number" || !V.open.has(child)) return;
  let top = y + (child ? HEAD + PAD : 0);
  for (const row of lines(child)) {
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
  const parts = [], edges = [];
  const matched = new Set(V.matches.map((key) => key[0] === "n" ? shown(Number(key.slice(1))) : key));
  const kin = new Set();      // the nodes fused into a kernel with the selected one
  if (V.selected !== null) for (const k of kernelsOf(V.selected)) D.native.kernels[k].nodes.forEach((n) => kin.add(n));
  const drawLayer = (layer) => {
    const b = box.get("l" + layer), l = V.layers[layer], open = V.open.has(layer);
    const cls = ["layer", open ? "open" : "", layer.startsWith(GRADIENTS) ? "gradients" : "",
                 matched.has("l" + layer) ? "match" : ""].join(" ");
    parts.push(`<g class="${cls}" data-layer="${esc(layer)}">`,
               `<rect class="box" x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}"/>`);
    if (open) parts.push(`<rect class="head" x="${b.x + 1}" y="${b.y + 1}" width="${b.w - 2}" height="${HEAD - 2}"/>`);
    const title = `${open ? "▾" : "▸"} ${l.label}` + (open && l.name && l.name !== l.label ? `  ${l.name}` : "");
    parts.push(`<text x="${b.x + PAD}" y="${b.y + LINE + 2}">${esc(title)}</text>`);
    if (!open) {
      const all = l.outputs.map((id) => V.byId.get(id).types).join("\n");
      parts.push(`<text class="count" x="${b.x + PAD}" y="${b.y + 2 * LINE + 2}">${esc(layerNote(layer))}</text>`,
                 all ? `<title>${esc(all)}</title>` : "");
    }
    parts.push("</g>");
    if (open) for (const row of V.rows[layer]) for (const c of row) drawChild(c);
  };
  const drawChild = (c) => {
    if (typeof c !== "number") return drawLayer(c);
    const n = V.byId.get(c), b = box.get("n" + c);
    const cls = ["node", n.pattern, n.grad_of !== null ? "gradient" : "", V.selected === c ? "selected" : kin.has(c) ? "kin" : "",
                 matched.has("n" + c) ? "match" : ""].join(" ");
    parts.push(`<g class="${cls}" data-node="${c}"><rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}"/>`,
               `<text x="${b.x + PAD}" y="${b.y + LINE + 1}">${esc(nodeLabel(n))}</text>`,
               `<text class="type" x="${b.x + PAD}" y="${b.y + 2 * LINE + 1}">${esc(nodeNote(n))}</text></g>`);
  };
  for (const row of V.rows[""]) for (const c of row) drawChild(c);
  const drawn = new Map();     // "a>b" -> the edge between two things drawn: the nodes' edges it stands for
  for (const [u, v] of V.edges) {
    const a = shown(u), b = shown(v), key = a + ">" + b;
    if (a === b) continue;
    if (!drawn.has(key)) drawn.set(key, {a, b, whys: new Set(), fused: true, params: true, readers: new Set()});
    const e = drawn.get(key), cross = crossing(u, v);
    if (cross.why) e.whys.add(cross.why);
    e.fused = e.fused && cross.kind === "fused";
    e.params = e.params && V.byId.get(u).op === "param";
    e.readers.add(V.byId.get(v).layer);
  }
  const bundles = paramBundles(drawn.values());
  const notes = [];      // the reasons at the boundaries of the selected node, drawn last
  for (const {a, b, whys, fused, params} of drawn.values()) {
    const p = box.get(a), q = box.get(b), bundle = params && bundles.get(b);
    const x1 = p.x + p.w * (bundle ? 0.25 : 0.5), y1 = p.y + p.h;      // a bundle's edges leave beside the others
    const x2 = bundle ? bundle.x : q.x + q.w / 2, y2 = bundle ? bundle.y : q.y;
    const bend = Math.max(24, Math.abs(y2 - y1) / 2);
    const hot = V.selected !== null && (a === "n" + V.selected || b === "n" + V.selected);
    const why = [...whys].join("; ");
    const cls = ["edge", y2 < y1 ? "back" : "", hot ? "hot" : "", why ? "boundary" : fused ? "fused" : "",
                 bundle ? "params" : ""].join(" ");
    const tip = why ? `<title>kernel boundary: ${esc(why)}</title>` : "";
    edges.push(`<path class="${cls}" data-edge="${esc(a + ">" + b)}" d="M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}">${tip}</path>`);
    if (!why) continue;
    edges.push(`<path class="cut" d="M${x1 - 6},${y1 + 5} L${x1 + 6},${y1 + 5}">${tip}</path>`);     // where it leaves its kernel
    if (hot) {
      const w = textWidth(why, SMALL) + 8, mx = (x1 + x2) / 2 + 6, my = (y1 + y2) / 2;
      notes.push(`<g class="why"><rect x="${mx}" y="${my - 9}" width="${w}" height="16"/>` +
                 `<text x="${mx + 4}" y="${my + 3}">${esc(why)}</text></g>`);
    }
  }
  for (const [b, {x, y, text, w}] of bundles) {
    edges.push(`<g class="bundle" data-into="${esc(b)}"><rect x="${x - w / 2}" y="${y}" width="${w}" height="${CHIP}"/>` +
               `<text x="${x}" y="${y + CHIP - 4}">${esc(text)}</text></g>`);
  }
  // the edges over the boxes: an edge that passes a box it does not join is never hidden behind it
  $("scene").innerHTML = parts.join("") + edges.join("") + notes.join("");
  transform();
}

// The edges into a closed box that carry only parameters, read inside it far from the
// boxes they are drawn in (the ResNet's `l2(params)` reads every parameter of every
// stage), end together at a chip above the box that names the call reading them.
// box key -> the chip: its centre x, top y, text and width
function paramBundles(edges) {
  const readers = new Map();
  for (const e of edges) {
    if (!e.params || e.b[0] !== "l") continue;
    if (!readers.has(e.b)) readers.set(e.b, []);
    readers.get(e.b).push(...e.readers);
  }
  const out = new Map();
  for (const [b, layers] of readers) {
    const chains = layers.map((l) => V.chains.get(l));
    let common = chains[0].filter((l, i) => chains.every((c) => c[i] === l)).pop();   // the reading box
    const closed = b.slice(1), inside = common !== undefined && common !== closed && V.chains.get(common).includes(closed);
    const text = inside ? callText(common) : "params";
    const q = box.get(b), w = textWidth(text, SMALL) + 10;
    out.set(b, {x: q.x + q.w / 2 - 12 - w / 2, y: q.y - CHIP - 2, text, w});
  }
  return out;
}

// a box as the program wrote its call, `l2(params)`, when that fits on a chip; else its label
function callText(layer) {
  const l = V.layers[layer], p = l.span, grad = layer.startsWith(GRADIENTS) ? GRADIENTS + " " : "";
  const text = p && p[1] === p[3] ? D.sources[p[0]].text.split("\n")[p[1] - 1].slice(p[2] - 1, p[4] - 1) : "";
  return text && text.length <= 32 ? grad + text : l.label;
}

function transform() {
  $("scene").setAttribute("transform", `translate(${camera.x},${camera.y}) scale(${camera.k})`);
}

function move() {     // the camera moved away from where fit put it
  fitted = false;
  transform();
}

// the whole graph filling the window (a few collapsed boxes drawn larger, up to FILL), or,
// when that would make the labels too small to read (`legible`), the top of it at the
// smallest zoom that can be read, with a note. The window's size changing fits again,
// unless the drawing was moved since.
function fit(legible = false) {
  const b = $("scene").getBBox(), c = $("canvas").getBoundingClientRect();     // the boxes, edges and chips
  const whole = Math.min(FILL, (c.width - 2 * MARGIN) / b.width, (c.height - 2 * MARGIN) / b.height);
  camera.k = legible ? Math.max(whole, LEGIBLE) : whole;
  camera.x = (c.width - b.width * camera.k) / 2 - b.x * camera.k;     // the rows are centred: the top of the graph is in the middle
  camera.y = Math.max(MARGIN, (c.height - b.height * camera.k) / 2) - b.y * camera.k;
  $("zoom").textContent = camera.k > whole ? `the top of the graph at ${Math.round(camera.k * 100)}%: ` +
    `drag or scroll to see the rest, fit for all of it` : "";
  transform();
  fitted = true;
}

function centre(key) {
  const b = box.get(key), c = $("canvas").getBoundingClientRect();
  camera.k = Math.max(camera.k, 0.8);
  camera.x = c.width / 2 - (b.x + b.w / 2) * camera.k;
  camera.y = c.height / 2 - (b.y + b.h / 2) * camera.k;
  move();
}

// ---- views, layers, search -----------------------------------------------------------------------
// a view keeps its open boxes and its selection; the details show the view's selection
function show(name) {
  V = D.views.find((v) => v.name === name);
  for (const b of $("views").children) b.classList.toggle("on", b.dataset.view === name);
  search();
  draw();
  fit();
  if (V.selected !== null) details(V.byId.get(V.selected));
  else hint();
}

function hint() {
  $("details").innerHTML = `<p class="hint">The ${esc(V.title)}: ${V.nodes.length.toLocaleString("en")} nodes. ` +
    `A box is a call of a def (<code>conv2d 16 3x3 s1</code>) or a statement of the model; click one to open it, ` +
    `a node to see its op, shape, FLOPs, source line, native kernel and kernel boundaries. ` +
    `A closed box shows the shapes of the values leaving it; ` +
    `the nodes fused into the selected node's kernels are outlined blue. Drag to pan, scroll to zoom.</p>` +
    legend() +
    (D.native.error ? `<p class="error">The native backend cannot compile this model:\n${esc(D.native.error)}</p>` : "");
}

// what the edges mean, each key a line of its own, drawn as the graph draws it
function legend() {
  const line = (cls) => `<path class="edge ${cls}" d="M2,8 L38,8"/>`;
  const keys = [
    [line("fused"), "fused into one kernel"],
    [line("boundary") + `<path class="cut" d="M14,4 L14,12"/>`, "a kernel boundary (hover or select it for the reason)"],
    [line("back"), "drawn upwards: a value read by a box above (a gradient flowing back)"],
    [line("params") + `<g class="bundle"><rect x="22" y="1" width="16" height="14"/></g>`,
     "parameters read far from their layer, into a chip naming the call (<code>l2(params)</code>)"]];
  return `<ul id="legend">${keys.map(([svg, text]) =>
    `<li><svg class="swatch" width="40" height="16">${svg}</svg><span>${text}</span></li>`).join("")}</ul>`;
}

function reveal(id) {     // open the boxes that hold node id
  for (const layer of V.chains.get(V.byId.get(id).layer)) V.open.add(layer);
}

// matches: the boxes whose def, options or name hold the text (relu, batchnorm, conv2d 16,
// stage1.0), then the nodes whose op, name, output or number do (%69); "n12" or "lstage1.0"
function search() {
  const q = $("search").value.trim().toLowerCase();
  const boxes = !q || q.startsWith("%") ? [] : Object.entries(V.layers).filter(([id, l]) => id &&
    (l.label + " " + l.name).toLowerCase().includes(q)).map(([id]) => "l" + id);
  const nodes = !q ? [] : V.nodes.filter((n) => q.startsWith("%") ? n.title.startsWith(q + " ") :
    (n.title + " " + n.outputs.join(" ")).toLowerCase().includes(q)).map((n) => "n" + n.id);
  V.matches = boxes.concat(nodes);
  V.match = -1;
  $("matches").textContent = q ? `${V.matches.length} match${V.matches.length === 1 ? "" : "es"}` : "";
}

function nextMatch() {
  if (!V.matches.length) return;
  V.match = (V.match + 1) % V.matches.length;
  const key = V.matches[V.match];
  if (key[0] === "n") select(Number(key.slice(1)));
  else selectLayer(key.slice(1));
  $("matches").textContent = `${V.match + 1} of ${V.matches.length}`;
}

// show a box, closed, with the boxes around it open, and its details
function selectLayer(layer) {
  for (const l of V.chains.get(V.layers[layer].parent)) V.open.add(l);
  V.open.delete(layer);
  draw();
  centre("l" + layer);
  layerDetails(layer);
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

function layerDetails(layer) {
  const l = V.layers[layer];
  const what = l.def ? `<code>${esc(l.def)}</code>` : "a statement of the model";
  const rows = [["def", !layer.startsWith(GRADIENTS) ? what :
    layer === GRADIENTS ? "the gradients of the loss" : `the gradients of ${what}`]];
  if (l.name) rows.push(["layer", `<code>${esc(l.name)}</code>`]);
  if (l.options.length) rows.push(["options", l.options.map((o) => `<code>${esc(o)}</code>`).join(", ")]);
  rows.push(["nodes", `${l.size}`]);
  if (l.outputs.length) rows.push(["outputs", l.outputs.map((id) => {
    const n = V.byId.get(id);
    return `${link(id)} <code>${esc(n.types)}</code>` + (n.outputs.length ? ` ⇒ <code>${esc(n.outputs.join(", "))}</code>` : "");
  }).join("<br>")]);
  $("details").innerHTML = `<h2 id="detail-title">${esc(l.label)}</h2>` +
    `<table>${rows.map(([k, v]) => `<tr><td>${k}</td><td id="detail-${k}">${v}</td></tr>`).join("")}</table>` +
    (l.span ? `<h3>Source</h3>${source(l)}` : "");
  scrollToHit();
}

function scrollToHit() {
  const hit = $("details").querySelector("pre.source div.hit");
  if (hit) hit.parentElement.scrollTop = hit.offsetTop - hit.parentElement.offsetTop - 100;
}

// the edges of node n that cross a kernel boundary, with the fusion pass's reasons
function boundaries(n) {
  const found = (D.native.boundaries || []).filter(([u, v]) => u === n.id || v === n.id);
  if (!found.length) return `<p class="hint">None: every value it reads or hands on stays in its kernel.</p>`;
  return `<table>${found.map(([u, v, why]) => `<tr><td>${u === n.id ? "to " + link(v) : "from " + link(u)}</td>` +
    `<td class="why">${esc(why)}</td></tr>`).join("")}</table>`;
}

function details(n) {
  const rows = [["op", `<code>${esc(n.op)}</code> (${esc(n.pattern)})`], ["dtype and shape", `<code>${esc(n.types)}</code>`]];
  if (n.attrs) rows.push(["attributes", `<code>${esc(n.attrs)}</code>`]);
  if (n.note) rows.push(["what", esc(n.note)]);
  const l = V.layers[n.layer];
  rows.push(["FLOPs", `<code>${esc(n.flops)}</code>`],
            ["layer", n.layer ? esc(l.label + (l.name && l.name !== l.label ? ` (${l.name})` : "")) : "(none)"]);
  if (n.outputs.length) rows.push(["graph output", `<code>${esc(n.outputs.join(", "))}</code>`]);
  if (n.grad_of !== null) rows.push(["gradient of", link(n.grad_of)]);
  const ins = V.edges.filter(([, v]) => v === n.id).map(([u]) => link(u));
  const outs = V.edges.filter(([u]) => u === n.id).map(([, v]) => link(v));
  rows.push(["inputs", ins.join(", ") || "none"], ["used by", outs.join(", ") || "none"]);
  $("details").innerHTML = `<h2 id="detail-title">${esc(n.title)}</h2>` +
    `<table>${rows.map(([k, v]) => `<tr><td>${k}</td><td id="detail-${k.split(" ")[0]}">${v}</td></tr>`).join("")}</table>` +
    `<h3>Source</h3>${source(n)}<h3>Kernel boundaries</h3><div id="detail-boundaries">${boundaries(n)}</div>` +
    `<h3>Native kernel</h3><div id="detail-kernel">${kernels(n)}</div>`;
  scrollToHit();
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
    if (n.pattern === "source") return `<p class="hint">An argument of the native step (a buffer): no kernel computes it.</p>`;
    if (!n.compiled) return `<p class="hint">The train step does not compute this node (only an output needs it).</p>`;
    return `<p class="hint">No kernel of its own: the graph passes folded it, merged it into an equal node or removed it.</p>`;
  }
  return found.map((i) => {
    const k = D.native.kernels[i];
    let html = `<p><b>kernel ${i}</b>: ${esc(k.class)}, function <code>@${esc(k.function)}</code></p>` +
      `<pre class="kernel">${esc(k.text)}</pre><p>graph nodes fused into it: ${k.nodes.map(link).join(", ")}</p>` + ir(k);
    // a scan's body kernels follow it, deeper: the loop calls their functions
    for (let j = i + 1; j < D.native.kernels.length && D.native.kernels[j].depth > k.depth; j++) {
      html += `<p>kernel ${j}, in the scan's body: ${esc(D.native.kernels[j].class)}</p>` + ir(D.native.kernels[j]);
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
    layerDetails(name);
    draw();
    // the layer's corner stays where it was on the screen, at 100 % when it opens from the
    // larger zoom that fit gives a few boxes,
    const sx = camera.x + before.x * camera.k, sy = camera.y + before.y * camera.k;
    if (V.open.has(name)) camera.k = Math.min(camera.k, 1);
    const after = box.get("l" + name);
    camera.x = sx - after.x * camera.k;
    camera.y = sy - after.y * camera.k;
    const left = camera.x + after.x * camera.k, right = left + after.w * camera.k;
    const top = camera.y + after.y * camera.k, bottom = top + after.h * camera.k;
    const {width, height} = canvas.getBoundingClientRect();
    if (right > width - 20 && left > 20) camera.x -= Math.min(right - width + 20, left - 20);    // or moves into view
    if (bottom > height - 20 && top > 20) camera.y -= Math.min(bottom - height + 20, top - 20);
    move();
  });
  $("details").addEventListener("click", (e) => {
    const a = e.target.closest("[data-goto]");
    if (a) select(Number(a.dataset.goto));
  });
  $("search").addEventListener("input", () => { search(); draw(); });
  $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") nextMatch(); });
  $("expand").addEventListener("click", () => { Object.keys(V.layers).forEach((l) => V.open.add(l)); draw(); fit(true); });
  $("collapse").addEventListener("click", () => { V.open = new Set([""]); draw(); fit(); });
  $("fit").addEventListener("click", () => fit());
  // the drawing area's own size, not the window's: it also changes while the page lays out
  new ResizeObserver(() => { if (fitted) fit(); }).observe(document.getElementById("canvas"));
}

// the search box as wide as its placeholder says, so that none of it is cut
function fitPlaceholder() {
  const input = $("search"), style = getComputedStyle(input);
  const text = textWidth(input.placeholder, `${style.fontSize} ${style.fontFamily}`);
  input.style.width = `${Math.ceil(text + parseFloat(style.paddingLeft) + parseFloat(style.paddingRight) + 24)}px`;
}

async function main() {
  D = await unpack();
  D.views.forEach(prepare);
  prepareNative();
  $("model").textContent = `${D.model} (${D.mode})`;
  $("views").innerHTML = D.views.map((v) => `<button data-view="${v.name}">${esc(v.title)}</button>`).join(" ");
  for (const b of $("views").children) b.addEventListener("click", () => show(b.dataset.view));
  wire();
  fitPlaceholder();
  show(D.first);
  document.body.dataset.ready = "true";
}

main();
