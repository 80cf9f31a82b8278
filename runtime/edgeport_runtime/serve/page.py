"""The page at `/`: try the model from a browser. One self-contained HTML file (no CDN: devices are offline)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeport serve</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  #model { color: #555; font-size: .9rem; margin-bottom: 1rem; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 1.4rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a7; background: #efe; }
  #preview { max-height: 96px; image-rendering: pixelated; display: none; margin: .5rem auto 0; }
  textarea { width: 100%; height: 5rem; font-family: monospace; box-sizing: border-box; }
  fieldset { border: 1px solid #ddd; border-radius: 8px; margin: 1rem 0; }
  table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
  td, th { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eee; }
  td:nth-child(3) { width: 45%; }
  .bar { background: #2a7; height: .7rem; border-radius: 3px; }
  #error { color: #b00; white-space: pre-wrap; }
  #latency { color: #555; }
  .hidden { display: none; }
</style>
</head>
<body>
<h1>edgeport serve</h1>
<div id="model">loading model info...</div>
<div id="auth" class="hidden">
  <label>Bearer token <input id="token" type="password" size="32"></label>
</div>
<fieldset>
  <legend>Image</legend>
  <div id="drop">Drop an image here, or <label><u>pick one</u>
    <input id="file" type="file" accept="image/*" style="display:none"></label>
    <img id="preview" alt="the image sent">
  </div>
</fieldset>
<fieldset>
  <legend>Numbers</legend>
  <textarea id="numbers" placeholder="one sample's values, separated by commas or spaces"></textarea>
  <label><input id="raw" type="checkbox" checked> raw values (apply the bundle's preprocessing, as for a CSV row)</label>
  <button id="send-numbers">Predict</button>
</fieldset>
<div id="error"></div>
<div id="result" class="hidden">
  <table><thead><tr><th>label</th><th>score</th><th></th></tr></thead><tbody id="topk"></tbody></table>
  <p id="latency"></p>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let tokenNeeded = false;

function headers(contentType) {
  const h = {"Content-Type": contentType};
  if (tokenNeeded && $("token").value) h["Authorization"] = "Bearer " + $("token").value;
  return h;
}

function showError(msg) {
  $("error").textContent = msg;
  $("result").classList.add("hidden");
}

async function loadInfo() {
  const r = await fetch("info", {headers: headers("application/json")});
  if (r.status === 401) {
    tokenNeeded = true;
    $("auth").classList.remove("hidden");
    $("model").textContent = "this service needs a bearer token: enter it, then predict";
    $("token").addEventListener("change", loadInfo);
    return;
  }
  const d = await r.json();
  const inp = d.inputs[0];
  $("model").textContent = `${d.artifact || d.path} on ${d.backend} (${d.threads} threads), input ` +
    `[${inp.shape.map((v) => v === null ? "N" : v).join(", ")}]` + (d.labels && d.labels.length ?
    `, ${d.labels.length} classes` : "");
}

async function send(body, contentType) {
  $("error").textContent = "";
  const t0 = performance.now();
  let r;
  try {
    r = await fetch("predict?top=5", {method: "POST", headers: headers(contentType), body: body});
  } catch (e) {
    showError("request failed: " + e);
    return;
  }
  const rtt = performance.now() - t0;
  const d = await r.json();
  if (!r.ok) {
    showError(`${r.status}: ${d.error}`);
    return;
  }
  const rows = d.results && d.results[0] && d.results[0].top;
  const tbody = $("topk");
  tbody.textContent = "";
  if (rows) {
    for (const t of rows) {
      const tr = document.createElement("tr");
      tr.className = "topk-row";
      const pct = Math.max(0, Math.min(1, t.score)) * 100;
      tr.innerHTML = "<td class='label'></td><td class='score'></td><td><div class='bar'></div></td>";
      tr.querySelector(".label").textContent = t.label;
      tr.querySelector(".score").textContent = t.score.toFixed(4);
      tr.querySelector(".bar").style.width = pct.toFixed(1) + "%";
      tbody.appendChild(tr);
    }
  } else {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td colspan='3'></td>";
    tr.firstChild.textContent = JSON.stringify(d.results ? d.results[0] : d.outputs).slice(0, 300);
    tbody.appendChild(tr);
  }
  $("latency").textContent = `model ${d.time_ms.model_ms.toFixed(3)} ms (batch of ${d.time_ms.batch}), ` +
    `server ${d.time_ms.total.toFixed(3)} ms, round trip ${rtt.toFixed(1)} ms`;
  $("result").classList.remove("hidden");
}

function sendFile(file) {
  if (!file) return;
  const img = $("preview");
  img.src = URL.createObjectURL(file);
  img.style.display = "block";
  send(file, file.type || "image/png");
}

$("file").addEventListener("change", (e) => sendFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  sendFile(e.dataTransfer.files[0]);
});
$("send-numbers").addEventListener("click", () => {
  const text = $("numbers").value.trim();
  const values = text.split(/[\\s,;]+/).filter((v) => v !== "").map(Number);
  if (!values.length || values.some((v) => !Number.isFinite(v))) {
    showError("enter numbers separated by commas or spaces");
    return;
  }
  send(JSON.stringify({inputs: values, raw: $("raw").checked}), "application/json");
});
loadInfo().catch((e) => { $("model").textContent = "cannot read /info: " + e; });
</script>
</body>
</html>
"""
