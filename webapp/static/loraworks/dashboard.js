// The dashboard's jobs in progress follow their progress feed (the job page's JSON snapshot), every 2 s.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const jobs = Array.from(document.querySelectorAll(".dash-job[data-progress-url]"));
  const follow = async (el) => {
    const response = await fetch(el.dataset.progressUrl, {headers: {Accept: "application/json"}});
    if (!response.ok) return false;
    const snap = await response.json();
    const p = snap.progress || {};
    const percent = snap.state === "succeeded" ? 100
      : (p.total_steps ? Math.min(100, (100 * (p.step || 0)) / p.total_steps) : 0);
    el.querySelector("[data-live=bar]").style.width = `${percent.toFixed(1)}%`;
    const badge = el.querySelector("[data-live=state]");
    badge.textContent = snap.state;
    badge.className = `badge ${snap.state}`;
    if (p.total_steps) el.querySelector("[data-live=steps]").textContent = `step ${p.step || 0} of ${p.total_steps}`;
    return !snap.terminal;
  };
  const tick = async () => {
    const still = await Promise.all(jobs.map((el) => follow(el).catch(() => true)));
    if (still.some(Boolean)) setTimeout(tick, 2000);
  };
  if (jobs.length) tick();
});
