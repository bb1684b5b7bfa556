// Follow a thread's entries and dispatch state over server-sent events.
// Entries are shown as `entry_view` in _render.py shows them on the server.
(function () {
  "use strict";
  const list = document.getElementById("entries");
  const state = document.getElementById("dispatch-state");
  const error = document.getElementById("dispatch-error");
  const live = document.getElementById("live");
  if (!list || !window.EventSource) {
    return;
  }
  let after = Number(list.dataset.after || 0);

  function view(entry) {
    const data = entry.data || {};
    const tool = String(data.name || "tool");
    const head = "[" + entry.seq + "] ";
    if (entry.kind === "tool_call") {
      const args = data.arguments === undefined ? entry.body : data.arguments;
      const text = typeof args === "string" ? args : JSON.stringify(args);
      return [head + entry.author + " -> " + tool, text];
    }
    if (entry.kind === "tool_result") {
      return [head + tool + " result", entry.body];
    }
    if (entry.kind === "status") {
      return [head + entry.author + " status", entry.body];
    }
    return [head + entry.author, entry.body];
  }

  function append(entry) {
    const [headText, bodyText] = view(entry);
    const item = document.createElement("li");
    item.className = "entry kind-" + entry.kind;
    item.dataset.seq = String(entry.seq);
    const head = document.createElement("div");
    head.className = "entry-head";
    head.textContent = headText;
    const body = document.createElement("pre");
    body.className = "entry-body";
    body.textContent = bodyText;
    item.append(head, body);
    list.append(item);
  }

  function showDispatch(dispatch) {
    state.textContent = dispatch.state;
    state.dataset.state = dispatch.state;
    state.className = "state state-" + dispatch.state;
    error.textContent = dispatch.error || "";
    error.hidden = !dispatch.error;
  }

  const url = "/api/threads/" + encodeURIComponent(list.dataset.thread) + "/events?after=" + after;
  const source = new EventSource(url);
  live.textContent = "Following new entries…";
  source.addEventListener("entry", function (event) {
    const entry = JSON.parse(event.data);
    if (entry.seq > after) {
      after = entry.seq;
      append(entry);
    }
  });
  source.addEventListener("dispatch", function (event) {
    showDispatch(JSON.parse(event.data));
  });
  source.addEventListener("end", function () {
    source.close();
    live.textContent = "";
  });
  source.addEventListener("error", function () {
    if (source.readyState !== EventSource.CLOSED) {
      live.textContent = "Connection lost; reconnecting…";
    }
  });
  source.addEventListener("open", function () {
    live.textContent = "Following new entries…";
  });
})();
