// The run page's live refresh: while the run (or a run of its graph) is not final, ask the
// run's JSON view every second and put in what changed. The header, timeline, progress and
// graph come as HTML the server escaped; log lines come as data and are set as text.
(function () {
  "use strict";
  const INTERVAL = 1000;

  function text(tag, value, className) {
    const cell = document.createElement(tag);
    cell.textContent = value;
    if (className) cell.className = className;
    return cell;
  }

  function appendLogs(page, lines) {
    const body = document.getElementById("djt-logs");
    if (!body || !lines.length) return;
    for (const line of lines) {
      const row = document.createElement("tr");
      row.dataset.log = String(line.id);
      row.append(text("td", line.at, "djt-nowrap"), text("td", line.level),
                 text("td", line.logger), text("td", line.message, "djt-wrap"));
      body.append(row);
      page.dataset.logsAfter = String(line.id);
    }
    document.getElementById("djt-logs-section").hidden = false;
  }

  function colourNodes(nodes) {
    for (const [id, [state, colour]] of Object.entries(nodes)) {
      const node = document.querySelector('.djt-graph [data-run="' + CSS.escape(id) + '"]');
      if (!node || node.dataset.state === state) continue;
      node.dataset.state = state;
      const box = node.querySelector("rect");
      if (box) box.setAttribute("fill", colour);
    }
  }

  function apply(page, data) {
    document.getElementById("djt-header").innerHTML = data.header;
    document.getElementById("djt-timeline").innerHTML = data.timeline;
    const progress = document.getElementById("djt-progress");
    if (data.progress) {
      progress.innerHTML = data.progress;
      document.getElementById("djt-progress-section").hidden = false;
    }
    appendLogs(page, data.logs);
    if (data.graph_svg !== undefined) {
      document.getElementById("djt-graph").innerHTML = data.graph_svg;
      document.getElementById("djt-graph-section").hidden = false;
      page.dataset.graphKey = data.graph_key;
    } else {
      colourNodes(data.nodes);
    }
  }

  function start(page) {
    let failures = 0;
    async function tick() {
      if (page.dataset.final === "true") return;
      if (document.hidden) { setTimeout(tick, INTERVAL); return; }
      const url = new URL(page.dataset.liveUrl, window.location.href);
      url.searchParams.set("logs_after", page.dataset.logsAfter || "0");
      url.searchParams.set("graph", page.dataset.graphKey || "");
      try {
        const response = await fetch(url, {credentials: "same-origin",
                                           headers: {Accept: "application/json"}});
        if (!response.ok) throw new Error(response.status);
        const data = await response.json();
        apply(page, data);
        failures = 0;
        if (data.final) { page.dataset.final = "true"; return; }
      } catch (error) {
        failures += 1;  // the server restarts, a network blip: ask again, less often
      }
      setTimeout(tick, INTERVAL * Math.min(1 + failures, 10));
    }
    setTimeout(tick, INTERVAL);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const page = document.querySelector("[data-live-url]");
    if (page) start(page);
  });
})();
