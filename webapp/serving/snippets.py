"""The results page's "Use it from code" panel: a finished causal-LM job's /v1 model name and ready-to-run `curl`
and `openai` Python snippets (the token is read from the LORAWORKS_TOKEN environment variable, never shown)."""
from __future__ import annotations

import json

from django.urls import reverse

from webapp.jobs import states
from webapp.serving.servable import CAUSAL_LM, job_name

EXAMPLE = "Hello"

PYTHON = '''import os

from openai import OpenAI

client = OpenAI(base_url="{base_url}", api_key=os.environ["LORAWORKS_TOKEN"])
stream = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": {example}}}],
    max_tokens=64,
    stream=True,
)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
'''

CURL = '''curl {base_url}/chat/completions \\
  -H "Authorization: Bearer $LORAWORKS_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{body}'
'''


def code_panel(request, job) -> dict | None:
    """{model, base_url, python, curl, tokens_url} for a succeeded causal-LM job with an adapter; else None."""
    if job.state != states.SUCCEEDED or job.task != CAUSAL_LM or not (job.artifacts or {}).get("adapter"):
        return None
    model = job_name(job)
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": EXAMPLE}], "max_tokens": 64})
    return {"model": model, "base_url": base_url,
            "python": PYTHON.format(base_url=base_url, model=model, example=json.dumps(EXAMPLE)),
            "curl": CURL.format(base_url=base_url, body=body),
            "tokens_url": reverse("accounts:settings")}
