"""The OpenAPI schema at /api/schema matches the API: every /api/ route and method is described (and nothing
else), responses validate against it, and the reference page renders it. Other API tests import
`assert_matches_schema` from here."""
import json
import re
import time
import urllib.error
import urllib.request

import jsonschema_rs
import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.text import slugify

from webapp.api.schema import PATHS, schema

DOCUMENT = schema()


def api_routes() -> dict[str, set[str]]:
    """{"/api/models/{model_id}": {"get"}, ...} read from the URL configuration itself."""
    routes = {}
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "api":
            for pattern in entry.url_patterns:
                assert isinstance(pattern, URLPattern)
                if pattern.name == "unknown":  # the catch-all that answers JSON 404s, not a route
                    continue
                path = "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
                methods = getattr(pattern.callback, "api_methods", ("GET",))
                routes[path] = {m.lower() for m in methods}
    return routes


def assert_matches_schema(response, path: str, method: str = "get"):
    """Check a live response (status, content type and JSON body) against the schema's promise for it."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} answered {status}, not in the schema: {response.content[:300]}"
    content = responses[status].get("content")
    if not content:
        return
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in content, f"{path} answered {media_type}; schema says {list(content)}"
    if media_type == "application/json":
        body_schema = dict(content[media_type]["schema"], components=DOCUMENT["components"])
        validator = jsonschema_rs.validator_for(body_schema)
        errors = [f"{e.message} at {list(e.instance_path)}" for e in validator.iter_errors(response.json())]
        assert not errors, f"{method.upper()} {path} {status} does not match the schema: {errors}"


def test_every_api_route_and_method_is_in_the_schema_and_nothing_more():
    routes = api_routes()
    described = {path: set(ops) for path, ops in DOCUMENT["paths"].items()}
    assert routes == described


def test_the_schema_is_valid_openapi_with_resolvable_refs():
    assert DOCUMENT["openapi"].startswith("3.1")
    names = set(DOCUMENT["components"]["schemas"])
    text = str(DOCUMENT)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in names
    for path, operations in PATHS.items():
        for placeholder in re.findall(r"{(\w+)}", path):
            for operation in operations.values():
                assert any(p["name"] == placeholder and p["in"] == "path" for p in operation.get("parameters", [])), \
                    f"{path} does not declare its path parameter {placeholder}"
    # Every component is itself a valid JSON Schema (2020-12, as OpenAPI 3.1 uses).
    for name, component in DOCUMENT["components"]["schemas"].items():
        jsonschema_rs.validator_for(dict(component, components=DOCUMENT["components"]))


def test_the_schema_is_served_without_a_token(client, db):
    response = client.get("/api/schema")
    assert response.status_code == 200
    served = response.json()
    assert served["paths"] == DOCUMENT["paths"]
    assert served["servers"][0]["url"] == "http://testserver"
    assert_matches_schema(response, "/api/schema")
    assert client.post("/api/schema").status_code == 405 and client.post("/api/docs").status_code == 405


def test_the_reference_page_lists_every_operation_and_loads_nothing_from_elsewhere(client, db):
    response = client.get(reverse("api:reference"))
    assert response.status_code == 200
    html = response.content.decode()
    # Each operation is an <article> whose anchor the template builds with Django's slugify, headed by its method
    # and path: read them back and compare with the schema's (method, path) pairs, both ways.
    shown = re.findall(r'<article class="api-op" id="([^"]+)">\s*<h3><span class="api-method (\w+)">(\w+)</span> '
                       r"<code>([^<]+)</code>", html)
    described = {(method.upper(), path) for path, operations in PATHS.items() for method in operations}
    assert {(method, path) for _, _, method, path in shown} == described
    assert len(shown) == len(described)
    for anchor, css_class, method, path in shown:
        assert anchor == f"{method.lower()}-{slugify(path)}" and css_class == method.lower()
    assert len({anchor for anchor, *_ in shown}) == len(shown)  # every operation's link leads to it alone
    assert "progress.step" in html and "lora.rank" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_the_dataset_upload_parts_in_the_schema_are_the_ones_the_endpoint_takes():
    from webapp.api.views.datasets import UPLOAD_FIELDS

    body = DOCUMENT["paths"]["/api/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == set(UPLOAD_FIELDS) == {"file", "eval_file", "name", "column_mapping"}
    assert body["required"] == ["file"] and body["additionalProperties"] is False
    assert "Parquet" not in str(body)


class Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status_code, self.headers, self.content = status, headers, body

    def __getitem__(self, name):
        return self.headers.get(name)

    def json(self):
        return json.loads(self.content)


class Api:
    """Raw HTTP calls to a live server with a Bearer token: statuses, headers and bodies as they travel."""

    def __init__(self, base_url: str, token: str | None):
        self.base_url, self.token = base_url.rstrip("/"), token

    def __call__(self, method: str, path: str, json_body=None, fields=None, files=None, token="default",
                 headers=None, raw: bytes | None = None) -> Response:
        from loraworks_cli.client import MultipartBody

        headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = raw
        if raw is not None:
            headers.setdefault("Content-Type", "application/json")
        elif json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif files is not None or fields is not None:
            multipart = MultipartBody(fields or {}, files or {})
            body = b"".join(multipart)
            headers["Content-Type"] = multipart.content_type
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())

    def wait_for(self, path: str, done, timeout_s: float = 120, interval_s: float = 0.3) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            data = self("GET", path).json()
            if done(data) or time.monotonic() > deadline:
                return data
            time.sleep(interval_s)


def new_api(live_server, username: str, team_name: str) -> Api:
    from django.contrib.auth import get_user_model

    from webapp.accounts.tokens import issue_token
    from webapp.teams.accounts import add_user_to_team
    from webapp.teams.models import Team

    users = get_user_model().objects
    user = users.filter(username=username).first() or users.create_user(username=username, password="pw-x-123456")
    add_user_to_team(username, team_name)
    _, secret = issue_token(user, Team.objects.get(name=team_name), "tests")
    return Api(live_server.url, secret)


@pytest.fixture
def api(live_server):
    """Alice's token in Team A, against the live server."""
    return new_api(live_server, "alice", "Team A")


@pytest.fixture
def other_api(live_server):
    """Bob's token in Team B."""
    return new_api(live_server, "bob", "Team B")


def test_every_error_is_json_with_code_and_message_even_405_and_401(api):
    wrong_method = api("PUT", "/api/models")
    assert wrong_method.status_code == 405 and wrong_method["Allow"] == "GET"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    anonymous = api("GET", "/api/models", token=None)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert_matches_schema(anonymous, "/api/models")
    nowhere = api("GET", "/api/jobs/null,null/adapter")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
    too_far = api("GET", "/api/jobs?offset=73611666960497714836310851584")
    assert too_far.status_code == 400 and too_far.json()["error"]["field"] == "offset"
    no_boundary = api("POST", "/api/datasets", headers={"Content-Type": "multipart/form-data"}, raw=b"x")
    assert no_boundary.status_code == 400, no_boundary.content
    bad_limit = api("GET", "/api/models?limit=0")
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["field"] == "limit"
    assert_matches_schema(bad_limit, "/api/models")
