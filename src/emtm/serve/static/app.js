// emtm serve: the demo page. Plain JS, no build step, nothing downloaded.
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let duration = 0; // seconds of the video on the timeline

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch (_) { body = { detail: response.statusText }; }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function option(value, label, url) {
  const o = document.createElement("option");
  o.value = value; o.textContent = label; o.dataset.url = url;
  return o;
}

function selected() {
  const o = $("video-select").selectedOptions[0];
  if (!o) return null;
  const kind = o.value.split(":", 1)[0];
  return { kind, name: o.value.slice(kind.length + 1), url: o.dataset.url };
}

function loadVideo() {
  const source = selected();
  if (!source) return;
  if ($("player").getAttribute("src") !== source.url) $("player").src = source.url;
}

async function init() {
  try {
    const info = await api("/info");
    const ex = info.extraction;
    $("model-info").textContent = `model ${info.model} (${info.architecture}, D=${info.feature_dim}); ` +
      (ex.available ? `raw video: ${ex.backbone} at ${ex.fps} fps, ${ex.clip_seconds} s clips`
                    : "raw video refused: " + ex.refusal);
    const listing = await api("/videos");
    for (const v of listing.videos) $("video-select").append(option("video:" + v.name, v.name, v.url));
    if (!listing.videos.length) setStatus("no videos in the served folder: upload one");
    loadVideo();
    await initTeachers();
    document.body.dataset.ready = "1";
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function upload(file) {
  setStatus(`uploading ${file.name} (${file.size} bytes)…`);
  const url = "/upload?filename=" + encodeURIComponent(file.name);
  const body = await api(url, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  const o = option("upload:" + body.upload, "uploaded: " + file.name, body.url);
  $("video-select").append(o);
  $("video-select").value = o.value;
  loadVideo();
  setStatus(`uploaded ${file.name}`);
}

function seek(t) {
  const player = $("player");
  player.pause();
  player.currentTime = t;
}

function pct(t) { return (100 * Math.max(0, Math.min(t, duration)) / duration).toFixed(3) + "%"; }

function fmt(x) { return x.toFixed(2); }

function place(el, m) {
  el.style.left = pct(m.start);
  el.style.width = `calc(${pct(m.end)} - ${pct(m.start)})`;
}

function showMoments(result) {
  duration = result.duration;
  $("axis-end").textContent = fmt(duration) + " s";
  const best = result.moments[0];
  const el = $("best-moment");
  place(el, best);
  el.hidden = false;
  el.dataset.start = String(best.start);
  el.dataset.end = String(best.end);
  el.title = `best moment ${fmt(best.start)}-${fmt(best.end)} s: click to seek`;
  $("best-start").textContent = fmt(best.start);
  $("best-end").textContent = fmt(best.end);
  $("best-score").textContent = best.score.toFixed(3);
  $("alt-layer").replaceChildren();
  $("alternatives").replaceChildren();
  result.moments.forEach((m, i) => {
    if (i > 0) {
      const alt = document.createElement("div");
      alt.className = "alt-moment"; place(alt, m);
      alt.title = `#${i + 1} ${fmt(m.start)}-${fmt(m.end)} s`;
      alt.addEventListener("click", () => seek(m.start));
      $("alt-layer").append(alt);
    }
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button"; b.className = "alt";
    b.dataset.start = String(m.start); b.dataset.end = String(m.end);
    b.textContent = `${fmt(m.start)} s – ${fmt(m.end)} s (score ${m.score.toFixed(3)})`;
    b.addEventListener("click", () => seek(m.start));
    li.append(b);
    $("alternatives").append(li);
  });
}

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

const MOMENT_FILL = "rgba(255,143,0,0.25)";
const TRUTH_FILL = "rgba(120,144,156,0.3)";

// Start/end curves over [0, duration] in `svg` (its viewBox gives the size): `c` is {times, start, end},
// `bands` are shaded spans [{start, end, fill, id?}] (the predicted moment, the ground truth).
function plotCurves(svg, c, duration, bands) {
  svg.replaceChildren();
  const W = 640, H = svg.viewBox.baseVal.height || 180, L = 40, R = 10, T = 10, B = 24;
  if (!c) {
    svg.append(svgEl("text", { x: L, y: H / 2 })); svg.lastChild.textContent =
      "this model has no per-clip start/end probabilities";
    return;
  }
  const maxP = Math.max(...c.start, ...c.end, 1e-6);
  const x = (t) => L + (W - L - R) * t / duration;
  const y = (p) => T + (H - T - B) * (1 - p / maxP);
  for (const band of bands) {
    const rect = svgEl("rect", { x: x(band.start), y: T, width: Math.max(1, x(band.end) - x(band.start)),
      height: H - T - B, fill: band.fill });
    if (band.id) rect.id = band.id;
    svg.append(rect);
  }
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#90a4ae" }));
  svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#90a4ae" }));
  for (const [label, px, py, anchor] of [["0 s", L, H - 6, "start"], [fmt(duration) + " s", W - R, H - 6, "end"],
                                         [maxP.toFixed(2), L - 4, T + 8, "end"], ["0", L - 4, H - B, "end"]]) {
    const t = svgEl("text", { x: px, y: py, "text-anchor": anchor, "font-size": 11, fill: "#546e7a" });
    t.textContent = label; svg.append(t);
  }
  for (const [key, colour] of [["start", "#1565c0"], ["end", "#2e7d32"]]) {
    const points = c.times.map((t, i) => `${x(t).toFixed(1)},${y(c[key][i]).toFixed(1)}`).join(" ");
    svg.append(svgEl("polyline", { points, fill: "none", stroke: colour, "stroke-width": 2, class: "curve-" + key }));
  }
}

function drawCurves(result) {
  const best = result.moments[0];
  plotCurves($("curves"), result.curves, result.duration,
    [{ start: best.start, end: best.end, fill: MOMENT_FILL, id: "curve-moment" }]);
}

// "Teachers and KAU": a distilled run's training example (GET /examples/{i}), drawn as the curves above.
async function showExample(index) {
  const ex = await api(`/examples/${index}`);
  const gt = ex.ground_truth, moment = ex.student.moment;
  $("example-info").textContent = `${ex.sample_id} (video ${ex.video_id}, ${fmt(ex.duration)} s): ` +
    `“${ex.query}” — ground truth ${fmt(gt.start)}–${fmt(gt.end)} s, student ${fmt(moment.start)}–${fmt(moment.end)} s`;
  const rows = ex.teachers.map((t) => [`${t.name}: KAU weight ${t.kau_weights.start.toFixed(2)} (start), ` +
    `${t.kau_weights.end.toFixed(2)} (end)`, t, "teacher"]);
  rows.push(["KAU ensemble", ex.ensemble, "ensemble"], ["student", ex.student, "student"]);
  const plots = $("teacher-plots");
  plots.replaceChildren();
  for (const [title, dist, kind] of rows) {
    const heading = document.createElement("h3");
    heading.textContent = title;
    const svg = svgEl("svg", { viewBox: "0 0 640 120", class: "teacher-curves", role: "img", "aria-label": title });
    svg.dataset.kind = kind;
    plots.append(heading, svg);
    const bands = [{ ...gt, fill: TRUTH_FILL }];
    if (kind === "student") bands.push({ ...moment, fill: MOMENT_FILL });
    plotCurves(svg, { times: ex.times, start: dist.start, end: dist.end }, ex.duration, bands);
  }
  $("teachers-panel").dataset.example = String(index);
}

async function initTeachers() {
  const panel = $("teachers-panel");
  let listing;
  try {
    listing = await api("/examples?limit=200");
  } catch (err) {
    panel.remove(); // no teacher data on this server: no panel
    if (!err.message.startsWith("404")) setStatus(err.message, true);
    return;
  }
  for (const e of listing.examples) {
    $("example-select").append(option(String(e.index), `#${e.index} ${e.sample_id}: ${e.query}`, ""));
  }
  $("example-select").addEventListener("change", () =>
    showExample(Number($("example-select").value)).catch((err) => setStatus(err.message, true)));
  if (listing.examples.length) {
    await showExample(listing.examples[0].index).catch((err) => setStatus(err.message, true));
  }
}

async function ground(event) {
  event.preventDefault();
  const source = selected();
  if (!source) { setStatus("pick or upload a video first", true); return; }
  const request = { query: $("query").value, top_k: Number($("top-k").value) || 1 };
  request[source.kind] = source.name;
  $("submit").disabled = true;
  setStatus("grounding… (the first query on a video extracts its features)");
  document.body.dataset.state = "busy";
  try {
    const result = await api("/ground", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    showMoments(result);
    drawCurves(result);
    $("results").hidden = false;
    const s = result.seconds;
    setStatus(`${result.n_clips} clips, ${fmt(result.duration)} s` + (result.cached ? ", features from cache" : "") +
      (s.extract !== undefined ? `, extraction ${s.extract.toFixed(2)} s` : "") + `, grounding ${s.ground.toFixed(3)} s`);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  } finally {
    $("submit").disabled = false;
  }
}

$("ground-form").addEventListener("submit", ground);
$("video-select").addEventListener("change", loadVideo);
$("upload-input").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) upload(file).catch((err) => setStatus(err.message, true));
});
$("best-moment").addEventListener("click", () => seek(Number($("best-moment").dataset.start)));
$("best-seek").addEventListener("click", () => seek(Number($("best-moment").dataset.start)));
$("player").addEventListener("timeupdate", () => {
  if (duration > 0) $("playhead").style.left = pct($("player").currentTime);
});
init();
