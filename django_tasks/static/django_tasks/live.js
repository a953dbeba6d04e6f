// The run page's live refresh: while the run (or a run of its graph) is not final, ask the
// run's JSON view every second and put in what changed. The header, timeline, progress and
// graph come as HTML the server escaped; log lines come as data and are set as text.
(function () {
  "use strict";
  const INTERVAL = 1000;  // while the run itself runs
  const GRAPH_INTERVAL = 5000;  // the run is done; runs of its graph are not
  const LOG_ROWS_KEPT = 2000;
  const CATCH_UP = 150;  // between batches of a run that logs faster than one answer takes  // a page left open on a chatty run keeps the newest lines

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
    while (body.rows.length > LOG_ROWS_KEPT) body.deleteRow(0);
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
    if (data.progress) {
      document.getElementById("djt-progress").innerHTML = data.progress;
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
    let finalSeen = false;
    function next(delay) { setTimeout(tick, delay); }
    async function tick() {
      if (page.dataset.final === "true") return;
      if (document.hidden) { next(INTERVAL); return; }
      const url = new URL(page.dataset.liveUrl, window.location.href);
      url.searchParams.set("logs_after", page.dataset.logsAfter || "0");
      url.searchParams.set("graph", page.dataset.graphKey || "");
      let response;
      try {
        response = await fetch(url, {credentials: "same-origin",
                                     headers: {Accept: "application/json"}});
      } catch (error) {  // the network, a server restarting: ask again, less often
        failures += 1;
        next(INTERVAL * Math.min(1 + failures, 10));
        return;
      }
      // Signed out (sent to the login page), refused, gone: asking again will not help.
      if (response.redirected || [400, 401, 403, 404, 405].includes(response.status)) {
        page.dataset.final = "true";
        return;
      }
      let data;
      try {
        if (!response.ok) throw new Error(String(response.status));  // a 5xx, a 429: may pass
        data = await response.json();
        apply(page, data);
      } catch (error) {  // or a body cut short, a proxy's page: ask again, less often
        failures += 1;
        next(INTERVAL * Math.min(1 + failures, 10));
        return;
      }
      failures = 0;
      if (data.more_logs) { next(CATCH_UP); return; }  // a batch of lines: the rest soon
      if (data.final) {
        // Once more a moment later: a clock between hosts, or a late batch of lines.
        if (finalSeen) { page.dataset.final = "true"; return; }
        finalSeen = true;
      } else {
        finalSeen = false;
      }
      next(data.run_settled ? GRAPH_INTERVAL : INTERVAL);
    }
    next(INTERVAL);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const page = document.querySelector("[data-live-url]");
    if (page) start(page);
  });
})();
