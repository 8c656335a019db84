// The Zart dashboard's only script: live updates, confirmations, and actions without reloading.
// The pages work without it (forms post and redirect back); with it, the part of a page marked
// `<div id="live" data-live="MS">` is fetched again every MS milliseconds (only its fragment: the
// request carries `X-Zart-Live: 1`) and swapped in place, and an action's form is sent by fetch.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var notice = document.getElementById("notice");
  var edited = false; // the user is typing in a form of the live part: do not replace it
  var busy = false;

  function show(message, isError) {
    notice.textContent = message;
    notice.className = isError ? "error" : "notice";
    notice.hidden = false;
  }

  function typing() {
    var active = document.activeElement;
    return edited || (active && live.contains(active) && active.matches("input, textarea, select"));
  }

  function refresh(force) {
    if (!live || busy || document.hidden || (!force && typing())) return Promise.resolve();
    busy = true;
    return fetch(location.href, { headers: { "X-Zart-Live": "1" }, cache: "no-store" })
      .then(function (response) {
        if (response.redirected || response.status === 401) {
          location.reload(); // the session ended: the login form
          return;
        }
        if (response.ok) {
          return response.text().then(function (html) {
            live.innerHTML = html; // rendered and escaped by the server
            live.dataset.updated = String(Date.now());
          });
        }
      })
      .catch(function () { /* the server is away: the next tick tries again */ })
      .then(function () { busy = false; });
  }

  if (live && live.dataset.live) {
    setInterval(refresh, Number(live.dataset.live));
  }

  document.addEventListener("input", function (event) {
    if (live && live.contains(event.target)) edited = true;
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm === undefined) return; // filters, login, logout: an ordinary submit
    event.preventDefault();
    if (!window.confirm(form.dataset.confirm)) return;
    var body = new URLSearchParams(new FormData(form));
    fetch(form.action, { method: "POST", body: body, headers: { "X-Zart-Live": "1" } })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          if (!response.ok) {
            show((answer.error && answer.error.message) || "The action failed (" + response.status + ").", true);
            return;
          }
          if (answer.location) {
            location.assign(answer.location);
            return;
          }
          edited = false;
          show(answer.message || "Done.", false);
          return refresh(true);
        });
      })
      .catch(function () { show("The server did not answer; the action may not have been done.", true); });
  });
})();
