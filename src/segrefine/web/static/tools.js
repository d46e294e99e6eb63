// segrefine web app, part 3 (after app.js and results.js): the scribble,
// box and attention panels, the tabs, and the page's start.
"use strict";

// ---- unsupervised: scribbles + clustering ------------------------------------------------
const SCRIBBLE_COLOURS = 6;

function buildSwatches() {
  const box = $("#scribble-labels");
  for (let k = 0; k < SCRIBBLE_COLOURS; k++) {
    const b = document.createElement("button");
    b.className = "swatch" + (k === 0 ? " chosen" : "");
    b.style.background = vocColour(k + 1);
    b.title = `scribble label ${k + 1}`;
    b.addEventListener("click", () => {
      state.label = k;
      box.querySelectorAll(".swatch").forEach((x) => x.classList.toggle("chosen", x === b));
    });
    box.appendChild(b);
  }
}

function resetCanvas() {
  const img = $("#preview");
  for (const canvas of [$("#scribble-canvas"), $("#box-canvas")]) {
    canvas.width = img.clientWidth; canvas.height = img.clientHeight;
    canvas.style.width = `${img.clientWidth}px`; canvas.style.height = `${img.clientHeight}px`;
  }
  $("#scribble-canvas").hidden = state.tab !== "cluster" || !img.getAttribute("src");
  $("#box-canvas").hidden = state.tab !== "segment" || !state.boxMode || !img.getAttribute("src");
  redrawStrokes();
  redrawBox();
}

// a pointer event on an overlay canvas -> image pixels (floats)
function toImage(ev, canvas = $("#scribble-canvas")) {
  const img = $("#preview");
  const rect = canvas.getBoundingClientRect();
  const sx = img.naturalWidth / rect.width, sy = img.naturalHeight / rect.height;
  return [(ev.clientX - rect.left) * sx, (ev.clientY - rect.top) * sy];
}

function redrawStrokes() {
  const canvas = $("#scribble-canvas"), img = $("#preview");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!img.naturalWidth) return;
  const s = canvas.width / img.naturalWidth;
  ctx.lineCap = "round"; ctx.lineJoin = "round";
  for (const st of state.strokes) {
    ctx.strokeStyle = vocColour(st.label + 1);
    ctx.lineWidth = Math.max(1, st.width * s);
    ctx.beginPath();
    st.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * s, y * s) : ctx.moveTo(x * s, y * s)));
    if (st.points.length === 1) ctx.lineTo(st.points[0][0] * s + 0.1, st.points[0][1] * s);
    ctx.stroke();
  }
}

(function scribbling() {
  const canvas = $("#scribble-canvas");
  let current = null;
  canvas.addEventListener("pointerdown", (ev) => {
    const img = $("#preview");
    const width = Number($("#brush").value) * img.naturalWidth / canvas.width;
    current = { label: state.label, width: Math.max(1, width), points: [toImage(ev)] };
    state.strokes.push(current);
    canvas.setPointerCapture(ev.pointerId);
    redrawStrokes();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!current) return;
    current.points.push(toImage(ev));
    redrawStrokes();
  });
  const end = () => { current = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
})();

$("#clear-scribbles").addEventListener("click", () => { state.strokes = []; redrawStrokes(); });
window.addEventListener("resize", resetCanvas);

$("#run-cluster").addEventListener("click", () => {
  const form = imageForm();
  form.append("scribbles", JSON.stringify(state.strokes));
  form.append("min_labels", $("#min-labels").value);
  form.append("max_iter", $("#max-iter").value);
  form.append("connected", $("#connected").checked ? "1" : "0");
  runJob("/api/cluster", form, $("#run-cluster"), showCluster);
});

function showCluster(s) {
  $("#cluster-results").hidden = false;
  $("#results").hidden = true;
  $("#attention-results").hidden = true;
  let text = `${s.info.segments} segments · ${fmt(s.timings.cluster_s)}`;
  if (s.info.scribble_labels) text += ` · guided by ${s.info.scribble_labels} scribble labels`;
  $("#cluster-timings").textContent = text;
  $("#cluster-input img").src = s.files["input.png"];
  $("#cluster-result img").src = s.files["clusters.png"];
  $("#cluster-scribbles").hidden = !s.files["scribbles.png"];
  if (s.files["scribbles.png"]) $("#cluster-scribbles img").src = s.files["scribbles.png"];
  const legend = $("#cluster-legend");
  legend.replaceChildren();
  for (const seg of s.info.legend) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = `rgb(${seg.colour.join(",")})`;
    span.append(swatch, `segment ${seg.id}: ${(100 * seg.fraction).toFixed(1)} %`);
    legend.appendChild(span);
  }
  const box = $("#cluster-downloads");
  box.replaceChildren();
  downloadLink(box, s.files["cluster_labels.png"], "segment ids (16-bit PNG)");
  downloadLink(box, s.files["clusters.png"], "segments over the image (PNG)");
}

