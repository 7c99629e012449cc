/* Face parser page: upload a photo, show its parsing, recolour lips and hair.
 *
 * Plain script, no build step, nothing loaded from outside. document.body.dataset.state is
 * "idle" (no photo), "busy" (a request is running or about to), "ready" or "error", so that
 * tests and people can tell what is going on.
 */
(function () {
  "use strict";

  var RECOLOR_DEBOUNCE_MS = 350;
  var FORMAT_EXT = { png: "png", jpeg: "jpg", webp: "webp" };

  function $(id) { return document.getElementById(id); }

  var el = {
    apiKey: $("api-key"),
    error: $("error"),
    status: $("status"),
    dropZone: $("drop-zone"),
    fileInput: $("file-input"),
    fileName: $("file-name"),
    original: $("original-img"),
    parsing: $("parsing-img"),
    before: $("before-img"),
    result: $("result-img"),
    legend: $("legend"),
    download: $("download-link"),
    format: $("format"),
    lipFinish: $("lip-finish"),
    modelInfo: $("model-info"),
    modePhoto: $("mode-photo"),
    modeLive: $("mode-live"),
    parts: {
      lip: {
        enabled: $("lip-enabled"), color: $("lip-color"), colorValue: $("lip-color-value"),
        intensity: $("lip-intensity"), intensityValue: $("lip-intensity-value"), fieldset: $("lip-controls")
      },
      hair: {
        enabled: $("hair-enabled"), color: $("hair-color"), colorValue: $("hair-color-value"),
        intensity: $("hair-intensity"), intensityValue: $("hair-intensity-value"), fieldset: $("hair-controls")
      }
    }
  };

  var state = {
    file: null,          // the File being worked on
    generation: 0,       // bumped on every new file; answers for older files are dropped
    inflight: 0,         // requests running now
    debounceTimer: null, // a recolour waiting for the user to stop moving a control
    recolorCtrl: null,   // AbortController of the running recolour
    parseCtrl: null,     // AbortController of the running parse
    errors: {},          // channel ("model" | "parse" | "recolor") -> message
    urls: {},            // element id -> object URL shown there (revoked when replaced)
    modelLoaded: false,
    hasResult: false,
    staleInLive: false   // the controls changed in Live mode: recolour the photo on the way back
  };

  /* ---------- state and messages ---------- */

  function render() {
    var busy = state.inflight > 0 || state.debounceTimer !== null;
    var messages = [];
    Object.keys(state.errors).forEach(function (k) {
      var m = state.errors[k];
      if (m && messages.indexOf(m) === -1) messages.push(m);
    });

    var s;
    if (busy) s = "busy";
    else if (messages.length) s = "error";
    else if (state.file) s = "ready";
    else s = "idle";
    document.body.dataset.state = s;
    document.body.setAttribute("aria-busy", busy ? "true" : "false");

    if (messages.length) {
      el.error.textContent = "";
      var title = document.createElement("strong");
      title.textContent = messages.length > 1 ? "Something went wrong:" : "Something went wrong.";
      el.error.appendChild(title);
      if (messages.length === 1) {
        el.error.appendChild(document.createTextNode(" " + messages[0]));
      } else {
        var ul = document.createElement("ul");
        messages.forEach(function (m) {
          var li = document.createElement("li");
          li.textContent = m;
          ul.appendChild(li);
        });
        el.error.appendChild(ul);
      }
      el.error.hidden = false;
    } else {
      el.error.hidden = true;
      el.error.textContent = "";
    }

    var text;
    if (busy) text = state.hasResult ? "Updating the result…" : "Working on your photo…";
    else if (!state.file) text = "Choose a photo to begin.";
    else if (messages.length) text = "Could not finish; see the message above.";
    else if (!anyPartEnabled()) text = "Parsing ready. Turn on lips or hair to recolour.";
    else text = "Done. Adjust the colours to try another look.";
    if (el.status.textContent !== text) el.status.textContent = text;
  }

  function setError(channel, message) {
    if (message) state.errors[channel] = message;
    else delete state.errors[channel];
    render();
  }

  /* ---------- HTTP ---------- */

  function authHeaders() {
    var key = (el.apiKey.value || "").trim();
    return key ? { "X-API-Key": key } : {};
  }

  // Turns a failed response into words for people; the API answers {"error", "detail"}.
  function describeFailure(res, body) {
    var detail = "";
    if (body && typeof body === "object") {
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail) && body.detail.length && body.detail[0].msg) {
        detail = body.detail.map(function (d) { return d.msg; }).join("; ");
      } else if (typeof body.error === "string") detail = body.error.replace(/_/g, " ");
    } else if (typeof body === "string" && body.trim() && body.trim().charAt(0) !== "<") {
      detail = body.trim().slice(0, 300);
    }
    if (!detail) {
      if (res.status === 401 || res.status === 403) detail = "The server needs a valid API key. Enter it above and try again.";
      else if (res.status === 413) detail = "The photo is too large for the server.";
      else if (res.status === 429 || res.status === 503) detail = "The server is busy. Please try again in a moment.";
      else if (res.status >= 500) detail = "The server had a problem handling the request.";
      else detail = "The server could not handle the request.";
    }
    return detail + " (HTTP " + res.status + ")";
  }

  function readFailure(res) {
    var type = res.headers.get("content-type") || "";
    var p = type.indexOf("json") !== -1 ? res.json() : res.text();
    return p.catch(function () { return null; }).then(function (body) {
      var err = new Error(describeFailure(res, body));
      err.status = res.status;
      throw err;
    });
  }

  // fetch() that counts itself as in flight and turns every failure into an Error with words.
  function request(url, options) {
    state.inflight += 1;
    render();
    return fetch(url, options)
      .catch(function (e) {
        if (e && e.name === "AbortError") throw e;
        throw new Error("Could not reach the server. Check your connection and try again.");
      })
      .then(function (res) {
        if (!res.ok) return readFailure(res);
        return res;
      })
      .finally(function () {
        state.inflight -= 1;
        render();
      });
  }

  function isAbort(e) { return e && e.name === "AbortError"; }

  /* ---------- images ---------- */

  function showBlob(img, blob) {
    var url = URL.createObjectURL(blob);
    var old = state.urls[img.id];
    state.urls[img.id] = url;
    img.src = url;
    img.hidden = false;
    setPlaceholder(img, null);
    if (old && old !== url && old !== state.urls.__shared) {
      // Keep the old one until the new one is decoded so the picture does not flicker.
      var done = function () { URL.revokeObjectURL(old); };
      if (img.decode) img.decode().then(done, done); else setTimeout(done, 1000);
    }
    return url;
  }

  function clearImage(img, placeholderText) {
    var old = state.urls[img.id];
    delete state.urls[img.id];
    img.removeAttribute("src");
    img.hidden = true;
    setPlaceholder(img, placeholderText);
    if (old && old !== state.urls.__shared) URL.revokeObjectURL(old);
  }

  function setPlaceholder(img, text) {
    var p = img.parentNode.querySelector('.placeholder[data-for="' + img.id + '"]');
    if (!p) return;
    if (text === null) { p.hidden = true; return; }
    if (typeof text === "string") p.textContent = text;
    p.hidden = false;
  }

  function showOriginal(file) {
    // One object URL for the photo itself, shown as "Original" and as "Before".
    if (state.urls.__shared) URL.revokeObjectURL(state.urls.__shared);
    var url = URL.createObjectURL(file);
    state.urls.__shared = url;
    [el.original, el.before].forEach(function (img) {
      delete state.urls[img.id];
      img.onerror = function () {
        img.hidden = true;
        setPlaceholder(img, "This browser cannot preview the file");
      };
      img.src = url;
      img.hidden = false;
      setPlaceholder(img, null);
    });
  }

  /* ---------- model and legend ---------- */

  function rgbCss(c) {
    if (!Array.isArray(c) || c.length < 3) return "transparent";
    return "rgb(" + (c[0] | 0) + ", " + (c[1] | 0) + ", " + (c[2] | 0) + ")";
  }

  function renderLegend(labels) {
    el.legend.textContent = "";
    labels.forEach(function (lab) {
      var li = document.createElement("li");
      li.className = "legend-item";
      li.dataset.labelId = String(lab.id);
      li.dataset.name = lab.name || "";
      var chip = document.createElement("span");
      chip.className = "legend-chip";
      chip.setAttribute("aria-hidden", "true");
      chip.style.backgroundColor = rgbCss(lab.color);
      var text = document.createElement("span");
      text.textContent = lab.display_name || lab.name || ("Class " + lab.id);
      li.appendChild(chip);
      li.appendChild(text);
      el.legend.appendChild(li);
    });
    if (!labels.length) {
      var empty = document.createElement("li");
      empty.className = "legend-empty";
      empty.textContent = "The model lists no classes.";
      el.legend.appendChild(empty);
    }
  }

  function loadModel() {
    return request("v1/model", { headers: authHeaders() })
      .then(function (res) { return res.json(); })
      .then(function (info) {
        state.modelLoaded = true;
        renderLegend(Array.isArray(info.labels) ? info.labels : []);
        var bits = [];
        if (info.version) bits.push("version " + info.version);
        if (info.device) bits.push("on " + info.device);
        if (info.dtype) bits.push(info.dtype);
        if (info.input_size) bits.push(info.input_size + " px input");
        el.modelInfo.textContent = "Model: " + (bits.length ? bits.join(", ") : "ready");
        setError("model", null);
      })
      .catch(function (e) {
        if (isAbort(e)) return;
        el.legend.textContent = "";
        var li = document.createElement("li");
        li.className = "legend-empty";
        li.textContent = "The legend could not be loaded.";
        el.legend.appendChild(li);
        el.modelInfo.textContent = "Model: unavailable";
        setError("model", "Could not load the model's classes: " + e.message);
      });
  }

  /* ---------- parse ---------- */

  function runParse() {
    var file = state.file;
    var gen = state.generation;
    if (!file) return Promise.resolve();
    if (state.parseCtrl) state.parseCtrl.abort();
    var ctrl = new AbortController();
    state.parseCtrl = ctrl;
    setError("parse", null);
    var body = new FormData();
    body.append("image", file, file.name || "photo");
    return request("parse?format=color&overlay=true", {
      method: "POST", body: body, headers: authHeaders(), signal: ctrl.signal
    })
      .then(function (res) {
        // faces=auto found nobody: say so rather than show an all-background parsing without a word
        if (res.headers.get("X-Faces-Found") === "0") {
          setError("parse", "No face was found in this photo, so nothing is labelled or recoloured. " +
                   "Try a photo where the face is upright and clearly visible.");
        }
        return res.blob();
      })
      .then(function (blob) {
        if (gen !== state.generation) return;
        showBlob(el.parsing, blob);
      })
      .catch(function (e) {
        if (isAbort(e) || gen !== state.generation) return;
        clearImage(el.parsing, "No parsing");
        setError("parse", e.message);
      })
      .finally(function () {
        if (state.parseCtrl === ctrl) state.parseCtrl = null;
      });
  }

  /* ---------- recolour ---------- */

  function anyPartEnabled() {
    return el.parts.lip.enabled.checked || el.parts.hair.enabled.checked;
  }

  function cancelPendingRecolor() {
    if (state.debounceTimer !== null) {
      clearTimeout(state.debounceTimer);
      state.debounceTimer = null;
    }
    if (state.recolorCtrl) {
      state.recolorCtrl.abort();
      state.recolorCtrl = null;
    }
  }

  // Live mode shares the controls (live.js streams with them) and hides the photo: recolouring it there
  // would only cost the server work nobody sees.
  function inLiveMode() { return el.modeLive.checked; }

  function scheduleRecolor() {
    if (!state.file) { render(); return; }
    if (inLiveMode()) { state.staleInLive = true; return; }
    if (state.debounceTimer !== null) clearTimeout(state.debounceTimer);
    state.debounceTimer = setTimeout(function () {
      state.debounceTimer = null;
      runRecolor();
    }, RECOLOR_DEBOUNCE_MS);
    render();
  }

  function clearResult(text) {
    clearImage(el.result, text);
    state.hasResult = false;
    el.download.setAttribute("aria-disabled", "true");
    el.download.setAttribute("href", "#");
  }

  function runRecolor() {
    var file = state.file;
    var gen = state.generation;
    if (!file) return Promise.resolve();
    if (state.recolorCtrl) state.recolorCtrl.abort();
    setError("recolor", null);

    if (!anyPartEnabled()) {
      state.recolorCtrl = null;
      clearResult("Turn on lips or hair to recolour");
      render();
      return Promise.resolve();
    }

    var fmt = el.format.value || "png";
    var body = new FormData();
    body.append("image", file, file.name || "photo");
    ["lip", "hair"].forEach(function (part) {
      var p = el.parts[part];
      if (!p.enabled.checked) return;
      body.append(part + "_color", p.color.value);
      body.append(part + "_intensity", Number(p.intensity.value).toFixed(2));
    });
    if (el.parts.lip.enabled.checked) body.append("lip_finish", el.lipFinish.value);
    body.append("format", fmt);

    var ctrl = new AbortController();
    state.recolorCtrl = ctrl;
    return request("recolor", { method: "POST", body: body, headers: authHeaders(), signal: ctrl.signal })
      .then(function (res) { return res.blob(); })
      .then(function (blob) {
        if (gen !== state.generation || state.recolorCtrl !== ctrl) return;
        var url = showBlob(el.result, blob);
        state.hasResult = true;
        var base = (file.name || "photo").replace(/\.[^.]*$/, "") || "photo";
        el.download.href = url;
        el.download.download = base + "-recolored." + (FORMAT_EXT[fmt] || fmt);
        el.download.removeAttribute("aria-disabled");
      })
      .catch(function (e) {
        if (isAbort(e) || gen !== state.generation) return;
        if (!state.hasResult) setPlaceholder(el.result, "No result");
        setError("recolor", e.message);
      })
      .finally(function () {
        if (state.recolorCtrl === ctrl) state.recolorCtrl = null;
        render();
      });
  }

  /* ---------- file handling ---------- */

  function useFile(file) {
    if (!file) return;
    state.generation += 1;
    state.file = file;
    cancelPendingRecolor();
    if (state.parseCtrl) { state.parseCtrl.abort(); state.parseCtrl = null; }
    delete state.errors.parse;
    delete state.errors.recolor;
    el.fileName.textContent = "Selected: " + (file.name || "photo") + " (" + formatBytes(file.size) + ")";
    showOriginal(file);
    clearImage(el.parsing, "Parsing…");
    clearResult("Recolouring…");
    if (!state.modelLoaded) loadModel();
    runParse();
    runRecolor();
  }

  function formatBytes(n) {
    if (!isFinite(n)) return "?";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
    return (n / (1024 * 1024)).toFixed(1) + " MB";
  }

  el.fileInput.addEventListener("change", function () {
    var f = el.fileInput.files && el.fileInput.files[0];
    if (f) useFile(f);
    el.fileInput.value = ""; // so that choosing the same file again (say, after fixing the key) runs again
  });

  // Drag and drop: the whole page refuses to navigate to a dropped file; the zone takes it.
  ["dragover", "drop"].forEach(function (type) {
    window.addEventListener(type, function (ev) { ev.preventDefault(); });
  });
  var dragDepth = 0;
  el.dropZone.addEventListener("dragenter", function (ev) {
    ev.preventDefault();
    dragDepth += 1;
    el.dropZone.classList.add("dragging");
  });
  el.dropZone.addEventListener("dragover", function (ev) {
    ev.preventDefault();
    if (ev.dataTransfer) ev.dataTransfer.dropEffect = "copy";
  });
  el.dropZone.addEventListener("dragleave", function () {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) el.dropZone.classList.remove("dragging");
  });
  el.dropZone.addEventListener("drop", function (ev) {
    ev.preventDefault();
    dragDepth = 0;
    el.dropZone.classList.remove("dragging");
    var files = ev.dataTransfer && ev.dataTransfer.files;
    if (files && files.length) useFile(files[0]);
  });

  /* ---------- controls ---------- */

  function syncPart(part) {
    var p = el.parts[part];
    p.colorValue.textContent = p.color.value;
    p.intensityValue.textContent = Number(p.intensity.value).toFixed(2);
    p.fieldset.classList.toggle("disabled", !p.enabled.checked);
    p.color.disabled = !p.enabled.checked;
    p.intensity.disabled = !p.enabled.checked;
    var buttons = p.fieldset.querySelectorAll(".swatch");
    for (var i = 0; i < buttons.length; i++) {
      var b = buttons[i];
      b.disabled = !p.enabled.checked;
      b.setAttribute("aria-pressed", String(b.dataset.color.toLowerCase() === p.color.value.toLowerCase()));
    }
  }

  Object.keys(el.parts).forEach(function (part) {
    var p = el.parts[part];
    var onChange = function () { syncPart(part); scheduleRecolor(); };
    p.color.addEventListener("input", onChange);
    p.color.addEventListener("change", onChange);
    p.intensity.addEventListener("input", onChange);
    p.intensity.addEventListener("change", onChange);
    p.enabled.addEventListener("change", onChange);
    var buttons = p.fieldset.querySelectorAll(".swatch");
    for (var i = 0; i < buttons.length; i++) {
      var chip = buttons[i].querySelector(".chip");
      if (chip) chip.style.backgroundColor = buttons[i].dataset.color;
      buttons[i].title = buttons[i].textContent.trim() + " " + buttons[i].dataset.color;
      buttons[i].addEventListener("click", function (ev) {
        p.color.value = ev.currentTarget.dataset.color;
        onChange();
      });
    }
    syncPart(part);
  });

  el.modeLive.addEventListener("change", function () {
    // a recolour still waiting for the user to stop moving a control waits for Photo mode
    if (state.debounceTimer === null) return;
    clearTimeout(state.debounceTimer);
    state.debounceTimer = null;
    state.staleInLive = true;
    render();
  });
  el.modePhoto.addEventListener("change", function () {
    if (!state.staleInLive) return;
    state.staleInLive = false;
    scheduleRecolor();
  });

  el.format.addEventListener("change", scheduleRecolor);
  el.lipFinish.addEventListener("change", scheduleRecolor);
  document.getElementById("recolor-form").addEventListener("submit", function (ev) { ev.preventDefault(); });

  el.download.addEventListener("click", function (ev) {
    if (el.download.getAttribute("aria-disabled") === "true") ev.preventDefault();
  });

  // A new key may unlock what failed before.
  el.apiKey.addEventListener("change", function () {
    if (!state.modelLoaded) loadModel();
    if (state.file && (state.errors.parse || state.errors.recolor)) {
      delete state.errors.parse;
      delete state.errors.recolor;
      runParse();
      runRecolor();
    }
  });

  render();
  loadModel();
})();
