"use strict";
const $$ = (id) => document.getElementById(id);
let faces = [], shown = [], cur = 0, undo = [], showRaw = false, showMatte = false, domain = "";
// The grid shows one page of the filtered faces (tens of thousands stay responsive); ?per_page=N
const PER_PAGE = Math.max(1, parseInt(new URLSearchParams(location.search).get("per_page") || "200", 10) || 200);

function fail(msg) { const e = $$("error"); e.textContent = msg; e.style.display = msg ? "block" : "none"; }

function setStatus(s) {
  const p = $$("pending");
  p.textContent = s.pending + " decision" + (s.pending === 1 ? "" : "s") + " pending dvc repro curate ("
    + s.decisions + " in the file)";
  p.dataset.pending = s.pending; p.className = s.pending ? "some" : "";
  $$("file").textContent = s.review_file;
}

async function load() {
  domain = $$("domain").value;
  const r = await fetch("/api/faces?domain=" + encodeURIComponent(domain));
  const j = await r.json();
  if (!r.ok) { fail(j.error); return; }
  fail("");
  faces = j.faces; setStatus(j);
  const reasons = [...new Set(faces.map((f) => f.reason).filter((x) => x))].sort();
  const sel = $$("reason"), keep = sel.value;
  sel.innerHTML = '<option value="">all</option>' + reasons.map((x) => '<option value="' + esc(x) + '">' + esc(x) + "</option>").join("");
  sel.value = reasons.includes(keep) ? keep : "";
  filter();
}

function esc(s) { return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";"); }

// An image URL of face f (crop, matte, raw, dup) as an escaped attribute value.
function src(kind, f, k) {
  return esc("/" + kind + "/" + encodeURIComponent(domain) + "/" + f.i + (k === undefined ? "" : "/" + k));
}

function filter() {
  const st = $$("state").value, re = $$("reason").value, sp = $$("split").value, m = $$("metric").value;
  const lo = parseFloat($$("lo").value), hi = parseFloat($$("hi").value);
  const inRange = (f) => { const v = f.scores[m]; return v !== undefined && !(v < lo) && !(v > hi); };
  const key = shown.length ? shown[cur] : null;
  shown = faces.filter((f) => (!st || f.state === st) && (!re || f.reason === re) && (!sp || f.split === sp)
    && (!m || inRange(f)));
  if (m && $$("sorted").checked) shown.sort((a, b) => a.scores[m] - b.scores[m]);
  const again = key ? shown.findIndex((f) => f.i === key.i) : -1;
  cur = again >= 0 ? again : 0;
  $$("count").textContent = shown.length + " of " + faces.length + " faces";
  draw();
}

function badge(f) {
  return f.decision ? ' <span class="badge ' + esc(f.decision) + '">' + esc(f.decision) + "</span>" : "";
}

function draw() {
  const g = $$("grid"), page = Math.floor(cur / PER_PAGE), first = page * PER_PAGE;
  const pages = Math.max(1, Math.ceil(shown.length / PER_PAGE));
  $$("page").textContent = pages > 1 ? "page " + (page + 1) + " of " + pages : "";
  g.innerHTML = shown.slice(first, first + PER_PAGE).map((f, k) => [f, first + k]).map(([f, n]) =>
    '<div class="face ' + esc(f.state) + (n === cur ? " current" : "") + '" data-n="' + n + '" data-i="' + f.i + '">'
    + (f.crop ? '<img loading="lazy" src="' + src("crop", f) + '" alt="">' : '<div class="noimg">no crop</div>')
    + '<div class="cap">' + esc(f.raw_path.split("/").pop()) + " #" + esc(f.face_index)
    + (f.dups.length ? ' <span class="dup" title="near-duplicates from ingest">&asymp;' + f.dups.length + "</span>" : "") + "</div>"
    + '<div class="cap">' + (f.state === "kept" ? "kept" : esc(f.reason)) + badge(f) + "</div></div>").join("");
  for (const el of g.children) el.onclick = () => { cur = +el.dataset.n; draw(); };
  const c = g.children[cur - first]; if (c) c.scrollIntoView({block: "nearest"});
  detail();
}

