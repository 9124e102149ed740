// pixfleet upload page: pick or drop images, upload them (through the API, or straight to S3 with
// a presigned POST above a size threshold), follow each job live, show its variants; a live panel
// of queue depth and running workers. Plain JavaScript, no build step.
"use strict";

(() => {
  const MiB = 1024 * 1024;
  const TERMINAL = new Set(["succeeded", "failed", "rejected"]);
  const JOB_POLL_MS = 1000;
  const FLEET_POLL_MS = 2000;
  const FLEET_WINDOW_S = 300;

  const $ = (selector) => document.querySelector(selector);
  const els = {
    form: $("#upload-form"), files: $("#files"), drop: $("#drop"), picked: $("#picked"),
    preset: $("#preset"), threshold: $("#threshold"), apiKey: $("#api-key"), upload: $("#upload"),
    status: $("#form-status"), jobs: $("#jobs"), jobsEmpty: $("#jobs-empty"), announce: $("#announce"),
    fleetNow: $("#fleet-now"), chart: $("#fleet-chart"),
  };
  const jobs = [];
  let chosen = [];

  // --- talking to the API ----------------------------------------------------------------------

  function headers(extra = {}) {
    const key = els.apiKey.value.trim();
    return key ? { ...extra, "X-API-Key": key } : extra;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    return { response, body };
  }

  function errorText(body, response) {
    const error = body && body.error;
    return error ? `${error.code}: ${error.message}` : `HTTP ${response.status}`;
  }

  function setStatus(text, isError = false) {
    els.status.textContent = text;
    els.status.classList.toggle("error", isError);
  }

  async function loadPresets() {
    try {
      const { response, body } = await api("/v1/presets");
      if (!response.ok) {
        setStatus(errorText(body, response) + (response.status === 401 ? " — enter the API key above." : ""), true);
        return;
      }
      const current = els.preset.value;
      els.preset.replaceChildren(...body.presets.map((p) => new Option(`${p.name} — ${p.description}`, p.name)));
      const names = body.presets.map((p) => p.name);
      els.preset.value = names.includes(current) ? current : (names.includes("web") ? "web" : names[0]);
      setStatus("");
    } catch (err) {
      setStatus(`Cannot reach the API: ${err.message}`, true);
    }
  }

  // --- choosing files ---------------------------------------------------------------------------

  function choose(fileList) {
    chosen = Array.from(fileList || []);
    els.picked.textContent = chosen.length
      ? `${chosen.length} file${chosen.length > 1 ? "s" : ""} chosen: ${chosen.map((f) => f.name).join(", ")}`
      : "No files chosen.";
    els.upload.disabled = chosen.length === 0;
  }

  els.files.addEventListener("change", () => choose(els.files.files));
  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (event) => { event.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
  }
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    choose(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  els.apiKey.value = localStorage.getItem("pixfleet.apiKey") || "";
  els.apiKey.addEventListener("change", () => {
    localStorage.setItem("pixfleet.apiKey", els.apiKey.value.trim());
    loadPresets();
  });

  // --- uploading --------------------------------------------------------------------------------

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const files = chosen;
    const preset = els.preset.value;
    els.files.value = "";
    choose([]);
    for (const file of files) start(file, preset);
  });

  function thresholdBytes() {
    const value = parseFloat(els.threshold.value);
    return Number.isFinite(value) && value >= 0 ? value * MiB : 8 * MiB;
  }

  async function start(file, preset) {
    const job = { file, preset, status: "uploading", jobId: null, route: file.size > thresholdBytes() ? "direct" : "api" };
    job.el = renderJob(job);
    jobs.push(job);
    try {
      const accepted = job.route === "direct" ? await uploadDirect(file, preset) : await uploadThroughApi(file, preset);
      job.jobId = accepted.job_id;
      update(job, "queued");
    } catch (err) {
      update(job, "rejected", { reason: err.message });
    }
  }

  async function uploadThroughApi(file, preset) {
    const form = new FormData();
    form.append("file", file, file.name);
    const { response, body } = await api(`/v1/images?preset=${encodeURIComponent(preset)}`, { method: "POST", body: form });
    if (response.status !== 202) throw new Error(errorText(body, response));
    return body;
  }

  async function uploadDirect(file, preset) {
    const type = (file.type || "").startsWith("image/") ? file.type : "image/jpeg";
    const query = `preset=${encodeURIComponent(preset)}&content_type=${encodeURIComponent(type)}`;
    const { response, body } = await api(`/v1/uploads?${query}`, { method: "POST" });
    if (response.status !== 201) throw new Error(errorText(body, response));
    const form = new FormData();
    // The fields are everything S3 needs besides the file (Content-Type included), in order.
    for (const [name, value] of Object.entries(body.upload.fields)) form.append(name, value);
    form.append(body.upload.file_field || "file", file, file.name); // the file must come last
    let answer;
    try {
      answer = await fetch(body.upload.url, { method: "POST", body: form });
    } catch (err) {
      throw new Error(`direct upload to S3 failed: ${err.message}`);
    }
    if (!answer.ok) {
      const text = await answer.text();
      const code = (text.match(/<Code>([^<]+)<\/Code>/) || [])[1];
      const message = (text.match(/<Message>([^<]+)<\/Message>/) || [])[1];
      throw new Error(`S3 refused the upload: ${code || `HTTP ${answer.status}`}${message ? `: ${message}` : ""}`);
    }
    return body;
  }

  // --- following jobs ---------------------------------------------------------------------------

  async function pollJobs() {
    const open = jobs.filter((job) => job.jobId && !TERMINAL.has(job.status));
    await Promise.all(open.map(async (job) => {
      try {
        const { response, body } = await api(`/v1/jobs/${job.jobId}`);
        if (response.ok && body.status !== job.status) update(job, body.status, body);
      } catch { /* try again next round */ }
    }));
    setTimeout(pollJobs, JOB_POLL_MS);
  }

  function kib(bytes) {
    return bytes >= MiB ? `${(bytes / MiB).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
  }

  function element(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") el.textContent = value;
      else el.setAttribute(name, value);
    }
    el.append(...children);
    return el;
  }

  function renderJob(job) {
    const route = job.route === "direct" ? "straight to S3 (presigned POST)" : "through the API";
    const li = element("li", { class: "job", "data-status": job.status, "data-name": job.file.name, "data-route": job.route },
      element("div", { class: "job-head" },
        element("span", { class: "job-name", text: job.file.name }),
        element("span", { class: "state", text: job.status }),
        element("span", { class: "meta", text: `${kib(job.file.size)} · ${route}` })),
      element("p", { class: "reason", hidden: "" }),
      element("ul", { class: "thumbs", "aria-label": `variants of ${job.file.name}` }));
    els.jobs.append(li);
    els.jobsEmpty.hidden = true;
    return li;
  }

  function seconds(from, to) {
    const a = Date.parse(from), b = Date.parse(to);
    return Number.isFinite(a) && Number.isFinite(b) ? `${((b - a) / 1000).toFixed(2)} s` : null;
  }

  function update(job, status, detail = {}) {
    job.status = status;
    job.el.dataset.status = status;
    job.el.querySelector(".state").textContent = status;
    if (job.jobId) job.el.dataset.jobId = job.jobId;
    const reason = detail.reason || (detail.error ? `${detail.error.code}: ${detail.error.message}` : null);
    if (reason) {
      const p = job.el.querySelector(".reason");
      p.textContent = reason;
      p.hidden = false;
    }
    if (status === "succeeded") {
      const took = seconds(detail.submitted_at, detail.finished_at);
      if (took) job.el.querySelector(".meta").textContent += ` · done in ${took}`;
      showVariants(job, detail.outputs || []);
    }
    if (TERMINAL.has(status)) els.announce.textContent = `${job.file.name}: ${status}${reason ? ` (${reason})` : ""}`;
  }

  async function showVariants(job, outputs) {
    const list = job.el.querySelector(".thumbs");
    for (const output of outputs) {
      const img = element("img", { class: "thumb", alt: `${output.variant} of ${job.file.name}` });
      const caption = `${output.variant} · ${output.format} ${output.width}×${output.height} · ${kib(output.bytes)}`;
      list.append(element("li", {}, element("figure", {}, img, element("figcaption", { text: caption }))));
      try {
        // fetch() rather than <img src>: it can carry the API key.
        const response = await fetch(`/v1/jobs/${job.jobId}/outputs/${encodeURIComponent(output.variant)}`, { headers: headers() });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        img.addEventListener("load", () => { img.dataset.loaded = "true"; }, { once: true });
        img.src = URL.createObjectURL(await response.blob());
      } catch (err) {
        img.alt = `${output.variant}: could not load (${err.message})`;
      }
    }
  }

  // --- the fleet panel --------------------------------------------------------------------------

  const samples = [];
  const SVG = "http://www.w3.org/2000/svg";

  async function pollFleet() {
    try {
      const { response, body } = await api("/v1/fleet");
      if (response.ok) {
        const q = body.queue;
        samples.push({ t: Date.now() / 1000, depth: q.visible + q.in_flight + q.delayed, workers: body.workers });
        while (samples.length && samples[0].t < Date.now() / 1000 - FLEET_WINDOW_S) samples.shift();
        const workers = body.workers == null ? "unknown" : `${body.workers} running` + (body.desired_workers == null ? "" : ` (desired ${body.desired_workers})`);
        els.fleetNow.textContent = `Queue: ${q.visible} waiting, ${q.in_flight} in flight, ${q.delayed} delayed — workers: ${workers}.`;
        drawFleet();
      } else {
        els.fleetNow.textContent = `Fleet unavailable: ${errorText(body, response)}`;
      }
    } catch (err) {
      els.fleetNow.textContent = `Fleet unavailable: ${err.message}`;
    }
    setTimeout(pollFleet, FLEET_POLL_MS);
  }

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
    return el;
  }

  function drawFleet() {
    const W = 600, H = 170, left = 8, right = 8, top = 16, bottom = 20;
    const now = Date.now() / 1000;
    const x = (t) => left + (1 - (now - t) / FLEET_WINDOW_S) * (W - left - right);
    const maxDepth = Math.max(1, ...samples.map((s) => s.depth));
    const maxWorkers = Math.max(1, ...samples.map((s) => s.workers || 0));
    const yDepth = (v) => H - bottom - (v / maxDepth) * (H - top - bottom);
    const yWorkers = (v) => H - bottom - (v / (maxWorkers * 1.15)) * (H - top - bottom); // headroom: not on the frame
    const parts = [svg("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, stroke: "currentColor", "stroke-opacity": "0.3" })];
    if (samples.length) {
      const area = samples.map((s) => `L${x(s.t).toFixed(1)},${yDepth(s.depth).toFixed(1)}`).join("");
      parts.push(svg("path", { class: "depth", d: `M${x(samples[0].t).toFixed(1)},${H - bottom}${area}L${x(samples.at(-1).t).toFixed(1)},${H - bottom}Z` }));
      const known = samples.filter((s) => s.workers != null);
      if (known.length) {
        const steps = known.map((s, i) => `${i ? "H" : "M"}${x(s.t).toFixed(1)}${i ? "V" : ","}${yWorkers(s.workers).toFixed(1)}`).join("");
        parts.push(svg("path", { class: "workers", d: steps }));
      }
    }
    const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; return t; };
    parts.push(label(`max ${maxDepth} messages`, { x: left, y: 12 }), label(`max ${maxWorkers} workers`, { x: W - right, y: 12, "text-anchor": "end" }));
    parts.push(label(`-${FLEET_WINDOW_S / 60} min`, { x: left, y: H - 4 }), label("now", { x: W - right, y: H - 4, "text-anchor": "end" }));
    els.chart.replaceChildren(...parts);
  }

  loadPresets();
  pollJobs();
  pollFleet();
})();
