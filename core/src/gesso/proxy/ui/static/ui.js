// The admin UI's only script (served from /ui/static: the Content-Security-Policy allows no inline script).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.confirm");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
