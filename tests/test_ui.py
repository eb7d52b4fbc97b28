"""`study ui` in a real browser: headless Debian Chromium driven by selenium against the MLflow UI that
`study ui` serves on 127.0.0.1 after a tiny study. DOM assertions only (no screenshots compared)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.loopback_cluster import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's; .ci/run installs them
NAME_CELL = "[col-id='attributes.`Run Name`']"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    import ray

    from study.run.options import StudyOptions
    from study.run.runner import launch

    root = tmp_path_factory.mktemp("ui")
    try:
        result = launch(
            StudyOptions(
                space="quick",
                trials=2,
                out=root / "s",
                cache_dir=root / "cache",
                dense_iters=30,
                retrain_iters=8,
                rays_per_step=32,
                samples=8,
                eval_views=1,
                allow_weak_dense=True,
            ),
            echo=lambda line: None,
        )
    finally:
        ray.shutdown()
    return result


@pytest.fixture
def browser():
    """A fresh profile per test, as a new user's: the UI keeps the workflow it last showed in its storage."""
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "ui", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    url = ui.stdout.readline().strip()

    def healthy() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert ui.poll() is None, "study ui exited"
            return False

    wait_for(healthy, timeout=120, what="the MLflow UI to answer /health")
    return ui, url


def text_of(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_the_ui_opens_on_the_study_s_runs_with_one_child_per_trial_its_model_and_render(tiny_study, browser):
    rows = tiny_study.rows
    ui, url = serve(tiny_study.folder.path)
    try:
        assert url.startswith("http://127.0.0.1:") and "/#/experiments/" in url
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        # the training view, on the study's runs: not MLflow 3's GenAI overview
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, NAME_CELL + " a"))
        assert "/overview" not in browser.current_url and "/runs" in browser.current_url
        sidebar = text_of(browser)
        assert "Model registry" in sidebar and "Judges" not in sidebar and "Overview" not in sidebar
        names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, NAME_CELL + " a")]
        assert names == ["s"]  # the parent run, its trials nested under it

        browser.find_element(By.CSS_SELECTOR, NAME_CELL + " button").click()  # expand the parent
        from study.record.tracking import trial_run_name

        expected = sorted(trial_run_name(r) for r in rows)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, NAME_CELL + " a")) == 1 + len(rows))
        names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, NAME_CELL + " a")]
        assert sorted(names[1:]) == expected

        child = next(
            a for a in browser.find_elements(By.CSS_SELECTOR, NAME_CELL + " a") if a.text == expected[0]
        )
        child.click()
        wait.until(lambda d: "Logged models (1)" in text_of(d))  # its MLflow model
        assert expected[0] in text_of(browser)
        browser.find_element(By.XPATH, "//button[normalize-space()='Artifacts']").click()
        wait.until(lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='render.png']"))
        browser.find_element(By.XPATH, "//*[normalize-space(text())='render.png']").click()
        wait.until(
            lambda d: any(
                (i.get_attribute("src") or "").startswith("blob:")
                for i in d.find_elements(By.TAG_NAME, "img")
            )
        )  # the render, shown
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(timeout=30)


def test_without_the_experiment_kind_tag_the_ui_would_open_on_the_genai_overview(tiny_study, browser):
    """The control: what the tag buys. Removed, `study ui` opens the experiment's default page, MLflow 3's
    GenAI overview, which the test above would fail on."""
    from mlflow import MlflowClient

    from study.record.study_record import StudyRecord
    from study.record.tracking import EXPERIMENT_KIND_TAG

    record = StudyRecord.load(tiny_study.folder)
    client = MlflowClient(tiny_study.tracking_uri)
    experiment = record.mlflow.experiment_id
    client.delete_experiment_tag(experiment, EXPERIMENT_KIND_TAG)
    ui, url = serve(tiny_study.folder.path)
    try:
        browser.get(url)
        WebDriverWait(browser, 60).until(lambda d: "/overview" in d.current_url)
        assert "workflowType=genai" in browser.current_url
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(timeout=30)
        client.set_experiment_tag(experiment, EXPERIMENT_KIND_TAG, "custom_model_development")
