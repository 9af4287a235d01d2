// Shows the log of a work request in <pre id="log">, and follows it while
// the request runs: it asks the dashboard's log route (the API's, as the
// signed-in visitor) for what came after the bytes it has, every two
// seconds, until the log is the stored artifact of a finished request.
// Text is added as text nodes only, never as markup.
"use strict";
(function () {
  const pre = document.getElementById("log");
  if (!pre) {
    return;
  }
  const state = document.getElementById("log-state");
  const url = pre.dataset.url;
  let follow = pre.dataset.follow === "true";
  const decoder = new TextDecoder();
  let offset = 0;
  let waited = 0;

  function say(text) {
    state.textContent = text;
  }

  function atBottom() {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  }

  async function problem(res) {
    try {
      const p = await res.json();
      return p.detail || res.statusText;
    } catch (e) {
      return res.status + " " + res.statusText;
    }
  }

  async function poll() {
    let res;
    try {
      res = await fetch(url + "?offset=" + offset, { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      say("The log could not be read: " + e.message);
      return later();
    }
    if (!res.ok) {
      say((offset > 0 ? "The rest of the log could not be read: " : "The log could not be read: ") + await problem(res));
      return;
    }
    const source = res.headers.get("X-Kiln-Log-Source");
    if (source === "none") {
      // the request is there, its log is not (yet)
      say(res.headers.get("X-Kiln-Log-Detail") || "No log yet.");
      if (follow && waited < 150) {
        return later();
      }
      return;
    }
    const from = Number(res.headers.get("X-Kiln-Log-Offset") || offset);
    const live = source === "live";
    const body = new Uint8Array(await res.arrayBuffer());
    const stick = atBottom();
    if (from > offset) {
      pre.append(document.createTextNode("[… " + (from - offset) + " bytes no longer kept while it runs …]\n"));
    }
    if (body.length > 0) {
      pre.append(document.createTextNode(decoder.decode(body, { stream: live })));
    }
    offset = from + body.length;
    if (stick) {
      pre.scrollTop = pre.scrollHeight;
    }
    if (live) {
      follow = true;
      say("Following the log as it grows…");
      return later();
    }
    say(offset === 0 ? "The log is empty." : "The whole log (" + offset + " bytes).");
  }

  function later() {
    waited++;
    setTimeout(poll, 2000);
  }

  poll();
})();
