"""GET /api/models and /api/models/{id} against a live server: the catalog as JSON, paginated, matching the schema."""
import pytest

from test_api_schema import Api, api, assert_matches_schema  # noqa: F401  (api is a fixture)
from webapp.catalog.models import BaseModel


@pytest.fixture
def catalog(db):
    BaseModel.objects.all().delete()
    return [BaseModel.objects.create(name=f"Model {i}", source=f"org/model-{i}", status="ready",
                                     task_types=["causal-lm"], info={"total_params": 1000 * (i + 1)})
            for i in range(3)]


def test_the_model_list_pages_through_the_catalog(api, catalog):
    first = api("GET", "/api/models?limit=2")
    assert first.status_code == 200
    assert_matches_schema(first, "/api/models")
    page = first.json()
    assert page["count"] == 3 and len(page["items"]) == 2 and page["next"]
    rest = Api(page["next"], api.token)("GET", "")
    assert [m["source"] for m in page["items"] + rest.json()["items"]] == [m.source for m in catalog]
    assert rest.json()["next"] is None


def test_one_model_is_shown_with_its_recorded_size(api, catalog):
    response = api("GET", f"/api/models/{catalog[1].pk}")
    assert response.status_code == 200
    assert_matches_schema(response, "/api/models/{model_id}")
    assert response.json()["total_params"] == 2000 and response.json()["status"] == "ready"


def test_an_unknown_model_is_a_json_404(api, catalog):
    response = api("GET", "/api/models/999999")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert_matches_schema(response, "/api/models/{model_id}")
