"""Slack message text (mrkdwn) built so that what a trigger or the data carries stays text.

Slack reads ``<...>`` as a link, a ping (``<!here>``) or a mention, and ``&`` as the start of an
entity; it documents escaping exactly ``&``, ``<`` and ``>`` as the way to show them as text. A
run id, an image reference, an error line, a user, item or model id can hold any of them, so
everything put into a message is escaped unless it is :class:`Mrkdwn`: text this package built
as markup from escaped parts (the notifier's own links, a run summary).
"""

from __future__ import annotations

from typing import Any


class Mrkdwn(str):
    """Text that is already Slack markup, every value in it escaped: not escaped again."""

    __slots__ = ()


def escape(value: Any) -> str:
    """``value`` as Slack shows it literally (``&`` ``<`` ``>`` as entities); :class:`Mrkdwn`
    as it is."""
    if isinstance(value, Mrkdwn):
        return value
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, text: str) -> Mrkdwn:
    """A Slack link ``<url|text>``: both parts escaped, and a ``|`` in the URL percent-encoded
    (Slack splits a link at its first ``|``)."""
    return Mrkdwn(f"<{escape(url).replace('|', '%7C')}|{escape(text)}>")

