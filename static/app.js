// Shared by every page. Forms with data-confirm ask before they submit (inline handlers are not
// allowed by the Content-Security-Policy).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
