// segrefine web app, part 2 (after app.js, whose helpers and state it uses): the results of a
// segment job -- the figures, legend, instance counts, downloads and the full-resolution
// close-up.
"use strict";

// ---- segment + refine: the results -------------------------------------------------------
function showSegment(s) {
  lastSegment = s;
  zoomAt = null;
  $("#zoom").hidden = true;
  $("#results").hidden = false;
  $("#cluster-results").hidden = true;
  $("#attention-results").hidden = true;
  const t = s.timings;
  let text = t.segment_s !== undefined ? `segmenter ${fmt(t.segment_s)}` : "your mask";
  if (s.info.coarse === "box") text = `your box · GrabCut ${fmt(t.grabcut_s)}`;
  if (t.refine_s !== undefined) text += ` · refiner ${fmt(t.refine_s)} (${s.info.nfe} denoiser evaluations)`;
  text += ` · ${s.info.width}x${s.info.height} px`;
  $("#timings").textContent = text;
  const notice = $("#notice"); // how an uploaded mask was read (0/255, one class only, ...)
  notice.textContent = s.info.mask_note ? `Note: ${s.info.mask_note}.` : "";
  notice.hidden = !s.info.mask_note;
  $("#result-refined").hidden = t.refine_s === undefined;
  $("#result-segmenter figcaption").textContent = coarseName(s);
  $("#result-uncertainty").hidden = t.refine_s === undefined;
  const legend = $("#legend");
  legend.replaceChildren();
  s.info.classes.forEach((name, c) => {
    if (name === "background") return;
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = vocColour(c);
    span.append(swatch, name); // a run's class names are text, never markup
    legend.appendChild(span);
  });
  const box = $("#downloads");
  box.replaceChildren();
  const source = sourceName(s); // whose labels the "segmenter" files hold
  downloadLink(box, s.files["segmenter_labels.png"], `${source} labels (PNG)`);
  downloadLink(box, s.files["segmenter_probs.npy"], `${source} probabilities (.npy)`);
  if (s.files["refined_labels.png"]) {
    downloadLink(box, s.files["refined_labels.png"], "refined labels (PNG)");
    downloadLink(box, s.files["refined_probs.npy"], "refined probabilities (.npy)");
    downloadLink(box, s.files["uncertainty.npy"], "uncertainty (.npy)");
  }
  downloadLink(box, s.files["segmenter.png"], `${source} overlay (PNG)`);
  if (s.files["refined.png"]) {
    downloadLink(box, s.files["refined.png"], "refined overlay (PNG)");
    downloadLink(box, s.files["uncertainty.png"], "uncertainty map (PNG)");
  }
  drawView();
}

function coarseName(s) {
  return { mask: "Your mask", box: "From your box" }[s.info.coarse] || "Segmenter";
}

// the coarse input's files are named after where they came from, not always "segmenter"
function sourceName(s) {
  return { mask: "your mask's", box: "GrabCut's (your box)" }[s.info.coarse] || "segmenter";
}

function drawView() {
  const s = lastSegment;
  if (!s) return;
  const inst = $("#view-instances").checked;
  const suffix = inst ? "_instances" : "";
  // semantic view: the labels' colours as a layer over the image, at the chosen opacity
  const before = $("#before").checked;
  $("#result-input img").src = s.files["input.png"];
  $("#result-segmenter img").src = inst ? s.files["segmenter_instances.png"] : s.files["input.png"];
  $("#result-segmenter .layer").src = s.files["segmenter_layer.png"];
  if (s.files["refined.png"]) {
    const shown = before ? "segmenter" : "refined";
    $("#result-refined img").src = inst ? s.files[`${shown}_instances.png`] : s.files["input.png"];
    $("#result-refined .layer").src = s.files[`${shown}_layer.png`];
    $("#refined-caption").textContent = before ? `${coarseName(s)} (before), for comparison` : "Refined";
  }
  document.querySelectorAll(".stack .layer").forEach((l) => { l.hidden = inst; });
  if (s.files["uncertainty.png"]) $("#result-uncertainty img").src = s.files["uncertainty.png"];
  $("#legend").hidden = inst;
  const table = $("#instances-table");
  table.hidden = !inst;
  if (inst) {
    const refined = s.info.refined_instances || [];
    const head = [`${coarseName(s).toLowerCase()}: instances`];
    if (refined.length) head.push("refined: instances");
    // cells as text: class names come from a run's config, which anyone may have written
    const rows = [tableRow("th", ["class", ...head])];
    s.info.segmenter_instances.forEach((row, i) => {
      const cells = [row.class, row.instances];
      if (refined.length) cells.push(refined[i].instances);
      rows.push(tableRow("td", cells));
    });
    table.replaceChildren(...rows);
  }
}

function tableRow(tag, cells) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const cell = document.createElement(tag);
    cell.textContent = String(value);
    tr.appendChild(cell);
  }
  return tr;
}

// ---- full-resolution close-up: click a result, see image | segmenter | refined there -------
let zoomAt = null;

function showZoom() {
  if (!lastSegment || !zoomAt) return;
  const side = $("#zoom-side").value;
  $("#zoom-at").textContent = `(${zoomAt.x}, ${zoomAt.y})`;
  $("#zoom-img").src = `/api/jobs/${lastSegment.id}/zoom?x=${zoomAt.x}&y=${zoomAt.y}&side=${side}`;
  $("#zoom").hidden = false;
}

for (const id of ["#result-input", "#result-segmenter", "#result-refined", "#result-uncertainty"]) {
  $(`${id} img`).addEventListener("click", (event) => {
    if (!lastSegment) return;
    const img = event.target, rect = img.getBoundingClientRect();
    const fx = (event.clientX - rect.left) / rect.width, fy = (event.clientY - rect.top) / rect.height;
    zoomAt = {
      x: Math.min(lastSegment.info.width - 1, Math.max(0, Math.floor(fx * lastSegment.info.width))),
      y: Math.min(lastSegment.info.height - 1, Math.max(0, Math.floor(fy * lastSegment.info.height))),
    };
    showZoom();
  });
}
$("#zoom-side").addEventListener("change", showZoom);

document.querySelectorAll("input[name=view]").forEach((r) => r.addEventListener("change", drawView));
$("#before").addEventListener("change", drawView);
$("#opacity").addEventListener("input", () => {
  $("#results").style.setProperty("--layer-opacity", $("#opacity").value / 100);
});
