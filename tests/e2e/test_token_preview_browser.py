"""The dataset's token preview in Chromium, measured with the real MiniLM (WordPiece) tokenizer by the worker: the
text reads as written, spaces included, and each token is its own element, so its boundaries show. 1400 and
390 px."""
import pytest

from jobs_helpers import stored_dataset, wait_for
from tiny_models import minilm_path
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SENTENCE = "Astronomers report that the Milky Way's disk is warping."


def test_the_preview_keeps_spaces_and_marks_token_boundaries(signed_in, at_width, shoot, celery_worker):
    from transformers import AutoTokenizer

    page = signed_in("ivy", "Words team")
    team = Team.objects.get(name="Words team")
    minilm = BaseModel.objects.create(name="MiniLM", source=str(minilm_path()), status="ready",
                                      task_types=["classification"])
    rows = [{"text": SENTENCE, "label": "space"}, {"text": "The refund has not arrived yet.", "label": "billing"},
            {"text": "A comet passed Mars.", "label": "space"}, {"text": "I was charged twice.", "label": "billing"}]
    dataset = stored_dataset(team, rows, task="classification", status="validating", name="News")
    dataset.start_validation(analysis_model=minilm, max_length=64)
    validated = wait_for(lambda: (d := Dataset.objects.get(pk=dataset.pk)).status != "validating" and d, 120,
                         what="the validation")
    assert validated.status == "ready", validated.error

    page.goto(f"/datasets/{dataset.pk}/")
    first = page.locator("pre.preview.tokens").first
    assert first.inner_text() == f"[CLS]{SENTENCE}[SEP]"
    tokens = AutoTokenizer.from_pretrained(minilm_path()).tokenize(SENTENCE)
    shown = first.locator(".tok").all_text_contents()
    assert len(shown) == len(tokens) + 2 and shown[0] == "[CLS]" and shown[-1] == "[SEP]"
    assert [piece.strip().lower() for piece in shown[1:-1]] == [token.removeprefix("##") for token in tokens]
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"preview-{width}")
