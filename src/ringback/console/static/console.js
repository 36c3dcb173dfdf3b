// Ringback staff console: the callback task queue of one practice.
// Plain JS, no build step. Every value from the server goes into the page with
// textContent (never innerHTML). State-changing calls send JSON and the session's
// CSRF token; the page follows /api/events (server-sent events) and polls as a backstop.
"use strict";

(() => {
  const POLL_MS = 30000;
  const $ = (id) => document.getElementById(id);
  const state = {
    session: null,
    tasks: [],
    offset: 0,          // server time - local time, so countdowns use the server's clock
    filter: "",
    events: null,
    pollTimer: null,
    fetchTimer: null,
    busy: new Set(),    // task ids with a request in flight
    pendingTask: null,  // the task a dialog is open for
    threads: [],        // the practice's conversations
    open: null,         // the id of the conversation shown
    conversation: null,
    target: null,         // the task id a link asks for (#task=<id>)
    targetPending: false, // not yet shown, nor found missing
    selected: null,       // the task shown selected (the link's)
  };

  // ------------------------------------------------------------------ API
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const opts = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
      opts.body = JSON.stringify(body || {});
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (err) {
      return { ok: false, status: 0, data: { message: "The console cannot be reached. Check the connection." } };
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (err) { data = null; }
    }
    if (res.status === 401 && path !== "/api/login") {
      showLogin(state.session ? "Your session ended. Please sign in again." : "");
    }
    return { ok: res.ok, status: res.status, data };
  }

  const now = () => Date.now() + state.offset;

  // ------------------------------------------------------------------ time
  function duration(ms) {
    const m = Math.floor(Math.abs(ms) / 60000);
    if (m < 1) return "less than a minute";
    if (m < 60) return `${m} min`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
    return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
  }

  function tick() {
    const t = now();
    let overdue = 0;
    for (const li of document.querySelectorAll("#tasks > li.task")) {
      const due = Number(li.dataset.due), missed = Number(li.dataset.missed);
      const left = due - t;
      const late = left < 0;
      if (late) overdue += 1;
      li.classList.toggle("overdue", late);
      li.classList.toggle("soon", !late && left < 15 * 60000);
      li.querySelector(".due-label").textContent = late ? "Overdue by" : "Due in";
      li.querySelector(".countdown").textContent = late ? duration(left) : clock(left);
      li.querySelector(".since").textContent = missed ? `${duration(t - missed)} ago` : "—";
    }
    const badge = $("overdue-count");
    badge.hidden = overdue === 0;
    badge.textContent = `${overdue} overdue`;
  }

  // ------------------------------------------------------------------ views
  function showLogin(message) {
    stopLive();
    state.session = null;
    $("board-view").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
    $("login-target").hidden = !state.target;
    const practice = localStorage.getItem("ringback.practice");
    if (practice && !$("practice_id").value) $("practice_id").value = practice;
    ($("practice_id").value ? $("username") : $("practice_id")).focus();
  }

  function showBoard() {
    const s = state.session;
    state.targetPending = Boolean(state.target);  // a link opened before signing in shows its task now
    $("login-view").hidden = true;
    $("board-view").hidden = false;
    $("practice-name").textContent = s.practice_name;
    document.title = `Callback tasks · ${s.practice_name}`;
    const roles = s.roles_available.filter((r) => s.roles.includes(r.value)).map((r) => r.label);
    $("who").textContent = `${s.username} · ${roles.join(", ") || s.roles.join(", ")}`;
    const filter = $("filter");
    filter.replaceChildren(option("", "All roles"), option("mine", "My roles"),
      ...s.roles_available.map((r) => option(r.value, r.label)));
    filter.value = state.filter;
    $("outcomes").replaceChildren(...s.outcomes.map((o) => {
      const b = document.createElement("button");
      b.value = o.value;
      b.className = `primary outcome outcome-${o.value}`;
      b.textContent = o.label;
      return b;
    }));
    startLive();
    refresh();
  }

  function option(value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    return o;
  }

  function visible(tasks) {
    const f = state.filter;
    if (!f) return tasks;
    if (f === "mine") return tasks.filter((t) => state.session.roles.includes(t.role));
    return tasks.filter((t) => t.role === f);
  }

  const DETAIL_LABELS = {
    patient_name: "Patient", urgency_reason: "Urgency", appointment_time: "Appointment",
    call_time: "Call time", todo: "To do",
  };

  function taskItem(id) {
    return [...$("tasks").children].find((li) => li.dataset.taskId === id) || null;
  }

  function render() {
    const list = $("tasks");
    const tasks = visible(state.tasks);
    const tpl = $("task-template");
    // Re-rendering replaces the cards: keep a keyboard user's focus on the same card and button.
    const active = document.activeElement;
    const activeLi = active && active.closest ? active.closest("#tasks > li.task") : null;
    const focusId = activeLi ? activeLi.dataset.taskId : null;
    const focusSel = activeLi && active !== activeLi ? [...active.classList].map((c) => `.${c}`).join("") : "";
    list.replaceChildren(...tasks.map((t) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.taskId = t.task_id;
      li.tabIndex = -1;
      if (t.task_id === state.selected) {
        li.classList.add("selected");
        li.setAttribute("aria-current", "true");
      }
      li.dataset.due = t.due_at;
      li.dataset.missed = t.missed_at || "";
      li.classList.add(`priority-${t.priority.toLowerCase()}`);
      if (t.claimed_by_me) li.classList.add("mine");
      const pr = li.querySelector(".priority");
      pr.textContent = t.priority;
      pr.classList.add(t.priority.toLowerCase());
      li.querySelector(".role").textContent = t.role_label;
      const st = li.querySelector(".state");
      st.textContent = t.state === "CLAIMED" ? (t.claimed_by_me ? "Claimed by you" : "Claimed") : "Open";
      st.classList.add(t.state.toLowerCase());
      li.querySelector(".reason").textContent = t.reason || "Call the patient back.";
      const caller = li.querySelector(".caller");
      if (t.caller.masked) {
        caller.textContent = t.caller.display;
        caller.title = "Only the role that calls back sees the number";
        caller.classList.add("masked");
      } else {
        const a = document.createElement("a");
        a.href = `tel:${t.caller.dial}`;
        a.textContent = t.caller.display;
        caller.replaceChildren(a);
      }
      if (t.claimed_by) {
        li.querySelector(".claimed-row").hidden = false;
        li.querySelector(".claimed-by").textContent = t.claimed_by_me ? "you" : t.claimed_by;
      }
      const details = li.querySelector(".details");
      for (const [k, label] of Object.entries(DETAIL_LABELS)) {
        if (!t.details[k]) continue;
        const div = document.createElement("div");
        const dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = label;
        dd.textContent = t.details[k];
        div.append(dt, dd);
        details.append(div);
      }
      renderReplies(li, t.replies || []);
      const busy = state.busy.has(t.task_id);
      const claim = li.querySelector(".claim"), complete = li.querySelector(".complete");
      const reassign = li.querySelector(".reassign");
      claim.hidden = !t.can_claim;
      complete.hidden = !t.can_complete;
      reassign.hidden = !t.can_reassign;
      for (const b of [claim, complete, reassign]) b.disabled = busy;
      claim.addEventListener("click", () => claimTask(t));
      complete.addEventListener("click", () => openComplete(t));
      reassign.addEventListener("click", () => openReassign(t));
      const conversation = li.querySelector(".open-conversation");
      conversation.hidden = !t.conversation_id;
      conversation.addEventListener("click", () => showConversation(t.conversation_id));
      if (!t.can_claim && !t.can_complete && !t.can_reassign && !t.conversation_id) {
        li.querySelector(".actions").hidden = true;
      }
      return li;
    }));
    $("count").textContent = String(tasks.length);
    $("empty").hidden = tasks.length > 0;
    if (focusId) {
      const li = taskItem(focusId);
      const el = li && focusSel ? li.querySelector(focusSel) : li;
      const usable = el && !el.hidden && !el.disabled && !(el.closest(".actions") || {}).hidden;
      if (li) (usable ? el : li).focus({ preventScroll: true });
    }
    tick();
  }

  // A "patient replied" task: what the patient texted, with the times (text, never HTML).
  function renderReplies(li, replies) {
    if (!replies.length) return;
    const tpl = $("reply-template");
    li.querySelector(".reply-list").replaceChildren(...replies.map((r) => {
      const item = tpl.content.firstElementChild.cloneNode(true);
      item.querySelector(".reply-when").textContent = r.at ? when(r.at) : "—";
      item.querySelector(".reply-text").textContent = r.text;
      return item;
    }));
    li.querySelector(".replies").hidden = false;
  }

  // ------------------------------------------------------------------ task links (#task=<id>)
  // Staff notifications link to <console>/#task=<id> (the fragment never reaches a server log).
  function targetFromHash() {
    const m = /^#task=(.+)$/.exec(window.location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (err) { return m[1]; }
  }

  function linkNotice(text) {
    const n = $("link-notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  function followLink() {
    state.target = targetFromHash();
    state.targetPending = Boolean(state.target);
    state.selected = null;
    linkNotice("");
    if (!state.session) {
      $("login-target").hidden = !state.target;
      return;
    }
    render();
    if (state.target) showTarget();
  }

  async function showTarget() {
    const id = state.target;
    if (!id || !state.session) return;
    let task = state.tasks.find((t) => t.task_id === id);
    if (!task) {
      // Not in the open list: ask for it. Another practice's id gets the same 404 as one that never existed.
      const r = await api("GET", `/api/tasks/${encodeURIComponent(id)}`);
      if (state.target !== id || !state.session || r.status === 401) return;
      if (r.ok && r.data.state !== "COMPLETED") {
        // Open, but newer than the list: show it now, the next refresh lists it. A refresh or
        // another link may have added it while this request was out: never list it twice.
        task = r.data;
        state.tasks = [...state.tasks.filter((t) => t.task_id !== id), task];
      }
    }
    if (!task) {
      // The target stays pending: a task this console has not read yet (a link opened the instant
      // it was sent) is shown by a later refresh, which the task's arrival triggers.
      const shown = !$("link-notice").hidden;
      linkNotice("This task is not open (done, reassigned, or not yours).");
      if (!shown) $("link-notice").focus();
      return;
    }
    state.targetPending = false;
    linkNotice("");
    if (!visible([task]).length) {  // the role filter hides it: show every role
      state.filter = "";
      $("filter").value = "";
    }
    state.selected = id;
    render();
    const li = taskItem(id);
    if (li) {
      li.scrollIntoView({ block: "center" });
      li.focus({ preventScroll: true });
    }
  }

  function notice(text, kind) {
    const n = $("notice");
    n.textContent = text;
    n.className = `notice ${kind || ""}`;
    n.hidden = !text;
    clearTimeout(notice.timer);
    if (text) notice.timer = setTimeout(() => { n.hidden = true; }, 8000);
  }

  // ------------------------------------------------------------------ conversations
  const STATUS_LABELS = {
    QUEUED: "Queued", DEFERRED: "Held until the quiet hours end", SENT: "Sent", DELIVERED: "Delivered",
    UNDELIVERED: "Not delivered", FAILED: "Failed", SUPPRESSED: "Not sent", DEAD_LETTERED: "Not sent (error)",
  };

  const when = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" });

  function renderThreads() {
    const tpl = $("thread-template");
    $("threads").replaceChildren(...state.threads.map((c) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.conversationId = c.conversation_id;
      li.classList.toggle("selected", c.conversation_id === state.open);
      li.querySelector(".thread-caller").textContent = c.caller.display;
      li.querySelector(".thread-label").textContent = c.last_label;
      li.querySelector(".thread-when").textContent = `${duration(now() - c.last_at)} ago`;
      li.querySelector(".awaiting").hidden = !c.awaiting_reply;
      li.querySelector(".open-thread").addEventListener("click", () => openConversation(c.conversation_id));
      return li;
    }));
    $("thread-count").textContent = String(state.threads.length);
    $("threads-empty").hidden = state.threads.length > 0;
  }

  function renderConversation() {
    const c = state.conversation;
    if (!c) return;
    $("conversation-title").textContent = `Conversation with ${c.caller.display}`;
    const tpl = $("entry-template");
    $("entries").replaceChildren(...c.entries.map((e) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.entryId = e.entry_id;
      li.classList.add(`kind-${e.kind}`);
      li.querySelector(".entry-label").textContent = e.label;
      li.querySelector(".entry-when").textContent = when(e.at);
      li.querySelector(".entry-text").textContent = e.text || "";
      if (e.kind === "sms_out") {
        const status = STATUS_LABELS[e.status] || e.status;
        const by = e.sent_by ? `by ${e.sent_by}` : "automatic";
        li.querySelector(".entry-meta").textContent =
          `${status}${e.status_reason ? `: ${e.status_reason}` : ""} · ${by}`;
        li.dataset.status = e.status;
      }
      return li;
    }));
  }

  async function loadConversation(id, fresh) {
    const r = await api("GET", `/api/conversations/${encodeURIComponent(id)}`);
    if (state.open !== id) return;  // closed or switched meanwhile
    if (!r.ok) {
      if (r.status === 404) closeConversation();
      return;
    }
    state.conversation = r.data;
    // The form keeps its nonce until a reply went out: sending it again is the same reply.
    if (fresh || !$("reply-nonce").value) $("reply-nonce").value = r.data.reply_nonce;
    renderConversation();
  }

  function openConversation(id) {
    state.open = id;
    state.conversation = null;
    $("entries").replaceChildren();
    $("reply-nonce").value = "";
    $("reply-body").value = "";
    $("reply-error").textContent = "";
    $("conversation").hidden = false;
    renderThreads();
    loadConversation(id, true);
  }

  // From a task's card: its caller's conversation, opened and in view.
  function showConversation(id) {
    if (state.open !== id) openConversation(id);
    const section = $("conversation");
    section.scrollIntoView({ block: "start" });
    section.focus({ preventScroll: true });
  }

  function closeConversation() {
    state.open = null;
    state.conversation = null;
    $("conversation").hidden = true;
    renderThreads();
  }

  async function refreshConversations() {
    const r = await api("GET", "/api/conversations");
    if (!r.ok) return;
    state.threads = r.data.conversations;
    renderThreads();
    if (state.open) await loadConversation(state.open, false);
  }

  async function sendReply(ev) {
    ev.preventDefault();
    const id = state.open;
    const text = $("reply-body").value;
    if (!id) return;
    if (!text.trim()) {
      $("reply-error").textContent = "Write a message.";
      return;
    }
    const send = $("reply-send");
    send.disabled = true;
    const body = { body: text, nonce: $("reply-nonce").value };
    const r = await api("POST", `/api/conversations/${encodeURIComponent(id)}/reply`, body);
    send.disabled = false;
    if (r.ok) {
      $("reply-body").value = "";
      $("reply-error").textContent = "";
      $("reply-nonce").value = r.data.reply_nonce;
      if (state.open === id) {
        state.conversation = r.data.conversation;
        renderConversation();
      }
      notice("Reply sent to the practice's SMS queue.", "ok");
      scheduleRefresh();
    } else if (r.status !== 401) {
      // The nonce stays: trying again cannot send the message twice.
      $("reply-error").textContent = (r.data && r.data.message) || "The reply was not sent. Try again.";
    }
  }

  // ------------------------------------------------------------------ data
  async function refresh() {
    const r = await api("GET", "/api/tasks");
    if (!r.ok) {
      if (r.status !== 401) setLive(false, "offline");
      return;
    }
    state.offset = r.data.server_time - Date.now();
    state.tasks = r.data.tasks;
    render();
    if (state.targetPending) await showTarget();
    await refreshConversations();
  }

  function scheduleRefresh() {
    if (state.fetchTimer) return;
    state.fetchTimer = setTimeout(() => { state.fetchTimer = null; refresh(); }, 150);
  }

  function setLive(on, text) {
    const live = $("live");
    live.classList.toggle("off", !on);
    live.textContent = text || (on ? "live" : "reconnecting…");
  }

  function startLive() {
    stopLive();
    if (window.EventSource) {
      const es = new EventSource("/api/events");
      es.addEventListener("tasks", () => { setLive(true); scheduleRefresh(); });
      es.onopen = () => setLive(true);
      es.onerror = () => setLive(false);
      state.events = es;
    }
    state.pollTimer = setInterval(refresh, POLL_MS);
  }

  function stopLive() {
    if (state.events) state.events.close();
    state.events = null;
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  async function update(task, action, body, done) {
    state.busy.add(task.task_id);
    render();
    const r = await api("POST", `/api/tasks/${encodeURIComponent(task.task_id)}/${action}`, body);
    state.busy.delete(task.task_id);
    if (r.ok) {
      const updated = r.data.task;
      state.tasks = updated.state === "COMPLETED"
        ? state.tasks.filter((t) => t.task_id !== task.task_id)    // a completed task leaves the list
        : state.tasks.map((t) => (t.task_id === task.task_id ? updated : t));
      notice(done(updated), "ok");
    } else if (r.status !== 401) {
      notice((r.data && r.data.message) || "That did not work. Try again.", "error");
    }
    render();
    scheduleRefresh();
  }

  function claimTask(task) {
    update(task, "claim", {}, () => "Task claimed: it is yours to call back.");
  }

  function openComplete(task) {
    state.pendingTask = task;
    $("complete-dialog").returnValue = "";
    $("complete-dialog").showModal();
  }

  function openReassign(task) {
    state.pendingTask = task;
    const select = $("reassign-role");
    select.replaceChildren(...state.session.roles_available
      .filter((r) => r.value !== task.role).map((r) => option(r.value, r.label)));
    $("reassign-dialog").returnValue = "";
    $("reassign-dialog").showModal();
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", async () => {
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const form = ev.target;
      const body = {
        practice_id: form.practice_id.value.trim().toLowerCase(),
        username: form.username.value.trim().toLowerCase(),
        password: form.password.value,
      };
      if (!body.practice_id || !body.username || !body.password) {
        $("login-error").textContent = "Enter your practice, username and password.";
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const r = await api("POST", "/api/login", body);
      button.disabled = false;
      form.password.value = "";
      if (!r.ok) {
        $("login-error").textContent = (r.data && r.data.message) || "Sign-in failed.";
        return;
      }
      localStorage.setItem("ringback.practice", body.practice_id);
      state.session = r.data;
      showBoard();
    });

    $("logout").addEventListener("click", async () => {
      const r = await api("POST", "/api/logout", {});
      if (!r.ok && r.status !== 401) {  // not stored on the server: still signed in, try again
        notice((r.data && r.data.message) || "Sign-out did not go through. Try again.", "error");
        return;
      }
      state.tasks = [];
      state.threads = [];
      closeConversation();
      showLogin("You are signed out.");
    });

    $("reply-form").addEventListener("submit", sendReply);
    $("conversation-close").addEventListener("click", closeConversation);
    $("filter").addEventListener("change", (ev) => { state.filter = ev.target.value; render(); });

    $("complete-dialog").addEventListener("close", () => {
      const outcome = $("complete-dialog").returnValue;
      const task = state.pendingTask;
      state.pendingTask = null;
      if (!task || !outcome || outcome === "cancel") return;
      const label = (state.session.outcomes.find((o) => o.value === outcome) || {}).label || outcome;
      update(task, "complete", { outcome }, () => `Task completed: ${label.toLowerCase()}.`);
    });

    $("reassign-dialog").addEventListener("close", () => {
      const task = state.pendingTask;
      state.pendingTask = null;
      if (!task || $("reassign-dialog").returnValue !== "ok") return;
      const role = $("reassign-role").value;
      const label = $("reassign-role").selectedOptions[0].textContent;
      update(task, "reassign", { role }, () => `Task handed to ${label}.`);
    });

    window.addEventListener("hashchange", followLink);
    state.target = targetFromHash();
    state.targetPending = Boolean(state.target);

    setInterval(tick, 1000);
    const r = await api("GET", "/api/session");
    if (r.ok) {
      state.session = r.data;
      showBoard();
    } else if (r.status !== 401) {
      showLogin((r.data && r.data.message) || "");
    }
  });
})();
