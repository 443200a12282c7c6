// nemorun dashboard: refresh the [data-live] part of the page, stream logs, confirm cancels.
"use strict";
(function () {
  const REFRESH_MS = 2000;

  function dialogOpen() { return document.querySelector("dialog[open]") !== null; }

  // Re-fetch this page and swap its live part (states come from the store, kept fresh by
  // the server's poller); skipped while a confirmation is open.
  function refreshLive() {
    const live = document.querySelector("[data-live]");
    if (!live) return;
    setInterval(async function () {
      if (dialogOpen() || document.hidden) return;
      try {
        const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = doc.querySelector("[data-live]");
        if (fresh) { live.innerHTML = fresh.innerHTML; wireConfirms(live); }
        const total = doc.getElementById("total"), here = document.getElementById("total");
        if (total && here) here.textContent = total.textContent;
      } catch (e) { /* the server restarts: try again next time */ }
    }, REFRESH_MS);
  }

  function wireConfirms(root) {
    root.querySelectorAll("button[data-confirm]").forEach(function (button) {
      const dialog = button.parentElement.querySelector("dialog");
      if (!dialog) return;
      button.addEventListener("click", function () { dialog.showModal(); });
      dialog.querySelector("button.close").addEventListener("click", function () { dialog.close(); });
    });
  }

  let source = null;
  function streamLogs() {
    const pane = document.getElementById("log");
    if (!pane) return;
    const status = document.getElementById("logstate");
    const form = document.getElementById("logsel");
    function open() {
      if (source) source.close();
      pane.textContent = "";
      const params = new URLSearchParams({ handle: pane.dataset.handle });
      new FormData(form).forEach(function (value, key) { if (value) params.set(key, value); });
      source = new EventSource("/logs?" + params.toString());
      status.textContent = "streaming…";
      source.onmessage = function (event) {
        const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
        pane.appendChild(document.createTextNode(event.data + "\n"));
        if (atEnd) pane.scrollTop = pane.scrollHeight;
      };
      source.addEventListener("problem", function (event) { status.textContent = "error: " + event.data; });
      source.addEventListener("end", function (event) {
        status.textContent = "ended: " + event.data; status.dataset.ended = event.data; source.close();
      });
      source.onerror = function () { if (!status.dataset.ended) status.textContent = "reconnecting…"; };
    }
    form.addEventListener("change", open);
    open();
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireConfirms(document);
    refreshLive();
    streamLogs();
  });
})();
