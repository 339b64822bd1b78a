"""The dashboard tests' server (the real `python -m backend serve --http ...`) and page helpers.

Never import `backend` here: the tests load the dapr SDK, whose protos clash with ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.harness import Server, free_port, tcp_connectable, wait_until


class DashboardServer(Server):
    """A server with an HTTP listener; `url` is the dashboard's address."""

    def __init__(
        self,
        apps: Mapping[str, int | None] | Sequence[str],
        *,
        actions: bool = False,
        http_app: str | None = None,
        extra_args: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.http_port = free_port()
        bound = f"{http_app}=" if http_app else ""  # a listener of one app: its token is unambiguous
        args = ["--http", f"{bound}127.0.0.1:{self.http_port}", *extra_args]
        if actions:
            args.append("--dashboard-actions")
        super().__init__(apps, extra_args=args, **kwargs)

    def start(self) -> DashboardServer:
        super().start()
        wait_until(lambda: tcp_connectable("127.0.0.1", self.http_port), message="the HTTP listener")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dashboard/"


def open_page(page: Any, url: str, *, ready: str | None = None) -> Any:
    """Load `url` and wait until the page's view has rendered (body[data-ready])."""
    page.goto(url)
    page.wait_for_selector("body[data-ready]" if ready is None else f'body[data-ready="{ready}"]')
    return page


def go(page: Any, hash_: str, ready: str) -> None:
    """Navigate inside the page (a hash route) and wait for that view."""
    page.evaluate("() => { delete document.body.dataset.ready; }")
    page.evaluate("h => { location.hash = h; }", hash_)
    page.wait_for_selector(f'body[data-ready="{ready}"]')


def shot(page: Any, folder: Path, name: str, *, full_page: bool = True) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 1000, path
    return path


def next_frame(page: Any) -> bool:
    """True once the page has painted another frame: the main thread is not stuck."""
    return bool(
        page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"
        )
    )


def fetch(
    page: Any, path: str, *, method: str = "GET", body: Any = None, token: str | None = None
) -> dict[str, Any]:
    """A request from inside the page (as a tampered page would send it): {status, body}."""
    return page.evaluate(
        """async ([path, method, body, token]) => {
            const headers = {"Content-Type": "application/json"};
            if (token) headers["dapr-api-token"] = token;
            const r = await fetch(new URL(path, document.baseURI), {method, headers,
                body: body === null ? undefined : JSON.stringify(body)});
            let json = null; try { json = await r.json(); } catch {}
            return {status: r.status, body: json};
        }""",
        [path, method, body, token],
    )
