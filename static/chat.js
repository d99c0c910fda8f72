// The chat page: one WebSocket per open conversation (see apps/chat/consumers.py for the events).
// Streaming text goes in as plain text (textContent); the finished answer arrives as HTML that the
// server rendered from Markdown and sanitised.
(function () {
  "use strict";
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
  function scrollDown() {
    thread.scrollTop = thread.scrollHeight;
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
      if (node.dataset.generation && node.classList.contains("streaming")) setBusy(true);
      scrollDown();
    },
    conversation(event) {
      const item = fromHTML(event.html);
      const old = document.getElementById(item.id);
      if (old) old.replaceWith(item);
      const title = document.querySelector(".rename input[name=title]");
      if (title && !title.value) title.value = event.title;
      document.title = `${event.title} · Playground`;
    },
    snapshot(event) {
      const known = texts.get(event.generation) || "";
      if (Array.from(event.text).length >= Array.from(known).length) {
        setText(event.generation, event.text);
      }
      setBusy(true);
    },
    delta(event) {
      // Offsets count code points (Python's str), not UTF-16 units: compare as code points.
      const known = Array.from(texts.get(event.generation) || "");
      if (event.offset > known.length) {
        socket.close(); // a delta went missing: reconnecting sends a fresh snapshot
        return;
      }
      const end = event.offset + Array.from(event.text).length;
      if (end <= known.length) return; // already shown (it was in the snapshot)
      setText(event.generation, known.slice(0, event.offset).join("") + event.text);
    },
    done(event) {
      texts.delete(event.generation);
      const node = thread.querySelector(`[data-generation="${event.generation}"]`);
      if (node && event.html) node.replaceWith(fromHTML(event.html));
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
        showError("Connection lost; reconnecting…");
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
      showError("Not connected yet; try again in a moment.");
      return false;
    }
    socket.send(JSON.stringify(payload));
    return true;
  }

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim()) { showError("Type a message first."); return; }
    if (act({ action: "send", text })) input.value = "";
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  chat.addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (button) act({ action: button.dataset.action });
  });

  thread.querySelectorAll(".message.streaming").forEach(() => setBusy(true));
  scrollDown();
  connect();
})();
