// Forum Sentinel console: charts (uPlot, shipped beside this file) and live updates by polling.
// Everything shown comes from the server already escaped; this script only moves server HTML
// (parsed inertly by DOMParser) and sets text, never builds markup from data.
"use strict";

const POLL_MS = 2000;

function shadeSpans(spans, end) {
  // A uPlot hook drawing each incident span as a band behind the series.
  return (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.fillStyle = "rgba(220, 60, 60, 0.12)";
    for (const s of spans) {
      const x0 = u.valToPos(s.start, "x", true);
      const x1 = u.valToPos(s.end === null ? end : s.end, "x", true);
      const left = Math.max(x0, u.bbox.left), right = Math.min(x1, u.bbox.left + u.bbox.width);
      if (right > left) ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
    }
    ctx.restore();
  };
}

function drawCharts() {
  const holder = document.getElementById("chart-data");
  if (!holder || typeof uPlot === "undefined") return;
  const data = JSON.parse(holder.textContent);
  for (const el of document.querySelectorAll(".chart")) {
    const s = data[el.dataset.chart];
    const end = s.t.length ? s.t[s.t.length - 1] : 0;
    const width = Math.max(el.clientWidth, 320);
    let series, values;
    // A share, volume or score point covers one slice of `s.per` (an hour over 24 h): its axis says
    // so, since a point's posts per hour and per minute differ sixtyfold.
    const per = s.per ? ` per ${s.per}` : "";
    const yLabel = {evidence: "evidence (nats)", shares: `share${per}`, volume: `posts${per}`}[el.dataset.kind] || `mean score${per}`;
    if (el.dataset.kind === "evidence") {
      const line = s.t.map(() => s.threshold);
      series = [{}, {label: "sentiment_drop (nats)", stroke: "#c0392b"}, {label: "sentiment_surge (nats)", stroke: "#27ae60"},
                {label: "volume_spike (nats)", stroke: "#2c3e50"}, {label: "threshold", stroke: "#7f8c8d", dash: [6, 4]}];
      values = [s.t, s.sentiment_drop, s.sentiment_surge, s.volume_spike, line];
    } else if (el.dataset.kind === "shares") {
      series = [{}, {label: "negative", stroke: "#c0392b"}, {label: "positive", stroke: "#27ae60"}, {label: "neutral", stroke: "#7f8c8d"}];
      values = [s.t, s.negative, s.positive, s.neutral];
    } else if (el.dataset.kind === "volume") {
      series = [{}, {label: "posts", stroke: "#2c3e50", fill: "rgba(44, 62, 80, 0.15)"}];
      values = [s.t, s.posts];
    } else {
      series = [{}, {label: "mean score", stroke: "#8e44ad"}];
      values = [s.t, s.mean_score];
    }
    // Axes and legend in UTC, as the page says, whatever the browser's own time zone; the time
    // axis and the legend's time name it, as a chart read on its own carries no page footer.
    series[0] = {label: "time (UTC)"};
    const opts = {width, height: 200, series, hooks: {drawClear: [shadeSpans(data.spans, end)]},
                  axes: [{label: "time (UTC)"}, {label: yLabel}],
                  tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
                  scales: el.dataset.kind === "shares" ? {y: {range: [0, 1]}} : {}};
    new uPlot(opts, values, el);
  }
}

async function poll() {
  const kind = document.body.dataset.live;
  if (!kind) return;
  let last = null;
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      const v = await (await fetch("/api/version", {credentials: "same-origin"})).json();
      // The overview follows new posts too; incident pages only alert changes.
      const mark = kind === "overview" ? `${v.alerts}|${v.data}` : v.alerts;
      // The first mark refreshes too: what changed between rendering the page and this first poll
      // would otherwise never show (a swing judged within those two seconds stayed off the page).
      if (mark !== last && !(await refresh())) continue;  // not shown: the next poll tries again
      // The overview's rows may be a shared read a few seconds older than the data (its
      // data-version): remember what the page shows, so the next poll refreshes again until the
      // rows have caught up, even if no post comes after.
      last = kind === "overview" ? `${v.alerts}|${shownVersion()}` : mark;
    } catch (e) {
      // The console or Redis is briefly away: keep the page and try again.
    }
  }
}

function shownVersion() {
  const live = document.getElementById("live");
  return live ? live.dataset.version : "";
}

async function refresh() {
  const response = await fetch(location.href, {credentials: "same-origin"});
  if (!response.ok) return false;
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = doc.getElementById("live"), here = document.getElementById("live");
  if (!fresh || !here) return false;
  const next = document.importNode(fresh, true);
  // A form in the live part (/incidents' silence form) stays the same element: its fresh copy reset
  // what was being typed, and what a refused post had filled in again, 2 s after the page loaded.
  const typing = here.contains(document.activeElement) ? document.activeElement : null;
  for (const form of here.querySelectorAll("form[data-keep]")) {
    const twin = next.querySelector(`form[data-keep="${form.dataset.keep}"]`);
    if (twin) twin.replaceWith(form);
  }
  here.replaceWith(next);
  if (typing && typing.isConnected) typing.focus();  // moved out and back: the cursor stays where it was
  return true;
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  poll();
});
