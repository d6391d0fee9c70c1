"""The OpenAI-compatible /v1 endpoints, called with the official `openai` client against gunicorn and a real Celery
worker serving `infer` on a tiny Llama with two adapters: models, chat and completions (whole and streamed), stop
sequences, usage, the answer being the fine-tuned model's own (checked against in-process generation), playground
and /v1 agreeing for the same seed, concurrent mixed-adapter requests, and every error in OpenAI's shape."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from gunicorn_server import gunicorn_serving
from worker_process import database_url

import finished_jobs
import tiny_models

RATE = "20/minute"  # API_RATE_LIMIT_SERVING of the test server: reached on purpose by one token only
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn (threaded, as run.sh starts it) on the test database and Redis; its base URL."""
    from django.conf import settings
    from django.db import connection

    from webapp.localrun import free_loopback_port

    port = free_loopback_port()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict), REDIS_URL=settings.REDIS_URL,
               VAR_DIR=str(settings.VAR_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT), API_RATE_LIMIT_SERVING=RATE)
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with gunicorn_serving(env, port, log_path, "--worker-class", "gthread", "--threads", "16", "--timeout", "120",
                          "--graceful-timeout", "3") as url:
        yield url


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory):
    """A tiny Llama run (base + alpaca-format adapter) and a second adapter of the same base trained on chat rows."""
    from trainer.adapter_io import save_adapter
    from trainer.config import LoraSettings
    from trainer.inject import apply_lora
    from trainer.models import load_model

    run = finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("v1-run"))
    chat = tmp_path_factory.mktemp("v1-chat-run")
    model, tokenizer = load_model(str(run / "base"), "causal-lm")
    settings = LoraSettings(rank=4, alpha=16, dropout=0.0, targets="all-linear")
    handle = apply_lora(model, settings, "causal-lm")
    tiny_models.randomize_lora(model, seed=7)
    save_adapter(model, chat / "out" / "adapter", base_model_name_or_path=str(run / "base"), task="causal-lm",
                 settings=settings, target_modules=handle.target_modules, modules_to_save=[])
    tokenizer.save_pretrained(chat / "out" / "adapter")  # training saves the tokenizer (its chat template) too
    metrics = finished_jobs.metrics_of(run)
    metrics["data"]["format"] = "chat"
    (chat / "out" / "metrics.json").write_text(json.dumps(metrics))
    return run, chat


def served_job(team, run, base_run, name):
    """A succeeded job of `team` whose adapter is `run`'s, on `base_run`'s base model (shared catalog entry)."""
    from webapp.catalog.models import BaseModel

    job = finished_jobs.make_job(team, base_run, name=name)
    if run is not base_run:
        job.metrics = finished_jobs.metrics_of(run)
        job.artifacts = finished_jobs.upload(run, job.pk)
        job.save(update_fields=["metrics", "artifacts"])
    BaseModel.objects.filter(pk=job.base_model_id).update(task_types=["causal-lm"])
    return job


def token_for(username, team_name):
    from django.contrib.auth import get_user_model

    from webapp.accounts.tokens import issue_token
    from webapp.teams.accounts import add_user_to_team
    from webapp.teams.models import Team

    users = get_user_model().objects
    user = users.filter(username=username).first() or users.create_user(username=username, password="pw-x-123456")
    add_user_to_team(username, team_name)
    return issue_token(user, Team.objects.get(name=team_name), "tests")[1]


@pytest.fixture
def setup(server, celery_worker, two_adapters):
    """(client for Team A, its alpaca job, its chat job, the base's catalog name, the runs)."""
    from webapp.teams.models import Team

    run, chat = two_adapters
    secret = token_for("alice", "Team A")
    team = Team.objects.get(name="Team A")
    alpaca_job = served_job(team, run, run, "alpaca adapter")
    chat_job = served_job(team, chat, run, "chat adapter")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=secret, max_retries=0, timeout=120)
    return client, alpaca_job, chat_job, str(run / "base"), run, chat


def local_answer(base, adapter_dir, prompt, **sampling):
    """What the fine-tuned model generates in this process, independently of the serving path."""
    from trainer.inference import generate, load_for_inference

    model, tokenizer = load_for_inference(str(base), adapter_dir=adapter_dir, task="causal-lm")
    return generate(model, tokenizer, prompt, **sampling)


SAMPLED = dict(temperature=0.9, top_p=0.9, seed=1234, max_tokens=12)


