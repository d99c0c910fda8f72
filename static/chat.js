// The chat page: one WebSocket per open conversation (see apps/chat/consumers.py for the events).
// Streaming text goes in as plain text (textContent); the finished answer arrives as HTML that the
// server rendered from Markdown and sanitised. Code blocks get highlight.js and a copy button.
(function () {
  "use strict";
  const _ = window.gettext || ((text) => text); // the catalogue at /jsi18n/, when it loaded
  const format = (text, values) => (window.interpolate ? window.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, k) => values[k]));
  const search = document.getElementById("search");
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k" && search) {
      e.preventDefault();
      search.focus();
    }
  });
  document.addEventListener("click", (e) => {
    const toggle = e.target.closest("[data-toggle]");
    if (toggle) document.getElementById("layout").classList.toggle(toggle.dataset.toggle);
  });
  // The arrival composer (no conversation open): an ordinary form whose first message makes the
  // conversation; Enter sends it, as in a conversation.
  const arrival = document.getElementById("arrival-text");
  if (arrival) {
    arrival.addEventListener("keydown", (e) => {
      const ready = arrival.value.trim() || arrival.form.querySelector(".document-chip");
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && ready) {
        e.preventDefault();
        arrival.form.requestSubmit();
      }
    });
  }
  // Documents: each file chosen is sent at once and comes back as a chip (name, size, tokens)
  // holding its id; the message takes the ids of the chips in its composer when it is sent.
  function attachError(row, message) {
    const box = row.querySelector(".attach-error");
    box.textContent = message;
    box.hidden = !message;
  }
  async function attach(input) {
    const row = input.closest(".attach-row");
    const list = row.querySelector(".attachments");
    const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    const picker = document.getElementById("arrival-model");
    attachError(row, "");
    for (const file of input.files) {
      const body = new FormData();
      body.append("file", file);
      if (input.dataset.conversation) body.append("conversation", input.dataset.conversation);
      else if (picker) body.append("model", picker.value);
      let answer;
      try {
        const response = await fetch(input.dataset.url, {
          method: "POST", body, headers: { "X-CSRFToken": csrf },
        });
        answer = await response.json();
      } catch (err) {
        answer = { error: format(_("%(name)s could not be sent; try again."), { name: file.name }) };
      }
      if (answer.error) { attachError(row, answer.error); continue; }
      const template = document.createElement("template");
      template.innerHTML = answer.html.trim();
      list.append(template.content.firstElementChild);
    }
    input.value = "";
  }
  document.addEventListener("change", (e) => {
    if (e.target.matches(".attach-input")) attach(e.target);
  });
  document.addEventListener("click", (e) => {
    const remove = e.target.closest(".document-remove");
    if (remove) remove.closest(".document-chip").remove();
  });

  const chat = document.getElementById("chat");
  if (!chat) return;
  const thread = document.getElementById("thread");
  const composer = document.getElementById("composer");
  const input = document.getElementById("composer-text");
  const errorBox = document.getElementById("chat-error");
  const texts = new Map(); // generation id -> text received so far
  let socket = null;
  let retryDelay = 500;
  let lost = false; // the socket dropped and the notice says so until it is back

  function fromHTML(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }
  function bodyOf(generation) {
    return thread.querySelector(`[data-generation="${generation}"] .body`);
  }
  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }
  function setBusy(busy) {
    chat.classList.toggle("busy", busy);
  }
  // Follow the end of the thread while the reader is there; once they scroll up, leave them be.
  // Our own scrolling fires scroll events too, late, when more text may have come: only a
  // position above where we last put it counts as the reader scrolling up.
  let following = true;
  let autoTop = 0;
  thread.addEventListener("scroll", () => {
    if (thread.scrollHeight - thread.scrollTop - thread.clientHeight < 40) following = true;
    else if (thread.scrollTop < autoTop - 4) following = false;
  });
  let scrollQueued = false;
  function scrollDown(force) {
    if (force) following = true;
    if (!following || scrollQueued) return;
    scrollQueued = true; // at most once a frame, however fast the text comes
    requestAnimationFrame(() => {
      scrollQueued = false;
      if (!following) return;
      thread.scrollTop = thread.scrollHeight;
      autoTop = thread.scrollTop;
    });
  }
  function decorate(root) {
    // Turns that arrive over the socket carry htmx attributes too ("Add to eval set").
    if (window.htmx && root !== document) window.htmx.process(root);
    root.querySelectorAll(".markdown pre > code").forEach((code) => {
      if (code.dataset.decorated) return;
      code.dataset.decorated = "1";
      if (window.hljs) window.hljs.highlightElement(code);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy copy-code";
      button.textContent = _("Copy code");
      code.parentElement.prepend(button);
    });
  }
  function setWaiting(generation, waiting) {
    const note = thread.querySelector(`[data-generation="${generation}"] .waiting-note`);
    if (note) note.hidden = !waiting;
  }
  function setText(generation, text) {
    texts.set(generation, text);
    const body = bodyOf(generation);
    if (body) body.textContent = text;
    scrollDown();
  }

  const handlers = {
    message(event) {
      const node = fromHTML(event.html);
      const old = event.replaces && document.getElementById(`message-${event.replaces}`);
      if (old) old.replaceWith(node); else thread.appendChild(node);
      decorate(node);
      if (node.dataset.generation && node.classList.contains("streaming")) setBusy(true);
      scrollDown(!old);
    },
    removed(event) {
      event.messages.forEach((pk) => {
        const node = document.getElementById(`message-${pk}`);
        if (node) node.remove();
      });
    },
    conversation(event) {
      const item = fromHTML(event.html);
      const old = document.getElementById(item.id);
      if (old) old.replaceWith(item);
      const title = document.querySelector(".rename input[name=title]");
      if (title && !title.value) title.value = event.title;
      document.title = `${event.title} · Playground`;
    },
    delta(event) {
      // The server sends each socket the text in order: the first delta of an answer carries
      // all of it so far (offset 0), later ones what follows. Offsets count code points
      // (Python's str), not UTF-16 units.
      const known = Array.from(texts.get(event.generation) || "");
      setText(event.generation, known.slice(0, event.offset).join("") + event.text);
      setWaiting(event.generation, false);
      setBusy(true);
    },
    waiting(event) {
      setWaiting(event.generation, event.waiting);
    },
    done(event) {
      texts.delete(event.generation);
      const node = thread.querySelector(`[data-generation="${event.generation}"]`);
      if (node && event.html) {
        const done = fromHTML(event.html);
        node.replaceWith(done);
        decorate(done);
      }
      setBusy(thread.querySelector(".message.streaming") !== null);
      scrollDown();
    },
    error(event) {
      showError(event.message);
    },
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${chat.dataset.ws}`);
    socket.onopen = () => {
      retryDelay = 500;
      chat.classList.add("connected");
      if (lost) { lost = false; showError(""); }
    };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      const handler = handlers[event.type];
      if (handler) handler(event);
    };
    socket.onclose = () => {
      if (chat.classList.contains("connected") && errorBox.hidden) {
        showError(_("Connection lost; reconnecting…"));
      }
      lost = lost || chat.classList.contains("connected");
      chat.classList.remove("connected");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    };
  }

  function act(payload) {
    showError("");
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError(_("Not connected yet; try again in a moment."));
      return false;
    }
    socket.send(JSON.stringify(payload));
    return true;
  }

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    const chips = [...composer.querySelectorAll(".attachments .document-chip")];
    const documents = chips.map((chip) => chip.dataset.document);
    if (!text.trim() && !documents.length) { showError(_("Type a message first.")); return; }
    if (act({ action: "send", text, documents })) {
      input.value = "";
      chips.forEach((chip) => chip.remove());
      attachError(composer.querySelector(".attach-row"), "");
    }
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && chat.classList.contains("busy")) {
      e.preventDefault();
      act({ action: "stop" });
    }
  });
  chat.addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (button) { act({ action: button.dataset.action }); return; }
    const copy = e.target.closest(".copy");
    if (copy) { copyFrom(copy); return; }
    const edit = e.target.closest(".edit");
    if (edit) startEdit(edit.closest(".message"));
  });

  function copyFrom(button) {
    const text = button.classList.contains("copy-code")
      ? button.parentElement.querySelector("code").innerText
      : button.closest(".message").querySelector(".body").innerText;
    navigator.clipboard.writeText(text).then(
      () => { button.textContent = _("Copied"); setTimeout(() => { button.textContent = button.classList.contains("copy-code") ? _("Copy code") : _("Copy"); }, 1500); },
      () => showError(_("Copying was not allowed by the browser; select the text instead.")),
    );
  }

  // Editing a past message: its text in a box; saving sends it again and the turns after it go.
  function startEdit(message) {
    if (!message || message.querySelector(".edit-box")) return;
    const body = message.querySelector(".body");
    const form = document.createElement("form");
    form.className = "edit-box";
    const box = document.createElement("textarea");
    box.value = body.textContent;
    box.rows = Math.min(10, box.value.split("\n").length + 1);
    box.setAttribute("aria-label", _("Edit message"));
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = _("Save and resend");
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = _("Cancel");
    form.append(box, save, cancel);
    body.hidden = true;
    body.after(form);
    box.focus();
    const close = () => { form.remove(); body.hidden = false; };
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!box.value.trim()) { showError(_("Type a message first.")); return; }
      if (act({ action: "edit", message: Number(message.dataset.message), text: box.value })) close();
    });
  }

  thread.querySelectorAll(".message.streaming").forEach(() => setBusy(true));
  decorate(thread);
  scrollDown(true);
  connect();
})();
