// segrefine web app: plain JavaScript, no external assets (the page works offline).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  file: null, example: null, runs: null, strokes: [], label: 0, tab: "segment",
  boxMode: false, box: null, // "from a box": the box in image pixels {x, y, w, h}, once drawn
};

// The PASCAL VOC colour map, as the server draws overlays with it.
function vocColour(label) {
  let r = 0, g = 0, b = 0, c = label;
  for (let shift = 7; shift >= 0; shift--) {
    r |= (c & 1) << shift; g |= ((c >> 1) & 1) << shift; b |= ((c >> 2) & 1) << shift;
    c >>= 3;
  }
  return `rgb(${r},${g},${b})`;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
  if (message) resetProgress(); // an error never stands beside a bar that reads "done"
}

function resetProgress() {
  $("#progress-wrap").hidden = true;
  $("#progress").value = 0;
  $("#stage").textContent = "";
  $("#elapsed").textContent = "";
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body;
  try { body = await response.json(); } catch (e) { body = { error: `server answered ${response.status}` }; }
  if (!response.ok) throw new Error(body.error || `server answered ${response.status}`);
  return body;
}

// ---- runs and examples -------------------------------------------------------------------
async function loadRuns() {
  const runs = await getJSON("/api/runs");
  state.runs = runs;
  $("#runs-root").textContent = runs.root ?? "the model zoo (no --runs folder)";
  $("#size-limit").textContent = `Images up to ${runs.max_megapixels} megapixels (the server's limit).`;
  const seg = $("#segmenter"), ref = $("#refiner");
  seg.replaceChildren(); ref.replaceChildren();
  for (const s of runs.segmenters) {
    seg.add(new Option(`${s.name}  (${s.model}, ${s.classes.join("/")})`, s.name));
  }
  ref.add(new Option("none (segmenter only)", ""));
  for (const r of runs.refiners) {
    ref.add(new Option(`${r.name}  (${r.mode}, ${r.classes.join("/")})`, r.name));
  }
  matchRefiners();
  $("#tab-attention").hidden = !runs.attention; // only with serve --attention-model
  const notes = $("#run-notes");
  notes.replaceChildren();
  for (const n of runs.notes) {
    const li = document.createElement("li");
    li.textContent = n;
    notes.appendChild(li);
  }
}

// Refiners whose classes differ from the chosen segmenter's cannot refine it: disable them and
// pick the first one that fits (or none).
function matchRefiners() {
  const seg = (state.runs?.segmenters || []).find((s) => s.name === $("#segmenter").value);
  const ownMask = Boolean($("#mask").files[0]) || state.boxMode;
  const ref = $("#refiner");
  let first = null;
  for (const option of ref.options) {
    const r = state.runs.refiners.find((x) => x.name === option.value);
    if (!r) continue;
    // a class-agnostic refiner takes any classes; an uploaded mask is checked by the server,
    // a box takes its class from the refiner
    const fits = r.class_agnostic || ownMask || (seg && r.classes.join("/") === seg.classes.join("/"));
    option.disabled = !fits;
    option.textContent = `${r.name}  (${r.mode}, ${r.classes.join("/")})` + (fits ? "" : " - other classes");
    if (fits && first === null) first = option.value;
  }
  const current = ref.selectedOptions[0];
  if (!current || current.disabled || current.value === "") ref.value = first ?? "";
  updateDefaults();
}

function updateDefaults() {
  const name = $("#refiner").value;
  const r = (state.runs?.refiners || []).find((x) => x.name === name);
  for (const key of ["steps", "strength", "samples"]) {
    const input = $(`#${key}`);
    input.placeholder = r && r.defaults[key] != null ? r.defaults[key] : "";
    input.disabled = !r;
  }
  $("#flip").disabled = !r;
  fillBoxLabels(r);
}

async function loadExamples() {
  const examples = await getJSON("/api/examples");
  const box = $("#examples");
  for (const ex of examples) {
    const img = document.createElement("img");
    img.src = ex.url; img.alt = ex.name; img.title = ex.name; img.className = "example";
    img.dataset.id = ex.id;
    img.addEventListener("click", () => chooseExample(ex, img));
    box.appendChild(img);
  }
}

function chooseExample(ex, img) {
  state.example = ex.id; state.file = null;
  $("#file").value = "";
  document.querySelectorAll(".example").forEach((e) => e.classList.toggle("chosen", e === img));
  setPreview(ex.url, ex.name);
}

function setPreview(url, name) {
  const preview = $("#preview");
  preview.onload = resetCanvas;
  preview.onerror = () => { preview.removeAttribute("src"); resetCanvas(); };
  preview.src = url;
  $("#input-name").textContent = name;
  forgetImage();
  showError("");
}

// a new image: nothing of the previous one stays attached (its mask, box, scribbles, results)
function forgetImage() {
  $("#mask").value = "";
  $("#input-size").value = "";
  state.strokes = [];
  state.box = null; // in the old image's pixels; box mode stays on, to draw on the new one
  lastSegment = null;
  zoomAt = null;
  for (const id of ["#results", "#cluster-results", "#attention-results", "#zoom"]) $(id).hidden = true;
  updateSource();
}

