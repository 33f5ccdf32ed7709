"""`/docs` and `/redoc` work offline: every asset they load is served by the app itself."""

from __future__ import annotations

import importlib.util
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from coursekit.docs import add_offline_docs

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_APPS = sorted(ROOT.glob("solutions/[0-9][0-9]_*/app.py"))
EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}


class _References(HTMLParser):
    """Every URL an HTML page loads: src/href attributes and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value is not None:
                self.urls.append(value)


def page_references(html: str) -> list[str]:
    """The URLs a docs page loads, including the schema URL in Swagger UI's inline script."""
    parser = _References()
    parser.feed(html)
    inline = re.findall(r"""\burl:\s*'([^']+)'""", html)
    inline += re.findall(r"""window\.location\.origin \+ '([^']+)'""", html)
    return parser.urls + inline


class Echo(BaseModel):
    text: str


def demo_app() -> FastAPI:
    """A tiny app created the way every app in the course is."""
    app = FastAPI(title="Demo", docs_url=None, redoc_url=None)
    add_offline_docs(app)

    @app.post("/echo")
    def echo(body: Echo) -> Echo:
        return body

    return app


def load_app(path: Path) -> FastAPI:
    """Import `app` from a step's `app.py`, its folder first on the path (as uvicorn does)."""
    name = f"_course_app_{path.parent.name}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    # Its imports must find its own folder's modules, not another step's of the same
    # name (two steps have a `service`) that an earlier load left in sys.modules.
    for sibling in path.parent.glob("*.py"):
        sys.modules.pop(sibling.stem, None)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.app


def assert_docs_offline(client: TestClient, page: str, prefix: str = "") -> None:
    """`page` loads only same-origin URLs under `prefix`, and each one is served."""
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = page_references(response.text)
    assert urls, f"{page} references nothing: is it the docs page?"
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        assert url.startswith(f"{prefix}/"), f"{page} loads {url}, not an absolute local path"
        asset = client.get(url)
        assert asset.status_code == 200, f"{page} loads {url}: {asset.status_code}"
        suffix = Path(parts.path).suffix
        if suffix in EXPECTED_TYPES:
            assert EXPECTED_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_their_own_assets(page: str) -> None:
    assert_docs_offline(TestClient(demo_app()), page)


def test_redoc_page_may_show_only_its_own_images() -> None:
    # ReDoc's bundle fetches a logo from cdn.redoc.ly; the policy stops the browser.
    policy = TestClient(demo_app()).get("/redoc").headers["content-security-policy"]
    assert policy.startswith("img-src 'self'") and "https:" not in policy


def test_swagger_ui_oauth2_redirect_is_served() -> None:
    response = TestClient(demo_app()).get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text.lower()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_follow_the_root_path_behind_a_proxy(page: str) -> None:
    client = TestClient(demo_app(), root_path="/api")
    html = client.get(page).text
    assert all(url.startswith("/api/") for url in page_references(html)), html
    assert_docs_offline(client, page, prefix="/api")


def test_docs_routes_stay_out_of_the_schema() -> None:
    schema = TestClient(demo_app()).get("/openapi.json").json()
    assert set(schema["paths"]) == {"/echo"}


def test_an_app_with_cdn_docs_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"docs_url=None, redoc_url=None"):
        add_offline_docs(FastAPI())


def test_an_app_without_a_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="openapi_url=None"):
        add_offline_docs(FastAPI(docs_url=None, redoc_url=None, openapi_url=None))


def test_one_page_can_be_left_out() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    add_offline_docs(app, redoc_url=None)
    client = TestClient(app)
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("path", SOLUTION_APPS, ids=[p.parent.name for p in SOLUTION_APPS])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_solution_app_serves_offline_docs(path: Path, page: str) -> None:
    assert_docs_offline(TestClient(load_app(path)), page)