def test_models_lists_the_teams_jobs_and_the_catalog_bases_only(setup):
    from webapp.teams.models import Team

    client, alpaca_job, chat_job, base, run, _ = setup
    bobs_token = token_for("bob", "Team B")
    theirs = served_job(Team.objects.get(name="Team B"), run, run, "bob's")
    names = [m.id for m in client.models.list()]
    assert f"job-{alpaca_job.pk}" in names and f"job-{chat_job.pk}" in names and base in names
    assert f"job-{theirs.pk}" not in names
    other = openai.OpenAI(base_url=client.base_url, api_key=bobs_token, max_retries=0)
    assert f"job-{alpaca_job.pk}" not in [m.id for m in other.models.list()]


def test_chat_answers_whole_and_streamed_with_the_fine_tuned_models_own_text_and_usage(setup):
    from trainer.inference import prompt_ids
    from trainer.models import load_tokenizer

    client, _, chat_job, _, run, chat = setup
    messages = [{"role": "user", "content": "Name a color"}]
    whole = client.chat.completions.create(model=f"job-{chat_job.pk}", messages=messages, **SAMPLED)
    expected = local_answer(run / "base", chat / "out" / "adapter", messages,
                            temperature=0.9, top_p=0.9, seed=1234, max_new_tokens=12)
    assert whole.choices[0].message.content == expected and expected
    assert whole.object == "chat.completion" and whole.model == f"job-{chat_job.pk}"
    rendered = prompt_ids(load_tokenizer(chat / "out" / "adapter"), messages, 1024)
    assert whole.usage.prompt_tokens == len(rendered)
    assert 1 <= whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.choices[0].finish_reason == ("length" if whole.usage.completion_tokens == 12 else "stop")

    chunks = list(client.chat.completions.create(model=f"job-{chat_job.pk}", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **SAMPLED))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stop_just_before_a_stop_sequence_whole_and_streamed(setup):
    client, alpaca_job, _, _, run, _ = setup
    greedy = dict(model=f"job-{alpaca_job.pk}", prompt="Once upon a", temperature=0, max_tokens=16)
    full = client.completions.create(**greedy)
    text = full.choices[0].text
    assert text == local_answer(run / "base", run / "out" / "adapter", "Once upon a", temperature=0,
                                max_new_tokens=16)
    assert full.object == "text_completion" and len(text) >= 6
    stop = text[4:6]
    cut = text[:text.index(stop)]
    stopped = client.completions.create(stop=[stop, "never-seen"], **greedy)
    assert stopped.choices[0].text == cut and stopped.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(stop=stop, stream=True, **greedy))
    assert "".join(c.choices[0].text for c in streamed) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_playground_and_v1_answers_with_the_same_seed_are_identical(setup, server):
    client, _, chat_job, base, _, _ = setup
    secret = client.api_key
    body = json.dumps({"prompt": "Say hi", "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 10,
                       "seed": 99}).encode()
    request = urllib.request.Request(f"{server}/api/jobs/{chat_job.pk}/playground", body, method="POST",
                                     headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    played = json.load(urllib.request.urlopen(request, timeout=120))
    same = dict(messages=[{"role": "user", "content": "Say hi"}], temperature=1.0, top_p=0.95, max_tokens=10,
                seed=99)
    tuned = client.chat.completions.create(model=f"job-{chat_job.pk}", **same).choices[0].message.content
    plain = client.chat.completions.create(model=base, **same).choices[0].message.content
    assert played == {"base": plain, "tuned": tuned} and tuned != plain


def test_concurrent_requests_for_different_adapters_each_get_their_own_answer(setup):
    client, alpaca_job, chat_job, base, _, _ = setup
    asks = [(model, seed) for seed in (1, 2) for model in (f"job-{alpaca_job.pk}", f"job-{chat_job.pk}", base)]

    def ask(model, seed):
        return client.completions.create(model=model, prompt="The sky is", temperature=0.8, seed=seed,
                                         max_tokens=8).choices[0].text

    together, start = {}, threading.Barrier(len(asks))

    def run(model, seed):
        start.wait()
        together[(model, seed)] = ask(model, seed)

    threads = [threading.Thread(target=run, args=pair) for pair in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == {pair: ask(*pair) for pair in asks}  # alone, each gives what it gave in the crowd  # alone, each gives what it gave in the crowd
    assert len({together[(model, 1)] for model, _ in asks}) == 3


def test_errors_come_in_openais_shape_with_their_status(setup, server):
    from webapp.teams.models import Team

    client, alpaca_job, _, _, run, _ = setup
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as bad_token:
        openai.OpenAI(base_url=client.base_url, api_key="lw_not-a-token", max_retries=0).models.list()
    assert bad_token.value.status_code == 401 and bad_token.value.body["type"] == "invalid_request_error"
    try:
        urllib.request.urlopen(f"{server}/v1/models", timeout=10)
        raise AssertionError("no token was accepted")
    except urllib.error.HTTPError as missing:
        assert missing.code == 401 and set(json.load(missing)["error"]) == {"message", "type", "param", "code"}

    token_for("bob", "Team B")
    theirs = served_job(Team.objects.get(name="Team B"), run, run, "theirs")
    with pytest.raises(openai.NotFoundError) as foreign:
        client.chat.completions.create(model=f"job-{theirs.pk}", messages=messages)
    assert foreign.value.body["code"] == "model_not_found" and foreign.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="job-999999", prompt="x")

    for bad, param in [({"temperature": 5}, "temperature"), ({"n": 2}, "n"), ({"max_tokens": 0}, "max_tokens"),
                       ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"top_p": 0}, "top_p")]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=f"job-{alpaca_job.pk}", messages=messages, **bad)
        assert refused.value.body["param"] == param and param in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as two_turns:  # an alpaca-trained job takes one user message
        client.chat.completions.create(model=f"job-{alpaca_job.pk}", messages=[
            {"role": "system", "content": "be brief"}, *messages])
    assert two_turns.value.body["param"] == "messages" and "alpaca" in two_turns.value.body["message"]

    limited = openai.OpenAI(base_url=client.base_url, api_key=token_for("carol", "Team A"), max_retries=0)
    with pytest.raises(openai.RateLimitError) as rate:
        for _ in range(int(RATE.split("/")[0]) + 1):
            with pytest.raises(openai.BadRequestError):
                limited.completions.create(model=f"job-{alpaca_job.pk}", prompt="x", temperature=9)
    assert int(rate.value.response.headers["Retry-After"]) >= 1 and rate.value.body["type"] == "rate_limit_error"