function detail() {
  const f = shown[cur], d = $$("detail");
  if (!f) { d.innerHTML = "<p>no face matches the filters</p>"; return; }
  const rows = Object.entries(f.scores).map(([k, v]) => "<tr><td>" + esc(k) + "</td><td>" + esc(v) + "</td></tr>").join("");
  d.innerHTML = "<strong>" + esc(f.raw_path) + "</strong> face " + esc(f.face_index)
    + '<div id="d-state">' + esc(f.state) + (f.reason ? " (" + esc(f.reason) + ")" : "") + "; automatic: " + esc(f.auto)
    + "; split " + esc(f.split) + '</div><div id="d-decision">decision: ' + (f.decision ? badge(f)
    + (f.decision_reason ? " " + esc(f.decision_reason) : "") : "none") + "</div>"
    + (f.crop ? '<img src="' + src("crop", f) + '" width="256" height="256" alt="crop">' : "<p>no aligned crop</p>")
    + "<table>" + rows + "</table>" + (f.detail ? '<p class="keys">' + esc(f.detail) + "</p>" : "")
    + (showMatte && f.crop ? '<img id="matte" src="' + src("matte", f) + '" width="256" height="256" alt="matte">' : "")
    + (showRaw ? '<img id="raw" src="' + src("raw", f) + '" alt="raw image">'
       + (f.dups.length ? '<div class="keys">near-duplicates from ingest:</div><div id="dups">'
          + f.dups.map((g, k) => '<figure><img src="' + src("dup", f, k) + '" alt="duplicate"><figcaption>'
            + esc(g.path) + " (" + esc(g.reason) + ")</figcaption></figure>").join("") + "</div>" : "")
       : '<p class="keys">o: raw image' + (f.dups.length ? " and " + f.dups.length + " near-duplicate(s)" : "")
         + (f.crop ? ", m: matte" : "") + "</p>")
    + '<p class="keys">sha256 ' + esc(f.sha256.slice(0, 16)) + "&hellip;</p>";
}

async function decide(f, decision, reason, note, remember) {
  const prev = {decision: f.decision, reason: f.decision_reason, note: f.note};
  const r = await fetch("/api/decide", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({domain, sha256: f.sha256, face_index: f.face_index, decision, reason, note})});
  const j = await r.json();
  if (!r.ok) { fail(j.error); return; }
  fail("");
  if (remember) undo.push({f, prev});
  f.decision = decision; f.decision_reason = decision ? reason : ""; f.note = decision ? note : "";
  setStatus(j); draw();
  document.body.dataset.saved = String(+(document.body.dataset.saved || 0) + 1);
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
  const f = shown[cur];
  const k = e.key;
  if (k === "j" || k === "ArrowRight" || k === "ArrowDown") { cur = Math.min(cur + 1, shown.length - 1); draw(); }
  else if (k === "k" || k === "ArrowLeft" || k === "ArrowUp") { cur = Math.max(cur - 1, 0); draw(); }
  else if (k === "n" || k === "PageDown") { cur = Math.min((Math.floor(cur / PER_PAGE) + 1) * PER_PAGE, Math.max(shown.length - 1, 0)); draw(); }
  else if (k === "p" || k === "PageUp") { cur = Math.max((Math.floor(cur / PER_PAGE) - 1) * PER_PAGE, 0); draw(); }
  else if (k === "r" && f) decide(f, "reject", $$("why").value, f.note || "", true);
  else if (k === "a" && f) decide(f, "keep", $$("why").value, f.note || "", true);
  else if (k === "u") { const last = undo.pop(); if (last) decide(last.f, last.prev.decision, last.prev.reason, last.prev.note, false); }
  else if (k === "o") { showRaw = !showRaw; detail(); }
  else if (k === "m") { showMatte = !showMatte; detail(); }
  else return;
  e.preventDefault();
});
for (const id of ["state", "reason", "split", "metric", "sorted"]) $$(id).onchange = () => { filter(); $$(id).blur(); };
for (const id of ["lo", "hi"]) $$(id).oninput = () => filter();
$$("domain").onchange = () => { undo = []; load(); $$("domain").blur(); };
load();