// ---- from a box: drag a rectangle on the image, GrabCut makes the mask to refine ----------
function fillBoxLabels(refiner) {
  const select = $("#box-label"), before = select.value;
  select.replaceChildren();
  // the refiner's classes but background (a class-agnostic refiner's: "object")
  (refiner?.classes || []).forEach((name, c) => { if (c > 0) select.add(new Option(name, String(c))); });
  if ([...select.options].some((o) => o.value === before)) select.value = before;
}

// two corners in image pixels -> a whole-pixel box inside the image, or null when too small
function boxFrom(a, b) {
  const img = $("#preview"), W = img.naturalWidth, H = img.naturalHeight;
  const cx = (v) => Math.min(W, Math.max(0, v)), cy = (v) => Math.min(H, Math.max(0, v));
  const x0 = Math.floor(cx(Math.min(a[0], b[0]))), x1 = Math.ceil(cx(Math.max(a[0], b[0])));
  const y0 = Math.floor(cy(Math.min(a[1], b[1]))), y1 = Math.ceil(cy(Math.max(a[1], b[1])));
  return x1 - x0 >= 2 && y1 - y0 >= 2 ? { x: x0, y: y0, w: x1 - x0, h: y1 - y0 } : null;
}

function redrawBox() {
  const canvas = $("#box-canvas"), img = $("#preview");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const b = state.box;
  if (!b || !img.naturalWidth) return;
  const s = canvas.width / img.naturalWidth;
  ctx.fillStyle = "rgba(0, 0, 0, 0.4)"; // the outside is background
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.clearRect(b.x * s, b.y * s, b.w * s, b.h * s);
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#fff";
  ctx.setLineDash([]);
  ctx.strokeRect(b.x * s, b.y * s, b.w * s, b.h * s);
  ctx.strokeStyle = "#3559e0";
  ctx.setLineDash([6, 4]);
  ctx.strokeRect(b.x * s, b.y * s, b.w * s, b.h * s);
}

function updateBoxStatus() {
  const b = state.box;
  $("#box-status").textContent = b
    ? `Box ${b.w}x${b.h} px at (${b.x}, ${b.y}): GrabCut's mask in it replaces the segmenter. Drag again to redraw.`
    : "Drag a box around one object on the image.";
}

(function boxDrawing() {
  const canvas = $("#box-canvas");
  let start = null;
  canvas.addEventListener("pointerdown", (ev) => {
    start = toImage(ev, canvas);
    state.box = null;
    canvas.setPointerCapture(ev.pointerId);
    redrawBox();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!start) return;
    state.box = boxFrom(start, toImage(ev, canvas));
    redrawBox();
  });
  const end = (ev) => {
    if (!start) return;
    state.box = boxFrom(start, toImage(ev, canvas));
    start = null;
    redrawBox();
    updateBoxStatus();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", () => { start = null; updateBoxStatus(); });
})();

$("#draw-box").addEventListener("click", () => {
  state.boxMode = !state.boxMode;
  if (state.boxMode) $("#mask").value = ""; // a box or a mask, not both
  else state.box = null;
  updateSource();
  if (state.boxMode && !$("#preview").getAttribute("src")) showError("Choose an image first, then drag a box on it.");
});
$("#clear-box").addEventListener("click", () => {
  state.boxMode = false; state.box = null;
  updateSource();
});

// ---- attention: class names in, labels from a Stable Diffusion U-Net's attention out -----
$("#run-attention").addEventListener("click", () => {
  const form = imageForm();
  form.append("classes", $("#attention-classes").value);
  form.append("threshold", $("#attention-threshold").value);
  runJob("/api/attention", form, $("#run-attention"), showAttention);
});

function showAttention(s) {
  $("#attention-results").hidden = false;
  $("#results").hidden = true;
  $("#cluster-results").hidden = true;
  $("#attention-timings").textContent =
    `${fmt(s.timings.attention_s)} · ${s.info.width}x${s.info.height} px`;
  $("#attention-input img").src = s.files["input.png"];
  $("#attention-result img").src = s.files["attention.png"];
  const legend = $("#attention-legend");
  legend.replaceChildren();
  s.info.classes.forEach((name, c) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    // the overlay leaves background clear: its swatch is the image itself
    swatch.style.background = name.toLowerCase() === "background" ? "transparent" : vocColour(c);
    const share = s.info.class_fractions?.[name];
    span.append(swatch, share === undefined ? name : `${name}: ${(100 * share).toFixed(1)} %`);
    legend.appendChild(span);
  });
  const box = $("#attention-downloads");
  box.replaceChildren();
  downloadLink(box, s.files["attention_labels.png"], "labels (PNG, VOC palette)");
  downloadLink(box, s.files["attention_probs.npy"], "probabilities (.npy)");
  downloadLink(box, s.files["attention.png"], "labels over the image (PNG)");
}

// ---- tabs --------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  state.tab = tab.dataset.tab;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  $("#segment-panel").hidden = state.tab !== "segment";
  $("#cluster-panel").hidden = state.tab !== "cluster";
  $("#attention-panel").hidden = state.tab !== "attention";
  resetCanvas();
}));

buildSwatches();
loadExamples().catch((e) => showError(e.message));
loadRuns().catch((e) => showError(e.message));
