"""Steps of the browser paths that more than one e2e test walks: signing in, uploading a sample, filling in the new
job form, watching a job page to its end. They use only the page, so they serve a live_server test and one against the app
that `webapp.localrun` starts alike."""
from trainer.samples import write_sample


def signed_in_page(browser, base_url: str, username: str, password: str, timeout_ms: int = 30_000):
    """A new browser page at `base_url`, signed in through the login form."""
    page = browser.new_context(base_url=base_url, accept_downloads=True,
                               viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(timeout_ms)
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login/" not in page.url, page.inner_text("main")
    return page


def upload_sample(page, shoot, sample: str, folder) -> None:
    upload_file(page, shoot, write_sample(sample, folder), f"{sample} sample")


def upload_file(page, shoot, path, name: str) -> None:
    """Upload the file at `path` as dataset `name` and wait for its validation to pass."""
    page.goto("/datasets/upload/")
    page.set_input_files("#id_file", str(path))
    page.fill("#id_name", name)
    shoot(page, "upload")
    with page.expect_navigation(url="**/datasets/*/"):
        page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#dataset-status.ready", timeout=120_000)  # the page follows its validation itself
    shoot(page, "dataset-report")


def watch_to_the_end(page, shoot) -> list[str]:
    """Stay on the job page (no reload by the test) until it says succeeded; returns the bar's widths seen."""
    widths = []
    page.expose_function("reportWidth", lambda width: widths.append(width))
    page.evaluate("""() => {
        const bar = document.querySelector('[data-live="bar"]');
        window.reportWidth(bar.style.width);
        new MutationObserver(() => window.reportWidth(bar.style.width)).observe(bar, {attributes: true});
    }""")
    page.wait_for_function("document.querySelector('[data-live=state]').textContent.trim() === 'succeeded'"
                           " || document.querySelector('[data-live=state]').textContent.trim() === 'failed'",
                           timeout=300_000)
    shoot(page, "job-done")
    return widths


def submit_job_form(page, shoot, model_label: str, name: str, training: dict, tick: tuple[str, ...] = ()) -> None:
    """Fill in the new job form (waiting for its live estimate, and for the settings advisor's answer when choosing
    the model asked it again) and submit it; the page is then the job's page."""
    page.goto("/jobs/new/")
    page.fill("#id_name", name)
    if page.eval_on_selector("#id_base_model", "(select) => select.selectedOptions[0].label") != model_label:
        page.select_option("#id_base_model", label=model_label)
        page.wait_for_selector("#job-form[data-advised]", state="attached")
    for field, value in training.items():
        page.fill(f"#id_{field}", value)
    for box in tick:
        page.check(f"#id_{box}")
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('%')")
    shoot(page, "new-job")
    with page.expect_navigation(url="**/jobs/*/"):
        page.click("#job-form button[type=submit]")
