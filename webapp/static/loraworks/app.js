// Loraworks' small shared script: behaviours any page can opt into with data- attributes.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // <select data-autosubmit> submits its form when changed (the team switcher).
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  // <button data-confirm="…"> asks before submitting (deletes, cancels).
  document.querySelectorAll("[data-confirm]").forEach((el) => {
    el.addEventListener("click", (event) => {
      if (!window.confirm(el.dataset.confirm)) event.preventDefault();
    });
  });
});
