"""Who may open the dashboard: this machine only, unless it is served wider with an access token.

The dashboard shows every prompt and answer and can chat with the model, so
it listens on 127.0.0.1 (`server.address` in .streamlit/config.toml).
Serving it on another address (`--server.address 0.0.0.0`, or
`STREAMLIT_SERVER_ADDRESS`) is the explicit choice to let other machines in,
and then an access token is required: `OBS_ACCESS_TOKEN`, at least
16 characters. Without one the app refuses: `python -m app.access` (run by
`make run` before Streamlit starts) exits with the reason, and a page served
anyway shows only that reason. With a token set (on any address) each
browser is asked for it once; it is compared in constant time, and a browser
that gave it is not asked again until the browser session ends (the same
XSRF cookie that binds sessions, see app.sessions).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping

import streamlit as st

__all__ = [
    "ACCESS_TOKEN_ENV",
    "MIN_TOKEN_LENGTH",
    "is_loopback",
    "main",
    "require_access",
    "required_token",
    "token_matches",
]

ACCESS_TOKEN_ENV = "OBS_ACCESS_TOKEN"
MIN_TOKEN_LENGTH = 16
_MAKE_TOKEN = "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
_ADDRESS_ENV = "STREAMLIT_SERVER_ADDRESS"
_MAX_GRANTED_BROWSERS = 1024

_log = logging.getLogger(__name__)


def is_loopback(address: str | None) -> bool:
    """True if only this machine can reach `address`: `localhost`, 127.0.0.0/8 or ::1.

    An empty or missing address (Streamlit's default: every interface), a
    wildcard such as 0.0.0.0, any other IP and any other host name are not.
    """
    if not address or not address.strip():
        return False
    text = address.strip().strip("[]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def required_token(address: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token visitors must give, or None when none is needed (loopback, `OBS_ACCESS_TOKEN` unset).

    Raises ValueError, saying what to set, when `address` is reachable from
    other machines and no token is set, or when the token is shorter than
    16 characters.
    """
    env = os.environ if environ is None else environ
    token = env.get(ACCESS_TOKEN_ENV, "")
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{ACCESS_TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters, got {len(token)}: "
                f"make one with {_MAKE_TOKEN}"
            )
        return token
    if is_loopback(address):
        return None
    where = f"address {address}" if address else "every network interface"
    raise ValueError(
        f"refusing to serve the dashboard on {where} without an access token: other machines could "
        f"read every prompt and answer. Set {ACCESS_TOKEN_ENV} (at least {MIN_TOKEN_LENGTH} characters; "
        f"make one with {_MAKE_TOKEN}), or serve on 127.0.0.1 (server.address in .streamlit/config.toml)"
    )


def token_matches(given: str, expected: str) -> bool:
    """True if `given` is `expected`, compared in constant time (`hmac.compare_digest`)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class _GrantedBrowsers:
    """Owner ids of browsers that gave the token (bounded, most recent kept); thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._owners: OrderedDict[str, None] = OrderedDict()

    def add(self, owner: str) -> None:
        with self._lock:
            self._owners[owner] = None
            self._owners.move_to_end(owner)
            while len(self._owners) > self._size:
                self._owners.popitem(last=False)

    def __contains__(self, owner: object) -> bool:
        with self._lock:
            return owner in self._owners


@st.cache_resource(show_spinner=False)
def _granted() -> _GrantedBrowsers:
    return _GrantedBrowsers(_MAX_GRANTED_BROWSERS)


def require_access() -> None:
    """Let this run go on only if the visitor may see the dashboard; otherwise draw why, and stop.

    Call it first thing in the entry point, before anything that shows data.
    Misconfigured (served wide without a token): the reason, nothing else.
    Token required: a password field until the right token is given.
    """
    from app import state  # keys and browser ids; imported here so `python -m app.access` need not load obs

    try:
        token = required_token(st.get_option("server.address"))
    except ValueError as exc:
        _log.error("%s", exc)
        reason = str(exc)
        st.error(f"{reason[:1].upper()}{reason[1:]}.", icon=":material/lock:")
        st.stop()
    if token is None or st.session_state.get(state.ACCESS_GRANTED):
        return
    granted = _granted()
    owner = state.browser_owner_id()
    if owner is not None and owner in granted:
        st.session_state[state.ACCESS_GRANTED] = True
        return
    st.title("obs")
    st.caption("Give this dashboard's access token to open it.")
    with st.form(f"{state.W_ACCESS_TOKEN}_form"):
        given = st.text_input("Access token", type="password", key=state.W_ACCESS_TOKEN)
        submitted = st.form_submit_button("Open", icon=":material/lock_open:")
    if submitted:
        if token_matches(given, token):
            st.session_state[state.ACCESS_GRANTED] = True
            if owner is not None:
                granted.add(owner)
            st.rerun()
        _log.warning("wrong access token from %s", st.context.ip_address or "an unknown address")
        st.error("That is not the access token.", icon=":material/error:")
    st.stop()


def main() -> int:
    """Check the dashboard's address and token as `streamlit run` will see them; 0 if it may start.

    Reads Streamlit's configuration as `streamlit run` does without flags
    (config.toml files, then `STREAMLIT_SERVER_ADDRESS`); on a refusal
    prints the reason to stderr and returns 2.
    """
    from streamlit import config

    # `streamlit run` takes STREAMLIT_* variables as if they were its command-line flags.
    flags = {"server.address": os.environ[_ADDRESS_ENV]} if os.environ.get(_ADDRESS_ENV) else None
    config.get_config_options(force_reparse=True, options_from_flags=flags)
    try:
        required_token(config.get_option("server.address"))
    except ValueError as exc:
        print(f"obs: {exc}.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