def test_no_worker_on_the_serving_queue_is_a_503_at_once(client, settings, make_member, llama_run):
    from webapp.accounts.tokens import issue_token
    from webapp.teams.models import Team

    user = make_member("dave", "Team D")
    _, secret = issue_token(user, Team.objects.get(name="Team D"), "tests")
    job = served_job(Team.objects.get(name="Team D"), llama_run, llama_run, "unserved")
    settings.INFER_QUEUE = "infer.nobody-serves-this"
    started = time.monotonic()
    response = client.post("/v1/completions", {"model": f"job-{job.pk}", "prompt": "hi"},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 503 and time.monotonic() - started < 5
    assert response.json()["error"]["type"] == "server_error" and "infer.nobody-serves-this" in \
        response.json()["error"]["message"]


def test_the_results_pages_code_snippets_run_as_shown(setup, server, member_client, bert_run):
    import html
    import re

    from webapp.teams.models import Team

    client, _, chat_job, _, _, _ = setup
    page = member_client.get(f"/jobs/{chat_job.pk}/results/").content.decode()
    snippets = {kind: html.unescape(code) for kind, code in
                re.findall(r'<code data-snippet="(\w+)">(.*?)</code>', page, re.S)}
    assert set(snippets) == {"python", "curl"} and f'<code data-model>job-{chat_job.pk}</code>' in page
    assert 'href="/account/settings/"' in page
    env = dict(os.environ, LORAWORKS_TOKEN=client.api_key)
    local = {kind: code.replace("http://testserver/v1", f"{server}/v1") for kind, code in snippets.items()}
    ran = subprocess.run([sys.executable, "-c", local["python"]], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    curled = subprocess.run(["bash", "-c", local["curl"]], env=env, capture_output=True, text=True, timeout=120)
    answer = json.loads(curled.stdout)
    assert answer["model"] == f"job-{chat_job.pk}" and answer["choices"][0]["message"]["content"]
    classifier = finished_jobs.make_job(Team.objects.get(name="Team A"), bert_run, name="classifier")
    assert 'id="use-from-code"' not in member_client.get(f"/jobs/{classifier.pk}/results/").content.decode()
