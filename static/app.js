// Shared by every page.
(function () {
  "use strict";
  const _ = window.gettext || ((text) => text); // the catalogue at /jsi18n/, when it loaded
  // Forms with data-confirm ask before they submit (inline handlers are not allowed by the
  // Content-Security-Policy).
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // The theme follows the system's (prefers-color-scheme) until the reader picks one, which is
  // remembered in this browser.
  const root = document.documentElement;
  const stored = localStorage.getItem("theme");
  if (stored === "light" || stored === "dark") root.dataset.theme = stored;
  function current() {
    return root.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }
  function label(button) {
    const next = current() === "dark" ? "light" : "dark";
    button.textContent = next === "dark" ? _("Dark theme") : _("Light theme");
    button.setAttribute("aria-label", next === "dark" ? _("Switch to the dark theme") : _("Switch to the light theme"));
  }
  document.querySelectorAll("[data-theme-toggle]").forEach((button) => {
    label(button);
    button.addEventListener("click", () => {
      root.dataset.theme = current() === "dark" ? "light" : "dark";
      localStorage.setItem("theme", root.dataset.theme);
      label(button);
    });
  });
})();
