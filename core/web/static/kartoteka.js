// Small behaviours htmx does not cover. No inline scripts, so a strict CSP stays possible.

// Form errors come back as 422 (invalid) or 409 (possible duplicate) with the
// re-rendered form: swap them in like a success, so errors show next to the fields.
document.addEventListener("DOMContentLoaded", () => {
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "409", swap: true, error: false },
    { code: "422", swap: true, error: false },
    { code: "[45]..", swap: false, error: true },
  ];
});

// Kanban drag-and-drop: dropping a card posts the move; the server validates it and
// answers with the two columns it changed (or the board with an error message), so the
// UI never lies.
document.addEventListener("dragstart", (event) => {
  const card = event.target.closest && event.target.closest("[data-move-url]");
  if (card) event.dataTransfer.setData("text/plain", card.dataset.moveUrl);
});
document.addEventListener("dragover", (event) => {
  const column = event.target.closest && event.target.closest("[data-stage-id]");
  if (column) { event.preventDefault(); column.classList.add("drop-target"); }
});
document.addEventListener("dragleave", (event) => {
  const column = event.target.closest && event.target.closest("[data-stage-id]");
  if (column) column.classList.remove("drop-target");
});
document.addEventListener("drop", (event) => {
  const column = event.target.closest && event.target.closest("[data-stage-id]");
  if (!column) return;
  event.preventDefault();
  column.classList.remove("drop-target");
  const url = event.dataTransfer.getData("text/plain");
  if (url) {
    htmx.ajax("POST", url, {
      target: "#board", swap: "outerHTML", values: { stage: column.dataset.stageId, refresh: "columns" },
    });
  }
});

// Live pushes (core.live, GET /live): an out-of-band element marked data-live-popup
// whose id is not on the page yet (a new screen pop) is appended to #live-popups;
// later pushes with the same id replace it in place.
document.addEventListener("htmx:oobErrorNoTarget", (event) => {
  const element = event.detail && event.detail.content;
  const popups = document.getElementById("live-popups");
  if (!popups || !element || !element.matches || !element.matches("[data-live-popup]")) return;
  popups.append(element);
  htmx.process(element);
});
// A pop-up closes on its × button, and removes itself once its fade-out has played.
document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("[data-dismiss]");
  if (button && button.closest("[data-live-popup]")) button.closest("[data-live-popup]").remove();
});
document.addEventListener("animationend", (event) => {
  if (event.target.matches && event.target.matches("[data-live-popup].popup-fading")) event.target.remove();
});
// The state of the live stream, for styles and tests: body[data-live=connected|reconnecting].
document.addEventListener("htmx:sseOpen", () => { document.body.dataset.live = "connected"; });
document.addEventListener("htmx:sseError", () => { document.body.dataset.live = "reconnecting"; });
