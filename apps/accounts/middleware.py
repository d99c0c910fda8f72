"""The language a request is answered in, once its account is known."""

from __future__ import annotations

import contextlib
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.decorators import sync_and_async_middleware

# Reading the account while the database is away: the page still gets its 503.
DATABASE_ERRORS = (OperationalError, InterfaceError)


@sync_and_async_middleware
def AccountLanguageMiddleware(get_response: Any) -> Any:  # noqa: N802 - named as middleware are
    """After LocaleMiddleware (the language cookie, then Accept-Language) and authentication: a
    signed-in account's own choice wins, and the API (``/v1/``) answers in English whatever the
    client asks, as OpenAI's does (its messages are for programs and their logs). Sync and
    async, so that async views stay async."""

    def use(request: HttpRequest, language: str) -> None:
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = language

    def chosen(user: Any) -> str:
        return str(getattr(user, "language", "") or "") if user.is_authenticated else ""

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            if request.path.startswith("/v1/"):
                use(request, settings.LANGUAGE_CODE)
            else:
                # Unread, the account leaves the browser's language; the view meets the outage
                # too and answers 503.
                with contextlib.suppress(*DATABASE_ERRORS):
                    use(request, chosen(await request.auser()))
            return await get_response(request)  # type: ignore[no-any-return]

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/v1/"):
            use(request, settings.LANGUAGE_CODE)
        else:
            with contextlib.suppress(*DATABASE_ERRORS):
                use(request, chosen(request.user))
        return get_response(request)  # type: ignore[no-any-return]

    return sync_middleware
