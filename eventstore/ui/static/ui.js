// safenet ui: the little script the pages need, and nothing else.
//  - live tail: follow a server-sent-events source and put each new event on top;
//  - the nodes table: refresh it in place every few seconds.
"use strict";

function startTail(box) {
  const body = document.getElementById("tail-rows");
  const status = document.getElementById("tail-status");
  const count = document.getElementById("tail-count");
  const pause = document.getElementById("tail-pause");
  const keep = Number(box.dataset.keep || 200);
  let paused = false;
  let held = [];
  let received = 0;
  const source = new EventSource(box.dataset.tailSrc);

  function show(state, text) {
    status.className = "live " + state;
    status.querySelector(".text").textContent = text;
  }
  function put(html) {
    const holder = document.createElement("tbody");
    holder.innerHTML = html.trim();
    const row = holder.firstElementChild;
    if (!row) return;
    row.classList.add("fresh");
    const empty = document.getElementById("tail-empty");
    if (empty) empty.remove();
    body.insertBefore(row, body.firstElementChild);
    while (body.children.length > keep) body.lastElementChild.remove();
  }
  source.addEventListener("open", () => show("on", "live"));
  source.addEventListener("append", (message) => {
    const item = JSON.parse(message.data);
    received += 1;
    count.textContent = String(received);
    if (paused) held.push(item.html); else put(item.html);
  });
  source.addEventListener("problem", (message) => {
    const item = JSON.parse(message.data);
    const note = document.getElementById("tail-problem");
    note.textContent = item.message;
    note.hidden = false;
    if (item.fatal) { source.close(); show("off", "stopped"); }
    else show("off", "reconnecting…");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) show("off", "closed");
    else show("off", "reconnecting…");
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { held.forEach(put); held = []; }
    show(paused ? "" : "on", paused ? "paused: new events are held" : "live");
  });
  window.addEventListener("beforeunload", () => source.close());
}

function startRefresh(box) {
  const every = Number(box.dataset.refreshMs || 2000);
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const reply = await fetch(box.dataset.refreshSrc, { headers: { "Accept": "text/html" } });
      if (reply.ok) {
        box.innerHTML = await reply.text();
        box.dataset.refreshed = String(Number(box.dataset.refreshed || 0) + 1);
      }
    } catch (err) {
      // The server may be restarting; the next tick tries again.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-tail-src]").forEach(startTail);
  document.querySelectorAll("[data-refresh-src]").forEach(startRefresh);
});
