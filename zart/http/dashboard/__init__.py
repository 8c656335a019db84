"""The web dashboard of `zart serve`: pages for people, beside the API for programs.

Server-rendered HTML (Jinja2 templates in `templates/`), one small script of our own
(`static/dashboard.js`: live updates, confirmations, actions without reloading) and one style sheet;
nothing from a CDN, no build step. docs/dashboard.md shows each page.

- `auth`: the session gate, login and logout (`session`: signed cookies and CSRF tokens).
- `pages`: the pages; `reads`: what they read; `timeline` and `charts`: the SVG geometry.
- `actions`: cancel, send event, resume, fork, pause, unpause.
- `render`: templates, filters and the HTML responses with their security headers.
"""

from __future__ import annotations

from starlette.routing import Route

from . import actions, auth, pages, render


def routes() -> list[Route]:
    return [
        Route("/", pages.overview, methods=["GET"]),
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/executions", pages.executions, methods=["GET"]),
        Route("/executions/{id}", pages.execution, methods=["GET"]),
        *[
            Route(f"/executions/{{id}}/{name}", actions.endpoint(name), methods=["POST"])
            for name in actions.ACTIONS
        ],
        Route("/queues", pages.queues, methods=["GET"]),
        Route("/schedules", pages.schedules, methods=["GET"]),
        Route("/static/{name}", render.static, methods=["GET"]),
    ]