function takeFile(file) {
  if (!file) return;
  state.file = file; state.example = null;
  document.querySelectorAll(".example").forEach((e) => e.classList.remove("chosen"));
  setPreview(URL.createObjectURL(file), `${file.name} (${(file.size / 1024).toFixed(0)} KB)`);
}

$("#file").addEventListener("change", (ev) => takeFile(ev.target.files[0]));

// drop a file on the image panel, or paste one anywhere (a screenshot, a copied image)
(function dropAndPaste() {
  const panel = $("#input-panel");
  panel.addEventListener("dragover", (ev) => { ev.preventDefault(); panel.classList.add("dropping"); });
  panel.addEventListener("dragleave", () => panel.classList.remove("dropping"));
  panel.addEventListener("drop", (ev) => {
    ev.preventDefault();
    panel.classList.remove("dropping");
    takeFile(ev.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (ev) => {
    const file = [...(ev.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) { ev.preventDefault(); takeFile(file); }
  });
})();

function imageForm() {
  const form = new FormData();
  if (state.file) form.append("file", state.file, state.file.name);
  else if (state.example !== null) form.append("example", state.example);
  return form;
}

// ---- jobs --------------------------------------------------------------------------------
let runningJob = null; // the id of the job the page waits for: the Cancel button ends it

async function runJob(url, form, button, onDone) {
  showError("");
  button.disabled = true;
  const wrap = $("#progress-wrap");
  resetProgress();
  try {
    const { job } = await getJSON(url, { method: "POST", body: form });
    runningJob = job;
    $("#cancel-job").disabled = false;
    wrap.hidden = false;
    for (;;) {
      const s = await getJSON(`/api/jobs/${job}`);
      $("#progress").value = s.fraction;
      $("#stage").textContent = s.state === "queued" ? "queued" : s.stage;
      $("#elapsed").textContent = `${s.elapsed_s.toFixed(1)} s`;
      if (s.state === "done") { onDone(s); break; }
      if (s.state === "error") throw new Error(s.error);
      if (s.state === "cancelled") throw new Error("Cancelled.");
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (err) {
    // an old result under a new error would read as this input's result
    $("#results").hidden = true;
    $("#cluster-results").hidden = true;
    $("#attention-results").hidden = true;
    showError(err.message);
  } finally {
    runningJob = null;
    resetProgress();
    button.disabled = false;
  }
}

// a waiting job ends at once, a running one at its next step; the polling above sees it
$("#cancel-job").addEventListener("click", async () => {
  if (!runningJob) return;
  $("#cancel-job").disabled = true;
  try {
    await getJSON(`/api/jobs/${runningJob}`, { method: "DELETE" });
  } catch (err) {
    // it ended meanwhile (409): the polling shows how
  }
});

function fmt(seconds) { return seconds < 1 ? `${(seconds * 1000).toFixed(0)} ms` : `${seconds.toFixed(2)} s`; }

function downloadLink(box, href, text) {
  const a = document.createElement("a");
  a.href = `${href}?download=1`; a.textContent = text; a.setAttribute("download", "");
  box.appendChild(a);
}

// ---- segment + refine --------------------------------------------------------------------
let lastSegment = null;

// "refine my mask": an uploaded mask replaces the segmenter
$("#mask").addEventListener("change", () => {
  if ($("#mask").files[0]) { state.boxMode = false; state.box = null; } // one or the other
  updateSource();
});

// what replaces the segmenter, if anything: an uploaded mask or a box drawn on the image
function updateSource() {
  const own = Boolean($("#mask").files[0]);
  $("#mask-note").hidden = !own;
  $("#box-note").hidden = !state.boxMode;
  $("#draw-box").classList.toggle("active", state.boxMode);
  $("#draw-box").setAttribute("aria-pressed", String(state.boxMode));
  $("#segmenter").disabled = own || state.boxMode;
  updateBoxStatus();
  resetCanvas();
  matchRefiners();
}
$("#clear-mask").addEventListener("click", () => {
  $("#mask").value = "";
  $("#mask").dispatchEvent(new Event("change"));
});

$("#run-segment").addEventListener("click", () => {
  const form = imageForm();
  const mask = $("#mask").files[0];
  if (state.boxMode) {
    if (!state.box) { showError("Drag a box around an object on the image first (or clear the box)."); return; }
    if (!$("#box-label").value) { showError("Choose a refiner run: the box's class is one of its classes."); return; }
    form.append("box", JSON.stringify({ ...state.box, label: Number($("#box-label").value) }));
  } else if (mask) {
    form.append("mask", mask, mask.name);
    if ($("#input-size").value) form.append("input_size", $("#input-size").value);
  }
  form.append("segmenter", $("#segmenter").value);
  form.append("refiner", $("#refiner").value);
  for (const key of ["steps", "strength", "samples"]) form.append(key, $(`#${key}`).value);
  if ($("#flip").checked) form.append("flip", "1");
  runJob("/api/segment", form, $("#run-segment"), showSegment);
});

$("#refiner").addEventListener("change", updateDefaults);
$("#segmenter").addEventListener("change", matchRefiners);

