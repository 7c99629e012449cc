/* Live mode of the page: the camera (getUserMedia) streamed to WS /recolor/live, recoloured frames shown.
 *
 * The colour, intensity and finish controls are the photo mode's; a change is sent as a new settings
 * message. At most MAX_IN_FLIGHT frames are unanswered at a time, so the server never has to drop one
 * and the shown latency is exact (answers come in order). document.body.dataset.live is "off",
 * "starting", "streaming" or "error"; dataset.liveFrames counts the frames shown.
 */
(function () {
  "use strict";

  var SEND_MAX_SIDE = 480;   // frames are scaled down to this before sending
  var MAX_IN_FLIGHT = 2;
  var JPEG_QUALITY = 0.8;
  var SETTINGS_DEBOUNCE_MS = 120;

  function $(id) { return document.getElementById(id); }

  var el = {
    modePhoto: $("mode-photo"), modeLive: $("mode-live"), section: $("live-section"),
    start: $("live-start"), stop: $("live-stop"), video: $("live-camera"), out: $("live-img"),
    stats: $("live-stats"), status: $("live-status"), apiKey: $("api-key"), lipFinish: $("lip-finish")
  };
  var live = {
    ws: null, stream: null, sentAt: [], answeredAt: [], latencyMs: null, dropped: 0, shown: 0,
    capturing: false, timer: null, settingsTimer: null, url: null, canvas: document.createElement("canvas"),
    generation: 0  // bumped by every start and stop; a start that finds it changed after an await gives up
  };

  function setLive(state, message) {
    document.body.dataset.live = state;
    if (message) el.status.textContent = message;
    el.start.disabled = state === "starting" || state === "streaming";
    el.stop.disabled = !el.start.disabled;
  }

  function settings() {
    var s = { faces: "auto", lip_finish: el.lipFinish.value };
    ["lip", "hair"].forEach(function (part) {
      if (!$(part + "-enabled").checked) return;
      s[part + "_color"] = $(part + "-color").value;
      s[part + "_intensity"] = Number($(part + "-intensity").value);
    });
    var key = el.apiKey.value.trim();
    if (key) s.api_key = key;  // a browser cannot set headers on a WebSocket
    return s;
  }

  function sendSettings() {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(settings()));
  }

  function socketUrl() {
    var url = new URL("recolor/live", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setLive("error", "This browser gives no camera to this page (a camera needs https or localhost).");
      return;
    }
    var gen = ++live.generation;
    setLive("starting", "Opening the camera…");
    // Stop or Photo mode may come while the camera opens (a permission prompt can take minutes).
    navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
      .then(function (stream) {
        if (gen !== live.generation) { stopTracks(stream); return; }
        live.stream = stream;
        el.video.srcObject = stream;
        return el.video.play();
      })
      .then(function () {
        if (gen === live.generation) openSocket();
      })
      .catch(function (e) {
        if (gen !== live.generation) return;
        stop();
        setLive("error", "The camera could not be opened: " + (e && e.message ? e.message : e));
      });
  }

  function stopTracks(stream) {
    stream.getTracks().forEach(function (t) { t.stop(); });
  }

  function openSocket() {
    var ws = new WebSocket(socketUrl());
    ws.binaryType = "blob";
    live.ws = ws;
    live.sentAt = [];
    ws.onopen = function () {
      if (live.ws !== ws) return;
      sendSettings();
      setLive("streaming", "Live: the camera picture goes to the server and comes back recoloured.");
      live.timer = setInterval(pump, 15);
    };
    ws.onmessage = onMessage;
    ws.onclose = function (ev) {
      if (live.ws !== ws) return;
      var normal = ev.code === 1000 || ev.code === 1005;
      stop();
      setLive(normal ? "off" : "error",
              normal ? "Live stopped." : "The server ended the stream (" + ev.code + "): " + (ev.reason || "no reason given"));
    };
  }

  function pump() {
    var video = el.video;
    if (!live.ws || live.ws.readyState !== WebSocket.OPEN || live.capturing) return;
    if (live.sentAt.length >= MAX_IN_FLIGHT || !video.videoWidth) return;
    var scale = Math.min(1, SEND_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    var c = live.canvas;
    c.width = Math.round(video.videoWidth * scale);
    c.height = Math.round(video.videoHeight * scale);
    c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
    live.capturing = true;
    c.toBlob(function (blob) {
      live.capturing = false;
      if (!blob || !live.ws || live.ws.readyState !== WebSocket.OPEN) return;
      live.ws.send(blob);
      live.sentAt.push(performance.now());
    }, "image/jpeg", JPEG_QUALITY);
  }

  function answered() {
    var now = performance.now();
    var sent = live.sentAt.shift();
    if (sent !== undefined) live.latencyMs = now - sent;
    live.answeredAt.push(now);
    while (live.answeredAt.length && live.answeredAt[0] < now - 1000) live.answeredAt.shift();
  }

  function onMessage(ev) {
    if (ev.target !== live.ws) return;
    if (typeof ev.data !== "string") {
      answered();
      var old = live.url;
      live.url = URL.createObjectURL(ev.data);
      el.out.src = live.url;
      // The <img> keeps showing the older picture it decoded until the new one is ready, and an older
      // one still loading is abandoned: the old URL is no longer needed.
      if (old) URL.revokeObjectURL(old);
      el.out.hidden = false;
      var placeholder = el.section.querySelector('.placeholder[data-for="live-img"]');
      if (placeholder) placeholder.hidden = true;
      live.shown += 1;
      document.body.dataset.liveFrames = String(live.shown);
    } else {
      var msg = JSON.parse(ev.data);
      if (msg.type === "stats") live.dropped = msg.dropped;
      if (msg.type === "error") {
        if (/^frame \d+:/.test(msg.detail)) live.sentAt.shift();  // that frame gets no picture
        el.status.textContent = msg.detail;
      }
    }
    el.stats.textContent = live.answeredAt.length + " fps · " +
      (live.latencyMs === null ? "–" : Math.round(live.latencyMs) + " ms") + " · " + live.dropped + " dropped";
  }

  function stop() {
    live.generation += 1;
    clearInterval(live.timer);
    live.timer = null;
    var ws = live.ws;
    live.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    if (live.stream) stopTracks(live.stream);
    live.stream = null;
    el.video.srcObject = null;
    releaseShownUrl();
    if (document.body.dataset.live !== "error") setLive("off", "Live stopped.");
  }

  // The last frame stays on show; its URL goes once the <img> has it (revoked before, it would not load).
  function releaseShownUrl() {
    var url = live.url;
    live.url = null;
    if (!url) return;
    var done = function () { URL.revokeObjectURL(url); };
    if (el.out.complete) done(); else el.out.decode().then(done, done);
  }

  function setMode() {
    var isLive = el.modeLive.checked;
    document.body.dataset.mode = isLive ? "live" : "photo";
    el.section.hidden = !isLive;
    var photoOnly = document.querySelectorAll("[data-photo-only]");
    for (var i = 0; i < photoOnly.length; i++) photoOnly[i].hidden = isLive;
    if (!isLive && document.body.dataset.live !== "off") stop();
  }

  el.modePhoto.addEventListener("change", setMode);
  el.modeLive.addEventListener("change", setMode);
  el.start.addEventListener("click", start);
  el.stop.addEventListener("click", function () { stop(); setLive("off", "Live stopped."); });
  // colour pickers and sliders fire "input" while moving; the presets are buttons ("click")
  ["input", "change", "click"].forEach(function (type) {
    document.getElementById("recolor-form").addEventListener(type, function () {
      clearTimeout(live.settingsTimer);
      live.settingsTimer = setTimeout(sendSettings, SETTINGS_DEBOUNCE_MS);
    });
  });
  setLive("off");
  setMode();
})();
