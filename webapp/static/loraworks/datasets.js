// Datasets pages: drag-and-drop onto the upload form, the upload progress bar (XHR upload progress), and the
// detail page following its own validation (polls the small JSON status endpoint, reloads when it changes).
"use strict";

function setupDropzones(form) {
  form.querySelectorAll("[data-dropzone]").forEach((zone) => {
    const input = document.getElementById(zone.dataset.dropzone);
    const shown = zone.querySelector(".dropzone-name");
    const show = () => { shown.textContent = input.files.length ? input.files[0].name : ""; };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (!event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      show();
    });
  });
}

function megabytes(bytes) {
  return (bytes / 1048576).toFixed(1) + " MB";
}

function setupUpload(form) {
  const limit = Number(form.dataset.limitBytes);
  const box = form.querySelector(".upload-progress");
  const bar = box.querySelector(".progress");
  const status = box.querySelector(".upload-status");
  const error = form.querySelector(".upload-error");
  const button = form.querySelector("button[type=submit]");
  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
    button.disabled = false;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.hidden = true;
    const files = [...form.querySelectorAll("input[type=file]")].flatMap((input) => [...input.files]);
    if (!form.querySelector("input[name=file]").files.length) return fail("Choose a training file first.");
    const big = files.find((file) => file.size > limit);
    if (big) return fail(`${big.name} is ${megabytes(big.size)}: larger than the upload limit of ${megabytes(limit)}.`);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.round((100 * e.loaded) / e.total);
      bar.firstElementChild.style.width = percent + "%";
      bar.setAttribute("aria-valuenow", percent);
      status.textContent = `${megabytes(e.loaded)} of ${megabytes(e.total)} sent (${percent}%)`;
    });
    xhr.upload.addEventListener("load", () => { status.textContent = "Sent; storing the file…"; });
    xhr.addEventListener("load", () => {
      let answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: an error page */ }
      if (answer && answer.ok) { window.location.href = answer.url; return; }
      box.hidden = true;
      if (!answer) return fail(`The upload failed (HTTP ${xhr.status}).`);
      const details = Object.values(answer.errors || {}).flat();
      fail([answer.message, ...details].join(" "));
    });
    xhr.addEventListener("error", () => fail("The upload was interrupted: check the connection and try again."));
    box.hidden = false;
    button.disabled = true;
    xhr.send(new FormData(form));
  });
}

function followValidation(section) {
  const bar = section.querySelector(".progress");
  const poll = () => {
    fetch(section.dataset.poll, { headers: { Accept: "application/json" } })
      .then((response) => response.json())
      .then((state) => {
        if (state.status !== "validating" || String(state.revision) !== section.dataset.revision) {
          window.location.reload();
          return;
        }
        const percent = Math.round(100 * state.progress);
        bar.firstElementChild.style.width = percent + "%";
        bar.setAttribute("aria-valuenow", percent);
        window.setTimeout(poll, 1500);
      })
      .catch(() => window.setTimeout(poll, 5000));
  };
  window.setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-upload]").forEach((form) => {
    setupDropzones(form);
    setupUpload(form);
  });
  document.querySelectorAll("[data-poll]").forEach(followValidation);
});
