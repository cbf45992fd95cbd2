"""Identifiers shaped like Anthropic's (`msg_01...`, `toolu_01...`, `req_01...`): not secret, only unique."""

from __future__ import annotations

import base64
import os

# Anthropic's ids are "<prefix>_01" followed by 22 alphanumeric characters.
_ID_CHARS = 22
_RANDOM_BYTES = 17  # 17 bytes of base64 give 22 characters and more
# Base64 with its two symbols mapped onto letters: alphanumeric like Anthropic's, at the cost of a little entropy.
_ALPHANUMERIC = bytes.maketrans(b"+/", b"xZ")


def new_id(prefix: str) -> str:
    """A fresh id such as `msg_01XFDUDYJgAACzvnptvVoYEL`."""
    token = base64.b64encode(os.urandom(_RANDOM_BYTES))[:_ID_CHARS].translate(_ALPHANUMERIC)
    return f"{prefix}_01{token.decode()}"
